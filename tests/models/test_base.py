"""The backend-independent pieces of the handle: prompts, configs, stop strings, capabilities."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from trustlab.errors import CapabilityError
from trustlab.models.base import (
    Capabilities,
    GenerationConfig,
    as_messages,
    check_prompts,
    plain_text,
    strip_at_stop,
)


@given(st.text(), st.lists(st.text(min_size=1, max_size=4), max_size=3))
def test_strip_at_stop_properties(text, stops):
    cut, hit = strip_at_stop(text, stops)
    assert text.startswith(cut)
    assert hit == any(s in text for s in stops)
    assert not any(s in cut for s in stops)  # nothing past the earliest stop survives


def test_prompt_forms():
    assert check_prompts("hi") == ["hi"]
    msgs = [{"role": "user", "content": "hi"}]
    assert check_prompts(msgs) == [msgs]
    assert check_prompts(["a", msgs]) == ["a", msgs]
    assert as_messages("x") == [{"role": "user", "content": "x"}]
    assert plain_text([{"role": "system", "content": "s"}, {"role": "user", "content": "u"}]) == "s\n\nu"


def test_config_overrides_and_validation():
    cfg = GenerationConfig().updated(temperature=0.5, stop="\n", n=None)
    assert cfg.stop == ("\n",) and cfg.temperature == 0.5 and cfg.n == 1 and not cfg.greedy
    for bad in ({"temperature": -1}, {"max_new_tokens": 0}, {"truncation": "middle"}):
        with pytest.raises(ValueError):
            GenerationConfig(**bad)


def test_capability_errors_name_the_method_and_backend():
    caps = Capabilities("openai", logprobs=True)
    caps.require("logprobs")
    with pytest.raises(CapabilityError, match="attention steering needs attentions, gradients.*'openai' backend"):
        caps.require("attentions", "gradients", method="attention steering")


def test_sampling_capabilities_default_to_unknown_and_hold_for_the_hf_backend(tiny):
    assert (Capabilities("x").sampling, Capabilities("x").native_n, Capabilities("x").seed) == (None, None, None)
    caps = tiny.capabilities
    assert (caps.sampling, caps.native_n, caps.seed) == (True, True, True)
    first = [g.text for g in tiny.generate(["Hi"], n=3, temperature=1.0, seed=0, max_new_tokens=6)[0]]
    again = [g.text for g in tiny.generate(["Hi"], n=3, temperature=1.0, seed=0, max_new_tokens=6)[0]]
    assert len(set(first)) > 1 and first == again  # samples vary; the same seed repeats them
