"""Pretraining a small Llama-style model from a config on fixed-length token blocks, with a data schedule.

The model is ``transformers.LlamaForCausalLM`` built from a :class:`PretrainConfig` (random init); the
tokenizer is the embedded SmolLM2's. Training runs in :class:`trustlab.data.hf.SamplerTrainer`, so the
schedule is a sampler (``random``: uniform passes; ``lfr``: :class:`~trustlab.data.LFRSampler`) and the
run is the HF Trainer's: checkpoints every ``save_every`` steps (the sampler's state inside), resumable,
``torchrun`` / ``accelerate launch`` for several processes, bf16 autocast where the CPU or GPU has it.

Vocabulary: SmolLM2's 49,152-token head dominates a small model's step (a 2-layer, 128-wide model spends
most of its time there on CPU). ``Vocab.from_blocks`` keeps only the token ids that occur in the corpus
(plus one id for any other token) and the model is built over that compact vocabulary; the map is saved
beside the model (``trustlab_vocab.json``), and :class:`Vocab` maps SmolLM2 ids in and out. A model over
the full vocabulary is one option away (``compact_vocab=False``).

Example:
    >>> vocab = Vocab.from_blocks([blocks])
    >>> model = tiny_llama(len(vocab), PretrainConfig(hidden=64, layers=2))
    >>> history = pretrain(model, vocab.encode(blocks), {"val": vocab.encode(val)}, sampler, PretrainConfig(), out)
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from trustlab.errors import EmptyInputError, TrustlabError, require
from trustlab.report.io import append_jsonl, atomic_write_text, read_jsonl

VOCAB_FILE = "trustlab_vocab.json"


@dataclass
class PretrainConfig:
    """A small Llama model and its training run.

    Attributes:
        hidden: model width.
        layers: transformer blocks.
        heads: attention heads (key/value heads: the same).
        intermediate: MLP width (default 3 x hidden).
        block_len: tokens per training block (the context length).
        batch_size: blocks per step per process.
        steps: training steps.
        lr: peak AdamW learning rate (cosine decay after a linear warm-up).
        warmup: warm-up share of the steps.
        weight_decay: AdamW weight decay.
        eval_every: validation loss every this many steps (and at the end).
        eval_batch: blocks per validation forward pass.
        save_every: checkpoint every this many steps (0: only at the end).
        seed: model init and data-order seed.
        bf16: bfloat16 autocast (None: where the hardware supports it).
    """

    hidden: int = 128
    layers: int = 2
    heads: int = 4
    intermediate: int | None = None
    block_len: int = 64
    batch_size: int = 32
    steps: int = 600
    lr: float = 3e-3
    warmup: float = 0.05
    weight_decay: float = 0.1
    eval_every: int = 25
    eval_batch: int = 64
    save_every: int = 100
    seed: int = 0
    bf16: bool | None = None


class Vocab:
    """A compact vocabulary: the SmolLM2 token ids a corpus uses, renumbered 1..n; id 0 stands for any other.

    Example:
        >>> v = Vocab([5, 9, 40])
        >>> v.encode(torch.tensor([[9, 40, 7]])).tolist(), v.decode(torch.tensor([1, 2])).tolist()
        ([[2, 3, 0]], [5, 9])
    """

    def __init__(self, kept: Sequence[int], unk_id: int = 0) -> None:
        self.kept = np.asarray(sorted(set(int(i) for i in kept)), dtype=np.int64)
        self.unk_id = unk_id
        self._lut = np.zeros(int(self.kept.max()) + 2 if len(self.kept) else 1, dtype=np.int64)
        self._lut[self.kept] = np.arange(1, len(self.kept) + 1)

    def __len__(self) -> int:
        return len(self.kept) + 1

    @classmethod
    def from_blocks(cls, block_sets: Sequence[torch.Tensor]) -> Vocab:
        used = np.unique(np.concatenate([b.reshape(-1).numpy() for b in block_sets]))
        return cls(used.tolist())

    def encode(self, ids: torch.Tensor) -> torch.Tensor:
        a = ids.numpy()
        inside = a < len(self._lut) - 1
        out = np.where(inside, self._lut[np.where(inside, a, 0)], self.unk_id)
        return torch.from_numpy(out.astype(np.int64))

    def decode(self, ids: torch.Tensor) -> torch.Tensor:
        a = ids.numpy()
        return torch.from_numpy(np.where(a > 0, self.kept[np.clip(a - 1, 0, len(self.kept) - 1)], -1))

    def save(self, folder: str | Path) -> Path:
        return atomic_write_text(Path(folder) / VOCAB_FILE, json.dumps({"base": "SmolLM2-135M",
                                                                        "kept": self.kept.tolist()}))

    @classmethod
    def load(cls, folder: str | Path) -> Vocab | None:
        path = Path(folder) / VOCAB_FILE
        return cls(json.loads(path.read_text())["kept"]) if path.is_file() else None


def tiny_llama(vocab_size: int, config: PretrainConfig) -> Any:
    """A randomly initialised ``LlamaForCausalLM`` of the configured size (tied input/output embeddings)."""
    transformers = require("transformers", "llm")
    torch.manual_seed(config.seed)
    cfg = transformers.LlamaConfig(
        vocab_size=vocab_size, hidden_size=config.hidden, intermediate_size=config.intermediate or 3 * config.hidden,
        num_hidden_layers=config.layers, num_attention_heads=config.heads, num_key_value_heads=config.heads,
        max_position_embeddings=max(config.block_len, 64), tie_word_embeddings=True, bos_token_id=None,
        eos_token_id=None, pad_token_id=None)
    return transformers.LlamaForCausalLM(cfg)


class BlockDataset(torch.utils.data.Dataset):
    """``(n, block_len)`` token blocks as ``{"input_ids", "labels"}`` items (labels = the inputs)."""

    def __init__(self, blocks: torch.Tensor) -> None:
        if blocks.ndim != 2 or not len(blocks):
            raise EmptyInputError("no training blocks (expected a non-empty (n, block_len) tensor)")
        self.blocks = blocks

    def __len__(self) -> int:
        return len(self.blocks)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return {"input_ids": self.blocks[i], "labels": self.blocks[i]}


@torch.no_grad()
def block_losses(model: Any, blocks: torch.Tensor, batch: int = 64, bf16: bool = False) -> torch.Tensor:
    """Mean token loss of each block, ``(n,)`` float32 (eval mode; the model's mode is restored)."""
    from trustlab.data.hf import per_sample_loss

    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    out = []
    try:
        for start in range(0, len(blocks), batch):
            x = blocks[start:start + batch].to(device)
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
                logits = model(input_ids=x).logits
            out.append(per_sample_loss(logits, x)[1].float().cpu())
    finally:
        model.train(was_training)
    return torch.cat(out) if out else torch.empty(0)


def bf16_supported() -> bool:
    """bfloat16 autocast is fast here (a GPU with bf16, or a CPU with AVX-512 BF16 / AMX)."""
    if torch.cuda.is_available():
        return torch.cuda.is_bf16_supported()
    from trustlab.models.policy import fast_bf16

    return fast_bf16("cpu")


def _eval_callback(transformers: Any, eval_sets: Mapping[str, torch.Tensor], config: PretrainConfig, log: Path,
                   bf16: bool) -> Any:
    class EvalCallback(transformers.TrainerCallback):
        """Validation loss per set every ``eval_every`` steps, appended to ``log`` (the run's progress)."""

        def _eval(self, state: Any, model: Any) -> None:
            if not state.is_world_process_zero:
                return
            row = {"step": state.global_step, "tokens": state.global_step * config.batch_size * config.block_len}
            total = count = 0.0
            for name, blocks in eval_sets.items():
                losses = block_losses(model, blocks, config.eval_batch, bf16)
                row[name] = float(losses.mean())
                total, count = total + float(losses.sum()), count + len(losses)
            row["all"] = total / count if count else None
            append_jsonl(log, row)

        def on_step_end(self, args: Any, state: Any, control: Any, model: Any = None, **kwargs: Any) -> None:
            if state.global_step % config.eval_every == 0 or state.global_step == state.max_steps:
                self._eval(state, model)

    return EvalCallback()


def pretrain(model: Any, train_blocks: torch.Tensor, eval_sets: Mapping[str, torch.Tensor], sampler: Any,
             config: PretrainConfig, out: str | Path, *, callbacks: Sequence[Any] = (), resume: bool = False,
             progress: bool = True, log_name: str = "history.jsonl") -> list[dict[str, Any]]:
    """Train ``model`` on ``train_blocks`` in the order ``sampler`` decides; returns the validation history.

    Args:
        model: a causal LM (e.g. :func:`tiny_llama`).
        train_blocks: ``(n, block_len)`` token ids (in the model's vocabulary).
        eval_sets: name -> ``(m, block_len)`` validation blocks; each gets a loss column in the history,
            and ``all`` is the mean over every validation block.
        sampler: a :class:`~trustlab.data.LFRSampler` over ``n`` blocks with ``total_steps = config.steps``
            (a random schedule is ``LFRSampler(..., schedule=RANDOM_SCHEDULE)``).
        config: :class:`PretrainConfig`.
        out: run folder: ``checkpoints/`` (Trainer checkpoints with the sampler state) and the history log.
        callbacks: more ``TrainerCallback`` objects.
        resume: continue from the last checkpoint in ``out/checkpoints`` (if there is one).
        progress: show the Trainer's progress bar.
        log_name: the history log's file name in ``out`` (one JSON row per evaluation, appended as it runs).

    Returns:
        One row per evaluation: ``step``, ``tokens``, one loss per eval set, ``all``.

    Raises:
        TrustlabError: blocks shorter than 2 tokens, a sampler of another size, a diverged run.
    """
    transformers = require("transformers", "llm")
    from trustlab.data.hf import SamplerTrainer

    if train_blocks.ndim != 2 or train_blocks.shape[1] < 2:
        raise TrustlabError(f"training blocks must be (n, block_len >= 2), not {tuple(train_blocks.shape)}")
    if sampler.n_items != len(train_blocks):
        raise TrustlabError(f"the sampler covers {sampler.n_items} blocks, the corpus has {len(train_blocks)}")
    out = Path(out)
    log = out / log_name
    ckpt = out / "checkpoints"
    last = transformers.trainer_utils.get_last_checkpoint(str(ckpt)) if resume and ckpt.is_dir() else None
    if last is None and log.exists():
        log.unlink()  # a fresh run: the history starts over
    bf16 = bf16_supported() if config.bf16 is None else config.bf16
    args = transformers.TrainingArguments(
        output_dir=str(ckpt), max_steps=config.steps, per_device_train_batch_size=config.batch_size,
        learning_rate=config.lr, lr_scheduler_type="cosine", warmup_steps=math.ceil(config.warmup * config.steps),
        weight_decay=config.weight_decay, adam_beta2=0.95, max_grad_norm=1.0, logging_steps=max(config.eval_every, 1),
        save_strategy="steps", save_steps=config.save_every or config.steps, save_total_limit=2, report_to=[],
        seed=config.seed, data_seed=config.seed, bf16=bf16, use_cpu=not torch.cuda.is_available(),
        remove_unused_columns=False, dataloader_num_workers=0, disable_tqdm=not progress)
    evaluator = _eval_callback(transformers, eval_sets, config, log, bf16)
    trainer = SamplerTrainer(model=model, args=args, train_dataset=BlockDataset(train_blocks), train_sampler=sampler,
                             callbacks=[evaluator, *callbacks])
    if last is None:
        evaluator._eval(trainer.state, model)  # the step-0 point of the curve
    trainer.train(resume_from_checkpoint=last)
    history = list(read_jsonl(log))
    bad = [r["step"] for r in history if r["all"] is None or not math.isfinite(r["all"])]
    if bad:
        raise TrustlabError(f"validation loss is not finite from step {bad[0]}: the run diverged (lower the lr)")
    return history


def steps_to_reach(history: Sequence[Mapping[str, Any]], target: float, key: str = "all") -> int | None:
    """The first evaluated step whose ``key`` loss is at most ``target`` (None if never)."""
    for row in history:
        if row[key] is not None and row[key] <= target:
            return int(row["step"])
    return None


def save_model(model: Any, vocab: Vocab | None, config: PretrainConfig, folder: str | Path) -> Path:
    """``save_pretrained`` plus the compact vocabulary map and the config that built it."""
    folder = Path(folder)
    model.save_pretrained(str(folder))
    if vocab is not None:
        vocab.save(folder)
    atomic_write_text(folder / "trustlab_pretrain.json", json.dumps(asdict(config), indent=1))
    return folder


def smollm2_tokenizer() -> Any:
    """The embedded SmolLM2 tokenizer (offline)."""
    transformers = require("transformers", "llm")
    from trustlab.models.embedded import smollm2_dir

    return transformers.AutoTokenizer.from_pretrained(str(smollm2_dir()))


def tokenize_documents(tokenizer: Any, docs: Sequence[str]) -> list[int]:
    """One token stream: each document's ids followed by the end-of-text token."""
    eos = tokenizer.eos_token_id if tokenizer.eos_token_id is not None else 0
    ids: list[int] = []
    for doc in docs:
        ids.extend(tokenizer(doc, add_special_tokens=False)["input_ids"])
        ids.append(eos)
    return ids
