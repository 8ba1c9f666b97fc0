"""CLUE's batched work: NLI pairs of one premise over one KV-cached prefix, pooling of all questions in one
embedding call and one entailment call, with the same numbers as the unshared, per-question path."""

from __future__ import annotations

import pytest

from tests.conftest import make_tiny
from tests.safety.fakes import ScriptedModel
from tests.uncertainty.test_clue import FakeEncoder, extractor_script
from trustlab.models.labels import label_logprobs
from trustlab.uncertainty import CLUE, LLMNLI
from trustlab.uncertainty.nli import NLI_LABELS, NLI_TEMPLATE, grouped_label_logprobs, shares_prefixes

PREMISES = ["Paris is the capital of France and home to the Eiffel Tower.",
            "Water boils at 100 degrees Celsius at sea level.",
            "Shakespeare wrote Hamlet."]
HYPOTHESES = ["This example is geography.", "This example is chemistry.", "This example is the Eiffel Tower.",
              "This example is a play by an English writer."]
ITEMS = [
    {"prompt": "q1", "answer": "Steve Jobs founded Apple in 1976.",
     "samples": ["Apple was founded by Steve Jobs in 1976.", "Steve Jobs started Apple in 1980."]},
    {"prompt": "q2", "answer": None, "samples": ["Jobs and Apple.", "Steve Jobs created Apple in 1976."]},
    {"prompt": "q3", "answer": "garbage", "samples": ["Apple's founder is Steve Jobs, in 1984.", "Jobs."]},
]


def nli_prompts() -> tuple[list[str], list[str]]:
    pairs = [(p, h) for p in PREMISES for h in HYPOTHESES] + [("A lone premise.", "This example is alone.")]
    return [NLI_TEMPLATE.format(premise=p, hypothesis=h) for p, h in pairs], [p for p, _ in pairs]


@pytest.mark.parametrize(("arch", "attn"), [("llama", "eager"), ("llama", "sdpa"), ("qwen2", "sdpa")])
def test_grouped_label_probabilities_match_one_forward_per_prompt(tokenizer, arch, attn):
    tiny = make_tiny(tokenizer, arch, attn)
    tiny.batch_size = 3  # a group of 4 runs in two chunks, rows of two groups share a forward
    prompts, keys = nli_prompts()
    grouped = grouped_label_logprobs(tiny, prompts, keys, NLI_LABELS)
    for prompt, got in zip(prompts, grouped, strict=True):
        alone = label_logprobs(tiny, [prompt], NLI_LABELS)[0]
        assert got.keys() == alone.keys()
        assert got == pytest.approx(alone, abs=1e-5)


def test_each_premise_runs_once(tiny):
    prompts, keys = nli_prompts()
    tokens: list[int] = []
    hook = tiny.model.get_input_embeddings().register_forward_hook(lambda m, i, o: tokens.append(i[0].numel()))
    try:
        label_logprobs(tiny, prompts, NLI_LABELS)
        full = sum(tokens)
        tokens.clear()
        grouped_label_logprobs(tiny, prompts, keys, NLI_LABELS)
    finally:
        hook.remove()
    assert sum(tokens) < 0.7 * full, (sum(tokens), full)


def test_models_that_cannot_share_a_prefix_take_the_plain_path(tokenizer, tiny):
    assert shares_prefixes(tiny)
    assert not shares_prefixes(make_tiny(tokenizer, "gemma3", sliding_window=4))  # cache cannot be continued
    assert not shares_prefixes(ScriptedModel(str))  # black box: no logits
    tiny.share_prefixes = False  # e.g. inside a steering context
    assert not shares_prefixes(tiny)


def test_llm_nli_scores_are_the_same_with_and_without_the_shared_prefix(tiny):
    pairs = [(p, h) for p in PREMISES for h in HYPOTHESES]
    shared = LLMNLI(tiny).entail(pairs)
    tiny.share_prefixes = False
    plain = LLMNLI(tiny).entail(pairs)
    assert shared == pytest.approx(plain, abs=1e-5)
    assert all(0 < s < 1 for s in shared)


def reports_of(clue: CLUE, items: list[dict], *, one_by_one: bool = False) -> list[dict]:
    reports = ([clue.estimate_from_samples(it["samples"], it["answer"], it["prompt"]) for it in items]
               if one_by_one else clue.estimate_from_samples_many(items))
    return [r.to_dict() for r in reports]


def assert_same_reports(a: list[dict], b: list[dict]) -> None:
    for x, y in zip(a, b, strict=True):
        assert [c["concept"] for c in x["concepts"]] == [c["concept"] for c in y["concepts"]]
        assert [c["aliases"] for c in x["concepts"]] == [c["aliases"] for c in y["concepts"]]
        assert [c["sources"] for c in x["concepts"]] == [c["sources"] for c in y["concepts"]]
        assert x["answer_concepts"] == y["answer_concepts"]
        assert (x["bad_extractions"], x["valid_rate"]) == (y["bad_extractions"], y["valid_rate"])
        assert [c["uncertainty"] for c in x["concepts"]] == pytest.approx([c["uncertainty"] for c in y["concepts"]],
                                                                          abs=1e-4)
        assert x["score"] == pytest.approx(y["score"], abs=1e-4)


def make(nli, **kw) -> CLUE:
    return CLUE(ScriptedModel(str), nli=nli, embedder=FakeEncoder(), extractor=ScriptedModel(extractor_script), **kw)


def test_clue_with_shared_prefix_nli_equals_the_plain_path(tiny):
    shared = reports_of(make(tiny), ITEMS)
    tiny.share_prefixes = False
    assert_same_reports(shared, reports_of(make(tiny), ITEMS))
    assert [r["bad_extractions"] for r in shared] == [0, 0, 1]  # "garbage" gives no concept: counted


@pytest.mark.parametrize("pooler", ["cosine", "nli"])
def test_pooling_all_questions_at_once_equals_one_question_at_a_time(tiny, pooler):
    batched = reports_of(make(tiny, pooler=pooler), ITEMS)
    assert_same_reports(batched, reports_of(make(tiny, pooler=pooler), ITEMS, one_by_one=True))


def test_nli_pooling_judges_every_question_in_one_call():
    class Recording:
        name = "recording"

        def __init__(self):
            self.calls: list[int] = []

        def entail(self, pairs):
            self.calls.append(len(pairs))
            return [0.9 if p.split()[-1] == h.split()[-1] else 0.1 for p, h in pairs]

    nli = Recording()
    reports = make(nli, pooler="nli").estimate_from_samples_many(ITEMS)
    assert len(nli.calls) == 2  # pooling of the three questions, then the concept scores
    assert all(r.concepts for r in reports)


def test_shared_prefix_nli_runs_only_the_nli_handle(tokenizer):
    llm, judge = make_tiny(tokenizer, seed=0), make_tiny(tokenizer, seed=1)
    seen = {"llm": 0, "nli": 0}
    hooks = [h.model.get_input_embeddings().register_forward_hook(
        lambda m, i, o, k=k: seen.__setitem__(k, seen[k] + 1)) for k, h in (("llm", llm), ("nli", judge))]
    try:
        CLUE(llm, nli=judge, embedder=FakeEncoder(), extractor=ScriptedModel(extractor_script)
             ).estimate_from_samples_many(ITEMS)
    finally:
        for h in hooks:
            h.remove()
    assert seen["llm"] == 0 and seen["nli"] > 0
