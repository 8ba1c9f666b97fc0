"""``trustlab audit``: the main job, one report over every registered audit section, with a scorecard, a
regression gate (``--fail-on``), ``--compare RUN_A RUN_B`` and ``--check RUN`` (the gate on a written run)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

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

# Not checked for existence by click: a missing run folder or gate file is reported by the library (one clean line),
# and the README's example lines parse without the folders they name.
RUN_DIR = click.Path(path_type=Path, file_okay=False)


def _section_names() -> list[str]:
    from trustlab.registry import audit_sections

    return [m.section or m.id for m in audit_sections()]


def _section_rows() -> list[tuple[str, str]]:
    from trustlab.registry import audit_sections

    return [(m.section or m.id, m.title) for m in audit_sections()]


def gate_options(fn: Any) -> Any:
    """--fail-on, --baseline and --gate, shared by ``audit`` and ``audit gate``."""
    fn = click.option("--gate", "gate_file", type=click.Path(path_type=Path, dir_okay=False),
                      default=None, metavar="FILE",
                      help="TOML/JSON gate file: fail_on = [rules], baseline = \"RUN\", [thresholds] id = number")(fn)
    fn = click.option("--baseline", type=RUN_DIR, default=None, metavar="RUN",
                      help="an earlier audit run folder, for the regression rules")(fn)
    return click.option("--fail-on", "fail_on", multiple=True, metavar="RULES",
                        help="exit 3 when a rule breaks (repeatable, comma-separated): fail, lean-fail, not-measurable, "
                             "regression, regression:ID, ID>N / ID<N (e.g. jailbreak.attack_success>0.3)")(fn)


def _gate_settings(fail_on: tuple[str, ...], baseline: Path | None, gate_file: Path | None) -> dict[str, Any]:
    """(rules, baseline concerns, thresholds) from the options and the gate file (options add to the file)."""
    from trustlab.audit.gate import parse_rules, read_gate_file, require_baseline
    from trustlab.audit.scorecard import read_scorecard

    settings = read_gate_file(gate_file) if gate_file else {"fail_on": [], "baseline": None, "thresholds": {}}
    rules = list(dict.fromkeys(settings["fail_on"] + parse_rules(fail_on)))
    base_dir = baseline or (Path(settings["baseline"]) if settings["baseline"] else None)
    if base_dir is not None and gate_file is not None and not base_dir.is_absolute() and baseline is None:
        base_dir = gate_file.parent / base_dir  # a gate file's baseline is relative to the file
    concerns = read_scorecard(base_dir)[0] if base_dir is not None else None
    require_baseline(rules, concerns)
    return {"fail_on": rules, "baseline": concerns, "thresholds": settings["thresholds"]}


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
@click.option("--budget-minutes", type=click.FloatRange(min=0, min_open=True), default=None,
              help="shrink the sections' sizes until the calibrated estimate fits (wider intervals, shown as such)")
@click.option("--plan-only", is_flag=True, help="print the plan and the estimate, and stop")
@gate_options
@click.option("--compare", nargs=2, type=RUN_DIR, default=None, metavar="RUN_A RUN_B",
              help="compare two audit runs (base vs fine-tune): each concern side by side, B - A with its 95% "
                   "interval, into OUT/report.html; runs no model")
@click.option("--check", type=RUN_DIR, default=None, metavar="RUN",
              help="check the gate rules on an audit run already written (exit 3 when one breaks); runs no model")
@click.pass_context
def audit(ctx: click.Context, model_spec: str, model_name: str | None, attn_implementation: str | None, seed: int,
          out: Path, sections: tuple[str, ...], quick: bool, judge_model: str | None, nli_model: str | None,
          extractor_model: str | None, budget_minutes: float | None, plan_only: bool, fail_on: tuple[str, ...],
          baseline: Path | None, gate_file: Path | None, compare: tuple[Path, Path] | None, check: Path | None) -> None:
    """Audit a model (default: the embedded SmolLM2) and write OUT/report.html with a scorecard on top.

    Methods with roles can give them to a stronger model: e.g. --judge-model embedded:qwen2.5-coder-1.5b
    --nli-model embedded:qwen2.5-coder-1.5b (after `bash scripts/install.sh models`). A section that crashes
    is reported in the page with its error; the others still run, and the command then exits with status 1.
    Before running it prints its plan (sections, items, model calls) with an estimate from a short calibration;
    --budget-minutes shrinks the sizes to fit.
    With --fail-on (or --gate FILE), it exits with status 3 when a gate rule breaks, e.g. in CI:
    `trustlab audit --model M --baseline runs/audit-base --fail-on fail,regression`. --compare RUN_A RUN_B (into
    --out, default runs/audit-compare) and --check RUN work on written runs and load no model.
    """
    if compare and check:
        raise click.UsageError("give --compare or --check, not both")
    if compare:
        default = ctx.get_parameter_source("out") is click.core.ParameterSource.DEFAULT
        _compare(*compare, Path("runs/audit-compare") if default else out, seed)
        return
    if check:
        _check(check, fail_on, baseline, gate_file, seed)
        return
    from trustlab.audit import AuditSectionError, GateFailedError, run_audit
    from trustlab.audit.plan import make_plan
    from trustlab.registry import audit_sections, get_section

    gate = _gate_settings(fail_on, baseline, gate_file)  # before loading anything: a bad gate fails fast
    model = load_from_options(model_spec, model_name, attn_implementation)
    given = {"judge": judge_model, "nli": nli_model, "extractor": extractor_model}
    handles = load_role_options(model, model_spec, attn_implementation, given)
    roles = {r: handles[r] for r, spec in given.items() if spec is not None}  # unset: the sections use the model
    chosen = list(dict.fromkeys(sections)) or None
    plan = make_plan(model, [get_section(s) for s in chosen] if chosen else audit_sections(), quick=quick,
                     budget_minutes=budget_minutes)
    click.echo(plan.text(), err=not plan_only)  # stdout keeps the one "report: PATH" line that scripts read
    if plan_only:
        return
    try:
        path = run_audit(model, out, sections=chosen, quick=quick, seed=seed, roles=roles, scale=plan.scale,
                         plan=plan, **gate)
    except AuditSectionError as exc:
        click.secho(f"error: {exc}", fg="red", err=True)
        sys.exit(1)
    except GateFailedError as exc:
        _print_gate(exc.result)
        click.echo(f"report: {exc.report}")
        sys.exit(exc.exit_code)
    if gate["fail_on"]:
        click.echo(f"gate passed: {', '.join(gate['fail_on'])}")
    click.echo(f"report: {path}")


def _print_gate(result: Any) -> None:
    click.secho(f"gate failed ({len(result.failures)} broken):", fg="red", err=True)
    for line in result.failures:
        click.echo(f"  {line}", err=True)
    for line in result.notes:
        click.echo(f"  note: {line}", err=True)


def _compare(run_a: Path, run_b: Path, out: Path, seed: int) -> None:
    from trustlab.audit.compare import compare_runs

    if out.resolve() in (run_a.resolve(), run_b.resolve()):
        raise click.BadParameter(f"{out} is one of the compared runs; write the comparison elsewhere",
                                 param_hint="--out")
    click.echo(f"report: {compare_runs(run_a, run_b, out, seed=seed)}")


def _check(run: Path, fail_on: tuple[str, ...], baseline: Path | None, gate_file: Path | None, seed: int) -> None:
    from trustlab.audit.gate import EXIT_GATE, GateError, check_gate
    from trustlab.audit.scorecard import apply_thresholds, read_scorecard

    settings = _gate_settings(fail_on, baseline, gate_file)
    if not settings["fail_on"]:
        raise GateError("no gate rules: give --fail-on RULES or a --gate file with fail_on = [...]")
    concerns = apply_thresholds(read_scorecard(run)[0], settings["thresholds"])
    result = check_gate(concerns, settings["fail_on"], settings["baseline"], threshold_ids=list(settings["thresholds"]),
                        seed=seed)
    if not result.passed:
        _print_gate(result)
        sys.exit(EXIT_GATE)
    click.echo(f"gate passed: {', '.join(settings['fail_on'])}")
