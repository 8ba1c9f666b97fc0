"""``trustlab reproduce context-awareness``: the spec's small-scale reproduction on SmolLM2-135M-Instruct.

(a) template gap: NIH grid (Verne haystack, 3 needles) and counterfactual context QA, with and without the
    chat template, plus the last prompt token's attention mass on the user's content;
(b) steering: the same NIH grid steered at alpha 0.9 and 0.95, and an alpha grid on context QA;
(c) the no-template answer cue (the spec marks the no-template wording as unverified), measured, not tuned.

Pass conditions come from the spec (section 6, Experiment A) and were fixed before the run:
gap: recall error(template) - recall error(no_template) >= 0.05 on the pooled grid AND less user attention
mass with the template (uninformative if the no-template error is > 0.8); steering: alpha 0.9 lowers the
template recall error by >= 0.05. Generation uses sdpa attention (steering supports it); greedy decoding.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from trustlab.bench.context_qa import counterfactual_items
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
from trustlab.report import Claim, RunFolder, plt, write_json, write_summary

METHOD = "context-awareness"
FULL = {"lengths": (250, 1000, 2000), "depths": (0.0, 0.5, 1.0), "needles": 3, "new_tokens": 40,
        "qa_items": 36, "qa_alphas": (0.5, 0.8, 0.9, 0.95), "mass_lengths": (250, 1000), "cue_probes": 9}
QUICK = {"lengths": (200,), "depths": (0.5,), "needles": 1, "new_tokens": 8, "qa_items": 4,
         "qa_alphas": (0.9,), "mass_lengths": (200,), "cue_probes": 1}
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
    details = {"summary": summary, "user_attention_mass": mass, "no_template_cue_ablation": cue_summary,
               "seconds": round(time.perf_counter() - t0, 1), "size": size}
    write_json(out / "details.json", details)
    folder.save_plot(plot_niah(niah_rows, "NIH recall error, SmolLM2-135M-Instruct"), "niah_heatmaps")
    folder.save_plot(_alpha_plot(summary), "steering_alpha_grid")
    return _claims(out, summary, mass, size)


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


def _claims(out: Path, summary: dict[str, Any], mass: dict[str, float], size: dict[str, Any]) -> list[Claim]:
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
                   f"{'; uninformative: no-template error > 0.8' if uninformative else ''}. {qa_note}"),
        Claim(METHOD, "Steering attention toward user tokens lowers the templated recall error",
              "NIH recall error (lower is better)", err["steered_0.9"], err["template"], "template, unsteered",
              steer >= 0.05, {**setup, "alpha": 0.9}, higher_is_better=False,
              note=f"template minus steered = {steer:+.3f} (pass: >= +0.05); alpha 0.95 gives "
                   f"{err['steered_0.95']:.3f}. QA follows-context with steering: "
                   + ", ".join(f"alpha {c.split('_')[1]}: {v['follows_context']:.3f}"
                               for c, v in qa.items() if c.startswith("steered_")) + "."),
    ]
    write_summary(out, claims)
    return claims
