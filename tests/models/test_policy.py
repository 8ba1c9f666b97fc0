"""The dtype and thread policy of in-process models."""

from __future__ import annotations

import pytest
import torch

from trustlab.errors import ModelSpecError
from trustlab.models import policy


def test_explicit_dtype_always_wins(monkeypatch):
    monkeypatch.setenv("TRUSTLAB_DTYPE", "bfloat16")
    assert policy.resolve_dtype("float32") == "float32"
    assert policy.resolve_dtype(torch.float16) == "float16"
    assert policy.resolve_dtype(None) == "bfloat16"  # the environment beats the automatic choice
    assert policy.resolve_dtype("bf16") == "bfloat16"


def test_auto_follows_the_hardware(monkeypatch):
    monkeypatch.delenv("TRUSTLAB_DTYPE", raising=False)
    monkeypatch.setattr(policy, "cpu_flags", lambda: frozenset({"avx512f", "avx512_bf16", "amx_bf16"}))
    assert policy.resolve_dtype(None, "cpu") == "bfloat16"
    assert policy.resolve_dtype("auto", "cpu", purpose="training") == "float32"
    monkeypatch.setattr(policy, "cpu_flags", lambda: frozenset({"avx2", "fma"}))
    assert policy.resolve_dtype(None, "cpu") == "float32"  # emulated bf16 is slower than fp32


def test_this_machine_reports_its_flags():
    flags = policy.cpu_flags()
    assert policy.fast_bf16("cpu") == bool({"avx512_bf16", "amx_bf16"} & flags)


def test_unknown_dtype_is_a_clear_error():
    with pytest.raises(ModelSpecError, match="unknown dtype 'float8'; use one of: auto, float32"):
        policy.resolve_dtype("float8")


def test_threads(monkeypatch):
    before = torch.get_num_threads()
    try:
        assert policy.apply_threads(1) == 1 == torch.get_num_threads()
        monkeypatch.setenv("TRUSTLAB_THREADS", "2")
        assert policy.apply_threads() == 2
        with pytest.raises(ModelSpecError, match="threads must be >= 1"):
            policy.apply_threads(-1)
    finally:
        torch.set_num_threads(before)


@pytest.mark.slow
def test_the_handle_records_dtype_and_threads_and_the_run_hash_ignores_threads(smollm_dir):
    """A bf16 load through the policy answers, and describe() (every run's config) says how it ran."""
    from trustlab.models import load_model
    from trustlab.report.run import config_hash

    before = torch.get_num_threads()
    try:
        bf16 = load_model("embedded", dtype="bfloat16", threads=1)
        d = bf16.describe()
    finally:
        torch.set_num_threads(before)
    assert d["dtype"] == "bfloat16" and d["threads"] == 1 and d["attn_implementation"] == "eager"
    assert next(bf16.model.parameters()).dtype == torch.bfloat16
    assert "Paris" in bf16.complete("What is the capital of France?", max_new_tokens=12)
    assert config_hash({"model": {**d, "threads": 1}}) == config_hash({"model": {**d, "threads": 2}})
    assert config_hash({"model": d}) != config_hash({"model": {**d, "dtype": "float32"}})
