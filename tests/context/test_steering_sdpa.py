"""Steering under sdpa: the prompt pass keeps the kernel's mask-free causal path, and every sdpa result equals
the eager reference (bias in the mask) at long contexts, in padded batches, per head and on KV-cache decode."""

from __future__ import annotations

import pytest
import torch

from tests.conftest import make_tiny
from trustlab.bench.niah import SF_NEEDLE, build_context, niah_prompt
from trustlab.context.steering import UserSteering


def chat(tokenizer, n_tokens: int, depth: float = 0.5) -> list[dict[str, str]]:
    """A needle-in-a-haystack chat with about ``n_tokens`` of user context."""
    return [{"role": "system", "content": "Answer from the document only."},
            {"role": "user", "content": niah_prompt(build_context(tokenizer, n_tokens, depth), SF_NEEDLE.question)}]


@pytest.fixture
def sdpa_calls(monkeypatch):
    """Records (attn_mask is None, is_causal) for every torch sdpa call while still running the real kernel."""
    calls: list[tuple[bool, bool]] = []
    real = torch.nn.functional.scaled_dot_product_attention

    def spy(*args, **kwargs):
        calls.append((kwargs.get("attn_mask") is None, bool(kwargs.get("is_causal"))))
        return real(*args, **kwargs)

    monkeypatch.setattr(torch.nn.functional, "scaled_dot_product_attention", spy)
    return calls


def greedy(model, steering, prompts, steps):
    batch = steering.encode(prompts)
    with torch.inference_mode():
        out = model.model.generate(**batch, max_new_tokens=steps, min_new_tokens=steps, do_sample=False,
                                   output_logits=True, return_dict_in_generate=True,
                                   pad_token_id=model.tokenizer.pad_token_id)
    return out.sequences, torch.stack(out.logits, 1)  # (B, T), (B, steps, V)


@pytest.mark.parametrize("arch", ["llama", "gemma3"])
def test_an_unpadded_prompt_keeps_the_causal_fast_path(tokenizer, arch, sdpa_calls):
    """Batch 1, no padding: every layer's sdpa call gets no mask and is_causal=True, as unsteered, and the
    steered logits equal the eager steered ones (bias in the mask)."""
    model = make_tiny(tokenizer, arch, max_position_embeddings=1024)
    prompt = chat(tokenizer, 300)
    with UserSteering(model, alpha=0.3):
        eager = model.forward(prompt)[0].logits
        with model.using_attn_implementation("sdpa"):
            sdpa_calls.clear()
            sdpa = model.forward(prompt)[0].logits
    assert sdpa_calls == [(True, True)] * 2
    torch.testing.assert_close(sdpa, eager, rtol=0, atol=1e-5)
    assert (eager - model.forward(prompt)[0].logits).abs().max().item() > 1e-2  # steering did something


@pytest.mark.parametrize("heads", [None, [1, 3], {0: [2]}])
def test_long_padded_batch_generation_equals_eager(tokenizer, heads):
    """~1.2k and ~300-token prompts, left-padded together, steered (all heads, some heads, one layer's head):
    greedy decoding with a KV cache under sdpa gives the eager tokens and logits."""
    model = make_tiny(tokenizer, max_position_embeddings=2048)
    prompts = [chat(tokenizer, 1200, 0.3), chat(tokenizer, 300, 0.8)]
    with UserSteering(model, alpha=0.2, heads=heads) as steering:
        seq_e, logits_e = greedy(model, steering, prompts, 4)
        with model.using_attn_implementation("sdpa"):
            seq_s, logits_s = greedy(model, steering, prompts, 4)
    assert seq_e.shape[1] > 1200
    torch.testing.assert_close(seq_s, seq_e, rtol=0, atol=0)
    torch.testing.assert_close(logits_s, logits_e, rtol=0, atol=1e-4)


def test_multi_span_compat_under_sdpa_equals_eager(tokenizer):
    model = make_tiny(tokenizer, "qwen2")
    turns = [{"role": "user", "content": "Remember: the boat is red."},
             {"role": "assistant", "content": "Noted."},
             {"role": "user", "content": "What colour is the boat?"}]
    with UserSteering(model, alpha=0.4, multi_span_compat=True):
        eager = model.forward(turns)[0].logits
        with model.using_attn_implementation("sdpa"):
            sdpa = model.forward(turns)[0].logits
    torch.testing.assert_close(sdpa, eager, rtol=0, atol=1e-5)


def test_smollm2_steered_sdpa_generation_equals_eager(smollm):
    """The embedded SmolLM2-135M (GQA 9/3 heads) at a ~600-token context: same greedy answer, same logits."""
    prompt = chat(smollm.tokenizer, 600)
    with UserSteering(smollm, alpha=0.9) as steering:
        seq_e, logits_e = greedy(smollm, steering, [prompt], 6)
        with smollm.using_attn_implementation("sdpa"):
            seq_s, logits_s = greedy(smollm, steering, [prompt], 6)
    torch.testing.assert_close(seq_s, seq_e, rtol=0, atol=0)
    torch.testing.assert_close(logits_s, logits_e, rtol=0, atol=1e-3)
