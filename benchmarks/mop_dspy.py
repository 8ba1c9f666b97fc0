"""Mixture-of-Prompts vs DSPy's KNNFewShot, side by side in one run: same model, same splits, same server.

The peer the spec names (section 7): DSPy (PyPI ``dspy``) ``KNNFewShot``, per-query retrieval of the ``k``
nearest training examples as demos, the DSPy optimiser closest to MoP's routing. Both run against one
``transformers serve --continuous-batching`` (the embedded SmolLM2) on 127.0.0.1, greedy, with the same
embedder (the embedded all-MiniLM-L6-v2, for DSPy through ``dspy.Embedder``):

- **ours**: the MoP prompt the reproduction fitted for the same task and seed (read from
  ``results/mixture-of-prompts/samples.jsonl``, rows ``<task>/<seed>/mop``; run ``trustlab reproduce
  mixture-of-prompts`` first), answering the test split through trustlab's OpenAI-compatible backend.
- **peer**: ``KNNFewShot(k, trainset=<the same demo pool>, max_bootstrapped_demos=0,
  max_labeled_demos=k)`` on ``dspy.Predict("input -> output")``: labelled neighbours only, so it spends no
  model calls before the test queries (bootstrapping would, and SmolLM2 rarely gets a training answer
  right). ``k`` defaults to MoP's demos per expert (pool 100 / 10 experts = 10). DSPy prompts in its own
  chat format (ChatAdapter, with a JSONAdapter retry when the answer does not parse); an answer it cannot
  parse counts as wrong and is reported in ``parse_failures``. DSPy gets 32 more tokens than MoP's answers (its
field markers take about 20).

Records: test accuracy (exact match, higher is better; ratio = ours / peer) and model calls per test
query (ours 1; DSPy's counted from ``lm.history``), per task and overall, with the load average.

Committed run (results/benchmarks/mop_dspy.json; DSPy 3.4.1, SmolLM2, seed 0, arith-count-sort, the one task
where the arms score above the floor; all three tasks did not finish within 25 min under load): MoP 0.29 vs
KNNFewShot 0.16 (n = 100, 95% CI of the difference [+0.07, +0.20]), 100 calls each; 10 DSPy answers were
truncated at 64 tokens.

Needs ``pip install dspy`` (not a trustlab dependency: ~30 packages, litellm among them).

Usage: ``python benchmarks/mop_dspy.py [--seed 0] [--k 10] [--out results/benchmarks/mop_dspy.json]``
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TRUSTLAB_NO_PROGRESS", "1")
os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")  # litellm: no fetch of its price list

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # for tests.servers
OUT = ROOT / "results" / "benchmarks" / "mop_dspy.json"


def fitted_mops(results: Path, seed: int) -> dict[str, dict]:
    """The reproduction's fitted MoP rows for ``seed``, by task (those it has finished)."""
    path = results / "samples.jsonl"
    if not path.exists():
        raise SystemExit(f"{path} is missing: run `trustlab reproduce mixture-of-prompts` first")
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    found = {r["task"]: r for r in rows if r.get("method") == "mop" and r.get("seed") == seed}
    if not found:
        raise SystemExit(f"no fitted MoP for seed {seed} in {path}: run `trustlab reproduce mixture-of-prompts`")
    return found


def run_dspy(dspy, lm, encoder, task, k: int, threads: int) -> dict:
    from dspy.teleprompt import KNNFewShot

    from trustlab.prompting.mop import exact_match

    train = [dspy.Example(input=e["input"], output=e["output"]).with_inputs("input") for e in task.train]
    knn = KNNFewShot(k, train, dspy.Embedder(lambda texts: encoder.encode(list(texts))),
                     max_bootstrapped_demos=0, max_labeled_demos=k)
    program = knn.compile(dspy.Predict("input -> output"))
    before = len(lm.history)
    t0 = time.perf_counter()
    parallel = dspy.Parallel(num_threads=threads, max_errors=len(task.test) + 1, disable_progress_bar=True)
    preds = parallel([(program, {"input": e["input"]}) for e in task.test])
    wall = time.perf_counter() - t0
    answers = [None if p is None else str(getattr(p, "output", "") or "") for p in preds]
    correct = [0.0 if a is None else exact_match(a, e["output"]) for a, e in zip(answers, task.test, strict=True)]
    return {"accuracy": sum(correct) / len(correct), "correct": correct, "wall_s": wall,
            "calls": len(lm.history) - before, "parse_failures": sum(a is None for a in answers),
            "answers": [(a or "")[:80] for a in answers[:5]]}


def run_ours(row: dict, handle, embedder, task) -> dict:
    from trustlab.prompting.mop import MoPModel

    fitted = MoPModel.from_json(row["artifact"], model=handle, embedder=embedder)
    t0 = time.perf_counter()
    answers = fitted.predict([e["input"] for e in task.test])
    wall = time.perf_counter() - t0
    correct = [task.scorer(a, e["output"]) for a, e in zip(answers, task.test, strict=True)]
    return {"accuracy": sum(correct) / len(correct), "correct": correct, "wall_s": wall, "calls": len(task.test),
            "fit_calls": row["calls"], "reproduction_accuracy": row["accuracy"], "answers": answers[:5]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seed", type=int, default=0, help="the task seed (the reproduction's first seed is 0)")
    ap.add_argument("--k", type=int, default=10, help="DSPy's neighbours per query (MoP's demos per expert)")
    ap.add_argument("--tasks", default=None, help="comma-separated task names (default: every task fitted)")
    ap.add_argument("--threads", type=int, default=8, help="requests in flight, both sides")
    ap.add_argument("--results", type=Path, default=ROOT / "results" / "mixture-of-prompts")
    ap.add_argument("--out", type=Path, default=OUT)
    args = ap.parse_args()
    try:
        import dspy
    except ImportError:
        raise SystemExit("this benchmark needs DSPy: pip install dspy") from None
    import tempfile

    from tests.servers import TransformersServer
    from trustlab.models import load_model
    from trustlab.models.embedded import load_sentence_encoder
    from trustlab.prompting.mop_tasks import TASKS, make_task
    from trustlab.report import BenchmarkRecord, write_benchmark
    from trustlab.report.stats import bootstrap_diff_ci

    setup = json.loads((args.results / "config.json").read_text())
    splits = {k: setup[k] for k in ("n_pool", "n_eval", "n_test")}
    encoder = load_sentence_encoder()
    per_task = {}
    with tempfile.TemporaryDirectory() as logs:
        server = TransformersServer(Path(logs))
        server.start()
        try:
            handle = load_model(f"openai:{server.base_url}", model_name=server.model_alias,
                                max_concurrency=args.threads)
            lm = dspy.LM(f"openai/{server.model_alias}", api_base=server.base_url, api_key="none",
                         temperature=0.0, max_tokens=setup.get("answer_max_new_tokens", 32) + 32, cache=False)
            dspy.configure(lm=lm)
            fitted = fitted_mops(args.results, args.seed)
            wanted = args.tasks.split(",") if args.tasks else list(TASKS)
            for name in [t for t in TASKS if t in fitted and t in wanted]:
                task = make_task(name, **splits, seed=args.seed)
                row = fitted[name]
                per_task[name] = {"ours": run_ours(row, handle, encoder, task),
                                  "peer": run_dspy(dspy, lm, encoder, task, args.k, args.threads)}
                o, p = per_task[name]["ours"], per_task[name]["peer"]
                print(f"{name}: MoP {o['accuracy']:.2f} ({o['calls']} calls, {o['wall_s']:.0f} s), DSPy KNNFewShot "
                      f"{p['accuracy']:.2f} ({p['calls']} calls, {p['wall_s']:.0f} s, "
                      f"{p['parse_failures']} unparsed)")
        finally:
            server.stop()
    ours_c = [c for t in per_task.values() for c in t["ours"]["correct"]]
    peer_c = [c for t in per_task.values() for c in t["peer"]["correct"]]
    ours_acc, peer_acc = sum(ours_c) / len(ours_c), sum(peer_c) / len(peer_c)
    n_test = len(ours_c)
    details = {"model": server.model_alias, "seed": args.seed, "k": args.k, "threads": args.threads, **splits,
               "n": n_test, "ci_diff": bootstrap_diff_ci(ours_c, peer_c, seed=0),
               "dspy": dspy.__version__, "load_average": os.getloadavg(),
               "per_task": {t: {side: {k: v for k, v in d.items() if k != "correct"} for side, d in r.items()}
                            for t, r in per_task.items()}}
    records = [
        BenchmarkRecord(measure=f"test accuracy (exact match) over {len(per_task)} mixed task(s), one seed", ours=ours_acc,
                        peer=peer_acc, peer_name=f"DSPy {dspy.__version__} KNNFewShot (k={args.k}, labelled demos)",
                        lower_is_better=False, target=1.0, details=details),
        BenchmarkRecord(measure="model calls per test query", ours=1.0,
                        peer=sum(t["peer"]["calls"] for t in per_task.values()) / n_test,
                        peer_name=f"DSPy {dspy.__version__} KNNFewShot", lower_is_better=True, target=1.0,
                        details={"note": "MoP's fit calls are spent once per task before the test queries; see "
                                         "per_task.*.ours.fit_calls in the accuracy record"}),
    ]
    print(f"overall: MoP {ours_acc:.3f} vs DSPy KNNFewShot {peer_acc:.3f} (n={n_test}, 95% CI of the difference "
          f"{details['ci_diff']}); calls per query {records[1].peer:.2f} vs 1")
    print(f"wrote {write_benchmark(args.out, records)}")


if __name__ == "__main__":
    main()
