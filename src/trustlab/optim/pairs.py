"""Find LoRA factor pairs by parameter name, never by order, and lay them out in same-shape blocks.

PEFT names the two factors of one adapted module ``<prefix>.lora_A.<adapter>.weight`` (shape
``(r, in, ...)``, rank axis 0) and ``<prefix>.lora_B.<adapter>.weight`` (shape ``(out, r, ...)``, rank
axis 1); embeddings use ``lora_embedding_A`` / ``lora_embedding_B`` with the same layout. A pair is the
``lora_A`` and ``lora_B`` whose names agree once ``A`` and ``B`` are swapped.
"""

from __future__ import annotations

import operator
import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from trustlab.errors import TrustlabError
from trustlab.optim.rite_math import F64

# "lora_A" / "lora_embedding_A" as a whole dotted name component; group 1 is everything before "A".
_SMALL = ("step", "prev_rinv", "exp_avg_sq", "escape", "basis_cond")  # LoRA-RITE state, stacked per block
_TALL = ("exp_avg", "prev_factor")  # tall LoRA-RITE state, stacked per bucket

_FACTOR = re.compile(r"(?:^|\.)(lora_(?:embedding_)?)([AB])(?=\.|$)")


class LoRAPairError(TrustlabError, ValueError):
    """No LoRA pairs, an unpaired factor, or a pair whose shapes do not fit together."""


@dataclass(frozen=True)
class LoRAPair:
    """The two factors of one LoRA adapter, ``delta_W = lora_B @ lora_A`` (PEFT layout).

    Attributes:
        lora_A: the down-projection factor; its rank axis is ``rank_dims[0]`` (PEFT: 0, shape ``(r, in)``).
        lora_B: the up-projection factor; its rank axis is ``rank_dims[1]`` (PEFT: 1, shape ``(out, r)``).
        name: a label for error messages and logs (the module path).
        rank_dims: the rank axis of each factor. Use ``(1, 1)`` for the paper's layout ``Z = A B^T`` with
            ``A`` (m x r) and ``B`` (n x r) passed as ``lora_B=A, lora_A=B``.

    Example:
        >>> a = torch.nn.Parameter(torch.randn(4, 32))   # (r, in)
        >>> b = torch.nn.Parameter(torch.zeros(16, 4))   # (out, r)
        >>> LoRAPair(a, b, name="fc").rank
        4
    """

    lora_A: torch.Tensor
    lora_B: torch.Tensor
    name: str = ""
    rank_dims: tuple[int, int] = (0, 1)

    def __post_init__(self) -> None:
        label = self.name or "pair"
        for which, p, dim in (("lora_A", self.lora_A, self.rank_dims[0]), ("lora_B", self.lora_B, self.rank_dims[1])):
            if not isinstance(p, torch.Tensor):
                raise LoRAPairError(f"{label}: {which} must be a tensor, got {type(p).__name__}")
            if p.ndim < 2 or not -p.ndim <= dim < p.ndim:
                raise LoRAPairError(f"{label}: {which} of shape {tuple(p.shape)} has no rank axis {dim}")
            if p.is_complex() or not p.is_floating_point():
                raise LoRAPairError(f"{label}: {which} must be a real floating-point tensor, got {p.dtype}")
        if self.lora_A is self.lora_B:
            raise LoRAPairError(f"{label}: lora_A and lora_B are the same tensor")
        ra, rb = self.lora_A.shape[self.rank_dims[0]], self.lora_B.shape[self.rank_dims[1]]
        if ra != rb:
            raise LoRAPairError(
                f"{label}: mismatched pair shapes: lora_A {tuple(self.lora_A.shape)} has rank {ra} on axis "
                f"{self.rank_dims[0]} but lora_B {tuple(self.lora_B.shape)} has rank {rb} on axis {self.rank_dims[1]}"
            )
        for which, p, dim in (("lora_A", self.lora_A, self.rank_dims[0]), ("lora_B", self.lora_B, self.rank_dims[1])):
            rows = p.numel() // p.shape[dim]
            if rows < ra:
                raise LoRAPairError(
                    f"{label}: rank {ra} exceeds the other dimension ({rows}) of {which} {tuple(p.shape)}; "
                    "LoRA-RITE needs r <= min(in, out): the factor could never have full column rank"
                )

    @property
    def rank(self) -> int:
        return int(self.lora_A.shape[self.rank_dims[0]])

    def factors(self) -> tuple[tuple[torch.Tensor, int], tuple[torch.Tensor, int]]:
        """``((lora_B, rank_dim), (lora_A, rank_dim))``: the paper's ``A`` first, then its ``B``."""
        return (self.lora_B, self.rank_dims[1]), (self.lora_A, self.rank_dims[0])


def as_matrix(t: torch.Tensor, rank_dim: int) -> tuple[torch.Tensor, bool]:
    """A factor as a matrix with the rank axis first or last, whichever needs no copy.

    Returns ``(matrix, rank_first)``: ``(r, rows)`` when the rank axis is 0 (PEFT ``lora_A``), else
    ``(rows, r)`` with the rank axis moved last and the other axes flattened (PEFT ``lora_B``). A view
    for contiguous PEFT factors; map results back with :func:`from_matrix`, never write through it.
    """
    if t.ndim == 2:  # fast path: PEFT linear / embedding factors
        return t, rank_dim % 2 == 0
    if rank_dim % t.ndim == 0:
        return t.reshape(t.shape[0], -1), True
    moved = torch.movedim(t, rank_dim, -1)
    return moved.reshape(-1, moved.shape[-1]), False


def from_matrix(x: torch.Tensor, like: torch.Tensor, rank_dim: int) -> torch.Tensor:
    """Inverse of :func:`as_matrix`: a matrix back in the shape and layout of ``like``."""
    if x.shape == like.shape:
        return x
    if rank_dim % like.ndim == 0:
        return x.reshape(like.shape)
    return torch.movedim(x.reshape(torch.movedim(like, rank_dim, -1).shape), -1, rank_dim)


def find_lora_pairs(model: nn.Module | Iterable[tuple[str, torch.Tensor]], adapter: str | None = None,
                    ) -> tuple[list[LoRAPair], list[tuple[str, torch.Tensor]]]:
    """Pair the trainable LoRA factors of a model by name.

    Args:
        model: a module (e.g. a PEFT model) or an iterable of ``(name, parameter)``.
        adapter: keep only factors of this PEFT adapter name (e.g. ``"default"``); ``None`` keeps all.

    Returns:
        ``(pairs, others)``: the LoRA pairs in model order, and the remaining trainable parameters
        (``requires_grad``) that are not LoRA factors.

    Raises:
        LoRAPairError: an ``lora_A`` without its ``lora_B`` (or the reverse), or a pair with mismatched
            shapes. Frozen parameters are ignored; a pair with one factor frozen is an error.

    Example:
        >>> from peft import LoraConfig, get_peft_model
        >>> net = torch.nn.Sequential(torch.nn.Linear(8, 8))
        >>> peft_model = get_peft_model(net, LoraConfig(r=2, target_modules=["0"]))
        >>> pairs, others = find_lora_pairs(peft_model)
        >>> len(pairs), len(others)
        (1, 0)
    """
    named = list(model.named_parameters() if isinstance(model, nn.Module) else model)
    by_name = dict(named)
    pairs: list[LoRAPair] = []
    others: list[tuple[str, torch.Tensor]] = []
    seen: set[str] = set()
    for name, p in named:
        match = _FACTOR.search(name)
        if match is None:
            if p.requires_grad:
                others.append((name, p))
            continue
        if name in seen:
            continue
        if adapter is not None and f".{adapter}." not in f"{name}." and not name.endswith(f".{adapter}"):
            continue
        prefix, which = match.group(1), match.group(2)
        other = "B" if which == "A" else "A"
        partner = name[: match.start(2)] + other + name[match.end(2):]
        if partner not in by_name:
            raise LoRAPairError(f"{name} has no partner {partner} (expected {prefix}{other} of the same module)")
        a_name, b_name = (name, partner) if which == "A" else (partner, name)
        a, b = by_name[a_name], by_name[b_name]
        seen.update((a_name, b_name))
        if not (a.requires_grad or b.requires_grad):
            continue
        if a.requires_grad != b.requires_grad:
            raise LoRAPairError(f"{a_name} and {b_name}: one factor is frozen and the other is not; "
                                "LoRA-RITE updates both factors of a pair together")
        pairs.append(LoRAPair(a, b, name=a_name[: match.start(1)].rstrip(".") or a_name))
    return pairs, others


class BlockLayout:
    """How the active LoRA pairs of one optimizer group that share rank and device are batched.

    Factors are ordered by bucket (same matrix shape and orientation, see :func:`as_matrix`), so each
    bucket is a contiguous range ``lo:hi`` of the block; ``partner[b]`` is the block index of factor
    ``b``'s partner. Tall work is batched per bucket, ``r x r`` work over the whole block.

    The layout also holds the block's state, stacked (:meth:`bind`): each parameter's entries in
    ``optimizer.state`` are views into these stacks, so a step reads its state without stacking and
    writes it in place (like ``torch.optim.AdamW``: keep a copy of ``state_dict()`` to freeze it). The
    tall moments are double-buffered: a step writes the new first moment and factor copy into the
    spare buffer and then swaps, so no tall state is copied twice.

    Args:
        group: an optimizer param group with ``params`` ``[lora_B1, lora_A1, ...]`` and ``rank_dims``.
        pairs: indices of the pairs in the group that take part in this step.

    Example:
        >>> a, b = torch.zeros(4, 32), torch.zeros(16, 4)
        >>> lay = BlockLayout({"params": [b, a], "rank_dims": [(1, 0)]}, [0])
        >>> lay.buckets, lay.partner.tolist()
        ([(0, 1, False), (1, 2, True)], [1, 0])
    """

    def __init__(self, group: dict[str, Any], pairs: list[int]):
        params = [group["params"][k] for i in pairs for k in (2 * i, 2 * i + 1)]
        dims = [d for i in pairs for d in group["rank_dims"][i]]
        self.pair_params = params  # pair order [B1, A1, B2, A2, ...] (for balancing)
        p0 = params[0]
        self.dtype = torch.float32 if p0.dtype in (torch.float16, torch.bfloat16) else p0.dtype
        self.rank = p0.shape[dims[0]]
        buckets: dict[tuple[tuple[int, ...], bool], list[int]] = {}
        for j, (p, dim) in enumerate(zip(params, dims, strict=True)):
            mat, rank_first = as_matrix(p, dim)
            buckets.setdefault((tuple(mat.shape), rank_first), []).append(j)
        order = [j for js in buckets.values() for j in js]
        pos = {j: b for b, j in enumerate(order)}
        self.params, self.dims = [params[j] for j in order], [dims[j] for j in order]
        self.buckets: list[tuple[int, int, bool]] = []
        for (_, rank_first), js in buckets.items():
            lo = self.buckets[-1][1] if self.buckets else 0
            self.buckets.append((lo, lo + len(js), rank_first))
        # plain buckets: 2-D factors in the working dtype, whose matrix view is the parameter itself
        self.plain = [all(p.ndim == 2 and p.dtype == self.dtype for p in self.params[lo:hi]) for lo, hi, _ in self.buckets]
        dev = p0.device
        self.partner = torch.tensor([pos[j ^ 1] for j in order], device=dev)
        self.rows = torch.tensor([p.numel() // self.rank for p in self.params], dtype=F64, device=dev)
        self.small: dict[str, torch.Tensor] = {}  # _SMALL key -> (n, ...) stack
        self.tall: dict[str, list[list[torch.Tensor]]] = {}  # _TALL key -> per bucket [current, spare]
        self.views: dict[str, list[list[torch.Tensor]]] = {}  # key -> [views of current, views of spare]
        self.work: list[torch.Tensor] = []  # per bucket: the stacked gradients (a reused buffer)
        self.work_views: list[torch.Tensor] = []

    def bind(self, opt: torch.optim.Optimizer) -> list[dict[str, Any]]:
        """The factors' state dicts; (re)stacks their state unless every entry is still a view of ours."""
        states = [opt.state[p] for p in self.params]
        if self.views and all(all(map(operator.is_, [st.get(k) for st in states], v[0])) for k, v in self.views.items()):
            return states
        r, dt = self.rank, self.dtype
        for p, dim, st in zip(self.params, self.dims, states, strict=True):
            if not st:
                shape = as_matrix(p, dim)[0].shape
                st.update(step=torch.zeros((), dtype=torch.float32),
                          exp_avg=p.new_zeros(shape, dtype=dt), prev_factor=p.new_zeros(shape, dtype=dt),
                          prev_rinv=p.new_zeros(r, r, dtype=F64), exp_avg_sq=p.new_zeros(r, r, dtype=F64),
                          escape=p.new_zeros((), dtype=F64))
            if "basis_cond" not in st:  # kappa of prev_factor (absent in old checkpoints)
                st["basis_cond"] = p.new_ones((), dtype=F64)
        self.small = {k: torch.stack([st[k] for st in states]) for k in _SMALL}
        self.views = {k: [list(t.unbind(0))] for k, t in self.small.items()}
        for k in _TALL:
            self.tall[k] = [[torch.stack([st[k] for st in states[lo:hi]]).to(dt)] for lo, hi, _ in self.buckets]
            for bufs in self.tall[k]:
                bufs.append(torch.empty_like(bufs[0]))
            self.views[k] = [[v for bufs in self.tall[k] for v in bufs[i].unbind(0)] for i in (0, 1)]
        self.work = [torch.empty_like(bufs[0]) for bufs in self.tall["exp_avg"]]
        self.work_views = [v for w in self.work for v in w.unbind(0)]
        self._publish(states, self.views)
        return states

    def swap(self, states: list[dict[str, Any]]) -> None:
        """After a step wrote the spare tall buffers: make them current and point the state at them."""
        for k in _TALL:
            for bufs in self.tall[k]:
                bufs.reverse()
            self.views[k].reverse()
        self._publish(states, {k: self.views[k] for k in _TALL})

    @staticmethod
    def _publish(states: list[dict[str, Any]], views: dict[str, list[list[torch.Tensor]]]) -> None:
        for k, v in views.items():
            for st, t in zip(states, v[0], strict=True):
                st[k] = t
