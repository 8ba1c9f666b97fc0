"""Role models of the reproductions: run() options, where results go, the `reproduce` options, and
quick runs on tiny random models where each role is another handle (recorded in config and summary)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from tests.conftest import make_tiny
from tests.safety.fakes import spy
from trustlab.cli import main
from trustlab.errors import TrustlabError
from trustlab.reproduce import (
    default_out,
    is_default_model,
    load_roles,
    model_slug,
    run_options,
    run_reproduction,
)
from trustlab.safety.backtranslation import FORMAT_TEXT
from trustlab.safety.refusal import JUDGE_TEMPLATE


def test_role_options_are_read_from_each_run_signature():
    assert run_options("clue") == ["model", "extractor_model", "nli_model"]
    assert run_options("backtranslation") == ["model", "backtranslator_model", "judge_model", "smoothllm"]
    assert not any(o.endswith("model") for o in run_options("lora-rite"))
    with pytest.raises(TrustlabError, match="the lora-rite reproduction has no option judge_model"):
        run_reproduction("lora-rite", quick=True, judge_model="embedded:qwen2.5-coder-1.5b")


def test_results_of_other_models_sit_beside_the_default():
    assert default_out("clue", quick=False) == Path("results/clue")
    assert default_out("clue", quick=False, options={"model": "embedded", "nli_model": None}) == Path("results/clue")
    assert default_out("clue", quick=False, options={"model": "embedded:smollm2-135m"}) == Path("results/clue")
    assert default_out("clue", quick=True, options={"model": "embedded:qwen2.5-coder-1.5b"}) == Path(
        "runs/reproduce/clue--qwen2.5-coder-1.5b")
    assert default_out("backtranslation", quick=False, options={
        "model": "embedded:qwen2.5-coder-0.5b", "judge_model": "embedded:qwen2.5-coder-1.5b",
        "backtranslator_model": "embedded:qwen2.5-coder-0.5b"}) == Path(
        "results/backtranslation--qwen2.5-coder-0.5b__judge-qwen2.5-coder-1.5b")
    assert default_out("clue", quick=False, options={"model": "Qwen/Qwen2.5-0.5B-Instruct", "nli_model": "embedded"}) == \
        Path("results/clue--qwen-qwen2.5-0.5b-instruct__nli-smollm2-135m")
    assert model_slug("openai:http://127.0.0.1:8080/v1") == "openai-127.0.0.1-8080-v1"
    assert is_default_model(None) and not is_default_model("embedded:gemma-3-270m")


def test_roles_share_handles_and_name_the_role_of_a_bad_spec(tiny, tmp_path):
    roles = load_roles({"model": tiny, "judge": None, "backtranslator": tiny})
    assert roles["judge"] is roles["model"] is roles["backtranslator"] is tiny
    with pytest.raises(TrustlabError, match="the judge model: .*no-such-model"):
        load_roles({"model": tiny, "judge": str(tmp_path / "no-such-model")})


def test_reproduce_refuses_a_role_the_method_lacks_and_a_bad_spec(tmp_path, tiny_dir):
    runner = CliRunner()
    res = runner.invoke(main, ["reproduce", "lora-rite", "--quick", "--judge-model", "embedded", "--out", str(tmp_path)])
    assert res.exit_code == 2 and "--judge-model does not apply to lora-rite (its role options: none of them)" in res.output
    res = runner.invoke(main, ["reproduce", "clue", "--quick", "--judge-model", "embedded", "--out", str(tmp_path)])
    assert res.exit_code == 2 and "--judge-model does not apply to clue (its role options: --model, " \
                                  "--extractor-model, --nli-model)" in res.output
    res = runner.invoke(main, ["reproduce", "clue", "--quick", "--smoothllm", "--out", str(tmp_path)])
    assert res.exit_code == 2 and "--smoothllm does not apply to clue" in res.output
    res = runner.invoke(main, ["reproduce", "backtranslation", "--quick", "--model", str(tiny_dir), "--judge-model",
                               str(tmp_path / "no-such-model"), "--out", str(tmp_path / "bt")])
    assert res.exit_code == 2 and "Invalid value for --judge-model: the judge model: " in res.output
    assert not (tmp_path / "bt" / "config.json").exists()  # refused before the run folder was written


@pytest.fixture
def tinies(tokenizer):
    def make(seed: int, name: str):
        handle = spy(make_tiny(tokenizer, seed=seed, max_position_embeddings=2048))
        handle.name = name
        return handle

    return make


def test_quick_backtranslation_with_another_judge_and_smoothllm(tinies, tmp_path):
    from trustlab.reproduce.backtranslation import run

    target, judge = tinies(0, "tiny-target"), tinies(1, "tiny-judge")
    claims = run(tmp_path, quick=True, model=target, judge_model=judge, smoothllm=True)
    assert all(c.setup["roles"] == {"model": "tiny-target", "backtranslator": "tiny-target", "judge": "tiny-judge"}
               for c in claims)
    config = json.loads((tmp_path / "config.json").read_text())
    assert {r: d["name"] for r, d in config["role_models"].items()} == claims[0].setup["roles"]
    details = json.loads((tmp_path / "details.json").read_text())
    keyword, llm_judge = details["detectors"]
    assert (llm_judge["detector"], llm_judge["model"], llm_judge["n"]) == ("llm-judge", "tiny-judge", 40)
    assert llm_judge["valid_rate"] == 1.0 and keyword["model"] is None  # the judge's error rates on the labelled set
    assert "smoothllm" in details["arms"] and details["setup"]["smoothllm_copies"] == 3
    ask = JUDGE_TEMPLATE.split("\n", 1)[0]
    assert judge.calls["forward"] and all(p.startswith(ask) for p in judge.calls["forward"])
    assert not judge.calls["generate"] and not any(ask in p for p in target.calls["generate"] + target.calls["forward"])
    assert not any(FORMAT_TEXT in p for p in judge.calls["forward"])


def test_quick_clue_with_another_extractor_and_nli(tinies, tmp_path):
    from trustlab.reproduce.clue import run

    llm, helper = tinies(0, "tiny-under-test"), tinies(1, "tiny-helper")
    (claim,) = run(tmp_path, quick=True, model=llm, extractor_model=helper, nli_model=helper)
    assert claim.setup["roles"] == {"model": "tiny-under-test", "extractor": "tiny-helper", "nli": "tiny-helper"}
    assert "nli_valid_rate" in claim.setup and claim.n == 6
    config = json.loads((tmp_path / "config.json").read_text())
    assert config["role_models"]["nli"]["name"] == "tiny-helper"
    assert not llm.calls["forward"] and len(llm.calls["generate"]) == 12  # 6 questions, greedy + samples
    assert helper.calls["forward"] and helper.calls["generate"]  # NLI (white-box) and extraction
    details = json.loads((tmp_path / "details.json").read_text())
    assert details["nli_sanity"]["scorer"] == "llm-nli:tiny-helper"
