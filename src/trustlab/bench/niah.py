"""Needle-in-a-haystack (NIH) probes over real public-domain prose that ships offline.

The haystack is Jules and Michel Verne's "In the Year 2889" (public domain; the Project Gutenberg text that
``reasoning-gym`` ships as a data file), repeated when a longer context is asked for. A needle sentence is
inserted at a sentence boundary at a fraction of the context; the answer is scored by whole-word recall of
the needle's key words, as in the context-awareness paper (recall error = 1 - mean recall, lower is better).
"""

from __future__ import annotations

import importlib.util
import re
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

from trustlab.errors import MissingExtraError

_VERNE = "in_the_year_2889.txt"
INSTRUCTION = ("Read the document below and answer the question at the end using only information from "
               "the document.")


@dataclass(frozen=True)
class Needle:
    """A fact to hide, the question that asks for it, and the words a correct answer contains.

    Attributes:
        text: the needle sentence inserted into the haystack.
        question: the question asked after the document.
        words: validation words (lower case); recall is the fraction found as whole words in the answer.
    """

    text: str
    question: str
    words: tuple[str, ...]


SF_NEEDLE = Needle(
    "The best thing to do in San Francisco is eat a sandwich and sit in Dolores Park on a sunny day.",
    "What is the best thing to do in San Francisco?",
    ("eat", "sandwich", "sit", "dolores", "park", "sunny", "day"),
)
# Two synthetic needles whose answers no model can know beforehand.
NEEDLES = (
    SF_NEEDLE,
    Needle("The secret ingredient in Captain Orrin's famous soup is smoked paprika and roasted chestnuts.",
           "What is the secret ingredient in Captain Orrin's famous soup?",
           ("smoked", "paprika", "roasted", "chestnuts")),
    Needle("The password for the lighthouse archive on Kelmar Island is purple walrus lantern.",
           "What is the password for the lighthouse archive on Kelmar Island?",
           ("purple", "walrus", "lantern")),
)


@lru_cache(maxsize=1)
def haystack_text() -> str:
    """The story's body (Gutenberg header and licence removed), paragraphs joined by single spaces.

    Raises:
        MissingExtraError: ``reasoning-gym`` (which ships the text) is not installed.
    """
    spec = importlib.util.find_spec("reasoning_gym")  # located, never imported (its import is heavy)
    path = Path(list(spec.submodule_search_locations)[0]) / "data" / _VERNE if spec else None
    if path is None or not path.exists():
        raise MissingExtraError('the NIH haystack ships with reasoning-gym; install it with: '
                                'pip install "trustlab[llm]"  (or: pip install reasoning-gym==0.1.25)')
    raw = path.read_text(encoding="utf-8")
    body = raw.split("*** START OF THE PROJECT GUTENBERG EBOOK", 1)[-1].split("\n", 1)[-1]
    body = body.split("End of Project Gutenberg's", 1)[0]
    body = body[body.index("IN THE YEAR 2889."):]  # skip the producer's and redactor's notes
    return re.sub(r"\s+", " ", body).strip()


def build_context(tokenizer: Any, n_tokens: int, depth: float, needle: Needle = SF_NEEDLE,
                  haystack: str | None = None) -> str:
    """A haystack of about ``n_tokens`` tokens with ``needle`` inserted at ``depth`` (0 = start, 1 = end).

    The haystack is cut to ``n_tokens`` tokens (the needle comes on top) and the needle goes to the sentence
    boundary nearest to the requested depth, so no sentence is split.

    Example:
        >>> ctx = build_context(model.tokenizer, 500, 0.5)
        >>> SF_NEEDLE.text in ctx
        True
    """
    if not 0.0 <= depth <= 1.0:
        raise ValueError(f"depth must lie in [0, 1], got {depth}")
    text = haystack or haystack_text()
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    while len(ids) < n_tokens:  # a short story: repeat it
        text = f"{text} {haystack or haystack_text()}"
        ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    hay = tokenizer.decode(ids[:n_tokens]).strip()
    cut = hay.rfind(". ")
    hay = hay[: cut + 1] if cut > 0 else hay  # end on a full sentence
    bounds = [0] + [m.end() for m in re.finditer(r"[.!?][\"')\]]? ", hay)] + [len(hay)]
    at = min(bounds, key=lambda b: abs(b - depth * len(hay)))
    return " ".join(part for part in (hay[:at].rstrip(), needle.text, hay[at:].lstrip()) if part)


def niah_prompt(context: str, question: str) -> str:
    """The user-turn content of one probe: instruction, document, question."""
    return f"{INSTRUCTION}\n\nDocument:\n{context}\n\nQuestion: {question}"


def recall(answer: str, words: tuple[str, ...]) -> float:
    """Fraction of ``words`` present as whole words in the lower-cased, punctuation-stripped answer.

    Example:
        >>> recall("Eat a sandwich in Dolores Park!", SF_NEEDLE.words)
        0.5714285714285714
    """
    found = set(re.sub(r"[^\w\s]", " ", answer.lower()).split())
    return sum(w in found for w in words) / len(words)
