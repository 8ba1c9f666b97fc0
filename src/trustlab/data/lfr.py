"""LFR (Learn, Focus, Review): a pretraining data schedule that revisits the blocks the model finds hard.

Random block sampling spends as much compute on blocks the model has already learned as on those it has
not. LFR records each block's perplexity from the training forward pass itself (no extra passes) and
alternates phases:

* **Learn**: uniform sampling over all blocks; every block seen gets its loss recorded.
* **Focus**: blocks ranked by their last recorded loss; the ``1 - keep`` share with the lowest loss
  (already learned) is dropped and the rest sampled uniformly (or by perplexity), their losses refreshed.
  Blocks never seen rank as hardest (loss +inf), so they are kept.
* **Review**: every block re-admitted, uniform sampling. A block whose loss rose between its last two
  records ("forgotten") is always kept by the next Focus.

Differences from the paper (arXiv 2409.06131; no official code), written down as decisions:

* The schedule is given as fractions of the run (default :data:`DEFAULT_SCHEDULE`), a toolkit default
  derived from the paper's description, not its exact table; sweep it.
* Losses are recorded in train mode, as the forward pass computed them (with dropout, if the model has
  any): this inflates the recorded perplexities a little and is documented rather than corrected.
* Each record keeps its step (:attr:`LFRSampler.last_step`), so stale perplexities are visible.
* ``clusters`` gives the v2 diversity variant: ``keep`` applies within each cluster, so Focus cannot
  collapse onto one domain.
* Blocks whose loss never drops (``stalled``: seen twice or more, last loss above 99% of the first) are
  counted in every Focus (:attr:`LFRSampler.events`); ``exclude_stalled=True`` drops them from Focus (the
  "noise cap" that stops unlearnable blocks from taking the Focus budget). Off by default.

Works with any loop (iterate it, call :meth:`LFRSampler.update` with the per-block losses) and with the HF
Trainer (:class:`trustlab.data.hf.SamplerTrainer`). Distributed-aware and resumable (:mod:`trustlab.data._base`).

Example:
    >>> sampler = LFRSampler(n_blocks=1000, total_steps=100, batch_size=8, seed=0)
    >>> batch = next(sampler.batches())          # 8 block indices for step 0 (a Learn step)
    >>> sampler.update(batch, [3.2] * 8)         # their mean token losses from the same forward pass
    >>> sampler.phase.kind, sampler.active_fraction
    ('learn', 1.0)

References:
    Prakriya, Yen, Hsieh, Cong. "Accelerating Large Language Model Pretraining via LFR Pedagogy: Learn,
    Focus, and Review." CoNLL 2025 (arXiv 2409.06131).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from trustlab.data._base import (
    SamplerStateError,
    ScheduledSampler,
    arrays_from_state,
    arrays_to_state,
    fingerprint,
    passes,
)
from trustlab.errors import TrustlabError

PHASE_KINDS = ("learn", "focus", "review")


@dataclass(frozen=True)
class Phase:
    """One phase of the schedule.

    Attributes:
        kind: ``"learn"``, ``"focus"`` or ``"review"``.
        length: its share of the run (a float in (0, 1]) or its number of steps (an int).
        keep: Focus only: the share of blocks kept (those with the highest recorded loss).
    """

    kind: str
    length: float | int
    keep: float = 1.0

    def __post_init__(self) -> None:
        if self.kind not in PHASE_KINDS:
            raise TrustlabError(f"phase kind {self.kind!r} is not one of {', '.join(PHASE_KINDS)}")
        if not 0.0 < self.keep <= 1.0:
            raise TrustlabError(f"phase keep {self.keep} must be in (0, 1]")
        if self.length <= 0:
            raise TrustlabError(f"phase length {self.length} must be positive")


DEFAULT_SCHEDULE: tuple[Phase, ...] = (
    Phase("learn", 0.25), Phase("focus", 0.25, 0.5), Phase("review", 0.15),
    Phase("focus", 0.20, 0.3), Phase("review", 0.15),
)
RANDOM_SCHEDULE: tuple[Phase, ...] = (Phase("learn", 1.0),)


def parse_schedule(text: str) -> tuple[Phase, ...]:
    """``"learn:0.25,focus:0.25:0.5,review:0.15"`` -> phases (lengths as shares, or steps when integers).

    Example:
        >>> parse_schedule("learn:0.5,focus:0.5:0.3")[1]
        Phase(kind='focus', length=0.5, keep=0.3)
    """
    phases = []
    for part in (p.strip() for p in text.split(",") if p.strip()):
        bits = part.split(":")
        if len(bits) not in (2, 3):
            raise TrustlabError(f"schedule part {part!r} is not kind:length[:keep]")
        try:
            length: float | int = int(bits[1]) if bits[1].isdigit() else float(bits[1])
            keep = float(bits[2]) if len(bits) == 3 else 1.0
        except ValueError as exc:
            raise TrustlabError(f"schedule part {part!r}: {exc}") from None
        phases.append(Phase(bits[0], length, keep))
    if not phases:
        raise TrustlabError("an empty schedule")
    return tuple(phases)


def phase_steps(schedule: Sequence[Phase], total_steps: int) -> list[int]:
    """Each phase's step count; shares are rounded so the counts add up to ``total_steps`` exactly."""
    shares = [p.length for p in schedule]
    if all(isinstance(x, int) and not isinstance(x, bool) for x in shares):
        if sum(shares) != total_steps:
            raise TrustlabError(f"the schedule's phases add up to {sum(shares)} steps, not total_steps={total_steps}")
        return list(shares)
    if any(isinstance(x, int) and x > 1 for x in shares):
        raise TrustlabError("give every phase length as a share of the run, or every one as a step count")
    total = float(sum(shares))
    if not math.isclose(total, 1.0, abs_tol=1e-6):
        raise TrustlabError(f"the schedule's shares add up to {total:g}, not 1")
    bounds = [round(total_steps * sum(shares[: i + 1]) / total) for i in range(len(shares))]
    counts = [b - a for a, b in zip([0, *bounds[:-1]], bounds)]
    if min(counts) <= 0:
        raise TrustlabError(f"{total_steps} steps are too few for a schedule of {len(shares)} phases")
    return counts


class LFRSampler(ScheduledSampler):
    """Learn / Focus / Review block sampler (see the module docstring).

    Args:
        n_blocks: number of training blocks (fixed-length sequences).
        total_steps: training steps (batches per rank) in the run.
        batch_size: blocks per step per rank.
        schedule: phases (:class:`Phase`), shares of the run or step counts. Default :data:`DEFAULT_SCHEDULE`.
        seed: seed of every random draw (the same on every rank).
        focus_sampling: ``"uniform"`` over the kept blocks, or ``"ppl_weighted"`` (proportional to perplexity).
        clusters: optional cluster id per block; Focus keeps ``keep`` within each cluster (v2 diversity).
        exclude_stalled: drop blocks whose loss never dropped from Focus (the noise cap).
        rank, world_size: this process's rank and the world size (default: torch.distributed's, else 0 / 1).
        fingerprint: an id of the dataset (:func:`trustlab.data.fingerprint`); a saved state must match it.

    Attributes:
        last_loss: (n_blocks,) float32 last recorded mean token loss per block (+inf: never seen).
        prev_loss: the record before it (+inf: fewer than two records).
        first_loss: the first record.
        last_step: step of the last record (-1: never).
        visits: records per block.
        events: one dict per phase start: kind, step, active blocks, dropped, re-admitted, forgotten kept,
            stalled blocks in the active set.
    """

    kind = "lfr"

    def __init__(self, n_blocks: int, total_steps: int, batch_size: int, schedule: Sequence[Phase] = DEFAULT_SCHEDULE,
                 *, seed: int = 0, focus_sampling: str = "uniform", clusters: Sequence[int] | None = None,
                 exclude_stalled: bool = False, rank: int | None = None, world_size: int | None = None,
                 fingerprint: str | None = None) -> None:
        super().__init__(n_blocks, total_steps, batch_size, seed=seed, rank=rank, world_size=world_size,
                         fingerprint=fingerprint)
        if focus_sampling not in ("uniform", "ppl_weighted"):
            raise TrustlabError(f"focus_sampling {focus_sampling!r} is not 'uniform' or 'ppl_weighted'")
        self.schedule = tuple(schedule)
        self.steps_per_phase = phase_steps(self.schedule, self.total_steps)
        self.phase_starts = np.cumsum([0, *self.steps_per_phase[:-1]]).tolist()
        self.focus_sampling = focus_sampling
        self.exclude_stalled = bool(exclude_stalled)
        self.clusters = None if clusters is None else np.asarray(clusters, dtype=np.int64)
        if self.clusters is not None and len(self.clusters) != self.n_items:
            raise TrustlabError(f"{len(self.clusters)} cluster ids for {self.n_items} blocks")
        n = self.n_items
        self.last_loss = np.full(n, np.inf, np.float32)
        self.prev_loss = np.full(n, np.inf, np.float32)
        self.first_loss = np.full(n, np.inf, np.float32)
        self.last_step = np.full(n, -1, np.int64)
        self.visits = np.zeros(n, np.int64)
        self.events: list[dict[str, Any]] = []
        self._active: np.ndarray = np.arange(n)
        self._active_phase = -1

    # --- the schedule --------------------------------------------------------------------------------------
    def phase_index(self, step: int | None = None) -> int:
        step = self.step if step is None else step
        return int(np.searchsorted(self.phase_starts, min(step, self.total_steps - 1), side="right") - 1)

    @property
    def phase(self) -> Phase:
        """The phase of the current step."""
        return self.schedule[self.phase_index()]

    @property
    def active_fraction(self) -> float:
        """The share of blocks the current phase samples from."""
        self._enter(self.phase_index())
        return len(self._active) / self.n_items

    @property
    def ppl(self) -> np.ndarray:
        """Last recorded perplexity per block (exp of the mean token loss; +inf: never seen)."""
        with np.errstate(over="ignore"):
            return np.exp(self.last_loss.astype(np.float64))

    def active_indices(self) -> np.ndarray:
        """The blocks the current phase samples from (a copy)."""
        self._enter(self.phase_index())
        return self._active.copy()

    def stalled(self) -> np.ndarray:
        """Blocks seen at least twice whose loss never dropped (last record above 99% of the first)."""
        return (self.visits >= 2) & (self.last_loss > 0.99 * self.first_loss)

    def forgotten(self) -> np.ndarray:
        """Blocks whose loss rose between their last two records."""
        return np.isfinite(self.prev_loss) & (self.last_loss > self.prev_loss)

    def _focus_set(self, keep: float) -> np.ndarray:
        groups = [np.arange(self.n_items)] if self.clusters is None else [
            np.flatnonzero(self.clusters == c) for c in np.unique(self.clusters)]
        kept = []
        for members in groups:
            # round first: keep * n carries float error (0.07 * 100 = 7.000000000000001 would keep 8)
            k = max(1, math.ceil(round(keep * len(members), 9)))
            # hardest first; ties (e.g. unseen blocks) broken by index for determinism
            order = members[np.lexsort((members, -self.last_loss[members]))]
            kept.append(order[:k])
        chosen = np.zeros(self.n_items, bool)
        chosen[np.concatenate(kept)] = True
        chosen |= self.forgotten()
        if self.exclude_stalled:
            stalled = self.stalled()
            if (chosen & ~stalled).any():
                chosen &= ~stalled
        return np.flatnonzero(chosen)

    def _enter(self, p: int) -> None:
        """Compute phase ``p``'s active set when it starts (from the losses recorded so far)."""
        if p == self._active_phase:
            return
        phase = self.schedule[p]
        before = self._active
        self._active = self._focus_set(phase.keep) if phase.kind == "focus" else np.arange(self.n_items)
        self._active_phase = p
        stalled = self.stalled()
        self.events.append({
            "phase": p, "kind": phase.kind, "step": self.phase_starts[p], "active": int(len(self._active)),
            "dropped": int(np.setdiff1d(before, self._active, assume_unique=True).size),
            "readmitted": int(np.setdiff1d(self._active, before, assume_unique=True).size),
            "forgotten_kept": int(self.forgotten()[self._active].sum()) if phase.kind == "focus" else 0,
            "stalled_active": int(stalled[self._active].sum()), "stalled_total": int(stalled.sum()),
            "seen": int((self.visits > 0).sum())})

    def _global_batch(self, step: int) -> np.ndarray:
        p = self.phase_index(step)
        self._enter(p)
        active, g = self._active, self.global_batch
        phase = self.schedule[p]
        if phase.kind == "focus" and self.focus_sampling == "ppl_weighted":
            loss = self.last_loss[active].astype(np.float64)
            finite = np.isfinite(loss)
            top = loss[finite].max() if finite.any() else 1.0
            logw = np.where(finite, loss, top)  # log perplexity; unseen blocks weigh as the hardest seen
            rng = self._rng(step, 1)
            if len(active) < g:  # fewer blocks than the batch: with replacement
                w = np.exp(logw - top)
                return active[rng.choice(len(active), size=g, p=w / w.sum())]
            # without replacement, proportional to perplexity: the top g of log w + Gumbel noise (one linear pass,
            # where numpy's weighted choice costs ~20 ms a step at a million blocks)
            keys = logw + rng.gumbel(size=len(active))
            return active[np.argpartition(-keys, g - 1)[:g]]
        # uniform without replacement: consecutive slices of one permutation per pass over the active set
        pos = (step - self.phase_starts[p]) * g
        return active[passes(len(active), pos, g, lambda cycle: self._permutation(len(active), p, cycle))]

    # --- feedback ------------------------------------------------------------------------------------------
    def update(self, indices: Any, losses: Any) -> None:
        """Record the mean token loss of each block of this rank's batch (all ranks' when distributed) and
        advance one step. Call it once per batch, on every rank.

        Raises:
            NonFiniteLossError: a loss is NaN or infinite (nothing is recorded).
        """
        idx, val = self._feedback(indices, losses, "block losses")
        self.prev_loss[idx] = self.last_loss[idx]
        self.last_loss[idx] = val
        first = self.visits[idx] == 0
        self.first_loss[idx[first]] = val[first]
        np.add.at(self.visits, idx, 1)  # a block drawn twice in one step (a pass boundary) counts twice
        self.last_step[idx] = self.step
        self.step += 1

    # --- state ---------------------------------------------------------------------------------------------
    def _identity(self) -> dict[str, Any]:
        return {**super()._identity(), "schedule": [[p.kind, p.length, p.keep] for p in self.schedule],
                "focus_sampling": self.focus_sampling, "exclude_stalled": self.exclude_stalled,
                "clusters": None if self.clusters is None else fingerprint(self.clusters)}

    def _check_identity(self, state: dict[str, Any]) -> None:
        super()._check_identity(state)
        saved = state["identity"]
        mine = self._identity()
        for key in ("schedule", "focus_sampling", "exclude_stalled", "clusters"):
            if saved.get(key) != mine[key]:
                raise SamplerStateError(f"the saved LFR state has another {key}: {saved.get(key)} (now {mine[key]})")

    _ARRAYS = ("last_loss", "prev_loss", "first_loss", "last_step", "visits", "_active")

    def _state(self) -> dict[str, Any]:
        return {**arrays_to_state(self, self._ARRAYS), "active_phase": self._active_phase, "events": self.events}

    def _load(self, state: dict[str, Any]) -> None:
        arrays_from_state(self, state, self._ARRAYS)
        self._active_phase = int(state["active_phase"])
        self.events = list(state["events"])
