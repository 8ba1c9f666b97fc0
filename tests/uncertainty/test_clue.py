"""CLUE on a scripted extractor and a mock NLI: the formula, pooling, bad extractions, post-hoc mode."""

from __future__ import annotations

import itertools
import json
import math

import numpy as np
import pytest

from tests.safety.fakes import ScriptedModel
from trustlab.uncertainty import CLUE, concept_uncertainty, pool_concepts

SAMPLES = [
    "Steve Jobs founded Apple in 1976.",
    "Apple was founded by Steve Jobs in 1976.",
    "Steve Jobs started Apple in 1980.",
    "Apple's founder is Steve Jobs, in 1984.",
    "Steve Jobs created Apple in 1990.",
]
CANON = {"steve jobs": 0, "jobs": 0, "founder steve jobs": 0, "1976": 1, "the year 1976": 1, "apple": 2}


class FakeEncoder:
    """One-hot embeddings by canonical concept: paraphrases listed in CANON share a vector."""

    def encode(self, texts, normalize_embeddings=True, convert_to_numpy=True):
        out = np.zeros((len(texts), 16))
        for i, t in enumerate(texts):
            out[i, CANON.get(t.lower(), 3 + hash(t.lower()) % 13)] = 1.0
        return out


class MockNLI:
    """s = 0.9 when the concept's key word is in the premise, else 0.2."""

    name = "mock"

    def __init__(self):
        self.calls = 0

    def entail(self, pairs):
        self.calls += len(pairs)
        return [0.9 if h.removeprefix("This example is ").rstrip(".").split()[-1].lower() in p.lower() else 0.2
                for p, h in pairs]


def extractor_script(prompt: str) -> str:
    text = prompt.rsplit("Text: ", 1)[1]
    if "garbage" in text:
        return "]]]"
    if "1976" in text:
        return "Steve Jobs, the year 1976"
    return "1. Jobs\n2. Apple."


def make_clue(**kw):
    return CLUE(ScriptedModel(lambda p: "unused"), nli=MockNLI(), embedder=FakeEncoder(),
                extractor=ScriptedModel(extractor_script), **kw)


def test_uncertainty_matches_the_formula():
    report = make_clue().estimate_from_samples(SAMPLES)
    u = {c.concept: c.uncertainty for c in report.concepts}
    assert u["Steve Jobs"] == pytest.approx(-math.log(0.9), abs=1e-9)
    assert u["the year 1976"] == pytest.approx(-(2 * math.log(0.9) + 3 * math.log(0.2)) / 5, abs=1e-9)
    assert u["Apple"] == pytest.approx(-math.log(0.9), abs=1e-9)
    assert report.concepts[0].concept == "the year 1976"  # most uncertain first
    assert report.score == pytest.approx(max(u.values()))  # no answer: max over all concepts


def test_pooling_merges_paraphrases_and_keeps_distinct_concepts():
    report = make_clue().estimate_from_samples(SAMPLES)
    by = {c.concept: c for c in report.concepts}
    assert set(by) == {"Steve Jobs", "the year 1976", "Apple"}  # "Jobs" merged into "Steve Jobs"
    assert by["Steve Jobs"].aliases == ["Steve Jobs", "Jobs"]
    assert by["Steve Jobs"].sources == [0, 1, 2, 3, 4]
    assert by["the year 1976"].sources == [0, 1]
    assert pool_concepts(["a", "b", "a2"], None, same=lambda i, j: {i, j} == {0, 2}) == [0, 1, 0]


def test_answer_score_uses_only_the_answer_concepts():
    report = make_clue(agg="max").estimate_from_samples(SAMPLES, answer="Steve Jobs founded Apple.")
    assert set(report.answer_concepts) == {"Jobs", "Apple"}  # the answer is seen first: its wording represents
    assert report.score == pytest.approx(-math.log(0.9))
    mean = make_clue(agg="mean").estimate_from_samples(SAMPLES, answer="Steve Jobs founded Apple in 1976.")
    assert mean.score == pytest.approx(np.mean([-math.log(0.9), -(2 * math.log(0.9) + 3 * math.log(0.2)) / 5]))


def test_bad_extractions_are_counted_not_fatal():
    report = make_clue().estimate_from_samples(["garbage", *SAMPLES[:2]], answer="garbage")
    assert (report.bad_extractions, report.n_extractions) == (2, 4)
    assert report.answer_concepts == [] and math.isfinite(report.score)
    empty = make_clue().estimate_from_samples(["garbage"])
    assert empty.concepts == [] and math.isnan(empty.score)


def test_concepts_copied_from_the_one_shot_example_are_dropped_and_counted():
    def echoing(prompt: str) -> str:
        text = prompt.rsplit("Text: ", 1)[1]
        if "1976" in text:
            return "origins, Steve Jobs, legendary athletes"  # two copies, one real concept
        if "modern era" in text:
            return "modern era, Apple"  # "modern era" really occurs in this text: kept
        return "evolution, global popularity, NBA"  # only copies: a bad extraction

    clue = CLUE(ScriptedModel(lambda p: "unused"), nli=MockNLI(), embedder=FakeEncoder(),
                extractor=ScriptedModel(echoing))
    texts = ["Steve Jobs founded Apple in 1976.", "In the modern era Apple is huge.", "Jobs started Apple."]
    report = clue.estimate_from_samples(texts)
    assert {a for c in report.concepts for a in c.aliases} == {"Steve Jobs", "modern era", "Apple"}
    assert sorted(report.echoed_concepts) == ["NBA", "evolution", "global popularity", "legendary athletes", "origins"]
    assert (report.bad_extractions, report.n_extractions) == (1, 3)
    assert report.valid_rate == pytest.approx(2 / 3) and report.to_dict()["valid_rate"] == pytest.approx(2 / 3)
    only_copies = clue.estimate_from_samples(["Jobs started Apple."])
    assert only_copies.concepts == [] and only_copies.bad_extractions == 1 and math.isnan(only_copies.score)


def test_estimate_samples_from_the_llm_in_one_batch():
    answers = itertools.cycle(SAMPLES)  # samples that vary: CLUE refuses constant ones
    llm = ScriptedModel(lambda p: next(answers))
    clue = CLUE(llm, nli=MockNLI(), embedder=FakeEncoder(), extractor=ScriptedModel(extractor_script), n_samples=3)
    reports = clue.estimate_many(["Who founded Apple?", "Who started Apple?"])
    assert len(reports) == 2 and len(reports[0].samples) == 3
    assert len(llm.asked) == 2  # one greedy call + one sampling call for both prompts


def test_post_hoc_jsonl(tmp_path):
    path = tmp_path / "gens.jsonl"
    rows = [{"prompt": "q", "samples": [{"text": s} for s in SAMPLES], "answer": {"text": SAMPLES[0]}},
            {"prompt": "q2", "samples": SAMPLES[:2], "answer": None}]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    reports = make_clue().estimate_from_jsonl(str(path))
    assert [r.prompt for r in reports] == ["q", "q2"] and reports[1].answer is None
    path.write_text(json.dumps({"prompt": "q", "samples": []}) + "\n")
    with pytest.raises(ValueError, match="non-empty 'samples'"):
        make_clue().estimate_from_jsonl(str(path))


def test_nli_tie_breaker_merges_inside_the_band():
    class Near(FakeEncoder):
        def encode(self, texts, **kw):
            v = np.array([[1.0, 0.0] if t == "Steve Jobs" else [0.8, 0.6] for t in texts])
            return v

    class SaysSame:
        name = "same"

        def entail(self, pairs):
            return [0.9] * len(pairs)

    ids = CLUE(ScriptedModel(str), nli=SaysSame(), embedder=Near(), tie_band=(0.7, 0.85))._both_ways_many(
        [["Steve Jobs", "Jobs"]], [Near().encode(["Steve Jobs", "Jobs"])])[0]
    assert ids(0, 1) is True
    assert pool_concepts(["Steve Jobs", "Jobs"], Near().encode(["Steve Jobs", "Jobs"])) == [0, 1]


def test_concept_uncertainty_clips_zero():
    assert concept_uncertainty(np.array([[0.0], [1.0]]))[0] == pytest.approx(-math.log(1e-6) / 2)
