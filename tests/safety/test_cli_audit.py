"""`trustlab eval jailbreak` and the jailbreak audit section, wired end to end on a tiny random model."""

from __future__ import annotations

import json

from click.testing import CliRunner

from trustlab.cli import main
from trustlab.report import RunFolder, Section


def test_eval_jailbreak_writes_a_run_folder(tiny_dir, tmp_path):
    out = tmp_path / "run"
    res = CliRunner().invoke(main, ["eval", "jailbreak", "--model", str(tiny_dir), "--out", str(out), "--n-harmful", "2",
                                    "--n-benign", "2", "--max-new-tokens", "4", "--no-smoothllm"])
    assert res.exit_code == 0, res.output
    assert "backtranslation" in res.output and "report:" in res.output
    results = json.loads((out / "results.json").read_text())
    assert set(results["arms"]) == {"none", "backtranslation", "backtranslation_no_filter"}
    assert results["detectors"][0]["detector"] == "keyword"
    assert len((out / "samples.jsonl").read_text().splitlines()) == 4
    assert "Jailbreak: attack success" in (out / "report.html").read_text()


def test_jailbreak_audit_section(tiny, tmp_path):
    from trustlab.safety import audit

    sections = [s for s in audit.run(tiny, RunFolder(tmp_path), quick=True, seed=0) if isinstance(s, Section)]
    assert [s.title.split(":")[0] for s in sections] == ["Jailbreak", "Jailbreak"]
    assert sections[0].images and (tmp_path / "jailbreak.json").exists()
