"""Black-box backend: any OpenAI-compatible HTTP server (vLLM, llama.cpp, TGI, OpenAI itself).

``chat_template=True`` uses ``/chat/completions`` (the server applies its template);
``chat_template=False`` uses ``/completions`` with the raw text. Images (``generate(..., images=...)``) go
to ``/chat/completions`` as base64 ``image_url`` content parts of the last user turn. Requests run in a bounded thread pool,
with timeouts and retries with exponential backoff on connection errors, 429 and 5xx. Servers that
ignore ``n`` (llama.cpp does) get the missing samples as extra requests.

What a server honours (temperature, ``n``, log-probs, seed, context window) is measured on first use
with a few 8-token requests (:mod:`trustlab.models.probe`), cached per handle, and becomes the handle's
:class:`Capabilities`; ``probe=False`` or ``capabilities=...`` skip or override the measurement.
"""

from __future__ import annotations

import random
import threading
import time
import warnings
from concurrent.futures import ThreadPoolExecutor
from dataclasses import fields, replace
from typing import Any

from trustlab.errors import CapabilityError, ContextLengthError, EndpointError, ModelSpecError, require
from trustlab.models.base import (
    Capabilities,
    Generation,
    GenerationConfig,
    ModelHandle,
    Prompt,
    as_messages,
    plain_text,
)
from trustlab.models.probe import ProbeResult, probe_endpoint

_REPROBE_AFTER_S = 30.0  # an unreachable server is measured again after this long
_RETRY_STATUS = {408, 409, 425, 429, 500, 502, 503, 504}


class OpenAIModel(ModelHandle):
    """A model behind an OpenAI-compatible endpoint.

    Args:
        base_url: the API root, e.g. ``http://127.0.0.1:8080/v1``.
        model_name: the ``model`` field to send; default: the first model the server lists.
        api_key: sent as a bearer token (default ``"EMPTY"``, which local servers accept).
        max_concurrency: requests in flight at once (default 8).
        timeout: seconds per request (default 60).
        max_retries: retries after the first attempt (default 3); backoff doubles from ``backoff``.
        max_context: the server's context window in tokens, if known (wins over what the probe reads).
        extra_body: server-specific fields merged into every request body, e.g.
            ``{"repeat_penalty": 1.0}`` for llama.cpp, whose default 1.1 makes "greedy" non-greedy.
        probe: measure on first use what the server honours (default True; about six 8-token
            requests, see :mod:`trustlab.models.probe`). False assumes log-probs and a chat template and
            leaves sampling, ``n`` and seed support unknown.
        capabilities: what you know already: a full :class:`Capabilities` (used as is, no probe) or a
            dict of its fields that override the measured or assumed ones, e.g. ``{"logprobs": False}``.

    Example:
        >>> m = OpenAIModel("http://127.0.0.1:8080/v1")
        >>> m.generate(["Say hi."], n=4, temperature=0.8)
        >>> m.capabilities.sampling, m.describe()["probe"]["native_n"]
        (True, False)
    """

    def __init__(
        self,
        base_url: str,
        model_name: str | None = None,
        *,
        api_key: str = "EMPTY",
        max_concurrency: int = 8,
        timeout: float = 60.0,
        max_retries: int = 3,
        backoff: float = 0.5,
        max_context: int | None = None,
        extra_body: dict[str, Any] | None = None,
        probe: bool = True,
        capabilities: Capabilities | dict[str, Any] | None = None,
    ):
        httpx = require("httpx", "llm", pip="pip install httpx")
        if not base_url.startswith(("http://", "https://")):
            raise ModelSpecError(f"an openai: spec needs a URL starting with http:// or https://, got {base_url!r}")
        self.base_url = base_url.rstrip("/")
        self.max_concurrency = max_concurrency
        self.max_retries = max_retries
        self.backoff = backoff
        self.timeout = timeout
        self._client = httpx.Client(
            timeout=httpx.Timeout(timeout, connect=min(timeout, 10.0)),
            headers={"Authorization": f"Bearer {api_key}"},
            limits=httpx.Limits(max_connections=max_concurrency),
        )
        self._model_name = model_name
        self.extra_body = dict(extra_body or {})
        self.name = f"openai:{self.base_url}" + (f"#{model_name}" if model_name else "")
        self.calls = 0  # HTTP requests sent (for cost accounting in benchmarks)
        self.probe = probe
        self.probe_result: ProbeResult | None = None
        self._caps = capabilities if isinstance(capabilities, Capabilities) else None
        if self._caps is not None and max_context is not None:
            self._caps = replace(self._caps, max_context=max_context)
        self._overrides = dict(capabilities or {}) if self._caps is None else {}
        if max_context is not None:
            self._overrides.setdefault("max_context", max_context)
        unknown = set(self._overrides) - {f.name for f in fields(Capabilities)} | ({"backend"} & set(self._overrides))
        if unknown:
            raise ValueError(f"capabilities has unknown or fixed fields {sorted(unknown)}; "
                             f"known: {[f.name for f in fields(Capabilities) if f.name != 'backend']}")
        self._lock = threading.Lock()
        self._warned: set[str] = set()
        self._probe_failed_at = -float("inf")
        self._probe_error: EndpointError | None = None

    # ------------------------------------------------------------------ capabilities
    @property
    def capabilities(self) -> Capabilities:
        """What the server honours: measured on first use (cached), then the given overrides applied.

        While the server cannot be reached, the capabilities that need no measurement (no attentions, no
        gradients, ...) are still answered, so a method the backend can never serve fails with its
        :class:`CapabilityError`; the measurement is tried again on the next use, and a request to the
        server raises the :class:`EndpointError` itself.
        """
        if self._caps is None:
            with self._lock:
                if self._caps is None:
                    caps = Capabilities(backend="openai", logprobs=True, chat_template=True,  # assumed
                                        vision=None)  # unknown: a request with images tells
                    unreachable = time.monotonic() - self._probe_failed_at < _REPROBE_AFTER_S
                    if self.probe and unreachable:
                        return replace(caps, **self._overrides)  # not measured, so not cached
                    if self.probe:
                        try:
                            r = probe_endpoint(self)
                        except EndpointError as exc:
                            self._probe_failed_at, self._probe_error = time.monotonic(), exc
                            return replace(caps, **self._overrides)
                        self.probe_result = r
                        caps = replace(caps, logprobs=r.logprobs, chat_template=r.endpoint == "chat",
                                       sampling=r.sampling, native_n=r.native_n, seed=r.seed,
                                       max_context=r.max_context)
                    self._caps = replace(caps, **self._overrides)
        return self._caps

    def describe(self) -> dict[str, Any]:
        """As :meth:`ModelHandle.describe`, plus what the probe measured (None when not probed).

        Example:
            >>> OpenAIModel("http://127.0.0.1:8080/v1").describe()["probe"]["sampling"]
            True
        """
        out = super().describe()
        return {**out, "probe": self.probe_result.to_dict() if self.probe_result else None}

    # ------------------------------------------------------------------ HTTP
    def _request(self, method: str, path: str, payload: dict[str, Any] | None = None, *,
                 root: bool = False) -> dict[str, Any]:
        """One API call with retries; ``root=True`` addresses the server root (``/props``), not ``/v1``."""
        import httpx

        base = self.base_url.removesuffix("/v1") if root else self.base_url
        url = f"{base}{path}"
        last: str = ""
        for attempt in range(self.max_retries + 1):
            if attempt:
                time.sleep(self.backoff * 2 ** (attempt - 1) * (1 + 0.25 * random.random()))
            self.calls += 1
            try:
                resp = self._client.request(method, url, json=payload)
            except (httpx.TransportError, httpx.TimeoutException) as exc:
                last = f"{type(exc).__name__}: {exc}"
                continue
            if resp.status_code in _RETRY_STATUS:
                last = f"HTTP {resp.status_code}: {resp.text[:300]}"
                continue
            if resp.status_code >= 400:
                text = resp.text[:500]
                if "context" in text.lower() and ("exceed" in text.lower() or "length" in text.lower()):
                    raise ContextLengthError(f"{url} refused the prompt as too long for its context window: {text}")
                raise EndpointError(f"{url} answered HTTP {resp.status_code}: {text}")
            try:
                return resp.json()
            except ValueError:
                raise EndpointError(f"{url} answered with non-JSON text: {resp.text[:300]!r}") from None
        raise EndpointError(
            f"could not get an answer from {url} after {self.max_retries + 1} attempts "
            f"(timeout {self.timeout:g}s each); last error: {last}. Is the server running and reachable?"
        )

    @property
    def model_name(self) -> str:
        """The model name to send; asked from ``/models`` on first use when not given."""
        if self._model_name is None:
            self.model_entry()
        return self._model_name

    def model_entry(self) -> dict[str, Any]:
        """The served model's ``/models`` entry (its metadata; ``{}`` when not listed). Resolves
        :attr:`model_name` to the first listed model when it was not given."""
        data = self._request("GET", "/models").get("data") or []
        if self._model_name is None:
            if not data:
                raise EndpointError(f"{self.base_url}/models lists no model; pass model_name=")
            self._model_name = data[0]["id"]
        return next((e for e in data if isinstance(e, dict) and e.get("id") == self._model_name), {})

    def list_models(self) -> list[str]:
        return [m["id"] for m in self._request("GET", "/models").get("data", [])]

    def close(self) -> None:
        self._client.close()

    def _warn_once(self, key: str, message: str) -> None:
        if key not in self._warned:
            self._warned.add(key)
            warnings.warn(message, RuntimeWarning, stacklevel=4)

    # ------------------------------------------------------------------ generation
    def _generate_images(self, prompts: list[Prompt], images: list[list[Any]], cfg: GenerationConfig,
                         chat: bool) -> list[list[Generation]]:
        """Chat requests whose last user turn carries the images as base64 data-URL content parts."""
        if not chat:
            raise CapabilityError("images need the chat endpoint: call with chat_template=True")
        return self._generate([image_messages(p, ims) for p, ims in zip(prompts, images, strict=True)], cfg, chat)

    def _payload(self, prompt: Prompt, cfg: GenerationConfig, chat: bool, n: int, seed: int | None) -> dict[str, Any]:
        p: dict[str, Any] = {
            "model": self.model_name,
            "max_tokens": cfg.max_new_tokens,
            "temperature": cfg.temperature,
            "n": n,
        }
        if not cfg.greedy:
            p["top_p"] = cfg.top_p
        if seed is not None:
            p["seed"] = seed
        if cfg.stop:
            p["stop"] = list(cfg.stop)
        p.update(self.extra_body)
        if chat:
            p["messages"] = as_messages(prompt)
            if cfg.logprobs:
                p["logprobs"], p["top_logprobs"] = True, 1
        else:
            p["prompt"] = plain_text(prompt)
            if cfg.logprobs:
                p["logprobs"] = 1
        return p

    @staticmethod
    def _parse_choice(choice: dict[str, Any], chat: bool, prompt_tokens: int) -> Generation:
        text = (choice.get("message") or {}).get("content") if chat else choice.get("text")
        gen = Generation(text=text or "", finish_reason=choice.get("finish_reason") or "stop",
                         prompt_tokens=prompt_tokens)
        lp = choice.get("logprobs")
        if lp:
            if chat and lp.get("content") is not None:
                gen.tokens = [t["token"] for t in lp["content"]]
                gen.token_logprobs = [float(t["logprob"]) for t in lp["content"]]
            elif not chat and lp.get("tokens") is not None:
                gen.tokens = list(lp["tokens"])
                gen.token_logprobs = [float(x) if x is not None else float("nan") for x in lp["token_logprobs"]]
        return gen

    def _one_call(self, prompt: Prompt, cfg: GenerationConfig, chat: bool, n: int, seed: int | None) -> list[Generation]:
        data = self._request("POST", "/chat/completions" if chat else "/completions",
                             self._payload(prompt, cfg, chat, n, seed))
        choices = data.get("choices")
        if not isinstance(choices, list) or not choices:
            raise EndpointError(f"{self.base_url}: response has no choices: {str(data)[:300]}")
        used = (data.get("usage") or {}).get("prompt_tokens", 0)
        return [self._parse_choice(c, chat, used) for c in choices[:n]]

    def _samples(self, prompt: Prompt, cfg: GenerationConfig, chat: bool, pool: ThreadPoolExecutor) -> list[Generation]:
        if not cfg.greedy and cfg.n > 1 and self.capabilities.native_n is False:
            seeds = [None if cfg.seed is None else cfg.seed + i for i in range(cfg.n)]
            return list(pool.map(lambda s: self._one_call(prompt, cfg, chat, 1, s)[0], seeds))
        first = self._one_call(prompt, cfg, chat, 1 if cfg.greedy else cfg.n, cfg.seed)
        if cfg.greedy:
            return first * cfg.n
        missing = cfg.n - len(first)
        if missing <= 0:
            return first
        # The server ignored n: ask for the rest one by one, concurrently, with distinct seeds.
        seeds = [None if cfg.seed is None else cfg.seed + 1 + i for i in range(missing)]
        extra = pool.map(lambda s: self._one_call(prompt, cfg, chat, 1, s)[0], seeds)
        return first + list(extra)

    def _generate(self, prompts: list[Prompt], cfg: GenerationConfig, chat: bool) -> list[list[Generation]]:
        _ = self.model_name  # resolve once before fanning out
        caps = self.capabilities
        if self._caps is None and self._probe_error is not None:  # unreachable: say so, do not retry again here
            raise self._probe_error
        if not cfg.greedy and caps.sampling is False:
            self._warn_once("sampling", f"{self.name} answers greedily at any temperature (measured on first use): "
                                        f"samples at temperature {cfg.temperature:g} will all be the greedy answer")
        if cfg.seed is not None and not cfg.greedy and caps.seed is False:
            self._warn_once("seed", f"{self.name} does not reproduce samples from a seed (measured on first use): "
                                    "sampled runs are not repeatable")
        # Two pools: outer per prompt, inner for emulated n; together bounded by 2 * max_concurrency
        # threads but by max_concurrency connections (httpx limits).
        with ThreadPoolExecutor(self.max_concurrency) as outer, ThreadPoolExecutor(self.max_concurrency) as inner:
            return list(outer.map(lambda p: self._samples(p, cfg, chat, inner), prompts))


def image_data_url(image: Any) -> str:
    """An image (``PIL.Image``, file path or PNG/JPEG bytes) as a base64 ``data:`` URL (PNG unless a JPEG file).

    Example:
        >>> image_data_url(Image.new("RGB", (2, 2)))[:22]
        'data:image/png;base64,'
    """
    import base64
    import io
    from pathlib import Path

    if isinstance(image, (str, Path)):
        data = Path(image).read_bytes()
    elif isinstance(image, bytes):
        data = image
    else:
        buf = io.BytesIO()
        image.save(buf, format="PNG")
        data = buf.getvalue()
    mime = "image/jpeg" if data[:3] == b"\xff\xd8\xff" else "image/png" if data[:4] == b"\x89PNG" else None
    if mime is None:
        raise ValueError("an image must be a PIL image, or the path or bytes of a PNG or JPEG file")
    return f"data:{mime};base64,{base64.b64encode(data).decode()}"


def image_messages(prompt: Prompt, images: list[Any]) -> list[dict[str, Any]]:
    """Chat messages with ``images`` as OpenAI ``image_url`` content parts before the last user turn's text.

    Example:
        >>> image_messages("What is this?", [img])[0]["content"][1]
        {'type': 'text', 'text': 'What is this?'}
    """
    msgs: list[dict[str, Any]] = [dict(m) for m in as_messages(prompt)]
    last = max((k for k, m in enumerate(msgs) if m["role"] == "user"), default=None)
    if last is None:
        raise ValueError("a prompt with images needs a user turn to attach them to")
    parts: list[dict[str, Any]] = [{"type": "image_url", "image_url": {"url": image_data_url(im)}} for im in images]
    msgs[last]["content"] = parts + [{"type": "text", "text": msgs[last]["content"]}]
    return msgs
