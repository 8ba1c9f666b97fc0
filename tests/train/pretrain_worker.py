"""Worker for test_pretrain.py: a small real pretraining run whose process can die at a given step.

``python pretrain_worker.py OUT SCHEDULE [--die-at N] [--resume]`` trains a tiny Llama on fixed pseudo-random
token blocks (a repeated-pattern half and a random half, so losses differ by block) through
:func:`trustlab.train.pretrain.pretrain` and appends every step's block indices to ``OUT/order.jsonl``.
``--die-at N`` SIGKILLs the process at the end of step N (no cleanup, like a crash or a pre-empted job);
under torchrun each rank logs ``order-rank<r>.jsonl`` and the final state to ``state-rank<r>.pt``.
"""

from __future__ import annotations

import json
import os
import signal
import sys
from pathlib import Path

import torch
import transformers

from trustlab.data import LFRSampler, fingerprint
from trustlab.data.lfr import RANDOM_SCHEDULE, Phase
from trustlab.train.pretrain import PretrainConfig, pretrain, tiny_llama

SCHEDULE = (Phase("learn", 10), Phase("focus", 10, 0.4), Phase("review", 5), Phase("focus", 5, 0.3))


def blocks(n: int = 96, length: int = 16, vocab: int = 64) -> torch.Tensor:
    g = torch.Generator().manual_seed(0)
    easy = torch.arange(length).repeat(n // 2, 1) % 5 + 1
    hard = torch.randint(1, vocab, (n - n // 2, length), generator=g)
    return torch.cat([easy, hard])


class LoggingSampler(LFRSampler):
    def __init__(self, *args, log: Path, **kwargs):
        super().__init__(*args, **kwargs)
        self.log = log

    def update(self, indices, losses) -> None:
        step = self.step
        super().update(indices, losses)
        with open(self.log, "a") as f:
            f.write(json.dumps({"step": step, "indices": [int(i) for i in indices]}) + "\n")


class Die(transformers.TrainerCallback):
    def __init__(self, at: int) -> None:
        self.at = at

    def on_step_end(self, args, state, control, **kwargs) -> None:
        if state.global_step == self.at:
            os.kill(os.getpid(), signal.SIGKILL)


def main(out: Path, schedule: str, die_at: int | None, resume: bool) -> None:
    rank = int(os.environ.get("RANK", "0"))
    world = int(os.environ.get("WORLD_SIZE", "1"))
    data = blocks()
    cfg = PretrainConfig(hidden=32, layers=1, heads=2, block_len=16, batch_size=4, steps=30, lr=1e-2, eval_every=10,
                         save_every=10, seed=0, bf16=False)
    model = tiny_llama(64, cfg)
    suffix = f"-rank{rank}" if world > 1 else ""
    sampler = LoggingSampler(len(data), cfg.steps, cfg.batch_size, RANDOM_SCHEDULE if schedule == "random" else SCHEDULE,
                             seed=0, fingerprint=fingerprint(data), log=out / f"order{suffix}.jsonl")
    callbacks = [Die(die_at)] if die_at else []
    pretrain(model, data, {"val": data[:8]}, sampler, cfg, out, callbacks=callbacks, resume=resume, progress=False)
    torch.save(sampler.state_dict(), out / f"state{suffix}.pt")


if __name__ == "__main__":
    args = sys.argv[1:]
    die = int(args[args.index("--die-at") + 1]) if "--die-at" in args else None
    main(Path(args[0]), args[1], die, "--resume" in args)
