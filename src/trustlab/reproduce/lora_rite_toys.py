"""The small LoRA-RITE experiments: transformation invariance (float64) and LoRA on scikit-learn digits.

Both run in float64 on CPU in seconds to a minute; :mod:`trustlab.reproduce.lora_rite` turns them into
claims and plots, and the tests call :func:`invariance_deviation` directly.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

from trustlab.optim import LoRAPair
from trustlab.optim.factory import create_optimizer

_F64 = torch.float64


def _invertible(r: int, g: torch.Generator, kind: str) -> torch.Tensor:
    if kind == "scale":
        return 10.0 * torch.eye(r, dtype=_F64)
    q1 = torch.linalg.qr(torch.randn(r, r, generator=g, dtype=_F64))[0]
    q2 = torch.linalg.qr(torch.randn(r, r, generator=g, dtype=_F64))[0]
    s = torch.logspace(-0.5, 0.5, r, dtype=_F64)  # singular values in [0.32, 3.2]
    return q1 @ torch.diag(s) @ q2


def invariance_deviation(optimizer: str, *, transform: str = "rotate", task: str = "factorization", lr: float = 0.05,
                         steps: int = 50, seed: int = 0, **opt_kwargs: Any) -> dict[str, Any]:
    """Train ``Z = A B^T`` from ``(A, B)`` and from ``(A R, B R^-T)``; compare the two ``Z`` trajectories.

    Args:
        optimizer: a name for :func:`trustlab.optim.factory.create_optimizer`.
        transform: ``"rotate"`` (random invertible ``R``, singular values 0.32-3.2) or ``"scale"`` (``R = 10 I``).
        task: ``"factorization"`` (``0.5 mean(Z - Z*)^2``, ``Z*`` 20 x 16 of rank 4) or ``"regression"``
            (``0.5 mean(X Z - Y)^2`` with fixed ``X`` 50 x 20).
        lr, steps, seed: training settings; both factors start random and non-zero, rank 4.
        **opt_kwargs: passed to the optimizer factory (e.g. LoRA-RITE's ``update_skipping``).

    Returns:
        ``{"max_rel_dev": max_t ||Z_t - Z'_t|| / ||Z_t||, "loss": [...], "loss_transformed": [...]}``.
    """
    g = torch.Generator().manual_seed(seed)
    m, n, r = 20, 16, 4
    z_star = torch.randn(m, r, generator=g, dtype=_F64) @ torch.randn(r, n, generator=g, dtype=_F64)
    x = torch.randn(50, m, generator=g, dtype=_F64)
    y = x @ z_star + 0.1 * torch.randn(50, n, generator=g, dtype=_F64)
    a0 = torch.randn(m, r, generator=g, dtype=_F64)
    b0 = torch.randn(n, r, generator=g, dtype=_F64)
    rot = _invertible(r, g, transform)

    def run(a_init: torch.Tensor, b_init: torch.Tensor) -> tuple[torch.Tensor, list[float]]:
        a, b = nn.Parameter(a_init.clone()), nn.Parameter(b_init.clone())
        opt = create_optimizer(optimizer, [LoRAPair(lora_A=b, lora_B=a, rank_dims=(1, 1))], lr=lr, **opt_kwargs)
        zs, losses = [], []
        for _ in range(steps):
            z = a @ b.T
            loss = 0.5 * ((z - z_star) ** 2).mean() if task == "factorization" else 0.5 * ((x @ z - y) ** 2).mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
            losses.append(loss.item())
            zs.append((a @ b.T).detach())
        return torch.stack(zs), losses

    z1, l1 = run(a0, b0)
    z2, l2 = run(a0 @ rot, b0 @ torch.linalg.inv(rot).T)
    dev = ((z1 - z2).flatten(1).norm(dim=1) / z1.flatten(1).norm(dim=1)).max().item()
    return {"max_rel_dev": dev, "loss": l1, "loss_transformed": l2}


# --------------------------------------------------------------------------------------------------
# Digits: a frozen MLP pretrained on digits 0-4, LoRA-adapted to digits 5-9.
# --------------------------------------------------------------------------------------------------


class LoRALinear(nn.Module):
    """A frozen linear layer plus a PEFT-named LoRA adapter (``lora_A`` random, ``lora_B`` zero)."""

    def __init__(self, base: nn.Linear, r: int, g: torch.Generator):
        super().__init__()
        self.weight = nn.Parameter(base.weight.detach().clone(), requires_grad=False)
        self.bias = nn.Parameter(base.bias.detach().clone(), requires_grad=False)
        bound = 1.0 / math.sqrt(base.in_features)
        self.lora_A = nn.Parameter((torch.rand(r, base.in_features, generator=g, dtype=_F64) * 2 - 1) * bound)
        self.lora_B = nn.Parameter(torch.zeros(base.out_features, r, dtype=_F64))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return nn.functional.linear(x, self.weight, self.bias) + (x @ self.lora_A.T) @ self.lora_B.T


def digits_data(seed: int = 0) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """Digits 0-4 (pretraining) and 5-9 split 50/25/25 into train/val/test, pixels scaled to [0, 1]."""
    from sklearn.datasets import load_digits

    d = load_digits()
    x = torch.tensor(d.data / 16.0, dtype=_F64)
    y = torch.tensor(d.target, dtype=torch.long)
    pre = y < 5
    xf, yf = x[~pre], y[~pre]
    perm = torch.randperm(len(yf), generator=torch.Generator().manual_seed(seed))
    n1, n2 = len(perm) // 2, 3 * len(perm) // 4
    return {"pretrain": (x[pre], y[pre]), "train": (xf[perm[:n1]], yf[perm[:n1]]),
            "val": (xf[perm[n1:n2]], yf[perm[n1:n2]]), "test": (xf[perm[n2:]], yf[perm[n2:]])}


def pretrained_mlp(data: dict[str, Any], seed: int = 0) -> nn.Sequential:
    """The 64-128-10 MLP trained on digits 0-4 (Adam, 300 full-batch steps), then frozen."""
    torch.manual_seed(seed)
    net = nn.Sequential(nn.Linear(64, 128), nn.ReLU(), nn.Linear(128, 10)).to(_F64)
    opt = torch.optim.Adam(net.parameters(), lr=1e-2)
    x, y = data["pretrain"]
    for _ in range(300):
        opt.zero_grad()
        nn.functional.cross_entropy(net(x), y).backward()
        opt.step()
    return net.requires_grad_(False)


def lora_digits_run(base: nn.Sequential, data: dict[str, Any], optimizer: str, lr: float, *, seed: int, r: int = 4,
                    steps: int = 300, batch: int = 64, init_scale: float = 1.0, **kwargs: Any) -> dict[str, Any]:
    """Fine-tune rank-``r`` LoRA on both layers of ``base`` for digits 5-9; ``init_scale`` multiplies
    ``lora_A``'s init (and divides ``lora_B``'s, which is zero) to probe invariance.

    Returns the loss and factor-balance curves, validation and test accuracy, and ``test_correct`` (1/0 per
    test item, for paired intervals)."""
    g = torch.Generator().manual_seed(seed)
    model = nn.Sequential(LoRALinear(base[0], r, g), nn.ReLU(), LoRALinear(base[2], r, g))
    with torch.no_grad():
        for layer in (model[0], model[2]):
            layer.lora_A.mul_(init_scale)
            layer.lora_B.div_(init_scale)
    opt = create_optimizer(optimizer, model, lr=lr, **kwargs)
    x, y = data["train"]
    losses, balance = [], []
    for _ in range(steps):
        idx = torch.randint(0, len(y), (batch,), generator=g)
        loss = nn.functional.cross_entropy(model(x[idx]), y[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
        with torch.no_grad():
            ratios = [layer.lora_A.norm() / layer.lora_B.norm().clamp_min(1e-300) for layer in (model[0], model[2])]
            balance.append(float(torch.stack(ratios).log10().mean()))
    with torch.no_grad():
        hits = {split: (model(data[split][0]).argmax(-1) == data[split][1]) for split in ("val", "test")}
    return {"optimizer": optimizer, "lr": lr, "seed": seed, "loss": losses, "log10_normA_over_normB": balance,
            "val_acc": float(hits["val"].double().mean()), "test_acc": float(hits["test"].double().mean()),
            "test_correct": hits["test"].int().tolist(), "skipped_steps": getattr(opt, "skipped_steps", 0)}
