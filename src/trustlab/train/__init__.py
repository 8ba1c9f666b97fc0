"""LoRA supervised fine-tuning shared by the methods that train (LoRA-RITE, [IND] fine-tuning, ...)."""

from trustlab.train.sft import (
    SFTConfig,
    SFTLog,
    TrainingDivergedError,
    add_lora,
    lora_finetune,
    make_optimizer,
    read_examples,
    tokenize_example,
)

__all__ = ["SFTConfig", "SFTLog", "TrainingDivergedError", "add_lora", "lora_finetune", "make_optimizer",
           "read_examples", "tokenize_example"]
