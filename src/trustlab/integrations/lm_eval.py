"""Any trustlab model as an lm-evaluation-harness model type, steered or defended, and trustlab's benchmarks as tasks.

``--model trustlab`` wraps a trustlab handle (the embedded models, a Hugging Face id or folder, a PEFT model, an
OpenAI-compatible server) as an ``lm_eval.api.model.LM``::

    lm_eval --model trustlab --model_args spec=embedded,steering_alpha=0.9 --tasks trustlab_niah \\
        --include_path "$(python -m trustlab.integrations.lm_eval --tasks-path)" --apply_chat_template
    lm_eval --model trustlab --model_args spec=embedded,defense=backtranslation --tasks trustlab_cf_qa ...

What differs from lm-eval's own ``hf`` type: ``steering_alpha`` steers attention toward the user's tokens
(:class:`~trustlab.context.UserSteering`; the user's spans come from the chat template, so it only acts with
``--apply_chat_template``) for every request type, and ``defense=backtranslation`` answers ``generate_until``
requests through :class:`~trustlab.safety.backtranslation.BacktranslationDefense`. Without either, scoring is
lm-eval's own convention (context and continuation tokenized together and split, rolling windows, one-token
continuations scored once per context), so the numbers match ``hf`` on the same weights (tested).

Request types a backend cannot serve fail at once with :class:`~trustlab.errors.CapabilityError`:
``loglikelihood`` and ``loglikelihood_rolling`` need prompt log-probabilities (white-box models; not an
OpenAI-compatible server), and under ``defense=backtranslation`` only generation is defended, so scoring
requests are refused rather than silently scored on the undefended model.

Registration: the ``lm_eval.models`` entry point (lm-eval releases that discover plugins) or importing this
module registers ``trustlab`` in lm-eval's model registry; ``python -m trustlab.integrations.lm_eval ARGS`` runs
lm-eval's own CLI with it registered and trustlab's tasks on the include path, for lm-eval releases that do not
discover entry points (0.4.13 does not).
"""

from __future__ import annotations

import contextlib
import json
import logging
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from trustlab.errors import CapabilityError, MissingExtraError, TrustlabError, require

require("lm_eval", "lmeval")

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from tqdm import tqdm  # noqa: E402

try:  # helpers of lm-eval's own hf type, which the parity rests on (0.4.13 has all of them)
    from lm_eval.api.model import TemplateLM
    from lm_eval.api.registry import model_registry
    from lm_eval.models.utils import Collator, normalize_gen_kwargs, resolve_max_length
    from lm_eval.utils import get_rolling_token_windows, make_disjoint_window
except ImportError as exc:
    from importlib.metadata import version

    raise MissingExtraError(f"--model trustlab needs lm-eval >= 0.4.13 (installed: {version('lm_eval')}; {exc}); "
                            'install it with: pip install "trustlab[lmeval]"') from exc

from trustlab.models import load_model  # noqa: E402
from trustlab.models.base import GenerationConfig, Message, ModelHandle, Prompt  # noqa: E402

MODEL_NAME = "trustlab"
TARGET = "trustlab.integrations.lm_eval:TrustlabLM"
DEFENSES = ("backtranslation",)
_GEN_KEYS = {"until", "max_gen_toks", "do_sample", "temperature", "top_p"}
log = logging.getLogger(__name__)


def tasks_path() -> Path:
    """The folder of trustlab's lm-eval task YAMLs, for ``--include_path``.

    Example:
        >>> tasks_path().name
        'lm_eval_tasks'
    """
    return Path(__file__).with_name("lm_eval_tasks")


def register() -> None:
    """Register ``trustlab`` in lm-eval's model registry, as the ``lm_eval.models`` entry point does: a lazy
    ``module:object`` placeholder that lm-eval imports on first use (idempotent; an entry point registered
    first is kept).

    Example:
        >>> register()
        >>> from lm_eval.api.registry import get_model
        >>> get_model("trustlab").__name__
        'TrustlabLM'
    """
    if MODEL_NAME not in model_registry:
        model_registry.register(MODEL_NAME, target=TARGET)


def _batch_size(value: Any) -> int:
    if isinstance(value, str) and value.startswith("auto"):
        raise TrustlabError("--model trustlab does not detect the batch size (batch_size=auto); give a number, "
                            "e.g. --batch_size 8")
    try:
        size = int(value)
    except (TypeError, ValueError):
        raise TrustlabError(f"batch_size must be a positive integer, got {value!r}") from None
    if size < 1:
        raise TrustlabError(f"batch_size must be a positive integer, got {value!r}")
    return size


class TrustlabLM(TemplateLM):
    """A trustlab model handle as an lm-eval ``LM``, optionally steered or behind a defense.

    Args:
        spec: a model spec for :func:`trustlab.models.load_model` (``embedded``, a Hugging Face id or folder,
            ``openai:http://HOST:PORT/v1``) or an already-loaded handle; ``pretrained`` is accepted as an alias.
        steering_alpha: steer attention toward the user's tokens with this alpha (0 < alpha; 1 is a no-op;
            default None: no steering). Needs a white-box model; acts on chat-templated prompts.
        defense: ``"backtranslation"`` to answer ``generate_until`` requests through the backtranslation
            defense (default None).
        defense_gamma: the defense's likelihood threshold (default -2.0; ``-inf`` disables its filter, needed for
            a backtranslator without prompt log-probabilities).
        batch_size: requests per forward pass / generation batch (default 8).
        max_length: context window in tokens (default: from the model's config, as lm-eval's ``hf``).
        max_gen_toks: default generation length when a task gives none (default 256).
        device: ``cpu``, ``cuda`` ... (lm-eval's ``--device``; a CUDA device falls back to CPU without CUDA).
        attn_implementation: attention kernel for Hugging Face models (default ``sdpa``; steering supports
            ``sdpa`` and ``eager``).
        dtype: parameter dtype for Hugging Face models (default: trustlab's dtype policy).
        tokenizer: the tokenizer, when ``spec`` is an already-loaded transformers model.
        max_batch_size: accepted for lm-eval's CLI, unused (no automatic batch size).
        **backend: further :func:`~trustlab.models.load_model` options (``model_name``, ``api_key``, ``probe``,
            ``threads`` ...).

    Attributes:
        handle: the wrapped :class:`~trustlab.models.ModelHandle`.
        defense_traces: one :class:`~trustlab.safety.backtranslation.DefenseTrace` dict per defended
            generation, in request order of each call (why an answer was refused).

    Example:
        >>> import lm_eval
        >>> lm = TrustlabLM("embedded", steering_alpha=0.9)
        >>> lm_eval.simple_evaluate(model=lm, tasks=["trustlab_niah"], apply_chat_template=True,
        ...                         task_manager=lm_eval.tasks.TaskManager(include_path=str(tasks_path())))
    """

    def __init__(self, spec: Any = "embedded", *, pretrained: Any = None, steering_alpha: float | None = None,
                 defense: str | None = None, defense_gamma: float = -2.0, batch_size: int | str = 8,
                 max_length: int | None = None, max_gen_toks: int = 256, device: str | None = None,
                 attn_implementation: str = "sdpa", dtype: Any = None, tokenizer: Any = None,
                 max_batch_size: int | None = None, **backend: Any):
        super().__init__()
        if pretrained is not None:
            if spec not in ("embedded", pretrained):
                raise TrustlabError(f"give the model once: spec={spec!r} and pretrained={pretrained!r}")
            spec = pretrained
        if defense is not None and defense not in DEFENSES:
            raise TrustlabError(f"unknown defense {defense!r}; choose one of {list(DEFENSES)}")
        self.batch_size_per_gpu = _batch_size(batch_size)
        self._max_gen_toks = int(max_gen_toks)
        remote = isinstance(spec, str) and spec.startswith("openai:")
        if not remote and not isinstance(spec, ModelHandle):
            if device and device.startswith("cuda") and not torch.cuda.is_available():
                log.warning("device %s requested but CUDA is not available: using the CPU", device)
                device = "cpu"
            backend.update(attn_implementation=attn_implementation, batch_size=self.batch_size_per_gpu)
            backend.update({k: v for k, v in (("device", device), ("dtype", dtype)) if v is not None})
        self.handle: ModelHandle = load_model(spec, tokenizer=tokenizer, **backend)
        self.handle.batch_size = self.batch_size_per_gpu
        self.tokenizer = getattr(self.handle, "tokenizer", None)
        self._model = getattr(self.handle, "model", None)
        if self._model is not None:
            self._device = self.handle.device
        config = getattr(self._model, "config", None)
        self._max_length = int(max_length) if max_length else (
            resolve_max_length(config, self.tokenizer) if config is not None
            else self.handle.capabilities.max_context or 2048)
        self.steering = None
        if steering_alpha is not None:
            from trustlab.context import UserSteering

            self.steering = UserSteering(self.handle, alpha=float(steering_alpha))
        self.defense = defense
        self.generator: ModelHandle = self.handle
        if defense == "backtranslation":
            from trustlab.safety.backtranslation import BacktranslationDefense

            self.generator = BacktranslationDefense(self.handle, gamma=float(defense_gamma))
        self.defense_traces: list[dict[str, Any]] = []
        self._chats: dict[str, list[Message]] = {}  # rendered chat text -> its messages
        self._warned: set[str] = set()

    # ------------------------------------------------------------------ lm-eval properties
    @property
    def eot_token_id(self) -> int:
        return self.tokenizer.eos_token_id

    @property
    def prefix_token_id(self) -> int:
        bos = self.tokenizer.bos_token_id
        return bos if bos is not None else self.tokenizer.eos_token_id

    @property
    def max_length(self) -> int:
        return self._max_length

    @property
    def max_gen_toks(self) -> int:
        return self._max_gen_toks

    @property
    def batch_size(self) -> int:
        return self.batch_size_per_gpu

    @property
    def tokenizer_name(self) -> str:
        name = self.tokenizer.name_or_path if self.tokenizer is not None else self.handle.name
        return str(name).replace("/", "__")

    def get_model_info(self) -> dict[str, Any]:
        """What lm-eval records under ``config`` in its results: the handle, steering and defense."""
        return {"trustlab_model": self.handle.describe(), "steering_alpha": getattr(self.steering, "alpha", None),
                "defense": self.defense}

    def _warn_once(self, key: str, message: str) -> None:
        if key not in self._warned:
            self._warned.add(key)
            log.warning(message)

    # ------------------------------------------------------------------ prompts
    def tok_encode(self, string: str, add_special_tokens: bool | None = None, left_truncate_len: int | None = None,
                   **kwargs: Any) -> list[int]:
        """Token ids as lm-eval's ``hf`` type encodes them (no second BOS when the text starts with one)."""
        flags = {} if add_special_tokens is None else {"add_special_tokens": add_special_tokens}
        bos = self.tokenizer.bos_token
        if add_special_tokens is None and bos and string.startswith(bos):
            flags["add_special_tokens"] = False
        ids = self.tokenizer.encode(string, **flags)
        return ids[-left_truncate_len:] if left_truncate_len else ids

    def apply_chat_template(self, chat_history: list[dict[str, str]], add_generation_prompt: bool = True) -> str:
        """Render a chat like lm-eval's ``hf`` type, and remember its messages (steering needs the user's spans;
        an OpenAI-compatible server gets the messages themselves)."""
        if self.tokenizer is None:
            text = json.dumps(chat_history, ensure_ascii=False)
        else:
            text = self.tokenizer.apply_chat_template(chat_history, tokenize=False,
                                                      add_generation_prompt=add_generation_prompt,
                                                      continue_final_message=not add_generation_prompt)
        self._chats[text] = [dict(m) for m in chat_history]
        return text

    def _prompt(self, context: str) -> tuple[Prompt, bool]:
        """A request's context as the handle takes it: (messages, True) for a chat rendered here that the handle
        renders identically, else (raw text, False)."""
        messages = self._chats.get(context)
        if messages is not None and (self.tokenizer is None or self.handle.render(messages, True) == context):
            return messages, True
        return context, False

    def _span_ids(self, context: str | None, ctx_tokens: list[int]) -> list[int]:
        """Which context tokens are the user's, for the steering: 0 outside, k > 0 in the k-th user message (all
        of them for raw text and rolling windows: with nothing but user text there is nothing to steer away from)."""
        from trustlab.context.spans import render_with_spans

        spans = [1] * len(ctx_tokens)
        if context is not None and context in self._chats:
            prompt, chat = self._prompt(context)
            rendered = render_with_spans(self.handle, prompt, chat) if chat else None
            # the row's context: the rendered tokens less trailing whitespace (lm-eval moves it to the
            # continuation), less what a left truncation dropped
            full = self.tok_encode(context.rstrip())
            start = len(full) - len(ctx_tokens)
            if rendered is not None and rendered.ids[:len(full)] == full and full[start:] == ctx_tokens:
                spans = rendered.span_ids(self.steering.roles)[start:len(full)]
            else:
                self._warn_once("spans", "steering could not place the user's tokens in a chat context; that "
                                         "request is scored unsteered")
        elif context is not None:
            self._warn_once("raw", "steering acts on chat-templated prompts (--apply_chat_template): a raw prompt "
                                   "is all user text, so steering leaves it unchanged")
        return spans

    @contextlib.contextmanager
    def _steered(self) -> Iterator[None]:
        if self.steering is None:
            yield
        else:
            with self.steering:
                yield

    # ------------------------------------------------------------------ scoring
    def _require_scoring(self, kind: str, requests: list[Any]) -> None:
        tasks = sorted({getattr(r, "task_name", None) or "?" for r in requests})
        if self.defense is not None:
            raise CapabilityError(
                f"{kind} requests (tasks: {', '.join(tasks)}) cannot run under defense={self.defense}: the defense "
                "guards generation only, and scoring the undefended model would report it as defended. Run "
                "generate_until tasks with the defense, and scoring tasks without it.")
        caps = self.handle.capabilities
        if not caps.loglikelihood or self._model is None or self.tokenizer is None:
            raise CapabilityError(
                f"{kind} requests (tasks: {', '.join(tasks)}) need prompt log-probabilities, which the "
                f"{caps.backend!r} backend of {self.handle.name!r} does not give (an OpenAI-compatible server "
                "returns log-probabilities of generated tokens only). Run generate_until tasks on it, or give a "
                "white-box model: spec=embedded, a Hugging Face id or a local folder.")

    def loglikelihood(self, requests: list[Any], disable_tqdm: bool = False) -> list[tuple[float, bool]]:
        """(log p(continuation | context), greedy?) per request; see lm-eval's ``LM.loglikelihood``."""
        self._require_scoring("loglikelihood", requests)
        with self._steered():
            return super().loglikelihood(requests, disable_tqdm=disable_tqdm)

    def loglikelihood_rolling(self, requests: list[Any], disable_tqdm: bool = False) -> list[float]:
        """Full log-likelihood of each string over rolling windows of ``max_length`` (lm-eval's convention)."""
        self._require_scoring("loglikelihood_rolling", requests)
        windows, owner = [], []
        for i, (string,) in enumerate(tqdm([r.args for r in requests], disable=disable_tqdm,
                                           desc="Tokenizing documents")):
            for ctx, cont in map(make_disjoint_window, get_rolling_token_windows(
                    token_list=self.tok_encode(string), prefix_token=self.prefix_token_id,
                    max_seq_len=self.max_length, context_len=1)):
                windows.append((None, ctx, cont))
                owner.append(i)
        totals = [0.0] * len(requests)
        with self._steered():
            scores = self._loglikelihood_tokens(windows, disable_tqdm=disable_tqdm)
        for i, (lp, _) in zip(owner, scores):
            totals[i] += lp
        for r, total in zip(requests, totals):
            self.cache_hook.add_partial("loglikelihood_rolling", r.args, total)
        return totals

    def _loglikelihood_tokens(self, requests: list[tuple[Any, list[int], list[int]]], disable_tqdm: bool = False,
                              **kwargs: Any) -> list[tuple[float, bool]]:
        """Score token-level (context, continuation) pairs in batches: longest first, one forward per batch,
        logits only where continuations lie, one forward for all one-token continuations of a context."""
        order = Collator(requests, sort_fn=lambda r: (-len(r[1] + r[2]), tuple(r[1] + r[2])),
                         group_by="contexts", group_fn=lambda r: r[1] + r[2][:-1])
        out: list[tuple[float, bool]] = []
        pbar = tqdm(total=len(requests), disable=disable_tqdm, desc="Running loglikelihood requests")
        for chunk in order.get_batched(n=self.batch_size):
            rows = [(ctx + cont)[-(self.max_length + 1):][:-1] for _, ctx, cont in chunk]
            if self.steering is not None:  # each row's context part by span, its continuation never biased
                for (req, _, cont), row in zip(chunk, rows):
                    n_ctx = len(row) - len(cont) + 1
                    self.steering.register(row, self._span_ids(req[0] if req else None, row[:n_ctx])
                                           + [-1] * (len(row) - n_ctx))
            width = max(len(r) for r in rows)
            # continuation logits sit at [len(row) - len(cont), len(row)) of each row: keep the last `keep` positions
            keep = width - min(len(r) - len(cont) for r, (_, _, cont) in zip(rows, chunk))
            ids = torch.full((len(rows), width), self.tokenizer.pad_token_id or 0, dtype=torch.long)
            mask = torch.zeros_like(ids)
            for b, r in enumerate(rows):  # right padding: padded positions come after every real one
                ids[b, : len(r)] = torch.tensor(r, dtype=torch.long)
                mask[b, : len(r)] = 1
            # like lm-eval's hf, no padding mask (causal: padding on the right changes no real position), except
            # for the steering, which reads each row's real tokens from it
            extra = {"attention_mask": mask.to(self.device)} if self.steering is not None else {}
            with torch.inference_mode():
                logits = self._model(input_ids=ids.to(self.device), logits_to_keep=keep, **extra).logits  # (B, K, V)
            for b, ((req, ctx, cont), row) in enumerate(zip(chunk, rows)):
                start = len(row) - len(cont) - (width - keep)
                lp = F.log_softmax(logits[b, start:start + len(cont)].float(), dim=-1)[None]  # (1, T_cont, V)
                greedy = lp.argmax(-1)
                for req_str, cont_toks, lps in order.get_cache(req_str=req, cxt_toks=ctx, cont_toks=cont, logits=lp):
                    target = torch.tensor(cont_toks, dtype=torch.long, device=lps.device)[None]  # (1, T)
                    match = bool((greedy[:, -target.shape[1]:] == target).all())
                    answer = (float(lps[:, -target.shape[1]:].gather(2, target[..., None]).sum()), match)
                    out.append(answer)
                    if req_str is not None:
                        self.cache_hook.add_partial("loglikelihood", req_str, answer)
                    pbar.update(1)
        pbar.close()
        return order.get_original(out)

    # ------------------------------------------------------------------ generation
    def _config(self, gen_kwargs: dict[str, Any]) -> GenerationConfig:
        kwargs = normalize_gen_kwargs(gen_kwargs, self.max_gen_toks)
        ignored = sorted(set(kwargs) - _GEN_KEYS)
        if ignored:
            self._warn_once(f"gen:{ignored}", f"generation options {ignored} are not supported by --model trustlab "
                                              "and are ignored")
        until = kwargs["until"] if isinstance(kwargs["until"], list) else [kwargs["until"]]
        sample = bool(kwargs.get("do_sample"))
        return GenerationConfig(max_new_tokens=int(kwargs["max_gen_toks"]),
                                temperature=float(kwargs.get("temperature", 0.0)) if sample else 0.0,
                                top_p=float(kwargs.get("top_p", 1.0)), stop=tuple(s for s in until if s),
                                truncation="left")

    def generate_until(self, requests: list[Any], disable_tqdm: bool = False) -> list[str]:
        """Greedy (or sampled) answers until a stop string, in batches of ``batch_size`` of similar length,
        through the steering and the defense when set."""
        def length(req: tuple[str, dict]) -> int:
            return len(self.tok_encode(req[0])) if self.tokenizer is not None else len(req[0])

        order = Collator([r.args for r in requests], sort_fn=lambda r: (-length(r), r[0]), group_by="gen_kwargs",
                         group_fn=lambda r: r[1])
        out: list[str] = []
        pbar = tqdm(total=len(requests), disable=disable_tqdm, desc="Running generate_until requests")
        with self._steered():
            for chunk in order.get_batched(n=self.batch_size):
                cfg = self._config(chunk[0][1])
                prompts = [self._prompt(ctx) for ctx, _ in chunk]
                if self.steering is not None and not all(chat for _, chat in prompts):
                    self._warn_once("raw", "steering acts on chat-templated prompts (--apply_chat_template): a raw "
                                           "prompt is all user text, so steering leaves it unchanged")
                texts: dict[int, str] = {}
                for chat in (False, True):  # one call per kind of prompt
                    idx = [i for i, (_, c) in enumerate(prompts) if c == chat]
                    if not idx:
                        continue
                    gens = self.generator.generate([prompts[i][0] for i in idx], cfg, chat_template=chat)
                    for i, (g, *_) in zip(idx, gens):
                        texts[i] = g.text
                        if "defense" in g.extra:
                            self.defense_traces.append(g.extra["defense"])
                for i, (ctx, gen_kwargs) in enumerate(chunk):
                    out.append(texts[i])
                    self.cache_hook.add_partial("generate_until", (ctx, gen_kwargs), texts[i])
                    pbar.update(1)
        pbar.close()
        return order.get_original(out)


def main(argv: list[str] | None = None) -> None:
    """lm-eval's CLI with ``--model trustlab`` registered and trustlab's tasks on the include path.

    ``--tasks-path`` alone prints the task folder (for ``--include_path`` with a plain ``lm_eval``).

    Example:
        >>> main(["--model", "trustlab", "--model_args", "spec=embedded", "--tasks", "trustlab_cf_qa_mc"])
    """
    from lm_eval.__main__ import cli_evaluate

    args = list(sys.argv[1:] if argv is None else argv)
    if args == ["--tasks-path"]:
        print(tasks_path())
        return
    register()
    if any(a == "--tasks" or a.startswith("--tasks=") for a in args) and not any(
            a == "--include_path" or a.startswith("--include_path=") for a in args):
        args += ["--include_path", str(tasks_path())]
    sys.argv = ["lm_eval", *args]
    cli_evaluate()


register()

if __name__ == "__main__":
    from trustlab.integrations.lm_eval import main as _main

    _main()
