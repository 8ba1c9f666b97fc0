"""LoRA-RITE vs AdamW vs LoRA+ on SmolLM2-135M-Instruct: a reasoning-gym task scored by exact match.

Task: ``chain_sum`` from ``reasoning-gym`` (two terms of one or two digits, + or -), answer the number
only. Training and held-out questions are generated with different seeds; held-out questions that also
occur in the training set are dropped. The score is exact match of the stripped greedy answer.

Validity: a generation is a valid answer when it is one bare integer (after stripping spaces and a
final period) and does not echo the prompt (a run of 3 words of the instruction or the question, e.g.
"4 - 1 ="). Anything else is invalid, counted by reason, and never correct.
"""

from __future__ import annotations

import copy
import re
from typing import Any

from trustlab.errors import require
from trustlab.train import SFTConfig, lora_finetune
from trustlab.validity import ValidityCounter, echoes_source

SYSTEM = "Reply with the final number only."
TASK = {"name": "chain_sum", "min_terms": 2, "max_terms": 2, "min_digits": 1, "max_digits": 2}


def task_data(n_train: int, n_test: int, seed: int = 0) -> tuple[list[dict[str, Any]], list[dict[str, str]]]:
    """Chat training examples and held-out ``{"question", "answer"}`` items (no overlap)."""
    rg = require("reasoning_gym", "test", pip="pip install reasoning-gym==0.1.25")
    opts = {k: v for k, v in TASK.items() if k != "name"}
    train = list(rg.create_dataset(TASK["name"], size=n_train, seed=1000 + seed, **opts))
    seen = {x["question"] for x in train}
    test = [x for x in rg.create_dataset(TASK["name"], size=2 * n_test, seed=2000 + seed, **opts)
            if x["question"] not in seen][:n_test]
    examples = [{"messages": [{"role": "system", "content": SYSTEM}, {"role": "user", "content": x["question"]},
                              {"role": "assistant", "content": str(x["answer"])}]} for x in train]
    return examples, [{"question": x["question"], "answer": str(x["answer"])} for x in test]


def parse_answer(text: str, question: str) -> tuple[str | None, str | None]:
    """``(answer, None)`` for a valid generation, ``(None, reason)`` for an invalid one (module docstring).

    Example:
        >>> parse_answer(" 3.", "State the final answer to the following arithmetic problem: 4 - 1 =")
        ('3', None)
        >>> parse_answer("the following arithmetic problem", "State the final answer to the following arithmetic problem: 4 - 1 =")
        (None, 'echoes the prompt')
    """
    out = text.strip().rstrip(".").strip()
    if echoes_source(out, f"{SYSTEM} {question}", min_words=3):
        return None, "echoes the prompt"
    if not re.fullmatch(r"[+-]?\d+", out):
        return None, "not a bare number"
    return out, None


def exact_match(model: Any, tokenizer: Any, items: list[dict[str, str]], batch_size: int = 25) -> dict[str, Any]:
    """Greedy answers (8 new tokens), parsed and scored against the references.

    Returns:
        ``{"exact_match": share correct, "correct": [0/1 per item], "valid": [bool per item],
        "validity": ValidityCounter.to_dict(), "answers": [generation per item]}``.
    """
    from trustlab.models import load_model

    model.eval()  # safe: torch Module.eval(), not Python eval
    handle = load_model(model, tokenizer=tokenizer, batch_size=batch_size)
    prompts = [[{"role": "system", "content": SYSTEM}, {"role": "user", "content": x["question"]}] for x in items]
    outs = [g[0].text for g in handle.generate(prompts, max_new_tokens=8)]
    counter, correct, valid = ValidityCounter(), [], []
    for out, x in zip(outs, items, strict=True):
        answer, reason = parse_answer(out, x["question"])
        if reason:
            counter.invalid(reason)
        else:
            counter.valid()
        valid.append(reason is None)
        correct.append(int(answer == x["answer"]))
    return {"exact_match": sum(correct) / max(len(items), 1), "correct": correct, "valid": valid,
            "validity": counter.to_dict(), "answers": [o.strip() for o in outs]}


def llm_run(base: Any, tokenizer: Any, train: list[dict[str, Any]], test: list[dict[str, str]], optimizer: str,
            lr: float, seed: int, steps: int, batch_size: int = 8, rank: int = 8) -> dict[str, Any]:
    """One LoRA fine-tune of a copy of ``base``; held-out exact match (per item), loss curve, divergence flags."""
    cfg = SFTConfig(optimizer=optimizer, lr=lr, steps=steps, batch_size=batch_size, rank=rank, alpha=2 * rank,
                    warmup_steps=max(steps // 10, 1), seed=seed, max_length=64)
    model, log = lora_finetune(copy.deepcopy(base), tokenizer, train, cfg)
    scored = exact_match(model, tokenizer, test)
    norms = _factor_balance(model)
    return {"optimizer": optimizer, "lr": lr, "seed": seed, "steps": steps, **scored, **log.flags(),
            "loss": [None if h["loss"] is None else round(h["loss"], 5) for h in log],
            "log10_normA_over_normB": norms}


def _factor_balance(model: Any) -> float:
    """Mean over LoRA pairs of log10(||lora_A|| / ||lora_B||) at the end of training."""
    import torch

    from trustlab.optim import find_lora_pairs

    pairs, _ = find_lora_pairs(model)
    with torch.no_grad():
        vals = [(p.lora_A.norm() / p.lora_B.norm().clamp_min(1e-30)).log10() for p in pairs]
    return float(torch.stack(vals).mean())
