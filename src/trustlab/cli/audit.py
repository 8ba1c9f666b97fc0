"""``trustlab audit``: the main job."""

from __future__ import annotations

from pathlib import Path

import click

from trustlab.cli import main
from trustlab.cli.common import load_from_options, model_options, out_option, seed_option


@main.command()
@model_options
@seed_option
@out_option("runs/audit")
@click.option("--section", "sections", multiple=True, help="run only these sections (repeatable)")
@click.option("--quick", is_flag=True, help="smallest sizes (a smoke test, not a measurement)")
def audit(model_spec: str, model_name: str | None, attn_implementation: str | None, seed: int, out: Path,
          sections: tuple[str, ...], quick: bool) -> None:
    """Audit a model (default: the embedded SmolLM2) and write OUT/report.html."""
    from trustlab.audit import SECTIONS, run_audit

    if not SECTIONS:
        raise click.ClickException("no audit sections are installed in this version")
    model = load_from_options(model_spec, model_name, attn_implementation)
    path = run_audit(model, out, sections=list(sections) or None, quick=quick, seed=seed)
    click.echo(f"report: {path}")
