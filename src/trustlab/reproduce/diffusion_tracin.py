"""Diffusion-TracIn vs Diffusion-ReTrac reproduction (spec ``diffusion-tracin-retrac.md`` section 6, with the
issue's ``diffusers.UNet2DModel`` in place of the spec's MLP).

Data: scikit-learn digits 8x8 in [-1, 1] (:func:`trustlab.attribution.ddpm.load_images`, fixed split). The
training set is 1,000 digits plus 30 injected outliers (30 other training-split digits, colour-inverted:
``x -> -x``), indices 1000-1029. Queries: 40 held-out digits and 10 held-out digits inverted like the
outliers (50). Model: UNet2DModel (widths 16, 32, one ResNet block per resolution, GroupNorm 8, no
attention; 160k parameters), DDPMScheduler cosine (``squaredcos_cap_v2``), T = 1000, L1 loss on the noise,
Adam 1e-3, batch 128, 150 epochs, K = 5 checkpoints (every 30 epochs), timesteps and noise seeds logged.
Attribution: full-parameter gradients, exact (no projection), n_avg = 50 test timesteps, J = 8 noise draws
(the spec's numbers), train noise replayed from the log. A second pair of attributors with a 1,024-dim
Gaussian projection gives the projection's correlation to the exact scores.

Checks and pass rules (fixed before the run; thresholds from the spec, decisions marked "decision"):

1. Timestep-norm effect: for 16 training digits, the per-sample gradient norm (one noise draw, mean of 4)
   at 20 timesteps 1..999 at the last checkpoint; the ratio max/min over timesteps of the mean norm is
   >= 10. Interval: bootstrap over the 16 digits of (ratio - 1).
2. Generally influential (GI) = training samples in the top-10 proponents of >= 20% of the queries.
   Reproduced if TracIn has at least one GI sample (decision: else there is nothing to reduce) and
   ReTrac's count <= 0.5 x TracIn's. Interval: bootstrap over queries of the count difference.
3. Outlier queries: mean fraction of the top-10 proponents that are injected outliers, ReTrac >= TracIn.
   Interval: paired bootstrap over the 10 outlier queries.
4. Norm dependence: Spearman over training samples between the total influence (decision: the signed sum
   of its scores over all 50 queries) and its logged-timestep gradient norm (the c_k-weighted mean over
   checkpoints of the cached full-space norm): TracIn >= 0.5 and ReTrac <= 0.2 (decision: the literal
   rule, signed rho). Interval: bootstrap over training samples of rho_ReTrac - rho_TracIn.
5. Nearest-neighbour sanity (decision): the mean fraction of a query's top-10 proponents that share its
   digit class (outliers carry their source digit's class), ReTrac >= TracIn, over all 50 queries; the
   top-1 class agreement and the overlap with the 10 pixel-space nearest training images are reported.

Units (each written when it finishes, so a rerun resumes): the DDPM run (``checkpoints/ddpm``, itself
resumable per epoch), the train features (``checkpoints/features``, per checkpoint and shard), the score
matrices (``checkpoints/scores.pt``; the feature caches, ~3 GB, are deleted once it exists) and the norm
profile (``checkpoints/norms.pt``). ``checkpoints/`` is not committed.
"""

from __future__ import annotations

import math
import shutil
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from trustlab.report.io import atomic_write_bytes, write_json
from trustlab.report.schema import Claim, write_summary
from trustlab.report.stats import bootstrap_diff_ci

METHOD = "diffusion-tracin"
FULL = {"n_normal": 1000, "n_outliers": 30, "q_normal": 40, "q_outlier": 10, "epochs": 150, "checkpoints": 5,
        "batch_size": 128, "lr": 1e-3, "num_timesteps": 1000, "n_avg": 50, "n_noise": 8, "proj_dim": 1024,
        "top_k": 10, "gi_share": 0.2, "norm_samples": 16, "norm_timesteps": 20, "norm_noise": 4,
        "n_boot": 2000}
QUICK = {**FULL, "n_normal": 120, "n_outliers": 8, "q_normal": 6, "q_outlier": 3, "epochs": 3, "checkpoints": 3,
         "n_avg": 6, "n_noise": 2, "proj_dim": 128, "norm_samples": 3, "norm_timesteps": 6, "norm_noise": 2,
         "n_boot": 200}
ARMS = ("tracin", "retrac")


def build_data(sizes: dict[str, Any]) -> dict[str, torch.Tensor]:
    """Training images with injected inverted outliers (at the end) and the queries, with digit classes."""
    from trustlab.attribution.ddpm import load_images

    train, test = load_images("digits", split="train"), load_images("digits", split="test")
    n, m = sizes["n_normal"], sizes["n_outliers"]
    x_train = torch.cat([train.x[:n], -train.x[n: n + m]])
    y_train = torch.cat([train.y[:n], train.y[n: n + m]])
    qn, qo = sizes["q_normal"], sizes["q_outlier"]
    x_query = torch.cat([test.x[:qn], -test.x[qn: qn + qo]])
    y_query = test.y[: qn + qo]
    return {"x_train": x_train, "y_train": y_train, "outlier": torch.arange(n, n + m), "x_query": x_query,
            "y_query": y_query, "query_outlier": torch.arange(qn + qo) >= qn}


def _save(obj: Any, path: Path) -> None:
    import io

    buf = io.BytesIO()
    torch.save(obj, buf)
    atomic_write_bytes(path, buf.getvalue())


def _attribute(task: Any, data: dict[str, torch.Tensor], sizes: dict[str, Any], work: Path, seed: int) -> dict:
    """The unit that computes every score matrix (exact and projected, TracIn and ReTrac)."""
    from trustlab.attribution import DiffusionTracIn, RandomProjector

    timing: dict[str, float] = {}
    common = {"n_avg": sizes["n_avg"], "n_noise": sizes["n_noise"], "seed": seed, "batch_size": 64}
    exact = {arm: DiffusionTracIn(task, retrac=arm == "retrac", cache_dir=work / "features" / "exact", **common)
             for arm in ARMS}
    t0 = time.perf_counter()
    for a in exact.values():
        a.cache(data["x_train"])  # the second finds the first's shards
    timing["train_features_exact_s"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    feats = exact["tracin"].test_features(data["x_query"])
    timing["test_features_s"] = time.perf_counter() - t0
    scores = {arm: exact[arm].attribute(feats) for arm in ARMS}
    proj = RandomProjector(exact["tracin"].n_params, sizes["proj_dim"], seed=seed)
    projected = {arm: DiffusionTracIn(task, retrac=arm == "retrac", projector=proj,
                                      cache_dir=work / "features" / "projected", **common) for arm in ARMS}
    t0 = time.perf_counter()
    for a in projected.values():
        a.cache(data["x_train"])
    timing["train_features_projected_s"] = time.perf_counter() - t0
    for arm in ARMS:
        scores[f"{arm}_projected"] = projected[arm].attribute(feats)  # exact test features, projected there
    return {"scores": scores, "train_norms": exact["tracin"].train_norms(), "query_norms": feats.norms,
            "timesteps": feats.timesteps, "weights": torch.tensor([c.weight for c in task.checkpoints]),
            "n_params": exact["tracin"].n_params, "timing": timing}


def _norm_profile(task: Any, x: torch.Tensor, sizes: dict[str, Any], seed: int) -> dict[str, torch.Tensor]:
    """Per-sample gradient norms ``(K, n, S)`` at ``norm_timesteps`` timesteps (one draw, mean of ``norm_noise``)."""
    from trustlab.attribution import DiffusionTracIn

    attr = DiffusionTracIn(task, n_avg=2, n_noise=1, seed=seed)
    steps = torch.linspace(1, task.num_timesteps - 1, sizes["norm_timesteps"]).round().long()
    norms = torch.stack([attr.grad_norms_by_timestep(x, steps, n_noise=sizes["norm_noise"], checkpoint=k)
                         for k in range(len(task.checkpoints))])  # (K, n, S)
    return {"timesteps": steps, "norms": norms}


def top_k(scores: torch.Tensor, k: int) -> np.ndarray:
    """``(n_query, k)`` indices of the most positive scores (the top proponents) of each query."""
    return scores.topk(k, dim=1).indices.numpy()


def gi_count(tops: np.ndarray, n_train: int, share: float) -> int:
    """How many training samples are generally influential (rows of ``tops``: each query's top proponents)."""
    from trustlab.attribution.diffusion_tracin import generally_influential

    return len(generally_influential(tops, n_train, share))


def _spearman(a: np.ndarray) -> float:
    from scipy.stats import spearmanr

    return float(spearmanr(a[:, 0], a[:, 1]).statistic)


def analyse(units: dict[str, Any], data: dict[str, torch.Tensor], sizes: dict[str, Any]) -> dict[str, Any]:
    """Every number behind the claims, from the saved units."""
    from scipy.stats import pearsonr, spearmanr

    k, n_train = sizes["top_k"], len(data["x_train"])
    scores = units["scores"]
    tops = {arm: top_k(scores[arm], k) for arm in ARMS}
    out: dict[str, Any] = {"n_train": n_train, "n_query": len(data["x_query"])}
    gi = {arm: gi_count(tops[arm], n_train, sizes["gi_share"]) for arm in ARMS}
    both = np.concatenate([tops["retrac"], tops["tracin"]])
    nq = len(tops["tracin"])
    boot = {"n_boot": sizes["n_boot"]}
    out["gi"] = {**gi, "ci": bootstrap_diff_ci(np.arange(nq), np.arange(nq) + nq, **boot,
                                               stat=lambda v: gi_count(both[v.astype(int)], n_train, sizes["gi_share"]))}
    out["proponent_counts"] = {arm: np.bincount(tops[arm].reshape(-1), minlength=n_train).tolist() for arm in ARMS}
    is_out = np.isin(np.arange(n_train), data["outlier"].numpy())
    oq = data["query_outlier"].numpy()
    prec = {arm: is_out[tops[arm][oq]].mean(1) for arm in ARMS}
    out["outlier_precision"] = {arm: float(prec[arm].mean()) for arm in ARMS}
    out["outlier_precision"]["ci"] = bootstrap_diff_ci(prec["retrac"], prec["tracin"], **boot)
    out["outlier_precision"]["per_query"] = {arm: prec[arm].tolist() for arm in ARMS}
    w = units["weights"][:, None]
    norm = ((w * units["train_norms"]).sum(0) / w.sum()).numpy()
    total = {arm: scores[arm].sum(0).numpy() for arm in ARMS}
    pairs = {arm: np.stack([total[arm], norm], 1) for arm in ARMS}
    out["spearman"] = {arm: _spearman(pairs[arm]) for arm in ARMS}
    out["spearman"]["abs_total_diagnostic"] = {arm: float(spearmanr(np.abs(scores[arm].numpy()).sum(0), norm).statistic)
                                               for arm in ARMS}
    out["spearman"]["ci"] = bootstrap_diff_ci(pairs["retrac"], pairs["tracin"], stat=_spearman, **boot)
    y_tr, y_q = data["y_train"].numpy(), data["y_query"].numpy()
    agree = {arm: (y_tr[tops[arm]] == y_q[:, None]).mean(1) for arm in ARMS}
    pixel = torch.cdist(data["x_query"].reshape(nq, -1), data["x_train"].reshape(n_train, -1))
    nn_idx = pixel.topk(k, dim=1, largest=False).indices.numpy()
    out["nearest_neighbour"] = {
        "class_agreement_top10": {arm: float(agree[arm].mean()) for arm in ARMS},
        "ci": bootstrap_diff_ci(agree["retrac"], agree["tracin"], **boot),
        "class_agreement_top1": {arm: float((y_tr[tops[arm][:, 0]] == y_q).mean()) for arm in ARMS},
        "pixel_nn_overlap_top10": {arm: float(np.mean([len(set(t) & set(n)) / k for t, n in zip(tops[arm], nn_idx)]))
                                   for arm in ARMS},
        "pixel_nn_class_agreement_top10": float((y_tr[nn_idx] == y_q[:, None]).mean())}
    proj = {}
    for arm in ARMS:
        ex, pr = scores[arm].numpy(), scores[f"{arm}_projected"].numpy()
        proj[arm] = {"pearson_mean_over_queries": float(np.mean([pearsonr(a, b).statistic for a, b in zip(ex, pr)])),
                     "spearman_mean_over_queries": float(np.mean([spearmanr(a, b).statistic for a, b in zip(ex, pr)])),
                     "pearson_all": float(pearsonr(ex.reshape(-1), pr.reshape(-1)).statistic),
                     "top10_overlap": float(np.mean([len(set(a) & set(b)) / k for a, b in
                                                     zip(top_k(scores[arm], k), top_k(scores[f"{arm}_projected"], k))]))}
    out["projection"] = {"dim": sizes["proj_dim"], "n_params": units["n_params"], **proj}
    return out


def _norm_claim(profile: dict[str, torch.Tensor], setup: dict[str, Any], n_boot: int) -> tuple[Claim, dict[str, Any]]:
    rows = profile["norms"][-1].numpy()  # (n, S) at the last checkpoint

    def ratio(a: np.ndarray) -> float:
        m = a.mean(0)
        return float(m.max() / m.min())

    r = ratio(rows)
    ci = bootstrap_diff_ci(rows, np.ones((len(rows), 1)), stat=ratio, n_boot=n_boot)
    detail = {"ratio": r, "mean_norm_by_timestep": rows.mean(0).tolist(), "timesteps": profile["timesteps"].tolist(),
              "per_checkpoint_ratio": [ratio(p) for p in profile["norms"].numpy()]}
    return Claim(METHOD, "Per-sample loss-gradient norms depend strongly on the timestep (the source of the bias)",
                 "max/min over timesteps of the mean gradient norm (last checkpoint)", r, 1.0,
                 "no timestep effect (ratio 1)", r >= 10, setup, n=len(rows), ci=ci, valid_rate=None,
                 note=f"pass: ratio >= 10; per checkpoint: {', '.join(f'{v:.1f}' for v in detail['per_checkpoint_ratio'])}"
                 ), detail


def claims_from(res: dict[str, Any], setup: dict[str, Any], sizes: dict[str, Any]) -> list[Claim]:
    gi, op, sp, nn = res["gi"], res["outlier_precision"], res["spearman"], res["nearest_neighbour"]
    nq, nt = res["n_query"], res["n_train"]
    n_out = len(op["per_query"]["tracin"])
    gi_ok = gi["tracin"] >= 1 and gi["retrac"] <= 0.5 * gi["tracin"]
    return [
        Claim(METHOD, "Diffusion-ReTrac reduces the generally influential training samples to about 1/3 of "
              "Diffusion-TracIn's", f"training samples in the top-{sizes['top_k']} proponents of >= "
              f"{sizes['gi_share']:.0%} of queries", gi["retrac"], gi["tracin"], "Diffusion-TracIn", gi_ok, setup,
              higher_is_better=False, n=nq, ci=gi["ci"], valid_rate=None,
              note="pass: TracIn has >= 1 such sample and ReTrac's count <= 0.5x TracIn's; interval: bootstrap over "
                   "queries of the count difference"),
        Claim(METHOD, "ReTrac retrieves the injected outlier sub-population for outlier queries at least as well "
              "as TracIn", f"mean share of injected outliers in the top-{sizes['top_k']} proponents of outlier "
              "queries", op["retrac"], op["tracin"], "Diffusion-TracIn", op["retrac"] >= op["tracin"], setup, n=n_out,
              ci=op["ci"], valid_rate=None, note="pass: ReTrac >= TracIn; paired bootstrap over the outlier queries"),
        Claim(METHOD, "TracIn's total influence follows the training gradient norm; ReTrac's does not",
              "Spearman rho(total influence over queries, logged-timestep gradient norm) over training samples",
              sp["retrac"], sp["tracin"], "Diffusion-TracIn", sp["tracin"] >= 0.5 and sp["retrac"] <= 0.2, setup,
              higher_is_better=False, n=nt, ci=sp["ci"], valid_rate=None,
              note=f"pass: TracIn rho >= 0.5 (got {sp['tracin']:.2f}) and ReTrac rho <= 0.2 (got {sp['retrac']:.2f}); "
                   "bootstrap over training samples"),
        Claim(METHOD, "ReTrac's proponents are specific to the query (nearest-neighbour sanity check)",
              f"mean share of the top-{sizes['top_k']} proponents with the query's digit class",
              nn["class_agreement_top10"]["retrac"], nn["class_agreement_top10"]["tracin"], "Diffusion-TracIn",
              nn["class_agreement_top10"]["retrac"] >= nn["class_agreement_top10"]["tracin"], setup, n=nq,
              ci=nn["ci"], valid_rate=None,
              note=f"pass: ReTrac >= TracIn; pixel-space 10-NN share the class {nn['pixel_nn_class_agreement_top10']:.2f}"
                   f"; top-10 overlap with the pixel 10-NN: ReTrac {nn['pixel_nn_overlap_top10']['retrac']:.2f}, "
                   f"TracIn {nn['pixel_nn_overlap_top10']['tracin']:.2f}"),
    ]


def _plots(out: Path, units: dict[str, Any], profile: dict[str, Any], data: dict[str, torch.Tensor],
           res: dict[str, Any], task: Any, sizes: dict[str, Any]) -> None:
    from trustlab.attribution.ddpm import sample_images
    from trustlab.report.run import plt

    pyplot = plt()
    fig, axes = pyplot.subplots(1, 2, figsize=(11, 3.8))
    steps = profile["timesteps"].numpy()
    for k, rows in enumerate(profile["norms"].numpy()):
        axes[0].plot(steps, rows.mean(0), marker=".", label=f"checkpoint {k + 1}")
    axes[0].set(xlabel="timestep t", ylabel="|grad l| (mean over digits)", yscale="log",
                title="gradient norm by timestep")
    axes[0].legend(fontsize=7)
    log = task.timestep_log.timesteps[task.checkpoints[-1].epoch - 1].numpy()
    is_out = np.isin(np.arange(len(log)), data["outlier"].numpy())
    norms = units["train_norms"][-1].numpy()
    axes[1].scatter(log[~is_out], norms[~is_out], s=4, alpha=0.5, label="digits")
    axes[1].scatter(log[is_out], norms[is_out], s=12, color="tab:red", label="injected outliers")
    axes[1].set(xlabel="logged timestep of the last epoch", ylabel="train gradient norm (last checkpoint)",
                yscale="log", title="train gradients at their logged timestep")
    axes[1].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out / "grad_norm_by_timestep.png", dpi=110)
    pyplot.close(fig)

    fig, ax = pyplot.subplots(figsize=(6, 3.8))
    for arm in ARMS:
        counts = np.sort(res["proponent_counts"][arm])[::-1][:60]
        ax.plot(np.arange(1, len(counts) + 1), counts, marker=".", label=f"{arm} ({res['gi'][arm]} GI)")
    ax.axhline(math.ceil(sizes["gi_share"] * res["n_query"]), color="gray", ls=":", label="GI threshold")
    ax.set(xlabel="training sample (rank)", ylabel=f"queries with it in their top-{sizes['top_k']}",
           title="how often a training sample is a top proponent")
    ax.legend()
    fig.tight_layout()
    fig.savefig(out / "proponent_counts.png", dpi=110)
    pyplot.close(fig)

    nq = len(data["x_query"])
    show = [0, 1, 2, 3, nq - 2, nq - 1]
    fig, axes = pyplot.subplots(len(show), 11, figsize=(11, 1.1 * len(show)))
    for r, q in enumerate(show):
        row = [data["x_query"][q]] + [data["x_train"][i] for arm in ARMS for i in top_k(units["scores"][arm], 5)[q]]
        for c, img in enumerate(row):
            axes[r, c].imshow(img[0].numpy(), cmap="gray", vmin=-1, vmax=1)
            axes[r, c].axis("off")
    axes[0, 0].set_title("query", fontsize=8)
    axes[0, 3].set_title("TracIn top-5", fontsize=8)
    axes[0, 8].set_title("ReTrac top-5", fontsize=8)
    fig.savefig(out / "proponents.png", dpi=110, bbox_inches="tight")
    pyplot.close(fig)

    images = sample_images(task, 32, steps=100)
    fig, axes = pyplot.subplots(2, 16, figsize=(11, 1.6))
    for ax, img in zip(axes.reshape(-1), images):
        ax.imshow(img[0].numpy(), cmap="gray", vmin=-1, vmax=1)
        ax.axis("off")
    fig.suptitle("samples of the trained DDPM (last checkpoint, 100 ancestral steps)", fontsize=9)
    fig.savefig(out / "ddpm_samples.png", dpi=110, bbox_inches="tight")
    pyplot.close(fig)


def run(out: Path, *, quick: bool = False, seed: int = 0) -> list[Claim]:
    """Run the reproduction into ``out`` (resumes finished units); returns the claims."""
    from trustlab.attribution.ddpm import DDPMConfig, load_run, train_ddpm

    sizes = QUICK if quick else FULL
    out = Path(out)
    work = out / "checkpoints"
    data = build_data(sizes)
    cfg = DDPMConfig(epochs=sizes["epochs"], checkpoints=sizes["checkpoints"], batch_size=sizes["batch_size"],
                     lr=sizes["lr"], num_timesteps=sizes["num_timesteps"], seed=seed)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    trained = train_ddpm(data["x_train"], work / "ddpm", cfg, device=device)
    task, _ = load_run(work / "ddpm", device=device)
    if not (work / "scores.pt").exists():
        _save(_attribute(task, data, sizes, work, seed), work / "scores.pt")
    shutil.rmtree(work / "features", ignore_errors=True)  # ~3 GB; the scores are what later steps read
    units = torch.load(work / "scores.pt", weights_only=True)
    if not (work / "norms.pt").exists():
        _save(_norm_profile(task, data["x_train"][: sizes["norm_samples"]], sizes, seed), work / "norms.pt")
    profile = torch.load(work / "norms.pt", weights_only=True)
    res = analyse(units, data, sizes)
    setup = {"model": f"diffusers UNet2DModel widths {cfg.block_out_channels}, {units['n_params']} parameters, "
                      f"DDPMScheduler {cfg.beta_schedule} T={cfg.num_timesteps}, L1 loss",
             "quick": quick, "data": f"scikit-learn digits 8x8: {sizes['n_normal']} + {sizes['n_outliers']} "
                                     "colour-inverted outliers; queries: "
                                     f"{sizes['q_normal']} held-out + {sizes['q_outlier']} inverted held-out",
             "epochs": cfg.epochs, "checkpoint_epochs": cfg.checkpoint_epochs(), "batch_size": cfg.batch_size,
             "lr": cfg.lr, "n_avg": sizes["n_avg"], "n_noise": sizes["n_noise"], "top_k": sizes["top_k"],
             "train_noise": "replayed from the log", "seed": seed, "device": device}
    norm_claim, norm_detail = _norm_claim(profile, setup, sizes["n_boot"])
    claims = [norm_claim, *claims_from(res, setup, sizes)]
    details = {**res, "timestep_norms": norm_detail, "final_train_loss": trained["history"][-1]["loss"],
               "loss_history": trained["history"], "timing_s": {"ddpm_training": sum(h["seconds"] for h in trained["history"]),
                                                                **units["timing"]}, "sizes": sizes, "setup": setup,
               "outlier_indices": data["outlier"].tolist(), "checkpoint_weights": units["weights"].tolist()}
    write_json(out / "details.json", details)
    _plots(out, units, profile, data, res, task, sizes)
    write_summary(out, claims)
    return claims
