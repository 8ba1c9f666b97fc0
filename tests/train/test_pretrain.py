"""Pretraining through the HF Trainer with a loss-scheduled sampler (:mod:`trustlab.train.pretrain`,
:class:`trustlab.data.hf.SamplerTrainer`): real tiny Llama runs in subprocesses.

* A run SIGKILLed mid-way and resumed from its last checkpoint yields the same block order, step for
  step, and ends in the same sampler state as an uninterrupted run (the issue's resume requirement).
* Two processes under ``torchrun`` (gloo, CPU) see disjoint halves of every step and end with identical
  sampler states.
* The compact vocabulary maps ids both ways; bad input (blocks shorter than 2 tokens, a sampler of another
  size, a Trainer/sampler step mismatch) is refused with a clear error.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from tests.servers import free_port
from trustlab.errors import TrustlabError

WORKER = Path(__file__).with_name("pretrain_worker.py")
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": "", "PYTHONPATH": os.pathsep.join(sys.path),
       "TRUSTLAB_NO_PROGRESS": "1"}


def _run(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    proc = subprocess.run([sys.executable, str(WORKER), *args], capture_output=True, text=True, timeout=300, env=ENV)
    if check:
        assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


def _order(path: Path) -> dict[int, list[int]]:
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    return {r["step"]: r["indices"] for r in rows}  # a step redone after the resume overwrites the lost one


@pytest.mark.parametrize("schedule", ["lfr", "random"])
def test_killed_and_resumed_run_keeps_the_same_order(tmp_path: Path, schedule: str):
    whole, broken = tmp_path / "whole", tmp_path / "broken"
    whole.mkdir(), broken.mkdir()
    _run(str(whole), schedule)
    died = _run(str(broken), schedule, "--die-at", "17", check=False)
    assert died.returncode == -9  # SIGKILL: no cleanup ran
    assert (broken / "checkpoints" / "checkpoint-10" / "trustlab_sampler.pt").exists()
    assert not (broken / "state.pt").exists()
    _run(str(broken), schedule, "--resume")
    a, b = _order(whole / "order.jsonl"), _order(broken / "order.jsonl")
    assert sorted(a) == sorted(b) == list(range(30))
    assert a == b
    sa = torch.load(whole / "state.pt", weights_only=True)
    sb = torch.load(broken / "state.pt", weights_only=True)
    assert sa["step"] == sb["step"] == 30
    if schedule == "lfr":
        assert [e["active"] for e in sa["events"]] == [e["active"] for e in sb["events"]]
        assert [e["kind"] for e in sa["events"]] == ["learn", "focus", "review", "focus"]
        assert torch.allclose(sa["last_loss"], sb["last_loss"], atol=1e-4)
    history = [json.loads(line) for line in (broken / "history.jsonl").read_text().splitlines()]
    assert [r["step"] for r in history] == [0, 10, 20, 30]  # the lost evaluation at 20 is not duplicated


def test_two_process_torchrun_pretraining_splits_every_step(tmp_path: Path):
    torchrun = shutil.which("torchrun", path=os.path.dirname(sys.executable)) or shutil.which("torchrun")
    assert torchrun, "torchrun is not installed"
    cmd = [torchrun, "--nproc_per_node", "2", "--rdzv-backend", "c10d", "--rdzv-endpoint", f"127.0.0.1:{free_port()}",
           str(WORKER), str(tmp_path), "lfr"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=ENV)
    assert proc.returncode == 0, proc.stderr[-4000:]
    r0, r1 = _order(tmp_path / "order-rank0.jsonl"), _order(tmp_path / "order-rank1.jsonl")
    assert sorted(r0) == sorted(r1) == list(range(30))
    focus = set(range(10, 20)) | set(range(25, 30))
    for step in range(30):
        assert len(r0[step]) == len(r1[step]) == 4
        if step not in focus:  # uniform passes over all 96 blocks: 8 distinct per step
            assert not set(r0[step]) & set(r1[step]), step
    s0 = torch.load(tmp_path / "state-rank0.pt", weights_only=True)
    s1 = torch.load(tmp_path / "state-rank1.pt", weights_only=True)
    assert s0["step"] == s1["step"] == 30
    assert torch.equal(s0["last_loss"], s1["last_loss"]) and torch.equal(s0["visits"], s1["visits"])
    assert int(s0["visits"].sum()) == 30 * 8  # both ranks' losses were recorded on both


def test_vocab_round_trip_and_bad_input(tmp_path: Path):
    import transformers

    from trustlab.data import LFRSampler
    from trustlab.data.hf import SamplerTrainer
    from trustlab.data.lfr import RANDOM_SCHEDULE
    from trustlab.train.pretrain import BlockDataset, PretrainConfig, Vocab, pretrain, tiny_llama

    blocks = torch.tensor([[5, 9, 40, 9], [40, 40, 5, 7]])
    vocab = Vocab.from_blocks([blocks])
    assert len(vocab) == 5
    assert torch.equal(vocab.decode(vocab.encode(blocks)), blocks)
    assert vocab.encode(torch.tensor([1000])).tolist() == [0]  # an id the corpus never used
    vocab.save(tmp_path)
    assert Vocab.load(tmp_path).kept.tolist() == [5, 7, 9, 40]
    cfg = PretrainConfig(hidden=16, layers=1, heads=2, block_len=4, batch_size=2, steps=4, bf16=False)
    model = tiny_llama(len(vocab), cfg)
    with pytest.raises(TrustlabError, match="block_len >= 2"):
        pretrain(model, torch.zeros(3, 1, dtype=torch.long), {}, LFRSampler(3, 4, 2, RANDOM_SCHEDULE), cfg, tmp_path)
    with pytest.raises(TrustlabError, match="covers 7 blocks"):
        pretrain(model, vocab.encode(blocks), {}, LFRSampler(7, 4, 2, RANDOM_SCHEDULE), cfg, tmp_path)
    with pytest.raises(TrustlabError, match="plans 9 batches"):
        SamplerTrainer(model=model, args=transformers.TrainingArguments(str(tmp_path), max_steps=4, report_to=[],
                                                                         use_cpu=True),
                       train_dataset=BlockDataset(blocks), train_sampler=LFRSampler(2, 9, 1, RANDOM_SCHEDULE))


def test_pretrain_cli_writes_model_and_curve_then_resumes(tmp_path: Path):
    from click.testing import CliRunner

    from trustlab.cli import main

    out = tmp_path / "pt"
    args = ["pretrain", "--corpus", "pydoc-topics", "--steps", "8", "--batch-size", "4", "--block-len", "32",
            "--max-blocks", "200", "--hidden", "32", "--layers", "1", "--heads", "2", "--eval-every", "4",
            "--save-every", "4", "--lfr-schedule", "learn:0.5,focus:0.5:0.3", "--out", str(out)]
    r = CliRunner().invoke(main, args)
    assert r.exit_code == 0, r.output
    res = json.loads((out / "results.json").read_text())
    assert res["schedule"] == "lfr" and res["steps"] == 8 and res["final_val_ppl"] > 1
    assert [p["kind"] for p in res["phases"]] == ["learn", "focus"] and res["phases"][1]["active"] == 60
    assert (out / "model" / "config.json").exists() and (out / "model" / "trustlab_vocab.json").exists()
    assert (out / "perplexity.png").exists() and (out / "report.html").exists()
    rows = [json.loads(line) for line in (out / "samples.jsonl").read_text().splitlines()]
    assert [row["step"] for row in rows] == [0, 4, 8]
    r = CliRunner().invoke(main, [*args, "--resume"])  # finished: resumes at step 8 and only re-saves
    assert r.exit_code == 0, r.output
    assert [json.loads(line)["step"] for line in (out / "samples.jsonl").read_text().splitlines()] == [0, 4, 8]
    r = CliRunner().invoke(main, ["pretrain", "--corpus", str(tmp_path / "missing"), "--out", str(out)])
    assert r.exit_code == 2 and "neither" in r.output


def test_nanogpt_style_example_runs(tmp_path: Path):
    example = Path(__file__).resolve().parents[2] / "examples" / "lfr_nanogpt_loop.py"
    proc = subprocess.run([sys.executable, str(example), "--steps", "20", "--batch-size", "4", "--block-len", "32",
                           "--out", str(tmp_path)], capture_output=True, text=True, timeout=300, env=ENV)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "events: [('learn', 0," in proc.stdout and "('focus'," in proc.stdout


def test_nan_losses_stop_training_with_a_clear_error(tmp_path: Path):
    from trustlab.data import LFRSampler, NonFiniteLossError
    from trustlab.train.pretrain import PretrainConfig, pretrain, tiny_llama

    cfg = PretrainConfig(hidden=16, layers=1, heads=2, block_len=8, batch_size=2, steps=10, bf16=False, eval_every=5)
    model = tiny_llama(16, cfg)
    with torch.no_grad():
        model.model.embed_tokens.weight[3] = float("nan")  # any block holding token 3 has a NaN loss
    blocks = torch.randint(4, 16, (6, 8))
    blocks[2, 5] = 3
    sampler = LFRSampler(6, 10, 2, seed=0)
    with pytest.raises(NonFiniteLossError, match="NaN or infinite"):
        pretrain(model, blocks, {"val": blocks[:2]}, sampler, cfg, tmp_path, progress=False)
    assert sampler.visits[2] == 0 and sampler.step < 10  # the bad batch was not recorded
