"""``trustlab finetune`` end to end on a tiny random Llama with SmolLM2's tokenizer."""

from __future__ import annotations

import json

import peft  # noqa: F401  (the [test] extra installs it; a missing one must fail, not skip)
from click.testing import CliRunner

from trustlab.cli import main


def test_finetune_writes_run_folder_and_adapter(tmp_path, tokenizer, monkeypatch):
    from tests.conftest import make_tiny

    handle = make_tiny(tokenizer)
    monkeypatch.setattr("trustlab.cli.finetune.load_from_options", lambda *a, **k: handle)
    data = tmp_path / "train.jsonl"
    rows = [{"prompt": f"What is {i}+1?", "response": str(i + 1)} for i in range(6)]
    rows.append({"messages": [{"role": "user", "content": "Say hi."}, {"role": "assistant", "content": "hi"}]})
    data.write_text("\n".join(json.dumps(r) for r in rows))
    out = tmp_path / "run"
    res = CliRunner().invoke(main, ["finetune", str(data), "--optimizer", "lora-rite", "--steps", "3",
                                    "--batch-size", "2", "--rank", "2", "--alpha", "4", "--out", str(out)])
    assert res.exit_code == 0, res.output
    results = json.loads((out / "results.json").read_text())
    assert results["steps"] == 3 and results["final_loss"] is not None
    for name in ("config.json", "samples.jsonl", "loss.png", "report.html", "adapter/adapter_config.json"):
        assert (out / name).exists(), name


def test_finetune_rejects_bad_jsonl(tmp_path):
    data = tmp_path / "bad.jsonl"
    data.write_text(json.dumps({"question": "no prompt"}))  # ({"text": ...} rows are plain LM text)
    res = CliRunner().invoke(main, ["finetune", str(data), "--out", str(tmp_path / "run")])
    assert res.exit_code == 2 and "expected" in res.output


def test_finetune_reports_divergence_and_keeps_no_adapter(tmp_path, tokenizer, monkeypatch):
    from tests.conftest import make_tiny
    from tests.train.test_sft import inject_inf_after

    handle = make_tiny(tokenizer)
    inject_inf_after(handle.model, 2)
    monkeypatch.setattr("trustlab.cli.finetune.load_from_options", lambda *a, **k: handle)
    data = tmp_path / "train.jsonl"
    data.write_text("\n".join(json.dumps({"prompt": f"What is {i}+1?", "response": str(i + 1)}) for i in range(6)))
    out = tmp_path / "run"
    res = CliRunner().invoke(main, ["finetune", str(data), "--optimizer", "adamw", "--steps", "10",
                                    "--batch-size", "2", "--rank", "2", "--alpha", "4", "--out", str(out)])
    assert res.exit_code == 2, res.output
    assert "training diverged: non-finite loss first at step 3" in res.output and "stopped at step 5 of 10" in res.output
    results = json.loads((out / "results.json").read_text())
    assert results["diverged"] is True and results["first_nonfinite_step"] == 3 and results["steps_run"] == 5
    rows = [json.loads(line) for line in (out / "samples.jsonl").read_text().splitlines()]
    assert [r["loss"] is None for r in rows] == [False, False, True, True, True]
    assert not (out / "adapter").exists() and (out / "report.html").exists()
