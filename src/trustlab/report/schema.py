"""The shared results schema (see CONVENTIONS.md): reproduction summaries and benchmark records.

``results/<method>/summary.json`` holds one :class:`Claim` or a list of them;
``results/benchmarks/<name>.json`` holds one :class:`BenchmarkRecord` or a list of them.
The README's method table is generated from these files only.
"""

from __future__ import annotations

import os
import platform
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from trustlab.report.io import read_json, write_json


@dataclass
class Claim:
    """One checked claim of a paper.

    Attributes:
        method: method id, e.g. ``"lora-rite"``.
        claim: the paper's claim in one line.
        metric: what ``ours`` and ``baseline`` measure.
        ours: our method's number.
        baseline: the baseline's number.
        baseline_name: what the baseline is.
        reproduced: whether the spec's pass condition held (decided before the run, never tuned).
        setup: model, data, sizes, seeds: enough to re-run.
        higher_is_better: direction of ``metric`` (for readers and tables).
        note: a plain sentence on what the number means, especially when it did not reproduce.
        n: the number of items behind the decision (prompts, probes, questions, test examples).
        ci: the 95% interval of ``ours - baseline`` (:mod:`trustlab.report.stats`); None only where no
            interval applies (e.g. a deterministic float64 check).
        valid_rate: the share of model outputs that parsed into valid data (:mod:`trustlab.validity`);
            None where nothing is parsed.
        measurable: False when ``valid_rate`` or a pre-check fixed in the spec before the run is below its
            threshold: the claim is then "not measurable" (never "not reproduced"), and ``reproduced`` is
            False.

    Example:
        >>> Claim("clue", "CLUE beats MSP", "ROC-AUC", 0.7, 0.6, "msp", True, {"model": "m", "quick": False},
        ...       n=30, ci=[0.02, 0.18], valid_rate=0.9).verdict
        'reproduced'
    """

    method: str
    claim: str
    metric: str
    ours: float | None
    baseline: float | None
    baseline_name: str
    reproduced: bool
    setup: dict[str, Any] = field(default_factory=dict)
    higher_is_better: bool = True
    note: str = ""
    n: int | None = None
    ci: list[float] | None = None
    valid_rate: float | None = None
    measurable: bool = True

    @property
    def verdict(self) -> str:
        """``reproduced``, ``not reproduced`` or ``not measurable``."""
        return verdict(self.to_dict())

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        if d["ci"] is not None:
            d["ci"] = [float(x) for x in d["ci"]]
        d["verdict"] = verdict(d)
        return d


def verdict(claim: dict[str, Any]) -> str:
    """The word a reader sees for a claim dict: ``not measurable`` wins over the number."""
    if not claim.get("measurable", True):
        return "not measurable"
    return "reproduced" if claim["reproduced"] else "not reproduced"


@dataclass
class BenchmarkRecord:
    """One side-by-side speed measurement.

    Attributes:
        measure: what was timed, with its unit.
        ours: our number.
        peer: the peer's number, same unit, same run.
        peer_name: the peer.
        ratio: ours / peer.
        lower_is_better: direction of ``measure``.
        target: the target ratio from the issue.
        machine: where it ran (see :func:`machine_info`).
        details: anything else measured (settings, repeats, raw timings).
    """

    measure: str
    ours: float
    peer: float
    peer_name: str
    lower_is_better: bool
    target: float | None
    machine: dict[str, Any] = field(default_factory=lambda: machine_info())
    details: dict[str, Any] = field(default_factory=dict)
    ratio: float = field(init=False)

    def __post_init__(self) -> None:
        self.ratio = float(self.ours) / float(self.peer) if self.peer else float("nan")

    @property
    def meets_target(self) -> bool | None:
        if self.target is None:
            return None
        return self.ratio <= self.target if self.lower_is_better else self.ratio >= self.target

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["meets_target"] = self.meets_target
        return d


def machine_info() -> dict[str, Any]:
    """CPU count, platform and library versions, for benchmark records."""
    info: dict[str, Any] = {
        "platform": platform.platform(),
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
    }
    try:
        import torch

        info["torch"] = torch.__version__
        info["torch_threads"] = torch.get_num_threads()
        info["cuda"] = torch.cuda.is_available()
    except ImportError:
        pass
    try:
        import transformers

        info["transformers"] = transformers.__version__
    except ImportError:
        pass
    return info


CLAIM_FIELDS = frozenset({"method", "claim", "metric", "ours", "baseline", "baseline_name", "reproduced", "setup",
                          "n", "ci", "valid_rate", "measurable"})


def _validate_claim(d: dict[str, Any]) -> dict[str, Any]:
    """Check one claim dict against the schema of CONVENTIONS.md; raise ValueError naming what is wrong."""
    where = f"claim {d.get('metric', d.get('claim', '?'))!r} of {d.get('method', '?')!r}"
    missing = CLAIM_FIELDS - set(d)
    if missing:
        raise ValueError(f"{where} lacks {sorted(missing)}")
    if not isinstance(d["reproduced"], bool) or not isinstance(d["measurable"], bool):
        raise ValueError(f"{where}: 'reproduced' and 'measurable' must be true or false")
    if d["reproduced"] and not d["measurable"]:
        raise ValueError(f"{where}: a claim that is not measurable cannot count as reproduced")
    if not isinstance(d["n"], int) or isinstance(d["n"], bool) or d["n"] < 0:
        raise ValueError(f"{where}: 'n' (items behind the decision) must be a count, got {d['n']!r}")
    ci = d["ci"]
    if ci is not None and not (isinstance(ci, list) and len(ci) == 2 and ci[0] <= ci[1]):
        raise ValueError(f"{where}: 'ci' must be [lo, hi] with lo <= hi, or null; got {ci!r}")
    vr = d["valid_rate"]
    if vr is not None and not (isinstance(vr, (int, float)) and 0.0 <= vr <= 1.0):
        raise ValueError(f"{where}: 'valid_rate' must lie in [0, 1] or be null; got {vr!r}")
    if not isinstance(d["setup"], dict) or not isinstance(d["setup"].get("quick"), bool):
        raise ValueError(f"{where}: 'setup' must record 'quick': true|false")
    return d


def under_results(folder: str | os.PathLike) -> bool:
    """Whether ``folder`` lies in a ``results/`` tree (where only full, committed runs belong)."""
    return "results" in Path(folder).resolve().parts


def write_summary(folder: str | os.PathLike, claims: Claim | list[Claim]) -> Path:
    """Write ``summary.json`` for a method (one claim or a list), validated against the schema.

    Raises:
        ValueError: a claim breaks the schema, or a quick run's claims would land under ``results/``
            (quick runs are smoke tests: they write under ``runs/``).
    """
    items = claims if isinstance(claims, list) else [claims]
    data = [_validate_claim(c.to_dict()) for c in items]
    folder = Path(folder)
    if any(d["setup"]["quick"] for d in data) and under_results(folder):
        raise ValueError(f"refusing to write a quick run's summary into {folder}: quick runs are not the "
                         "committed numbers; write them under runs/")
    return write_json(folder / "summary.json", data if isinstance(claims, list) else data[0])


def read_summary(path: str | os.PathLike) -> list[dict[str, Any]]:
    """Claims of a ``summary.json`` as a list (validated)."""
    data = read_json(path)
    items = data if isinstance(data, list) else [data]
    out = []
    for d in items:
        try:
            out.append(_validate_claim(d))
        except ValueError as exc:
            raise ValueError(f"{path}: {exc}") from None
    return out


def write_benchmark(path: str | os.PathLike, records: BenchmarkRecord | list[BenchmarkRecord]) -> Path:
    """Write a benchmark JSON file (one record or a list) and return its path."""
    if isinstance(records, list):
        return write_json(path, [r.to_dict() for r in records])
    return write_json(path, records.to_dict())


def read_benchmark(path: str | os.PathLike) -> list[dict[str, Any]]:
    data = read_json(path)
    items = data if isinstance(data, list) else [data]
    for d in items:
        missing = {"measure", "ours", "peer", "peer_name", "ratio", "lower_is_better", "target", "machine"} - set(d)
        if missing:
            raise ValueError(f"{path}: benchmark entry lacks {sorted(missing)}")
    return items
