"""``trustlab audit``: the main job, one report over every registered audit section."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from trustlab.cli.common import (
    ListingCommand,
    Registered,
    load_from_options,
    load_role_options,
    model_options,
    out_option,
    seed_option,
)


def _section_names() -> list[str]:
    from trustlab.registry import audit_sections

    return [m.section or m.id for m in audit_sections()]


def _section_rows() -> list[tuple[str, str]]:
    from trustlab.registry import audit_sections

    return [(m.section or m.id, m.title) for m in audit_sections()]


@click.command(cls=ListingCommand, listing=("Sections (in report order)", _section_rows))
@model_options
@seed_option
@out_option("runs/audit")
@click.option("--section", "sections", multiple=True, type=Registered(_section_names, "audit section"),
              help="run only this section (repeatable; default: all sections, listed below)")
@click.option("--quick", is_flag=True, help="smallest sizes (a smoke test, not a measurement)")
@click.option("--judge-model", default=None, metavar="SPEC",
              help="safety: the refusal judge and backtranslator (default: the audited model)")
@click.option("--nli-model", default=None, metavar="SPEC",
              help="uncertainty: CLUE's LLM-as-NLI (default: the audited model)")
@click.option("--extractor-model", default=None, metavar="SPEC",
              help="uncertainty: CLUE's concept extractor (default: the audited model)")
def audit(model_spec: str, model_name: str | None, attn_implementation: str | None, seed: int, out: Path,
          sections: tuple[str, ...], quick: bool, judge_model: str | None, nli_model: str | None,
          extractor_model: str | None) -> None:
    """Audit a model (default: the embedded SmolLM2) and write OUT/report.html.

    Methods with roles can give them to a stronger model: e.g. --judge-model embedded:qwen2.5-coder-1.5b
    --nli-model embedded:qwen2.5-coder-1.5b (after `bash scripts/install.sh models`). A section that crashes
    is reported in the page with its error; the others still run, and the command then exits with status 1.
    """
    from trustlab.audit import AuditSectionError, run_audit

    model = load_from_options(model_spec, model_name, attn_implementation)
    given = {"judge": judge_model, "nli": nli_model, "extractor": extractor_model}
    handles = load_role_options(model, model_spec, attn_implementation, given)
    roles = {r: handles[r] for r, spec in given.items() if spec is not None}  # unset: the sections use the model
    try:
        path = run_audit(model, out, sections=list(dict.fromkeys(sections)) or None, quick=quick, seed=seed,
                         roles=roles)
    except AuditSectionError as exc:
        click.secho(f"error: {exc}", fg="red", err=True)
        sys.exit(1)
    click.echo(f"report: {path}")
