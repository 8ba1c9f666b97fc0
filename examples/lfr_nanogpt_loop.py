"""LFR in a nanoGPT-style training loop: no Trainer, one ``torchrun`` command from one GPU to many.

    torchrun --nproc_per_node 8 examples/lfr_nanogpt_loop.py --data train.bin --steps 20000   # GPUs
    python examples/lfr_nanogpt_loop.py --steps 50                                          # CPU smoke run

``--data`` is a flat uint16 token file as nanoGPT's ``prepare.py`` writes it (``train.bin``); without it the
loop trains on the offline Python-docs corpus (SmolLM2 tokens). The model is ``transformers``' Llama from a
config; swap in nanoGPT's ``GPT`` as it is (the sampler only needs block indices and per-block losses).

What LFR adds to the usual loop is three lines: draw the step's blocks from ``sampler.batches()``, compute
the loss per block (``reduction="none"``, mean over each row), and ``sampler.update(indices, row_losses)``.
Every rank draws its own disjoint slice of the same global batch, and ``update`` all-gathers the losses so
every rank's schedule stays identical. ``sampler.state_dict()`` goes into the checkpoint with the model.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist

from trustlab.data import LFRSampler, fingerprint
from trustlab.data.hf import per_sample_loss
from trustlab.train.pretrain import PretrainConfig, tiny_llama


def load_blocks(path: str | None, block_len: int) -> tuple[torch.Tensor, int]:
    if path:
        data = np.memmap(path, dtype=np.uint16, mode="r")
        n = len(data) // block_len
        return torch.from_numpy(np.asarray(data[: n * block_len], dtype=np.int64).reshape(n, block_len)), 50304
    from trustlab.data.corpus import blocks_from_ids, english_documents
    from trustlab.train.pretrain import Vocab, smollm2_tokenizer, tokenize_documents

    docs, _ = english_documents("auto")
    blocks = blocks_from_ids(tokenize_documents(smollm2_tokenizer(), docs[:200]), block_len)
    vocab = Vocab.from_blocks([blocks])
    return vocab.encode(blocks), len(vocab)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", default=None)
    ap.add_argument("--steps", type=int, default=200)
    ap.add_argument("--batch-size", type=int, default=16, help="blocks per step per process")
    ap.add_argument("--block-len", type=int, default=64)
    ap.add_argument("--lr", type=float, default=3e-3)
    ap.add_argument("--out", type=Path, default=Path("runs/lfr-loop"))
    args = ap.parse_args()

    ddp = "RANK" in os.environ
    if ddp:
        dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
    rank = dist.get_rank() if ddp else 0
    device = f"cuda:{int(os.environ.get('LOCAL_RANK', 0))}" if torch.cuda.is_available() else "cpu"
    blocks, vocab_size = load_blocks(args.data, args.block_len)
    model = tiny_llama(vocab_size, PretrainConfig(block_len=args.block_len, seed=0)).to(device)
    if ddp:
        model = torch.nn.parallel.DistributedDataParallel(model)
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=0.1, betas=(0.9, 0.95))
    sampler = LFRSampler(len(blocks), args.steps, args.batch_size, seed=0, fingerprint=fingerprint(blocks))
    ckpt = args.out / "ckpt.pt"
    if ckpt.exists():  # resume: model, optimizer and the data schedule
        state = torch.load(ckpt, map_location=device, weights_only=True)
        (model.module if ddp else model).load_state_dict(state["model"])
        opt.load_state_dict(state["opt"])
        sampler.load_state_dict(state["sampler"])
    for step_blocks in sampler.batches():
        x = blocks[step_blocks].to(device)  # (B, T)
        with torch.autocast(device.split(":")[0], dtype=torch.bfloat16):
            logits = model(input_ids=x).logits  # (B, T, V)
        loss, rows = per_sample_loss(logits, x)  # rows: (B,) mean token loss per block
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        sampler.update(step_blocks, rows.detach())  # every rank: all-gathered, same schedule everywhere
        if rank == 0 and sampler.step % 50 == 0:
            print(f"step {sampler.step}: loss {loss.item():.3f}, phase {sampler.phase.kind}, "
                  f"active {sampler.active_fraction:.2f}")
            args.out.mkdir(parents=True, exist_ok=True)
            torch.save({"model": (model.module if ddp else model).state_dict(), "opt": opt.state_dict(),
                        "sampler": sampler.state_dict()}, ckpt)
    if rank == 0:
        print("events:", [(e["kind"], e["step"], e["active"]) for e in sampler.events])
    if ddp:
        dist.destroy_process_group()


if __name__ == "__main__":
    main()
