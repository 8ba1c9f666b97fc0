"""Shared fixtures: offline hub settings, the embedded model, tiny random models, a real llama.cpp server."""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TRUSTLAB_NO_PROGRESS", "1")
# The default test tier compares numbers exactly (eager vs sdpa, cache vs GGUF, parity with peers): float32.
# The dtype policy itself (bfloat16 on CPUs that run it fast) is tested in tests/models/test_policy.py.
os.environ.setdefault("TRUSTLAB_DTYPE", "float32")

import pytest  # noqa: E402

from tests.servers import LlamaServer  # noqa: E402


@pytest.fixture(scope="session")
def smollm_dir():
    """The dequantised SmolLM2 cache folder (converted once per machine, ~15 s the first time)."""
    from trustlab.models.embedded import smollm2_dir

    return smollm2_dir()


@pytest.fixture(scope="session")
def tokenizer(smollm_dir):
    """SmolLM2's real tokenizer (with its chat template), shared by the tiny random models."""
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(smollm_dir)


@pytest.fixture(scope="session")
def smollm(smollm_dir):
    """The embedded SmolLM2-135M-Instruct handle (eager attention)."""
    from trustlab.models import load_model

    return load_model("embedded")


def make_tiny(tokenizer, arch: str = "llama", attn: str = "eager", seed: int = 0, **overrides):
    """A tiny random-weight causal LM (2 layers, hidden 64) over the SmolLM2 vocabulary, as a handle."""
    import torch
    from transformers import AutoModelForCausalLM, Gemma3TextConfig, LlamaConfig, Qwen2Config

    torch.manual_seed(seed)
    common = dict(vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                  num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512,
                  bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                  pad_token_id=tokenizer.pad_token_id, tie_word_embeddings=True)
    common.update(overrides)
    config = {"llama": LlamaConfig, "qwen2": Qwen2Config, "gemma3": Gemma3TextConfig}[arch](**common)
    config._attn_implementation = attn
    model = AutoModelForCausalLM.from_config(config, attn_implementation=attn).eval()
    from trustlab.models import load_model

    return load_model(model, tokenizer=tokenizer)


@pytest.fixture
def tiny(tokenizer):
    return make_tiny(tokenizer)


@pytest.fixture
def tiny_dir(tiny, tmp_path):
    """The tiny random model saved as a local folder, for commands that take --model PATH."""
    path = tmp_path / "tiny"
    tiny.model.save_pretrained(path)
    tiny.tokenizer.save_pretrained(path)
    return path


@pytest.fixture(scope="session")
def llama_server(tmp_path_factory):
    """A real llama.cpp OpenAI-compatible server on 127.0.0.1 serving the embedded SmolLM2 GGUF."""
    server = LlamaServer(log_dir=tmp_path_factory.mktemp("llama-server"))
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def transformers_server(tmp_path_factory, smollm_dir):
    """A real `transformers serve --continuous-batching` on 127.0.0.1 serving the embedded SmolLM2's
    dequantised folder, offline."""
    from tests.servers import TransformersServer

    server = TransformersServer(log_dir=tmp_path_factory.mktemp("transformers-serve"))
    server.start(timeout=180)
    yield server
    server.stop()


def embedded_or_skip(key: str):
    """The embedded model ``key`` if ``install.sh models`` installed it, else skip (CI never downloads it)."""
    from trustlab.models.embedded import embedded_lm

    lm = embedded_lm(key)
    if not lm.installed:
        pytest.skip(f"embedded:{key} is not installed (bash scripts/install.sh models)")
    return lm
