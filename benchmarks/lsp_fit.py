"""LSP learning cost: learning-time LLM calls and wall time, side by side with a single-prompt learner.

Spec lsp-ilbench.md section 7 asks for LSP vs Tree-Prompting (``imodelsx.TreePromptClassifier``) on the same
SynTree split (target: calls ratio <= 1.5). Tree-Prompting cannot run here: ``imodelsx`` 1.0.14 (checked with
``pip download --no-deps``) needs ``imodels``, ``langchain``, ``spacy`` and ``dict_hash``, none of which is
installed, and loads its LLM by checkpoint name through its own loader. So this script compares LSP with our
single-prompt baseline, one RuleSum node (``LSP(max_nodes=1)``), on the same split and model, in one run:
records ``lsp_fit.calls`` and ``lsp_fit.wall_s`` (ratio LSP / single node; no target, as the spec's target
is against Tree-Prompting). For reference only, ``details.tree_prompting_calls_analytic`` gives what
Tree-Prompting's ``fit`` would cost by its source: one forward pass per (prompt, training example), with as
many prompts as LSP wrote rule candidates. It is arithmetic, not a measurement.

Usage: ``python benchmarks/lsp_fit.py [--model embedded] [--depth 2] [--train 40]
[--out results/benchmarks/lsp_fit.json]``
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TRUSTLAB_NO_PROGRESS", "1")

OUT = Path(__file__).resolve().parents[1] / "results" / "benchmarks" / "lsp_fit.json"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default="embedded")
    ap.add_argument("--depth", type=int, default=2)
    ap.add_argument("--train", type=int, default=40)
    ap.add_argument("--max-nodes", type=int, default=3)
    ap.add_argument("--rule-samples", type=int, default=2)
    ap.add_argument("--validate", type=int, default=12)
    ap.add_argument("--out", type=Path, default=OUT)
    args = ap.parse_args()

    from trustlab.bench.ilbench import make_syntree
    from trustlab.models import load_model
    from trustlab.programs.lsp import LSP
    from trustlab.report import BenchmarkRecord, write_benchmark

    task = make_syntree(depth=args.depth, n_train=args.train, n_test=1, seed=0)
    xs, ys = [r["input"] for r in task.train], [r["label"] for r in task.train]
    llm = load_model(args.model, attn_implementation="sdpa", batch_size=16)
    opts = {"n_rule_samples": args.rule_samples, "n_validate": args.validate, "rulesum_batch": 12,
            "learner_max_new_tokens": 80, "min_gain": 0.0, "min_errors": 1}
    fits, wall = {}, {}
    for name, nodes in (("lsp", args.max_nodes), ("single", 1)):
        t0 = time.perf_counter()
        fits[name] = LSP(llm, max_nodes=nodes, **opts).fit(xs, ys)
        wall[name] = time.perf_counter() - t0
    calls = {k: sum(f.info["calls"].values()) for k, f in fits.items()}
    n_candidates = sum(len(n.info.get("candidates", [])) for _, n in fits["lsp"].root.nodes())
    details = {"model": llm.name, "split": task.config, "settings": {**opts, "max_nodes": args.max_nodes},
               "calls": {k: f.info["calls"] for k, f in fits.items()}, "wall_s": wall,
               "nodes": {k: f.n_nodes for k, f in fits.items()},
               "train_accuracy": {k: f.info["train_accuracy"] for k, f in fits.items()},
               "valid_rate": {k: f.info["validity"]["valid_rate"] for k, f in fits.items()},
               "tree_prompting_calls_analytic": n_candidates * len(xs),
               "peer_note": "Tree-Prompting (imodelsx) not run: it needs imodels, langchain, spacy, dict_hash",
               "load_average": os.getloadavg()}
    records = [BenchmarkRecord("learning-time LLM calls (learner + module prompts)", calls["lsp"], calls["single"],
                               "single RuleSum node (LSP max_nodes=1)", True, None, details=details),
               BenchmarkRecord("learning wall time (s)", wall["lsp"], wall["single"],
                               "single RuleSum node (LSP max_nodes=1)", True, None, details=details)]
    write_benchmark(args.out, records)
    for r in records:
        print(f"{r.measure}: LSP {r.ours:.1f} vs {r.peer_name} {r.peer:.1f} (ratio {r.ratio:.2f})")
    print(f"Tree-Prompting fit (analytic, {n_candidates} prompts x {len(xs)} examples): "
          f"{details['tree_prompting_calls_analytic']} forward passes")


if __name__ == "__main__":
    sys.exit(main())
