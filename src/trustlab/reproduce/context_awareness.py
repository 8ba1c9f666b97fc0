"""``trustlab reproduce context-awareness``: the spec's small-scale reproduction on SmolLM2-135M-Instruct.

(a) template gap: NIH grid (Verne haystack, 3 needles, 3 lengths x 5 depths = 45 probes) and counterfactual
    context QA, with and without the chat template, plus the last prompt token's attention mass on the user's
    content;
(b) steering: the same NIH grid steered at alpha 0.9, and an alpha grid on context QA;
(c) the no-template answer cue (the spec marks the no-template wording as unverified), measured, not tuned;
(B) scorer validity: the user-attention ratio of context-dependent vs knowledge-only chats (AUROC);
(C) conditional fine-tuning: LoRA SFT on those chats, plain vs [IND]-labelled, then counterfactual QA.

Decided before the run (never tuned on its results):

- Valid data: an answer that echoes the prompt's instruction or only its format (see
  :mod:`trustlab.context.bench`) is invalid: counted in ``valid_rate`` and never scored. Paired comparisons
  use the probes whose answers are valid under both conditions; ``n`` is that number.
- Intervals: ``ci`` is the 95% paired bootstrap interval (2000 resamples, seed 0) of ours minus baseline over
  those probes (for the AUROC: over chats, against a constant scorer's 0.5).
- Measurable: every compared condition has ``valid_rate >= 0.8``; for the gap also the spec's pre-check
  (no-template recall error <= 0.8, else the run is uninformative); for steering also room to improve
  (template recall error >= 0.05, else there is nothing to recover). A claim that fails these is "not
  measurable" and never "reproduced".
- Reproduced (the spec's thresholds, plus an interval that excludes zero in the claimed direction):
  gap: template minus no-template recall error >= 0.05 with ``ci[0] > 0``, and less user attention mass with
  the template; steering: template minus steered (alpha 0.9) recall error >= 0.05 with ``ci[1] < 0``; scorer:
  AUROC >= 0.7 at layer 20 of 30 with ``ci[0] > 0``; [IND]: follows-context rate of the [IND] arm with [IND]
  minus the plain arm >= 0.05 with ``ci[0] > 0``.

Generation uses sdpa attention (steering supports it); greedy decoding. Every answer is a row of
samples.jsonl keyed by ``context/<task>/<condition>/<probe>``; a killed run resumes from them.
"""

from __future__ import annotations

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
from trustlab.context.indicator import label_conversations, score_conversations_at
from trustlab.report import Claim, RunFolder, plt, write_json, write_summary
from trustlab.report.stats import bootstrap_diff_ci, bootstrap_metric_ci

METHOD = "context-awareness"
MIN_VALID = 0.8  # valid_rate every compared condition needs for a claim to be measurable
# Sized for a 2-core machine shared with other jobs (the spec's 5 x 5 x 3 grid and alpha 0.95 do not fit).
FULL = {"lengths": (250, 500, 1000), "depths": (0.0, 0.25, 0.5, 0.75, 1.0), "needles": 3, "new_tokens": 32,
        "alphas": (0.9,), "qa_items": 24, "qa_alphas": (0.5, 0.9), "mass_lengths": (250, 1000), "cue_probes": 3,
        "scorer_chats": 40, "scorer_layers": (10, 20, 25), "sft_steps": 5}
QUICK = {"lengths": (200,), "depths": (0.5,), "needles": 1, "new_tokens": 8, "alphas": (0.9,), "qa_items": 4,
         "qa_alphas": (0.9,), "mass_lengths": (200,), "cue_probes": 1, "scorer_chats": 4, "scorer_layers": (20,),
         "sft_steps": 1}
CUES = {"cue_none": "", "cue_answer_colon": "\nAnswer:"}  # the default cue is "\nAnswer: "


def run(out: Path, *, quick: bool = False, seed: int = 0) -> list[Claim]:
    """Run (a)-(C) into ``out`` (resumable: finished answers are read back from samples.jsonl).

    Example:
        >>> claims = run(Path("runs/reproduce/context-awareness"), quick=True)
    """
    from trustlab.models import load_model

    size = QUICK if quick else FULL
    model = load_model("embedded", attn_implementation="sdpa")
    folder = RunFolder(out, {"method": METHOD, "model": model.describe(), "size": size, "seed": seed,
                             "quick": quick})
    t0 = time.perf_counter()
    needles = NEEDLES[: size["needles"]]
    grid = niah_probes(model.tokenizer, size["lengths"], size["depths"], needles)
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
    scorer, chats, scores = _scorer_validity(model, size, seed)
    arms, arm_rows = _indicator_arms(folder, chats, scores, size, seed)
    invalid = Counter(r["invalid_reason"] for r in niah_rows + qa_rows + arm_rows if not r["valid"])
    details = {"summary": summary, "user_attention_mass": mass, "no_template_cue_ablation": cue_summary,
               "scorer_auroc": scorer, "indicator_finetune": arms, "invalid_answers": dict(invalid),
               "seconds": round(time.perf_counter() - t0, 1), "size": size}
    write_json(out / "details.json", details)
    folder.save_plot(plot_niah(niah_rows, "NIH recall error, SmolLM2-135M-Instruct"), "niah_heatmaps")
    folder.save_plot(_alpha_plot(summary), "steering_alpha_grid")
    setup = {"model": "SmolLM2-135M-Instruct (embedded, Q4_1 dequantised, fp32, sdpa)", "haystack":
             "Verne, In the Year 2889 (reasoning-gym)", "greedy": True, "quick": quick, **size}
    claims = [_gap_claim(niah_rows, summary, mass, setup), _steering_claim(niah_rows, summary, size, setup),
              _scorer_claim(scorer, size, setup), _indicator_claim(arm_rows, arms, summary, size, setup)]
    write_summary(out, claims)
    return claims


def auroc(positive: list[float], negative: list[float]) -> float:
    """P(score of a random positive > score of a random negative), ties counting half (Mann-Whitney)."""
    wins = sum((p > n) + 0.5 * (p == n) for p in positive for n in negative)
    return wins / (len(positive) * len(negative))


def _auroc_of(scores: Any, labels: Any) -> float:
    """:func:`auroc` of scores with 1/0 labels (NaN for a resample holding one class only)."""
    pos = [s for s, y in zip(scores, labels) if y == 1]
    neg = [s for s, y in zip(scores, labels) if y == 0]
    return auroc(pos, neg) if pos and neg else math.nan


def _scorer_validity(model: Any, size: dict[str, Any], seed: int) -> tuple[dict[str, Any], list, list]:
    """AUROC of the score per layer (with its interval); the chats and their layer-20 scores for (C)."""
    n = size["scorer_chats"]
    ctx, know = context_conversations(n, seed=seed), knowledge_conversations(n, seed=seed)
    scores = score_conversations_at(ctx + know, model, size["scorer_layers"])
    labels = [1] * n + [0] * n
    out: dict[str, Any] = {}
    for layer, per_conv in scores.items():
        flat = [s[0] for s in per_conv]
        pos, neg = flat[:n], flat[n:]
        ci = bootstrap_metric_ci(_auroc_of, flat, labels)
        ci = [ci[0] - 0.5, ci[1] - 0.5] if ci else None  # of AUROC - chance
        out[str(layer)] = {"auroc": auroc(pos, neg), "ci_minus_chance": ci, "mean_context": sum(pos) / n,
                           "mean_knowledge": sum(neg) / n, "share_above_0.6_context": sum(p > 0.6 for p in pos) / n,
                           "share_above_0.6_knowledge": sum(q > 0.6 for q in neg) / n}
    return out, ctx + know, scores[20 if 20 in scores else size["scorer_layers"][0]]


def _indicator_arms(folder: RunFolder, chats: list, scores: list, size: dict[str, Any],
                    seed: int) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """LoRA SFT of SmolLM2 on the scorer chats: plain vs [IND]-labelled at tau 0.6; counterfactual QA after."""
    from trustlab.models import load_model
    from trustlab.train import SFTConfig, lora_finetune

    labelled = label_conversations(chats, scores, tau=0.6)
    items = counterfactual_items(size["qa_items"], seed=seed)
    out: dict[str, Any] = {"labelled": sum(a != b for a, b in zip(labelled, chats)), "chats": len(chats)}
    all_rows: list[dict[str, Any]] = []
    for arm, data, extra in (("plain", chats, ()), ("ind", labelled, ("[IND]",))):
        base = load_model("embedded", attn_implementation="sdpa")
        cfg = SFTConfig(optimizer="adamw", lr=1e-3, steps=size["sft_steps"], batch_size=8, rank=16, alpha=16,
                        max_length=384, seed=seed, extra_special_tokens=extra)
        tuned, log = lora_finetune(base.model, base.tokenizer, [{"messages": c} for c in data], cfg)
        handle = load_model(tuned.eval(), tokenizer=base.tokenizer)  # safe: torch Module.eval(), not Python eval
        conds = [Condition("template")] + ([Condition("template+[IND]", indicator=" [IND]")] if extra else [])
        rows = run_probes(handle, qa_probes(items, f"sft_{arm}"), conds, run=folder, max_new_tokens=16)
        all_rows += rows
        out[arm] = {"loss_first_last": [log[0]["loss"], log[-1]["loss"]] if log else None,
                    **{c: v["follows_context"] for c, v in summarise(rows)[f"sft_{arm}"].items()}}
    return out, all_rows


def _alpha_plot(summary: dict[str, Any]) -> Any:
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
    ax.set_title("Counterfactual context QA, SmolLM2-135M-Instruct", fontsize=9)
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
             + f" (template {_num(qa['template']['follows_context'])}). Alpha 0.95 (spec) not run: it did not fit.")


def _scorer_claim(scorer: dict[str, Any], size: dict[str, Any], setup: dict[str, Any]) -> Claim:
    layer = "20" if "20" in scorer else next(iter(scorer))
    at = scorer[layer]
    ci = at["ci_minus_chance"]
    return Claim(
        METHOD, "The user-attention ratio separates context-dependent from knowledge-only SFT examples",
        f"AUROC at layer {layer} of 30 (SmolLM2 as probe)", at["auroc"], 0.5, "chance",
        at["auroc"] >= 0.7 and ci is not None and ci[0] > 0,
        {**setup, "chats_per_group": size["scorer_chats"], "layers": list(size["scorer_layers"])},
        n=2 * size["scorer_chats"], ci=ci, valid_rate=None,
        note=f"pass: AUROC >= 0.7 with the interval of AUROC - 0.5 above 0 (bootstrap over chats: "
             f"{_fmt_ci(ci)}). Mean score {at['mean_context']:.3f} (context) vs {at['mean_knowledge']:.3f} "
             "(knowledge); other layers: " + ", ".join(f"{k}: {v['auroc']:.3f}" for k, v in scorer.items()
                                                        if k != layer) + ". The groups also differ in length and "
             "format (passage + question vs a one-line task), which the score may partly pick up.")


def _indicator_claim(rows: list[dict[str, Any]], arms: dict[str, Any], summary: dict[str, Any],
                     size: dict[str, Any], setup: dict[str, Any]) -> Claim:
    ind = [{**r, "task": "sft", "condition": f"ind:{r['condition']}"} for r in rows if r["task"] == "sft_ind"]
    plain = [{**r, "task": "sft", "condition": "plain"} for r in rows if r["task"] == "sft_plain"]
    c = _comparison(ind + plain, "sft", "follows_context", "ind:template+[IND]", "plain")
    measurable = c["valid_ok"] and c["n"] > 0
    win = c["ours"] - c["baseline"] if c["n"] else math.nan
    ok = measurable and win >= 0.05 and c["ci"] is not None and c["ci"][0] > 0
    return Claim(
        METHOD, "Conditional fine-tuning with [IND] improves use of user context when [IND] is given",
        "counterfactual QA: answers that follow the context", c["ours"], c["baseline"],
        "same LoRA SFT without [IND] labels", ok,
        {**setup, "base": "SmolLM2-135M-Instruct (not Gemma-3-270m: not installed in the time box)",
         "sft": "LoRA r=16 alpha=16 dropout 0, AdamW lr 1e-3 (spec: 2e-4; raised as only a few steps fit), batch 8",
         "steps": size["sft_steps"], "tau": 0.6, "labelled": arms["labelled"], "chats": arms["chats"]},
        n=c["n"], ci=c["ci"], valid_rate=c["valid_rate"], measurable=measurable,
        note=f"A pipeline check at toy scale (pass decided beforehand: +0.05 with the interval above 0): "
             f"{win:+.3f}, 95% CI {_fmt_ci(c['ci'])} over {c['n']} items. [IND] arm without the indicator: "
             f"{_num(arms['ind']['template'])}; labelled {arms['labelled']} of {arms['chats']} chats; the untuned "
             f"model: {_num(summary['counterfactual']['template']['follows_context'])}. Valid answers: {_rates(c)}.")


def _rates(c: dict[str, Any]) -> str:
    return ", ".join(f"{k} {v:.3f}" for k, v in c["rates"].items())


def _num(x: float | None) -> str:
    """A rate for a note (``n/a`` when no answer of its group was valid)."""
    return "n/a" if x is None else f"{x:.3f}"
