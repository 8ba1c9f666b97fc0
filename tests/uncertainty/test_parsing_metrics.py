"""Concept parser (table + property tests), UE metrics against scikit-learn, baselines on known inputs."""

from __future__ import annotations

import json

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from trustlab.uncertainty import (
    LexicalSimilarity,
    PredictiveEntropy,
    SampleSet,
    SelfCheckNLI,
    parse_concepts,
    prr,
    roc_auc,
    rouge_l,
)
from trustlab.uncertainty.baselines import EmbeddingSemanticEntropy
from trustlab.uncertainty.concepts import EXAMPLE_CONCEPTS, example_copies


@pytest.mark.parametrize(("text", "want"), [
    ("Concepts: origins, evolution, modern era.", ["origins", "evolution", "modern era"]),
    ("1. Paris\n2. capital city.\n3) France", ["Paris", "capital city", "France"]),
    ("1. Paris. 2. Capital", ["Paris", "Capital"]),
    ("- Eiffel Tower\n* Louvre\n\nI hope this helps!", ["Eiffel Tower", "Louvre"]),
    ('["origins", "evolution"]', ["origins", "evolution"]),
    ('Sure: {"concepts": ["a", "b"]}', ["a", "b"]),
    ('["origins", "evolution", "moder', ["origins", "evolution"]),
    ("Paris, paris, PARIS", ["Paris"]),
    ("", []),
    ("   ,,, ;; ", []),
])
def test_parse_table(text, want):
    assert parse_concepts(text) == want


@given(st.lists(st.text(alphabet=st.characters(whitelist_categories=("L", "N"), max_codepoint=0x24F),
                        min_size=1, max_size=12), min_size=1, max_size=8))
def test_json_round_trip(concepts):
    want: list[str] = []
    for c in concepts:  # first-seen, case-insensitive
        if c.lower() not in {w.lower() for w in want}:
            want.append(c)
    assert parse_concepts(json.dumps(concepts)) == want[:12]


@given(st.text(max_size=300))
@settings(max_examples=300)
def test_parser_never_raises_and_yields_clean_unique_items(text):
    out = parse_concepts(text)
    assert len(out) <= 12
    assert len({c.lower() for c in out}) == len(out)
    assert all(c == c.strip() and c and "\n" not in c and len(c) <= 80 for c in out)


@pytest.mark.parametrize(("concepts", "text", "want"), [
    (["origins", "Modern Era.", "art form"], "Tokyo is the capital of Japan.", [True, True, True]),
    (["Michael Jordan", "NBA", "indoor game"], "Paris is in France.", [True, True, True]),  # example-text phrases
    (["modern era", "Tokyo", "capital city"], "In the modern era Tokyo is the capital.", [False, False, False]),
    (["NBA"], "The NBA was founded in 1946.", [False]),
    (["evolution of rules"], "Rules change.", [False]),  # not an example concept nor an example phrase
])
def test_example_copies_table(concepts, text, want):
    assert example_copies(concepts, text) == want


@given(st.sampled_from(EXAMPLE_CONCEPTS), st.sampled_from(["", ".", "!", " ", "\""]), st.booleans(),
       st.text(alphabet="xyz ", max_size=30))
def test_an_example_concept_is_a_copy_unless_the_text_has_it(concept, punct, upper, filler):
    c = (concept.upper() if upper else concept) + punct
    assert example_copies([c], f"Tokyo {filler}") == [True]
    assert example_copies([c], f"{filler} {concept} here.") == [False]


@given(st.lists(st.text(alphabet=st.characters(whitelist_categories=("L",), max_codepoint=0x24F), min_size=1,
                        max_size=10), min_size=1, max_size=8))
def test_words_of_the_text_itself_are_never_copies(ws):
    assert example_copies(ws, " ".join(ws)) == [False] * len(ws)


@given(st.lists(st.floats(0, 1, allow_nan=False), min_size=4, max_size=40), st.randoms())
@settings(deadline=None)
def test_roc_auc_matches_sklearn(scores, rnd):
    from sklearn.metrics import roc_auc_score

    labels = [rnd.randint(0, 1) for _ in scores]
    if len(set(labels)) < 2:
        assert np.isnan(roc_auc(scores, labels))
    else:
        assert roc_auc(scores, labels) == pytest.approx(roc_auc_score(labels, scores))


def test_prr_oracle_random_and_reversed():
    q = np.array([1, 1, 0, 1, 0, 0, 1, 0])
    assert prr(1 - q, q) == pytest.approx(1.0)
    assert prr(q, q) < 0
    rng = np.random.default_rng(0)
    assert abs(np.mean([prr(rng.random(8), q) for _ in range(2000)])) < 0.05


def test_sequence_baselines_on_known_inputs():
    items = [SampleSet("q", "the cat sat", ["the cat sat", "the cat sat"], sample_logprobs=[[-1.0, -1.0], [-3.0]]),
             SampleSet("q", "the cat sat", ["a dog ran", "the cat sat"])]
    assert LexicalSimilarity()(items) == pytest.approx([0.0, 0.5])
    assert PredictiveEntropy()(items)[0] == pytest.approx(2.5)
    assert np.isnan(PredictiveEntropy()(items)[1])
    assert rouge_l("the cat sat", "the cat sat down") == pytest.approx(2 * 1 * 0.75 / 1.75)

    class Half:
        def entail(self, pairs):
            return [0.25] * len(pairs)

    assert SelfCheckNLI(Half())(items) == pytest.approx([0.75, 0.75])

    class Enc:
        def encode(self, texts, **kw):
            return np.array([[1.0, 0.0] if "cat" in t else [0.0, 1.0] for t in texts])

    se = EmbeddingSemanticEntropy(Enc())(items)
    assert se == pytest.approx([0.0, np.log(2)])
