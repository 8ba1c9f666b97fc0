"""The defense batches every step across the requests of one call: a fixed number of model calls per
batch, whatever its size, and the same traces as running the requests one at a time (embedded SmolLM2 as
the target, greedy). With SmolLM2 as its own backtranslator every answer of these requests stops at "no
inferred request"; a scripted backtranslator and explain judge take the others through every later step
(filter, O', its refusal check)."""

from __future__ import annotations

from collections import Counter

import pytest

from tests.safety.fakes import ScriptedModel
from trustlab.safety import BacktranslationDefense

pytestmark = pytest.mark.slow

PROMPTS = ["Give one tip for sleeping well.", "Explain how to pick a lock.", "Write a haiku about rain.",
           "What is the capital of Japan?", "Name three fruits."]


def backtranslator_script(prompt: str) -> str:
    """Names a request built from the response's first word, says a response explains it when its length
    is even, and gives no request for a response that starts with "I"."""
    response = prompt.split('Response: "')[-1]
    if prompt.startswith("Request:"):  # the explain judge
        return "yes" if len(prompt) % 2 == 0 else "no"
    first = response.split()[0].strip('".,!?') if response.split() else ""
    return "Request: [[I have no idea]]" if first == "I" else f"Request: [[Please tell me about {first or 'it'}.]]"


def count_calls(monkeypatch, handle) -> Counter:
    """Count ``generate`` and ``loglikelihood`` calls on ``handle`` (restored after the test)."""
    calls: Counter = Counter()
    for name in ("generate", "loglikelihood"):
        inner = getattr(handle, name)

        def call(*args, _inner=inner, _name=name, **kwargs):
            calls[_name] += 1
            return _inner(*args, **kwargs)

        monkeypatch.setattr(handle, name, call)
    return calls


def defense(model, scripted: bool) -> BacktranslationDefense:
    if scripted:
        return BacktranslationDefense(model, ScriptedModel(backtranslator_script, "bt"), explain_scorer="judge",
                                      gamma=-1.0, inferred_max_new_tokens=12)
    return BacktranslationDefense(model, backtranslate_max_new_tokens=24, inferred_max_new_tokens=12)


@pytest.mark.parametrize("scripted", [False, True])
def test_one_call_per_step_for_the_whole_batch(monkeypatch, smollm, scripted):
    calls = count_calls(monkeypatch, smollm)
    d = defense(smollm, scripted)
    traces = d.trace(PROMPTS, max_new_tokens=16, full=True)
    # target: O for all, O' for those with a request; backtranslator: S' for all, the filter for those with one
    assert calls["generate"] <= (2 if scripted else 3) and calls["loglikelihood"] <= 1
    if scripted:
        assert len(d.backtranslator.asked) == 2
        assert {t.decision for t in traces} >= {"filtered_unexplained"}
        assert any(t.inferred_response is not None for t in traces)
    assert sum(calls.values()) + (len(d.backtranslator.asked) if scripted else 0) < sum(t.calls for t in traces)


@pytest.mark.parametrize("scripted", [False, True])
def test_batched_traces_equal_one_request_at_a_time(smollm, scripted):
    batched = defense(smollm, scripted).trace(PROMPTS, max_new_tokens=16, full=True)
    fields = ("response", "initial_refusal", "backtranslation", "inferred_request", "invalid_request",
              "inferred_response", "inferred_refusal", "invalid_judgments", "decision", "refused", "output", "calls")
    for prompt, t in zip(PROMPTS, batched, strict=True):
        (alone,) = defense(smollm, scripted).trace([prompt], max_new_tokens=16, full=True)
        assert [getattr(t, f) for f in fields] == [getattr(alone, f) for f in fields], prompt
        assert (t.likelihood is None) == (alone.likelihood is None)
        assert t.likelihood is None or t.likelihood == pytest.approx(alone.likelihood, abs=1e-4)
    assert len({t.decision for t in batched}) >= (2 if scripted else 1)
