"""``trustlab audit``: run every registered audit section on one model and write one report.html.

The sections are the method records' ``audit`` entries (:mod:`trustlab.registry`), each a function
``run(model, run: RunFolder, *, quick: bool, seed: int) -> list[Section]`` that writes its own plots/JSON
into the run folder and returns the report sections to show. Sections are isolated from each other:

- one that cannot run on the given backend (:class:`~trustlab.errors.CapabilityError`, e.g. attention
  steering on an HTTP endpoint) or lacks an extra (:class:`~trustlab.errors.MissingExtraError`) is
  reported as skipped, with the reason;
- one that crashes (any other exception) is reported as failed, with its error and the last frames of its
  traceback, in report.html and results.json; the others still run and keep their results, and
  :func:`run_audit` then raises :class:`AuditSectionError` (``trustlab audit`` exits 1).
"""

from __future__ import annotations

import time
import traceback
from pathlib import Path
from typing import Any

from trustlab.errors import CapabilityError, MissingExtraError, TrustlabError
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


def _takes_roles(fn: Any) -> bool:
    import inspect

    return "roles" in inspect.signature(fn).parameters


def run_audit(model: Any, out: str | Path, *, sections: list[str] | None = None, quick: bool = False,
              seed: int = 0, roles: dict[str, Any] | None = None) -> Path:
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

    Returns:
        The path of the written report.html.

    Raises:
        UnknownMethodError: a name in ``sections`` is no registered section.
        AuditSectionError: a section crashed (after the report with every section was written).

    Example:
        >>> from trustlab.models import load_model
        >>> run_audit(load_model(), "runs/audit", sections=["uncertainty"], quick=True)
        PosixPath('runs/audit/report.html')
    """
    records = [get_section(s) for s in sections] if sections else audit_sections()
    if not records:
        raise TrustlabError("no audit sections are registered")
    chosen = [r.section for r in records]
    roles = {k: v for k, v in (roles or {}).items() if v is not None}
    config = {"command": "audit", "model": model.describe(), "sections": chosen, "quick": quick, "seed": seed}
    if roles:
        config["roles"] = {k: v.describe() for k, v in roles.items()}
    run = RunFolder(out, config)
    report: list[Section] = []
    timings: dict[str, float] = {}
    skipped: dict[str, str] = {}
    failed: dict[str, dict[str, Any]] = {}
    for record in records:
        name = record.section
        t0 = time.perf_counter()
        try:
            fn = resolve(record.audit)
            extra = {"roles": roles} if _takes_roles(fn) else {}
            report += fn(model, run, quick=quick, seed=seed, **extra)
        except (CapabilityError, MissingExtraError) as exc:
            skipped[name] = str(exc)
            report.append(Section(title=f"{name} (skipped)", text=str(exc)))
        except Exception as exc:  # noqa: BLE001  (a crashing section must not take the others down)
            failed[name] = _failure(exc)
            report.append(_failure_section(name, failed[name]))
        timings[name] = round(time.perf_counter() - t0, 2)
    run.write_results({"sections": chosen, "seconds": timings, "skipped": skipped, "failed": failed})
    path = run.write_report(f"trustlab audit: {model.name}", report,
                            meta={"model": model.name, "backend": model.capabilities.backend,
                                  "seconds": round(sum(timings.values()), 1),
                                  **({"failed": ", ".join(failed)} if failed else {})})
    if failed:
        raise AuditSectionError(failed, path)
    return path
