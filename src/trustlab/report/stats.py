"""95% intervals for claims: ours minus baseline, by bootstrap over items or in closed form.

Every claim in ``summary.json`` carries ``ci``, the interval of ``ours - baseline``. Use the paired forms
when both arms were measured on the same items (the usual case: same prompts, same probes), the unpaired
ones when the arms saw different items.

Example:
    >>> from trustlab.report.stats import bootstrap_diff_ci, proportion_diff_ci
    >>> bootstrap_diff_ci([1, 1, 0, 1, 1, 0], [0, 1, 0, 0, 1, 0])      # paired per-item scores
    [0.0, 0.6666666666666667]
    >>> proportion_diff_ci(30, 50, 20, 50)                              # unpaired rates
    [0.004575, 0.375244]
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import numpy as np

LEVEL = 0.95


def _quantiles(values: list[float], level: float) -> list[float] | None:
    finite = [v for v in values if math.isfinite(v)]
    if not finite:
        return None
    tail = (1 - level) / 2
    return [float(np.quantile(finite, tail)), float(np.quantile(finite, 1 - tail))]


def bootstrap_diff_ci(ours: Sequence[float], baseline: Sequence[float], *,
                      stat: Callable[[np.ndarray], float] = np.mean, paired: bool = True, n_boot: int = 2000,
                      seed: int = 0, level: float = LEVEL) -> list[float] | None:
    """Percentile bootstrap interval of ``stat(ours) - stat(baseline)``.

    Args:
        ours: per-item values of our arm (e.g. 1/0 correct).
        baseline: per-item values of the baseline arm; same items in the same order when ``paired``.
        stat: the statistic of each arm (default: the mean).
        paired: resample items jointly (same index in both arms) instead of each arm on its own.
        n_boot: bootstrap resamples.
        seed: random seed (the interval is deterministic given it).
        level: coverage (default 0.95).

    Returns:
        ``[lo, hi]``, or None when an arm is empty.

    Raises:
        ValueError: ``paired`` with arms of different lengths.
    """
    a, b = np.asarray(ours, dtype=float), np.asarray(baseline, dtype=float)
    if paired and len(a) != len(b):
        raise ValueError(f"paired bootstrap needs arms of equal length, got {len(a)} and {len(b)}")
    if len(a) == 0 or len(b) == 0:
        return None
    rng = np.random.default_rng(seed)
    diffs = []
    for _ in range(n_boot):
        ia = rng.integers(0, len(a), len(a))
        ib = ia if paired else rng.integers(0, len(b), len(b))
        diffs.append(float(stat(a[ia]) - stat(b[ib])))
    return _quantiles(diffs, level)


def bootstrap_metric_ci(metric: Callable[[np.ndarray, np.ndarray], float], scores: Sequence[float],
                        labels: Sequence[float], *, n_boot: int = 2000, seed: int = 0,
                        level: float = LEVEL) -> list[float] | None:
    """Percentile bootstrap interval of ``metric(scores, labels)`` (e.g. ROC-AUC) over items.

    Resamples on which the metric is undefined (one class only) are dropped; None when none is left.

    Example:
        >>> from trustlab.uncertainty import roc_auc
        >>> bootstrap_metric_ci(roc_auc, [0.9, 0.1, 0.5, 0.7], [1, 0, 0, 1])   # a perfect scorer
        [1.0, 1.0]
    """
    s, y = np.asarray(scores, dtype=float), np.asarray(labels, dtype=float)
    if len(s) != len(y):
        raise ValueError(f"scores and labels differ in length: {len(s)}, {len(y)}")
    if len(y) == 0:
        return None
    rng = np.random.default_rng(seed)
    values = []
    for _ in range(n_boot):
        idx = rng.integers(0, len(y), len(y))
        values.append(float(metric(s[idx], y[idx])))
    return _quantiles(values, level)


def bootstrap_metric_diff_ci(metric: Callable[[np.ndarray, np.ndarray], float], ours_scores: Sequence[float],
                             base_scores: Sequence[float], labels: Sequence[float], *, n_boot: int = 2000,
                             seed: int = 0, level: float = LEVEL) -> list[float] | None:
    """Paired bootstrap interval of ``metric(ours_scores, labels) - metric(base_scores, labels)``.

    For metrics of a whole sample such as ROC-AUC: items are resampled jointly, resamples on which the
    metric is undefined (one class only) are dropped.

    Example:
        >>> from trustlab.uncertainty import roc_auc
        >>> bootstrap_metric_diff_ci(roc_auc, [0.9, 0.2, 0.8, 0.1], [0.5, 0.6, 0.4, 0.3], [1, 0, 1, 0])
        [0.0, 1.0]
    """
    s1, s2, y = (np.asarray(x, dtype=float) for x in (ours_scores, base_scores, labels))
    if not len(s1) == len(s2) == len(y):
        raise ValueError(f"scores and labels differ in length: {len(s1)}, {len(s2)}, {len(y)}")
    if len(y) == 0:
        return None
    rng = np.random.default_rng(seed)
    diffs = []
    for _ in range(n_boot):
        idx = rng.integers(0, len(y), len(y))
        diffs.append(float(metric(s1[idx], y[idx]) - metric(s2[idx], y[idx])))
    return _quantiles(diffs, level)


def _z(level: float) -> float:
    from statistics import NormalDist

    return NormalDist().inv_cdf(1 - (1 - level) / 2)


def wilson_ci(k: int, n: int, level: float = LEVEL) -> list[float] | None:
    """Wilson score interval of a proportion ``k / n`` (None when ``n == 0``)."""
    if n <= 0:
        return None
    if not 0 <= k <= n:
        raise ValueError(f"need 0 <= k <= n, got k={k}, n={n}")
    z = _z(level)
    p = k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return [max(0.0, round(centre - half, 6)), min(1.0, round(centre + half, 6))]


def proportion_diff_ci(k1: int, n1: int, k2: int, n2: int, level: float = LEVEL) -> list[float] | None:
    """Newcombe's hybrid score interval of ``k1/n1 - k2/n2`` for two independent proportions."""
    w1, w2 = wilson_ci(k1, n1, level), wilson_ci(k2, n2, level)
    if w1 is None or w2 is None:
        return None
    p1, p2 = k1 / n1, k2 / n2
    lo = p1 - p2 - math.sqrt((p1 - w1[0]) ** 2 + (w2[1] - p2) ** 2)
    hi = p1 - p2 + math.sqrt((w1[1] - p1) ** 2 + (p2 - w2[0]) ** 2)
    return [round(lo, 6), round(hi, 6)]


def excludes_zero(ci: Sequence[float] | None) -> bool:
    """Whether an interval lies entirely on one side of zero."""
    return ci is not None and (ci[0] > 0 or ci[1] < 0)
