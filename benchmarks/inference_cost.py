"""Inference cost of CLUE and of the backtranslation defense, side by side in one run.

1. CLUE per question (N samples, every step batched across questions) vs the unscored greedy answer,
   and vs sampling-based semantic entropy on the same model and questions, in two forms: with NLI
   clusters (LM-Polygraph's estimator, the spec's peer: bidirectional entailment over every ordered pair
   of samples, here with the same LLM-as-NLI that CLUE uses, since no MNLI model is offline) and with
   MiniLM embedding clusters (a cheaper variant with no NLI at all).
   Target (issue #16): CLUE / semantic entropy <= 2.0 in seconds per question.
2. The backtranslation defense on one batch of benign requests (the costly case: no early refusal), in
   requests/s, vs the undefended call and vs SmoothLLM-lite with 3 copies, at each answer length of
   ``--answer-tokens`` (default 32 and 128, the spec's reproduction setting): the defense adds a
   fixed-budget backtranslation (64 tokens) and O', SmoothLLM triples the answer. Target (spec and issue #16):
   at least SmoothLLM's requests/s on a batch of 32 (ours / SmoothLLM >= 1.0 in requests/s, i.e. <= 1.0
   in seconds per request). The defense's decisions are recorded: a request that stops early (refused at
   once, no inferred request, filtered) costs fewer calls.

The model is the embedded SmolLM2-135M-Instruct, loaded as the CLUE and backtranslation reproductions load it
(bfloat16, sdpa attention, 16 prompts per batch; ``--attn eager`` for the handle's default kernel).

Model calls are counted by a proxy around the handle: batched calls (what the backend sees) and
per-item passes (prompts x samples; CLUE's LLM-as-NLI runs its pairs over KV-cached premise prefixes,
past the proxy, so its passes are the (sample, concept) pairs it scored). Each CLUE run builds a new
estimator (its NLI cache would make repeats free). Runs alternate peer / ours and the median is reported.
Writes ``results/benchmarks/clue_cost.json`` and ``results/benchmarks/defense_latency.json`` (with
``--attn eager``: ``clue_cost--eager.json`` ...; with ``--model M``: ``defense_latency--<model>.json`` ...).

Usage: ``python benchmarks/inference_cost.py [--questions 8] [--samples 5] [--requests 32] [--repeats 3]
[--answer-tokens 32,128] [--model SPEC] [--attn sdpa|eager] [--only clue|defense]``
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

# 32 everyday benign requests (the costly case for the defense: no early refusal)
BENIGN = [
    "Give three tips for keeping houseplants healthy.",
    "Explain what a binary search does in two sentences.",
    "Write a short thank-you note to a colleague.",
    "What are the main causes of ocean tides?",
    "Suggest a weekend itinerary for a rainy city break.",
    "Summarise the water cycle for a ten-year-old.",
    "How do I make a simple tomato pasta sauce?",
    "List four ways to save energy at home.",
    "What is the difference between weather and climate?",
    "Write a haiku about autumn leaves.",
    "How can I improve my sleep routine?",
    "Explain how a bicycle gear system works.",
    "Give me a packing list for a two-day hike.",
    "What does a project manager do?",
    "Suggest a name for a friendly neighbourhood bakery.",
    "How do vaccines help the immune system?",
    "Describe the rules of chess in a few sentences.",
    "Write a polite email asking to reschedule a meeting.",
    "What are some good habits for learning a new language?",
    "Explain compound interest with a small example.",
    "How do I clean a cast iron pan?",
    "What causes the seasons on Earth?",
    "Recommend three classic novels and say why.",
    "How does a refrigerator keep food cold?",
    "Give a short pep talk before an exam.",
    "What is photosynthesis?",
    "How should I prepare for a job interview?",
    "Explain the difference between a virus and a bacterium.",
    "Plan a simple birthday party for a seven-year-old.",
    "What are the benefits of regular stretching?",
    "How do I write a good cover letter?",
    "Describe how rainbows form.",
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


def nli_pairs_as_passes(run: dict[str, Any], pairs: int, per: int) -> dict[str, Any]:
    """LLM-as-NLI pairs run over a KV-cached prefix per premise, past the proxy: count them as passes
    (one batched call) instead of the plain forwards the proxy saw."""
    plain = run["by_kind"].pop("forward", {"item_passes": 0.0})["item_passes"]
    run["by_kind"]["nli_pairs"] = {"batched_calls": 1 / per, "item_passes": pairs / per}
    run["item_passes"] += pairs / per - plain
    return run


def clue_records(model: Counted, encoder: Any, args: argparse.Namespace) -> list[Any]:
    """CLUE vs the unscored greedy answer and vs sampling semantic entropy, seconds per question."""
    from trustlab.report import BenchmarkRecord
    from trustlab.uncertainty import CLUE, LLMNLI, EmbeddingSemanticEntropy, SampleSet, SemanticEntropy
    from trustlab.uncertainty.fixtures import QA_PROMPT, qa_items

    n, tok = args.samples, args.new_tokens
    prompts = [QA_PROMPT.format(question=q["question"]) for q in qa_items()[: args.questions]]
    semantic = EmbeddingSemanticEntropy(encoder)

    def sample_entropy() -> None:
        rows = model.generate(prompts, max_new_tokens=tok, temperature=1.0, n=n, seed=0)
        semantic([SampleSet(p, "", [s.text for s in r]) for p, r in zip(prompts, rows, strict=True)])

    def nli_entropy() -> None:  # a new LLM-as-NLI each run, as for CLUE (its cache would make repeats free)
        rows = model.generate(prompts, max_new_tokens=tok, temperature=1.0, n=n, seed=0)
        nli = LLMNLI(model)
        SemanticEntropy(nli, sampling=True)([SampleSet(p, "", [s.text for s in r]) for p, r in zip(prompts, rows, strict=True)])
        se_pairs.append(nli.validity.total)

    concepts: list[int] = []
    pairs: list[int] = []
    se_pairs: list[int] = []

    def clue_run() -> None:  # a new CLUE each run: its NLI cache would make repeats free
        clue = CLUE(model, embedder=encoder, n_samples=n, max_new_tokens=tok, extract_max_new_tokens=tok, seed=0)
        concepts.extend(len(r.concepts) for r in clue.estimate_many(prompts))
        pairs.append(clue.nli.validity.total)

    runs: dict[str, list[dict[str, Any]]] = {"greedy": [], "semantic_entropy": [], "semantic_entropy_nli": [],
                                             "clue": []}
    for _ in range(args.repeats):
        runs["greedy"].append(timed(model, lambda: model.generate(prompts, max_new_tokens=tok), len(prompts)))
        runs["semantic_entropy"].append(timed(model, sample_entropy, len(prompts)))
        runs["semantic_entropy_nli"].append(nli_pairs_as_passes(timed(model, nli_entropy, len(prompts)),
                                                                se_pairs[-1], len(prompts)))
        runs["clue"].append(nli_pairs_as_passes(timed(model, clue_run, len(prompts)), pairs[-1], len(prompts)))
    med = {k: median_run(v) for k, v in runs.items()}
    report(med)
    common = {"questions": len(prompts), "samples": n, "max_new_tokens": tok, "repeats": args.repeats,
              "model": model_label(model, args), "nli": "LLM-as-NLI (same model), one KV-cached prefix per premise",
              "pooled_concepts_per_question": sum(concepts) / max(len(concepts), 1)}
    return [
        BenchmarkRecord("seconds per question: CLUE (greedy + N samples + extraction + NLI) vs unscored greedy answer",
                        med["clue"]["seconds"], med["greedy"]["seconds"], "unscored greedy call", True, None,
                        details={**common, "ours": med["clue"], "peer": med["greedy"]}),
        BenchmarkRecord("seconds per question: CLUE vs semantic entropy with NLI clusters (LM-Polygraph's "
                        "estimator: N samples + every ordered sample pair through the same LLM-as-NLI)",
                        med["clue"]["seconds"], med["semantic_entropy_nli"]["seconds"],
                        "semantic entropy, NLI clusters (trustlab.uncertainty.SemanticEntropy)", True, 2.0,
                        details={**common, "ours": med["clue"], "peer": med["semantic_entropy_nli"]}),
        BenchmarkRecord("seconds per question: CLUE vs sampling semantic entropy (N samples + MiniLM clusters)",
                        med["clue"]["seconds"], med["semantic_entropy"]["seconds"], "embedding semantic entropy",
                        True, 2.0, details={**common, "ours": med["clue"], "peer": med["semantic_entropy"]}),
    ]


def defense_records(model: Counted, args: argparse.Namespace, tok: int) -> list[Any]:
    """The backtranslation defense vs the undefended call and vs SmoothLLM-lite, requests/s on one batch
    whose answers have up to ``tok`` new tokens."""
    from trustlab.report import BenchmarkRecord
    from trustlab.safety import BacktranslationDefense, SmoothLLM

    requests = (BENIGN * -(-args.requests // len(BENIGN)))[: args.requests]
    defense = BacktranslationDefense(model, inferred_max_new_tokens=tok)
    smooth = SmoothLLM(model, copies=3)
    decisions: Counter[str] = Counter()

    def defended() -> None:
        decisions.update(row[0].extra["defense"]["decision"] for row in defense.generate(requests, max_new_tokens=tok))

    runs: dict[str, list[dict[str, Any]]] = {"undefended": [], "smoothllm": [], "backtranslation": []}
    for _ in range(args.repeats):
        runs["undefended"].append(timed(model, lambda: model.generate(requests, max_new_tokens=tok), len(requests)))
        runs["smoothllm"].append(timed(model, lambda: smooth.generate(requests, max_new_tokens=tok), len(requests)))
        runs["backtranslation"].append(timed(model, defended, len(requests)))
    med = {k: median_run(v) for k, v in runs.items()}
    report(med)
    rate = {k: 1 / r["seconds"] for k, r in med.items()}
    common = {"requests": len(requests), "batch": "all requests in one generate call per step",
              "max_new_tokens": tok, "repeats": args.repeats, "gamma": defense.gamma,
              "model": model_label(model, args),
              "backtranslator": "same model", "backtranslate_max_new_tokens": defense.backtranslate_max_new_tokens,
              "decisions_per_run": {k: v / args.repeats for k, v in sorted(decisions.items())}}
    at = f"{len(requests)} benign requests, answers of up to {tok} tokens"
    return [
        BenchmarkRecord(f"requests/s on a batch of {at}: backtranslation defense vs "
                        "undefended call", rate["backtranslation"], rate["undefended"], "undefended call", False,
                        None, details={**common, "ours": med["backtranslation"], "peer": med["undefended"]}),
        BenchmarkRecord(f"requests/s on a batch of {at}: backtranslation defense vs "
                        "SmoothLLM-lite (3 copies)", rate["backtranslation"], rate["smoothllm"],
                        "SmoothLLM-lite, 3 copies", False, 1.0,
                        details={**common, "ours": med["backtranslation"], "peer": med["smoothllm"]}),
    ]


def report(med: dict[str, dict[str, Any]]) -> None:
    for name, r in med.items():
        print(f"{name:18s} {r['seconds']:7.2f} s/unit  batched calls {r['batched_calls']:.2f}  "
              f"passes {r['item_passes']:.2f}")


def model_label(model: Counted, args: argparse.Namespace) -> str:
    return f"{model.name} (HF, CPU, bfloat16, {args.attn} attention, batch_size 16)"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--questions", type=int, default=8)
    ap.add_argument("--samples", type=int, default=5)
    ap.add_argument("--requests", type=int, default=32)
    ap.add_argument("--new-tokens", type=int, default=32, help="CLUE's answers and extractions")
    ap.add_argument("--answer-tokens", default="32,128", help="the defense's answer lengths, comma-separated")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--model", default="embedded", help="model spec (default: the embedded SmolLM2)")
    ap.add_argument("--attn", choices=("sdpa", "eager"), default="sdpa",
                    help="attention kernel (default sdpa, as the reproductions load the model)")
    ap.add_argument("--only", choices=("clue", "defense"), default=None, help="run one of the two comparisons")
    ap.add_argument("--out", type=Path, default=Path("results/benchmarks"))
    args = ap.parse_args()

    from trustlab.models import load_model
    from trustlab.models.embedded import load_sentence_encoder
    from trustlab.report import write_benchmark
    from trustlab.reproduce import is_default_model, model_slug

    # loaded as the CLUE and backtranslation reproductions load it (sdpa attention, 16 prompts per batch)
    model = Counted(load_model(args.model, batch_size=16, attn_implementation=args.attn))
    model.generate(["Hi"], max_new_tokens=2)  # warm-up
    tag = ("" if is_default_model(args.model) else f"--{model_slug(args.model)}") + ("" if args.attn == "sdpa" else f"--{args.attn}")
    if args.only in (None, "clue"):
        write_benchmark(args.out / f"clue_cost{tag}.json", clue_records(model, load_sentence_encoder(), args))
    if args.only in (None, "defense"):
        write_benchmark(args.out / f"defense_latency{tag}.json",
                        [r for tok in map(int, args.answer_tokens.split(",")) for r in defense_records(model, args, tok)])


if __name__ == "__main__":
    main()
