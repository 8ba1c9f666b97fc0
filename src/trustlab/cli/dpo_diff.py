"""``trustlab dpo-diff``: search a prompt (or negative prompt) that enhances or attacks a text-to-image model."""

from __future__ import annotations

import json
from pathlib import Path

import click

from trustlab.cli.common import out_option, seed_option


@click.command("dpo-diff")
@click.argument("prompt")
@seed_option
@out_option("runs/dpo-diff")
@click.option("--space", "kind", type=click.Choice(["antonym", "synonym", "nplib"]), default="antonym",
              show_default=True, help="antonym: negative prompt (enhance); synonym: rewrite (attack); nplib")
@click.option("--table", type=click.Path(exists=True, dir_okay=False, path_type=Path), default=None,
              help='JSON file {"word": ["candidate", ...]}; without it --llm proposes the candidates')
@click.option("--llm", "llm_spec", default="embedded", show_default=True,
              help="model handle that proposes candidates (embedded | HF id or path | openai:URL)")
@click.option("--pipeline", default="tiny", show_default=True,
              help="tiny (the offline digits world) or a diffusers text-to-image pipeline id/path")
@click.option("--scorer", default=None, help="CLIP model id/path (default: the tiny scorer with --pipeline tiny)")
@click.option("--algo", type=click.Choice(["hybrid", "gpo", "epo", "random"]), default="hybrid", show_default=True)
@click.option("--direction", type=click.Choice(["enhance", "attack"]), default=None,
              help="default: attack for synonym spaces, else enhance")
@click.option("--steps", type=click.IntRange(min=1), default=50, show_default=True, help="sampler steps")
@click.option("--guidance", type=float, default=7.5, show_default=True, help="classifier-free guidance scale")
@click.option("--iters", type=click.IntRange(min=1), default=20, show_default=True, help="GPO iterations")
@click.option("--schedule", default="step-15-2", show_default=True, help="GPO step schedule")
@click.option("--budget", type=click.IntRange(min=1), default=32, show_default=True, help="full generations")
@click.option("--noise-seeds", default="0,1", show_default=True, help="comma-separated generation seeds")
def dpo_diff(prompt: str, seed: int, out: Path, kind: str, table: Path | None, llm_spec: str, pipeline: str,
             scorer: str | None, algo: str, direction: str | None, steps: int, guidance: float, iters: int,
             schedule: str, budget: int, noise_seeds: str) -> None:
    """Optimise PROMPT with DPO-Diff and write the best prompt, negative prompt and search trace to OUT."""
    from trustlab.prompting.dpo_diff import ClipLoss, DiffusionAdapter
    from trustlab.prompting.dpo_diff_search import DPODiff
    from trustlab.prompting.dpo_diff_space import SearchSpace
    from trustlab.report import RunFolder, Section

    try:
        seeds = tuple(int(s) for s in noise_seeds.split(","))
    except ValueError as exc:
        raise click.BadParameter("give integers separated by commas, e.g. 0,1", param_hint="--noise-seeds") from exc
    if pipeline == "tiny":
        from trustlab.prompting.dpo_diff_tiny import tiny_clip_loss, tiny_world

        world = tiny_world()
        pipe, loss = world.pipe, (ClipLoss(scorer) if scorer else tiny_clip_loss(world))
    else:
        from diffusers import DiffusionPipeline

        if scorer is None:
            raise click.UsageError("--scorer (a CLIP model id or path) is needed with a diffusers pipeline")
        pipe, loss = DiffusionPipeline.from_pretrained(pipeline), ClipLoss(scorer)
    adapter = DiffusionAdapter(pipe, steps=steps, guidance_scale=guidance)
    if kind == "nplib" or table is not None:
        words = json.loads(table.read_text()) if table is not None else {}
        space = SearchSpace.from_tables(prompt, words, kind=kind, tokenizer=adapter.tokenizer)
    else:
        from trustlab.models import load_model

        space = SearchSpace.from_llm(prompt, load_model(llm_spec), kind=kind, tokenizer=adapter.tokenizer)
    run = RunFolder(out, {"command": "dpo-diff", "prompt": prompt, "space": kind, "pipeline": pipeline,
                          "scorer": scorer, "algo": algo, "direction": direction, "steps": steps, "guidance": guidance,
                          "iters": iters, "schedule": schedule, "budget": budget, "seeds": list(seeds), "seed": seed},
                    fresh=True)
    result = DPODiff(adapter, loss, space, algo=algo, direction=direction, seeds=seeds, schedule=schedule,
                     iters=iters, budget=budget, seed=seed).search()
    for n, best in result["trace"]:
        run.add_sample({"evaluations": n, "best_signed_loss": best})
    results = {k: v for k, v in result.items() if k != "trace"}
    results["space"] = {"sizes": list(space.sizes), "options": [list(s.options) for s in space.slots],
                        "dropped": space.dropped, "invalid_llm_answers": space.invalid}
    run.write_results(results)
    path = run.write_report("DPO-Diff", [Section("Best prompt", table=[{
        "user prompt": prompt, "prompt": result["prompt"], "negative prompt": result["negative_prompt"],
        "loss": result["loss"], "user loss": result["user_loss"], "evaluations": result["evaluations"]}])])
    click.echo(f"prompt: {result['prompt']!r}  negative: {result['negative_prompt']!r}  loss {result['loss']:.4f} "
               f"(user prompt {result['user_loss']:.4f}); report: {path}")
