"""``trustlab reproduce <method>``: each method record's ``reproduce`` entry (:mod:`trustlab.registry`) is
``run(out: Path, *, quick: bool = False, seed: int = 0) -> list[Claim]``, which re-runs the spec's
small-scale reproduction and writes ``out/summary.json`` plus detailed JSON and plots.

Full runs write ``results/<method>`` (the committed numbers); quick runs write ``runs/reproduce/<method>``,
never ``results/``.
"""

from __future__ import annotations

from pathlib import Path

from trustlab.errors import TrustlabError
from trustlab.registry import get_reproduction, resolve
from trustlab.report.schema import Claim, under_results


def default_out(method: str, *, quick: bool) -> Path:
    """Where a reproduction writes unless told: ``runs/reproduce/<method>`` when quick, else ``results/<method>``.

    Example:
        >>> default_out("clue", quick=True)
        PosixPath('runs/reproduce/clue')
    """
    return Path("runs", "reproduce", method) if quick else Path("results", method)


def run_reproduction(method: str, out: str | Path | None = None, *, quick: bool = False,
                     seed: int = 0) -> list[Claim]:
    """Run the reproduction of ``method`` into ``out`` (default: :func:`default_out`).

    Raises:
        UnknownMethodError: no registered method with a reproduction has this id.
        TrustlabError: a quick run aimed at ``results/`` (refused before it runs, not after).

    Example:
        >>> claims = run_reproduction("lora-rite", quick=True)   # writes runs/reproduce/lora-rite/
    """
    record = get_reproduction(method)
    out = Path(out) if out else default_out(method, quick=quick)
    if quick and under_results(out):  # write_summary would refuse it at the end of the run
        raise TrustlabError(f"a quick run is a smoke test, not the committed numbers: write it outside results/ "
                            f"(not {out}), e.g. the default {default_out(method, quick=True)}")
    return resolve(record.reproduce)(out, quick=quick, seed=seed)
