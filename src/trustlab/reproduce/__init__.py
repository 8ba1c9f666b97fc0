"""``trustlab reproduce <method>``: one module per method, each with
``run(out: Path, *, quick: bool = False, seed: int = 0) -> list[Claim]`` that re-runs the spec's
small-scale reproduction and writes ``out/summary.json`` plus detailed JSON and plots."""

from __future__ import annotations

import importlib
from pathlib import Path

from trustlab.report.schema import Claim

# method id -> module implementing run(); adding a reproduction is one line here.
REPRODUCTIONS: dict[str, str] = {
    "backtranslation": "trustlab.reproduce.backtranslation",
    "clue": "trustlab.reproduce.clue",
    "context-awareness": "trustlab.reproduce.context_awareness",
    "lora-rite": "trustlab.reproduce.lora_rite",
}


def run_reproduction(method: str, out: Path | None = None, *, quick: bool = False, seed: int = 0) -> list[Claim]:
    """Run the reproduction of ``method`` into ``out`` (default ``results/<method>``)."""
    if method not in REPRODUCTIONS:
        known = ", ".join(sorted(REPRODUCTIONS)) or "none yet"
        raise KeyError(f"no reproduction for {method!r}; available: {known}")
    module = importlib.import_module(REPRODUCTIONS[method])
    return module.run(Path(out or Path("results") / method), quick=quick, seed=seed)
