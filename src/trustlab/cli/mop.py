"""``trustlab mop``: compile a Mixture-of-Prompts for a task, print its experts and its held-out accuracy."""

from __future__ import annotations

from pathlib import Path

import click

from trustlab.cli.common import load_from_options, model_options, out_option, seed_option


@click.command("mop")
@click.argument("task")
@model_options
@seed_option
@out_option("runs/mop")
@click.option("--budget", type=click.IntRange(min=1), default=20, show_default=True,
              help="generation calls for instruction proposals (scoring calls follow; printed before the fit)")
@click.option("--experts", "n_experts", type=click.IntRange(min=1), default=10, show_default=True,
              help="the most experts Kauto may choose (N_max)")
@click.option("--num-samples", type=click.IntRange(min=1), default=20, show_default=True,
              help="eval items per scored candidate")
@click.option("--pool", "n_pool", type=click.IntRange(min=2), default=100, show_default=True, help="demo pool size")
@click.option("--eval", "n_eval", type=click.IntRange(min=1), default=100, show_default=True, help="eval set size")
@click.option("--test", "n_test", type=click.IntRange(min=1), default=100, show_default=True, help="test set size")
def mop(task: str, model_spec: str, model_name: str | None, attn_implementation: str | None, seed: int, out: Path,
        budget: int, n_experts: int, num_samples: int, n_pool: int, n_eval: int, n_test: int) -> None:
    """Compile a Mixture-of-Prompts for TASK and score it on held-out items.

    TASK is a built-in mixed task (arith-count-sort, reverse-numsort, sum-wordrev) or a JSONL file of
    {"input": ..., "output": ...} rows (shuffled and split into pool, eval and test). Writes the run folder
    OUT with the fitted prompt (mop.json, loadable with MoPModel.load) and the test answers.
    """
    from trustlab.prompting.mop import compile
    from trustlab.prompting.mop_tasks import load_task
    from trustlab.report import RunFolder, Section

    if not Path(task).is_file() and not task.endswith(".jsonl"):
        from trustlab.prompting.mop_tasks import TASKS

        if task not in TASKS:
            raise click.BadParameter(f"a JSONL file or one of {', '.join(TASKS)}; got {task!r}", param_hint="TASK")
    data = load_task(task, n_pool=n_pool, n_eval=n_eval, n_test=n_test, seed=seed)
    model = load_from_options(model_spec, model_name, attn_implementation)
    run = RunFolder(out, {"command": "mop", "task": task, "model": model.describe(), "budget": budget,
                          "n_experts": n_experts, "num_samples": num_samples, "n_pool": len(data.train),
                          "n_eval": len(data.val), "n_test": len(data.test), "seed": seed}, fresh=True)
    fitted = compile(data.train, data.val, model=model, budget=budget, n_experts=n_experts,
                     num_samples=num_samples, seed=seed, scorer=data.scorer)
    fitted.save(run.path / "mop.json")
    queries = [e["input"] for e in data.test]
    answers, routes = fitted.predict(queries), fitted.route_many(queries)
    correct = [data.scorer(a, e["output"]) for a, e in zip(answers, data.test, strict=True)]
    for i, (e, a, r, c) in enumerate(zip(data.test, answers, routes, correct, strict=True)):
        run.add_sample({"id": i, **e, "answer": a, "expert": r, "correct": c})
    accuracy = sum(correct) / len(correct)
    run.write_results({"accuracy": accuracy, "n_test": len(correct), "k": fitted.info["k"],
                       "calls": fitted.info["calls"], "projected_calls": fitted.info["projected_calls"],
                       "proposal_validity": fitted.info["validity"]})
    text = fitted.describe(max_demos=5)
    click.echo(text)
    click.echo(f"test accuracy {accuracy:.3f} on {len(correct)} items; "
               f"{fitted.info['calls']['generation']} generation + {fitted.info['calls']['scoring']} scoring calls")
    rows = [{"expert": i, "instruction": x.instruction, "demos": len(x.demos),
             "test items routed": routes.count(i)} for i, x in enumerate(fitted.experts)]
    report = run.write_report("trustlab mop (Mixture-of-Prompts)",
                              [Section("Experts", f"Test accuracy {accuracy:.3f} (n = {len(correct)}).", rows),
                               Section("Fitted prompt", text)])
    click.echo(f"report: {report}")
