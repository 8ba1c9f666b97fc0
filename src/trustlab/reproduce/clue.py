"""Small-scale reproduction of CLUE (spec: clue.md, section 6).

Three model roles, each its own handle (``run(model=, extractor_model=, nli_model=)``, any
:func:`trustlab.models.load_model` spec): the model under test answers (greedy + samples, and its
token log-probabilities feed the sequence-level baselines); the concept extractor and the LLM-as-NLI
default to the model under test. Defaults: all three are the embedded SmolLM2-135M-Instruct; pooling:
MiniLM. Every role's ``describe()`` is in the run config (a changed role is a new run) and its name in
each claim's ``setup["roles"]`` (the README table shows one row per (method, models)). Data: the
project's 60 hand-written factual questions with gold aliases (``uncertainty/data/clue_qa.jsonl``).
Per question: a greedy answer and N = 5 samples at T = 1.0; the greedy answer is correct when a gold
alias appears in it as a whole word. Scores of the greedy answer: CLUE (max concept U) and the
sequence-level baselines on the same samples and NLI. Step 0: the accuracy of the model in the NLI role
on 40 hand-written pairs (``nli_pairs.jsonl``); an NLI answer that names no label (a black-box NLI
model) is invalid: counted, scored NaN, and wrong in the accuracy.

Pass condition, fixed before running: CLUE ROC-AUC > 0.5 with its bootstrap 95% CI excluding 0.5,
and CLUE ROC-AUC >= the best sequence-level baseline minus 0.02. The claim's ``ci`` is the paired
bootstrap interval over questions of ROC-AUC(CLUE) - ROC-AUC(best baseline).

Measurability, fixed before running: the claim is "not measurable" (never "reproduced") when the
LLM-as-NLI accuracy on the 40 sanity pairs is < 0.75 (the spec's step 0: the NLI is then the
bottleneck, and every CLUE score rests on it), or when its ``valid_rate`` is < 0.5: fewer than half
of the concept extractions (greedy answer and samples) gave at least one valid concept. Concepts that
copy the one-shot example instead of the text are invalid: dropped, counted, never scored.

Runs checkpoint per chunk of questions (ids of the fixture) and resume.
"""

from __future__ import annotations

import math
import time
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np

from trustlab.report import Claim, RunFolder, plt, write_json, write_summary

METHOD = "clue"


def _number(x: float) -> float | None:
    return x if math.isfinite(x) else None


def _plot(run: RunFolder, table: dict[str, dict[str, float]], model: str) -> Path:
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
    ax.set_title(f"CLUE vs sequence-level uncertainty, {model}, 95% bootstrap CI", fontsize=9)
    return run.save_plot(fig, "clue_rocauc")


MIN_NLI_ACCURACY = 0.75
MIN_VALID_RATE = 0.5
CHUNK = 5  # questions per checkpoint


def run(out: Path, *, quick: bool = False, seed: int = 0, model: Any = None, extractor_model: Any = None,
        nli_model: Any = None) -> list[Claim]:
    """Run the reproduction into ``out`` (resuming a run with the same setup); returns the checked claim.

    Args:
        out: the output folder.
        quick: 6 questions instead of 30 (a smoke test).
        seed: sampling and bootstrap seed.
        model: the model under test (spec or handle; default None: the embedded SmolLM2).
        extractor_model: the concept extractor (default None: the model under test).
        nli_model: the LLM-as-NLI (default None: the model under test).

    Example:
        >>> run(Path("runs/clue-quick"), quick=True)
        >>> run(Path("results/clue--qwen2.5-coder-1.5b"), model="embedded:qwen2.5-coder-1.5b")
    """
    from trustlab.models.embedded import load_sentence_encoder
    from trustlab.report.stats import bootstrap_metric_diff_ci
    from trustlab.reproduce import load_roles, role_setup
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

    questions = qa_items()[:30:5] if quick else qa_items()[:30]  # quick: 6 of the 30, spread over the topics
    n_samples, max_new = 5, 24
    roles = load_roles({"model": model, "extractor": extractor_model, "nli": nli_model},
                       hf_options={"attn_implementation": "sdpa", "batch_size": 16})
    names, described = role_setup(roles)
    llm, extractor = roles["model"], roles["extractor"]
    encoder = load_sentence_encoder()
    nli = LLMNLI(roles["nli"])

    def same(role: str) -> str:
        return f" ({'same model' if roles[role] is llm else 'another model'})"

    setup = {"model": llm.name, "extractor": extractor.name + same("extractor") + ", one-shot example as a chat turn",
             "nli": "LLM-as-NLI: " + roles["nli"].name + same("nli"), "roles": names,
             "embedder": "all-MiniLM-L6-v2", "n_questions": len(questions),
             "n_samples": n_samples, "temperature": 1.0, "max_new_tokens": max_new, "pooler": "cosine 0.85",
             "agg": "max", "max_concepts_per_output": 5, "chunk_questions": CHUNK, "seed": seed, "quick": quick}
    run_ = RunFolder(out, {"command": f"reproduce {METHOD}", **setup, "role_models": described})
    clock = time.perf_counter()
    sanity = nli_sanity(nli)
    seconds = {"nli_sanity": round(time.perf_counter() - clock, 1), "questions": 0.0}
    clue = CLUE(llm, nli=nli, extractor=extractor, embedder=encoder, n_samples=n_samples, max_new_tokens=max_new,
                extract_max_new_tokens=24, max_concepts=5, seed=seed)
    estimators = (MaximumSequenceProbability(), PredictiveEntropy(), LexicalSimilarity(),
                  EmbeddingSemanticEntropy(encoder), SelfCheckNLI(nli))
    done = run_.done_keys("id")
    for start in range(0, len(questions), CHUNK):
        chunk = [q for q in questions[start:start + CHUNK] if q["id"] not in done]
        if not chunk:
            continue
        clock = time.perf_counter()
        prompts = [QA_PROMPT.format(question=q["question"]) for q in chunk]
        logprobs = llm.capabilities.logprobs  # black-box without log-probs: the msp / entropy baselines are NaN
        greedy = llm.generate(prompts, max_new_tokens=max_new, temperature=0.0, logprobs=logprobs)
        sampled = llm.generate(prompts, max_new_tokens=max_new, temperature=1.0, n=n_samples, seed=seed,
                               logprobs=logprobs)
        items = [SampleSet(p, g[0].text, [s.text for s in row], g[0].token_logprobs, [s.token_logprobs for s in row])
                 for p, g, row in zip(prompts, greedy, sampled, strict=True)]
        reports = clue.estimate_from_samples_many([{"prompt": it.prompt, "answer": it.answer, "samples": it.samples}
                                                   for it in items])
        scores = {"clue": [r.score for r in reports], **{est.name: est(items) for est in estimators}}
        for i, (q, it, r) in enumerate(zip(chunk, items, reports, strict=True)):
            run_.add_sample({"id": q["id"], "question": q["question"], "gold": q["gold"], "answer": it.answer,
                             "correct": is_correct(it.answer, q["gold"]), "samples": it.samples,
                             "scores": {k: scores[k][i] for k in scores}, "concepts": r.table(),
                             "echoed_concepts": r.echoed_concepts, "bad_extractions": r.bad_extractions,
                             "n_extractions": r.n_extractions, "seconds": (time.perf_counter() - clock) / len(chunk)})
    order = {q["id"]: k for k, q in enumerate(questions)}
    rows = sorted((r for r in {r["id"]: r for r in run_.samples()}.values() if r["id"] in order),
                  key=lambda r: order[r["id"]])
    seconds["questions"] = round(sum(r["seconds"] for r in rows), 1)
    correct = [r["correct"] for r in rows]
    errors = [int(not c) for c in correct]
    table: dict[str, dict[str, Any]] = {}
    filled: dict[str, np.ndarray] = {}
    for name in rows[0]["scores"]:
        v = np.asarray([r["scores"][name] for r in rows], dtype=float)
        missing = int((~np.isfinite(v)).sum())
        filled[name] = np.where(np.isfinite(v), v, np.nanmedian(v) if missing < len(v) else 0.0)  # neutral fill
        table[name] = {"roc_auc": roc_auc(filled[name], errors), "prr": prr(filled[name], correct),
                       "ci": bootstrap_ci(roc_auc, filled[name], errors, seed=seed), "missing_filled_with_median": missing}
    plot = _plot(run_, table, llm.name)
    baselines = {k: v for k, v in table.items() if k != "clue" and math.isfinite(v["roc_auc"])}
    best = max(baselines, key=lambda k: baselines[k]["roc_auc"]) if baselines else "msp"
    ours, theirs = table["clue"], table[best]
    diff_ci = bootstrap_metric_diff_ci(roc_auc, filled["clue"], filled[best], errors, seed=seed)
    bad = sum(r["bad_extractions"] for r in rows)
    tried = sum(r["n_extractions"] for r in rows)
    echoed = [c for r in rows for c in r["echoed_concepts"]]
    valid_rate = 1 - bad / tried if tried else None
    why = [] if 0 < sum(errors) < len(errors) else ["the greedy answers are all right or all wrong: ROC-AUC is undefined"]
    if sanity["accuracy"] < MIN_NLI_ACCURACY:
        why.append(f"LLM-as-NLI ({roles['nli'].name}) accuracy on the 40 sanity pairs is {sanity['accuracy']:.2f} "
                   f"(< {MIN_NLI_ACCURACY}): the NLI is the bottleneck")
    if valid_rate is not None and valid_rate < MIN_VALID_RATE:
        why.append(f"only {tried - bad} of {tried} concept extractions gave a valid concept (< {MIN_VALID_RATE:.0%})")
    measurable = not why
    reproduced = bool(measurable and ours["roc_auc"] > 0.5 and ours["ci"][0] > 0.5
                      and ours["roc_auc"] >= theirs["roc_auc"] - 0.02)
    examples = [{"question": r["question"], "answer": r["answer"], "correct": r["correct"], "concepts": r["concepts"][:6],
                 "echoed_concepts": r["echoed_concepts"]} for r in rows[:5]]
    validity = {"extractions": tried, "bad_extractions": bad, "valid_rate": valid_rate,
                "echoed_concepts": len(echoed), "echoed_by_concept": dict(Counter(c.lower() for c in echoed)),
                "questions_with_no_valid_answer_concept": sum(not any(c["in_answer"] for c in r["concepts"]) for r in rows),
                "nli": (nli.validity.to_dict() if nli.validity.total
                        else "label-token log-probabilities (nothing parsed)")}
    details = {"nli_sanity": sanity, "accuracy_greedy": float(np.mean(correct)), "n_wrong": int(sum(errors)),
               "metrics": table, "best_baseline": best, "roc_auc_diff_ci": diff_ci, "validity": validity,
               "mean_concepts_per_question": float(np.mean([len(r["concepts"]) for r in rows])),
               "examples": examples, "plot": plot.name, "seconds": seconds, "setup": setup}
    write_json(out / "details.json", details)
    run_.write_results(details)
    note = (f"Greedy accuracy {np.mean(correct):.2f} ({sum(errors)} wrong of {len(errors)}). CLUE ROC-AUC "
            f"{ours['roc_auc']:.3f} (95% CI {ours['ci'][0]:.2f}-{ours['ci'][1]:.2f}), PRR {ours['prr']:.3f}; best "
            f"baseline {best} {theirs['roc_auc']:.3f}. Pass if CLUE > 0.5 with CI excluding 0.5 and >= "
            f"best baseline - 0.02. Bad extractions (no valid concept): {bad}/{tried}; {len(echoed)} concepts "
            "dropped as copies of the one-shot example."
            + (" Not measurable: " + "; ".join(why) + "." if why else ""))
    claim = Claim(METHOD, "Concept-level uncertainty detects incorrect answers at least as well as sequence-level scores",
                  "ROC-AUC for detecting incorrect greedy answers", _number(ours["roc_auc"]), _number(theirs["roc_auc"]),
                  f"best sequence-level baseline ({best})", reproduced,
                  {**setup, "nli_accuracy": sanity["accuracy"], "nli_valid_rate": sanity["valid_rate"]}, note=note,
                  n=len(rows), ci=diff_ci,
                  valid_rate=valid_rate, measurable=measurable)
    write_summary(out, [claim])
    return [claim]
