"""``trustlab audit compare RUN_A RUN_B``: two audit runs side by side, each concern's difference B - A with its
95% interval ("base vs my fine-tune", "before vs after steering").

The interval is a paired bootstrap over the items both runs measured (same ids: same seed and sizes), an
unpaired one otherwise (Newcombe's interval for two rates of 0/1 items). A concern that is not measurable in
either run is "not comparable": no difference is shown for it.

Example:
    >>> from trustlab.audit.compare import compare_runs
    >>> compare_runs("runs/audit-base", "runs/audit-tuned", "runs/audit-compare")
    PosixPath('runs/audit-compare/report.html')
"""

from __future__ import annotations

import html
import math
from pathlib import Path
from typing import Any

import numpy as np

from trustlab.audit.scorecard import (
    SCORECARD_CSS,
    STATS,
    Concern,
    fmt_threshold,
    fmt_value,
    item_arrays,
    read_scorecard,
    verdict_badge,
)
from trustlab.errors import TrustlabError
from trustlab.report import RunFolder, Section, read_json, write_json
from trustlab.report.stats import LEVEL, _quantiles, bootstrap_diff_ci, proportion_diff_ci


def _bootstrap_ci(stat: str, a: list[dict[str, Any]], b: list[dict[str, Any]], *, paired: bool, n_boot: int = 2000,
                  seed: int = 0) -> list[float] | None:
    """Percentile bootstrap of ``stat(b) - stat(a)``: items resampled jointly when ``paired`` (the same items in
    the same order), each run's items on their own otherwise. For statistics of a whole sample (ROC-AUC)."""
    fn, xa, xb = STATS[stat], item_arrays(stat, a), item_arrays(stat, b)
    rng = np.random.default_rng(seed)
    diffs = []
    for _ in range(n_boot):
        ia = rng.integers(0, len(a), len(a))
        ib = ia if paired else rng.integers(0, len(b), len(b))
        diffs.append(fn(*(x[ib] for x in xb)) - fn(*(x[ia] for x in xa)))
    return _quantiles(diffs, LEVEL)


def difference(a: Concern, b: Concern, *, seed: int = 0) -> dict[str, Any]:
    """``b - a`` for one concern of two runs, with its interval and which way it went.

    Returns:
        ``{"id", "diff", "ci", "paired", "n_paired", "change"}``; ``change`` is ``"better"``, ``"worse"`` (the
        interval excludes zero, in the concern's direction), ``"no clear change"``, or ``"not comparable"``
        (either run has no trustworthy number; ``diff`` and ``ci`` are then None).

    Example:
        >>> difference(base, tuned)["change"]
        'worse'
    """
    out: dict[str, Any] = {"id": a.id, "diff": None, "ci": None, "paired": False, "n_paired": 0,
                           "change": "not comparable"}
    if "not measurable" in (a.verdict, b.verdict) or a.stat != b.stat:
        return out
    out["diff"] = float(b.value) - float(a.value)  # type: ignore[arg-type]
    by_a, by_b = {it["id"]: it for it in a.items}, {it["id"]: it for it in b.items}
    if set(by_a) == set(by_b):  # the same items in both runs: pair them
        ids = sorted(by_a)
        out["paired"], out["n_paired"] = True, len(ids)
        if a.stat == "mean":
            out["ci"] = bootstrap_diff_ci([by_b[i]["value"] for i in ids], [by_a[i]["value"] for i in ids], seed=seed)
        else:
            out["ci"] = _bootstrap_ci(a.stat, [by_a[i] for i in ids], [by_b[i] for i in ids], paired=True, seed=seed)
    elif a.stat == "mean" and all(it["value"] in (0.0, 1.0) for it in a.items + b.items):
        out["ci"] = proportion_diff_ci(int(sum(it["value"] for it in b.items)), len(b.items),
                                       int(sum(it["value"] for it in a.items)), len(a.items))
    else:
        out["ci"] = _bootstrap_ci(a.stat, a.items, b.items, paired=False, seed=seed)
    ci = out["ci"]
    if ci is None or not all(math.isfinite(x) for x in ci) or ci[0] <= 0 <= ci[1]:
        out["change"] = "no clear change"
    else:
        out["change"] = "better" if (ci[0] > 0) == a.higher_is_better else "worse"
    return out


def _label(folder: Path) -> str:
    config = folder / "config.json"
    model = read_json(config).get("model", {}) if config.exists() else {}
    return f"{model.get('name', '?')} ({folder})" if isinstance(model, dict) else f"{model} ({folder})"


def compare_concerns(a: list[Concern], b: list[Concern], *, seed: int = 0) -> list[dict[str, Any]]:
    """One row per concern id in either run (A's order first): both concerns and :func:`difference`.

    Example:
        >>> [r["change"] for r in compare_concerns(read_scorecard("runs/a")[0], read_scorecard("runs/b")[0])]
    """
    by_a, by_b = {c.id: c for c in a}, {c.id: c for c in b}
    rows = []
    for cid in dict.fromkeys([*by_a, *by_b]):
        ca, cb = by_a.get(cid), by_b.get(cid)
        diff = difference(ca, cb, seed=seed) if ca and cb else {"id": cid, "diff": None, "ci": None, "paired": False,
                                                                "n_paired": 0, "change": "only in one run"}
        rows.append({"id": cid, "a": ca, "b": cb, **diff})
    return rows


_CHANGE_CLASS = {"better": "pass", "worse": "fail", "no clear change": "inconclusive"}


def _cell(c: Concern | None) -> str:
    if c is None:
        return "not in this run"
    if c.verdict == "not measurable":  # the reason as a tooltip: the table must fit the first screen
        return f'<span title="{html.escape(fmt_value(c))}">{verdict_badge(c.verdict)}</span>'
    return f"{html.escape(fmt_value(c))}<br>{verdict_badge(c.verdict, c.lean)}"


def comparison_html(rows: list[dict[str, Any]], label_a: str, label_b: str) -> str:
    """The comparison table at the top of the comparison report (the runs' labels are in the page's meta line).

    Example:
        >>> comparison_html(compare_concerns(a, b), "base", "tuned").startswith('<section id="scorecard">')
        True
    """
    body = []
    for r in rows:
        c = r["a"] or r["b"]
        diff = "-" if r["diff"] is None else (f"{r['diff']:+.2f}" + (f" [{r['ci'][0]:+.2f}, {r['ci'][1]:+.2f}]"
                                                                     if r["ci"] else ""))
        badge = f'<span class="v v-{_CHANGE_CLASS.get(r["change"], "not-measurable")}">{html.escape(r["change"])}</span>'
        body.append(f'<tr id="compare-{html.escape(r["id"])}"><td><b>{html.escape(c.title)}</b><br><span class="small">'
                    f'{html.escape(c.metric)}, threshold {html.escape(fmt_threshold(c))}</span></td>'
                    f"<td>{_cell(r['a'])}</td><td>{_cell(r['b'])}</td><td>{html.escape(diff)}<br>{badge}</td></tr>")
    return ('<section id="scorecard"><h2>Comparison</h2>'
            '<table class="scorecard"><colgroup><col style="width:34%"><col style="width:24%"><col style="width:24%">'
            f'<col style="width:18%"></colgroup><thead><tr><th>Concern</th><th title="{html.escape(label_a)}">A (95% '
            f'interval)</th><th title="{html.escape(label_b)}">B (95% interval)</th><th>B - A (95% interval)</th></tr>'
            f"</thead><tbody>{''.join(body)}</tbody></table>"
            '<p class="small">better / worse: the 95% interval of B - A excludes zero (paired over the items both runs '
            "measured, when they are the same items); no clear change: it includes zero; not comparable: a run "
            "has no trustworthy number for the concern (why: hover the badge, or see that run's scorecard).</p>"
            "</section>")


def compare_runs(run_a: str | Path, run_b: str | Path, out: str | Path, *, seed: int = 0) -> Path:
    """Write a comparison report of two ``trustlab audit`` run folders into ``out``.

    Writes ``comparison.json`` (one row per concern: both concerns, the difference B - A, its interval, the
    change), ``results.json`` and ``report.html`` (the comparison table first, then each run's fix commands).

    Raises:
        TrustlabError: a folder is no audit run with a scorecard.

    Example:
        >>> compare_runs("runs/audit-base", "runs/audit-tuned", "runs/audit-compare")
        PosixPath('runs/audit-compare/report.html')
    """
    run_a, run_b = Path(run_a), Path(run_b)
    if run_a.resolve() == run_b.resolve():
        raise TrustlabError(f"compare needs two different audit runs; both are {run_a}")
    (a, _), (b, _) = read_scorecard(run_a), read_scorecard(run_b)
    rows = compare_concerns(a, b, seed=seed)
    label_a, label_b = _label(run_a), _label(run_b)
    folder = RunFolder(out, {"command": "audit compare", "a": str(run_a), "b": str(run_b), "seed": seed}, fresh=True)
    table = [{k: (v.to_dict() if isinstance(v, Concern) else v) for k, v in r.items()} for r in rows]
    write_json(folder.path / "comparison.json", {"a": label_a, "b": label_b, "rows": table})
    folder.write_results({"changes": {r["id"]: r["change"] for r in rows}})
    details = [Section(f"{name}: what to run", table=[{"concern": c.title, "method": c.method, "command": c.fix,
                                                       "note": c.note} for c in concerns], anchor=f"fixes-{name}")
               for name, concerns in (("A", a), ("B", b))]
    return folder.write_report("trustlab audit compare", details, meta={"A": label_a, "B": label_b},
                               lead=comparison_html(rows, label_a, label_b), css=SCORECARD_CSS)
