"""``trustlab reproduce context-awareness``: the spec's small-scale reproduction on SmolLM2-135M-Instruct.

(a) template gap: NIH grid (Verne haystack, 3 needles) and counterfactual context QA, with and without the
    chat template, plus the last prompt token's attention mass on the user's content;
(b) steering: the same NIH grid steered at alpha 0.9 and 0.95, and an alpha grid on context QA;
(c) the no-template answer cue (the spec marks the no-template wording as unverified), measured, not tuned;
(B) scorer validity: the user-attention ratio of context-dependent vs knowledge-only chats (AUROC);
(C) conditional fine-tuning: LoRA SFT on those chats, plain vs [IND]-labelled, then counterfactual QA.

Pass conditions come from the spec (section 6, Experiment A) and were fixed before the run:
gap: recall error(template) - recall error(no_template) >= 0.05 on the pooled grid AND less user attention
mass with the template (uninformative if the no-template error is > 0.8); steering: alpha 0.9 lowers the
template recall error by >= 0.05; scorer: AUROC >= 0.7 at layer 20 of 30 (Experiment B). Generation uses sdpa attention (steering supports it); greedy decoding.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from trustlab.bench.context_qa import context_conversations, counterfactual_items, knowledge_conversations
from trustlab.bench.niah import NEEDLES, build_context, niah_prompt
from trustlab.context.bench import (
    Condition,
    conditions,
    niah_probes,
    plot_niah,
    qa_probes,
    run_probes,
    summarise,
    user_attention_mass,
)
from trustlab.context.indicator import label_conversations, score_conversations_at
from trustlab.report import Claim, RunFolder, plt, write_json, write_summary

METHOD = "context-awareness"
# Sized for a 2-core machine shared with other jobs (the spec's 5 x 5 x 3 grid did not fit the time box).
FULL = {"lengths": (250, 1000), "depths": (0.0, 0.5, 1.0), "needles": 3, "new_tokens": 40,
        "qa_items": 24, "qa_alphas": (0.5, 0.9), "mass_lengths": (250, 1000), "cue_probes": 3,
        "scorer_chats": 40, "scorer_layers": (10, 20, 25), "sft_steps": 5}
QUICK = {"lengths": (200,), "depths": (0.5,), "needles": 1, "new_tokens": 8, "qa_items": 4,
         "qa_alphas": (0.9,), "mass_lengths": (200,), "cue_probes": 1, "scorer_chats": 4, "scorer_layers": (20,),
         "sft_steps": 1}
CUES = {"cue_none": "", "cue_answer_colon": "\nAnswer:"}  # the default cue is "\nAnswer: "


def run(out: Path, *, quick: bool = False, seed: int = 0) -> list[Claim]:
    """Run (a)-(c) into ``out`` (resumable: finished probes are read back from samples.jsonl)."""
    from trustlab.models import load_model

    size = QUICK if quick else FULL
    model = load_model("embedded", attn_implementation="sdpa")
    folder = RunFolder(out, {"method": METHOD, "model": model.describe(), "size": size, "seed": seed})
    t0 = time.perf_counter()
    needles = NEEDLES[: size["needles"]]
    grid = niah_probes(model.tokenizer, size["lengths"], size["depths"], needles)
    niah_rows = run_probes(model, grid, conditions((0.9, 0.95)), run=folder, max_new_tokens=size["new_tokens"],
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
    cue_summary = summarise(cue_rows)["niah"]
    cue_summary["cue_answer_space (default)"] = summarise(
        [r for r in niah_rows if r["condition"] == "no_template" and r["probe"] in
         {p.id for p in grid[: size["cue_probes"]]}])["niah"]["no_template"]
    auroc, chats, scores = _scorer_validity(model, size, seed)
    arms = _indicator_arms(folder, chats, scores, size, seed)
    details = {"summary": summary, "user_attention_mass": mass, "no_template_cue_ablation": cue_summary,
               "scorer_auroc": auroc, "indicator_finetune": arms, "seconds": round(time.perf_counter() - t0, 1),
               "size": size}
    write_json(out / "details.json", details)
    folder.save_plot(plot_niah(niah_rows, "NIH recall error, SmolLM2-135M-Instruct"), "niah_heatmaps")
    folder.save_plot(_alpha_plot(summary), "steering_alpha_grid")
    return _claims(out, summary, mass, auroc, arms, size)


def auroc(positive: list[float], negative: list[float]) -> float:
    """P(score of a random positive > score of a random negative), ties counting half (Mann-Whitney)."""
    wins = sum((p > n) + 0.5 * (p == n) for p in positive for n in negative)
    return wins / (len(positive) * len(negative))


def _scorer_validity(model: Any, size: dict[str, Any], seed: int) -> tuple[dict[str, Any], list, list]:
    """AUROC of the score per layer; also the chats and their layer-20 scores for the fine-tuning arms."""
    n = size["scorer_chats"]
    ctx, know = context_conversations(n, seed=seed), knowledge_conversations(n, seed=seed)
    scores = score_conversations_at(ctx + know, model, size["scorer_layers"])
    out: dict[str, Any] = {}
    for layer, per_conv in scores.items():
        pos, neg = [s[0] for s in per_conv[:n]], [s[0] for s in per_conv[n:]]
        out[str(layer)] = {"auroc": auroc(pos, neg), "mean_context": sum(pos) / n, "mean_knowledge": sum(neg) / n,
                           "share_above_0.6_context": sum(p > 0.6 for p in pos) / n,
                           "share_above_0.6_knowledge": sum(q > 0.6 for q in neg) / n}
    return out, ctx + know, scores[20 if 20 in scores else size["scorer_layers"][0]]


def _indicator_arms(folder: RunFolder, chats: list, scores: list, size: dict[str, Any], seed: int) -> dict[str, Any]:
    """LoRA SFT of SmolLM2 on the scorer chats: plain vs [IND]-labelled at tau 0.6; counterfactual QA after."""
    from trustlab.models import load_model
    from trustlab.train import SFTConfig, lora_finetune

    labelled = label_conversations(chats, scores, tau=0.6)
    items = counterfactual_items(size["qa_items"], seed=seed)
    out: dict[str, Any] = {"labelled": sum(a != b for a, b in zip(labelled, chats)), "chats": len(chats)}
    for arm, data, extra in (("plain", chats, ()), ("ind", labelled, ("[IND]",))):
        base = load_model("embedded", attn_implementation="sdpa")
        cfg = SFTConfig(optimizer="adamw", lr=1e-3, steps=size["sft_steps"], batch_size=8, rank=16, alpha=16,
                        max_length=384, seed=seed, extra_special_tokens=extra)
        tuned, log = lora_finetune(base.model, base.tokenizer, [{"messages": c} for c in data], cfg)
        handle = load_model(tuned.eval(), tokenizer=base.tokenizer)  # safe: torch Module.eval(), not Python eval
        conds = [Condition("template")] + ([Condition("template+[IND]", indicator=" [IND]")] if extra else [])
        rows = run_probes(handle, qa_probes(items, f"sft_{arm}"), conds, run=folder, max_new_tokens=16)
        out[arm] = {"loss_first_last": [log[0]["loss"], log[-1]["loss"]] if log else None,
                    **{c: v["follows_context"] for c, v in summarise(rows)[f"sft_{arm}"].items()}}
    return out


def _alpha_plot(summary: dict[str, Any]) -> Any:
    pyplot = plt()
    qa = summary["counterfactual"]
    alphas = sorted(float(c.split("_")[1]) for c in qa if c.startswith("steered_"))
    xs = alphas + [1.0]
    ys = [qa[f"steered_{a:g}"]["follows_context"] for a in alphas] + [qa["template"]["follows_context"]]
    fig, ax = pyplot.subplots(figsize=(5, 3.2))
    ax.plot(xs, ys, "o-", label="template + steering (alpha = 1: template)")
    ax.axhline(qa["no_template"]["follows_context"], color="gray", ls="--", label="no template")
    ax.set_xlabel("alpha (attention scale on non-user prompt tokens)")
    ax.set_ylabel("answers that follow the context")
    ax.set_title("Counterfactual context QA, SmolLM2-135M-Instruct", fontsize=9)
    ax.legend(fontsize=7)
    return fig


def _claims(out: Path, summary: dict[str, Any], mass: dict[str, float], scorer: dict[str, Any],
            arms: dict[str, Any], size: dict[str, Any]) -> list[Claim]:
    niah, qa = summary["niah"], summary["counterfactual"]
    err = {c: v["recall_error"] for c, v in niah.items()}
    setup = {"model": "SmolLM2-135M-Instruct (embedded, Q4_1 dequantised, fp32, sdpa)", "haystack":
             "Verne, In the Year 2889 (reasoning-gym)", "greedy": True, **size}
    gap = err["template"] - err["no_template"]
    uninformative = err["no_template"] > 0.8
    gap_ok = gap >= 0.05 and mass["template"] < mass["no_template"] and not uninformative
    qa_note = (f"Counterfactual QA follows-context rate: no template {qa['no_template']['follows_context']:.3f}, "
               f"template {qa['template']['follows_context']:.3f}.")
    steer = err["template"] - err["steered_0.9"]
    claims = [
        Claim(METHOD, "Instruction-tuned models use user context worse with the chat template than without",
              "NIH recall error (lower is better)", err["template"], err["no_template"], "no chat template",
              gap_ok, setup, higher_is_better=False,
              note=f"gap {gap:+.3f} (pass: >= +0.05); user attention mass {mass['template']:.3f} with template vs "
                   f"{mass['no_template']:.3f} without (pass: lower with template)"
                   f"{'; uninformative: no-template error > 0.8' if uninformative else ''}. {qa_note} The mass "
                   "comparison is partly structural: without a template nearly every prompt token is user content. "
                   "No-template answers hinge on the answer cue (see details.json: no cue or '\\nAnswer:' without "
                   "the trailing space gives recall error 1.0)."),
        Claim(METHOD, "Steering attention toward user tokens lowers the templated recall error",
              "NIH recall error (lower is better)", err["steered_0.9"], err["template"], "template, unsteered",
              steer >= 0.05, {**setup, "alpha": 0.9}, higher_is_better=False,
              note=f"template minus steered = {steer:+.3f} (pass: >= +0.05); alpha 0.95 gives "
                   f"{err['steered_0.95']:.3f}. QA follows-context with steering: "
                   + ", ".join(f"alpha {c.split('_')[1]}: {v['follows_context']:.3f}"
                               for c, v in qa.items() if c.startswith("steered_")) + "."),
    ]
    layer = "20" if "20" in scorer else next(iter(scorer))
    at = scorer[layer]
    claims.append(Claim(
        METHOD, "The user-attention ratio separates context-dependent from knowledge-only SFT examples",
        f"AUROC at layer {layer} of 30 (SmolLM2 as probe)", at["auroc"], 0.5, "chance", at["auroc"] >= 0.7,
        {**setup, "chats_per_group": size["scorer_chats"], "layers": list(size["scorer_layers"])},
        note=f"pass: AUROC >= 0.7. Mean score {at['mean_context']:.3f} (context) vs {at['mean_knowledge']:.3f} "
             "(knowledge); other layers: " + ", ".join(f"{k}: {v['auroc']:.3f}" for k, v in scorer.items()
                                                        if k != layer) + ". The groups also differ in length and "
             "format (passage + question vs a one-line task), which the score may partly pick up."))
    win = arms["ind"]["template+[IND]"] - arms["plain"]["template"]
    claims.append(Claim(
        METHOD, "Conditional fine-tuning with [IND] improves use of user context when [IND] is given",
        "counterfactual QA: answers that follow the context", arms["ind"]["template+[IND]"],
        arms["plain"]["template"], "same LoRA SFT without [IND] labels", win >= 0.05,
        {**setup, "base": "SmolLM2-135M-Instruct (not Gemma-3-270m: not installed in the time box)",
         "sft": "LoRA r=16 alpha=16 dropout 0, AdamW lr 1e-3 (spec: 2e-4; raised as only a few steps fit), batch 8",
         "steps": size["sft_steps"],
         "tau": 0.6, "labelled": arms["labelled"], "chats": arms["chats"]},
        note=f"A pipeline check at toy scale (pass decided beforehand: +0.05). [IND] arm without the indicator: "
             f"{arms['ind']['template']:.3f}; labelled {arms['labelled']} of {arms['chats']} chats; the untuned model: "
             f"{qa['template']['follows_context']:.3f}."))
    write_summary(out, claims)
    return claims
