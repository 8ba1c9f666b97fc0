"""LoRA-RITE vs AdamW on SmolLM2-135M-Instruct: a reasoning-gym task scored by exact match.

Task: ``chain_sum`` from ``reasoning-gym`` (two terms of one or two digits, + or -), answer the number
only. Train, validation and test questions are generated with different seeds and made disjoint by
question text (:func:`task_splits`). The score is exact match of the stripped greedy answer.

Protocol (:mod:`trustlab.reproduce.lora_rite` runs it): each optimizer's lr is chosen on the validation
split by :func:`bracket_lr`, which widens the grid one half-decade step (the 1-3-10 ladder, x ~3.16)
towards any edge that holds the best validation score until the best is interior (or a cap is hit);
the test split is scored only by fresh seeds trained at the chosen lr.

Validity: a generation is a valid answer when it is one bare integer (after stripping spaces and a
final period) and does not echo the prompt (a run of 3 words of the instruction or the question, e.g.
"4 - 1 ="). Anything else is invalid, counted by reason, and never correct.
"""

from __future__ import annotations

import copy
import math
import re
import time
from collections.abc import Callable
from typing import Any

from trustlab.errors import require
from trustlab.train import SFTConfig, lora_finetune
from trustlab.validity import ValidityCounter, echoes_source

SYSTEM = "Reply with the final number only."
TASK = {"name": "chain_sum", "min_terms": 2, "max_terms": 2, "min_digits": 1, "max_digits": 2}
SPLIT_SEEDS = {"train": 1000, "val": 3000, "test": 2000}  # + the run's seed; test keeps the old seed


def task_splits(n_train: int, n_val: int, n_test: int, seed: int = 0) -> dict[str, list[dict[str, Any]]]:
    """Chat training examples and validation / test ``{"question", "answer"}`` items, pairwise disjoint.

    Each split is drawn from its own generator seed; a validation question already in train, or a test
    question already in train or validation, is dropped (so a split can come out short only if the task
    runs out of distinct questions, which 2-term chain sums do not at these sizes).
    """
    rg = require("reasoning_gym", "test", pip="pip install reasoning-gym==0.1.25")
    opts = {k: v for k, v in TASK.items() if k != "name"}
    seen: set[str] = set()
    items: dict[str, list[dict[str, str]]] = {}
    for split, n in (("train", n_train), ("val", n_val), ("test", n_test)):
        pool = rg.create_dataset(TASK["name"], size=2 * n if split != "train" else n, seed=SPLIT_SEEDS[split] + seed, **opts)
        fresh = [x for x in pool if split == "train" or x["question"] not in seen][:n]
        items[split] = [{"question": x["question"], "answer": str(x["answer"])} for x in fresh]
        seen |= {x["question"] for x in fresh}
    train = [{"messages": [{"role": "system", "content": SYSTEM}, {"role": "user", "content": x["question"]},
                           {"role": "assistant", "content": x["answer"]}]} for x in items["train"]]
    return {"train": train, "val": items["val"], "test": items["test"]}


def ladder_step(lr: float, direction: int) -> float:
    """The next lr on the 1-3-10 ladder (..., 1e-4, 3e-4, 1e-3, ...) up (+1) or down (-1).

    Example:
        >>> ladder_step(3e-4, +1), ladder_step(1e-3, -1), ladder_step(1e-3, +1)
        (0.001, 0.0003, 0.003)
    """
    k = round(2 * math.log10(lr))
    if _ladder_value(k) != lr:
        raise ValueError(f"lr {lr:g} is not on the 1-3-10 ladder (1e-4, 3e-4, 1e-3, ...)")
    return _ladder_value(k + direction)


def _ladder_value(k: int) -> float:
    return float(f"{1 if k % 2 == 0 else 3}e{k // 2}")


def bracket_lr(score: Callable[[float], float], grid: list[float], max_extensions: int = 2) -> dict[str, Any]:
    """Choose the lr with the best ``score`` (validation), widening ``grid`` until the best is interior.

    Every grid lr is scored; while an edge of the grid holds the best score (ties included: a tie at the
    edge does not show the curve has turned), one :func:`ladder_step` is added beyond that edge and
    scored, at most ``max_extensions`` times in all. The chosen lr is the best one (ties: the smallest).

    Args:
        score: lr -> validation metric, higher is better (called once per lr).
        grid: the starting lrs, on the 1-3-10 ladder.
        max_extensions: the cap on added lrs.

    Returns:
        ``{"lr": chosen, "grid": lrs scored (ascending), "val": [score per grid lr], "initial_grid": ...,
        "extensions": how many lrs were added, "interior": the best is not at an edge, "capped": the cap
        stopped the widening while an edge still held the best}``.

    Example:
        >>> peak_at_1e_2 = lambda lr: -abs(math.log10(lr) + 2)
        >>> out = bracket_lr(peak_at_1e_2, [1e-4, 3e-4, 1e-3], max_extensions=3)
        >>> out["lr"], out["grid"][-1], out["interior"], out["extensions"]
        (0.01, 0.03, True, 3)
        >>> bracket_lr(peak_at_1e_2, [1e-4, 3e-4, 1e-3], max_extensions=2)["capped"]
        True
    """
    lrs = sorted(grid)
    for lr in lrs:
        ladder_step(lr, 0)  # refuses an lr off the ladder
    val: dict[float, float] = {}
    extensions = 0
    while True:
        for lr in lrs:
            if lr not in val:
                val[lr] = score(lr)
        best = max(val[lr] for lr in lrs)
        edges = [d for d, lr in ((-1, lrs[0]), (+1, lrs[-1])) if val[lr] == best]
        if not edges or extensions >= max_extensions:
            break
        for d in edges[: max_extensions - extensions]:
            lrs = sorted([*lrs, ladder_step(lrs[0] if d < 0 else lrs[-1], d)])
            extensions += 1
    chosen = min(lr for lr in lrs if val[lr] == best)
    return {"lr": chosen, "grid": lrs, "val": [val[lr] for lr in lrs], "initial_grid": sorted(grid),
            "extensions": extensions, "interior": not edges, "capped": bool(edges)}


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


def llm_run(base: Any, tokenizer: Any, train: list[dict[str, Any]], scored_on: list[dict[str, str]], optimizer: str,
            lr: float, seed: int, steps: int, *, warmup_steps: int, batch_size: int = 8, rank: int = 8) -> dict[str, Any]:
    """One LoRA fine-tune of a copy of ``base`` (its dtype: pass a float32 model to train in float32), then
    exact match on ``scored_on`` (the validation items during the lr search, the test items after it).

    Returns the per-item scores (:func:`exact_match`), the loss curve, divergence flags, the factor balance
    and the wall time in seconds."""
    start = time.perf_counter()
    cfg = SFTConfig(optimizer=optimizer, lr=lr, steps=steps, batch_size=batch_size, rank=rank, alpha=2 * rank,
                    warmup_steps=warmup_steps, seed=seed, max_length=64)
    model, log = lora_finetune(copy.deepcopy(base), tokenizer, train, cfg)
    scored = exact_match(model, tokenizer, scored_on)
    return {"optimizer": optimizer, "lr": lr, "seed": seed, "steps": steps, **scored, **log.flags(),
            "loss": [None if h["loss"] is None else round(h["loss"], 5) for h in log],
            "log10_normA_over_normB": _factor_balance(model), "seconds": round(time.perf_counter() - start, 1)}


def _factor_balance(model: Any) -> float:
    """Mean over LoRA pairs of log10(||lora_A|| / ||lora_B||) at the end of training."""
    import torch

    from trustlab.optim import find_lora_pairs

    pairs, _ = find_lora_pairs(model)
    with torch.no_grad():
        vals = [(p.lora_A.norm() / p.lora_B.norm().clamp_min(1e-30)).log10() for p in pairs]
    return float(torch.stack(vals).mean())
