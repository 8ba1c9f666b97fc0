"""Throughput of lm-eval's model type ``trustlab`` vs lm-eval's own ``hf`` type, side by side in one run.

Both serve the same requests of the same offline task on the same weights (the embedded SmolLM2-135M-Instruct,
float32, sdpa, CPU, the same batch size), built once by lm-eval from trustlab's task YAMLs:

1. ``loglikelihood``: every request of ``trustlab_cf_qa_mc`` (36 documents x 2 choices) -- the parity task of
   ``tests/integrations/test_lm_eval.py``;
2. ``generate_until``: every request of ``trustlab_cf_qa`` (36 prompts, greedy, up to 16 new tokens).

Requests per second (higher is better); target ours / hf >= 0.95. Runs are interleaved (ours, hf, ours, hf, ...)
and the median is reported, so background load hits both sides alike. Writes
``results/benchmarks/lm_eval_throughput.json``.

Usage: ``python benchmarks/bench_lm_eval.py [--repeats 3] [--batch 8]``
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

from lm_eval.models.huggingface import HFLM  # noqa: E402
from lm_eval.tasks import TaskManager  # noqa: E402

from trustlab.integrations.lm_eval import TrustlabLM, tasks_path  # noqa: E402
from trustlab.models.embedded import smollm2_dir  # noqa: E402
from trustlab.report import BenchmarkRecord, write_benchmark  # noqa: E402

TASKS = {"loglikelihood": "trustlab_cf_qa_mc", "generate_until": "trustlab_cf_qa"}


def requests_of(task_name: str) -> list[Any]:
    """Every request lm-eval builds for ``task_name`` (no limit, no chat template)."""
    manager = TaskManager(include_defaults=False, include_path=str(tasks_path()))
    task = manager.load(task_name)["tasks"][task_name]
    task.build_all_requests(rank=0, world_size=1)
    return list(task.instances)


def timed(lm: Any, kind: str, requests: list[Any]) -> float:
    """Requests per second of one pass."""
    t0 = time.perf_counter()
    getattr(lm, kind)(requests, disable_tqdm=True)
    return len(requests) / (time.perf_counter() - t0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--out", default="results/benchmarks/lm_eval_throughput.json")
    args = parser.parse_args()

    ours = TrustlabLM("embedded", dtype="float32", attn_implementation="sdpa", batch_size=args.batch, device="cpu")
    peer = HFLM(pretrained=str(smollm2_dir()), dtype="float32", attn_implementation="sdpa", batch_size=args.batch,
                device="cpu")
    records = []
    for kind, task_name in TASKS.items():
        requests = requests_of(task_name)
        timed(ours, kind, requests[: args.batch])  # warm-up, both sides
        timed(peer, kind, requests[: args.batch])
        raw: dict[str, list[float]] = {"trustlab": [], "hf": []}
        for _ in range(args.repeats):
            raw["trustlab"].append(timed(ours, kind, requests))
            raw["hf"].append(timed(peer, kind, requests))
        med = {k: statistics.median(v) for k, v in raw.items()}
        record = BenchmarkRecord(
            f"{kind} requests per second, lm-eval task {task_name} (SmolLM2-135M-Instruct, float32, sdpa, CPU)",
            med["trustlab"], med["hf"], "lm-eval hf model type", lower_is_better=False, target=0.95,
            details={"task": task_name, "requests": len(requests), "batch_size": args.batch,
                     "repeats": args.repeats, "raw_requests_per_second": raw})
        records.append(record)
        print(f"{kind} ({task_name}, {len(requests)} requests): trustlab {record.ours:.2f}/s vs hf "
              f"{record.peer:.2f}/s -> ratio {record.ratio:.3f} (target >= 0.95)")
    write_benchmark(args.out, records)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
