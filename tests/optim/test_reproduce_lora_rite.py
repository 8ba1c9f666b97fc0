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
    for name in ("invariance.json", "digits.json", "smollm2.json", "digits_loss_balance.png", "report.html"):
        assert (tmp_path / name).exists(), name


def test_factory_rejects_unknown_names_and_options():
    from tests.optim.toys import LoRAMLP

    with pytest.raises(ValueError, match="unknown optimizer"):
        create_optimizer("adam", LoRAMLP(), lr=1e-3)
    with pytest.raises(TypeError, match="lora-rite only"):
        create_optimizer("adamw", LoRAMLP(), lr=1e-3, apply_escape=True)
