"""`trustlab uncertainty` (live and post-hoc) and the uncertainty audit section on a tiny random model."""

from __future__ import annotations

import json

from click.testing import CliRunner

from trustlab.cli import main
from trustlab.report import RunFolder


def test_uncertainty_command_live_and_post_hoc(tiny_dir, tmp_path):
    out = tmp_path / "run"
    args = ["--model", str(tiny_dir), "--out", str(out), "--samples", "2", "--max-new-tokens", "4"]
    res = CliRunner().invoke(main, ["uncertainty", "Who founded Apple?", *args])
    assert res.exit_code == 0, res.output
    assert "output score" in res.output and (out / "report.html").exists()
    gens = tmp_path / "gens.jsonl"
    gens.write_text(json.dumps({"prompt": "q", "samples": ["Paris is in France.", "Paris, France."],
                                "answer": "Paris."}) + "\n")
    res = CliRunner().invoke(main, ["uncertainty", "--from-jsonl", str(gens), *args])
    assert res.exit_code == 0, res.output
    row = json.loads((out / "samples.jsonl").read_text().splitlines()[-1])
    assert row["samples"] == ["Paris is in France.", "Paris, France."] and row["n_extractions"] == 3


def test_uncertainty_command_needs_a_question(tiny_dir):
    res = CliRunner().invoke(main, ["uncertainty", "--model", str(tiny_dir)])
    assert res.exit_code != 0 and "give a question" in res.output


def test_uncertainty_audit_section(tiny, tmp_path):
    from trustlab.uncertainty import audit

    sections = audit.run(tiny, RunFolder(tmp_path), quick=True, seed=0)
    assert sections[0].title.startswith("Uncertainty") and len(sections[0].table) == 2
    assert json.loads((tmp_path / "uncertainty.json").read_text())["roc_auc"].keys() == {
        "clue", "lexical_similarity", "semantic_entropy"}
