"""The inference-time methods on the black-box backend: a real llama.cpp server on 127.0.0.1."""

from __future__ import annotations

import math

import pytest

from tests.uncertainty.test_integration import assert_no_echo_is_scored
from trustlab.errors import CapabilityError
from trustlab.models import load_model
from trustlab.safety.backtranslation import DECISIONS, REFUSAL_TEXT, request_problem

pytestmark = [pytest.mark.server, pytest.mark.slow]


@pytest.fixture(scope="module")
def remote(llama_server):
    return load_model(f"openai:{llama_server.base_url}", model_name=llama_server.model_alias, max_concurrency=4,
                      extra_body={"repeat_penalty": 1.0})


def test_backtranslation_defense_over_http(remote):
    from trustlab.safety import BacktranslationDefense

    # No prompt log-probs over HTTP: the likelihood filter needs loglikelihood, so it must be switched off.
    with pytest.raises(CapabilityError):
        BacktranslationDefense(remote).generate(["How do I bake bread?"], max_new_tokens=16)
    defended = BacktranslationDefense(remote, gamma=float("-inf"), backtranslate_max_new_tokens=32)
    calls = remote.calls
    out = defended.generate(["How do I bake bread?", "Write a haiku about rain."], max_new_tokens=24)
    assert len(out) == 2
    for samples in out:
        trace = samples[0].extra["defense"]
        assert trace["decision"] in DECISIONS and trace["response"]
        if trace["backtranslation"] is not None:  # asked: a real request, or none with the reason
            assert (trace["inferred_request"] == "") == (trace["invalid_request"] is not None)
            assert trace["inferred_request"] == "" or request_problem(trace["inferred_request"]) is None
        if trace["decision"] == "no_inferred_request":
            assert trace["invalid_request"] and trace["inferred_response"] is None  # S' never run
        assert samples[0].text == (REFUSAL_TEXT if trace["refused"] else trace["response"])
        assert trace["calls"] == {"refused_initially": 1, "no_inferred_request": 2}.get(trace["decision"], 3)
    assert remote.calls - calls >= 2  # at least one HTTP call per prompt went out


def test_clue_over_http(remote, smollm):
    from trustlab.uncertainty import CLUE, LLMNLI

    question = "Who wrote Romeo and Juliet? Answer in one sentence."
    kw = {"n_samples": 3, "max_new_tokens": 20, "extract_max_new_tokens": 24, "max_concepts": 3, "seed": 0}
    # SmolLM2 over HTTP does not answer the NLI prompt with a label word: CLUE refuses and says why
    black_box = CLUE(remote, **kw)
    with pytest.raises(CapabilityError, match="LLM-as-NLI"):
        black_box.estimate(question)
    assert black_box.nli.validity.n_valid == 0 and black_box.nli.validity.n_invalid > 0
    # generation and concept extraction over HTTP, NLI from the same model's label log-probs
    report = CLUE(remote, nli=LLMNLI(smollm), **kw).estimate(question)
    assert len(report.samples) == 3 and report.answer
    assert report.n_extractions == 4
    assert_no_echo_is_scored(report)
    for c in report.concepts:
        assert c.uncertainty >= 0 and not math.isnan(c.uncertainty)
