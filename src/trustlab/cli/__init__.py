"""The ``trustlab`` command line. Thin: parse options, call the library, print.

Each command group lives in its own module here and is registered below; ``--model``, ``--seed`` and
``--out`` mean the same thing everywhere (see :mod:`trustlab.cli.common`).
"""

from __future__ import annotations

import sys

import click

from trustlab.errors import TrustlabError


class _Group(click.Group):
    """Print TrustlabError messages as one clean line (exit 2) instead of a traceback."""

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except TrustlabError as exc:
            click.secho(f"error: {exc}", fg="red", err=True)
            sys.exit(2)


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="trustlab")
def main() -> None:
    """trustlab: published methods for trustworthy foundation models, on one model handle."""


def _register() -> None:
    from trustlab.cli import audit, context, eval, finetune, models, results, safety, uncertainty  # noqa: F401  (commands register on import)


_register()
