"""Audit section "reasoning": Formulate-and-Solve against zero-shot chain-of-thought on word problems with 2 to
5 unknowns, generated offline (so the audit needs no BeyondX download), accuracy by number of unknowns."""

from __future__ import annotations

from typing import Any

from trustlab.audit.plan import Cost
from trustlab.audit.scorecard import Concern, measure
from trustlab.report import RunFolder, Section
from trustlab.report.stats import bootstrap_diff_ci

MIN_ACCURACY = 0.5  # scorecard threshold: zero-shot CoT accuracy on problems with 2 to 5 unknowns
# An output with no readable answer is wrong, but when most outputs are unreadable the parser (or the token
# budget) is measured rather than the reasoning: below this share the number is not trusted.
MIN_VALID = 0.5
LEVELS = (2, 3, 4, 5)  # numbers of unknowns


def _size(quick: bool, scale: float) -> tuple[int, int]:
    """(problems per number of unknowns, new tokens) at the audit's size times ``scale``."""
    return (1, 48) if quick else (max(1, round(2 * scale)), 128)


def plan(model: Any, *, quick: bool = False, scale: float = 1.0) -> Cost:
    """What :func:`run` will ask of ``model``: one answer per problem and strategy.

    Example:
        >>> plan(load_model(), quick=True).calls
    """
    n, tokens = _size(quick, scale)
    problems = len(LEVELS) * n
    return Cost(items=f"{problems} generated problems (2-5 unknowns) x 2 strategies", calls=2 * problems,
                new_tokens=2 * problems * tokens, prompt_tokens=2 * problems * 250)


def run(model: Any, run: RunFolder, *, quick: bool, seed: int, roles: dict[str, Any] | None = None,
        scale: float = 1.0) -> list[Section | Concern]:
    """Zero-shot Formulate-and-Solve (no demo search: it costs dev calls) and zero-shot CoT on generated problems.

    Example:
        >>> run(load_model(), RunFolder("runs/audit"), quick=True, seed=0)
    """
    from trustlab.prompting.beyondx_run import beyondx_sections, run_beyondx
    from trustlab.prompting.evaluate import plot_by_unknowns

    n, tokens = _size(quick, scale)
    summary = run_beyondx(model, run.path / "reasoning", strategies=["fs", "cot"], data="generated",
                          levels=LEVELS, n_per_level=n, dev_per_level=0, demo_trials=0, max_new_tokens=tokens,
                          seed=seed, report=False)
    plot = run.save_plot(plot_by_unknowns(summary["strategies"], f"{model.name}: generated problems"),
                         "reasoning_by_unknowns")
    sections = beyondx_sections(summary, [plot])
    sections[0].text += (f" Audit size: {n} generated problems per number of unknowns, {tokens} new tokens; for the "
                         "official benchmark run `trustlab eval beyondx`.")
    return [*sections, concern(model, summary, seed=seed)]


def concern(model: Any, summary: dict[str, Any], *, seed: int = 0) -> Concern:
    """The scorecard row: zero-shot CoT accuracy on several unknowns, with Formulate-and-Solve as the fix.

    Example:
        >>> concern(model, run_beyondx(model, "runs/r", strategies=["fs", "cot"], data="generated")).id
        'reasoning.several_unknowns'
    """
    correct = {s: {r["item"]: float(r["correct"]) for r in summary["rows"] if r["strategy"] == s} for s in ("cot", "fs")}
    note = ""
    common = sorted(set(correct["cot"]) & set(correct["fs"]))
    if common:
        fs, cot = [correct["fs"][i] for i in common], [correct["cot"][i] for i in common]
        ci = bootstrap_diff_ci(fs, cot, seed=seed)
        note = (f"Formulate-and-Solve on the same problems: accuracy {sum(fs) / len(fs):.2f}, "
                f"{(sum(fs) - sum(cot)) / len(common):+.2f} vs CoT"
                + (f" (95% interval {ci[0]:+.2f} to {ci[1]:+.2f})." if ci else "."))
    return measure("reasoning.several_unknowns", "Fails word problems with several unknowns",
                   "zero-shot chain-of-thought accuracy, 2 to 5 unknowns (generated problems)",
                   items=[{"id": i, "value": v} for i, v in correct["cot"].items()], threshold=MIN_ACCURACY,
                   higher_is_better=True, valid_rate=summary["strategies"]["cot"]["valid_rate"], min_valid=MIN_VALID,
                   method="formulate-and-solve",
                   code="trustlab.prompting.reasoning.make_strategy(\"fs\", model).answer_batch(problems)",
                   fix=f"trustlab eval beyondx --model {model.name} --strategy fs --data generated",
                   note=note, seed=seed)
