"""LoRA-RITE's factor basis on ill-conditioned and rank-deficient float32 factors.

The one-pass Cholesky basis of the Gram matrix is orthonormal only to about ``eps * kappa^2``; before the
fallback it was off by 1.2e-3 at kappa 500 and kept 11 of 16 directions at kappa 1e4 (2048 x 16, float32).
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

from trustlab.optim import LoRAPair, LoRARITE
from trustlab.optim.lora_rite import cholesky_rinv, qr_rinv

F32, F64 = torch.float32, torch.float64
EPS32 = torch.finfo(F32).eps


def ill_factor(cond: float, rows: int = 2048, r: int = 16, seed: int = 0) -> torch.Tensor:
    """A float32 ``rows x r`` factor with singular values log-spaced from 1 down to ``1 / cond``."""
    g = torch.Generator().manual_seed(seed)
    u = torch.linalg.qr(torch.randn(rows, r, generator=g, dtype=F64))[0]
    v = torch.linalg.qr(torch.randn(r, r, generator=g, dtype=F64))[0]
    s = torch.logspace(0, -torch.log10(torch.tensor(cond)).item(), r, dtype=F64)
    return ((u * s) @ v.T).to(F32)


def basis(x: torch.Tensor) -> tuple[torch.Tensor, bool]:
    """``(U = X R^-1 in float64, fast path taken)`` exactly as the optimizer chooses for one factor."""
    gram = (x.mT @ x).to(F64)
    rinv, _, ok = cholesky_rinv(0.5 * (gram + gram.mT)[None], EPS32)
    if not bool(ok[0]):
        rinv = qr_rinv(x[None], rtol=EPS32)[0]
    return x.to(F64) @ rinv[0], bool(ok[0])


def kept_and_error(u: torch.Tensor) -> tuple[int, float]:
    """Number of non-zero basis columns and ``||U_k^T U_k - I||_2`` over them."""
    keep = u.norm(dim=0) > 0.5
    uk = u[:, keep]
    err = torch.linalg.matrix_norm(uk.T @ uk - torch.eye(uk.shape[1], dtype=F64), ord=2).item()
    return int(keep.sum()), err


def test_well_conditioned_factor_keeps_the_one_pass_path():
    x = ill_factor(3.0)
    u, fast = basis(x)
    kept, err = kept_and_error(u)
    assert fast and kept == 16 and err < 1e-6


@pytest.mark.parametrize("cond", [5e2, 1e4, 1e7])
def test_ill_conditioned_factor_is_orthonormal_and_keeps_its_span(cond):
    x = ill_factor(cond)
    u, fast = basis(x)
    kept, err = kept_and_error(u)
    s = torch.linalg.svdvals(x.to(F64))
    real = int((s > EPS32 * s[0]).sum())  # directions above float32 resolution (all 16 up to kappa 1/eps)
    assert not fast  # the decision rule sends these to Householder QR
    assert kept == real and err < 1e-8
    assert real == (16 if cond < 1e6 else 15)  # at 1e7 the smallest direction (1e-7) is below eps = 1.19e-7
    # the kept basis spans the factor up to the dropped directions
    resid = torch.linalg.matrix_norm(x.to(F64) - u @ (u.T @ x.to(F64)), ord=2) / s[0]
    assert resid <= (s[real:].max() / s[0] if real < 16 else 0) + 1e-9


def test_rank_deficient_factor_drops_exactly_the_missing_directions():
    g = torch.Generator().manual_seed(3)
    x = torch.randn(2048, 10, generator=g) @ torch.randn(10, 16, generator=g)  # rank 10, rounded to float32
    u, fast = basis(x)
    kept, err = kept_and_error(u)
    assert not fast and kept == 10 and err < 1e-8
    resid = torch.linalg.matrix_norm(x.to(F64) - u @ (u.T @ x.to(F64)), ord=2) / torch.linalg.matrix_norm(x.to(F64), ord=2)
    assert resid < 1e-6


def test_zero_factor_needs_no_fallback():
    rinv, cond, ok = cholesky_rinv(torch.zeros(1, 4, 4, dtype=F64), EPS32)
    assert bool(ok[0]) and float(cond[0]) == 1.0 and torch.equal(rinv, torch.zeros_like(rinv))


def _pair_run(lora_b0: torch.Tensor, lora_a0: torch.Tensor, dtype: torch.dtype, steps: int = 4):
    """Train one LoRA pair on a fixed regression; returns the ``delta_W = B A`` trajectory and the optimizer."""
    g = torch.Generator().manual_seed(7)
    x = torch.randn(64, lora_a0.shape[1], generator=g, dtype=F64).to(dtype)
    y = torch.randn(64, lora_b0.shape[0], generator=g, dtype=F64).to(dtype)
    a, b = nn.Parameter(lora_a0.to(dtype).clone()), nn.Parameter(lora_b0.to(dtype).clone())
    opt = LoRARITE([LoRAPair(a, b)], lr=1e-2)
    zs = []
    for _ in range(steps):
        opt.zero_grad()
        ((x @ a.T @ b.T - y) ** 2).mean().backward()
        opt.step()
        zs.append((b @ a).detach().to(F64))
    return torch.stack(zs), opt


# float32 rounding of the gradient itself limits agreement to about eps * kappa; before the fallback the
# deviations were 4.0e-3 (kappa 500) and 1.0 (kappa 1e4).
@pytest.mark.parametrize(("cond", "tol"), [(5e2, 2e-4), (1e4, 5e-3)])
def test_float32_steps_match_float64_on_an_ill_conditioned_factor(cond, tol):
    lora_b = ill_factor(cond, rows=512)  # (out, r)
    lora_a = torch.randn(16, 256, generator=torch.Generator().manual_seed(1)).div(16)  # (r, in)
    z32, opt32 = _pair_run(lora_b, lora_a, F32)
    z64, opt64 = _pair_run(lora_b, lora_a, F64)
    rel = ((z32 - z64).flatten(1).norm(dim=1) / z64.flatten(1).norm(dim=1)).max().item()
    assert opt32.basis_fallbacks > 0 and opt64.basis_fallbacks == 0  # float64 Gram is accurate at these kappa
    assert rel < tol


def test_well_conditioned_pairs_never_fall_back():
    lora_b = torch.randn(512, 16, generator=torch.Generator().manual_seed(2)) / 20
    lora_a = torch.randn(16, 256, generator=torch.Generator().manual_seed(1)) / 16
    _, opt = _pair_run(lora_b, lora_a, F32, steps=6)
    assert opt.basis_fallbacks == 0
