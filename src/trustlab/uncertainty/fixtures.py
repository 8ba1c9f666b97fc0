"""The project-written labelled sets that ship with trustlab for CLUE: 60 factual questions with gold
aliases (``data/clue_qa.jsonl``) and 40 NLI sanity pairs, 20 entailment and 20 contradiction
(``data/nli_pairs.jsonl``)."""

from __future__ import annotations

import json
import re
from importlib import resources
from typing import Any

import numpy as np

QA_PROMPT = "Answer the question in one single sentence with details: {question}"


def _jsonl(name: str) -> list[dict[str, Any]]:
    text = resources.files("trustlab.uncertainty").joinpath("data", name).read_text(encoding="utf-8")
    return [json.loads(ln) for ln in text.splitlines() if ln.strip()]


def qa_items() -> list[dict[str, Any]]:
    """``{"id", "question", "gold": [aliases]}`` rows."""
    return _jsonl("clue_qa.jsonl")


def nli_pairs() -> list[dict[str, Any]]:
    """``{"id", "premise", "hypothesis", "label"}`` rows (label: entailment | contradiction)."""
    return _jsonl("nli_pairs.jsonl")


def is_correct(answer: str, gold: list[str]) -> bool:
    """A gold alias occurs in the answer as a whole word (case-insensitive).

    Example:
        >>> is_correct("The symbol for gold is Au.", ["au"]), is_correct("because", ["au"])
        (True, False)
    """
    text = answer.lower()
    return any(re.search(rf"(?<!\w){re.escape(g.lower())}(?!\w)", text) for g in gold)


def nli_sanity(nli: Any) -> dict[str, Any]:
    """Accuracy of an entailment scorer on the 40 shipped pairs (P(entail) > 0.5 = entailment).

    A pair the scorer could not judge (NaN: an LLM-as-NLI answer that named no label) is invalid: it
    counts as wrong in ``accuracy`` (an NLI that gives no answer is no usable NLI), is left out of the
    means, and lowers ``valid_rate``.

    Example:
        >>> nli_sanity(LLMNLI(load_model("embedded:qwen2.5-coder-1.5b")))["accuracy"]
    """
    pairs = nli_pairs()
    probs = np.asarray(nli.entail([(p["premise"], p["hypothesis"]) for p in pairs]), dtype=float)
    is_ent = np.asarray([p["label"] == "entailment" for p in pairs])
    judged = ~np.isnan(probs)
    right = judged & ((probs > 0.5) == is_ent)

    def mean(mask: np.ndarray) -> float:
        return float(probs[mask].mean()) if mask.any() else float("nan")

    return {"scorer": getattr(nli, "name", type(nli).__name__), "accuracy": float(right.mean()), "n": len(pairs),
            "valid_rate": float(judged.mean()), "n_invalid": int((~judged).sum()),
            "mean_p_entail_on_entailment": mean(judged & is_ent),
            "mean_p_entail_on_contradiction": mean(judged & ~is_ent),
            "bottleneck": bool(right.mean() < 0.75)}
