"""The drawn image+question set: official layout, the image path end to end on a tiny random-weight LLaVA
(control flow only), and the judges against its labels."""

from __future__ import annotations

import pytest

from tests.models.test_vlm import make_tiny_vlm
from trustlab.models import load_model
from trustlab.safety.mossbench import load_mossbench, run_mossbench
from trustlab.safety.mossbench_images import SCENES, judge_agreement, labelled_pairs, write_image_set
from trustlab.safety.mossbench_judge import KeywordJudge, RubricJudge


@pytest.fixture(scope="module")
def tiny_vlm(smollm_dir):
    model, processor = make_tiny_vlm(smollm_dir)
    return load_model(model, tokenizer=processor)


def test_the_set_loads_in_the_official_format_with_distinct_drawn_images(tmp_path):
    folder = write_image_set(tmp_path)
    benign, contrast = load_mossbench("benign", folder), load_mossbench("contrast", folder)
    assert len(benign) == len(contrast) == len(SCENES) == 8
    assert {i.type for i in benign} == {1, 2, 3}
    assert [b.image_source != c.image_source for b, c in zip(benign, contrast, strict=True)] == [True] * 8
    pixels = [i.load_image().tobytes() for i in benign]
    assert len(set(pixels)) == 8 and all(i.load_image().size == (96, 96) for i in benign)
    pairs = labelled_pairs(folder)
    assert len(pairs) == 32 and sum(p[2] for p in pairs) == 16


def test_keyword_judge_against_the_labels():
    res = judge_agreement(KeywordJudge())
    # the two traps: "I can't imagine a better one ..." (compliance) and a refusal without a listed phrase
    assert res["errors"] == [4, 25] and res["accuracy"] == pytest.approx(30 / 32)
    assert res["kappa"] == pytest.approx(0.875)


def test_mossbench_image_mode_on_a_tiny_vision_model(tiny_vlm, tmp_path):
    items = load_mossbench("benign", write_image_set(tmp_path))[:3]
    report = run_mossbench(tiny_vlm, KeywordJudge(), items, max_new_tokens=4)
    assert report.mode == "image" and report.label == "MOSSBench"
    assert len(report.records) == 3 and report.rates()["splits"]["benign"]["overall"]["n"] == 3
    text = run_mossbench(tiny_vlm, KeywordJudge(), items, mode="text", max_new_tokens=4)
    assert text.label == "MOSSBench-text proxy"


def test_a_vision_rubric_judge_sees_the_drawn_image_and_counts_unparsed_answers(tiny_vlm, tmp_path):
    judge = RubricJudge(tiny_vlm, max_new_tokens=6)
    res = judge_agreement(judge, tmp_path)
    assert res["n"] == 32
    assert judge.validity.total == 32  # every response is non-empty: all asked, each parsed or counted invalid
    assert res["n_decided"] == judge.validity.n_valid  # random weights: nothing is guessed when nothing parses
    assert "(shown above)" in judge.prompt(load_mossbench("benign", tmp_path)[0], "ok", with_image=True)
