"""The ``trustlab`` command line. Thin: parse options, call the library, print.

The command tree comes from two places: :data:`CORE` below (commands that belong to no single method) and
each method record's ``cli`` entries (:mod:`trustlab.registry`). Commands are imported only when listed or
run, so ``trustlab --help`` stays fast and a command whose extra is absent does not break the others.
``--model``, ``--seed`` and ``--out`` mean the same thing everywhere (see :mod:`trustlab.cli.common`).
"""

from __future__ import annotations

import sys

import click

from trustlab.cli.common import LazyGroup
from trustlab.errors import TrustlabError

CORE: dict[str, str] = {
    "models": "trustlab.cli.models:models",
    "generate": "trustlab.cli.models:generate",
    "chat": "trustlab.cli.models:chat",
    "audit": "trustlab.cli.audit:audit",
    "eval": "trustlab.cli.eval:eval_",
    "finetune": "trustlab.cli.finetune:finetune",
    "reproduce": "trustlab.cli.results:reproduce",
    "results": "trustlab.cli.results:results",
}


class _Main(LazyGroup):
    """Print TrustlabError messages as one clean line (exit 2) instead of a traceback."""

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except TrustlabError as exc:
            click.secho(f"error: {exc}", fg="red", err=True)
            sys.exit(2)


@click.group(cls=_Main, core=CORE, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="trustlab")
def main() -> None:
    """trustlab: published methods for trustworthy foundation models, on one model handle."""
