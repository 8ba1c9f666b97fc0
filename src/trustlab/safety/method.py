"""The backtranslation record for the registry: reproduction, audit section and ``trustlab eval jailbreak``."""

from trustlab.registry import register_method

register_method(
    id="backtranslation",
    title="Backtranslation jailbreak defense",
    area="defend",
    spec="backtranslation.md",
    reproduce="trustlab.reproduce.backtranslation:run",
    audit="trustlab.safety.audit:run",
    section="jailbreak",
    cli={"eval jailbreak": "trustlab.cli.safety:jailbreak"},
)
