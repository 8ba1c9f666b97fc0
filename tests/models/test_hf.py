"""The white-box HF backend on tiny random-weight models (fast) built from configs."""

from __future__ import annotations

import pytest
import torch

from tests.conftest import make_tiny
from trustlab.errors import ContextLengthError, EmptyInputError
from trustlab.models import GenerationConfig

PROMPTS = ["Hello there, how are you?", "A", "Write a poem about the sea and the wind, please."]


def test_batched_greedy_equals_one_by_one(tiny):
    """Left padding must not change greedy answers: batch of 3 == three batches of 1."""
    batched = [s[0].text for s in tiny.generate(PROMPTS, max_new_tokens=8)]
    tiny.batch_size = 2  # length-sorted batches of 2: answers must still come back in prompt order
    assert [s[0].text for s in tiny.generate(PROMPTS, max_new_tokens=8)] == batched
    tiny.batch_size = 1
    single = [tiny.generate([p], max_new_tokens=8)[0][0].text for p in PROMPTS]
    assert batched == single
    assert all(isinstance(t, str) for t in batched)


def test_n_samples_and_seed(tiny):
    out = tiny.generate(PROMPTS[:2], n=4, temperature=1.0, seed=3, max_new_tokens=6)
    assert [len(s) for s in out] == [4, 4]
    again = tiny.generate(PROMPTS[:2], n=4, temperature=1.0, seed=3, max_new_tokens=6)
    assert [[g.text for g in s] for s in out] == [[g.text for g in s] for s in again]
    # a random 2-layer model over 49k tokens does not repeat itself across 4 samples
    assert len({g.text for g in out[0]}) > 1
    greedy = tiny.generate(PROMPTS[:1], n=3, max_new_tokens=6)[0]
    assert len({g.text for g in greedy}) == 1


def test_token_logprobs_match_a_forward_pass(tiny):
    gen = tiny.generate(["Tell me a story."], max_new_tokens=6, logprobs=True)[0][0]
    assert gen.token_logprobs is not None and len(gen.token_logprobs) == len(gen.tokens) > 0
    prompt_ids = tiny.tokenize("Tell me a story.")
    new_ids = gen.token_ids
    ids = torch.tensor([prompt_ids + new_ids])
    with torch.no_grad():
        logp = torch.log_softmax(tiny.model(ids).logits[0].float(), -1)
    manual = [logp[len(prompt_ids) - 1 + i, t].item() for i, t in enumerate(new_ids)]
    assert gen.token_logprobs[: len(manual)] == pytest.approx(manual, abs=1e-4)


def test_loglikelihood_matches_greedy_and_manual_sum(tiny):
    # Greedy continuations whose text re-tokenizes to the same ids must score as greedy.
    checked = 0
    for prompt in ["Count: one, two,", "The sky is", "Paris is the capital of", "1 2 3 4"]:
        gen = tiny.generate([prompt], max_new_tokens=2, chat_template=False, logprobs=True)[0][0]
        if tiny.tokenizer(gen.text, add_special_tokens=False)["input_ids"] != gen.token_ids:
            continue
        (lp, is_greedy), = tiny.loglikelihood([(prompt, gen.text)], chat_template=False)
        assert is_greedy and lp == pytest.approx(sum(gen.token_logprobs), abs=1e-4)
        checked += 1
    assert checked >= 1
    prompt, other = "Count: one, two,", " zebra"
    (lp_o, is_greedy_o), = tiny.loglikelihood([(prompt, other)], chat_template=False)
    assert not is_greedy_o
    ids = tiny.tokenize(prompt, chat_template=False)
    cont = tiny.tokenizer(other, add_special_tokens=False)["input_ids"]
    with torch.no_grad():
        logp = torch.log_softmax(tiny.model(torch.tensor([ids + cont])).logits[0], -1)
    manual = sum(logp[len(ids) - 1 + i, t].item() for i, t in enumerate(cont))
    assert lp_o == pytest.approx(manual, abs=1e-4) and lp_o < 0


def test_loglikelihood_batching_is_consistent(tiny):
    reqs = [(p, " and more") for p in PROMPTS]
    tiny.batch_size = 3
    batched = tiny.loglikelihood(reqs)
    tiny.batch_size = 1
    single = tiny.loglikelihood(reqs)
    assert [b[0] for b in batched] == pytest.approx([s[0] for s in single], abs=1e-4)


def test_chat_template_on_and_off(tiny):
    on, off = tiny.render("What is 2+2?", True), tiny.render("What is 2+2?", False)
    assert off == "What is 2+2?"
    assert "<|im_start|>user" in on and on.rstrip().endswith("<|im_start|>assistant")
    msgs = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}]
    assert tiny.render(msgs, False) == "Be brief.\n\nHi"


def test_attentions_hidden_states_and_grads(tokenizer):
    sdpa = make_tiny(tokenizer, attn="sdpa")
    out, batch = sdpa.forward(PROMPTS[:2], output_attentions=True, output_hidden_states=True)
    b, t = batch["input_ids"].shape
    assert len(out.attentions) == 2 and out.attentions[0].shape == (b, 4, t, t)  # (B, H, T, T)
    assert len(out.hidden_states) == 3 and out.hidden_states[-1].shape == (b, t, 64)
    assert sdpa.attn_implementation == "sdpa"  # switched to eager for the call only
    out, _ = sdpa.forward(PROMPTS[:1], grad=True)
    out.logits.sum().backward()
    assert sdpa.model.model.embed_tokens.weight.grad is not None


def test_hooks_fire_and_are_removed(tiny):
    seen = []
    with tiny.hooks({"model.layers.0.mlp": lambda m, i, o: seen.append(o.shape)}):
        tiny.forward(PROMPTS[:1])
    assert len(seen) == 1
    tiny.forward(PROMPTS[:1])
    assert len(seen) == 1
    assert not tiny.model.model.layers[0].mlp._forward_hooks


def test_context_window_refuses_or_truncates(tokenizer):
    small = make_tiny(tokenizer, max_position_embeddings=64)
    long = "word " * 80
    with pytest.raises(ContextLengthError, match="exceeds the context window of 64 tokens"):
        small.generate([long], max_new_tokens=4)
    with pytest.warns(UserWarning, match="dropped the first"):
        g = small.generate([long], max_new_tokens=4, truncation="left")[0][0]
    assert g.truncated_tokens > 0 and g.prompt_tokens + 4 <= 64


def test_bad_input_messages(tiny):
    with pytest.raises(EmptyInputError, match="empty"):
        tiny.generate([])
    with pytest.raises(EmptyInputError):
        tiny.loglikelihood([])
    with pytest.raises(ValueError, match="n must be >= 1"):
        GenerationConfig(n=0)
    with pytest.raises(ValueError, match="'role' and 'content'"):
        tiny.generate([[{"text": "no role"}]])


def test_stop_strings_cut_text_and_tokens(tiny):
    base = tiny.generate(["Once upon a time"], max_new_tokens=12, chat_template=False, logprobs=True)[0][0]
    assert len(base.text) > 4
    stop = base.text[3:6]
    cut = tiny.generate(["Once upon a time"], max_new_tokens=12, chat_template=False, logprobs=True,
                        stop=[stop])[0][0]
    assert stop not in cut.text and base.text.startswith(cut.text)
    assert cut.finish_reason == "stop"
    assert len(cut.token_logprobs) <= len(base.token_logprobs)


@pytest.mark.parametrize("arch", ["qwen2", "gemma3"])
def test_other_architectures(tokenizer, arch):
    h = make_tiny(tokenizer, arch=arch, head_dim=16)
    out = h.generate(PROMPTS[:2], max_new_tokens=4, logprobs=True)
    assert len(out) == 2 and out[0][0].token_logprobs


def test_empty_answer_with_logprobs(tokenizer):
    """A model whose first choice is EOS returns an empty answer with empty log-probs (no crash)."""
    import torch

    h = make_tiny(tokenizer)
    eos_only = torch.zeros(len(tokenizer))
    eos_only[tokenizer.eos_token_id] = 10.0
    hook = h.model.lm_head.register_forward_hook(lambda m, i, o: o * 0 + eos_only)
    try:
        g = h.generate(["Hello"], max_new_tokens=4, logprobs=True)[0][0]
    finally:
        hook.remove()
    assert g.text == "" and g.token_logprobs == [] and g.tokens == [] and g.finish_reason == "stop"


def _few_shot_prompts() -> list[str]:
    demos = "\n\n".join(f"Input: {w} {i}\nOutput: {i * 7 % 13}" for i, w in enumerate(
        "alpha bravo charlie delta echo foxtrot golf hotel india juliet kilo lima".split()))
    return [f"Instruction: map the word to a number.\n\n{demos}\n\nInput: {q}\nOutput:"
            for q in ("mike", "november 4", "oscar papa", "quebec", "romeo sierra tango", "uniform")]


@pytest.mark.parametrize("arch", ["llama", "qwen2"])
def test_shared_prefix_batches_equal_plain_ones(tokenizer, arch):
    """A prefix several prompts share is computed once (its cache repeated over the batch, padding between
    prefix and suffix): greedy answers, finish reasons and log-probs are those of the plain left-padded path."""
    h = make_tiny(tokenizer, arch=arch, head_dim=16)
    prompts = [*_few_shot_prompts(), *PROMPTS]
    h.batch_size = 4  # six prompts share a prefix: two batches of three, the other three plain
    rows = [h.tokenize(p, False) for p in prompts]
    batches, rest = h._shared_prefix_batches(rows)
    assert sorted(len(b) for b, _ in batches) == [3, 3] and sorted(rest) == [6, 7, 8]
    assert all(n >= h.MIN_SHARED_PREFIX and all(rows[b[0]][:n] == rows[i][:n] for i in b) for b, n in batches)
    shared = h.generate(prompts, max_new_tokens=10, chat_template=False, logprobs=True)
    h.share_prefixes = False
    assert h._shared_prefix_batches(rows) == ([], list(range(len(prompts))))
    plain = h.generate(prompts, max_new_tokens=10, chat_template=False, logprobs=True)
    assert [s[0].text for s in shared] == [s[0].text for s in plain]
    assert [s[0].finish_reason for s in shared] == [s[0].finish_reason for s in plain]
    for a, b in zip(shared, plain, strict=True):
        assert a[0].prompt_tokens == b[0].prompt_tokens
        assert torch.allclose(torch.tensor(a[0].token_logprobs), torch.tensor(b[0].token_logprobs), atol=1e-4)


def test_shared_prefix_is_off_for_sliding_window_layers(tokenizer):
    """Gemma 3 mixes sliding-window layers: its cache is not continued from a shared prefix."""
    h = make_tiny(tokenizer, arch="gemma3", head_dim=16)
    assert not h._prefix_cache_ok()
    rows = [h.tokenize(p, False) for p in _few_shot_prompts()]
    assert h._shared_prefix_batches(rows) == ([], list(range(len(rows))))
    assert len(h.generate(_few_shot_prompts()[:2], max_new_tokens=3, chat_template=False)) == 2


def test_short_or_unshared_prompts_stay_plain(tiny):
    rows = [tiny.tokenize(p, False) for p in PROMPTS + ["Hello there, how are you? Fine."]]
    batches, rest = tiny._shared_prefix_batches(rows)
    assert batches == [] and sorted(rest) == [0, 1, 2, 3]  # under 64 shared tokens: all plain
