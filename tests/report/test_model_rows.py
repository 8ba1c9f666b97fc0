"""The README table's rows per (method, role models): results/<method>/ and results/<method>--<slug>/."""

from __future__ import annotations

import shutil

import pytest

from trustlab.report import Claim, write_summary
from trustlab.report.table import method_table, roles_label, summary_paths


def claim(roles: dict[str, str] | None = None, **kw) -> Claim:
    setup = {"model": (roles or {}).get("model", "m"), "quick": False, **({"roles": roles} if roles else {})}
    fields = dict(method="clue", claim="CLUE detects wrong answers", metric="ROC-AUC", ours=0.7, baseline=0.6,
                  baseline_name="msp", reproduced=True, setup=setup, n=30, ci=[0.01, 0.2], valid_rate=0.9)
    return Claim(**{**fields, **kw})


def rows_of(table: str, title: str) -> list[str]:
    return [r for r in table.splitlines() if r.startswith(f"| {title}")]


def test_one_row_per_model_beside_the_unchanged_default_row(tmp_path):
    res = tmp_path / "results"
    write_summary(res / "clue", [claim()])  # an older summary: no roles recorded
    write_summary(res / "clue--qwen2.5-coder-1.5b", [claim({"model": "embedded:qwen2.5-coder-1.5b",
                                                            "extractor": "embedded:qwen2.5-coder-1.5b",
                                                            "nli": "embedded:qwen2.5-coder-1.5b"}, ours=0.8)])
    write_summary(res / "clue--smollm2-135m__nli-qwen2.5-coder-1.5b", [claim(
        {"model": "embedded:SmolLM2-135M-Instruct", "extractor": "embedded:SmolLM2-135M-Instruct",
         "nli": "embedded:qwen2.5-coder-1.5b"}, reproduced=False)])
    (res / "clue" / ".superseded").mkdir()  # never read
    rows = rows_of(method_table(res), "CLUE concept-level uncertainty")
    assert len(rows) == 3
    assert rows[0].startswith("| CLUE concept-level uncertainty | defend | 1/1 claims reproduced | ✔ ROC-AUC: 0.7 vs")
    assert rows[1].startswith("| CLUE concept-level uncertainty (qwen2.5-coder-1.5b) | defend | 1/1")
    assert rows[2].startswith("| CLUE concept-level uncertainty (SmolLM2-135M-Instruct; nli: qwen2.5-coder-1.5b) |"
                              " defend | 0/1")
    assert [p.parent.name for p in summary_paths(res, "clue")] == [
        "clue", "clue--qwen2.5-coder-1.5b", "clue--smollm2-135m__nli-qwen2.5-coder-1.5b"]


def test_a_method_with_only_other_model_results_and_a_quick_one(tmp_path):
    res = tmp_path / "results"
    write_summary(res / "clue--gemma-3-270m", [claim({"model": "embedded:gemma-3-270m"})])
    rows = rows_of(method_table(res), "CLUE concept-level uncertainty")
    assert rows == [rows[0]] and "(gemma-3-270m)" in rows[0]
    assert roles_label([claim().to_dict()]) is None
    quick = res.parent / "runs" / "clue--x"
    write_summary(quick, [claim({"model": "x"}, setup={"model": "x", "quick": True, "roles": {"model": "x"}})])
    shutil.move(quick, res / "clue--x")
    with pytest.raises(ValueError, match="clue--x/summary.json comes from a quick run"):
        method_table(res)

