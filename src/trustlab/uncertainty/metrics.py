"""Uncertainty-estimation metrics with LM-Polygraph's definitions: ROC-AUC and PRR, plus bootstrap CIs.

Convention: higher uncertainty = more likely wrong. ``errors`` are 1 for wrong / hallucinated items.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np


def roc_auc(uncertainty: Sequence[float], errors: Sequence[int]) -> float:
    """Probability that a random wrong item gets a higher uncertainty than a random right one (ties 1/2).

    Returns NaN when only one class is present.

    Example:
        >>> roc_auc([0.9, 0.1, 0.5], [1, 0, 0])
        1.0
    """
    u = np.asarray(uncertainty, dtype=float)
    e = np.asarray(errors, dtype=int)
    pos, neg = u[e == 1], u[e == 0]
    if len(pos) == 0 or len(neg) == 0:
        return float("nan")
    greater = (pos[:, None] > neg[None, :]).sum()
    ties = (pos[:, None] == neg[None, :]).sum()
    return float((greater + 0.5 * ties) / (len(pos) * len(neg)))


def _rejection_auc(order: np.ndarray, quality: np.ndarray) -> float:
    """Mean quality of the kept items, averaged over rejection rates 0, 1/n, ..., (n-1)/n."""
    q = quality[order]  # most confident first
    kept_mean = np.cumsum(q) / np.arange(1, len(q) + 1)  # keeping the k most confident
    return float(kept_mean[::-1].mean())


def prr(uncertainty: Sequence[float], quality: Sequence[float]) -> float:
    """Prediction rejection ratio: (AUC_unc - AUC_random) / (AUC_oracle - AUC_random) of the
    quality-vs-rejection curve. 1 = oracle ordering, 0 = random, < 0 = worse than random.

    Args:
        uncertainty: higher = less trusted (rejected first).
        quality: per-item quality, e.g. 1 for correct and 0 for wrong.

    Example:
        >>> prr([0.9, 0.1, 0.5], [0, 1, 1])
        1.0
    """
    u = np.asarray(uncertainty, dtype=float)
    q = np.asarray(quality, dtype=float)
    ours = _rejection_auc(np.argsort(u, kind="stable"), q)
    oracle = _rejection_auc(np.argsort(-q, kind="stable"), q)
    random = float(q.mean())
    if oracle - random <= 1e-12:
        return float("nan")
    return (ours - random) / (oracle - random)


def bootstrap_ci(metric: Callable[[np.ndarray, np.ndarray], float], scores: Sequence[float],
                 labels: Sequence[float], *, n_boot: int = 1000, alpha: float = 0.05,
                 seed: int = 0) -> tuple[float, float]:
    """Percentile bootstrap CI of ``metric(scores, labels)`` over items (resampled with replacement).

    Example:
        >>> bootstrap_ci(roc_auc, [0.9, 0.1, 0.5, 0.7], [1, 0, 0, 1])
    """
    from trustlab.report.stats import bootstrap_metric_ci

    ci = bootstrap_metric_ci(metric, scores, labels, n_boot=n_boot, seed=seed, level=1 - alpha)
    return (ci[0], ci[1]) if ci else (float("nan"), float("nan"))
