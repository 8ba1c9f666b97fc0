"""Training and attribution under a real two-process ``torchrun`` (gloo, CPU).

The DDPM trained by two ranks (DistributedDataParallel, batch 8 each) must equal the one-process run with
batch 16 on the same seeded permutation (the union of the two rank slices of every step), and the ReTrac
scores computed with the train shards split over the ranks must equal the one-process scores.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from tests.attribution.dist_worker import ATTR, DIST, N_QUERY, N_TRAIN, SHARD


def test_two_ranks_train_and_attribute_like_one(tmp_path):
    from trustlab.attribution import DiffusionTracIn
    from trustlab.attribution.ddpm import DDPMConfig, load_images, load_run, train_ddpm
    from trustlab.report.io import read_json

    torchrun = Path(sys.executable).with_name("torchrun")
    assert torchrun.exists(), f"no torchrun next to {sys.executable}"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": "", "PYTHONPATH": os.pathsep.join(sys.path)}
    cmd = [str(torchrun), "--standalone", "--nproc_per_node", "2", str(Path(__file__).with_name("dist_worker.py")),
           str(tmp_path)]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env)
    except subprocess.TimeoutExpired as exc:
        pytest.fail(f"torchrun did not finish in 300 s:\n{exc.stdout}\n{exc.stderr}")
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    ranks = [torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in (0, 1)]
    assert [(r["rank"], r["world"]) for r in ranks] == [(0, 2), (1, 2)]
    assert ranks[0]["shards"] == [0, 2] and ranks[1]["shards"] == [1, 3]  # disjoint, N_TRAIN / SHARD = 4 shards
    assert len(list((tmp_path / "features").rglob("shard*.pt"))) == DIST["checkpoints"] * N_TRAIN // SHARD
    torch.testing.assert_close(ranks[0]["scores"], ranks[1]["scores"])  # gathered on every rank
    assert ranks[0]["scores"].shape == (N_QUERY, N_TRAIN)
    assert read_json(tmp_path / "ddpm" / "ddpm.json")["world_size"] == 2

    data = load_images("digits", split="train", limit=N_TRAIN)
    single = tmp_path / "single"
    train_ddpm(data.x, single, DDPMConfig(**{**DIST, "batch_size": 2 * DIST["batch_size"]}), data_spec=data.spec,
               device="cpu")
    one, _ = load_run(single)
    ref = one.checkpoints[-1].load()
    for k, v in ranks[0]["weights"].items():
        torch.testing.assert_close(v, ref[k], rtol=1e-4, atol=1e-5)
    task, loaded = load_run(tmp_path / "ddpm")
    assert [c.weight for c in task.checkpoints] == [c.weight for c in one.checkpoints]  # global batch 16
    alone = DiffusionTracIn(task, retrac=True, **ATTR)
    alone.cache(loaded.x)
    torch.testing.assert_close(alone.attribute(loaded.x[:N_QUERY]), ranks[0]["scores"], rtol=1e-4, atol=1e-7)
