"""Diffusion-TracIn and Diffusion-ReTrac: which training images a diffusion model's output traces back to.

A denoising model ``eps_theta(x_t, t)`` is trained on ``l(theta; x, t, e) = |eps_theta(sqrt(abar_t) x +
sqrt(1 - abar_t) e, t) - e|`` (L1 by default, MSE optional; the mean over pixels) at one random timestep
per image per epoch. Diffusion-TracIn scores a training image ``z`` for a query ``z'`` by
``sum_k c_k <g_tr(k, z), g_te(k, z')>`` where

* ``g_tr(k, z)`` is the gradient at checkpoint ``theta_k`` at the timestep ``z`` was actually trained on in
  the epoch that ended at ``k`` (from the training run's timestep log; its noise is replayed from the
  logged seed, ``fresh_noise=True`` draws new noise as the official code does);
* ``g_te(k, z')`` averages the gradient over ``S = linspace(1, T - 1, n_avg)`` timesteps and ``n_noise``
  noise draws per timestep.

What differs in Diffusion-ReTrac (``retrac=True``): gradient norms depend strongly on the timestep, so
training images seen at a large-norm timestep dominate every query ("generally influential"). ReTrac
unit-normalises the train gradient and each timestep's noise-averaged test gradient before averaging over
``S``: ``Inf = sum_k c_k <g_tr / |g_tr|, (1/|S|) sum_s gbar_s / |gbar_s|>``. Both scores come from the
same cached train features (raw gradients plus their full-space norms; a random projection is linear, so
``P(g) / |g| = P(g / |g|)``), and one :meth:`DiffusionTracIn.test_features` call serves both.

Any epsilon model works: a module called as ``model(x_t, t)`` returning the noise prediction or an object
with ``.sample`` (``diffusers.UNet2DModel``), with a scheduler that has ``alphas_cumprod``
(``diffusers.DDPMScheduler``) or that tensor itself.

Example:
    >>> from trustlab.attribution.ddpm import load_run
    >>> task, data = load_run("runs/ddpm")                       # a train_ddpm(...) run folder
    >>> retrac = DiffusionTracIn(task, retrac=True, n_avg=50, n_noise=8, cache_dir="runs/ddpm/features")
    >>> retrac.cache(data.x_train)
    >>> scores = retrac.attribute(data.x_train[:5])              # (5, n_train)
    >>> scores.topk(10, dim=1).indices                           # top-10 proponents per query

References:
    Xie, Li, Bai, Hsieh. Data Attribution for Diffusion Models: Timestep-induced Bias in Influence
    Estimation. TMLR 2024. arXiv 2401.09031.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from trustlab.attribution.tracin import Checkpoint, CheckpointAttributor, per_sample_grads
from trustlab.errors import DataFileError, EmptyInputError, TrustlabError

LOSSES = ("l1", "mse")
_MIX = 1_000_003  # spreads (seed, key) pairs over generator seeds


class TimestepLogError(TrustlabError, ValueError):
    """Train-side gradients need each sample's logged timestep, and the log is missing or does not fit."""


class ShapeMismatchError(TrustlabError, ValueError):
    """Images whose shape does not match the training images or the model's output."""


def alphas_cumprod(noise_schedule: Any) -> torch.Tensor:
    """``abar_t`` for ``t = 0 .. T-1`` from a diffusers scheduler (``.alphas_cumprod``) or a 1-D tensor."""
    abar = getattr(noise_schedule, "alphas_cumprod", noise_schedule)
    abar = torch.as_tensor(abar, dtype=torch.float32)
    if abar.dim() != 1 or len(abar) < 2 or not ((abar > 0) & (abar <= 1)).all():
        raise TrustlabError("the noise schedule must be a scheduler with alphas_cumprod or a 1-D tensor in (0, 1]")
    return abar


def add_noise(x0: torch.Tensor, noise: torch.Tensor, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``x_t = a x0 + b e`` with ``a = sqrt(abar_t)``, ``b = sqrt(1 - abar_t)`` broadcast over pixels."""
    shape = (-1,) + (1,) * (x0.dim() - 1)
    return a.reshape(shape) * x0 + b.reshape(shape) * noise


def pixel_loss(pred: torch.Tensor, noise: torch.Tensor, loss: str) -> torch.Tensor:
    """Per-sample loss ``(B,)``: mean over pixels of ``|pred - e|`` (``"l1"``) or ``(pred - e)^2`` (``"mse"``)."""
    diff = pred - noise
    per = diff.abs() if loss == "l1" else diff.square()
    return per.reshape(per.shape[0], -1).mean(1)


def model_eps(out: Any) -> torch.Tensor:
    """The noise prediction of a model's output: a tensor, ``.sample`` (diffusers) or the first of a tuple."""
    if hasattr(out, "sample"):
        return out.sample
    return out[0] if isinstance(out, (tuple, list)) else out


def keyed_noise(keys: Sequence[int] | torch.Tensor, shape: Sequence[int]) -> torch.Tensor:
    """One standard-normal tensor of ``shape`` per key, each from a CPU generator seeded with its key: the
    noise of a sample depends only on its key, never on batch order, device or rank. ``(n, *shape)``.

    Example:
        >>> torch.equal(keyed_noise([5, 9], (2,))[1], keyed_noise([9], (2,))[0])
        True
    """
    out = torch.empty(len(keys), *shape)
    gen = torch.Generator()
    for i, key in enumerate(torch.as_tensor(keys, dtype=torch.int64).tolist()):
        gen.manual_seed(key)
        out[i] = torch.randn(*shape, generator=gen)
    return out


def generally_influential(tops: torch.Tensor | Any, n_train: int, share: float = 0.2) -> torch.Tensor:
    """Training samples that are among the top proponents of at least ``share`` of the queries (the paper's
    "generally influential" samples: a specific attributor has few).

    Args:
        tops: ``(n_query, k)`` indices of each query's top-k proponents (e.g. ``scores.topk(10).indices``).
        n_train: size of the training set.
        share: the fraction of queries (default 0.2; the count is rounded up).

    Example:
        >>> generally_influential(torch.tensor([[0, 1], [0, 2], [0, 3], [4, 5], [6, 7]]), 8, share=0.6)
        tensor([0])
    """
    tops = torch.as_tensor(tops).long()
    counts = torch.bincount(tops.reshape(-1), minlength=n_train)
    return (counts >= math.ceil(share * len(tops))).nonzero().reshape(-1)


@dataclass
class TimestepLog:
    """Per epoch (0-based), the timestep (and noise seed) each training sample was trained on.

    Attributes:
        timesteps: epoch -> ``(N,)`` long tensor.
        noise_seeds: epoch -> ``(N,)`` int64 tensor (the noise is ``keyed_noise(seeds, image shape)``); None
            when the noise was not logged.
    """

    timesteps: dict[int, torch.Tensor]
    noise_seeds: dict[int, torch.Tensor] | None = None

    @classmethod
    def load(cls, folder: str | Path) -> TimestepLog:
        """Read ``epoch-<e>.pt`` files (``{"timesteps", "noise_seeds"}``) written by ``train_ddpm``.

        Raises:
            TimestepLogError: the folder holds no log.
        """
        files = sorted(Path(folder).glob("epoch-*.pt"))
        if not files:
            raise TimestepLogError(f"no timestep log (epoch-*.pt) in {folder}: train with trustlab.attribution.ddpm."
                                   "train_ddpm, which logs every sample's timestep and noise seed per epoch")
        steps, seeds = {}, {}
        for f in files:
            try:
                row = torch.load(f, map_location="cpu", weights_only=True)
                e = int(f.stem.split("-")[1])
            except (RuntimeError, ValueError, IndexError) as exc:
                raise DataFileError(f"{f} is not a timestep log file: {exc}") from exc
            steps[e] = row["timesteps"].long()
            if row.get("noise_seeds") is not None:
                seeds[e] = row["noise_seeds"].long()
        return cls(steps, seeds if len(seeds) == len(steps) else None)

    def fingerprint(self, epochs: Sequence[int]) -> str:
        """A content hash of the rows of ``epochs`` (for cache manifests)."""
        from trustlab.data import fingerprint

        rows = [self.timesteps[e] for e in epochs] + ([self.noise_seeds[e] for e in epochs] if self.noise_seeds else [])
        return fingerprint(torch.stack(rows))


class DiffusionAttributionTask:
    """What the diffusion attributors need: the epsilon model, its noise schedule, the training loss, the
    checkpoints and the timestep log.

    Args:
        model: ``model(x_t, t)`` -> noise prediction (tensor, ``.sample`` or tuple); a template whose weights
            come from each checkpoint.
        noise_schedule: a scheduler with ``alphas_cumprod`` or the tensor ``(T,)``.
        checkpoints: :class:`~trustlab.attribution.tracin.Checkpoint` list, each with ``epoch`` set.
        timestep_log: the training run's :class:`TimestepLog`.
        loss: ``"l1"`` or ``"mse"``: must be the training loss.

    Raises:
        EmptyInputError: no checkpoints.
        TimestepLogError: no log, or a checkpoint whose epoch has no log row.
        TrustlabError: an unknown loss.
    """

    def __init__(self, model: torch.nn.Module, noise_schedule: Any, checkpoints: Sequence[Checkpoint],
                 timestep_log: TimestepLog | None, *, loss: str = "l1"):
        if loss not in LOSSES:
            raise TrustlabError(f"unknown loss {loss!r}; choose one of: {', '.join(LOSSES)} (the training loss)")
        if not checkpoints:
            raise EmptyInputError("no checkpoints: Diffusion-TracIn needs the states saved during training")
        if timestep_log is None:
            raise TimestepLogError("checkpoints without a timestep log: train-side gradients are taken at the timestep "
                                   "each sample was trained on; train with trustlab.attribution.ddpm.train_ddpm (it "
                                   "logs them) or pass TimestepLog(...)")
        for c in checkpoints:
            if c.epoch is None or c.epoch - 1 not in timestep_log.timesteps:
                raise TimestepLogError(f"checkpoint {c.state!r} (epoch {c.epoch}) has no timestep log row for the "
                                       f"epoch that ended there; the log has epochs {sorted(timestep_log.timesteps)[:8]}")
        self.model, self.checkpoints, self.timestep_log, self.loss = model, list(checkpoints), timestep_log, loss
        self.noise_schedule = noise_schedule
        self.abar = alphas_cumprod(noise_schedule)

    @property
    def num_timesteps(self) -> int:
        return len(self.abar)

    def coefficients(self, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(sqrt(abar_t), sqrt(1 - abar_t))`` for integer timesteps ``t``."""
        abar = self.abar[t.long().cpu()]
        return abar.sqrt(), (1 - abar).sqrt()

    def sample_loss(self, call: Callable, x0: torch.Tensor, t: torch.Tensor, a: torch.Tensor, b: torch.Tensor,
                    noise: torch.Tensor) -> torch.Tensor:
        """One sample's loss averaged over its noise draws: ``x0`` ``(C, H, W)``, scalars ``t, a, b``, ``noise``
        ``(J, C, H, W)``."""
        j = noise.shape[0]
        xt = add_noise(x0.expand(j, *x0.shape), noise, a.expand(j), b.expand(j))  # (J, C, H, W)
        return pixel_loss(model_eps(call(xt, t.expand(j))), noise, self.loss).mean()


@dataclass
class TestFeatures:
    """Test-side gradients of some queries, per checkpoint (both the TracIn and the ReTrac form).

    Attributes:
        tracin: per checkpoint ``(n, D)``: ``(1/|S|) sum_s gbar_s``.
        retrac: per checkpoint ``(n, D)``: ``(1/|S|) sum_s gbar_s / |gbar_s|``.
        norms: ``(K, n, |S|)`` full-space norms ``|gbar_s|`` (the timestep-norm profile of each query).
        timesteps: ``(|S|,)`` the timesteps averaged over.
        projection: the projector's config, or None for full-space features.
    """

    tracin: list[torch.Tensor]
    retrac: list[torch.Tensor]
    norms: torch.Tensor
    timesteps: torch.Tensor
    projection: dict[str, Any] | None = None

    def __len__(self) -> int:
        return self.tracin[0].shape[0]


class DiffusionTracIn(CheckpointAttributor):
    """Diffusion-TracIn (``retrac=False``) or Diffusion-ReTrac (``retrac=True``): ``cache(train)`` then
    ``attribute(test) -> (n_test, n_train)``.

    Args:
        task: the :class:`DiffusionAttributionTask`.
        retrac: ReTrac's normalisation (train gradient and per-timestep test gradients to unit norm).
        n_avg: test timesteps ``S = linspace(1, T - 1, n_avg)`` (paper: 100; 50 in its rebuttal).
        n_noise: noise draws per test timestep ``J`` (paper: 16).
        fresh_noise: draw new train-side noise instead of replaying the logged noise.
        seed: seed of the test noise (and of fresh train noise).
        **kwargs: ``params``, ``projector``, ``cache_dir``, ``batch_size``, ``shard_size``, ``device`` of
            :class:`~trustlab.attribution.tracin.CheckpointAttributor`.

    Example:
        >>> tracin = DiffusionTracIn(task, n_avg=50, n_noise=8)       # doctest: +SKIP
        >>> tracin.cache(x_train); feats = tracin.test_features(x_query)
        >>> tracin.attribute(feats), DiffusionTracIn(task, retrac=True).attribute(feats)   # same cache dir
    """

    def __init__(self, task: DiffusionAttributionTask, *, retrac: bool = False, n_avg: int = 100, n_noise: int = 16,
                 fresh_noise: bool = False, seed: int = 0, **kwargs: Any):
        super().__init__(task.model, task.checkpoints, **kwargs)
        if n_avg < 1 or n_noise < 1:
            raise TrustlabError(f"n_avg and n_noise must be >= 1, got {n_avg}, {n_noise}")
        self.task, self.retrac, self.n_avg, self.n_noise = task, retrac, int(n_avg), int(n_noise)
        self.fresh_noise = fresh_noise or task.timestep_log.noise_seeds is None
        self.seed = int(seed)
        self.shape: tuple[int, ...] | None = None
        self.timesteps = torch.linspace(1, task.num_timesteps - 1, self.n_avg).round().long()

    # -- inputs --------------------------------------------------------------------------------------------

    def _length(self, x: torch.Tensor) -> int:
        if not isinstance(x, torch.Tensor) or x.dim() != 4:
            raise ShapeMismatchError(f"images must be one tensor (N, C, H, W), got "
                                     f"{tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__}")
        if self.shape is not None and tuple(x.shape[1:]) != self.shape:
            raise ShapeMismatchError(f"images of shape {tuple(x.shape[1:])} but the training images are {self.shape}")
        if not torch.isfinite(x).all():
            raise TrustlabError("the images hold NaN or infinite pixels")
        return len(x)

    def _check_model(self, x: torch.Tensor) -> None:
        state = self.checkpoints[0].load(self.device)
        try:
            with torch.no_grad():
                out = model_eps(torch.func.functional_call(self.model, state, (x[:1].to(self.device),
                                                                              torch.tensor([1], device=self.device))))
        except RuntimeError as exc:
            raise ShapeMismatchError(f"the model cannot take images of shape {tuple(x.shape[1:])}: {exc}") from exc
        if tuple(out.shape) != (1, *x.shape[1:]):
            raise ShapeMismatchError(f"the model maps images {tuple(x.shape[1:])} to {tuple(out.shape[1:])}: the noise "
                                     "prediction must have the image's shape")

    def _manifest(self, x: torch.Tensor) -> dict[str, Any]:
        from trustlab.data import fingerprint

        log = self.task.timestep_log
        epochs = [c.epoch - 1 for c in self.checkpoints]
        for e in epochs:
            if len(log.timesteps[e]) != len(x):
                raise TimestepLogError(f"the timestep log of epoch {e} has {len(log.timesteps[e])} rows but the "
                                       f"training set has {len(x)} images: pass the training set the run used")
        return {"kind": "diffusion-tracin", "dataset": fingerprint(x.float()), "loss": self.task.loss,
                "timestep_log": log.fingerprint(epochs), "fresh_noise": self.fresh_noise,
                "seed": self.seed if self.fresh_noise else None, "schedule": fingerprint(self.task.abar)}

    def cache(self, train: torch.Tensor) -> None:
        """Train-side gradients at the logged timesteps for every checkpoint (resumable, split over ranks).

        Raises:
            EmptyInputError, ShapeMismatchError, TimestepLogError, CacheMismatchError, NonFiniteGradientError.
        """
        self.shape = None
        if self._length(train):
            self._check_model(train)
        super().cache(train)
        self.shape = tuple(train.shape[1:])

    # -- gradients -----------------------------------------------------------------------------------------

    def _grads(self, state: dict[str, torch.Tensor], x0: torch.Tensor, t: torch.Tensor,
               noise: torch.Tensor) -> torch.Tensor:
        """Per-item gradients ``(B, P)``: item ``i`` is image ``x0[i]`` at timestep ``t[i]`` with its noise draws
        ``noise[i]`` ``(J, C, H, W)`` (the loss is averaged over the draws)."""
        a, b = self.task.coefficients(t)
        dev = self.device
        g, _ = per_sample_grads(self.model, state, self.names, self.task.sample_loss,
                                (x0.to(dev), t.to(dev), a.to(dev), b.to(dev), noise.to(dev)), chunk=self.batch_size)
        return g

    def _train_rows(self, k: int, state: dict[str, torch.Tensor], x: torch.Tensor, lo: int, hi: int) -> torch.Tensor:
        log, epoch = self.task.timestep_log, self.checkpoints[k].epoch - 1
        if self.fresh_noise:
            keys = [(self.seed * _MIX + 7919 * (k + 1)) * _MIX + i for i in range(lo, hi)]
        else:
            keys = log.noise_seeds[epoch][lo:hi]
        noise = keyed_noise(keys, x.shape[1:])[:, None]  # (n, 1, C, H, W): one draw
        return self._grads(state, x[lo:hi], log.timesteps[epoch][lo:hi], noise)

    def _query_rows(self, state: dict[str, torch.Tensor], x: torch.Tensor, lo: int,
                    hi: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """TracIn and ReTrac test vectors ``(n, P)`` and per-timestep norms ``(n, |S|)`` of queries ``lo:hi``
        (query ``i``'s noise is keyed by ``(seed, i)``, the same at every checkpoint)."""
        s, j = len(self.timesteps), self.n_noise
        tr, rt, nm = [], [], []
        per_call = max(1, self.batch_size // s)
        for q0 in range(lo, hi, per_call):
            q1 = min(hi, q0 + per_call)
            keys = [self.seed * _MIX + i for i in range(q0, q1)]
            noise = keyed_noise(keys, (s * j, *x.shape[1:])).reshape(-1, j, *x.shape[1:])  # (n*S, J, C, H, W)
            x0 = x[q0:q1].repeat_interleave(s, 0)
            g = self._grads(state, x0, self.timesteps.repeat(q1 - q0), noise).reshape(q1 - q0, s, -1)  # (n, S, P)
            norms = g.norm(dim=2)  # (n, S)
            tr.append(g.mean(1))
            rt.append((g / norms.clamp_min(torch.finfo(g.dtype).tiny)[..., None]).mean(1))
            nm.append(norms)
        return torch.cat(tr), torch.cat(rt), torch.cat(nm)

    def test_features(self, x: torch.Tensor) -> TestFeatures:
        """Test-side features of queries ``x`` ``(n, C, H, W)`` at every checkpoint, both forms, projected when
        the attributor has a projector. Queries are split over ranks and gathered on every rank.

        Raises:
            EmptyInputError: no queries. ShapeMismatchError: not the training images' shape.
        """
        from trustlab.report.run import progress

        n = self._length(x)
        if n == 0:
            raise EmptyInputError("no query images")
        k_count, s = len(self.checkpoints), len(self.timesteps)
        width = self.n_params if self.projector is None else self.projector.dim_out

        def rows(lo: int, hi: int) -> torch.Tensor:
            packed = []
            for ckpt in progress(self.checkpoints, f"test gradients of {hi - lo} queries (per checkpoint)"):
                tr, rt, nm = self._query_rows(ckpt.load(self.device), x, lo, hi)
                packed.append(torch.cat([self._project(tr), self._project(rt), nm], 1).cpu())  # (n, 2D + S)
            return torch.cat(packed, 1)  # (n, K (2D + S))

        flat = self._distributed_rows(n, rows, k_count * (2 * width + s)).reshape(n, k_count, 2 * width + s)
        return TestFeatures(tracin=[flat[:, k, :width] for k in range(k_count)],
                            retrac=[flat[:, k, width:2 * width] for k in range(k_count)],
                            norms=flat[:, :, 2 * width:].permute(1, 0, 2).contiguous(), timesteps=self.timesteps,
                            projection=None if self.projector is None else self.projector.config())

    def _features_for_me(self, feats: TestFeatures) -> list[torch.Tensor]:
        mine = None if self.projector is None else self.projector.config()
        chosen = feats.retrac if self.retrac else feats.tracin
        if feats.projection == mine:
            return chosen
        if feats.projection is None:  # full-space features, projected here (the projection is linear)
            return [self.projector(f.to(self.device)).cpu() for f in chosen]
        raise TrustlabError("these test features were projected with another projector; compute them with this "
                            "attributor's test_features()")

    # -- scores --------------------------------------------------------------------------------------------

    def attribute(self, test: torch.Tensor | TestFeatures) -> torch.Tensor:
        """Influence ``(n_test, n_train)`` of every training image on every query (positive: proponent).

        Args:
            test: query images ``(n, C, H, W)``, or :meth:`test_features` computed once for several attributors
                (TracIn and ReTrac, exact and projected share them).
        """
        self._require_cache()
        feats = test if isinstance(test, TestFeatures) else self.test_features(test)
        return self._scores(self._features_for_me(feats), normalize_train=self.retrac)

    def self_influence(self, train: torch.Tensor) -> torch.Tensor:
        """``(n_train,)``: each cached training image's influence on itself (the query ``z' = z``)."""
        from trustlab.data import fingerprint

        store = self._require_cache()
        if fingerprint(train.float()) != store.manifest["dataset"]:
            raise TrustlabError("self_influence() takes the training set that cache() was given")
        test = self._features_for_me(self.test_features(train))
        out = torch.zeros(self.n_train)
        for k, ckpt in enumerate(self.checkpoints):
            for j, lo, hi in store.shards(self.n_train):
                f, norms = store.load(k, j)
                if self.retrac:
                    f = f / norms.clamp_min(torch.finfo(f.dtype).tiny)[:, None]
                out[lo:hi] += ckpt.weight * (f * test[k][lo:hi]).sum(1)
        return out

    def grad_norms_by_timestep(self, x: torch.Tensor, timesteps: torch.Tensor, *, n_noise: int = 4,
                               checkpoint: int = -1) -> torch.Tensor:
        """``(n, len(timesteps))``: the norm of one-draw per-sample loss gradients, averaged over ``n_noise``
        draws, at one checkpoint (the timestep-norm bias of the paper's figures).

        Example:
            >>> tracin.grad_norms_by_timestep(x[:8], torch.arange(0, 1000, 50)).shape   # doctest: +SKIP
            torch.Size([8, 20])
        """
        self._length(x)
        state = self.checkpoints[checkpoint].load(self.device)
        n, s = len(x), len(timesteps)
        keys = [(self.seed + 1) * _MIX + i for i in range(n)]
        noise = keyed_noise(keys, (s * n_noise, *x.shape[1:])).reshape(n * s * n_noise, 1, *x.shape[1:])
        x0 = x.repeat_interleave(s * n_noise, 0)
        t = timesteps.long().repeat_interleave(n_noise).repeat(n)
        return self._grads(state, x0, t, noise).norm(dim=1).reshape(n, s, n_noise).mean(2)
