"""An LLM as a zero-shot classifier: the probability of each label word as the next answer token.

Used by LLM-as-NLI (CLUE), LLM refusal judges and other yes/no judges. White-box handles read the
next-token distribution of one forward pass; black-box handles generate the answer greedily, parse it
strictly with :func:`parse_label` and, when the server gives log-probs, turn the chosen token's
probability into a distribution (an approximation, documented); without log-probs the label is hard.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence

from trustlab.models.base import ModelHandle, Prompt

_WORDS = re.compile(r"[^\W\d_]+")


def _word_seq(text: str) -> list[str]:
    return _WORDS.findall(text.lower())


def _occurs(words: list[str], phrase: list[str]) -> bool:
    return any(words[i:i + len(phrase)] == phrase for i in range(len(words) - len(phrase) + 1))


def parse_label(text: str, labels: Mapping[str, Sequence[str]]) -> str | None:
    """The label a generated answer names, strictly; None when the answer is not one label.

    The answer's first words must be one of a label's words (any case; punctuation and markdown around
    them ignored) and no other label's word may occur anywhere in it: "Contradiction." and
    "**entailment** - the premise says so" parse, while "The answer is neutral", "entailment, neutral
    or contradiction" (an echo of the prompt's format) and "Entailments" do not.

    Args:
        text: the generated answer.
        labels: label name -> words that express it, e.g. ``{"yes": ["yes"], "no": ["no"]}``.

    Example:
        >>> parse_label("Neutral.", {"entailment": ["entailment"], "neutral": ["neutral"]})
        'neutral'
        >>> parse_label("neutral or entailment", {"entailment": ["entailment"], "neutral": ["neutral"]}) is None
        True
    """
    words = _word_seq(text)
    phrases = {lab: [_word_seq(w) for w in ws if _word_seq(w)] for lab, ws in labels.items()}
    hits = [lab for lab, ps in phrases.items() if any(words[:len(p)] == p for p in ps)]
    if len(hits) != 1:
        return None
    if any(_occurs(words, p) for lab, ps in phrases.items() if lab != hits[0] for p in ps):
        return None
    return hits[0]


def _variants(word: str) -> list[str]:
    w = word.strip()
    return list(dict.fromkeys([w, w.lower(), w.capitalize(), " " + w.lower(), " " + w.capitalize()]))


def _first_token_ids(tokenizer, labels: Mapping[str, Sequence[str]]) -> dict[str, list[int]]:
    """First token id of every surface variant of every label word; ids shared by two labels dropped."""
    ids = {lab: {tokenizer(v, add_special_tokens=False)["input_ids"][0] for w in words for v in _variants(w)}
           for lab, words in labels.items()}
    shared = {i for a in ids for b in ids if a != b for i in ids[a] & ids[b]}
    out = {lab: sorted(s - shared) for lab, s in ids.items()}
    empty = [lab for lab, s in out.items() if not s]
    if empty:
        raise ValueError(f"labels {empty} share all their first tokens with other labels; pick other words")
    return out


def reads_logits(model: ModelHandle) -> bool:
    """Whether :func:`label_logprobs` reads ``model``'s next-token distribution (a white-box handle with
    ``forward`` and a tokenizer) rather than parsing a generated answer, which can be invalid."""
    return hasattr(model, "forward") and getattr(model, "tokenizer", None) is not None


def _normalise(logps: dict[str, float]) -> dict[str, float]:
    top = max(logps.values())
    z = top + math.log(sum(math.exp(v - top) for v in logps.values()))
    return {k: v - z for k, v in logps.items()}


def label_logprobs(
    model: ModelHandle,
    prompts: Sequence[Prompt],
    labels: Mapping[str, Sequence[str]],
    *,
    chat_template: bool = True,
    on_invalid: str = "uniform",
) -> list[dict[str, float] | None]:
    """log P(label | prompt) for each prompt, renormalised over the given labels.

    Args:
        model: any handle. White-box handles (with ``forward``) give the exact next-token distribution:
            for each label, the probability mass of the first tokens of its words (lower-case,
            capitalised, with and without a leading space). Black-box handles generate a short greedy
            answer and parse it with :func:`parse_label`; the label it names gets the chosen first
            token's probability p when the server gives log-probs (p = 1 - 1e-6 when it does not: a
            hard label), the other labels share 1 - p.
        prompts: the classification prompts (ending where the label word should come).
        labels: label name -> words that express it, e.g. ``{"yes": ["yes"], "no": ["no"]}``.
        chat_template: render with the chat template (the answer is the assistant's first token).
        on_invalid: what a black-box answer that names no single label becomes: ``"uniform"`` (default:
            a uniform distribution) or ``"none"`` (None: the caller counts it as invalid).

    Returns:
        One ``{label: log-prob}`` dict per prompt (probabilities sum to 1), or None for an invalid
        answer when ``on_invalid="none"``.

    Example:
        >>> label_logprobs(model, ["Is Paris in France? Answer yes or no."], {"yes": ["yes"], "no": ["no"]})
        [{'yes': -0.2, 'no': -1.7}]
    """
    if on_invalid not in ("uniform", "none"):
        raise ValueError(f"on_invalid must be 'uniform' or 'none', got {on_invalid!r}")
    prompts = list(prompts)
    if not prompts:
        return []
    if reads_logits(model):
        return _white_box(model, prompts, labels, chat_template)
    return _black_box(model, prompts, labels, chat_template, on_invalid)


def _white_box(model, prompts: list[Prompt], labels: Mapping[str, Sequence[str]],
               chat_template: bool) -> list[dict[str, float]]:
    import torch

    ids = _first_token_ids(model.tokenizer, labels)
    out: dict[int, dict[str, float]] = {}
    step = max(1, int(getattr(model, "batch_size", 8)))
    # batch prompts of similar length together: less padding, same results
    order = sorted(range(len(prompts)), key=lambda i: len(model.tokenize(prompts[i], chat_template)))
    for start in range(0, len(order), step):
        chunk = order[start:start + step]
        res, _ = model.forward([prompts[i] for i in chunk], chat_template=chat_template, logits_to_keep=1)
        logp = torch.log_softmax(res.logits[:, -1].float(), dim=-1)  # (B, V): left padding, last = next
        for i, row in zip(chunk, logp, strict=True):
            out[i] = _normalise({lab: torch.logsumexp(row[t], 0).item() for lab, t in ids.items()})
    return [out[i] for i in range(len(prompts))]


def _black_box(model, prompts: list[Prompt], labels: Mapping[str, Sequence[str]],
               chat_template: bool, on_invalid: str) -> list[dict[str, float] | None]:
    gens = model.generate(prompts, chat_template=chat_template, max_new_tokens=4, temperature=0.0,
                          logprobs=model.capabilities.logprobs)
    out: list[dict[str, float] | None] = []
    for (g,) in gens:
        hit = parse_label(g.text, labels)
        if hit is None:
            out.append(None if on_invalid == "none" else {lab: -math.log(len(labels)) for lab in labels})
            continue
        p = math.exp(g.token_logprobs[0]) if g.token_logprobs else 1.0
        p = min(max(p, 1e-6), 1 - 1e-6)
        rest = math.log((1 - p) / (len(labels) - 1)) if len(labels) > 1 else 0.0
        out.append({lab: (math.log(p) if lab == hit else rest) for lab in labels})
    return out
