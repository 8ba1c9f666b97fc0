"""``trustlab eval context``: NIH + context QA with / without the chat template and with steering."""

from __future__ import annotations

from pathlib import Path

import click

from trustlab.cli.common import load_from_options, model_options, out_option, seed_option


class NumberList(click.ParamType):
    """Comma-separated numbers of ``kind``, each in [low, high] (``(low, high]`` with ``low_open``).

    Example:
        >>> NumberList(int, 1).convert("250,500", None, None)
        (250, 500)
    """

    name = "list"

    def __init__(self, kind: type, low: float, high: float = float("inf"), low_open: bool = False):
        self.kind, self.low, self.high, self.low_open = kind, low, high, low_open

    def convert(self, value, param, ctx) -> tuple:
        if isinstance(value, tuple):
            return value
        try:
            items = tuple(self.kind(x) for x in str(value).split(",") if x.strip())
        except ValueError:
            self.fail(f"{value!r} is not a comma-separated list of {self.kind.__name__}s", param, ctx)
        if not items:
            self.fail("give at least one value", param, ctx)
        bad = [x for x in items if x > self.high or x < self.low or (self.low_open and x == self.low)]
        if bad:
            self.fail(f"{value!r}: every value must lie in {'(' if self.low_open else '['}{self.low:g}, "
                      f"{self.high:g}]", param, ctx)
        return items


@click.command("context")
@model_options
@seed_option
@out_option("runs/context")
@click.option("--lengths", type=NumberList(int, 1), default="250,500,1000,2000", show_default=True, help="NIH context lengths (tokens)")
@click.option("--depths", type=NumberList(float, 0.0, 1.0), default="0,0.25,0.5,0.75,1", show_default=True, help="NIH needle depths in [0, 1]")
@click.option("--needles", type=click.IntRange(0, 3), default=1, show_default=True, help="built-in needles to use")
@click.option("--qa", type=click.Choice(["counterfactual", "squad", "quac", "drop"]), default="counterfactual",
              show_default=True, help="context-QA set (squad/quac/drop load through `datasets`)")
@click.option("--qa-source", default=None, help="local JSON/JSONL in the Hub format, or a Hub id (needs network)")
@click.option("--qa-limit", type=click.IntRange(min=1), default=36, show_default=True, help="QA items at most")
@click.option("--alpha", "alphas", type=NumberList(float, 0.0, 1.0, low_open=True), default="0.9", show_default=True, help="steering strengths, comma-separated")
@click.option("--indicator", is_flag=True, help="also run with ' [IND]' appended (models fine-tuned with it)")
@click.option("--max-new-tokens", type=click.IntRange(min=1), default=32, show_default=True, help="NIH answer length (QA: 16)")
def context(model_spec: str, model_name: str | None, attn_implementation: str | None, seed: int, out: Path,
            lengths: tuple[int, ...], depths: tuple[float, ...], needles: int, qa: str, qa_source: str | None,
            qa_limit: int, alphas: tuple[float, ...],
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
    sections = evaluate(model, run, lengths=list(lengths), depths=depths, needles=needles, qa=items, qa_task=qa,
                        alphas=alphas,
                        indicator=" [IND]" if indicator else "", new_tokens=max_new_tokens)
    run.write_results({"sections": [s.title for s in sections]})
    path = run.write_report(f"trustlab eval context: {model.name}", sections)
    click.echo(sections[0].text)
    click.echo(f"report: {path}")
