"""The context section of ``trustlab audit`` and ``trustlab eval context``: runs, writes JSON, renders."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from tests.browser import render_dom
from trustlab.audit import run_audit
from trustlab.bench.context_qa import counterfactual_items
from trustlab.context.audit import evaluate
from trustlab.report import RunFolder


def test_context_section_is_registered():
    from trustlab.registry import get_section

    assert get_section("context").audit == "trustlab.context.audit:run"


def test_evaluate_writes_results_and_a_report_that_renders(tiny, tmp_path):
    run = RunFolder(tmp_path / "run")
    sections = evaluate(tiny, run, lengths=[100, 150], depths=[0.0, 1.0], qa=counterfactual_items(2),
                        new_tokens=2, mass_lengths=[80])
    result = json.loads((run.path / "context.json").read_text())
    assert set(result["conditions"]) == {"no_template", "template", "steered_0.9"}
    assert {"template_gap", "steering_effect", "user_attention_mass"} <= set(result)
    assert 0 <= result["user_attention_mass"]["template"] <= 1
    assert (run.path / "context_niah.png").exists()
    page = run.write_report("audit", sections)
    dom, errors = render_dom(page)
    assert "Context awareness" in dom and "Template gap" in dom and "data:image/png;base64," in dom
    assert errors == []


@pytest.mark.slow
def test_quick_audit_of_the_embedded_model_renders(smollm, tmp_path):
    page = run_audit(smollm, tmp_path / "audit", sections=["context"], quick=True)
    dom, errors = render_dom(page)
    assert "Context awareness" in dom and "Steering effect" in dom and errors == []
    result = json.loads((tmp_path / "audit" / "context.json").read_text())
    assert result["summary"]["niah"]["template"]["n"] == 1


@pytest.mark.slow
def test_eval_context_command(smollm_dir, tmp_path):
    from trustlab.cli import main

    out = tmp_path / "ctx"
    res = CliRunner().invoke(main, ["eval", "context", "--out", str(out), "--lengths", "150", "--depths", "0.5",
                                    "--qa-limit", "2", "--max-new-tokens", "4", "--alpha", "0.5"])
    assert res.exit_code == 0, res.output
    assert "report:" in res.output and (out / "report.html").exists()
    assert len((out / "samples.jsonl").read_text().splitlines()) == 3 * 3  # (1 NIH + 2 QA) x 3 conditions
