"""LoRA (or full) supervised fine-tuning of a causal LM with the Hugging Face Trainer and PEFT.

Data: JSONL with one chat example per line, either ``{"messages": [{"role": ..., "content": ...}, ...]}``
(the last message is the assistant's target) or ``{"prompt": ..., "response": ...}``. The loss covers the
response tokens only (prompt tokens are labelled -100). ``{"text": ...}`` rows are plain language-model
text (every token labelled). Pre-tokenized examples (``{"input_ids": [...], "labels": [...]}``) pass
through unchanged.

A sampler (``sampler=``, e.g. :class:`trustlab.data.MixCD` for rehearsal of old data) decides the batches
when given; ``callbacks=`` adds Trainer callbacks.

The optimizer is picked by name (``lora-rite``, ``adamw``, ``loraplus``) and handed to the Trainer as
``Trainer(optimizers=(opt, sched))``. ``extra_special_tokens`` adds tokens (e.g. an ``[IND]`` indicator)
to the tokenizer, resizes the embeddings and trains only those new rows (PEFT
``trainable_token_indices``), next to the LoRA pairs.

Divergence: a non-finite loss stays in the log (``"loss": None, "nonfinite": "nan"``), the returned
:class:`SFTLog` is flagged ``diverged`` with the first such step and a warning is issued; training stops
after ``stop_after_nonfinite`` consecutive non-finite losses. Callers that save the adapter call
:meth:`SFTLog.raise_if_diverged` first (:class:`TrainingDivergedError`).

``response_logits_only=True`` computes the same loss for less: batches are left-padded (rotary attention
depends only on relative positions, so padding on the left changes no score) and the LM head runs only on
the last positions, those that predict a response token (``logits_to_keep``). On a large vocabulary and
short responses (Gemma-3's 262k-token head, one-line answers) this halves a CPU step.
"""

from __future__ import annotations

import json
import math
import warnings
from collections.abc import Sequence
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
        logging_steps: loss is logged every this many steps (the window's mean; None if any step was not finite).
        stop_after_nonfinite: stop training after this many consecutive steps with a non-finite loss
            (0 = never stop early); the run is flagged diverged either way.
        lora_rite_options: extra :class:`~trustlab.optim.LoRARITE` options (lora-rite only).
        response_logits_only: left-pad and run the LM head only where a response token is predicted (the
            same loss; see the module docstring). Needs a model whose ``forward`` takes ``logits_to_keep``.
        full: train every weight (AdamW) instead of LoRA pairs (``optimizer`` must be ``"adamw"``).
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
    stop_after_nonfinite: int = 3
    lora_rite_options: dict[str, Any] = field(default_factory=dict)
    response_logits_only: bool = False
    full: bool = False


class TrainingDivergedError(TrustlabError, RuntimeError):
    """Training produced non-finite losses: the adapter is not a usable result."""


class SFTLog(list):
    """The logged losses (``{"step", "loss"}`` dicts, ``loss`` None where it was not finite) and run flags.

    Attributes:
        diverged: some logged loss was NaN or infinite.
        first_nonfinite_step: the first such step (None if none).
        nonfinite_steps: how many logged losses were non-finite.
        stopped_early: training stopped after ``stop_after_nonfinite`` consecutive non-finite losses.
        planned_steps: the steps training was configured for.

    Example:
        >>> log = SFTLog([{"step": 1, "loss": 2.0}, {"step": 2, "loss": None, "nonfinite": "nan"}], planned_steps=2)
        >>> log.diverged, log.first_nonfinite_step
        (True, 2)
    """

    def __init__(self, rows: list[dict[str, Any]], planned_steps: int, stopped_early: bool = False):
        super().__init__(rows)
        bad = [r["step"] for r in rows if r.get("nonfinite")]
        self.diverged = bool(bad)
        self.first_nonfinite_step = bad[0] if bad else None
        self.nonfinite_steps = len(bad)
        self.stopped_early = stopped_early
        self.planned_steps = planned_steps

    def flags(self) -> dict[str, Any]:
        """The run-level flags as a JSON-ready dict (for ``results.json``)."""
        return {"diverged": self.diverged, "first_nonfinite_step": self.first_nonfinite_step,
                "nonfinite_steps": self.nonfinite_steps, "stopped_early": self.stopped_early,
                "steps_run": self[-1]["step"] if self else 0, "planned_steps": self.planned_steps}

    def describe(self) -> str:
        """One line on the divergence ('' when the run stayed finite)."""
        if not self.diverged:
            return ""
        stop = (f"; stopped at step {self[-1]['step']} of {self.planned_steps}" if self.stopped_early else "")
        return (f"training diverged: non-finite loss first at step {self.first_nonfinite_step} "
                f"({self.nonfinite_steps} of {len(self)} logged steps){stop}")

    def raise_if_diverged(self) -> None:
        """Raise :class:`TrainingDivergedError` when the run diverged (lower the lr, or add warm-up)."""
        if self.diverged:
            raise TrainingDivergedError(f"{self.describe()}: the adapter is not a usable result; lower --lr or "
                                        "add --warmup-steps")


def _log_rows(losses: list[float], every: int) -> list[dict[str, Any]]:
    """One row per ``every`` steps (the window's mean loss); a window with a non-finite loss logs ``None``."""
    rows = []
    for start in range(0, len(losses), every):
        window = losses[start:start + every]
        bad = [x for x in window if not math.isfinite(x)]
        step = start + len(window)
        rows.append({"step": step, "loss": None, "nonfinite": str(bad[0])} if bad
                    else {"step": step, "loss": sum(window) / len(window)})
    return rows


def response_loss(model: Any, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
    """Mean cross-entropy over the labelled tokens of a left-padded batch, with logits only where needed.

    Position t predicts token t + 1, so the LM head runs on positions ``first - 1 .. T - 2``, where ``first``
    is the first labelled position of any row (left padding puts every response at the end).
    """
    labels = inputs["labels"]  # (B, T)
    labelled = (labels[:, 1:] != -100).any(0).nonzero()
    if not len(labelled):
        raise EmptyInputError("a training batch has no labelled tokens")
    first = int(labelled[0]) + 1
    out = model(input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"],
                logits_to_keep=labels.shape[1] - first + 1)
    logits = out.logits[:, :-1].float()  # (B, T - first, V): predictions of positions first .. T - 1
    return torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), labels[:, first:].reshape(-1),
                                             ignore_index=-100)


def _trainer_classes(transformers: Any, patience: int, response_only: bool = False,
                     base: type | None = None) -> tuple[type, Any]:
    """A Trainer (subclass of ``base``, default ``transformers.Trainer``) that keeps every step's loss, and a
    callback that stops after ``patience`` consecutive non-finite ones. (The Trainer's own log cannot serve:
    by default it replaces a non-finite loss by the running mean, and without that filter one NaN poisons
    its loss accumulator for the rest of the run.)"""

    class RecordingTrainer(base or transformers.Trainer):
        step_losses: list[float]

        def training_step(self, model: Any, inputs: Any, num_items_in_batch: Any = None) -> torch.Tensor:
            loss = super().training_step(model, inputs, num_items_in_batch)
            self.step_losses.append(float(loss))
            return loss

        def compute_loss(self, model: Any, inputs: Any, return_outputs: bool = False,
                         num_items_in_batch: Any = None) -> Any:
            if not response_only or base is not None:  # a sampler's trainer computes per-sample losses itself
                return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
            loss = response_loss(model, inputs)
            return (loss, None) if return_outputs else loss

    class StopOnNonFinite(transformers.TrainerCallback):
        def __init__(self) -> None:
            self.losses: list[float] = []
            self.stopped = False

        def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            tail = self.losses[-patience:] if patience else []
            if len(tail) == patience and tail and not any(math.isfinite(x) for x in tail):
                control.should_training_stop = self.stopped = True

    return RecordingTrainer, StopOnNonFinite()


def read_examples(path: str | Path) -> list[dict[str, Any]]:
    """Read a JSONL of chat examples, checking each has ``messages`` or ``prompt``/``response``."""
    rows = []
    for i, line in enumerate(Path(path).read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        row = json.loads(line)
        if (not (isinstance(row.get("messages"), list) and row["messages"]) and not ("prompt" in row and "response" in row)
                and not isinstance(row.get("text"), str)):
            raise TrustlabError(f"{path}:{i}: expected {{'messages': [...]}}, {{'prompt': ..., 'response': ...}} or "
                                "{'text': ...}")
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
    if "text" in example and "messages" not in example and "prompt" not in example:
        ids = tokenizer(example["text"], add_special_tokens=False)["input_ids"][:max_length]
        return {"input_ids": ids, "labels": list(ids)}
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


def _collate(pad_id: int, left: bool = False):
    def collate(batch: list[dict[str, list[int]]]) -> dict[str, torch.Tensor]:
        width = max(len(b["input_ids"]) for b in batch)
        ids = torch.full((len(batch), width), pad_id, dtype=torch.long)
        labels = torch.full((len(batch), width), -100, dtype=torch.long)
        mask = torch.zeros((len(batch), width), dtype=torch.long)
        for i, b in enumerate(batch):  # right padding for training (left: response_logits_only)
            n = len(b["input_ids"])
            at = slice(width - n, width) if left else slice(0, n)
            ids[i, at] = torch.tensor(b["input_ids"])
            labels[i, at] = torch.tensor(b["labels"])
            mask[i, at] = 1
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
    """The named optimizer over the PEFT model's LoRA pairs (every weight when ``config.full``), and a
    warm-up-then-constant schedule."""
    from trustlab.optim.factory import create_optimizer

    if config.optimizer not in ("lora-rite", "adamw", "loraplus"):
        raise TrustlabError(f"unknown optimizer {config.optimizer!r}; choose lora-rite, adamw or loraplus")
    if config.full:
        if config.optimizer != "adamw":
            raise TrustlabError(f"full fine-tuning uses adamw; {config.optimizer} optimizes LoRA pairs")
        opt = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    else:
        extra = dict(config.lora_rite_options) if config.optimizer == "lora-rite" else {}
        opt = create_optimizer(config.optimizer, model, lr=config.lr, weight_decay=config.weight_decay,
                               loraplus_ratio=config.loraplus_ratio, **extra)
    warm = max(config.warmup_steps, 0)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, (s + 1) / warm) if warm else 1.0)
    return opt, sched


def lora_finetune(model: Any, tokenizer: Any, examples: list[dict[str, Any]], config: SFTConfig,
                  output_dir: str | Path | None = None, *, sampler: Any = None, callbacks: Sequence[Any] = (),
                  extra_examples: Sequence[dict[str, Any]] = ()) -> tuple[Any, SFTLog]:
    """LoRA fine-tune ``model`` on ``examples`` with the HF Trainer; returns ``(peft_model, log)``.

    ``log`` lists the logged losses; it is flagged (``log.diverged``, a warning) when a loss was NaN or
    infinite, and training stops after ``config.stop_after_nonfinite`` consecutive such losses.

    Args:
        model: a transformers causal LM (not yet wrapped with PEFT).
        tokenizer: its tokenizer (with a chat template), or None for pre-tokenized examples.
        examples: chat examples (see the module docstring).
        config: :class:`SFTConfig` (``full=True``: every weight, no LoRA; the model itself is returned).
        output_dir: Trainer output folder (nothing is saved there unless you save; default: a temp dir).
        sampler: a loss-scheduled sampler (e.g. :class:`trustlab.data.MixCD`) over ``examples`` followed by
            ``extra_examples``, with ``total_steps = config.steps``; batches then come from it
            (:class:`trustlab.data.hf.SamplerTrainer`) and per-sample losses are fed back to it.
        callbacks: more ``transformers.TrainerCallback`` objects.
        extra_examples: pre-tokenized items after ``examples`` (e.g. old pretraining blocks to rehearse).

    Example:
        >>> handle = load_model("embedded")
        >>> peft_model, log = lora_finetune(handle.model, handle.tokenizer,
        ...                                 [{"prompt": "2+2?", "response": "4"}] * 8, SFTConfig(steps=2))
    """
    transformers = require("transformers", "llm")
    if not examples:
        raise EmptyInputError("no training examples")
    peft_model = model if config.full else add_lora(model, config, tokenizer)
    data = [tokenize_example(tokenizer, ex, config.max_length) for ex in [*examples, *extra_examples]]
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
        base = None
        kwargs: dict[str, Any] = {}
        if sampler is not None:
            from trustlab.data.hf import SamplerTrainer

            base, kwargs = SamplerTrainer, {"train_sampler": sampler}
        trainer_cls, stopper = _trainer_classes(transformers, config.stop_after_nonfinite, config.response_logits_only,
                                                base)
        trainer = trainer_cls(model=peft_model, args=args, train_dataset=data,
                              data_collator=_collate(pad_id, left=config.response_logits_only),
                              optimizers=(opt, sched), callbacks=[stopper, *callbacks], **kwargs)
        trainer.step_losses = stopper.losses
        trainer.train()
    log = SFTLog(_log_rows(stopper.losses, max(config.logging_steps, 1)), planned_steps=config.steps,
                 stopped_early=stopper.stopped)
    if log.diverged:
        warnings.warn(log.describe(), RuntimeWarning, stacklevel=2)
    return peft_model, log
