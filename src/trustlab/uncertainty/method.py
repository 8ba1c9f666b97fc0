"""The CLUE record for the registry: reproduction, audit section and ``trustlab uncertainty``."""

from trustlab.registry import register_method

register_method(
    id="clue",
    title="CLUE concept-level uncertainty",
    area="defend",
    spec="clue.md",
    reproduce="trustlab.reproduce.clue:run",
    audit="trustlab.uncertainty.audit:run",
    section="uncertainty",
    cli={"uncertainty": "trustlab.cli.uncertainty:uncertainty"},
)
