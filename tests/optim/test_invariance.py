"""Transformation invariance in float64: the defining property of LoRA-RITE (spec test 1)."""

from __future__ import annotations

import pytest

from trustlab.reproduce.lora_rite_toys import invariance_deviation

RITE_SETTINGS = {
    "defaults": {},
    "no-clip-no-skip": {"update_skipping": 0.0, "clip_unmagnified_grad": 0.0},
    "clip-and-skip-active": {"update_skipping": 0.3, "clip_unmagnified_grad": 0.05},
    "escape-and-capping": {"apply_escape": True, "update_capping": 0.5},
}


@pytest.mark.parametrize("transform", ["rotate", "scale"])
@pytest.mark.parametrize("task", ["factorization", "regression"])
@pytest.mark.parametrize("setting", list(RITE_SETTINGS))
def test_lora_rite_is_invariant(setting, task, transform):
    out = invariance_deviation("lora-rite", transform=transform, task=task, **RITE_SETTINGS[setting])
    assert out["max_rel_dev"] <= 1e-8
    assert out["loss"][-1] < 0.8 * out["loss"][0]  # it trained: the agreement is not that of a frozen run


@pytest.mark.parametrize("transform", ["rotate", "scale"])
@pytest.mark.parametrize("optimizer", ["adamw", "loraplus"])
def test_adam_family_is_not_invariant(optimizer, transform):
    out = invariance_deviation(optimizer, transform=transform)
    assert out["max_rel_dev"] >= 1e-3
    rite = invariance_deviation("lora-rite", transform=transform)
    assert out["max_rel_dev"] > 1e6 * rite["max_rel_dev"]  # orders of magnitude apart
