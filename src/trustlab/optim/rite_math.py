"""LoRA-RITE's math core: batched, stateless operations on stacked ``(k, rows, r)`` factors and ``(k, r, r)``
statistics (the optimizer wrapper is :class:`trustlab.optim.lora_rite.LoRARITE`).

All ``r x r`` algebra runs in float64.
"""

from __future__ import annotations

import math

import torch

F64 = torch.float64


def bias_corrected_decay(beta: float, step: torch.Tensor) -> torch.Tensor:
    """Adafactor-style decay ``b * (1 - b^(t-1)) / (1 - b^t)`` at step ``t >= 1``: 0 at ``t = 1``, -> b."""
    t = step.to(F64)
    return beta * (1 - beta ** (t - 1)) / (1 - beta**t)


# One-pass Cholesky basis accepted while ``eps * kappa_est^2`` stays below this: its orthonormality error
# grows like ``eps * kappa^2`` (about 1e-6 here in float32), so well-conditioned factors keep the fast path.
BASIS_TOL = 1e-5


def cholesky_rinv(gram: torch.Tensor, eps: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``R^-1`` from ``X^T X = R^T R`` (one Cholesky pass), a condition estimate and whether to trust it.

    The Gram matrix squares the condition number, so the basis ``U = X R^-1`` is orthonormal only to
    about ``eps * kappa(X)^2``. The estimate ``max_i (X^T X)_ii * ||R^-1||_F^2`` lies within a factor
    ``r`` of ``kappa(X)^2`` either way (from the Cholesky factor already computed, no extra tall work).

    Args:
        gram: ``(k, r, r)`` float64 Gram matrices, computed from factors whose unit roundoff is ``eps``.
        eps: machine epsilon of the dtype the Gram products ran in.

    Returns:
        ``(rinv, cond, ok)``: ``(k, r, r)`` ``R^-1``, ``(k,)`` estimated ``kappa(X)`` and ``(k,)`` bool: the
        factorization succeeded and ``eps * cond^2 <= BASIS_TOL`` (or the factor is zero: ``R^-1 = 0``). Where ``ok`` is False, use
        :func:`qr_rinv` on the factor itself.
    """
    chol, info = torch.linalg.cholesky_ex(gram)  # gram = L L^T, R = L^T
    eye = torch.eye(gram.shape[-1], dtype=gram.dtype, device=gram.device).expand_as(gram)
    rinv = torch.linalg.solve_triangular(chol.mT, eye, upper=True)  # L^-T
    scale = gram.diagonal(dim1=-2, dim2=-1).amax(-1)  # (k,)
    zero = scale == 0  # a zero factor (PEFT's lora_B at init): R^-1 = 0 exactly, no fallback needed
    cond2 = torch.where(zero, 1.0, scale * rinv.square().sum((-2, -1)))
    rinv = torch.where(zero[:, None, None], 0.0, rinv)
    ok = zero | ((info == 0) & cond2.isfinite() & (eps * cond2 <= BASIS_TOL))
    return rinv, cond2.clamp_min(1.0).sqrt(), ok


def qr_rinv(x: torch.Tensor, rtol: float) -> tuple[torch.Tensor, torch.Tensor]:
    """``R^-1`` (pseudo-inverse where rank-deficient) from a float64 Householder QR of the factors themselves.

    For ill-conditioned or rank-deficient factors, where :func:`cholesky_rinv` is not accurate. With
    ``X = Q R`` and ``R = W diag(s) Z^T``, ``R^+ = Z diag(1/s)`` on the kept directions: ``U = X R^+`` has
    orthonormal columns spanning the factor's range and zero columns elsewhere.

    Args:
        x: ``(k, rows, r)`` factors (any float dtype; the QR runs in float64).
        rtol: singular values ``s <= rtol * max(s)`` count as zero: the factor's numerical rank deficiency.
            Use ``eps`` of the factor's dtype: rounding a rank-deficient factor to float32 leaves spurious
            singular values near ``0.3 eps * max(s)``, so smaller directions are noise.

    Returns:
        ``(rinv, cond)``: ``(k, r, r)`` float64 ``R^+`` and ``(k,)`` ``max(s) / min(kept s)`` (1 when nothing
        is kept: a zero factor gives ``R^+ = 0``).

    Example:
        >>> x = torch.randn(64, 4, dtype=torch.float64) @ torch.diag(torch.tensor([1.0, 1e-3, 1e-6, 0.0], dtype=torch.float64))
        >>> rinv, cond = qr_rinv(x[None], rtol=1e-12)
        >>> int((rinv.abs().sum(-2) > 0).sum())  # kept directions
        3
    """
    r = torch.linalg.qr(x.to(F64), mode="r")[1]  # (k, r, r)
    _, s, zt = torch.linalg.svd(r)
    keep = s > rtol * s[..., :1]
    inv = torch.where(keep, 1.0 / s.clamp_min(torch.finfo(F64).tiny), torch.zeros_like(s))
    s_min = torch.where(keep, s, torch.full_like(s, math.inf)).amin(-1)
    cond = torch.where(keep.any(-1), s[..., 0] / s_min, torch.ones_like(s_min))
    return zt.mT * inv.unsqueeze(-2), cond


def inverse_root(v: torch.Tensor, rho: torch.Tensor, eps: float) -> torch.Tensor:
    """``(V + rho I)^-1/2`` with ``eps`` added after the root: eigenvalues ``w -> 1 / (sqrt(w + rho) + eps)``.

    Args:
        v: ``(k, r, r)`` symmetric PSD matrices; negative round-off eigenvalues are clamped to 0.
        rho: ``(k,)`` escaped mass added to every eigenvalue (0 when escape is off).
        eps: added after the square root.
    """
    w, q = torch.linalg.eigh(v)
    inv = 1.0 / ((w.clamp_min(0) + rho.unsqueeze(-1)).sqrt() + eps)
    return (q * inv.unsqueeze(-2)) @ q.mT


def escaped_mass(v_old: torch.Tensor, v_rot: torch.Tensor) -> torch.Tensor:
    """Second-moment mass lost when the basis turns: ``min(max(max_i(dlambda_i), 0), max(dtrace, 0))``."""
    d_eig = (torch.linalg.eigvalsh(v_old) - torch.linalg.eigvalsh(v_rot)).amax(-1).clamp_min(0)
    d_tr = (btrace(v_old) - btrace(v_rot)).clamp_min(0)
    return torch.minimum(d_eig, d_tr)


def btrace(x: torch.Tensor) -> torch.Tensor:
    """Trace of each matrix of a batch."""
    return x.diagonal(dim1=-2, dim2=-1).sum(-1)


def sym(x: torch.Tensor) -> torch.Tensor:
    """``(X + X^T) / 2`` batched: removes round-off asymmetry."""
    return 0.5 * (x + x.mT)


def xtx(x: torch.Tensor) -> torch.Tensor:
    """The symmetrised Gram matrix ``X^T X``."""
    return sym(x.mT @ x)


def balance_pairs(params: list[torch.Tensor]) -> None:
    """Rescale each pair ``(params[2i], params[2i+1])`` in place to the geometric mean of their norms.

    Example:
        >>> a, b = torch.full((2, 2), 4.0), torch.ones(2, 2)
        >>> balance_pairs([a, b]); float(a.norm()), float(b.norm())
        (4.0, 4.0)
    """
    norms = torch.stack(torch._foreach_norm(params)).to(F64).view(-1, 2)
    target = (norms[:, 0] * norms[:, 1]).sqrt()
    factors = torch.where(norms > 0, target[:, None] / norms.clamp_min(1e-300), torch.ones_like(norms))
    torch._foreach_mul_(params, [f.to(p.dtype) for f, p in zip(factors.flatten(), params, strict=True)])
