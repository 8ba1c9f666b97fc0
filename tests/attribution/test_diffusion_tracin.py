"""Diffusion-TracIn / ReTrac on a tiny DDPM really trained on digits: the scores equal a direct autograd
computation of the spec's formulas, the cache resumes and refuses foreign data, the projection tracks the
exact scores, the DDPM run resumes to the same weights, and bad input gets clear errors."""

from __future__ import annotations

import pytest
import torch

from tests.attribution.conftest import TINY
from trustlab.attribution import (
    CacheMismatchError,
    Checkpoint,
    DiffusionAttributionTask,
    DiffusionTracIn,
    NonFiniteGradientError,
    RandomProjector,
    ShapeMismatchError,
    TimestepLog,
    TimestepLogError,
)
from trustlab.attribution.diffusion_tracin import _MIX, keyed_noise
from trustlab.errors import EmptyInputError, TrustlabError

N_AVG, J = 3, 2


def loss_grad(task, state, x0, t, noise):
    """Gradient of the mean over draws of the L1 noise loss, by plain autograd; noise (J, C, H, W)."""
    model = task.model
    model.load_state_dict(state)
    model.zero_grad()
    abar = task.abar[t]
    xt = abar.sqrt() * x0[None] + (1 - abar).sqrt() * noise
    pred = model(xt, torch.full((len(noise),), t)).sample
    (pred - noise).abs().mean().backward()
    return torch.cat([p.grad.reshape(-1) for p in model.parameters()])


def direct(task, x_train, x_query, retrac, seed=0):
    """The spec's formulas, one sample at a time (train noise replayed from the log)."""
    log, out = task.timestep_log, torch.zeros(len(x_query), len(x_train))
    steps = torch.linspace(1, task.num_timesteps - 1, N_AVG).round().long()
    for c in task.checkpoints:
        state = c.load()
        e = c.epoch - 1
        g_tr = torch.stack([loss_grad(task, state, x, int(log.timesteps[e][i]),
                                      keyed_noise([int(log.noise_seeds[e][i])], x.shape))
                            for i, x in enumerate(x_train)])
        if retrac:
            g_tr = g_tr / g_tr.norm(dim=1, keepdim=True)
        for q, x in enumerate(x_query):
            noise = keyed_noise([seed * _MIX + q], (N_AVG * J, *x.shape))[0].reshape(N_AVG, J, *x.shape)
            per_s = torch.stack([loss_grad(task, state, x, int(s), noise[i]) for i, s in enumerate(steps)])
            if retrac:
                per_s = per_s / per_s.norm(dim=1, keepdim=True)
            out[q] += c.weight * g_tr @ per_s.mean(0)
    return out


@pytest.mark.parametrize("retrac", [False, True])
def test_scores_equal_direct_computation(tiny_run, retrac):
    _, task, x = tiny_run
    train, query = x[:10], x[40:43]
    sub = DiffusionAttributionTask(task.model, task.abar, task.checkpoints,
                                   TimestepLog({e: t[:10] for e, t in task.timestep_log.timesteps.items()},
                                               {e: s[:10] for e, s in task.timestep_log.noise_seeds.items()}))
    attr = DiffusionTracIn(sub, retrac=retrac, n_avg=N_AVG, n_noise=J, device="cpu", batch_size=4, shard_size=4)
    attr.cache(train)
    got = attr.attribute(query)
    torch.testing.assert_close(got, direct(sub, train, query, retrac), rtol=2e-4, atol=1e-7)
    feats = attr.test_features(query)
    assert feats.norms.shape == (2, 3, N_AVG) and (feats.norms > 0).all()


def test_both_forms_share_one_cache_and_test_features(tiny_run, tmp_path):
    _, task, x = tiny_run
    kw = {"n_avg": 4, "n_noise": 2, "device": "cpu", "cache_dir": tmp_path / "f", "shard_size": 16}
    tracin, retrac = DiffusionTracIn(task, **kw), DiffusionTracIn(task, retrac=True, **kw)
    tracin.cache(x)
    first = {p: p.stat().st_mtime_ns for p in (tmp_path / "f").rglob("shard*.pt")}
    assert len(first) == 2 * 3  # 2 checkpoints x 3 shards of 16
    retrac.cache(x)  # finds every shard: nothing recomputed
    assert {p: p.stat().st_mtime_ns for p in first} == first
    feats = tracin.test_features(x[:4])
    s_tr, s_rt = tracin.attribute(feats), retrac.attribute(feats)
    torch.testing.assert_close(s_tr, tracin.attribute(x[:4]))
    assert not torch.allclose(s_tr / s_tr.norm(), s_rt / s_rt.norm())
    victim = sorted(first)[3]
    victim.unlink()  # an interrupted run: one shard missing
    again = DiffusionTracIn(task, **kw)
    again.cache(x)
    assert victim.exists() and all(p.stat().st_mtime_ns == t for p, t in first.items() if p != victim)
    torch.testing.assert_close(again.attribute(feats), s_tr)
    with pytest.raises(CacheMismatchError, match="dataset"):
        DiffusionTracIn(task, **kw).cache(x.flip(0))
    with pytest.raises(CacheMismatchError, match="fresh_noise"):
        DiffusionTracIn(task, fresh_noise=True, **kw).cache(x)
    fresh = DiffusionTracIn(task, fresh_noise=True, n_avg=4, n_noise=2, device="cpu")
    fresh.cache(x)
    assert not torch.allclose(fresh.attribute(feats), s_tr)  # other train noise, other scores


def test_projection_tracks_exact_scores(tiny_run):
    _, task, x = tiny_run
    exact = DiffusionTracIn(task, retrac=True, n_avg=4, n_noise=2, device="cpu")
    exact.cache(x)
    proj = DiffusionTracIn(task, retrac=True, n_avg=4, n_noise=2, device="cpu",
                           projector=RandomProjector(exact.n_params, 2048, seed=0))
    proj.cache(x)
    feats = exact.test_features(x[:5])
    a, b = exact.attribute(feats), proj.attribute(feats)  # full-space features projected by proj
    assert torch.corrcoef(torch.stack([a.reshape(-1), b.reshape(-1)]))[0, 1] > 0.9
    torch.testing.assert_close(b, proj.attribute(x[:5]), rtol=1e-3, atol=1e-5)
    other = DiffusionTracIn(task, n_avg=4, n_noise=2, device="cpu", projector=RandomProjector(exact.n_params, 16))
    other.cache(x)
    with pytest.raises(TrustlabError, match="another projector"):
        other.attribute(proj.test_features(x[:2]))


def test_self_influence_and_norm_profile(tiny_run):
    _, task, x = tiny_run
    attr = DiffusionTracIn(task, n_avg=3, n_noise=1, device="cpu")
    attr.cache(x[:48])
    own = attr.self_influence(x)
    torch.testing.assert_close(own[:3], attr.attribute(x[:3]).diagonal())
    with pytest.raises(TrustlabError, match="training set"):
        attr.self_influence(x + 0.5)
    prof = attr.grad_norms_by_timestep(x[:2], torch.tensor([1, 50, 99]), n_noise=2)
    assert prof.shape == (2, 3) and (prof > 0).all()


def test_ddpm_resumes_to_the_same_weights(tiny_run, tmp_path):
    from trustlab.attribution.ddpm import DDPMConfig, DDPMRunError, load_images, train_ddpm

    out, task, _ = tiny_run
    data = load_images("digits", split="train", limit=48)
    part = train_ddpm(data.x, tmp_path / "r", DDPMConfig(**TINY), data_spec=data.spec, device="cpu", until_epoch=1)
    assert len(part["history"]) == 1 and part["checkpoints"] == []
    done = train_ddpm(data.x, tmp_path / "r", DDPMConfig(**TINY), data_spec=data.spec, device="cpu")
    assert [h["epoch"] for h in done["history"]] == [1, 2, 3, 4]
    for mine, ref in zip(done["checkpoints"], [c.state for c in task.checkpoints]):
        a, b = torch.load(mine, weights_only=True), torch.load(ref, weights_only=True)
        assert all(torch.equal(a[k], b[k]) for k in a)
    logged = TimestepLog.load(tmp_path / "r" / "timesteps")
    assert torch.equal(logged.timesteps[3], task.timestep_log.timesteps[3])
    with pytest.raises(DDPMRunError, match="another DDPM run"):
        train_ddpm(data.x, tmp_path / "r", DDPMConfig(**{**TINY, "lr": 1e-2}), data_spec=data.spec, device="cpu")


def test_bad_input_gets_clear_errors(tiny_run, tmp_path):
    from trustlab.attribution.ddpm import DDPMConfig, train_ddpm
    from trustlab.data import NonFiniteLossError

    _, task, x = tiny_run
    attr = DiffusionTracIn(task, n_avg=2, n_noise=1, device="cpu")
    with pytest.raises(EmptyInputError):
        attr.cache(x[:0])
    with pytest.raises(TimestepLogError, match="timestep log"):
        DiffusionAttributionTask(task.model, task.abar, task.checkpoints, None)
    with pytest.raises(TimestepLogError, match="no timestep log row"):
        DiffusionAttributionTask(task.model, task.abar, [Checkpoint(task.checkpoints[0].state, 1.0, epoch=9)],
                                 task.timestep_log)
    with pytest.raises(TimestepLogError, match="48 rows"):
        attr.cache(x[:20])
    attr.cache(x)
    with pytest.raises(ShapeMismatchError, match="training images"):
        attr.attribute(torch.zeros(2, 1, 16, 16))
    with pytest.raises(ShapeMismatchError, match=r"\(N, C, H, W\)"):
        attr.attribute(torch.zeros(2, 8, 8))
    with pytest.raises(ShapeMismatchError, match="model"):
        DiffusionTracIn(task, n_avg=2, n_noise=1, device="cpu").cache(torch.zeros(48, 3, 8, 8))
    nan_ckpt = {k: v.clone() for k, v in task.checkpoints[0].load().items()}
    nan_ckpt["conv_in.weight"][0, 0, 0, 0] = float("nan")
    broken = DiffusionAttributionTask(task.model, task.abar, [Checkpoint(nan_ckpt, 1.0, epoch=2)], task.timestep_log)
    with pytest.raises(NonFiniteGradientError, match="non-finite"):
        DiffusionTracIn(broken, n_avg=2, n_noise=1, device="cpu").cache(x)
    with pytest.raises(TrustlabError, match="NaN"):
        attr.attribute(torch.full((1, 1, 8, 8), float("nan")))
    bad = x.clone()
    bad[3] = float("nan")
    with pytest.raises(NonFiniteLossError, match="learning rate"):
        train_ddpm(bad, tmp_path / "nan", DDPMConfig(**TINY), device="cpu")
    with pytest.raises(TrustlabError, match="unknown loss"):
        DiffusionAttributionTask(task.model, task.abar, task.checkpoints, task.timestep_log, loss="huber")


def test_fashion_mnist_loads_padded_or_says_how_to_install():
    from trustlab.attribution.ddpm import load_images
    from trustlab.bench.fashion_mnist import fashion_mnist_files
    from trustlab.errors import DataFileError

    if fashion_mnist_files() is None:
        with pytest.raises(DataFileError, match="apt-get install dataset-fashion-mnist"):
            load_images("fashion-mnist")
    else:
        data = load_images("fashion-mnist", split="test", limit=4)
        assert data.x.shape == (4, 1, 32, 32) and data.x.min() >= -1 and data.x.max() <= 1
    with pytest.raises(TrustlabError, match="unknown data"):
        load_images("cifar10")
