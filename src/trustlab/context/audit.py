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

from trustlab.audit.plan import Cost
from trustlab.audit.scorecard import Concern, measure
from trustlab.bench.context_qa import QAItem, counterfactual_items
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
from trustlab.report import Section, write_json
from trustlab.report.stats import bootstrap_diff_ci

ALPHA = 0.9
FULL = {"lengths": (250, 500, 1000), "depths": (0.0, 0.5, 1.0), "qa_items": 16, "new_tokens": 32,
        "mass_lengths": (500,)}
QUICK = {"lengths": (200,), "depths": (0.5,), "qa_items": 2, "new_tokens": 8, "mass_lengths": (150,)}


def _conditions(model: Any, alphas: tuple[float, ...], indicator: str) -> list[Condition]:
    caps = model.capabilities
    if not caps.chat_template:
        return [Condition("no_template", chat_template=False)]
    return conditions(alphas if caps.attentions else (), indicator)


# Thresholds of the scorecard rows (fixed before any run; lower recall error is better).
MAX_RECALL_ERROR = 0.2  # NIH recall error under the condition the model is served with
MAX_TEMPLATE_GAP = 0.1  # recall error with the chat template minus without, per probe
MIN_FOLLOWS_CONTEXT = 0.7  # counterfactual QA: share of answers that follow the passage


def _size(quick: bool, scale: float) -> dict[str, Any]:
    """The audit's sizes times ``scale`` (fewer needle depths and QA items; the lengths stay)."""
    size = dict(QUICK if quick else FULL)
    size["depths"] = size["depths"][:max(1, round(len(size["depths"]) * scale))]
    size["qa_items"] = max(2, round(size["qa_items"] * scale))
    return size


def plan(model: Any, *, quick: bool = False, scale: float = 1.0) -> Cost:
    """What :func:`run` will ask of ``model`` (see :mod:`trustlab.audit.plan`).

    Example:
        >>> plan(load_model(), quick=True).calls
    """
    size, conds = _size(quick, scale), len(_conditions(model, (ALPHA,), ""))
    probes = len(size["lengths"]) * len(size["depths"]) if getattr(model, "tokenizer", None) is not None else 0
    mass = 2 * len(size["mass_lengths"]) if model.capabilities.attentions and model.capabilities.chat_template else 0
    return Cost(items=f"{probes} NIH probes + {size['qa_items']} context-QA items x {conds} conditions",
                calls=(probes + size["qa_items"]) * conds + mass,
                new_tokens=(probes * size["new_tokens"] + size["qa_items"] * 16) * conds,
                prompt_tokens=(len(size["depths"]) * sum(size["lengths"]) + size["qa_items"] * 150) * conds
                + 2 * sum(size["mass_lengths"]))


def run(model: Any, run: Any, *, quick: bool = False, seed: int = 0, scale: float = 1.0) -> list[Section | Concern]:
    """The audit section: :func:`evaluate` at the audit's size times ``scale`` (``quick``: a smoke test).

    Example:
        >>> from trustlab.audit import run_audit
        >>> run_audit(load_model(), "runs/audit", sections=["context"])
    """
    size = _size(quick, scale)
    return evaluate(model, run, lengths=size["lengths"], depths=size["depths"],
                    qa=counterfactual_items(size["qa_items"], seed=seed), new_tokens=size["new_tokens"],
                    mass_lengths=size["mass_lengths"], scorecard=True)


def evaluate(model: Any, run: Any, *, lengths: Sequence[int], depths: Sequence[float], needles: int = 1,
             qa: Sequence[QAItem] = (), qa_task: str = "counterfactual", alphas: Sequence[float] = (ALPHA,),
             indicator: str = "", new_tokens: int = 32, qa_new_tokens: int = 16,
             mass_lengths: Sequence[int] = (), scorecard: bool = False) -> list[Section | Concern]:
    """Run NIH + context QA under every condition into ``run`` (a RunFolder) and return report sections (and,
    with ``scorecard``, the audit scorecard's concerns from :func:`concerns`).

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
        scorecard: also return the scorecard's concern rows (what the audit section does).
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
    section = Section("Context awareness", _verdict(result), table=table, images=images, anchor="context")
    return [section, *concerns(model, rows, summary, qa_task=qa_task, steered=steered)] if scorecard else [section]


def concerns(model: Any, rows: Sequence[dict[str, Any]], summary: dict[str, Any], *, qa_task: str = "counterfactual",
             steered: str | None = None) -> list[Concern]:
    """Scorecard rows: NIH recall error as served, the chat template's gap, counterfactual QA follows context.

    Example:
        >>> [c.id for c in concerns(model, rows, summarise(rows))]
        ['context.recall_error', 'context.template_gap', 'context.follows_context']
    """
    served = "template" if model.capabilities.chat_template else "no_template"
    name = model.name
    method = "context-awareness"
    fix = f"trustlab eval context --model {name} --alpha {ALPHA}"  # measures the steered condition beside the others
    code = (f"with trustlab.context.steering.UserSteering(model, alpha={ALPHA}): model.generate(prompts)"
            if model.capabilities.attentions else "attention steering needs a white-box (Hugging Face) model")
    note = ""
    if steered:
        ids, ours, base = paired(rows, "niah", "recall_error", steered, "template")
        ci = bootstrap_diff_ci(ours, base) if ids else None
        if ci:
            note = (f"Steering at alpha {ALPHA} changed the recall error on this run by "
                    f"{(sum(ours) - sum(base)) / len(ids):+.2f} (95% interval {ci[0]:+.2f} to {ci[1]:+.2f}, n = {len(ids)}).")
    out = []
    niah = summary.get("niah", {})
    if served in niah:
        items = [{"id": r["probe"], "value": r["recall_error"]} for r in rows
                 if r["task"] == "niah" and r["condition"] == served and r.get("valid", True)]
        out.append(measure("context.recall_error", "Loses a fact placed in a long context",
                           f"needle-in-a-haystack recall error ({served.replace('_', ' ')})", items=items,
                           threshold=MAX_RECALL_ERROR, higher_is_better=False, valid_rate=niah[served]["valid_rate"],
                           method=method, fix=fix, code=code, note=note))
    if "template" in niah and "no_template" in niah:
        ids, tmpl, plain = paired(rows, "niah", "recall_error", "template", "no_template")
        out.append(measure("context.template_gap", "The chat template makes it ignore the context",
                           "recall error with the chat template minus without (per probe)",
                           items=[{"id": i, "value": a - b} for i, a, b in zip(ids, tmpl, plain, strict=True)],
                           threshold=MAX_TEMPLATE_GAP, higher_is_better=False,
                           valid_rate=min(niah["template"]["valid_rate"], niah["no_template"]["valid_rate"]),
                           method=method, fix=fix, code=code, note=note))
    qa = summary.get(qa_task, {})
    if served in qa:
        items = [{"id": r["probe"], "value": float(r["follows_context"])} for r in rows
                 if r["task"] == qa_task and r["condition"] == served and r.get("valid", True)]
        out.append(measure("context.follows_context", "Answers from memory instead of the given passage",
                           f"{qa_task} context QA: share of answers that follow the passage", items=items,
                           threshold=MIN_FOLLOWS_CONTEXT, higher_is_better=True, valid_rate=qa[served]["valid_rate"],
                           method=method, fix=fix, code=code))
    return out


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
