"""Where each chat message's content lies in a rendered prompt, in characters and in tokens.

The official code finds user spans by searching for the first occurrence of the user's text and finds role
headers by hard-coded token ids of one tokenizer. Both break: the same text can appear earlier (in the
system prompt, in an earlier turn) and every tokenizer has its own header ids. Here every message's content
is replaced by a unique sentinel, the prompt is rendered through the model's own chat template, and the
sentinels give the exact character span of each content; token spans then come from the tokenizer's
offset mapping. Works for any template that inserts contents verbatim (it is checked, not assumed).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from trustlab.errors import TrustlabError
from trustlab.models.base import Prompt, as_messages

# Private-use code points: no template or tokenizer treats them specially, no real text contains them.
_SENTINEL = "\ue000{}\ue001"


@dataclass(frozen=True)
class MessageSpan:
    """One message's content inside a rendered prompt.

    Attributes:
        role: the message's role (``"system"``, ``"user"``, ``"assistant"``).
        chars: (start, end) character offsets of the content in the rendered text.
        tokens: (start, end) token indices of the content (tokens that overlap the characters).
    """

    role: str
    chars: tuple[int, int]
    tokens: tuple[int, int]


@dataclass(frozen=True)
class RenderedPrompt:
    """A prompt as the model sees it: text, token ids and each message's span.

    Attributes:
        text: the rendered text (chat-templated or raw).
        ids: its token ids, exactly as ``handle.tokenize`` gives them.
        spans: one :class:`MessageSpan` per message, in message order.
    """

    text: str
    ids: list[int]
    spans: list[MessageSpan]

    def span_ids(self, roles: tuple[str, ...] = ("user",)) -> list[int]:
        """Per token: 0 outside the chosen roles' contents, k for a token in the k-th such content (1-based).

        Example:
            >>> rendered.span_ids(("user",))  # [0, 0, 0, 1, 1, 1, 0, 0, 2, 2, 0, ...]
        """
        out = [0] * len(self.ids)
        k = 0
        for span in self.spans:
            if span.role not in roles:
                continue
            k += 1
            for t in range(*span.tokens):
                out[t] = k
        return out


def render_with_spans(handle: Any, prompt: Prompt, chat_template: bool = True) -> RenderedPrompt:
    """Render ``prompt`` like ``handle.render`` and locate every message's content in text and tokens.

    Args:
        handle: an :class:`~trustlab.models.hf.HFModel` (anything with ``render`` and a fast ``tokenizer``).
        prompt: a string (one user turn) or chat messages.
        chat_template: use the model's chat template (True) or the raw text (False).

    Raises:
        TrustlabError: the template alters message contents (e.g. trims them), so spans cannot be exact.

    Example:
        >>> r = render_with_spans(model, [{"role": "user", "content": "Hi"}])
        >>> r.text[slice(*r.spans[0].chars)]
        'Hi'
    """
    messages = as_messages(prompt)
    marked = [{**m, "content": _SENTINEL.format(i)} for i, m in enumerate(messages)]
    skeleton = handle.render(marked, chat_template)
    pieces: list[str] = []
    char_spans: list[tuple[int, int]] = []
    cursor, length = 0, 0
    for i, m in enumerate(messages):
        mark = _SENTINEL.format(i)
        at = skeleton.find(mark, cursor)
        if at < 0 or skeleton.count(mark) != 1:
            raise TrustlabError(f"the chat template does not render message {i} exactly once; cannot locate it")
        pieces += [skeleton[cursor:at], m["content"]]
        start = length + at - cursor
        length = start + len(m["content"])
        char_spans.append((start, length))
        cursor = at + len(mark)
    pieces.append(skeleton[cursor:])
    text = "".join(pieces)
    if text != handle.render(prompt, chat_template):
        raise TrustlabError("the chat template changes message contents (e.g. strips whitespace), so token spans "
                            "of the contents cannot be located exactly")
    enc = handle.tokenizer(text, add_special_tokens=not chat_template, return_offsets_mapping=True)
    offsets = enc["offset_mapping"]
    spans = []
    for m, (a, b) in zip(messages, char_spans):
        inside = [t for t, (s, e) in enumerate(offsets) if s < b and e > a]
        tokens = (inside[0], inside[-1] + 1) if inside else (0, 0)
        spans.append(MessageSpan(role=m["role"], chars=(a, b), tokens=tokens))
    return RenderedPrompt(text=text, ids=list(enc["input_ids"]), spans=spans)
