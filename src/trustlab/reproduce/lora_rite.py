"""``trustlab reproduce lora-rite``: invariance, digits LoRA and SmolLM2 LoRA (spec tests 1-3).

Pass conditions, fixed before running:
1. Invariance: max relative deviation of the ``Z`` trajectories <= 1e-8 for LoRA-RITE (every setting,
   transform and task) while AdamW and LoRA+ deviate by >= 1e-3.
2. Digits: LoRA-RITE's best-lr (chosen on validation) mean test accuracy >= AdamW's.
3. Digits init scaling (``lora_A`` x 100): LoRA-RITE's loss curve changes <= 1e-6 relative, AdamW's > 1e-3.
4. SmolLM2: LoRA-RITE's best-lr mean held-out exact match >= AdamW's (the paper's direction). Measurable
   only if at least 50% of the generations behind the decision (both optimizers at their best lr, all
   seeds) parse into an answer (:func:`~trustlab.reproduce.lora_rite_llm.parse_answer`).
Intervals: for 2 and 4, a paired bootstrap over test items of the per-item correctness averaged over
seeds (ours - AdamW); 1 and 3 are deterministic float64 checks (no interval).
Each run is appended to ``samples.jsonl`` as it finishes; the run folder is keyed by the grid, so an
interrupted reproduction with the same grid resumes and another grid starts fresh.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch

from trustlab.report import Claim, RunFolder, Section, plt, progress, write_json, write_summary
from trustlab.report.stats import bootstrap_diff_ci
from trustlab.reproduce.lora_rite_toys import (
    digits_data,
    invariance_deviation,
    lora_digits_run,
    pretrained_mlp,
)

METHOD = "lora-rite"
DIGITS_LRS = {"lora-rite": [3e-3, 1e-2, 3e-2, 1e-1, 3e-1], "adamw": [3e-3, 1e-2, 3e-2, 1e-1, 3e-1],
              "loraplus-4": [1e-3, 3e-3, 1e-2, 3e-2, 1e-1], "loraplus-16": [3e-4, 1e-3, 3e-3, 1e-2, 3e-2],
              "sgd": [3e-2, 1e-1, 3e-1, 1.0, 3.0]}
# Sized for ~20-30 min on 2 CPU cores: 27 short runs. The spec asks for a few hundred steps; on this
# hardware that is hours, so the SmolLM2 comparison is a short-horizon one (stated in setup).
# LoRA-RITE and AdamW share one lr grid; LoRA+ (ratio 16) is shifted down because its lora_B lr is 16x.
LLM_STEPS, LLM_BATCH = 24, 4
LLM_LRS = {"lora-rite": [3e-4, 1e-3, 3e-3], "adamw": [3e-4, 1e-3, 3e-3], "loraplus": [1e-4, 3e-4, 1e-3]}
MIN_VALID_RATE = 0.5  # SmolLM2 claim: below this share of parsed answers it is not measurable
ROW_FORMAT = 2  # rows carry per-item correctness (and validity); older rows are not resumed


@contextmanager
def _single_thread() -> Iterator[None]:
    """The toy problems are dispatch-bound: one thread avoids OpenMP barriers (30x faster on a busy 2-core box)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _opt(name: str) -> tuple[str, dict[str, Any]]:
    if name.startswith("loraplus-"):
        return "loraplus", {"loraplus_ratio": float(name.split("-")[1])}
    return name, {}


def _resumed(run: RunFolder, done: dict[str, dict[str, Any]], kind: str, key: dict[str, Any], fn) -> dict[str, Any]:
    """The row for ``key``: read back from ``done`` (a resumed run's rows by id) or computed and appended."""
    rid = f"{kind}:" + ":".join(f"{k}={v}" for k, v in key.items())
    if rid not in done:
        done[rid] = {"id": rid, "kind": kind, **fn()}
        run.add_sample(done[rid])
    return done[rid]


def _per_item(rows: list[dict[str, Any]], name: str, lr: float, field: str) -> list[float]:
    """Per test item: the mean over seeds of ``field`` (a 0/1 list) for optimizer ``name`` at ``lr``."""
    lists = [r[field] for r in rows if r["name"] == name and r["lr"] == lr]
    return [statistics.mean(col) for col in zip(*lists, strict=True)]


def _best(rows: list[dict[str, Any]], select: str, report: str) -> dict[str, Any]:
    """Per optimizer: the lr with the best mean ``select`` over seeds, and the mean ``report`` there."""
    out: dict[str, Any] = {}
    for opt in dict.fromkeys(r["name"] for r in rows):
        by_lr: dict[float, list[dict[str, Any]]] = {}
        for r in rows:
            if r["name"] == opt:
                by_lr.setdefault(r["lr"], []).append(r)
        lr = max(by_lr, key=lambda k: statistics.mean(x[select] for x in by_lr[k]))
        vals = [x[report] for x in by_lr[lr]]
        out[opt] = {"lr": lr, report: statistics.mean(vals), "std": statistics.pstdev(vals), "seeds": len(vals),
                    "by_lr": {str(k): statistics.mean(x[report] for x in v) for k, v in by_lr.items()}}
    return out


def _plan(quick: bool, llm_lrs: dict[str, list[float]] | None = None, llm_seeds: int = 3) -> dict[str, Any]:
    """Sizes and grids of the digits and SmolLM2 parts (quick: fewer lrs, seeds and steps). The run folder
    is keyed by this plan."""
    return {"digits": {"lr_grid": {k: v[1:3] for k, v in DIGITS_LRS.items()} if quick else DIGITS_LRS,
                       "steps": 60 if quick else 150, "seeds": 1 if quick else 3},
            "llm": {"lr_grid": llm_lrs or ({k: v[1:2] for k, v in LLM_LRS.items()} if quick else LLM_LRS),
                    "seeds": 1 if quick else llm_seeds, "steps": 3 if quick else LLM_STEPS, "batch": LLM_BATCH,
                    "n_test": 10 if quick else 50}}


def _invariance(quick: bool) -> tuple[dict[str, Any], Claim]:
    settings = {"lora-rite": {}, "lora-rite (clip+skip active)": {"update_skipping": 0.3, "clip_unmagnified_grad": 0.05},
                "lora-rite (escape+capping)": {"apply_escape": True, "update_capping": 0.5},
                "adamw": {}, "loraplus": {}}
    table = []
    for label, kw in settings.items():
        for task in ("factorization", "regression"):
            for transform in ("rotate", "scale"):
                out = invariance_deviation(label.split(" ")[0], transform=transform, task=task, **kw)
                table.append({"optimizer": label, "task": task, "transform": transform,
                              "max_rel_dev": out["max_rel_dev"]})
    ours = max(r["max_rel_dev"] for r in table if r["optimizer"].startswith("lora-rite"))
    theirs = min(r["max_rel_dev"] for r in table if not r["optimizer"].startswith("lora-rite"))
    claim = Claim(METHOD, "LoRA-RITE's LoRA update is invariant to equivalent factorizations (A R, B R^-T); Adam's is not",
                  "max relative deviation of Z = A B^T trajectories, 50 steps, float64 (lower is better)",
                  ours, theirs, "AdamW / LoRA+ (smallest deviation among them)", bool(ours <= 1e-8 and theirs >= 1e-3),
                  {"Z*": "20 x 16, rank 4", "rank": 4, "steps": 50, "transforms": ["random R (sv 0.32-3.2)", "10 I"],
                   "tasks": ["factorization", "regression"], "quick": quick}, higher_is_better=False,
                  note=("ours = worst case over LoRA-RITE settings; baseline = best case over Adam-family runs; "
                        f"n = {len(table)} trajectory pairs compared; deterministic float64 check, no interval"),
                  n=len(table), ci=None, valid_rate=None)
    return {"rows": table}, claim


def _digits(run: RunFolder, done: dict[str, dict[str, Any]], quick: bool, seed: int,
            ) -> tuple[dict[str, Any], list[Claim]]:
    data = digits_data(seed)
    base = pretrained_mlp(data, seed)
    plan = _plan(quick)["digits"]
    seeds, steps, grid = [seed + i for i in range(plan["seeds"])], plan["steps"], plan["lr_grid"]
    jobs = [(name, lr, s) for name, lrs in grid.items() for lr in lrs for s in seeds]
    rows = []
    for name, lr, s in progress(jobs, "digits LoRA runs"):
        opt, kw = _opt(name)
        row = _resumed(run, done, "digits", {"opt": name, "lr": lr, "seed": s, "steps": steps},
                       lambda opt=opt, lr=lr, s=s, kw=kw: lora_digits_run(base, data, opt, lr, seed=s, steps=steps, **kw))
        rows.append({**row, "name": name})
    best = _best(rows, "val_acc", "test_acc")
    scaled = {}
    for name in ("lora-rite", "adamw"):
        opt, kw = _opt(name)
        lr = best[name]["lr"]
        a = lora_digits_run(base, data, opt, lr, seed=seed, steps=steps, **kw)["loss"]
        b = lora_digits_run(base, data, opt, lr, seed=seed, steps=steps, init_scale=100.0, **kw)["loss"]
        scaled[name] = max(abs(x - y) / max(abs(x), 1e-300) for x, y in zip(a, b, strict=True))
    setup = {"network": "MLP 64-128-10 pretrained on digits 0-4, frozen", "lora_rank": 4, "layers": "both linear",
             "fine_tune": "digits 5-9, split 50/25/25 train/val/test", "steps": steps, "batch": 64, "seeds": seeds,
             "lr_grid": grid, "lr_selection": "best mean validation accuracy", "dtype": "float64", "quick": quick}
    ours_items = _per_item(rows, "lora-rite", best["lora-rite"]["lr"], "test_correct")
    base_items = _per_item(rows, "adamw", best["adamw"]["lr"], "test_correct")
    claims = [
        Claim(METHOD, "LoRA-RITE fine-tunes LoRA more accurately than Adam", "test accuracy at the best lr (digits 5-9)",
              best["lora-rite"]["test_acc"], best["adamw"]["test_acc"], "AdamW",
              bool(best["lora-rite"]["test_acc"] >= best["adamw"]["test_acc"]), setup, n=len(ours_items),
              ci=bootstrap_diff_ci(ours_items, base_items, seed=seed), valid_rate=None,
              note=(f"n = {len(ours_items)} test digits; accuracy and interval use each item's correctness averaged "
                    f"over {len(seeds)} seeds (paired bootstrap over items; seed-to-seed spread not included)")),
        Claim(METHOD, "LoRA-RITE's training is unchanged when lora_A's init is scaled by 100 (lora_B / 100)",
              "max relative change of the training-loss curve (lower is better)", scaled["lora-rite"], scaled["adamw"],
              "AdamW", bool(scaled["lora-rite"] <= 1e-6 and scaled["adamw"] > 1e-3), setup, higher_is_better=False,
              n=steps, ci=None, valid_rate=None,
              note=f"n = {steps} loss-curve points compared (seed {seed}, best lr); deterministic float64 check"),
    ]
    return {"best": best, "init_scale_change": scaled, "rows": rows}, claims


def _llm(run: RunFolder, done: dict[str, dict[str, Any]], quick: bool, seed: int,
         lrs: dict[str, list[float]] | None, n_seeds: int) -> tuple[dict[str, Any], Claim]:
    from trustlab.models import load_model
    from trustlab.reproduce.lora_rite_llm import TASK, exact_match, llm_run, task_data
    from trustlab.validity import ValidityCounter

    handle = load_model("embedded")
    plan = _plan(quick, lrs, n_seeds)["llm"]
    steps, grid = plan["steps"], plan["lr_grid"]
    train, test = task_data(steps * LLM_BATCH, plan["n_test"], seed)
    seeds = [seed + i for i in range(plan["seeds"])]
    base = _resumed(run, done, "llm-base", {"n_test": plan["n_test"], "seed": seed},
                    lambda: exact_match(handle.model, handle.tokenizer, test))
    jobs = [(name, lr, s) for s in seeds for name, lrs in grid.items() for lr in lrs]  # seed-major: partial runs stay balanced
    rows = []
    for name, lr, s in progress(jobs, "SmolLM2 LoRA runs"):
        row = _resumed(run, done, "llm", {"opt": name, "lr": lr, "seed": s, "steps": steps},
                       lambda name=name, lr=lr, s=s: llm_run(handle.model, handle.tokenizer, train, test, name, lr, s, steps,
                                                              batch_size=LLM_BATCH))
        rows.append({**row, "name": name})
    best = _best(rows, "exact_match", "exact_match")
    chosen = [r for r in rows if (r["name"], r["lr"]) in {(k, best[k]["lr"]) for k in ("lora-rite", "adamw")}]
    validity = ValidityCounter()
    for r in chosen:
        validity.valid(r["validity"]["valid"])
        for reason, k in r["validity"]["invalid_reasons"].items():
            validity.invalid(reason, k)
    measurable = bool(validity.rate is not None and validity.rate >= MIN_VALID_RATE)
    ours_items = _per_item(rows, "lora-rite", best["lora-rite"]["lr"], "correct")
    base_items = _per_item(rows, "adamw", best["adamw"]["lr"], "correct")
    diverged = sorted(f"{r['name']} lr {r['lr']:g} seed {r['seed']}" for r in rows if r.get("diverged"))
    setup = {"model": "SmolLM2-135M-Instruct (embedded, Q4_1 dequantised)", "task": TASK, "train_examples": len(train),
             "held_out": len(test), "steps": steps, "batch": LLM_BATCH, "lora_rank": 8, "targets": "attention + MLP projections",
             "seeds": seeds, "lr_grid": grid, "full_protocol_lr_grid": LLM_LRS,
             "lr_selection": "best mean held-out exact match (no separate val split)",
             "base_model_exact_match": base["exact_match"], "base_model_validity": base["validity"],
             "warmup_steps": max(steps // 10, 1), "validity": validity.to_dict(), "min_valid_rate": MIN_VALID_RATE,
             "diverged_runs": diverged, "quick": quick}
    claim = Claim(METHOD, "LoRA-RITE beats Adam on LLM LoRA fine-tuning (Gemma: +3.5 to +7 points)",
                  "held-out exact match at the best lr", best["lora-rite"]["exact_match"], best["adamw"]["exact_match"],
                  "AdamW", measurable and bool(best["lora-rite"]["exact_match"] >= best["adamw"]["exact_match"]), setup,
                  n=len(test), ci=bootstrap_diff_ci(ours_items, base_items, seed=seed), valid_rate=validity.rate,
                  measurable=measurable,
                  note=(f"LoRA+ (ratio 16): {best['loraplus']['exact_match']:.3f}; base model: {base['exact_match']:.3f}. "
                        f"n = {len(test)} held-out questions, each scored as the mean over {len(seeds)} seeds (paired "
                        f"bootstrap over questions). Short horizon: {steps} steps of batch {LLM_BATCH} with "
                        f"{max(steps // 10, 1)} warm-up steps (the method's recipe warms up for 100 steps)."
                        + (f" Diverged (non-finite loss): {', '.join(diverged)}." if diverged else "")))
    return {"best": best, "rows": rows, "base_exact_match": base["exact_match"], "validity": validity.to_dict()}, claim


def _mean_or_nan(values: list[float | None]) -> float:
    """Mean of a loss column; NaN (a gap in the plot) when any run's loss there was not finite."""
    return math.nan if any(v is None for v in values) else statistics.mean(values)


def _plots(run: RunFolder, digits: dict[str, Any], llm: dict[str, Any] | None) -> list[Path]:
    pyplot = plt()
    paths = []
    fig, axes = pyplot.subplots(1, 2, figsize=(11, 4))
    for name, b in digits["best"].items():
        curves = [r for r in digits["rows"] if r["name"] == name and r["lr"] == b["lr"]]
        loss = [statistics.mean(c["loss"][i] for c in curves) for i in range(len(curves[0]["loss"]))]
        bal = [statistics.mean(c["log10_normA_over_normB"][i] for c in curves) for i in range(len(curves[0]["loss"]))]
        axes[0].plot(loss, label=f"{name} (lr {b['lr']:g})")
        axes[1].plot(bal, label=name)
    axes[0].set(yscale="log", xlabel="step", ylabel="train loss (mean over seeds)", title="Digits 5-9 LoRA, best lr")
    axes[1].set(xlabel="step", ylabel="log10 ||A|| / ||B|| (mean over layers)", title="Factor balance")
    axes[0].legend(fontsize=8)
    paths.append(run.save_plot(fig, "digits_loss_balance"))
    if llm:
        fig, ax = pyplot.subplots(figsize=(6, 4))
        for name, b in llm["best"].items():
            curves = [r for r in llm["rows"] if r["name"] == name and r["lr"] == b["lr"]]
            n = min(len(c["loss"]) for c in curves)
            ax.plot([_mean_or_nan([c["loss"][i] for c in curves]) for i in range(n)],
                    label=f"{name} (lr {b['lr']:g}): EM {b['exact_match']:.2f}")
        ax.set(xlabel="step", ylabel="train loss (mean over seeds)", title="SmolLM2-135M LoRA on chain_sum")
        ax.legend(fontsize=8)
        paths.append(run.save_plot(fig, "smollm2_loss"))
    return paths


def _report(folder: RunFolder, out: Path, claims: list[Claim], inv: dict[str, Any], digits: dict[str, Any],
            llm: dict[str, Any] | None) -> None:
    write_json(Path(out) / "invariance.json", inv)
    write_json(Path(out) / "digits.json", {k: v for k, v in digits.items() if k != "rows"})
    if llm:
        write_json(Path(out) / "smollm2.json", {k: v for k, v in llm.items() if k != "rows"})
    images = _plots(folder, digits, llm)
    folder.write_results({"claims": [c.to_dict() for c in claims], "complete": llm is not None})
    sections = [
        Section("Claims", table=[{"claim": c.claim, "ours": c.ours, "baseline": c.baseline,
                                  "baseline_name": c.baseline_name, "n": c.n, "ci (ours - baseline)": c.ci,
                                  "valid_rate": c.valid_rate, "verdict": c.verdict} for c in claims]),
        Section("Invariance (float64)", table=inv["rows"]),
        Section("Digits LoRA", text="Best lr per optimizer (chosen on validation accuracy); test accuracy.",
                table=[{"optimizer": k, **{kk: vv for kk, vv in v.items() if kk != "by_lr"}}
                       for k, v in digits["best"].items()], images=images[:1]),
    ]
    if llm:
        sections.append(Section("SmolLM2 LoRA", text=(f"Base model exact match: {llm['base_exact_match']:.3f}. "
                                                      f"Validity at the chosen lrs: {llm['validity']}"),
                                table=[{"optimizer": k, **{kk: vv for kk, vv in v.items() if kk != "by_lr"}}
                                       for k, v in llm["best"].items()], images=images[1:]))
    folder.write_report("LoRA-RITE reproduction", sections)
    write_summary(out, claims)


def run(out: Path, *, quick: bool = False, seed: int = 0, llm_lrs: dict[str, list[float]] | None = None,
        llm_seeds: int = 3) -> list[Claim]:
    """Run all parts into ``out`` (``quick``: one seed, two lrs, a few SmolLM2 steps; for tests).

    ``llm_lrs`` / ``llm_seeds`` shrink the SmolLM2 grid (default: 3 lrs x 3 seeds per optimizer) when the
    machine cannot afford it; the grid used is recorded in the claim's setup.

    The summary is written after the toy parts and again after SmolLM2, so an interrupted run leaves
    the finished claims behind; rerunning resumes from ``samples.jsonl``.
    """
    config = {"method": METHOD, "quick": quick, "seed": seed, "row_format": ROW_FORMAT,
              **_plan(quick, llm_lrs, llm_seeds)}
    folder = RunFolder(out, config)
    done = {row["id"]: row for row in folder.samples() if "id" in row}
    with _single_thread():
        inv, inv_claim = _invariance(quick)
        digits, digit_claims = _digits(folder, done, quick, seed)
    claims = [inv_claim, *digit_claims]
    _report(folder, out, claims, inv, digits, None)
    llm, llm_claim = _llm(folder, done, quick, seed, llm_lrs, llm_seeds)
    claims.append(llm_claim)
    _report(folder, out, claims, inv, digits, llm)
    return claims
