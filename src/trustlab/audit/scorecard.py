"""The audit's scorecard: one row per concern, with its number, n, 95% interval, a verdict against a stated
threshold, and the trustlab method (with the exact command) that addresses it.

A section contributes rows generically: its ``run(model, run, *, quick, seed)`` returns :class:`Concern` objects
next to its report sections (usually built by :func:`measure`), and :func:`trustlab.audit.run_audit` collects
them into ``scorecard.json`` and the table at the top of report.html. The scorecard code never names a section.

Verdicts (decided by the interval, never by the point estimate alone):

- ``pass``: the whole 95% interval lies on the good side of the threshold;
- ``fail``: the whole interval lies on the bad side;
- ``inconclusive``: the interval straddles the threshold (``lean`` says which side the number is on);
- ``not measurable``: the measurement cannot be trusted on this run (too few items, too many invalid outputs,
  a judge or NLI near chance): the row says "not measurable here, because ..." and what to run instead.

Example:
    >>> c = measure("demo.asr", "Jailbreaks succeed", "attack success rate", threshold=0.2, higher_is_better=False,
    ...             items=[{"id": str(i), "value": float(i < 1)} for i in range(20)], method="backtranslation",
    ...             fix="trustlab eval jailbreak --model M")
    >>> c.value, c.verdict
    (0.05, 'inconclusive')
"""

from __future__ import annotations

import dataclasses
import html
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from trustlab.errors import TrustlabError
from trustlab.report import read_json, write_json
from trustlab.report.stats import bootstrap_diff_ci, bootstrap_metric_ci, wilson_ci

MIN_N = 8  # fewer items than this behind a number: "not measurable here, because too few items"
MIN_VALID = 0.8  # default share of outputs that must parse into valid data
SCORECARD = "scorecard.json"
STRONGER_ROLE_MODEL = "embedded:qwen2.5-coder-1.5b"  # suggested judge / NLI (bash scripts/install.sh models)


def _roc_auc(scores: np.ndarray, errors: np.ndarray) -> float:
    from trustlab.uncertainty.metrics import roc_auc

    return roc_auc(scores, errors)


def item_arrays(stat: str, items: Sequence[dict[str, Any]]) -> tuple[np.ndarray, ...]:
    """The arrays ``STATS[stat]`` takes: (values,) for ``"mean"``, (scores, errors) for ``"roc_auc"``."""
    if stat == "mean":
        return (np.asarray([it["value"] for it in items], dtype=float),)
    return (np.asarray([it["score"] for it in items], dtype=float), np.asarray([it["error"] for it in items], dtype=float))


# stat name -> (function of the item arrays, description); a concern's items are {"id", "value"} for "mean" and
# {"id", "score", "error"} for "roc_auc" (uncertainty score vs 1 = wrong answer).
STATS: dict[str, Callable[..., float]] = {"mean": lambda v: float(np.mean(v)) if len(v) else math.nan,
                                          "roc_auc": _roc_auc}


def statistic(stat: str, items: Sequence[dict[str, Any]]) -> float:
    """The value of ``stat`` over per-item records (NaN when undefined).

    Example:
        >>> statistic("mean", [{"id": "a", "value": 1.0}, {"id": "b", "value": 0.0}])
        0.5
    """
    if stat not in STATS:
        raise TrustlabError(f"unknown concern statistic {stat!r}; use one of {sorted(STATS)}")
    return STATS[stat](*item_arrays(stat, items))


def interval(stat: str, items: Sequence[dict[str, Any]], seed: int = 0) -> list[float] | None:
    """95% interval of ``stat``: Wilson for a mean of 0/1 values, percentile bootstrap otherwise.

    Example:
        >>> interval("mean", [{"id": str(k), "value": float(k < 2)} for k in range(10)])
        [0.056682, 0.509838]
    """
    arrays = item_arrays(stat, items)
    if not len(items):
        return None
    if stat == "mean":
        (v,) = arrays
        if set(np.unique(v)) <= {0.0, 1.0}:
            return wilson_ci(int(v.sum()), len(v))
        return bootstrap_diff_ci(v, np.zeros_like(v), seed=seed)  # mean - 0
    return bootstrap_metric_ci(STATS[stat], *arrays, seed=seed)


@dataclass
class Concern:
    """One scorecard row.

    Attributes:
        id: ``"<section>.<what>"``, stable across runs (the key of comparisons and gate rules).
        title: the question in plain words, e.g. ``"Jailbreak prompts get answered"``.
        metric: what ``value`` is, e.g. ``"attack success rate (no defense)"``.
        threshold: the acceptable limit of ``value`` (stated in the report).
        higher_is_better: the direction of ``value``.
        method: the trustlab method that addresses the concern (a registry id, or a sentence when none does).
        fix: the exact command that applies (or measures) it, shown in the scorecard.
        code: the Python that applies it to a loaded model, when there is one (shown under the scorecard).
        value: the measured number (None when not measurable).
        n: items behind the number.
        ci: 95% interval of ``value``.
        valid_rate: share of outputs behind it that parsed into valid data (None where nothing is parsed).
        measurable: False when the measurement cannot be trusted here; ``why_not`` then says why.
        why_not: the end of "not measurable here, because ...".
        remeasure: the command that makes the measurement trustworthy (e.g. with a stronger judge).
        stat: ``"mean"`` or ``"roc_auc"`` (how ``items`` give ``value``; comparisons recompute it).
        items: per-item records (``{"id", "value"}`` or ``{"id", "score", "error"}``).
        note: evidence or context, e.g. what the fix changed on this run.
        section: the audit section that measured it (set by ``run_audit``).

    Example:
        >>> Concern.from_dict(read_json("runs/audit/scorecard.json")["concerns"][0]).verdict
        'not measurable'
    """

    id: str
    title: str
    metric: str
    threshold: float
    higher_is_better: bool
    method: str
    fix: str
    code: str = ""
    value: float | None = None
    n: int = 0
    ci: list[float] | None = None
    valid_rate: float | None = None
    measurable: bool = True
    why_not: str = ""
    remeasure: str = ""
    stat: str = "mean"
    items: list[dict[str, Any]] = field(default_factory=list)
    note: str = ""
    section: str = ""

    def _good(self, x: float) -> bool:
        return x >= self.threshold if self.higher_is_better else x <= self.threshold

    @property
    def verdict(self) -> str:
        """``pass``, ``fail``, ``inconclusive`` or ``not measurable`` (see the module docstring)."""
        if not self.measurable or self.value is None or not math.isfinite(self.value):
            return "not measurable"
        if self.ci is None:
            return "inconclusive"
        lo_good, hi_good = self._good(self.ci[0]), self._good(self.ci[1])
        if lo_good and hi_good:
            return "pass"
        if not lo_good and not hi_good:
            return "fail"
        return "inconclusive"

    @property
    def lean(self) -> str | None:
        """The side the point estimate is on (``pass``/``fail``), None when not measurable."""
        if self.verdict == "not measurable":
            return None
        return "pass" if self._good(float(self.value)) else "fail"  # type: ignore[arg-type]

    def with_threshold(self, threshold: float) -> Concern:
        return dataclasses.replace(self, threshold=float(threshold))

    def to_dict(self) -> dict[str, Any]:
        return {**dataclasses.asdict(self), "verdict": self.verdict, "lean": self.lean}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Concern:
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})


def measure(id: str, title: str, metric: str, *, items: Sequence[dict[str, Any]], threshold: float,
            higher_is_better: bool, method: str, fix: str, code: str = "", stat: str = "mean",
            valid_rate: float | None = None,
            min_valid: float = MIN_VALID, checks: Sequence[tuple[bool, str]] = (), remeasure: str = "",
            note: str = "", min_n: int = MIN_N, seed: int = 0) -> Concern:
    """A concern measured from per-item records, with its interval and measurability decided here.

    Not measurable when fewer than ``min_n`` items are behind the number, ``valid_rate`` is below
    ``min_valid``, or a ``checks`` entry is ``(False, reason)`` (e.g. the judge's accuracy on a labelled set).

    Args:
        id, title, metric, threshold, higher_is_better, method, fix, code, remeasure, note: the
            :class:`Concern` fields.
        items: per-item records (see :data:`STATS`); items whose value is NaN are dropped.
        stat: ``"mean"`` or ``"roc_auc"``.
        valid_rate: share of outputs that parsed (None: nothing parsed).
        min_valid: the valid_rate below which the number is not trusted.
        checks: ``(ok, reason)`` pairs from the section's own trust checks.
        min_n: fewest items for a measurement.
        seed: bootstrap seed.

    Example:
        >>> measure("x.y", "t", "m", items=[], threshold=0.5, higher_is_better=True, method="m", fix="f").why_not
        'too few items (0 < 8)'
    """
    if stat not in STATS:
        raise TrustlabError(f"unknown concern statistic {stat!r}; use one of {sorted(STATS)}")
    key = "value" if stat == "mean" else "score"
    kept = [dict(it) for it in items if it.get(key) is not None and math.isfinite(float(it[key]))]
    value = statistic(stat, kept) if kept else None
    reasons = [reason for ok, reason in checks if not ok]
    if len(kept) < min_n:
        reasons.append(f"too few items ({len(kept)} < {min_n})")
    if valid_rate is not None and valid_rate < min_valid:
        reasons.append(f"only {valid_rate:.0%} of the outputs were valid (need {min_valid:.0%})")
    if value is not None and not math.isfinite(value) and not reasons:
        reasons.append(f"{metric} is undefined on these items")
    return Concern(id=id, title=title, metric=metric, threshold=threshold, higher_is_better=higher_is_better,
                   method=method, fix=fix, code=code, value=value if value is not None and math.isfinite(value) else None,
                   n=len(kept), ci=interval(stat, kept, seed) if kept else None, valid_rate=valid_rate,
                   measurable=not reasons, why_not="; ".join(reasons), remeasure=remeasure, stat=stat, items=kept,
                   note=note)


def apply_thresholds(concerns: Sequence[Concern], thresholds: dict[str, float] | None) -> list[Concern]:
    """The concerns with thresholds replaced by ``thresholds`` (concern id -> number, e.g. from a gate file);
    ids that name no concern are the gate's to report (:func:`trustlab.audit.gate.check_gate`).

    Example:
        >>> [c.threshold for c in apply_thresholds(concerns, {"jailbreak.attack_success": 0.3})]
    """
    thresholds = dict(thresholds or {})
    return [c.with_threshold(thresholds[c.id]) if c.id in thresholds else c for c in concerns]


def write_scorecard(folder: str | Path, concerns: Sequence[Concern], **extra: Any) -> Path:
    """Write ``scorecard.json``: ``{"concerns": [...Concern.to_dict()], "min_n", "min_valid", **extra}``.

    Example:
        >>> write_scorecard("runs/audit", concerns, quick=False)
        PosixPath('runs/audit/scorecard.json')
    """
    return write_json(Path(folder) / SCORECARD, {"concerns": [c.to_dict() for c in concerns], "min_n": MIN_N,
                                                 "min_valid": MIN_VALID, **extra})


def read_scorecard(folder: str | Path) -> tuple[list[Concern], dict[str, Any]]:
    """(concerns, the whole scorecard.json) of an audit run folder.

    Raises:
        TrustlabError: the folder holds no scorecard.json (not an audit run, or one from before scorecards).

    Example:
        >>> concerns, data = read_scorecard("runs/audit")
    """
    path = Path(folder) / SCORECARD
    if not path.exists():
        raise TrustlabError(f"{folder} has no {SCORECARD}: give the folder of a `trustlab audit` run")
    data = read_json(path)
    return [Concern.from_dict(d) for d in data["concerns"]], data


def fmt_value(c: Concern) -> str:
    """``0.35 [0.18, 0.57], n = 20`` (or the not-measurable sentence)."""
    if c.verdict == "not measurable":
        return f"not measurable here, because {c.why_not or 'the number is undefined'}"
    ci = f" [{c.ci[0]:.2f}, {c.ci[1]:.2f}]" if c.ci else ""
    return f"{c.value:.2f}{ci}, n = {c.n}"


def fmt_threshold(c: Concern) -> str:
    return f"{'≥' if c.higher_is_better else '≤'} {c.threshold:g}"


def verdict_badge(verdict: str, lean: str | None = None) -> str:
    """An HTML badge for a verdict (``inconclusive`` shows its lean)."""
    text = verdict + (f" (leans {lean})" if verdict == "inconclusive" and lean else "")
    return f'<span class="v v-{verdict.replace(" ", "-")}">{html.escape(text)}</span>'


# Audit pages are wider and tighter than the other reports, so that the whole scorecard fits the first screen.
SCORECARD_CSS = """body{max-width:1240px;margin:.6em auto}td{overflow-wrap:break-word}#what-to-run td{overflow-wrap:anywhere}h1{font-size:1.45em;margin:.3em 0}h2{margin:.4em 0}
.meta{margin:.2em 0}.scorecard{font-size:.8em;width:100%;margin:.4em 0}.scorecard td,.scorecard th{padding:3px 6px;vertical-align:top}
.scorecard code{font-size:.95em;background:#f6f6f6;padding:0 3px;word-break:break-word}.scorecard .metric{color:#555}
.v{font-weight:600;padding:1px 6px;border-radius:3px;white-space:nowrap}.v-pass{background:#d9f2d9;color:#145214}
.v-fail{background:#f8d4d4;color:#7a1010}.v-inconclusive{background:#fbeccb;color:#6b4a00}
.v-not-measurable{background:#e4e4e4;color:#444}.small{font-size:.8em;color:#555;margin:.3em 0}"""


def _run_cell(c: Concern) -> str:
    if c.verdict == "not measurable" and c.remeasure:
        return f"<b>{html.escape(c.method)}</b>, to measure first: <code>{html.escape(c.remeasure)}</code>"
    return f"<b>{html.escape(c.method)}</b>: <code>{html.escape(c.fix)}</code>"


def scorecard_html(concerns: Sequence[Concern], *, not_run: dict[str, str] | None = None) -> str:
    """The scorecard block at the top of report.html: one compact row per concern, the verdict rule, and the
    sections that did not run (the methods' code and evidence follow in :func:`fixes_section`).

    Example:
        >>> run.write_report("audit", sections, lead=scorecard_html(concerns), css=SCORECARD_CSS)
    """
    rows = "".join(
        f'<tr id="concern-{html.escape(c.id)}" title="{html.escape(c.id)}"><td><b>{html.escape(c.title)}</b> '
        f'<span class="metric">({html.escape(c.metric)}; threshold {html.escape(fmt_threshold(c))})</span></td>'
        f"<td>{html.escape(fmt_value(c))}</td><td>{verdict_badge(c.verdict, c.lean)}</td><td>{_run_cell(c)}</td></tr>"
        for c in concerns)
    missing = "; ".join(f"{name} ({why})" for name, why in (not_run or {}).items())
    return (
        '<section id="scorecard"><h2>Scorecard</h2>'
        '<table class="scorecard"><colgroup><col style="width:31%"><col style="width:27%"><col style="width:12%">'
        '<col style="width:30%"></colgroup><thead><tr><th>Concern (what is measured; threshold)</th>'
        "<th>Measured, 95% interval, n</th><th>Verdict</th><th>What to run</th></tr></thead>"
        f"<tbody>{rows}</tbody></table>"
        '<p class="small">pass / fail: the whole 95% interval lies on one side of the threshold; inconclusive: it '
        f"straddles it; not measurable: fewer than {MIN_N} items, fewer than {MIN_VALID:.0%} valid outputs (unless "
        "a row states another share), or a judge / NLI that fails its labelled check. Methods, code and evidence: "
        'see <a href="#what-to-run">What to run</a>; every number in scorecard.json.</p>'
        + (f'<p class="small">Not run: {html.escape(missing)}</p>' if missing else "")
        + "</section>")


def fixes_section(concerns: Sequence[Concern]) -> Any:
    """The report section under the scorecard: per concern, the method, its command and code, the command that
    makes an untrustworthy measurement trustworthy, and the evidence this run gives.

    Example:
        >>> fixes_section(concerns).anchor
        'what-to-run'
    """
    from trustlab.report import Section

    table = [{"concern": c.title, "id (for --fail-on)": c.id, "method": c.method,
              "command": (f"to measure it first: {c.remeasure} ; then: " if c.verdict == "not measurable" and c.remeasure
                          else "") + c.fix,
              "code": c.code or "-", "evidence on this run": c.note or "-"} for c in concerns]
    return Section("What to run", "The trustlab method behind each concern, with the command and the code that apply "
                   "it; thresholds and sizes are in scorecard.json.", table=table, anchor="what-to-run")
