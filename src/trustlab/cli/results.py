"""``trustlab reproduce`` and ``trustlab results``: re-run reproductions, regenerate the README table."""

from __future__ import annotations

from pathlib import Path

import click

from trustlab.cli import main


@main.command()
@click.argument("method")
@click.option("--out", type=click.Path(path_type=Path), default=None,
              help="output folder (default: results/<method>)")
@click.option("--quick", is_flag=True, help="a smaller run for smoke tests (not the committed numbers)")
@click.option("--seed", type=int, default=0, show_default=True, help="random seed")
def reproduce(method: str, out: Path | None, quick: bool, seed: int) -> None:
    """Re-run METHOD's small-scale reproduction and write results/METHOD/summary.json and plots."""
    from trustlab.reproduce import REPRODUCTIONS, run_reproduction

    if method not in REPRODUCTIONS:
        raise click.BadParameter(f"choose one of: {', '.join(sorted(REPRODUCTIONS)) or 'none yet'}",
                                 param_hint="METHOD")
    claims = run_reproduction(method, out, quick=quick, seed=seed)
    for c in claims:
        mark = "reproduced" if c.reproduced else "NOT reproduced"
        click.echo(f"[{mark}] {c.claim}\n    {c.metric}: ours {c.ours} vs {c.baseline_name} {c.baseline}")


@main.group()
def results() -> None:
    """Read committed results: tables for the README."""


@results.command("table")
@click.option("--results-dir", type=click.Path(path_type=Path), default=Path("results"), show_default=True)
@click.option("--write", "readme", type=click.Path(path_type=Path), default=None,
              help="rewrite the table between the markers of this README instead of printing it")
def table(results_dir: Path, readme: Path | None) -> None:
    """Print (or write into the README) the method and benchmark tables from results/."""
    from trustlab.report.table import benchmark_table, method_table, update_readme

    if readme:
        changed = update_readme(readme, results_dir)
        click.echo(f"{readme}: {'updated' if changed else 'already up to date'}")
    else:
        click.echo(method_table(results_dir) + "\n\n" + benchmark_table(results_dir))
