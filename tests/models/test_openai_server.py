"""The black-box backend against a real llama.cpp OpenAI-compatible server on 127.0.0.1."""

from __future__ import annotations

import time

import pytest

from tests.servers import LlamaServer
from trustlab.errors import EndpointError
from trustlab.models import load_model

pytestmark = [pytest.mark.server, pytest.mark.slow]

QUESTIONS = ["What is the capital of France?", "Name a primary colour.", "What is 2 + 2?",
             "Who wrote Romeo and Juliet?", "What colour is the sky on a clear day?", "Say hello in French."]


@pytest.fixture(scope="module")
def remote(llama_server):
    return load_model(f"openai:{llama_server.base_url}", model_name=llama_server.model_alias,
                      max_concurrency=4, timeout=60)


def test_lists_models_and_generates(remote, llama_server):
    assert llama_server.model_alias in remote.list_models()
    out = remote.generate(["What is the capital of France?"], max_new_tokens=24)
    # llama.cpp's Q4_1 x Q8 arithmetic answers this one differently from the HF path (see the last test)
    assert "capital" in out[0][0].text.lower() or "paris" in out[0][0].text.lower()
    assert out[0][0].prompt_tokens == 37  # same rendered prompt as the HF backend (default system prompt)


def test_completions_mode_without_template(remote):
    g = remote.generate(["The capital of France is"], chat_template=False, max_new_tokens=6)[0][0]
    assert g.text.strip() and g.finish_reason in ("stop", "length")


def test_n_samples_are_emulated_and_distinct(remote):
    out = remote.generate(["Write a short name for a cat."], n=4, temperature=1.0, seed=1, max_new_tokens=8)
    assert len(out[0]) == 4
    assert len({g.text for g in out[0]}) > 1  # llama.cpp ignores n; we sent distinct seeds


def test_logprobs(remote):
    g = remote.generate(["Say yes."], max_new_tokens=5, logprobs=True)[0][0]
    assert g.token_logprobs and len(g.token_logprobs) == len(g.tokens)
    assert all(lp <= 0 for lp in g.token_logprobs)
    assert "".join(g.tokens).strip() == g.text.strip()


def test_concurrent_requests_keep_order(remote):
    sequential = [remote.generate([q], max_new_tokens=12)[0][0].text for q in QUESTIONS]
    calls = remote.calls
    concurrent = [s[0].text for s in remote.generate(QUESTIONS, max_new_tokens=12)]
    assert concurrent == sequential  # greedy + same order, whatever the completion order
    assert remote.calls - calls == len(QUESTIONS)


def test_killed_server_gives_a_clear_error(tmp_path):
    server = LlamaServer(log_dir=tmp_path)
    server.start()
    try:
        m = load_model(f"openai:{server.base_url}", model_name="smollm2", max_retries=2, backoff=0.1, timeout=60)
        assert m.generate(["Hi"], max_new_tokens=2)[0][0].text is not None
    finally:
        server.stop()
    t0 = time.monotonic()
    with pytest.raises(EndpointError, match="after 3 attempts"):
        m.generate(["Hi"], max_new_tokens=2)
    assert time.monotonic() - t0 < 15


def test_same_greedy_answers_as_the_hf_backend(llama_server, smollm):
    """Both backends run the same GGUF weights with the same rendered prompt, but llama.cpp multiplies
    Q4_1 weights with activations quantised to 8 bits while transformers dequantises to float32, so
    logits differ slightly and greedy paths part at near-ties: on these six questions only one or two
    answers agree word for word (measured), and at every first point of difference the HF model was
    nearly indifferent between the two tokens (gaps of 0.06-0.18 nats measured). We require a gap
    < 0.5 nats at every divergence, i.e. the backends differ only where the model is on a knife edge. llama.cpp's default repeat penalty
    (1.1) is switched off: with it, temperature 0 is not plain greedy decoding."""
    import torch

    remote = load_model(f"openai:{llama_server.base_url}", model_name="smollm2",
                        extra_body={"repeat_penalty": 1.0})
    hf = smollm.generate(QUESTIONS, max_new_tokens=16, logprobs=True)
    srv = remote.generate(QUESTIONS, max_new_tokens=16)
    same, gaps = 0, []
    for q, h, s in zip(QUESTIONS, hf, srv):
        h, s = h[0], s[0]
        if h.text.strip() == s.text.strip():
            same += 1
            continue
        s_ids = smollm.tokenizer(s.text, add_special_tokens=False)["input_ids"]
        k = next((i for i, (a, b) in enumerate(zip(h.token_ids, s_ids)) if a != b), min(len(h.token_ids), len(s_ids)))
        if k >= min(len(h.token_ids), len(s_ids)):
            continue  # one answer is a prefix of the other (length or stop differences only)
        ids = torch.tensor([smollm.tokenize(q) + h.token_ids[:k]])
        with torch.no_grad():
            logp = torch.log_softmax(smollm.model(ids).logits[0, -1], -1)
        gaps.append(float(logp[h.token_ids[k]] - logp[s_ids[k]]))
    assert all(g < 0.5 for g in gaps), gaps
    assert same + len(gaps) >= 1


def test_prompt_longer_than_the_server_context_is_refused_clearly(remote):
    from trustlab.errors import ContextLengthError

    with pytest.raises(ContextLengthError, match="too long for its context window"):
        remote.generate(["word " * 3000], max_new_tokens=4)
