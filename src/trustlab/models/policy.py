"""Dtype and thread policy for in-process models.

- **dtype**: an explicit ``dtype=`` always wins; else ``$TRUSTLAB_DTYPE``; else ``"auto"``: bfloat16 where the
  hardware runs it fast (a CUDA device with bf16 support; a CPU with AVX-512 BF16 or AMX, where oneDNN runs
  bf16 matmuls natively: on the project's 2-core reference CPU SmolLM2 decoded 1.7x and prefilled 4x
  faster than in float32), float32 elsewhere (on a CPU without those instructions bf16 is emulated and
  slower). Training code asks for ``purpose="training"``, which stays float32 under ``"auto"`` (bf16 weights
  lose small updates). Tests that need exact parity pass ``dtype="float32"``.
- **threads**: an explicit ``threads=`` wins; else ``$TRUSTLAB_THREADS``; else torch's own default (which
  follows ``OMP_NUM_THREADS``, else the cores it may use).

Both are recorded in every run's config through :meth:`ModelHandle.describe` (``dtype``, ``threads``).

Example:
    >>> resolve_dtype(None)          # on an AVX-512 BF16 / AMX CPU
    'bfloat16'
    >>> resolve_dtype("float32")
    'float32'
"""

from __future__ import annotations

import functools
import os
from typing import Any

from trustlab.errors import ModelSpecError

DTYPES = ("float32", "bfloat16", "float16")


@functools.lru_cache(maxsize=1)
def cpu_flags() -> frozenset[str]:
    """The CPU feature flags the kernel reports (empty where /proc/cpuinfo is absent)."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("flags"):
                    return frozenset(line.split(":", 1)[1].split())
    except OSError:
        pass
    return frozenset()


def fast_bf16(device: Any = "cpu") -> bool:
    """Whether ``device`` runs bfloat16 matmuls natively (not emulated)."""
    kind = str(device).split(":")[0]
    if kind == "cuda":
        import torch

        return bool(torch.cuda.is_available() and torch.cuda.is_bf16_supported())
    if kind == "cpu":
        return bool({"avx512_bf16", "amx_bf16"} & cpu_flags())
    return False


def resolve_dtype(dtype: Any = None, device: Any = "cpu", purpose: str = "inference") -> str:
    """The dtype name to load with (see the module docstring).

    Raises:
        ModelSpecError: an unknown dtype name.
    """
    if dtype is not None and not isinstance(dtype, str):  # a torch.dtype
        return str(dtype).removeprefix("torch.")
    name = (dtype or os.environ.get("TRUSTLAB_DTYPE") or "auto").strip().lower()
    name = {"fp32": "float32", "bf16": "bfloat16", "fp16": "float16", "half": "float16"}.get(name, name)
    if name == "auto":
        return "bfloat16" if purpose == "inference" and fast_bf16(device) else "float32"
    if name not in DTYPES:
        raise ModelSpecError(f"unknown dtype {dtype!r}; use one of: auto, {', '.join(DTYPES)}")
    return name


def apply_threads(threads: int | None = None) -> int:
    """Set torch's intra-op threads (explicit, else ``$TRUSTLAB_THREADS``; else leave torch's default).

    Returns:
        The thread count now in effect.
    """
    import torch

    n = threads or (int(os.environ["TRUSTLAB_THREADS"]) if os.environ.get("TRUSTLAB_THREADS") else None)
    if n is not None:
        if n < 1:
            raise ModelSpecError(f"threads must be >= 1, got {n}")
        torch.set_num_threads(n)
    return torch.get_num_threads()
