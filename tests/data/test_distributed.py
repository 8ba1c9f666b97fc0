"""LFR and MixCD under a real two-process ``torchrun`` (gloo, CPU): one schedule, split by rank.

Each rank of ``dist_worker.py train`` trains a tiny Llama under ``DistributedDataParallel`` on the batches its
sampler yields and feeds the real per-row losses back. The test then checks, per sampler: every step's two
rank slices are disjoint (wherever the global batch itself has no repeat, i.e. away from the end of a pass
over a Focus set) and are the slices two replayed samplers give when fed the all-gathered losses; the two
ranks end with identical sampler states (LFR's ``last_loss``, MixCD's ``alphas`` and ``counts``) holding
every rank's feedback, and identical weights; LFR goes through its Focus phases.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from tests.data.dist_worker import (
    LFR_BATCH,
    MIXCD_BATCH,
    MIXCD_REHEARSAL,
    MIXCD_STEPS,
    lfr_setup,
    mixcd_setup,
)
from tests.data.test_lfr import assert_states_equal


def launch(tmp_path: Path, which: str) -> tuple[list[dict], list[dict]]:
    """Run the two-process training; (per-rank records, per-rank final sampler states)."""
    torchrun = Path(sys.executable).with_name("torchrun")
    assert torchrun.exists(), f"no torchrun next to {sys.executable}"
    worker = Path(__file__).with_name("dist_worker.py")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": "",
           "PYTHONPATH": os.pathsep.join(sys.path)}
    cmd = [str(torchrun), "--standalone", "--nproc_per_node", "2", str(worker), "train", str(tmp_path), which]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=900, env=env)
    except subprocess.TimeoutExpired as exc:
        pytest.fail(f"torchrun did not finish in 900 s; its output so far:\n{exc.stdout}\n{exc.stderr}")
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    runs = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]
    states = [torch.load(tmp_path / f"state-rank{r}.pt", weights_only=True) for r in (0, 1)]
    for r, run in enumerate(runs):
        assert (run["rank"], run["world"], run["backend"]) == (r, 2, "gloo")
        assert (run["sampler_rank"], run["sampler_world"]) == (r, 2)  # taken from torch.distributed
    assert runs[0]["checksum"] == runs[1]["checksum"]  # DDP kept the weights in step
    return runs, states


def replay(runs: list[dict], replicas: list) -> None:
    """Feed two single-process replicas (rank 0 and 1 of world 2) what all-gathering gave each rank; every
    step they must yield the batches each rank recorded."""
    steps = len(runs[0]["records"])
    for step in range(steps):
        r0, r1 = (run["records"][step] for run in runs)
        assert r0["step"] == r1["step"] == step
        for replica, rec in zip(replicas, (r0, r1)):
            assert next(replica.batches()) == rec["indices"]
        indices = r0["indices"] + r1["indices"]  # rank order, as gather_feedback concatenates
        losses = torch.tensor(r0["losses"] + r1["losses"], dtype=torch.float32)
        for replica in replicas:
            replica.update(indices, losses)


def test_lfr_two_ranks_split_one_schedule(tmp_path):
    runs, states = launch(tmp_path, "lfr")
    assert_states_equal(states[0], states[1])
    replicas = [lfr_setup(rank=r, world_size=2)[1] for r in (0, 1)]
    replay(runs, replicas)
    for replica in replicas:
        assert_states_equal(replica.state_dict(), states[0])
    sampler = replicas[0]
    steps, g = sampler.total_steps, 2 * LFR_BATCH
    assert [e["kind"] for e in states[0]["events"]] == ["learn", "focus", "review", "focus"]
    assert states[0]["events"][1]["active"] == 16  # ceil(0.25 * 64), after one Learn pass (nothing forgotten)
    assert int(states[0]["visits"].sum()) == steps * g  # both ranks' losses recorded on each rank
    assert torch.isfinite(states[0]["last_loss"]).all()  # Learn's one pass saw every block
    active = {e["phase"]: e["active"] for e in states[0]["events"]}
    checked = 0
    for step in range(steps):
        p = sampler.phase_index(step)
        pos = (step - sampler.phase_starts[p]) * g
        if pos // active[p] != (pos + g - 1) // active[p]:
            continue  # the step straddles two passes over the Focus set: a block may come twice
        a, b = (run["records"][step]["indices"] for run in runs)
        assert len(set(a + b)) == g and set(a).isdisjoint(b), step
        checked += 1
    assert checked >= 18  # all of Learn, the first Focus and Review (64, 16, 64 are multiples of 8)
    focus = [s for s in range(steps) if sampler.schedule[sampler.phase_index(s)].kind == "focus"]
    first_focus = states[0]["events"][1]
    kept = set()
    for step in focus[:6]:
        kept |= {i for run in runs for i in run["records"][step]["indices"]}
    assert len(kept) == first_focus["active"] and first_focus["step"] == focus[0] == 8


def test_mixcd_two_ranks_split_one_schedule(tmp_path):
    runs, states = launch(tmp_path, "mixcd")
    assert runs[0]["prior"] == runs[1]["prior"]
    assert_states_equal(states[0], states[1])
    prior = np.array(runs[0]["prior"], dtype=np.float32)
    replicas = [mixcd_setup(prior, rank=r, world_size=2) for r in (0, 1)]
    replay(runs, replicas)
    for replica in replicas:
        assert_states_equal(replica.state_dict(), states[0])
    estimator = replicas[0].estimator
    observed = MIXCD_STEPS * 2 * MIXCD_REHEARSAL
    assert int(states[0]["estimator"]["counts"].sum()) == observed == estimator.counts.sum()
    assert int(states[0]["rehearsed"].sum()) == observed
    assert not np.allclose(estimator.alphas, 0.5)  # the estimates moved from their prior
    n_new = replicas[0].n_new
    new_seen = []
    for step in range(MIXCD_STEPS):
        a, b = (run["records"][step]["indices"] for run in runs)
        assert len(a) == len(b) == MIXCD_BATCH + MIXCD_REHEARSAL
        new_a, new_b = a[:MIXCD_BATCH], b[:MIXCD_BATCH]
        assert set(new_a).isdisjoint(new_b) and max(new_a + new_b) < n_new
        assert min(a[MIXCD_BATCH:] + b[MIXCD_BATCH:]) >= n_new
        new_seen += new_a + new_b
    per_pass = n_new // (2 * MIXCD_BATCH)
    for start in range(0, MIXCD_STEPS - per_pass + 1, per_pass):  # 48 new samples: a pass every 6 steps
        assert sorted(new_seen[start * 2 * MIXCD_BATCH:(start + per_pass) * 2 * MIXCD_BATCH]) == list(range(n_new))


