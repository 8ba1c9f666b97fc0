"""Is a model output data? Checks for outputs that copy the prompt instead of answering it.

A small model asked to follow a worked example often returns the example itself ("origins, evolution,
modern era ..." for any text) or the format instructions ("[the request]"). Such output parses, but it is
not a measurement of anything: it is *invalid*, counted, and never used as data. Every method that parses
model output counts what it kept and what it dropped with a :class:`ValidityCounter`, and reports
``valid_rate`` next to its numbers.

Example:
    >>> counter = ValidityCounter()
    >>> for concept in ["Tokyo", "modern era"]:
    ...     if copies_example(concept, ["origins", "modern era"]):
    ...         counter.invalid("copies the one-shot example")
    ...     else:
    ...         counter.valid()
    >>> counter.rate, dict(counter.reasons)
    (0.5, {'copies the one-shot example': 1})
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

_WORD = re.compile(r"\w+", re.UNICODE)


def normalise(text: str) -> str:
    """Lower-case words joined by single spaces (punctuation and spacing do not make an output new)."""
    return " ".join(_WORD.findall(text.lower()))


def words(text: str) -> list[str]:
    return _WORD.findall(text.lower())


def copies_example(text: str, examples: Iterable[str], *, unless_in: str | None = None) -> bool:
    """Whether ``text`` is one of the prompt's example items, up to case, spacing and punctuation.

    Args:
        text: one parsed output item (a concept, a label, a request).
        examples: the items the prompt itself shows (its worked example, its format placeholders).
        unless_in: the text the output is about; a copy that genuinely occurs there is not an echo
            (a text about the NBA may well have "modern era" as a concept).

    Example:
        >>> copies_example("Modern era.", ["origins", "modern era"])
        True
        >>> copies_example("modern era", ["modern era"], unless_in="In the modern era, ...")
        False
    """
    key = normalise(text)
    if not key or key not in {normalise(e) for e in examples}:
        return False
    return not (unless_in and re.search(rf"(?<!\w){re.escape(key)}(?!\w)", normalise(unless_in)))


def echoes_source(text: str, source: str, min_words: int = 5, *, unless_in: str | None = None) -> bool:
    """Whether ``text`` repeats a run of ``min_words`` consecutive words of ``source``.

    ``source`` is the prompt's fixed text (its worked example, its instructions); ``unless_in`` the part
    the output may legitimately quote (the user's own request, the document asked about): runs that also
    occur there do not count.

    Example:
        >>> echoes_source("Request: Paris is the capital of France.",
        ...               "Example: Paris is the capital of France, said the response.", min_words=4)
        True
    """
    out, src = words(text), words(source)
    if len(out) < min_words or len(src) < min_words:
        return False
    grams = {tuple(src[i:i + min_words]) for i in range(len(src) - min_words + 1)}
    allowed: set[tuple[str, ...]] = set()
    if unless_in:
        own = words(unless_in)
        allowed = {tuple(own[i:i + min_words]) for i in range(len(own) - min_words + 1)}
    return any(tuple(out[i:i + min_words]) in grams - allowed for i in range(len(out) - min_words + 1))


def is_fragment(text: str, min_letters: int = 3) -> bool:
    """Whether ``text`` has fewer than ``min_letters`` letters (``'"'``, ``'10'``, ``'...'``)."""
    return sum(c.isalpha() for c in text) < min_letters


@dataclass
class ValidityCounter:
    """Counts model outputs that parsed into valid data, and why the others did not.

    Attributes:
        n_valid: outputs kept as data.
        reasons: invalid outputs by reason.
    """

    n_valid: int = 0
    reasons: Counter = field(default_factory=Counter)

    def valid(self, k: int = 1) -> None:
        self.n_valid += k

    def invalid(self, reason: str, k: int = 1) -> None:
        self.reasons[reason] += k

    def update(self, other: ValidityCounter) -> None:
        self.n_valid += other.n_valid
        self.reasons.update(other.reasons)

    @property
    def n_invalid(self) -> int:
        return sum(self.reasons.values())

    @property
    def total(self) -> int:
        return self.n_valid + self.n_invalid

    @property
    def rate(self) -> float | None:
        """Share of outputs that were valid; None when nothing was parsed."""
        return self.n_valid / self.total if self.total else None

    def to_dict(self) -> dict[str, Any]:
        return {"valid": self.n_valid, "invalid": self.n_invalid, "valid_rate": self.rate,
                "invalid_reasons": dict(self.reasons)}
