"""Cost of a DPO-Diff text gradient: bytes saved for backward, seconds, and the gradient itself.

Shared by ``benchmarks/dpo_diff_grad.py`` and the reproduction (claims on the shortcut gradient's constant
memory and time, and its cosine to the full-backprop gradient).
"""

from __future__ import annotations

import time
from collections.abc import Callable

import torch

from trustlab.prompting.dpo_diff import RelaxedPrompt


def gradient_cost(rp: RelaxedPrompt, loss_fn: Callable[[torch.Tensor], torch.Tensor], seed: int, stop: int, *,
                  full: bool) -> tuple[int, float, torch.Tensor]:
    """One text gradient of ``loss_fn(x0_hat at step index stop)`` w.r.t. slot logits (softmax weights).

    Args:
        rp: the space bound to an adapter.
        loss_fn: images -> per-image loss.
        seed: noise seed.
        stop: step index of ``x0_hat``.
        full: backprop through every step (True) or the shortcut (one UNet call with gradients).

    Returns:
        Bytes of the distinct storages autograd saved for backward (gradient memory, deterministic on CPU),
        seconds of the gradient-tracking part (forward with gradients + backward; the no-gradient prefix is
        not counted), and the flattened gradient.

    Example:
        >>> nbytes, seconds, grad = gradient_cost(rp, fn, 0, 15, full=False)
    """
    adapter = rp.adapter
    alphas = [torch.linspace(0.5, 0.0, n).requires_grad_(True) for n in rp.space.sizes]
    storages: dict[int, int] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        storages[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        cond, uncond = rp.embed([torch.softmax(a, -1) for a in alphas])
        loss = loss_fn(adapter.denoise(cond, uncond, seed, stop=stop, grad_from=0 if full else stop)).mean()
    loss.backward()
    seconds = time.perf_counter() - adapter.grad_started_at
    return sum(storages.values()), seconds, torch.cat([a.grad for a in alphas])


def prefix_seconds(rp: RelaxedPrompt, seed: int, stop: int) -> float:
    """Seconds of the shortcut's no-gradient sampling prefix (the steps before ``stop``), user prompt."""
    adapter = rp.adapter
    cond, uncond = rp.embed(rp.one_hot((0,) * len(rp.space.slots)))
    adapter.scheduler.set_timesteps(adapter.steps)
    latents = adapter.initial_latents(seed)
    t0 = time.perf_counter()
    with torch.no_grad():
        for t in adapter.scheduler.timesteps[:stop]:
            latents = adapter.scheduler.step(adapter._eps(latents, t, cond, uncond), t, latents).prev_sample
    return time.perf_counter() - t0


def cosine_to_full(rp: RelaxedPrompt, loss_fn: Callable[[torch.Tensor], torch.Tensor], seeds: tuple[int, ...],
                   stop: int) -> list[float]:
    """Cosine between the shortcut and the full-backprop gradient (same loss of ``x0_hat`` at ``stop``), per seed.

    Example:
        >>> cosine_to_full(rp, fn, (0, 1), 15)
        [0.61, 0.48]
    """
    out = []
    for seed in seeds:
        short = gradient_cost(rp, loss_fn, seed, stop, full=False)[2]
        full = gradient_cost(rp, loss_fn, seed, stop, full=True)[2]
        out.append(float(torch.nn.functional.cosine_similarity(short, full, dim=0)))
    return out
