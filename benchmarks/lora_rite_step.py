"""Optimizer step time and state memory of LoRA-RITE vs AdamW and pytorch-optimizer's ``LoRARite``.

Setup: the embedded SmolLM2-135M-Instruct with PEFT LoRA on the attention and MLP projections
(q, k, v, o, gate, up, down; rank 16 for the targets, ranks 8 and 64 as extra detail), real gradients
from one forward/backward on random tokens. Every optimizer steps the same parameters with the same
gradients, in one process; the optimizers are timed in interleaved rounds so machine noise hits all of
them alike. On a shared machine pass ``--threads 1``: with more threads than free cores every timing
(AdamW's too) is dominated by waiting.

Run: ``python benchmarks/lora_rite_step.py --threads 1`` (writes ``results/benchmarks/lora_rite_step.json``);
``--model embedded:qwen2.5-coder-1.5b`` measures the larger embedded model (bf16 weights, float32 LoRA factors)
into ``results/benchmarks/lora_rite_step--qwen2.5-coder-1.5b.json``.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from pathlib import Path

import torch

from trustlab.optim import LoRARITE, create_lora_rite_optimizer, find_lora_pairs
from trustlab.report import BenchmarkRecord, machine_info, write_benchmark

TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


def lora_model(rank: int, spec: str = "embedded"):
    from peft import LoraConfig, get_peft_model

    from trustlab.models import load_model

    base = load_model(spec).model
    model = get_peft_model(base, LoraConfig(r=rank, lora_alpha=2 * rank, lora_dropout=0.0, target_modules=TARGETS))
    for p in model.parameters():
        if p.requires_grad:
            p.data = p.data.float()  # LoRA factors train in float32 whatever the base's dtype
    ids = torch.randint(0, base.config.vocab_size, (2, 64), generator=torch.Generator().manual_seed(0))
    model(input_ids=ids, labels=ids).loss.backward()
    return model


def state_bytes(opt: torch.optim.Optimizer) -> int:
    """Bytes of distinct tensor storages held in the optimizer state."""
    seen, total = set(), 0
    for st in opt.state.values():
        for v in st.values():
            if torch.is_tensor(v):
                key = v.untyped_storage().data_ptr()
                if key not in seen:
                    seen.add(key)
                    total += v.untyped_storage().nbytes()
    return total


def make_optimizers(model) -> dict[str, torch.optim.Optimizer]:
    from pytorch_optimizer import LoRARite

    pairs, _ = find_lora_pairs(model)
    lora_params = [p for pair in pairs for p in (pair.lora_A, pair.lora_B)]  # peer wants [A1, B1, A2, B2, ...]
    return {
        "trustlab LoRARITE": create_lora_rite_optimizer(model, lr=1e-4),
        "torch AdamW (default)": torch.optim.AdamW(lora_params, lr=1e-4),
        "torch AdamW (fused)": torch.optim.AdamW(lora_params, lr=1e-4, fused=True),
        "pytorch-optimizer LoRARite": LoRARite(lora_params, lr=1e-4),
    }


def time_steps(model, rounds: int, steps: int) -> tuple[dict[str, float], dict[str, int], int, int, int]:
    """Median step seconds and state bytes of each optimizer (parameters restored between optimizers), the
    LoRA parameter count, how many of our factor decompositions took the Householder-QR fallback, and the
    bytes of our reused step buffers (held outside the state)."""
    params = [p for p in model.parameters() if p.requires_grad]
    init = [p.detach().clone() for p in params]
    opts = make_optimizers(model)
    times: dict[str, list[float]] = {name: [] for name in opts}
    for _ in range(rounds):
        for name, opt in opts.items():
            with torch.no_grad():
                for p, p0 in zip(params, init, strict=True):
                    p.copy_(p0)
            opt.step()  # warm-up (and the B = 0 cold start) outside the clock
            for _ in range(steps):
                t0 = time.perf_counter()
                opt.step()
                times[name].append(time.perf_counter() - t0)
    n_params = sum(p.numel() for p in params)
    ours = opts["trustlab LoRARITE"]
    return ({k: statistics.median(v) for k, v in times.items()}, {k: state_bytes(o) for k, o in opts.items()},
            n_params, ours.basis_fallbacks, ours.buffer_bytes)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--ranks", type=int, nargs="+", default=[8, 16, 64])
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    ap.add_argument("--model", default="embedded", help="model spec (default: the embedded SmolLM2)")
    ap.add_argument("--out", type=Path, default=None,
                    help="default results/benchmarks/lora_rite_step.json (lora_rite_step--<model>.json otherwise)")
    args = ap.parse_args(argv)
    if args.out is None:
        slug = "" if args.model == "embedded" else "--" + args.model.split(":")[-1].split("/")[-1].lower()
        args.out = Path(f"results/benchmarks/lora_rite_step{slug}.json")
    if args.threads:
        torch.set_num_threads(args.threads)
    ours, adamw, peer = "trustlab LoRARITE", "torch AdamW (default)", "pytorch-optimizer LoRARite"
    by_rank = {}
    for rank in args.ranks:
        torch.manual_seed(0)
        model = lora_model(rank, args.model)
        sec, mem, n, fallbacks, buffers = time_steps(model, args.rounds, args.steps)
        by_rank[rank] = {"step_seconds": sec, "state_bytes": mem, "lora_params": n,
                         "pairs": len(find_lora_pairs(model)[0]), "basis_fallbacks": fallbacks,
                         "ours_buffer_bytes": buffers,
                         "ratio_vs_adamw": sec[ours] / sec[adamw], "ratio_vs_peer": sec[ours] / sec[peer]}
        print(f"rank {rank}: {n:,} LoRA parameters; {fallbacks} QR-fallback decompositions")
        for name in sec:
            print(f"  {name:30s} {sec[name] * 1e3:8.2f} ms/step  state {mem[name] / 2**20:7.1f} MiB  "
                  f"x{sec[name] / sec[adamw]:.2f} AdamW")
    r16 = by_rank.get(16) or by_rank[args.ranks[0]]
    rank = 16 if 16 in by_rank else args.ranks[0]
    label = "SmolLM2" if args.model == "embedded" else args.model
    setup = {"model": "SmolLM2-135M-Instruct (embedded)" if args.model == "embedded" else args.model, "rank": rank, "targets": TARGETS,
             "rounds": args.rounds, "steps_per_round": args.steps, "statistic": "median",
             "torch_threads": torch.get_num_threads(), "timing": "one process, optimizers interleaved per round",
             "all_ranks": by_rank, "optimizer_class": LoRARITE.__name__, "load_average": os.getloadavg(),
             "note": "AdamW default on CPU = per-tensor loop; 'torch AdamW (fused)' is in all_ranks for reference; "
                     "ours_buffer_bytes = reused step buffers held outside the optimizer state"}
    sec, mem = r16["step_seconds"], r16["state_bytes"]
    machine = machine_info()
    records = [
        BenchmarkRecord(f"optimizer step time, LoRA rank {rank} on {label} (s)", sec[ours], sec[adamw],
                        "torch.optim.AdamW (default settings)", True, 1.25, machine, setup),
        BenchmarkRecord(f"optimizer step time, LoRA rank {rank} on {label} (s)", sec[ours], sec[peer],
                        "pytorch-optimizer LoRARite", True, 1.0, machine, setup),
        BenchmarkRecord(f"optimizer state memory, LoRA rank {rank} on {label} (bytes)", mem[ours], mem[adamw],
                        "torch.optim.AdamW (default settings)", True, None, machine, setup),
        BenchmarkRecord(f"optimizer state memory, LoRA rank {rank} on {label} (bytes)", mem[ours], mem[peer],
                        "pytorch-optimizer LoRARite", True, None, machine, setup),
    ]
    write_benchmark(args.out, records)
    for r in records:
        print(f"{r.measure} vs {r.peer_name}: ratio {r.ratio:.3f} (target {r.target}, meets: {r.meets_target})")


if __name__ == "__main__":
    main()
