"""``trustlab eval ...``: evaluate a model on a benchmark; each benchmark adds a subcommand."""

from __future__ import annotations

from trustlab.cli import main


@main.group("eval")
def eval_() -> None:
    """Evaluate a model on a benchmark and write a run folder."""
