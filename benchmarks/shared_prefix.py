"""Few-shot prompts that share a prefix: our HF backend vs a raw ``model.generate``, side by side in one run.

The workload of Mixture-of-Prompts scoring and few-shot baselines: one instruction and ``--demos`` demos
asked about ``--queries`` different inputs (a mixed reasoning-gym task, greedy, ``--new-tokens`` tokens).
Ours: ``HFModel.generate``, which computes the shared prefix once per batch and repeats its KV cache over
the batch. Peer: the same pre-tokenised prompts, left-padded, in batches of the same size, through a raw
``model.generate`` (what the backend did before, and what a hand-written loop does). A third timing is ours
with prefix sharing off (``share_prefixes = False``). Runs are interleaved and the median of ``--repeats`` is
reported; the greedy answers of both sides are compared (``details.same_answers``, ``same_first_lines``).
In float32 all 32 agree (``TRUSTLAB_DTYPE=float32``: 10.9 s vs 31.1 s, measured). In bfloat16 any change of
batch layout flips some: ours unshared (length-sorted batches) vs raw (prompt-order batches) agreed on 23/32
answers, shared vs raw on 18/32 whole answers and 28/32 first lines. Writes ``results/benchmarks/shared_prefix.json``. Target: ours / peer <= 0.5 in seconds.

Usage: ``python benchmarks/shared_prefix.py [--model embedded] [--queries 32] [--demos 10] [--repeats 3]``
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TRUSTLAB_NO_PROGRESS", "1")
OUT = Path(__file__).resolve().parents[1] / "results" / "benchmarks" / "shared_prefix.json"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default="embedded")
    ap.add_argument("--task", default="arith-count-sort")
    ap.add_argument("--queries", type=int, default=32)
    ap.add_argument("--demos", type=int, default=10)
    ap.add_argument("--new-tokens", type=int, default=24)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--out", type=Path, default=OUT)
    args = ap.parse_args()

    import torch

    from trustlab.models import load_model
    from trustlab.prompting.mop import first_line, render_prompt
    from trustlab.prompting.mop_tasks import make_task
    from trustlab.report import BenchmarkRecord, write_benchmark

    task = make_task(args.task, n_pool=args.demos, n_eval=args.queries, n_test=1, seed=0)
    demos = [(e["input"], e["output"]) for e in task.train]
    prompts = [render_prompt("Answer the input as the examples do.", demos, e["input"]) for e in task.val]
    handle = load_model(args.model, attn_implementation="sdpa", batch_size=args.batch_size)
    rows = [handle.tokenize(p, False) for p in prompts]
    gc = handle._hf_generation_config(handle.default_config.updated(max_new_tokens=args.new_tokens))
    eos = handle.tokenizer.eos_token_id

    def ours(share: bool) -> list[str]:
        handle.share_prefixes = share
        return [g[0].text for g in handle.generate(prompts, max_new_tokens=args.new_tokens, chat_template=False)]

    def raw() -> list[str]:
        texts = []
        for s in range(0, len(rows), args.batch_size):
            batch = handle._pad_left(rows[s:s + args.batch_size])
            with torch.inference_mode():
                out = handle.model.generate(**batch, generation_config=gc)
            new = out.sequences[:, batch["input_ids"].shape[1]:]
            texts += [handle.tokenizer.decode([t for t in r.tolist() if t != eos], skip_special_tokens=True)
                      for r in new]
        return texts

    times: dict[str, list[float]] = {"ours": [], "peer": [], "ours_unshared": []}
    answers = {}
    ours(True)  # warm-up
    for _ in range(args.repeats):
        for name, fn in (("ours", lambda: ours(True)), ("peer", raw), ("ours_unshared", lambda: ours(False))):
            t0 = time.perf_counter()
            answers[name] = fn()
            times[name].append(time.perf_counter() - t0)
    med = {k: statistics.median(v) for k, v in times.items()}
    n_prompt = [len(r) for r in rows]
    record = BenchmarkRecord(
        measure=f"greedy generation of {args.queries} few-shot prompts sharing a prefix (s), {handle.name}",
        ours=med["ours"], peer=med["peer"], peer_name="raw transformers model.generate, left-padded batches",
        lower_is_better=True, target=0.5,
        details={"model": handle.describe(), "task": args.task, "queries": args.queries, "demos": args.demos,
                 "new_tokens": args.new_tokens, "batch_size": args.batch_size, "prompt_tokens_mean":
                 sum(n_prompt) / len(n_prompt), "shared_batches": [(len(b), n) for b, n in
                                                                    handle._shared_prefix_batches(rows)[0]],
                 "times": times, "ours_unshared_s": med["ours_unshared"],
                 "same_answers": sum(a == b for a, b in zip(answers["ours"], answers["peer"], strict=True)),
                 "same_first_lines": sum(first_line(a) == first_line(b) for a, b in
                                         zip(answers["ours"], answers["peer"], strict=True)),
                 "unshared_same_as_peer": sum(a == b for a, b in zip(answers["ours_unshared"], answers["peer"],
                                                                     strict=True)),
                 "of": len(prompts), "load_average": os.getloadavg(), "repeats": args.repeats})
    print(f"shared prefix: ours {med['ours']:.2f} s, raw generate {med['peer']:.2f} s "
          f"({med['peer'] / med['ours']:.2f}x), ours unshared {med['ours_unshared']:.2f} s; same answers "
          f"{record.details['same_answers']}/{len(prompts)} (first lines {record.details['same_first_lines']}, "
          f"unshared vs raw {record.details['unshared_same_as_peer']})")
    print(f"wrote {write_benchmark(args.out, record)}")


if __name__ == "__main__":
    main()
