"""The context-awareness section of ``trustlab audit``.

Runs a small NIH grid and the counterfactual context-QA set under no template / template / template +
steering, measures how much the last prompt token attends to the user's content with and without the
template, and reports the template gap and the steering effect. Sized to take a few minutes on 2 CPU cores
with the embedded SmolLM2 (``quick``: seconds, a smoke test). Black-box models get the template gap only.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from typing import Any

from trustlab.bench.context_qa import QAItem, counterfactual_items
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
from trustlab.report import Section, write_json

ALPHA = 0.9
FULL = {"lengths": (250, 500, 1000), "depths": (0.0, 0.5, 1.0), "qa_items": 16, "new_tokens": 32,
        "mass_lengths": (500,)}
QUICK = {"lengths": (200,), "depths": (0.5,), "qa_items": 2, "new_tokens": 8, "mass_lengths": (150,)}


def _conditions(model: Any, alphas: tuple[float, ...], indicator: str) -> list[Condition]:
    caps = model.capabilities
    if not caps.chat_template:
        return [Condition("no_template", chat_template=False)]
    return conditions(alphas if caps.attentions else (), indicator)


def run(model: Any, run: Any, *, quick: bool = False, seed: int = 0) -> list[Section]:
    """The audit section: :func:`evaluate` at the audit's size (``quick``: a smoke test).

    Example:
        >>> from trustlab.audit import run_audit
        >>> run_audit(load_model(), "runs/audit", sections=["context"])
    """
    size = QUICK if quick else FULL
    return evaluate(model, run, lengths=size["lengths"], depths=size["depths"],
                    qa=counterfactual_items(size["qa_items"], seed=seed), new_tokens=size["new_tokens"],
                    mass_lengths=size["mass_lengths"])


def evaluate(model: Any, run: Any, *, lengths: Sequence[int], depths: Sequence[float], needles: int = 1,
             qa: Sequence[QAItem] = (), qa_task: str = "counterfactual", alphas: Sequence[float] = (ALPHA,),
             indicator: str = "", new_tokens: int = 32, qa_new_tokens: int = 16,
             mass_lengths: Sequence[int] = ()) -> list[Section]:
    """Run NIH + context QA under every condition into ``run`` (a RunFolder) and return report sections.

    Writes ``context.json`` (per-condition means, template gap, steering effect, attention mass), the NIH
    heatmaps and one row per answer in samples.jsonl (a re-run resumes from them).

    Args:
        model: a model handle (steering and attention mass need a white-box model; skipped otherwise).
        run: the RunFolder.
        lengths, depths, needles: the NIH grid (context tokens, needle depths in [0, 1], how many needles).
        qa: context-QA items (counterfactual, or SQuAD/QuAC/DROP from :func:`~trustlab.bench.context_qa.load_qa`).
        qa_task: the QA items' task name in results.
        alphas: steering strengths (the first one is reported as the steering effect).
        indicator: e.g. ``" [IND]"`` to add the indicator conditions (for models trained with it).
        new_tokens: greedy answer length for NIH; qa_new_tokens: for QA (short answers).
        mass_lengths: NIH context lengths at which to measure the user attention mass (empty: skip).
    """
    alphas = tuple(alphas)
    conds = _conditions(model, alphas, indicator)
    tokenizer = getattr(model, "tokenizer", None)  # black-box endpoints: QA only
    grid = niah_probes(tokenizer, lengths, depths, NEEDLES[:needles]) if tokenizer is not None else []
    fast = model.using_attn_implementation("sdpa") if model.capabilities.attentions else contextlib.nullcontext()
    with fast:
        rows = run_probes(model, grid, conds, run=run, max_new_tokens=new_tokens)
        rows += run_probes(model, qa_probes(list(qa), qa_task), conds, run=run, max_new_tokens=qa_new_tokens)
    summary = summarise(rows)
    niah, qa_sum = summary.get("niah", {}), summary.get(qa_task, {})
    result: dict[str, Any] = {"conditions": [c.name for c in conds], "summary": summary,
                              "grid": {"lengths": list(lengths), "depths": list(depths), "needles": needles}}
    steered = f"steered_{alphas[0]:g}" if alphas else None
    err = {c: v["recall_error"] for c, v in niah.items()}  # None where no answer was valid
    if err.get("template") is not None and err.get("no_template") is not None:
        result["template_gap"] = err["template"] - err["no_template"]
    if err.get("template") is not None and err.get(steered) is not None:
        result["alpha"] = alphas[0]
        result["steering_effect"] = err["template"] - err[steered]
    if mass_lengths and model.capabilities.attentions and model.capabilities.chat_template:
        texts = [niah_prompt(build_context(tokenizer, n, 0.5), NEEDLES[0].question) for n in mass_lengths]
        result["user_attention_mass"] = {
            "template": user_attention_mass(model, texts, chat_template=True),
            "no_template": user_attention_mass(model, texts, chat_template=False),
        }
    write_json(run.path / "context.json", result)
    images = [run.save_plot(plot_niah(rows, f"NIH recall error: {model.name}"), "context_niah")] if niah else []
    table = [{"condition": c, "NIH recall error": niah.get(c, {}).get("recall_error", ""),
              "NIH valid answers": niah.get(c, {}).get("valid_rate", ""),
              "QA follows context": qa_sum.get(c, {}).get("follows_context", ""),
              "QA F1": qa_sum.get(c, {}).get("f1", "")} for c in result["conditions"]]
    return [Section("Context awareness", _verdict(result), table=table, images=images, anchor="context")]


def _verdict(result: dict[str, Any]) -> str:
    lines = ["Does the model use the context its user supplies? Needle-in-a-haystack recall error (lower is "
             "better) and counterfactual context QA (the passage contradicts a well-known fact; does the answer "
             "follow the passage?), with and without the chat template, and with attention steered toward the "
             f"user's tokens (alpha = {result.get('alpha', ALPHA)})."]
    if "template_gap" in result:
        gap = result["template_gap"]
        lines.append(f"Template gap: recall error with the template minus without = {gap:+.3f} "
                     f"({'the template hurts' if gap > 0.05 else 'no loss of context awareness from the template'}"
                     " at this size).")
    if "steering_effect" in result:
        eff = result["steering_effect"]
        lines.append(f"Steering effect: recall error without steering minus with = {eff:+.3f} "
                     f"({'steering helps' if eff > 0.05 else 'no clear help' if eff > -0.05 else 'steering hurts'}).")
    if "user_attention_mass" in result:
        m = result["user_attention_mass"]
        lines.append(f"Attention from the last prompt token to the user's content: {m['template']:.3f} with the "
                     f"template, {m['no_template']:.3f} without.")
    return "\n\n".join(lines)
