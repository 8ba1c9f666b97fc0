"""Audit section "reasoning": Formulate-and-Solve against zero-shot chain-of-thought on word problems with 2 to
5 unknowns, generated offline (so the audit needs no BeyondX download), accuracy by number of unknowns."""

from __future__ import annotations

from typing import Any

from trustlab.report import RunFolder, Section


def run(model: Any, run: RunFolder, *, quick: bool, seed: int, roles: dict[str, Any] | None = None) -> list[Section]:
    """Zero-shot Formulate-and-Solve (no demo search: it costs dev calls) and zero-shot CoT on generated problems.

    Example:
        >>> run(load_model(), RunFolder("runs/audit"), quick=True, seed=0)
    """
    from trustlab.prompting.beyondx_run import beyondx_sections, run_beyondx
    from trustlab.prompting.evaluate import plot_by_unknowns

    n, tokens = (1, 48) if quick else (2, 128)
    summary = run_beyondx(model, run.path / "reasoning", strategies=["fs", "cot"], data="generated",
                          levels=(2, 3, 4, 5), n_per_level=n, dev_per_level=0, demo_trials=0, max_new_tokens=tokens,
                          seed=seed, report=False)
    plot = run.save_plot(plot_by_unknowns(summary["strategies"], f"{model.name}: generated problems"),
                         "reasoning_by_unknowns")
    sections = beyondx_sections(summary, [plot])
    sections[0].text += (f" Audit size: {n} generated problems per number of unknowns, {tokens} new tokens; for the "
                         "official benchmark run `trustlab eval beyondx`.")
    return sections
