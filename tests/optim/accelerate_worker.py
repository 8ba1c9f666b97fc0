"""Worker for test_accelerate.py, run by ``accelerate launch --multi_gpu --num_processes 2`` on CPU (gloo).

Each rank trains the same tiny PEFT Llama with LoRA-RITE on its own data shard for a few steps under
DDP, then saves its LoRA weights to ``<out>/rank<i>.pt``.
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch
from accelerate import Accelerator
from peft import LoraConfig, get_peft_model
from transformers import LlamaConfig, LlamaForCausalLM

from trustlab.optim import create_lora_rite_optimizer


def main(out: Path) -> None:
    acc = Accelerator(cpu=True)
    torch.manual_seed(0)  # same init on every rank
    cfg = LlamaConfig(vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                      num_key_value_heads=2, max_position_embeddings=64)
    model = get_peft_model(LlamaForCausalLM(cfg), LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj",
                                                                                               "down_proj"]))
    opt = create_lora_rite_optimizer(model, lr=3e-2)
    model, opt = acc.prepare(model, opt)
    g = torch.Generator().manual_seed(100 + acc.process_index)  # a different shard per rank
    for _ in range(5):
        ids = torch.randint(0, 64, (4, 12), generator=g)
        loss = model(input_ids=ids, labels=ids).loss
        acc.backward(loss)
        opt.step()
        opt.zero_grad()
    lora = {n: p.detach().clone() for n, p in acc.unwrap_model(model).named_parameters() if "lora_" in n}
    torch.save({"lora": lora, "skipped": opt.optimizer.skipped_steps, "world": acc.num_processes,
                "backend": acc.state.backend},
               out / f"rank{acc.process_index}.pt")


if __name__ == "__main__":
    main(Path(sys.argv[1]))
