"""The Concept Gradient record for the registry: its reproduction and ``trustlab concepts``.

No audit section: CG explains an image classifier's predictions in concept terms; it does not test a language
model under audit.
"""

from trustlab.registry import register_method

register_method(
    id="concept-gradient",
    title="Concept Gradient: concept attribution without the linear assumption (vs CAV/TCAV)",
    area="explain",
    spec="concept-gradient.md",
    reproduce="trustlab.reproduce.concept_gradient:run",
    cli={"concepts": "trustlab.cli.explain:concepts"},
)
