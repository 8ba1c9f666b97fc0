"""Intervals behind every claim, and the checks that tell model output from data."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from trustlab.report.stats import (
    bootstrap_diff_ci,
    bootstrap_metric_ci,
    bootstrap_metric_diff_ci,
    excludes_zero,
    proportion_diff_ci,
    wilson_ci,
)
from trustlab.uncertainty import roc_auc
from trustlab.validity import ValidityCounter, copies_example, echoes_source, is_fragment


def test_paired_bootstrap_covers_the_true_difference_and_excludes_zero_at_a_large_effect():
    rng = np.random.default_rng(1)
    base = rng.random(200) < 0.4
    ours = base | (rng.random(200) < 0.4)  # ours fixes ~40% of the baseline's misses
    ci = bootstrap_diff_ci(ours.astype(float), base.astype(float))
    diff = ours.mean() - base.mean()
    assert ci[0] < diff < ci[1] and excludes_zero(ci) and ci[0] > 0


def test_no_effect_gives_an_interval_around_zero():
    rng = np.random.default_rng(2)
    a = (rng.random(100) < 0.5).astype(float)
    ci = bootstrap_diff_ci(a, a.copy())
    assert ci == [0.0, 0.0]
    b = (rng.random(100) < 0.5).astype(float)
    wide = bootstrap_diff_ci(a, b, paired=False)
    assert wide[0] < 0 < wide[1] and not excludes_zero(wide)


def test_paired_arms_must_match_and_empty_arms_give_none():
    with pytest.raises(ValueError, match="equal length"):
        bootstrap_diff_ci([1, 0], [1])
    assert bootstrap_diff_ci([], []) is None and wilson_ci(0, 0) is None


def test_metric_difference_of_a_perfect_and_a_random_scorer():
    rng = np.random.default_rng(3)
    y = np.array([0, 1] * 30)
    perfect = y + 0.1 * rng.random(60)
    noise = rng.random(60)
    ci = bootstrap_metric_diff_ci(roc_auc, perfect, noise, y)
    assert ci[0] > 0.2 and ci[1] <= 1.0


def test_wilson_and_newcombe_against_published_values():
    # Newcombe (1998), Stat Med 17:873, Table II example (56/70 vs 48/80): 0.0524 to 0.3339
    assert proportion_diff_ci(56, 70, 48, 80) == pytest.approx([0.0524, 0.3339], abs=1e-4)
    lo, hi = wilson_ci(0, 10)
    assert lo == 0.0 and hi == pytest.approx(0.2775, abs=1e-4)


@given(st.integers(0, 60), st.integers(1, 60))
@settings(max_examples=200, deadline=None)
def test_wilson_interval_contains_the_estimate(k, n):
    k = min(k, n)
    lo, hi = wilson_ci(k, n)
    assert 0.0 <= lo <= k / n <= hi <= 1.0


def test_validity_checks():
    examples = ["origins", "evolution", "modern era", "legendary athletes"]
    assert copies_example("Modern Era.", examples)
    assert not copies_example("Tokyo", examples)
    assert not copies_example("origins", examples, unless_in="The origins of the universe are unknown.")
    worked = "Response: Paris is the capital of France, a city of art. Request: [[What is the capital of France?]]"
    assert echoes_source("Paris is the capital of France, a city", worked)
    assert not echoes_source("How do I bake a loaf of bread at home?", worked)
    assert not echoes_source("Paris is the capital of France, a city", worked,
                             unless_in="Tell me why Paris is the capital of France, a city of lights")
    assert is_fragment('"') and is_fragment("10") and not is_fragment("bake bread")
    c = ValidityCounter()
    c.valid(3)
    c.invalid("copy")
    c.invalid("empty", 2)
    assert c.rate == 0.5 and c.to_dict()["invalid_reasons"] == {"copy": 1, "empty": 2}
    assert ValidityCounter().rate is None


def test_single_metric_interval_is_the_old_uncertainty_bootstrap_and_the_chance_shift():
    from trustlab.uncertainty import bootstrap_ci

    rng = np.random.default_rng(5)
    s, y = rng.random(60), np.array([1, 0] * 30)
    ci = bootstrap_metric_ci(roc_auc, s, y, n_boot=1000)
    assert bootstrap_ci(roc_auc, s, y) == pytest.approx(tuple(ci), abs=1e-12)
    shifted = bootstrap_metric_diff_ci(roc_auc, s, np.zeros(60), y)  # AUROC of tied scores is 0.5
    assert shifted == pytest.approx([ci2 - 0.5 for ci2 in bootstrap_metric_ci(roc_auc, s, y)], abs=1e-12)
    assert bootstrap_metric_ci(roc_auc, [], []) is None
