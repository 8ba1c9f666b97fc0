"""`trustlab audit compare`: each concern of two runs side by side, B - A with a 95% interval."""

from __future__ import annotations

import json

from click.testing import CliRunner

from tests.audit.layout import scorecard_layout
from trustlab.audit.compare import compare_concerns, difference
from trustlab.audit.scorecard import measure, write_scorecard
from trustlab.cli import main


def rate(id: str, values: list[float], ids: list[str] | None = None, **kw):
    ids = ids or [f"i{k}" for k in range(len(values))]
    return measure(id, f"title of {id}", "a rate", items=[{"id": i, "value": v} for i, v in zip(ids, values, strict=True)],
                   threshold=0.2, higher_is_better=False, method="backtranslation", fix="trustlab eval jailbreak", **kw)


def auc(id: str, scores: list[float], errors: list[int]):
    return measure(id, "flags errors", "ROC-AUC", items=[{"id": f"q{k}", "score": s, "error": e} for k, (s, e) in
                                                         enumerate(zip(scores, errors, strict=True))],
                   stat="roc_auc", threshold=0.6, higher_is_better=True, method="clue", fix="trustlab uncertainty")


def test_paired_when_the_items_match_unpaired_otherwise():
    base = rate("j.asr", [1.0] * 10 + [0.0] * 30)
    tuned = rate("j.asr", [1.0] * 25 + [0.0] * 15)
    d = difference(base, tuned)
    assert d["paired"] and d["n_paired"] == 40 and d["diff"] == 0.375
    assert d["ci"][0] > 0 and d["change"] == "worse"  # a rate going up is worse when lower is better
    assert difference(tuned, base)["change"] == "better"
    other_items = rate("j.asr", [1.0] * 25 + [0.0] * 15, ids=[f"x{k}" for k in range(40)])
    u = difference(base, other_items)
    assert not u["paired"] and u["change"] == "worse" and u["ci"][1] - u["ci"][0] > d["ci"][1] - d["ci"][0]
    same = difference(base, rate("j.asr", [1.0] * 11 + [0.0] * 29))
    assert same["change"] == "no clear change" and same["ci"][0] <= 0 < same["ci"][1]  # one item moved
    assert difference(base, rate("j.asr", [1.0, 0.0]))["change"] == "not comparable"  # n = 2: not measurable


def test_roc_auc_differences_bootstrap_the_whole_statistic():
    errors = [1, 0] * 10
    good = auc("u.auc", [0.9 if e else 0.1 for e in errors], errors)
    noise = auc("u.auc", [0.5 + 0.01 * (k % 3) for k in range(20)], errors)
    d = difference(noise, good)
    assert d["paired"] and d["diff"] > 0.3 and d["change"] == "better"


def test_compare_report_renders_the_comparison_on_the_first_screen(tmp_path):
    a, b = tmp_path / "base", tmp_path / "tuned"
    write_scorecard(a, [rate("j.asr", [1.0] * 10 + [0.0] * 30), auc("u.auc", [0.5] * 20, [1, 0] * 10)])
    write_scorecard(b, [rate("j.asr", [1.0] * 25 + [0.0] * 15), rate("r.only_b", [0.0] * 10)])
    (a / "config.json").write_text(json.dumps({"model": {"name": "base-model"}}))
    res = CliRunner().invoke(main, ["audit", "--compare", str(a), str(b), "--out", str(tmp_path / "cmp")])
    assert res.exit_code == 0, res.output
    rows = {r["id"]: r for r in json.loads((tmp_path / "cmp" / "comparison.json").read_text())["rows"]}
    assert rows["j.asr"]["change"] == "worse" and rows["r.only_b"]["change"] == "only in one run"
    assert rows["u.auc"]["change"] == "only in one run"
    page = (tmp_path / "cmp" / "report.html").read_text()
    assert "base-model" in page and "+0.38 [" in page
    layout, errors = scorecard_layout(tmp_path / "cmp" / "report.html")
    assert errors == [] and layout["rows"] == 3
    assert layout["table"]["bottom"] <= layout["viewport"][1] and not layout["overflow"]


def test_compare_writes_runs_audit_compare_by_default_and_never_over_a_compared_run(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    write_scorecard(tmp_path / "a", [rate("j.asr", [0.0] * 10)])
    write_scorecard(tmp_path / "b", [rate("j.asr", [1.0] * 10)])
    res = CliRunner().invoke(main, ["audit", "--compare", "a", "b"])
    assert res.exit_code == 0 and "report: runs/audit-compare/report.html" in res.output
    res = CliRunner().invoke(main, ["audit", "--compare", "a", "b", "--out", "a"])
    assert res.exit_code == 2 and "is one of the compared runs" in res.output
    assert (tmp_path / "a" / "scorecard.json").exists() and not (tmp_path / "a" / ".superseded").exists()
    res = CliRunner().invoke(main, ["audit", "--compare", "a", "b", "--check", "a"])
    assert res.exit_code == 2 and "give --compare or --check, not both" in res.output


def test_compare_refuses_what_is_no_pair_of_audit_runs(tmp_path):
    write_scorecard(tmp_path / "a", [rate("j.asr", [0.0] * 10)])
    res = CliRunner().invoke(main, ["audit", "--compare", str(tmp_path / "a"), str(tmp_path / "a")])
    assert res.exit_code == 2 and "needs two different audit runs" in res.output
    (tmp_path / "empty").mkdir()
    res = CliRunner().invoke(main, ["audit", "--compare", str(tmp_path / "a"), str(tmp_path / "empty")])
    assert res.exit_code == 2 and "has no scorecard.json" in res.output
    assert compare_concerns([], []) == []
