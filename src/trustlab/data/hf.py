"""A loss-scheduled sampler (LFR, mix-cd) inside the Hugging Face Trainer.

The Trainer owns the loop, so the sampler needs three things from it: the batches must come from the
sampler (not from the Trainer's own shuffling or accelerate's sharding: the sampler already gives each rank
its slice), each sample's loss from the training forward pass must reach ``sampler.update``, and the
sampler's state must save with every checkpoint and come back on ``train(resume_from_checkpoint=...)``.
:class:`SamplerTrainer` does all three; :class:`SamplerCallback` (added by it) saves the state.

Per-sample loss: the mean token cross-entropy over each row's labelled tokens (labels -100 ignored), from
the logits of the one forward pass; the training loss is the mean over all labelled tokens of the batch,
as the models' own loss is. On resume the sampler continues from its saved step, so the Trainer's own
fast-forward over already-seen batches is switched off (``ignore_data_skip``): it would replay the
schedule from step 0 with the final statistics, a different order.

Example:
    >>> sampler = LFRSampler(len(blocks), total_steps=200, batch_size=16)
    >>> trainer = SamplerTrainer(model=model, args=TrainingArguments("out", max_steps=200, save_steps=50),
    ...                          train_dataset=blocks, train_sampler=sampler)
    >>> trainer.train()                                   # or train(resume_from_checkpoint=True)
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch
import transformers

from trustlab.data._base import ScheduledSampler
from trustlab.errors import TrustlabError
from trustlab.report.io import atomic_write_bytes

STATE_FILE = "trustlab_sampler.pt"
INDEX_KEY = "sample_index"


class _Indexed(torch.utils.data.Dataset):
    """Each item as a dict with its dataset index under :data:`INDEX_KEY` (so losses can be fed back)."""

    def __init__(self, data: Any) -> None:
        self.data = data

    def __len__(self) -> int:
        return len(self.data)

    def __getitem__(self, i: int) -> dict[str, Any]:
        item = self.data[i]
        if not isinstance(item, dict):
            raise TrustlabError(f"dataset item {i} is a {type(item).__name__}, not a dict of model inputs")
        return {**item, INDEX_KEY: i}


class _Batches:
    """The sampler's per-step batches as a ``batch_sampler``. Its length is the whole run's, so a resumed
    Trainer counts the same epoch (it stops at ``max_steps`` when the remaining batches run out)."""

    def __init__(self, sampler: ScheduledSampler) -> None:
        self.sampler = sampler

    def __iter__(self):
        return self.sampler.batches()

    def __len__(self) -> int:
        return self.sampler.total_steps


def save_sampler_state(sampler: ScheduledSampler, folder: str | os.PathLike) -> Path:
    """Write ``sampler.state_dict()`` to ``folder/trustlab_sampler.pt`` atomically."""
    import io

    buf = io.BytesIO()
    torch.save(sampler.state_dict(), buf)
    return atomic_write_bytes(Path(folder) / STATE_FILE, buf.getvalue())


def load_sampler_state(sampler: ScheduledSampler, folder: str | os.PathLike) -> None:
    """Load ``folder/trustlab_sampler.pt`` into ``sampler`` (raises if missing or not this sampler's)."""
    path = Path(folder) / STATE_FILE
    if not path.is_file():
        raise TrustlabError(f"{folder} has no {STATE_FILE}: it was not saved by a SamplerTrainer run, so the "
                            "data schedule cannot continue where it stopped")
    sampler.load_state_dict(torch.load(path, weights_only=True))


class SamplerCallback(transformers.TrainerCallback):
    """Saves the sampler's state into every checkpoint folder (``checkpoint-<step>/trustlab_sampler.pt``).

    Every rank holds the same state, so the main process writes it alone.
    """

    def __init__(self, sampler: ScheduledSampler) -> None:
        self.sampler = sampler

    def on_save(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if state.is_world_process_zero:
            save_sampler_state(self.sampler, Path(args.output_dir) / f"checkpoint-{state.global_step}")

    def on_log(self, args: Any, state: Any, control: Any, logs: dict[str, Any] | None = None, **kwargs: Any) -> None:
        if logs is not None and hasattr(self.sampler, "phase"):
            logs["lfr_phase"] = self.sampler.phase.kind
            logs["lfr_active_fraction"] = round(self.sampler.active_fraction, 4)


def per_sample_loss(logits: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(batch loss, per-row loss)`` of a causal LM: position t predicts token t + 1; labels -100 ignored.

    The batch loss is the mean over all labelled tokens; a row's loss is the mean over its own.
    """
    logits = logits[:, :-1].float()  # (B, T-1, V)
    target = labels[:, 1:]  # (B, T-1)
    tok = torch.nn.functional.cross_entropy(logits.transpose(1, 2), target, ignore_index=-100, reduction="none")
    mask = (target != -100).to(tok.dtype)
    counts = mask.sum(1)  # (B,)
    if not bool((counts > 0).all()):
        raise TrustlabError("a training row has no labelled tokens (labels all -100): it has no loss to record")
    return (tok * mask).sum() / counts.sum(), (tok * mask).sum(1) / counts


class SamplerTrainer(transformers.Trainer):
    """A ``transformers.Trainer`` whose training batches come from a loss-scheduled sampler.

    Args:
        train_sampler: an :class:`~trustlab.data.LFRSampler` or :class:`~trustlab.data.MixCD` whose
            ``total_steps`` is the number of training batches (``max_steps * gradient_accumulation_steps``)
            and whose ``batch_size`` is the per-device batch (MixCD: plus its rehearsal budget).
        *args, **kwargs: as for ``transformers.Trainer``; ``train_dataset`` items are dicts of model inputs
            with ``labels`` (a collator pads them as usual).
    """

    def __init__(self, *args: Any, train_sampler: ScheduledSampler, **kwargs: Any) -> None:
        callbacks = [*(kwargs.pop("callbacks", None) or []), SamplerCallback(train_sampler)]
        super().__init__(*args, callbacks=callbacks, **kwargs)
        self.train_sampler = train_sampler
        self.loss_is_scaled_for_ga = False  # our loss is a per-batch mean: the Trainer divides by GA steps
        self.args.ignore_data_skip = True  # the sampler resumes itself (see the module docstring)
        want = self.args.max_steps * self.args.gradient_accumulation_steps
        if self.args.max_steps <= 0 or want != train_sampler.total_steps:
            raise TrustlabError(f"the sampler plans {train_sampler.total_steps} batches but the Trainer runs "
                                f"max_steps={self.args.max_steps} x gradient_accumulation_steps="
                                f"{self.args.gradient_accumulation_steps}: make them agree")

    def get_train_dataloader(self) -> torch.utils.data.DataLoader:
        collate = self.data_collator

        def collate_indexed(items: list[dict[str, Any]]) -> dict[str, Any]:
            index = torch.tensor([it.pop(INDEX_KEY) for it in items])
            batch = collate(items)
            batch[INDEX_KEY] = index
            return batch

        # not through accelerator.prepare: that would shard the already rank-sliced batches again
        return torch.utils.data.DataLoader(_Indexed(self.train_dataset), batch_sampler=_Batches(self.train_sampler),
                                           collate_fn=collate_indexed, num_workers=0,
                                           pin_memory=self.args.dataloader_pin_memory and torch.cuda.is_available())

    def compute_loss(self, model: Any, inputs: dict[str, Any], return_outputs: bool = False,
                     num_items_in_batch: Any = None) -> Any:
        index = inputs.pop(INDEX_KEY, None)
        if index is None:  # evaluation batches carry no index: the model's own loss
            return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
        labels = inputs.pop("labels")
        outputs = model(**inputs)
        loss, rows = per_sample_loss(outputs.logits, labels)
        self.train_sampler.update(index, rows.detach())
        return (loss, outputs) if return_outputs else loss

    def train(self, resume_from_checkpoint: str | bool | None = None, *args: Any, **kwargs: Any) -> Any:
        if resume_from_checkpoint:
            folder = resume_from_checkpoint
            if folder is True:
                folder = transformers.trainer_utils.get_last_checkpoint(self.args.output_dir)
                if folder is None:
                    raise TrustlabError(f"no checkpoint to resume from in {self.args.output_dir}")
            load_sampler_state(self.train_sampler, folder)
            resume_from_checkpoint = folder
        return super().train(resume_from_checkpoint, *args, **kwargs)
