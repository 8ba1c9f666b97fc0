"""LoRA supervised fine-tuning of a causal LM with the Hugging Face Trainer and PEFT.

Data: JSONL with one chat example per line, either ``{"messages": [{"role": ..., "content": ...}, ...]}``
(the last message is the assistant's target) or ``{"prompt": ..., "response": ...}``. The loss covers the
response tokens only (prompt tokens are labelled -100). Pre-tokenized examples
(``{"input_ids": [...], "labels": [...]}``) pass through unchanged.

The optimizer is picked by name (``lora-rite``, ``adamw``, ``loraplus``) and handed to the Trainer as
``Trainer(optimizers=(opt, sched))``. ``extra_special_tokens`` adds tokens (e.g. an ``[IND]`` indicator)
to the tokenizer, resizes the embeddings and trains only those new rows (PEFT
``trainable_token_indices``), next to the LoRA pairs.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from trustlab.errors import EmptyInputError, TrustlabError, require

DEFAULT_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


@dataclass
class SFTConfig:
    """LoRA fine-tuning settings.

    Attributes:
        optimizer: ``"lora-rite"`` (default), ``"adamw"`` or ``"loraplus"``.
        lr: learning rate (LoRA+: of ``lora_A``; ``lora_B`` gets ``loraplus_ratio`` times it).
        steps: optimizer steps.
        batch_size: examples per step.
        rank: LoRA rank ``r``; ``alpha`` is the LoRA scaling numerator (scale = alpha / r).
        alpha: LoRA alpha.
        dropout: LoRA dropout (default 0.0, as in LoRA-RITE's recipe; the [IND] recipe uses 0.05).
        target_modules: module names that get LoRA (default: attention and MLP projections).
        max_length: examples are truncated to this many tokens.
        warmup_steps: linear warm-up steps, then constant lr.
        weight_decay: decoupled weight decay.
        loraplus_ratio: LoRA+ ``lr_B / lr_A``.
        max_grad_norm: Trainer gradient clipping; ``None`` means 0 for lora-rite (it clips unmagnified
            gradients itself, as in the method's recipe) and 1.0 otherwise.
        seed: seed of LoRA init and data order.
        extra_special_tokens: new special tokens to add and train (their embedding rows only).
        logging_steps: loss is logged every this many steps.
    """

    optimizer: str = "lora-rite"
    lr: float = 1e-3
    steps: int = 100
    batch_size: int = 8
    rank: int = 16
    alpha: int = 32
    dropout: float = 0.0
    target_modules: tuple[str, ...] = DEFAULT_TARGETS
    max_length: int = 256
    warmup_steps: int = 0
    weight_decay: float = 0.0
    loraplus_ratio: float = 16.0
    max_grad_norm: float | None = None
    seed: int = 0
    extra_special_tokens: tuple[str, ...] = ()
    logging_steps: int = 1
    lora_rite_options: dict[str, Any] = field(default_factory=dict)


def read_examples(path: str | Path) -> list[dict[str, Any]]:
    """Read a JSONL of chat examples, checking each has ``messages`` or ``prompt``/``response``."""
    rows = []
    for i, line in enumerate(Path(path).read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        row = json.loads(line)
        if not (isinstance(row.get("messages"), list) and row["messages"]) and not ("prompt" in row and "response" in row):
            raise TrustlabError(f"{path}:{i}: expected {{'messages': [...]}} or {{'prompt': ..., 'response': ...}}")
        rows.append(row)
    if not rows:
        raise EmptyInputError(f"{path}: no examples")
    return rows


def as_messages(example: dict[str, Any]) -> list[dict[str, str]]:
    if "messages" in example:
        return example["messages"]
    return [{"role": "user", "content": example["prompt"]}, {"role": "assistant", "content": example["response"]}]


def tokenize_example(tokenizer: Any, example: dict[str, Any], max_length: int) -> dict[str, list[int]]:
    """``input_ids`` of the whole chat and ``labels`` that are -100 except on the final assistant turn."""
    if "input_ids" in example:
        ids = list(example["input_ids"])[:max_length]
        return {"input_ids": ids, "labels": list(example.get("labels", ids))[:max_length]}
    messages = as_messages(example)
    if messages[-1]["role"] != "assistant":
        raise TrustlabError("the last message of a training example must be the assistant's")
    prompt = tokenizer.apply_chat_template(messages[:-1], tokenize=False, add_generation_prompt=True)
    full = tokenizer.apply_chat_template(messages, tokenize=False)
    if not full.startswith(prompt):
        raise TrustlabError("the chat template does not render the prompt as a prefix of the full chat")
    p_ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
    ids = tokenizer(full, add_special_tokens=False)["input_ids"][:max_length]
    return {"input_ids": ids, "labels": [-100] * min(len(p_ids), len(ids)) + ids[len(p_ids):]}


def _collate(pad_id: int):
    def collate(batch: list[dict[str, list[int]]]) -> dict[str, torch.Tensor]:
        width = max(len(b["input_ids"]) for b in batch)
        ids = torch.full((len(batch), width), pad_id, dtype=torch.long)
        labels = torch.full((len(batch), width), -100, dtype=torch.long)
        mask = torch.zeros((len(batch), width), dtype=torch.long)
        for i, b in enumerate(batch):  # right padding for training
            n = len(b["input_ids"])
            ids[i, :n] = torch.tensor(b["input_ids"])
            labels[i, :n] = torch.tensor(b["labels"])
            mask[i, :n] = 1
        return {"input_ids": ids, "labels": labels, "attention_mask": mask}

    return collate


def add_lora(model: Any, config: SFTConfig, tokenizer: Any = None) -> Any:
    """Wrap ``model`` with PEFT LoRA (adding ``config.extra_special_tokens`` first, if any)."""
    peft = require("peft", "llm")
    kwargs: dict[str, Any] = {}
    if config.extra_special_tokens:
        if tokenizer is None:
            raise TrustlabError("extra_special_tokens needs the tokenizer")
        tokenizer.add_special_tokens({"additional_special_tokens": list(config.extra_special_tokens)})
        model.resize_token_embeddings(len(tokenizer))
        kwargs["trainable_token_indices"] = tokenizer.convert_tokens_to_ids(list(config.extra_special_tokens))
    names = {n.rsplit(".", 1)[-1] for n, _ in model.named_modules()}
    targets = [t for t in config.target_modules if t in names]
    if not targets:
        raise TrustlabError(f"none of the target modules {list(config.target_modules)} exist in the model")
    torch.manual_seed(config.seed)
    lora = peft.LoraConfig(r=config.rank, lora_alpha=config.alpha, lora_dropout=config.dropout, target_modules=targets,
                           task_type="CAUSAL_LM", **kwargs)
    return peft.get_peft_model(model, lora)


def make_optimizer(model: Any, config: SFTConfig) -> tuple[torch.optim.Optimizer, Any]:
    """The named optimizer over the PEFT model's LoRA pairs, and a warm-up-then-constant schedule."""
    from trustlab.optim.factory import create_optimizer

    if config.optimizer not in ("lora-rite", "adamw", "loraplus"):
        raise TrustlabError(f"unknown optimizer {config.optimizer!r}; choose lora-rite, adamw or loraplus")
    extra = dict(config.lora_rite_options) if config.optimizer == "lora-rite" else {}
    opt = create_optimizer(config.optimizer, model, lr=config.lr, weight_decay=config.weight_decay,
                           loraplus_ratio=config.loraplus_ratio, **extra)
    warm = max(config.warmup_steps, 0)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, (s + 1) / warm) if warm else 1.0)
    return opt, sched


def lora_finetune(model: Any, tokenizer: Any, examples: list[dict[str, Any]], config: SFTConfig,
                  output_dir: str | Path | None = None) -> tuple[Any, list[dict[str, float]]]:
    """LoRA fine-tune ``model`` on ``examples`` with the HF Trainer; returns ``(peft_model, log_history)``.

    Args:
        model: a transformers causal LM (not yet wrapped with PEFT).
        tokenizer: its tokenizer (with a chat template), or None for pre-tokenized examples.
        examples: chat examples (see the module docstring).
        config: :class:`SFTConfig`.
        output_dir: Trainer output folder (nothing is saved there unless you save; default: a temp dir).

    Example:
        >>> handle = load_model("embedded")
        >>> peft_model, log = lora_finetune(handle.model, handle.tokenizer,
        ...                                 [{"prompt": "2+2?", "response": "4"}] * 8, SFTConfig(steps=2))
    """
    transformers = require("transformers", "llm")
    if not examples:
        raise EmptyInputError("no training examples")
    peft_model = add_lora(model, config, tokenizer)
    data = [tokenize_example(tokenizer, ex, config.max_length) for ex in examples]
    opt, sched = make_optimizer(peft_model, config)
    pad_id = getattr(tokenizer, "pad_token_id", None)
    if pad_id is None:
        pad_id = getattr(model.config, "pad_token_id", None) or 0
    clip = config.max_grad_norm if config.max_grad_norm is not None else (0.0 if config.optimizer == "lora-rite" else 1.0)
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        args = transformers.TrainingArguments(
            output_dir=str(output_dir or tmp), max_steps=config.steps, per_device_train_batch_size=config.batch_size,
            logging_steps=config.logging_steps, save_strategy="no", report_to=[], seed=config.seed,
            data_seed=config.seed, max_grad_norm=clip, use_cpu=not torch.cuda.is_available(),
            remove_unused_columns=False, disable_tqdm=True, dataloader_num_workers=0)
        trainer = transformers.Trainer(model=peft_model, args=args, train_dataset=data,
                                       data_collator=_collate(pad_id), optimizers=(opt, sched))
        trainer.train()
    history = [{"step": h["step"], "loss": h["loss"]} for h in trainer.state.log_history
               if "loss" in h and math.isfinite(h["loss"])]
    return peft_model, history
