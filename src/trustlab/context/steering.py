"""Attention steering toward the user's context (mitigation A of the context-awareness paper).

In every steered layer and head, the attention logit of query row i to key column j gets a bias
``b[j] = log(alpha)`` when j is a *prompt* token outside the emphasised spans (by default: the contents of
every user message), and 0 otherwise. Generated tokens are never biased. After the softmax this is PASTA's
reweighting: with p the unsteered row,

    p'_j = alpha * p_j / Z  (non-emphasised prompt j),   p'_j = p_j / Z  (otherwise),
    Z = alpha * sum_{non-emphasised prompt} p + sum_{rest} p.

How it differs from the official code: the bias goes through transformers' ``AttentionInterface`` (a custom
attention function that calls the model's own eager or sdpa kernel), so it works with ``sdpa`` and on KV-cache
decode steps, where the bias stays on the cached prompt columns. Under ``eager`` and on single-token decode
steps the bias is added to the attention mask (a (B, 1, 1, K) row is cheap). Under ``sdpa`` a multi-token pass
(the prompt) folds it into the keys instead: the query gets an extra component 1 (0 in unsteered heads), the key
the component ``b[j] / scale``, so ``scale * q.k`` gains exactly ``b[j]`` and the kernel keeps its mask-free
causal path (with a full (Q, K) mask it computes every masked block too: the prefill of SmolLM2-135M took 1.33x
as long at 1.5k tokens and 1.71x at 4k). Spans come from the chat template with offsets
(:mod:`trustlab.context.spans`), not from string search or hard-coded token ids.
One bias covers the union of user spans; ``multi_span_compat=True`` reproduces the official per-span penalty.

References:
    Wang, Bai, Peng, Hsieh. "On the Loss of Context-awareness in General Instruction Fine-tuning".
    arXiv:2411.02688. Zhang et al. "Tell Your Model Where to Attend" (PASTA), arXiv:2311.02262.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Mapping, Sequence
from typing import Any

from trustlab._compat import check_transformers, incompatible
from trustlab.context.spans import render_with_spans
from trustlab.errors import CapabilityError, TrustlabError

_IMPL = "trustlab_user_steering"
_FEATURE = "attention steering"
_SUPPORTED = ("eager", "sdpa")
_active_count = 0  # steerings in progress; the attention function stays registered only while one is


class _SteeredConfig:
    """Stands in for one attention module's config while it is steered.

    The module looks up its attention function by ``config._attn_implementation``; this proxy names ours and
    forwards every other attribute to the real config (which keeps ``eager``/``sdpa``, so masks are built as
    usual and ``set_attn_implementation`` inside the context still picks the kernel we call).
    """

    _attn_implementation = _IMPL

    def __init__(self, base: Any, steering: UserSteering, layer: int):
        self.base, self.steering, self.layer = base, steering, layer

    def __getattr__(self, name: str) -> Any:
        return getattr(self.base, name)


def _attention_interface() -> tuple[Any, Any]:
    """transformers' ``AttentionInterface`` class and its ``ALL_ATTENTION_FUNCTIONS`` registry."""
    try:
        from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS, AttentionInterface
    except ImportError as exc:
        raise incompatible(_FEATURE, "transformers.modeling_utils has no AttentionInterface") from exc
    if not isinstance(getattr(AttentionInterface, "_global_mapping", None), dict):
        raise incompatible(_FEATURE, "AttentionInterface keeps no _global_mapping registry")
    return AttentionInterface, ALL_ATTENTION_FUNCTIONS


def _inner_attention(module: Any, impl: str) -> Any:
    if impl == "eager":  # each architecture has its own eager kernel (softcapping, scaling ...)
        fn = getattr(sys.modules[type(module).__module__], "eager_attention_forward", None)
        if fn is None:
            raise incompatible(_FEATURE, f"{type(module).__module__} has no eager_attention_forward to steer")
        return fn
    if impl not in _SUPPORTED:
        raise CapabilityError(f"attention steering supports {_SUPPORTED}, not {impl!r}")
    functions = _attention_interface()[1]
    if impl not in functions:
        raise incompatible(_FEATURE, f"ALL_ATTENTION_FUNCTIONS has no {impl!r} kernel")
    return functions[impl]


def _steered_attention(module: Any, query: Any, key: Any, value: Any, attention_mask: Any, **kwargs: Any):
    """The registered attention function: add the steering bias (to the keys or the mask), run the real kernel."""
    cfg = module.config
    impl = cfg.base._attn_implementation
    kernel = _inner_attention(module, impl)
    if impl == "sdpa" and query.shape[2] > 1:  # prompt: bias in the keys, the kernel's causal path stays open
        d = value.shape[-1]
        scaling = kwargs.pop("scaling", None) or query.shape[-1] ** -0.5
        query, key, value = cfg.steering.biased_qkv(query, key, value, scaling, cfg.layer)
        out, weights = kernel(module, query, key, value, attention_mask, scaling=scaling, **kwargs)
        return out[..., :d], weights  # (B, Q, H, D): the padded value components are zero
    mask = cfg.steering.biased_mask(attention_mask, query, key, cfg.layer)
    return kernel(module, query, key, value, mask, **kwargs)


def _unregister() -> None:
    global _active_count
    _active_count -= 1
    if _active_count == 0:
        _attention_interface()[0]._global_mapping.pop(_IMPL, None)


def _additive(mask: Any, q: int, k: int, like: Any) -> Any:
    """Any mask transformers hands an attention kernel, as an additive float mask (B|1, 1|H, Q, K)."""
    import torch

    neg = torch.finfo(like.dtype).min
    if mask is None:  # sdpa's "is_causal" shortcut: queries are the last q of the k positions
        allowed = torch.arange(k, device=like.device)[None, :] <= torch.arange(k - q, k, device=like.device)[:, None]
        return torch.where(allowed, 0.0, neg).to(like.dtype)[None, None]  # (1, 1, Q, K)
    if mask.dtype == torch.bool:
        return torch.where(mask, 0.0, neg).to(like.dtype)[..., :k]
    return mask[..., :k]


def _past_length(ids: Any, kwargs: dict[str, Any]) -> int:
    """Positions before this call's ``input_ids`` (0 for a prompt, > 0 for a decode step).

    Read from the call's arguments, in this order: the 2D padding mask ``generate`` extends by one column
    per step (its width is past + new), the position ids, and only then the cache object (under ``cache``
    from transformers 5.24, ``past_key_values`` before).
    """
    mask = kwargs.get("attention_mask")
    if mask is not None:
        if mask.dim() != 2 or mask.shape[0] != ids.shape[0] or mask.shape[1] < ids.shape[1]:
            raise incompatible(_FEATURE, f"expected a (batch, positions) padding mask covering input_ids "
                                         f"{tuple(ids.shape)}, got attention_mask {tuple(mask.shape)}")
        return int(mask.shape[1] - ids.shape[1])
    positions = kwargs.get("position_ids")
    if positions is not None:
        return int(positions[..., 0].min())
    cache = kwargs.get("cache", kwargs.get("past_key_values"))
    if cache is None:
        return 0
    if not callable(getattr(cache, "get_seq_length", None)):
        raise incompatible(_FEATURE, f"the cache ({type(cache).__name__}) has no get_seq_length()")
    return int(cache.get_seq_length())


class UserSteering:
    """Context manager that steers a white-box model's attention toward user-supplied tokens.

    Inside the ``with`` block, every prompt the handle tokenizes (``generate``, ``forward``, ``encode``) is
    located in its chat template and steered; raw token inputs can be registered with :meth:`register`.
    Everything installed (attention proxies, the forward hook, the tokenize wrapper, the registered
    attention function) is removed on exit, also after an exception.

    Args:
        model: a model handle with attentions (``HFModel``), or a ``PreTrainedModel`` with ``tokenizer``.
        tokenizer: the tokenizer, when ``model`` is a bare transformers model.
        alpha: scale of attention to non-emphasised prompt tokens (default 0.9; 1 is a no-op; must be > 0).
        layers: layer indices to steer (default: all).
        heads: query-head indices to steer in every steered layer, or ``{layer: heads}`` (default: all).
        roles: whose message contents are emphasised (default ``("user",)``).
        multi_span_compat: reproduce the official per-span penalty: with k emphasised spans a prompt token
            gets ``log(alpha)`` once for every span it lies outside of (default False: one bias, union).

    Raises:
        CapabilityError: the backend has no attentions (e.g. an OpenAI-compatible endpoint), or the model's
            attention implementation is neither ``eager`` nor ``sdpa``.

    Example:
        >>> model = load_model()
        >>> with UserSteering(model, alpha=0.9):
        ...     model.complete("Document: ... Question: ...", max_new_tokens=32)
    """

    def __init__(self, model: Any, tokenizer: Any = None, *, alpha: float = 0.9,
                 layers: Sequence[int] | None = None, heads: Sequence[int] | Mapping[int, Sequence[int]] | None = None,
                 roles: Sequence[str] = ("user",), multi_span_compat: bool = False):
        from trustlab.models import load_model

        handle = load_model(model, tokenizer=tokenizer)
        handle.capabilities.require("attentions", method="attention steering")
        if not alpha > 0:
            raise ValueError(f"alpha must be > 0, got {alpha}")
        self.handle, self.alpha, self.log_alpha = handle, float(alpha), math.log(alpha)
        self.roles, self.multi_span_compat = tuple(roles), multi_span_compat
        self.modules = [m for m in handle.model.modules()
                        if type(m).__name__.endswith("Attention") and hasattr(m, "layer_idx")]
        if not self.modules:
            raise CapabilityError(f"found no attention layers to steer in {type(handle.model).__name__}")
        n = len(self.modules)
        self.layers = sorted(set(range(n) if layers is None else layers))
        if any(not 0 <= i < n for i in self.layers):
            raise ValueError(f"layers must lie in [0, {n}), got {list(layers or [])}")
        if heads is None or isinstance(heads, Mapping):
            self.heads = dict(heads or {})
        else:
            self.heads = {i: list(heads) for i in self.layers}
        self._known: dict[tuple[int, ...], list[int]] = {}
        self._active = False
        self._undo: list[Any] = []
        self._reset_step()

    # ------------------------------------------------------------------ install / remove
    def __enter__(self) -> UserSteering:
        check_transformers(_FEATURE)
        interface = _attention_interface()[0]
        impl = self.handle.attn_implementation
        if impl not in _SUPPORTED:
            raise CapabilityError(f"attention steering supports {_SUPPORTED}; the model uses {impl!r}")
        if any(isinstance(m.config, _SteeredConfig) for m in self.modules):
            raise TrustlabError("this model is already being steered; nested steering is not supported")
        global _active_count
        interface.register(_IMPL, _steered_attention)
        _active_count += 1
        self._undo = [_unregister]
        try:
            for i in self.layers:
                module = self.modules[i]
                original = module.config
                module.config = _SteeredConfig(original, self, i)
                self._undo.append(lambda m=module, c=original: setattr(m, "config", c))
            hook = self.handle.model.register_forward_pre_hook(self._on_forward, with_kwargs=True)
            self._undo.append(hook.remove)
            had_own = "tokenize" in vars(self.handle)
            original_tokenize = self.handle.tokenize
            self.handle.tokenize = self._tokenize_with(original_tokenize)
            self._undo.append(lambda: setattr(self.handle, "tokenize", original_tokenize) if had_own
                              else delattr(self.handle, "tokenize"))
            # the forward hook reads each prompt's full tokens: no prefix computed apart from the batch
            sharing = getattr(self.handle, "share_prefixes", None)
            if sharing is not None:
                self.handle.share_prefixes = False
                self._undo.append(lambda: setattr(self.handle, "share_prefixes", sharing))
        except BaseException:
            self._remove()
            raise
        self._active = True
        return self

    def __exit__(self, *exc: Any) -> None:
        self._remove()

    def _remove(self) -> None:
        for undo in reversed(self._undo):
            undo()
        self._undo = []
        self._known.clear()
        self._reset_step()
        self._active = False

    # ------------------------------------------------------------------ which tokens are emphasised
    def register(self, ids: Sequence[int], span_ids: Sequence[int]) -> None:
        """Declare a prompt's tokens and their emphasis (0 = not emphasised, k > 0 = in the k-th span).

        Inputs whose tokens start with a registered prompt are steered on that prefix; tokens after it are
        treated like generated tokens (never biased).
        """
        if len(ids) != len(span_ids):
            raise ValueError(f"ids ({len(ids)}) and span_ids ({len(span_ids)}) differ in length")
        self._known[tuple(ids)] = list(span_ids)

    def encode(self, prompts: Sequence[Any], chat_template: bool = True) -> dict[str, Any]:
        """Left-padded batch for a bare ``model.generate(**batch)``, with every prompt registered."""
        if not self._active:
            raise TrustlabError("encode() registers prompts for an active steering: call it inside `with`")
        return self.handle.encode(list(prompts), chat_template)

    def _tokenize_with(self, original: Any) -> Any:
        def tokenize(prompt: Any, chat_template: bool = True) -> list[int]:
            ids = original(prompt, chat_template)
            rendered = render_with_spans(self.handle, prompt, chat_template)
            if rendered.ids != ids:
                raise TrustlabError("span lookup tokenized the prompt differently from the model handle")
            self.register(ids, rendered.span_ids(self.roles))
            return ids

        return tokenize

    def _lookup(self, row: list[int]) -> list[int]:
        key = tuple(row)
        if key in self._known:
            return self._known[key]
        prefixes = [k for k in self._known if len(k) < len(row) and key[: len(k)] == k]
        if not prefixes:
            raise TrustlabError("steering got an input it cannot place: tokenize prompts through the model handle "
                                "(generate/forward/encode) inside the `with` block, or call register(ids, span_ids)")
        best = max(prefixes, key=len)
        return self._known[best] + [-1] * (len(row) - len(best))  # -1: after the prompt, never biased

    def _token_bias(self, span_ids: list[int]) -> list[float]:
        if self.multi_span_compat:
            k = max(span_ids, default=0)
            return [0.0 if s < 0 else self.log_alpha * (k - (s > 0)) for s in span_ids]
        return [self.log_alpha if s == 0 else 0.0 for s in span_ids]

    # ------------------------------------------------------------------ per forward pass
    def _reset_step(self) -> None:
        self._prompt_bias: Any = None  # (B, W): bias of each padded prompt column
        self._seen = 0  # positions processed so far (prompt + generated)
        self._cache: dict[int, Any] = {}

    def _on_forward(self, module: Any, args: tuple, kwargs: dict[str, Any]) -> None:
        """Before each model forward: a prompt (prefill) sets the column bias, a decode step extends the count."""
        import torch

        ids = kwargs.get("input_ids", args[0] if args else None)
        if ids is None:
            raise CapabilityError("attention steering needs input_ids (it cannot place inputs_embeds)")
        self._cache = {}
        past = _past_length(ids, kwargs)
        if past > 0:  # a decode step: the new columns are generated tokens
            if self._prompt_bias is None:
                raise TrustlabError("steering entered after the prompt was cached: enter it before generating")
            if past != self._seen:
                raise incompatible(_FEATURE, f"a model call continues after {past} cached positions, but steering "
                                             f"has seen {self._seen}")
            self._seen += ids.shape[1]
            return
        mask = kwargs.get("attention_mask")
        bias = torch.zeros(ids.shape, dtype=torch.float32)  # (B, W)
        for b in range(ids.shape[0]):
            keep = mask[b].bool().cpu() if mask is not None else torch.ones(ids.shape[1], dtype=torch.bool)
            row_bias = self._token_bias(self._lookup(ids[b].cpu()[keep].tolist()))
            bias[b, keep] = torch.tensor(row_bias, dtype=torch.float32)
        self._prompt_bias, self._seen = bias.to(ids.device), ids.shape[1]

    def _key_bias(self, k: int) -> Any:
        """(B, K) bias over the key columns the kernel sees (the last k positions processed)."""
        import torch

        if k not in self._cache:
            bias = self._prompt_bias
            pos = torch.arange(self._seen - k, self._seen, device=bias.device)
            inside = pos < bias.shape[1]
            out = torch.zeros(bias.shape[0], k, dtype=bias.dtype, device=bias.device)
            out[:, inside] = bias[:, pos[inside]]
            self._cache[k] = out
        return self._cache[k]

    def _check(self, query: Any, key: Any) -> None:
        k = key.shape[2]
        if self._prompt_bias is None or k > self._seen or query.shape[0] != self._prompt_bias.shape[0]:
            raise incompatible(_FEATURE, f"the attention kernel got {query.shape[0]} x {k} key columns, but "
                                         f"steering has seen {self._seen} positions of a batch of "
                                         f"{None if self._prompt_bias is None else self._prompt_bias.shape[0]}")

    def _head_gate(self, layer: int, query: Any) -> Any:
        """(H,) 1.0 for the steered query heads of ``layer``, 0.0 for the others; None when all are steered."""
        import torch

        heads = self.heads.get(layer)
        if heads is None:
            return None
        on = torch.zeros(query.shape[1], dtype=query.dtype, device=query.device)
        on[list(heads)] = 1.0
        return on

    def biased_qkv(self, query: Any, key: Any, value: Any, scaling: float, layer: int) -> tuple[Any, Any, Any]:
        """Query, key and value with the steering bias folded into extra head components (for sdpa).

        ``q' = [q, g_h, 0...]``, ``k' = [k, b_j / scaling, 0...]``, ``v' = [v, 0...]``: with the kernel's
        ``scaling`` the logit of head h, row i, column j becomes ``scaling * q.k + g_h * b_j``, the eager bias
        (g_h = 1 in steered heads, 0 in the others). The mask is untouched, so a prompt with no padding keeps
        sdpa's ``is_causal`` path. Head sizes stay equal (sdpa's GQA and fused kernels need that): one extra
        component on CPU, padded to a multiple of 8 on accelerators, whose fused kernels want that.

        Args:
            query: (B, H, Q, D) query states; key, value: (B, H_kv, K, D) states (cache included).
            scaling: the softmax scale the kernel applies to ``q.k``.
            layer: the layer index (selects the heads to steer).

        Returns:
            ``(query, key, value)``, each with D + p components (p >= 1).
        """
        import torch

        self._check(query, key)
        b, h, q, d = query.shape
        pad = 1 if query.device.type == "cpu" else 8 - d % 8
        gate = self._head_gate(layer, query)
        extra_q = query.new_zeros(b, h, q, pad)
        extra_q[..., 0] = 1.0 if gate is None else gate[None, :, None]
        extra_k = key.new_zeros(b, key.shape[1], key.shape[2], pad)
        extra_k[..., 0] = (self._key_bias(key.shape[2]) / scaling).to(key.dtype)[:, None, :]  # (B, 1, K)
        return (torch.cat([query, extra_q], -1), torch.cat([key, extra_k], -1),
                torch.cat([value, value.new_zeros(*value.shape[:-1], pad)], -1))

    def biased_mask(self, mask: Any, query: Any, key: Any, layer: int) -> Any:
        """The additive mask for one steered layer: the model's mask plus the steering bias.

        Args:
            mask: the mask transformers built (None, boolean or additive float).
            query: (B, H, Q, D) query states; key: (B, H_kv, K, D) key states (cache included).
            layer: the layer index (selects the heads to steer).

        Returns:
            An additive float mask, (B, 1, Q, K) or (B, H, Q, K) when only some heads are steered.
        """
        q, k = query.shape[2], key.shape[2]
        self._check(query, key)
        if mask is not None and (mask.dim() != 4 or mask.shape[-2] not in (1, q) or mask.shape[-1] < k
                                 or mask.shape[0] not in (1, query.shape[0])):
            raise incompatible(_FEATURE, f"expected a (batch, 1|heads, {q}, >={k}) attention mask, got "
                                         f"{tuple(mask.shape)}")
        bias = self._key_bias(k).to(query.dtype)[:, None, None, :]  # (B, 1, 1, K)
        gate = self._head_gate(layer, query)
        if gate is not None:
            bias = bias * gate[None, :, None, None]  # (B, H, 1, K)
        return _additive(mask, q, k, query) + bias
