"""Small-scale reproduction of CLUE (spec: clue.md, section 6).

Generator, extractor and LLM-as-NLI: the embedded SmolLM2-135M-Instruct; pooling: MiniLM. Data: the
project's 60 hand-written factual questions with gold aliases (``uncertainty/data/clue_qa.jsonl``).
Per question: a greedy answer and N = 5 samples at T = 1.0; the greedy answer is correct when a gold
alias appears in it as a whole word. Scores of the greedy answer: CLUE (max concept U) and the
sequence-level baselines on the same samples and NLI. Step 0: LLM-as-NLI accuracy on 40 hand-written
pairs (``nli_pairs.jsonl``).

Pass condition, fixed before running: CLUE ROC-AUC > 0.5 with its bootstrap 95% CI excluding 0.5,
and CLUE ROC-AUC >= the best sequence-level baseline minus 0.02.
"""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Any

import numpy as np

from trustlab.report import Claim, RunFolder, plt, write_json, write_summary

METHOD = "clue"


def _plot(run: RunFolder, table: dict[str, dict[str, float]]) -> Path:
    pyplot = plt()
    names = list(table)
    auc = [table[n]["roc_auc"] for n in names]
    lo = [max(a - table[n]["ci"][0], 0) for a, n in zip(auc, names, strict=True)]
    hi = [max(table[n]["ci"][1] - a, 0) for a, n in zip(auc, names, strict=True)]
    fig, ax = pyplot.subplots(figsize=(6.5, 3.2))
    ax.bar(names, auc, yerr=[lo, hi], capsize=3, color=["C3" if n == "clue" else "C0" for n in names])
    ax.axhline(0.5, color="gray", lw=0.8, ls="--")
    ax.set_ylim(0, 1)
    ax.set_ylabel("ROC-AUC (wrong answers)")
    ax.tick_params(axis="x", labelsize=8, labelrotation=20)
    ax.set_title("CLUE vs sequence-level uncertainty, SmolLM2-135M, 95% bootstrap CI", fontsize=9)
    return run.save_plot(fig, "clue_rocauc")


def run(out: Path, *, quick: bool = False, seed: int = 0) -> list[Claim]:
    """Run the reproduction into ``out``; returns the checked claim.

    Example:
        >>> run(Path("results/clue"), quick=True)
    """
    from trustlab.models import load_model
    from trustlab.models.embedded import load_sentence_encoder
    from trustlab.uncertainty import (
        CLUE,
        LLMNLI,
        EmbeddingSemanticEntropy,
        LexicalSimilarity,
        MaximumSequenceProbability,
        PredictiveEntropy,
        SampleSet,
        SelfCheckNLI,
        bootstrap_ci,
        prr,
        roc_auc,
    )
    from trustlab.uncertainty.fixtures import QA_PROMPT, is_correct, nli_sanity, qa_items

    questions = qa_items()[: 4 if quick else 30]
    n_samples, max_new = 5, 24
    model = load_model("embedded", attn_implementation="sdpa", batch_size=16)
    encoder = load_sentence_encoder()
    nli = LLMNLI(model)
    setup = {"model": model.name, "extractor": "same model", "nli": "LLM-as-NLI (same model)",
             "embedder": "all-MiniLM-L6-v2", "n_questions": len(questions), "n_samples": n_samples,
             "temperature": 1.0, "max_new_tokens": max_new, "pooler": "cosine 0.85", "agg": "max",
             "max_concepts_per_output": 5, "seed": seed, "quick": quick}
    run_ = RunFolder(out, {"command": f"reproduce {METHOD}", **setup})
    clock = [time.perf_counter()]
    sanity = nli_sanity(nli)
    clock.append(time.perf_counter())
    prompts = [QA_PROMPT.format(question=q["question"]) for q in questions]
    greedy = model.generate(prompts, max_new_tokens=max_new, temperature=0.0, logprobs=True)
    sampled = model.generate(prompts, max_new_tokens=max_new, temperature=1.0, n=n_samples, seed=seed, logprobs=True)
    items = [SampleSet(p, g[0].text, [s.text for s in row], g[0].token_logprobs, [s.token_logprobs for s in row])
             for p, g, row in zip(prompts, greedy, sampled, strict=True)]
    clock.append(time.perf_counter())
    correct = [is_correct(it.answer, q["gold"]) for it, q in zip(items, questions, strict=True)]
    clue = CLUE(model, nli=nli, embedder=encoder, n_samples=n_samples, max_new_tokens=max_new,
                extract_max_new_tokens=24, max_concepts=5, seed=seed)
    reports = clue.estimate_from_samples_many([{"prompt": it.prompt, "answer": it.answer, "samples": it.samples}
                                               for it in items])
    clock.append(time.perf_counter())
    scores = {"clue": [r.score for r in reports]}
    for est in (MaximumSequenceProbability(), PredictiveEntropy(), LexicalSimilarity(),
                EmbeddingSemanticEntropy(encoder), SelfCheckNLI(nli)):
        scores[est.name] = est(items)
    clock.append(time.perf_counter())
    seconds = dict(zip(("nli_sanity", "generation", "clue", "baselines"), np.diff(clock).round(1).tolist(), strict=True))
    errors = [int(not c) for c in correct]
    table: dict[str, dict[str, Any]] = {}
    for name, vals in scores.items():
        v = np.asarray(vals, dtype=float)
        missing = int((~np.isfinite(v)).sum())
        v = np.where(np.isfinite(v), v, np.nanmedian(v) if missing < len(v) else 0.0)  # neutral fill
        table[name] = {"roc_auc": roc_auc(v, errors), "prr": prr(v, correct),
                       "ci": bootstrap_ci(roc_auc, v, errors, seed=seed), "missing_filled_with_median": missing}
    for i, (q, it, r) in enumerate(zip(questions, items, reports, strict=True)):
        run_.add_sample({"id": q["id"], "question": q["question"], "gold": q["gold"], "answer": it.answer,
                         "correct": correct[i], "samples": it.samples,
                         "scores": {k: scores[k][i] for k in scores}, "concepts": r.table(),
                         "bad_extractions": r.bad_extractions, "n_extractions": r.n_extractions})
    plot = _plot(run_, table)
    baselines = {k: v for k, v in table.items() if k != "clue" and math.isfinite(v["roc_auc"])}
    best = max(baselines, key=lambda k: baselines[k]["roc_auc"])
    ours = table["clue"]
    reproduced = bool(ours["roc_auc"] > 0.5 and ours["ci"][0] > 0.5
                      and ours["roc_auc"] >= baselines[best]["roc_auc"] - 0.02)
    bad = sum(r.bad_extractions for r in reports)
    tried = sum(r.n_extractions for r in reports)
    examples = [{"question": q["question"], "answer": it.answer, "correct": c, "concepts": r.table()[:6]}
                for q, it, c, r in list(zip(questions, items, correct, reports, strict=True))[:5]]
    details = {"nli_sanity": sanity, "accuracy_greedy": float(np.mean(correct)), "n_wrong": int(sum(errors)),
               "metrics": table, "best_baseline": best, "bad_extractions": bad, "extractions": tried,
               "mean_concepts_per_question": float(np.mean([len(r.concepts) for r in reports])),
               "examples": examples, "plot": plot.name, "seconds": seconds, "setup": setup}
    write_json(out / "details.json", details)
    run_.write_results(details)
    note = (f"Greedy accuracy {np.mean(correct):.2f} ({sum(errors)} wrong of {len(errors)}). CLUE ROC-AUC "
            f"{ours['roc_auc']:.3f} (95% CI {ours['ci'][0]:.2f}-{ours['ci'][1]:.2f}), PRR {ours['prr']:.3f}; best "
            f"baseline {best} {baselines[best]['roc_auc']:.3f}. Pass if CLUE > 0.5 with CI excluding 0.5 and >= "
            f"best baseline - 0.02. LLM-as-NLI accuracy on 40 pairs: {sanity['accuracy']:.2f}"
            + (" (< 0.75: the NLI is the bottleneck)." if sanity["bottleneck"] else ".")
            + f" Bad extractions: {bad}/{tried}.")
    claim = Claim(METHOD, "Concept-level uncertainty detects incorrect answers at least as well as sequence-level scores",
                  "ROC-AUC for detecting incorrect greedy answers", ours["roc_auc"], baselines[best]["roc_auc"],
                  f"best sequence-level baseline ({best})", reproduced,
                  {**setup, "nli_accuracy": sanity["accuracy"]}, note=note)
    write_summary(out, [claim])
    return [claim]
