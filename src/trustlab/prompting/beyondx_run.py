"""One BeyondX evaluation of several strategies on one model: data, demos, checkpointed answers, plot, report.

Shared by ``trustlab eval beyondx``, the Formulate-and-Solve reproduction and the audit section. Demo
problems are generated offline (:func:`trustlab.bench.beyondx_gen.generate_problems`: never BeyondX items),
demo sets are picked on a dev slice disjoint from the test items, and every model call of a step is batched.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from trustlab.bench.beyondx import LEVELS, BeyondXItem, load_beyondx, split_dev_test
from trustlab.report import RunFolder, Section, write_json

# One demo problem per level, each from another scenario (as the official BeyondX demos: pizzas, tickets,
# investments ...): (scenario index of the generator, number of unknowns).
DEMOS = ((1, 3), (3, 4), (0, 5))  # pizzas with 3 unknowns, investments with 4, tickets with 5
DEMO_SEED = 1234


def demo_problems(seed: int = DEMO_SEED) -> list[str]:
    """Fixed demo problems of ours (generated and verified, never BeyondX items), one per level, each from
    another scenario."""
    from trustlab.bench.beyondx_gen import generate_problems

    return [generate_problems(k + 1, unknowns=(level,), seed=seed)[k].problem for k, level in DEMOS]


def load_items(data: str | None, levels: tuple[int, ...], *, n_per_level: int, dev_per_level: int,
               seed: int) -> tuple[list[BeyondXItem], list[BeyondXItem], str]:
    """(dev, test, a description of the source) for ``data`` (a path, the Hub id, ``"generated"`` or None)."""
    if data == "generated":
        from trustlab.bench.beyondx_gen import generate_problems

        items = generate_problems(n_per_level + dev_per_level, unknowns=levels, seed=seed)  # per level
        source = f"generated (trustlab.bench.beyondx_gen, seed {seed})"
    else:
        items = load_beyondx(data, levels=levels)
        source = f"BeyondX ({data or 'default location'})"
    dev, test = split_dev_test(items, test_per_level=n_per_level, dev_per_level=dev_per_level, seed=seed)
    return dev, test, source


def run_beyondx(model: Any, out: str | Path, *, strategies: list[str], data: str | None = None,
                levels: tuple[int, ...] = LEVELS, n_per_level: int = 30, dev_per_level: int = 10,
                demo_trials: int = 3, max_new_tokens: int = 384, solver_timeout: float = 30.0, seed: int = 0,
                extra_config: dict[str, Any] | None = None, report: bool = True) -> dict[str, Any]:
    """Evaluate ``strategies`` on ``model`` into the run folder ``out`` (resumes a run with the same config).

    Returns:
        ``{"strategies": {name: evaluate(...) without rows}, "demos": {...}, "setup": {...}, "rows": [...],
        "report": path}`` (``report`` only when asked for).
    """
    from trustlab.prompting.evaluate import evaluate, plot_by_unknowns, prepare_demos
    from trustlab.prompting.reasoning import make_strategy
    from trustlab.prompting.solver import Solver

    dev, test, source = load_items(data, levels, n_per_level=n_per_level, dev_per_level=dev_per_level, seed=seed)
    demos = demo_problems()
    setup = {"model": getattr(model, "name", str(model)), "strategies": strategies, "data": source,
             "levels": list(levels), "n_per_level": n_per_level, "dev_per_level": dev_per_level,
             "demo_trials": demo_trials, "max_new_tokens": max_new_tokens, "solver_timeout": solver_timeout,
             "seed": seed, **(extra_config or {})}
    run = RunFolder(out, {"command": "eval beyondx", **setup,
                          "model_description": model.describe() if hasattr(model, "describe") else None})
    results: dict[str, Any] = {}
    rows: list[dict[str, Any]] = []
    demo_info: dict[str, Any] = {}
    demo_path = run.path / "demos.json"
    saved = _read_demos(demo_path)
    with Solver(timeout=solver_timeout) as solver:
        for name in strategies:
            strategy = make_strategy(name, model, solver=solver, max_new_tokens=max_new_tokens)
            done = saved.get(name, {})
            if "best" in done or "demos" in done:
                _restore(strategy, saved[name])  # resume: the demos picked before the interruption
                demo_info[name] = saved[name]
            else:
                def keep(partial: dict[str, Any], name: str = name) -> None:
                    write_json(demo_path, {**demo_info, name: partial})

                info = prepare_demos(strategy, demo_problems=demos, dev=dev, trials=demo_trials, seed=seed, run=run,
                                     saved=saved.get(name), save=keep)
                if info is not None:
                    demo_info[name] = info
                    write_json(demo_path, demo_info)
            res = evaluate(strategy, test, run=run)
            results[name] = {k: v for k, v in res.items() if k != "rows"}
            rows += res["rows"]
    summary = {"strategies": results, "demos": demo_info, "setup": setup}
    run.write_results(summary)
    summary["rows"] = rows
    if report:
        fig = plot_by_unknowns(results, f"{setup['model']}: {source}")
        plot = run.save_plot(fig, "accuracy_by_unknowns")
        summary["report"] = str(run.write_report(f"trustlab eval beyondx: {setup['model']}",
                                                 beyondx_sections(summary, [plot])))
    return summary


def _read_demos(path: Path) -> dict[str, Any]:
    from trustlab.report.io import read_json

    return read_json(path) if path.exists() else {}


def _restore(strategy: Any, info: dict[str, Any]) -> None:
    from trustlab.prompting.formulate_solve import Demo

    if "trials" in info:
        strategy.fs.demos = [Demo(**d) for d in info["trials"][info["best"]]["demos"]]
    elif "demos" in info:
        strategy.demos = [Demo(**d) for d in info["demos"]]
        strategy.fewshot, strategy.name = True, "fewshot-cot"


def beyondx_sections(summary: dict[str, Any], plots: list[Path]) -> list[Section]:
    """The report's section: accuracy by unknowns per strategy, validity, and how demos were picked."""
    rows = []
    for name, r in summary["strategies"].items():
        row: dict[str, Any] = {"strategy": name, "n": r["n"], "accuracy": r["accuracy"],
                               "95% CI": r["ci"], "valid": r["valid_rate"], "model calls": r["calls"]}
        for k, b in r["by_unknowns"].items():
            row[f"{k} unknowns"] = f"{b['accuracy']:.2f} ({b['correct']}/{b['n']})"
        row["invalid"] = ", ".join(f"{n} {why}" for why, n in r["invalid_reasons"].items()) or "-"
        rows.append(row)
    s = summary["setup"]
    text = (f"{s['n_per_level']} test items per number of unknowns from {s['data']}; official scoring (every gold "
            "value matched by a predicted number within 0.1). Valid = the output gave an answer of the model's own "
            "(not empty, not a copy of a demo); invalid outputs count as wrong. "
            + (f"Formulate-and-Solve picked the best of {s['demo_trials']} self-written demo sets on "
               f"{s['dev_per_level']} dev items per level, disjoint from the test items."
               if s["demo_trials"] and s["dev_per_level"] else "Formulate-and-Solve ran zero-shot (no demos)."))
    for name, info in summary["demos"].items():
        if "trials" in info:
            accs = ", ".join(f"{t['dev_accuracy']:.2f}" for t in info["trials"])
            text += f" {name}: dev accuracy of the demo sets {accs}; kept set {info['best']}."
    return [Section("Reasoning with several unknowns", text, rows, plots)]
