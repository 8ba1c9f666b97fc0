"""The audit's plan: per-section costs, a calibrated estimate, and sizes shrunk to fit --budget-minutes."""

from __future__ import annotations

import json

from click.testing import CliRunner

from trustlab.audit import run_audit
from trustlab.audit.plan import SCALES, Calibration, calibrate, make_plan, section_cost
from trustlab.cli import main
from trustlab.registry import get_section

SECTIONS = ["context", "reasoning", "uncertainty", "jailbreak"]


def test_the_budget_picks_the_largest_scale_that_fits(tiny):
    records = [get_section(s) for s in SECTIONS]
    slow = Calibration(per_call=0.5, per_new_token=0.02, per_prompt_token=0.0005, seconds=1.0)
    full = make_plan(tiny, records, quick=False, calibration=slow)
    assert full.scale == 1.0 and [r["section"] for r in full.rows] == SECTIONS
    assert all(r["calls"] > 0 and r["seconds"] > 0 for r in full.rows)
    budget = full.estimate_seconds / 60 / 2
    half = make_plan(tiny, records, quick=False, budget_minutes=budget, calibration=slow)
    assert half.scale < 1.0 and half.estimate_seconds <= budget * 60
    bigger = SCALES[SCALES.index(half.scale) - 1]  # the next larger scale would not have fitted
    assert sum(slow.seconds_for(section_cost(r, tiny, quick=False, scale=bigger)) for r in records) > budget * 60
    text = half.text()
    assert f"sizes x {half.scale:g}, budget" in text and "wider intervals" in text
    assert "12 questions" in full.text() and "10 attacks + 10 benign prompts" in full.text()
    quick = make_plan(tiny, records, quick=True, budget_minutes=0.001, calibration=slow)
    assert quick.scale == 1.0 and "over the budget" in quick.text()  # quick sizes are never shrunk


def test_calibration_times_the_model(tiny):
    cal = calibrate(tiny)
    assert cal.seconds > 0 and min(cal.per_call, cal.per_new_token, cal.per_prompt_token) >= 0
    assert cal.per_call + cal.per_new_token > 0


def test_scale_reaches_the_sections_and_the_plan_is_recorded(tiny, tmp_path):
    out = tmp_path / "audit"
    plan = make_plan(tiny, [get_section("jailbreak")], quick=False, budget_minutes=60)
    run_audit(tiny, out, sections=["jailbreak"], scale=0.15, plan=plan)
    card = json.loads((out / "scorecard.json").read_text())
    asr = next(c for c in card["concerns"] if c["id"] == "jailbreak.attack_success")
    assert asr["n"] == 2 and "too few items (2 < 8)" in asr["why_not"]  # 10 x 0.15, at least 2
    results = json.loads((out / "results.json").read_text())
    assert results["plan"]["rows"][0]["section"] == "jailbreak" and results["plan"]["calibration"]["seconds"] > 0
    assert json.loads((out / "config.json").read_text())["scale"] == 0.15
    assert "sizes: x 0.15 (time budget)" in (out / "report.html").read_text()


def test_cli_prints_the_plan_before_running(tiny_dir, tmp_path):
    res = CliRunner().invoke(main, ["audit", "--model", str(tiny_dir), "--quick", "--section", "reasoning",
                                    "--plan-only", "--out", str(tmp_path / "a")])
    assert res.exit_code == 0, res.output
    assert res.stdout.startswith("audit plan (sizes x 1):\n  reasoning ")
    assert "4 generated problems (2-5 unknowns) x 2 strategies; 8 model calls" in res.stdout
    assert "estimate: ~" in res.stdout and not (tmp_path / "a" / "report.html").exists()
    res = CliRunner().invoke(main, ["audit", "--budget-minutes", "0", "--plan-only"])
    assert res.exit_code == 2 and "--budget-minutes" in res.output
