"""``trustlab eval beyondx``: accuracy by number of unknowns for Formulate-and-Solve and its baselines."""

from __future__ import annotations

from pathlib import Path

import click

from trustlab.cli.common import load_from_options, model_options, out_option, parse_levels, seed_option


@click.command("beyondx")
@model_options
@seed_option
@out_option("runs/beyondx")
@click.option("--strategy", "strategies", multiple=True, default=("fs", "cot"), show_default=True,
              type=click.Choice(["fs", "fs-solution", "cot", "fewshot-cot", "declarative", "pot"]),
              help="repeat for several: fs = Formulate-and-Solve, cot = zero-shot chain-of-thought, ...")
@click.option("--data", default=None, metavar="PATH|generated|HUB_ID",
              help="the official BeyondX JSON folder or file, 'generated' (offline problems of ours), or the Hub id "
                   "Johnson0213/BeyondX; default: $TRUSTLAB_BEYONDX_DATA or ../shared/data/beyondx, else the Hub")
@click.option("--levels", default="3,4,5", show_default=True, callback=lambda ctx, p, v: parse_levels(v, 1, 12),
              help="numbers of unknowns, comma separated")
@click.option("--n-per-level", type=click.IntRange(min=1), default=30, show_default=True, help="test items per level")
@click.option("--dev-per-level", type=click.IntRange(min=0), default=10, show_default=True,
              help="dev items per level for picking demos (disjoint from the test items)")
@click.option("--demo-trials", type=click.IntRange(min=0), default=3, show_default=True,
              help="self-written demo sets Formulate-and-Solve tries on the dev items (the paper: 10; 0 = zero-shot)")
@click.option("--max-new-tokens", type=click.IntRange(min=16), default=384, show_default=True)
@click.option("--solver-timeout", type=click.FloatRange(min=0.1), default=30.0, show_default=True,
              help="seconds per system before the solver is stopped")
def beyondx(model_spec: str, model_name: str | None, attn_implementation: str | None, seed: int, out: Path,
            strategies: tuple[str, ...], data: str | None, levels: tuple[int, ...], n_per_level: int, dev_per_level: int,
            demo_trials: int, max_new_tokens: int, solver_timeout: float) -> None:
    """Accuracy of each strategy by number of unknowns on BeyondX (or generated problems), with 95% intervals.

    Writes the run folder OUT; a rerun with the same options resumes it.
    """
    from trustlab.prompting.beyondx_run import run_beyondx

    model = load_from_options(model_spec, model_name, attn_implementation)
    res = run_beyondx(model, out, strategies=list(dict.fromkeys(strategies)), data=data, levels=levels,
                      n_per_level=n_per_level, dev_per_level=dev_per_level, demo_trials=demo_trials,
                      max_new_tokens=max_new_tokens, solver_timeout=solver_timeout, seed=seed)
    for name, r in res["strategies"].items():
        per = "  ".join(f"{k} unknowns {b['accuracy']:.2f} [{b['ci'][0]:.2f}, {b['ci'][1]:.2f}]"
                        for k, b in r["by_unknowns"].items())
        click.echo(f"{name:12s} all {r['accuracy']:.2f} (n={r['n']}, valid {r['valid_rate']:.0%})  {per}")
    click.echo(f"report: {res['report']}")
