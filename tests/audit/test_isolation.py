"""A crashing audit section is reported with its error; the other sections run and keep their results."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from tests.browser import render_dom
from tests.test_registry import scratch_registry  # noqa: F401  (fixture)
from trustlab.audit import AuditSectionError, run_audit
from trustlab.cli import main
from trustlab.errors import CapabilityError
from trustlab.registry import register_method


def _mask_step(width: int) -> None:
    raise IndexError(f"The shape of the mask [{width}] at index 0 does not match the shape of the indexed tensor [1]")


def crashing_section(model, run, *, quick: bool, seed: int):
    """A section that fails part-way, after writing a file, the way a real one would."""
    (run.path / "crashing.json").write_text("{}")
    _mask_step(591)


def unsupported_section(model, run, *, quick: bool, seed: int):
    raise CapabilityError("this section needs attentions; the endpoint gives none")


@pytest.fixture
def broken_sections(scratch_registry):  # noqa: F811
    register_method(id="crashing-method", title="Crashing method", area="train", spec="crashing.md",
                    audit="tests.audit.test_isolation:crashing_section", section="crashing")
    register_method(id="unsupported-method", title="Unsupported method", area="train", spec="unsupported.md",
                    audit="tests.audit.test_isolation:unsupported_section", section="unsupported")


def test_a_crash_is_reported_and_the_other_sections_are_kept(broken_sections, tiny, tmp_path):
    out = tmp_path / "audit"
    with pytest.raises(AuditSectionError) as info:
        run_audit(tiny, out, sections=["crashing", "uncertainty", "unsupported"], quick=True)
    err = info.value
    assert err.report == out / "report.html" and list(err.failed) == ["crashing"]
    assert "crashing (IndexError: The shape of the mask [591]" in str(err) and str(out / "report.html") in str(err)

    results = json.loads((out / "results.json").read_text())
    assert results["sections"] == ["crashing", "uncertainty", "unsupported"]
    failure = results["failed"]["crashing"]
    assert failure["type"] == "IndexError" and "mask [591]" in failure["message"]
    assert [f["function"] for f in failure["frames"]][-2:] == ["crashing_section", "_mask_step"]
    assert "Traceback (most recent call last)" in failure["traceback"]
    assert set(results["skipped"]) == {"unsupported"} and "attentions" in results["skipped"]["unsupported"]
    # the section after the crash ran in full and kept its files
    uncertainty = json.loads((out / "uncertainty.json").read_text())
    assert set(uncertainty["roc_auc"]) == {"clue", "lexical_similarity", "semantic_entropy"}
    assert (out / "crashing.json").exists()

    dom, errors = render_dom(out / "report.html")
    assert errors == []
    assert "crashing (failed)" in dom and "IndexError" in dom and "mask [591]" in dom
    assert "_mask_step" in dom and "crashing_section" in dom  # the traceback's last frames
    assert "Uncertainty: CLUE concept-level vs sequence-level" in dom
    assert "unsupported (skipped)" in dom


def test_trustlab_audit_exits_1_naming_the_failed_section(broken_sections, tiny_dir, tmp_path):
    out = tmp_path / "audit"
    res = CliRunner().invoke(main, ["audit", "--model", str(tiny_dir), "--out", str(out), "--quick",
                                    "--section", "crashing", "--section", "jailbreak"])
    assert res.exit_code == 1, res.output
    assert "Traceback" not in res.output
    errors = [line for line in res.stderr.splitlines() if line.startswith("error:")]  # (weights load bars too)
    assert len(errors) == 1 and errors[0] == res.stderr.strip().splitlines()[-1]
    assert errors[0].startswith("error: audit section failed: crashing (IndexError: The shape of the mask")
    assert errors[0].endswith(str(out / "report.html"))
    page = (out / "report.html").read_text()
    assert "Jailbreak: attack success and benign refusal" in page and "crashing (failed)" in page
    assert (out / "jailbreak.json").exists()


def test_skipped_sections_alone_do_not_fail_the_audit(broken_sections, tiny_dir, tmp_path):
    out = tmp_path / "audit"
    res = CliRunner().invoke(main, ["audit", "--model", str(tiny_dir), "--out", str(out), "--quick",
                                    "--section", "unsupported"])
    assert res.exit_code == 0, res.output
    assert res.stdout.strip() == f"report: {out / 'report.html'}"
    assert json.loads((out / "results.json").read_text())["failed"] == {}
