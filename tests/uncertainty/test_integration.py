"""CLUE on the embedded SmolLM2 with MiniLM pooling (real models, slow), and the black-box label path."""

from __future__ import annotations

import math

import pytest

from tests.safety.fakes import ScriptedModel
from trustlab.models.base import Capabilities, Generation
from trustlab.models.labels import label_logprobs
from trustlab.uncertainty import CLUE, LLMNLI
from trustlab.uncertainty.concepts import example_copies


class LoggedScript(ScriptedModel):
    """Scripted answers whose first token has probability 0.8, as an OpenAI-style black box."""

    def __init__(self, script):
        super().__init__(script)
        self.capabilities = Capabilities(backend="scripted", logprobs=True, chat_template=True)

    def _generate(self, prompts, cfg, chat_template):
        return [[Generation(text=g.text, token_logprobs=[math.log(0.8)]) for g in row]
                for row in super()._generate(prompts, cfg, chat_template)]


def test_black_box_label_probabilities_from_generated_words():
    model = LoggedScript(lambda p: "Entailment." if "sky" in p else "maybe")
    labels = {"entailment": ["entailment"], "neutral": ["neutral"], "contradiction": ["contradiction"]}
    hit, miss = label_logprobs(model, ["sky", "sea"], labels)
    assert math.exp(hit["entailment"]) == pytest.approx(0.8) and math.exp(hit["neutral"]) == pytest.approx(0.1)
    assert all(math.exp(v) == pytest.approx(1 / 3) for v in miss.values())


@pytest.mark.slow
def test_llm_nli_is_a_cached_probability(smollm):
    nli = LLMNLI(smollm)
    pairs = [("Paris is the capital of France.", "Paris is in France."), ("The sky is blue.", "The sky is green.")]
    probs = nli.entail(pairs)
    assert all(0 < p < 1 for p in probs)
    assert nli.entail(pairs[::-1]) == probs[::-1] and len(nli._cache) == 2


@pytest.mark.slow
def test_clue_end_to_end_on_smollm(smollm):
    clue = CLUE(smollm, n_samples=2, max_new_tokens=16, extract_max_new_tokens=16, max_concepts=4, seed=0)
    report = clue.estimate("Answer in one sentence: what is the capital of Japan?")
    assert len(report.samples) == 2 and report.n_extractions == 3
    assert_no_echo_is_scored(report)
    assert report.bad_extractions < 3  # SmolLM2 lists at least one real concept for one of its answers
    assert all(c.uncertainty >= 0 and len(c.entailment) == 2 for c in report.concepts)
    assert math.isfinite(report.score)


def assert_no_echo_is_scored(report):
    """Every scored concept is the extractor's own reading of the texts, every dropped one a copy of the
    one-shot example, and the bad-extraction count agrees with what was kept."""
    texts = " ".join([report.answer or "", *report.samples])
    scored = sorted({a for c in report.concepts for a in c.aliases})
    assert not any(example_copies(scored, texts)), scored
    assert all(example_copies(report.echoed_concepts, texts)), report.echoed_concepts
    assert report.valid_rate == pytest.approx(1 - report.bad_extractions / report.n_extractions)
    assert bool(report.concepts) == (report.bad_extractions < report.n_extractions)


def test_white_box_labels_keep_prompt_order_across_length_sorted_batches(tiny):
    labels = {"yes": ["yes"], "no": ["no"]}
    prompts = ["a much longer prompt with many more words in it than the others", "short", "medium length one"]
    tiny.batch_size = 2
    batched = label_logprobs(tiny, prompts, labels)
    for p, got in zip(prompts, batched, strict=True):
        alone = label_logprobs(tiny, [p], labels)[0]
        assert got == pytest.approx(alone, abs=1e-4)
        assert math.exp(got["yes"]) + math.exp(got["no"]) == pytest.approx(1.0)
