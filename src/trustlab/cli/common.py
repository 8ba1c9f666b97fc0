"""Options shared by every command, so --model / --model-name / --seed / --out mean the same everywhere."""

from __future__ import annotations

import functools
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click


def model_options(fn: Callable[..., Any]) -> Callable[..., Any]:
    """--model SPEC (default: embedded), --model-name NAME (for openai: endpoints), --attn IMPL."""

    @click.option("--model", "model_spec", default="embedded", show_default=True,
                  help="embedded | Hugging Face id or local path | openai:http://HOST:PORT/v1")
    @click.option("--model-name", default=None, help="model name sent to an OpenAI-compatible endpoint")
    @click.option("--attn", "attn_implementation", type=click.Choice(["eager", "sdpa"]), default=None,
                  help="attention implementation for Hugging Face models")
    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        return fn(*args, **kwargs)

    return wrapper


def seed_option(fn: Callable[..., Any]) -> Callable[..., Any]:
    return click.option("--seed", type=int, default=0, show_default=True, help="random seed")(fn)


def out_option(default: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    return click.option("--out", type=click.Path(path_type=Path), default=default, show_default=True,
                        help="run folder to write (config.json, results.json, samples.jsonl, plots, report.html)")


def load_from_options(model_spec: str, model_name: str | None, attn_implementation: str | None):
    """Load the model handle named by the shared options."""
    from trustlab.models import load_model

    kwargs: dict[str, Any] = {}
    if model_name:
        kwargs["model_name"] = model_name
    if attn_implementation:
        kwargs["attn_implementation"] = attn_implementation
    return load_model(model_spec, **kwargs)
