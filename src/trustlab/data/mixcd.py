"""mix-cd: during fine-tuning, rehearse the old (pretraining) samples that fine-tuning is damaging.

Random rehearsal spends its budget on old samples that are not being forgotten (or were never learned).
mix-cd bins the old samples with information that needs no new inference (quantiles of the original
model's loss, by default), estimates each bin's *collateral-damage* (CD) rate from the samples it is
rehearsing anyway (a CD sample was right under the original model and is wrong now), and draws bins in
proportion to ``rate x size``, the expected number of damaged samples in the bin.

Per step (spec ``mix-cd.md`` section 3; no official code, so each choice is written down):

* bins get ``p_k ~ alpha_k * |B_k|``, mixed with ``epsilon`` uniform over non-empty bins so every bin
  keeps being observed (``epsilon = 0`` would starve bins whose estimate reached 0: refused);
* within a bin, samples are drawn without replacement (one shuffled pass over the bin, then the next),
  which limits the estimator's bias from re-learning what it just rehearsed;
* from the same forward pass, ``cd(x) = k0(x) and not correct_now(x)``; ``alpha_k <- (1 - gamma) alpha_k +
  gamma * mean cd`` for the bins seen in the step (an EMA, since forgetting drifts); other bins keep theirs.
  ``alpha`` starts at 0.5 (a Beta(1, 1) prior mean). Observation counts per bin are kept (:attr:`counts`).
* Only samples right under the original model (``k0 = 1``) can become CD; by default only they are
  rehearsed. ``include_prior_wrong=True`` gives the others a bin of their own.

For a language model, "correct" has no single meaning: :func:`loss_rule` counts a sample as still right
while its loss stays within ``delta`` nats of the original model's (then every old sample has ``k0 = 1``).

Example:
    >>> import numpy as np
    >>> prior_loss = np.random.default_rng(0).gamma(2.0, size=1000)
    >>> picker = CollateralDamageSampler(prior_loss, n_bins=10, seed=0)
    >>> old = picker.sample(16)                                   # 16 old-sample indices
    >>> picker.observe(old, correct_now=np.ones(16, bool))        # none damaged yet
    >>> sorted(set(picker.alphas.round(2).tolist()))                # observed bins moved, the others kept 0.5
    [0.45, 0.5]

References:
    Bai, Yeh, Hsieh, Taly. "Which Pretrain Samples to Rehearse when Finetuning Pretrained Models?"
    arXiv 2402.08096 (2024).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch

from trustlab.data._base import (
    PermutationCache,
    SamplerStateError,
    ScheduledSampler,
    arrays_from_state,
    arrays_to_state,
    as_tensor,
    check_finite,
    fingerprint,
    passes,
    seeded_rng,
)
from trustlab.errors import EmptyInputError, TrustlabError

POLICIES = ("none", "random", "mixcd")


def assign_bins(prior_loss: Sequence[float], aux: Sequence[int] | None = None, n_bins: int = 10) -> np.ndarray:
    """Quantile bins of the original model's loss (0 = lowest loss), crossed with ``aux`` labels if given.

    Example:
        >>> assign_bins([0.1, 0.2, 0.3, 0.4], n_bins=2).tolist()
        [0, 0, 1, 1]
    """
    loss = np.asarray(prior_loss, dtype=np.float64)
    if loss.size == 0:
        raise EmptyInputError("no old samples to bin")
    if not np.isfinite(loss).all():
        raise TrustlabError("the original model's losses contain NaN or infinite values")
    if n_bins < 1:
        raise TrustlabError(f"n_bins must be at least 1, not {n_bins}")
    ranks = np.argsort(np.argsort(loss, kind="stable"), kind="stable")
    bins = (ranks * n_bins // len(loss)).astype(np.int64)
    if aux is not None:
        aux = np.asarray(aux)
        if len(aux) != len(loss):
            raise TrustlabError(f"{len(aux)} aux labels for {len(loss)} samples")
        _, codes = np.unique(aux, return_inverse=True)
        bins = codes * n_bins + bins
        _, bins = np.unique(bins, return_inverse=True)
    return bins


def loss_rule(prior_loss: Sequence[float], delta: float = 0.1) -> Callable[[np.ndarray, np.ndarray], np.ndarray]:
    """``correct_now(indices, loss_now)``: a sample is still right while its loss is at most its original
    loss + ``delta`` nats (the LM stand-in for "predicted correctly")."""
    base = np.asarray(prior_loss, dtype=np.float64)

    def correct(indices: np.ndarray, loss_now: np.ndarray) -> np.ndarray:
        return np.asarray(loss_now) <= base[np.asarray(indices)] + delta

    return correct


class CollateralDamageSampler:
    """The mix-cd estimator and bin picker over the old samples (no torch; drive it from any loop).

    Args:
        prior_loss: (N,) the original model's loss on each old sample.
        prior_correct: (N,) bool, whether the original model got it right (default: all True).
        bins: (N,) bin id per sample (default: :func:`assign_bins` of the candidates' ``prior_loss`` into
            ``n_bins``).
        n_bins: quantile bins when ``bins`` is None.
        epsilon: share of uniform exploration over bins (> 0).
        gamma: EMA rate of the per-bin CD estimate.
        alpha0: initial CD estimate of every bin.
        include_prior_wrong: rehearse samples the original model got wrong too (in their own bin).
        seed: seed of the draws.

    Attributes:
        alphas: (K,) current CD-rate estimate per bin.
        counts: (K,) rehearsed observations per bin.
        sizes: (K,) candidates per bin.
    """

    def __init__(self, prior_loss: Sequence[float], prior_correct: Sequence[bool] | None = None,
                 bins: Sequence[int] | None = None, *, n_bins: int = 10, epsilon: float = 0.1, gamma: float = 0.1,
                 alpha0: float = 0.5, include_prior_wrong: bool = False, seed: int = 0) -> None:
        self.prior_loss = np.asarray(prior_loss, dtype=np.float64)
        n = len(self.prior_loss)
        if n == 0:
            raise EmptyInputError("no old samples to rehearse")
        self.prior_correct = np.ones(n, bool) if prior_correct is None else np.asarray(prior_correct, bool)
        if len(self.prior_correct) != n:
            raise TrustlabError(f"{len(self.prior_correct)} prior-correctness flags for {n} samples")
        if not 0.0 < epsilon <= 1.0:
            raise TrustlabError(f"epsilon {epsilon} must be in (0, 1]: with 0, a bin whose estimate reaches 0 "
                                "is never observed again")
        if not 0.0 < gamma <= 1.0:
            raise TrustlabError(f"gamma {gamma} must be in (0, 1]")
        if bins is None:  # quantiles over the candidates (spec 3.2), not over all samples: prior-wrong samples
            # sit mostly at high loss and would leave the top bins nearly empty of candidates
            bins = np.zeros(n, np.int64)  # prior-wrong: bin 0 (never drawn), or their own bin below
            if self.prior_correct.any():
                bins[self.prior_correct] = assign_bins(self.prior_loss[self.prior_correct], n_bins=n_bins)
        else:
            bins = np.asarray(bins, np.int64)
        if len(bins) != n:
            raise TrustlabError(f"{len(bins)} bin ids for {n} samples")
        if include_prior_wrong:
            bins = np.where(self.prior_correct, bins, bins.max() + 1)
            self.candidates = np.arange(n)
        else:
            self.candidates = np.flatnonzero(self.prior_correct)
            if not len(self.candidates):
                raise EmptyInputError("the original model got no old sample right: none can be damaged "
                                      "(use include_prior_wrong=True to rehearse them anyway)")
        self.bins = bins
        self.n_bins = int(bins.max()) + 1
        self.members = [self.candidates[bins[self.candidates] == k] for k in range(self.n_bins)]
        self.sizes = np.array([len(m) for m in self.members], np.int64)
        self.epsilon, self.gamma = float(epsilon), float(gamma)
        self.alphas = np.full(self.n_bins, float(alpha0))
        self.counts = np.zeros(self.n_bins, np.int64)
        self.damaged = np.zeros(self.n_bins, np.int64)
        self.draws = np.zeros(self.n_bins, np.int64)  # samples drawn per bin (the position in its passes)
        self.seed = int(seed)
        self._perms = PermutationCache()
        self.calls = 0  # sample() calls without a step

    def probabilities(self) -> np.ndarray:
        """Bin probabilities: ``(1 - epsilon) * alpha * size / sum + epsilon / non-empty bins``."""
        nonempty = self.sizes > 0
        expected = self.alphas * self.sizes
        uniform = nonempty / nonempty.sum()
        p = uniform if expected.sum() <= 0 else (1 - self.epsilon) * expected / expected.sum() + self.epsilon * uniform
        return p / p.sum()

    def sample(self, n: int, step: int | None = None) -> np.ndarray:
        """``n`` old-sample indices: bins by :meth:`probabilities`, samples without replacement in each bin.

        ``step`` keys the bin draw (a scheduled caller passes its step, so a redrawn step is the same draw);
        without it every call draws afresh (a counter of such calls, saved with the state).
        """
        if step is None:
            step, self.calls = -1 - int(self.calls), self.calls + 1
        rng = seeded_rng(self.seed, step, 7)
        per_bin = np.bincount(rng.choice(self.n_bins, size=n, p=self.probabilities()), minlength=self.n_bins)
        out = [self._take(k, int(c)) for k, c in enumerate(per_bin) if c]
        return np.concatenate(out) if out else np.empty(0, np.int64)

    def _take(self, k: int, count: int) -> np.ndarray:
        members = self.members[k]
        taken = members[passes(len(members), int(self.draws[k]), count,
                               lambda cycle: self._perms.get(len(members), self.seed, k, cycle))]
        self.draws[k] += count
        return taken

    def observe(self, indices: Sequence[int], correct_now: Sequence[bool]) -> None:
        """Update the estimates of the bins seen, from whether each rehearsed sample is still right."""
        idx = np.asarray(indices, np.int64)
        ok = np.asarray(correct_now, bool)
        if idx.shape != ok.shape:
            raise TrustlabError(f"{idx.size} indices but {ok.size} correctness flags")
        if not idx.size:
            return
        cd = self.prior_correct[idx] & ~ok
        b = self.bins[idx]
        seen = np.bincount(b, minlength=self.n_bins)
        hurt = np.bincount(b, weights=cd, minlength=self.n_bins)
        mask = seen > 0
        self.alphas[mask] = (1 - self.gamma) * self.alphas[mask] + self.gamma * hurt[mask] / seen[mask]
        self.counts += seen
        self.damaged += hurt.astype(np.int64)

    _ARRAYS = ("alphas", "counts", "damaged", "draws")

    def state_dict(self) -> dict[str, Any]:
        return {**arrays_to_state(self, self._ARRAYS), "bins_fingerprint": fingerprint(self.bins),
                "calls": int(self.calls), "epsilon": self.epsilon, "gamma": self.gamma}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state.get("bins_fingerprint") != fingerprint(self.bins):
            raise SamplerStateError("the saved mix-cd state was made with other bins or other old data")
        for key in ("epsilon", "gamma"):
            if key in state and state[key] != getattr(self, key):
                raise SamplerStateError(f"the saved mix-cd state has {key} {state[key]}, this sampler {getattr(self, key)}")
        arrays_from_state(self, state, self._ARRAYS)
        self.calls = int(state.get("calls", 0))


class MixCD(ScheduledSampler):
    """Batches of new-task samples plus a rehearsal budget of old samples, for fine-tuning.

    The dataset is the new data followed by the old data (``ConcatDataset([new, old])``): indices
    ``0 .. n_new - 1`` are new samples, ``n_new ..`` old ones. Each step yields ``batch_size`` new samples
    (shuffled passes over the new data) and ``rehearsal`` old ones, chosen by ``policy``:

    * ``"none"``: no rehearsal (``rehearsal`` must be 0 or is ignored);
    * ``"random"``: uniform over the candidates, in shuffled passes (the random-mixing baseline; passes, so it
      covers as many distinct old samples as mix-cd's within-bin passes do);
    * ``"mixcd"``: :class:`CollateralDamageSampler`.

    :meth:`update` takes the per-sample losses of the batch (from the training forward pass) and feeds the
    old ones to the estimator through ``correct_fn(old_indices, losses) -> bool array`` (default
    :func:`loss_rule` with ``delta``).

    Args:
        n_new: new-task samples.
        prior_loss: (n_old,) the original model's loss on each old sample.
        total_steps, batch_size: steps, and new samples per step per rank.
        rehearsal: old samples per step per rank (the budget ``r``).
        policy: ``"none"``, ``"random"`` or ``"mixcd"``.
        prior_correct, bins, n_bins, epsilon, gamma, include_prior_wrong: see :class:`CollateralDamageSampler`.
        correct_fn: whether an old sample is still right, from its current loss.
        delta: :func:`loss_rule` margin when ``correct_fn`` is None.
        seed, rank, world_size, fingerprint: see :class:`trustlab.data.LFRSampler`.

    Example:
        >>> import numpy as np
        >>> s = MixCD(n_new=100, prior_loss=np.linspace(1, 3, 400), total_steps=10, batch_size=8, rehearsal=4)
        >>> batch = next(s.batches())
        >>> sum(i >= 100 for i in batch)   # 4 old samples after the 8 new ones
        4
    """

    kind = "mixcd"

    def __init__(self, n_new: int, prior_loss: Sequence[float], total_steps: int, batch_size: int, rehearsal: int,
                 policy: str = "mixcd", *, prior_correct: Sequence[bool] | None = None,
                 bins: Sequence[int] | None = None, n_bins: int = 10, epsilon: float = 0.1, gamma: float = 0.1,
                 include_prior_wrong: bool = False, correct_fn: Callable[[np.ndarray, np.ndarray], np.ndarray] | None = None,
                 delta: float = 0.1, seed: int = 0, rank: int | None = None, world_size: int | None = None,
                 fingerprint: str | None = None) -> None:
        if policy not in POLICIES:
            raise TrustlabError(f"rehearsal policy {policy!r} is not one of {', '.join(POLICIES)}")
        if n_new <= 0:
            raise EmptyInputError("no new-task samples to fine-tune on")
        self.policy = policy
        self.rehearsal = 0 if policy == "none" else int(rehearsal)
        if self.rehearsal < 0 or (policy != "none" and self.rehearsal == 0):
            raise TrustlabError(f"policy {policy!r} needs a positive rehearsal budget, not {rehearsal}")
        prior_loss = np.asarray(prior_loss, dtype=np.float64)
        if policy != "none" and prior_loss.size == 0:
            raise EmptyInputError("no old samples to rehearse")
        check_finite(as_tensor(prior_loss), "original-model losses")
        self.n_new, self.n_old = int(n_new), int(prior_loss.size)
        super().__init__(self.n_new + self.n_old, total_steps, batch_size, seed=seed, rank=rank,
                         world_size=world_size, fingerprint=fingerprint)
        self.estimator = None if policy == "none" else CollateralDamageSampler(
            prior_loss, prior_correct, bins, n_bins=n_bins, epsilon=epsilon, gamma=gamma,
            include_prior_wrong=include_prior_wrong, seed=seed)
        self.correct_fn = correct_fn or loss_rule(prior_loss, delta)
        self.rehearsed = np.zeros(self.n_old, np.int64)  # times each old sample was rehearsed
        # global batches drawn but not yet fed back, by step: drawing advances the estimator's pass positions,
        # so a step drawn twice (a peek, a restarted iterator) must give the same batch, not new draws
        self._pending: dict[int, np.ndarray] = {}

    @property
    def step_size(self) -> int:
        """Samples per step per rank: new plus rehearsed."""
        return self.batch_size + self.rehearsal

    def _local(self, batch: np.ndarray) -> list[int]:
        new, old = batch[: self.global_batch], batch[self.global_batch:]
        r = self.rehearsal
        return (new[self.rank * self.batch_size:(self.rank + 1) * self.batch_size].tolist()
                + old[self.rank * r:(self.rank + 1) * r].tolist())

    def __len__(self) -> int:
        return self.num_batches() * self.step_size

    def _global_batch(self, step: int) -> np.ndarray:
        if step in self._pending:
            return self._pending[step]
        self._pending[step] = batch = self._draw(step)
        return batch

    def _draw(self, step: int) -> np.ndarray:
        g = self.global_batch
        new = passes(self.n_new, step * g, g, lambda cycle: self._permutation(self.n_new, cycle, 11))
        if not self.rehearsal:
            return new
        r = self.rehearsal * self.world_size
        if self.policy == "random":  # shuffled passes over the candidates, as mix-cd's within-bin draws
            cands = self.estimator.candidates
            old = cands[passes(len(cands), step * r, r, lambda cycle: self._permutation(len(cands), cycle, 13))]
        else:
            old = self.estimator.sample(r, step)
            old = old[self._rng(step, 17).permutation(len(old))]  # bins interleaved across ranks
        return np.concatenate([new, old + self.n_new])

    def update(self, indices: Any, losses: Any) -> None:
        """Per-sample losses of this rank's batch (new and old, from the training forward pass): the old ones
        update the mix-cd estimate (all ranks' when distributed); then advance one step."""
        idx, val = self._feedback(indices, losses, "sample losses")
        old = idx >= self.n_new
        o_idx = idx[old] - self.n_new
        np.add.at(self.rehearsed, o_idx, 1)
        if self.estimator is not None and old.any():
            self.estimator.observe(o_idx, self.correct_fn(o_idx, val[old]))
        self.step += 1
        for done in [s for s in self._pending if s < self.step]:
            del self._pending[done]

    def _identity(self) -> dict[str, Any]:
        return {**super()._identity(), "policy": self.policy, "rehearsal": self.rehearsal, "n_new": self.n_new}

    def _check_identity(self, state: dict[str, Any]) -> None:
        super()._check_identity(state)
        for key in ("policy", "rehearsal", "n_new"):
            if state["identity"].get(key) != self._identity()[key]:
                raise SamplerStateError(f"the saved mix-cd state has another {key}: {state['identity'].get(key)}")

    def _state(self) -> dict[str, Any]:
        estimator = None
        if self.estimator is not None:
            estimator = self.estimator.state_dict()
            ahead = [b[self.global_batch:] - self.n_new for s, b in self._pending.items() if s >= self.step]
            if self.policy == "mixcd" and ahead:  # batches drawn ahead belong to the steps after this state
                est = self.estimator
                estimator["draws"] = estimator["draws"] - torch.from_numpy(
                    np.bincount(est.bins[np.concatenate(ahead)], minlength=est.n_bins))
        return {"rehearsed": arrays_to_state(self, ("rehearsed",))["rehearsed"], "estimator": estimator}

    def _load(self, state: dict[str, Any]) -> None:
        arrays_from_state(self, state, ("rehearsed",))
        self._pending = {}
        if self.estimator is not None:
            self.estimator.load_state_dict(state["estimator"])
