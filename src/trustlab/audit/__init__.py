"""``trustlab audit``: run every registered audit section on one model and write one report.html.

A section is a module with ``run(model, run: RunFolder, *, quick: bool, seed: int) -> list[Section]``
that writes its own plots/JSON into the run folder and returns the report sections to show. Adding a
method's section is one line in :data:`SECTIONS`. A section that cannot run on the given backend
(e.g. attention steering on an HTTP endpoint) is reported as skipped, with the reason, not as a crash.
"""

from __future__ import annotations

import importlib
import time
from pathlib import Path
from typing import Any

from trustlab.errors import CapabilityError, MissingExtraError
from trustlab.report import RunFolder, Section

# section name -> module with run(); order is the order in report.html
SECTIONS: dict[str, str] = {
    "context": "trustlab.context.audit",
    "uncertainty": "trustlab.uncertainty.audit",
    "jailbreak": "trustlab.safety.audit",
}


def run_audit(model: Any, out: str | Path, *, sections: list[str] | None = None, quick: bool = False,
              seed: int = 0) -> Path:
    """Audit ``model`` (a handle from :func:`trustlab.models.load_model`) into the run folder ``out``.

    Returns:
        The path of the written report.html.
    """
    chosen = list(SECTIONS) if not sections else sections
    unknown = [s for s in chosen if s not in SECTIONS]
    if unknown:
        raise KeyError(f"unknown audit sections {unknown}; available: {', '.join(SECTIONS) or 'none'}")
    run = RunFolder(out, {"command": "audit", "model": model.describe(), "sections": chosen,
                          "quick": quick, "seed": seed})
    report: list[Section] = []
    timings: dict[str, float] = {}
    skipped: dict[str, str] = {}
    for name in chosen:
        t0 = time.perf_counter()
        try:
            report += importlib.import_module(SECTIONS[name]).run(model, run, quick=quick, seed=seed)
        except (CapabilityError, MissingExtraError) as exc:
            skipped[name] = str(exc)
            report.append(Section(title=f"{name} (skipped)", text=str(exc)))
        timings[name] = round(time.perf_counter() - t0, 2)
    run.write_results({"sections": chosen, "seconds": timings, "skipped": skipped})
    return run.write_report(f"trustlab audit: {model.name}", report,
                            meta={"model": model.name, "backend": model.capabilities.backend,
                                  "seconds": round(sum(timings.values()), 1)})
