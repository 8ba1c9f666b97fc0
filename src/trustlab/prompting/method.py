"""The Formulate-and-Solve record for the registry: reproduction, audit section "reasoning", ``trustlab eval
beyondx`` and ``trustlab expand-beyondx``."""

from trustlab.registry import register_method

register_method(
    id="formulate-and-solve",
    title="Formulate-and-Solve + BeyondX",
    area="steer",
    spec="beyondx-formulate-and-solve.md",
    reproduce="trustlab.reproduce.formulate_and_solve:run",
    audit="trustlab.prompting.audit:run",
    section="reasoning",
    cli={"eval beyondx": "trustlab.cli.reasoning:beyondx",
         "expand-beyondx": "trustlab.cli.beyondx_expand:expand_beyondx"},
)
