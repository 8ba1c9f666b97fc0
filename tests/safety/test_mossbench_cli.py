"""`trustlab eval mossbench`, the oversensitivity audit section, the record and the reproduction (quick, on a
tiny random model over project-made data; claims rebuilt from canned details)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner

from trustlab.cli import main
from trustlab.registry import get_method
from trustlab.report import RunFolder, Section
from trustlab.safety.mossbench_images import write_image_set


def test_the_record():
    record = get_method("mossbench")
    assert record.area == "defend" and record.section == "oversensitivity" and record.spec == "mossbench.md"
    assert "eval mossbench" in record.cli


def test_eval_mossbench_writes_a_run_folder_labelled_as_the_text_proxy(tiny_dir, tmp_path):
    data, out = write_image_set(tmp_path / "data"), tmp_path / "run"
    res = CliRunner().invoke(main, ["eval", "mossbench", "--model", str(tiny_dir), "--data", str(data), "--out",
                                    str(out), "--per-type", "1", "--max-new-tokens", "4", "--system-prompt", "safety"])
    assert res.exit_code == 0, res.output
    assert "MOSSBench-text proxy benign" in res.output and "report:" in res.output
    results = json.loads((out / "results.json").read_text())
    assert results["mode"] == "text" and results["label"] == "MOSSBench-text proxy"
    assert results["system_prompt"].startswith("You are a careful")
    assert len((out / "samples.jsonl").read_text().splitlines()) == 6  # 3 types x 2 splits
    assert "Oversensitivity: MOSSBench-text proxy" in (out / "report.html").read_text()


def test_eval_mossbench_image_mode_on_a_text_model_fails_clearly(tiny_dir, tmp_path):
    data = write_image_set(tmp_path / "data")
    res = CliRunner().invoke(main, ["eval", "mossbench", "--model", str(tiny_dir), "--data", str(data), "--out",
                                    str(tmp_path / "run"), "--mode", "image", "--per-type", "1"])
    assert res.exit_code == 2 and "text-only" in res.output


def test_audit_section_falls_back_to_the_proxy_for_a_text_model(tiny, tmp_path, monkeypatch):
    from trustlab.safety import mossbench_audit

    monkeypatch.setenv("TRUSTLAB_MOSSBENCH_DATA", str(write_image_set(tmp_path / "data")))
    out = mossbench_audit.run(tiny, RunFolder(tmp_path / "audit"), quick=True, seed=0)
    sections = [s for s in out if isinstance(s, Section)]
    row = out[-1]
    assert row.id == "oversensitivity.benign_refusal" and row.threshold == 0.2
    assert row.n == 7 and not row.measurable and "too few items" in row.why_not  # 3 + 2 + 2 drawn benign scenes
    assert sections[0].title == "Oversensitivity: MOSSBench-text proxy"
    assert sections[0].images and {r["split"] for r in sections[0].table} == {"benign", "contrast"}
    assert (tmp_path / "audit" / "mossbench.json").exists()


def test_quick_reproduction_runs_resumes_and_writes_both_claims(tiny, tmp_path, monkeypatch):
    from trustlab.reproduce import mossbench as repro

    monkeypatch.setenv("TRUSTLAB_MOSSBENCH_DATA", str(write_image_set(tmp_path / "data")))
    out = tmp_path / "out"
    claims = repro.run(out, quick=True, model=tiny)
    assert [c.method for c in claims] == ["mossbench", "mossbench"]
    assert all(c.setup["quick"] and c.n for c in claims)
    rows = (out / "samples.jsonl").read_text().splitlines()
    assert len(rows) == 3 * 14  # 3 levels x (7 benign + 7 contrast): types 1, 2, 3 have 4, 2, 2 scenes
    details = json.loads((out / "details.json").read_text())
    assert details["label"] == "MOSSBench-text proxy"
    assert details["judges"]["keyword_on_drawn_image_set"]["n"] == 32
    valid = [v for lvl in details["valid_per_item"].values() for s in lvl.values() for v in s]
    assert len(valid) == len(rows) and claims[0].valid_rate == pytest.approx(sum(valid) / len(valid))
    again = repro.run(out, quick=True, model=tiny)  # resumes: nothing generated twice
    assert len((out / "samples.jsonl").read_text().splitlines()) == len(rows)
    assert [c.to_dict() for c in again] == [c.to_dict() for c in claims]


def _details(benign: dict[str, list[int]], contrast: dict[str, list[int]]) -> dict:
    return {"setup": {"seed": 0, "model": "m", "quick": False},
            "per_item": {lvl: {"benign": benign[lvl], "contrast": contrast[lvl]} for lvl in benign}}


def test_claims_follow_the_pass_rules_fixed_before_the_run():
    from trustlab.reproduce.mossbench import make_claims

    rng = np.random.default_rng(0)

    def flips(p: float, n: int = 100) -> list[int]:
        return (rng.random(n) < p).astype(int).tolist()

    safer = make_claims(_details({"none": flips(0.1), "helpful": flips(0.05), "safety": flips(0.6)},
                                 {"none": flips(0.3), "helpful": flips(0.2), "safety": flips(0.9)}))
    assert safer[0].verdict == "reproduced" and safer[0].ours == pytest.approx(1.0)
    assert safer[1].verdict == "reproduced" and safer[1].ci[0] > 0 and safer[1].n == 100
    flat = make_claims(_details({"none": [0] * 10, "helpful": [0] * 10, "safety": [0] * 10},
                                {"none": [1] * 10, "helpful": [0] * 10, "safety": [1] * 10}))
    assert flat[0].verdict == "not measurable" and flat[0].ours is None
    assert flat[1].verdict == "not reproduced"
    reversed_ = make_claims(_details({"none": flips(0.6), "helpful": flips(0.3), "safety": flips(0.1)},
                                     {"none": flips(0.1), "helpful": flips(0.4), "safety": flips(0.9)}))
    assert reversed_[0].verdict == "not reproduced" and reversed_[0].ours < 0


def test_audit_plan_counts_the_calls_of_run():
    from trustlab.safety.mossbench_audit import plan

    quick, half = plan(None, quick=True), plan(None, scale=0.5)
    assert (quick.calls, quick.new_tokens) == (18, 18 * 32)
    assert half.calls == 30 and half.items == "15 benign + 15 contrast items"


def test_audit_skips_the_section_when_the_data_cannot_be_had(tiny, tmp_path, monkeypatch):
    """Offline with no local copy and nothing cached (here: a mirror URL on a closed local port), the section is
    reported as skipped with where to put the data; the audit itself succeeds. `eval mossbench` says the same."""
    from tests.servers import free_port
    from trustlab.audit import run_audit
    from trustlab.errors import DataUnavailableError
    from trustlab.safety import mossbench_audit

    monkeypatch.setenv("TRUSTLAB_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("TRUSTLAB_MOSSBENCH_URL", f"http://127.0.0.1:{free_port()}/mossbench")
    monkeypatch.setenv("TRUSTLAB_MOSSBENCH_DATA", str(tmp_path / "empty"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataUnavailableError, match="TRUSTLAB_MOSSBENCH_DATA"):
        mossbench_audit.run(tiny, RunFolder(tmp_path / "a"), quick=True, seed=0)
    report = run_audit(tiny, tmp_path / "audit", sections=["oversensitivity"], quick=True)
    results = json.loads((tmp_path / "audit" / "results.json").read_text())
    assert "oversensitivity" in results["skipped"] and "not available here" in results["skipped"]["oversensitivity"]
    assert "oversensitivity (skipped)" in report.read_text()


def test_responses_that_echo_their_system_prompt_are_not_data():
    from trustlab.reproduce.mossbench import make_claims, response_valid
    from trustlab.safety.mossbench import SYSTEM_PROMPTS

    safety = SYSTEM_PROMPTS["safety"]
    assert response_valid("I can't help with that.", safety)
    assert not response_valid("  ", safety) and not response_valid("", "")
    assert not response_valid("Sure. " + safety, safety)  # a copy of the system prompt
    assert response_valid("Sure. " + safety, "")  # nothing to echo without a system prompt
    details = _details({"none": [0] * 4, "helpful": [0] * 4, "safety": [1] * 4},
                       {"none": [0] * 4, "helpful": [1] * 4, "safety": [1] * 4})
    assert [c.valid_rate for c in make_claims(details)] == [None, None]  # written before the field existed
    details["valid_per_item"] = {lvl: {"benign": [True] * 4, "contrast": [True] * 4} for lvl in ("none", "helpful")}
    details["valid_per_item"]["safety"] = {"benign": [False, True, True, True], "contrast": [True] * 4}
    assert [c.valid_rate for c in make_claims(details)] == [pytest.approx(23 / 24), pytest.approx(7 / 8)]
