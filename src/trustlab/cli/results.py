"""``trustlab reproduce`` and ``trustlab results``: re-run reproductions, regenerate the README table."""

from __future__ import annotations

from pathlib import Path

import click

from trustlab.cli.common import ListingCommand, Registered


def _reproducible() -> list[str]:
    from trustlab.registry import reproductions

    return [m.id for m in reproductions()]


def _reproduction_rows() -> list[tuple[str, str]]:
    from trustlab.registry import reproductions

    return [(m.id, m.title) for m in reproductions()]


@click.command(cls=ListingCommand, listing=("Methods with a reproduction", _reproduction_rows))
@click.argument("method", type=Registered(_reproducible, "method"))
@click.option("--out", type=click.Path(path_type=Path, file_okay=False), default=None,
              help="output folder (default: results/METHOD, or runs/reproduce/METHOD with --quick)")
@click.option("--quick", is_flag=True,
              help="a smaller smoke-test run, written under runs/reproduce/METHOD by default (never the "
                   "committed results/)")
@click.option("--seed", type=int, default=0, show_default=True, help="random seed")
def reproduce(method: str, out: Path | None, quick: bool, seed: int) -> None:
    """Re-run METHOD's small-scale reproduction: summary.json (the checked claims), detailed JSON and plots."""
    from trustlab.reproduce import run_reproduction

    claims = run_reproduction(method, out, quick=quick, seed=seed)
    for c in claims:
        click.echo(f"[{c.verdict}] {c.claim}\n    {c.metric}: ours {c.ours} vs {c.baseline_name} {c.baseline}")


@click.group()
def results() -> None:
    """Read committed results: tables for the README."""


@results.command("table")
@click.option("--results-dir", type=click.Path(path_type=Path), default=Path("results"), show_default=True)
@click.option("--write", "readme", type=click.Path(path_type=Path), default=None,
              help="rewrite the table between the markers of this README instead of printing it")
def table(results_dir: Path, readme: Path | None) -> None:
    """Print (or write into the README) the method and benchmark tables from results/."""
    from trustlab.errors import TrustlabError
    from trustlab.registry import load_errors
    from trustlab.report.table import benchmark_table, method_table, update_readme

    if load_errors():
        raise TrustlabError("some method records could not be imported, so the table would omit them: "
                            + "; ".join(f"{m}: {e}" for m, e in load_errors().items()))
    try:  # a summary that breaks the schema, or comes from a quick run, is refused with its path
        if readme:
            changed = update_readme(readme, results_dir)
            click.echo(f"{readme}: {'updated' if changed else 'already up to date'}")
        else:
            click.echo(method_table(results_dir) + "\n\n" + benchmark_table(results_dir))
    except ValueError as exc:
        raise TrustlabError(str(exc)) from exc
