"""The Mixture-of-Prompts record for the registry: reproduction and ``trustlab mop``."""

from trustlab.registry import register_method

register_method(
    id="mixture-of-prompts",
    title="Mixture-of-Prompts",
    area="steer",
    spec="mixture-of-prompts.md",
    reproduce="trustlab.reproduce.mixture_of_prompts:run",
    cli={"mop": "trustlab.cli.mop:mop"},
)
