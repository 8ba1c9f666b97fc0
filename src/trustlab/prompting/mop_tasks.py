"""Offline "mixed" instruction-induction tasks for Mixture-of-Prompts, from reasoning-gym generators.

Each task merges two or three reasoning-gym (0.1.25) generators whose inputs look different (an arithmetic
expression, a letter and a phrase, a list of words ...). The generators' questions spell out what to do;
here only the bare input is kept (built from each item's metadata), so a prompt has to say, or its demos
show, which rule applies: the setting where one instruction for the whole task is not enough. Answers are
recomputed from the metadata and scored by exact match (:func:`trustlab.prompting.mop.exact_match`:
case, spacing around commas, outer quotes and a final period do not count).

Example:
    >>> task = make_task("arith-count-sort", n_pool=100, n_eval=100, n_test=100, seed=0)
    >>> task.train[0]
    {'input': '10 - 5', 'output': '5', 'source': 'basic_arithmetic'}
    >>> task.train[2]
    {'input': '"m" in "Union Thanks to the same"', 'output': '1', 'source': 'letter_counting'}
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from trustlab.errors import DataFileError, EmptyInputError, require
from trustlab.prompting.mop import exact_match

Converter = Callable[[dict[str, Any]], tuple[str, str]]


def _arith(item: dict[str, Any]) -> tuple[str, str]:
    return item["metadata"]["expression"], str(item["answer"]).strip()


def _letters(item: dict[str, Any]) -> tuple[str, str]:
    meta = item["metadata"]
    phrase = " ".join(meta["span"])
    return f'"{meta["target_letter"]}" in "{phrase}"', str(item["answer"]).strip()


def _word_sort(item: dict[str, Any]) -> tuple[str, str]:
    words = item["metadata"]["transformed_words"]
    return " ".join(words), ", ".join(sorted(words))  # ascending, ASCII order


def _spell_backward(item: dict[str, Any]) -> tuple[str, str]:
    word = item["metadata"]["word"]
    return word, word[::-1]


def _number_sort(item: dict[str, Any]) -> tuple[str, str]:
    nums = [f"{float(n):g}" for n in item["metadata"]["original_numbers"]]  # 39.0 -> 39
    return ", ".join(nums), ", ".join(sorted(nums, key=float))  # ascending


def _word_reverse(item: dict[str, Any]) -> tuple[str, str]:
    words = item["metadata"]["words"]
    return ", ".join(words), ", ".join(reversed(words))


@dataclass(frozen=True)
class Component:
    """One reasoning-gym generator in a mixed task: its name, its config and how an item becomes a pair."""

    generator: str
    options: dict[str, Any]
    convert: Converter


TASKS: dict[str, tuple[Component, ...]] = {
    "arith-count-sort": (
        Component("basic_arithmetic", {"min_terms": 2, "max_terms": 2, "max_digits": 2,
                                       "operators": ("+", "-", "*"), "allow_parentheses": False}, _arith),
        Component("letter_counting", {"min_words": 3, "max_words": 5}, _letters),
        Component("word_sorting", {"min_words": 3, "max_words": 5, "max_word_length": 8}, _word_sort),
    ),
    "reverse-numsort": (
        Component("spell_backward", {"min_word_len": 3, "max_word_len": 7}, _spell_backward),
        Component("number_sorting", {"min_numbers": 3, "max_numbers": 5, "max_decimals": 0}, _number_sort),
    ),
    "sum-wordrev": (
        Component("chain_sum", {"min_terms": 2, "max_terms": 3, "max_digits": 2}, _arith),
        Component("word_sequence_reversal", {"min_words": 3, "max_words": 5}, _word_reverse),
    ),
}


@dataclass
class MixedTask:
    """A mixed task's three disjoint splits of ``{"input", "output", "source"}`` dicts, and its scorer.

    Attributes:
        name: the task's name in :data:`TASKS`.
        train: the demo pool D.
        val: the eval set E (instruction scoring).
        test: held-out items.
        scorer: ``scorer(prediction, target) -> 0.0 | 1.0``.
    """

    name: str
    train: list[dict[str, str]]
    val: list[dict[str, str]]
    test: list[dict[str, str]]
    scorer: Callable[[str, str], float] = field(default=exact_match, repr=False)


def make_task(name: str, *, n_pool: int = 100, n_eval: int = 100, n_test: int = 100, seed: int = 0) -> MixedTask:
    """Generate a mixed task: the components' items, inputs distinct, shuffled and split.

    Args:
        name: one of :data:`TASKS`.
        n_pool, n_eval, n_test: split sizes (the spec: 100 each).
        seed: generator and shuffle seed.

    Raises:
        KeyError: an unknown task name (the message lists the tasks).
    """
    if name not in TASKS:
        raise KeyError(f"unknown mixed task {name!r}; choose one of {', '.join(TASKS)}")
    rg = require("reasoning_gym", "llm")
    comps = TASKS[name]
    total = n_pool + n_eval + n_test
    per = -(-total // len(comps))  # ceil: every component gets the same share
    items: list[dict[str, str]] = []
    for j, comp in enumerate(comps):
        seen: set[str] = set()
        ds = rg.create_dataset(comp.generator, size=per * 3, seed=seed * 1000 + j, **comp.options)
        for item in ds:
            x, y = comp.convert(item)
            if x not in seen:
                seen.add(x)
                items.append({"input": x, "output": y, "source": comp.generator})
            if len(seen) == per:
                break
    rng = np.random.default_rng(seed)
    items = [items[i] for i in rng.permutation(len(items))][:total]
    return MixedTask(name, items[:n_pool], items[n_pool:n_pool + n_eval], items[n_pool + n_eval:total])


def load_task(source: str | Path, *, n_pool: int = 100, n_eval: int = 100, n_test: int = 100,
              seed: int = 0) -> MixedTask:
    """A mixed task by name (:data:`TASKS`), or a JSONL file of ``{"input", "output"}`` rows shuffled (by
    ``seed``) and split into pool, eval and test (at most the sizes given; a short file fills the pool
    first, then eval, then test).

    Raises:
        EmptyInputError: a file with fewer than three rows (one per split at least).
        DataFileError: a line that is not JSON.
        ExamplesError: a row without non-empty ``input`` and ``output`` strings.

    Example:
        >>> load_task("my_task.jsonl", n_pool=50, n_eval=50, n_test=50).train[0]
    """
    if str(source) in TASKS:
        return make_task(str(source), n_pool=n_pool, n_eval=n_eval, n_test=n_test, seed=seed)
    from trustlab.prompting.mop import as_examples

    rows = []
    for i, line in enumerate(Path(source).read_text(encoding="utf-8").splitlines()):
        try:
            rows += [json.loads(line)] if line.strip() else []
        except json.JSONDecodeError:
            raise DataFileError(f"{source}: line {i + 1} is not valid JSON") from None
    pairs = as_examples(rows, str(source), at_least=3)
    items = [{"input": x, "output": y, "source": str(r.get("source", "file")) if isinstance(r, dict) else "file"}
             for (x, y), r in zip(pairs, rows, strict=True)]
    items = [items[i] for i in np.random.default_rng(seed).permutation(len(items))]
    n_test = min(n_test, max(1, len(items) // 5))
    n_eval = min(n_eval, max(1, (len(items) - n_test) // 2))
    n_pool = min(n_pool, len(items) - n_test - n_eval)
    if n_pool < 2:
        raise EmptyInputError(f"{source} has {len(items)} rows: too few for a pool of 2, an eval and a test split")
    return MixedTask(Path(source).stem, items[:n_pool], items[n_pool:n_pool + n_eval],
                     items[n_pool + n_eval:n_pool + n_eval + n_test])
