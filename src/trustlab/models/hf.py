"""White-box backend: a Hugging Face causal LM in this process.

Gives everything the black-box backend gives, plus loglikelihoods, attentions, hidden states, forward
hooks and gradients. Generation is batched with left padding and goes straight through
``model.generate`` (see ``benchmarks/generation.py`` for the overhead we measure against it).
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

from trustlab.errors import ContextLengthError, require
from trustlab.models.base import (
    Capabilities,
    Generation,
    GenerationConfig,
    ModelHandle,
    Prompt,
    as_messages,
    plain_text,
    strip_at_stop,
)


class HFModel(ModelHandle):
    """A transformers causal LM and its tokenizer behind the common handle.

    Args:
        model: a loaded ``PreTrainedModel`` (or a PEFT model wrapping one).
        tokenizer: its tokenizer.
        name: a display name (default: the model's ``name_or_path``).
        batch_size: prompts per forward batch in :meth:`generate` and :meth:`loglikelihood`.

    Example:
        >>> from transformers import AutoModelForCausalLM, AutoTokenizer
        >>> handle = HFModel(AutoModelForCausalLM.from_pretrained(p), AutoTokenizer.from_pretrained(p))
        >>> handle.generate("Hello", max_new_tokens=5)
    """

    def __init__(self, model: Any, tokenizer: Any, name: str | None = None, batch_size: int = 8):
        self.model = model
        self.tokenizer = tokenizer
        self.batch_size = batch_size
        config = model.config
        self.name = name or getattr(config, "name_or_path", None) or type(model).__name__
        if tokenizer.pad_token_id is None:
            tokenizer.pad_token = tokenizer.eos_token
        max_ctx = getattr(config, "max_position_embeddings", None)
        self.capabilities = Capabilities(
            backend="hf",
            logprobs=True,
            loglikelihood=True,
            attentions=True,
            hidden_states=True,
            gradients=True,
            chat_template=bool(getattr(tokenizer, "chat_template", None)),
            max_context=int(max_ctx) if max_ctx else None,
            sampling=True, native_n=True, seed=True,
        )
        #: Compute a prompt prefix that a batch shares once (see :meth:`_shared_prefix_batches`); a steering
        #: context turns this off while it is active (it reads each prompt's full tokens in every forward).
        self.share_prefixes = True

    # ------------------------------------------------------------------ loading
    @classmethod
    def from_pretrained(
        cls,
        path: str | Path,
        *,
        gguf_file: str | None = None,
        dtype: Any = None,
        attn_implementation: str = "eager",
        device: str = "cpu",
        name: str | None = None,
        threads: int | None = None,
        **kwargs: Any,
    ) -> HFModel:
        """Load a causal LM and tokenizer from a hub id, a local folder or a folder + GGUF file.

        ``attn_implementation="eager"`` (default) is what attention maps need; ``"sdpa"`` is faster.
        ``dtype=None`` (or ``"auto"``) follows the dtype policy of :mod:`trustlab.models.policy` (bfloat16
        where the hardware runs it fast, else float32); ``threads`` sets torch's threads (default: the
        policy's). Both are recorded in :meth:`describe`.
        """
        from trustlab.models.policy import apply_threads, resolve_dtype

        torch = require("torch", "llm")
        transformers = require("transformers", "llm")
        if gguf_file:
            require("gguf", "llm")
            require("accelerate", "llm")  # the GGUF loader needs it
        apply_threads(threads)
        torch_dtype = getattr(torch, resolve_dtype(dtype, device))
        tok = transformers.AutoTokenizer.from_pretrained(str(path), gguf_file=gguf_file)
        model = transformers.AutoModelForCausalLM.from_pretrained(
            str(path), gguf_file=gguf_file, dtype=torch_dtype, attn_implementation=attn_implementation, **kwargs
        )
        model.to(device).eval()  # safe: torch Module.eval(), not Python eval
        return cls(model, tok, name=name or str(path))

    # ------------------------------------------------------------------ properties
    @property
    def device(self) -> Any:
        return next(self.model.parameters()).device

    @property
    def dtype(self) -> str:
        """The parameters' dtype name (``"float32"``, ``"bfloat16"``)."""
        return str(next(self.model.parameters()).dtype).removeprefix("torch.")

    def describe(self) -> dict[str, Any]:
        import torch

        return {**super().describe(), "dtype": self.dtype, "threads": torch.get_num_threads(),
                "attn_implementation": self.attn_implementation}

    @property
    def attn_implementation(self) -> str:
        return self.model.config._attn_implementation

    def set_attn_implementation(self, impl: str) -> None:
        """Switch between ``"eager"`` and ``"sdpa"`` in place (no reload)."""
        self.model.set_attn_implementation(impl)

    @contextlib.contextmanager
    def using_attn_implementation(self, impl: str) -> Iterator[None]:
        """Temporarily use another attention implementation; restored on exit."""
        old = self.attn_implementation
        if impl == old:
            yield
            return
        self.set_attn_implementation(impl)
        try:
            yield
        finally:
            self.set_attn_implementation(old)

    # ------------------------------------------------------------------ prompts
    def render(self, prompt: Prompt, chat_template: bool = True) -> str:
        """The exact text the model sees (chat-templated or raw)."""
        if not chat_template:
            return plain_text(prompt)
        messages = as_messages(prompt)
        return self.tokenizer.apply_chat_template(
            messages, tokenize=False, add_generation_prompt=messages[-1]["role"] != "assistant"
        )

    def tokenize(self, prompt: Prompt, chat_template: bool = True) -> list[int]:
        """Token ids of a rendered prompt (the template carries its own special tokens)."""
        text = self.render(prompt, chat_template)
        return self.tokenizer(text, add_special_tokens=not chat_template)["input_ids"]

    def _fit(self, ids: list[int], cfg: GenerationConfig, index: int) -> tuple[list[int], int]:
        """Apply the context-window policy to one prompt. Returns (ids, tokens dropped)."""
        limit = self.capabilities.max_context
        if limit is None or len(ids) + cfg.max_new_tokens <= limit:
            return ids, 0
        excess = len(ids) + cfg.max_new_tokens - limit
        if cfg.truncation == "error" or excess >= len(ids):
            raise ContextLengthError(
                f"prompt {index} has {len(ids)} tokens; with max_new_tokens={cfg.max_new_tokens} that exceeds "
                f"the context window of {limit} tokens of {self.name!r} by {excess}. Shorten the prompt, lower "
                "max_new_tokens, or pass truncation='left' to drop the oldest tokens."
            )
        warnings.warn(f"prompt {index}: dropped the first {excess} of {len(ids)} tokens to fit the "
                      f"{limit}-token context window", stacklevel=3)
        return ids[excess:], excess

    def _pad_left(self, rows: list[list[int]]) -> dict[str, Any]:
        import torch

        width = max(len(r) for r in rows)
        pad = self.tokenizer.pad_token_id
        ids = torch.full((len(rows), width), pad, dtype=torch.long)
        mask = torch.zeros((len(rows), width), dtype=torch.long)
        for i, r in enumerate(rows):
            ids[i, width - len(r):] = torch.tensor(r, dtype=torch.long)
            mask[i, width - len(r):] = 1
        return {"input_ids": ids.to(self.device), "attention_mask": mask.to(self.device)}

    def encode(self, prompts: Sequence[Prompt], chat_template: bool = True) -> dict[str, Any]:
        """Left-padded ``input_ids`` / ``attention_mask`` for a batch of prompts."""
        return self._pad_left([self.tokenize(p, chat_template) for p in prompts])

    # ------------------------------------------------------------------ generation
    def _hf_generation_config(self, cfg: GenerationConfig) -> Any:
        import copy

        gc = copy.deepcopy(self.model.generation_config)
        gc.max_new_tokens = cfg.max_new_tokens
        gc.do_sample = not cfg.greedy
        gc.temperature = cfg.temperature if not cfg.greedy else None
        gc.top_p = cfg.top_p if not cfg.greedy else None
        gc.top_k = None
        gc.num_return_sequences = 1 if cfg.greedy else cfg.n
        gc.pad_token_id = self.tokenizer.pad_token_id
        if gc.eos_token_id is None:
            gc.eos_token_id = self.tokenizer.eos_token_id
        gc.return_dict_in_generate = True
        gc.output_logits = cfg.logprobs
        return gc

    def _stopping(self, cfg: GenerationConfig, prompt_width: int) -> Any:
        """Per-row stop-string check on the decoded new text (exact, unlike token-level matching)."""
        if not cfg.stop:
            return None
        import torch
        from transformers import StoppingCriteria, StoppingCriteriaList

        tok, stops = self.tokenizer, cfg.stop

        class _StopStrings(StoppingCriteria):
            def __call__(self, input_ids: Any, scores: Any, **kw: Any) -> Any:
                texts = tok.batch_decode(input_ids[:, prompt_width:], skip_special_tokens=True)
                return torch.tensor([any(s in t for s in stops) for t in texts], device=input_ids.device)

        return StoppingCriteriaList([_StopStrings()])

    def _generate(self, prompts: list[Prompt], cfg: GenerationConfig, chat_template: bool) -> list[list[Generation]]:
        import torch

        from trustlab.report.run import progress

        fitted = [self._fit(self.tokenize(p, chat_template), cfg, i) for i, p in enumerate(prompts)]
        gc = self._hf_generation_config(cfg)
        if cfg.seed is not None:
            torch.manual_seed(cfg.seed)
        k = gc.num_return_sequences
        shared, rest = self._shared_prefix_batches([ids for ids, _ in fitted]) if k == 1 else ([], list(range(len(fitted))))
        # The rest: prompts of similar length batched together (less padding), answers in the caller's order.
        rest.sort(key=lambda i: len(fitted[i][0]))
        # (indices, shared prefix length; 0 = none)
        chunks = shared + [(rest[s:s + self.batch_size], 0) for s in range(0, len(rest), self.batch_size)]
        results: list[list[Generation]] = [[] for _ in fitted]
        cached: tuple[tuple[int, ...], Any] | None = None
        for idx, n_prefix in progress(chunks, f"generating ({len(fitted)} prompts)") if len(chunks) > 1 else chunks:
            chunk = [fitted[i] for i in idx]
            kwargs: dict[str, Any] = {}
            if n_prefix:
                prefix = tuple(chunk[0][0][:n_prefix])
                if cached is None or cached[0] != prefix:
                    cached = (prefix, self._prefix_cache(prefix))
                batch = self._pad_middle(prefix, [ids[n_prefix:] for ids, _ in chunk])
                kwargs[self._cache_kwarg] = self._repeat_cache(cached[1], len(chunk))
            else:
                batch = self._pad_left([ids for ids, _ in chunk])
            with torch.inference_mode():
                out = self.model.generate(**batch, **kwargs, generation_config=gc,
                                          stopping_criteria=self._stopping(cfg, batch["input_ids"].shape[1]))
            new = out.sequences[:, batch["input_ids"].shape[1]:]  # (B * k, T_new)
            for b, (ids, dropped) in enumerate(chunk):
                samples = [
                    self._decode(new[b * k + j], out.logits, b * k + j, cfg, len(ids), dropped)
                    for j in range(k)
                ]
                results[idx[b]] = samples if k == cfg.n else [samples[0]] * cfg.n
        return results

    #: a prefix is shared (computed once per batch) when at least this many tokens long ...
    MIN_SHARED_PREFIX = 64
    #: ... and at least this share of the shortest prompt of its batch
    MIN_SHARED_FRACTION = 0.5

    def _shared_prefix_batches(self, rows: list[list[int]]) -> tuple[list[tuple[list[int], int]], list[int]]:
        """Split prompts into batches that share a long token prefix, and the rest.

        Prompts are sorted by their tokens, so those with a common start (a few-shot prompt's instruction and
        demos, asked about different queries) lie together; consecutive runs whose common prefix is at least
        :data:`MIN_SHARED_PREFIX` tokens and :data:`MIN_SHARED_FRACTION` of the shortest prompt are cut into
        near-equal batches of at most ``batch_size``, each with the prefix length it shares (at most the shortest prompt minus one
        token, so every row keeps a token to prefill). Returns ``([(indices, prefix_len)], rest_indices)``.
        Off (everything in the rest) when :attr:`share_prefixes` is False or the model's cache cannot be
        continued this way (sliding-window or non-attention layers).
        """
        if not self.share_prefixes or len(rows) < 2 or not self._prefix_cache_ok():
            return [], list(range(len(rows)))
        order = sorted(range(len(rows)), key=lambda i: rows[i])

        def common(a: list[int], b: list[int]) -> int:
            n = min(len(a), len(b))
            return next((j for j in range(n) if a[j] != b[j]), n)

        def enough(n: int, shortest: int) -> bool:
            return n >= self.MIN_SHARED_PREFIX and n >= self.MIN_SHARED_FRACTION * shortest

        def shared(run: list[int]) -> int:
            return min(min(common(rows[run[0]], rows[j]) for j in run[1:]), min(len(rows[j]) for j in run) - 1)

        batches: list[tuple[list[int], int]] = []
        rest: list[int] = []
        run, n_run, short = [order[0]], len(rows[order[0]]), len(rows[order[0]])
        for i in [*order[1:], None]:
            if i is not None:  # the run's common prefix and shortest prompt, were i to join
                n, m = min(n_run, common(rows[run[0]], rows[i])), min(short, len(rows[i]))
                if enough(min(n, m - 1), m):
                    run.append(i)
                    n_run, short = n, m
                    continue
            if len(run) > 1:  # near-equal batches of at most batch_size, each with the prefix it shares
                parts = -(-len(run) // self.batch_size)
                size = -(-len(run) // parts)
                for s in range(0, len(run), size):
                    part = run[s:s + size]
                    if len(part) > 1:
                        batches.append((part, shared(part)))
                    else:
                        rest.extend(part)
            else:
                rest.extend(run)
            if i is not None:
                run, n_run, short = [i], len(rows[i]), len(rows[i])
        return batches, rest

    def _prefix_cache_ok(self) -> bool:
        """Whether a prefix's KV cache can be repeated and continued: full attention in every layer."""
        config = getattr(self.model, "config", None)
        config = getattr(config, "text_config", None) or config
        types = getattr(config, "layer_types", None)
        if types is not None and any(t != "full_attention" for t in types):
            return False
        return not (types is None and getattr(config, "sliding_window", None)
                    and getattr(config, "use_sliding_window", True))

    @property
    def _cache_kwarg(self) -> str:
        import inspect

        # transformers >= 5.2x names it ``cache`` (``past_key_values`` is deprecated); older ones the other way
        base = self.model.get_base_model() if hasattr(self.model, "get_base_model") else self.model
        return "cache" if "cache" in inspect.signature(base.forward).parameters else "past_key_values"

    def _prefix_cache(self, prefix: tuple[int, ...]) -> Any:
        """The KV cache of ``prefix`` (one row)."""
        import torch

        with torch.inference_mode():
            out = self.model(input_ids=torch.tensor([prefix], device=self.device), use_cache=True)
        return out["cache"] if "cache" in out else out["past_key_values"]

    @staticmethod
    def _repeat_cache(cache: Any, n: int) -> Any:
        import copy

        cache = copy.deepcopy(cache)
        cache.batch_repeat_interleave(n)
        return cache

    def _pad_middle(self, prefix: tuple[int, ...], suffixes: list[list[int]]) -> dict[str, Any]:
        """``prefix + padding + suffix`` rows: the left-padded suffixes after the cached prefix, so the prefix's
        positions are those of the cache; positions come from the mask (padding skipped)."""
        import torch

        batch = self._pad_left(suffixes)
        head = torch.tensor([prefix], dtype=torch.long, device=self.device).expand(len(suffixes), -1)
        return {"input_ids": torch.cat([head, batch["input_ids"]], dim=1),
                "attention_mask": torch.cat([torch.ones_like(head), batch["attention_mask"]], dim=1)}

    def _decode(self, row: Any, logits: Any, r: int, cfg: GenerationConfig, n_prompt: int,
                dropped: int) -> Generation:
        import torch

        ids = row.tolist()
        eos = self.model.generation_config.eos_token_id
        eos_ids = set(eos if isinstance(eos, list) else [eos]) | {self.tokenizer.eos_token_id}
        end = next((i for i, t in enumerate(ids) if t in eos_ids), None)
        finish = "stop" if end is not None else "length"
        ids = ids[: end if end is not None else len(ids)]
        text = self.tokenizer.decode(ids, skip_special_tokens=True)
        text, hit = strip_at_stop(text, cfg.stop)
        if hit:
            finish = "stop"
            # keep the tokens that lie before the stop string
            keep = next((i for i in range(len(ids) + 1)
                         if len(self.tokenizer.decode(ids[:i], skip_special_tokens=True)) >= len(text)), len(ids))
            ids = ids[:keep]
        gen = Generation(text=text, finish_reason=finish, prompt_tokens=n_prompt, truncated_tokens=dropped)
        if cfg.logprobs and logits is not None:
            if ids:
                steps = torch.stack([step[r] for step in logits[: len(ids)]]).float()  # (T, V)
                lp = torch.log_softmax(steps, dim=-1).gather(1, torch.tensor(ids).unsqueeze(1)).squeeze(1)
                gen.token_logprobs = lp.tolist()
            else:  # EOS straight away: an empty answer has no token log-probs
                gen.token_logprobs = []
            gen.tokens = [self.tokenizer.decode([t]) for t in ids]
            gen.token_ids = ids
        return gen

    # ------------------------------------------------------------------ scoring
    def _loglikelihood(self, requests: list[tuple[Prompt, str]], chat_template: bool) -> list[tuple[float, bool]]:
        import torch

        rows = []
        for ctx, cont in requests:
            text = self.render(ctx, chat_template)
            stripped = text.rstrip(" ")  # lm-eval: trailing spaces belong to the continuation
            cont = text[len(stripped):] + cont
            ctx_ids = self.tokenizer(stripped, add_special_tokens=not chat_template)["input_ids"]
            cont_ids = self.tokenizer(cont, add_special_tokens=False)["input_ids"]
            if not cont_ids:
                raise ValueError(f"empty continuation for context {ctx!r}")
            rows.append((ctx_ids, cont_ids))
        out: list[tuple[float, bool]] = []
        pad = self.tokenizer.pad_token_id
        for start in range(0, len(rows), self.batch_size):
            chunk = rows[start:start + self.batch_size]
            seqs = [(c + t)[:-1] for c, t in chunk]
            width = max(len(s) for s in seqs)
            ids = torch.full((len(seqs), width), pad, dtype=torch.long)
            mask = torch.zeros_like(ids)
            for i, s in enumerate(seqs):  # right padding: positions stay aligned with the context
                ids[i, : len(s)] = torch.tensor(s)
                mask[i, : len(s)] = 1
            with torch.inference_mode():
                logits = self.model(input_ids=ids.to(self.device), attention_mask=mask.to(self.device)).logits
            for i, (c, t) in enumerate(chunk):
                cont = logits[i, len(c) - 1: len(c) - 1 + len(t)].float()  # (T_cont, V)
                target = torch.tensor(t, device=cont.device)
                lp = torch.log_softmax(cont, dim=-1).gather(1, target.unsqueeze(1)).sum().item()
                out.append((lp, bool((cont.argmax(-1) == target).all())))
        return out

    # ------------------------------------------------------------------ white-box access
    def forward(
        self,
        prompts: Sequence[Prompt] | Prompt,
        *,
        chat_template: bool = True,
        output_attentions: bool = False,
        output_hidden_states: bool = False,
        grad: bool = False,
        logits_to_keep: int = 0,
    ) -> tuple[Any, dict[str, Any]]:
        """One forward pass over a left-padded batch. Returns (model outputs, the batch).

        Attentions need eager attention (sdpa computes none); the model switches for this call only.
        ``logits_to_keep=k`` computes logits for the last k positions only (0 = all): with
        ``k=1`` a next-token read skips the (B, T, V) projection, the bulk of a short forward.

        Example:
            >>> out, batch = handle.forward(["Hi"], output_attentions=True)
            >>> out.attentions[0].shape  # (B, H, T, T)
        """
        import torch

        from trustlab.models.base import check_prompts

        batch = self.encode(check_prompts(prompts), chat_template)
        impl = "eager" if output_attentions else self.attn_implementation
        ctx = contextlib.nullcontext() if grad else torch.inference_mode()
        with self.using_attn_implementation(impl), ctx:
            out = self.model(**batch, output_attentions=output_attentions,
                             output_hidden_states=output_hidden_states, logits_to_keep=logits_to_keep)
        return out, batch

    @contextlib.contextmanager
    def hooks(self, hooks: dict[str, Callable[..., Any]], *, pre: bool = False) -> Iterator[None]:
        """Install forward (or forward-pre) hooks on named submodules; always removed on exit.

        Example:
            >>> seen = {}
            >>> with handle.hooks({"model.layers.0.mlp": lambda m, i, o: seen.update(out=o)}):
            ...     handle.forward("Hi")
        """
        handles = []
        try:
            for name, fn in hooks.items():
                module = self.model.get_submodule(name)
                reg = module.register_forward_pre_hook if pre else module.register_forward_hook
                handles.append(reg(fn))
            yield
        finally:
            for h in handles:
                h.remove()
