"""Concept Gradient: exactness where the answer is known, the math core against explicit formulas, the batched
Jacobian against torch.func, layers, smoothing, global scores, and clear errors on bad input."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from trustlab.errors import EmptyInputError
from trustlab.explain import (
    CAV,
    ConceptGradient,
    ConceptInputError,
    NoGradientError,
    SmoothConceptGradient,
    concept_jacobian,
    concept_scores,
    global_scores,
    layer_gradient,
)
from trustlab.explain.concept_data import SYNTHETIC_DY_DC, synthetic_concepts


class TrueConcepts(nn.Module):
    """The spec's Test 1 concepts as an exact differentiable function of x."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.stack([x[:, 0] ** 2 + x[:, 1] ** 2, torch.sin(2 * x[:, 2]) * x[:, 3], x[:, 4], x[:, 5] * x[:, 6]], 1)


def test_joint_recovers_dh_dc_exactly_when_f_is_h_of_g_and_cav_does_not():
    torch.manual_seed(0)
    g = TrueConcepts().double()
    dy_dc = torch.tensor(SYNTHETIC_DY_DC, dtype=torch.float64)
    f = lambda x: g(x) @ dy_dc                                     # noqa: E731  f = h o g, h linear
    data = {k: v.double() for k, v in synthetic_concepts(2000, seed=0).items()}
    x = data["x"][:200]
    r = ConceptGradient(f, g, mode="joint").attribute(x)
    assert torch.allclose(r, dy_dc.expand_as(r), atol=1e-8)
    # a linear concept direction at the input (CAV) misses the radial concept c1 entirely
    cav = CAV(f, scale="concept").fit_activations(data["x"].float(), data["c"].float(), epochs=80)
    r_cav = cav.attribute(data["x"][:200])
    rel_c1 = ((r_cav[:, 0] - 2.0).abs() / 2.0).median()
    sign_c1 = (r_cav[:, 0] > 0).float().mean()
    assert rel_c1 > 0.5 and sign_c1 < 0.8
    assert (r_cav[:, 2] - 0.5).abs().median() < 0.1                # the linear concept c3 is fine for CAV


def test_concept_scores_match_explicit_formulas():
    torch.manual_seed(1)
    jac, grad = torch.randn(3, 4, 6, dtype=torch.float64), torch.randn(3, 6, dtype=torch.float64)
    inner = torch.einsum("bkd,bd->bk", jac, grad)
    norm = jac.norm(dim=2)
    assert torch.allclose(concept_scores(jac, grad, "inner_prod"), inner)
    assert torch.allclose(concept_scores(jac, grad, "independent"), inner / norm**2)
    assert torch.allclose(concept_scores(jac, grad, "cav"), inner / norm)
    assert torch.allclose(concept_scores(jac, grad, "cosine"), inner / (norm * grad.norm(dim=1, keepdim=True)))
    pinv = torch.linalg.pinv(jac.transpose(1, 2))                   # (B, k, d)
    assert torch.allclose(concept_scores(jac, grad, "joint"), (pinv @ grad[..., None])[..., 0], atol=1e-10)


def test_joint_is_minimum_norm_for_duplicate_concepts_and_zero_gradients_score_zero():
    row = torch.tensor([1.0, 2.0, 0.0])
    jac = torch.stack([row, row, torch.zeros(3)])[None]             # rank 1, a concept with no gradient
    grad = (3 * row)[None]
    joint = concept_scores(jac, grad, "joint")
    assert torch.allclose(joint, torch.tensor([[1.5, 1.5, 0.0]]), atol=1e-6)  # credit split, not doubled
    assert concept_scores(jac, grad, "independent")[0, 2] == 0


def test_batched_jacobian_matches_torch_func_and_chunking():
    torch.manual_seed(2)
    g = nn.Sequential(nn.Linear(5, 7), nn.Tanh(), nn.Linear(7, 9))
    x = torch.randn(4, 5)
    ref = torch.stack([torch.func.jacrev(lambda v: g(v[None])[0])(xi) for xi in x])  # (B, k, d)
    for chunk in (1, 2, 64, None):
        assert torch.allclose(concept_jacobian(g, x, chunk_size=chunk), ref, atol=1e-6)


def test_batch_equals_items_and_targets_per_item():
    torch.manual_seed(3)
    f = nn.Sequential(nn.Linear(5, 8), nn.ReLU(), nn.Linear(8, 3))
    g = nn.Sequential(nn.Linear(5, 8), nn.Tanh(), nn.Linear(8, 4))
    x, target = torch.randn(6, 5), torch.tensor([0, 1, 2, 0, 1, 2])
    cg = ConceptGradient(f, g, mode="joint")
    batched = cg.attribute(x, target=target)
    single = torch.cat([cg.attribute(x[i:i + 1], target=int(target[i])) for i in range(6)])
    assert torch.allclose(batched, single, atol=1e-5)
    assert torch.allclose(cg.attribute(x, target=target, target_concept=[1, 3]), batched[:, [1, 3]])
    assert torch.allclose(cg.attribute(x, target=target, internal_batch_size=4), batched, atol=1e-6)
    smooth = SmoothConceptGradient(f, g, mode="joint", nt_samples=2, stdevs=0.0)
    assert torch.allclose(smooth.attribute(x, target=target, internal_batch_size=5), batched, atol=1e-5)


def test_shared_layer_by_name_and_module_and_layer_output():
    torch.manual_seed(4)
    trunk = nn.Sequential(nn.Linear(5, 8), nn.Tanh())
    f = nn.Sequential(trunk, nn.Linear(8, 8), nn.Tanh(), nn.Linear(8, 3))
    g = nn.Sequential(trunk, nn.Linear(8, 8), nn.Sigmoid(), nn.Linear(8, 2))
    x = torch.randn(5, 5)
    by_module = ConceptGradient(f, g, layer=f[1], concept_layer=g[1]).attribute(x, target=2)
    by_name = ConceptGradient(f, g, layer="1", concept_layer="1").attribute(x, target=2)
    at_output = ConceptGradient(f, g, layer=trunk, attribute_to_layer_input=False).attribute(x, target=2)
    assert torch.allclose(by_module, by_name) and torch.allclose(by_module, at_output, atol=1e-6)
    # the gradient is taken at the layer: it equals the gradient of the head alone
    z = trunk(x).detach().requires_grad_(True)
    (ref,) = torch.autograd.grad(f[1:](z)[:, 2].sum(), z)
    assert torch.allclose(layer_gradient(f, x, 2, f[1]), ref, atol=1e-6)


def test_reduces_to_cav_for_a_linear_concept_model():
    torch.manual_seed(5)
    f = nn.Sequential(nn.Linear(4, 6), nn.Tanh(), nn.Linear(6, 2))
    probe = nn.Linear(6, 3)
    g = nn.Sequential(f[0], f[1], probe)
    x = torch.randn(7, 4)
    cg = ConceptGradient(f, g, layer=f[2], concept_layer=probe, mode="cav").attribute(x, target=1)
    cav = CAV(f, layer=f[2], vectors=probe.weight.detach()).attribute(x, target=1)
    assert torch.allclose(cg, cav, atol=1e-6)


def test_smooth_cg_is_plain_cg_without_noise_and_reproducible_with_it():
    torch.manual_seed(6)
    f = nn.Sequential(nn.Linear(4, 5), nn.Tanh(), nn.Linear(5, 2))
    g = nn.Sequential(f[0], nn.Tanh(), nn.Linear(5, 3), nn.Tanh())
    x = torch.randn(5, 4)
    plain = ConceptGradient(f, g).attribute(x, target=0)
    assert torch.allclose(SmoothConceptGradient(f, g, nt_samples=3, stdevs=0.0).attribute(x, target=0), plain, atol=1e-6)
    a = SmoothConceptGradient(f, g, layer=f[1], concept_layer=g[1], nt_samples=4, stdevs=0.5, seed=1)
    first, second = a.attribute(x, target=0), a.attribute(x, target=0)
    assert torch.equal(first, second)
    assert not torch.allclose(first, ConceptGradient(f, g, layer=f[1], concept_layer=g[1]).attribute(x, target=0))
    with pytest.raises(ConceptInputError, match="same tensor"):
        SmoothConceptGradient(f, g, layer=f[1], concept_layer=g[3]).attribute(x, target=0)


def test_global_scores():
    r = torch.tensor([[1.0, -1.0, 2.0], [3.0, -2.0, -2.0]])
    assert global_scores(r).tolist() == [1.0, 0.0, 0.5]
    assert global_scores(r, "avg").tolist() == [2.0, -1.5, 0.0]
    with pytest.raises(ConceptInputError, match="signed_avg"):
        global_scores(r, "median")


def test_bad_inputs_get_clear_errors():
    f, g = nn.Linear(3, 2), nn.Linear(3, 2)
    cg = ConceptGradient(f, g)
    with pytest.raises(EmptyInputError, match="empty"):
        cg.attribute(torch.zeros(0, 3), target=0)
    with pytest.raises(ConceptInputError, match="NaN"):
        cg.attribute(torch.tensor([[0.0, float("nan"), 1.0]]), target=0)
    with pytest.raises(ConceptInputError, match="pass target"):
        cg.attribute(torch.zeros(2, 3))
    with pytest.raises(ConceptInputError, match=r"\[0, 2\)"):
        cg.attribute(torch.zeros(2, 3), target=5)
    with pytest.raises(ConceptInputError, match="3 entries for a batch of 2"):
        cg.attribute(torch.zeros(2, 3), target=[0, 1, 1])
    with pytest.raises(ConceptInputError, match="no layer 'blocks.9'.*include"):
        ConceptGradient(f, g, layer="blocks.9")
    with pytest.raises(ConceptInputError, match="unknown mode"):
        ConceptGradient(f, g, mode="pseudo")
    with pytest.raises(NoGradientError, match="integer"):
        ConceptGradient(nn.Sequential(nn.Embedding(5, 3), nn.Flatten(), nn.Linear(6, 2)), g).attribute(
            torch.tensor([[1, 2]]), target=0)
    detached = lambda x: f(x).detach()                              # noqa: E731
    with pytest.raises(NoGradientError, match="does not require grad"):
        ConceptGradient(detached, g).attribute(torch.zeros(2, 3), target=0)
    twice = nn.Linear(3, 3)
    with pytest.raises(ConceptInputError, match="more than once"):
        ConceptGradient(nn.Sequential(twice, twice, nn.Linear(3, 2)), g, layer=twice).attribute(torch.zeros(2, 3), target=0)
    with pytest.raises(ConceptInputError, match="never called"):
        ConceptGradient(f, g, layer=nn.Linear(3, 3)).attribute(torch.zeros(2, 3), target=0)
    with pytest.raises(ConceptInputError, match="same tensor"):
        ConceptGradient(nn.Sequential(nn.Linear(3, 4), nn.Linear(4, 2)), g, layer="1",
                        concept_layer=g).attribute(torch.zeros(2, 3), target=0)


def test_integer_inputs_work_at_a_layer_after_the_embedding():
    torch.manual_seed(7)
    emb = nn.Embedding(5, 3)
    f = nn.Sequential(emb, nn.Flatten(), nn.Linear(6, 2))
    g = nn.Sequential(emb, nn.Flatten(), nn.Tanh(), nn.Linear(6, 2))
    r = ConceptGradient(f, g, layer=f[1], concept_layer=g[1]).attribute(torch.tensor([[1, 2], [3, 4]]), target=1)
    assert r.shape == (2, 2) and torch.isfinite(r).all()
