"""Optimizers for LoRA fine-tuning: LoRA-RITE (transformation-invariant) and LoRA-pair helpers.

The names load on first use (PEP 562), so importing ``trustlab.optim.method`` (the registry record)
does not import torch.
"""

import importlib
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # what type checkers and IDEs see
    from trustlab.optim.lora_rite import LoRARITE, create_lora_rite_optimizer
    from trustlab.optim.pairs import LoRAPair, LoRAPairError, find_lora_pairs

_EXPORTS = {"LoRARITE": "lora_rite", "create_lora_rite_optimizer": "lora_rite", "LoRAPair": "pairs",
            "LoRAPairError": "pairs", "find_lora_pairs": "pairs"}

__all__ = ["LoRAPair", "LoRAPairError", "LoRARITE", "create_lora_rite_optimizer", "find_lora_pairs"]


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(f"module 'trustlab.optim' has no attribute {name!r}")
    return getattr(importlib.import_module(f"trustlab.optim.{_EXPORTS[name]}"), name)
