"""Seeded random projections of gradient vectors, applied in row chunks so the matrix never exists whole.

A gradient of ``P`` numbers becomes ``d`` numbers by ``g @ R`` with ``R`` a ``(P, d)`` matrix of i.i.d.
entries scaled by ``1 / sqrt(d)`` (Gaussian or Rademacher), so inner products are kept in expectation
(Johnson-Lindenstrauss): ``E[<gR, hR>] = <g, h>``. ``R`` is cut into blocks of ``chunk_rows`` rows; block
``b`` is drawn from a CPU generator seeded with ``(seed, b)``, so the same projector gives the same numbers
on any device, in any batch order, on any rank, and only one block (``chunk_rows * d`` floats) is held at a
time beyond the ``cache_bytes`` (default 512 MiB) of blocks kept in memory for the next call.

Example:
    >>> import torch
    >>> proj = RandomProjector(10_000, 256, seed=0)
    >>> g = torch.randn(3, 10_000)
    >>> proj(g).shape
    torch.Size([3, 256])
    >>> torch.equal(proj(g[:1]), proj(g)[:1])   # rows are projected independently
    True
"""

from __future__ import annotations

import math
from typing import Any

import torch

from trustlab.errors import TrustlabError

KINDS = ("gaussian", "rademacher")


class RandomProjector:
    """``(B, dim_in) -> (B, dim_out)``: a seeded Gaussian or Rademacher projection, chunked over rows.

    Args:
        dim_in: length of the vectors to project (e.g. the number of parameters).
        dim_out: projected length ``d``.
        seed: the projection's seed (same seed, same matrix).
        kind: ``"gaussian"`` (N(0, 1) entries) or ``"rademacher"`` (+-1 entries); both scaled by 1/sqrt(d).
        chunk_rows: rows of ``R`` drawn at a time (default: as many as fit in 64 MiB of float32).
        cache_bytes: keep drawn blocks in memory up to this many bytes (0: draw every block on every call;
            drawing costs about as much as the product itself).

    Raises:
        TrustlabError: a non-positive size or an unknown kind.

    Example:
        >>> p = RandomProjector(1000, 64, seed=1, kind="rademacher")
        >>> p.config()["kind"], p.config()["dim_out"]
        ('rademacher', 64)
    """

    def __init__(self, dim_in: int, dim_out: int, *, seed: int = 0, kind: str = "gaussian",
                 chunk_rows: int | None = None, cache_bytes: int = 512 << 20):
        if dim_in <= 0 or dim_out <= 0:
            raise TrustlabError(f"projection sizes must be positive, got dim_in={dim_in}, dim_out={dim_out}")
        if kind not in KINDS:
            raise TrustlabError(f"unknown projection kind {kind!r}; choose one of: {', '.join(KINDS)}")
        self.dim_in, self.dim_out, self.seed, self.kind = int(dim_in), int(dim_out), int(seed), kind
        self.chunk_rows = int(chunk_rows or max(1, (64 << 20) // (4 * self.dim_out)))
        self.cache_bytes = int(cache_bytes)
        self._blocks: dict[int, torch.Tensor] = {}

    def config(self) -> dict[str, Any]:
        """What defines the matrix (for cache manifests): sizes, seed, kind and the block size."""
        return {"dim_in": self.dim_in, "dim_out": self.dim_out, "seed": self.seed, "kind": self.kind,
                "chunk_rows": self.chunk_rows}

    def block(self, b: int) -> torch.Tensor:
        """Rows ``b * chunk_rows ..`` of ``R`` as a CPU float32 tensor ``(rows, dim_out)``."""
        if b in self._blocks:
            return self._blocks[b]
        rows = min(self.chunk_rows, self.dim_in - b * self.chunk_rows)
        gen = torch.Generator().manual_seed(self.seed * 1_000_003 + b)
        if self.kind == "gaussian":
            r = torch.randn(rows, self.dim_out, generator=gen)
        else:
            r = torch.randint(0, 2, (rows, self.dim_out), generator=gen).float().mul_(2).sub_(1)
        r.div_(math.sqrt(self.dim_out))
        if (len(self._blocks) + 1) * self.chunk_rows * self.dim_out * 4 <= self.cache_bytes:
            self._blocks[b] = r
        return r

    def __call__(self, g: torch.Tensor) -> torch.Tensor:
        """Project the rows of ``g`` ``(B, dim_in)``; returns ``(B, dim_out)`` float32 on ``g``'s device.

        Raises:
            TrustlabError: ``g`` is not 2-D with ``dim_in`` columns.
        """
        if g.dim() != 2 or g.shape[1] != self.dim_in:
            raise TrustlabError(f"the projector takes (B, {self.dim_in}) vectors, got {tuple(g.shape)}: "
                                "build it with dim_in = the gradient length (number of attributed parameters)")
        out = torch.zeros(g.shape[0], self.dim_out, device=g.device, dtype=torch.float32)
        for b in range(math.ceil(self.dim_in / self.chunk_rows)):
            lo = b * self.chunk_rows
            r = self.block(b).to(g.device)
            out.addmm_(g[:, lo: lo + r.shape[0]].float(), r)  # (B, rows) @ (rows, d)
        return out
