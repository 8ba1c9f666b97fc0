"""float32 vs bfloat16 on this CPU, side by side in one run, for the embedded chat models.

For each model (default: SmolLM2-135M and Qwen2.5-Coder-1.5B), both dtypes loaded from the same dequantised
cache, sdpa attention, the same threads:

- prefill tokens/s: one forward over 8 x 512 tokens (``logits_to_keep=1``, as generation does);
- decode tokens/s: ``generate`` at batch 1 and at batch 8, 64 new tokens, greedy;
- agreement of greedy answers: the first ``--questions`` CLUE questions (48 new tokens): the share with the
  identical text, and the share where both are right or both wrong (gold-alias match), with the accuracy of
  each dtype.

Timings alternate fp32 / bf16 and report the median of ``--repeats``, so background load hits both alike;
the load average is recorded. Writes ``results/benchmarks/dtype.json``. The dtype policy
(:mod:`trustlab.models.policy`) picks bfloat16 where this benchmark shows it faster.

Usage: ``python benchmarks/dtype.py [--models smollm2-135m qwen2.5-coder-1.5b] [--repeats 3] [--questions 30]``
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

OUT = Path(__file__).resolve().parents[1] / "results" / "benchmarks" / "dtype.json"
PROMPTS = ["Write a short story about a lighthouse keeper.", "Explain how a bicycle stays upright.",
           "List five uses of baking soda.", "Describe the water cycle.", "What makes a good password?",
           "Summarise the plot of Romeo and Juliet.", "How do vaccines work?", "Give tips for a job interview."]


def bench_model(key: str, repeats: int, questions: int) -> dict:
    import torch

    from trustlab.models import load_model
    from trustlab.uncertainty.fixtures import QA_PROMPT, is_correct, qa_items

    handles = {dt: load_model(f"embedded:{key}", dtype=dt, attn_implementation="sdpa", batch_size=8)
               for dt in ("float32", "bfloat16")}
    ids = torch.randint(100, 5000, (8, 512))
    times: dict[str, dict[str, list[float]]] = {dt: {"prefill": [], "decode_b1": [], "decode_b8": []} for dt in handles}
    tokens: dict[str, dict[str, list[int]]] = {dt: {"decode_b1": [], "decode_b8": []} for dt in handles}
    for h in handles.values():  # warm-up
        with torch.inference_mode():
            h.model(input_ids=ids[:1, :64], logits_to_keep=1)
    for _ in range(repeats):
        for dt, h in handles.items():
            t0 = time.perf_counter()
            with torch.inference_mode():
                h.model(input_ids=ids, logits_to_keep=1)
            times[dt]["prefill"].append(time.perf_counter() - t0)
            for key, prompts in (("decode_b1", PROMPTS[:1]), ("decode_b8", PROMPTS)):
                t0 = time.perf_counter()
                gens = h.generate(prompts, max_new_tokens=64)
                times[dt][key].append(time.perf_counter() - t0)
                tokens[dt][key].append(sum(len(h.tokenizer(g[0].text, add_special_tokens=False)["input_ids"])
                                           for g in gens))
    items = qa_items()[:questions]
    prompts = [QA_PROMPT.format(question=q["question"]) for q in items]
    answers = {dt: [g[0].text for g in h.generate(prompts, max_new_tokens=48)] for dt, h in handles.items()}
    right = {dt: [is_correct(a, q["gold"]) for a, q in zip(answers[dt], items, strict=True)] for dt in handles}
    out: dict = {"threads": torch.get_num_threads(), "questions": len(items)}
    for dt in handles:
        out[dt] = {"prefill_tok_s": 8 * 512 / statistics.median(times[dt]["prefill"]),
                   **{f"{k}_tok_s": statistics.median(tokens[dt][k]) / statistics.median(times[dt][k])
                      for k in ("decode_b1", "decode_b8")},
                   "qa_accuracy": sum(right[dt]) / len(items)}
    out["bf16_over_fp32"] = {k: out["bfloat16"][k] / out["float32"][k]
                             for k in ("prefill_tok_s", "decode_b1_tok_s", "decode_b8_tok_s")}
    out["same_text"] = sum(a == b for a, b in zip(answers["float32"], answers["bfloat16"], strict=True)) / len(items)
    out["same_correctness"] = sum(a == b for a, b in zip(right["float32"], right["bfloat16"], strict=True)) / len(items)
    return out


def write(results: dict, load: list[float], path: Path = OUT) -> Path:
    """One benchmark record per (model, measure): ours = bfloat16, peer = float32, same run."""
    from trustlab.report import BenchmarkRecord, write_benchmark

    records = []
    for key, r in results.items():
        for measure, label in (("prefill_tok_s", "prefill tokens/s (8 x 512)"),
                               ("decode_b1_tok_s", "decode tokens/s, batch 1, 64 new"),
                               ("decode_b8_tok_s", "decode tokens/s, batch 8, 64 new")):
            records.append(BenchmarkRecord(
                measure=f"{label}, {key}, sdpa, {r['threads']} thread(s): bfloat16 vs float32",
                ours=r["bfloat16"][measure], peer=r["float32"][measure], peer_name="float32 (same weights)",
                lower_is_better=False, target=None,
                details={"same_greedy_text": r["same_text"], "same_correctness": r["same_correctness"],
                         "qa_accuracy": {dt: r[dt]["qa_accuracy"] for dt in ("float32", "bfloat16")},
                         "questions": r["questions"], "load_avg_1min": load}))
    return write_benchmark(path, records)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--models", nargs="*", default=["smollm2-135m", "qwen2.5-coder-1.5b"])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--questions", type=int, default=30)
    args = ap.parse_args()
    load = os.getloadavg()[0]
    results = {}
    for key in args.models:
        results[key] = bench_model(key, args.repeats, args.questions)
        r = results[key]
        print(f"{key}: prefill fp32 {r['float32']['prefill_tok_s']:.0f} / bf16 {r['bfloat16']['prefill_tok_s']:.0f} "
              f"tok/s ({r['bf16_over_fp32']['prefill_tok_s']:.2f}x); decode b1 fp32 {r['float32']['decode_b1_tok_s']:.1f} / "
              f"bf16 {r['bfloat16']['decode_b1_tok_s']:.1f} tok/s ({r['bf16_over_fp32']['decode_b1_tok_s']:.2f}x); "
              f"decode b8 fp32 {r['float32']['decode_b8_tok_s']:.1f} / bf16 {r['bfloat16']['decode_b8_tok_s']:.1f} "
              f"tok/s ({r['bf16_over_fp32']['decode_b8_tok_s']:.2f}x); "
              f"same greedy text {r['same_text']:.2f}, same correctness {r['same_correctness']:.2f} "
              f"(accuracy fp32 {r['float32']['qa_accuracy']:.2f}, bf16 {r['bfloat16']['qa_accuracy']:.2f})", flush=True)
    write(results, [round(load, 2), round(os.getloadavg()[0], 2)])


if __name__ == "__main__":
    main()
