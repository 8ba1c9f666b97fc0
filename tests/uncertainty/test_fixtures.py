"""The shipped CLUE fixtures: sizes, balance, the correctness rule and the NLI sanity check."""

from __future__ import annotations

from trustlab.uncertainty.fixtures import is_correct, nli_pairs, nli_sanity, qa_items


def test_fixture_sizes_and_balance():
    qa = qa_items()
    assert len(qa) == 60 and len({q["id"] for q in qa}) == 60 and all(q["gold"] for q in qa)
    pairs = nli_pairs()
    assert len(pairs) == 40 and sum(p["label"] == "entailment" for p in pairs) == 20


def test_correctness_is_a_whole_word_match():
    assert is_correct("The chemical symbol for gold is Au.", ["au"])
    assert not is_correct("It is used because it shines.", ["au"])
    assert is_correct("Gabriel García Márquez wrote it.", ["garcía márquez"])
    assert not is_correct("It ended in 19450.", ["1945"])


def test_nli_sanity_scores_a_perfect_and_a_constant_scorer():
    gold = {(p["premise"], p["hypothesis"]): p["label"] == "entailment" for p in nli_pairs()}

    class Oracle:
        def entail(self, pairs):
            return [0.9 if gold[p] else 0.1 for p in pairs]

    class Constant:
        def entail(self, pairs):
            return [0.7] * len(pairs)

    assert nli_sanity(Oracle())["accuracy"] == 1.0 and not nli_sanity(Oracle())["bottleneck"]
    assert nli_sanity(Constant())["accuracy"] == 0.5 and nli_sanity(Constant())["bottleneck"]
