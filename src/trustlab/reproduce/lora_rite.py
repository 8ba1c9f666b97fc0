"""``trustlab reproduce lora-rite``: invariance, digits LoRA and SmolLM2 LoRA (spec tests 1-3).

Pass conditions, fixed before running:
1. Invariance: max relative deviation of the ``Z`` trajectories <= 1e-8 for LoRA-RITE (every setting,
   transform and task) while AdamW and LoRA+ deviate by >= 1e-3.
2. Digits: LoRA-RITE's best-lr (chosen on validation) mean test accuracy >= AdamW's.
3. Digits init scaling (``lora_A`` x 100): LoRA-RITE's loss curve changes <= 1e-6 relative, AdamW's > 1e-3.
4. SmolLM2: LoRA-RITE's mean test exact match at its validation-chosen lr >= AdamW's at its own (the
   paper's direction). Measurable only if at least 50% of the generations behind the decision (both
   optimizers' test runs) parse into an answer (:func:`~trustlab.reproduce.lora_rite_llm.parse_answer`).
Intervals: for 2 and 4, a paired bootstrap over test items of the per-item correctness averaged over
seeds (ours - AdamW); 1 and 3 are deterministic float64 checks (no interval).

SmolLM2 protocol (4), in float32 on one CPU thread (both recorded in ``config.json``):
- Splits: train / validation / test chain-sum questions, pairwise disjoint
  (:func:`~trustlab.reproduce.lora_rite_llm.task_splits`). The lr is chosen on validation only, with the
  search seed; the test split is scored only by fresh seeds (``eval_seeds``, not the search seed) trained
  at the chosen lr, so neither the lr nor the seed is picked on the numbers reported.
- Grid: each optimizer starts from 3 lrs on the 1-3-10 ladder and widens one step towards any edge holding
  the best validation score until the best is interior, at most ``max_extensions`` added lrs
  (:func:`~trustlab.reproduce.lora_rite_llm.bracket_lr`); a hit cap is said in the claim's note. The
  starting grids are centred on the previous short-horizon run's picks; the widening makes the choice
  independent of them for a single-peaked curve.
- Warm-up: the method's recipe warms up linearly for 100 steps, a count written for runs of thousands of
  steps. A run of a few hundred steps per lr and seed does not fit this machine (2.5 s a step at batch 4
  in float32 on one thread: 300 steps x 14 runs is ~3 h), so the warm-up is scaled instead: 10% of the
  steps (``warmup_fraction``), the same linear-then-constant schedule for both optimizers.
- Size (measured first: 2.5 s a training step, 0.2 s a scored question): 50 steps of batch 4 (200
  training questions, each seen once), 100 validation and 300 test questions, 1 search seed and 3 eval
  seeds; about 6-10 search runs and 6 test runs, ~35-45 min (the committed run: 9 + 6 runs, 44 min with
  the 2 cores shared by other jobs, ~3-4 s a step). LoRA+ is left out of this part (budget).
- Power: the paper reports +3.5 to +7 points over Adam (Gemma-2B average / SNI +4.6, Gemma-7B GSM8K +7).
  With n = 300 test items each averaged over 3 seeds, per-item differences d_i have sd <= ~0.41 (accuracy
  near 0.5, errors independent across arms and seeds; items hard for both arms only shrink it), so the
  95% half-width is about 1.96 x 0.41 / sqrt(300) = 0.046: a +4.6 to +7 point effect excludes zero, the
  smallest (+3.5) would need ~530 items. The item bootstrap leaves out seed-to-seed spread of whole runs;
  the per-seed test scores are reported beside it.
Each run is appended to ``samples.jsonl`` as it finishes; the run folder is keyed by the plan, so an
interrupted reproduction with the same plan resumes and another starts fresh (keeping the rows of a part
whose plan did not change: :func:`_carry_over`).
"""

from __future__ import annotations

import json
import math
import statistics
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch

from trustlab.report import (
    Claim,
    RunFolder,
    Section,
    plt,
    progress,
    read_json,
    read_jsonl,
    write_json,
    write_summary,
)
from trustlab.report.stats import bootstrap_diff_ci, excludes_zero
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
# SmolLM2 (module docstring): starting lr grids (1-3-10 ladder) and the run's sizes.
LLM_LRS = {"lora-rite": [1e-4, 3e-4, 1e-3], "adamw": [3e-4, 1e-3, 3e-3]}
LLM = {"steps": 50, "batch": 4, "warmup_fraction": 0.1, "rank": 8, "n_train": 200, "n_val": 100, "n_test": 300,
       "search_seeds": 1, "eval_seeds": 3, "max_extensions": 2, "dtype": "float32", "threads": 1}
LLM_QUICK = {**LLM, "steps": 3, "n_train": 12, "n_val": 10, "n_test": 10, "eval_seeds": 1, "max_extensions": 0}
PAPER_MIN_GAIN = 0.035  # the paper's smallest LLM gain over Adam (Gemma-2B, 4-task average), for the note
MIN_VALID_RATE = 0.5  # SmolLM2 claim: below this share of parsed answers it is not measurable
ROW_FORMAT = 2  # rows carry per-item correctness (and validity); older rows are not resumed


@contextmanager
def _threads(n: int) -> Iterator[None]:
    """Run with ``n`` torch threads. The toy problems are dispatch-bound: one thread avoids OpenMP barriers
    (30x faster on a busy 2-core box); SmolLM2 runs with ``LLM["threads"]`` (1 on the shared machine)."""
    before = torch.get_num_threads()
    torch.set_num_threads(n)
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


def _plan(quick: bool, llm_lrs: dict[str, list[float]] | None = None, llm_seeds: int | None = None) -> dict[str, Any]:
    """Sizes and grids of the digits and SmolLM2 parts (quick: fewer lrs, seeds and steps). The run folder
    is keyed by this plan."""
    llm = dict(LLM_QUICK if quick else LLM)
    if llm_seeds is not None:
        llm["eval_seeds"] = llm_seeds
    llm["warmup_steps"] = max(round(llm["warmup_fraction"] * llm["steps"]), 1)
    llm["lr_grid"] = llm_lrs or ({k: v[1:2] for k, v in LLM_LRS.items()} if quick else LLM_LRS)
    return {"digits": {"lr_grid": {k: v[1:3] for k, v in DIGITS_LRS.items()} if quick else DIGITS_LRS,
                       "steps": 60 if quick else 150, "seeds": 1 if quick else 3},
            "llm": llm}


def _carry_over(folder: RunFolder, config: dict[str, Any], part: str) -> int:
    """Copy the rows of ``part`` (a sample ``kind`` and plan key, e.g. ``"digits"``) from a superseded run of
    this folder whose plan for that part, seed, quick flag and row format equal ``config``'s: a change to
    another part does not recompute this one. Returns the number of rows copied."""
    same = ("quick", "seed", "row_format", part)
    copied = 0
    for old in sorted((folder.path / ".superseded").glob("*/config.json")):
        previous = read_json(old)
        if all(json.dumps(previous.get(k), sort_keys=True) == json.dumps(config[k], sort_keys=True) for k in same):
            rows = read_jsonl(old.parent / "samples.jsonl") if (old.parent / "samples.jsonl").exists() else []
            copied += sum(folder.add_sample(r) for r in rows if r.get("kind") == part)
    return copied


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
         lrs: dict[str, list[float]] | None, n_seeds: int | None) -> tuple[dict[str, Any], Claim]:
    from trustlab.models import load_model
    from trustlab.reproduce.lora_rite_llm import TASK, bracket_lr, exact_match, llm_run, task_splits
    from trustlab.validity import ValidityCounter

    plan = _plan(quick, lrs, n_seeds)["llm"]
    handle = load_model("embedded", dtype=plan["dtype"])
    model = handle.model.to(getattr(torch, plan["dtype"]))  # the plan's dtype whatever the loader's policy
    dtype, threads = str(next(model.parameters()).dtype).removeprefix("torch."), torch.get_num_threads()
    steps, warmup = plan["steps"], plan["warmup_steps"]
    splits = task_splits(plan["n_train"], plan["n_val"], plan["n_test"], seed)
    search_seeds = [seed + i for i in range(plan["search_seeds"])]
    eval_seeds = [seed + plan["search_seeds"] + i for i in range(plan["eval_seeds"])]  # never a search seed

    def trained(kind: str, name: str, lr: float, s: int, items: list[dict[str, str]]) -> dict[str, Any]:
        row = _resumed(run, done, kind, {"opt": name, "lr": lr, "seed": s, "steps": steps},
                       lambda: llm_run(model, handle.tokenizer, splits["train"], items, name, lr, s, steps,
                                       warmup_steps=warmup, batch_size=plan["batch"], rank=plan["rank"]))
        return {**row, "name": name}

    base = _resumed(run, done, "llm-base", {"n_val": plan["n_val"], "seed": seed},
                    lambda: exact_match(model, handle.tokenizer, splits["val"]))
    search, rows = {}, []
    for name, grid in plan["lr_grid"].items():
        def val_score(lr: float, name: str = name) -> float:
            found = [trained("llm-search", name, lr, s, splits["val"]) for s in search_seeds]
            return statistics.mean(r["exact_match"] for r in found)

        search[name] = bracket_lr(val_score, grid, plan["max_extensions"])
    jobs = [(name, search[name]["lr"], s) for s in eval_seeds for name in search]  # seed-major: partial runs stay balanced
    for name, lr, s in progress(jobs, "SmolLM2 test runs"):
        rows.append(trained("llm-test", name, lr, s, splits["test"]))
    best = {}
    for name, found in search.items():
        runs = [r for r in rows if r["name"] == name]
        per_seed = [r["exact_match"] for r in runs]
        best[name] = {"lr": found["lr"], "val_exact_match": found["val"][found["grid"].index(found["lr"])],
                      "exact_match": statistics.mean(per_seed), "std": statistics.pstdev(per_seed),
                      "test_by_seed": dict(zip(eval_seeds, per_seed, strict=True)), "grid": found["grid"],
                      "val_by_lr": dict(zip(map(str, found["grid"]), found["val"], strict=True)),
                      "initial_grid": found["initial_grid"], "capped": found["capped"]}
    validity = ValidityCounter()
    for r in rows:
        validity.valid(r["validity"]["valid"])
        for reason, k in r["validity"]["invalid_reasons"].items():
            validity.invalid(reason, k)
    measurable = bool(validity.rate is not None and validity.rate >= MIN_VALID_RATE)
    ours_items = _per_item(rows, "lora-rite", best["lora-rite"]["lr"], "correct")
    base_items = _per_item(rows, "adamw", best["adamw"]["lr"], "correct")
    ci = bootstrap_diff_ci(ours_items, base_items, seed=seed)
    diverged = sorted(f"{r['name']} lr {r['lr']:g} seed {r['seed']}" for r in [*done.values()]
                      if r.get("kind", "").startswith("llm-") and r.get("diverged"))
    seconds = sum(r.get("seconds", 0.0) for r in done.values() if r.get("kind") in ("llm-search", "llm-test"))
    capped = [k for k, v in best.items() if v["capped"]]
    setup = {"model": "SmolLM2-135M-Instruct (embedded, Q4_1 dequantised)", "dtype": dtype, "threads": threads,
             "task": TASK, "train_examples": len(splits["train"]), "val_items": len(splits["val"]),
             "test_items": len(splits["test"]), "splits": "train / val / test disjoint by question",
             "steps": steps, "batch": plan["batch"], "warmup_steps": warmup,
             "warmup_decision": (f"recipe's 100-step warm-up scaled to {plan['warmup_fraction']:.0%} of the steps "
                                 "(linear, then constant), the same for both optimizers"),
             "lora_rank": plan["rank"], "targets": "attention + MLP projections",
             "lr_selection": "best validation exact match over the search seeds; grid widened until interior",
             "search_seeds": search_seeds, "eval_seeds": eval_seeds, "initial_lr_grid": plan["lr_grid"],
             "max_extensions": plan["max_extensions"], "lr_search": {k: {kk: v[kk] for kk in ("grid", "val_by_lr", "lr", "capped")}
                                                                    for k, v in best.items()},
             "base_model_val_exact_match": base["exact_match"], "base_model_validity": base["validity"],
             "validity": validity.to_dict(), "min_valid_rate": MIN_VALID_RATE, "diverged_runs": diverged,
             "train_and_score_seconds": round(seconds), "quick": quick}
    rite, adam = best["lora-rite"], best["adamw"]
    gain = rite["exact_match"] - adam["exact_match"]
    where = ("no interval" if not ci else "below the interval" if PAPER_MIN_GAIN < ci[0]
             else "above the interval" if PAPER_MIN_GAIN > ci[1] else "inside the interval")
    note = (f"Difference {gain:+.3f} (pass rule: ours > AdamW with the 95% interval excluding zero, as for every "
            "other claim of the project; the rule written before this run was ours >= AdamW and was tightened after it "
            "to match the schema, so a tie inside the noise never reads as reproduced); the 95% interval "
            f"{'excludes' if excludes_zero(ci) else 'includes'} zero, and the paper's smallest reported gain "
            f"(+{PAPER_MIN_GAIN}) lies {where}. "
            f"lr chosen on {len(splits['val'])} validation questions (seed {', '.join(map(str, search_seeds))}): "
            f"LoRA-RITE {rite['lr']:g} of {[f'{x:g}' for x in rite['grid']]} (val EM {rite['val_exact_match']:.3f}), "
            f"AdamW {adam['lr']:g} of {[f'{x:g}' for x in adam['grid']]} (val EM {adam['val_exact_match']:.3f}); "
            f"LoRA-RITE's lr is {rite['lr'] / adam['lr']:.2g}x AdamW's. "
            f"Test: n = {len(splits['test'])} questions, each the mean over eval seeds {eval_seeds}; paired bootstrap over "
            f"questions (seed-to-seed spread not in it: per-seed test EM LoRA-RITE "
            f"{[round(x, 3) for x in rite['test_by_seed'].values()]}, AdamW {[round(x, 3) for x in adam['test_by_seed'].values()]}). "
            f"{steps} steps of batch {plan['batch']}, {dtype}, warm-up {warmup} steps ({plan['warmup_fraction']:.0%} of the "
            f"steps for both; the recipe's 100 steps do not fit this CPU budget). Base model val EM {base['exact_match']:.3f}."
            + (f" Grid cap ({plan['max_extensions']} added lrs) hit for {', '.join(capped)}: the best lr there is at the "
               "grid's edge, so the optimum may lie beyond it." if capped else "")
            + (f" Diverged (non-finite loss): {', '.join(diverged)}." if diverged else ""))
    claim = Claim(METHOD, "LoRA-RITE beats Adam on LLM LoRA fine-tuning (Gemma: +3.5 to +7 points)",
                  "test exact match at the validation-chosen lr", rite["exact_match"], adam["exact_match"], "AdamW",
                  measurable and bool(ci) and ci[0] > 0, setup, n=len(splits["test"]),
                  ci=ci, valid_rate=validity.rate, measurable=measurable, note=note)
    return {"best": best, "rows": rows, "base_val_exact_match": base["exact_match"], "validity": validity.to_dict(),
            "seconds": seconds}, claim


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
        fig, axes = pyplot.subplots(1, 2, figsize=(11, 4))
        for name, b in llm["best"].items():
            axes[0].plot(b["grid"], list(b["val_by_lr"].values()), marker="o", label=name)
            axes[0].scatter([b["lr"]], [b["val_exact_match"]], s=120, facecolors="none", edgecolors="k")
            curves = [r for r in llm["rows"] if r["name"] == name and r["lr"] == b["lr"]]
            n = min(len(c["loss"]) for c in curves)
            axes[1].plot([_mean_or_nan([c["loss"][i] for c in curves]) for i in range(n)],
                         label=f"{name} (lr {b['lr']:g}): test EM {b['exact_match']:.2f}")
        axes[0].set(xscale="log", xlabel="lr", ylabel="validation exact match (search seed)",
                    title="lr search (circled: chosen)")
        axes[1].set(xlabel="step", ylabel="train loss (mean over eval seeds)", title="SmolLM2-135M LoRA on chain_sum")
        axes[0].legend(fontsize=8)
        axes[1].legend(fontsize=8)
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
        sections.append(Section("SmolLM2 LoRA", text=(
            "Per optimizer: the lr grid searched on validation (widened until the best is interior), the "
            f"chosen lr, its validation exact match and the test exact match of fresh seeds at it. Base model "
            f"validation exact match: {llm['base_val_exact_match']:.3f}. Validity of the test runs: {llm['validity']}"),
            table=[{"optimizer": k, **v} for k, v in llm["best"].items()], images=images[1:]))
    folder.write_report("LoRA-RITE reproduction", sections)
    write_summary(out, claims)


def run(out: Path, *, quick: bool = False, seed: int = 0, llm_lrs: dict[str, list[float]] | None = None,
        llm_seeds: int | None = None) -> list[Claim]:
    """Run all parts into ``out`` (``quick``: one seed, one starting lr, a few SmolLM2 steps; for tests).

    ``llm_lrs`` replaces the SmolLM2 starting grids (1-3-10 ladder lrs per optimizer: ``lora-rite`` and
    ``adamw``) and ``llm_seeds`` the number of eval seeds (default 3); both are recorded in the claim's setup.

    The summary is written after the toy parts and again after SmolLM2, so an interrupted run leaves
    the finished claims behind; rerunning resumes from ``samples.jsonl``.
    """
    config = {"method": METHOD, "quick": quick, "seed": seed, "row_format": ROW_FORMAT,
              **_plan(quick, llm_lrs, llm_seeds)}
    with _threads(1):
        folder = RunFolder(out, config)
        carried = 0 if folder.resumed else _carry_over(folder, config, "digits")
        done = {row["id"]: row for row in folder.samples() if "id" in row}
        inv, inv_claim = _invariance(quick)
        digits, digit_claims = _digits(folder, done, quick, seed)
    digits["carried_over_rows"] = carried
    claims = [inv_claim, *digit_claims]
    _report(folder, out, claims, inv, digits, None)
    with _threads(config["llm"]["threads"]):
        llm, llm_claim = _llm(folder, done, quick, seed, llm_lrs, llm_seeds)
    claims.append(llm_claim)
    _report(folder, out, claims, inv, digits, llm)
    return claims
