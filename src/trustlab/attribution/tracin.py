"""The TracIn core shared by every attributor here: checkpoints, per-sample gradients, cached train features.

TracIn (Pruthi et al., 2020) scores a training example ``z`` for a test example ``z'`` by
``sum_k c_k <g(theta_k, z), g(theta_k, z')>`` over saved checkpoints ``theta_k`` with weights ``c_k``
(the learning rate times the data seen since the previous checkpoint). This module holds

* :func:`per_sample_grads`: ``torch.func`` ``functional_call`` + ``grad`` + ``vmap``, batched, over all
  parameters or a named subset, flattened to ``(B, P)``;
* :class:`CheckpointAttributor`: the ``cache()`` (train features per checkpoint and shard, resumable,
  split over ranks; :mod:`trustlab.attribution.features`) and the scoring loop, for any per-sample loss;
* :class:`TracIn`: the plain attributor for a supervised loss (the parity peer of dattri's
  ``TracInAttributor`` and Captum's ``TracInCP``). ``normalize=True`` gives the cosine form (Grad-Cos
  per checkpoint).

:mod:`trustlab.attribution.diffusion_tracin` builds the diffusion attributors on the same core.

Example:
    >>> import torch
    >>> torch.manual_seed(0)
    >>> model = torch.nn.Linear(4, 3)
    >>> loss = lambda out, y: torch.nn.functional.cross_entropy(out, y)
    >>> ckpts = [Checkpoint(model.state_dict(), weight=0.1)]
    >>> tracin = TracIn(model, loss, ckpts)
    >>> tracin.cache((torch.randn(6, 4), torch.randint(0, 3, (6,))))
    >>> tracin.attribute((torch.randn(2, 4), torch.tensor([0, 1]))).shape
    torch.Size([2, 6])

References:
    Pruthi, Liu, Kale, Sundararajan. Estimating Training Data Influence by Tracing Gradient Descent.
    NeurIPS 2020. arXiv 2002.08484.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch.func import functional_call, grad, vmap

from trustlab.attribution.features import FeatureCache, barrier, gather_rows, rank_slice
from trustlab.attribution.projection import RandomProjector
from trustlab.errors import EmptyInputError, TrustlabError


class NonFiniteGradientError(TrustlabError, FloatingPointError):
    """A per-sample loss or gradient is NaN or infinite: its influence scores would be meaningless."""


@dataclass(frozen=True)
class Checkpoint:
    """One saved model state and its TracIn weight.

    Attributes:
        state: a ``state_dict`` or the path of a file saved with ``torch.save(model.state_dict(), path)``.
        weight: ``c_k``, e.g. :func:`checkpoint_weight` (learning rate x data seen since the last one).
        epoch: epochs completed when it was saved (the diffusion attributor reads the timestep log of
            epoch ``epoch - 1``, the one that ended here); None where no log is needed.
    """

    state: Any
    weight: float
    epoch: int | None = None

    def load(self, device: str | torch.device = "cpu") -> dict[str, torch.Tensor]:
        """The state dict on ``device``.

        Raises:
            TrustlabError: the file does not exist.
        """
        if isinstance(self.state, Mapping):
            return {k: v.to(device) for k, v in self.state.items()}
        path = Path(self.state)
        if not path.is_file():
            raise TrustlabError(f"checkpoint file {path} does not exist")
        return torch.load(path, map_location=device, weights_only=True)

    def identity(self) -> dict[str, Any]:
        """A small JSON-able description for cache manifests: a content hash of the weights, the weight and
        the epoch (a retrained checkpoint at the same path does not reuse stale features)."""
        import hashlib

        if isinstance(self.state, Mapping):
            from trustlab.data import fingerprint

            ident = fingerprint(torch.cat([v.detach().float().reshape(-1).cpu() for v in self.state.values()]))
        elif Path(self.state).is_file():
            ident = hashlib.sha256(Path(self.state).read_bytes()).hexdigest()[:16]
        else:
            raise TrustlabError(f"checkpoint file {self.state} does not exist")
        return {"state": ident, "weight": self.weight, "epoch": self.epoch}


def checkpoint_weight(lr: float, batch_size: int, epochs: int, n_train: int) -> float:
    """``c_k = lr * batch_size * epochs / n_train`` (the official Diffusion-TracIn code's weight; ``epochs``
    since the previous checkpoint).

    Example:
        >>> checkpoint_weight(1e-3, 128, 20, 1280)
        0.002
    """
    if n_train <= 0:
        raise EmptyInputError("the training set is empty (n_train = 0)")
    return lr * batch_size * epochs / n_train


def select_params(model: torch.nn.Module, names: Sequence[str] | None) -> list[str]:
    """The attributed parameter names, in the model's order; ``names`` entries are exact names or prefixes
    (``"up_blocks.1"`` selects every parameter under it); None selects all.

    Raises:
        TrustlabError: an entry selects nothing (the message lists a few names).
    """
    all_names = [n for n, _ in model.named_parameters()]
    if names is None:
        chosen = all_names
    else:
        chosen = []
        for entry in names:
            hit = [n for n in all_names if n == entry or n.startswith(entry + ".")]
            if not hit:
                raise TrustlabError(f"parameter {entry!r} selects nothing; names look like: {', '.join(all_names[:4])}")
            chosen += [n for n in hit if n not in chosen]
    return [n for n in all_names if n in chosen]


def per_sample_grads(model: torch.nn.Module, state: Mapping[str, torch.Tensor], names: Sequence[str],
                     sample_loss: Callable[..., torch.Tensor], inputs: Sequence[torch.Tensor], *,
                     chunk: int = 64) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-sample gradients ``(B, P)`` of ``sample_loss`` w.r.t. the parameters ``names``, and the losses ``(B,)``.

    Args:
        model: the module whose forward ``sample_loss`` calls (its own weights are not used).
        state: every parameter and buffer by name (a state dict).
        names: the parameters to differentiate (in this order in the flat vector).
        sample_loss: ``sample_loss(call, *sample) -> scalar`` for ONE sample (no batch dimension), where
            ``call(*args)`` runs the model's forward with ``state``.
        inputs: tensors with a leading batch dimension ``B``.
        chunk: samples per ``vmap`` call (memory: ``chunk * P`` floats).

    Raises:
        NonFiniteGradientError: a loss or gradient is NaN/inf (the message names the row).
    """
    trainable = {n: state[n] for n in names}
    fixed = {n: v for n, v in state.items() if n not in trainable}

    def loss(params: dict[str, torch.Tensor], *sample: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        def call(*args: Any) -> Any:
            return functional_call(model, {**fixed, **params}, args)

        value = sample_loss(call, *sample)
        return value, value.detach()

    fn = vmap(grad(loss, has_aux=True), in_dims=(None, *([0] * len(inputs))), randomness="different")
    grads, losses = [], []
    for lo in range(0, len(inputs[0]), chunk):
        g, values = fn(trainable, *(x[lo: lo + chunk] for x in inputs))
        grads.append(torch.cat([g[n].reshape(g[n].shape[0], -1) for n in names], 1))  # (b, P)
        losses.append(values)
    flat, values = torch.cat(grads), torch.cat(losses)
    bad = ~(torch.isfinite(flat).all(1) & torch.isfinite(values))
    if bad.any():
        row = int(bad.nonzero()[0])
        raise NonFiniteGradientError(f"sample {row} of this batch has a non-finite loss or gradient (loss "
                                     f"{float(values[row])}): check the inputs (NaN pixels?) and the checkpoint")
    return flat, values


class CheckpointAttributor:
    """``cache(train)`` then ``attribute(test)`` for a TracIn-style score over checkpoints.

    Subclasses define :meth:`_train_rows` (gradients of a block of training rows at one checkpoint) and how
    test features are made; this class caches the train side (per checkpoint and shard, on disk when
    ``cache_dir`` is given, split over ``torch.distributed`` ranks) and sums ``c_k <train, test>``.

    Args:
        model: the module (a template: its weights come from each checkpoint).
        checkpoints: the :class:`Checkpoint` list.
        params: parameter names or prefixes to attribute (None: all).
        projector: a :class:`RandomProjector` (``dim_in`` = attributed parameters), or None for exact scores.
        cache_dir: folder for the train features (None: memory).
        batch_size: samples per ``vmap`` call.
        shard_size: training rows per cached shard.
        device: where gradients are computed (default: CUDA when available).
    """

    def __init__(self, model: torch.nn.Module, checkpoints: Sequence[Checkpoint], *,
                 params: Sequence[str] | None = None, projector: RandomProjector | None = None,
                 cache_dir: str | os.PathLike | None = None, batch_size: int = 64, shard_size: int = 256,
                 device: str | torch.device | None = None):
        if not checkpoints:
            raise EmptyInputError("no checkpoints: TracIn needs at least one saved model state")
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        self.model = model.to(self.device).eval()
        self.checkpoints = list(checkpoints)
        self.names = select_params(model, params)
        self.n_params = sum(dict(model.named_parameters())[n].numel() for n in self.names)
        if projector is not None and projector.dim_in != self.n_params:
            raise TrustlabError(f"the projector takes vectors of {projector.dim_in}, but {self.n_params} parameters "
                                "are attributed: build it with RandomProjector(n_params, d)")
        self.projector = projector
        self.cache_dir, self.batch_size, self.shard_size = cache_dir, int(batch_size), int(shard_size)
        self.store: FeatureCache | None = None
        self.n_train = 0

    # -- to define in subclasses ---------------------------------------------------------------------------

    def _train_rows(self, k: int, state: dict[str, torch.Tensor], train: Any, lo: int, hi: int) -> torch.Tensor:
        """Full-space gradients ``(hi - lo, P)`` of training rows ``lo:hi`` at checkpoint ``k``."""
        raise NotImplementedError

    def _manifest(self, train: Any) -> dict[str, Any]:
        """What the train features depend on (beyond the checkpoints, parameters and projection)."""
        raise NotImplementedError

    def _length(self, data: Any) -> int:
        raise NotImplementedError

    # -- shared machinery ----------------------------------------------------------------------------------

    def _project(self, g: torch.Tensor) -> torch.Tensor:
        return g if self.projector is None else self.projector(g)

    def cache(self, train: Any) -> None:
        """Compute (or find on disk) the train features of every checkpoint; resumable, split over ranks.

        Raises:
            EmptyInputError: the training set is empty.
            CacheMismatchError: ``cache_dir`` holds features of another dataset or configuration.
        """
        from trustlab.report.run import progress

        n = self._length(train)
        if n == 0:
            raise EmptyInputError("the training set is empty: nothing to attribute to")
        manifest = {**self._manifest(train), "n_train": n, "params": self.names if len(self.names) < 64 else
                    f"{len(self.names)} tensors, {self.n_params} values",
                    "checkpoints": [c.identity() for c in self.checkpoints],
                    "projection": None if self.projector is None else self.projector.config()}
        self.store = FeatureCache(self.cache_dir, manifest, shard_size=self.shard_size)
        self.n_train = n
        units = [(k, s) for k in range(len(self.checkpoints)) for s in self.store.my_shards(n)
                 if not self.store.has(k, s[0])]
        state_k, state = None, None
        for k, (j, lo, hi) in progress(units, "train gradients (checkpoint x shard)"):
            if k != state_k:
                state, state_k = self.checkpoints[k].load(self.device), k
            g = self._train_rows(k, state, train, lo, hi)  # (n_j, P)
            self.store.save(k, j, self._project(g), g.norm(dim=1))
        barrier()

    def _require_cache(self) -> FeatureCache:
        if self.store is None:
            raise TrustlabError("call cache(train_set) before attribute()")
        return self.store

    def _scores(self, test: list[torch.Tensor], normalize_train: bool) -> torch.Tensor:
        """``sum_k c_k <test[k], train_k>`` as ``(n_test, n_train)``; ``test[k]`` is ``(n_test, D)``."""
        store = self._require_cache()
        out = torch.zeros(test[0].shape[0], self.n_train)
        for k, ckpt in enumerate(self.checkpoints):
            q = test[k].to(self.device)
            for j, lo, hi in store.shards(self.n_train):
                f, norms = store.load(k, j)
                f = f.to(self.device)
                if normalize_train:
                    f = f / norms.to(self.device).clamp_min(torch.finfo(f.dtype).tiny)[:, None]
                out[:, lo:hi] += ckpt.weight * (q @ f.T).cpu()  # (n_test, n_j)
        return out

    def train_norms(self) -> torch.Tensor:
        """``(K, n_train)``: the full-space norm of every cached train gradient, per checkpoint."""
        store = self._require_cache()
        return torch.stack([torch.cat([store.load(k, j)[1] for j, _, _ in store.shards(self.n_train)])
                            for k in range(len(self.checkpoints))])

    def _distributed_rows(self, n: int, rows: Callable[[int, int], torch.Tensor], width: int) -> torch.Tensor:
        """``rows(lo, hi)`` ``(hi - lo, width)`` for this rank's slice of ``n`` items, gathered from every rank
        (one process: all of them)."""
        part, counts = rank_slice(n)
        mine = rows(part.start, part.stop) if part.stop > part.start else torch.zeros(0, width)
        return gather_rows(mine.cpu(), counts)


class TracIn(CheckpointAttributor):
    """TracIn for a supervised per-sample loss (classifiers, regressors).

    Args:
        model: the module; ``loss_fn(model(x[None]), y[None])`` is one sample's loss.
        loss_fn: ``(output, target) -> scalar``, e.g. ``torch.nn.functional.cross_entropy``.
        checkpoints: :class:`Checkpoint` list (``state`` dicts or paths, ``weight`` = ``c_k``).
        normalize: unit-normalise both gradients per checkpoint (cosine form; in the full space, before any
            projection).
        **kwargs: ``params``, ``projector``, ``cache_dir``, ``batch_size``, ``shard_size``, ``device`` of
            :class:`CheckpointAttributor`.

    Example:
        >>> import torch
        >>> m = torch.nn.Linear(2, 2)
        >>> t = TracIn(m, torch.nn.functional.cross_entropy, [Checkpoint(m.state_dict(), 1.0)])
        >>> t.cache((torch.randn(3, 2), torch.tensor([0, 1, 0])))
        >>> t.self_influence().shape
        torch.Size([3])
    """

    def __init__(self, model: torch.nn.Module, loss_fn: Callable[[Any, torch.Tensor], torch.Tensor],
                 checkpoints: Sequence[Checkpoint], *, normalize: bool = False, **kwargs: Any):
        super().__init__(model, checkpoints, **kwargs)
        self.loss_fn, self.normalize = loss_fn, normalize

    def _length(self, data: Sequence[torch.Tensor]) -> int:
        if not isinstance(data, (tuple, list)) or len(data) != 2:
            raise TrustlabError("TracIn data is a pair (inputs, targets) of tensors with one row per example")
        if len(data[0]) != len(data[1]):
            raise TrustlabError(f"{len(data[0])} inputs but {len(data[1])} targets")
        return len(data[0])

    def _manifest(self, train: Sequence[torch.Tensor]) -> dict[str, Any]:
        from trustlab.data import fingerprint

        return {"kind": "tracin", "dataset": fingerprint(torch.cat([t.reshape(len(t), -1).float() for t in train], 1)),
                "loss": getattr(self.loss_fn, "__name__", repr(self.loss_fn))}

    def _grads(self, state: dict[str, torch.Tensor], x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        def sample_loss(call: Callable, xi: torch.Tensor, yi: torch.Tensor) -> torch.Tensor:
            return self.loss_fn(call(xi[None]), yi[None])

        g, _ = per_sample_grads(self.model, state, self.names, sample_loss, (x.to(self.device), y.to(self.device)),
                                chunk=self.batch_size)
        return g

    def _train_rows(self, k: int, state: dict[str, torch.Tensor], train: Sequence[torch.Tensor], lo: int,
                    hi: int) -> torch.Tensor:
        return self._grads(state, train[0][lo:hi], train[1][lo:hi])

    def attribute(self, test: Sequence[torch.Tensor]) -> torch.Tensor:
        """Scores ``(n_test, n_train)``: row ``i`` holds every training example's influence on test ``i``
        (positive: a proponent). Test rows are split over ranks and gathered on every rank.

        Raises:
            EmptyInputError: no test examples.
        """
        n = self._length(test)
        if n == 0:
            raise EmptyInputError("the test set is empty")

        def rows(lo: int, hi: int) -> torch.Tensor:
            feats = []
            for ckpt in self.checkpoints:
                g = self._grads(ckpt.load(self.device), test[0][lo:hi], test[1][lo:hi])
                if self.normalize:
                    g = g / g.norm(dim=1, keepdim=True).clamp_min(torch.finfo(g.dtype).tiny)
                feats.append(self._project(g))
            return self._scores(feats, normalize_train=self.normalize)

        return self._distributed_rows(n, rows, self.n_train)

    def self_influence(self) -> torch.Tensor:
        """``(n_train,)``: ``sum_k c_k ||g_k(z)||^2`` from the cached full-space norms (``sum_k c_k`` when
        normalised), exact even with a projection."""
        norms = self.train_norms()  # (K, n)
        weights = torch.tensor([c.weight for c in self.checkpoints])[:, None]
        return (weights * (torch.ones_like(norms) if self.normalize else norms**2)).sum(0)
