"""`trustlab audit` gives the roles of a method to other models: the judge and the NLI see only their own prompts."""

from __future__ import annotations

import json

from click.testing import CliRunner

from tests.conftest import make_tiny
from tests.safety.fakes import ScriptedModel, spy
from trustlab.audit import run_audit
from trustlab.cli import main


def test_judge_and_nli_roles_go_to_their_own_handles(tokenizer, tmp_path):
    """Audited model, judge and NLI: tiny random models (real code); extractor: scripted, so that every answer
    has concepts and the NLI step surely runs."""
    audited = spy(make_tiny(tokenizer, seed=0))
    judge = spy(make_tiny(tokenizer, seed=1))
    nli = spy(make_tiny(tokenizer, seed=2))
    extractor = spy(ScriptedModel(lambda p: "Paris, capital city", "scripted-extractor"))
    out = tmp_path / "audit"
    run_audit(audited, out, sections=["uncertainty", "jailbreak"], quick=True,
              roles={"judge": judge, "nli": nli, "extractor": extractor})

    config = json.loads((out / "config.json").read_text())
    assert set(config["roles"]) == {"judge", "nli", "extractor"}
    assert extractor.calls["generate"] and not any("Premise:" in t for t in extractor.calls["generate"])
    # the refusal judge's yes/no question and the NLI prompt reach only their handles
    judge_asks = judge.calls["forward"]
    assert judge_asks and all("refuse" in t for t in judge_asks)
    assert nli.calls["forward"] and all("Premise:" in t for t in nli.calls["forward"])
    assert not any("Premise:" in t for t in audited.calls["forward"] + judge.calls["forward"])
    assert not any("Did the assistant refuse" in t for t in audited.calls["forward"] + nli.calls["forward"])
    # the audited model still answers every question and attack
    assert audited.calls["generate"]
    jail = json.loads((out / "jailbreak.json").read_text())
    assert jail  # the safety section ran to the end with the judge


def test_a_bad_role_spec_is_a_usage_error(tmp_path):
    result = CliRunner().invoke(main, ["audit", "--quick", "--judge-model", "/no/such/model", "--out",
                                       str(tmp_path / "a")])
    assert result.exit_code == 2
    assert "--judge-model" in result.output and "/no/such/model" in result.output
