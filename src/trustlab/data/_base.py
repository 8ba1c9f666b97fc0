"""What the LFR and mix-cd samplers share: a global per-step schedule sliced by rank, loss feedback that
every rank sees, and a state that saves with a checkpoint.

Both samplers decide the *global* batch of every step (``batch_size * world_size`` indices, the same on
every rank, from the same seeded generator) and give rank ``r`` its slice ``r * batch_size ..``, so ranks
see disjoint parts of one schedule, like ``torch.utils.data.DistributedSampler`` does for one epoch. Loss
feedback (:meth:`ScheduledSampler.update`) is all-gathered first, so every rank's statistics, and with them
every later scheduling decision, stay identical.

Resuming: ``state_dict()`` holds the number of batches consumed, the statistics and the scheduler's own
state; ``load_state_dict()`` refuses a state from another dataset (its ``fingerprint``) or another
schedule. A loaded sampler yields the batches from the saved step on, exactly as the uninterrupted run.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import numpy as np
import torch

from trustlab.errors import EmptyInputError, TrustlabError


class SamplerStateError(TrustlabError, ValueError):
    """A saved sampler state that does not belong to this sampler (another dataset, size or schedule)."""


class NonFiniteLossError(TrustlabError, FloatingPointError):
    """A loss fed back to a sampler is NaN or infinite: scheduling on it would be meaningless."""


def fingerprint(items: Sequence[Any] | np.ndarray | torch.Tensor) -> str:
    """A short content hash of a dataset (token blocks, an index list) for :class:`SamplerStateError` checks.

    Example:
        >>> fingerprint([[1, 2], [3, 4]]) == fingerprint([[1, 2], [3, 4]]) != fingerprint([[1, 2], [3, 5]])
        True
    """
    h = hashlib.sha256()
    if isinstance(items, torch.Tensor):
        items = items.detach().cpu().numpy()
    if isinstance(items, np.ndarray):
        h.update(str(items.shape).encode())
        h.update(np.ascontiguousarray(items).tobytes())
    else:
        for item in items:
            h.update(np.asarray(item).tobytes() if not isinstance(item, (str, bytes)) else str(item).encode())
            h.update(b"\x00")
    return h.hexdigest()[:16]


def dist_info(rank: int | None, world_size: int | None) -> tuple[int, int]:
    """``(rank, world_size)``: the given values, else those of the initialised ``torch.distributed`` group, else
    the ``RANK`` / ``WORLD_SIZE`` that torchrun and ``accelerate launch`` set (a sampler is often built before
    the Trainer initialises the process group), else 0 / 1."""
    live = torch.distributed.is_available() and torch.distributed.is_initialized()
    if world_size is None:
        world_size = torch.distributed.get_world_size() if live else int(os.environ.get("WORLD_SIZE", "1"))
    if rank is None:
        rank = torch.distributed.get_rank() if live else int(os.environ.get("RANK", "0"))
    if not 0 <= rank < world_size:
        raise TrustlabError(f"rank {rank} is outside world size {world_size}")
    return rank, world_size


def gather_feedback(indices: torch.Tensor, values: torch.Tensor, world_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Every rank's ``(indices, values)`` concatenated in rank order (a no-op on one process).

    Ranks may hold different counts (a last short batch); sizes are exchanged first.
    """
    indices = indices.detach().reshape(-1).to("cpu", torch.long)
    values = values.detach().reshape(-1).to("cpu", torch.float32)
    if world_size == 1 or not (torch.distributed.is_available() and torch.distributed.is_initialized()):
        return indices, values
    backend_device = "cuda" if torch.distributed.get_backend() == "nccl" else "cpu"
    size = torch.tensor([indices.numel()], device=backend_device)
    sizes = [torch.zeros_like(size) for _ in range(world_size)]
    torch.distributed.all_gather(sizes, size)
    width = int(max(s.item() for s in sizes))
    packed = torch.full((2, width), float("nan"), dtype=torch.float64, device=backend_device)
    packed[0, : indices.numel()] = indices.double().to(backend_device)
    packed[1, : values.numel()] = values.double().to(backend_device)
    parts = [torch.empty_like(packed) for _ in range(world_size)]
    torch.distributed.all_gather(parts, packed)
    idx = torch.cat([p[0, : int(s.item())] for p, s in zip(parts, sizes)]).cpu().long()
    val = torch.cat([p[1, : int(s.item())] for p, s in zip(parts, sizes)]).cpu().float()
    return idx, val


def as_tensor(values: Any, dtype: torch.dtype | None = None) -> torch.Tensor:
    """``torch.as_tensor`` that also takes numpy views with negative strides (``losses[::-1]``)."""
    if isinstance(values, np.ndarray):
        values = np.ascontiguousarray(values)
    return torch.as_tensor(values, dtype=dtype)


def check_finite(values: torch.Tensor, what: str) -> None:
    if not bool(torch.isfinite(values).all()):
        bad = int((~torch.isfinite(values)).sum())
        raise NonFiniteLossError(f"{bad} of {values.numel()} {what} are NaN or infinite; the sampler's statistics "
                                 "are left as they were (lower the learning rate, or check the data)")


def seeded_rng(seed: int, *key: int) -> np.random.Generator:
    """A numpy generator that depends only on ``seed`` and ``key`` (the same on every rank and after a resume)."""
    return np.random.default_rng([int(seed) & 0xFFFFFFFF, *[int(k) & 0xFFFFFFFF for k in key]])


class PermutationCache:
    """The last few seeded permutations, so a pass over a large set is computed once, not once per step."""

    def __init__(self, size: int = 64) -> None:
        self.size = size
        self._store: dict[tuple[int, ...], np.ndarray] = {}

    def get(self, n: int, seed: int, *key: int) -> np.ndarray:
        k = (n, seed, *key)
        perm = self._store.pop(k, None)
        if perm is None:
            perm = seeded_rng(seed, *key).permutation(n)
        self._store[k] = perm  # most recent last
        while len(self._store) > self.size:
            self._store.pop(next(iter(self._store)))
        return perm


def passes(n: int, start: int, count: int, perm_of: Callable[[int], np.ndarray]) -> np.ndarray:
    """Positions ``start .. start + count`` of consecutive shuffled passes over ``range(n)``; ``perm_of(cycle)``
    is pass ``cycle``'s permutation. Slices, not one lookup per item: a batch spans at most two passes."""
    out = np.empty(count, np.int64)
    filled = 0
    while filled < count:
        cycle, offset = divmod(start + filled, n)
        take = min(count - filled, n - offset)
        out[filled:filled + take] = perm_of(cycle)[offset:offset + take]
        filled += take
    return out


class ScheduledSampler(torch.utils.data.Sampler[int]):
    """Base of the step-scheduled samplers: subclasses implement :meth:`_global_batch`.

    Iterating yields this rank's sample indices for every remaining step (``batch_size`` per step);
    :meth:`batches` yields them per step, for ``DataLoader(batch_sampler=...)``.

    Attributes:
        step: batches consumed so far (advanced by :meth:`update` only: iterating without feedback yields the
            remaining steps but leaves it, so a new iteration starts again from it).
    """

    kind = "scheduled"

    def __init__(self, n_items: int, total_steps: int, batch_size: int, *, seed: int = 0, rank: int | None = None,
                 world_size: int | None = None, fingerprint: str | None = None) -> None:
        if n_items <= 0:
            raise EmptyInputError("the dataset is empty: a sampler needs at least one item")
        if total_steps <= 0 or batch_size <= 0:
            raise TrustlabError(f"total_steps ({total_steps}) and batch_size ({batch_size}) must be positive")
        self.n_items = int(n_items)
        self.total_steps = int(total_steps)
        self.batch_size = int(batch_size)
        self.seed = int(seed)
        self.rank, self.world_size = dist_info(rank, world_size)
        self.fingerprint = fingerprint
        self.step = 0
        self._cursor = 0  # the next step iteration will yield
        self._perms = PermutationCache()

    @property
    def global_batch(self) -> int:
        return self.batch_size * self.world_size

    def _rng(self, *key: int) -> np.random.Generator:
        """A generator that depends only on the seed and ``key``: the same on every rank and after a resume."""
        return seeded_rng(self.seed, *key)

    def _permutation(self, n: int, *key: int) -> np.ndarray:
        """``permutation(n)`` of :meth:`_rng` ``(*key)``, cached (one pass over a million blocks reuses it)."""
        return self._perms.get(n, self.seed, *key)

    def _global_batch(self, step: int) -> np.ndarray:  # (global_batch,) item indices of ``step``
        raise NotImplementedError

    def _local(self, batch: np.ndarray) -> list[int]:
        return batch[self.rank * self.batch_size:(self.rank + 1) * self.batch_size].tolist()

    def batches(self) -> Iterator[list[int]]:
        """This rank's index batches from the current step to ``total_steps``."""
        self._cursor = self.step
        while self._cursor < self.total_steps:
            batch = self._local(self._global_batch(self._cursor))
            self._cursor += 1
            yield batch

    def __iter__(self) -> Iterator[int]:
        for batch in self.batches():
            yield from batch

    def __len__(self) -> int:
        return (self.total_steps - self.step) * self.batch_size

    def num_batches(self) -> int:
        return self.total_steps - self.step

    def _feedback(self, indices: Any, values: Any, what: str) -> tuple[np.ndarray, np.ndarray]:
        idx = as_tensor(indices).reshape(-1)
        val = as_tensor(values, torch.float32).reshape(-1)
        if idx.numel() != val.numel():
            raise TrustlabError(f"{idx.numel()} indices but {val.numel()} {what}")
        idx, val = gather_feedback(idx, val, self.world_size)
        check_finite(val, what)
        outside = (idx < 0) | (idx >= self.n_items)
        if bool(outside.any()):
            raise TrustlabError(f"feedback for index {int(idx[outside][0])} outside the dataset of {self.n_items} items")
        return idx.numpy(), val.numpy()

    # --- state -------------------------------------------------------------------------------------------
    def _identity(self) -> dict[str, Any]:
        return {"kind": self.kind, "n_items": self.n_items, "total_steps": self.total_steps,
                "batch_size": self.batch_size, "world_size": self.world_size, "seed": self.seed,
                "fingerprint": self.fingerprint}

    def _check_identity(self, state: dict[str, Any]) -> None:
        saved = state.get("identity", {})
        mine = self._identity()
        if saved.get("kind") != mine["kind"]:
            raise SamplerStateError(f"the saved state is of a {saved.get('kind')!r} sampler, not {mine['kind']!r}")
        if saved.get("fingerprint") != mine["fingerprint"] or saved.get("n_items") != mine["n_items"]:
            raise SamplerStateError(
                f"the saved sampler state belongs to another dataset ({saved.get('n_items')} items, fingerprint "
                f"{saved.get('fingerprint')}) than this one ({mine['n_items']} items, fingerprint {mine['fingerprint']})")
        diff = [k for k in ("total_steps", "batch_size", "world_size", "seed") if saved.get(k) != mine[k]]
        if diff:
            raise SamplerStateError("the saved sampler state has another " + ", ".join(
                f"{k} ({saved.get(k)} saved, {mine[k]} now)" for k in diff))

    def state_dict(self) -> dict[str, Any]:
        """Everything needed to continue the same schedule (numpy arrays as lists: JSON- and torch-safe)."""
        return {"identity": self._identity(), "step": self.step, **self._state()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continue from a saved state; raises :class:`SamplerStateError` if it is not this sampler's."""
        self._check_identity(state)
        self.step = self._cursor = int(state["step"])
        self._load(state)

    def _state(self) -> dict[str, Any]:
        return {}

    def _load(self, state: dict[str, Any]) -> None:
        pass


def arrays_to_state(obj: Any, names: Sequence[str]) -> dict[str, torch.Tensor]:
    """Numpy attributes as tensors (compact, and loadable by ``torch.load(weights_only=True)``)."""
    return {name.lstrip("_"): torch.from_numpy(np.array(getattr(obj, name))) for name in names}


def arrays_from_state(obj: Any, state: dict[str, Any], names: Sequence[str]) -> None:
    for name in names:
        value = state[name.lstrip("_")]
        setattr(obj, name, (value.numpy() if isinstance(value, torch.Tensor) else np.asarray(value)).copy())
