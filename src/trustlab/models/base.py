"""The model-handle protocol shared by every backend, and its Capabilities record.

A *prompt* is either a plain string or a list of chat messages (``{"role": ..., "content": ...}``).
``chat_template=True`` renders it with the model's chat template (a string becomes one user turn);
``chat_template=False`` sends the raw text (messages are joined by blank lines), which is how the
context-awareness paper compares "with" and "without" the template.
"""

from __future__ import annotations

import abc
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace
from typing import Any

from trustlab.errors import CapabilityError, EmptyInputError

Message = dict[str, str]
Prompt = str | list[Message]


@dataclass(frozen=True)
class Capabilities:
    """What a backend can give. Methods call :meth:`require` first, so they fail at once.

    Attributes:
        backend: short backend name (``"hf"``, ``"openai"``).
        logprobs: per-token log-probabilities of generated tokens.
        loglikelihood: log-probability of a given continuation (scoring, lm-eval style).
        attentions: attention maps and attention steering.
        hidden_states: hidden states and forward hooks.
        gradients: backward passes through the model.
        chat_template: the model has a chat template (``chat_template=True`` is meaningful).
        max_context: context window in tokens, or None when unknown.
        sampling: ``temperature > 0`` gives samples that vary (True), the backend answers greedily
            whatever the temperature (False), or unknown (None). HTTP backends measure it.
        native_n: one request returns ``n`` samples (True), or the backend ignores ``n`` and they
            are emulated with one request each (False); None when unknown.
        seed: the same seed gives the same samples (True), or not (False); None when unknown.
        vision: the model takes images with the prompt (``generate(..., images=...)``): True, False, or None
            when unknown (an HTTP server: a request with images then fails there if it cannot).
    """

    backend: str
    logprobs: bool = False
    loglikelihood: bool = False
    attentions: bool = False
    hidden_states: bool = False
    gradients: bool = False
    chat_template: bool = False
    max_context: int | None = None
    sampling: bool | None = None
    native_n: bool | None = None
    seed: bool | None = None
    vision: bool | None = False

    def require(self, *names: str, method: str = "this method") -> None:
        """Raise :class:`CapabilityError` unless every named capability is available.

        Example:
            >>> Capabilities("openai", logprobs=True).require("logprobs", method="CLUE")
        """
        missing = [n for n in names if not getattr(self, n)]
        if missing:
            raise CapabilityError(
                f"{method} needs {', '.join(missing)}, which the {self.backend!r} backend does not provide. "
                "Use a white-box Hugging Face model (e.g. --model embedded) for this."
            )

    def require_sampling(self, method: str = "this method") -> None:
        """Raise :class:`CapabilityError` when the backend is known to answer greedily at any temperature
        (unknown passes: callers then check the samples themselves).

        Example:
            >>> Capabilities("openai", sampling=False).require_sampling(method="CLUE")
            Traceback (most recent call last):
            trustlab.errors.CapabilityError: CLUE needs samples that vary ...
        """
        if self.sampling is False:
            raise CapabilityError(
                f"{method} needs samples that vary, but the {self.backend!r} backend gave the same text for "
                "every sample at temperature > 0 (it ignores the requested temperature), so every sample would "
                "be the greedy answer and the uncertainty a constant. Configure the server to sample "
                "(`transformers serve` samples only when the model's generation_config has do_sample=true) or "
                "use a white-box model (e.g. --model embedded)."
            )

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def text_only(self) -> Capabilities:
        """What a wrapper that only returns text (a defense, say) can promise: same backend, template,
        context window and sampling behaviour; no logprobs, scores, attentions or gradients of its own."""
        return Capabilities(backend=self.backend, chat_template=self.chat_template, max_context=self.max_context,
                            sampling=self.sampling, native_n=self.native_n, seed=self.seed)


@dataclass(frozen=True)
class GenerationConfig:
    """Decoding settings understood by every backend.

    Attributes:
        max_new_tokens: tokens to generate at most (default 128).
        temperature: 0 means greedy decoding; > 0 samples (default 0).
        top_p: nucleus sampling mass when sampling (default 1.0).
        n: samples per prompt (default 1). Greedy with n > 1 returns n identical answers.
        seed: random seed for sampling; None leaves the global RNG alone.
        logprobs: also return per-token log-probabilities (default False).
        stop: strings that end generation; the stop string itself is not returned.
        truncation: what to do with a prompt longer than the context window: ``"error"`` (default)
            refuses with :class:`ContextLengthError`; ``"left"`` drops the oldest tokens and records how
            many in :attr:`Generation.truncated_tokens` (and warns).
    """

    max_new_tokens: int = 128
    temperature: float = 0.0
    top_p: float = 1.0
    n: int = 1
    seed: int | None = None
    logprobs: bool = False
    stop: tuple[str, ...] = ()
    truncation: str = "error"

    def __post_init__(self) -> None:
        if self.n < 1:
            raise ValueError(f"n must be >= 1, got {self.n}")
        if self.max_new_tokens < 1:
            raise ValueError(f"max_new_tokens must be >= 1, got {self.max_new_tokens}")
        if self.temperature < 0:
            raise ValueError(f"temperature must be >= 0, got {self.temperature}")
        if self.truncation not in ("error", "left"):
            raise ValueError(f"truncation must be 'error' or 'left', got {self.truncation!r}")

    @property
    def greedy(self) -> bool:
        return self.temperature == 0.0

    def updated(self, **overrides: Any) -> GenerationConfig:
        """A copy with the non-None overrides applied."""
        kw = {k: v for k, v in overrides.items() if v is not None}
        if "stop" in kw and isinstance(kw["stop"], str):
            kw["stop"] = (kw["stop"],)
        if "stop" in kw:
            kw["stop"] = tuple(kw["stop"])
        return replace(self, **kw)


@dataclass
class Generation:
    """One generated sample.

    Attributes:
        text: the generated text (prompt excluded, stop string excluded).
        tokens: generated tokens as strings, when logprobs were asked for.
        token_ids: generated token ids, when logprobs were asked for and the backend knows them.
        token_logprobs: log p of each generated token under the model (temperature 1), when asked for.
        finish_reason: ``"stop"`` (EOS or a stop string) or ``"length"``.
        prompt_tokens: number of prompt tokens the model saw.
        truncated_tokens: prompt tokens dropped to fit the context window (0 when none).
    """

    text: str
    tokens: list[str] | None = None
    token_ids: list[int] | None = None
    token_logprobs: list[float] | None = None
    finish_reason: str = "stop"
    prompt_tokens: int = 0
    truncated_tokens: int = 0
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def as_messages(prompt: Prompt) -> list[Message]:
    """A prompt as chat messages: a string becomes one user turn."""
    if isinstance(prompt, str):
        return [{"role": "user", "content": prompt}]
    for m in prompt:
        if not isinstance(m, dict) or "role" not in m or "content" not in m:
            raise ValueError(f"chat messages need 'role' and 'content' keys, got {m!r}")
    return list(prompt)


def plain_text(prompt: Prompt) -> str:
    """A prompt without any chat template: a string as is, message contents joined by blank lines."""
    if isinstance(prompt, str):
        return prompt
    return "\n\n".join(m["content"] for m in as_messages(prompt))


def check_prompts(prompts: Sequence[Prompt] | Prompt) -> list[Prompt]:
    """Normalise a single prompt or a sequence of prompts to a non-empty list."""
    if isinstance(prompts, str) or (
        isinstance(prompts, list) and prompts and isinstance(prompts[0], dict)
    ):
        prompts = [prompts]  # a single prompt
    prompts = list(prompts)
    if not prompts:
        raise EmptyInputError("the prompt list is empty: give at least one prompt")
    return prompts


def strip_at_stop(text: str, stop: Sequence[str]) -> tuple[str, bool]:
    """Cut ``text`` at the earliest stop string. Returns (text, whether a stop string was found)."""
    cut = min((i for i in (text.find(s) for s in stop if s) if i >= 0), default=-1)
    return (text[:cut], True) if cut >= 0 else (text, False)


class ModelHandle(abc.ABC):
    """One model, whatever the backend. Subclasses implement :meth:`_generate`.

    Attributes:
        name: a human-readable model name (the spec it was loaded from).
        capabilities: what this backend can give.
        default_config: the :class:`GenerationConfig` used when a call gives none.
    """

    name: str
    capabilities: Capabilities
    default_config: GenerationConfig = GenerationConfig()

    def generate(
        self,
        prompts: Sequence[Prompt] | Prompt,
        config: GenerationConfig | None = None,
        *,
        chat_template: bool = True,
        images: Sequence[Sequence[Any] | None] | None = None,
        **overrides: Any,
    ) -> list[list[Generation]]:
        """Generate ``config.n`` samples for each prompt.

        Args:
            prompts: one prompt or a sequence of prompts (strings or chat-message lists).
            config: decoding settings; keyword overrides (``max_new_tokens=...``) replace its fields.
            chat_template: render with the model's chat template (True) or send raw text (False).
            images: for a vision-language model (``capabilities.vision``): per prompt, a list of images
                (``PIL.Image`` or a file path) shown before the prompt's last user turn, or None for none.

        Returns:
            One list of ``n`` :class:`Generation` per prompt, in prompt order.

        Example:
            >>> model = load_model("embedded")
            >>> model.generate(["Name a colour."], max_new_tokens=8)[0][0].text
        """
        prompts = check_prompts(prompts)
        cfg = (config or self.default_config).updated(**overrides)
        if chat_template and not self.capabilities.chat_template:
            raise CapabilityError(
                f"model {self.name!r} has no chat template; call with chat_template=False"
            )
        if cfg.logprobs:
            self.capabilities.require("logprobs", method="generate(logprobs=True)")
        if images is not None:
            if self.capabilities.vision is False:
                raise CapabilityError(f"model {self.name!r} is text-only and cannot take images; use a "
                                      "vision-language model (an HF LLaVA / Qwen2-VL / SmolVLM / Idefics folder, or an "
                                      "OpenAI-compatible server that serves one)")
            images = [list(im) if im is not None else [] for im in images]
            if len(images) != len(prompts):
                raise ValueError(f"images has {len(images)} entries for {len(prompts)} prompts (one list per prompt)")
            return self._generate_images(prompts, images, cfg, chat_template)
        return self._generate(prompts, cfg, chat_template)

    def complete(self, prompt: Prompt, **overrides: Any) -> str:
        """Text of one greedy (or configured) answer to one prompt."""
        chat = overrides.pop("chat_template", True)
        return self.generate([prompt], chat_template=chat, **overrides)[0][0].text

    def loglikelihood(
        self, requests: Sequence[tuple[Prompt, str]], *, chat_template: bool = True
    ) -> list[tuple[float, bool]]:
        """log p(continuation | context) for each (context, continuation) pair, lm-eval style.

        Returns:
            (sum of continuation-token log-probs, whether greedy decoding would produce it) per pair.
        """
        self.capabilities.require("loglikelihood", method="loglikelihood")
        requests = list(requests)
        if not requests:
            raise EmptyInputError("no (context, continuation) pairs to score")
        return self._loglikelihood(requests, chat_template)

    @abc.abstractmethod
    def _generate(
        self, prompts: list[Prompt], cfg: GenerationConfig, chat_template: bool
    ) -> list[list[Generation]]: ...

    def _generate_images(
        self, prompts: list[Prompt], images: list[list[Any]], cfg: GenerationConfig, chat_template: bool
    ) -> list[list[Generation]]:
        raise CapabilityError(f"{type(self).__name__} cannot take images")

    def _loglikelihood(
        self, requests: list[tuple[Prompt, str]], chat_template: bool
    ) -> list[tuple[float, bool]]:
        raise CapabilityError(f"{type(self).__name__} cannot score continuations")

    def describe(self) -> dict[str, Any]:
        """A JSON-able description for run folders (config.json)."""
        return {"name": self.name, "class": type(self).__name__, **self.capabilities.to_dict()}

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.name!r})"
