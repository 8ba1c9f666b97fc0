"""``trustlab uncertainty``: CLUE concept-level uncertainty of a model's answer to a question."""

from __future__ import annotations

from pathlib import Path

import click

from trustlab.cli.common import load_from_options, load_role_options, model_options, out_option, seed_option


@click.command()
@click.argument("questions", nargs=-1)
@model_options
@seed_option
@out_option("runs/uncertainty")
@click.option("--samples", "n_samples", type=click.IntRange(min=1), default=5, show_default=True,
              help="sampled outputs N")
@click.option("--temperature", type=click.FloatRange(min=0.0, min_open=True), default=1.0, show_default=True)
@click.option("--max-new-tokens", type=click.IntRange(min=1), default=64, show_default=True)
@click.option("--nli", default="llm", show_default=True,
              help="'llm' (LLM-as-NLI: the --nli-model reads entailment/contradiction label probabilities), or a "
                   "folder or hub id of an NLI classifier")
@click.option("--nli-model", default=None, metavar="SPEC",
              help="the LLM-as-NLI model (default: --model); any model spec, e.g. embedded:qwen2.5-coder-1.5b")
@click.option("--extractor-model", default=None, metavar="SPEC",
              help="the model that lists the concepts (default: --model); any model spec")
@click.option("--pooler", type=click.Choice(["auto", "cosine", "nli"]), default="auto", show_default=True)
@click.option("--tie-band", nargs=2, type=float, default=None, help="cosine range LOW HIGH sent to the NLI as tie-breaker")
@click.option("--agg", type=click.Choice(["max", "mean"]), default="max", show_default=True)
@click.option("--from-jsonl", "from_jsonl", type=click.Path(exists=True, path_type=Path), default=None,
              help="post-hoc: score saved generations ({prompt, samples, answer} per line) instead of sampling")
def uncertainty(questions: tuple[str, ...], model_spec: str, model_name: str | None, attn_implementation: str | None,
                seed: int, out: Path, n_samples: int, temperature: float, max_new_tokens: int, nli: str,
                nli_model: str | None, extractor_model: str | None, pooler: str, tie_band: tuple[float, float] | None,
                agg: str, from_jsonl: Path | None) -> None:
    """Print each concept of the answer(s) to QUESTIONS with its uncertainty U (higher = more uncertain).

    The model under test (--model) answers; the concept extractor (--extractor-model) and the LLM-as-NLI
    (--nli-model) are other models when given, e.g. a larger model judging a small one.

    Writes the run folder OUT; a rerun starts over (the previous run moves to OUT/.superseded/).
    """
    from rich.console import Console
    from rich.table import Table

    from trustlab.report import RunFolder, Section
    from trustlab.uncertainty import CLUE

    if not questions and from_jsonl is None:
        raise click.UsageError('give a question, e.g. trustlab uncertainty "Who founded Apple?", or --from-jsonl FILE')
    if tie_band and not -1.0 <= tie_band[0] <= tie_band[1] <= 1.0:
        raise click.BadParameter(f"LOW HIGH must satisfy -1 <= LOW <= HIGH <= 1, got {tie_band[0]:g} {tie_band[1]:g}",
                                 param_hint="--tie-band")
    if nli != "llm" and nli.startswith(("/", ".", "~")) and not Path(nli).expanduser().is_dir():
        raise click.BadParameter(f"'llm', a folder holding an NLI classifier or a hub id; {nli!r} is no folder",
                                 param_hint="--nli")
    if nli_model and nli != "llm":
        raise click.UsageError(f"--nli-model is the LLM-as-NLI's model: it applies with --nli llm, not --nli {nli}")
    model = load_from_options(model_spec, model_name, attn_implementation)
    roles = load_role_options(model, model_spec, attn_implementation, {"extractor": extractor_model, "nli": nli_model})
    clue = CLUE(model, nli=roles["nli"] if nli == "llm" else nli, extractor=roles["extractor"], n_samples=n_samples,
                temperature=temperature, max_new_tokens=max_new_tokens, pooler=pooler,
                tie_band=tuple(tie_band) if tie_band else None, agg=agg, seed=seed)
    run = RunFolder(out, {"command": "uncertainty", "model": model.describe(), "questions": list(questions),
                          "extractor_model": roles["extractor"].describe(), "roles": clue.roles(),
                          "nli_model": roles["nli"].describe() if nli == "llm" else None,
                          "from_jsonl": str(from_jsonl) if from_jsonl else None, "n_samples": n_samples,
                          "temperature": temperature, "max_new_tokens": max_new_tokens, "nli": nli,
                          "pooler": clue.pooler, "tie_band": tie_band, "agg": agg, "seed": seed}, fresh=True)
    reports = clue.estimate_from_jsonl(str(from_jsonl)) if from_jsonl else clue.estimate_many(list(questions))
    console = Console()
    sections = []
    for r in reports:
        run.add_sample(r.to_dict())
        table = Table(title=f"{r.prompt}\nanswer: {r.answer}" if r.answer is not None else r.prompt)
        for col in ("concept", "U", "mean P(entail)", "in answer"):
            table.add_column(col)
        for row in r.table():
            table.add_row(row["concept"], f"{row['U']:.3f}", f"{row['mean_entail']:.3f}", "yes" if row["in_answer"] else "")
        console.print(table)
        console.print(f"output score ({agg} U): {r.score:.3f}; bad extractions {r.bad_extractions}/{r.n_extractions}")
        sections.append(Section(r.prompt or "generation", f"Answer: {r.answer}\n\nScore ({agg} U): {r.score:.4f}; "
                                f"bad extractions {r.bad_extractions}/{r.n_extractions}.", r.table()))
    run.write_results({"scores": [r.score for r in reports], "bad_extractions": sum(r.bad_extractions for r in reports)})
    click.echo(f"report: {run.write_report('trustlab uncertainty (CLUE)', sections)}")
