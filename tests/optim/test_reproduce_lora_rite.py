"""``trustlab reproduce lora-rite --quick`` writes a valid summary (SmolLM2 for 3 steps: slow tier)."""

from __future__ import annotations

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
    for name in ("invariance.json", "digits.json", "smollm2.json", "digits_loss_balance.png", "report.html"):
        assert (tmp_path / name).exists(), name


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
