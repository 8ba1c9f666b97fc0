"""Audit section "uncertainty": CLUE concept uncertainty and two sequence-level baselines on a few of
the shipped factual questions, with the most uncertain concepts of each answer."""

from __future__ import annotations

from typing import Any

from trustlab.audit.plan import Cost
from trustlab.audit.scorecard import STRONGER_ROLE_MODEL, Concern, measure
from trustlab.report import RunFolder, Section, write_json

MIN_AUC = 0.6  # scorecard threshold: CLUE's ROC-AUC for wrong answers (0.5 = no better than chance)
MIN_NLI_ACCURACY = 0.75  # the CLUE spec's step 0: an NLI below this on the 40 labelled pairs is the bottleneck
MIN_PER_CLASS = 3  # ROC-AUC needs wrong and right answers: at least this many of each


def _size(quick: bool, scale: float) -> tuple[int, int, int]:
    """(questions, samples, new tokens): quick: a capital and an author; default: 12 questions spread over the
    fixture's topics, times ``scale``."""
    return (2, 2, 16) if quick else (max(2, round(12 * scale)), 5, 24)


def plan(model: Any, *, quick: bool = False, scale: float = 1.0) -> Cost:
    """What :func:`run` will ask of the models (all roles counted as the audited model's calls).

    Example:
        >>> plan(load_model(), quick=True).calls
    """
    q, n, new = _size(quick, scale)
    pairs = q * 3 * n  # NLI: up to 3 concepts per answer against each sample
    return Cost(items=f"{q} questions x ({n} samples + greedy), 40 NLI check pairs",
                calls=q * (1 + n) * 2 + pairs + 40, new_tokens=q * (1 + n) * (new + 20),
                prompt_tokens=q * (1 + n) * 60 + (pairs + 40) * 80)


def remeasure_command(model: str, nli_ok: bool, wrong: int, right: int, nli: str | None = None,
                      extractor: str | None = None) -> str:
    """The command that would make the uncertainty row measurable: stronger NLI / extractor roles when the
    NLI failed its check, else (too few wrong or right answers among the audit's questions) the CLUE
    reproduction, which asks many more questions with the same roles.

    Example:
        >>> remeasure_command("embedded:m", True, 0, 12)
        'trustlab reproduce clue --model embedded:m'
    """
    if nli_ok and min(wrong, right) < MIN_PER_CLASS:
        return (f"trustlab reproduce clue --model {model}" + (f" --nli-model {nli}" if nli else "")
                + (f" --extractor-model {extractor}" if extractor else ""))
    return f"trustlab audit --model {model} --nli-model {STRONGER_ROLE_MODEL} --extractor-model {STRONGER_ROLE_MODEL}"


def run(model: Any, run: RunFolder, *, quick: bool, seed: int, roles: dict[str, Any] | None = None,
        scale: float = 1.0) -> list[Section | Concern]:
    """CLUE on ``model`` (any backend: black-box handles use generated label words as NLI); ``roles["nli"]`` and
    ``roles["extractor"]`` give those roles to other handles (default: ``model``).

    Example:
        >>> run(load_model(), RunFolder("runs/audit"), quick=True, seed=0)
    """
    from trustlab.uncertainty import CLUE, EmbeddingSemanticEntropy, LexicalSimilarity, SampleSet, roc_auc
    from trustlab.uncertainty.fixtures import QA_PROMPT, is_correct, nli_sanity, qa_items

    count, n, max_new = _size(quick, scale)
    questions = qa_items()[::20][:count] if quick else qa_items()[::5][:count]
    model.capabilities.require_sampling(method="the uncertainty audit (CLUE, sampling baselines)")  # before any call
    roles = roles or {}
    nli_model, extractor = roles.get("nli"), roles.get("extractor")
    clue = CLUE(model, nli=nli_model if nli_model is not None else "llm", extractor=extractor, n_samples=n,
                max_new_tokens=max_new, extract_max_new_tokens=20, max_concepts=3, seed=seed)
    prompts = [QA_PROMPT.format(question=q["question"]) for q in questions]
    greedy = model.generate(prompts, max_new_tokens=max_new, temperature=0.0)
    sampled = model.generate(prompts, max_new_tokens=max_new, temperature=1.0, n=n, seed=seed)
    items = [SampleSet(p, g[0].text, [s.text for s in row]) for p, g, row in zip(prompts, greedy, sampled, strict=True)]
    reports = clue.estimate_from_samples_many([{"prompt": it.prompt, "answer": it.answer, "samples": it.samples}
                                               for it in items])
    lexsim = LexicalSimilarity()(items)
    sem = EmbeddingSemanticEntropy(clue.embedder)(items)
    correct = [is_correct(it.answer, q["gold"]) for it, q in zip(items, questions, strict=True)]
    rows = []
    for q, it, r, c, lx, se in zip(questions, items, reports, correct, lexsim, sem, strict=True):
        top = r.concepts[0] if r.concepts else None
        rows.append({"question": q["question"], "answer": it.answer[:120], "correct": c, "clue": r.score,
                     "lexical_similarity": lx, "semantic_entropy": se,
                     "most uncertain concept": f"{top.concept} ({top.uncertainty:.2f})" if top else "-",
                     "invalid extractions": f"{r.bad_extractions}/{r.n_extractions}",
                     "example copies dropped": len(r.echoed_concepts)})
    errors = [int(not c) for c in correct]
    aucs = {name: roc_auc(v, errors) for name, v in
            (("clue", [r.score for r in reports]), ("lexical_similarity", lexsim), ("semantic_entropy", sem))}
    bad = sum(r.bad_extractions for r in reports)
    echoed = sum(len(r.echoed_concepts) for r in reports)
    nli_validity = getattr(clue.nli, "validity", None)
    nli_text = (f" NLI answers that parsed into a label: {nli_validity.n_valid}/{nli_validity.total}."
                if nli_validity is not None and nli_validity.total else "")
    validity = {"extractions": sum(r.n_extractions for r in reports), "bad_extractions": bad, "echoed_concepts": echoed,
                "nli": nli_validity.to_dict() if nli_validity is not None else None}
    sanity = nli_sanity(clue.nli)
    write_json(run.path / "uncertainty.json", {"rows": rows, "roc_auc": aucs, "validity": validity,
                                               "nli_sanity": sanity, "reports": [r.to_dict() for r in reports]})
    text = (f"{len(questions)} shipped factual questions, greedy answer + {n} samples at T = 1 from the audited "
            f"model; concepts extracted by {(extractor or model).name}, NLI by {(nli_model or model).name}. Greedy accuracy {sum(correct)}/{len(correct)}; "
            f"bad concept extractions (no valid concept) {bad}/{sum(r.n_extractions for r in reports)}; {echoed} "
            "concepts dropped as copies of the extraction prompt's one-shot example (never scored)." + nli_text
            + " ROC-AUC for wrong answers "
            "(too few questions to be a measurement; see results/clue for the reproduction): "
            + ", ".join(f"{k} {v:.2f}" if v == v else f"{k} n/a (one class only)" for k, v in aucs.items())
            + ". Higher score = more uncertain.")
    text += (f" NLI check: accuracy {sanity['accuracy']:.2f} on trustlab's {sanity['n']} labelled pairs "
             f"(valid answers {sanity['valid_rate']:.0%}).")
    first = reports[0]
    n_extract = sum(r.n_extractions for r in reports)
    wrong = sum(errors)
    nli_name = (nli_model or model).name
    nli_ok = sanity["accuracy"] >= MIN_NLI_ACCURACY
    remeasure = remeasure_command(model.name, nli_ok, wrong, len(errors) - wrong,
                                  nli_model.name if nli_model is not None else None,
                                  extractor.name if extractor is not None else None)
    concern = measure(
        "uncertainty.flags_errors", "Its uncertainty does not flag its wrong answers",
        "ROC-AUC of CLUE concept uncertainty for wrong answers (0.5 = chance)", stat="roc_auc",
        items=[{"id": q["id"], "score": r.score, "error": e} for q, r, e in zip(questions, reports, errors, strict=True)],
        threshold=MIN_AUC, higher_is_better=True, valid_rate=1 - bad / n_extract if n_extract else None,
        checks=[(nli_ok,
                 f"the NLI ({nli_name}) is right on {sanity['accuracy']:.2f} of {sanity['n']} labelled pairs "
                 f"(need {MIN_NLI_ACCURACY})"),
                (min(wrong, len(errors) - wrong) >= MIN_PER_CLASS,
                 f"{wrong} wrong and {len(errors) - wrong} right answers (need {MIN_PER_CLASS} of each)")],
        method="clue", fix=f"trustlab uncertainty --model {model.name} --nli-model {STRONGER_ROLE_MODEL} \"QUESTION\"",
        code=f"trustlab.uncertainty.CLUE(model, nli=load_model(\"{STRONGER_ROLE_MODEL}\")).estimate(prompt)",
        remeasure=remeasure, seed=seed,
        note=f"Greedy accuracy {len(errors) - wrong}/{len(errors)}; ROC-AUC of the baselines: "
             + ", ".join(f"{k} {v:.2f}" for k, v in aucs.items() if k != "clue" and v == v))
    return [Section("Uncertainty: CLUE concept-level vs sequence-level", text, rows),
            Section(f"Uncertainty: concepts of \"{questions[0]['question']}\"",
                    f"Answer: {first.answer}", first.table()), concern]
