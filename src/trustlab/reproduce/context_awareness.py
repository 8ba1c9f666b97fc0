"""``trustlab reproduce context-awareness [--model SPEC]``: the spec's small-scale reproduction.

Claims (one summary per model under test; the default, SmolLM2-135M-Instruct, in ``results/context-awareness/``,
any other beside it in ``results/context-awareness--<slug>/``, as :func:`trustlab.reproduce.default_out` puts it):

(a) template gap: NIH grid (Verne haystack, 3 needles, length x depth) with and without the chat template, plus
    counterfactual context QA and the last prompt token's attention mass on the user's content;
(b) steering: the same NIH grid steered at alpha 0.9, and an alpha grid {0.5, 0.9, 0.95} on context QA;
(c) the no-template answer cue (the spec marks the no-template wording as unverified), measured, not tuned
    (details.json only);
(B) scorer validity: the user-attention ratio of the spec's 200 context-dependent vs 200 knowledge-only chats
    (AUROC), SmolLM2 as probe at layer 20 of 30 (the spec's probe, whatever the model under test: default run
    only);
(C) conditional fine-tuning [IND] as the paper does it, on a BASE model: Gemma-3-270m with a Zephyr-style
    template applied by us (:mod:`trustlab.context.finetune`), LoRA r=16 alpha=16 dropout 0.05, AdamW lr 2e-4,
    1 epoch, seq <= 384, trained in float32; arm 1 plain SFT, arm 2 SFT on the same chats with [IND] at
    tau = 0.6 (labels from the (B) scorer); then the NIH grid with the template: arm 2 + [IND] vs arm 1, and
    arm 2 with vs without [IND]. Model-independent, so it runs in the default run only.

Decided before the run (never tuned on its results):

- Valid data: an answer that echoes the prompt's instruction or only its format (see
  :mod:`trustlab.context.bench`) is invalid: counted in ``valid_rate`` and never scored. Paired comparisons
  use the probes whose answers are valid under both conditions; ``n`` is that number.
- Intervals: ``ci`` is the 95% paired bootstrap interval (2000 resamples, seed 0) of ours minus baseline over
  those probes (for the AUROC: over chats, of AUROC - 0.5).
- Measurable: every compared condition has ``valid_rate >= 0.8``; for the gap also the spec's pre-check
  (no-template recall error <= 0.8, else the run is uninformative); for steering and [IND] also room to improve
  (the baseline's recall error >= 0.05, else there is nothing to recover). A claim that fails these is "not
  measurable" and never "reproduced".
- Reproduced (the spec's thresholds, plus an interval that excludes zero in the claimed direction):
  gap: template minus no-template recall error >= 0.05 with ``ci[0] > 0``, and less user attention mass with
  the template; steering: template minus steered (alpha 0.9) recall error >= 0.05 with ``ci[1] < 0``; scorer:
  AUROC >= 0.7 at layer 20 of 30 with ``ci[0] > 0``; [IND]: arm 2 + [IND] minus arm 1 recall error <= -0.05
  with ``ci[1] < 0`` (the spec counts (C) as a pipeline check; a win is a bonus).

Sizes and power (measured first, on the shared 2-core machine, 1 thread, bf16 sdpa): one greedy 32-token
SmolLM2 probe took 1.8 s at 250 tokens, 5.0 s at 1000, 10.8 s at 2000 and 22.4 s at 4000 (prefill dominates).
For most of the run 4-6 other jobs shared the 2 cores and each of ours got a quarter of a core, so it took
about four times that. One Gemma-3-270m LoRA step (batch 8, float32) took 66 s with the full LM head under
load; with the head on response positions only (``SFTConfig.response_logits_only``: the same loss, about half
the work) 12 steps took ~3 min once the load eased. The committed fp32 run (45 probes) gave a paired per-probe
SD of the template - no-template difference of about 0.54 and of steered - template of about 0.19. A 95%
interval excludes zero at effect delta when n >= (1.96 SD / delta)^2: for the gap, delta 0.05 (the spec's
threshold; the paper's numbers are not available to us, spec section 2) needs ~450 probes per condition, delta
0.15 ~50, delta 0.2 ~28; for steering delta 0.05 needs ~55. What fitted:

- SmolLM2: {250, 1000} x 5 depths x 3 needles plus a 2000-token slice (3 depths x 3 needles) = 39 paired probes
  in 3 conditions (the gap interval can exclude zero at ~0.17, steering at ~0.06); 24 counterfactual QA items
  in 4 conditions;
- other models (Qwen2.5-Coder-0.5B costs ~4x SmolLM2 a token): ``SIZES["default"]``, {250, 1000} x 3 depths x
  3 needles = 18 probes (excludes zero at ~0.25) and 12 QA items, capped by the context window
  (:func:`grid_size`);
- scorer: 50 + 50 chats (the AUROC interval's half-width ~0.1 at worst);
- Experiment C: 96 balanced chats per arm (12 steps of 8, 1 epoch), read on {250, 1000, 2000} x 5 depths x 3
  needles = 45 probes (excludes zero at ~0.15 with a per-probe SD of 0.5) and 8 QA items.

Cut vs the spec (did not fit ~100 minutes of wall time on the loaded machine): the 20 x 20 grid to 8k tokens and
the spec's {250, 500, 1000, 1500, 2000} x 5 depths (here 250 and 1000, 2000 at 3 depths; a 4000-token slice was
planned and cut when the load quadrupled every timing); alpha 0.95 on the NIH grid (run on QA only) and alpha
0.5 on QA; the spec's 200 + 200 scorer chats (50 + 50) and 300 training chats per arm (96); multi-turn and
system-prompt variants of the search for where the gap appears; the 1.5B model; the attention mass on 2 lengths
only (eager attention maps; everything else runs sdpa + bf16, recorded in config.json's model description).

Every answer is a row of samples.jsonl keyed by ``context/<task>/<condition>/<probe>`` (Experiment C's in
``finetune/samples.jsonl``, its adapters in ``finetune/checkpoints/``); a killed run resumes from them. The
stages can run as separate processes (``parts``): the benchmark, the scorer (cached in ``scorer.json``) and
the fine-tuning; a last call with every part assembles the summary from what they wrote.
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections import Counter
from pathlib import Path
from typing import Any

from trustlab.bench.context_qa import context_conversations, counterfactual_items, knowledge_conversations
from trustlab.bench.niah import NEEDLES, build_context, niah_prompt
from trustlab.context.bench import (
    Condition,
    conditions,
    niah_probes,
    paired,
    plot_niah,
    qa_probes,
    run_probes,
    summarise,
    user_attention_mass,
)
from trustlab.context.indicator import score_conversations_at
from trustlab.report import Claim, RunFolder, plt, read_json, write_json, write_summary
from trustlab.report.stats import bootstrap_diff_ci, bootstrap_metric_ci

METHOD = "context-awareness"
MIN_VALID = 0.8  # valid_rate every compared condition needs for a claim to be measurable
PARTS = ("benchmark", "scorer", "finetune")
SCORER_PROBE = "embedded"  # the spec's probe for (B) and the [IND] labels: SmolLM2, layer 20 of 30
FINETUNE_BASE = "embedded:gemma-3-270m"
_DEPTHS = (0.0, 0.25, 0.5, 0.75, 1.0)
# Per model under test (by slug); "default" for any other. See the module docstring for the power argument.
SIZES: dict[str, dict[str, Any]] = {
    "smollm2-135m": {"lengths": (250, 1000), "depths": _DEPTHS, "needles": 3, "long_lengths": (2000,),
                     "long_depths": (0.0, 0.5, 1.0), "long_needles": 3, "new_tokens": 32, "alphas": (0.9,), "qa_items": 24,
                     "qa_alphas": (0.9, 0.95), "mass_lengths": (250, 1000), "cue_probes": 3},
    "default": {"lengths": (250, 1000), "depths": (0.0, 0.5, 1.0), "needles": 3, "long_lengths": (),
                "long_depths": (), "long_needles": 0, "new_tokens": 32, "alphas": (0.9,), "qa_items": 12, "qa_alphas": (0.9,),
                "mass_lengths": (250,), "cue_probes": 3},
}
SCORER = {"scorer_chats": 50, "scorer_layers": (10, 20, 25)}
FINETUNE = {"train_chats": 96, "batch_size": 8, "lr": 2e-4, "rank": 16, "alpha": 16, "dropout": 0.05,
            "max_length": 384, "tau": 0.6, "lengths": (250, 1000, 2000), "depths": _DEPTHS, "needles": 3,
            "new_tokens": 32, "qa_items": 8}
QUICK = {"lengths": (200,), "depths": (0.5,), "needles": 1, "long_lengths": (), "long_depths": (), "long_needles": 0, "new_tokens": 8,
         "alphas": (0.9,), "qa_items": 4, "qa_alphas": (0.9,), "mass_lengths": (200,), "cue_probes": 1}
QUICK_SCORER = {"scorer_chats": 4, "scorer_layers": (20,)}
QUICK_FINETUNE = {**FINETUNE, "train_chats": 8, "lengths": (200,), "depths": (0.5,), "needles": 1, "new_tokens": 8,
                  "qa_items": 4}
CUES = {"cue_none": "", "cue_answer_colon": "\nAnswer:"}  # the default cue is "\nAnswer: "
_PROMPT_RESERVE = 200  # tokens of instruction, question, template and answer on top of the haystack


def grid_size(slug: str, max_context: int | None, *, quick: bool = False) -> dict[str, Any]:
    """The benchmark's size for a model (``SIZES``), its NIH lengths capped to fit ``max_context``.

    Example:
        >>> grid_size("smollm2-135m", 8192)["long_lengths"]
        (4000,)
        >>> grid_size("some-model", 1024)["lengths"]
        (250,)
    """
    size = dict(QUICK if quick else SIZES.get(slug, SIZES["default"]))
    limit = (max_context or 10**9) - _PROMPT_RESERVE - size["new_tokens"]
    for key in ("lengths", "long_lengths", "mass_lengths"):
        size[key] = tuple(n for n in size[key] if n <= limit)
    if not size["lengths"]:
        raise ValueError(f"the model's context ({max_context} tokens) fits none of the NIH lengths")
    return size


def run(out: Path, *, quick: bool = False, seed: int = 0, model: str | None = None,
        parts: tuple[str, ...] = PARTS) -> list[Claim]:
    """Run the reproduction into ``out`` (resumable: finished answers are read back).

    Args:
        out: the run folder.
        quick: a smoke-test size.
        seed: seeds the QA items, the scorer chats and the SFT.
        model: the model under test (a :func:`trustlab.models.load_model` spec; None: the embedded SmolLM2).
            (B) and (C) run only with the default model: their models are fixed by the spec.
        parts: the stages to run now; only a call with all of them writes the summary (returns [] otherwise).

    Example:
        >>> claims = run(Path("runs/reproduce/context-awareness"), quick=True)
    """
    from trustlab.models import load_model
    from trustlab.reproduce import is_default_model, model_slug

    default = is_default_model(model)
    wanted = [p for p in parts if default or p == "benchmark"]
    bench = scorer = arms = None
    if "scorer" in wanted or "finetune" in wanted:
        scorer = _scorer_validity(out, QUICK_SCORER if quick else SCORER, seed)
    if "finetune" in wanted:
        arms = _indicator_arms(out / "finetune", scorer, QUICK_FINETUNE if quick else FINETUNE, seed, quick)
    if "benchmark" in wanted:
        handle = load_model(model or "embedded", attn_implementation="sdpa")
        bench = _benchmark(out, handle, grid_size(model_slug(model), handle.capabilities.max_context, quick=quick),
                           seed, quick)
    if set(parts) != set(PARTS):
        return []
    assert bench is not None
    roles = {"model": bench["name"]}
    setup = {"model": bench["model_line"], "roles": roles, "haystack": "Verne, In the Year 2889 (reasoning-gym)",
             "greedy": True, "quick": quick, **bench["size"]}
    rows, summary = bench["niah_rows"] + bench["qa_rows"], bench["summary"]
    claims = [_gap_claim(rows, summary, bench["mass"], setup), _steering_claim(rows, summary, bench["size"], setup)]
    details = {k: bench[k] for k in ("summary", "user_attention_mass", "no_template_cue_ablation",
                                     "invalid_answers", "seconds_this_call", "size")}
    if scorer is not None and arms is not None:
        claims += [_scorer_claim(scorer, setup), _indicator_claim(arms, setup)]
        details["scorer_auroc"] = scorer["result"]
        details["indicator_finetune"] = {k: v for k, v in arms.items() if k != "rows"}
    write_json(out / "details.json", details)
    write_summary(out, claims)
    return claims


def _benchmark(out: Path, model: Any, size: dict[str, Any], seed: int, quick: bool) -> dict[str, Any]:
    """(a), (b), (c) for one model: NIH and QA rows, the attention mass, the cue ablation, plots."""
    described = model.describe()
    folder = RunFolder(out, {"method": METHOD, "model": described, "size": size, "seed": seed, "quick": quick})
    t0 = time.perf_counter()
    needles = NEEDLES[: size["needles"]]
    grid = niah_probes(model.tokenizer, size["lengths"], size["depths"], needles)
    if size["long_lengths"]:
        grid += niah_probes(model.tokenizer, size["long_lengths"], size["long_depths"], NEEDLES[: size["long_needles"]])
    niah_rows = run_probes(model, grid, conditions(size["alphas"]), run=folder, max_new_tokens=size["new_tokens"],
                           batch_size=1)
    qa = qa_probes(counterfactual_items(size["qa_items"], seed=seed))
    qa_rows = run_probes(model, qa, conditions(size["qa_alphas"]), run=folder, max_new_tokens=16)
    cue_conds = [Condition(name, chat_template=False, cue=cue) for name, cue in CUES.items()]
    cue_rows = run_probes(model, grid[: size["cue_probes"]], cue_conds, run=folder,
                          max_new_tokens=size["new_tokens"], batch_size=1)
    texts = [niah_prompt(build_context(model.tokenizer, n, 0.5), needles[0].question) for n in size["mass_lengths"]]
    mass = {"template": user_attention_mass(model, texts, chat_template=True),
            "no_template": user_attention_mass(model, texts, chat_template=False)}
    summary = summarise(niah_rows + qa_rows)
    cue_ids = {p.id for p in grid[: size["cue_probes"]]}
    cue_summary = summarise(cue_rows)["niah"]
    cue_summary["cue_answer_space (default)"] = summarise(
        [r for r in niah_rows if r["condition"] == "no_template" and r["probe"] in cue_ids])["niah"]["no_template"]
    display = str(described.get("name", model.name)).removeprefix("embedded:")
    folder.save_plot(plot_niah(niah_rows, f"NIH recall error, {display}"), "niah_heatmaps")
    folder.save_plot(_alpha_plot(summary, display), "steering_alpha_grid")
    invalid = Counter(r["invalid_reason"] for r in niah_rows + qa_rows if not r["valid"])
    line = f"{display} ({described.get('dtype', '?')}, sdpa; attention mass: eager)"
    return {"name": model.name, "model_line": line, "niah_rows": niah_rows, "qa_rows": qa_rows, "summary": summary,
            "mass": mass, "user_attention_mass": mass, "no_template_cue_ablation": cue_summary,
            "invalid_answers": dict(invalid), "seconds_this_call": round(time.perf_counter() - t0, 1), "size": size}


def auroc(positive: list[float], negative: list[float]) -> float:
    """P(score of a random positive > score of a random negative), ties counting half (Mann-Whitney)."""
    wins = sum((p > n) + 0.5 * (p == n) for p in positive for n in negative)
    return wins / (len(positive) * len(negative))


def _auroc_of(scores: Any, labels: Any) -> float:
    """:func:`auroc` of scores with 1/0 labels (NaN for a resample holding one class only)."""
    pos = [s for s, y in zip(scores, labels) if y == 1]
    neg = [s for s, y in zip(scores, labels) if y == 0]
    return auroc(pos, neg) if pos and neg else math.nan


def _scorer_validity(out: Path, size: dict[str, Any], seed: int) -> dict[str, Any]:
    """(B): AUROC of the score per layer (with its interval), the chats, their labels and layer-20 scores.

    Cached in ``out/scorer.json`` (keyed by size and seed), as the benchmark and the fine-tuning may run in
    separate processes.
    """
    n = size["scorer_chats"]
    chats = context_conversations(n, seed=seed) + knowledge_conversations(n, seed=seed)
    labels = [1] * n + [0] * n
    key = {"size": {k: list(v) if isinstance(v, tuple) else v for k, v in size.items()}, "seed": seed,
           "probe": SCORER_PROBE}
    cache = out / "scorer.json"
    if cache.exists() and read_json(cache).get("key") == key:
        cached = read_json(cache)
        return {**cached, "chats": chats, "labels": labels}
    from trustlab.models import load_model

    probe = load_model(SCORER_PROBE, attn_implementation="sdpa")
    t0 = time.perf_counter()
    scores = score_conversations_at(chats, probe, size["scorer_layers"])
    result: dict[str, Any] = {}
    for layer, per_conv in scores.items():
        flat = [s[0] for s in per_conv]
        pos, neg = flat[:n], flat[n:]
        ci = bootstrap_metric_ci(_auroc_of, flat, labels)
        ci = [ci[0] - 0.5, ci[1] - 0.5] if ci else None  # of AUROC - chance
        result[str(layer)] = {"auroc": auroc(pos, neg), "ci_minus_chance": ci, "mean_context": sum(pos) / n,
                              "mean_knowledge": sum(neg) / n, "share_above_0.6_context": sum(p > 0.6 for p in pos) / n,
                              "share_above_0.6_knowledge": sum(q > 0.6 for q in neg) / n}
    layer = 20 if 20 in scores else size["scorer_layers"][0]
    described = probe.describe()
    cached = {"key": key, "result": result, "layer": layer, "scores": scores[layer], "n_per_group": n,
              "probe": f"{str(described.get('name')).removeprefix('embedded:')} ({described.get('dtype')})",
              "seconds": round(time.perf_counter() - t0, 1)}
    write_json(cache, cached)
    return {**cached, "chats": chats, "labels": labels}


def _indicator_arms(out: Path, scorer: dict[str, Any], size: dict[str, Any], seed: int,
                    quick: bool) -> dict[str, Any]:
    """(C): LoRA SFT of the base model, plain vs [IND]-labelled at tau; the NIH grid (and QA) with the template."""
    from trustlab.context.finetune import ZEPHYR_TEMPLATE, finetune_arm, training_sets
    from trustlab.train import SFTConfig

    plain, labelled, info = training_sets(scorer["chats"], scorer["scores"], scorer["labels"], size["train_chats"],
                                          tau=size["tau"], seed=seed)
    folder = RunFolder(out, {"method": METHOD, "part": "finetune", "base": FINETUNE_BASE, "size": size, "seed": seed,
                             "quick": quick, "scorer": scorer["key"], "template": ZEPHYR_TEMPLATE})
    from transformers import AutoTokenizer

    from trustlab.models.embedded import model_dir

    tok = AutoTokenizer.from_pretrained(model_dir(FINETUNE_BASE.split(":", 1)[1]))  # builds the probes
    grid = niah_probes(tok, size["lengths"], size["depths"], NEEDLES[: size["needles"]])
    items = counterfactual_items(size["qa_items"], seed=seed)
    result: dict[str, Any] = {"data": info, "base": FINETUNE_BASE, "rows": []}
    for arm, data, extra in (("plain", plain, ()), ("ind", labelled, ("[IND]",))):
        probes = [dataclasses.replace(p, task=f"sft_{arm}_niah") for p in grid] + qa_probes(items, f"sft_{arm}_qa")
        conds = [Condition("template")] + ([Condition("template+[IND]", indicator=" [IND]")] if extra else [])
        done = folder.done_keys()
        todo = any(f"context/{p.task}/{c.name}/{p.id}" not in done for p in probes for c in conds)
        cfg = SFTConfig(optimizer="adamw", lr=size["lr"], steps=math.ceil(len(data) / size["batch_size"]),
                        batch_size=size["batch_size"], rank=size["rank"], alpha=size["alpha"],
                        dropout=size["dropout"], max_length=size["max_length"], seed=seed, extra_special_tokens=extra,
                        response_logits_only=True)
        handle, log = (finetune_arm(FINETUNE_BASE, data, cfg, out / "checkpoints" / arm) if todo
                       else (None, read_json(out / "checkpoints" / arm / "sft_log.json")))
        niah = run_probes(handle, probes[: len(grid)], conds, run=folder, max_new_tokens=size["new_tokens"],
                          batch_size=1)
        qa = run_probes(handle, probes[len(grid):], conds, run=folder, max_new_tokens=16)
        result["rows"] += niah + qa
        result[arm] = {"sft": {k: log.get(k) for k in ("steps_run", "planned_steps", "diverged", "seconds", "examples")},
                       "loss_first_last": [log["losses"][0]["loss"], log["losses"][-1]["loss"]] if log["losses"] else None,
                       "summary": summarise(niah + qa)}
        del handle
    return result


def _alpha_plot(summary: dict[str, Any], display: str) -> Any:
    pyplot = plt()
    qa = summary["counterfactual"]
    alphas = sorted(float(c.split("_")[1]) for c in qa if c.startswith("steered_"))
    xs = alphas + [1.0]
    rate = {c: math.nan if v["follows_context"] is None else v["follows_context"] for c, v in qa.items()}
    ys = [rate[f"steered_{a:g}"] for a in alphas] + [rate["template"]]
    fig, ax = pyplot.subplots(figsize=(5, 3.2))
    ax.plot(xs, ys, "o-", label="template + steering (alpha = 1: template)")
    ax.axhline(rate["no_template"], color="gray", ls="--", label="no template")
    ax.set_xlabel("alpha (attention scale on non-user prompt tokens)")
    ax.set_ylabel("answers that follow the context")
    ax.set_title(f"Counterfactual context QA, {display}", fontsize=9)
    ax.legend(fontsize=7)
    return fig


def _comparison(rows: list[dict[str, Any]], task: str, metric: str, ours: str, baseline: str) -> dict[str, Any]:
    """Paired means, n, interval and validity of ``ours`` vs ``baseline`` on the probes valid under both."""
    ids, a, b = paired(rows, task, metric, ours, baseline)
    arms = [r for r in rows if r["task"] == task and r["condition"] in (ours, baseline)]
    rates = {c: sum(r["valid"] for r in arms if r["condition"] == c) / max(1, sum(r["condition"] == c for r in arms))
             for c in (ours, baseline)}
    return {"ours": sum(a) / len(a) if a else None, "baseline": sum(b) / len(b) if b else None, "n": len(ids),
            "ci": bootstrap_diff_ci(a, b), "valid_rate": sum(r["valid"] for r in arms) / len(arms) if arms else None,
            "valid_ok": min(rates.values()) >= MIN_VALID, "rates": rates}


def _fmt_ci(ci: list[float] | None) -> str:
    return "none" if ci is None else f"[{ci[0]:+.3f}, {ci[1]:+.3f}]"


def _gap_claim(rows: list[dict[str, Any]], summary: dict[str, Any], mass: dict[str, float],
               setup: dict[str, Any]) -> Claim:
    c = _comparison(rows, "niah", "recall_error", "template", "no_template")
    qa = summary["counterfactual"]
    informative = c["baseline"] is not None and c["baseline"] <= 0.8
    measurable = c["valid_ok"] and informative and c["n"] > 0
    gap = c["ours"] - c["baseline"] if c["n"] else math.nan
    ok = measurable and gap >= 0.05 and c["ci"] is not None and c["ci"][0] > 0 and mass["template"] < mass["no_template"]
    return Claim(
        METHOD, "Instruction-tuned models use user context worse with the chat template than without",
        "NIH recall error (lower is better)", c["ours"], c["baseline"], "no chat template", ok, setup,
        higher_is_better=False, n=c["n"], ci=c["ci"], valid_rate=c["valid_rate"], measurable=measurable,
        note=f"gap {gap:+.3f}, 95% CI {_fmt_ci(c['ci'])} over {c['n']} probes valid under both (pass: >= +0.05 with "
             f"the interval above 0); user attention mass {mass['template']:.3f} with template vs "
             f"{mass['no_template']:.3f} without (pass: lower with template; partly structural: without a template "
             f"nearly every prompt token is user content). Valid answers: {_rates(c)}."
             f"{'' if informative else ' Uninformative: no-template error > 0.8.'} Counterfactual QA follows the "
             f"context: no template {_num(qa['no_template']['follows_context'])}, template "
             f"{_num(qa['template']['follows_context'])} (n={qa['template']['n']}). No-template answers hinge on the "
             "answer cue (details.json: no_template_cue_ablation).")


def _steering_claim(rows: list[dict[str, Any]], summary: dict[str, Any], size: dict[str, Any],
                    setup: dict[str, Any]) -> Claim:
    alpha = size["alphas"][0]
    c = _comparison(rows, "niah", "recall_error", f"steered_{alpha:g}", "template")
    room = c["baseline"] is not None and c["baseline"] >= 0.05
    measurable = c["valid_ok"] and room and c["n"] > 0
    gain = c["baseline"] - c["ours"] if c["n"] else math.nan
    changed = sum(1 for x, y in zip(*paired(rows, "niah", "recall_error", f"steered_{alpha:g}", "template")[1:])
                  if x != y)
    ok = measurable and gain >= 0.05 and c["ci"] is not None and c["ci"][1] < 0
    qa = summary["counterfactual"]
    return Claim(
        METHOD, "Steering attention toward user tokens lowers the templated recall error",
        "NIH recall error (lower is better)", c["ours"], c["baseline"], "template, unsteered", ok,
        {**setup, "alpha": alpha}, higher_is_better=False, n=c["n"], ci=c["ci"], valid_rate=c["valid_rate"],
        measurable=measurable,
        note=f"template minus steered = {gain:+.3f}, 95% CI of steered minus template {_fmt_ci(c['ci'])} over "
             f"{c['n']} probes valid under both, {changed} of which changed (pass: >= +0.05 with the interval below "
             f"0; measurable only if the template error is >= 0.05). Valid answers: {_rates(c)}."
             f"{'' if room else ' Not measurable: the template error leaves nothing to recover.'} "
             "QA follows-context with steering: "
             + ", ".join(f"alpha {k.split('_')[1]}: {_num(v['follows_context'])}" for k, v in qa.items()
                         if k.startswith("steered_"))
             + f" (template {_num(qa['template']['follows_context'])}). Alpha 0.95 (spec) on QA only: on the NIH grid "
             "it did not fit.")


def _scorer_claim(scorer: dict[str, Any], setup: dict[str, Any]) -> Claim:
    result, layer = scorer["result"], str(scorer["layer"])
    at = result[layer]
    ci = at["ci_minus_chance"]
    n = scorer["n_per_group"]
    return Claim(
        METHOD, "The user-attention ratio separates context-dependent from knowledge-only SFT examples",
        f"AUROC at layer {layer} of 30 (SmolLM2 as probe)", at["auroc"], 0.5, "chance",
        at["auroc"] >= 0.7 and ci is not None and ci[0] > 0,
        {**setup, "probe": scorer["probe"], "chats_per_group": n, "layers": [int(k) for k in result]},
        n=2 * n, ci=ci, valid_rate=None,
        note=f"pass: AUROC >= 0.7 with the interval of AUROC - 0.5 above 0 (bootstrap over chats: "
             f"{_fmt_ci(ci)}). Mean score {at['mean_context']:.3f} (context) vs {at['mean_knowledge']:.3f} "
             "(knowledge); other layers: " + ", ".join(f"{k}: {v['auroc']:.3f}" for k, v in result.items()
                                                        if k != layer) + ". The groups also differ in length and "
             "format (passage + question vs a one-line task), which the score may partly pick up.")


def _indicator_claim(arms: dict[str, Any], setup: dict[str, Any]) -> Claim:
    rows = arms["rows"]
    ind = [{**r, "task": "sft", "condition": f"ind:{r['condition']}"} for r in rows if r["task"] == "sft_ind_niah"]
    plain = [{**r, "task": "sft", "condition": "plain"} for r in rows if r["task"] == "sft_plain_niah"]
    c = _comparison(ind + plain, "sft", "recall_error", "ind:template+[IND]", "plain")
    within = _comparison(ind, "sft", "recall_error", "ind:template+[IND]", "ind:template")
    room = c["baseline"] is not None and c["baseline"] >= 0.05
    measurable = c["valid_ok"] and room and c["n"] > 0
    diff = c["ours"] - c["baseline"] if c["n"] else math.nan
    ok = measurable and diff <= -0.05 and c["ci"] is not None and c["ci"][1] < 0
    qa = {arm: arms[arm]["summary"].get(f"sft_{arm}_qa", {}) for arm in ("plain", "ind")}
    data = arms["data"]
    return Claim(
        METHOD, "Conditional fine-tuning with [IND] improves use of user context when [IND] is given",
        "NIH recall error with the template (lower is better)", c["ours"], c["baseline"],
        "same LoRA SFT without [IND] labels", ok,
        {**setup, "base": f"{arms['base'].removeprefix('embedded:')} base (no chat template; Zephyr-style applied)",
         "sft": "LoRA r=16 alpha=16 dropout 0.05 on all projections, AdamW lr 2e-4 constant, 1 epoch, batch 8, "
                "seq <= 384, float32; evaluated merged in the inference dtype",
         "scorer": "SmolLM2-135M-Instruct, layer 20 of 30", "tau": data["tau"], "train_chats": data["chats"],
         "labelled": data["labelled_group_1"] + data["labelled_group_0"]},
        higher_is_better=False, n=c["n"], ci=c["ci"], valid_rate=c["valid_rate"], measurable=measurable,
        note=f"arm 2 + [IND] minus arm 1 = {diff:+.3f}, 95% CI {_fmt_ci(c['ci'])} over {c['n']} NIH probes valid "
             f"under both (pass decided beforehand: <= -0.05 with the interval below 0; the spec counts (C) as a "
             f"pipeline check). Arm 2 without [IND]: {_num(within['baseline'])} (with minus without "
             f"{_fmt_ci(within['ci'])}, n={within['n']}). Labelled: {data['labelled_group_1']} of "
             f"{data['group_1']} context chats, {data['labelled_group_0']} of {data['group_0']} knowledge chats. "
             f"Counterfactual QA follows the context: arm 1 {_num(qa['plain'].get('template', {}).get('follows_context'))}, "
             f"arm 2 {_num(qa['ind'].get('template', {}).get('follows_context'))}, arm 2 + [IND] "
             f"{_num(qa['ind'].get('template+[IND]', {}).get('follows_context'))}. Valid answers: {_rates(c)}."
             + ("" if room else " Not measurable: no probe has a valid answer under both arms." if not c["n"]
                else " Not measurable: arm 1 leaves nothing to recover."))


def _rates(c: dict[str, Any]) -> str:
    return ", ".join(f"{k} {v:.3f}" for k, v in c["rates"].items())


def _num(x: float | None) -> str:
    """A rate for a note (``n/a`` when no answer of its group was valid)."""
    return "n/a" if x is None else f"{x:.3f}"
