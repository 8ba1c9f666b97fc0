"""``trustlab models``, ``trustlab generate``, ``trustlab chat``: look at backends and try a model."""

from __future__ import annotations

import json
from pathlib import Path

import click

from trustlab.cli.common import load_from_options, model_options, out_option, seed_option


@click.command()
@click.option("--json", "as_json", is_flag=True, help="print JSON instead of a table")
@click.option("--assemble", is_flag=True,
              help="assemble every installed multi-part embedded model into the cache and check its sha256")
def models(as_json: bool, assemble: bool) -> None:
    """List the backends, the embedded offline assets and models, whether they are installed, and their licences.

    The larger embedded models are installed by `bash scripts/install.sh models`; load them with
    --model embedded:<name> (or load_model("embedded:<name>")).
    """
    import importlib.util

    from trustlab.models.embedded import EMBEDDED_LMS, asset_status

    if assemble:
        for lm in EMBEDDED_LMS.values():
            if lm.installed and len(lm.parts) > 1:
                click.echo(f"embedded:{lm.key}: {lm.gguf()} (sha256 {lm.sha256[:12]}... checked)")
            elif not lm.installed:
                click.echo(f"embedded:{lm.key}: not installed ({lm.install})")
        return

    backends = [
        {"backend": "hf", "spec": "embedded | org/name | /path/to/folder | /path/model.gguf",
         "installed": all(importlib.util.find_spec(m) for m in ("transformers", "gguf", "accelerate")),
         "install": 'pip install "trustlab[llm]"'},
        {"backend": "openai", "spec": "openai:http://HOST:PORT/v1 (+ --model-name)",
         "installed": importlib.util.find_spec("httpx") is not None, "install": "pip install httpx"},
        {"backend": "llama.cpp server (for tests/benchmarks)", "spec": "python -m llama_cpp.server ...",
         "installed": importlib.util.find_spec("llama_cpp") is not None, "install": 'pip install "trustlab[server]"'},
    ]
    assets = asset_status()
    if as_json:
        click.echo(json.dumps({"backends": backends, "embedded": assets}, indent=2))
        return
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    console = Console()
    # the table shows whether a model is converted; --json gives the cache paths
    assets = [{**r, "cache": "-" if r["cache"] == "-" else
               ("not yet converted" if r["cache"] == "not yet converted" else "converted")} for r in assets]
    for title, rows in (("Backends", backends), ("Embedded offline assets", assets)):
        table = Table(title=title)
        for col in rows[0]:
            table.add_column(col)
        for row in rows:
            table.add_row(*[("yes" if v else "NO") if isinstance(v, bool) else escape(str(v)) for v in row.values()])
        console.print(table)


@click.command()
@click.argument("prompts", nargs=-1, required=True)
@model_options
@seed_option
@out_option("runs/generate")
@click.option("--max-new-tokens", type=click.IntRange(min=1), default=128, show_default=True)
@click.option("--temperature", type=click.FloatRange(min=0.0), default=0.0, show_default=True, help="0 = greedy")
@click.option("-n", "n", type=click.IntRange(min=1), default=1, show_default=True, help="samples per prompt")
@click.option("--no-chat-template", is_flag=True, help="send the raw text, without the chat template")
@click.option("--logprobs", is_flag=True, help="also print per-token log-probabilities")
def generate(prompts: tuple[str, ...], model_spec: str, model_name: str | None, attn_implementation: str | None,
             seed: int, out: Path, max_new_tokens: int, temperature: float, n: int, no_chat_template: bool,
             logprobs: bool) -> None:
    """Generate answers to PROMPTS (a quick check of a model and backend) into the run folder OUT.

    Each prompt is generated on its own with seed SEED + its index, and its samples are written to
    samples.jsonl as soon as they are done (id "<prompt index>-<sample index>"). Rerunning the same command
    resumes: prompts already answered are read back, not generated again, and the answers are the same as
    those of an uninterrupted run.
    """
    import time

    from trustlab.report import RunFolder, Section

    model = load_from_options(model_spec, model_name, attn_implementation)
    run = RunFolder(out, {"command": "generate", "model": model.describe(), "prompts": list(prompts), "seed": seed,
                          "n": n, "temperature": temperature, "max_new_tokens": max_new_tokens,
                          "chat_template": not no_chat_template, "logprobs": logprobs})
    stored = {row["id"]: row for row in run.samples() if "id" in row}
    t0 = time.perf_counter()
    generated = 0
    table = []
    for i, prompt in enumerate(prompts):
        ids = [f"{i}-{j}" for j in range(n)]
        if not all(id_ in stored for id_ in ids):
            samples = model.generate([prompt], chat_template=not no_chat_template, max_new_tokens=max_new_tokens,
                                     temperature=temperature, n=n, seed=seed + i, logprobs=logprobs)[0]
            for id_, j, g in zip(ids, range(n), samples, strict=True):
                row = {"id": id_, "prompt_index": i, "sample": j, "prompt": prompt, **g.to_dict()}
                run.add_sample(row)  # skips an id written before the interruption
                stored.setdefault(id_, row)
            generated += 1
        click.secho(f"> {prompt}", bold=True)
        for j, id_ in enumerate(ids):
            row = stored[id_]
            click.echo(f"{f'[{j}] ' if n > 1 else ''}{row['text']}")
            if logprobs and row.get("token_logprobs") is not None:
                click.echo("    " + " ".join(f"{t!r}:{lp:.2f}" for t, lp in zip(row.get("tokens") or [],
                                                                                   row["token_logprobs"])))
            table.append({"prompt": prompt, "sample": j, "text": row["text"]})
    results = {"prompts": len(prompts), "samples": len(prompts) * n, "generated_prompts": generated,
               "resumed_prompts": len(prompts) - generated, "seconds": round(time.perf_counter() - t0, 3)}
    run.write_results(results)
    text = (f"{len(prompts)} prompts x {n} samples at temperature {temperature:g}, at most {max_new_tokens} new "
            f"tokens, {'with' if not no_chat_template else 'without'} the chat template; {generated} generated "
            f"in this run, {len(prompts) - generated} read back from an earlier one.")
    path = run.write_report(f"trustlab generate: {model.name}", [Section("Generations", text, table)])
    click.echo(f"report: {path}")


@click.command()
@model_options
@seed_option
@out_option("runs/chat")
@click.option("--max-new-tokens", type=click.IntRange(min=1), default=256, show_default=True)
@click.option("--temperature", type=click.FloatRange(min=0.0), default=0.0, show_default=True, help="0 = greedy")
@click.option("--system", default=None, help="a system message to start the conversation with")
def chat(model_spec: str, model_name: str | None, attn_implementation: str | None, seed: int, out: Path,
         max_new_tokens: int, temperature: float, system: str | None) -> None:
    """Chat with a model in the terminal (empty line or Ctrl-D ends).

    Each session starts a fresh transcript in the run folder OUT (an earlier one moves to
    OUT/.superseded/); every turn is written as it happens, and the report is written when the chat ends.
    """
    from trustlab.report import RunFolder, Section

    model = load_from_options(model_spec, model_name, attn_implementation)
    run = RunFolder(out, {"command": "chat", "model": model.describe(), "seed": seed, "system": system,
                          "max_new_tokens": max_new_tokens, "temperature": temperature}, fresh=True)
    messages = [{"role": "system", "content": system}] if system else []
    turns: list[dict[str, str]] = []
    while True:
        try:
            user = input("you> ").strip()
        except EOFError:
            break
        if not user:
            break
        messages.append({"role": "user", "content": user})
        reply = model.generate([messages], max_new_tokens=max_new_tokens, temperature=temperature,
                               seed=seed + len(turns))[0][0].text
        messages.append({"role": "assistant", "content": reply})
        click.echo(f"model> {reply}")
        turns.append({"user": user, "assistant": reply})
        run.add_sample({"id": len(turns) - 1, **turns[-1]})
    run.write_results({"turns": len(turns), "messages": messages})
    path = run.write_report(f"trustlab chat: {model.name}",
                            [Section("Transcript", f"{len(turns)} turns" + (f"; system: {system}" if system else ""),
                                     turns)])
    click.echo(f"report: {path}")
