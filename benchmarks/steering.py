"""Speed of user-token attention steering: steered vs plain generation on the same attention kernel, and
steered sdpa vs steered eager. SmolLM2-135M-Instruct, greedy, fixed answer length, runs interleaved
(A, B, A, B, ...) and the median taken, so load from other processes hits both sides alike.

Writes results/benchmarks/steering.json: per context length (default 1500 and 4000 tokens) and kernel, one
record steered / plain with target 1.15 (issue #16), and one informational record steered sdpa / steered eager.

    python benchmarks/steering.py [--repeats 5] [--lengths 1500,4000] [--kernels eager,sdpa]
                                  [--out results/benchmarks/steering.json]
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import torch

from trustlab.bench.niah import SF_NEEDLE, build_context, niah_prompt
from trustlab.context import UserSteering
from trustlab.models import load_model
from trustlab.report import BenchmarkRecord, write_benchmark

NEW_TOKENS = 32
TARGET = 1.15  # steered / plain on the same kernel (issue #16)


def timed_generate(model, prompt, impl: str, alpha: float | None) -> float:
    """Seconds for encode + generate of NEW_TOKENS tokens (steering set-up and span lookup included)."""
    with model.using_attn_implementation(impl), torch.inference_mode():
        t0 = time.perf_counter()
        if alpha is None:
            batch = model.encode([prompt])
            model.model.generate(**batch, max_new_tokens=NEW_TOKENS, min_new_tokens=NEW_TOKENS, do_sample=False,
                                 pad_token_id=model.tokenizer.pad_token_id)
        else:
            with UserSteering(model, alpha=alpha) as steering:
                batch = steering.encode([prompt])
                model.model.generate(**batch, max_new_tokens=NEW_TOKENS, min_new_tokens=NEW_TOKENS,
                                     do_sample=False, pad_token_id=model.tokenizer.pad_token_id)
        return time.perf_counter() - t0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--lengths", default="1500,4000", help="context tokens, comma-separated")
    parser.add_argument("--kernels", default="eager,sdpa", help="attention kernels, comma-separated")
    parser.add_argument("--out", type=Path, default=Path("results/benchmarks/steering.json"))
    args = parser.parse_args()
    kernels = args.kernels.split(",")
    if not set(kernels) <= {"eager", "sdpa"}:
        parser.error(f"--kernels takes eager and/or sdpa, got {args.kernels!r}")
    model = load_model()
    arms = {f"{mode} {impl}": (impl, alpha) for impl in kernels for mode, alpha in (("plain", None), ("steered", 0.9))}
    records = []
    for n in (int(x) for x in args.lengths.split(",")):
        prompt = [{"role": "user", "content": niah_prompt(build_context(model.tokenizer, n, 0.5),
                                                          SF_NEEDLE.question)}]
        for impl, alpha in arms.values():  # warm-up
            timed_generate(model, prompt, impl, alpha)
        times: dict[str, list[float]] = {name: [] for name in arms}
        for _ in range(args.repeats):
            for name, (impl, alpha) in arms.items():
                times[name].append(timed_generate(model, prompt, impl, alpha))
        med = {name: statistics.median(ts) for name, ts in times.items()}
        what = f"seconds per greedy generation ({n}-token context + {NEW_TOKENS} new tokens, SmolLM2-135M)"
        details = {"context_tokens": n, "prompt_tokens": len(model.tokenize(prompt)), "new_tokens": NEW_TOKENS,
                   "repeats": args.repeats, "alpha": 0.9, "raw_seconds": times}
        new = [BenchmarkRecord(f"{what}, {impl} kernel", med[f"steered {impl}"], med[f"plain {impl}"],
                               f"unsteered {impl}", lower_is_better=True, target=TARGET, details=details)
               for impl in kernels]
        if len(kernels) == 2:
            new.append(BenchmarkRecord(f"{what}, steered: sdpa vs eager", med["steered sdpa"], med["steered eager"],
                                       "steered eager", lower_is_better=True, target=None, details=details))
        for r in new:
            print(f"{r.measure}: ours {r.ours:.2f}s vs {r.peer_name} {r.peer:.2f}s -> {r.ratio:.3f}"
                  f" (target {r.target})")
        records += new
    write_benchmark(args.out, records)
    print(f"wrote {args.out}")

if __name__ == "__main__":
    main()
