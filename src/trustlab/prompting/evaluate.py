"""Run a reasoning strategy over BeyondX-style items: accuracy by number of unknowns, with intervals.

Rows are checkpointed in a :class:`~trustlab.report.RunFolder` chunk by chunk (keyed by strategy and item id),
so an interrupted run resumes where it stopped. A row keeps the item id, the predicted numbers, the scores and
the model's text cut to :data:`TEXT_CHARS` characters, never the problem text (BeyondX is CC BY-SA and
test-only; trustlab does not redistribute it).

Example:
    >>> from trustlab.bench.beyondx import load_beyondx
    >>> res = evaluate(make_strategy("cot", model), load_beyondx()[:8])
    >>> res["by_unknowns"]["3"]["accuracy"], res["valid_rate"]
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from trustlab.bench.beyondx import BeyondXItem, score_beyondx, score_relative
from trustlab.errors import EmptyInputError
from trustlab.report import RunFolder
from trustlab.report.run import progress
from trustlab.report.stats import wilson_ci

TEXT_CHARS = 400
CHUNK = 16


def _public(row: dict[str, Any]) -> dict[str, Any]:
    out = {k: v for k, v in row.items() if k not in ("problem", "text", "answer_text")}
    out["text"] = (row.get("text") or "")[:TEXT_CHARS]
    if row.get("answer_text") is not None:
        out["answer_text"] = row["answer_text"][:200]
    return out


def score_rows(rows: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Accuracy (official absolute tolerance and the relative variant) overall and per number of unknowns,
    with Wilson 95% intervals, and the share of valid outputs with the reasons for the others."""
    if not rows:
        raise EmptyInputError("no scored rows")

    def block(rs: list[dict[str, Any]]) -> dict[str, Any]:
        k, n = sum(r["correct"] for r in rs), len(rs)
        out = {"n": n, "correct": k, "accuracy": k / n, "ci": wilson_ci(k, n),
               "accuracy_relative": sum(r["correct_relative"] for r in rs) / n,
               "valid_rate": sum(r["valid"] for r in rs) / n}
        if all("correct_solution" in r for r in rs):  # Formulate-and-Solve: also scored by the solver's values
            out["accuracy_solution_values"] = sum(r["correct_solution"] for r in rs) / n
            out["formulations_solved"] = sum(r["solve"]["status"] == "solved" for r in rs) / n
        return out

    levels = sorted({r["unknowns"] for r in rows})
    reasons: dict[str, int] = {}
    for r in rows:
        if not r["valid"]:
            reasons[r["invalid_reason"]] = reasons.get(r["invalid_reason"], 0) + 1
    return {**block(list(rows)), "by_unknowns": {str(u): block([r for r in rows if r["unknowns"] == u]) for u in levels},
            "invalid_reasons": dict(sorted(reasons.items(), key=lambda x: -x[1]))}


def evaluate(strategy: Any, items: Sequence[BeyondXItem], *, run: RunFolder | None = None, chunk: int = CHUNK,
             tag: str | None = None) -> dict[str, Any]:
    """Answer ``items`` with ``strategy`` (:func:`~trustlab.prompting.reasoning.make_strategy`) and score them.

    Args:
        strategy: an object with ``name`` and ``answer_batch(problems)``.
        items: the problems with gold answers.
        run: a run folder to checkpoint rows in (resumes rows already there, matched by ``tag`` and item id).
        chunk: problems per batched call.
        tag: the rows' strategy label (default: ``strategy.name``).

    Returns:
        :func:`score_rows` of the rows plus ``"rows"`` (the public rows) and ``"calls"`` (model calls made now).
    """
    items = list(items)
    if not items:
        raise EmptyInputError("no item to evaluate")
    tag = tag or strategy.name
    done: dict[str, dict[str, Any]] = {}
    if run is not None:
        done = {r["item"]: r for r in run.samples() if r.get("strategy") == tag}
    todo = [it for it in items if it.id not in done]
    calls_before = getattr(strategy, "calls", 0)
    chunks = [todo[i:i + chunk] for i in range(0, len(todo), chunk)]
    for part in progress(chunks, f"{tag}: {len(todo)} problems", total=len(chunks)):
        for it, row in zip(part, strategy.answer_batch([it.problem for it in part]), strict=True):
            row = {"id": f"{tag}/{it.id}", "strategy": tag, "item": it.id, "unknowns": it.unknowns, **_public(row),
                   "correct": score_beyondx(row["numbers"], it.answers),
                   "correct_relative": score_relative(row["numbers"], it.answers),
                   **({"correct_solution": score_beyondx(row["solution_numbers"], it.answers)}
                      if "solution_numbers" in row else {})}
            done[it.id] = row
            if run is not None:
                run.add_sample(row)
    rows = [done[it.id] for it in items]
    return {**score_rows(rows), "rows": rows, "calls": getattr(strategy, "calls", 0) - calls_before}


def prepare_demos(strategy: Any, *, demo_problems: Sequence[str], dev: Sequence[BeyondXItem], trials: int,
                  seed: int = 0, run: RunFolder | None = None, saved: dict[str, Any] | None = None,
                  save: Any = None) -> dict[str, Any] | None:
    """Give a strategy its automatic demos: Formulate-and-Solve picks the best of ``trials`` self-written demo
    sets on ``dev`` (never test items); few-shot CoT writes its own rationales once. Others need none.

    With a ``run`` folder the work checkpoints: the written demo sets go to ``save(info)`` as soon as they
    exist (and come back as ``saved``), and each trial's dev answers are rows of the run (strategy
    ``<name>-dev<i>``), so an interrupted selection resumes.

    Returns:
        What was done (the trials' dev accuracies, or the demos), for the run's results; None when nothing.
    """
    from trustlab.prompting.formulate_solve import Demo, best_trial

    name = getattr(strategy, "name", "")
    if name in ("fs", "fs-solution") and trials > 0:
        fs = strategy.fs
        if saved and "trial_demos" in saved:
            trial_demos = [[Demo(**d) for d in ds] for ds in saved["trial_demos"]]
        else:
            trial_demos = fs.write_demo_trials(demo_problems, trials, seed=seed)
        info: dict[str, Any] = {"dev_items": [it.id for it in dev],
                                "trial_demos": [[d.__dict__ for d in ds] for ds in trial_demos]}
        if save is not None:
            save(info)
        results = []
        for i, ds in enumerate(trial_demos):
            fs.demos = ds
            res = evaluate(strategy, dev, run=run, tag=f"{name}-dev{i}")
            results.append({"demos": [d.__dict__ for d in ds], "dev_accuracy": res["accuracy"],
                            "dev_valid_rate": res["valid_rate"]})
        best = best_trial(results)
        fs.demos = trial_demos[best]
        strategy.calls = fs.calls
        return {"dev_items": info["dev_items"], "trials": results, "best": best}
    if name == "fewshot-cot" and not strategy.demos:
        return {"demos": [d.__dict__ for d in strategy.write_demos(demo_problems)]}
    return None


def plot_by_unknowns(results: dict[str, dict[str, Any]], title: str) -> Any:
    """Accuracy against the number of unknowns, one line per strategy with its 95% interval."""
    from trustlab.report import plt

    pyplot = plt()
    fig, ax = pyplot.subplots(figsize=(5.5, 3.2))
    shift = 0.06  # strategies side by side at each level, so equal values do not hide one another
    for j, (name, res) in enumerate(results.items()):
        levels = sorted(res["by_unknowns"], key=int)
        acc = [res["by_unknowns"][k]["accuracy"] for k in levels]
        lo = [a - (res["by_unknowns"][k]["ci"] or [a, a])[0] for a, k in zip(acc, levels, strict=True)]
        hi = [(res["by_unknowns"][k]["ci"] or [a, a])[1] - a for a, k in zip(acc, levels, strict=True)]
        x = [int(k) + (j - (len(results) - 1) / 2) * shift for k in levels]
        ax.errorbar(x, acc, yerr=[lo, hi], marker="o", capsize=3, label=name)
    ax.set_xlabel("number of unknowns")
    ax.set_ylabel("accuracy")
    ax.set_ylim(0, 1)
    ax.set_xticks(sorted({int(k) for r in results.values() for k in r["by_unknowns"]}))
    ax.legend(fontsize=8)
    ax.set_title(title, fontsize=9)
    return fig
