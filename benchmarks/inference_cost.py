"""Inference cost of CLUE and of the backtranslation defense, side by side in one run.

1. CLUE per question (N samples, every step batched across questions) vs the unscored greedy answer,
   and vs sampling-based semantic entropy (N samples clustered with MiniLM, the cheapest
   LM-Polygraph-style sampling estimator) on the same model and questions.
2. The backtranslation defense per benign request (the costly case: no early refusal) vs the
   undefended call, and vs SmoothLLM-lite with 3 copies (spec target: ours / SmoothLLM <= 1.0).

Model calls are counted by a proxy around the handle: batched calls (what the backend sees) and
per-item passes (prompts x samples). Runs alternate peer / ours and the median is reported.
Writes ``results/benchmarks/clue_cost.json`` and ``results/benchmarks/defense_latency.json``.

Usage: ``python benchmarks/inference_cost.py [--questions 4] [--samples 5] [--repeats 1]``
"""

from __future__ import annotations

import argparse
import os
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

BENIGN = [
    "Give three tips for keeping houseplants healthy.",
    "Explain what a binary search does in two sentences.",
    "Write a short thank-you note to a colleague.",
    "What are the main causes of ocean tides?",
    "Suggest a weekend itinerary for a rainy city break.",
    "Summarise the water cycle for a ten-year-old.",
]


class Counted:
    """A proxy around a model handle that counts batched calls and per-item passes by kind."""

    def __init__(self, inner: Any):
        self._inner = inner
        self.calls: Counter[str] = Counter()
        self.items: Counter[str] = Counter()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)

    def generate(self, prompts: Any, config: Any = None, **kw: Any) -> Any:
        out = self._inner.generate(prompts, config, **kw)
        self.calls["generate"] += 1
        self.items["generate"] += sum(len(row) for row in out)
        return out

    def loglikelihood(self, requests: Any, **kw: Any) -> Any:
        out = self._inner.loglikelihood(requests, **kw)
        self.calls["loglikelihood"] += 1
        self.items["loglikelihood"] += len(out)
        return out

    def forward(self, prompts: Any, **kw: Any) -> Any:
        out = self._inner.forward(prompts, **kw)
        self.calls["forward"] += 1
        self.items["forward"] += len(prompts) if isinstance(prompts, list) else 1
        return out

    def reset(self) -> None:
        self.calls.clear()
        self.items.clear()


def timed(model: Counted, fn: Callable[[], Any], per: int) -> dict[str, Any]:
    """Seconds per unit of one run of ``fn``, and its model calls per unit."""
    model.reset()
    t0 = time.perf_counter()
    fn()
    return {"seconds": (time.perf_counter() - t0) / per, "batched_calls": sum(model.calls.values()) / per,
            "item_passes": sum(model.items.values()) / per,
            "by_kind": {k: {"batched_calls": model.calls[k] / per, "item_passes": model.items[k] / per}
                        for k in model.calls}}


def median_run(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """The run with the median time, with every run's seconds attached."""
    return {**sorted(runs, key=lambda r: r["seconds"])[len(runs) // 2], "all_seconds": [r["seconds"] for r in runs]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--questions", type=int, default=4)
    ap.add_argument("--samples", type=int, default=5)
    ap.add_argument("--requests", type=int, default=4)
    ap.add_argument("--new-tokens", type=int, default=32)
    ap.add_argument("--repeats", type=int, default=1)
    ap.add_argument("--out", type=Path, default=Path("results/benchmarks"))
    args = ap.parse_args()

    from trustlab.models import load_model
    from trustlab.models.embedded import load_sentence_encoder
    from trustlab.report import BenchmarkRecord, write_benchmark
    from trustlab.safety import BacktranslationDefense, SmoothLLM
    from trustlab.uncertainty import CLUE, EmbeddingSemanticEntropy, SampleSet
    from trustlab.uncertainty.fixtures import QA_PROMPT, qa_items

    model = Counted(load_model("embedded", batch_size=16))
    encoder = load_sentence_encoder()
    model.generate(["Hi"], max_new_tokens=2)  # warm-up
    n, tok = args.samples, args.new_tokens
    prompts = [QA_PROMPT.format(question=q["question"]) for q in qa_items()[: args.questions]]
    clue = CLUE(model, embedder=encoder, n_samples=n, max_new_tokens=tok, extract_max_new_tokens=tok, seed=0)
    semantic = EmbeddingSemanticEntropy(encoder)

    def sample_entropy() -> None:
        rows = model.generate(prompts, max_new_tokens=tok, temperature=1.0, n=n, seed=0)
        semantic([SampleSet(p, "", [s.text for s in r]) for p, r in zip(prompts, rows, strict=True)])

    runs: dict[str, list[dict[str, Any]]] = {"greedy": [], "semantic_entropy": [], "clue": []}
    for _ in range(args.repeats):
        runs["greedy"].append(timed(model, lambda: model.generate(prompts, max_new_tokens=tok), len(prompts)))
        runs["semantic_entropy"].append(timed(model, sample_entropy, len(prompts)))
        runs["clue"].append(timed(model, lambda: clue.estimate_many(prompts), len(prompts)))
    med = {k: median_run(v) for k, v in runs.items()}
    common = {"questions": len(prompts), "samples": n, "max_new_tokens": tok, "repeats": args.repeats,
              "model": "embedded SmolLM2-135M-Instruct (HF, CPU)", "nli": "LLM-as-NLI (same model)"}
    clue_records = [
        BenchmarkRecord("seconds per question: CLUE (greedy + N samples + extraction + NLI) vs unscored greedy answer",
                        med["clue"]["seconds"], med["greedy"]["seconds"], "unscored greedy call", True, None,
                        details={**common, "ours": med["clue"], "peer": med["greedy"]}),
        BenchmarkRecord("seconds per question: CLUE vs sampling semantic entropy (N samples + MiniLM clusters)",
                        med["clue"]["seconds"], med["semantic_entropy"]["seconds"], "embedding semantic entropy",
                        True, None, details={**common, "ours": med["clue"], "peer": med["semantic_entropy"]}),
    ]
    write_benchmark(args.out / "clue_cost.json", clue_records)

    requests = BENIGN[: args.requests]
    defense = BacktranslationDefense(model, inferred_max_new_tokens=tok)
    smooth = SmoothLLM(model, copies=3)
    druns: dict[str, list[dict[str, Any]]] = {"undefended": [], "smoothllm": [], "backtranslation": []}
    for _ in range(args.repeats):
        druns["undefended"].append(timed(model, lambda: model.generate(requests, max_new_tokens=tok), len(requests)))
        druns["smoothllm"].append(timed(model, lambda: smooth.generate(requests, max_new_tokens=tok), len(requests)))
        druns["backtranslation"].append(timed(model, lambda: defense.generate(requests, max_new_tokens=tok),
                                              len(requests)))
    dmed = {k: median_run(v) for k, v in druns.items()}
    dcommon = {"requests": len(requests), "max_new_tokens": tok, "repeats": args.repeats, "gamma": defense.gamma,
               "model": "embedded SmolLM2-135M-Instruct (HF, CPU)", "backtranslator": "same model"}
    write_benchmark(args.out / "defense_latency.json", [
        BenchmarkRecord("seconds per benign request: backtranslation defense vs undefended call",
                        dmed["backtranslation"]["seconds"], dmed["undefended"]["seconds"], "undefended call", True,
                        None, details={**dcommon, "ours": dmed["backtranslation"], "peer": dmed["undefended"]}),
        BenchmarkRecord("seconds per benign request: backtranslation defense vs SmoothLLM-lite (3 copies)",
                        dmed["backtranslation"]["seconds"], dmed["smoothllm"]["seconds"], "SmoothLLM-lite, 3 copies",
                        True, 1.0, details={**dcommon, "ours": dmed["backtranslation"], "peer": dmed["smoothllm"]}),
    ])
    for name, r in {**med, **dmed}.items():
        print(f"{name:18s} {r['seconds']:7.2f} s/unit  batched calls {r['batched_calls']:.2f}  passes {r['item_passes']:.2f}")


if __name__ == "__main__":
    main()
