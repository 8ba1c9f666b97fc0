"""`trustlab uncertainty` (live and post-hoc) and the uncertainty audit section on a tiny random model."""

from __future__ import annotations

import json

from click.testing import CliRunner

from trustlab.cli import main
from trustlab.report import RunFolder
from trustlab.uncertainty.concepts import example_copies


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
    saved = json.loads((tmp_path / "uncertainty.json").read_text())
    assert saved["roc_auc"].keys() == {"clue", "lexical_similarity", "semantic_entropy"}
    reports, validity = saved["reports"], saved["validity"]
    assert validity["bad_extractions"] == sum(r["bad_extractions"] for r in reports)
    assert validity["echoed_concepts"] == sum(len(r["echoed_concepts"]) for r in reports)
    assert "copies of the extraction prompt's one-shot example" in sections[0].text
    for row, r in zip(sections[0].table, reports, strict=True):  # the top concept is never an example copy
        texts = " ".join([r["answer"], *r["samples"]])
        assert row["most uncertain concept"] == "-" or not example_copies([r["concepts"][0]["concept"]], texts)[0]


def test_the_uncertainty_row_names_what_would_make_it_measurable():
    from trustlab.uncertainty.audit import remeasure_command

    weak_nli = remeasure_command("embedded:m", False, 5, 7)
    assert weak_nli.startswith("trustlab audit --model embedded:m --nli-model ")
    assert remeasure_command("embedded:m", True, 0, 12, nli="embedded:n") == \
        "trustlab reproduce clue --model embedded:m --nli-model embedded:n"  # all right: ask more questions
    assert remeasure_command("embedded:m", True, 12, 1).startswith("trustlab reproduce clue")
    assert remeasure_command("embedded:m", True, 4, 8).startswith("trustlab audit")  # measurable: roles as advice
