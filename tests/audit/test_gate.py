"""The regression gate: rules against thresholds and against a baseline run, from options or a gate file."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from trustlab.audit.gate import EXIT_GATE, GateError, check_gate, parse_rules, read_gate_file
from trustlab.audit.scorecard import Concern, measure, write_scorecard
from trustlab.cli import main


def rate(id: str, hits: int, n: int, *, threshold: float = 0.2, **kw) -> Concern:
    """A lower-is-better rate over n 0/1 items i0..i{n-1}, the first ``hits`` of them 1."""
    return measure(id, f"title of {id}", "a rate", items=[{"id": f"i{k}", "value": float(k < hits)} for k in range(n)],
                   threshold=threshold, higher_is_better=False, method="m", fix="trustlab x", **kw)


def test_rules_are_parsed_and_bad_ones_say_what_is_accepted():
    assert parse_rules(["fail, regression", "jailbreak.attack_success > 0.3", "x.y<=1e-2"]) == [
        "fail", "regression", "jailbreak.attack_success>0.3", "x.y<=1e-2"]
    with pytest.raises(GateError, match="unknown gate rule 'asr above 0.3': use fail, lean-fail, not-measurable"):
        parse_rules(["asr above 0.3"])


def test_threshold_rules_and_verdict_rules():
    concerns = [rate("a.high", 30, 40), rate("a.small", 3, 10), rate("a.few", 1, 3)]
    assert check_gate(concerns, ["a.small>0.5", "a.high<0.5"]).passed  # a rule names the failing side
    broken = check_gate(concerns, ["a.small>0.25", "fail", "lean-fail", "not-measurable"])
    assert broken.failures == [
        "a.small: 0.3 > 0.25",
        "a.high: fail, 0.75 (95% interval 0.598 to 0.858) is past the threshold 0.2",
        "a.high: 0.75 is past the threshold 0.2", "a.small: 0.3 is past the threshold 0.2",
        "a.few: not measurable here, because too few items (3 < 8)"]
    # a rule on a concern the gate cannot see breaks the gate
    blind = check_gate(concerns, ["a.few<0.9", "b.absent<0.5"], threshold_ids=["a.typo"])
    assert blind.failures[0] == "threshold for a.typo: this run has no such concern"
    assert blind.failures[1].startswith("a.few<0.9: cannot be checked, a.few is not measurable here")
    assert blind.failures[2].startswith("b.absent<0.5: this run has no concern 'b.absent'")


def test_regression_means_worse_than_the_baseline_by_more_than_the_interval():
    base = [rate("a.asr", 4, 40), rate("a.flat", 10, 40), rate("a.few", 1, 3)]
    worse = [rate("a.asr", 20, 40), rate("a.flat", 12, 40), rate("a.few", 1, 3)]
    result = check_gate(worse, ["regression"], base)
    assert len(result.failures) == 1 and result.failures[0].startswith("a.asr: worse than the baseline by +0.4")
    assert result.notes == ["a.few: not comparable with the baseline (not measurable in one of the runs)"]
    assert check_gate(base, ["regression"], worse).passed  # better is no regression
    assert not check_gate(worse, ["regression:a.few"], base).passed  # named: must be comparable
    with pytest.raises(GateError, match="regressions against a baseline: give the baseline run"):
        check_gate(worse, ["regression"])


def test_gate_files_in_toml_and_json(tmp_path):
    toml = tmp_path / "gate.toml"
    toml.write_text('fail_on = ["fail", "jailbreak.attack_success>0.3"]\nbaseline = "base"\n'
                    '[thresholds]\n"jailbreak.attack_success" = 0.25\n')
    assert read_gate_file(toml) == {"fail_on": ["fail", "jailbreak.attack_success>0.3"], "baseline": "base",
                                    "thresholds": {"jailbreak.attack_success": 0.25}}
    js = tmp_path / "gate.json"
    js.write_text(json.dumps({"fail_on": ["not-measurable"]}))
    assert read_gate_file(js)["fail_on"] == ["not-measurable"]
    bad = tmp_path / "bad.toml"
    bad.write_text('fail_on = "fail"\n')
    with pytest.raises(GateError, match="fail_on must be a list of rules"):
        read_gate_file(bad)
    bad.write_text('fail_on = ["fail"]\nthreshold = 1\n')
    with pytest.raises(GateError, match=r"unknown keys \['threshold'\]"):
        read_gate_file(bad)
    bad.write_text("fail_on = [")
    with pytest.raises(GateError, match="is not valid TOML"):
        read_gate_file(bad)


def test_trustlab_audit_gate_on_written_runs(tmp_path):
    base, run = tmp_path / "base", tmp_path / "run"
    write_scorecard(base, [rate("a.asr", 4, 40), rate("a.flat", 10, 40)])
    write_scorecard(run, [rate("a.asr", 20, 40), rate("a.flat", 10, 40)])
    cli = CliRunner()
    res = cli.invoke(main, ["audit", "--check", str(run), "--baseline", str(base), "--fail-on", "regression"])
    assert res.exit_code == EXIT_GATE, res.output
    assert "gate failed (1 broken)" in res.stderr and "a.asr: worse than the baseline" in res.stderr
    res = cli.invoke(main, ["audit", "--check", str(base), "--baseline", str(run), "--fail-on", "regression"])
    assert res.exit_code == 0 and "gate passed: regression" in res.stdout
    # a gate file's thresholds replace the concerns' own (0.2 -> 0.9: a.asr at 0.5 no longer fails)
    gate = tmp_path / "gate.toml"
    gate.write_text('fail_on = ["lean-fail"]\n[thresholds]\n"a.asr" = 0.9\n"a.flat" = 0.3\n')
    assert cli.invoke(main, ["audit", "--check", str(run), "--gate", str(gate)]).exit_code == 0
    # a gate file's baseline is relative to the file
    (tmp_path / "ci").mkdir()
    (tmp_path / "ci" / "gate.toml").write_text('fail_on = ["regression"]\nbaseline = "../base"\n')
    res = cli.invoke(main, ["audit", "--check", str(run), "--gate", str(tmp_path / "ci" / "gate.toml")])
    assert res.exit_code == EXIT_GATE and "a.asr: worse than the baseline" in res.stderr
    res = cli.invoke(main, ["audit", "--check", str(run), "--gate", str(tmp_path / "nothing.toml")])
    assert res.exit_code == 2 and "gate file" in res.output and "does not exist" in res.output
    res = cli.invoke(main, ["audit", "--check", str(run)])
    assert res.exit_code == 2 and "no gate rules" in res.output
    res = cli.invoke(main, ["audit", "--check", str(run), "--fail-on", "regression"])
    assert res.exit_code == 2 and "give the baseline run" in res.output
    res = cli.invoke(main, ["audit", "--check", str(tmp_path), "--fail-on", "fail"])
    assert res.exit_code == 2 and "has no scorecard.json" in res.output
