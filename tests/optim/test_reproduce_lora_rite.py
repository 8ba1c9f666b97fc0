"""``trustlab reproduce lora-rite``: the quick run writes a valid summary (SmolLM2 for 3 steps: slow tier);
the SmolLM2 protocol's parts (lr bracketing, disjoint splits, keeping an unchanged part's rows) on tiny cases."""

from __future__ import annotations

import math

import pytest

from trustlab.optim.factory import create_optimizer
from trustlab.report import read_summary


@pytest.mark.slow
def test_quick_reproduction_writes_summary(tmp_path):
    import reasoning_gym  # noqa: F401  (the [test] extra installs it; a missing one must fail, not skip)
    import sklearn  # noqa: F401  (the [test] extra installs it; a missing one must fail, not skip)

    from trustlab.reproduce import run_reproduction

    claims = run_reproduction("lora-rite", tmp_path, quick=True)
    assert len(claims) == 4
    summary = read_summary(tmp_path / "summary.json")
    assert [c["method"] for c in summary] == ["lora-rite"] * 4
    assert summary[0]["reproduced"] is True  # invariance holds even in quick mode
    assert all(c["setup"]["quick"] is True for c in summary)
    assert [c["n"] for c in summary] == [20, 224, 60, 10]  # trajectory pairs, test digits, curve points, questions
    assert summary[0]["ci"] is None and summary[2]["ci"] is None  # deterministic float64 checks
    for c in (summary[1], summary[3]):
        lo, hi = c["ci"]
        assert -1.0 <= lo <= c["ours"] - c["baseline"] <= hi <= 1.0
    assert summary[1]["valid_rate"] is None and 0.0 <= summary[3]["valid_rate"] <= 1.0
    assert summary[3]["measurable"] is (summary[3]["valid_rate"] >= 0.5)
    llm = summary[3]["setup"]
    assert llm["dtype"] == "float32" and llm["threads"] == 1
    assert set(llm["search_seeds"]).isdisjoint(llm["eval_seeds"])  # the test runs are not the selection's seed
    assert set(llm["lr_search"]) == {"lora-rite", "adamw"} and all(v["capped"] for v in llm["lr_search"].values())
    assert "cap" in summary[3]["note"]  # quick mode has no room to widen: said, not hidden
    for name in ("invariance.json", "digits.json", "smollm2.json", "digits_loss_balance.png", "smollm2_loss.png",
                 "report.html"):
        assert (tmp_path / name).exists(), name


def _counting(score):
    calls = []

    def f(lr):
        calls.append(lr)
        return score(lr)

    return f, calls


def _peak(at):
    return lambda lr: -abs(math.log10(lr) - math.log10(at))


def test_bracket_lr_widens_towards_the_best_edge_until_interior():
    from trustlab.reproduce.lora_rite_llm import bracket_lr

    score, calls = _counting(_peak(1e-2))
    out = bracket_lr(score, [1e-4, 3e-4, 1e-3], max_extensions=4)
    assert out["lr"] == 1e-2 and out["interior"] and not out["capped"]
    assert out["grid"] == [1e-4, 3e-4, 1e-3, 3e-3, 1e-2, 3e-2] and out["extensions"] == 3
    assert sorted(calls) == out["grid"]  # each lr scored once
    assert out["val"] == [_peak(1e-2)(lr) for lr in out["grid"]] and out["initial_grid"] == [1e-4, 3e-4, 1e-3]

    down = bracket_lr(_peak(3e-5), [1e-4, 3e-4, 1e-3])
    assert down["lr"] == 3e-5 and down["grid"][0] == 1e-5 and down["interior"]


def test_bracket_lr_keeps_an_interior_best_and_reports_a_hit_cap():
    from trustlab.reproduce.lora_rite_llm import bracket_lr

    score, calls = _counting(_peak(3e-4))
    out = bracket_lr(score, [1e-4, 3e-4, 1e-3])
    assert out["lr"] == 3e-4 and out["extensions"] == 0 and out["interior"] and len(calls) == 3

    capped = bracket_lr(_peak(1e-1), [1e-4, 3e-4, 1e-3], max_extensions=2)
    assert capped["lr"] == 1e-2 and capped["grid"][-1] == 1e-2 and capped["capped"] and not capped["interior"] and capped["extensions"] == 2


def test_bracket_lr_treats_a_tie_at_the_edge_as_not_bracketed():
    from trustlab.reproduce.lora_rite_llm import bracket_lr

    flat = bracket_lr(lambda lr: 0.5, [3e-4, 1e-3], max_extensions=3)  # both edges tie: widen both, up to the cap
    assert flat["grid"] == [3e-5, 1e-4, 3e-4, 1e-3, 3e-3] and flat["capped"] and flat["lr"] == 3e-5
    tie = bracket_lr(lambda lr: {1e-4: 0.1, 3e-4: 0.4, 1e-3: 0.4, 3e-3: 0.2}[lr], [1e-4, 3e-4, 1e-3])
    assert tie["grid"] == [1e-4, 3e-4, 1e-3, 3e-3] and tie["interior"] and tie["lr"] == 3e-4  # ties: the smaller lr


def test_bracket_lr_refuses_lrs_off_the_ladder():
    from trustlab.reproduce.lora_rite_llm import bracket_lr, ladder_step

    assert ladder_step(1e-3, +1) == 3e-3 and ladder_step(3e-3, +1) == 1e-2 and ladder_step(1e-4, -1) == 3e-5
    with pytest.raises(ValueError, match="ladder"):
        bracket_lr(lambda lr: 0.0, [2e-4, 1e-3])


def test_task_splits_are_disjoint_and_sized():
    from trustlab.reproduce.lora_rite_llm import task_splits

    splits = task_splits(40, 30, 30, seed=0)
    train = {ex["messages"][1]["content"] for ex in splits["train"]}
    val, test = ({x["question"] for x in splits[k]} for k in ("val", "test"))
    assert (len(splits["train"]), len(splits["val"]), len(splits["test"])) == (40, 30, 30)
    assert len(val) == 30 and len(test) == 30  # no repeats inside a split
    assert not (train & val) and not (train & test) and not (val & test)
    assert all(ex["messages"][-1]["role"] == "assistant" for ex in splits["train"])
    assert task_splits(40, 30, 30, seed=0) == splits  # deterministic given the seed


def test_an_unchanged_part_keeps_its_rows_when_another_part_changes(tmp_path):
    from trustlab.report import RunFolder
    from trustlab.reproduce.lora_rite import _carry_over

    base = {"method": "lora-rite", "quick": False, "seed": 0, "row_format": 2, "digits": {"steps": 150}}
    old = RunFolder(tmp_path, {**base, "llm": {"steps": 24}})
    old.add_sample({"id": "digits:a", "kind": "digits", "test_acc": 0.9})
    old.add_sample({"id": "llm:a", "kind": "llm", "exact_match": 0.1})
    new_config = {**base, "llm": {"steps": 50}}
    new = RunFolder(tmp_path, new_config)
    assert not new.resumed and _carry_over(new, new_config, "digits") == 1
    assert new.done_keys() == {"digits:a"}  # the changed part's rows stay behind in .superseded
    changed = {**base, "digits": {"steps": 60}, "llm": {"steps": 50}}
    assert _carry_over(RunFolder(tmp_path, changed), changed, "digits") == 0


def test_factory_rejects_unknown_names_and_options():
    from tests.optim.toys import LoRAMLP

    with pytest.raises(ValueError, match="unknown optimizer"):
        create_optimizer("adam", LoRAMLP(), lr=1e-3)
    with pytest.raises(TypeError, match="lora-rite only"):
        create_optimizer("adamw", LoRAMLP(), lr=1e-3, apply_escape=True)


def test_exact_match_answers_that_echo_the_prompt_are_invalid():
    from trustlab.reproduce.lora_rite_llm import parse_answer

    q = "State the final answer to the following arithmetic problem: 4 - 1 ="
    assert parse_answer(" 3.\n", q) == ("3", None)
    assert parse_answer("-12", q) == ("-12", None)
    assert parse_answer("the following arithmetic problem: 4 - 1 = 3", q) == (None, "echoes the prompt")
    assert parse_answer("Reply with the final number only.", q) == (None, "echoes the prompt")
    assert parse_answer("The answer is 3", q) == (None, "not a bare number")
    assert parse_answer("", q) == (None, "not a bare number")
