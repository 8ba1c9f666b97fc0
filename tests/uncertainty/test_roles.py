"""CLUE roles: the model under test answers, the extractor and the LLM-as-NLI are separate handles, each
called only for its own step; an NLI answer that names no label is invalid (NaN, counted), never 0.5."""

from __future__ import annotations

import json
import math

from click.testing import CliRunner

from tests.conftest import make_tiny
from tests.safety.fakes import ScriptedModel, spy
from tests.uncertainty.test_clue import FakeEncoder
from trustlab.cli import main
from trustlab.uncertainty import CLUE, LLMNLI, load_nli
from trustlab.uncertainty.concepts import INSTRUCTION
from trustlab.uncertainty.fixtures import nli_sanity
from trustlab.uncertainty.nli import NLI_TEMPLATE

NLI_ASK = NLI_TEMPLATE.rsplit("\n", 1)[1]  # "Does the premise entail the hypothesis? ..."


def test_each_clue_role_is_called_only_for_its_own_step(tokenizer):
    """Model under test and NLI: two tiny random models (real code); extractor: scripted, so that every
    answer has concepts and the NLI step surely runs."""
    llm, nli_model = spy(make_tiny(tokenizer, seed=0)), spy(make_tiny(tokenizer, seed=1))
    llm.name, nli_model.name = "tiny-under-test", "tiny-nli"
    nli_model.share_prefixes = False  # NLI through ``forward``, which the spy sees (the shared-prefix path
    # runs the same handle's network directly: tests/uncertainty/test_clue_batching.py)
    extractor = spy(ScriptedModel(lambda p: "Paris, capital city", "scripted-extractor"))
    clue = CLUE(llm, nli=nli_model, extractor=extractor, embedder=FakeEncoder(), n_samples=2, max_new_tokens=4,
                extract_max_new_tokens=8, seed=0)
    assert clue.roles() == {"model": "tiny-under-test", "extractor": "scripted-extractor", "nli": "llm-nli:tiny-nli"}
    (report,) = clue.estimate_many(["What is the capital of France?"])
    assert llm.calls["generate"] == ["What is the capital of France?"] * 2 and not llm.calls["forward"]  # greedy, samples
    texts = [t for t in [report.answer, *report.samples] if t.strip()]
    assert extractor.calls["generate"] and all(p.startswith(INSTRUCTION) for p in extractor.calls["generate"])
    assert {p.rsplit("Text: ", 1)[1] for p in extractor.calls["generate"]} == {t.strip() for t in texts}
    asked = nli_model.calls["forward"]  # white-box LLM-as-NLI: label-token probabilities
    assert asked and all(p.endswith(NLI_ASK) for p in asked) and not nli_model.calls["generate"]
    assert all(math.isfinite(c.uncertainty) for c in report.concepts)


def test_load_nli_takes_another_model_handle(tiny):
    other = ScriptedModel(lambda p: "entailment", "other")
    nli = load_nli(other, tiny)
    assert isinstance(nli, LLMNLI) and nli.model is other and load_nli("llm", tiny).model is tiny


def test_a_malformed_nli_answer_is_invalid_not_one_half():
    nli = LLMNLI(ScriptedModel(lambda p: "Contradiction." if "green" in p else "I think it might be.", "nli"))
    scores = nli.entail([("The sky is blue.", "The sky is green."), ("The sky is blue.", "The sky has a colour.")])
    assert scores[0] < 1e-5 and math.isnan(scores[1])
    assert nli.validity.n_valid == 1 and nli.validity.reasons == {
        "answer is not one of entailment / neutral / contradiction": 1}
    sanity = nli_sanity(LLMNLI(ScriptedModel(lambda p: "Entailment." if len(p) % 2 else "hmm", "nli")))
    assert 0 < sanity["valid_rate"] < 1 and sanity["n_invalid"] == round((1 - sanity["valid_rate"]) * 40)
    assert sanity["scorer"] == "llm-nli:nli" and sanity["accuracy"] <= sanity["valid_rate"]  # unjudged = wrong


def test_uncertainty_role_options(tiny_dir, tmp_path, tokenizer):
    other = tmp_path / "other"
    make_tiny(tokenizer, seed=4).model.save_pretrained(other)
    tokenizer.save_pretrained(other)
    out = tmp_path / "run"
    base = ["uncertainty", "Who founded Apple?", "--model", str(tiny_dir), "--out", str(out), "--samples", "2",
            "--max-new-tokens", "4"]
    res = CliRunner().invoke(main, [*base, "--extractor-model", str(other), "--nli-model", str(other)])
    assert res.exit_code == 0, res.output
    config = json.loads((out / "config.json").read_text())
    assert config["extractor_model"]["name"] == config["nli_model"]["name"] == str(other)
    assert config["roles"] == {"model": str(tiny_dir), "extractor": str(other), "nli": f"llm-nli:{other}"}
    bad = CliRunner().invoke(main, [*base, "--nli-model", str(tmp_path / "no-such-model")])
    assert bad.exit_code == 2 and "Invalid value for --nli-model: the nli model: " in bad.output
    both = CliRunner().invoke(main, [*base, "--nli-model", str(other), "--nli", str(other)])
    assert both.exit_code == 2 and "--nli-model is the LLM-as-NLI's model: it applies with --nli llm" in both.output
