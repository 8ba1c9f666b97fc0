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
    """Accuracy of an entailment scorer on the 40 shipped pairs (P(entail) > 0.5 = entailment)."""
    pairs = nli_pairs()
    probs = nli.entail([(p["premise"], p["hypothesis"]) for p in pairs])
    is_ent = [p["label"] == "entailment" for p in pairs]
    right = [(pr > 0.5) == e for pr, e in zip(probs, is_ent, strict=True)]
    return {"accuracy": float(np.mean(right)), "n": len(pairs),
            "mean_p_entail_on_entailment": float(np.mean([p for p, e in zip(probs, is_ent, strict=True) if e])),
            "mean_p_entail_on_contradiction": float(np.mean([p for p, e in zip(probs, is_ent, strict=True) if not e])),
            "bottleneck": bool(np.mean(right) < 0.75)}
