"""Concept extraction for CLUE: the one-shot prompt and a tolerant parser of the extractor's answer.

The extractor is an LLM and its output is untrusted text: the parser accepts a JSON array (also one
cut off mid-way), a JSON object with a ``"concepts"`` list, numbered or bulleted lists, a
``Concepts:`` prefix and plain comma-separated text. It never evaluates anything and never raises;
an answer with no usable concept gives an empty list, which CLUE counts as a bad extraction.

A small extractor often answers with the one-shot example's own concepts ("origins, evolution, modern
era ...") whatever the text. :func:`example_copies` finds them: they are dropped and counted as invalid,
never pooled or scored, unless the concept really occurs in the text being analysed.
"""

from __future__ import annotations

import json
import re

from trustlab.models.base import Message
from trustlab.validity import copies_example, normalise

# One-shot example from the paper (basketball history -> high-level concepts), in our wording.
EXAMPLE_TEXT = (
    "Basketball was invented in 1891 by James Naismith as an indoor game. Over the decades its rules "
    "evolved and the modern era brought the NBA. Legendary athletes such as Michael Jordan made it popular "
    "around the world; today it is both an art form and a multimillion-dollar industry."
)
EXAMPLE_CONCEPTS = ("origins", "evolution", "modern era", "legendary athletes", "global popularity", "art form",
                    "multimillion-dollar industry")
INSTRUCTION = ("List the high-level concepts in the text as a comma-separated list. Concepts capture meaning, "
               "not wording.")


def extraction_prompt(text: str) -> list[Message]:
    """The one-shot extraction prompt for ``text`` as chat turns: the instruction, the example text as a
    user turn and its concepts as the assistant's answer, then ``text``. (With SmolLM2-135M the example
    as a past turn is copied less than the same example inline: 26 of 57 concepts were copies instead
    of 35 of 50, on 20 answers of the committed CLUE run.)

    Example:
        >>> extraction_prompt("Tokyo is the capital of Japan.")[-1]
        {'role': 'user', 'content': 'Text: Tokyo is the capital of Japan.'}
    """
    return [{"role": "system", "content": INSTRUCTION},
            {"role": "user", "content": f"Text: {EXAMPLE_TEXT}"},
            {"role": "assistant", "content": ", ".join(EXAMPLE_CONCEPTS)},
            {"role": "user", "content": f"Text: {text}"}]


MAX_CONCEPT_CHARS = 80
_PREFIX = re.compile(r"^\s*(?:(?:the\s+)?(?:high[- ]level\s+)?concepts?\s*(?:are|include)?\s*[:\-]\s*)", re.I)
_BULLET = re.compile(r"^\s*(?:[-*\u2022]+|\(?\d+[.)]|\(?[a-z][.)](?=\s))\s*", re.I)
_QUOTED = re.compile(r'"((?:[^"\\]|\\.)*)"')


def _clean(item: str) -> str:
    item = _BULLET.sub("", item.strip())
    item = item.strip().strip("\"'`[]{}()").strip()
    item = re.sub(r"\s+", " ", item).rstrip(".;:!").strip()
    return item


def _unquote(s: str) -> str:
    try:
        return json.loads(f'"{s}"')
    except ValueError:
        return s


def _json_items(text: str) -> list[str] | None:
    """Items of the first JSON array (or ``{"concepts": [...]}``) in ``text``; None if there is none."""
    start = min((i for i in (text.find("["), text.find("{")) if i >= 0), default=-1)
    if start < 0:
        return None
    decoder = json.JSONDecoder()
    try:
        value, _ = decoder.raw_decode(text[start:])
    except ValueError:
        value = None
    if isinstance(value, dict):
        value = value.get("concepts")
    if isinstance(value, list):
        return [v for v in value if isinstance(v, str)]
    # cut-off JSON, e.g. '["origins", "evolu': keep the complete quoted strings
    if text[start] == "[" or '"concepts"' in text:
        found = [_unquote(s) for s in _QUOTED.findall(text[start:])]
        return [s for s in found if s.lower() != "concepts"] or None
    return None


def parse_concepts(text: str, max_concepts: int = 12) -> list[str]:
    """Concepts named in an extractor's answer, deduplicated case-insensitively, in order.

    Args:
        text: the extractor's raw answer.
        max_concepts: keep at most this many (default 12): a runaway answer does not flood the pool.

    Returns:
        The concepts; empty when none could be read (a bad extraction).

    Example:
        >>> parse_concepts("Concepts: 1. Paris. 2. capital city\\n3. France")
        ['Paris', 'capital city', 'France']
        >>> parse_concepts('["origins", "evolution", "moder')
        ['origins', 'evolution']
    """
    if not isinstance(text, str) or not text.strip():
        return []
    items = _json_items(text)
    if items is None:
        body = _PREFIX.sub("", text.strip().split("\n\n")[0])
        # one item per line, per numbered item ("1. a 2. b" on one line) and per comma
        lines = [part for ln in body.splitlines() if ln.strip() for part in re.split(r"(?<=\D)\s+(?=\d+[.)]\s)", ln)]
        items = [part for ln in lines for part in re.split(r"[,;]", _PREFIX.sub("", ln))]
    seen: set[str] = set()
    out: list[str] = []
    for raw in items:
        c = _clean(raw)
        key = c.lower()
        if not c or key in seen or len(c) > MAX_CONCEPT_CHARS or not re.search(r"\w", c):
            continue
        seen.add(key)
        out.append(c)
        if len(out) == max_concepts:
            break
    return out


def example_copies(concepts: list[str], text: str) -> list[bool]:
    """For each concept, whether it was copied from the one-shot example instead of read from ``text``.

    A copy is one of the example's concepts, or a phrase of the example text (``"Michael Jordan"``,
    ``"NBA"``), that does not occur in ``text`` itself (as whole words, up to case and punctuation).

    Example:
        >>> example_copies(["origins", "Tokyo", "modern era", "NBA"], "In the modern era Tokyo is the capital.")
        [True, False, False, True]
    """
    own, example = f" {normalise(text)} ", f" {normalise(EXAMPLE_TEXT)} "
    out = []
    for c in concepts:
        key = normalise(c)
        copied = copies_example(c, EXAMPLE_CONCEPTS) or (bool(key) and f" {key} " in example)
        out.append(copied and f" {key} " not in own)
    return out
