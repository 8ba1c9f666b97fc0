"""LFRSampler (``trustlab.data.lfr``): the Learn / Focus / Review schedule from recorded block losses.

Covers: phase lengths (shares rounded so they add up exactly, step counts as given) and the steps where
phases switch; Learn and Review passes without replacement; the first Focus set (exactly
``ceil(keep * n)`` highest-loss blocks plus the forgotten ones, unseen blocks kept, per cluster with
``clusters``, stalled blocks logged and dropped by ``exclude_stalled``); perplexity-weighted Focus draws;
the state round trip through ``torch.save`` / ``torch.load(weights_only=True)`` and through a process that
is SIGKILLed mid-run and resumed in a new one (the same block order as an uninterrupted run); and the
errors on bad input (empty data, foreign states, non-finite losses, bad feedback, bad schedules).
"""

from __future__ import annotations

import io
import json
import math
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from tests.data.dist_worker import VARIANTS, run_steps, synthetic_losses
from trustlab.data import DEFAULT_SCHEDULE, LFRSampler, MixCD, NonFiniteLossError, Phase, SamplerStateError
from trustlab.data.lfr import parse_schedule, phase_steps
from trustlab.errors import EmptyInputError, TrustlabError


def feed(sampler: LFRSampler, loss_of) -> list[int]:
    """Draw the next batch and feed back ``loss_of(block)`` for each block; the batch."""
    batch = next(sampler.batches())
    sampler.update(batch, [loss_of(i) for i in batch])
    return batch


def assert_states_equal(a, b) -> None:
    """Two (nested) sampler states are equal, tensors element for element."""
    assert type(a) is type(b) or (isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)))
    if isinstance(a, dict):
        assert a.keys() == b.keys()
        for key in a:
            assert_states_equal(a[key], b[key])
    elif isinstance(a, torch.Tensor):
        assert a.dtype == b.dtype and torch.equal(a, b)
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b)
        for x, y in zip(a, b):
            assert_states_equal(x, y)
    else:
        assert a == b


def reload(state: dict) -> dict:
    buf = io.BytesIO()
    torch.save(state, buf)
    buf.seek(0)
    return torch.load(buf, weights_only=True)


# --- the schedule ----------------------------------------------------------------------------------------


@given(total=st.integers(5, 5000), cut=st.lists(st.integers(1, 100), min_size=1, max_size=6))
@settings(max_examples=60, deadline=None)
def test_share_lengths_add_up_exactly(total, cut):
    shares = [c / sum(cut) for c in cut]
    assume(min(shares) * total >= 1.5)  # then every phase gets a step (fewer: test_bad_schedules)
    counts = phase_steps([Phase("learn", s) for s in shares], total)
    assert sum(counts) == total and min(counts) >= 1
    assert all(abs(c - s * total) <= 1 for c, s in zip(counts, shares))


def test_default_and_step_count_lengths():
    assert phase_steps(DEFAULT_SCHEDULE, 100) == [25, 25, 15, 20, 15]
    assert sum(phase_steps(DEFAULT_SCHEDULE, 37)) == 37
    assert phase_steps([Phase("learn", 3), Phase("focus", 5, 0.5), Phase("review", 2)], 10) == [3, 5, 2]


def test_phases_switch_at_the_right_steps():
    schedule = [Phase("learn", 3), Phase("focus", 4, 0.5), Phase("review", 2), Phase("focus", 1, 0.25)]
    s = LFRSampler(16, 10, 4, schedule, seed=0)
    kinds = []
    for _ in range(10):
        kinds.append((s.phase_index(), s.phase.kind))
        feed(s, lambda i: 1.0 + i / 16)
    assert kinds == [(0, "learn")] * 3 + [(1, "focus")] * 4 + [(2, "review")] * 2 + [(3, "focus")]
    assert [(e["kind"], e["step"], e["phase"]) for e in s.events] == [
        ("learn", 0, 0), ("focus", 3, 1), ("review", 7, 2), ("focus", 9, 3)]
    assert s.step == 10 and s.num_batches() == 0 and list(s.batches()) == []


def test_learn_passes_are_permutations():
    s = LFRSampler(24, 12, 4, [Phase("learn", 12)], seed=7)
    drawn = np.array(run_steps(s)).reshape(-1)
    first, second = drawn[:24], drawn[24:]
    assert sorted(first) == sorted(second) == list(range(24))  # each pass: every block once
    assert not np.array_equal(first, second)  # a fresh shuffle per pass
    assert not np.array_equal(first, np.arange(24))
    # a pass that ends inside a batch: the positions still run through one permutation per pass
    s = LFRSampler(10, 5, 4, [Phase("learn", 5)], seed=7)
    drawn = np.array(run_steps(s)).reshape(-1)
    assert sorted(drawn[:10]) == sorted(drawn[10:20]) == list(range(10))
    # the same seed gives the same order; another seed another one
    assert run_steps(LFRSampler(24, 12, 4, [Phase("learn", 12)], seed=7)) == run_steps(
        LFRSampler(24, 12, 4, [Phase("learn", 12)], seed=7))
    assert run_steps(LFRSampler(24, 12, 4, [Phase("learn", 12)], seed=8)) != run_steps(
        LFRSampler(24, 12, 4, [Phase("learn", 12)], seed=7))


# --- the Focus set -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(("n", "keep"), [(40, 0.23), (100, 0.07), (10, 0.5), (7, 0.01), (50, 1.0), (30, 0.3)])
def test_first_focus_keeps_the_hardest_ceil_share(n, keep):
    s = LFRSampler(n, 2, n, [Phase("learn", 1), Phase("focus", 1, keep)], seed=1)
    loss = np.random.default_rng(n).permutation(n) / n + 1.0  # distinct losses
    feed(s, lambda i: loss[i])
    k = -(-round(keep * 100) * n // 100)  # exact ceil(keep * n) in integers
    assert sorted(s.active_indices()) == sorted(np.argsort(-loss)[:k])
    assert s.active_fraction == k / n
    assert set(feed(s, lambda i: loss[i])) <= set(s.active_indices())
    assert s.events[1]["active"] == k and s.events[1]["dropped"] == n - k


def test_first_focus_adds_the_forgotten_blocks():
    n, forgotten = 40, [1, 5, 7]
    schedule = [Phase("learn", 10), Phase("focus", 5, 0.23), Phase("review", 5)]
    s = LFRSampler(n, 20, 8, schedule, seed=2)  # Learn: 10 steps of 8 = two passes over 40 blocks
    base = 1.0 + np.arange(n) / 10  # block 39 the hardest
    for _ in range(5):
        feed(s, lambda i: base[i])
    for _ in range(5):  # second pass: every loss drops a little, except the forgotten ones, which rise
        feed(s, lambda i: base[i] + (0.05 if i in forgotten else -0.01))
    assert sorted(np.flatnonzero(s.forgotten())) == forgotten
    hardest = list(range(30, 40))  # ceil(0.23 * 40) = 10
    assert sorted(s.active_indices()) == sorted(hardest + forgotten)
    event = s.events[1]
    assert (event["kind"], event["active"], event["forgotten_kept"], event["dropped"]) == ("focus", 13, 3, 27)
    focus_draws = [feed(s, lambda i: base[i]) for _ in range(5)]  # 40 draws over 13 blocks
    assert set(np.concatenate(focus_draws)) == set(hardest + forgotten)
    # Review re-admits every block and passes over all of them
    assert s.phase.kind == "review" and s.active_fraction == 1.0
    assert s.events[2]["readmitted"] == 27 and s.events[2]["active"] == 40
    review = np.concatenate([feed(s, lambda i: base[i]) for _ in range(5)])
    assert sorted(review) == list(range(40))


def test_unseen_blocks_rank_hardest():
    s = LFRSampler(40, 6, 4, [Phase("learn", 5), Phase("focus", 1, 0.75)], seed=3)
    for _ in range(5):  # 20 of the 40 blocks seen
        feed(s, lambda i: 1.0 + i / 40)
    unseen = np.flatnonzero(s.visits == 0)
    assert len(unseen) == 20 and np.isinf(s.last_loss[unseen]).all() and np.isinf(s.ppl[unseen]).all()
    seen = np.flatnonzero(s.visits > 0)
    expect = set(unseen) | set(seen[np.argsort(-s.last_loss[seen])][:10])  # 30 = 20 unseen + 10 hardest seen
    assert set(s.active_indices()) == expect
    assert s.events[-1]["seen"] == 20


def test_clusters_apply_keep_within_each_cluster():
    n = 40
    clusters = np.r_[np.zeros(30, int), np.ones(10, int)]
    loss = np.r_[3.0 + np.arange(30) / 30, 1.0 + np.arange(10) / 10]  # cluster 1 is all easier than cluster 0
    schedule = [Phase("learn", 1), Phase("focus", 1, 0.2)]
    per_cluster = LFRSampler(n, 2, n, schedule, clusters=clusters)
    overall = LFRSampler(n, 2, n, schedule)
    for s in (per_cluster, overall):
        feed(s, lambda i: loss[i])
    assert sorted(overall.active_indices()) == list(range(22, 30))  # ceil(0.2 * 40) = 8, all from cluster 0
    assert sorted(per_cluster.active_indices()) == [*range(24, 30), 38, 39]  # 6 of cluster 0, 2 of cluster 1
    with pytest.raises(TrustlabError, match="cluster ids"):
        LFRSampler(n, 2, n, schedule, clusters=clusters[:-1])


def stalled_run(exclude: bool, noise: int = 5) -> LFRSampler:
    """20 blocks, two Learn passes; blocks 0..noise-1 keep loss 5.0 (never drop), the others go 3.0 -> 1.0."""
    s = LFRSampler(20, 5, 10, [Phase("learn", 4), Phase("focus", 1, 0.5)], exclude_stalled=exclude, seed=4)
    for p in range(2):
        for _ in range(2):
            feed(s, lambda i, p=p: 5.0 if i < noise else (3.0 if p == 0 else 1.0) + i / 100)
    return s


def test_stalled_blocks_are_logged_and_excluded_on_request():
    kept = stalled_run(exclude=False)
    assert sorted(np.flatnonzero(kept.stalled())) == [0, 1, 2, 3, 4]
    # the 10 hardest: the 5 stalled ones and the 5 hardest learnable ones
    assert sorted(kept.active_indices()) == [0, 1, 2, 3, 4, 15, 16, 17, 18, 19]
    assert kept.events[-1]["stalled_active"] == 5 and kept.events[-1]["stalled_total"] == 5
    capped = stalled_run(exclude=True)
    assert sorted(capped.active_indices()) == [15, 16, 17, 18, 19]
    assert capped.events[-1]["stalled_active"] == 0 and capped.events[-1]["stalled_total"] == 5
    assert set(feed(capped, lambda i: 1.0)).isdisjoint(range(5))
    # every block stalled: Focus keeps them rather than sampling from nothing
    all_stalled = stalled_run(exclude=True, noise=20)
    assert len(all_stalled.active_indices()) == 10


def test_ppl_weighted_focus_favours_high_loss_blocks():
    n = 100
    loss = np.where(np.arange(n) < 50, 0.5, 2.5)  # perplexity ratio e^2 = 7.39 between the halves
    shares = {}
    for sampling in ("uniform", "ppl_weighted"):
        s = LFRSampler(n, 60, 10, [Phase("learn", 10), Phase("focus", 50, 1.0)], focus_sampling=sampling, seed=11)
        for _ in range(10):
            feed(s, lambda i: loss[i])
        focus = np.concatenate([feed(s, lambda i: loss[i]) for _ in range(50)])
        shares[sampling] = float(np.mean(focus >= 50))
    assert shares["uniform"] == 0.5  # five exact passes over all 100 blocks
    assert 0.8 <= shares["ppl_weighted"] <= 0.95  # 7.39 / 8.39 = 0.88 with replacement; a bit less without


def test_ppl_weighted_draws_unseen_blocks_like_the_hardest():
    s = LFRSampler(20, 41, 2, [Phase("learn", 1), Phase("focus", 40, 1.0)], focus_sampling="ppl_weighted", seed=0)
    seen = feed(s, lambda i: 3.0)  # two blocks at the top loss, 18 unseen
    drawn = np.concatenate([feed(s, lambda i: 3.0) for _ in range(40)])
    assert set(drawn) - set(seen)  # unseen blocks are drawn
    assert np.isfinite(s.last_loss[drawn]).all()


def test_rank_slices_of_one_global_batch():
    ranks = [LFRSampler(30, 24, 4, DEFAULT_SCHEDULE, seed=3, rank=r, world_size=2) for r in (0, 1)]
    single = LFRSampler(30, 24, 8, DEFAULT_SCHEDULE, seed=3)
    for step in range(24):
        local = [next(s.batches()) for s in ranks]
        whole = next(single.batches())
        assert local[0] + local[1] == whole  # rank r: positions r * 4 .. r * 4 + 3 of the global batch
        losses = synthetic_losses(whole, step)
        for s in (*ranks, single):  # what all-gathering gives every rank
            s.update(whole, losses)
    assert np.array_equal(ranks[0].last_loss, single.last_loss) and ranks[1].events == single.events
    assert_states_equal(ranks[0].state_dict(), ranks[1].state_dict())


# --- resuming ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("variant", ["lfr", "lfr-weighted"])
@pytest.mark.parametrize("cut", [1, 6, 13, 23])
def test_state_round_trip_continues_the_same_order(variant, cut):
    whole = VARIANTS[variant]()
    reference = run_steps(whole)
    first = VARIANTS[variant]()
    head = run_steps(first, cut)
    second = VARIANTS[variant]()
    second.load_state_dict(reload(first.state_dict()))
    assert second.step == cut and len(second) == (24 - cut) * 4
    assert head + run_steps(second) == reference
    assert_states_equal(second.state_dict(), whole.state_dict())
    assert np.array_equal(second.last_loss, whole.last_loss) and second.events == whole.events


def kill_and_resume(tmp_path: Path, variant: str, kill_at: int) -> None:
    """Run :func:`tests.data.dist_worker.resume` until it SIGKILLs itself at ``kill_at``, then again in a new
    process; assert the two processes logged the uninterrupted run's order and ended in its state."""
    worker = str(Path(__file__).with_name("dist_worker.py"))
    env = {**os.environ, "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": ""}
    killed = subprocess.run([sys.executable, worker, "resume", str(tmp_path), variant, str(kill_at)],
                            capture_output=True, text=True, timeout=120, env=env)
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-3000:]
    assert not (tmp_path / "final.pt").exists()
    assert torch.load(tmp_path / "state.pt", weights_only=True)["step"] == kill_at
    done = subprocess.run([sys.executable, worker, "resume", str(tmp_path), variant, "-1"],
                          capture_output=True, text=True, timeout=120, env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    log = [json.loads(line) for line in (tmp_path / "order.jsonl").read_text().splitlines()]
    assert len({r["pid"] for r in log}) == 2
    steps = [r["step"] for r in log]
    assert steps == [*range(kill_at + 1), *range(kill_at, len(steps) - 1)]  # step kill_at drawn by both
    twice = [r["indices"] for r in log if r["step"] == kill_at]
    assert twice[0] == twice[1]  # redrawn from the saved state: the same batch the killed process drew
    order = [r["indices"] for r in log if not (r["step"] == kill_at and r["pid"] == log[0]["pid"])]
    whole = VARIANTS[variant]()
    assert order == run_steps(whole)
    assert_states_equal(torch.load(tmp_path / "final.pt", weights_only=True), reload(whole.state_dict()))


def assert_drawing_ahead_changes_nothing(variant: str) -> None:
    """Peeking at every step's batch before drawing it, and saving the state while the next batch is already
    drawn (then resuming in a fresh sampler), give the order and final state of a plain run."""
    reference = VARIANTS[variant]()
    order = run_steps(reference)
    s, got = VARIANTS[variant](), []
    for step in range(s.num_batches()):
        if step == s.total_steps // 2:
            next(s.batches())
            resumed = VARIANTS[variant]()
            resumed.load_state_dict(reload(s.state_dict()))
            s = resumed
        peek = next(s.batches())
        batch = next(s.batches())
        assert batch == peek
        s.update(batch, synthetic_losses(batch, step))
        got.append(batch)
    assert got == order
    assert_states_equal(s.state_dict(), reference.state_dict())


@pytest.mark.parametrize("variant", ["lfr", "lfr-weighted"])
def test_drawing_ahead_changes_nothing(variant):
    assert_drawing_ahead_changes_nothing(variant)


@pytest.mark.parametrize(("variant", "kill_at"), [("lfr", 11), ("lfr-weighted", 7)])
def test_sigkilled_process_resumes_with_the_same_order(tmp_path, variant, kill_at):
    kill_and_resume(tmp_path, variant, kill_at)


# --- bad input ---------------------------------------------------------------------------------------------


def test_empty_dataset_and_bad_sizes():
    with pytest.raises(EmptyInputError):
        LFRSampler(0, 10, 4)
    with pytest.raises(TrustlabError, match="positive"):
        LFRSampler(10, 0, 4)
    with pytest.raises(TrustlabError, match="positive"):
        LFRSampler(10, 10, 0)
    with pytest.raises(TrustlabError, match="outside world size"):
        LFRSampler(10, 10, 2, rank=2, world_size=2)
    with pytest.raises(TrustlabError, match="focus_sampling"):
        LFRSampler(10, 10, 2, focus_sampling="loss")


def _lfr(**kw) -> LFRSampler:
    args = dict(n_blocks=30, total_steps=24, batch_size=4, schedule=DEFAULT_SCHEDULE, seed=3, fingerprint="lfr-30")
    args.update(kw)
    return LFRSampler(**args)


@pytest.mark.parametrize(("other", "match"), [
    (dict(fingerprint="other-data"), "another dataset"),
    (dict(n_blocks=31), "another dataset"),
    (dict(total_steps=25), "total_steps"),
    (dict(batch_size=5), "batch_size"),
    (dict(seed=4), "seed"),
    (dict(schedule=(Phase("learn", 0.5), Phase("focus", 0.5, 0.3))), "schedule"),
    (dict(focus_sampling="ppl_weighted"), "focus_sampling"),
    (dict(exclude_stalled=True), "exclude_stalled"),
    (dict(clusters=np.arange(30) % 2), "clusters"),
])
def test_foreign_state_is_refused(other, match):
    source = _lfr()
    run_steps(source, 5)
    target = _lfr(**other)
    before = target.state_dict()
    with pytest.raises(SamplerStateError, match=match):
        target.load_state_dict(reload(source.state_dict()))
    assert_states_equal(target.state_dict(), before)


def test_state_of_another_sampler_kind_is_refused():
    mix = MixCD(30, np.linspace(1, 2, 10), 24, 4, 2, fingerprint="lfr-30")
    with pytest.raises(SamplerStateError, match="'mixcd' sampler"):
        _lfr().load_state_dict(mix.state_dict())
    with pytest.raises(SamplerStateError, match="'lfr' sampler"):
        mix.load_state_dict(_lfr().state_dict())


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
def test_non_finite_losses_change_nothing(bad):
    s = _lfr()
    run_steps(s, 3)
    before = s.state_dict()
    batch = next(s.batches())
    losses = synthetic_losses(batch, s.step)
    losses[1] = bad
    with pytest.raises(NonFiniteLossError, match="1 of 4"):
        s.update(batch, losses)
    assert_states_equal(s.state_dict(), before)


@pytest.mark.parametrize(("indices", "losses", "match"), [
    ([0, 1, 2], [1.0, 2.0], "3 indices but 2"),
    ([0, 1], [1.0, 2.0, 3.0], "2 indices but 3"),
    ([0, 30], [1.0, 2.0], "index 30 outside"),
    ([-1, 3], [1.0, 2.0], "index -1 outside"),
])
def test_bad_feedback_changes_nothing(indices, losses, match):
    s = _lfr()
    run_steps(s, 2)
    before = s.state_dict()
    with pytest.raises(TrustlabError, match=match):
        s.update(indices, losses)
    assert_states_equal(s.state_dict(), before)


@pytest.mark.parametrize(("schedule", "steps", "match"), [
    ([Phase("learn", 0.5), Phase("focus", 0.3, 0.5)], 10, "add up to 0.8, not 1"),
    ([Phase("learn", 0.7), Phase("review", 0.7)], 10, "add up to 1.4"),
    ([Phase("learn", 5), Phase("focus", 0.5, 0.5)], 10, "every one as a step count"),
    ([Phase("learn", 4), Phase("focus", 4, 0.5)], 10, "add up to 8 steps"),
    (DEFAULT_SCHEDULE, 3, "too few"),
])
def test_bad_schedules(schedule, steps, match):
    with pytest.raises(TrustlabError, match=match):
        LFRSampler(10, steps, 2, schedule)


@pytest.mark.parametrize(("args", "match"), [
    (("study", 0.5), "not one of"),
    (("focus", 0.5, 0.0), r"keep 0.0 must be in \(0, 1\]"),
    (("focus", 0.5, 1.5), "keep 1.5"),
    (("focus", 0.5, -0.2), "keep -0.2"),
    (("learn", 0), "length 0 must be positive"),
    (("learn", -0.5), "must be positive"),
])
def test_bad_phases(args, match):
    with pytest.raises(TrustlabError, match=match):
        Phase(*args)


def test_parse_schedule():
    assert parse_schedule("learn:10, focus:5:0.5,review:5") == (
        Phase("learn", 10), Phase("focus", 5, 0.5), Phase("review", 5))
    phases = parse_schedule("learn:0.25,focus:0.25:0.5,review:0.15,focus:0.2:0.3,review:0.15")
    assert phases == DEFAULT_SCHEDULE and all(isinstance(p.length, float) for p in phases)
    for text, match in [("", "empty"), ("learn", "kind:length"), ("learn:x", "learn:x"),
                        ("focus:0.5:a", "focus:0.5:a"), ("learn:1:2:3", "kind:length"), ("cram:0.5", "not one of")]:
        with pytest.raises(TrustlabError, match=match):
            parse_schedule(text)


def test_ppl_is_exp_of_the_last_loss():
    s = LFRSampler(4, 2, 4, [Phase("learn", 2)])
    feed(s, lambda i: float(i))
    assert np.allclose(s.ppl, np.exp(np.arange(4)))
    assert s.last_step.tolist() == [0] * 4 and s.visits.tolist() == [1] * 4
    feed(s, lambda i: 0.5)
    assert np.allclose(s.ppl, math.exp(0.5)) and s.last_step.tolist() == [1] * 4
    assert s.first_loss.tolist() == [0.0, 1.0, 2.0, 3.0] and s.prev_loss.tolist() == [0.0, 1.0, 2.0, 3.0]
    assert sorted(np.flatnonzero(s.forgotten())) == [0]  # 0.0 -> 0.5 rose


def test_feedback_accepts_tensors_and_reversed_numpy_views():
    s = LFRSampler(8, 2, 4, [Phase("learn", 2)])
    batch = np.array(next(s.batches()))
    s.update(batch[::-1], np.arange(4.0)[::-1])  # negative strides
    assert s.last_loss[batch].tolist() == [0.0, 1.0, 2.0, 3.0]
    batch = torch.tensor(next(s.batches()))
    s.update(batch, torch.full((4,), 2.5, requires_grad=True))
    assert s.last_loss[batch.numpy()].tolist() == [2.5] * 4 and s.step == 2
