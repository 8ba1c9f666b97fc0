"""Quick runs of the LFR reproduction and of mix-cd's language-model part: real tiny Llama pretraining and
fine-tuning, the claim schema, and the resume (a second run reads every finished unit back)."""

from __future__ import annotations

import json
from pathlib import Path

from tests.snapshots import file_stamps
from trustlab.reproduce.lfr import run as run_lfr
from trustlab.reproduce.mix_cd import run_lm


def test_lfr_quick_run_writes_claims_curves_and_focus_composition(tmp_path: Path):
    claims = run_lfr(tmp_path, quick=True)
    assert [c.method for c in claims] == ["lfr", "lfr"] and all(c.setup["quick"] for c in claims)
    assert claims[0].baseline == 40 and claims[0].n == 1 and claims[1].ours > 0
    detail = json.loads((tmp_path / "details.json").read_text())
    focus = detail["focus_events"]["lfr-seed0"]
    assert [e["kind"] for e in focus] == ["learn", "focus", "review", "focus", "review"]
    assert sum(focus[1]["per_stratum"].values()) == focus[1]["active"] < 300  # 5 strata x 60 blocks
    assert (tmp_path / "perplexity_vs_steps.png").stat().st_size > 10_000
    before = file_stamps(tmp_path / "runs")
    assert any(name.endswith("unit.json") for name in before)
    again = run_lfr(tmp_path, quick=True)
    assert [c.to_dict() for c in again] == [c.to_dict() for c in claims]
    assert file_stamps(tmp_path / "runs") == before  # the units are read back, not retrained


def test_mix_cd_lm_quick_run_measures_forgetting_for_each_policy(tmp_path: Path):
    claims, detail = run_lm(tmp_path, quick=True)
    (claim,) = claims
    assert claim.method == "mix-cd" and claim.setup["quick"] and claim.n == 32 and claim.ci is not None
    summary = detail["summary"]
    assert set(summary) == {"none", "random", "mixcd"}
    assert summary["none"]["forgetting"] > summary["random"]["forgetting"]  # rehearsal protects old text
    units = detail["units"]
    assert units["none-seed0"]["rehearsed_samples"] == 0
    assert units["random-seed0"]["rehearsed_samples"] == units["mixcd-seed0"]["rehearsed_samples"] == 12 * 4
    assert len(units["mixcd-seed0"]["alphas"]) == 10 and sum(units["mixcd-seed0"]["bin_counts"]) == 48
