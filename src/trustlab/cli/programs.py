"""``trustlab learn-program``: learn an LSP program from labelled text, print its rules and its test accuracy."""

from __future__ import annotations

import re
from pathlib import Path

import click

from trustlab.cli.common import load_from_options, load_role_options, model_options, out_option, seed_option


def _split(rows: list[dict[str, str]], test: Path | None, ood: str | None, fraction: float, seed: int
           ) -> tuple[list[dict[str, str]], list[dict[str, str]], list[dict[str, str]]]:
    """Train, test and OOD rows: OOD = rows matching the pattern (never trained on); test = the --test file,
    else a seeded ``fraction`` of the rest."""
    import numpy as np

    from trustlab.bench.ilbench import load_rows
    from trustlab.errors import EmptyInputError

    ood_rows: list[dict[str, str]] = []
    if ood:
        try:
            pattern = re.compile(ood)
        except re.error as exc:
            raise click.BadParameter(f"not a regular expression: {exc}", param_hint="--ood-split") from exc
        ood_rows = [r for r in rows if pattern.search(r["input"])]
        rows = [r for r in rows if not pattern.search(r["input"])]
        if not ood_rows:
            raise click.BadParameter(f"no row of DATA matches {ood!r}", param_hint="--ood-split")
    if test is not None:
        return rows, load_rows(test), ood_rows
    order = np.random.default_rng(seed).permutation(len(rows))
    n_test = int(round(fraction * len(rows)))
    if n_test < 1 or n_test >= len(rows):
        raise EmptyInputError(f"{len(rows)} training rows cannot be split into train and test at "
                              f"--test-fraction {fraction}; give --test FILE or more rows")
    return [rows[i] for i in sorted(order[n_test:])], [rows[i] for i in sorted(order[:n_test])], ood_rows


@click.command("learn-program")
@click.argument("data", type=click.Path(path_type=Path, dir_okay=False))
@click.option("--test", "test_path", type=click.Path(path_type=Path, dir_okay=False), default=None,
              help="JSONL test rows (default: hold out --test-fraction of DATA)")
@click.option("--test-fraction", type=click.FloatRange(0, 1, min_open=True, max_open=True), default=0.2,
              show_default=True, help="share of DATA held out as test when --test is not given")
@click.option("--ood-split", default=None, metavar="REGEX",
              help="rows of DATA whose input matches REGEX are never trained on and form an out-of-distribution "
                   "test split (e.g. an unseen attribute-value combination)")
@model_options
@click.option("--learner-model", default=None, metavar="SPEC", help="the LLM that writes rules (default: --model)")
@seed_option
@out_option("runs/learn-program")
@click.option("--max-nodes", type=click.IntRange(min=1), default=8, show_default=True, help="nodes at most")
@click.option("--max-depth", type=click.IntRange(min=1), default=3, show_default=True, help="levels at most")
@click.option("--rule-samples", "n_rule_samples", type=click.IntRange(min=1), default=4, show_default=True,
              help="RuleSum candidates per node")
@click.option("--rulesum-batch", type=click.IntRange(min=1), default=32, show_default=True,
              help="examples shown in one rule-writing prompt (lower it for a small context window)")
@click.option("--validate", "n_validate", type=click.IntRange(min=1), default=None,
              help="node examples each candidate is validated on (default: all)")
def learn_program(data: Path, test_path: Path | None, test_fraction: float, ood_split: str | None, model_spec: str,
                  model_name: str | None, attn_implementation: str | None, learner_model: str | None, seed: int,
                  out: Path, max_nodes: int, max_depth: int, n_rule_samples: int, rulesum_batch: int,
                  n_validate: int | None) -> None:
    """Learn an LLM-based symbolic program (LSP) from DATA and print its rules.

    DATA is a JSONL file of {"input": ..., "label": ...} rows. Writes the run folder OUT: program.json
    (loadable with trustlab.programs.Program.load), program.txt (the rules), samples.jsonl (each test item's
    prediction and path), results.json and report.html.
    """
    from trustlab.bench.ilbench import load_rows
    from trustlab.programs.lsp import LSP, LabelError
    from trustlab.report import RunFolder, Section, plt

    train, test, ood = _split(load_rows(data), test_path, ood_split, test_fraction, seed)
    xs, ys = [r["input"] for r in train], [r["label"] for r in train]
    known = set(ys)
    for name, rows in (("test", test), ("ood", ood)):
        for i, r in enumerate(rows):
            if r["label"] not in known:
                raise LabelError(f"{name} row {i + 1} has the label {r['label']!r}, which no training row has "
                                 f"(training labels: {sorted(known)}); fix the label or add training rows")
    model = load_from_options(model_spec, model_name, attn_implementation)
    learner = load_role_options(model, model_spec, attn_implementation, {"learner": learner_model})["learner"]
    opts = {"max_nodes": max_nodes, "max_depth": max_depth, "n_rule_samples": n_rule_samples,
            "rulesum_batch": rulesum_batch, "n_validate": n_validate, "seed": seed}
    run = RunFolder(out, {"command": "learn-program", "data": str(data), "test": str(test_path) if test_path else None,
                          "ood_split": ood_split, "model": model.describe(), "learner": learner.describe(),
                          "n_train": len(train), "n_test": len(test), "n_ood": len(ood), **opts}, fresh=True)
    program = LSP(model, learner, verbose=True, **opts).fit(xs, ys)
    program.save(run.path / "program.json")
    text = program.to_text()
    (run.path / "program.txt").write_text(text + "\n")
    runner = program.runner()
    results: dict[str, object] = {"train_accuracy": program.info["train_accuracy"], "n_nodes": program.n_nodes,
                                  "calls": program.info["calls"], "validity": program.info["validity"],
                                  "history": program.info["history"], "stop": program.info["stop"]}
    for name, rows in (("test", test), ("ood", ood)):
        if not rows:
            continue
        preds = program.predict_many([r["input"] for r in rows], runner=runner)
        correct = [p.label == r["label"] for p, r in zip(preds, rows, strict=True)]
        for i, (r, p, c) in enumerate(zip(rows, preds, correct, strict=True)):
            run.add_sample({"id": f"{name}/{i}", "split": name, **r, "prediction": p.label, "correct": c,
                            "path": [s["node"] for s in p.trace], "answers": [s["answer"] for s in p.trace]})
        results[f"{name}_accuracy"], results[f"n_{name}"] = sum(correct) / len(correct), len(correct)
    results["test_answers"] = runner.stats.to_dict()
    run.write_results(results)
    pyplot = plt()
    fig, ax = pyplot.subplots(figsize=(4.5, 3))
    hist = program.info["history"]
    ax.plot([h["nodes"] for h in hist], [h["train_accuracy"] for h in hist], marker="o")
    ax.set_xlabel("nodes")
    ax.set_ylabel("train accuracy")
    ax.set_ylim(0, 1)
    plot = run.save_plot(fig, "nodes_accuracy")
    click.echo(text)
    summary = ", ".join(f"{k} {results[k]:.3f}" for k in ("train_accuracy", "test_accuracy", "ood_accuracy")
                        if k in results)
    click.echo(f"{program.n_nodes} nodes; {summary}; learning calls: {program.info['calls']}")
    rows = [{"split": k.removesuffix("_accuracy"), "accuracy": results[k]}
            for k in ("train_accuracy", "test_accuracy", "ood_accuracy") if k in results]
    report = run.write_report("trustlab learn-program (LLM-based Symbolic Program)", [
        Section("Accuracy", f"{program.n_nodes} nodes; stopped: {program.info['stop']}.", rows, [plot]),
        Section("Learned program", text)])
    click.echo(f"report: {report}")
