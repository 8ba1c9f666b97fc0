"""Reading untrusted model text: a module's answer mapped to its closed list, and a learner's rule.

Constrained output [derived, spec section 3]: a module's free text is mapped to the closed answer list by

1. exact match of the first line (outer spaces, quotes, trailing period and a leading ``Label:`` dropped);
2. case-insensitive substring: the list items that occur in the text as whole words; when several do, the
   one that occurs *first* (models write "zand, because ... not murl");
3. (optional) embedding similarity: the item nearest to the first line by cosine, with an ``embedder``
   (``encode(list[str]) -> (N, d)``), e.g. the embedded MiniLM;

and otherwise it is unmapped (None). Every fallback past exact match is logged (logger
``trustlab.programs``, debug) and counted by :class:`AnswerStats`; exact, substring and embedding answers
are valid, unmapped ones invalid (``valid_rate``).

A learner's rule is valid when, after cleaning (cut where the model starts a new example, blank and
repeated lines dropped, at most :data:`MAX_RULE_CHARS`), it is not empty, has at least 3 letters, names at least one
label as a whole word, and is not a copy of an example input. Anything else is invalid, with a reason.

Example:
    >>> map_answer("The label is Zand.", ["zand", "murl"])
    ('zand', 'substring')
"""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from trustlab.validity import ValidityCounter, copies_example, is_fragment

log = logging.getLogger("trustlab.programs")
MAX_RULE_CHARS = 600
HOWS = ("exact", "substring", "embedding", "unmapped")
_PREFIX = re.compile(r"^\s*(label|answer|output)\s*[:\-]\s*", re.I)
_CUT = re.compile(r"\n\s*(description|input|example)\s*:", re.I)


def _clean(text: str) -> str:
    line = next((s.strip() for s in text.strip().splitlines() if s.strip()), "")
    return _PREFIX.sub("", line).strip(" \"'`*").rstrip(".").strip()


def _word_pos(item: str, text: str) -> int:
    m = re.search(rf"(?<!\w){re.escape(item.lower())}(?!\w)", text.lower())
    return m.start() if m else -1


def map_answer(text: str, choices: Sequence[str], embedder: Any = None) -> tuple[str | None, str]:
    """Map a module's free text to one of ``choices``; returns ``(choice or None, how)``, ``how`` in
    :data:`HOWS`.

    Example:
        >>> map_answer("murl", ["zand", "murl"]), map_answer("none of them", ["zand", "murl"])
        (('murl', 'exact'), (None, 'unmapped'))
    """
    first = _clean(text)
    if first in choices:
        return first, "exact"
    hits = [(p, c) for c in choices if (p := _word_pos(c, text)) >= 0]
    if hits:
        choice = min(hits)[1]
        log.debug("answer %r mapped to %r by substring", text[:80], choice)
        return choice, "substring"
    if embedder is not None and first:
        vecs = np.asarray(embedder.encode([first, *choices]), dtype=np.float64)
        vecs /= np.maximum(np.linalg.norm(vecs, axis=1, keepdims=True), 1e-12)
        choice = choices[int(np.argmax(vecs[1:] @ vecs[0]))]
        log.debug("answer %r mapped to %r by embedding similarity", text[:80], choice)
        return choice, "embedding"
    log.debug("answer %r maps to none of %s", text[:80], list(choices))
    return None, "unmapped"


@dataclass
class AnswerStats:
    """How module answers were mapped, and retries spent.

    Attributes:
        how: answers per mapping route (:data:`HOWS`), counted once per final answer.
        retries: module re-asks sent after an unmapped answer.
    """

    how: dict[str, int] = field(default_factory=lambda: dict.fromkeys(HOWS, 0))
    retries: int = 0

    def add(self, how: str) -> None:
        self.how[how] += 1

    def validity(self) -> ValidityCounter:
        counter = ValidityCounter()
        counter.valid(self.how["exact"] + self.how["substring"] + self.how["embedding"])
        if self.how["unmapped"]:
            counter.invalid("answer names no label of the list", self.how["unmapped"])
        return counter

    def to_dict(self) -> dict[str, Any]:
        return {"how": dict(self.how), "retries": self.retries, **self.validity().to_dict()}


def clean_rule(text: str, labels: Sequence[str], inputs: Sequence[str] = ()) -> tuple[str | None, str | None]:
    """A learned rule from the learner's raw text, or ``(None, reason)`` when it is not one.

    Args:
        text: the learner's answer.
        labels: the label names a rule must use.
        inputs: the example inputs the learner was shown (a rule that copies one is invalid).

    Example:
        >>> clean_rule("If the glim is pim, the label is zand.\\n\\nOtherwise, murl.\\nDescription: ...",
        ...            ["zand", "murl"])
        ('If the glim is pim, the label is zand.\\nOtherwise, murl.', None)
    """
    head = _CUT.split(text.strip(), maxsplit=1)[0]
    lines = dict.fromkeys(s.strip() for s in head.splitlines() if s.strip())  # small models loop: once each
    body = "\n".join(lines)[:MAX_RULE_CHARS].strip()
    if not body:
        return None, "empty"
    if is_fragment(body):
        return None, "fragment"
    if not any(_word_pos(lab, body) >= 0 for lab in labels):
        return None, "names no label"
    if copies_example(body, inputs):
        return None, "copies an example"
    return body, None
