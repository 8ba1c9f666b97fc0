"""``trustlab eval ...``: evaluate a model on a benchmark; methods add subcommands through their records
(``cli={"eval <name>": "module:command"}`` in :func:`trustlab.registry.register_method`)."""

from __future__ import annotations

import click

from trustlab.cli.common import LazyGroup


@click.group("eval", cls=LazyGroup, path=("eval",))
def eval_() -> None:
    """Evaluate a model on a benchmark and write a run folder."""
