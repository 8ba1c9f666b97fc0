"""The endpoint probe's pieces, capability overrides, and what follows from them (strict labels,
refusing samples that cannot vary). The real servers are probed in test_openai_server.py."""

from __future__ import annotations

import json
import math
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from tests.safety.fakes import ScriptedModel
from trustlab.errors import CapabilityError
from trustlab.models import load_model
from trustlab.models.base import Capabilities
from trustlab.models.labels import label_logprobs, parse_label
from trustlab.models.probe import context_from_models_entry, logprobs_problem
from trustlab.uncertainty import CLUE, LLMNLI, LexicalSimilarity, SampleSet, concept_uncertainty
from trustlab.uncertainty.baselines import check_samples_vary
from trustlab.uncertainty.nli import NLI_LABELS


def test_context_window_from_models_metadata():
    assert context_from_models_entry({"id": "m", "object": "model", "max_model_len": 32768}) == 32768  # vLLM
    assert context_from_models_entry({"id": "m", "meta": {"n_ctx": 4096, "n_ctx_train": 8192}}) == 4096
    assert context_from_models_entry({"id": "m", "meta": {"n_vocab": 49152, "n_ctx_train": 8192}}) is None
    assert context_from_models_entry({"id": "m", "owned_by": "me"}) is None  # llama-cpp-python, transformers serve
    assert context_from_models_entry({"id": "m", "max_model_len": True, "n_ctx": "2048"}) is None


def test_logprobs_are_checked_for_shape_and_range():
    good = {"message": {"content": "Hi"}, "logprobs": {"content": [{"token": "Hi", "logprob": -0.1}]}}
    assert logprobs_problem(good, chat=True) is None
    assert "no logprobs" in logprobs_problem({"message": {"content": "Hi"}}, chat=True)
    assert "empty" in logprobs_problem({"logprobs": {"content": []}}, chat=True)
    positive = {"logprobs": {"content": [{"token": "Hi", "logprob": 0.7}]}}
    assert "<= 0" in logprobs_problem(positive, chat=True)
    assert logprobs_problem({"text": "a b", "logprobs": {"tokens": ["a", " b"], "token_logprobs": [-1, -2]}},
                            chat=False) is None
    assert "different lengths" in logprobs_problem({"logprobs": {"tokens": ["a"], "token_logprobs": []}}, chat=False)


def test_parse_label_is_strict():
    assert parse_label("Entailment.", NLI_LABELS) == "entailment"
    assert parse_label("**contradiction** - the sky is not green", NLI_LABELS) == "contradiction"
    assert parse_label(" neutral", NLI_LABELS) == "neutral"
    for bad in ("The answer is neutral", "entailment, neutral or contradiction", "Entailments", "", "Syntactically",
                "neutral or contradiction", "42"):
        assert parse_label(bad, NLI_LABELS) is None, bad
    assert parse_label("No, it is not.", {"yes": ["yes"], "no": ["no"]}) == "no"
    assert parse_label("Yes. No.", {"yes": ["yes"], "no": ["no"]}) is None


@given(st.lists(st.sampled_from(["Entailment", "neutral", "CONTRADICTION", "the", "not", "**", ",", ".", "\n", "42"]),
                max_size=6))
def test_parse_label_gives_a_label_only_when_it_is_the_one_label_named_first(parts):
    text = " ".join(parts)
    words = [w.lower() for w in parts if w.isalpha()]
    named = {w for w in words if w in NLI_LABELS}
    expected = words[0] if words and words[0] in NLI_LABELS and named == {words[0]} else None
    assert parse_label(text, NLI_LABELS) == expected


def test_capabilities_carry_sampling_through_wrappers_and_refuse_greedy_backends():
    caps = Capabilities("openai", logprobs=True, chat_template=True, sampling=False, native_n=False, seed=None)
    wrapped = caps.text_only()
    assert (wrapped.sampling, wrapped.native_n, wrapped.seed, wrapped.logprobs) == (False, False, None, False)
    with pytest.raises(CapabilityError, match="CLUE needs samples that vary.*'openai'"):
        caps.require_sampling(method="CLUE")
    Capabilities("openai").require_sampling()  # unknown passes: the samples are checked instead


def test_openai_capabilities_can_be_given_instead_of_probed():
    dead = "openai:http://127.0.0.1:9/v1"  # nothing listens there: any request would fail
    m = load_model(dead, model_name="x", probe=False, capabilities={"logprobs": False}, max_context=512)
    caps = m.capabilities
    assert (caps.logprobs, caps.sampling, caps.max_context, m.calls) == (False, None, 512, 0)
    assert m.describe()["probe"] is None
    known = Capabilities("openai", chat_template=True, sampling=True, native_n=True)
    assert load_model(dead, model_name="x", capabilities=known).capabilities == known
    with pytest.raises(ValueError, match="unknown or fixed fields.*'samplng'"):
        load_model(dead, model_name="x", capabilities={"samplng": True})


def test_samples_that_cannot_vary_are_refused_unless_the_backend_samples():
    constant = [["Paris.", "Paris. "], ["4", "4"]]
    with pytest.raises(CapabilityError, match="lexical similarity: every prompt's 2 samples are identical"):
        check_samples_vary(constant, method="lexical similarity")
    with pytest.warns(RuntimeWarning, match="may really be this sure"):
        check_samples_vary(constant, method="x", sampling=True)
    check_samples_vary([["Paris.", "Paris."], ["4", "Four"]], method="x")  # one prompt varies: fine
    check_samples_vary([["Paris."], ["4"]], method="x")  # single samples cannot show anything
    items = [SampleSet(q, "Paris.", ["Paris.", "Paris."]) for q in ("q1", "q2")]
    with pytest.raises(CapabilityError, match="identical"):
        LexicalSimilarity()(items)
    with pytest.warns(RuntimeWarning):
        assert LexicalSimilarity(sampling=True)(items) == [0.0, 0.0]


def test_clue_refuses_a_greedy_backend_before_sampling():
    llm = ScriptedModel(lambda p: "Steve Jobs founded Apple.")
    llm.capabilities = Capabilities("scripted", chat_template=True, sampling=False)
    with pytest.raises(CapabilityError, match="CLUE needs samples that vary"):
        CLUE(llm, nli=LLMNLI(llm), n_samples=3).estimate("Who founded Apple?")
    assert llm.asked == []  # nothing was generated


def test_llm_nli_without_logprobs_uses_the_parsed_label_and_counts_the_rest():
    answers = {"sky": "Contradiction.", "paris": "entailment", "cat": "Neutral", "dog": "entailment or neutral",
               "tea": "The premise says"}
    llm = ScriptedModel(lambda p: next(v for k, v in answers.items() if k in p.lower()))  # no logprobs
    nli = LLMNLI(llm)
    scores = nli.entail([("The sky is blue.", "The sky is green."), ("Paris is in France.", "Paris is French."),
                         ("A cat.", "A pet."), ("A dog.", "A pet."), ("Tea.", "A drink.")])
    assert scores[0] == pytest.approx(0.0, abs=1e-5) and scores[1] == pytest.approx(1.0, abs=1e-5)
    assert scores[2] == pytest.approx(0.5) and math.isnan(scores[3]) and math.isnan(scores[4])
    assert (nli.validity.n_valid, nli.validity.n_invalid) == (3, 2)
    # judges that want the old behaviour still get a uniform distribution for an invalid answer
    (d,) = label_logprobs(llm, ["A dog."], NLI_LABELS)
    assert all(math.exp(v) == pytest.approx(1 / 3) for v in d.values())
    assert label_logprobs(llm, ["A dog."], NLI_LABELS, on_invalid="none") == [None]


def test_concept_uncertainty_leaves_unjudged_pairs_out():
    u = concept_uncertainty(np.array([[0.5, np.nan, 1.0], [np.nan, np.nan, 0.5]]))
    assert u[0] == pytest.approx(math.log(2)) and math.isnan(u[1]) and u[2] == pytest.approx(math.log(2) / 2)


class _OddServer(BaseHTTPRequestHandler):
    """An OpenAI-style server with the quirks no local server has: it refuses n > 1, answers every sample
    with one fixed text that is not the greedy one (a fixed server-side seed), and sends positive logprobs."""

    def log_message(self, *args):
        pass

    def _send(self, code: int, body: dict) -> None:
        data = json.dumps(body).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self):  # llama.cpp-style: /v1/models has meta without the runtime window, /props has it
        if self.path == "/props":
            return self._send(200, {"default_generation_settings": {"n_ctx": 1024}, "total_slots": 1})
        self._send(200, {"data": [{"id": "odd", "meta": {"n_ctx_train": 8192}}]})

    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        if body.get("n", 1) > 1:
            return self._send(400, {"error": "n > 1 is not supported"})
        text = "greedy" if body["temperature"] == 0 else "fixed"
        choice = {"message": {"content": text}, "finish_reason": "stop"}
        if body.get("logprobs"):
            choice["logprobs"] = {"content": [{"token": text, "logprob": 0.5}]}
        self._send(200, {"choices": [choice]})


def test_probe_on_a_server_that_refuses_n_and_sends_bad_logprobs():
    server = ThreadingHTTPServer(("127.0.0.1", 0), _OddServer)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        m = load_model(f"openai:http://127.0.0.1:{server.server_port}/v1", max_retries=0)
        caps = m.capabilities
        probe = m.describe()["probe"]
    finally:
        server.shutdown()
    assert (caps.native_n, caps.logprobs, caps.sampling, caps.seed, caps.max_context) == (False, False, None, None, 1024)
    assert m.model_name == "odd" and probe["requests"] == 8  # /models, /props, 5 generations, the refused n = 2
    assert any("refused n=2" in n for n in probe["notes"]) and any("undecided" in n for n in probe["notes"])
    assert any("<= 0" in n for n in probe["notes"])


def test_clue_refuses_when_llm_nli_judges_no_pair():
    """The other road to CLUE = ln 2 everywhere: NLI answers that are not labels once became p = 0.5."""

    class Enc:
        def encode(self, texts, **kw):
            return np.eye(8)[[hash(t) % 8 for t in texts]]

    judge = ScriptedModel(lambda p: "The premise says")  # what SmolLM2-135M answers the NLI prompt, measured
    clue = CLUE(judge, nli=LLMNLI(judge), embedder=Enc(), extractor=ScriptedModel(lambda p: "Apple, Steve Jobs"))
    with pytest.raises(CapabilityError, match="judged none of the"):
        clue.estimate_from_samples(["Steve Jobs founded Apple.", "Wozniak founded Apple in a garage."])


def test_llm_nli_refuses_after_a_pilot_with_no_label():
    pairs = [(f"Premise {i}.", f"Hypothesis {i}.") for i in range(5)]
    judge = ScriptedModel(lambda p: "The premise says")
    with pytest.raises(CapabilityError, match="none of the first 2 answers.*other 3 pairs were not sent"):
        LLMNLI(judge, pilot=2).entail(pairs)
    assert [len(a) for a in judge.asked] == [2]
    sure = ScriptedModel(lambda p: "Entailment" if "0" in p else "The premise says")
    nli = LLMNLI(sure, pilot=2)
    scores = nli.entail(pairs)
    assert scores[0] == pytest.approx(1.0, abs=1e-5) and all(math.isnan(s) for s in scores[1:])
    assert [len(a) for a in sure.asked] == [2, 3] and (nli.validity.n_valid, nli.validity.n_invalid) == (1, 4)
