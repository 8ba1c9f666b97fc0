"""mix-cd, vision part (spec ``mix-cd.md`` section 6): an MLP forgets upright images while it learns rotated ones.

Setup (CPU, one thread, minutes):

* Data: Fashion-MNIST from the Debian package ``dataset-fashion-mnist`` (found with ``dpkg -L``; a fixed
  random 20k subset of the training file is the prior data ``D_p``, a disjoint 10k subset rotated by 90
  degrees is the new-task training data, and the 10k test images, upright and rotated, are the two test
  sets), else scikit-learn's 8x8 digits (900 prior, 397 new, 500 test). ``setup["data"]`` says which.
* Prior task P: upright images, MLP 784-256-10 (64-256-10 for digits), 3 epochs of AdamW (lr 1e-3, batch
  64), one prior model per seed. Prior statistics on ``D_p`` from it: loss ``l0`` and correctness ``k0``.
* New task N: the same 10 classes, images rotated 90 degrees. Fine-tuning: 500 AdamW steps (lr 1e-3) of
  64 new samples plus ``r`` rehearsed prior samples, the mean cross-entropy over all ``64 + r``; the
  new-data order is the same for every arm of a seed (paired arms).
* Arms, all rehearsing only candidates (``k0 = 1``, the only samples that can become damaged):
  ``none`` (no rehearsal); ``random`` (uniform over the candidates each step); ``mixcd``
  (:class:`~trustlab.data.mixcd.CollateralDamageSampler`, defaults ``epsilon = 0.1``, ``gamma = 0.1``,
  on K = 10 quantile bins of ``l0`` over the candidates, :func:`~trustlab.data.mixcd.assign_bins`; a
  rehearsed sample's correctness is the argmax of the training forward pass that also trains on it, so
  the sampler costs no forward pass); ``high-loss`` (the candidates in decreasing ``l0``, ``r`` a step,
  back to the top when the list is used up); ``oracle`` (evaluates all of ``D_p`` every 50 steps and
  rehearses uniformly from the candidates it finds damaged, uniformly from all candidates before its
  first evaluation or when none is damaged; its extra forward passes are counted).
* Estimator check: at the oracle's evaluation steps (50, 100, ..., 450) the ``mixcd`` run also evaluates
  all of ``D_p``, for measurement only (the sampler never sees it, and these passes are reported apart
  from the method's cost), and records per bin the true CD rate (share of the bin's candidates wrong now)
  beside the sampler's ``alpha_k``; the Spearman correlation over the 10 bins is taken at each step.

Pass rule, fixed in the spec before the run:

1. directional: in at least 2 of 3 seeds, at every ``r``, mix-cd's P test accuracy after fine-tuning is
   above random mixing's and its N test accuracy is at most 0.5 points below (or above: dominance);
2. the mean Spearman correlation of ``alpha_k`` with the true CD rate is at least 0.7.

Claim 1 reports retained P accuracy at ``r = 16`` (mix-cd vs random, paired bootstrap interval over
seeds x test images) and is ``reproduced`` when rule 1 holds; claim 2 reports the mean Spearman and is
``reproduced`` when rule 2 holds; each note states the spec's joint verdict.

Each finished (arm, r, seed) unit is appended to ``vision/units.jsonl`` and skipped on a rerun with the same
plan (sizes and data); the prior model of a seed is trained only if one of its units is left.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from trustlab.bench.fashion_mnist import fashion_mnist_files, read_idx
from trustlab.data.mixcd import CollateralDamageSampler, assign_bins
from trustlab.errors import DataFileError, MissingExtraError
from trustlab.report import Claim, append_jsonl, config_hash, plt, read_jsonl, write_json
from trustlab.report import progress as report_progress
from trustlab.report.stats import bootstrap_diff_ci

METHOD = "mix-cd"
ARMS = ("none", "random", "mixcd", "high-loss", "oracle")
SPEARMAN_THRESHOLD = 0.7
N_TOLERANCE = 0.005  # "N accuracy within 0.5 points"
ROW_FORMAT = 1
FULL = {"n_prior": 20000, "n_new": 10000, "n_test": 10000, "hidden": 256, "prior_epochs": 3, "prior_lr": 1e-3,
        "steps": 500, "batch": 64, "lr": 1e-3, "eval_every": 50, "n_bins": 10, "epsilon": 0.1, "gamma": 0.1}
QUICK = {**FULL, "n_prior": 2000, "n_new": 1000, "n_test": 1000, "steps": 60, "eval_every": 20}
DIGITS = {"n_prior": 900, "n_new": 397, "n_test": 500}  # 1797 images in all
_ARM_CODE = {a: i for i, a in enumerate(ARMS)}


# --------------------------------------------------------------------------------------------------
# Data
# --------------------------------------------------------------------------------------------------


def rotate(x: torch.Tensor, side: int) -> torch.Tensor:
    """Flattened square images rotated by 90 degrees (counter-clockwise)."""
    return torch.rot90(x.reshape(-1, side, side), 1, dims=(1, 2)).reshape(len(x), side * side).contiguous()


def load_data(sizes: dict[str, Any], *, source: str = "auto") -> dict[str, Any]:
    """Prior (upright) and new (rotated) train and test sets; ``source`` is ``"auto"`` (Fashion-MNIST if its
    Debian package is installed, else digits), ``"fashion-mnist"`` or ``"digits"``.

    The subsets are fixed (seed 0) and do not depend on the run's seed."""
    files = fashion_mnist_files() if source in ("auto", "fashion-mnist") else None
    if source == "fashion-mnist" and files is None:
        raise DataFileError("the Debian package dataset-fashion-mnist is not installed "
                            "(apt-get install dataset-fashion-mnist)")
    rng = np.random.default_rng(0)
    if files is not None:
        xtr, ytr = read_idx(files["train_images"]), read_idx(files["train_labels"])
        xte, yte = read_idx(files["test_images"]), read_idx(files["test_labels"])
        if len(xtr) != len(ytr) or len(xte) != len(yte):
            raise DataFileError("Fashion-MNIST images and labels differ in count")
        side = xtr.shape[1]
        xtr = xtr.reshape(len(xtr), -1).astype(np.float32) / 255.0
        xte = xte.reshape(len(xte), -1).astype(np.float32) / 255.0
        perm = rng.permutation(len(xtr))
        p_idx, n_idx = perm[: sizes["n_prior"]], perm[sizes["n_prior"]: sizes["n_prior"] + sizes["n_new"]]
        t_idx = np.sort(rng.permutation(len(xte))[: sizes["n_test"]])
        name = (f"Fashion-MNIST (Debian dataset-fashion-mnist, {files['train_images'].parent}): {len(p_idx)} prior "
                f"and {len(n_idx)} disjoint new training images of the 60k, {len(t_idx)} of the 10k test images")
        x_p, y_p, x_n, y_n, x_t, y_t = xtr[p_idx], ytr[p_idx], xtr[n_idx], ytr[n_idx], xte[t_idx], yte[t_idx]
    else:
        try:
            from sklearn.datasets import load_digits
        except ImportError as exc:
            raise MissingExtraError("neither the Debian package dataset-fashion-mnist nor scikit-learn (for its "
                                    'digits) is installed; install one: pip install "trustlab[vision]"') from exc
        d = load_digits()
        x, y, side = (d.data / 16.0).astype(np.float32), d.target.astype(np.int64), 8
        perm = rng.permutation(len(y))
        a, b = DIGITS["n_prior"], DIGITS["n_prior"] + DIGITS["n_new"]
        t_idx = perm[b: b + DIGITS["n_test"]]
        x_p, y_p, x_n, y_n, x_t, y_t = x[perm[:a]], y[perm[:a]], x[perm[a:b]], y[perm[a:b]], x[t_idx], y[t_idx]
        name = (f"scikit-learn digits 8x8 (dataset-fashion-mnist not installed): {a} prior, {b - a} new training, "
                f"{len(t_idx)} test images")
    t = {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in
         {"x_p": x_p, "x_n": x_n, "x_t": x_t, "y_p": y_p, "y_n": y_n, "y_t": y_t}.items()}
    for k in ("y_p", "y_n", "y_t"):
        t[k] = t[k].long()
    return {"source": "fashion-mnist" if files is not None else "digits", "description": name, "side": side,
            "dim": side * side, "p_train": (t["x_p"], t["y_p"]), "n_train": (rotate(t["x_n"], side), t["y_n"]),
            "p_test": (t["x_t"], t["y_t"]), "n_test": (rotate(t["x_t"], side), t["y_t"])}


# --------------------------------------------------------------------------------------------------
# Models
# --------------------------------------------------------------------------------------------------


def mlp(dim: int, hidden: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(dim, hidden), nn.ReLU(), nn.Linear(hidden, 10))


@torch.no_grad()
def evaluate(model: nn.Module, x: torch.Tensor, y: torch.Tensor, chunk: int = 5000) -> tuple[np.ndarray, np.ndarray]:
    """Per sample: correct (bool) and cross-entropy."""
    hits, losses = [], []
    for i in range(0, len(y), chunk):
        logits = model(x[i:i + chunk])
        hits.append((logits.argmax(-1) == y[i:i + chunk]).numpy())
        losses.append(nn.functional.cross_entropy(logits, y[i:i + chunk], reduction="none").numpy())
    return np.concatenate(hits), np.concatenate(losses).astype(np.float64)


def train_prior(data: dict[str, Any], sizes: dict[str, Any], seed: int) -> dict[str, Any]:
    """The prior model of ``seed`` (upright images) and its statistics on ``D_p`` and the test sets."""
    torch.manual_seed(seed)
    model = mlp(data["dim"], sizes["hidden"])
    opt = torch.optim.AdamW(model.parameters(), lr=sizes["prior_lr"])
    x, y = data["p_train"]
    g = torch.Generator().manual_seed(seed)
    for _ in range(sizes["prior_epochs"]):
        for idx in torch.randperm(len(y), generator=g).split(sizes["batch"]):
            loss = nn.functional.cross_entropy(model(x[idx]), y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
    k0, l0 = evaluate(model, x, y)
    return {"state": {k: v.clone() for k, v in model.state_dict().items()}, "l0": l0, "k0": k0,
            "train_acc": float(k0.mean()), "p_acc": float(evaluate(model, *data["p_test"])[0].mean()),
            "n_acc": float(evaluate(model, *data["n_test"])[0].mean())}


# --------------------------------------------------------------------------------------------------
# One fine-tuning unit
# --------------------------------------------------------------------------------------------------


def candidate_bins(l0: np.ndarray, k0: np.ndarray, n_bins: int) -> np.ndarray:
    """Bin ids for :class:`CollateralDamageSampler`: quantile bins of ``l0`` over the candidates (``k0 = 1``),
    as the spec partitions them; prior-wrong samples get bin 0, which never rehearses them (not candidates)."""
    bins = np.zeros(len(l0), np.int64)
    cand = np.flatnonzero(k0)
    bins[cand] = assign_bins(l0[cand], n_bins=n_bins)
    return bins


def spearman(a: Sequence[float], b: Sequence[float]) -> float | None:
    """Spearman rank correlation (average ranks for ties); None when either side is constant."""
    ra, rb = _ranks(a), _ranks(b)
    if len(ra) < 2 or ra.std() == 0 or rb.std() == 0:
        return None
    return float(np.corrcoef(ra, rb)[0, 1])


def _ranks(values: Sequence[float]) -> np.ndarray:
    _, inverse, counts = np.unique(np.asarray(values, np.float64), return_inverse=True, return_counts=True)
    ends = np.cumsum(counts)
    return (ends - (counts - 1) / 2.0)[inverse]


def _new_batch(n_new: int, batch: int, step: int, seed: int) -> np.ndarray:
    """The new-data indices of ``step``: shuffled passes over the new data, the same for every arm of a seed."""
    pos = step * batch + np.arange(batch)
    cycle, offset = np.divmod(pos, n_new)
    out = np.empty(batch, np.int64)
    for c in np.unique(cycle):
        perm = np.random.default_rng([seed, 11, int(c)]).permutation(n_new)
        out[cycle == c] = perm[offset[cycle == c]]
    return out


def _bits(flags: np.ndarray) -> str:
    return "".join("1" if f else "0" for f in np.asarray(flags, bool))


def _unbits(text: str) -> np.ndarray:
    return np.frombuffer(text.encode(), np.uint8) == ord("1")


def finetune_unit(data: dict[str, Any], prior: dict[str, Any], arm: str, r: int, seed: int,
                  sizes: dict[str, Any]) -> dict[str, Any]:
    """Fine-tune the prior model of ``seed`` on the rotated task with rehearsal ``arm`` at budget ``r``."""
    t0 = time.perf_counter()
    torch.manual_seed(seed)
    model = mlp(data["dim"], sizes["hidden"])
    model.load_state_dict(prior["state"])
    opt = torch.optim.AdamW(model.parameters(), lr=sizes["lr"])
    x_p, y_p = data["p_train"]
    x_n, y_n = data["n_train"]
    l0, k0 = prior["l0"], prior["k0"]
    cand = np.flatnonzero(k0)
    bins = candidate_bins(l0, k0, sizes["n_bins"])
    n_bins = int(bins.max()) + 1
    bin_sizes = np.bincount(bins[cand], minlength=n_bins)
    sampler = (CollateralDamageSampler(l0, k0, bins, epsilon=sizes["epsilon"], gamma=sizes["gamma"], seed=seed)
               if arm == "mixcd" else None)
    by_loss = cand[np.argsort(-l0[cand], kind="stable")]
    rng = np.random.default_rng([seed, _ARM_CODE[arm], r, 13])
    steps, batch, every = sizes["steps"], sizes["batch"], sizes["eval_every"]
    pool = cand  # the oracle's current damaged set (all candidates before its first evaluation)
    extra = measure = 0
    trace: list[dict[str, Any]] = []
    rehearsed = np.zeros(len(y_p), np.int64)
    for step in range(steps):
        if step and step % every == 0 and arm in ("mixcd", "oracle"):
            model.eval()
            right, _ = evaluate(model, x_p, y_p)
            model.train()
            damaged = k0 & ~right
            true_rate = (np.bincount(bins[cand], weights=damaged[cand], minlength=n_bins)
                         / np.maximum(bin_sizes, 1))
            point = {"step": step, "true_cd_rate": true_rate.tolist(), "cd_share": float(damaged[cand].mean())}
            if arm == "oracle":
                extra += len(y_p)
                hurt = np.flatnonzero(damaged)
                pool = hurt if len(hurt) else cand
                point["damaged"] = int(len(hurt))
            else:
                measure += len(y_p)
                point |= {"alphas": sampler.alphas.tolist(), "counts": sampler.counts.tolist(),
                          "spearman": spearman(sampler.alphas, true_rate)}
            trace.append(point)
        new = _new_batch(len(y_n), batch, step, seed)
        if arm == "none":
            old = np.empty(0, np.int64)
        elif arm == "random":
            old = rng.choice(cand, size=r, replace=len(cand) < r)
        elif arm == "mixcd":
            old = sampler.sample(r, step)
        elif arm == "high-loss":
            old = by_loss[(step * r + np.arange(r)) % len(by_loss)]
        else:  # oracle
            old = rng.choice(pool, size=r, replace=len(pool) < r)
        rehearsed[old] += 1
        xb = torch.cat([x_n[new], x_p[old]])
        yb = torch.cat([y_n[new], y_p[old]])
        logits = model(xb)
        loss = nn.functional.cross_entropy(logits, yb)
        opt.zero_grad()
        loss.backward()
        opt.step()
        if sampler is not None:  # correctness from the forward pass that just trained on them
            sampler.observe(old, (logits[batch:].argmax(-1) == yb[batch:]).numpy())
    model.eval()
    p_hit, _ = evaluate(model, *data["p_test"])
    n_hit, _ = evaluate(model, *data["n_test"])
    right, _ = evaluate(model, x_p, y_p)
    damaged = k0 & ~right
    row = {"arm": arm, "r": r, "seed": seed, "p_acc": float(p_hit.mean()), "n_acc": float(n_hit.mean()),
           "p_acc_prior": prior["p_acc"], "n_acc_prior": prior["n_acc"], "prior_train_acc": prior["train_acc"],
           "p_retained": float(p_hit.mean()) / prior["p_acc"], "candidates": int(len(cand)),
           "forward": {"train_new": steps * batch, "train_rehearsed": steps * r, "sampler_extra": extra,
                       "total": steps * (batch + r) + extra, "measurement_only": measure},
           "final_cd_share": float(damaged[cand].mean()),
           "final_cd_rate": (np.bincount(bins[cand], weights=damaged[cand], minlength=n_bins)
                             / np.maximum(bin_sizes, 1)).tolist(),
           "bin_sizes": bin_sizes.tolist(), "distinct_rehearsed": int((rehearsed > 0).sum()), "trace": trace,
           "final_alphas": sampler.alphas.tolist() if sampler is not None else None,
           "final_counts": sampler.counts.tolist() if sampler is not None else None,
           "p_correct": _bits(p_hit), "n_correct": _bits(n_hit), "seconds": round(time.perf_counter() - t0, 2)}
    return row


# --------------------------------------------------------------------------------------------------
# The reproduction
# --------------------------------------------------------------------------------------------------


@contextmanager
def _threads(n: int) -> Iterator[None]:
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _key(arm: str, r: int, seed: int) -> str:
    return f"{arm}:r={r}:seed={seed}"


def run_vision(out: Path, *, quick: bool = False, seed: int = 0, budgets: Sequence[int] = (8, 16, 32),
               seeds: int = 3, progress: Callable[[int, int, str], None] | None = None,
               source: str = "auto") -> list[Claim]:
    """The section-6 reproduction into ``out / "vision"``; returns the two claims (retention, estimator).

    Args:
        out: the method's results folder; this part writes ``vision/units.jsonl`` (one row per finished
            (arm, r, seed), the resume checkpoint), ``vision/details.json``, ``vision/pareto.png`` and
            ``vision/estimator.png``.
        quick: a tiny run (2k prior images, 60 steps, one seed, one budget) for tests and ``--quick``.
        seed: the first seed; seeds ``seed .. seed + seeds - 1`` are run (each its own prior model).
        budgets: rehearsed samples per step ``r``.
        seeds: number of seeds (1 in quick runs).
        progress: ``progress(done, total, unit)`` after each unit; None shows a progress bar on a terminal.
        source: ``"auto"``, ``"fashion-mnist"`` or ``"digits"`` (see :func:`load_data`).
    """
    sizes = dict(QUICK if quick else FULL)
    budgets = [int(b) for b in budgets]
    if quick:
        budgets = [16 if 16 in budgets else budgets[0]]
        seeds = 1
    seed_list = [seed + i for i in range(seeds)]
    r_claim = 16 if 16 in budgets else budgets[len(budgets) // 2]
    folder = Path(out) / "vision"
    folder.mkdir(parents=True, exist_ok=True)
    t_start = time.perf_counter()
    data = load_data(sizes, source=source)
    plan = config_hash({"sizes": sizes, "data": data["description"], "format": ROW_FORMAT, "quick": quick})
    units_path = folder / "units.jsonl"
    rows: dict[str, dict[str, Any]] = {}
    if units_path.exists():
        for row in read_jsonl(units_path):
            if row.get("plan") == plan:
                rows[row["key"]] = row
    units = [(a, 0 if a == "none" else r, s) for s in seed_list for a in ARMS
             for r in ([0] if a == "none" else budgets)]
    units = list(dict.fromkeys(units))
    resumed = sum(_key(*u) in rows for u in units)
    todo = [u for u in units if _key(*u) not in rows]
    priors: dict[int, dict[str, Any]] = {}
    with _threads(1):
        items = report_progress(todo, "mix-cd vision units", total=len(todo)) if progress is None else todo
        for i, (arm, r, s) in enumerate(items):
            if s not in priors:
                priors = {s: train_prior(data, sizes, s)}  # one prior model in memory at a time
            row = finetune_unit(data, priors[s], arm, r, s, sizes)
            row = {"key": _key(arm, r, s), "plan": plan, **row}
            append_jsonl(units_path, row)
            rows[row["key"]] = row
            if progress is not None:
                progress(i + 1, len(todo), row["key"])
    done = {u: rows[_key(*u)] for u in units}
    setup = {"model": f"MLP {data['dim']}-{sizes['hidden']}-10", "quick": quick, "data": data["description"],
             "data_source": data["source"], "new_task": "the same classes rotated by 90 degrees",
             "optimizer": "AdamW", **sizes, "budgets": budgets, "seeds": seed_list, "arms": list(ARMS),
             "bins": "quantiles of l0 over the prior-correct candidates", "threads": 1}
    claims, detail = _decide(done, units, budgets, seed_list, r_claim, setup)
    detail |= {"resumed_units": resumed, "computed_units": len(todo),
               "seconds": round(time.perf_counter() - t_start, 1)}
    write_json(folder / "details.json", detail)
    _plot_pareto(folder / "pareto.png", detail, budgets)
    _plot_estimator(folder / "estimator.png", done, budgets)
    return claims


def _decide(done: dict[tuple[str, int, int], dict[str, Any]], units: list[tuple[str, int, int]], budgets: list[int],
            seed_list: list[int], r_claim: int, setup: dict[str, Any]) -> tuple[list[Claim], dict[str, Any]]:
    def get(arm: str, r: int, s: int) -> dict[str, Any]:
        return done[(arm, 0 if arm == "none" else r, s)]

    table = []
    for arm in ARMS:
        for r in ([0] if arm == "none" else budgets):
            rs = [get(arm, r, s) for s in seed_list]
            entry = {"arm": arm, "r": r}
            for k in ("p_acc", "n_acc", "p_retained", "final_cd_share"):
                v = np.array([x[k] for x in rs])
                entry[k], entry[k + "_sd"] = float(v.mean()), float(v.std(ddof=1)) if len(v) > 1 else 0.0
            for k in ("total", "sampler_extra", "measurement_only"):
                entry["forward_" + k] = float(np.mean([x["forward"][k] for x in rs]))
            table.append(entry)
    per_seed = {}
    for s in seed_list:
        checks = {}
        for r in budgets:
            mix, ran = get("mixcd", r, s), get("random", r, s)
            checks[r] = {"p_gain": mix["p_acc"] - ran["p_acc"], "n_gain": mix["n_acc"] - ran["n_acc"],
                         "ok": mix["p_acc"] > ran["p_acc"] and mix["n_acc"] - ran["n_acc"] >= -N_TOLERANCE - 1e-9}
        per_seed[s] = {"by_r": checks, "ok": all(c["ok"] for c in checks.values())}
    need = math.ceil(2 * len(seed_list) / 3)
    seeds_ok = sum(v["ok"] for v in per_seed.values())
    directional = seeds_ok >= need

    run_means, all_rho, undefined = [], [], 0
    by_r: dict[int, list[float]] = {r: [] for r in budgets}
    for s in seed_list:
        for r in budgets:
            rho = [p["spearman"] for p in get("mixcd", r, s)["trace"]]
            undefined += sum(x is None for x in rho)
            rho = [x for x in rho if x is not None]
            all_rho += rho
            by_r[r] += rho
            if rho:
                run_means.append(float(np.mean(rho)))
    mean_rho = float(np.mean(all_rho)) if all_rho else None
    pts = [(a, t) for s in seed_list for r in budgets for p in get("mixcd", r, s)["trace"]
           for a, t in zip(p["alphas"], p["true_cd_rate"])]
    pooled = spearman(*zip(*pts)) if pts else None  # diagnostic: across bins and steps together (not the rule)
    estimator_ok = mean_rho is not None and mean_rho >= SPEARMAN_THRESHOLD
    joint = directional and estimator_ok

    mix_items = np.concatenate([_unbits(get("mixcd", r_claim, s)["p_correct"]) for s in seed_list]).astype(float)
    ran_items = np.concatenate([_unbits(get("random", r_claim, s)["p_correct"]) for s in seed_list]).astype(float)
    ci = bootstrap_diff_ci(mix_items, ran_items, seed=0)
    ci_n = bootstrap_diff_ci(*(np.concatenate([_unbits(get(a, r_claim, s)["n_correct"]) for s in seed_list]).astype(float)
                               for a in ("mixcd", "random")), seed=0)
    row = {(e["arm"], e["r"]): e for e in table}
    mix, ran, none = row[("mixcd", r_claim)], row[("random", r_claim)], row[("none", 0)]
    hl, orc = row[("high-loss", r_claim)], row[("oracle", r_claim)]
    prior_p = float(np.mean([get("none", 0, s)["p_acc_prior"] for s in seed_list]))
    verdict = "reproduced" if joint else "not reproduced"
    per_r = "; ".join(f"r={r}: P {row[('mixcd', r)]['p_acc']:.4f} vs {row[('random', r)]['p_acc']:.4f}, "
                      f"N {row[('mixcd', r)]['n_acc']:.4f} vs {row[('random', r)]['n_acc']:.4f}" for r in budgets)
    common = (f"Spec verdict (both rules): {verdict}. Directional rule (mix-cd above random in P accuracy at every r "
              f"with N at most {100 * N_TOLERANCE:.1f} points lower) held in {seeds_ok} of {len(seed_list)} seeds "
              f"(needed {need}); mean Spearman of alpha_k with the true CD rate "
              f"{'n/a' if mean_rho is None else f'{mean_rho:.3f}'} (threshold {SPEARMAN_THRESHOLD}).")
    note1 = (f"{common} Means over seeds (mix-cd vs random), {per_r}. At r={r_claim}: high-prior-loss-first "
             f"P {hl['p_acc']:.4f} / N {hl['n_acc']:.4f}; oracle P {orc['p_acc']:.4f} / N {orc['n_acc']:.4f} at "
             f"{orc['forward_sampler_extra']:.0f} extra forward passes (mix-cd: 0); no rehearsal P "
             f"{none['p_acc']:.4f} / N {none['n_acc']:.4f}; the prior model had P {prior_p:.4f}. The interval is a "
             f"paired bootstrap over seeds x P test images of per-image correctness; the same interval of the N "
             f"accuracy difference at r={r_claim} is {_r(ci_n)}.")
    claim1 = Claim(METHOD, "Rehearsing estimated collateral-damage samples retains more prior-task accuracy than "
                   "random rehearsal at the same budget, at no cost on the new task",
                   f"prior-task (upright) test accuracy after fine-tuning on rotated images, r = {r_claim}",
                   mix["p_acc"], ran["p_acc"], "random mixing (same budget)", directional,
                   {**setup, "r": r_claim, "part": "vision"}, higher_is_better=True, note=note1,
                   n=int(len(mix_items)), ci=ci, valid_rate=None, measurable=True)
    ci2 = bootstrap_diff_ci(run_means, [SPEARMAN_THRESHOLD] * len(run_means), seed=0) if run_means else None
    note2 = (f"{common} Spearman over the {setup['n_bins']} bins at each oracle evaluation step of the mix-cd run "
             f"(every {setup['eval_every']} steps; true rates from a full evaluation of D_p made for measurement "
             f"only), {len(all_rho)} correlations ({undefined} undefined, left out); by r: "
             + ", ".join(f"r={r} {np.mean(v):.3f}" if v else f"r={r} n/a" for r, v in by_r.items())
             + f". The interval bootstraps the {len(run_means)} per-run (seed x r) means. Diagnostic only (not the "
             f"rule): pooled over bins and steps together the Spearman is "
             f"{'n/a' if pooled is None else f'{pooled:.3f}'}.")
    claim2 = Claim(METHOD, "mix-cd's per-bin CD-rate estimates, from the rehearsed samples alone, track the true "
                   "collateral-damage rates", "Spearman correlation of alpha_k with the true per-bin CD rate",
                   mean_rho, SPEARMAN_THRESHOLD, "spec threshold", estimator_ok, {**setup, "part": "vision"},
                   higher_is_better=True, note=note2, n=len(all_rho), ci=ci2, valid_rate=None, measurable=True)
    detail = {"setup": setup, "table": table, "per_seed": {str(k): v for k, v in per_seed.items()},
              "directional": directional, "seeds_ok": seeds_ok, "seeds_needed": need, "spearman_mean": mean_rho,
              "spearman_by_r": {str(r): (float(np.mean(v)) if v else None) for r, v in by_r.items()},
              "spearman_run_means": run_means, "spearman_pooled_diagnostic": pooled, "estimator_ok": estimator_ok, "reproduced": joint,
              "ci_p_acc": ci, "ci_n_acc": ci_n, "claims": [claim1.to_dict(), claim2.to_dict()],
              "units": {_key(*u): {k: v for k, v in done[u].items() if k not in ("p_correct", "n_correct", "plan")}
                        for u in units}}
    return [claim1, claim2], detail


def _r(ci: list[float] | None) -> list[float] | None:
    return [round(x, 4) for x in ci] if ci else None


def _plot_pareto(path: Path, detail: dict[str, Any], budgets: list[int]) -> None:
    pyplot = plt()
    fig, ax = pyplot.subplots(figsize=(6.5, 5))
    marks = {"none": "x", "random": "o", "mixcd": "s", "high-loss": "^", "oracle": "D"}
    for arm in ARMS:
        pts = [e for e in detail["table"] if e["arm"] == arm]
        xs, ys = [100 * e["n_acc"] for e in pts], [100 * e["p_acc"] for e in pts]
        ax.errorbar(xs, ys, xerr=[100 * e["n_acc_sd"] for e in pts], yerr=[100 * e["p_acc_sd"] for e in pts],
                    marker=marks[arm], ms=6, capsize=3, label=arm, linestyle="-" if len(pts) > 1 else "none")
        for e, x, y in zip(pts, xs, ys):
            if e["r"]:
                ax.annotate(f"r={e['r']}", (x, y), textcoords="offset points", xytext=(4, 4), fontsize=7)
    seeds = len(detail["setup"]["seeds"])
    ax.set(xlabel="N test accuracy, rotated images (%)", ylabel="P test accuracy retained, upright images (%)",
           title=f"mix-cd vision: mean of {seeds} seed(s), bars = sd")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    pyplot.close(fig)


def _plot_estimator(path: Path, done: dict[tuple[str, int, int], dict[str, Any]], budgets: list[int]) -> None:
    pyplot = plt()
    fig, axes = pyplot.subplots(1, len(budgets), figsize=(4 * len(budgets), 4), squeeze=False)
    for ax, r in zip(axes[0], budgets):
        pts = [(p["true_cd_rate"], p["alphas"], p["step"]) for (a, rr, _), row in done.items()
               if a == "mixcd" and rr == r for p in row["trace"]]
        if pts:
            true = np.concatenate([np.asarray(t) for t, _, _ in pts])
            alpha = np.concatenate([np.asarray(al) for _, al, _ in pts])
            step = np.concatenate([np.full(len(t), st) for t, _, st in pts])
            sc = ax.scatter(true, alpha, c=step, cmap="viridis", s=12)
            top = float(max(true.max(), alpha.max(), 0.05))
            ax.plot([0, top], [0, top], "k--", lw=0.8)
            rho = [p["spearman"] for (a, rr, _), row in done.items() if a == "mixcd" and rr == r
                   for p in row["trace"] if p["spearman"] is not None]
            ax.set_title(f"r={r}: mean Spearman {np.mean(rho):.2f}" if rho else f"r={r}")
            fig.colorbar(sc, ax=ax, label="step")
        ax.set(xlabel="true per-bin CD rate (full D_p evaluation)", ylabel="sampler alpha_k")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    pyplot.close(fig)
