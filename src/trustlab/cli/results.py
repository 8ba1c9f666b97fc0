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
@click.option("--model", "model", default=None, metavar="SPEC",
              help="the model under test, for the methods that take one (default: the embedded SmolLM2); any "
                   "model spec, e.g. embedded:qwen2.5-coder-1.5b, a Hugging Face id or folder, openai:http://HOST:PORT/v1")
@click.option("--extractor-model", default=None, metavar="SPEC",
              help="clue: the concept extractor (default: the model under test)")
@click.option("--nli-model", default=None, metavar="SPEC", help="clue: the LLM-as-NLI (default: the model under test)")
@click.option("--backtranslator-model", default=None, metavar="SPEC",
              help="backtranslation: the model that infers the request (default: the model under test)")
@click.option("--judge-model", default=None, metavar="SPEC",
              help="backtranslation: the LLM refusal judge (default: the model under test)")
@click.option("--learner-model", default=None, metavar="SPEC",
              help="lsp: the LLM that writes rules (default: the model under test)")
@click.option("--transfer-model", default=None, metavar="SPEC",
              help="lsp: the second LLM a learned program also runs on (default: SmolLM2, or the first installed "
                   "of qwen2.5-coder-0.5b / gemma-3-270m when the model is SmolLM2)")
@click.option("--smoothllm/--no-smoothllm", default=None,
              help="backtranslation: add the SmoothLLM-lite arm (3 perturbed copies per prompt; default: off)")
def reproduce(method: str, out: Path | None, quick: bool, seed: int, **options: object) -> None:
    """Re-run METHOD's small-scale reproduction: summary.json (the checked claims), detailed JSON and plots.

    Role models (--model, --extractor-model, --nli-model, --backtranslator-model, --judge-model,
    --learner-model, --transfer-model) apply to
    the methods with that role; with any of them other than the default the run writes beside the default
    one, in results/METHOD--SLUG/ (runs/reproduce/METHOD--SLUG/ with --quick).
    """
    from trustlab.reproduce import RoleModelError, run_options, run_reproduction

    given = {k: v for k, v in options.items() if v is not None}
    wrong = [k for k in given if k not in run_options(method)]
    if wrong:
        names = ", ".join("--" + k.replace("_", "-") for k in wrong)
        takes = ", ".join("--" + k.replace("_", "-") for k in run_options(method) if k in options) or "none of them"
        raise click.UsageError(f"{names} does not apply to {method} (its role options: {takes})")
    try:
        claims = run_reproduction(method, out, quick=quick, seed=seed, **given)
    except RoleModelError as exc:
        option = "--model" if exc.role == "model" else f"--{exc.role}-model"
        raise click.BadParameter(str(exc), param_hint=option) from exc
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
