"""``trustlab train-ddpm`` (a small DDPM that logs its timesteps) and ``trustlab attribute`` (Diffusion-TracIn /
Diffusion-ReTrac over its checkpoints). Both run under ``torchrun`` as they are."""

from __future__ import annotations

from pathlib import Path

import click

from trustlab.cli.common import out_option, seed_option


def _widths(value: str) -> tuple[int, ...]:
    try:
        widths = tuple(int(v) for v in value.split(",") if v.strip())
    except ValueError:
        raise click.BadParameter(f"{value!r} is not a comma-separated list of widths, e.g. 16,32") from None
    if not widths or min(widths) <= 0:
        raise click.BadParameter(f"widths must be positive, got {value!r}")
    return widths


@click.command("train-ddpm")
@seed_option
@out_option("runs/ddpm")
@click.option("--data", type=click.Choice(["digits", "fashion-mnist"]), default="digits", show_default=True,
              help="scikit-learn digits (8x8) or Debian's dataset-fashion-mnist (28x28 padded to 32x32)")
@click.option("--limit", type=click.IntRange(min=1), default=None, help="train on the first N images only")
@click.option("--epochs", type=click.IntRange(min=1), default=100, show_default=True)
@click.option("--checkpoints", type=click.IntRange(min=1), default=5, show_default=True,
              help="K checkpoints, every epochs/K epochs")
@click.option("--batch-size", type=click.IntRange(min=1), default=128, show_default=True, help="per process")
@click.option("--lr", type=click.FloatRange(min=0.0, min_open=True), default=1e-3, show_default=True)
@click.option("--timesteps", type=click.IntRange(min=2), default=1000, show_default=True, help="T")
@click.option("--loss", type=click.Choice(["l1", "mse"]), default="l1", show_default=True)
@click.option("--widths", default="16,32", show_default=True, help="UNet block widths, one per resolution")
@click.option("--layers-per-block", type=click.IntRange(min=1), default=1, show_default=True)
@click.option("--groups", type=click.IntRange(min=1), default=8, show_default=True, help="GroupNorm groups")
@click.option("--attention", is_flag=True, help="one attention block in the UNet's middle")
@click.option("--device", default=None, help="cpu | cuda | cuda:N (default: CUDA when available)")
def train_ddpm_command(seed: int, out: Path, data: str, limit: int | None, epochs: int, checkpoints: int,
                       batch_size: int, lr: float, timesteps: int, loss: str, widths: str, layers_per_block: int,
                       groups: int, attention: bool, device: str | None) -> None:
    """Train a small DDPM (diffusers UNet2DModel, cosine schedule) and log every image's timestep per epoch.

    Writes OUT/ddpm.json, OUT/checkpoints/epoch-*.pt (K of them), OUT/timesteps/epoch-*.pt, OUT/last.pt and
    OUT/history.json, then the run folder (samples.jsonl: one row per epoch, results.json, loss.png,
    samples.png, report.html). A rerun with the same options continues from OUT/last.pt. Under torchrun
    each rank trains on its DistributedSampler slice (DistributedDataParallel).
    """
    from dataclasses import asdict

    import torch

    from trustlab.attribution.ddpm import DDPMConfig, load_images, load_run, sample_images, train_ddpm
    from trustlab.attribution.features import distributed
    from trustlab.report import RunFolder, Section, plt

    cfg = DDPMConfig(epochs=epochs, checkpoints=checkpoints, batch_size=batch_size, lr=lr, num_timesteps=timesteps,
                     loss=loss, block_out_channels=_widths(widths), layers_per_block=layers_per_block,
                     norm_num_groups=groups, attention=attention, seed=seed)
    images = load_images(data, split="train", limit=limit)
    click.echo(f"{len(images.x)} images from {images.description}; checkpoints at epochs {cfg.checkpoint_epochs()}")
    result = train_ddpm(images.x, out, cfg, data_spec=images.spec, device=device)
    if distributed() and torch.distributed.get_rank() != 0:
        return
    run = RunFolder(out, {"command": "train-ddpm", "data": images.spec, **asdict(cfg)})
    for row in result["history"]:
        run.add_sample({"id": row["epoch"], **row})
    history = result["history"]
    results = {"final_loss": history[-1]["loss"], "epochs": len(history), "n_train": len(images.x),
               "seconds": sum(h["seconds"] for h in history), "checkpoints": result["checkpoints"],
               "data": images.description}
    run.write_results(results)
    pyplot = plt()
    fig, ax = pyplot.subplots(figsize=(6, 3.5))
    ax.plot([h["epoch"] for h in history], [h["loss"] for h in history])
    for e in cfg.checkpoint_epochs():
        ax.axvline(e, color="gray", lw=0.6, ls=":")
    ax.set(xlabel="epoch", ylabel=f"{loss} noise loss", title="DDPM training (dotted: checkpoints)")
    loss_png = run.save_plot(fig, "loss")
    task, _ = load_run(out)
    generated = sample_images(task, 16, steps=min(100, timesteps))
    fig, axes = pyplot.subplots(1, 16, figsize=(11, 1))
    for ax, img in zip(axes, generated):
        ax.imshow(img.mean(0).numpy(), cmap="gray", vmin=-1, vmax=1)
        ax.axis("off")
    samples_png = run.save_plot(fig, "samples")
    path = run.write_report("DDPM training", [
        Section("Training", text=f"{len(images.x)} images from {images.description}; {len(history)} epochs.",
                table=[{k: v for k, v in results.items() if k != "checkpoints"}], images=[loss_png]),
        Section("Samples", text="16 images from the last checkpoint (DDPM ancestral sampling).", images=[samples_png])])
    click.echo(f"final loss {history[-1]['loss']:.4f} after {len(history)} epochs; run in {out}; report: {path}")


def _queries(spec: str, run_data: object, source: dict | None) -> tuple:
    """``test:N`` (held-out images of the run's data set), ``train:I,J,..`` (training images) or a .pt/.npy
    file of images ``(N, C, H, W)`` or ``(N, H, W)``; returns (images, ids)."""
    import numpy as np
    import torch

    from trustlab.attribution.ddpm import load_images

    kind, _, arg = spec.partition(":")
    if kind == "train":
        try:
            idx = [int(v) for v in arg.split(",") if v.strip()]
        except ValueError:
            raise click.BadParameter(f"{spec!r}: train:I,J,.. takes training-image indices") from None
        bad = [i for i in idx if not 0 <= i < len(run_data.x)]
        if not idx or bad:
            raise click.BadParameter(f"{spec!r}: indices must lie in 0..{len(run_data.x) - 1}")
        return run_data.x[idx], [f"train-{i}" for i in idx]
    if kind == "test":
        if source is None:
            raise click.BadParameter("this run trained on images given in code (no data set to hold out from); "
                                     "pass a file of query images")
        if not arg.isdigit() or int(arg) < 1:
            raise click.BadParameter(f"{spec!r}: test:N takes a positive count")
        x = load_images(source["name"], split="test", limit=int(arg)).x
        return x, [f"test-{i}" for i in range(len(x))]
    path = Path(spec)
    if not path.is_file():
        raise click.BadParameter(f"{spec!r} is neither test:N, train:I,J nor an existing .pt/.npy file")
    x = torch.from_numpy(np.load(path)) if path.suffix == ".npy" else torch.load(path, weights_only=True)
    x = x.float()
    x = x[:, None] if x.dim() == 3 else x
    return x, [f"{path.stem}-{i}" for i in range(len(x))]


@click.command("attribute")
@seed_option
@out_option("runs/attribute")
@click.option("--run", "run_dir", type=click.Path(path_type=Path, file_okay=False), required=True,
              help="a train-ddpm run folder")
@click.option("--queries", default="test:10", show_default=True,
              help="test:N (held-out images) | train:I,J,.. | a .pt/.npy file of images")
@click.option("--method", type=click.Choice(["retrac", "tracin", "both"]), default="both", show_default=True)
@click.option("--n-avg", type=click.IntRange(min=1), default=50, show_default=True, help="test timesteps |S|")
@click.option("--n-noise", type=click.IntRange(min=1), default=8, show_default=True, help="noise draws J per timestep")
@click.option("--proj-dim", type=click.IntRange(min=0), default=0, show_default=True,
              help="random-projection dimension (0: exact gradients)")
@click.option("--params", multiple=True, help="attribute only these parameters (names or prefixes; repeatable)")
@click.option("--fresh-noise", is_flag=True, help="draw new train-side noise instead of replaying the logged noise")
@click.option("--top-k", type=click.IntRange(min=1), default=10, show_default=True)
@click.option("--batch-size", type=click.IntRange(min=1), default=64, show_default=True, help="items per vmap call")
@click.option("--cache", "cache_dir", type=click.Path(path_type=Path, file_okay=False), default=None,
              help="train-feature cache folder (default: RUN/features-<settings>); resumable")
@click.option("--device", default=None, help="cpu | cuda | cuda:N (default: CUDA when available)")
def attribute(seed: int, out: Path, run_dir: Path, queries: str, method: str, n_avg: int, n_noise: int,
              proj_dim: int, params: tuple[str, ...], fresh_noise: bool, top_k: int, batch_size: int,
              cache_dir: Path | None, device: str | None) -> None:
    """Attribute query images to the training images of a train-ddpm run (Diffusion-TracIn / -ReTrac).

    Writes OUT/results.json (generally influential counts), OUT/samples.jsonl (each query's top-k proponents
    and opponents per method), OUT/proponents.png and OUT/report.html.
    """
    import torch

    from trustlab.attribution import DiffusionTracIn, RandomProjector
    from trustlab.attribution.ddpm import load_run, maybe_init_distributed
    from trustlab.attribution.diffusion_tracin import generally_influential
    from trustlab.attribution.features import distributed
    from trustlab.report import RunFolder, Section, plt, read_json

    dev = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    maybe_init_distributed(dev)
    task, data = load_run(run_dir, device=dev)
    x_query, ids = _queries(queries, data, read_json(run_dir / "ddpm.json")["data"])
    arms = ["tracin", "retrac"] if method == "both" else [method]
    n_params = sum(p.numel() for n, p in task.model.named_parameters()
                   if not params or any(n == q or n.startswith(q + ".") for q in params))
    projector = RandomProjector(n_params, proj_dim, seed=seed) if proj_dim else None
    cache_dir = cache_dir or run_dir / f"features-proj{proj_dim}-seed{seed}{'-fresh' if fresh_noise else ''}"
    common = {"n_avg": n_avg, "n_noise": n_noise, "params": list(params) or None, "projector": projector,
              "fresh_noise": fresh_noise, "seed": seed, "cache_dir": cache_dir, "batch_size": batch_size, "device": dev}
    attributors = {arm: DiffusionTracIn(task, retrac=arm == "retrac", **common) for arm in arms}
    for a in attributors.values():
        a.cache(data.x)
    feats = attributors[arms[0]].test_features(x_query)
    scores = {arm: a.attribute(feats) for arm, a in attributors.items()}
    if distributed() and torch.distributed.get_rank() != 0:
        return
    k = min(top_k, len(data.x))
    run = RunFolder(out, {"command": "attribute", "run": str(run_dir), "queries": queries, "method": method,
                          "n_avg": n_avg, "n_noise": n_noise, "proj_dim": proj_dim, "params": list(params),
                          "fresh_noise": fresh_noise, "top_k": k, "seed": seed}, fresh=True)
    tops = {arm: s.topk(k, dim=1) for arm, s in scores.items()}
    for i, qid in enumerate(ids):
        run.add_sample({"id": qid, **{f"{arm}_proponents": tops[arm].indices[i].tolist() for arm in arms},
                        **{f"{arm}_scores": tops[arm].values[i].tolist() for arm in arms},
                        **{f"{arm}_opponents": scores[arm][i].topk(k, largest=False).indices.tolist() for arm in arms}})
    gi = {arm: generally_influential(tops[arm].indices, len(data.x), 0.2).tolist() for arm in arms}
    results = {"queries": len(ids), "n_train": len(data.x), "generally_influential": {a: len(v) for a, v in gi.items()},
               "generally_influential_indices": gi, "cache": str(cache_dir)}
    run.write_results(results)
    pyplot = plt()
    shown = min(len(ids), 8)
    fig, axes = pyplot.subplots(shown, 1 + k * len(arms), figsize=(1 + k * len(arms), 1.1 * shown), squeeze=False)
    for r in range(shown):
        row = [x_query[r]] + [data.x[j] for arm in arms for j in tops[arm].indices[r]]
        for c, img in enumerate(row):
            axes[r, c].imshow(img.mean(0).cpu().numpy(), cmap="gray", vmin=-1, vmax=1)
            axes[r, c].axis("off")
    image = run.save_plot(fig, "proponents")
    path = run.write_report("Diffusion attribution", [Section("Top proponents", text=(
        f"{len(ids)} queries ({queries}) against {len(data.x)} training images of {run_dir}; each row: the query, "
        f"then the top-{k} proponents per method ({', '.join(arms)})."), table=[results], images=[image])])
    counts = ", ".join(f"{a} {len(v)}" for a, v in gi.items())
    click.echo(f"generally influential (in the top-{k} of >= 20% of the queries): {counts}; report: {path}")
