"""``trustlab audit``: run every registered audit section on one model and write one report.html.

The sections are the method records' ``audit`` entries (:mod:`trustlab.registry`), each a function
``run(model, run: RunFolder, *, quick: bool, seed: int) -> list[Section]`` that writes its own plots/JSON
into the run folder and returns the report sections to show. Sections are isolated from each other:

- one that cannot run on the given backend (:class:`~trustlab.errors.CapabilityError`, e.g. attention
  steering on an HTTP endpoint), lacks an extra (:class:`~trustlab.errors.MissingExtraError`) or lacks data
  that cannot be had here (:class:`~trustlab.errors.DataUnavailableError`, e.g. MOSSBench offline) is
  reported as skipped, with the reason;
- one that crashes (any other exception) is reported as failed, with its error and the last frames of its
  traceback, in report.html and results.json; the others still run and keep their results, and
  :func:`run_audit` then raises :class:`AuditSectionError` (``trustlab audit`` exits 1).

Sections may also return :class:`~trustlab.audit.scorecard.Concern` rows (built with
:func:`~trustlab.audit.scorecard.measure`) next to their report sections: they make the scorecard at the top of
report.html and ``scorecard.json``, which :mod:`trustlab.audit.gate` checks and :mod:`trustlab.audit.compare`
compares across runs.
"""

from __future__ import annotations

import dataclasses
import html
import time
import traceback
from pathlib import Path
from typing import Any

from trustlab.audit.gate import EXIT_GATE, GateResult, check_gate, require_baseline
from trustlab.audit.plan import Plan, takes
from trustlab.audit.scorecard import (
    SCORECARD_CSS,
    Concern,
    apply_thresholds,
    fixes_section,
    scorecard_html,
    write_scorecard,
)
from trustlab.errors import CapabilityError, DataUnavailableError, MissingExtraError, TrustlabError
from trustlab.registry import audit_sections, get_section, resolve
from trustlab.report import RunFolder, Section

TRACEBACK_FRAMES = 6  # frames of a failed section's traceback shown in report.html


class AuditSectionError(TrustlabError):
    """Audit sections crashed; report.html (with their errors and the other sections' results) was written.

    Attributes:
        failed: section name -> {"type", "message", "frames", "traceback"}.
        report: the path of the written report.html.
    """

    def __init__(self, failed: dict[str, dict[str, Any]], report: Path):
        self.failed = failed
        self.report = report
        what = "; ".join(f"{name} ({f['type']}: {_one_line(f['message'])})" for name, f in failed.items())
        super().__init__(f"audit section{'s' if len(failed) > 1 else ''} failed: {what}; "
                         f"the report with the other sections is {report}")


class GateFailedError(TrustlabError):
    """The regression gate (``--fail-on``) found broken rules; the report and scorecard.json were written.

    Attributes:
        result: the :class:`~trustlab.audit.gate.GateResult`.
        report: the path of the written report.html.
        exit_code: the exit status of ``trustlab audit`` for it.
    """

    exit_code = EXIT_GATE

    def __init__(self, result: GateResult, report: Path):
        self.result = result
        self.report = report
        super().__init__(f"audit gate failed ({len(result.failures)} broken): " + "; ".join(result.failures)
                         + f"; the report is {report}")


def _gate_html(result: GateResult) -> str:
    status = "passed" if result.passed else "failed"
    items = "".join(f"<li>{html.escape(x)}</li>" for x in result.failures + result.notes)
    return (f'<p class="small"><span class="v v-{"pass" if result.passed else "fail"}">gate {status}</span> rules: '
            f"{html.escape(', '.join(result.rules))}</p>" + (f'<ul class="small">{items}</ul>' if items else ""))


def _one_line(text: str, limit: int = 160) -> str:
    first = text.strip().splitlines()[0] if text.strip() else ""
    return first if len(first) <= limit else first[:limit - 3] + "..."


def _failure(exc: Exception) -> dict[str, Any]:
    frames = traceback.extract_tb(exc.__traceback__)[-TRACEBACK_FRAMES:]
    return {"type": type(exc).__name__, "message": str(exc),
            "frames": [{"file": f.filename, "line": f.lineno, "function": f.name, "code": f.line or ""}
                       for f in frames],
            "traceback": "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))}


def _failure_section(name: str, failure: dict[str, Any]) -> Section:
    text = (f"This section crashed with {failure['type']}: {failure['message']}\n\n"
            "The other sections ran and kept their results. The last frames of the traceback (the full one is "
            "in results.json):")
    return Section(title=f"{name} (failed)", text=text, table=failure["frames"], anchor=f"{name}-failed")


def run_audit(model: Any, out: str | Path, *, sections: list[str] | None = None, quick: bool = False,
              seed: int = 0, roles: dict[str, Any] | None = None, thresholds: dict[str, float] | None = None,
              fail_on: list[str] | None = None, baseline: list[Concern] | None = None, scale: float = 1.0,
              plan: Plan | None = None) -> Path:
    """Audit ``model`` (a handle from :func:`trustlab.models.load_model`) into the run folder ``out``.

    Args:
        model: the model handle.
        out: the run folder.
        sections: section names to run (default: every registered section, in registry order).
        quick: smallest sizes (a smoke test, not a measurement).
        seed: random seed.
        roles: other models for the roles of some methods, by role name (``"judge"``: the refusal judge and
            backtranslator of the safety section; ``"nli"``, ``"extractor"``: CLUE's NLI and concept extractor
            in the uncertainty section); a role not given is the audited model. Sections whose function takes a
            ``roles`` argument receive them.
        scale: the sections' sizes times this (sections whose ``run`` takes ``scale``; see
            :mod:`trustlab.audit.plan`), e.g. from :func:`~trustlab.audit.plan.make_plan` for a time budget.
        plan: the plan made before the run, recorded in results.json beside the seconds each section took.
        thresholds: concern id -> threshold, replacing the sections' defaults in the scorecard.
        fail_on: gate rules (:func:`trustlab.audit.gate.parse_rules`) checked on the scorecard.
        baseline: a baseline run's concerns (:func:`trustlab.audit.scorecard.read_scorecard`) for ``regression``
            rules.

    Returns:
        The path of the written report.html.

    Raises:
        UnknownMethodError: a name in ``sections`` is no registered section.
        AuditSectionError: a section crashed (after the report with every section was written).
        GateFailedError: a ``fail_on`` rule broke (after the report was written).
        GateError: a regression rule has no baseline.

    Example:
        >>> from trustlab.models import load_model
        >>> run_audit(load_model(), "runs/audit", sections=["uncertainty"], quick=True)
        PosixPath('runs/audit/report.html')
    """
    require_baseline(fail_on or [], baseline)
    records = [get_section(s) for s in sections] if sections else audit_sections()
    if not records:
        raise TrustlabError("no audit sections are registered")
    chosen = [r.section for r in records]
    roles = {k: v for k, v in (roles or {}).items() if v is not None}
    config = {"command": "audit", "model": model.describe(), "sections": chosen, "quick": quick, "seed": seed,
              **({"scale": scale} if scale != 1.0 else {})}
    if roles:
        config["roles"] = {k: v.describe() for k, v in roles.items()}
    run = RunFolder(out, config)
    report: list[Section] = []
    concerns: list[Concern] = []
    timings: dict[str, float] = {}
    skipped: dict[str, str] = {}
    failed: dict[str, dict[str, Any]] = {}
    for record in records:
        name = record.section
        t0 = time.perf_counter()
        try:
            fn = resolve(record.audit)
            extra = {k: v for k, v in (("roles", roles), ("scale", scale)) if takes(fn, k)}
            for part in fn(model, run, quick=quick, seed=seed, **extra):
                if isinstance(part, Concern):
                    concerns.append(part if part.section else _with_section(part, name))
                else:
                    report.append(part)
        except (CapabilityError, MissingExtraError, DataUnavailableError) as exc:
            skipped[name] = str(exc)
            report.append(Section(title=f"{name} (skipped)", text=str(exc)))
        except Exception as exc:  # noqa: BLE001  (a crashing section must not take the others down)
            failed[name] = _failure(exc)
            report.append(_failure_section(name, failed[name]))
        timings[name] = round(time.perf_counter() - t0, 2)
    concerns = apply_thresholds(concerns, thresholds)
    gate = check_gate(concerns, fail_on, baseline, threshold_ids=list(thresholds or {}), seed=seed) if fail_on else None
    not_run = {**{k: f"skipped: {v}" for k, v in skipped.items()},
               **{k: f"failed: {v['type']}: {_one_line(v['message'])}" for k, v in failed.items()}}
    write_scorecard(run.path, concerns, quick=quick, not_run=not_run, thresholds_given=sorted(thresholds or {}),
                    gate=gate.to_dict() if gate else None)
    run.write_results({"sections": chosen, "seconds": timings, "skipped": skipped, "failed": failed,
                       "gate": gate.to_dict() if gate else None, "plan": plan.to_dict() if plan else None})
    lead = (_gate_html(gate) if gate else "") + scorecard_html(concerns, not_run=not_run)
    path = run.write_report(f"trustlab audit: {model.name}", [fixes_section(concerns), *report],
                            meta={"model": model.name, "backend": model.capabilities.backend,
                                  "seconds": round(sum(timings.values()), 1),
                                  **({"quick": "yes (a smoke test, not a measurement)"} if quick else {}),
                                  **({"sizes": f"x {scale:g} (time budget)"} if scale != 1.0 else {}),
                                  **({"failed": ", ".join(failed)} if failed else {})},
                            lead=lead, css=SCORECARD_CSS)
    if failed:
        raise AuditSectionError(failed, path)
    if gate is not None and not gate.passed:
        raise GateFailedError(gate, path)
    return path


def _with_section(concern: Concern, name: str) -> Concern:
    return dataclasses.replace(concern, section=name)
