"""``trustlab finetune --rehearsal``: full fine-tuning of a `trustlab pretrain` model folder with old data
mixed in (mix-cd and random), forgetting measured on held-out old blocks, and the bad input it refuses."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

from trustlab.cli import main
from trustlab.data.corpus import arithmetic_examples
from trustlab.train.pretrain import PretrainConfig, Vocab, save_model, smollm2_tokenizer, tiny_llama


@pytest.fixture(scope="module")
def model_folder(tmp_path_factory) -> Path:
    """A tiny compact-vocabulary Llama as `trustlab pretrain` saves it (untrained weights suffice here)."""
    tok = smollm2_tokenizer()
    from pydoc_data.topics import topics

    text = " ".join(list(topics.values())[:40]) + " " + " ".join(f"{e['prompt']}{e['response']}" for e in
                                                               arithmetic_examples(50, 0))
    ids = torch.tensor(tok(text, add_special_tokens=False)["input_ids"] + [tok.eos_token_id])
    vocab = Vocab.from_blocks([ids.reshape(1, -1)])
    cfg = PretrainConfig(hidden=32, layers=1, heads=2, block_len=32, bf16=False)
    folder = tmp_path_factory.mktemp("pretrained") / "model"
    save_model(tiny_llama(len(vocab), cfg), vocab, cfg, folder)
    return folder


@pytest.fixture
def data(tmp_path: Path) -> Path:
    path = tmp_path / "new.jsonl"
    path.write_text("".join(json.dumps(e) + "\n" for e in arithmetic_examples(64, 0)))
    return path


@pytest.mark.parametrize("policy", ["mixcd", "random"])
def test_finetune_with_rehearsal_writes_forgetting_and_estimates(tmp_path: Path, model_folder: Path, data: Path,
                                                                 policy: str):
    out = tmp_path / "run"
    r = CliRunner().invoke(main, ["finetune", str(data), "--model", str(model_folder), "--full", "--lr", "1e-3",
                                  "--steps", "6", "--batch-size", "4", "--rehearsal", policy, "--rehearsal-budget",
                                  "2", "--old-data", "pydoc-topics", "--old-pool", "40", "--old-block-len", "32",
                                  "--out", str(out)])
    assert r.exit_code == 0, r.output
    res = json.loads((out / "results.json").read_text())
    assert res["rehearsal"] == policy and res["full"] and res["steps_run"] == 6
    assert res["rehearsed"]["samples"] == 6 * 2
    assert res["old_data"]["source"] == "pydoc-topics" and res["old_data"]["pool_blocks"] == 40
    assert res["old_loss_before"] > 0 and "forgetting" in res
    est = res["cd_estimates"]
    assert len(est["alphas"]) == 10 and sum(est["observations"]) == 12
    assert est["used_for_sampling"] == (policy == "mixcd")
    assert (out / "model" / "trustlab_vocab.json").exists() and (out / "report.html").exists()


def test_bad_rehearsal_input(tmp_path: Path, model_folder: Path, data: Path):
    runner = CliRunner()
    r = runner.invoke(main, ["finetune", str(data), "--model", str(model_folder), "--full", "--optimizer", "loraplus",
                             "--out", str(tmp_path / "a")])
    assert r.exit_code != 0 and "--full trains every weight with adamw" in r.output
    (tmp_path / "old").mkdir()
    (tmp_path / "old" / "x.txt").write_text("\n")
    r = runner.invoke(main, ["finetune", str(data), "--model", str(model_folder), "--full", "--rehearsal", "mixcd",
                             "--old-data", str(tmp_path / "old"), "--out", str(tmp_path / "b")])
    assert r.exit_code == 2 and "holds no text" in r.output
    r = runner.invoke(main, ["finetune", str(data), "--model", str(model_folder), "--full", "--rehearsal", "mixcd",
                             "--old-data", "pydoc-topics", "--old-block-len", "100000", "--out", str(tmp_path / "c")])
    assert r.exit_code == 2 and "fewer than one block" in r.output
