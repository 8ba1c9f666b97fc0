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
:class:`LoRARITE` that pairs, stacks and keeps state. The state of each block of same-rank pairs stays
stacked between steps (:class:`trustlab.optim.pairs.BlockLayout`; each parameter's state entries are
views into the stacks, updated in place as in ``torch.optim.AdamW``), so a step stacks only the factors
and their gradients, into reused buffers.

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
  (float32 for half-precision parameters). A float32 inverse root was off by up to 1.3e-3 (relative,
  spectral norm) on SmolLM2's rank-16 second moments (condition numbers up to 1.5e5), for about 1 ms of
  a 40 ms step, so it stays float64.

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

from trustlab.optim.pairs import BlockLayout, LoRAPair, LoRAPairError, as_matrix, find_lora_pairs, from_matrix
from trustlab.optim.rite_math import (
    BASIS_TOL,
    F64,
    balance_pairs,
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
# The optimizer.
# --------------------------------------------------------------------------------------------------


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

    @property
    def buffer_bytes(self) -> int:
        """Bytes of the reused step buffers held outside ``state`` (spare tall moments, gradient stacks)."""
        lays = self.__dict__.get("_layout_cache", {}).values()
        spares = [bufs[1] for lay in lays for per_bucket in lay.tall.values() for bufs in per_bucket]
        return sum(t.untyped_storage().nbytes() for t in spares + [w for lay in lays for w in lay.work])

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Load state, keeping the saved dtypes (torch would cast the float64 ``r x r`` statistics)."""
        saved = state_dict["state"]
        super().load_state_dict(state_dict)
        self.__dict__.pop("_layout_cache", None)
        params = [p for g in self.param_groups for p in g["params"]]
        for idx, st in saved.items():
            p = params[idx]
            self.state[p] = {k: v.to(device=p.device, copy=True) if torch.is_tensor(v) else v for k, v in st.items()}

    def _layouts(self, group: dict[str, Any]) -> list[BlockLayout]:
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
                cache[key] = BlockLayout(group, pairs)
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


class _RankBlock:
    """One step of one :class:`BlockLayout`: :meth:`prepare` (before the global norm), then :meth:`apply`."""

    def __init__(self, opt: LoRARITE, group: dict[str, Any], layout: BlockLayout):
        self.group, self.lay = group, layout
        self.states = layout.bind(opt)

    def _groups(self, mask: torch.Tensor) -> Iterator[tuple[int, torch.Tensor, torch.Tensor]]:
        """``(bucket, block indices, positions in the bucket)`` of the factors where ``mask`` is set."""
        if not bool(mask.any()):
            return
        for k, (lo, hi, _) in enumerate(self.lay.buckets):
            local = mask[lo:hi].nonzero().flatten()
            if len(local):
                yield k, local + lo, local

    def _rows64(self, k: int, which: int, local: torch.Tensor) -> torch.Tensor:
        """Factors ``local`` of bucket ``k`` (``which``: 0 now, 1 previous, 2 gradient) as float64 ``(k', r, rows)``.

        This layout makes ``Y Y^T`` the fast Gram product (about 3x faster than ``X^T X`` of a row-major
        ``(rows, r)`` factor on MKL).
        """
        t = self.nat[k][which][local]
        return (t if self.lay.buckets[k][2] else t.mT).to(F64, memory_format=torch.contiguous_format)

    def prepare(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Decompose factors, unmagnify gradients; return (raw sum of squares, kept sum of squares).

        The raw sum is NaN when anything the step needs is not finite (the step is then skipped).
        """
        lay, tall, small = self.lay, self.lay.tall, self.lay.small
        n, r, dev = len(lay.params), lay.rank, lay.params[0].device
        gram, cross, gtg = (torch.empty(n, r, r, dtype=F64, device=dev) for _ in range(3))
        self.nat: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = []  # (y, y_old, g) per bucket
        for k, (lo, hi, rank_first) in enumerate(lay.buckets):
            # natural layout (k, r, rows) if rank_first else (k, rows, r); x = the (k, rows, r) view.
            # The factors are copied into the spare buffer: next step's prev_factor (swapped in apply).
            y, y_old, g = tall["prev_factor"][k][1], tall["prev_factor"][k][0], lay.work[k]
            for buf, views, of_grad in ((y, lay.views["prev_factor"][1], False), (g, lay.work_views, True)):
                mats = [as_matrix(p.grad if of_grad else p, d)[0]
                        for p, d in zip(lay.params[lo:hi], lay.dims[lo:hi], strict=True)]
                if lay.plain[k]:
                    torch.stack(mats, out=buf)  # in place (the state views stay valid), faster than a copy each
                else:
                    torch._foreach_copy_(views[lo:hi], mats)  # casts half-precision factors
            x, x_old, gx = (t.mT for t in (y, y_old, g)) if rank_first else (y, y_old, g)
            gram[lo:hi], cross[lo:hi], gtg[lo:hi] = ((x.mT @ x).to(F64), (x.mT @ x_old).to(F64),
                                                     (gx.mT @ gx).to(F64))
            self.nat.append((y, y_old, g))
        eps = torch.finfo(lay.dtype).eps
        self.rinv, self.cond, ok = cholesky_rinv(sym(gram), eps)  # (n, r, r), (n,), (n,)
        rinv_old, cond_old = small["prev_rinv"], small["basis_cond"]
        self.n_fallback = int((~ok).sum())
        for k, bs, li in self._groups(~ok):  # ill-conditioned or rank-deficient: float64 Householder QR
            self.rinv[bs], self.cond[bs] = qr_rinv(self._rows64(k, 0, li).mT, rtol=eps)
        q = self.rinv.mT @ cross @ rinv_old  # U_new^T U_old of each factor
        rp = self.rinv[lay.partner]
        self.c_raw = sym(rp.mT @ gtg @ rp)  # Gbar^T Gbar (n, r, r)
        # Gram-type products in the factors' dtype lose about eps * kappa * kappa' of relative accuracy:
        # where that exceeds the tolerance (ill-conditioned factors only), recompute them from explicit
        # float64 bases U = X R^-1 and unmagnified gradients G R_p^-1.
        for k, bs, li in self._groups(eps * self.cond * cond_old > BASIS_TOL):
            u, u_old = (self._rows64(k, t, li).mT @ ri for t, ri in ((0, self.rinv[bs]), (1, rinv_old[bs])))
            q[bs] = u.mT @ u_old
        for k, bs, li in self._groups(eps * self.cond[lay.partner] ** 2 > BASIS_TOL):
            self.c_raw[bs] = xtx(self._rows64(k, 2, li).mT @ rp[bs])
        self.p = q[lay.partner]  # basis change of each factor's partner: P_A = U_B^T U_B,old
        sumsq = btrace(self.c_raw)
        skip = self.group["update_skipping"]
        rms = (sumsq.clamp_min(0) / (lay.rows * r)).sqrt()
        self.keep = (rms <= skip).to(F64) if skip > 0 else torch.ones_like(rms)
        # a basis change that overflowed (factors too large for their dtype) makes the step non-finite too
        raw = torch.where(self.p.isfinite().all(), sumsq.sum(), torch.nan)
        return raw, (self.keep * sumsq.nan_to_num(0.0)).sum()

    def apply(self, norm: torch.Tensor) -> None:
        grp, lay, small = self.group, self.lay, self.lay.small
        b1, b2 = grp["betas"]
        clip = grp["clip_unmagnified_grad"]
        scale = (clip / norm.clamp_min(1e-300)).clamp_max(1.0) if clip > 0 else torch.ones((), dtype=F64)
        gain = self.keep * scale  # (n,) multiplier of each unmagnified gradient
        steps = small["step"] + 1
        d1, d2 = bias_corrected_decay(b1, steps), bias_corrected_decay(b2, steps)  # (n,)
        v_old = small["exp_avg_sq"]
        v_rot = sym(self.p @ v_old @ self.p.mT)
        rho = torch.zeros_like(d2)
        if grp["apply_escape"]:
            rho = d2 * (small["escape"] + escaped_mass(v_old, v_rot))
        c = self.c_raw * (gain.square() / lay.rows)[:, None, None]
        v = sym(d2[:, None, None] * v_rot + (1 - d2)[:, None, None] * c)
        rp = self.rinv[lay.partner]
        # rank-last algebra: M = d1 M_old P^T + G K with K = (1 - d1) gain R_p^-1 (V + rho)^-1/2;
        # step = M R_p^-T (divided by the cap factor). Rank-first buckets compute the transposes.
        k_mat = (rp @ inverse_root(v, rho, grp["eps"])) * ((1 - d1) * gain)[:, None, None]
        p_mom = self.p.mT * d1[:, None, None]
        back = rp.mT
        cap, lr, wd = grp["update_capping"], grp["lr"], grp["weight_decay"]
        if wd > 0:
            torch._foreach_mul_(lay.params, 1 - lr * wd)
        for k, ((lo, hi, rank_first), (_, _, g)) in enumerate(zip(lay.buckets, self.nat, strict=True)):
            m_old, m = lay.tall["exp_avg"][k]  # the new moment goes into the spare buffer
            pm, km, bk = (t[lo:hi].to(lay.dtype) for t in (p_mom, k_mat, back))
            if rank_first:  # (k, r, rows)
                torch.bmm(pm.mT, m_old, out=m).baddbmm_(km.mT, g)
            else:  # (k, rows, r)
                torch.bmm(m_old, pm, out=m).baddbmm_(g, km)
            if cap > 0:
                bk = bk / (m.square().mean((1, 2)).sqrt() / cap).clamp_min(1.0)[:, None, None]
            delta = torch.bmm(bk.mT, m, out=m_old) if rank_first else torch.bmm(m, bk, out=m_old)  # m_old is spent
            ps = lay.params[lo:hi]
            updates = (delta.unbind(0) if lay.plain[k] else
                       [from_matrix(d, p, dim).to(p.dtype) for d, p, dim in zip(delta, ps, lay.dims[lo:hi], strict=True)])
            torch._foreach_add_(ps, updates, alpha=-lr)
        if grp["balance_param"]:
            balance_pairs(lay.pair_params)
        for key, new in (("step", steps.to(torch.float32)), ("prev_rinv", self.rinv), ("exp_avg_sq", v),
                         ("escape", rho), ("basis_cond", self.cond)):
            small[key].copy_(new)
        lay.swap(self.states)


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
