"""What an OpenAI-compatible server really honours, measured with a few cheap requests.

Servers accept the whole OpenAI request schema but may ignore parts of it: `transformers serve` answers
greedily at any temperature unless the model's generation config samples, returns one choice whatever
``n`` asks, and sends no log-probs; llama.cpp ignores ``n``. A method that trusts the request instead of
the server then measures a constant (CLUE reported ln 2 for every question). :func:`probe_endpoint`
sends five generation requests of 8 new tokens, built by the handle itself (so what it measures is what
the handle gets), plus ``GET /models`` (and ``GET /props`` on llama.cpp); a server that refuses ``n = 2``
costs one more:

1. greedy (this also warms the server's prompt cache, so later requests see the same numerics);
2. temperature 1.5, seed ``s``, ``n = 2``; sent twice (same seed: same text?);
3. temperature 1.5, seed ``s + 1``, ``n = 1``;
4. greedy again, with log-probs (well-formed? does greedy repeat?). Only this one asks for log-probs:
   llama-cpp-python re-evaluates the prompt for them (measured: 12 s a request against 2 s without).

``sampling`` is True when the sampled texts differ, False when every sampled text equals the greedy one;
``seed`` is only decided when sampling works; ``max_context`` comes from the ``/models`` metadata when a
server gives it (vLLM's ``max_model_len``; llama.cpp, whose entry has ``meta``: ``n_ctx`` from ``/props``),
else stays unknown.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

from trustlab.errors import EndpointError
from trustlab.models.base import GenerationConfig

if TYPE_CHECKING:
    from trustlab.models.openai import OpenAIModel

PROBE_PROMPT = "Write one unusual word."
PROBE_TEMPERATURE = 1.5
PROBE_SEED = 1234
PROBE_TOKENS = 8

# /models fields that hold the served context window, most specific first
_CONTEXT_KEYS = ("max_model_len", "n_ctx", "context_length", "context_window", "max_context_length")


@dataclass
class ProbeResult:
    """What :func:`probe_endpoint` measured (it lands in ``describe()`` and so in run configs).

    Attributes:
        sampling: sampled texts differ (True), all equal the greedy text (False), or undecided (None).
        native_n: ``n = 2`` returned two choices.
        logprobs: every choice carried well-formed token log-probs (finite, <= 0, one per token).
        seed: the same seed gave the same texts (None when sampling does not work).
        greedy_repeats: two greedy requests gave the same text.
        max_context: the context window the server reports, or None.
        endpoint: ``"chat"`` (``/chat/completions`` answered) or ``"completions"``.
        requests: HTTP requests the probe sent.
        notes: what the probe saw, in words (e.g. why logprobs were judged missing).
    """

    sampling: bool | None
    native_n: bool
    logprobs: bool
    seed: bool | None
    greedy_repeats: bool
    max_context: int | None
    endpoint: str
    requests: int = 0
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def context_from_models_entry(entry: dict[str, Any]) -> int | None:
    """The served context window from one ``/models`` entry, or None when it gives none.

    Example:
        >>> context_from_models_entry({"id": "m", "max_model_len": 4096})          # vLLM
        4096
        >>> context_from_models_entry({"n_ctx": 2048, "n_slots": 1})  # llama.cpp's /props settings
        2048
        >>> context_from_models_entry({"id": "m"}) is None
        True
    """
    meta = entry.get("meta") if isinstance(entry.get("meta"), dict) else {}
    for source in (entry, meta):
        for key in _CONTEXT_KEYS:
            value = source.get(key)
            if isinstance(value, int) and not isinstance(value, bool) and value > 0:
                return value
    return None  # llama.cpp's meta.n_ctx_train is the training window, not what the server was started with


def logprobs_problem(choice: dict[str, Any], chat: bool) -> str | None:
    """Why a choice's log-probs are unusable (missing, empty, not finite, positive), or None if well-formed.

    Example:
        >>> logprobs_problem({"message": {"content": "Hi"}, "logprobs": None}, chat=True)
        'no logprobs in the answer'
    """
    lp = choice.get("logprobs")
    if not isinstance(lp, dict):
        return "no logprobs in the answer"
    if chat:
        content = lp.get("content")
        if not isinstance(content, list) or not content:
            return "logprobs.content is missing or empty"
        if not all(isinstance(t, dict) and isinstance(t.get("token"), str) for t in content):
            return "logprobs.content entries lack a token string"
        values = [t.get("logprob") for t in content]
    else:
        tokens, values = lp.get("tokens"), lp.get("token_logprobs")
        if not isinstance(tokens, list) or not tokens or not isinstance(values, list) or len(values) != len(tokens):
            return "logprobs.tokens / token_logprobs are missing, empty or of different lengths"
    if not all(isinstance(v, (int, float)) and math.isfinite(v) and v <= 1e-4 for v in values):
        return f"token log-probs are not finite numbers <= 0: {values[:4]}"
    return None


def _texts(choices: list[dict[str, Any]], chat: bool) -> list[str]:
    return [((c.get("message") or {}).get("content") if chat else c.get("text")) or "" for c in choices]


def probe_endpoint(model: OpenAIModel) -> ProbeResult:
    """Measure what ``model``'s server honours (see the module docstring): about six small requests.

    Raises:
        EndpointError: the server is unreachable, or answers neither ``/chat/completions`` nor
            ``/completions``.

    Example:
        >>> probe_endpoint(OpenAIModel("http://127.0.0.1:8080/v1")).sampling
        True
    """
    calls0 = model.calls
    notes: list[str] = []
    entry = model.model_entry()
    max_context = context_from_models_entry(entry)
    if max_context is None and isinstance(entry.get("meta"), dict):  # llama.cpp: the runtime window is in /props
        try:
            props = model._request("GET", "/props", root=True)
            max_context = context_from_models_entry(props.get("default_generation_settings") or props)
        except EndpointError as exc:
            notes.append(f"/props failed: {str(exc)[:160]}")
    if max_context is None:
        notes.append("/models gives no context window")

    def call(chat: bool, temperature: float, n: int, seed: int | None, logprobs: bool) -> list[dict[str, Any]]:
        cfg = GenerationConfig(max_new_tokens=PROBE_TOKENS, temperature=temperature, n=n, logprobs=logprobs)
        data = model._request("POST", "/chat/completions" if chat else "/completions",
                              model._payload(PROBE_PROMPT, cfg, chat, n, seed))
        choices = data.get("choices")
        if not isinstance(choices, list) or not choices or not all(isinstance(c, dict) for c in choices):
            raise EndpointError(f"{model.base_url}: the probe's answer has no choices: {str(data)[:300]}")
        return choices

    try:
        chat, greedy = True, call(True, 0.0, 1, None, False)
    except EndpointError as exc:
        notes.append(f"/chat/completions failed ({str(exc)[:160]}); probed /completions")
        chat, greedy = False, call(False, 0.0, 1, None, False)
    try:
        n, first = 2, call(chat, PROBE_TEMPERATURE, 2, PROBE_SEED, False)
    except EndpointError as exc:
        notes.append(f"refused n=2: {str(exc)[:160]}")
        n, first = 1, call(chat, PROBE_TEMPERATURE, 1, PROBE_SEED, False)
    again = call(chat, PROBE_TEMPERATURE, n, PROBE_SEED, False)
    other = call(chat, PROBE_TEMPERATURE, 1, PROBE_SEED + 1, False)
    try:
        scored = call(chat, 0.0, 1, None, True)
        problem = logprobs_problem(scored[0], chat)
    except EndpointError as exc:
        scored, problem = greedy, f"refused: {str(exc)[:160]}"
    if problem:
        notes.append(f"logprobs unusable: {problem}")

    g_text = _texts(greedy, chat)[0].strip()
    sampled = [t.strip() for t in _texts(first, chat) + _texts(again, chat) + _texts(other, chat)]
    if len(set(sampled)) > 1:
        sampling: bool | None = True
    elif sampled[0] == g_text:
        sampling = False
        notes.append(f"{len(sampled)} samples at temperature {PROBE_TEMPERATURE} all equal the greedy text")
    else:
        sampling = None
        notes.append("the samples agree with each other but not with the greedy text: undecided")
    seed = None if not sampling else _texts(first, chat) == _texts(again, chat)
    return ProbeResult(sampling=sampling, native_n=len(first) >= 2 and len(again) >= 2, logprobs=problem is None,
                       seed=seed, greedy_repeats=_texts(scored, chat)[0].strip() == g_text, max_context=max_context,
                       endpoint="chat" if chat else "completions", requests=model.calls - calls0, notes=notes)
