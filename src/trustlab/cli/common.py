"""What every command shares: --model / --model-name / --seed / --out mean the same everywhere, and the
command tree is built lazily from import paths (core commands and the method records' ``cli`` entries)."""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping
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


RUN_FOLDER_HELP = "run folder to write (config.json, results.json, samples.jsonl, plots, report.html)"


def out_option(default: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """--out DIR: the run folder (a rerun with the same configuration resumes it)."""
    return click.option("--out", type=click.Path(path_type=Path, file_okay=False), default=default,
                        show_default=True, help=RUN_FOLDER_HELP)


def parse_levels(value: str, lo: int, hi: int) -> tuple[int, ...]:
    """Numbers of unknowns given as ``"3,4,5"``, each from ``lo`` to ``hi``, sorted and deduplicated.

    Raises:
        click.BadParameter: not a comma-separated list of numbers, or a number outside ``lo..hi``.
    """
    try:
        levels = tuple(sorted({int(v) for v in value.split(",") if v.strip()}))
    except ValueError:
        raise click.BadParameter(f"{value!r} is not a comma-separated list of numbers of unknowns, "
                                 "e.g. 3,4,5") from None
    if not levels or any(not lo <= k <= hi for k in levels):
        raise click.BadParameter(f"numbers of unknowns must be from {lo} to {hi}, got {value!r}")
    return levels


def load_from_options(model_spec: str, model_name: str | None, attn_implementation: str | None):
    """Load the model handle named by the shared options."""
    from trustlab.models import load_model

    kwargs: dict[str, Any] = {}
    if model_name:
        kwargs["model_name"] = model_name
    if attn_implementation:
        kwargs["attn_implementation"] = attn_implementation
    return load_model(model_spec, **kwargs)


def load_role_options(model: Any, model_spec: str, attn_implementation: str | None,
                      specs: Mapping[str, str | None]) -> dict[str, Any]:
    """The handles of a command's role options (``--judge-model`` ...), with ``"model"`` = ``model``.

    A role left None, or naming ``--model``'s spec, is ``model`` itself; roles naming the same spec share
    one handle (:func:`trustlab.reproduce.load_roles`). A spec that names nothing loadable is a usage error
    naming the option.
    """
    from trustlab.reproduce import RoleModelError, load_roles

    try:
        return load_roles({"model": model, **{r: None if s == model_spec else s for r, s in specs.items()}},
                          hf_options={"attn_implementation": attn_implementation} if attn_implementation else None)
    except RoleModelError as exc:
        raise click.BadParameter(str(exc), param_hint=f"--{exc.role}-model") from exc


class Registered(click.ParamType):
    """A name the registry knows (a method id, an audit section), checked when the command line is parsed,
    so a method registered at run time counts too.

    Example:
        >>> from trustlab.registry import audit_sections
        >>> Registered(lambda: [m.section for m in audit_sections()], "audit section")
    """

    name = "name"

    def __init__(self, names: Callable[[], list[str]], what: str):
        self.names = names
        self.what = what

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> str:
        known = self.names()
        if value in known:
            return value
        self.fail(f"unknown {self.what} {value!r}; choose one of: {', '.join(known) or 'none yet'}", param, ctx)

    def shell_complete(self, ctx: click.Context, param: click.Parameter, incomplete: str) -> list[Any]:
        from click.shell_completion import CompletionItem

        return [CompletionItem(n) for n in self.names() if n.startswith(incomplete)]


class ListingCommand(click.Command):
    """A command whose --help ends with a list read from the registry when the help is shown.

    Args:
        listing: (heading, function returning (name, description) rows).
    """

    def __init__(self, *args: Any, listing: tuple[str, Callable[[], list[tuple[str, str]]]], **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.listing = listing

    def format_epilog(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        heading, rows = self.listing
        with formatter.section(heading):
            formatter.write_dl(rows() or [("(none)", "")])
        super().format_epilog(ctx, formatter)


def _unavailable(name: str, target: str, exc: ImportError) -> click.Command:
    """Stand-in for a command whose module cannot be imported (an absent extra): the rest still works."""
    from trustlab.errors import MissingExtraError

    @click.command(name, help=f"(unavailable: {exc})", add_help_option=False,
                   context_settings={"ignore_unknown_options": True, "allow_extra_args": True})
    def command() -> None:
        raise MissingExtraError(f"`{name}` cannot be loaded ({target}): {exc}")

    return command


class LazyGroup(click.Group):
    """A group whose commands are ``"module:attr"`` import paths, imported when listed or run.

    Its commands are ``core`` plus every method record's ``cli`` entry whose path continues this group's
    ``path`` by one word (``"eval context"`` belongs to the group at path ``("eval",)``).

    Args:
        core: command name -> ``"module:attr"`` of the commands that belong to no method.
        path: the words that lead to this group from ``trustlab`` (``()`` for the top).
    """

    def __init__(self, *args: Any, core: Mapping[str, str] | None = None, path: tuple[str, ...] = (),
                 **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.core = dict(core or {})
        self.path = path

    def targets(self) -> dict[str, str]:
        """Command name -> import path, core commands first."""
        from trustlab.registry import all_methods

        found = dict(self.core)
        for m in all_methods():
            for words, target in ((tuple(p.split()), t) for p, t in m.cli.items()):
                if words[:-1] == self.path:
                    found.setdefault(words[-1], target)
        return found

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(set(super().list_commands(ctx)) | set(self.targets()))

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        from trustlab.registry import resolve

        cmd = super().get_command(ctx, cmd_name)
        target = self.targets().get(cmd_name) if cmd is None else None
        if target is None:
            return cmd
        try:
            return resolve(target)
        except ImportError as exc:
            return _unavailable(cmd_name, target, exc)
