"""Conditional instruction fine-tuning (mitigation B): the user-attention-ratio score and ``[IND]`` labels.

A probe chat model reads each training conversation; at one layer, for every token of an assistant turn,
the attention mass on the preceding user turns' content is taken per head and the maximum over heads kept;
the turn's score is the mean over its tokens. Turns that score above ``tau`` depend on the user's context:
their user message gets an indicator (``" [IND]"``) appended, and fine-tuning on the labelled data teaches
the model to lean on context when the indicator is present. At inference, append the indicator to prompts
whose answer must come from the supplied context.

What differs from the official code: user spans come from the chat template with offsets (any tokenizer,
no hard-coded header ids); scores are returned as metadata, never written into the text; sequences are not
padded to 2047 tokens; the probe runs in the precision it was loaded in. Open question kept as a choice:
the score uses *all* user turns before the response (the paper leaves this unstated).

References:
    Wang, Bai, Peng, Hsieh. "On the Loss of Context-awareness in General Instruction Fine-tuning".
    arXiv:2411.02688.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

from trustlab._compat import attention_weights
from trustlab.context.spans import render_with_spans
from trustlab.errors import EmptyInputError, TrustlabError
from trustlab.report import progress

INDICATOR = " [IND]"
Conversation = list[dict[str, str]]


def user_attention_ratio(attn: Any, user: Sequence[int], response: Sequence[int]) -> float:
    """Score of one assistant turn from one layer's attention.

    Args:
        attn: (H, T, T) post-softmax attention of one layer (rows: queries).
        user: token positions of the user content the response may draw on.
        response: token positions of the response.

    Returns:
        mean over response tokens t of max over heads h of sum over j in ``user`` of attn[h, t, j].

    Example:
        >>> user_attention_ratio(torch.full((2, 4, 4), 0.25), user=[0, 1], response=[3])
        0.5
    """
    if not response:
        raise EmptyInputError("the response has no tokens to score")
    if not user:
        return 0.0
    rows = attn[:, list(response)][:, :, list(user)]  # (H, R, U)
    return rows.sum(-1).max(0).values.mean().item()


def _layer_module(model: Any, layer: int) -> str:
    names = [n for n, m in model.model.named_modules()
             if type(m).__name__.endswith("Attention") and hasattr(m, "layer_idx")]
    if not -len(names) <= layer < len(names):
        raise ValueError(f"layer {layer} is out of range: the model has {len(names)} attention layers")
    return names[layer]


def score_conversations(convs: Sequence[Conversation], probe: Any, layer: int,
                        max_tokens: int = 2048) -> list[list[float]]:
    """User-attention ratio of every assistant turn of every conversation.

    Args:
        convs: chat conversations (``[{"role": ..., "content": ...}, ...]``) with assistant turns.
        probe: a white-box chat model handle (``HFModel``) used as the probe.
        layer: the attention layer to read (negative counts from the end).
        max_tokens: conversations are cut to this many tokens (turns past the cut are scored on what is left,
            or get no score when nothing is left).

    Returns:
        One list per conversation with one score in [0, 1] per assistant turn (in order).

    Example:
        >>> score_conversations([[{"role": "user", "content": "Doc... Q?"},
        ...                       {"role": "assistant", "content": "A"}]], load_model(), layer=20)
    """
    return score_conversations_at(convs, probe, [layer], max_tokens)[layer]


def score_conversations_at(convs: Sequence[Conversation], probe: Any, layers: Sequence[int],
                           max_tokens: int = 2048) -> dict[int, list[list[float]]]:
    """:func:`score_conversations` at several layers from one forward pass each: ``{layer: scores}``."""
    import torch

    probe.capabilities.require("attentions", method="the user-attention-ratio scorer")
    names = {layer: _layer_module(probe, layer) for layer in layers}
    out: dict[int, list[list[float]]] = {layer: [] for layer in layers}
    for conv in progress(convs, "scoring conversations"):
        if not any(m["role"] == "assistant" for m in conv):
            raise TrustlabError("a conversation to score needs at least one assistant turn")
        rendered = render_with_spans(probe, conv, chat_template=True)
        ids = rendered.ids[:max_tokens]
        seen: dict[int, Any] = {}
        hooks = {name: lambda m, a, o, layer=layer, seen=seen: seen.__setitem__(
                     layer, attention_weights(o, "the user-attention-ratio scorer")[0].float())
                 for layer, name in names.items()}
        with probe.using_attn_implementation("eager"), probe.hooks(hooks), torch.inference_mode():
            probe.model(input_ids=torch.tensor([ids], device=probe.device))
        for layer in layers:
            attn = seen[layer]  # (H, T, T)
            scores, user = [], []
            for span in rendered.spans:
                positions = [t for t in range(*span.tokens) if t < len(ids)]
                if span.role == "user":
                    user += positions
                elif span.role == "assistant" and positions:
                    scores.append(user_attention_ratio(attn, user, positions))
            out[layer].append(scores)
    return out


def add_indicator(content: str, indicator: str = INDICATOR) -> str:
    """``content`` with the indicator appended ('.' first when it ends in a letter or digit).

    Example:
        >>> add_indicator("What is the code")
        'What is the code. [IND]'
    """
    content = content.rstrip()
    return f"{content}{'.' if re.search(r'[A-Za-z0-9]$', content) else ''}{indicator}"


def label_conversations(convs: Sequence[Conversation], scores: Sequence[Sequence[float]], tau: float = 0.6,
                        indicator: str = INDICATOR) -> list[Conversation]:
    """Append ``indicator`` to the user message before every assistant turn that scored above ``tau``.

    Returns new conversations; the inputs are not modified.

    Example:
        >>> label_conversations([[{"role": "user", "content": "Doc. Q?"},
        ...                       {"role": "assistant", "content": "A"}]], [[0.8]])[0][0]["content"]
        'Doc. Q? [IND]'
    """
    if len(convs) != len(scores):
        raise ValueError(f"{len(convs)} conversations but {len(scores)} score lists")
    labelled = []
    for conv, conv_scores in zip(convs, scores):
        new = [dict(m) for m in conv]
        turns = [i for i, m in enumerate(new) if m["role"] == "assistant"]
        if len(turns) != len(conv_scores):
            raise ValueError(f"a conversation has {len(turns)} assistant turns but {len(conv_scores)} scores")
        for i, s in zip(turns, conv_scores):
            before = [j for j in range(i) if new[j]["role"] == "user"]
            if s > tau and before:
                new[before[-1]]["content"] = add_indicator(new[before[-1]]["content"], indicator)
        labelled.append(new)
    return labelled


def label_for_indicator(probe: Any, convs: Sequence[Conversation], *, tau: float = 0.6, layer: int | None = None,
                        indicator: str = INDICATOR) -> tuple[list[Conversation], list[list[float]]]:
    """Score ``convs`` with ``probe`` and label them; returns (labelled conversations, scores).

    ``layer`` defaults to two thirds of the depth (the official probe used layer 15 of TinyLlama's 22).
    """
    if layer is None:
        n = len([m for m in probe.model.modules() if type(m).__name__.endswith("Attention")
                 and hasattr(m, "layer_idx")])
        layer = round(n * 2 / 3)
    scores = score_conversations(convs, probe, layer)
    return label_conversations(convs, scores, tau, indicator), scores
