"""LSP on real models: the embedded SmolLM2 through the HF backend and through a real llama.cpp server; a
program learned on one model runs on another; the CLI writes its run folder; clear errors on bad input."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from tests.conftest import make_tiny
from trustlab.bench.ilbench import make_syntree
from trustlab.errors import EndpointError
from trustlab.programs import LSP, Program

SMALL = {"max_nodes": 2, "max_depth": 2, "n_rule_samples": 1, "n_validate": 3, "rulesum_batch": 4,
         "learner_max_new_tokens": 24, "answer_max_new_tokens": 4, "min_errors": 1, "rule_retries": 1}


@pytest.fixture(scope="module")
def task():
    return make_syntree(depth=2, n_train=8, n_test=3, seed=0)


def _xy(rows):
    return [r["input"] for r in rows], [r["label"] for r in rows]


def _check(program: Program, task) -> None:
    info = program.info
    assert info["calls"]["learner"] >= 1 and info["calls"]["module"] >= len(task.train)
    assert info["validity"]["valid_rate"] is not None  # rules and answers were parsed and counted
    assert sum(info["answers"]["how"].values()) >= 1
    preds = program.predict_many(_xy(task.test)[0])
    assert all(p.label in task.labels and p.trace[0]["node"] == "root" for p in preds)
    again = Program.from_text(program.to_text(), model=program.model)
    assert [p.label for p in again.predict_many(_xy(task.test)[0])] == [p.label for p in preds]


def test_lsp_on_smollm2_hf_and_transfer_to_another_model(smollm, tokenizer, task):
    program = LSP(smollm, **SMALL).fit(*_xy(task.train))
    _check(program, task)
    other = make_tiny(tokenizer, arch="qwen2", seed=1)  # a different (random) model: the program still runs
    loaded = Program.from_json(json.loads(json.dumps(program.to_json())))
    runner = loaded.runner(other)
    preds = loaded.predict_many(_xy(task.test)[0], runner=runner)
    assert len(preds) == len(task.test) and all(p.label in task.labels for p in preds)
    assert runner.calls >= len(task.test) and sum(runner.stats.how.values()) >= len(task.test)


def test_lsp_through_llama_cpp_server(llama_server, task):
    from trustlab.models import load_model

    llm = load_model(f"openai:{llama_server.base_url}", model_name=llama_server.model_alias, max_concurrency=4)
    program = LSP(llm, **SMALL).fit(*_xy(task.train))
    _check(program, task)


def test_unreachable_endpoint_is_a_clear_error(task):
    from tests.servers import free_port
    from trustlab.models import load_model

    llm = load_model(f"openai:http://127.0.0.1:{free_port()}/v1", model_name="x", max_retries=0, timeout=2,
                     probe=False, capabilities={"chat_template": True})
    with pytest.raises(EndpointError):
        LSP(llm, **SMALL).fit(*_xy(task.train))


def test_learn_program_cli(tmp_path, tiny_dir):
    from trustlab.cli import main

    task = make_syntree(depth=1, n_train=14, n_test=4, ood=True, n_ood=3, seed=2)
    data = tmp_path / "train.jsonl"
    rows = task.train + task.ood_test
    data.write_text("".join(json.dumps({"input": r["input"], "label": r["label"]}) + "\n" for r in rows))
    test = tmp_path / "test.jsonl"
    test.write_text("".join(json.dumps({"input": r["input"], "label": r["label"]}) + "\n" for r in task.test))
    out = tmp_path / "run"
    pattern = "".join(f"(?=.*\\b{a} is {v}\\b)" for a, v in task.held_out)  # both, in any order
    res = CliRunner().invoke(main, ["learn-program", str(data), "--test", str(test), "--ood-split", pattern,
                                    "--model", str(tiny_dir), "--max-nodes", "2", "--rule-samples", "1",
                                    "--validate", "3", "--rulesum-batch", "3", "--out", str(out)])
    assert res.exit_code == 0, res.output
    assert "LSP program; labels:" in res.output and "[#0]" in res.output
    for name in ("config.json", "results.json", "samples.jsonl", "report.html", "program.json", "program.txt",
                 "nodes_accuracy.png"):
        assert (out / name).exists(), name
    results = json.loads((out / "results.json").read_text())
    assert results["n_test"] == 4 and results["n_ood"] == 3 and 0 <= results["ood_accuracy"] <= 1
    assert Program.load(out / "program.json").n_nodes >= 1
    from tests.browser import render_dom  # the report renders in headless Chromium, rules and plot included

    dom, errors = render_dom(out / "report.html")
    assert not errors, errors
    assert "[#0]" in dom and "nodes_accuracy" in dom and "LSP program" in dom
    # bad input: clear errors, no traceback
    (tmp_path / "one.jsonl").write_text('{"input": "a", "label": "x"}\n{"input": "b", "label": "x"}\n'
                                        '{"input": "c", "label": "x"}\n{"input": "d", "label": "x"}\n'
                                        '{"input": "e", "label": "x"}\n')
    res = CliRunner().invoke(main, ["learn-program", str(tmp_path / "one.jsonl"), "--model", str(tiny_dir),
                                    "--out", str(tmp_path / "r2")])
    assert res.exit_code == 2 and "at least two labels" in res.output
    (tmp_path / "empty.jsonl").write_text("")
    res = CliRunner().invoke(main, ["learn-program", str(tmp_path / "empty.jsonl"), "--out", str(tmp_path / "r3")])
    assert res.exit_code == 2 and "no rows" in res.output
    (tmp_path / "t.jsonl").write_text('{"input": "z", "label": "never-seen"}\n')
    res = CliRunner().invoke(main, ["learn-program", str(data), "--test", str(tmp_path / "t.jsonl"),
                                    "--out", str(tmp_path / "r4")])
    assert res.exit_code == 2 and "no training row has" in res.output
