"""``trustlab fingerprint``: the layer-wise memorization (C_T) curve of generated images against a training
set in a vision model's embedding spaces, and identification of their generator by saved reference curves."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from trustlab.cli.common import out_option, seed_option

DATASETS = ("digits", "fashion-mnist")
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".webp")


def read_images(source: str, split: str, limit: int | None) -> Any:
    """Images as a float tensor ``(N, C, H, W)`` in [0, 1] from a data set name (``digits``, ``digits:test``,
    ``fashion-mnist:train``; the split defaults to ``split``), a ``.npy``/``.npz`` array ((N, H, W), (N, C, H, W)
    or (N, H, W, C); uint8, float in [0, 1] or in [-1, 1]) or a folder of image files (read as RGB)."""
    import numpy as np
    import torch

    name, _, part = source.partition(":")
    if name in DATASETS:
        from trustlab.attribution.ddpm import load_images

        if part not in ("", "train", "test"):
            raise click.BadParameter(f"{source!r}: the split must be train or test")
        return (load_images(name, split=part or split, limit=limit).x + 1) / 2
    path = Path(source)
    if path.is_dir():
        from PIL import Image, UnidentifiedImageError

        files = sorted(p for p in path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)[:limit]
        if not files:
            raise click.BadParameter(f"{path} holds no image files ({', '.join(IMAGE_SUFFIXES)})")
        try:
            arrays = [np.asarray(Image.open(p).convert("RGB")) for p in files]
        except (UnidentifiedImageError, OSError) as exc:
            raise click.BadParameter(f"an image in {path} cannot be read ({exc})") from exc
        if len({a.shape for a in arrays}) > 1:
            raise click.BadParameter(f"the images in {path} differ in size; resize them to one size first")
        arr = np.stack(arrays)
    elif path.suffix in (".npy", ".npz") and path.is_file():
        loaded = np.load(path)
        if path.suffix == ".npz":
            keys = list(loaded.keys())
            if not keys:
                raise click.BadParameter(f"{path} holds no array")
            loaded = loaded["images"] if "images" in keys else loaded[keys[0]]
        arr = np.asarray(loaded)[:limit]
    else:
        raise click.BadParameter(f"{source!r} is neither a data set ({', '.join(DATASETS)}), a .npy/.npz file nor a "
                                 "folder of images")
    if arr.ndim == 4 and arr.shape[-1] in (1, 3) and arr.shape[1] not in (1, 3):
        arr = arr.transpose(0, 3, 1, 2)  # NHWC -> NCHW
    x = torch.from_numpy(np.ascontiguousarray(arr))
    x = x.float() / 255.0 if x.dtype == torch.uint8 else x.float()
    if x.numel() and float(x.min()) < 0:
        x = (x + 1) / 2  # [-1, 1] images (the DDPM's)
    if x.numel() and (float(x.min()) < -1e-4 or float(x.max()) > 1 + 1e-4):
        raise click.BadParameter(f"{source}: images must be uint8 or float in [0, 1] or [-1, 1]")
    return x


def _load_model(spec: str, input_size: int | None) -> Any:
    from trustlab.errors import ModelSpecError
    from trustlab.models.vision import VisionModel, load_vision_model

    try:
        vm = load_vision_model(spec)
    except ModelSpecError as exc:
        raise click.BadParameter(str(exc), param_hint="--model") from exc
    if input_size is not None:
        vm = VisionModel(vm.module, kind=vm.kind, input_size=input_size, mean=vm.mean, std=vm.std,
                         name=f"{vm.name}@{input_size}px", device=vm.device)
    return vm


@click.command()
@click.argument("generated")
@click.option("--train", "train_src", default="digits", show_default=True,
              help="training set: digits | fashion-mnist | a .npy/.npz file | a folder of images")
@click.option("--test", "test_src", default=None,
              help="held-out real images (same forms; default: the --train data set's test split)")
@click.option("--limit-train", type=click.IntRange(min=1), default=None, help="first N training images")
@click.option("--limit-test", type=click.IntRange(min=1), default=None, help="first N test images")
@click.option("--limit-generated", type=click.IntRange(min=1), default=None, help="first N generated images")
@click.option("--model", "model_spec", default="embedded:dinov2-s", show_default=True,
              help="vision model: embedded:dinov2-s | a transformers ViT folder | a torch.save()d module")
@click.option("--input-size", type=click.IntRange(min=1), default=None,
              help="resize images to this side (default: the model's; DINOv2 takes multiples of 14)")
@click.option("--layers", default=None, help="comma-separated layer names (default: every transformer block)")
@click.option("--pool", type=click.Choice(["cls", "mean"]), default="cls", show_default=True,
              help="token per layer: CLS or the mean of the patch tokens")
@click.option("--k", type=click.IntRange(min=1), default=10, show_default=True, help="k-means cells")
@click.option("--min-cell", type=click.IntRange(min=0), default=20, show_default=True,
              help="keep cells with more than this many generated images")
@click.option("--distance", type=click.Choice(["cos", "l2"]), default="cos", show_default=True)
@click.option("--references", type=click.Path(path_type=Path, dir_okay=False), default=None,
              help="JSON file of reference curves: identify the generator by the nearest one")
@click.option("--save-reference", "family", default=None,
              help="add this curve to --references under this generator family (with --name)")
@click.option("--name", default=None, help="the reference's name (default: GENERATED)")
@click.option("--cache", type=click.Path(path_type=Path, file_okay=False), default=None,
              help="embedding cache folder (default: the trustlab cache)")
@seed_option
@out_option("runs/fingerprint")
def fingerprint(generated: str, train_src: str, test_src: str | None, limit_train: int | None,
                limit_test: int | None, limit_generated: int | None, model_spec: str, input_size: int | None,
                layers: str | None, pool: str, k: int, min_cell: int, distance: str, references: Path | None,
                family: str | None, name: str | None, cache: Path | None, seed: int, out: Path) -> None:
    """Print the memorization curve (C_T per layer) of GENERATED images against the training set.

    GENERATED: a .npy/.npz array, a folder of images, or a data set (digits:train gives copies of the
    training set, a positive control). C_T << 0 at a layer: the images sit closer to training images than
    held-out real images do (copying); C_T >> 0: under-fitting. With --references, the generator family
    of the nearest reference curve is printed; --save-reference FAMILY adds this curve to that file.

    Writes the run folder OUT (config.json, samples.jsonl (one row per layer), results.json, ct_by_layer.png,
    report.html); a rerun starts over.
    """
    import numpy as np
    from rich.console import Console

    from trustlab.forensics import FingerprintMatcher, LayerCT, block_layers, layer_embeddings
    from trustlab.models.embedded import cache_root
    from trustlab.report import RunFolder, Section
    from trustlab.report.io import read_json, write_json
    from trustlab.report.run import plt

    if family is not None and references is None:
        raise click.UsageError("--save-reference needs --references FILE to write to")
    if test_src is None:
        if train_src.partition(":")[0] not in DATASETS:
            raise click.UsageError("give --test (held-out real images) when --train is a file or folder")
        test_src = f"{train_src.partition(':')[0]}:test"
    vm = _load_model(model_spec, input_size)
    names = [s.strip() for s in layers.split(",") if s.strip()] if layers else block_layers(vm)
    cache_dir = cache or cache_root() / "memorization-fingerprint" / "emb"
    sets = {}
    for what, src, split, limit in (("train", train_src, "train", limit_train), ("test", test_src, "test", limit_test),
                                    ("generated", generated, "train", limit_generated)):
        sets[what] = layer_embeddings(vm, read_images(src, split, limit), names, pool=pool, cache_dir=cache_dir,
                                      description=f"embedding {what}")
    lct = LayerCT(k=k, n_pca=64, distance=distance, min_cell=min_cell, seed=seed).fit(sets["train"], sets["test"])
    res = lct.results(sets["generated"])
    curve = [r.ct for r in res.values()]
    config = {"command": "fingerprint", "generated": generated, "train": train_src, "test": test_src,
              "limits": [limit_train, limit_test, limit_generated], "model": model_spec, "input_size": input_size,
              "layers": names, "pool": pool, "k": k, "min_cell": min_cell, "distance": distance, "seed": seed,
              "references": str(references) if references else None}
    run = RunFolder(out, config, fresh=True)
    console = Console()
    rows = []
    for layer, r in res.items():
        row = {"id": layer, "ct": r.ct, "kept_cells": int(r.kept.sum()), **r.to_dict()}
        run.add_sample(row)
        rows.append({"layer": layer, "C_T": round(r.ct, 3), "kept cells": f"{int(r.kept.sum())}/{k}"})
        console.print(f"{layer:>40}  C_T {r.ct:8.3f}  ({int(r.kept.sum())}/{k} cells)")
    results: dict[str, Any] = {"layers": names, "curve": curve, "n": {s: len(next(iter(e.values())))
                                                                     for s, e in sets.items()}}
    refs = read_json(references) if references and references.exists() else None
    if refs is not None and refs.get("layers") != names:
        raise click.UsageError(f"{references} holds curves over other layers ({refs.get('layers')}); use the same "
                               "--model and --layers")
    if refs and refs.get("references"):
        matcher = FingerprintMatcher().fit([r["curve"] for r in refs["references"]],
                                           [r["family"] for r in refs["references"]])
        sim = matcher.similarity(np.array([curve]))[0]
        order = np.argsort(-sim)
        results["identification"] = {"family": matcher.families[order[0]], "score": "0.5 cos + 0.5 / (1 + L2)",
                                     "nearest": [{"name": refs["references"][j]["name"], "family": matcher.families[j],
                                                  "similarity": float(sim[j])} for j in order[:5]]}
        console.print(f"nearest reference: {refs['references'][order[0]]['name']} -> family "
                      f"{results['identification']['family']} (similarity {sim[order[0]]:.3f})")
    if family is not None:
        entries = [r for r in (refs or {}).get("references", []) if r["name"] != (name or generated)]
        write_json(references, {"layers": names, "model": vm.name,
                                "references": [*entries, {"name": name or generated, "family": family, "curve": curve}]})
        results["saved_reference"] = {"file": str(references), "name": name or generated, "family": family}
    run.write_results(results)
    pyplot = plt()
    fig, ax = pyplot.subplots(figsize=(6, 3.6))
    for r in (refs or {}).get("references", []):
        ax.plot(np.arange(1, len(r["curve"]) + 1), r["curve"], lw=0.8, alpha=0.5, label=f"ref {r['name']}")
    ax.plot(np.arange(1, len(curve) + 1), curve, marker="o", color="black", lw=2, label="this generator")
    ax.axhline(0, color="gray", ls=":")
    ax.set(xlabel="layer", ylabel="C_T", title="memorization by layer (C_T < 0: copying)")
    ax.legend(fontsize=7)
    image = run.save_plot(fig, "ct_by_layer")
    sections = [Section("C_T by layer", f"{results['n']['generated']} generated images against "
                        f"{results['n']['train']} training and {results['n']['test']} held-out images, {vm.name}.",
                        rows, images=[image])]
    if "identification" in results:
        sections.append(Section("Identification", f"Nearest reference family: {results['identification']['family']}.",
                                results["identification"]["nearest"]))
    click.echo(f"report: {run.write_report('trustlab fingerprint (memorization curve)', sections)}")
