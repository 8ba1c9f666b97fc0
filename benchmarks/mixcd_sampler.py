"""Per-step overhead of mix-cd rehearsal vs random mixing, at 1,000,000 old samples and 10,000 new ones.

Each arm trains its own copy of the same tiny ``transformers`` LlamaForCausalLM (vocab 8192, hidden 128,
2 layers, 4 heads, MLP 512; float32 on CPU) on blocks of 64 tokens, 32 new + 16 rehearsed old samples per
step, AdamW forward + backward + step, drawing from one token table (new samples, then old ones, as
``ConcatDataset([new, old])``). A step's time is the whole step:

* ours: ``MixCD(policy="mixcd")`` draw + fetch + forward + per-row loss (token CE with ``reduction="none"``,
  mean per sample, mean of those for the backward) + backward + AdamW step + ``update(indices, losses)``
  (the collateral-damage estimate of the rehearsed bins);
* peer: ``MixCD(policy="random")`` (uniform over the old samples) draw + the same training step with a plain
  mean CE, no feedback (random mixing needs none);
* second peer (details): a plain torch draw: ``BatchSampler(RandomSampler(range(n_new)), 32)`` for the new
  samples and ``torch.randint(n_old, (16,))`` for the old ones, plain mean CE.

The arms rotate step by step (A B C, B C A, C A B, ...) in ``--repeats`` rounds of ``--steps`` steps, after
``--warmup`` untimed steps. The original model's per-sample losses (mix-cd's bins) are synthetic, ln(vocab) +
N(0, 0.1) nats, so the loss rule (still right while within 0.1 nats) finds damage in some rehearsed samples;
the one-off costs mix-cd adds (the sampler build with its quantile bins at 1M, and an estimate of the
inference pass over the old data that produces those losses) are in ``details`` beside the state size.
Headline: mean step time over all timed steps, ours / peer; target <= 1.05 in seconds per step.

Usage: ``python benchmarks/mixcd_sampler.py [--blocks 1000000] [--new 10000] [--steps 12] [--repeats 5]
[--warmup 3] [--threads N] [--out results/benchmarks/mixcd_sampler.json]``
"""

from __future__ import annotations

import argparse
import copy
import math
import os
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from trustlab.data.mixcd import MixCD
from trustlab.report import BenchmarkRecord, machine_info, write_benchmark

OUT = Path(__file__).resolve().parents[1] / "results" / "benchmarks" / "mixcd_sampler.json"
PARTS = ("draw", "fetch", "forward", "loss", "backward_step", "update")
ARMS = ("ours", "peer", "torch")


def tiny_llama(vocab: int, hidden: int, layers: int, block_len: int) -> torch.nn.Module:
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=vocab, hidden_size=hidden, intermediate_size=4 * hidden, num_hidden_layers=layers,
                      num_attention_heads=4, num_key_value_heads=4, max_position_embeddings=block_len,
                      attn_implementation="sdpa")
    return LlamaForCausalLM(cfg).train()


def row_losses(logits: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """Mean next-token CE per sample."""
    flat = logits[:, :-1].reshape(-1, logits.shape[-1])
    return F.cross_entropy(flat, x[:, 1:].reshape(-1), reduction="none").view(x.shape[0], -1).mean(1)


def train_step(model, opt, x: torch.Tensor, per_row: bool) -> tuple[torch.Tensor | None, dict[str, float]]:
    """One AdamW step on ``x``; per-sample losses (detached) when ``per_row``, with part timings."""
    t0 = time.perf_counter()
    logits = model(input_ids=x).logits
    t1 = time.perf_counter()
    if per_row:
        rows = row_losses(logits, x)
        loss, out = rows.mean(), rows.detach()
    else:
        loss, out = F.cross_entropy(logits[:, :-1].reshape(-1, logits.shape[-1]), x[:, 1:].reshape(-1)), None
    t2 = time.perf_counter()
    loss.backward()
    opt.step()
    opt.zero_grad(set_to_none=True)
    t3 = time.perf_counter()
    return out, {"forward": t1 - t0, "loss": t2 - t1, "backward_step": t3 - t2}


def sampler_only(make, steps: int, feedback: bool) -> dict[str, float]:
    """Median draw (and update) microseconds of a fresh sampler over ``steps`` steps, no model around it."""
    s = make()
    it = s.batches()
    next(it)
    draws, updates = [], []
    rng = np.random.default_rng(0)
    for _ in range(steps):
        t0 = time.perf_counter()
        idx = next(it)
        t1 = time.perf_counter()
        if feedback:
            s.update(idx, torch.from_numpy(rng.normal(math.log(8192), 0.1, len(idx)).astype(np.float32)))
        updates.append(time.perf_counter() - t1)
        draws.append(t1 - t0)
    return {"draw_us": statistics.median(draws) * 1e6, "update_us": statistics.median(updates) * 1e6}


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--blocks", type=int, default=1_000_000, help="old (pretraining) samples")
    ap.add_argument("--new", type=int, default=10_000, help="new-task samples")
    ap.add_argument("--steps", type=int, default=12, help="timed steps per arm per round")
    ap.add_argument("--repeats", type=int, default=5, help="rounds")
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--batch", type=int, default=32, help="new samples per step")
    ap.add_argument("--rehearsal", type=int, default=16, help="old samples per step")
    ap.add_argument("--block-len", type=int, default=64)
    ap.add_argument("--vocab", type=int, default=8192)
    ap.add_argument("--hidden", type=int, default=128)
    ap.add_argument("--layers", type=int, default=2)
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    ap.add_argument("--out", type=Path, default=OUT)
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    load_start = os.getloadavg()
    n_old, n_new, b, r = args.blocks, args.new, args.batch, args.rehearsal
    total = max(10 * n_new // b, args.warmup + args.steps * args.repeats + 1)  # ten passes over the new data

    gen = torch.Generator().manual_seed(0)
    t0 = time.perf_counter()
    tokens = torch.randint(0, args.vocab, (n_new + n_old, args.block_len), generator=gen, dtype=torch.int16)
    t_data = time.perf_counter() - t0
    prior = np.random.default_rng(0).normal(math.log(args.vocab), 0.1, n_old)
    base = tiny_llama(args.vocab, args.hidden, args.layers, args.block_len)
    n_params = sum(p.numel() for p in base.parameters())
    models = {"ours": base, **{k: copy.deepcopy(base) for k in ARMS[1:]}}
    opts = {k: torch.optim.AdamW(m.parameters(), lr=1e-3) for k, m in models.items()}

    def make(policy: str) -> MixCD:
        return MixCD(n_new, prior, total, b, r, policy, seed=0)

    t0 = time.perf_counter()
    mixcd = make("mixcd")
    t_build = time.perf_counter() - t0
    t0 = time.perf_counter()
    random_mix = make("random")
    t_build_random = time.perf_counter() - t0
    torch_new = torch.utils.data.BatchSampler(
        torch.utils.data.RandomSampler(range(n_new), generator=torch.Generator().manual_seed(0)), b, drop_last=True)
    old_gen = torch.Generator().manual_seed(1)

    def torch_batches():
        while True:
            for new in torch_new:
                yield new + (torch.randint(n_old, (r,), generator=old_gen) + n_new).tolist()

    iters = {"ours": mixcd.batches(), "peer": random_mix.batches(), "torch": torch_batches()}

    def step(arm: str) -> dict[str, float]:
        t0 = time.perf_counter()
        idx = next(iters[arm])
        t1 = time.perf_counter()
        x = tokens[torch.as_tensor(idx)].long()
        t2 = time.perf_counter()
        rows, parts = train_step(models[arm], opts[arm], x, per_row=arm == "ours")
        t3 = time.perf_counter()
        if arm == "ours":
            mixcd.update(idx, rows)
        t4 = time.perf_counter()
        return {"draw": t1 - t0, "fetch": t2 - t1, **parts, "update": t4 - t3, "total": t4 - t0}

    first_draw = {}
    for i in range(args.warmup):
        for arm in ARMS:
            rec = step(arm)
            if i == 0:
                first_draw[arm] = rec["draw"]
    log: dict[str, list[dict[str, float]]] = {arm: [] for arm in ARMS}
    rounds: dict[str, list[float]] = {arm: [] for arm in ARMS}
    k = 0
    for rnd in range(args.repeats):
        for _ in range(args.steps):
            for arm in ARMS[k % 3:] + ARMS[:k % 3]:
                log[arm].append(step(arm))
            k += 1
        for arm in ARMS:
            rounds[arm].append(statistics.fmean(x["total"] for x in log[arm][-args.steps:]))
        print(f"round {rnd}: " + ", ".join(f"{a} {rounds[a][-1] * 1e3:.2f}" for a in ARMS) + " ms/step; ratio "
              f"{rounds['ours'][-1] / rounds['peer'][-1]:.3f}", flush=True)
    load_loop = os.getloadavg()

    mean = {arm: statistics.fmean(x["total"] for x in log[arm]) for arm in ARMS}
    med = {arm: {p: statistics.median(x[p] for x in log[arm]) * 1e3 for p in (*PARTS, "total")} for arm in ARMS}
    avg = {arm: {p: statistics.fmean(x[p] for x in log[arm]) * 1e3 for p in (*PARTS, "total")} for arm in ARMS}

    # one-off and isolated costs
    only = {"mixcd_with_update": sampler_only(lambda: make("mixcd"), 200, True),
            "random_no_feedback": sampler_only(lambda: make("random"), 200, False),
            "random_with_update": sampler_only(lambda: make("random"), 200, True)}
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "sampler.pt"
        t0 = time.perf_counter()
        torch.save(mixcd.state_dict(), path)
        t_save = time.perf_counter() - t0
        size = path.stat().st_size
    with torch.no_grad():  # the inference pass over the old data that gives mix-cd its bins (extrapolated)
        x = tokens[n_new:n_new + 256].long()
        row_losses(models["ours"](input_ids=x).logits, x)
        t0 = time.perf_counter()
        for _ in range(2):
            row_losses(models["ours"](input_ids=x).logits, x)
        per_sample = (time.perf_counter() - t0) / (2 * 256)
    load_end = os.getloadavg()
    est = mixcd.estimator
    details = {
        "model": {"class": "transformers LlamaForCausalLM", "vocab": args.vocab, "hidden": args.hidden,
                  "layers": args.layers, "heads": 4, "intermediate": 4 * args.hidden, "parameters": n_params,
                  "dtype": "float32", "device": "cpu", "optimizer": "AdamW lr 1e-3"},
        "old_samples": n_old, "new_samples": n_new, "new_per_step": b, "rehearsed_per_step": r,
        "block_len": args.block_len, "data": "uniform random int16 tokens, one (new + old) x 64 table",
        "prior_loss": "synthetic: ln(vocab) + N(0, 0.1) nats per old sample; default loss rule (delta 0.1), 10 bins",
        "total_steps": total, "steps_per_round": args.steps, "rounds": args.repeats, "warmup_steps": args.warmup,
        "interleaving": "per step, arms rotated (A B C, B C A, C A B)", "statistic": "mean over timed steps (headline)",
        "ms_per_step_median": med, "ms_per_step_mean": avg,
        "torch_peer": {"name": "BatchSampler(RandomSampler(new)) + torch.randint old indices, plain mean loss",
                       "mean_step_s": mean["torch"], "ratio_ours_to_it": mean["ours"] / mean["torch"],
                       "ratio_of_medians": med["ours"]["total"] / med["torch"]["total"]},
        "sampler_only_ms": {a: {"median": med[a]["draw"], "mean": avg[a]["draw"]} for a in ARMS}
        | {"first_draw_ms": {k: v * 1e3 for k, v in first_draw.items()}},
        "sampler_only_isolated_us": only,
        "recording_ms": {"update_median": med["ours"]["update"], "update_mean": avg["ours"]["update"],
                         "per_row_loss_extra_in_loop_median": med["ours"]["loss"] - med["peer"]["loss"],
                         "note": "in loop: median loss time (per-row CE) minus the peer's plain mean CE, forward "
                                 "only and noisy; the backward difference is inside backward_step"},
        "ratio_of_medians": med["ours"]["total"] / med["peer"]["total"],
        "sampler_and_update_overhead_ms": med["ours"]["draw"] - med["peer"]["draw"] + med["ours"]["update"],
        "ratio_from_components": 1 + (med["ours"]["draw"] - med["peer"]["draw"] + med["ours"]["update"])
        / med["peer"]["total"],
        "ratio_from_components_note": "1 + (median draw difference + median update) / peer median step: the "
                                      "sampler and bookkeeping overhead without the model's timing noise (the "
                                      "per-row loss, the same log-softmax with another reduction, is left out)",
        "round_means_ms": {k: [v * 1e3 for v in vs] for k, vs in rounds.items()},
        "round_ratios": [o / p for o, p in zip(rounds["ours"], rounds["peer"], strict=True)],
        "ratio_median_of_round_means": statistics.median(rounds["ours"]) / statistics.median(rounds["peer"]),
        "one_off": {"mixcd_build_s": t_build, "random_build_s": t_build_random, "token_table_s": t_data,
                    "prior_loss_pass_estimate_s": per_sample * n_old,
                    "prior_loss_pass_note": "no-grad forward + per-row CE of 2 x 256 old samples with this model, "
                                            "extrapolated to all old samples (mix-cd needs it; random mixing not)"},
        "state": {"torch_save_s": t_save, "size_mb": size / 1e6},
        "estimator": {"bins": est.n_bins, "alphas": est.alphas.round(4).tolist(), "counts": est.counts.tolist(),
                      "damaged": est.damaged.tolist()},
        "load_average": {"start": load_start, "after_timed_loop": load_loop, "end": load_end},
        "threads": torch.get_num_threads(),
    }
    record = BenchmarkRecord(
        measure=f"fine-tuning step time with rehearsal, {n_old:,} old samples, tiny Llama, {b} new + {r} old x "
                f"{args.block_len} (s)",
        ours=mean["ours"], peer=mean["peer"], peer_name="MixCD(policy='random'): random mixing, plain mean loss",
        lower_is_better=True, target=1.05, machine=machine_info(), details=details)
    print(f"mix-cd {mean['ours'] * 1e3:.2f} ms/step vs random mixing {mean['peer'] * 1e3:.2f} ms/step: ratio "
          f"{record.ratio:.3f} (target 1.05, meets: {record.meets_target}); vs plain torch draw "
          f"{mean['torch'] * 1e3:.2f} ms/step: ratio {mean['ours'] / mean['torch']:.3f}")
    print(f"sampler only (in loop, median): mixcd {med['ours']['draw'] * 1e3:.0f} us, random "
          f"{med['peer']['draw'] * 1e3:.0f} us, torch {med['torch']['draw'] * 1e3:.0f} us; update "
          f"{med['ours']['update'] * 1e3:.0f} us; build at {n_old:,}: {t_build:.2f} s; state {size / 1e6:.1f} MB "
          f"saved in {t_save * 1e3:.0f} ms; prior-loss pass ~{per_sample * n_old:.0f} s")
    print(f"load average {load_start} -> {load_end}")
    print(f"wrote {write_benchmark(args.out, record)}")


if __name__ == "__main__":
    main()
