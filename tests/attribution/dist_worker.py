"""``torchrun --standalone --nproc_per_node 2 dist_worker.py OUT``: each rank joins a gloo group, trains the
tiny DDPM of :data:`DIST` under DistributedDataParallel (``OUT/ddpm``), then caches Diffusion-TracIn train
features in ``OUT/features`` (its own shards only) and attributes :data:`N_QUERY` queries (split over the
ranks, gathered). Rank ``r`` writes ``OUT/rank<r>.pt``: its shards, the scores, and its final weights."""

from __future__ import annotations

import datetime
import sys
from pathlib import Path

import torch

DIST = {"epochs": 2, "checkpoints": 2, "batch_size": 8, "lr": 2e-3, "num_timesteps": 100,
        "block_out_channels": (8, 16), "norm_num_groups": 4}
N_TRAIN, N_QUERY, SHARD = 32, 5, 8
ATTR = {"n_avg": 3, "n_noise": 2, "device": "cpu", "shard_size": SHARD}


def main(out: Path) -> None:
    import faulthandler

    import torch.distributed as dist

    from tests.data.dist_worker import quit_without_teardown

    faulthandler.dump_traceback_later(280, exit=True)  # a hang fails with every thread's stack (test limit 300 s)

    from trustlab.attribution import DiffusionTracIn
    from trustlab.attribution.ddpm import DDPMConfig, load_images, load_run, train_ddpm

    dist.init_process_group("gloo", timeout=datetime.timedelta(seconds=120))
    rank = dist.get_rank()
    data = load_images("digits", split="train", limit=N_TRAIN)
    train_ddpm(data.x, out / "ddpm", DDPMConfig(**DIST), data_spec=data.spec, device="cpu")
    task, loaded = load_run(out / "ddpm")
    attr = DiffusionTracIn(task, retrac=True, cache_dir=out / "features", **ATTR)
    attr.cache(loaded.x)
    mine = [j for j, _, _ in attr.store.my_shards(N_TRAIN)]
    scores = attr.attribute(loaded.x[:N_QUERY])
    torch.save({"rank": rank, "world": dist.get_world_size(), "shards": mine, "scores": scores,
                "weights": task.checkpoints[-1].load()}, out / f"rank{rank}.pt")
    quit_without_teardown(dist)


if __name__ == "__main__":
    main(Path(sys.argv[1]))
