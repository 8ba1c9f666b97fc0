"""Memorization fingerprints reproduction (spec ``memorization-fingerprint.md`` section 6, with the issue's
DDPM/VAE/GAN families added to the spec's copier and Gaussian-like ones).

Data: scikit-learn digits 8x8 (:func:`trustlab.attribution.ddpm.load_images`): T = the 1,500-image training
split, P = the 297 held-out digits. Generators (:mod:`trustlab.forensics.generators`), 8 families x 3
instances (seeds 0, 1, 2), each trained on T: noisy-copy, kde-narrow (copiers), kde-wide, gmm, pca-gauss
(Gaussian-like), vae, gan, ddpm. Each instance draws 2 batches of m = 500 images (the spec's m).

Encoders: a small ViT (transformers ``ViTForImageClassification``: patch 2 on 8x8, 6 blocks, width 64, 4
heads) trained 30 epochs on T's labels; its untrained initialisation (reported, not judged); the pretrained
DINOv2-S (``embedded:dinov2-s``, 12 blocks). DINOv2 on this CPU embeds 2.3 images/s at 224 px and 15.6/s at
112 px (measured, one thread): it runs at 112 px (8x8 patches of 14 px; position embeddings interpolated) on T,
P and the first 300 images of seed 0 of every family (decision: ~4,200 images, ~5 minutes). Embedding = the
CLS token of every block's output (block 0 = the first transformer block; the patch-embedding output is not
a block). C_T: PCA 64 on T, k = 10 cells, cosine distance ``1 - |cos|``, cells kept with > 20 generated
points, weights = test mass (the spec's 3a), k-means seed 0.

Checks and pass rules (fixed before the run; thresholds from the spec, decisions marked "decision"):

1. Copiers: with the trained ViT, the mean C_T at the first block is < -3 for each copier family and
   >= -3 for each Gaussian-like family. ours = mean over copier batches, baseline = mean over Gaussian-like
   batches; interval: bootstrap over batches (unpaired) of the difference.
2. Depth trend (trained ViT): Spearman(block index, C_T) averaged over the copier batches > 0.5 (C_T rises
   with depth = less memorization measured deeper). Interval: bootstrap over batches of the mean rho - 0.
3. Depth trend (DINOv2-S): the same rule on DINOv2's copier curves (decision: one instance per family, so
   n = 2 curves; reported with that caveat).
4. Identification: leave-one-instance-out family accuracy over the 48 batches (8 families x 3 instances x 2)
   of nearest-reference matching on the trained ViT's C_T curves (a = 0.5) beats the better of the spec's
   baselines: per-pixel mean/std matching, and logistic regression on 50 images per reference batch (mean
   probability over the query batch). Interval: paired bootstrap over queries of (curve correct - baseline
   correct).
5. Identification vs the single-layer baseline (the issue's comparison; decision: C_T at the last block,
   nearest reference by |difference|): curve accuracy > single-layer accuracy; same interval.

Units (resumable): the ViTs (``checkpoints/vit``, ``checkpoints/vit-untrained``), each generator's images
(``checkpoints/samples/<family>-s<seed>.pt``; DDPM runs in ``checkpoints/ddpm-s<seed>``), the embedding cache
(``checkpoints/emb``, one file per shard). ``checkpoints/`` is not committed.
"""

from __future__ import annotations

import io
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from trustlab.report.io import atomic_write_bytes, write_json
from trustlab.report.schema import Claim, write_summary
from trustlab.report.stats import bootstrap_diff_ci, excludes_zero

METHOD = "memorization-fingerprint"
PIXEL_BASELINES = ("pixel mean/std", "logistic regression")
FULL = {"n_train": None, "n_test": None, "families": ("noisy-copy", "kde-narrow", "kde-wide", "gmm", "pca-gauss",
                                                       "vae", "gan", "ddpm"),
        "seeds": (0, 1, 2), "batches": 2, "m": 500, "k": 10, "min_cell": 20, "budget": 1.0,
        "vit": {"layers": 6, "dim": 64, "heads": 4, "patch": 2, "epochs": 30},
        "dinov2": {"input_size": 112, "m": 300, "seed": 0}, "n_boot": 2000}
QUICK = {**FULL, "n_train": 300, "n_test": 150, "families": ("noisy-copy", "gmm", "vae", "ddpm"), "seeds": (0, 1),
         "m": 100, "k": 5, "min_cell": 10, "budget": 0.05, "vit": {**FULL["vit"], "layers": 3, "epochs": 2},
         "dinov2": None, "n_boot": 200}


def _save(obj: Any, path: Path) -> None:
    buf = io.BytesIO()
    torch.save(obj, buf)
    atomic_write_bytes(path, buf.getvalue())


def build_data(sizes: dict[str, Any]) -> dict[str, torch.Tensor]:
    """T and P as images in [-1, 1] ``(N, 1, 8, 8)`` with labels."""
    from trustlab.attribution.ddpm import load_images

    tr = load_images("digits", split="train", limit=sizes["n_train"])
    te = load_images("digits", split="test", limit=sizes["n_test"])
    return {"x_train": tr.x, "y_train": tr.y, "x_test": te.x}


def samples(data: dict[str, torch.Tensor], sizes: dict[str, Any], work: Path) -> dict[tuple[str, int], torch.Tensor]:
    """Every instance's ``batches * m`` images (one unit each)."""
    from trustlab.forensics.generators import generate
    from trustlab.report.run import progress

    out = {}
    units = [(f, s) for f in sizes["families"] for s in sizes["seeds"]]
    for fam, seed in progress(units, "generators", total=len(units)):
        path = work / "samples" / f"{fam}-s{seed}.pt"
        if not path.exists():
            t0 = time.perf_counter()
            imgs = generate(fam, data["x_train"], sizes["batches"] * sizes["m"], seed=seed,
                            work=work / f"ddpm-s{seed}", budget=sizes["budget"])
            _save({"images": imgs, "seconds": time.perf_counter() - t0}, path)
        out[(fam, seed)] = torch.load(path, weights_only=True)
    return out


def _encoders(data: dict[str, torch.Tensor], sizes: dict[str, Any], work: Path, seed: int) -> dict[str, Any]:
    from trustlab.forensics.embeddings import train_small_vit
    from trustlab.models.vision import VisionModel, load_vision_model

    x01 = (data["x_train"] + 1) / 2
    enc: dict[str, Any] = {}
    for name, train in (("vit-trained", True), ("vit-untrained", False)):
        info = train_small_vit(x01, data["y_train"], work / name, seed=seed, train=train, **sizes["vit"])
        enc[name] = (load_vision_model(info["path"], mean=(0.5,), std=(0.5,), device="cpu"), info)
    if sizes["dinov2"]:
        vm = load_vision_model("embedded:dinov2-s", device="cpu")
        vm = VisionModel(vm.module, kind="encoder", input_size=sizes["dinov2"]["input_size"], mean=vm.mean,
                         std=vm.std, name=f"embedded:dinov2-s@{sizes['dinov2']['input_size']}px", device="cpu")
        enc["dinov2-s"] = (vm, {"input_size": sizes["dinov2"]["input_size"]})
    return enc


def curves(enc: dict[str, Any], data: dict[str, torch.Tensor], gens: dict[tuple[str, int], Any],
           sizes: dict[str, Any], work: Path) -> dict[str, Any]:
    """Per encoder: the layers and one row per generated batch (family, seed, batch, curve, per-layer cells)."""
    from trustlab.forensics import LayerCT, block_layers, layer_embeddings

    out: dict[str, Any] = {}
    ct_kw = {"k": sizes["k"], "min_cell": sizes["min_cell"], "n_pca": 64, "distance": "cos", "seed": 0}
    for name, (vm, _) in enc.items():
        layers = block_layers(vm)

        def emb(x: torch.Tensor, what: str, vm: Any = vm, layers: list[str] = layers,
                name: str = name) -> dict[str, np.ndarray]:
            return layer_embeddings(vm, (x + 1) / 2, layers, cache_dir=work / "emb", description=f"{name}: {what}")

        lct = LayerCT(**ct_kw).fit(emb(data["x_train"], "T"), emb(data["x_test"], "P"))
        dino = name == "dinov2-s"
        rows = []
        for (fam, seed), g in gens.items():
            if dino and seed != sizes["dinov2"]["seed"]:
                continue
            m = sizes["dinov2"]["m"] if dino else sizes["m"]
            e = emb(g["images"][: m if dino else None], f"{fam}-s{seed}")
            for b in range(1 if dino else sizes["batches"]):
                res = lct.results({k: v[b * m: (b + 1) * m] for k, v in e.items()})
                rows.append({"family": fam, "seed": seed, "batch": b, "curve": [r.ct for r in res.values()],
                             "kept_cells": [int(r.kept.sum()) for r in res.values()],
                             "cells": {k: r.to_dict() for k, r in res.items()}})
        out[name] = {"layers": layers, "rows": rows, "m": sizes["dinov2"]["m"] if dino else sizes["m"]}
    return out


def _rho(curve: list[float]) -> float:
    from scipy.stats import spearmanr

    return float(spearmanr(np.arange(len(curve)), curve).statistic)


def analyse(cur: dict[str, Any], gens: dict[tuple[str, int], Any], sizes: dict[str, Any]) -> dict[str, Any]:
    from trustlab.forensics.generators import COPIERS, GAUSSIAN_LIKE
    from trustlab.forensics.identify import (
        classifier_identifier,
        curve_identifier,
        leave_one_instance_out,
        pixel_stats_identifier,
    )

    res: dict[str, Any] = {}
    for name, c in cur.items():
        rows = c["rows"]
        fams = sorted({r["family"] for r in rows}, key=list(sizes["families"]).index)
        res[name] = {"rho": {f: [_rho(r["curve"]) for r in rows if r["family"] == f] for f in fams},
                     "first_block": {f: [r["curve"][0] for r in rows if r["family"] == f] for f in fams},
                     "mean_curve": {f: np.mean([r["curve"] for r in rows if r["family"] == f], 0).tolist()
                                    for f in fams}}
        if len(sizes["seeds"]) > 1 and name != "dinov2-s":
            items = [r["curve"] for r in rows]
            fam = [r["family"] for r in rows]
            inst = [f"{r['family']}-s{r['seed']}" for r in rows]
            res[name]["identification"] = {"curves": leave_one_instance_out(items, fam, inst, curve_identifier()),
                                           "single-layer": leave_one_instance_out(items, fam, inst,
                                                                                  curve_identifier(layer=-1))}
    m, rows = sizes["m"], cur["vit-trained"]["rows"]
    batches = [gens[(r["family"], r["seed"])]["images"][r["batch"] * m: (r["batch"] + 1) * m].numpy() for r in rows]
    fam = [r["family"] for r in rows]
    inst = [f"{r['family']}-s{r['seed']}" for r in rows]
    ident = res["vit-trained"]["identification"]
    ident["pixel mean/std"] = leave_one_instance_out(batches, fam, inst, pixel_stats_identifier())
    ident["logistic regression"] = leave_one_instance_out(batches, fam, inst, classifier_identifier(50))
    res["copiers"], res["gaussian_like"] = [f for f in COPIERS if f in fam], [f for f in GAUSSIAN_LIKE if f in fam]
    return res


def claims_from(res: dict[str, Any], setup: dict[str, Any], sizes: dict[str, Any]) -> list[Claim]:
    boot = {"n_boot": sizes["n_boot"]}
    vit, cop, gau = res["vit-trained"], res["copiers"], res["gaussian_like"]
    claims = []
    if cop and gau:
        c_vals = np.concatenate([vit["first_block"][f] for f in cop])
        g_vals = np.concatenate([vit["first_block"][f] for f in gau])
        per = {f: float(np.mean(vit["first_block"][f])) for f in cop + gau}
        ok = all(per[f] < -3 for f in cop) and all(per[f] >= -3 for f in gau)
        claims.append(Claim(METHOD, "Copier generators give strongly negative C_T in early ViT layers; "
                            "Gaussian-like generators do not", "mean C_T at the first block (trained ViT)",
                            float(c_vals.mean()), float(g_vals.mean()), "Gaussian-like families", ok, setup,
                            higher_is_better=False, n=len(c_vals) + len(g_vals),
                            ci=bootstrap_diff_ci(c_vals, g_vals, paired=False, **boot), valid_rate=None,
                            note="pass: each copier family < -3 and each Gaussian-like family >= -3; per family: "
                                 + ", ".join(f"{f} {v:.2f}" for f, v in per.items())))
    for enc, label in (("vit-trained", "trained ViT"), ("dinov2-s", "DINOv2-S")):
        if enc not in res or not cop:
            continue
        rhos = np.concatenate([res[enc]["rho"][f] for f in cop])
        others = {f: float(np.mean(v)) for f, v in res[enc]["rho"].items() if f not in cop}
        claims.append(Claim(METHOD, "The deeper the ViT layer, the less memorization C_T measures (copiers)",
                            f"mean Spearman(block, C_T) over copier batches ({label})", float(rhos.mean()), 0.0,
                            "no depth trend", bool(rhos.mean() > 0.5), setup, n=len(rhos),
                            ci=bootstrap_diff_ci(rhos, np.zeros_like(rhos), **boot), valid_rate=None,
                            note="pass: mean rho > 0.5; other families' mean rho: "
                                 + ", ".join(f"{f} {v:.2f}" for f, v in others.items())
                                 + ("; one instance per family (n = copier curves)" if enc == "dinov2-s" else "")))
    ident = vit.get("identification")
    if ident:
        curve = ident["curves"]
        base = {k: v for k, v in ident.items() if k != "curves"}
        best = max(PIXEL_BASELINES, key=lambda k: base[k]["accuracy"])
        accs = ", ".join(f"{k} {v['accuracy']:.2f}" for k, v in base.items())
        for bname in (best, "single-layer"):
            b = base[bname]
            claims.append(Claim(METHOD, "Layer-wise C_T curves identify the generator family better than the "
                                "pixel-statistics and classifier baselines" if bname == best else
                                "Layer-wise C_T curves identify the generator family better than C_T at a single "
                                "(last) layer", "leave-one-instance-out family accuracy (trained ViT)",
                                curve["accuracy"], b["accuracy"],
                                f"{bname} (the better of {' and '.join(PIXEL_BASELINES)})" if bname == best else bname,
                                curve["accuracy"] > b["accuracy"], setup, n=len(curve["correct"]),
                                ci=(ci := bootstrap_diff_ci(curve["correct"], b["correct"], **boot)), valid_rate=None,
                                note=f"pass: curves > {bname}; the interval {'excludes' if excludes_zero(ci) else 'includes'}"
                                     f" 0; chance {1 / len(set(curve['families'])):.2f}; baselines: {accs}"))
    return claims


def _plots(out: Path, cur: dict[str, Any], res: dict[str, Any], gens: dict[tuple[str, int], Any],
           sizes: dict[str, Any]) -> None:
    from trustlab.report.run import plt

    pyplot = plt()
    fams = list(sizes["families"])
    colours = {f: pyplot.cm.tab10(i) for i, f in enumerate(fams)}
    fig, axes = pyplot.subplots(1, len(cur), figsize=(5 * len(cur), 3.8), squeeze=False)
    for ax, (name, c) in zip(axes[0], cur.items()):
        for r in c["rows"]:
            ax.plot(np.arange(1, len(r["curve"]) + 1), r["curve"], color=colours[r["family"]], alpha=0.35, lw=0.8)
        for f, mc in res[name]["mean_curve"].items():
            ax.plot(np.arange(1, len(mc) + 1), mc, color=colours[f], lw=2, label=f)
        ax.axhline(0, color="gray", ls=":")
        ax.set(xlabel="block", ylabel="C_T", title=f"{name} (m={c['m']})")
    axes[0, 0].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out / "ct_by_layer.png", dpi=110)
    pyplot.close(fig)

    ident = res["vit-trained"].get("identification", {})
    if ident:
        fig, axes = pyplot.subplots(1, len(ident), figsize=(4.2 * len(ident), 4.2), squeeze=False)
        for ax, (name, r) in zip(axes[0], ident.items()):
            mat = np.array([[r["confusion"][t].get(p, 0) for p in fams] for t in fams])
            ax.imshow(mat, cmap="Blues")
            for i, j in zip(*np.nonzero(mat)):
                ax.text(j, i, str(mat[i, j]), ha="center", va="center", fontsize=7)
            ax.set_xticks(range(len(fams)), fams, rotation=60, fontsize=7)
            ax.set_yticks(range(len(fams)), fams, fontsize=7)
            ax.set(title=f"{name}: acc {r['accuracy']:.2f}", xlabel="predicted", ylabel="true")
        fig.tight_layout()
        fig.savefig(out / "identification_confusion.png", dpi=110)
        pyplot.close(fig)

    fig, axes = pyplot.subplots(len(fams), 12, figsize=(9, 0.8 * len(fams)), squeeze=False)
    for r, f in enumerate(fams):
        imgs = gens[(f, sizes["seeds"][0])]["images"]
        for c in range(12):
            axes[r, c].imshow(imgs[c, 0].numpy(), cmap="gray", vmin=-1, vmax=1)
            axes[r, c].axis("off")
        axes[r, 0].set_title(f, fontsize=7, loc="left")
    fig.savefig(out / "samples.png", dpi=110, bbox_inches="tight")
    pyplot.close(fig)


def run(out: Path, *, quick: bool = False, seed: int = 0) -> list[Claim]:
    """Run the reproduction into ``out`` (resumes finished units); returns the claims."""
    from trustlab.forensics.generators import generator_info

    torch.manual_seed(seed)
    sizes = QUICK if quick else FULL
    out = Path(out)
    work = out / "checkpoints"
    data = build_data(sizes)
    gens = samples(data, sizes, work)
    enc = _encoders(data, sizes, work, seed)
    t0 = time.perf_counter()
    cur = curves(enc, data, gens, sizes, work)
    ct_seconds = time.perf_counter() - t0
    res = analyse(cur, gens, sizes)
    vit_info = enc["vit-trained"][1]
    setup = {"model": f"ViT (transformers, patch {sizes['vit']['patch']}, {sizes['vit']['layers']} blocks, width "
                      f"{sizes['vit']['dim']}) trained on T, train acc {vit_info['accuracy']:.3f}"
                      + ("; DINOv2-S at 112 px" if sizes["dinov2"] else ""),
             "quick": quick, "data": f"scikit-learn digits 8x8: T = {len(data['x_train'])}, P = {len(data['x_test'])}",
             "generators": {f: generator_info()[f] for f in sizes["families"]}, "seeds": list(sizes["seeds"]),
             "m": sizes["m"], "batches_per_instance": sizes["batches"], "k": sizes["k"], "min_cell": sizes["min_cell"],
             "distance": "cos (1 - |cos|)", "n_pca": 64, "a": 0.5, "single_layer": "last block", "seed": seed}
    claims = claims_from(res, setup, sizes)
    details = {"results": res, "curves": {k: {"layers": v["layers"], "m": v["m"],
                                              "rows": [{k2: r[k2] for k2 in ("family", "seed", "batch", "curve",
                                                                              "kept_cells")} for r in v["rows"]]}
                                         for k, v in cur.items()},
               "encoders": {k: v[1] for k, v in enc.items()}, "sizes": sizes, "setup": setup,
               "timing_s": {"generators": {f"{f}-s{s}": float(g["seconds"]) for (f, s), g in gens.items()},
                            "embeddings_and_ct": ct_seconds}}
    write_json(out / "details.json", details)
    _plots(out, cur, res, gens, sizes)
    write_summary(out, claims)
    return claims
