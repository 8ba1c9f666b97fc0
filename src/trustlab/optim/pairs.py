"""Find LoRA factor pairs by parameter name, never by order.

PEFT names the two factors of one adapted module ``<prefix>.lora_A.<adapter>.weight`` (shape
``(r, in, ...)``, rank axis 0) and ``<prefix>.lora_B.<adapter>.weight`` (shape ``(out, r, ...)``, rank
axis 1); embeddings use ``lora_embedding_A`` / ``lora_embedding_B`` with the same layout. A pair is the
``lora_A`` and ``lora_B`` whose names agree once ``A`` and ``B`` are swapped.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

import torch
from torch import nn

from trustlab.errors import TrustlabError

# "lora_A" / "lora_embedding_A" as a whole dotted name component; group 1 is everything before "A".
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
