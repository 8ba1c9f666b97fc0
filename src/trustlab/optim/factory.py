"""One entry point for the LoRA optimizers we compare: LoRA-RITE, AdamW, LoRA+ and SGD.

LoRA+ (Hayou et al., 2024, https://arxiv.org/abs/2402.12354) is AdamW with the ``lora_B`` factors at
``loraplus_ratio`` times the learning rate of ``lora_A``; written here from the pairs (as PEFT's
``create_loraplus_optimizer`` does from names) so it also serves plain modules and explicit pairs.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from trustlab.optim.lora_rite import LoRARITE, create_lora_rite_optimizer
from trustlab.optim.pairs import LoRAPair, LoRAPairError, find_lora_pairs

OPTIMIZERS = ("lora-rite", "adamw", "loraplus", "sgd")


def create_optimizer(name: str, model: nn.Module | list[LoRAPair], lr: float, *, weight_decay: float = 0.0,
                     loraplus_ratio: float = 16.0, **kwargs: Any) -> torch.optim.Optimizer:
    """Build a LoRA optimizer by name over a model's LoRA pairs (found by name) or explicit pairs.

    Args:
        name: ``"lora-rite"``, ``"adamw"``, ``"loraplus"`` or ``"sgd"``.
        model: a (PEFT) model, or a list of :class:`LoRAPair`. Trainable non-LoRA parameters of a model
            get the base ``lr`` (AdamW; a companion AdamW group for LoRA-RITE).
        lr: learning rate (of ``lora_A`` for LoRA+).
        weight_decay: decoupled weight decay.
        loraplus_ratio: LoRA+ learning-rate ratio ``lr_B / lr_A``.
        **kwargs: extra LoRA-RITE hyperparameters (ignored names raise ``TypeError``).

    Example:
        >>> from trustlab.optim import LoRAPair
        >>> pair = LoRAPair(torch.nn.Parameter(torch.randn(2, 8)), torch.nn.Parameter(torch.zeros(8, 2)))
        >>> type(create_optimizer("loraplus", [pair], lr=1e-3)).__name__
        'AdamW'
    """
    if name not in OPTIMIZERS:
        raise ValueError(f"unknown optimizer {name!r}; choose one of {', '.join(OPTIMIZERS)}")
    if name != "lora-rite" and kwargs:
        raise TypeError(f"options {sorted(kwargs)} apply to lora-rite only")
    if isinstance(model, nn.Module):
        if name == "lora-rite":
            return create_lora_rite_optimizer(model, lr=lr, weight_decay=weight_decay,
                                              non_lora_weight_decay=weight_decay, **kwargs)
        pairs, others = find_lora_pairs(model)
        other_params = [p for _, p in others]
    else:
        pairs, other_params = list(model), []
    if not pairs:
        raise LoRAPairError("no trainable LoRA pairs to optimize")
    if name == "lora-rite":
        return LoRARITE(pairs, lr=lr, weight_decay=weight_decay, **kwargs)
    a_params = [p.lora_A for p in pairs]
    b_params = [p.lora_B for p in pairs]
    b_lr = lr * loraplus_ratio if name == "loraplus" else lr
    groups = [{"params": a_params + other_params, "lr": lr}, {"params": b_params, "lr": b_lr}]
    if name == "sgd":
        return torch.optim.SGD(groups, lr=lr, momentum=0.9, weight_decay=weight_decay)
    return torch.optim.AdamW(groups, lr=lr, weight_decay=weight_decay)
