"""The LoRA-RITE record for the registry: what ``trustlab reproduce`` and the README table read.

Fine-tuning with it is ``trustlab finetune DATA --optimizer lora-rite`` (a shared command, not this record's).
"""

from trustlab.registry import register_method

register_method(
    id="lora-rite",
    title="LoRA-RITE transformation-invariant LoRA optimizer",
    area="train",
    spec="lora-rite.md",
    reproduce="trustlab.reproduce.lora_rite:run",
)
