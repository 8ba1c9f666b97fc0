"""The context-awareness record for the registry: reproduction, audit section and ``trustlab eval context``."""

from trustlab.registry import register_method

register_method(
    id="context-awareness",
    title="Context awareness: benchmark, attention steering, [IND] fine-tuning",
    area="steer",
    spec="context-awareness.md",
    reproduce="trustlab.reproduce.context_awareness:run",
    audit="trustlab.context.audit:run",
    section="context",
    cli={"eval context": "trustlab.cli.context:context"},
)
