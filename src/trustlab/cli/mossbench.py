"""``trustlab eval mossbench``: refusal of MOSSBench's benign queries and of its contrast set."""

from __future__ import annotations

from pathlib import Path

import click

from trustlab.cli.common import load_from_options, load_role_options, model_options, out_option, seed_option


@click.command("mossbench")
@model_options
@seed_option
@out_option("runs/mossbench")
@click.option("--data", default="online", show_default=True,
              help="'online' (the official repository, cached) or a local folder with the official MOSSBench data")
@click.option("--mode", type=click.Choice(["auto", "image", "text"]), default="auto", show_default=True,
              help="image: MOSSBench (needs a vision-language model); text: the MOSSBench-text proxy (captions); "
                   "auto: image when the model sees images")
@click.option("--per-type", type=click.IntRange(min=1), default=100, show_default=True,
              help="items per stimulus type and split (100 = the whole benign set)")
@click.option("--system-prompt", default="none", show_default=True,
              help="'none' (the benchmark's protocol), 'helpful', 'safety' (the proxy's safety levels) or any text")
@click.option("--max-new-tokens", type=click.IntRange(min=1), default=256, show_default=True)
@click.option("--judge-model", default=None, metavar="SPEC",
              help="also judge with the rubric LLM judge on this model (any model spec); default: keyword judge only")
def mossbench(model_spec: str, model_name: str | None, attn_implementation: str | None, seed: int, out: Path,
              data: str, mode: str, per_type: int, system_prompt: str, max_new_tokens: int,
              judge_model: str | None) -> None:
    """MOSSBench oversensitivity: refusal rates on benign image+question queries and on the contrast set.

    A text-only model is evaluated on the MOSSBench-text proxy (each image replaced by its oracle caption),
    labelled as such. Writes the run folder OUT; a rerun starts over (the previous run moves to OUT/.superseded/).
    """
    from trustlab.report import RunFolder
    from trustlab.safety.mossbench import SYSTEM_PROMPTS
    from trustlab.safety.mossbench_audit import evaluate, mossbench_sections

    model = load_from_options(model_spec, model_name, attn_implementation)
    roles = load_role_options(model, model_spec, attn_implementation, {"judge": judge_model})
    prompt = SYSTEM_PROMPTS.get(system_prompt, system_prompt)
    run = RunFolder(out, {"command": "eval mossbench", "model": model.describe(), "seed": seed, "data": data,
                          "mode": mode, "per_type": per_type, "system_prompt": prompt, "max_new_tokens": max_new_tokens,
                          "judge_model": roles["judge"].describe() if judge_model else None}, fresh=True)
    res = evaluate(model, data=data, per_type=per_type, seed=seed, mode=None if mode == "auto" else mode,
                   system_prompt=prompt, max_new_tokens=max_new_tokens,
                   judge_model=roles["judge"] if judge_model else None)
    for rec in res["records"]:
        run.add_sample({"id": f"{rec['split']}:{rec['pid']}", **rec})
    run.write_results({k: v for k, v in res.items() if k != "records"})
    path = run.write_report(f"trustlab eval mossbench: {model.name} ({res['label']})", mossbench_sections(res, run))
    for note in res["notes"]:
        click.echo(f"note: {note}")
    for split, r in res["rates"]["keyword"]["splits"].items():
        per = "  ".join(f"{t} {v['rate']:.2f}" for t, v in r["per_type"].items())
        click.echo(f"{res['label']} {split:9s} refusal {r['overall']['rate']:.2f} (n={r['overall']['n']})  {per}")
    click.echo(f"report: {path}")
