"""Worker programs for the sampler tests in ``tests/data``, and the sampler setups they share with them.

Two programs:

* ``torchrun --standalone --nproc_per_node 2 dist_worker.py train OUT lfr|mixcd``: each rank joins a gloo
  process group, builds the sampler (rank and world size from ``torch.distributed``), trains a tiny
  ``LlamaForCausalLM`` wrapped in ``DistributedDataParallel`` on the batches it yields, and feeds every
  row's real loss back with ``update()``. Each rank writes ``OUT/rank<r>.json`` (its indices and losses per
  step, and a checksum of its weights) and ``OUT/state-rank<r>.pt`` (its final sampler state).
* ``python dist_worker.py resume OUT VARIANT KILL_AT``: a single process that runs a :data:`VARIANTS`
  sampler on :func:`synthetic_losses`, appends each step's indices to ``OUT/order.jsonl`` and saves the
  sampler state to ``OUT/state.pt`` after every step; at step ``KILL_AT`` (after logging that step's
  batch, before its update) it SIGKILLs itself. Started again (``KILL_AT = -1``) it loads ``state.pt`` and
  finishes, writing ``OUT/final.pt``.
"""

from __future__ import annotations

import datetime
import io
import json
import os
import signal
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from trustlab.data import LFRSampler, MixCD, fingerprint
from trustlab.data.lfr import DEFAULT_SCHEDULE, Phase

# --- the single-process setups (resume tests) ---------------------------------------------------------------


def synthetic_losses(indices, step: int) -> np.ndarray:
    """A loss in [0.1, 4.1) per index that depends only on (index, step): a stand-in for a model's."""
    i = np.asarray(indices, np.int64)
    return ((i * 2654435761 + (step + 1) * 40503) % 1000 / 250.0 + 0.1).astype(np.float32)


def lfr_uniform() -> LFRSampler:
    return LFRSampler(30, 24, 4, DEFAULT_SCHEDULE, seed=3, fingerprint="lfr-30")


def lfr_weighted() -> LFRSampler:
    return LFRSampler(30, 24, 4, DEFAULT_SCHEDULE, seed=5, focus_sampling="ppl_weighted", exclude_stalled=True,
                      clusters=np.arange(30) % 3, fingerprint="lfr-30")


def _prior() -> np.ndarray:
    return np.random.default_rng(1).gamma(2.0, size=60)


def mixcd_mixcd() -> MixCD:
    return MixCD(14, _prior(), 20, 4, 3, "mixcd", n_bins=5, prior_correct=np.arange(60) % 7 != 0, seed=2,
                 delta=-0.5, fingerprint="mixcd-74")


def mixcd_random() -> MixCD:
    return MixCD(14, _prior(), 20, 4, 3, "random", seed=2, fingerprint="mixcd-74")


def mixcd_none() -> MixCD:
    return MixCD(14, _prior(), 20, 4, 0, "none", seed=2, fingerprint="mixcd-74")


VARIANTS: dict[str, Callable[[], LFRSampler | MixCD]] = {
    "lfr": lfr_uniform, "lfr-weighted": lfr_weighted, "mixcd": mixcd_mixcd, "random": mixcd_random,
    "none": mixcd_none}


def run_steps(sampler: LFRSampler | MixCD, steps: int | None = None) -> list[list[int]]:
    """Draw and feed back (:func:`synthetic_losses`) ``steps`` batches (default: to the end); the batches."""
    out, batches = [], sampler.batches()
    for _ in range(sampler.num_batches() if steps is None else steps):
        batch = next(batches)
        sampler.update(batch, synthetic_losses(batch, sampler.step))
        out.append(batch)
    return out


def save_atomic(state: dict, path: Path) -> None:
    buf = io.BytesIO()
    torch.save(state, buf)
    tmp = path.with_suffix(".tmp")
    tmp.write_bytes(buf.getvalue())
    os.replace(tmp, path)  # a kill leaves the previous state or this one, never half a file


def resume(out: Path, variant: str, kill_at: int) -> None:
    sampler = VARIANTS[variant]()
    state = out / "state.pt"
    if state.exists():
        sampler.load_state_dict(torch.load(state, weights_only=True))
    with open(out / "order.jsonl", "a") as log:
        for batch in sampler.batches():
            step = sampler.step
            log.write(json.dumps({"step": step, "indices": batch, "pid": os.getpid()}) + "\n")
            log.flush()
            if step == kill_at:
                os.kill(os.getpid(), signal.SIGKILL)
            sampler.update(batch, synthetic_losses(batch, step))
            save_atomic(sampler.state_dict(), state)
    torch.save(sampler.state_dict(), out / "final.pt")


# --- the two-process setups (torchrun) ----------------------------------------------------------------------

VOCAB, LENGTH = 64, 12
LFR_SCHEDULE = (Phase("learn", 8), Phase("focus", 6, 0.25), Phase("review", 4), Phase("focus", 4, 0.5))
LFR_BATCH = MIXCD_BATCH = MIXCD_REHEARSAL = 4
MIXCD_STEPS = 20


def token_blocks(n: int, seed: int, pattern: int) -> torch.Tensor:
    """(n, LENGTH) blocks: the first half a repeated pattern (learnable), the rest random tokens."""
    g = torch.Generator().manual_seed(seed)
    easy = (torch.arange(LENGTH).repeat(n // 2, 1) * pattern + torch.randint(0, 3, (n // 2, 1), generator=g)) % 9 + 1
    return torch.cat([easy, torch.randint(1, VOCAB, (n - n // 2, LENGTH), generator=g)])


def lfr_setup(rank: int | None = None, world_size: int | None = None) -> tuple[torch.Tensor, LFRSampler]:
    data = token_blocks(64, seed=0, pattern=1)
    total = sum(p.length for p in LFR_SCHEDULE)
    return data, LFRSampler(len(data), total, LFR_BATCH, LFR_SCHEDULE, seed=0, rank=rank, world_size=world_size,
                            fingerprint=fingerprint(data))


def mixcd_data() -> tuple[torch.Tensor, torch.Tensor]:
    """(new-task blocks, old blocks)."""
    return token_blocks(48, seed=1, pattern=5), token_blocks(96, seed=2, pattern=1)


def mixcd_setup(prior_loss, rank: int | None = None, world_size: int | None = None) -> MixCD:
    new, old = mixcd_data()
    return MixCD(len(new), prior_loss, MIXCD_STEPS, MIXCD_BATCH, MIXCD_REHEARSAL, "mixcd", n_bins=6, delta=0.02,
                 seed=0, rank=rank, world_size=world_size, fingerprint=fingerprint(torch.cat([new, old])))


def row_losses(model: torch.nn.Module, ids: torch.Tensor) -> torch.Tensor:
    """(B,) mean next-token cross-entropy of each row."""
    logits = model(input_ids=ids).logits[:, :-1]  # (B, T-1, V)
    tok = torch.nn.functional.cross_entropy(logits.transpose(1, 2), ids[:, 1:], reduction="none")  # (B, T-1)
    return tok.mean(1)


def quit_without_teardown(dist) -> None:
    """Wait for the other rank, then leave without running destructors.

    torch 2.13's gloo teardown can deadlock: destroying the DDP reducer (with the GIL held) joins the gloo
    run-loop thread while that thread waits for the GIL to release the last all-gather's Python tensors
    (seen here under CPU load: one rank wrote its files, then hung in ``~ProcessGroupGloo``). Every output is
    on disk by now; these tests check the schedule split, not torch's teardown.
    """
    dist.barrier()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


def train(out: Path, which: str) -> None:
    import faulthandler

    import torch.distributed as dist

    # a hang anywhere (a collective, a rendezvous, a teardown) dumps every thread's stack and exits, so the
    # test fails with a traceback instead of waiting out its limit
    faulthandler.dump_traceback_later(600, exit=True)
    from transformers import LlamaConfig, LlamaForCausalLM

    # a stalled peer (a rendezvous gone wrong) fails every collective after this, not after the default 30 min
    dist.init_process_group("gloo", timeout=datetime.timedelta(seconds=120))
    rank, world = dist.get_rank(), dist.get_world_size()
    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=VOCAB, hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                      num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=LENGTH)
    model = LlamaForCausalLM(cfg)
    prior = None
    if which == "lfr":
        data, sampler = lfr_setup()
    else:
        new, old = mixcd_data()
        data = torch.cat([new, old])
        with torch.no_grad():  # the original model's loss on the old data, computed once, the same everywhere
            prior = row_losses(model, old)
        dist.broadcast(prior, src=0)
        sampler = mixcd_setup(prior.numpy())
        prior = prior.tolist()
    ddp = torch.nn.parallel.DistributedDataParallel(model)
    opt = torch.optim.AdamW(ddp.parameters(), lr=1e-2)
    records = []
    for batch in sampler.batches():
        step = sampler.step
        rows = row_losses(ddp, data[batch])
        opt.zero_grad()
        rows.mean().backward()
        opt.step()
        sampler.update(batch, rows.detach())
        records.append({"step": step, "indices": batch, "losses": rows.detach().tolist()})
    checksum = float(sum(p.detach().double().sum() for p in model.parameters()))
    (out / f"rank{rank}.json").write_text(json.dumps({
        "rank": rank, "world": world, "backend": dist.get_backend(), "sampler_rank": sampler.rank,
        "sampler_world": sampler.world_size, "records": records, "checksum": checksum, "prior": prior}))
    torch.save(sampler.state_dict(), out / f"state-rank{rank}.pt")
    quit_without_teardown(dist)


if __name__ == "__main__":
    args = sys.argv[1:]
    if args[0] == "train":
        train(Path(args[1]), args[2])
    else:
        resume(Path(args[1]), args[2], int(args[3]))
