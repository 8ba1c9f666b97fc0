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

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


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


def _validate_claim(d: dict[str, Any]) -> dict[str, Any]:
    missing = {"method", "claim", "metric", "ours", "baseline", "baseline_name", "reproduced", "setup"} - set(d)
    if missing:
        raise ValueError(f"summary entry lacks {sorted(missing)}: {d}")
    if not isinstance(d["reproduced"], bool):
        raise ValueError(f"'reproduced' must be true or false, got {d['reproduced']!r}")
    return d


def write_summary(folder: str | os.PathLike, claims: Claim | list[Claim]) -> Path:
    """Write ``summary.json`` for a method (one claim or a list)."""
    items = claims if isinstance(claims, list) else [claims]
    data = [_validate_claim(c.to_dict()) for c in items]
    return write_json(Path(folder) / "summary.json", data if isinstance(claims, list) else data[0])


def read_summary(path: str | os.PathLike) -> list[dict[str, Any]]:
    """Claims of a ``summary.json`` as a list (validated)."""
    data = read_json(path)
    items = data if isinstance(data, list) else [data]
    return [_validate_claim(d) for d in items]


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
