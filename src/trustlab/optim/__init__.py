"""Optimizers for LoRA fine-tuning: LoRA-RITE (transformation-invariant) and LoRA-pair helpers."""

from trustlab.optim.lora_rite import LoRARITE, create_lora_rite_optimizer
from trustlab.optim.pairs import LoRAPair, LoRAPairError, find_lora_pairs

__all__ = ["LoRAPair", "LoRAPairError", "LoRARITE", "create_lora_rite_optimizer", "find_lora_pairs"]
