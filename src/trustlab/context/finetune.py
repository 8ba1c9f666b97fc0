"""Conditional instruction fine-tuning as the paper does it: a *base* model, a Zephyr-style template applied
by us, LoRA SFT on plain vs ``[IND]``-labelled chats (the spec's Experiment C).

- :data:`ZEPHYR_TEMPLATE` / :func:`apply_zephyr_template`: ``<|system|>``, ``<|user|>``, ``<|assistant|>`` turns,
  each closed by the tokenizer's EOS (the official recipes' template), for a base model that has none.
- :func:`training_sets`: a class-balanced subsample of scored chats, and the same chats labelled at ``tau``.
- :func:`finetune_arm`: one arm's LoRA SFT in float32 (the dtype policy's training rule), checkpointed: the
  adapter and the loss log are saved when the arm finishes, and a resumed run loads them instead of training
  again. The tuned model is merged and handed back in the inference dtype (bfloat16 where it is fast).

Example:
    >>> plain, labelled, info = training_sets(chats, scores, n=300, tau=0.6)
    >>> handle, log = finetune_arm("embedded:gemma-3-270m", labelled, SFTConfig(...), Path("ckpt/ind"))
"""

from __future__ import annotations

import random
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from trustlab.context.indicator import Conversation, label_conversations
from trustlab.report import read_json, write_json

ZEPHYR_TEMPLATE = (
    "{{ bos_token or '' }}{% for m in messages %}<|{{ m['role'] }}|>\n{{ m['content'] }}{{ eos_token }}\n{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>\n{% endif %}")


def apply_zephyr_template(tokenizer: Any) -> Any:
    """Give ``tokenizer`` the Zephyr-style chat template (replacing any it has); returns the tokenizer."""
    tokenizer.chat_template = ZEPHYR_TEMPLATE
    return tokenizer


def training_sets(chats: Sequence[Conversation], scores: Sequence[Sequence[float]], labels: Sequence[int], n: int,
                  *, tau: float = 0.6, seed: int = 0) -> tuple[list[Conversation], list[Conversation], dict[str, Any]]:
    """``n`` chats, half from each group (``labels`` 1/0, e.g. context-dependent vs knowledge-only), plain and
    labelled with ``[IND]`` where their score exceeds ``tau``.

    Returns:
        (plain chats, labelled chats, counts: chats, per group, labelled per group).

    Example:
        >>> plain, labelled, info = training_sets(chats, scores, [1, 1, 0, 0], n=2, tau=0.6)
        >>> info["chats"]
        2
    """
    if not len(chats) == len(scores) == len(labels):
        raise ValueError(f"{len(chats)} chats, {len(scores)} score lists and {len(labels)} labels")
    rng = random.Random(seed)
    picked: list[int] = []
    for group in (1, 0):
        members = [i for i, y in enumerate(labels) if y == group]
        picked += rng.sample(members, min(len(members), n // 2 + (n % 2 if group == 1 else 0)))
    rng.shuffle(picked)
    plain = [chats[i] for i in picked]
    labelled = label_conversations(plain, [scores[i] for i in picked], tau=tau)
    marked = [a != b for a, b in zip(labelled, plain)]
    info = {"chats": len(picked), "tau": tau,
            **{f"group_{g}": sum(labels[i] == g for i in picked) for g in (1, 0)},
            **{f"labelled_group_{g}": sum(m for m, i in zip(marked, picked) if labels[i] == g) for g in (1, 0)}}
    return plain, labelled, info


def finetune_arm(spec: Any, chats: Sequence[Conversation], config: Any, checkpoint: str | Path, *,
                 template: str = ZEPHYR_TEMPLATE, dtype: str | None = None) -> tuple[Any, dict[str, Any]]:
    """LoRA SFT of the model ``spec`` on ``chats`` in float32, resumable from ``checkpoint``.

    Args:
        spec: a :func:`trustlab.models.load_model` spec of the base model (loaded in float32 to train).
        chats: training conversations (the last turn of each is the assistant's target).
        config: a :class:`~trustlab.train.SFTConfig`.
        checkpoint: folder for the adapter and ``sft_log.json``; when they exist, training is skipped.
        template: the chat template given to the tokenizer before training and for generation.
        dtype: the inference dtype of the returned handle (None: the dtype policy).

    Returns:
        (a model handle of the merged tuned model, the log: losses, divergence flags, seconds, resumed).

    Raises:
        TrainingDivergedError: a loss was NaN or infinite (nothing is saved).
    """
    import torch

    from trustlab.errors import require
    from trustlab.models import load_model
    from trustlab.models.policy import resolve_dtype
    from trustlab.train import lora_finetune

    peft = require("peft", "llm")
    checkpoint = Path(checkpoint)
    base = load_model(spec, dtype="float32", attn_implementation="sdpa")
    tokenizer = base.tokenizer
    tokenizer.chat_template = template
    if (checkpoint / "adapter_config.json").exists() and (checkpoint / "sft_log.json").exists():
        if config.extra_special_tokens:  # as add_lora did before training; the saved rows replace the new ones
            tokenizer.add_special_tokens({"additional_special_tokens": list(config.extra_special_tokens)})
            base.model.resize_token_embeddings(len(tokenizer))
        tuned = peft.PeftModel.from_pretrained(base.model, checkpoint)
        log = {**read_json(checkpoint / "sft_log.json"), "resumed": True}
    else:
        t0 = time.perf_counter()
        tuned, sft_log = lora_finetune(base.model, tokenizer, [{"messages": list(c)} for c in chats], config)
        sft_log.raise_if_diverged()
        tuned.save_pretrained(checkpoint)
        log = {"losses": list(sft_log), **sft_log.flags(), "examples": len(chats),
               "seconds": round(time.perf_counter() - t0, 1)}
        write_json(checkpoint / "sft_log.json", log)
        log = {**log, "resumed": False}
    merged = tuned.merge_and_unload().eval()  # safe: torch Module.eval(), not Python eval
    merged.to(getattr(torch, resolve_dtype(dtype)))
    return load_model(merged, tokenizer=tokenizer), log
