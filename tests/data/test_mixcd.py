"""mix-cd (``trustlab.data.mixcd``): bins, the collateral-damage estimator, and the MixCD batch sampler.

Covers: ``assign_bins`` (equal-size quantile bins in loss order, crossed with auxiliary labels) and
``loss_rule``; ``CollateralDamageSampler`` (bin probabilities ``(1 - eps) alpha size / sum + eps / K``
exactly, ``epsilon = 0`` refused, unobserved bins keeping ``alpha0``, a bin at estimate 0 still drawn,
the EMA update and per-bin counts exactly, within-bin passes without replacement, prior-wrong samples
only with ``include_prior_wrong`` and then in their own bin, default bins as quantiles of the candidates);
the estimator against known per-bin damage rates (Spearman >= 0.9, more rehearsal of damaged bins than
random mixing); ``MixCD`` batches (new samples in shuffled passes, old ones offset by ``n_new``, the rank
slices of one global batch, policies none / random / mixcd); the state round trip in process and through a
SIGKILLed process; and the errors on bad input.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.data.dist_worker import VARIANTS, run_steps, synthetic_losses
from tests.data.test_lfr import (
    assert_drawing_ahead_changes_nothing,
    assert_states_equal,
    kill_and_resume,
    reload,
)
from trustlab.data import (
    CollateralDamageSampler,
    MixCD,
    NonFiniteLossError,
    SamplerStateError,
    assign_bins,
    loss_rule,
)
from trustlab.errors import EmptyInputError, TrustlabError


def spearman(a, b) -> float:
    """Spearman rank correlation (the inputs here have no ties)."""
    return float(np.corrcoef(np.argsort(np.argsort(a)), np.argsort(np.argsort(b)))[0, 1])


# --- bins --------------------------------------------------------------------------------------------------


def test_quantile_bins_are_equal_and_ordered():
    loss = np.random.default_rng(0).gamma(2.0, size=100)
    bins = assign_bins(loss, n_bins=10)
    assert np.bincount(bins).tolist() == [10] * 10
    assert all(loss[bins == k].max() < loss[bins == k + 1].min() for k in range(9))
    assert assign_bins([0.4, 0.1, 0.3, 0.2], n_bins=2).tolist() == [1, 0, 1, 0]
    assert assign_bins(np.ones(9), n_bins=3).tolist() == [0, 0, 0, 1, 1, 1, 2, 2, 2]  # ties: by position


@given(loss=st.lists(st.floats(-50, 50, allow_nan=False), min_size=1, max_size=300), n_bins=st.integers(1, 20))
@settings(max_examples=80, deadline=None)
def test_quantile_bins_invariants(loss, n_bins):
    loss = np.array(loss)
    bins = assign_bins(loss, n_bins=n_bins)
    assert bins.min() >= 0 and bins.max() < n_bins
    sizes = np.bincount(bins, minlength=n_bins)
    if len(loss) >= n_bins:
        assert sizes.max() - sizes.min() <= 1
    else:
        assert sizes.max() == 1
    order = np.argsort(loss, kind="stable")
    assert (np.diff(bins[order]) >= 0).all()  # a higher loss never lands in a lower bin


def test_aux_labels_cross_the_quantile_bins():
    loss = np.arange(12.0)
    aux = np.array(["en", "fr", "de"] * 4)
    bins = assign_bins(loss, aux=aux, n_bins=2)
    quantile = assign_bins(loss, n_bins=2)
    pairs = set(zip(aux, quantile))
    assert sorted(set(bins)) == list(range(len(pairs))) == list(range(6))
    for b in set(bins):  # one bin = one (label, quantile) pair and the reverse
        assert len({(a, q) for a, q, x in zip(aux, quantile, bins) if x == b}) == 1
    assert len({(a, q, x) for a, q, x in zip(aux, quantile, bins)}) == 6


def test_bin_errors():
    with pytest.raises(EmptyInputError):
        assign_bins([])
    with pytest.raises(TrustlabError, match="NaN"):
        assign_bins([1.0, float("nan")])
    with pytest.raises(TrustlabError, match="n_bins"):
        assign_bins([1.0, 2.0], n_bins=0)
    with pytest.raises(TrustlabError, match="3 aux labels for 2"):
        assign_bins([1.0, 2.0], aux=[0, 1, 2])


def test_loss_rule():
    correct = loss_rule([1.0, 2.0, 3.0], delta=0.5)
    assert correct(np.array([0, 1, 2]), np.array([1.5, 2.6, 2.0])).tolist() == [True, False, True]  # 1.5: at the edge
    assert correct(np.array([2, 2]), np.array([3.4, 3.6])).tolist() == [True, False]
    assert loss_rule([1.0])(np.array([0]), np.array([1.05])).tolist() == [True]  # default delta 0.1


# --- the estimator -----------------------------------------------------------------------------------------


def sized_bins(*sizes: int) -> np.ndarray:
    return np.concatenate([np.full(s, k) for k, s in enumerate(sizes)])


def test_probabilities_follow_the_formula_exactly():
    bins = sized_bins(10, 20, 30, 40)
    s = CollateralDamageSampler(np.zeros(100), bins=bins, epsilon=0.2)
    s.alphas = np.array([0.1, 0.2, 0.0, 0.4])
    expected = np.array([1.0, 4.0, 0.0, 16.0])  # alpha * size
    assert np.allclose(s.probabilities(), 0.8 * expected / 21 + 0.2 / 4, rtol=0, atol=1e-15)
    # an empty bin gets nothing; the uniform part spreads over the three non-empty ones
    holes = np.r_[np.zeros(10, int), np.ones(20, int), np.full(30, 3)]
    s = CollateralDamageSampler(np.zeros(60), bins=holes, epsilon=0.1)
    assert s.sizes.tolist() == [10, 20, 0, 30]
    p = s.probabilities()
    assert p[2] == 0.0 and np.allclose(p, 0.9 * np.array([10, 20, 0, 30]) / 60 + 0.1 * np.array([1, 1, 0, 1]) / 3)
    assert not (s.bins[s.sample(200, step=3)] == 2).any()


def test_epsilon_must_be_positive():
    for eps in (0.0, -0.1, 1.5):
        with pytest.raises(TrustlabError, match="epsilon"):
            CollateralDamageSampler(np.zeros(10), epsilon=eps)
    for gamma in (0.0, 1.2):
        with pytest.raises(TrustlabError, match="gamma"):
            CollateralDamageSampler(np.zeros(10), gamma=gamma)


def test_unobserved_bins_keep_their_prior_and_a_zero_bin_is_still_drawn():
    bins = sized_bins(10, 10, 10, 10)
    s = CollateralDamageSampler(np.zeros(40), bins=bins, gamma=1.0, epsilon=0.1, alpha0=0.3)
    s.observe(np.arange(10), np.ones(10, bool))  # all of bin 0 still right: its estimate drops to 0
    assert s.alphas.tolist() == [0.0, 0.3, 0.3, 0.3]
    assert s.counts.tolist() == [10, 0, 0, 0]
    assert s.probabilities()[0] == pytest.approx(0.1 / 4, abs=1e-15)
    drawn = np.concatenate([s.sample(100, step) for step in range(20)])
    from_zero = int((bins[drawn] == 0).sum())
    assert 20 <= from_zero <= 85  # 2000 * 0.025 = 50 expected
    # every estimate at 0: uniform over the bins
    for k in range(1, 4):
        s.observe(np.flatnonzero(bins == k), np.ones(10, bool))
    assert s.alphas.tolist() == [0.0] * 4 and np.allclose(s.probabilities(), 0.25)


def test_ema_update_and_counts_are_exact():
    bins = sized_bins(4, 4, 4)
    s = CollateralDamageSampler(np.zeros(12), bins=bins, gamma=0.2, alpha0=0.5)
    s.observe([0, 1, 2, 3, 4, 5], [True, False, True, True, False, False])
    a0, a1 = (1 - 0.2) * 0.5 + 0.2 * (1 / 4), (1 - 0.2) * 0.5 + 0.2 * (2 / 2)
    assert s.alphas.tolist() == [a0, a1, 0.5]
    assert s.counts.tolist() == [4, 2, 0] and s.damaged.tolist() == [1, 2, 0]
    s.observe([8, 9, 0], [False, True, False])
    assert s.alphas.tolist() == [(1 - 0.2) * a0 + 0.2 * 1.0, a1, (1 - 0.2) * 0.5 + 0.2 * 0.5]
    assert s.counts.tolist() == [5, 2, 2] and s.damaged.tolist() == [2, 2, 1]
    s.observe([], [])  # nothing seen, nothing changes
    assert s.counts.tolist() == [5, 2, 2]
    with pytest.raises(TrustlabError, match="2 indices but 3"):
        s.observe([0, 1], [True, True, False])


def test_within_bin_draws_are_passes_without_replacement():
    bins = sized_bins(5, 7, 9)
    s = CollateralDamageSampler(np.zeros(21), bins=bins, seed=3)
    drawn = np.concatenate([s.sample(4, step) for step in range(60)])
    assert s.draws.sum() == 240
    for k, size in enumerate((5, 7, 9)):
        seq = drawn[bins[drawn] == k]
        members = np.flatnonzero(bins == k).tolist()
        passes = [seq[i:i + size] for i in range(0, len(seq) - size + 1, size)]
        assert len(passes) >= 3
        assert all(sorted(p) == members for p in passes)
        assert len({tuple(p) for p in passes}) > 1  # each pass reshuffled


def test_prior_wrong_samples_need_include_prior_wrong():
    loss = np.random.default_rng(2).gamma(2.0, size=100)
    right = loss < np.quantile(loss, 0.7)  # the original model got the 30 hardest wrong
    s = CollateralDamageSampler(loss, right, n_bins=10, seed=1)
    assert s.sizes.tolist() == [7] * 10  # default bins: quantiles of the 70 candidates
    drawn = np.concatenate([s.sample(20, step) for step in range(50)])
    assert right[drawn].all()
    s = CollateralDamageSampler(loss, right, n_bins=10, include_prior_wrong=True, seed=1)
    assert s.n_bins == 11 and s.sizes.tolist() == [7] * 10 + [30]
    assert (s.bins[~right] == 10).all() and (s.bins[right] < 10).all()
    drawn = np.concatenate([s.sample(20, step) for step in range(50)])
    assert (~right[drawn]).sum() > 0
    wrong = np.flatnonzero(~right)[:3]
    s.observe(wrong, [False, False, False])  # wrong now and before: not damage
    assert s.alphas[10] == pytest.approx(0.45) and s.damaged[10] == 0
    with pytest.raises(EmptyInputError, match="include_prior_wrong"):
        CollateralDamageSampler(loss, np.zeros(100, bool))
    with pytest.raises(TrustlabError, match="99 prior-correctness flags"):
        CollateralDamageSampler(loss, right[:99])
    with pytest.raises(TrustlabError, match="99 bin ids"):
        CollateralDamageSampler(loss, bins=np.zeros(99, int))
    with pytest.raises(EmptyInputError):
        CollateralDamageSampler([])


def test_estimator_tracks_known_damage_rates():
    rates = np.arange(10) / 10
    prior = np.random.default_rng(0).gamma(2.0, size=1000)
    bins = assign_bins(prior, n_bins=10)
    top_share, rho = {}, {}
    for policy in ("random", "mixcd"):
        rng = np.random.default_rng(100)

        def damaged_at_rate(idx, loss, rng=rng):  # still right unless this bin's damage strikes
            return rng.random(len(idx)) >= rates[bins[idx]]

        s = MixCD(64, prior, 150, 8, 32, policy, bins=bins, correct_fn=damaged_at_rate, seed=0)
        run_steps(s)
        per_bin = np.bincount(bins, weights=s.rehearsed, minlength=10)
        assert per_bin.sum() == 150 * 32 == s.estimator.counts.sum()
        top_share[policy] = per_bin[5:].sum() / per_bin.sum()
        rho[policy] = spearman(s.estimator.alphas, rates)
    assert rho["mixcd"] >= 0.9 and rho["random"] >= 0.9
    assert top_share["mixcd"] >= 0.65 and 0.45 <= top_share["random"] <= 0.55  # mixcd: 0.75 expected


# --- MixCD batches -----------------------------------------------------------------------------------------


def test_batches_hold_new_then_offset_old_samples():
    s = MixCD(20, np.linspace(1, 3, 50), 10, 4, 3, "mixcd", seed=1)
    assert s.step_size == 7 and len(s) == 70 and s.num_batches() == 10
    batches = np.array(run_steps(s))
    new, old = batches[:, :4].reshape(-1), batches[:, 4:].reshape(-1)
    assert ((new >= 0) & (new < 20)).all() and ((old >= 20) & (old < 70)).all()
    assert sorted(new[:20]) == sorted(new[20:]) == list(range(20)) and not np.array_equal(new[:20], new[20:])
    assert s.rehearsed.sum() == 30 and s.estimator.counts.sum() == 30
    assert np.array_equal(np.bincount(old - 20, minlength=50), s.rehearsed)


@pytest.mark.parametrize("policy", ["none", "random", "mixcd"])
def test_rank_slices_of_one_global_batch(policy):
    rehearsal = 0 if policy == "none" else 3
    prior = np.linspace(1, 3, 40)
    ranks = [MixCD(24, prior, 9, 4, rehearsal, policy, seed=5, rank=r, world_size=2) for r in (0, 1)]
    single = MixCD(24, prior, 9, 8, 2 * rehearsal, policy, seed=5)
    for step in range(9):
        local = [next(s.batches()) for s in ranks]
        whole = next(single.batches())
        assert local[0] == whole[:4] + whole[8:8 + rehearsal] and local[1] == whole[4:8] + whole[8 + rehearsal:]
        assert set(local[0][:4]).isdisjoint(local[1][:4])  # 24 new samples = 3 whole steps per pass
        feedback = local[0] + local[1]  # what all-gathering gives each rank
        for s in ranks:
            s.update(feedback, synthetic_losses(feedback, step))
        single.update(whole, synthetic_losses(whole, step))
    assert_states_equal(ranks[0].state_dict(), ranks[1].state_dict() | {"identity": ranks[0].state_dict()["identity"]})
    assert np.array_equal(ranks[0].rehearsed, single.rehearsed)
    if policy != "none":
        assert np.array_equal(ranks[0].estimator.alphas, single.estimator.alphas)
        assert np.array_equal(ranks[1].estimator.counts, single.estimator.counts)


def test_policy_none_rehearses_nothing():
    for prior in ([], np.linspace(1, 2, 30)):
        s = MixCD(12, prior, 6, 4, 5, "none", seed=0)
        assert s.rehearsal == 0 and s.estimator is None and s.step_size == 4
        batches = run_steps(s)
        assert all(len(b) == 4 and max(b) < 12 for b in batches)
        assert sorted(sum(batches[:3], [])) == list(range(12))
        assert s.rehearsed.sum() == 0 and s.state_dict()["estimator"] is None


def test_policy_random_is_uniform_over_the_candidates():
    prior = np.random.default_rng(3).gamma(2.0, size=40)
    right = np.arange(40) % 4 != 0  # 30 candidates
    s = MixCD(10, prior, 300, 2, 10, "random", prior_correct=right, seed=4)
    batches = run_steps(s)
    old = np.array([b[2:] for b in batches]) - 10  # (300, 10)
    assert all(len(set(row)) == 10 for row in old)  # without replacement within a step
    assert right[old].all()
    counts = np.bincount(old.reshape(-1), minlength=40)[right]
    chi2 = ((counts - 100) ** 2 / 100).sum()
    assert chi2 < 60  # 29 degrees of freedom: 99.9% quantile 58.3


# --- resuming ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("variant", ["mixcd", "random", "none"])
@pytest.mark.parametrize("cut", [1, 9, 19])
def test_state_round_trip_continues_the_same_order(variant, cut):
    whole = VARIANTS[variant]()
    reference = run_steps(whole)
    first = VARIANTS[variant]()
    head = run_steps(first, cut)
    second = VARIANTS[variant]()
    second.load_state_dict(reload(first.state_dict()))
    assert head + run_steps(second) == reference
    assert_states_equal(second.state_dict(), whole.state_dict())
    if variant == "mixcd":
        assert whole.estimator.damaged.sum() > 0 and np.array_equal(second.estimator.alphas, whole.estimator.alphas)


@pytest.mark.parametrize("variant", ["mixcd", "random", "none"])
def test_drawing_ahead_changes_nothing(variant):
    assert_drawing_ahead_changes_nothing(variant)


@pytest.mark.parametrize(("variant", "kill_at"), [("mixcd", 8), ("random", 13)])
def test_sigkilled_process_resumes_with_the_same_order(tmp_path, variant, kill_at):
    kill_and_resume(tmp_path, variant, kill_at)


# --- bad input ---------------------------------------------------------------------------------------------


def test_bad_construction():
    prior = np.linspace(1, 2, 20)
    with pytest.raises(EmptyInputError, match="new-task"):
        MixCD(0, prior, 5, 4, 2)
    for policy in ("random", "mixcd"):
        with pytest.raises(EmptyInputError, match="old samples"):
            MixCD(10, [], 5, 4, 2, policy)
        with pytest.raises(TrustlabError, match="positive rehearsal budget"):
            MixCD(10, prior, 5, 4, 0, policy)
        with pytest.raises(TrustlabError, match="positive rehearsal budget"):
            MixCD(10, prior, 5, 4, -2, policy)
    for bad in (float("nan"), float("inf")):
        with pytest.raises(NonFiniteLossError, match="original-model losses"):
            MixCD(10, [1.0, bad, 2.0], 5, 4, 2)
    with pytest.raises(TrustlabError, match="rehearsal policy 'greedy'"):
        MixCD(10, prior, 5, 4, 2, "greedy")
    with pytest.raises(EmptyInputError, match="include_prior_wrong"):
        MixCD(10, prior, 5, 4, 2, prior_correct=np.zeros(20, bool))


@pytest.mark.parametrize(("source", "target", "match"), [
    ("mixcd", "random", "policy"),
    ("random", "mixcd", "policy"),
    ("none", "mixcd", "policy"),
])
def test_state_of_another_policy_is_refused(source, target, match):
    s = VARIANTS[source]()
    run_steps(s, 4)
    t = VARIANTS[target]()
    with pytest.raises(SamplerStateError, match=match):
        t.load_state_dict(reload(s.state_dict()))
    assert t.step == 0


def test_state_of_another_split_or_dataset_is_refused():
    prior = np.linspace(1, 2, 60)
    s = MixCD(14, prior, 20, 4, 3, fingerprint="d")
    run_steps(s, 3)
    with pytest.raises(SamplerStateError, match="n_new"):  # same 74 items, split differently
        MixCD(15, prior[1:], 20, 4, 3, fingerprint="d").load_state_dict(s.state_dict())
    with pytest.raises(SamplerStateError, match="another dataset"):
        MixCD(14, prior, 20, 4, 3, fingerprint="e").load_state_dict(s.state_dict())
    with pytest.raises(SamplerStateError, match="rehearsal"):
        MixCD(14, prior, 20, 4, 2, fingerprint="d").load_state_dict(s.state_dict())
    with pytest.raises(SamplerStateError, match="other bins"):  # same sizes, other old data
        MixCD(14, prior[::-1], 20, 4, 3, fingerprint="d").load_state_dict(s.state_dict())
    estimator = CollateralDamageSampler(prior, n_bins=4)
    with pytest.raises(SamplerStateError, match="other bins"):
        estimator.load_state_dict(s.estimator.state_dict())


def test_non_finite_feedback_changes_nothing():
    s = VARIANTS["mixcd"]()
    run_steps(s, 3)
    before = s.state_dict()
    batch = next(s.batches())
    losses = synthetic_losses(batch, s.step)
    losses[-1] = float("nan")  # an old sample's loss
    with pytest.raises(NonFiniteLossError):
        s.update(batch, losses)
    with pytest.raises(TrustlabError, match="outside the dataset of 74"):
        s.update([0, 74], [1.0, 1.0])
    assert_states_equal(s.state_dict(), before)
