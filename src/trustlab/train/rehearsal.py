"""Old data for fine-tuning: a rehearsal pool, the original model's losses on it, and forgetting.

``old_data_blocks`` cuts an offline corpus (:func:`trustlab.data.corpus.english_documents`) into a
rehearsal pool and a held-out set (from other documents); ``block_losses`` of the model before fine-tuning
gives mix-cd its per-sample prior losses (the one extra pass over the pool that the method needs, done
once); the same losses on the held-out set before and after fine-tuning measure forgetting.

Example:
    >>> pool, held_out, info = old_data_blocks(tokenizer, "pydoc-topics", n_pool=512, n_held_out=64)
    >>> sampler = MixCD(len(examples), block_losses(model, pool).numpy(), total_steps=100, batch_size=8,
    ...                 rehearsal=4, policy="mixcd")
"""

from __future__ import annotations

from typing import Any

import torch

from trustlab.errors import EmptyInputError


def old_data_blocks(tokenizer: Any, corpus: str, *, n_pool: int, n_held_out: int, block_len: int,
                    seed: int = 0, vocab: Any = None) -> tuple[torch.Tensor, torch.Tensor, dict[str, Any]]:
    """``(pool, held_out, info)``: token blocks of old data, the held-out ones from other documents."""
    from trustlab.data.corpus import blocks_from_ids, english_documents, split_documents
    from trustlab.train.pretrain import tokenize_documents

    docs, info = english_documents(corpus)
    pool_docs, held_docs = split_documents(docs, 0.1, seed=seed)
    if not held_docs:
        raise EmptyInputError(f"old-data corpus {corpus!r} has one document: no held-out part to measure forgetting")
    g = torch.Generator().manual_seed(seed)
    pool = blocks_from_ids(tokenize_documents(tokenizer, pool_docs), block_len)
    held = blocks_from_ids(tokenize_documents(tokenizer, held_docs), block_len)
    pool = pool[torch.randperm(len(pool), generator=g)[:n_pool]]
    held = held[torch.randperm(len(held), generator=g)[:n_held_out]]
    if vocab is not None:
        pool, held = vocab.encode(pool), vocab.encode(held)
    return pool, held, {**info, "pool_blocks": len(pool), "held_out_blocks": len(held), "block_len": block_len}


def as_items(blocks: torch.Tensor) -> list[dict[str, list[int]]]:
    """Blocks as pre-tokenized training items (every token labelled)."""
    return [{"input_ids": b.tolist(), "labels": b.tolist()} for b in blocks]


def forgetting_report(before: torch.Tensor, after: torch.Tensor) -> dict[str, float]:
    """Mean held-out loss before and after fine-tuning, their difference and the share of blocks worse by
    more than 0.1 nats."""
    return {"old_loss_before": float(before.mean()), "old_loss_after": float(after.mean()),
            "forgetting": float((after - before).mean()), "old_blocks_damaged": float(((after - before) > 0.1).float().mean())}
