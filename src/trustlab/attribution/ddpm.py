"""A small DDPM (``diffusers.UNet2DModel`` + ``DDPMScheduler``) trained so it can be attributed: every
sample's timestep and noise seed is logged per epoch, and K checkpoints are saved.

Data that ships offline: scikit-learn's digits (8x8, 1,797 images) and Debian's ``dataset-fashion-mnist``
(28x28 padded to 32x32). Pixels are scaled to [-1, 1]. The model predicts the noise; the loss is L1 (or MSE)
on it, averaged over pixels, at one timestep per image per epoch.

What makes the run attributable and resumable: epoch ``e``'s timesteps and noise seeds for ALL images come
from a generator seeded with ``(seed, e)``, so they do not depend on the batch order, the rank or a restart;
the noise of image ``i`` is ``keyed_noise(seed_i)``, which the attributor replays. ``OUT/timesteps/epoch-<e>.pt``
is written when epoch ``e`` ends, ``OUT/checkpoints/epoch-<E>.pt`` (weights) every ``epochs / K`` epochs and
``OUT/last.pt`` (weights, Adam state, epoch) after every epoch: a rerun continues from it. Under ``torchrun``
the model is wrapped in ``DistributedDataParallel`` and each rank trains on its ``DistributedSampler`` slice.

Example:
    >>> data = load_images("digits", split="train")
    >>> result = train_ddpm(data.x, "runs/ddpm", DDPMConfig(epochs=50), data_spec=data.spec)
    >>> task, data = load_run("runs/ddpm")                 # DiffusionAttributionTask + the training images
"""

from __future__ import annotations

import io
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from trustlab.attribution.diffusion_tracin import (
    LOSSES,
    DiffusionAttributionTask,
    TimestepLog,
    add_noise,
    keyed_noise,
    model_eps,
    pixel_loss,
)
from trustlab.attribution.features import barrier, distributed
from trustlab.attribution.tracin import Checkpoint, checkpoint_weight
from trustlab.errors import DataFileError, EmptyInputError, TrustlabError, require
from trustlab.report.io import atomic_write_bytes, read_json, write_json

DATASETS = ("digits", "fashion-mnist")
DIGITS_TEST = 297  # held-out digits (of 1,797), a fixed seeded split


class DDPMRunError(TrustlabError, ValueError):
    """A run folder that holds another training run (other data or settings), or no run at all."""


@dataclass
class DDPMConfig:
    """The DDPM training run.

    Attributes:
        epochs: passes over the training set.
        checkpoints: K, checkpoints saved every ``epochs / K`` epochs (the last at the end).
        batch_size: images per step per process.
        lr: Adam learning rate.
        num_timesteps: T of the scheduler.
        beta_schedule: the ``DDPMScheduler`` schedule (``"squaredcos_cap_v2"``: cosine).
        loss: ``"l1"`` or ``"mse"`` on the noise.
        block_out_channels: UNet widths per resolution (one downsampling between consecutive ones).
        layers_per_block: ResNet blocks per resolution.
        norm_num_groups: GroupNorm groups (must divide every width).
        attention: one attention block in the middle of the UNet.
        seed: model init, batch order, timesteps and noise.
    """

    epochs: int = 100
    checkpoints: int = 5
    batch_size: int = 128
    lr: float = 1e-3
    num_timesteps: int = 1000
    beta_schedule: str = "squaredcos_cap_v2"
    loss: str = "l1"
    block_out_channels: tuple[int, ...] = (16, 32)
    layers_per_block: int = 1
    norm_num_groups: int = 8
    attention: bool = False
    seed: int = 0

    def __post_init__(self) -> None:
        self.block_out_channels = tuple(int(c) for c in self.block_out_channels)
        if self.loss not in LOSSES:
            raise TrustlabError(f"unknown loss {self.loss!r}; choose one of: {', '.join(LOSSES)}")
        if not 1 <= self.checkpoints <= self.epochs:
            raise TrustlabError(f"need 1 <= checkpoints <= epochs, got {self.checkpoints} and {self.epochs}")
        if any(c % self.norm_num_groups for c in self.block_out_channels):
            raise TrustlabError(f"norm_num_groups={self.norm_num_groups} must divide every width "
                                f"{self.block_out_channels}")

    def checkpoint_epochs(self) -> list[int]:
        """Epochs (completed) at which checkpoints are saved, e.g. ``[20, 40, 60, 80, 100]``."""
        return sorted({round(self.epochs * (i + 1) / self.checkpoints) for i in range(self.checkpoints)})


@dataclass
class DDPMData:
    """Images ``x`` ``(N, 1, H, W)`` in [-1, 1], labels ``y`` ``(N,)``, and the spec that reloads them."""

    x: torch.Tensor
    y: torch.Tensor
    spec: dict[str, Any] = field(default_factory=dict)
    description: str = ""


def load_images(name: str = "digits", *, split: str = "train", limit: int | None = None) -> DDPMData:
    """Offline images for the DDPM: ``"digits"`` (scikit-learn, 8x8; a fixed split of 1,500 train / 297 test)
    or ``"fashion-mnist"`` (Debian ``dataset-fashion-mnist``, 28x28 padded to 32x32; 60k / 10k).

    Args:
        name: the data set.
        split: ``"train"`` or ``"test"``.
        limit: keep the first ``limit`` images.

    Raises:
        TrustlabError: an unknown name or split. DataFileError: Fashion-MNIST is not installed.
    """
    if name not in DATASETS or split not in ("train", "test"):
        raise TrustlabError(f"unknown data {name!r}/{split!r}; choose one of {', '.join(DATASETS)} and train|test")
    if name == "digits":
        datasets = require("sklearn.datasets", "diffusion")
        d = datasets.load_digits()
        perm = np.random.default_rng(0).permutation(len(d.target))
        idx = perm[DIGITS_TEST:] if split == "train" else perm[:DIGITS_TEST]
        x = torch.from_numpy(d.data[idx].astype(np.float32) / 8.0 - 1.0).reshape(-1, 1, 8, 8)
        y = torch.from_numpy(d.target[idx]).long()
        desc = f"scikit-learn digits 8x8, {split} split ({len(idx)} of {len(d.target)}, seed 0)"
    else:
        from trustlab.bench.fashion_mnist import fashion_mnist_files, read_idx

        files = fashion_mnist_files()
        if files is None:
            raise DataFileError("the Debian package dataset-fashion-mnist is not installed "
                                "(apt-get install dataset-fashion-mnist), or use --data digits")
        images, labels = read_idx(files[f"{split}_images"]), read_idx(files[f"{split}_labels"])
        x = torch.from_numpy(images.astype(np.float32) / 127.5 - 1.0)[:, None]
        x = torch.nn.functional.pad(x, (2, 2, 2, 2), value=-1.0)  # 28 -> 32: three halvings stay integral
        y = torch.from_numpy(labels.astype(np.int64))
        desc = f"Fashion-MNIST {split} (Debian dataset-fashion-mnist), 28x28 padded to 32x32"
    if limit is not None:
        x, y = x[:limit], y[:limit]
    return DDPMData(x.contiguous(), y, {"name": name, "split": split, "limit": limit}, desc)


def tiny_unet(sample_size: int, cfg: DDPMConfig, channels: int = 1) -> torch.nn.Module:
    """The ``UNet2DModel`` of ``cfg`` for square images of side ``sample_size`` (seeded by ``cfg.seed``)."""
    diffusers = require("diffusers", "diffusion")
    n = len(cfg.block_out_channels)
    if sample_size % 2 ** (n - 1):
        raise TrustlabError(f"images of side {sample_size} cannot be halved {n - 1} times; use fewer widths")
    torch.manual_seed(cfg.seed)
    return diffusers.UNet2DModel(sample_size=sample_size, in_channels=channels, out_channels=channels,
                                 block_out_channels=cfg.block_out_channels, layers_per_block=cfg.layers_per_block,
                                 down_block_types=("DownBlock2D",) * n, up_block_types=("UpBlock2D",) * n,
                                 norm_num_groups=cfg.norm_num_groups, add_attention=cfg.attention,
                                 attention_head_dim=8)


def scheduler(cfg: DDPMConfig) -> Any:
    """The ``DDPMScheduler`` of ``cfg``."""
    diffusers = require("diffusers", "diffusion")
    return diffusers.DDPMScheduler(num_train_timesteps=cfg.num_timesteps, beta_schedule=cfg.beta_schedule)


def epoch_plan(seed: int, epoch: int, n: int, num_timesteps: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Timesteps ``(n,)`` and noise seeds ``(n,)`` of every image in ``epoch`` (the same on every rank)."""
    gen = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
    return torch.randint(0, num_timesteps, (n,), generator=gen), torch.randint(0, 2**62, (n,), generator=gen)


def _save(obj: Any, path: Path) -> None:
    buf = io.BytesIO()
    torch.save(obj, buf)
    atomic_write_bytes(path, buf.getvalue())


def maybe_init_distributed(device: torch.device) -> None:
    """Join the process group when started by ``torchrun`` (``WORLD_SIZE`` > 1) and none is up yet."""
    if int(os.environ.get("WORLD_SIZE", "1")) > 1 and not distributed():
        torch.distributed.init_process_group("nccl" if device.type == "cuda" else "gloo")


def train_ddpm(x: torch.Tensor, out: str | os.PathLike, cfg: DDPMConfig | None = None, *,
               data_spec: dict[str, Any] | None = None, device: str | torch.device | None = None,
               until_epoch: int | None = None) -> dict[str, Any]:
    """Train the DDPM on ``x`` ``(N, C, H, W)`` (square, in [-1, 1]) into ``out``; resumes a run in ``out``.

    Args:
        x: training images.
        out: the run folder (``ddpm.json``, ``timesteps/``, ``checkpoints/``, ``last.pt``, ``history.json``).
        cfg: the :class:`DDPMConfig` (default settings when None).
        data_spec: how :func:`load_images` reloads ``x`` (``data.spec``); None saves ``x`` in the folder.
        device: default CUDA when available (per rank ``cuda:<LOCAL_RANK>``).
        until_epoch: stop once this many epochs are done (a later call continues the same run).

    Returns:
        ``{"history": [{"epoch", "loss", "seconds"}], "checkpoints": [paths], "seconds": ...}`` (``seconds``: this
        call; the history keeps every epoch's, across resumed calls).

    Raises:
        EmptyInputError: no images. DDPMRunError: ``out`` holds another run.
        NonFiniteLossError: the loss became NaN/inf (lower the learning rate).
    """
    import time

    from trustlab.data import NonFiniteLossError, fingerprint
    from trustlab.report.run import progress

    cfg = cfg or DDPMConfig()
    if x.dim() != 4 or x.shape[2] != x.shape[3]:
        raise TrustlabError(f"images must be (N, C, H, W) and square, got {tuple(x.shape)}")
    if len(x) == 0:
        raise EmptyInputError("no training images")
    dev = torch.device(device or (f"cuda:{os.environ.get('LOCAL_RANK', 0)}" if torch.cuda.is_available() else "cpu"))
    maybe_init_distributed(dev)
    rank = torch.distributed.get_rank() if distributed() else 0
    world = torch.distributed.get_world_size() if distributed() else 1
    out = Path(out)
    meta = {"config": asdict(cfg), "n_train": len(x), "image_shape": list(x.shape[1:]), "data": data_spec,
            "data_fingerprint": fingerprint(x.float()), "world_size": world}
    if (out / "ddpm.json").exists():
        old = read_json(out / "ddpm.json")
        if {k: old.get(k) for k in meta} != json_roundtrip(meta):
            raise DDPMRunError(f"{out} holds another DDPM run (other data or settings); use another --out")
    elif rank == 0:
        if data_spec is None:
            _save(x.cpu(), out / "train_images.pt")
        write_json(out / "ddpm.json", meta)
    model = tiny_unet(x.shape[-1], cfg, x.shape[1]).to(dev)
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    start, history = 0, []
    if (out / "last.pt").exists():
        last = torch.load(out / "last.pt", map_location=dev, weights_only=True)
        model.load_state_dict(last["model"])
        opt.load_state_dict(last["optimizer"])
        start, history = int(last["epoch"]), read_json(out / "history.json")
    net = torch.nn.parallel.DistributedDataParallel(model) if world > 1 else model
    abar = scheduler(cfg).alphas_cumprod
    ckpt_epochs = set(cfg.checkpoint_epochs())
    sampler = torch.utils.data.DistributedSampler(range(len(x)), num_replicas=world, rank=rank, shuffle=True,
                                                  seed=cfg.seed)
    t0 = time.perf_counter()
    stop = cfg.epochs if until_epoch is None else min(cfg.epochs, until_epoch)
    for epoch in progress(range(start, stop), "DDPM epochs", total=max(0, stop - start)):
        steps, seeds = epoch_plan(cfg.seed, epoch, len(x), cfg.num_timesteps)
        sampler.set_epoch(epoch)
        mine = torch.tensor(list(sampler))  # this rank's slice of the epoch's seeded permutation
        total, count, t_epoch = 0.0, 0, time.perf_counter()
        net.train()
        for lo in range(0, len(mine), cfg.batch_size):
            idx = mine[lo: lo + cfg.batch_size]
            x0, t = x[idx].to(dev), steps[idx].to(dev)
            noise = keyed_noise(seeds[idx], x.shape[1:]).to(dev)
            a, b = abar[steps[idx]].sqrt().to(dev), (1 - abar[steps[idx]]).sqrt().to(dev)
            loss = pixel_loss(model_eps(net(add_noise(x0, noise, a, b), t)), noise, cfg.loss).mean()
            if not torch.isfinite(loss):
                raise NonFiniteLossError(f"the DDPM loss became {float(loss)} at epoch {epoch}; lower the learning "
                                         f"rate (now {cfg.lr})")
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            total, count = total + float(loss.detach()) * len(idx), count + len(idx)
        history.append({"epoch": epoch + 1, "loss": total / max(1, count), "seconds": time.perf_counter() - t_epoch})
        if rank == 0:
            _save({"timesteps": steps, "noise_seeds": seeds}, out / "timesteps" / f"epoch-{epoch:05d}.pt")
            if epoch + 1 in ckpt_epochs:
                _save(model.state_dict(), out / "checkpoints" / f"epoch-{epoch + 1:05d}.pt")
            write_json(out / "history.json", history)
            _save({"model": model.state_dict(), "optimizer": opt.state_dict(), "epoch": epoch + 1}, out / "last.pt")
        barrier()
    checkpoints = [str(out / "checkpoints" / f"epoch-{e:05d}.pt") for e in cfg.checkpoint_epochs() if e <= stop]
    return {"history": history, "checkpoints": checkpoints, "seconds": time.perf_counter() - t0}


def json_roundtrip(obj: Any) -> Any:
    """``obj`` as it reads back from JSON (tuples become lists), for comparing with a saved file."""
    import json

    from trustlab.report.io import dumps

    return json.loads(dumps(obj, indent=None))


def load_run(out: str | os.PathLike, *, device: str | torch.device | None = None) -> tuple[DiffusionAttributionTask,
                                                                                          DDPMData]:
    """The attribution task of a finished :func:`train_ddpm` run, and its training images.

    Checkpoint weights follow the official code: ``c_k = lr * batch * (epochs since the previous one) / N``
    with ``batch`` the global batch (per-process batch x world size).

    Raises:
        DDPMRunError: no run in ``out``, or it has not reached its last checkpoint.
        DataFileError: the images reloaded from the run's data spec are not the ones it trained on.
    """
    from trustlab.data import fingerprint

    out = Path(out)
    if not (out / "ddpm.json").exists():
        raise DDPMRunError(f"{out} holds no DDPM run (ddpm.json); train one with `trustlab train-ddpm --out {out}`")
    meta = read_json(out / "ddpm.json")
    cfg = DDPMConfig(**meta["config"])
    if meta["data"] is None:
        x = torch.load(out / "train_images.pt", map_location="cpu", weights_only=True)
        data = DDPMData(x, torch.full((len(x),), -1), {}, f"images saved in {out}")
    else:
        data = load_images(**meta["data"])
    if fingerprint(data.x.float()) != meta["data_fingerprint"]:
        raise DataFileError(f"the images reloaded for {out} ({data.description}) differ from those it trained on")
    epochs = cfg.checkpoint_epochs()
    missing = [e for e in epochs if not (out / "checkpoints" / f"epoch-{e:05d}.pt").exists()]
    if missing:
        raise DDPMRunError(f"{out} lacks the checkpoints of epochs {missing}: finish training (rerun train-ddpm)")
    batch = cfg.batch_size * meta["world_size"]
    ckpts = [Checkpoint(out / "checkpoints" / f"epoch-{e:05d}.pt",
                        checkpoint_weight(cfg.lr, batch, e - prev, meta["n_train"]), epoch=e)
             for prev, e in zip([0, *epochs[:-1]], epochs)]
    model = tiny_unet(data.x.shape[-1], cfg, data.x.shape[1])
    task = DiffusionAttributionTask(model.to(device or "cpu"), scheduler(cfg), ckpts,
                                    TimestepLog.load(out / "timesteps"), loss=cfg.loss)
    return task, data


def sample_images(task: DiffusionAttributionTask, n: int, *, steps: int = 100, seed: int = 0,
                  checkpoint: int = -1) -> torch.Tensor:
    """``n`` images ``(n, C, H, W)`` by DDPM ancestral sampling in ``steps`` steps from one checkpoint (for
    reports: does the model make digits?). Needs the task's noise schedule to be a diffusers scheduler."""
    sched = task.noise_schedule
    if not hasattr(sched, "set_timesteps"):
        raise TrustlabError("sampling needs a diffusers scheduler as the task's noise_schedule")
    model = task.model
    dev = next(model.parameters()).device
    model.load_state_dict(task.checkpoints[checkpoint].load(dev))
    model.eval()
    gen = torch.Generator().manual_seed(seed)
    cfg = model.config
    x = torch.randn((n, cfg.in_channels, cfg.sample_size, cfg.sample_size), generator=gen).to(dev)
    sched.set_timesteps(steps)
    with torch.no_grad():
        for t in sched.timesteps:
            x = sched.step(model_eps(model(x, t)), t, x, generator=gen).prev_sample
    return x.clamp(-1, 1).cpu()
