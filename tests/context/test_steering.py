"""User-token attention steering on tiny random models: closed form, identity, sdpa, KV cache, clean exit."""

from __future__ import annotations

import inspect
import warnings

import pytest
import torch
from transformers.modeling_utils import AttentionInterface

from tests.conftest import make_tiny
from trustlab._compat import (
    attention_weights,
    check_transformers,
    incompatible,
    transformers_in,
    transformers_version,
)
from trustlab.context.spans import render_with_spans
from trustlab.context.steering import _IMPL, UserSteering
from trustlab.errors import CapabilityError, TrustlabError

CHAT = [{"role": "system", "content": "Answer from the document only."},
        {"role": "user", "content": "Document: the vault code is 7312. Question: what is the vault code?"}]
TWO_TURNS = [{"role": "user", "content": "Remember: the boat is red."},
             {"role": "assistant", "content": "Noted."},
             {"role": "user", "content": "What colour is the boat?"}]
ARCHS = ["llama", "qwen2", "gemma3"]


def closed_form(p: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """Spec 3b: p'_j = w_j p_j / sum_k w_k p_k, with w = alpha on non-user prompt columns, 1 elsewhere."""
    q = p * weight
    return q / q.sum(-1, keepdim=True)


def column_weights(model, prompt, alpha: float, extra: int = 0) -> torch.Tensor:
    span = render_with_spans(model, prompt).span_ids()
    return torch.tensor([alpha if s == 0 else 1.0 for s in span] + [1.0] * extra)


@pytest.mark.parametrize("arch", ARCHS)
def test_each_layer_matches_the_closed_form(tokenizer, arch):
    """Steer one layer at a time: that layer's post-softmax attention is the closed form of the unsteered one
    (earlier layers are untouched, so both see the same inputs)."""
    model = make_tiny(tokenizer, arch)
    alpha = 0.3
    plain, _ = model.forward(CHAT, output_attentions=True)
    weight = column_weights(model, CHAT, alpha)
    for layer in range(2):
        with UserSteering(model, alpha=alpha, layers=[layer]):
            steered, _ = model.forward(CHAT, output_attentions=True)
        for earlier in range(layer):
            torch.testing.assert_close(steered.attentions[earlier], plain.attentions[earlier], rtol=0, atol=0)
        expected = closed_form(plain.attentions[layer][0], weight)  # (H, T, T)
        assert (steered.attentions[layer][0] - expected).abs().max().item() < 1e-6
        assert (steered.attentions[layer][0] - plain.attentions[layer][0]).abs().max().item() > 1e-3


def test_head_selection_steers_only_those_heads(tiny):
    alpha = 0.2
    plain, _ = tiny.forward(CHAT, output_attentions=True)
    with UserSteering(tiny, alpha=alpha, layers=[0], heads=[1, 3]):
        steered, _ = tiny.forward(CHAT, output_attentions=True)
    p, s = plain.attentions[0][0], steered.attentions[0][0]  # (H, T, T)
    torch.testing.assert_close(s[[0, 2]], p[[0, 2]], rtol=0, atol=0)
    expected = closed_form(p[[1, 3]], column_weights(tiny, CHAT, alpha))
    assert (s[[1, 3]] - expected).abs().max().item() < 1e-6


def test_multi_span_compat_reproduces_the_per_span_penalty(tiny):
    """Official behaviour with k user spans: a prompt column outside m of them gets alpha**m."""
    alpha = 0.5
    plain, _ = tiny.forward(TWO_TURNS, output_attentions=True)
    with UserSteering(tiny, alpha=alpha, multi_span_compat=True):
        compat, _ = tiny.forward(TWO_TURNS, output_attentions=True)
    with UserSteering(tiny, alpha=alpha):
        union, _ = tiny.forward(TWO_TURNS, output_attentions=True)
    span = render_with_spans(tiny, TWO_TURNS).span_ids()
    assert max(span) == 2
    compat_w = torch.tensor([alpha ** (2 - (s > 0)) for s in span])
    union_w = torch.tensor([alpha if s == 0 else 1.0 for s in span])
    # layer 0 sees identical inputs in all three runs
    assert (compat.attentions[0][0] - closed_form(plain.attentions[0][0], compat_w)).abs().max() < 1e-6
    assert (union.attentions[0][0] - closed_form(plain.attentions[0][0], union_w)).abs().max() < 1e-6


def test_tokens_after_the_prompt_are_never_biased(tiny):
    """A forward over prompt + continuation (teacher forcing) steers only the prompt columns."""
    alpha = 0.4
    prompt_ids = tiny.tokenize(CHAT)
    extra = tiny.tokenizer(" the code is 7312")["input_ids"]
    ids = torch.tensor([prompt_ids + extra])
    with torch.inference_mode():
        plain = tiny.model(input_ids=ids, output_attentions=True)
        with UserSteering(tiny, alpha=alpha) as steering:
            steering.register(prompt_ids, render_with_spans(tiny, CHAT).span_ids())
            steered = tiny.model(input_ids=ids, output_attentions=True)
    expected = closed_form(plain.attentions[0][0], column_weights(tiny, CHAT, alpha, extra=len(extra)))
    assert (steered.attentions[0][0] - expected).abs().max().item() < 1e-6


@pytest.mark.parametrize("attn", ["eager", "sdpa"])
def test_alpha_one_is_the_identity(tokenizer, attn):
    model = make_tiny(tokenizer, attn=attn)
    out, batch = model.forward([CHAT, TWO_TURNS])
    real = batch["attention_mask"].bool()  # padding positions' outputs are meaningless either way
    with UserSteering(model, alpha=1.0):
        same = model.forward([CHAT, TWO_TURNS])[0].logits
    torch.testing.assert_close(same[real], out.logits[real], rtol=0, atol=0 if attn == "eager" else 1e-5)


@pytest.mark.parametrize("arch", ARCHS)
def test_sdpa_equals_eager(tokenizer, arch):
    model = make_tiny(tokenizer, arch)
    out, batch = model.forward([CHAT, TWO_TURNS])
    real = batch["attention_mask"].bool()
    with UserSteering(model, alpha=0.3):
        eager = model.forward([CHAT, TWO_TURNS])[0].logits[real]
        with model.using_attn_implementation("sdpa"):
            sdpa = model.forward([CHAT, TWO_TURNS])[0].logits[real]
    torch.testing.assert_close(sdpa, eager, rtol=0, atol=1e-5)
    assert (eager - out.logits[real]).abs().max().item() > 1e-2


@pytest.mark.parametrize("attn", ["eager", "sdpa"])
def test_kv_cache_decode_equals_full_recompute(tokenizer, attn):
    """Greedy decoding with a KV cache (bias on the cached prompt columns) gives the logits a full steered
    forward over prompt + generated tokens gives, for a left-padded batch of unequal prompts."""
    model = make_tiny(tokenizer, attn=attn)
    steps = 6
    with UserSteering(model, alpha=0.3) as steering:
        batch = steering.encode([CHAT, TWO_TURNS])
        with torch.inference_mode():
            out = model.model.generate(**batch, max_new_tokens=steps, min_new_tokens=steps, do_sample=False,
                                       output_logits=True, return_dict_in_generate=True,
                                       pad_token_id=tokenizer.pad_token_id)
            width = batch["input_ids"].shape[1]
            mask = torch.cat([batch["attention_mask"], torch.ones(2, steps, dtype=torch.long)], dim=1)
            full = model.model(input_ids=out.sequences, attention_mask=mask, use_cache=False).logits
    for t in range(steps):
        torch.testing.assert_close(out.logits[t], full[:, width - 1 + t], rtol=0, atol=1e-4)


def test_manual_decode_loop_with_only_the_cache_keyword(tiny):
    """No attention mask, no position ids: decode steps are placed by the cache passed under the keyword the
    installed transformers declares (``past_key_values`` up to 5.23, ``cache`` from 5.24)."""
    name = "cache" if "cache" in inspect.signature(tiny.model.forward).parameters else "past_key_values"
    with UserSteering(tiny, alpha=0.3), torch.inference_mode():
        ids = tiny.tokenize(CHAT)
        out = tiny.model(input_ids=torch.tensor([ids]), use_cache=True)
        seq, steps = list(ids), []
        for _ in range(3):
            seq.append(int(out.logits[0, -1].argmax()))
            out = tiny.model(input_ids=torch.tensor([seq[-1:]]), use_cache=True, **{name: out[name]})
            steps.append(out.logits[0, -1])
        full = tiny.model(input_ids=torch.tensor([seq]), use_cache=False).logits[0]
    for t, logits in enumerate(steps):
        torch.testing.assert_close(logits, full[len(ids) + t], rtol=0, atol=1e-4)


def test_a_broken_assumption_is_a_capability_error_naming_the_version(tiny):
    """A decode step that does not continue where steering's own count is, or a mask of an unexpected shape,
    is refused with the installed and the tested transformers versions, never an IndexError."""
    with UserSteering(tiny, alpha=0.5), torch.inference_mode():
        ids = torch.tensor([tiny.tokenize(CHAT)])
        tiny.model(input_ids=ids, use_cache=False)
        wider = torch.ones(1, ids.shape[1] + 5, dtype=torch.long)  # claims 4 more cached positions than seen
        with pytest.raises(CapabilityError, match=rf"continues after {ids.shape[1] + 4}.*transformers "
                                                  rf"{transformers_version()} is installed.*tested with"):
            tiny.model(input_ids=ids[:, -1:], attention_mask=wider)
        with pytest.raises(CapabilityError, match="padding mask"):
            tiny.model(input_ids=ids, attention_mask=torch.ones(1, 1, ids.shape[1], ids.shape[1]))


def test_version_helpers():
    assert transformers_in(">=5.23,<5.25", installed="5.24.0")
    assert not transformers_in(">=5.23,<5.25", installed="5.25.0.dev0")
    assert not transformers_in(">=5.23", installed="not-a-version")
    assert transformers_in()  # this environment runs a tested release
    err = incompatible("feature x", "the mask is 3D", tested=">=1,<2")
    assert isinstance(err, CapabilityError)
    assert f"transformers {transformers_version()} is installed" in str(err) and ">=1,<2" in str(err)
    with pytest.warns(RuntimeWarning, match="tested with transformers <1"):
        check_transformers("feature y", tested="<1")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        check_transformers("feature y", tested="<1")  # once per feature
        check_transformers("feature z")
    weights = torch.zeros(1, 2, 3, 3)
    assert attention_weights((torch.zeros(1, 3, 8), weights), "f") is weights
    for output in (torch.zeros(1, 3, 8), (torch.zeros(1, 3, 8), None), (torch.zeros(1, 3, 8), torch.zeros(3, 3))):
        with pytest.raises(CapabilityError, match="f: an eager attention module returned no"):
            attention_weights(output, "f")


def test_steering_changes_generation_through_the_handle(tiny):
    plain = tiny.generate([CHAT, TWO_TURNS], max_new_tokens=4, logprobs=True)
    with UserSteering(tiny, alpha=0.01):
        steered = tiny.generate([CHAT, TWO_TURNS], max_new_tokens=4, logprobs=True)
    for a, b in zip(plain, steered):
        assert a[0].token_logprobs[0] != pytest.approx(b[0].token_logprobs[0], abs=1e-4)


def test_steered_prompts_that_share_a_prefix_are_steered_whole(tiny):
    """Inside steering the handle computes no shared prefix apart (the hook needs each prompt's tokens): two
    chats with one long system prompt give, batched, the steered answers each gives alone; restored on exit."""
    system = {"role": "system", "content": "Answer from the document only. " * 12}
    chats = [[system, {"role": "user", "content": f"Document: the code is {c}. What is the code?"}]
             for c in ("7312", "4480")]
    assert tiny._shared_prefix_batches([tiny.tokenize(c) for c in chats])[0]  # they do share one
    with UserSteering(tiny, alpha=0.05):
        assert tiny.share_prefixes is False
        batched = tiny.generate(chats, max_new_tokens=4, logprobs=True)
        alone = [tiny.generate([c], max_new_tokens=4, logprobs=True)[0] for c in chats]
    assert tiny.share_prefixes is True
    for a, b in zip(batched, alone, strict=True):
        assert a[0].text == b[0].text
        assert a[0].token_logprobs == pytest.approx(b[0].token_logprobs, abs=1e-4)


def test_everything_is_removed_on_exit_and_after_an_exception(tiny):
    attn = [m for m in tiny.model.modules() if type(m).__name__.endswith("Attention")]
    configs = [m.config for m in attn]
    hooks = dict(tiny.model._forward_pre_hooks)
    before = tiny.forward(CHAT)[0].logits

    def assert_clean():
        assert [m.config for m in attn] == configs and all(a.config is c for a, c in zip(attn, configs))
        assert dict(tiny.model._forward_pre_hooks) == hooks
        assert "tokenize" not in vars(tiny)
        assert _IMPL not in AttentionInterface._global_mapping

    with UserSteering(tiny, alpha=0.5):
        assert all(type(m.config).__name__ == "_SteeredConfig" for m in attn)
        assert "tokenize" in vars(tiny) and _IMPL in AttentionInterface._global_mapping
    assert_clean()
    with pytest.raises(RuntimeError, match="boom"), UserSteering(tiny, alpha=0.5):
        raise RuntimeError("boom")
    assert_clean()
    torch.testing.assert_close(tiny.forward(CHAT)[0].logits, before, rtol=0, atol=0)


def test_nested_steering_and_unplaceable_inputs_are_refused(tiny):
    with UserSteering(tiny, alpha=0.5):
        with pytest.raises(TrustlabError, match="already"), UserSteering(tiny, alpha=0.5):
            pass
        with pytest.raises(TrustlabError, match="cannot place"), torch.inference_mode():
            tiny.model(input_ids=torch.tensor([[1, 2, 3]]))


def test_bad_arguments_and_black_box_models_fail_early(tiny):
    from trustlab.models.openai import OpenAIModel

    with pytest.raises(ValueError, match="alpha"):
        UserSteering(tiny, alpha=0.0)
    with pytest.raises(ValueError, match="layers"):
        UserSteering(tiny, layers=[5])
    with pytest.raises(CapabilityError, match="attentions"):
        UserSteering(OpenAIModel("http://127.0.0.1:9/v1", model_name="x", probe=False))


def test_spans_come_from_the_template_not_from_string_search(tiny):
    """The same sentence in the system prompt and the user turn: the user span is the user turn's."""
    text = "The vault code is 7312."
    messages = [{"role": "system", "content": text}, {"role": "user", "content": text}]
    rendered = render_with_spans(tiny, messages)
    assert rendered.ids == tiny.tokenize(messages)
    system, user = rendered.spans
    assert rendered.text[slice(*user.chars)] == text and user.chars[0] > system.chars[1]
    assert tiny.tokenizer.decode(rendered.ids[slice(*user.tokens)]).strip() == text
    span = rendered.span_ids()
    assert sum(span) == user.tokens[1] - user.tokens[0] and all(s == 0 for s in span[: system.tokens[1]])
