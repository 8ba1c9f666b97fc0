"""Semantic entropy with NLI clusters (the sequence-level peer of CLUE on the same NLI back-end)."""

from __future__ import annotations

import math

import pytest

from trustlab.errors import CapabilityError
from trustlab.uncertainty import LLMNLI, SampleSet, SemanticEntropy, entailment_clusters


class TableNLI:
    """A scripted entailment table (tests the clustering and batching, not NLI itself)."""

    def __init__(self, table: dict[tuple[str, str], float]):
        self.table, self.calls = table, []

    def entail(self, pairs):
        self.calls.append(list(pairs))
        return [self.table.get(p, 0.0) for p in pairs]


@pytest.mark.parametrize(("texts", "table", "want"), [
    (["a", "a ", "a"], {}, [0, 0, 0]),                                     # identical texts always join
    (["a", "b"], {("a", "b"): 0.9, ("b", "a"): 0.9}, [0, 0]),              # both directions: one meaning
    (["a", "b"], {("a", "b"): 0.9, ("b", "a"): 0.4}, [0, 1]),              # one direction only: two
    (["a", "b"], {("a", "b"): math.nan, ("b", "a"): 0.9}, [0, 1]),         # unjudged: never merged
    (["a", "b", "c"], {("b", "c"): 0.9, ("c", "b"): 0.9}, [0, 1, 1]),      # joins the later cluster
    (["a", "b", "c"], {(x, y): 0.9 for x in "abc" for y in "abc"}, [0, 0, 0]),
])
def test_entailment_clusters_table(texts, table, want):
    assert entailment_clusters(texts, table) == want


def test_semantic_entropy_values_and_one_batched_call():
    eq = {("Paris", "It is Paris."): 0.8, ("It is Paris.", "Paris"): 0.7}
    nli = TableNLI(eq)
    items = [SampleSet("q1", "Paris", ["Paris", "It is Paris.", "Lyon", "Paris"]),
             SampleSet("q2", "4", ["4", "5", "6"])]
    got = SemanticEntropy(nli)(items)
    assert got[0] == pytest.approx(-(0.75 * math.log(0.75) + 0.25 * math.log(0.25)))
    assert got[1] == pytest.approx(math.log(3))
    assert len(nli.calls) == 1  # every item's pairs in one call
    sent = nli.calls[0]
    assert len(sent) == len(set(sent)) == 3 * 2 + 3 * 2  # ordered pairs of distinct samples, no (x, x)
    assert all(a != b for a, b in sent)


def test_semantic_entropy_refuses_samples_that_cannot_vary():
    with pytest.raises(CapabilityError, match="identical"):
        SemanticEntropy(TableNLI({}))([SampleSet("q", "a", ["a", "a"]), SampleSet("q", "b", ["b", "b"])])


def test_semantic_entropy_on_a_real_llm_nli_is_batch_invariant(tiny):
    items = [SampleSet("q1", "x", ["Paris is the capital of France.", "The capital of France is Paris.",
                                    "Lyon is the capital of France."]),
             SampleSet("q2", "y", ["Water boils at 100 degrees.", "Water freezes at 0 degrees."])]
    together = SemanticEntropy(LLMNLI(tiny))(items)
    alone = [SemanticEntropy(LLMNLI(tiny))([it])[0] for it in items]
    assert together == pytest.approx(alone)
    for v, it in zip(together, items, strict=True):
        assert 0.0 <= v <= math.log(len(it.samples)) + 1e-9
