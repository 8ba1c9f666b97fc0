"""Data and scoring for trustlab's lm-evaluation-harness tasks (the YAML files beside this one).

Every task builds its documents in-process, offline and deterministically (``custom_dataset``): nothing is
downloaded. lm-eval calls a ``custom_dataset`` function with the run's metadata (``--metadata '{...}'`` and
the model arguments) as keyword arguments; the keys read here are:

- ``niah_lengths`` (list of ints, default ``[250, 500]``), ``niah_depths`` (default ``[0.0, 0.5, 1.0]``): the
  needle-in-a-haystack grid, context lengths in SmolLM2 tokens (the embedded tokenizer, so every model sees the
  same documents);
- ``cf_seed`` (default 0): the filler of the counterfactual context-QA passages;
- ``beyondx_path``: the folder of the official ``BeyondX_<k>.json`` files (default: ``$TRUSTLAB_BEYONDX_DATA``,
  then ``../shared/data/beyondx``); BeyondX is never fetched from the Hub here.

Example:
    >>> docs = niah_dataset(niah_lengths=[200], niah_depths=[0.5])["test"]
    >>> niah_results(docs[0], ["Eat a sandwich in Dolores Park on a sunny day."])["recall"]
"""

from __future__ import annotations

import re
from functools import lru_cache
from typing import Any

from trustlab.bench.beyondx import default_data_dir, load_beyondx, score_beyondx, score_relative
from trustlab.bench.context_qa import QAItem, counterfactual_items, f1, follows_context, qa_prompt
from trustlab.bench.niah import NEEDLES, build_context, haystack_text, niah_prompt, recall
from trustlab.errors import DataFileError
from trustlab.prompting.answers import extract_numbers
from trustlab.prompting.reasoning import COT_SUFFIX

PPL_WORDS = 150  # words per document of the perplexity task
PPL_DOCS = 20


def _dataset(rows: list[dict[str, Any]]) -> dict[str, Any]:
    import datasets

    return {"test": datasets.Dataset.from_list(rows)}


@lru_cache(maxsize=1)
def _tokenizer() -> Any:
    from transformers import AutoTokenizer

    from trustlab.models.embedded import smollm2_dir

    return AutoTokenizer.from_pretrained(smollm2_dir())


# ------------------------------------------------------------------------------ needle in a haystack
def niah_dataset(niah_lengths: list[int] | None = None, niah_depths: list[float] | None = None,
                 **_: Any) -> dict[str, Any]:
    """NIH documents: every needle at every (length, depth) of the grid."""
    rows = []
    for n in niah_lengths or [250, 500]:
        for depth in niah_depths or [0.0, 0.5, 1.0]:
            for k, needle in enumerate(NEEDLES):
                rows.append({"id": f"niah-{n}-{depth:g}-{k}", "length": int(n), "depth": float(depth),
                             "context": build_context(_tokenizer(), int(n), float(depth), needle),
                             "question": needle.question, "needle": needle.text, "words": list(needle.words)})
    return _dataset(rows)


def niah_text(doc: dict[str, Any]) -> str:
    return niah_prompt(doc["context"], doc["question"])


def niah_results(doc: dict[str, Any], results: list[str]) -> dict[str, float]:
    """Whole-word recall of the needle's key words (1 - recall is the paper's recall error)."""
    return {"recall": recall(results[0], tuple(doc["words"]))}


# ------------------------------------------------------------------------------ counterfactual context QA
def cf_dataset(cf_seed: int = 0, **_: Any) -> dict[str, Any]:
    """Counterfactual context-QA documents: the passage's (false) answer and the real one it contradicts."""
    return _dataset([{"id": it.id, "context": it.context, "question": it.question, "answer": it.answers[0],
                      "memory_answer": it.memory_answer} for it in counterfactual_items(seed=int(cf_seed))])


def _qa_item(doc: dict[str, Any]) -> QAItem:
    return QAItem(doc["id"], doc["context"], doc["question"], (doc["answer"],), doc["memory_answer"])


def cf_text(doc: dict[str, Any]) -> str:
    """The paper's context-QA prompt (passage, instruction, question)."""
    return qa_prompt(_qa_item(doc))


def cf_mc_text(doc: dict[str, Any]) -> str:
    """The context-QA prompt followed by ``Answer:``, for scoring the choices."""
    return f"{cf_text(doc)}\nAnswer:"


def cf_results(doc: dict[str, Any], results: list[str]) -> dict[str, float]:
    """``follows_context``: the passage's answer and not the real one; ``f1``: SQuAD F1 to the passage's answer."""
    item = _qa_item(doc)
    return {"follows_context": follows_context(results[0], item), "f1": f1(results[0], item.answers)}


def cf_choices(doc: dict[str, Any]) -> list[str]:
    """Multiple choice: the passage's answer (index 0, the target) against the real-world one."""
    return [doc["answer"], doc["memory_answer"]]


# ------------------------------------------------------------------------------ perplexity on the haystack
def ppl_dataset(**_: Any) -> dict[str, Any]:
    """Public-domain prose ("In the Year 2889") in documents of :data:`PPL_WORDS` words."""
    words = haystack_text().split()
    return _dataset([{"id": f"verne-{i}", "text": " ".join(words[i * PPL_WORDS:(i + 1) * PPL_WORDS])}
                     for i in range(min(PPL_DOCS, len(words) // PPL_WORDS))])


def ppl_results(doc: dict[str, Any], results: list[float]) -> dict[str, tuple[float, int]]:
    """lm-eval's perplexity convention: (loglikelihood, count) per word and per byte."""
    (loglikelihood,) = results
    words = len(re.split(r"\s+", doc["text"]))
    return {"word_perplexity": (loglikelihood, words), "byte_perplexity": (loglikelihood, len(doc["text"].encode())),
            "bits_per_byte": (loglikelihood, len(doc["text"].encode()))}


# ------------------------------------------------------------------------------ BeyondX by number of unknowns
def beyondx_dataset(unknowns: int, beyondx_path: str | None = None, **_: Any) -> dict[str, Any]:
    """BeyondX items with ``unknowns`` unknowns, from a local folder (never the Hub).

    Raises:
        DataFileError: no local BeyondX folder was given or found (the message says how to give one).
    """
    source = beyondx_path or default_data_dir()
    if source is None:
        raise DataFileError("the trustlab_beyondx tasks read the official BeyondX JSON files from a local folder: "
                            "pass --metadata '{\"beyondx_path\": \"/path/to/beyondx\"}' or set "
                            "TRUSTLAB_BEYONDX_DATA (they are never downloaded by these tasks)")
    items = load_beyondx(source, levels=(int(unknowns),))
    return _dataset([{"id": it.id, "problem": it.problem, "answers": list(it.answers), "unknowns": it.unknowns}
                     for it in items])


def beyondx_text(doc: dict[str, Any]) -> str:
    """Zero-shot chain of thought with a boxed final answer (trustlab's ``cot`` strategy prompt)."""
    return f"{doc['problem']}{COT_SUFFIX}"


def beyondx_results(doc: dict[str, Any], results: list[str]) -> dict[str, float]:
    """The official set-style match (absolute tolerance 0.1), its relative variant, and whether any number
    was parsed (``valid``)."""
    predicted = extract_numbers(results[0])
    return {"acc": float(score_beyondx(predicted, doc["answers"])),
            "acc_rel": float(score_relative(predicted, doc["answers"])), "valid": float(bool(predicted))}


__all__ = ["beyondx_dataset", "beyondx_results", "beyondx_text", "cf_choices", "cf_dataset", "cf_mc_text", "cf_results", "cf_text",
           "niah_dataset", "niah_results", "niah_text", "ppl_dataset", "ppl_results"]
