"""LoRA-RITE: a transformation-invariant adaptive optimizer for LoRA factor pairs.

What differs from Adam, in plain words: Adam scales every coordinate of ``A`` and ``B`` separately, so
the update of ``Z = A B^T`` changes when the same ``Z`` is written as ``(A R, B R^-T)``. LoRA-RITE
strips each factor's magnitude from its partner's gradient (the "unmagnified" gradient
``G_A R_B^-1``), keeps an ``r x r`` second moment in the partner's orthonormal basis (carried along
when that basis turns), whitens with its inverse square root, and maps the step back through
``R_B^-T``. The resulting change of ``Z`` is the same for every equivalent ``(A, B)``.

Two layers, as in optax: batched, stateless math on stacked ``(k, rows, r)`` factors in
:mod:`trustlab.optim.rite_math` (:func:`cholesky_rinv`, :func:`qr_rinv`, :func:`inverse_root`,
:func:`escaped_mass`, :func:`bias_corrected_decay`), and here the ``torch.optim.Optimizer`` wrapper
:class:`LoRARITE` that pairs, stacks and keeps state.

Implementation choices (see the module spec for the method):
- The factor decomposition ``X = U R`` uses ``R = chol(X^T X)^T`` (an R-factor of QR up to signs),
  one Gram product per factor. The Gram matrix squares the condition number, so a factor whose
  Cholesky-based estimate ``eps * kappa^2`` exceeds :data:`BASIS_TOL` (or that is rank-deficient) is
  decomposed again by a float64 Householder QR (:func:`qr_rinv`, pseudo-inverse on its numerical
  range), and the products that depend on its ``R^-1`` (basis change, unmagnified Gram) are recomputed
  from explicit float64 bases. The method is invariant to which orthonormal basis is used, so this
  gives the same trajectory as Householder QR everywhere, at the cost of one Gram product per factor
  for the well-conditioned ones (the common case).
- Instead of the basis ``U`` the state keeps the previous factor and its ``R^-1``
  (``U_old = X_old R_old^-1``), which saves one tall matmul per factor and step.
- All ``r x r`` algebra runs in float64; tall ``rows x r`` products run in the parameter dtype
  (float32 for half-precision parameters).

Usage with PEFT, the HF Trainer and accelerate (pairs are found by parameter name)::

    model = peft.get_peft_model(base, peft.LoraConfig(r=16, target_modules=[...]))
    opt = create_lora_rite_optimizer(model, lr=1e-3)       # or LoRARITE([LoRAPair(a, b), ...])
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, (s + 1) / 100))
    Trainer(model=model, args=TrainingArguments(..., max_grad_norm=0.0), optimizers=(opt, sched))
    model, opt = accelerator.prepare(model, opt)           # DDP: every rank takes the same step

``max_grad_norm=0`` follows the method's recipe: LoRA-RITE clips the unmagnified gradients itself.

References:
    Jui-Nan Yen, Si Si, Zhao Meng, Felix Yu, Sai Surya Duvvuri, Inderjit S. Dhillon, Cho-Jui Hsieh,
    Sanjiv Kumar. "LoRA Done RITE: Robust Invariant Transformation Equilibration for LoRA
    Optimization." ICLR 2025. https://arxiv.org/abs/2410.20625
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator
from typing import Any

import torch
from torch import nn

from trustlab.optim.pairs import LoRAPair, LoRAPairError, as_matrix, find_lora_pairs, from_matrix
from trustlab.optim.rite_math import (
    BASIS_TOL,
    F64,
    bias_corrected_decay,
    btrace,
    cholesky_rinv,
    escaped_mass,
    inverse_root,
    qr_rinv,
    sym,
    xtx,
)

__all__ = ["BASIS_TOL", "LoRARITE", "bias_corrected_decay", "cholesky_rinv", "create_lora_rite_optimizer",
           "escaped_mass", "inverse_root", "qr_rinv"]

# --------------------------------------------------------------------------------------------------
# Batching helpers.
# --------------------------------------------------------------------------------------------------


def _masked(views: list[tuple[list[int], torch.Tensor, torch.Tensor, torch.Tensor]], mask: torch.Tensor,
            ) -> Iterator[tuple[int, torch.Tensor, torch.Tensor, torch.Tensor]]:
    """``(j, x_j, x_old_j, g_j)`` (each ``(rows, r)``) for the factors ``j`` where ``mask`` is set."""
    todo = set(mask.nonzero().flatten().tolist())
    if not todo:
        return
    for js, x, x_old, gx in views:
        for pos, j in enumerate(js):
            if j in todo:
                yield j, x[pos], x_old[pos], gx[pos]


def _stack(ts: list[torch.Tensor]) -> torch.Tensor:
    """Stack, or return the base when ``ts`` are exactly the rows of one stacked tensor (last step's)."""
    base = ts[0]._base
    if (base is not None and base.shape[0] == len(ts) and base.shape[1:] == ts[0].shape
            and all(t._base is base and t.storage_offset() == i * base.stride(0) for i, t in enumerate(ts))):
        return base
    return torch.stack(ts)


# --------------------------------------------------------------------------------------------------
# The optimizer.
# --------------------------------------------------------------------------------------------------

_RITE_KEYS = ("clip_unmagnified_grad", "update_skipping", "update_capping", "apply_escape", "balance_param")


class LoRARITE(torch.optim.Optimizer):
    """LoRA-RITE over LoRA pairs, plus optional AdamW groups for non-LoRA parameters.

    Every step of a pair ``(lora_A, lora_B)`` (``delta_W = lora_B @ lora_A``; the paper's ``A`` is
    ``lora_B``, its ``B`` is ``lora_A^T``): decompose both factors, unmagnify the gradients, skip
    factors whose unmagnified RMS exceeds ``update_skipping``, clip all unmagnified gradients of all
    pairs together to norm ``clip_unmagnified_grad``, rotate the ``r x r`` second moment and the first
    moment into the new basis, precondition, optionally cap, map back, apply decoupled weight decay.

    Cold start: PEFT initialises ``lora_B = 0``. Then ``lora_B``'s ``R`` is 0, its pseudo-inverse is 0,
    and ``lora_A`` does not move at step 1 (only ``lora_B`` does); both move from step 2. While
    ``lora_B`` is small, ``lora_A``'s step in parameter space is large but the change of
    ``delta_W`` is not (it is invariant).

    Non-finite gradients (NaN/inf in any pair or companion parameter), or factors so large that their
    products overflow: the whole step is skipped,
    no parameter or state changes, and :attr:`skipped_steps` counts it; :attr:`skipped_updates` counts
    the factor updates that ``update_skipping`` zeroed. Ill-conditioned factors are decomposed by
    Householder QR (:attr:`basis_fallbacks` counts them); rank-deficient ones use a pseudo-inverse
    (directions below ``eps`` times the largest singular value get no update from it). Pairs whose factors
    have no gradient are left alone and their step count does not advance.

    Args:
        params: LoRA pairs (:class:`LoRAPair` or ``(lora_A, lora_B)`` tuples in PEFT layout), or param
            groups: dicts with ``"pairs"`` (a LoRA-RITE group) or ``"params"`` (an AdamW group for
            non-LoRA parameters, e.g. a classifier head), each with optional per-group hyperparameters.
            A flat list of tensors is rejected: pairing by position is fragile.
        lr: learning rate (sweep it: the method's best lr is often well above Adam's).
        betas: first- and second-moment decays, bias-corrected as ``b (1 - b^(t-1)) / (1 - b^t)``.
        eps: added after the square root of the second-moment eigenvalues.
        weight_decay: decoupled weight decay ``lr * wd * param`` (breaks invariance; the paper uses 0).
        clip_unmagnified_grad: global norm bound of all unmagnified gradients (0 = off).
        update_skipping: zero a factor's unmagnified gradient when its RMS exceeds this (0 = off). An
            absolute threshold: it assumes a mean-reduced loss (a summed loss can skip every step).
        update_capping: divide the first moment by ``max(1, RMS / cap)`` before use (0 = off).
        apply_escape: add the escaped second-moment mass ``rho`` to the eigenvalues.
        balance_param: after each step rescale both factors to equal Frobenius norms (not in the paper).

    Example:
        >>> a = torch.nn.Parameter(torch.randn(4, 32)); b = torch.nn.Parameter(torch.zeros(16, 4))
        >>> opt = LoRARITE([(a, b)], lr=1e-2)
        >>> (b @ a).mean().backward(); opt.step(); opt.zero_grad()
        >>> bool(b.abs().sum() > 0), bool(opt.skipped_steps == 0)
        (True, True)

    References:
        Yen et al., "LoRA Done RITE: Robust Invariant Transformation Equilibration for LoRA
        Optimization", ICLR 2025, https://arxiv.org/abs/2410.20625
    """

    def __init__(self, params: Iterable[Any], lr: float = 1e-3, betas: tuple[float, float] = (0.9, 0.999),
                 eps: float = 1e-6, weight_decay: float = 0.0, clip_unmagnified_grad: float = 1.0,
                 update_skipping: float = 1.0, update_capping: float = 0.0, apply_escape: bool = False,
                 balance_param: bool = False):
        for name, value in (("lr", lr), ("eps", eps), ("weight_decay", weight_decay),
                            ("clip_unmagnified_grad", clip_unmagnified_grad),
                            ("update_skipping", update_skipping), ("update_capping", update_capping)):
            if not (isinstance(value, (int, float)) and value >= 0 and math.isfinite(value)):
                raise ValueError(f"{name} must be a finite number >= 0, got {value!r}")
        if not all(0.0 <= b < 1.0 for b in betas):
            raise ValueError(f"betas must lie in [0, 1), got {betas!r}")
        defaults = dict(lr=lr, betas=tuple(betas), eps=eps, weight_decay=weight_decay,
                        clip_unmagnified_grad=clip_unmagnified_grad, update_skipping=update_skipping,
                        update_capping=update_capping, apply_escape=apply_escape, balance_param=balance_param)
        super().__init__(_as_groups(params), defaults)

    def add_param_group(self, param_group: dict[str, Any]) -> None:
        group = dict(param_group)
        if "pairs" in group:
            pairs = [_as_pair(p) for p in group.pop("pairs")]
            if not pairs:
                raise LoRAPairError("a LoRA-RITE param group has no pairs")
            group["params"] = [t for p in pairs for t, _ in p.factors()]  # [B1, A1, B2, A2, ...]
            group["rank_dims"] = [(p.rank_dims[1], p.rank_dims[0]) for p in pairs]
            group["pair_names"] = [p.name for p in pairs]
            group["lora"] = True
        else:
            group["lora"] = False
        group.setdefault("skipped_steps", 0)
        group.setdefault("skipped_updates", 0)
        group.setdefault("basis_fallbacks", 0)
        self.__dict__.pop("_layout_cache", None)  # keyed by group identity: rebuild after any change
        super().add_param_group(group)

    @property
    def skipped_steps(self) -> int:
        """How many steps were skipped because a gradient was NaN or infinite."""
        return int(self.param_groups[0]["skipped_steps"]) if self.param_groups else 0

    @property
    def skipped_updates(self) -> int:
        """How many factor updates ``update_skipping`` zeroed (all groups, all steps)."""
        return sum(int(g["skipped_updates"]) for g in self.param_groups)

    @property
    def basis_fallbacks(self) -> int:
        """How many factor decompositions were ill-conditioned and redone by Householder QR (all steps)."""
        return sum(int(g["basis_fallbacks"]) for g in self.param_groups)

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Load state, keeping the saved dtypes (torch would cast the float64 ``r x r`` statistics)."""
        saved = state_dict["state"]
        super().load_state_dict(state_dict)
        self.__dict__.pop("_layout_cache", None)
        params = [p for g in self.param_groups for p in g["params"]]
        for idx, st in saved.items():
            p = params[idx]
            self.state[p] = {k: v.to(device=p.device, copy=True) if torch.is_tensor(v) else v for k, v in st.items()}

    def _layouts(self, group: dict[str, Any]) -> list[_Layout]:
        """Layouts of the group's active pairs (both factors have a gradient), one per (rank, device)."""
        ps = group["params"]
        blocks: dict[tuple[int, torch.device], list[int]] = {}
        for i, dims in enumerate(group["rank_dims"]):
            b, a = ps[2 * i], ps[2 * i + 1]
            if b.grad is None or a.grad is None:
                continue
            if b.grad.is_sparse or a.grad.is_sparse:
                raise RuntimeError("LoRARITE does not support sparse gradients")
            blocks.setdefault((b.shape[dims[0]], b.device), []).append(i)
        cache = self.__dict__.setdefault("_layout_cache", {})
        out = []
        for pairs in blocks.values():
            key = (id(group), tuple(pairs))
            if key not in cache:
                cache[key] = _Layout(group, pairs)
            out.append(cache[key])
        return out

    @torch.no_grad()
    def step(self, closure: Any = None) -> Any:
        """One step. Returns the closure's loss when a closure is given."""
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        plans = [_RankBlock(self, g, lay) for g in self.param_groups if g["lora"] for lay in self._layouts(g)]
        sumsq = [blk.prepare() for blk in plans]
        others = [p for g in self.param_groups if not g["lora"] for p in g["params"] if p.grad is not None]
        finite = torch.stack([s[0] for s in sumsq] + [g.grad.float().square().sum() for g in others]
                             ).isfinite().all() if (sumsq or others) else torch.tensor(True)
        if not bool(finite):
            for g in self.param_groups:
                g["skipped_steps"] += 1
            return loss
        norm = torch.stack([s[1] for s in sumsq]).sum().sqrt() if sumsq else None
        for blk in plans:
            blk.group["skipped_updates"] += int((blk.keep == 0).sum())
            blk.group["basis_fallbacks"] += blk.n_fallback
            blk.apply(norm)
        for g in self.param_groups:
            if not g["lora"]:
                _adamw_step(self, g)
        return loss


def _as_pair(p: Any) -> LoRAPair:
    if isinstance(p, LoRAPair):
        return p
    if isinstance(p, (tuple, list)) and len(p) == 2:
        return LoRAPair(p[0], p[1])
    raise LoRAPairError(f"expected a LoRAPair or a (lora_A, lora_B) tuple, got {type(p).__name__}")


def _as_groups(params: Iterable[Any]) -> list[dict[str, Any]]:
    items = list(params)
    if not items:
        raise LoRAPairError("no LoRA pairs given: the model has no trainable lora_A/lora_B parameters")
    if all(isinstance(x, dict) for x in items):
        return items
    if any(torch.is_tensor(x) for x in items):
        raise LoRAPairError("LoRARITE needs LoRA pairs, not a flat list of tensors (pairing by position is "
                            "fragile): use create_lora_rite_optimizer(model) or pass [(lora_A, lora_B), ...]")
    return [{"pairs": items}]


class _Layout:
    """How the active pairs of one group that share rank and device are batched (cached per active set).

    Factors are numbered ``2i`` (``lora_B`` of pair ``i``, the paper's ``A``) and ``2i + 1`` (its
    ``lora_A``); each factor's partner is ``j ^ 1``. Tall work is batched per bucket of factors with
    the same matrix shape and orientation (see :func:`as_matrix`), ``r x r`` work over the whole block.
    """

    def __init__(self, group: dict[str, Any], pairs: list[int]):
        self.params: list[torch.Tensor] = []
        self.dims: list[int] = []
        for i in pairs:
            self.params += [group["params"][2 * i], group["params"][2 * i + 1]]
            self.dims += list(group["rank_dims"][i])
        p0 = self.params[0]
        self.dtype = torch.float32 if p0.dtype in (torch.float16, torch.bfloat16) else p0.dtype
        self.rank = p0.shape[self.dims[0]]
        buckets: dict[tuple[tuple[int, ...], bool], list[int]] = {}
        for j, (p, dim) in enumerate(zip(self.params, self.dims, strict=True)):
            mat, rank_first = as_matrix(p, dim)
            buckets.setdefault((tuple(mat.shape), rank_first), []).append(j)
        dev = p0.device
        self.buckets = [(js, torch.tensor(js, device=dev), rank_first) for (_, rank_first), js in buckets.items()]
        self.partner = torch.arange(len(self.params), device=dev) ^ 1
        self.rows = torch.tensor([p.numel() // self.rank for p in self.params], dtype=F64, device=dev)


class _RankBlock:
    """One step of one :class:`_Layout`: :meth:`prepare` (before the global norm), then :meth:`apply`."""

    def __init__(self, opt: LoRARITE, group: dict[str, Any], layout: _Layout):
        self.group, self.lay = group, layout
        self.states = [opt.state[p] for p in layout.params]
        r, dt = layout.rank, layout.dtype
        for p, dim, st in zip(layout.params, layout.dims, self.states, strict=True):
            if not st:
                shape = as_matrix(p, dim)[0].shape
                st.update(step=torch.zeros((), dtype=torch.float32),
                          exp_avg=p.new_zeros(shape, dtype=dt), prev_factor=p.new_zeros(shape, dtype=dt),
                          prev_rinv=p.new_zeros(r, r, dtype=F64), exp_avg_sq=p.new_zeros(r, r, dtype=F64),
                          escape=p.new_zeros((), dtype=F64))
            st.setdefault("basis_cond", p.new_ones((), dtype=F64))  # kappa of prev_factor (absent in old checkpoints)

    def prepare(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Decompose factors, unmagnify gradients; return (raw sum of squares, kept sum of squares).

        The raw sum is NaN when anything the step needs is not finite (the step is then skipped).
        """
        lay = self.lay
        n, r, dev = len(lay.params), lay.rank, lay.params[0].device
        gram, cross, gtg = (torch.empty(n, r, r, dtype=F64, device=dev) for _ in range(3))
        self.y, self.g, views = [], [], []
        for js, idx, rank_first in lay.buckets:
            # natural layout (k, r, rows) if rank_first else (k, rows, r); x = the (k, rows, r) view
            y = torch.stack([as_matrix(lay.params[j], lay.dims[j])[0] for j in js]).to(lay.dtype)
            g = torch.stack([as_matrix(lay.params[j].grad, lay.dims[j])[0] for j in js]).to(lay.dtype)
            y_old = _stack([self.states[j]["prev_factor"] for j in js])
            x, x_old, gx = (t.mT for t in (y, y_old, g)) if rank_first else (y, y_old, g)
            gram[idx], cross[idx], gtg[idx] = ((x.mT @ x).to(F64), (x.mT @ x_old).to(F64),
                                               (gx.mT @ gx).to(F64))
            self.y.append(y)
            self.g.append(g)
            views.append((js, x, x_old, gx))
        eps = torch.finfo(lay.dtype).eps
        self.rinv, self.cond, ok = cholesky_rinv(sym(gram), eps)  # (n, r, r), (n,), (n,)
        rinv_old = torch.stack([st["prev_rinv"] for st in self.states])
        cond_old = torch.stack([st["basis_cond"] for st in self.states])
        self.n_fallback = int((~ok).sum())
        for j, x, _, _ in _masked(views, ~ok):
            rinv_j, cond_j = qr_rinv(x[None], rtol=eps)
            self.rinv[j], self.cond[j] = rinv_j[0], cond_j[0]
        q = self.rinv.mT @ cross @ rinv_old  # U_new^T U_old of each factor
        rp = self.rinv[lay.partner]
        self.c_raw = sym(rp.mT @ gtg @ rp)  # Gbar^T Gbar (n, r, r)
        # Gram-type products in the factors' dtype lose about eps * kappa * kappa' of relative accuracy:
        # where that exceeds the tolerance (ill-conditioned factors only), recompute them from explicit
        # float64 bases U = X R^-1 and unmagnified gradients G R_p^-1.
        for j, x, x_old, _ in _masked(views, eps * self.cond * cond_old > BASIS_TOL):
            q[j] = (x.to(F64) @ self.rinv[j]).mT @ (x_old.to(F64) @ rinv_old[j])
        for j, _, _, g in _masked(views, eps * self.cond[lay.partner] ** 2 > BASIS_TOL):
            self.c_raw[j] = xtx(g.to(F64) @ rp[j])
        self.p = q[lay.partner]  # basis change of each factor's partner: P_A = U_B^T U_B,old
        sumsq = btrace(self.c_raw)
        skip = self.group["update_skipping"]
        rms = (sumsq.clamp_min(0) / (lay.rows * r)).sqrt()
        self.keep = (rms <= skip).to(F64) if skip > 0 else torch.ones_like(rms)
        # a basis change that overflowed (factors too large for their dtype) makes the step non-finite too
        raw = torch.where(self.p.isfinite().all(), sumsq.sum(), torch.nan)
        return raw, (self.keep * sumsq.nan_to_num(0.0)).sum()

    def apply(self, norm: torch.Tensor) -> None:
        grp, st, lay = self.group, self.states, self.lay
        b1, b2 = grp["betas"]
        clip = grp["clip_unmagnified_grad"]
        scale = (clip / norm.clamp_min(1e-300)).clamp_max(1.0) if clip > 0 else torch.ones((), dtype=F64)
        gain = self.keep * scale  # (n,) multiplier of each unmagnified gradient
        steps = torch.stack([s["step"] for s in st]) + 1
        d1, d2 = bias_corrected_decay(b1, steps), bias_corrected_decay(b2, steps)  # (n,)
        v_old = torch.stack([s["exp_avg_sq"] for s in st])
        v_rot = sym(self.p @ v_old @ self.p.mT)
        rho = torch.zeros_like(d2)
        if grp["apply_escape"]:
            rho = d2 * (torch.stack([s["escape"] for s in st]) + escaped_mass(v_old, v_rot))
        c = self.c_raw * (gain.square() / lay.rows)[:, None, None]
        v = sym(d2[:, None, None] * v_rot + (1 - d2)[:, None, None] * c)
        rp = self.rinv[lay.partner]
        # rank-last algebra: M = d1 M_old P^T + G K with K = (1 - d1) gain R_p^-1 (V + rho)^-1/2;
        # step = M R_p^-T (divided by the cap factor). Rank-first buckets compute the transposes.
        k_mat = (rp @ inverse_root(v, rho, grp["eps"])) * ((1 - d1) * gain)[:, None, None]
        p_mom = self.p.mT * d1[:, None, None]
        back = rp.mT
        n = len(lay.params)
        new_m: list[torch.Tensor] = [torch.empty(0)] * n
        new_y: list[torch.Tensor] = [torch.empty(0)] * n
        deltas: list[torch.Tensor] = [torch.empty(0)] * n
        cap = grp["update_capping"]
        for (js, idx, rank_first), y, g in zip(lay.buckets, self.y, self.g, strict=True):
            m_old = _stack([st[j]["exp_avg"] for j in js])
            pm, km, bk = (t[idx].to(lay.dtype) for t in (p_mom, k_mat, back))
            if rank_first:
                m = torch.baddbmm(pm.mT @ m_old, km.mT, g)  # (k, r, rows)
            else:
                m = torch.baddbmm(m_old @ pm, g, km)  # (k, rows, r)
            if cap > 0:
                bk = bk / (m.square().mean((1, 2)).sqrt() / cap).clamp_min(1.0)[:, None, None]
            delta = bk.mT @ m if rank_first else m @ bk
            for j, m_j, y_j, d_j in zip(js, m.unbind(0), y.unbind(0), delta.unbind(0), strict=True):
                new_m[j], new_y[j], deltas[j] = m_j, y_j, d_j
        lr, wd = grp["lr"], grp["weight_decay"]
        updates = [from_matrix(d, p, dim).to(p.dtype) for d, p, dim in zip(deltas, lay.params, lay.dims, strict=True)]
        if wd > 0:
            torch._foreach_mul_(lay.params, 1 - lr * wd)
        torch._foreach_add_(lay.params, updates, alpha=-lr)
        if grp["balance_param"]:
            _balance(lay.params)
        steps_f = steps.to(torch.float32)
        for s, t_j, m_j, y_j, ri_j, v_j, rho_j, c_j in zip(st, steps_f.unbind(0), new_m, new_y, self.rinv.unbind(0),
                                                           v.unbind(0), rho.unbind(0), self.cond.unbind(0),
                                                           strict=True):
            s["step"], s["exp_avg"], s["prev_factor"], s["prev_rinv"], s["exp_avg_sq"], s["escape"] = (
                t_j, m_j, y_j, ri_j, v_j, rho_j)
            s["basis_cond"] = c_j


def _balance(params: list[torch.Tensor]) -> None:
    """Rescale each pair ``(params[2i], params[2i+1])`` to the geometric mean of their norms."""
    norms = torch.stack(torch._foreach_norm(params)).to(F64).view(-1, 2)
    target = (norms[:, 0] * norms[:, 1]).sqrt()
    factors = torch.where(norms > 0, target[:, None] / norms.clamp_min(1e-300), torch.ones_like(norms))
    torch._foreach_mul_(params, [f.to(p.dtype) for f, p in zip(factors.flatten(), params, strict=True)])


def _adamw_step(opt: LoRARITE, group: dict[str, Any]) -> None:
    """Plain AdamW (bias-corrected) for the companion, non-LoRA parameters of a group."""
    b1, b2 = group["betas"]
    lr, wd, eps = group["lr"], group["weight_decay"], group["eps"]
    for p in group["params"]:
        if p.grad is None:
            continue
        st = opt.state[p]
        if not st:
            st.update(step=torch.zeros((), dtype=torch.float32), exp_avg=torch.zeros_like(p),
                      exp_avg_sq=torch.zeros_like(p))
        st["step"] += 1
        t = float(st["step"])
        st["exp_avg"].lerp_(p.grad, 1 - b1)
        st["exp_avg_sq"].mul_(b2).addcmul_(p.grad, p.grad, value=1 - b2)
        denom = (st["exp_avg_sq"] / (1 - b2**t)).sqrt_().add_(eps)
        p.mul_(1 - lr * wd).addcdiv_(st["exp_avg"], denom, value=-lr / (1 - b1**t))


def create_lora_rite_optimizer(model: nn.Module, lr: float = 1e-3, *, non_lora: str = "adamw",
                               non_lora_lr: float | None = None, non_lora_weight_decay: float = 0.0,
                               non_lora_eps: float = 1e-8, adapter: str | None = None,
                               **kwargs: Any) -> LoRARITE:
    """Build :class:`LoRARITE` for a (PEFT) model, pairing ``lora_A`` / ``lora_B`` by parameter name.

    Args:
        model: a model whose trainable LoRA factors follow PEFT naming (``...lora_A.<adapter>.weight``).
            To pair factors yourself, build ``LoRARITE([LoRAPair(a, b, name=...), ...])`` directly.
        lr: learning rate of the LoRA pairs.
        non_lora: what to do with trainable parameters that are not LoRA factors (e.g. a head in PEFT's
            ``modules_to_save``): ``"adamw"`` optimizes them with AdamW in a companion param group of
            the same optimizer (one object for Trainer, schedulers and ``state_dict``); ``"error"``
            raises; ``"ignore"`` leaves them out (they will not be updated).
        non_lora_lr: AdamW lr of the companion group (default ``lr``).
        non_lora_weight_decay: AdamW weight decay of the companion group.
        non_lora_eps: AdamW epsilon of the companion group.
        adapter: only this PEFT adapter's factors (default: all trainable ones).
        **kwargs: other :class:`LoRARITE` hyperparameters (``betas``, ``eps``, ``weight_decay``, ...).

    Raises:
        LoRAPairError: no trainable LoRA pairs, an unpaired factor, mismatched shapes, or non-LoRA
            trainable parameters with ``non_lora="error"``.

    Example:
        >>> from peft import LoraConfig, get_peft_model
        >>> net = get_peft_model(torch.nn.Sequential(torch.nn.Linear(8, 8)), LoraConfig(r=2, target_modules=["0"]))
        >>> opt = create_lora_rite_optimizer(net, lr=1e-2)
        >>> [len(g["params"]) for g in opt.param_groups]
        [2]
    """
    if non_lora not in ("adamw", "error", "ignore"):
        raise ValueError(f"non_lora must be 'adamw', 'error' or 'ignore', got {non_lora!r}")
    pairs, others = find_lora_pairs(model, adapter=adapter)
    if not pairs:
        raise LoRAPairError("the model has no trainable LoRA pairs (no parameters named lora_A/lora_B with "
                            "requires_grad); wrap it with peft.get_peft_model first")
    groups: list[dict[str, Any]] = [{"pairs": pairs}]
    if others and non_lora == "error":
        names = ", ".join(n for n, _ in others[:5]) + (" ..." if len(others) > 5 else "")
        raise LoRAPairError(f"{len(others)} trainable non-LoRA parameters ({names}); pass non_lora='adamw' to "
                            "train them with AdamW, or freeze them")
    if others and non_lora == "adamw":
        groups.append({"params": [p for _, p in others], "lr": lr if non_lora_lr is None else non_lora_lr,
                       "weight_decay": non_lora_weight_decay, "eps": non_lora_eps})
    return LoRARITE(groups, lr=lr, **kwargs)
