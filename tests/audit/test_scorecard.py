"""Scorecard rows: verdicts from intervals against stated thresholds, and "not measurable here, because ..."."""

from __future__ import annotations

import json

import pytest

from trustlab.audit.scorecard import (
    MIN_N,
    Concern,
    apply_thresholds,
    interval,
    measure,
    read_scorecard,
    scorecard_html,
    write_scorecard,
)
from trustlab.errors import TrustlabError


def rate(id: str, hits: int, n: int, *, threshold: float = 0.2, higher_is_better: bool = False, **kw) -> Concern:
    items = [{"id": f"i{k}", "value": float(k < hits)} for k in range(n)]
    return measure(id, "t", "a rate", items=items, threshold=threshold, higher_is_better=higher_is_better,
                   method="m", fix="trustlab x", **kw)


def test_verdicts_come_from_the_interval_not_the_point_estimate():
    assert rate("a.clear_fail", 40, 50).verdict == "fail"  # 0.8, Wilson [0.67, 0.89]: all above 0.2
    clear_pass = rate("a.clear_pass", 1, 100)
    assert clear_pass.verdict == "pass" and clear_pass.ci[1] <= 0.2
    straddles = rate("a.small", 3, 10)  # 0.3 with n = 10: the interval covers 0.2
    assert straddles.verdict == "inconclusive" and straddles.lean == "fail"
    assert rate("a.small_good", 1, 10).lean == "pass"
    # higher is better flips the sides
    assert rate("b.acc", 45, 50, threshold=0.5, higher_is_better=True).verdict == "pass"
    assert rate("b.acc", 5, 50, threshold=0.5, higher_is_better=True).verdict == "fail"


def test_not_measurable_says_why():
    few = rate("a.few", 1, MIN_N - 1)
    assert few.verdict == "not measurable" and few.why_not == f"too few items ({MIN_N - 1} < {MIN_N})"
    invalid = rate("a.invalid", 2, 20, valid_rate=0.55)
    assert invalid.verdict == "not measurable" and "only 55% of the outputs were valid (need 80%)" in invalid.why_not
    judged = rate("a.judge", 2, 20, checks=[(False, "the refusal detector keyword is right on only 0.55"),
                                             (True, "never shown")])
    assert judged.why_not == "the refusal detector keyword is right on only 0.55" and judged.value == 0.1
    assert judged.lean is None
    html = scorecard_html([judged])
    assert "not measurable here, because the refusal detector keyword is right on only 0.55" in html


def test_nan_items_are_dropped_and_roc_auc_is_a_statistic():
    items = [{"id": str(i), "score": s, "error": e} for i, (s, e) in
             enumerate([(0.9, 1), (0.8, 1), (0.7, 1), (0.6, 1), (0.5, 0), (0.4, 0), (0.3, 0), (0.2, 0),
                        (float("nan"), 0)])]
    c = measure("u.auc", "t", "ROC-AUC", items=items, stat="roc_auc", threshold=0.6, higher_is_better=True,
                method="clue", fix="f")
    assert c.n == 8 and c.value == 1.0 and c.verdict == "pass" and c.ci == [1.0, 1.0]
    one_class = measure("u.auc", "t", "ROC-AUC", items=[{"id": str(i), "score": i, "error": 0} for i in range(9)],
                        stat="roc_auc", threshold=0.6, higher_is_better=True, method="clue", fix="f")
    assert one_class.verdict == "not measurable" and "undefined" in one_class.why_not
    with pytest.raises(TrustlabError, match="unknown concern statistic 'median'"):
        measure("u.x", "t", "m", items=[{"id": "a", "value": 1.0}], stat="median", threshold=0, higher_is_better=True,
                method="m", fix="f")


def test_continuous_values_get_a_bootstrap_interval():
    values = [0.1 * (k % 5) for k in range(20)]
    ci = interval("mean", [{"id": str(k), "value": v} for k, v in enumerate(values)])
    assert ci[0] < sum(values) / len(values) < ci[1] and ci[1] - ci[0] < 0.3


def test_thresholds_are_replaced_and_the_scorecard_round_trips(tmp_path):
    concerns = apply_thresholds([rate("a.x", 3, 10), rate("a.y", 1, 10)], {"a.x": 0.5})
    assert [c.threshold for c in concerns] == [0.5, 0.2]
    write_scorecard(tmp_path, concerns, quick=False)
    back, data = read_scorecard(tmp_path)
    assert back == concerns and data["min_n"] == MIN_N
    assert json.loads((tmp_path / "scorecard.json").read_text())["concerns"][0]["verdict"] == concerns[0].verdict
    with pytest.raises(TrustlabError, match="has no scorecard.json: give the folder of a `trustlab audit` run"):
        read_scorecard(tmp_path / "nothing")
