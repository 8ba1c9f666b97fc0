"""Run folders, the results schema, atomic writes, HTML reports and the README table."""

from __future__ import annotations

import json

import pytest

from tests.browser import render_dom
from trustlab.report import (
    BenchmarkRecord,
    Claim,
    RunFolder,
    Section,
    plt,
    read_benchmark,
    read_jsonl,
    read_summary,
    write_benchmark,
    write_json,
    write_summary,
)
from trustlab.report.table import END, START, method_table, update_readme


def test_atomic_json_leaves_no_temp_files_and_writes_null_for_nan(tmp_path):
    path = write_json(tmp_path / "a" / "r.json", {"x": float("nan"), "y": [1.5, float("inf")]})
    assert json.loads(path.read_text()) == {"x": None, "y": [1.5, None]}
    assert [p.name for p in path.parent.iterdir()] == ["r.json"]


def test_atomic_write_keeps_the_old_file_on_failure(tmp_path):
    path = write_json(tmp_path / "r.json", {"ok": 1})
    with pytest.raises(TypeError):
        write_json(path, {"bad": object()})
    assert json.loads(path.read_text()) == {"ok": 1}
    assert len(list(tmp_path.iterdir())) == 1


def test_jsonl_skips_a_torn_last_line(tmp_path):
    p = tmp_path / "s.jsonl"
    p.write_text('{"id": 1}\n{"id": 2}\n{"id": 3, "te')
    assert [r["id"] for r in read_jsonl(p)] == [1, 2]
    p.write_text('{"id": 1}\nnot json\n{"id": 3}\n')
    with pytest.raises(ValueError, match="line 2"):
        list(read_jsonl(p))


def test_run_folder_resume(tmp_path):
    run = RunFolder(tmp_path / "run", {"seed": 0})
    run.add_sample({"id": "a", "v": 1})
    run.add_sample({"id": "b", "v": 2})
    again = RunFolder(tmp_path / "run", {"seed": 0})
    assert again.done_keys() == {"a", "b"}
    cfg = json.loads((tmp_path / "run" / "config.json").read_text())
    assert cfg["seed"] == 0 and "machine" in cfg


def _claim(**kw):
    base = dict(method="m", claim="x beats y", metric="acc", ours=0.9, baseline=0.8, baseline_name="y",
                reproduced=True, setup={"model": "tiny", "quick": False}, n=40, ci=[0.01, 0.2], valid_rate=0.95)
    return Claim(**{**base, **kw})


def test_summary_schema(tmp_path):
    write_summary(tmp_path, [_claim()])
    got = read_summary(tmp_path / "summary.json")[0]
    assert got["ours"] == 0.9 and got["n"] == 40 and got["ci"] == [0.01, 0.2] and got["verdict"] == "reproduced"
    (tmp_path / "summary.json").write_text(json.dumps({"method": "m", "reproduced": "yes"}))
    with pytest.raises(ValueError, match="lacks"):
        read_summary(tmp_path / "summary.json")


@pytest.mark.parametrize("bad, message", [
    (dict(n=None), "'n'"),
    (dict(ci=[0.3, 0.1]), "lo <= hi"),
    (dict(valid_rate=1.5), "valid_rate"),
    (dict(setup={"model": "tiny"}), "quick"),
    (dict(measurable=False), "not measurable cannot count as reproduced"),
])
def test_summary_refuses_claims_that_break_the_schema(tmp_path, bad, message):
    with pytest.raises(ValueError, match=message):
        write_summary(tmp_path, [_claim(**bad)])
    assert not (tmp_path / "summary.json").exists()


def test_not_measurable_is_its_own_verdict(tmp_path):
    c = _claim(reproduced=False, measurable=False, valid_rate=0.2)
    assert c.verdict == "not measurable" and _claim(reproduced=False).verdict == "not reproduced"
    write_summary(tmp_path / "results" / "m", [c])
    assert read_summary(tmp_path / "results" / "m" / "summary.json")[0]["verdict"] == "not measurable"


def test_quick_summaries_never_land_under_results(tmp_path):
    quick = _claim(setup={"model": "tiny", "quick": True})
    with pytest.raises(ValueError, match="quick"):
        write_summary(tmp_path / "results" / "m", [quick])
    assert write_summary(tmp_path / "runs" / "reproduce" / "m", [quick]).exists()


def test_benchmark_ratio_and_target(tmp_path):
    r = BenchmarkRecord(measure="tokens/s", ours=95.0, peer=100.0, peer_name="raw", lower_is_better=False,
                        target=0.95)
    assert r.ratio == pytest.approx(0.95) and r.meets_target
    slow = BenchmarkRecord(measure="s/step", ours=2.0, peer=1.0, peer_name="adamw", lower_is_better=True,
                           target=1.25)
    assert slow.meets_target is False
    write_benchmark(tmp_path / "b.json", [r, slow])
    rows = read_benchmark(tmp_path / "b.json")
    assert [x["meets_target"] for x in rows] == [True, False] and "cpus" in rows[0]["machine"]


def test_readme_table_only_shows_measured_claims(tmp_path):
    res = tmp_path / "results"
    write_summary(res / "lora-rite", [_claim(method="lora-rite", ours=0.5, baseline=0.6, baseline_name="Adam",
                                             reproduced=False, n=30, ci=[-0.25, 0.05], valid_rate=None),
                                      _claim(method="lora-rite", metric="em", reproduced=False, measurable=False,
                                             valid_rate=0.3)])
    table = method_table(res)
    assert "0/2 claims reproduced, 1 not measurable" in table
    assert "✘ acc: 0.5 vs 0.6 (Adam; n=30, Δ 95% CI [-0.25, 0.05])" in table
    assert "⚠ not measurable: em: 0.9 vs 0.8 (y; n=40, Δ 95% CI [0.01, 0.2], valid 30%)" in table
    from trustlab.registry import PLANNED, all_methods

    implemented = [m for m in all_methods() if not m.planned]
    assert table.count("not yet implemented") == len(PLANNED) and \
        table.count("implemented; no committed results") == len(implemented) - 1  # all but lora-rite
    readme = tmp_path / "README.md"
    readme.write_text(f"intro\n{START}\nold\n{END}\noutro\n")
    assert update_readme(readme, res) and "0/2 claims" in readme.read_text()
    assert not update_readme(readme, res)
    readme.write_text("no markers")
    with pytest.raises(ValueError, match="markers"):
        update_readme(readme, res)


def test_readme_table_refuses_a_quick_summary(tmp_path):
    folder = tmp_path / "results" / "clue"
    folder.mkdir(parents=True)
    write_json(folder / "summary.json", [_claim(method="clue", setup={"quick": True}).to_dict()])
    with pytest.raises(ValueError, match="quick run"):
        method_table(tmp_path / "results")


def test_report_html_renders_in_chromium(tmp_path):
    run = RunFolder(tmp_path / "run")
    pyplot = plt()
    fig, ax = pyplot.subplots()
    ax.plot([0, 1], [1, 0])
    img = run.save_plot(fig, "curve")
    page = run.write_report("demo <report>", [
        Section("First section", "Some text & more.", table=[{"a": 1.23456, "b": "x"}], images=[img]),
        Section("Second section", "Two\n\nparagraphs"),
    ])
    dom, console_errors = render_dom(page)
    assert "First section" in dom and "Second section" in dom and "demo &lt;report&gt;" in dom
    assert "data:image/png;base64," in dom and "<td>1.235</td>" in dom
    assert console_errors == []
