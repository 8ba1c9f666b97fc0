"""The TracIn core on a tiny classifier: equals a direct per-example autograd computation, matches dattri's
``TracInAttributor`` (exact mode), the projection keeps inner products, and bad input is refused."""

from __future__ import annotations

import pytest
import torch

from trustlab.attribution import (
    CacheMismatchError,
    Checkpoint,
    NonFiniteGradientError,
    RandomProjector,
    TracIn,
)
from trustlab.errors import EmptyInputError, TrustlabError

CE = torch.nn.functional.cross_entropy


def classifier_setup(seed: int = 0, n_train: int = 30, n_test: int = 6):
    """A tiny MLP, three checkpoints along a short real SGD run, data and weights."""
    torch.manual_seed(seed)
    model = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.Tanh(), torch.nn.Linear(16, 3))
    x, y = torch.randn(n_train + n_test, 8), torch.randint(0, 3, (n_train + n_test,))
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    ckpts = []
    for step in range(3):
        opt.zero_grad()
        CE(model(x[:n_train]), y[:n_train]).backward()
        opt.step()
        ckpts.append(Checkpoint({k: v.clone() for k, v in model.state_dict().items()}, weight=0.1 * (step + 1)))
    return model, ckpts, (x[:n_train], y[:n_train]), (x[n_train:], y[n_train:])


def direct_scores(model, ckpts, train, test, normalize=False):
    """sum_k c_k <g_k(z), g_k(z')>, one autograd call per example."""
    def grad_of(state, x, y):
        model.load_state_dict(state)
        model.zero_grad()
        CE(model(x[None]), y[None]).backward()
        g = torch.cat([p.grad.reshape(-1) for p in model.parameters()])
        return g / g.norm() if normalize else g

    out = torch.zeros(len(test[0]), len(train[0]))
    for c in ckpts:
        gtr = torch.stack([grad_of(c.state, *z) for z in zip(*train)])
        gte = torch.stack([grad_of(c.state, *z) for z in zip(*test)])
        out += c.weight * gte @ gtr.T
    return out


@pytest.mark.parametrize("normalize", [False, True])
def test_tracin_equals_direct_computation(normalize):
    model, ckpts, train, test = classifier_setup()
    ours = TracIn(model, CE, ckpts, normalize=normalize, device="cpu", batch_size=7, shard_size=8)
    ours.cache(train)
    got = ours.attribute(test)
    want = direct_scores(model, ckpts, train, test, normalize)
    assert got.shape == (6, 30)
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-6)
    sq = direct_scores(model, ckpts, train, train, normalize).diagonal()
    torch.testing.assert_close(ours.self_influence(), sq, rtol=1e-4, atol=1e-6)


def test_tracin_matches_dattri():
    """dattri 0.3.0's TracInAttributor always projects (its default projector kwargs are never None); its
    ``projector_kwargs`` set to None after construction is its exact mode, which we compare with."""
    from dattri.algorithm.tracin import TracInAttributor
    from dattri.task import AttributionTask
    from torch.utils.data import DataLoader, TensorDataset

    model, ckpts, train, test = classifier_setup(seed=1)

    def loss(params, data):
        x, y = data
        return CE(torch.func.functional_call(model, params, x.unsqueeze(0)), y.unsqueeze(0))

    peer = TracInAttributor(AttributionTask(loss_func=loss, model=model, checkpoints=[c.state for c in ckpts]),
                            weight_list=torch.tensor([c.weight for c in ckpts]), normalized_grad=False, device="cpu")
    peer.projector_kwargs = None
    loader = lambda d: DataLoader(TensorDataset(*d), batch_size=8, shuffle=False)  # noqa: E731
    theirs = peer.attribute(loader(train), loader(test)).T  # dattri returns (n_train, n_test)
    ours = TracIn(model, CE, ckpts, device="cpu")
    ours.cache(train)
    got = ours.attribute(test)
    corr = torch.corrcoef(torch.stack([got.reshape(-1), theirs.reshape(-1)]))[0, 1]
    assert corr >= 0.99
    torch.testing.assert_close(got, theirs, rtol=1e-4, atol=1e-5)


def test_param_subset_and_projection():
    model, ckpts, train, test = classifier_setup(seed=2)
    last = TracIn(model, CE, ckpts, params=["2"], device="cpu")  # the output layer only
    assert last.n_params == 16 * 3 + 3
    full = TracIn(model, CE, ckpts, device="cpu")
    proj = TracIn(model, CE, ckpts, device="cpu", projector=RandomProjector(full.n_params, 4096, seed=0))
    for a in (last, full, proj):
        a.cache(train)
    exact, approx = full.attribute(test), proj.attribute(test)
    assert not torch.allclose(last.attribute(test), exact)
    assert torch.corrcoef(torch.stack([exact.reshape(-1), approx.reshape(-1)]))[0, 1] > 0.95
    torch.testing.assert_close(proj.self_influence(), full.self_influence())  # from full-space norms


def test_projector_is_seeded_and_chunk_invariant():
    g = torch.randn(5, 1000)
    a = RandomProjector(1000, 64, seed=3, chunk_rows=128, cache_bytes=0)
    b = RandomProjector(1000, 64, seed=3, chunk_rows=128)
    torch.testing.assert_close(a(g), b(g))
    torch.testing.assert_close(a(g)[2:3], a(g[2:3]))
    assert not torch.allclose(a(g), RandomProjector(1000, 64, seed=4, chunk_rows=128)(g))
    r = RandomProjector(1000, 2000, seed=0, kind="rademacher")
    x = torch.randn(1000)
    assert abs(float(r(x[None]).norm() / x.norm()) - 1) < 0.1  # Johnson-Lindenstrauss: norms about kept
    with pytest.raises(TrustlabError, match="takes"):
        a(torch.randn(2, 999))
    with pytest.raises(TrustlabError, match="kind"):
        RandomProjector(10, 2, kind="sparse")


def test_bad_input_is_refused(tmp_path):
    model, ckpts, train, test = classifier_setup(seed=3)
    with pytest.raises(EmptyInputError):
        TracIn(model, CE, [], device="cpu")
    t = TracIn(model, CE, ckpts, device="cpu")
    with pytest.raises(EmptyInputError):
        t.cache((train[0][:0], train[1][:0]))
    with pytest.raises(TrustlabError, match="cache"):
        t.attribute(test)
    bad = train[0].clone()
    bad[4, 0] = float("nan")
    with pytest.raises(NonFiniteGradientError, match="sample 4"):
        t.cache((bad, train[1]))
    with pytest.raises(TrustlabError, match="projector"):
        TracIn(model, CE, ckpts, projector=RandomProjector(10, 4))
    with pytest.raises(TrustlabError, match="selects nothing"):
        TracIn(model, CE, ckpts, params=["encoder"])
    cached = TracIn(model, CE, ckpts, device="cpu", cache_dir=tmp_path)
    cached.cache(train)
    other = (train[0] + 1, train[1])
    with pytest.raises(CacheMismatchError, match="dataset"):
        TracIn(model, CE, ckpts, device="cpu", cache_dir=tmp_path).cache(other)
