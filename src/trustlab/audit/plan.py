"""The audit's plan: what each section will run (items, model calls, tokens), a time estimate from a short
calibration on the audited model, and the size scale that fits ``--budget-minutes``.

A section declares its cost next to its ``run``: a module-level ``plan(model, *, quick, scale) -> Cost``, and
``run(..., scale=...)`` shrinks its sizes by ``scale`` (1.0 = the audit's default size). A section without a
``plan`` is listed as "unknown cost" and runs at its own size. Smaller sizes give wider intervals, which the
scorecard shows as they are (and "too few items" below the minimum).

Example:
    >>> audit_plan = make_plan(load_model(), audit_sections(), quick=False, budget_minutes=2)
    >>> print(audit_plan.text())
"""

from __future__ import annotations

import inspect
import sys
import time
from dataclasses import asdict, dataclass, field
from typing import Any

from trustlab.registry import resolve

SCALES = (1.0, 0.75, 0.5, 0.35, 0.25, 0.15)  # tried in order until the estimate fits the budget


@dataclass
class Cost:
    """What a section will ask of the audited model.

    Attributes:
        items: a short description of the items, e.g. ``"10 attacks + 10 benign prompts"``.
        calls: generations (one per prompt and sample) plus scoring passes.
        new_tokens: tokens generated in all.
        prompt_tokens: prompt tokens read in all (approximate).

    Example:
        >>> Cost("10 attacks + 10 benign prompts", calls=80, new_tokens=1600, prompt_tokens=16000).calls
        80
    """

    items: str
    calls: int
    new_tokens: int
    prompt_tokens: int


@dataclass
class Calibration:
    """Seconds for one call: ``per_call + per_new_token * new + per_prompt_token * prompt`` (least squares on
    three timed calls of the audited model).

    Example:
        >>> Calibration(0.1, 0.01, 0.0, seconds=1.0).seconds_for(Cost("x", calls=10, new_tokens=100, prompt_tokens=0))
        2.0
    """

    per_call: float
    per_new_token: float
    per_prompt_token: float
    seconds: float  # the calibration's own time

    def seconds_for(self, cost: Cost) -> float:
        return (cost.calls * self.per_call + cost.new_tokens * self.per_new_token
                + cost.prompt_tokens * self.per_prompt_token)


def calibrate(model: Any) -> Calibration:
    """Time three short calls of ``model`` (short prompt 1 and 16 new tokens, long prompt 1 new token).

    Example:
        >>> calibrate(load_model()).per_new_token
    """
    import numpy as np

    short, long_ = "Say hello.", "Read this. " + "The quick brown fox jumps over the lazy dog. " * 40 + "Say hello."
    runs = []
    t_all = time.perf_counter()
    model.generate([short], max_new_tokens=1, temperature=0.0)  # warm-up (first-call setup is not the audit's cost)
    for prompt, new in ((short, 1), (short, 16), (long_, 1)):
        t0 = time.perf_counter()
        model.generate([prompt], max_new_tokens=new, temperature=0.0)
        runs.append((new, len(prompt) // 4, time.perf_counter() - t0))  # ~4 characters a token
    a = np.array([[1.0, n, p] for n, p, _ in runs])
    coef = np.clip(np.linalg.lstsq(a, np.array([t for *_, t in runs]), rcond=None)[0], 0.0, None)
    return Calibration(*(float(c) for c in coef), seconds=time.perf_counter() - t_all)


@dataclass
class Plan:
    """The sections' costs at the chosen scale, the estimate, and the scale that fits the budget.

    Example:
        >>> make_plan(load_model(), audit_sections(), quick=True).estimate_seconds
    """

    scale: float
    rows: list[dict[str, Any]] = field(default_factory=list)
    calibration: Calibration | None = None
    budget_minutes: float | None = None

    @property
    def estimate_seconds(self) -> float | None:
        known = [r["seconds"] for r in self.rows if r["seconds"] is not None]
        return sum(known) if known else None

    def text(self) -> str:
        """The plan as the CLI prints it before running."""
        lines = [f"audit plan (sizes x {self.scale:g}" + (f", budget {self.budget_minutes:g} min" if self.budget_minutes
                                                         else "") + "):"]
        for r in self.rows:
            if r["calls"] is None:
                lines.append(f"  {r['section']:<16} unknown cost (the section declares no plan)")
                continue
            lines.append(f"  {r['section']:<16} {r['items']}; {r['calls']} model calls, {r['new_tokens']} new tokens"
                         f" ~ {r['seconds'] / 60:.1f} min")
        est = self.estimate_seconds
        if est is not None and self.calibration is not None:
            lines.append(f"  estimate: ~{est / 60:.1f} min on this machine (from a {self.calibration.seconds:.1f} s "
                         "calibration; batched calls usually run faster, judge/NLI roles on other models may not)")
        if self.budget_minutes and est is not None and est > self.budget_minutes * 60:
            lines.append(f"  the smallest sizes still need ~{est / 60:.1f} min: over the budget")
        if self.scale < 1:
            lines.append("  smaller sizes give wider intervals; rows with too few items say 'not measurable'")
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        return {"scale": self.scale, "rows": self.rows, "estimate_seconds": self.estimate_seconds,
                "budget_minutes": self.budget_minutes,
                "calibration": asdict(self.calibration) if self.calibration else None}


def section_cost(record: Any, model: Any, *, quick: bool, scale: float) -> Cost | None:
    """The ``plan`` of a section's module (None when it declares none).

    Example:
        >>> section_cost(get_section("jailbreak"), load_model(), quick=True, scale=1.0).items
        '2 attacks + 2 benign prompts'
    """
    fn = resolve(record.audit)
    plan_fn = getattr(sys.modules[fn.__module__], "plan", None)
    return plan_fn(model, quick=quick, scale=scale) if plan_fn is not None else None


def takes(fn: Any, name: str) -> bool:
    """Whether ``fn`` accepts a keyword argument ``name`` (sections opt in to ``roles`` and ``scale``).

    Example:
        >>> takes(lambda model, run, *, quick, seed, scale=1.0: [], "scale")
        True
    """
    return name in inspect.signature(fn).parameters


def make_plan(model: Any, records: list[Any], *, quick: bool, budget_minutes: float | None = None,
              calibration: Calibration | None = None) -> Plan:
    """The plan of ``records`` (audit sections) on ``model``: the largest scale in :data:`SCALES` whose estimate
    fits ``budget_minutes`` (quick runs: scale 1 of the quick sizes), with a fresh calibration unless given.

    Example:
        >>> make_plan(load_model(), audit_sections(), quick=False, budget_minutes=1).scale
        0.35
    """
    calibration = calibration or calibrate(model)
    plan = Plan(scale=1.0, calibration=calibration, budget_minutes=budget_minutes)
    for scale in SCALES if budget_minutes and not quick else (1.0,):
        rows = []
        for record in records:
            cost = section_cost(record, model, quick=quick, scale=scale)
            rows.append({"section": record.section, **(asdict(cost) if cost else dict.fromkeys(asdict(
                Cost("", 0, 0, 0)))), "seconds": calibration.seconds_for(cost) if cost else None})
        plan = Plan(scale=scale, rows=rows, calibration=calibration, budget_minutes=budget_minutes)
        if not budget_minutes or (plan.estimate_seconds or 0) <= budget_minutes * 60:
            break
    return plan
