"""LSP learning cost and accuracy, side by side with Tree-Prompting on the same SynTree split, in one run.

The peer the spec names (lsp-ilbench.md section 7): Tree-Prompting (Morris, Singh et al. 2023), as
``imodelsx.TreePromptClassifier``: a bank of prompts is scored on every training example (one forward pass each:
the logits of each class's first token), and a scikit-learn decision tree over those answers picks which prompts
to ask and in what order. Its prompts here are built as the Tree-Prompting paper builds its default bank: each
prompt is ``--demos`` (8) labelled training examples drawn at random (seeded), followed by the item; there are as
many prompts as LSP wrote rule candidates in the same run (``--peer-prompts`` sets another number), so both
methods choose among the same number of candidate prompts. Its tree may have ``max_nodes + 1`` leaves, i.e. as
many prompts on a path as LSP may have modules.

- **ours**: ``trustlab.programs.LSP(max_nodes=3)`` on the split, bfloat16, answers generated (8 tokens at most).
- **peer**: Tree-Prompting on the same model folder, through ``benchmarks/peers/treeprompt_run.py``, which runs
  in a Python that has ``imodelsx`` (``--peer-python``, default ``$TRUSTLAB_TREEPROMPT_PYTHON``, else this
  Python). imodelsx needs langchain, spacy, imodels and dict_hash, which trustlab does not install: set one up
  with ``python -m venv tp && tp/bin/pip install torch==2.13.0 && tp/bin/pip install imodelsx``. It runs as
  imodelsx loads it (float32 on CPU, batch size 1); its forward passes are counted by a hook on the model.
- Also, for reference: one RuleSum node (``LSP(max_nodes=1)``), the single-prompt learner.

Records (ratio = LSP / Tree-Prompting): learning-time LLM calls (learner prompts and module prompts for LSP; one
scored prompt per (prompt, training example) for Tree-Prompting; target <= 1.5 from the spec), learning wall
time, test accuracy (with the majority-label floor in ``details``), LLM calls per test item, and program size
(prompts in the learned program). A call is not a
unit of cost shared by both: an LSP call generates up to 80 (learner) or 8 (module) tokens; a Tree-Prompting call
is one forward pass. Wall times differ also in dtype (bfloat16 vs the peer's float32).

Committed run (results/benchmarks/lsp_fit.json; imodelsx 1.0.14, SmolLM2, depth 2, 40 train / 100 test, seed 0,
idle machine, 2 threads; the same numbers in two runs but the wall times): learning calls 229 vs 160 (1.43,
target met), wall 64 s vs 173 s, test accuracy 0.58 vs 0.52 (majority floor 0.58; one RuleSum node 0.37),
2.6 vs 3.0 calls per test item, 2 vs 3 prompts in the program.

Usage: ``python benchmarks/lsp_fit.py [--model embedded] [--depth 2] [--train 40] [--test 100]
[--peer-python PATH] [--out results/benchmarks/lsp_fit.json]``
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TRUSTLAB_NO_PROGRESS", "1")

HERE = Path(__file__).resolve().parent
OUT = HERE.parent / "results" / "benchmarks" / "lsp_fit.json"
TEMPLATE = "{prompt}Input: {example}\nLabel:"


def demo_prompts(train: list[tuple[str, str]], n_prompts: int, n_demos: int, seed: int) -> list[str]:
    """Tree-Prompting's default bank: each prompt is ``n_demos`` random labelled training examples."""
    rng = np.random.default_rng(seed)
    prompts = []
    for _ in range(n_prompts):
        idx = rng.choice(len(train), size=min(n_demos, len(train)), replace=False)
        prompts.append("".join(f"Input: {train[i][0]}\nLabel: {train[i][1]}\n\n" for i in idx))
    return prompts


def run_peer(python: str, job: dict, timeout: float) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        job_file, out_file = Path(tmp) / "job.json", Path(tmp) / "out.json"
        job_file.write_text(json.dumps(job))
        proc = subprocess.run([python, str(HERE / "peers" / "treeprompt_run.py"), str(job_file), str(out_file)],
                              capture_output=True, text=True, timeout=timeout)
        if proc.returncode != 0 or not out_file.exists():
            raise SystemExit(f"Tree-Prompting run failed (exit {proc.returncode}) with {python}:\n"
                             f"{proc.stderr[-3000:]}")
        return json.loads(out_file.read_text())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default="embedded")
    ap.add_argument("--depth", type=int, default=2)
    ap.add_argument("--train", type=int, default=40)
    ap.add_argument("--test", type=int, default=100)
    ap.add_argument("--max-nodes", type=int, default=3)
    ap.add_argument("--rule-samples", type=int, default=2)
    ap.add_argument("--validate", type=int, default=12)
    ap.add_argument("--peer-python", default=os.environ.get("TRUSTLAB_TREEPROMPT_PYTHON", sys.executable))
    ap.add_argument("--peer-prompts", type=int, default=0, help="0: as many as LSP's rule candidates")
    ap.add_argument("--demos", type=int, default=8)
    ap.add_argument("--peer-timeout", type=float, default=3600)
    ap.add_argument("--out", type=Path, default=OUT)
    args = ap.parse_args()

    import torch

    from trustlab.bench.ilbench import make_syntree
    from trustlab.models import load_model
    from trustlab.models.embedded import model_dir
    from trustlab.programs.lsp import LSP
    from trustlab.report import BenchmarkRecord, write_benchmark

    if not args.model.startswith("embedded"):
        raise SystemExit("--model must be an embedded model (the peer loads the same folder): embedded[:KEY]")
    key = args.model.split(":", 1)[1] if ":" in args.model else None
    task = make_syntree(depth=args.depth, n_train=args.train, n_test=args.test, seed=0)
    xs, ys = [r["input"] for r in task.train], [r["label"] for r in task.train]
    tx, ty = [r["input"] for r in task.test], [r["label"] for r in task.test]
    llm = load_model(args.model, attn_implementation="sdpa", batch_size=16)
    opts = {"n_rule_samples": args.rule_samples, "n_validate": args.validate, "rulesum_batch": 12,
            "learner_max_new_tokens": 80, "min_gain": 0.0, "min_errors": 1}
    ours: dict[str, dict] = {}
    for name, nodes in (("lsp", args.max_nodes), ("single", 1)):
        t0 = time.perf_counter()
        program = LSP(llm, max_nodes=nodes, **opts).fit(xs, ys)
        fit_s = time.perf_counter() - t0
        runner = program.runner()
        t0 = time.perf_counter()
        pred = [p.label for p in program.predict_many(tx, runner=runner)]
        ours[name] = {"fit_calls": sum(program.info["calls"].values()), "calls": program.info["calls"],
                      "fit_s": fit_s, "predict_s": time.perf_counter() - t0,
                      "accuracy": float(np.mean([p == y for p, y in zip(pred, ty, strict=True)])),
                      "calls_per_item": runner.calls / len(tx),
                      "nodes": program.n_nodes,
                      "prompts": sum(1 for _, n in program.root.nodes() if n.rule is not None),
                      "train_accuracy": program.info["train_accuracy"],
                      "valid_rate": program.info["validity"]["valid_rate"],
                      "candidates": sum(len(n.info.get("candidates", [])) for _, n in program.root.nodes()),
                      "program": program.to_text()}
        print(f"{name}: fit {fit_s:.0f} s, {ours[name]['fit_calls']} calls, test accuracy "
              f"{ours[name]['accuracy']:.2f}", flush=True)
    n_prompts = args.peer_prompts or max(2, ours["lsp"]["candidates"])
    job = {"checkpoint": str(model_dir(key)), "prompts": demo_prompts(list(zip(xs, ys, strict=True)), n_prompts,
                                                                      args.demos, seed=0),
           "verbalizer": {c: f" {c}" for c in task.labels}, "prompt_template": TEMPLATE,
           "tree_kwargs": {"max_leaf_nodes": args.max_nodes + 1}, "train": list(zip(xs, ys, strict=True)),
           "test": list(zip(tx, ty, strict=True)), "threads": torch.get_num_threads(), "seed": 0}
    peer = run_peer(args.peer_python, job, args.peer_timeout)
    peer["fit_calls"] = peer["fit_forward_sequences"]
    peer["calls_per_item"] = peer["predict_forward_sequences"] / peer["n_test"]
    peer["prompts"] = len(peer["prompts_kept"])
    print(f"tree-prompting: fit {peer['fit_s']:.0f} s, {peer['fit_calls']} forward passes, test accuracy "
          f"{peer['accuracy']:.2f}", flush=True)
    lsp = ours["lsp"]
    majority = max(sorted(set(ys)), key=ys.count)
    details = {"model": llm.name, "split": task.config, "settings": {**opts, "max_nodes": args.max_nodes},
               "majority_floor": {"label": majority, "test_accuracy": float(np.mean([y == majority for y in ty]))},
               "lsp": lsp, "single_rulesum_node": ours["single"],
               "tree_prompting": {**peer, "n_prompts": n_prompts, "demos_per_prompt": args.demos,
                                  "prompt_template": TEMPLATE, "tree_kwargs": job["tree_kwargs"]},
               "load_average": os.getloadavg()}
    name = "Tree-Prompting (imodelsx TreePromptClassifier)"
    records = [
        BenchmarkRecord("learning-time LLM calls (LSP: learner + module prompts; peer: scored prompts)",
                        lsp["fit_calls"], peer["fit_calls"], name, True, 1.5, details=details),
        BenchmarkRecord("learning wall time (s)", lsp["fit_s"], peer["fit_s"], name, True, None, details=details),
        BenchmarkRecord(f"test accuracy (n = {len(tx)})", lsp["accuracy"], peer["accuracy"], name, False, None,
                        details=details),
        BenchmarkRecord("LLM calls per test item", lsp["calls_per_item"], peer["calls_per_item"], name, True, None,
                        details=details),
        BenchmarkRecord("prompts in the learned program", lsp["prompts"], peer["prompts"], name, True, None,
                        details=details),
    ]
    write_benchmark(args.out, records)
    for r in records:
        print(f"{r.measure}: LSP {r.ours:.2f} vs Tree-Prompting {r.peer:.2f} (ratio {r.ratio:.2f})")
    print(f"single RuleSum node: {ours['single']['fit_calls']} calls, test accuracy {ours['single']['accuracy']:.2f}; "
          f"majority floor {details['majority_floor']['test_accuracy']:.2f}")


if __name__ == "__main__":
    sys.exit(main())
