"""The Diffusion-TracIn / Diffusion-ReTrac record for the registry: its reproduction, ``trustlab train-ddpm``
and ``trustlab attribute``.

No audit section: the attributors explain a diffusion model trained with a logged timestep schedule, not a
language model under test.
"""

from trustlab.registry import register_method

register_method(
    id="diffusion-tracin",
    title="Diffusion-TracIn / Diffusion-ReTrac data attribution for diffusion models",
    area="explain",
    spec="diffusion-tracin-retrac.md",
    reproduce="trustlab.reproduce.diffusion_tracin:run",
    cli={"train-ddpm": "trustlab.cli.attribute:train_ddpm_command",
         "attribute": "trustlab.cli.attribute:attribute"},
)
