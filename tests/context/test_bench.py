"""NIH construction, context-QA data and scoring, the probe runner (resume), and QA loaders on sample files."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from trustlab.bench.context_qa import (
    FACTS,
    contains,
    counterfactual_items,
    exact_match,
    f1,
    follows_context,
    load_qa,
    qa_prompt,
)
from trustlab.bench.niah import (
    INSTRUCTION,
    NEEDLES,
    SF_NEEDLE,
    build_context,
    haystack_text,
    niah_prompt,
    recall,
)
from trustlab.context.bench import (
    NO_TEMPLATE_CUE,
    Condition,
    check_answer,
    conditions,
    niah_probes,
    paired,
    qa_probes,
    render,
    run_probes,
    summarise,
)
from trustlab.errors import EmptyInputError
from trustlab.report import RunFolder

DATA = Path(__file__).parent / "data"


def test_haystack_is_the_verne_story_without_gutenberg_boilerplate():
    text = haystack_text()
    assert text.startswith("IN THE YEAR 2889.") and len(text) > 30_000
    assert "Gutenberg" not in text and "\n" not in text


@pytest.mark.parametrize("depth", [0.0, 0.25, 0.5, 1.0])
def test_needle_goes_in_at_a_sentence_boundary_near_the_depth(tokenizer, depth):
    ctx = build_context(tokenizer, 600, depth)
    at = ctx.index(SF_NEEDLE.text)
    assert ctx.count(SF_NEEDLE.text) == 1
    assert at == 0 or ctx[at - 2] in ".!?\"')]"  # right after the end of a sentence
    assert abs(at / len(ctx) - depth) < 0.1
    n = len(tokenizer(ctx)["input_ids"])
    assert 600 - 40 <= n <= 600 + len(tokenizer(SF_NEEDLE.text)["input_ids"]) + 2


def test_long_contexts_repeat_the_story(tokenizer):
    ctx = build_context(tokenizer, 12_000, 0.5, NEEDLES[2])
    assert len(tokenizer(ctx)["input_ids"]) > 11_000 and NEEDLES[2].text in ctx
    with pytest.raises(ValueError, match="depth"):
        build_context(tokenizer, 100, 1.5)


def test_recall_counts_whole_words_only():
    assert recall(SF_NEEDLE.text, SF_NEEDLE.words) == 1.0
    assert recall("Eat a sandwich in Dolores Park!", SF_NEEDLE.words) == pytest.approx(4 / 7)
    assert recall("sandwiches, parks and sunnyday", SF_NEEDLE.words) == 0.0
    assert recall("", SF_NEEDLE.words) == 0.0


@given(st.text(max_size=200))
def test_recall_is_a_fraction(answer):
    assert 0.0 <= recall(answer, SF_NEEDLE.words) <= 1.0


def test_counterfactual_items_contradict_the_real_fact():
    items = counterfactual_items()
    assert len(items) == len(FACTS) >= 30 and len({i.id for i in items}) == len(items)
    for item in items:
        assert item.answers[0] != item.memory_answer
        assert contains(item.context, item.answers[0])
        assert item.question in qa_prompt(item) and qa_prompt(item, " [IND]").endswith("? [IND]")
    assert counterfactual_items(3, seed=1) != counterfactual_items(3, seed=2)
    assert counterfactual_items(3, seed=1) == counterfactual_items(3, seed=1)


def test_follows_context_and_squad_metrics():
    item = counterfactual_items(1)[0]  # Lyon, not Paris
    assert follows_context("The capital of France is Lyon.", item) == 1.0
    assert follows_context("It is Paris.", item) == 0.0
    assert follows_context("Lyon or Paris", item) == 0.0
    assert exact_match("The Lyon.", ("lyon",)) == 1.0 and exact_match("Lyon city", ("lyon",)) == 0.0
    assert f1("in Lyon city", ("Lyon",)) == pytest.approx(2 * (1 / 3) / (1 / 3 + 1))
    assert f1("nothing", ("Lyon",)) == 0.0


@pytest.mark.parametrize("name, n", [("squad", 3), ("quac", 2), ("drop", 2)])
def test_qa_loaders_read_the_hub_format(name, n):
    items = load_qa(name, DATA / f"{name}_sample.jsonl")
    assert len(items) == n and all(i.context and i.question and i.answers for i in items)
    assert all("CANNOTANSWER" not in i.answers for i in items)
    assert len(load_qa(name, DATA / f"{name}_sample.jsonl", limit=1)) == 1


def test_qa_loader_errors(tmp_path):
    with pytest.raises(ValueError, match="unknown"):
        load_qa("mmlu", DATA / "squad_sample.jsonl")
    empty = tmp_path / "drop.jsonl"
    empty.write_text('{"section_id": "x", "query_id": "x", "passage": "p", "question": "q", '
                     '"answers_spans": {"spans": [], "types": []}}\n')
    with pytest.raises(EmptyInputError):
        load_qa("drop", empty)


def test_conditions_and_rendering():
    names = [c.name for c in conditions((0.9, 0.5), indicator=" [IND]")]
    assert names == ["no_template", "template", "steered_0.9", "steered_0.5", "template+[IND]",
                     "steered_0.9+[IND]", "steered_0.5+[IND]"]
    probe = qa_probes(counterfactual_items(1))[0]
    assert render(probe, Condition("no_template", chat_template=False)).endswith(NO_TEMPLATE_CUE)
    assert render(probe, Condition("t", indicator=" [IND]"))[0]["content"].endswith("? [IND]")


def test_run_probes_scores_every_condition_and_resumes(tiny, tmp_path, monkeypatch):
    probes = niah_probes(tiny.tokenizer, [120], [0.0, 1.0]) + qa_probes(counterfactual_items(2))
    conds = conditions((0.5,))
    run = RunFolder(tmp_path / "run")
    rows = run_probes(tiny, probes, conds, run=run, max_new_tokens=3)
    assert len(rows) == len(probes) * len(conds) == len(run.samples())
    assert {r["condition"] for r in rows} == {"no_template", "template", "steered_0.5"}
    niah = [r for r in rows if r["task"] == "niah"]
    assert all(r["recall_error"] == 1.0 - r["recall"] for r in niah)

    def refuse(*a, **k):
        raise AssertionError("a resumed run must not generate again")

    monkeypatch.setattr(tiny, "generate", refuse)
    again = run_probes(tiny, probes, conds, run=run, max_new_tokens=3)
    assert sorted(r["id"] for r in again) == sorted(r["id"] for r in rows)
    assert sorted(again, key=lambda r: r["id"]) == sorted(rows, key=lambda r: r["id"])  # re-scored: the same
    assert all(r["valid"] == (r["invalid_reason"] is None) for r in rows)
    summary = summarise(rows)
    assert summary["niah"]["template"]["n"] == 2 and "follows_context" in summary["counterfactual"]["template"]


def test_niah_prompt_puts_the_question_last():
    assert niah_prompt("doc", "Q?").endswith("Question: Q?")


def test_answers_that_echo_the_prompt_are_invalid_and_never_scored(tokenizer):
    probe = niah_probes(tokenizer, [120], [0.5])[0]
    real = "The best thing to do in San Francisco is eat a sandwich and sit in Dolores Park on a sunny day."
    assert check_answer(real, probe) == (real, None)
    assert check_answer(f"Answer: {real}\nQuestion: What else?", probe) == (real, None)  # restated cue, then more
    assert check_answer("", probe) == ("", None)  # saying nothing is a valid miss
    echo = INSTRUCTION.split(" the question")[0]  # "Read the document below and answer"
    assert check_answer(f"{echo} the question.", probe)[1] == "echoes the instruction"
    # a chat turn the model goes on to write ends the answer (a base model tuned on a Zephyr-style template)
    assert check_answer(f"{real}\n<|user|>\nWhat else?", probe) == (real, None)
    for fmt in ("Answer: Answer:", "Question: What is the best thing to do in San Francisco?", "\nDocument:\n",
                "Answer:\n<|user|>\n"):
        assert check_answer(fmt, probe) == ("", "repeats the prompt format instead of answering")
    # quoting the document itself is an answer, not an echo
    quote = probe.own.split(".")[1].strip()
    assert len(quote.split()) >= 5 and check_answer(quote, probe)[1] is None


def test_summary_and_pairs_use_valid_answers_only():
    def row(probe, cond, err, valid=True):
        return {"task": "niah", "probe": probe, "condition": cond, "answer": "x" if err is not None else "",
                "valid": valid, "recall_error": err if valid else None, "recall": None if err is None else 1 - err}

    rows = [row("a", "template", 1.0), row("a", "steered", 0.0), row("b", "template", 0.0),
            row("b", "steered", None, valid=False), row("c", "template", 0.5), row("c", "steered", 0.5)]
    s = summarise(rows)["niah"]
    assert s["steered"]["recall_error"] == 0.25 and s["steered"]["n"] == 3 and s["steered"]["n_valid"] == 2
    assert s["steered"]["valid_rate"] == pytest.approx(2 / 3) and s["template"]["valid_rate"] == 1.0
    assert paired(rows, "niah", "recall_error", "steered", "template") == (["a", "c"], [0.0, 0.5], [1.0, 0.5])
    none = summarise([row("a", "t", None, valid=False)])["niah"]["t"]
    assert none["recall_error"] is None and none["valid_rate"] == 0.0
