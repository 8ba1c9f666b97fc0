"""An LLM as a zero-shot classifier: the probability of each label word as the next answer token.

Used by LLM-as-NLI (CLUE), LLM refusal judges and other yes/no judges. White-box handles read the
next-token distribution of one forward pass; black-box handles generate the answer greedily with
log-probs and turn the chosen token's probability into a distribution (an approximation, documented).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

from trustlab.models.base import ModelHandle, Prompt


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
) -> list[dict[str, float]]:
    """log P(label | prompt) for each prompt, renormalised over the given labels.

    Args:
        model: any handle. White-box handles (with ``forward``) give the exact next-token distribution:
            for each label, the probability mass of the first tokens of its words (lower-case,
            capitalised, with and without a leading space). Black-box handles generate a short greedy
            answer with log-probs; the label whose word the answer starts with gets the chosen token's
            probability p, the other labels share 1 - p; an answer matching no label gives a uniform
            distribution.
        prompts: the classification prompts (ending where the label word should come).
        labels: label name -> words that express it, e.g. ``{"yes": ["yes"], "no": ["no"]}``.
        chat_template: render with the chat template (the answer is the assistant's first token).

    Returns:
        One ``{label: log-prob}`` dict per prompt; the probabilities sum to 1.

    Example:
        >>> label_logprobs(model, ["Is Paris in France? Answer yes or no."], {"yes": ["yes"], "no": ["no"]})
        [{'yes': -0.2, 'no': -1.7}]
    """
    prompts = list(prompts)
    if not prompts:
        return []
    if hasattr(model, "forward") and getattr(model, "tokenizer", None) is not None:
        return _white_box(model, prompts, labels, chat_template)
    return _black_box(model, prompts, labels, chat_template)


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
               chat_template: bool) -> list[dict[str, float]]:
    gens = model.generate(prompts, chat_template=chat_template, max_new_tokens=4, temperature=0.0,
                          logprobs=True)
    out = []
    for (g,) in gens:
        text = g.text.strip().lower()
        hit = next((lab for lab, words in labels.items() if any(text.startswith(w.lower()) for w in words)), None)
        if hit is None:
            out.append({lab: -math.log(len(labels)) for lab in labels})
            continue
        p = math.exp(g.token_logprobs[0]) if g.token_logprobs else 1.0
        p = min(max(p, 1e-6), 1 - 1e-6)
        rest = math.log((1 - p) / (len(labels) - 1)) if len(labels) > 1 else 0.0
        out.append({lab: (math.log(p) if lab == hit else rest) for lab in labels})
    return out
