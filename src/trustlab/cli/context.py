"""``trustlab eval context``: NIH + context QA with / without the chat template and with steering."""

from __future__ import annotations

from pathlib import Path

import click

from trustlab.cli.common import load_from_options, model_options, out_option, seed_option


def _floats(text: str) -> tuple[float, ...]:
    return tuple(float(x) for x in text.split(",") if x.strip())


@click.command("context")
@model_options
@seed_option
@out_option("runs/context")
@click.option("--lengths", default="250,500,1000,2000", show_default=True, help="NIH context lengths (tokens)")
@click.option("--depths", default="0,0.25,0.5,0.75,1", show_default=True, help="NIH needle depths in [0, 1]")
@click.option("--needles", type=click.IntRange(0, 3), default=1, show_default=True, help="built-in needles to use")
@click.option("--qa", type=click.Choice(["counterfactual", "squad", "quac", "drop"]), default="counterfactual",
              show_default=True, help="context-QA set (squad/quac/drop load through `datasets`)")
@click.option("--qa-source", default=None, help="local JSON/JSONL in the Hub format, or a Hub id (needs network)")
@click.option("--qa-limit", type=click.IntRange(min=1), default=36, show_default=True, help="QA items at most")
@click.option("--alpha", "alphas", default="0.9", show_default=True, help="steering strengths, comma-separated")
@click.option("--indicator", is_flag=True, help="also run with ' [IND]' appended (models fine-tuned with it)")
@click.option("--max-new-tokens", type=click.IntRange(min=1), default=32, show_default=True, help="NIH answer length (QA: 16)")
def context(model_spec: str, model_name: str | None, attn_implementation: str | None, seed: int, out: Path,
            lengths: str, depths: str, needles: int, qa: str, qa_source: str | None, qa_limit: int, alphas: str,
            indicator: bool, max_new_tokens: int) -> None:
    """Does the model use the context its user gives? Writes OUT/report.html with NIH heatmaps.

    A rerun with the same options resumes from the answers already in OUT/samples.jsonl; with other
    options it starts over (the previous run moves to OUT/.superseded/).
    """
    from trustlab.bench.context_qa import counterfactual_items, load_qa
    from trustlab.context.audit import evaluate
    from trustlab.report import RunFolder

    model = load_from_options(model_spec, model_name, attn_implementation)
    items = (counterfactual_items(qa_limit, seed=seed) if qa == "counterfactual"
             else load_qa(qa, qa_source, limit=qa_limit))
    run = RunFolder(out, {"command": "eval context", "model": model.describe(), "seed": seed, "lengths": lengths,
                          "depths": depths, "needles": needles, "qa": qa, "qa_source": qa_source,
                          "qa_limit": qa_limit, "alphas": alphas, "indicator": indicator, "max_new_tokens": max_new_tokens})
    sections = evaluate(model, run, lengths=[int(x) for x in _floats(lengths)], depths=_floats(depths),
                        needles=needles, qa=items, qa_task=qa, alphas=_floats(alphas),
                        indicator=" [IND]" if indicator else "", new_tokens=max_new_tokens)
    run.write_results({"sections": [s.title for s in sections]})
    path = run.write_report(f"trustlab eval context: {model.name}", sections)
    click.echo(sections[0].text)
    click.echo(f"report: {path}")
