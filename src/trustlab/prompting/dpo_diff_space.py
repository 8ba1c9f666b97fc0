"""DPO-Diff search spaces: per-word substitutes of a user prompt (Wang et al., ICML 2024, section 3).

A :class:`SearchSpace` is a list of *slots*, each a tuple of single-token options; a *genome* picks one
option per slot. Three kinds:

* ``"synonym"`` (attack): the positive prompt is the user prompt with words swapped for synonyms;
  option 0 of each slot is the original word. Candidates that move the sentence embedding too far
  (cosine < ``min_cosine`` = 0.9 between the rewritten and the original prompt) are dropped.
* ``"antonym"`` (enhancement): the positive prompt stays the user prompt; the chosen antonyms are joined
  with commas into a negative prompt; option 0 is ``""`` (no word).
* ``"nplib"``: like ``"antonym"`` but the slots come from a library of generic negative words.

Only candidates that are one token for the text encoder's tokenizer are kept (the relaxation mixes
token embeddings, one per slot). Tables are given by hand or proposed by any trustlab model handle.

References:
    Ruochen Wang, Ting Liu, Cho-Jui Hsieh, Boqing Gong. "On Discrete Prompt Optimization for
    Diffusion Models." ICML 2024. arXiv:2407.01606.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from trustlab.errors import EmptyInputError, ParseError, TrustlabError

KINDS = ("synonym", "antonym", "nplib")
MAX_OPTIONS = 5  # substitutes per word, as in the paper
NPLIB = (  # generic negative words, split into 4 slots (the paper's NPLib idea; our own word list)
    ("blurry", "lowres", "noisy", "grainy", "pixelated"),
    ("distorted", "deformed", "disfigured", "mutated", "malformed"),
    ("ugly", "bad", "poor", "worst", "unattractive"),
    ("cropped", "duplicate", "watermark", "text", "jpeg"),
)
_WORD = re.compile(r"[A-Za-z0-9][A-Za-z0-9'-]*")


class SearchSpaceError(TrustlabError, ValueError):
    """A search space with nothing to search (no slot with an alternative), or bad arguments to build one."""


@dataclass(frozen=True)
class Slot:
    """One searchable position.

    Attributes:
        word: the user-prompt word it stands for (``""`` for NPLib slots).
        options: option strings; ``options[0]`` is the original word (synonym) or ``""`` (antonym, NPLib).
        position: index of the word in the user prompt's word list (synonym spaces), else -1.
    """

    word: str
    options: tuple[str, ...]
    position: int = -1


@dataclass
class SearchSpace:
    """The discrete domain of DPO-Diff for one user prompt.

    Attributes:
        user_prompt: the prompt whose faithfulness is measured.
        kind: ``"synonym"``, ``"antonym"`` or ``"nplib"``.
        slots: searchable positions, each with >= 2 options.
        words: the user prompt split into words (synonym slots point into it).
        dropped: counts of removed candidates by reason (``"multi_token"``, ``"cosine"``, ``"duplicate"``).
        invalid: LLM answers that did not parse (``from_llm`` only).
        asked: LLM calls made (``from_llm`` only).

    Example:
        >>> s = SearchSpace.from_tables("a bold seven", {"bold": ["thin"]}, kind="antonym")
        >>> s.prompts((1,))
        ('a bold seven', 'thin')
    """

    user_prompt: str
    kind: str
    slots: tuple[Slot, ...]
    words: tuple[str, ...]
    dropped: dict[str, int] = field(default_factory=dict)
    invalid: int = 0
    asked: int = 0

    @property
    def sizes(self) -> tuple[int, ...]:
        """Number of options per slot."""
        return tuple(len(s.options) for s in self.slots)

    @property
    def size(self) -> int:
        """Number of distinct genomes (prompts) in the space."""
        return math.prod(self.sizes)

    def check(self, genome: Sequence[int]) -> tuple[int, ...]:
        """``genome`` as a tuple, after checking its length and ranges (raises SearchSpaceError)."""
        g = tuple(int(i) for i in genome)
        if len(g) != len(self.slots) or any(not 0 <= i < n for i, n in zip(g, self.sizes)):
            raise SearchSpaceError(f"genome {g} does not fit slot sizes {self.sizes}")
        return g

    def segments(self, genome: Sequence[int]) -> tuple[list[str | int], list[str | int]]:
        """Positive and negative prompts as lists of fixed text pieces (str) and slot indices (int).

        A slot index stands for the option ``genome[i]`` picks; :mod:`trustlab.prompting.dpo_diff` embeds
        it as a mixture of option embeddings in the relaxation. Negative slots are separated by commas; an
        empty option (``""``) is embedded as the pad token, so the embedding equals the tokenized
        :meth:`prompts` string exactly when no slot picks ``""``.
        """
        self.check(genome)
        if self.kind == "synonym":
            at = {s.position: i for i, s in enumerate(self.slots)}
            return [at.get(k, w) for k, w in enumerate(self.words)], []
        neg: list[str | int] = []
        for i in range(len(self.slots)):
            neg += [",", i] if i else [i]
        return [self.user_prompt], neg

    def prompts(self, genome: Sequence[int]) -> tuple[str, str]:
        """The discrete (positive prompt, negative prompt) a genome stands for."""
        g = self.check(genome)
        pos, neg = self.segments(g)
        pick = [self.slots[i].options[g[i]] for i in range(len(g))]
        positive = " ".join(p if isinstance(p, str) else pick[p] for p in pos)
        negative = ", ".join(w for w in (pick[p] for p in neg if isinstance(p, int)) if w)
        return positive, negative

    @classmethod
    def from_tables(cls, user_prompt: str, table: Mapping[str, Sequence[str]], *, kind: str = "antonym",
                    tokenizer: Any = None, sentence_encoder: Any = "minilm", min_cosine: float = 0.9,
                    max_options: int = MAX_OPTIONS) -> SearchSpace:
        """Build a space from a word -> candidates table.

        Args:
            user_prompt: the user's prompt (words are matched case-insensitively).
            table: candidates per word; words absent from the prompt are ignored. Unused for ``"nplib"``
                (pass ``{}``; :data:`NPLIB` gives the slots).
            kind: ``"synonym"``, ``"antonym"`` or ``"nplib"``.
            tokenizer: the text encoder's tokenizer; when given, only single-token candidates are kept.
            sentence_encoder: synonym spaces only: ``"minilm"`` (the embedded all-MiniLM-L6-v2), an object
                with ``encode(list[str], normalize_embeddings=True)``, or None to skip the constraint.
            min_cosine: the constraint: cosine(rewritten prompt, user prompt) >= this.
            max_options: substitutes kept per word (after filtering).

        Raises:
            EmptyInputError: an empty prompt. SearchSpaceError: an unknown kind, or no slot survives.

        Example:
            >>> SearchSpace.from_tables("a bold seven", {"seven": ["one", "four"]}, kind="antonym").sizes
            (3,)
        """
        if kind not in KINDS:
            raise SearchSpaceError(f"unknown search-space kind {kind!r}; choose one of {', '.join(KINDS)}")
        words = tuple(_WORD.findall(user_prompt or ""))
        if not words:
            raise EmptyInputError("the user prompt has no words; give a non-empty text prompt")
        dropped = {"multi_token": 0, "cosine": 0, "duplicate": 0}
        single = _single_token_test(tokenizer)
        if kind == "nplib":
            raw = [("", ("", *opts), -1) for opts in NPLIB]
        else:
            lower = {str(k).strip().lower(): v for k, v in table.items()}
            raw = [(w, (w if kind == "synonym" else "", *lower[w.lower()]), k)
                   for k, w in enumerate(words) if w.lower() in lower]
        slots = []
        for word, options, pos in raw:
            if kind == "synonym" and not single(word):
                dropped["multi_token"] += len(options) - 1  # the original cannot be mixed with one token
                continue
            kept = [options[0]]
            for cand in options[1:]:
                cand = str(cand).strip()
                if not cand or " " in cand or cand.lower() in {o.lower() for o in kept} or cand.lower() == word.lower():
                    dropped["duplicate"] += 1
                elif not single(cand):
                    dropped["multi_token"] += 1
                else:
                    kept.append(cand)
            slots.append(Slot(word, tuple(kept), pos))
        if kind == "synonym" and sentence_encoder is not None:
            slots = _cosine_filter(user_prompt, words, slots, sentence_encoder, min_cosine, dropped)
        slots = [Slot(s.word, s.options[:max_options + 1], s.position) for s in slots if len(s.options) > 1]
        if not slots:
            raise SearchSpaceError(f"no word of {user_prompt!r} has a usable {kind} candidate "
                                   f"(dropped: {dropped}); give a table that names words of the prompt")
        return cls(user_prompt, kind, tuple(slots), words, dropped)

    @classmethod
    def from_llm(cls, user_prompt: str, model: Any, *, kind: str = "antonym", tries: int = 3,
                 max_new_tokens: int = 256, **kwargs: Any) -> SearchSpace:
        """Ask a model handle for the candidate table, then build the space as :meth:`from_tables` does.

        The answer must contain a JSON object ``{"word": ["cand", ...], ...}``; lines ``word: a, b, c``
        are accepted too. An answer that parses into no candidate for a prompt word counts as invalid and is
        asked again (greedy first, then sampled with a new seed), up to ``tries`` calls.

        Args:
            user_prompt: the user's prompt.
            model: any trustlab handle (:func:`trustlab.models.load_model`); only ``generate`` is used.
            kind: ``"synonym"`` or ``"antonym"`` (NPLib needs no model).
            tries: model calls at most.
            max_new_tokens: answer length bound.
            **kwargs: passed to :meth:`from_tables` (tokenizer, sentence_encoder, min_cosine, ...).

        Raises:
            ParseError: no answer parsed within ``tries`` (the message says how many were invalid).

        Example:
            >>> from trustlab.models import load_model
            >>> space = SearchSpace.from_llm("a photo of a sneaker", load_model("embedded"), kind="antonym")
        """
        from trustlab.models.base import GenerationConfig

        if kind not in ("synonym", "antonym"):
            raise SearchSpaceError(f"from_llm builds 'synonym' or 'antonym' spaces, not {kind!r}")
        words = _WORD.findall(user_prompt or "")
        if not words:
            raise EmptyInputError("the user prompt has no words; give a non-empty text prompt")
        relation = "synonyms (words with the same meaning)" if kind == "synonym" else "antonyms (opposite words)"
        ask = (f"For each word of the prompt \"{user_prompt}\", list up to {MAX_OPTIONS} single-word {relation}. "
               "Answer only with a JSON object mapping each word to a list of words, for example "
               '{"big": ["small", "tiny"]}.')
        invalid = 0
        for attempt in range(tries):
            cfg = GenerationConfig(max_new_tokens=max_new_tokens, temperature=0.0 if attempt == 0 else 0.8,
                                   seed=attempt)
            text = model.generate([ask], cfg)[0][0].text
            table = parse_table(text, words)
            if table:
                try:
                    space = cls.from_tables(user_prompt, table, kind=kind, **kwargs)
                except SearchSpaceError:
                    invalid += 1
                    continue
                space.invalid, space.asked = invalid, attempt + 1
                return space
            invalid += 1
        raise ParseError(f"the model gave no usable {kind} table for {user_prompt!r} in {tries} tries "
                         f"({invalid} invalid answers); use a more capable model or SearchSpace.from_tables")


def parse_table(text: str, words: Sequence[str]) -> dict[str, list[str]]:
    """Parse untrusted model text into ``{prompt word: [candidates]}`` (never evaluates it).

    Tries each ``{...}`` block as JSON, then ``word: a, b, c`` lines. Keys that are not prompt words,
    non-string candidates and candidates with spaces are dropped; an empty dict means "invalid".

    Example:
        >>> parse_table('Sure! {"big": ["small", 3, "tiny"]}', ["a", "big", "dog"])
        {'big': ['small', 'tiny']}
    """
    known = {w.lower() for w in words}
    found: dict[str, list[str]] = {}

    def add(key: Any, values: Any) -> None:
        if not isinstance(key, str) or key.strip().lower() not in known or not isinstance(values, list):
            return
        cands = [v.strip() for v in values if isinstance(v, str) and v.strip() and " " not in v.strip()]
        if cands:
            found.setdefault(key.strip().lower(), []).extend(cands)

    for block in re.findall(r"\{[^{}]*\}", text[:20_000]):
        try:
            obj = json.loads(block)
        except ValueError:
            continue
        if isinstance(obj, dict):
            for k, v in obj.items():
                add(k, v)
    if not found:
        for line in text[:20_000].splitlines():
            key, sep, rest = line.partition(":")
            if sep:
                add(key.strip(" -*\"'"), [c.strip(" .\"'[]") for c in rest.split(",")])
    return found


def _single_token_test(tokenizer: Any):
    if tokenizer is None:
        return lambda word: True
    unk = getattr(tokenizer, "unk_token_id", None)

    def single(word: str) -> bool:
        ids = tokenizer(word, add_special_tokens=False)["input_ids"]
        return len(ids) == 1 and ids[0] != unk

    return single


def _cosine_filter(user_prompt: str, words: tuple[str, ...], slots: list[Slot], encoder: Any, min_cosine: float,
                   dropped: dict[str, int]) -> list[Slot]:
    if isinstance(encoder, str):
        if encoder != "minilm":
            raise SearchSpaceError(f"unknown sentence encoder {encoder!r}; pass 'minilm', an object or None")
        from trustlab.models.embedded import load_sentence_encoder

        encoder = load_sentence_encoder()
    rewrites = []
    for s in slots:
        for cand in s.options[1:]:
            rewrites.append(" ".join(cand if k == s.position else w for k, w in enumerate(words)))
    if not rewrites:
        return slots
    emb = encoder.encode([user_prompt, *rewrites], normalize_embeddings=True)
    cos = iter((emb[1:] @ emb[0]).tolist())
    out = []
    for s in slots:
        kept = [s.options[0]]
        for cand in s.options[1:]:
            if next(cos) >= min_cosine:
                kept.append(cand)
            else:
                dropped["cosine"] += 1
        out.append(Slot(s.word, tuple(kept), s.position))
    return out
