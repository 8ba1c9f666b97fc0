"""Train-side feature caches: per checkpoint, per shard, on disk or in memory; sharded over ranks.

An attributor's ``cache()`` cuts the training set into shards of ``shard_size`` rows; shard ``j`` belongs to
rank ``j % world_size`` (``torch.distributed`` when a process group is up, else one process does all).
Each finished shard is one file ``ckpt<k>/shard<j>.pt`` written atomically (``features`` ``(n_j, D)``,
``norms`` ``(n_j,)``), so a rerun skips what exists (resumable) and every rank reads every shard afterwards
(the rank files are the gather). ``manifest.json`` records what the features depend on (dataset
fingerprint, checkpoints, loss, projection, parameters ...); opening the folder with another manifest is
refused with :class:`CacheMismatchError` instead of mixing features of two setups.

Example:
    >>> import torch
    >>> cache = FeatureCache(None, {"dataset": "demo"}, shard_size=2)
    >>> [s for s in cache.shards(5)]
    [(0, 0, 2), (1, 2, 4), (2, 4, 5)]
    >>> cache.save(0, 1, torch.ones(2, 3), torch.ones(2))
    >>> cache.has(0, 1), cache.has(0, 2)
    (True, False)
"""

from __future__ import annotations

import io
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch

from trustlab.data._base import dist_info
from trustlab.errors import TrustlabError
from trustlab.report.io import atomic_write_bytes, dumps, read_json, write_json


class CacheMismatchError(TrustlabError, ValueError):
    """A feature cache folder built for another dataset or configuration."""


def distributed() -> bool:
    """Whether a ``torch.distributed`` process group is up (else everything runs in this process)."""
    return torch.distributed.is_available() and torch.distributed.is_initialized()


def barrier() -> None:
    """Wait for every rank (a no-op without a process group)."""
    if distributed():
        torch.distributed.barrier()


def gather_rows(part: torch.Tensor, counts: list[int]) -> torch.Tensor:
    """Every rank's ``part`` (its rows, ``counts[rank]`` of them) concatenated in rank order, on every rank.

    Without a process group this returns ``part``. Uses ``all_gather_object`` so it works on gloo and NCCL.
    """
    if not distributed():
        return part
    parts: list[Any] = [None] * torch.distributed.get_world_size()
    torch.distributed.all_gather_object(parts, part.detach().cpu())
    for r, (p, n) in enumerate(zip(parts, counts, strict=True)):
        if p.shape[0] != n:
            raise RuntimeError(f"rank {r} sent {p.shape[0]} rows, expected {n}")
    return torch.cat(parts).to(part.device)


def rank_slice(n: int) -> tuple[slice, list[int]]:
    """This rank's contiguous slice of ``n`` items and every rank's count (one process: everything)."""
    rank, world = dist_info(None, None)
    counts = [n // world + (r < n % world) for r in range(world)]
    start = sum(counts[:rank])
    return slice(start, start + counts[rank]), counts


def _diff(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    return sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k))


class FeatureCache:
    """Per-checkpoint, per-shard train features (``(n_j, D)`` plus the full-space norm of each row).

    Args:
        folder: where to keep the shards (None: in memory, lost with the object).
        manifest: JSON-able description of everything the features depend on; a folder holding another
            manifest is refused.
        shard_size: training rows per shard (the unit of resuming and of the rank split).

    Raises:
        CacheMismatchError: ``folder`` already holds a cache with another manifest (the message names the
            fields that differ and what to do).
    """

    def __init__(self, folder: str | os.PathLike | None, manifest: dict[str, Any], *, shard_size: int = 256):
        if shard_size <= 0:
            raise TrustlabError(f"shard_size must be positive, got {shard_size}")
        self.folder = Path(folder) if folder is not None else None
        self.manifest = {**manifest, "shard_size": int(shard_size)}
        self.shard_size = int(shard_size)
        self._memory: dict[tuple[int, int], tuple[torch.Tensor, torch.Tensor]] = {}
        if self.folder is not None:
            self._open()

    def _open(self) -> None:
        path = self.folder / "manifest.json"
        clean = _jsonable(self.manifest)
        rank, _ = dist_info(None, None)
        if not path.exists() and rank == 0:
            write_json(path, clean)
        barrier()
        old = read_json(path)
        if old != clean:
            fields = ", ".join(_diff(old, clean))
            raise CacheMismatchError(
                f"the feature cache in {self.folder} was built for another dataset or configuration (differs in: "
                f"{fields}); pass another cache folder, or delete this one to rebuild it")

    def shards(self, n: int) -> Iterator[tuple[int, int, int]]:
        """``(j, start, stop)`` of every shard of ``n`` training rows."""
        for j, start in enumerate(range(0, n, self.shard_size)):
            yield j, start, min(n, start + self.shard_size)

    def my_shards(self, n: int) -> list[tuple[int, int, int]]:
        """The shards this rank computes (``j % world_size == rank``)."""
        rank, world = dist_info(None, None)
        return [s for s in self.shards(n) if s[0] % world == rank]

    def _path(self, k: int, j: int) -> Path:
        return self.folder / f"ckpt{k:03d}" / f"shard{j:05d}.pt"

    def has(self, k: int, j: int) -> bool:
        """Whether shard ``j`` of checkpoint ``k`` is finished."""
        return (k, j) in self._memory if self.folder is None else self._path(k, j).exists()

    def save(self, k: int, j: int, features: torch.Tensor, norms: torch.Tensor) -> None:
        """Store one finished shard (atomically on disk)."""
        features, norms = features.detach().cpu().contiguous(), norms.detach().cpu().contiguous()
        if self.folder is None:
            self._memory[(k, j)] = (features, norms)
            return
        buf = io.BytesIO()
        torch.save({"features": features, "norms": norms}, buf)
        atomic_write_bytes(self._path(k, j), buf.getvalue())

    def load(self, k: int, j: int) -> tuple[torch.Tensor, torch.Tensor]:
        """``(features (n_j, D), norms (n_j,))`` of shard ``j`` of checkpoint ``k``.

        Raises:
            CacheMismatchError: the shard is missing (``cache()`` was not run to the end on every rank).
        """
        if self.folder is None:
            if (k, j) not in self._memory:
                raise CacheMismatchError(f"shard {j} of checkpoint {k} is not cached; call cache() first")
            return self._memory[(k, j)]
        path = self._path(k, j)
        if not path.exists():
            raise CacheMismatchError(f"{path} is missing: call cache() on the training set first (on every rank)")
        data = torch.load(path, map_location="cpu", weights_only=True)
        return data["features"], data["norms"]


def _jsonable(obj: Any) -> Any:
    import json

    return json.loads(dumps(obj, indent=None))
