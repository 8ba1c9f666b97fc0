"""`trustlab audit` end to end on a tiny real model: the scorecard on top of report.html and in scorecard.json,
a section's concern rows plugged in through the registry alone, and the gate's exit status."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from tests.audit.layout import scorecard_layout
from tests.test_registry import scratch_registry  # noqa: F401  (fixture)
from trustlab.audit import GateFailedError, run_audit
from trustlab.audit.gate import EXIT_GATE
from trustlab.audit.scorecard import measure
from trustlab.cli import main
from trustlab.registry import register_method
from trustlab.report import Section


def plugged_section(model, run, *, quick: bool, seed: int):
    """A new section: a report section and one concern row, nothing else to register."""
    answers = model.generate(["Is the sky blue? Answer yes or no."] * 10, max_new_tokens=4, temperature=0.0)
    items = [{"id": f"p{k}", "value": float("no" in g[0].text.lower())} for k, g in enumerate(answers)]
    return [Section("Plugged", "a section added at run time"),
            measure("plugged.says_no", "Says no to an easy yes", "share of 'no' answers", items=items,
                    threshold=0.5, higher_is_better=False, method="none", fix="trustlab generate")]


@pytest.fixture
def plugged(scratch_registry):  # noqa: F811
    register_method(id="plugged-method", title="Plugged method", area="train", spec="plugged.md",
                    audit="tests.audit.test_audit_scorecard:plugged_section", section="plugged")


def test_scorecard_on_top_with_every_concern_of_the_run(plugged, tiny, tmp_path):
    out = tmp_path / "audit"
    run_audit(tiny, out, sections=["plugged", "uncertainty", "jailbreak"], quick=True)
    card = json.loads((out / "scorecard.json").read_text())
    ids = [c["id"] for c in card["concerns"]]
    assert ids == ["plugged.says_no", "uncertainty.flags_errors", "jailbreak.attack_success",
                   "jailbreak.benign_refusal"]
    by_id = {c["id"]: c for c in card["concerns"]}
    assert by_id["plugged.says_no"]["section"] == "plugged" and by_id["plugged.says_no"]["n"] == 10
    assert by_id["plugged.says_no"]["verdict"] in ("pass", "fail", "inconclusive")
    # quick sizes: the model-based rows are not measurable, and say why instead of giving a number
    for cid in ("uncertainty.flags_errors", "jailbreak.attack_success"):
        assert by_id[cid]["verdict"] == "not measurable" and "too few items" in by_id[cid]["why_not"]
    assert "the refusal detector (keyword) is right on" in by_id["jailbreak.attack_success"]["why_not"]
    assert "--judge-model SPEC   # SPEC: a judge right on >= 0.8 of the 40" in by_id["jailbreak.attack_success"]["remeasure"]

    page = (out / "report.html").read_text()
    assert page.index('id="scorecard"') < page.index("<ul>") < page.index('id="what-to-run"')
    assert "not measurable here, because" in page and "quick: yes" in page
    layout, errors = scorecard_layout(out / "report.html")
    assert errors == [] and layout["rows"] == 4
    assert layout["table"]["bottom"] <= layout["viewport"][1], layout  # the whole table on the first screen
    assert not layout["overflow"]


def test_the_gate_fails_after_writing_the_report(plugged, tiny, tmp_path):
    out = tmp_path / "audit"
    with pytest.raises(GateFailedError) as info:
        run_audit(tiny, out, sections=["plugged", "jailbreak"], quick=True, fail_on=["not-measurable"],
                  thresholds={"plugged.says_no": 1.0})
    assert info.value.report == out / "report.html" and info.value.exit_code == EXIT_GATE
    assert [f.split(":")[0] for f in info.value.result.failures] == ["jailbreak.attack_success",
                                                                       "jailbreak.benign_refusal"]
    card = json.loads((out / "scorecard.json").read_text())
    assert card["gate"]["passed"] is False and card["thresholds_given"] == ["plugged.says_no"]
    assert card["concerns"][0]["threshold"] == 1.0 and card["concerns"][0]["verdict"] == "pass"
    assert "gate failed" in (out / "report.html").read_text()


def test_cli_gate_exit_status_and_early_usage_errors(plugged, tiny_dir, tmp_path):
    cli = CliRunner()
    out = tmp_path / "audit"
    res = cli.invoke(main, ["audit", "--model", str(tiny_dir), "--out", str(out), "--quick", "--section", "plugged",
                            "--fail-on", "plugged.says_no>2"])
    assert res.exit_code == 0, res.output
    assert "gate passed: plugged.says_no>2" in res.stdout and (out / "scorecard.json").exists()
    assert "audit plan (sizes x 1):\n  plugged          unknown cost" in res.stderr  # the plan, before running
    res = cli.invoke(main, ["audit", "--model", str(tiny_dir), "--out", str(tmp_path / "b"), "--quick", "--section",
                            "plugged", "--baseline", str(out), "--fail-on", "plugged.says_no>=0,regression"])
    assert res.exit_code == EXIT_GATE, res.output
    assert "plugged.says_no: " in res.stderr and (tmp_path / "b" / "report.html").exists()
    # a regression rule without a baseline, or a bad rule, stops before any model is loaded
    res = cli.invoke(main, ["audit", "--model", "/no/such/model", "--out", str(tmp_path / "c"), "--fail-on", "regression"])
    assert res.exit_code == 2 and "baseline" in res.output and not (tmp_path / "c").exists()
    res = cli.invoke(main, ["audit", "--model", "/no/such/model", "--fail-on", "asr above 0.3"])
    assert res.exit_code == 2 and "unknown gate rule" in res.output


def test_context_and_reasoning_rows_come_from_their_sections(tiny, tmp_path):
    out = tmp_path / "audit"
    run_audit(tiny, out, sections=["context", "reasoning"], quick=True)
    card = {c["id"]: c for c in json.loads((out / "scorecard.json").read_text())["concerns"]}
    assert list(card) == ["context.recall_error", "context.template_gap", "context.follows_context",
                          "reasoning.several_unknowns"]
    gap = card["context.template_gap"]
    assert gap["n"] == 1 and gap["items"][0]["id"].startswith("niah-") and gap["why_not"] == "too few items (1 < 8)"
    assert gap["method"] == "context-awareness" and "UserSteering(model, alpha=0.9)" in gap["code"]
    assert "Steering at alpha 0.9 changed the recall error" in gap["note"]
    reasoning = card["reasoning.several_unknowns"]
    assert reasoning["n"] == 4 and reasoning["higher_is_better"] and reasoning["threshold"] == 0.5
    assert "--strategy fs --data generated" in reasoning["fix"] and "Formulate-and-Solve" in reasoning["note"]


def test_a_comparison_of_two_real_runs_fits_the_first_screen(plugged, tiny, tokenizer, tmp_path):
    """Base vs "fine-tune" (another tiny model): real scorecards, with their long not-measurable reasons."""
    from tests.conftest import make_tiny
    from trustlab.audit.compare import compare_runs

    run_audit(tiny, tmp_path / "a", sections=["plugged", "jailbreak"], quick=True)
    run_audit(make_tiny(tokenizer, seed=1), tmp_path / "b", sections=["plugged", "jailbreak"], quick=True)
    page = compare_runs(tmp_path / "a", tmp_path / "b", tmp_path / "cmp")
    rows = json.loads((tmp_path / "cmp" / "comparison.json").read_text())["rows"]
    assert [r["change"] for r in rows][1:] == ["not comparable", "not comparable"]  # jailbreak: not measurable
    assert rows[0]["paired"] and rows[0]["n_paired"] == 10  # the same 10 prompts in both runs
    layout, errors = scorecard_layout(page)
    assert errors == [] and layout["rows"] == 3 and not layout["overflow"]
    assert layout["table"]["bottom"] <= layout["viewport"][1], layout
