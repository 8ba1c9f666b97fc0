"""``trustlab models``, ``trustlab generate``, ``trustlab chat``: look at backends and try a model."""

from __future__ import annotations

import json
from pathlib import Path

import click

from trustlab.cli import main
from trustlab.cli.common import load_from_options, model_options, out_option, seed_option


@main.command()
@click.option("--json", "as_json", is_flag=True, help="print JSON instead of a table")
def models(as_json: bool) -> None:
    """List the backends, the embedded offline assets and whether they are installed."""
    import importlib.util

    from trustlab.models.embedded import asset_status

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
    for title, rows in (("Backends", backends), ("Embedded offline assets", assets)):
        table = Table(title=title)
        for col in rows[0]:
            table.add_column(col)
        for row in rows:
            table.add_row(*[("yes" if v else "NO") if isinstance(v, bool) else escape(str(v)) for v in row.values()])
        console.print(table)


@main.command()
@click.argument("prompts", nargs=-1, required=True)
@model_options
@seed_option
@click.option("--max-new-tokens", type=int, default=128, show_default=True)
@click.option("--temperature", type=float, default=0.0, show_default=True, help="0 = greedy")
@click.option("-n", "n", type=int, default=1, show_default=True, help="samples per prompt")
@click.option("--no-chat-template", is_flag=True, help="send the raw text, without the chat template")
@click.option("--logprobs", is_flag=True, help="also print per-token log-probabilities")
@click.option("--out", type=click.Path(path_type=Path), default=None,
              help="also write a run folder (config.json, samples.jsonl, results.json)")
def generate(prompts: tuple[str, ...], model_spec: str, model_name: str | None, attn_implementation: str | None,
             seed: int, max_new_tokens: int, temperature: float, n: int, no_chat_template: bool,
             logprobs: bool, out: Path | None) -> None:
    """Generate answers to PROMPTS (a quick check of a model and backend)."""
    import time

    from trustlab.report import RunFolder

    model = load_from_options(model_spec, model_name, attn_implementation)
    t0 = time.perf_counter()
    results = model.generate(list(prompts), chat_template=not no_chat_template, max_new_tokens=max_new_tokens,
                             temperature=temperature, n=n, seed=seed, logprobs=logprobs)
    seconds = time.perf_counter() - t0
    run = RunFolder(out, {"command": "generate", "model": model.describe(), "seed": seed, "n": n,
                          "temperature": temperature, "max_new_tokens": max_new_tokens,
                          "chat_template": not no_chat_template}) if out else None
    for i, (prompt, samples) in enumerate(zip(prompts, results)):
        click.secho(f"> {prompt}", bold=True)
        for j, g in enumerate(samples):
            prefix = f"[{j}] " if n > 1 else ""
            click.echo(f"{prefix}{g.text}")
            if logprobs and g.token_logprobs is not None:
                click.echo("    " + " ".join(f"{t!r}:{lp:.2f}" for t, lp in zip(g.tokens or [], g.token_logprobs)))
            if run:
                run.add_sample({"id": f"{i}-{j}", "prompt": prompt, **g.to_dict()})
    if run:
        run.write_results({"prompts": len(prompts), "samples": len(prompts) * n, "seconds": seconds})
        click.echo(f"run folder: {run.path}")


@main.command()
@model_options
@seed_option
@out_option("runs/chat")
@click.option("--max-new-tokens", type=int, default=256, show_default=True)
@click.option("--temperature", type=float, default=0.0, show_default=True)
@click.option("--system", default=None, help="a system message to start the conversation with")
def chat(model_spec: str, model_name: str | None, attn_implementation: str | None, seed: int, out: Path,
         max_new_tokens: int, temperature: float, system: str | None) -> None:
    """Chat with a model in the terminal (empty line or Ctrl-D ends). The transcript goes to OUT."""
    from trustlab.report import RunFolder

    model = load_from_options(model_spec, model_name, attn_implementation)
    run = RunFolder(out, {"command": "chat", "model": model.describe(), "seed": seed})
    messages = [{"role": "system", "content": system}] if system else []
    turn = 0
    while True:
        try:
            user = input("you> ").strip()
        except EOFError:
            break
        if not user:
            break
        messages.append({"role": "user", "content": user})
        reply = model.generate([messages], max_new_tokens=max_new_tokens, temperature=temperature,
                               seed=seed + turn)[0][0].text
        messages.append({"role": "assistant", "content": reply})
        click.echo(f"model> {reply}")
        run.add_sample({"id": turn, "user": user, "assistant": reply})
        turn += 1
    run.write_results({"turns": turn, "messages": messages})
