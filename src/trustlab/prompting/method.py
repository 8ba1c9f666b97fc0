"""The records of the prompting methods for the registry: Formulate-and-Solve (with ``trustlab eval beyondx``
and the audit section "reasoning") and Mixture-of-Prompts."""

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
