"""Training-data schedules: LFR (Learn, Focus, Review) for pretraining and mix-cd rehearsal for fine-tuning.

Both are ``torch.utils.data.Sampler`` objects that decide every step's batch from the losses of earlier
steps (fed back with ``update(indices, losses)``), slice it by rank under ``torch.distributed``, and save
their state with a checkpoint (``state_dict`` / ``load_state_dict``). :class:`SamplerTrainer` (in
``trustlab.data.hf``) wires one into the Hugging Face Trainer. The names load on first use (PEP 562), so
importing ``trustlab.data.method`` (the registry records) does not import torch.
"""

import importlib
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # what type checkers and IDEs see
    from trustlab.data._base import NonFiniteLossError, SamplerStateError, fingerprint
    from trustlab.data.hf import SamplerCallback, SamplerTrainer
    from trustlab.data.lfr import DEFAULT_SCHEDULE, LFRSampler, Phase, parse_schedule
    from trustlab.data.mixcd import CollateralDamageSampler, MixCD, assign_bins, loss_rule

_EXPORTS = {"NonFiniteLossError": "_base", "SamplerStateError": "_base", "fingerprint": "_base",
            "SamplerCallback": "hf", "SamplerTrainer": "hf", "DEFAULT_SCHEDULE": "lfr", "LFRSampler": "lfr",
            "Phase": "lfr", "parse_schedule": "lfr", "CollateralDamageSampler": "mixcd", "MixCD": "mixcd",
            "assign_bins": "mixcd", "loss_rule": "mixcd"}
__all__ = ["DEFAULT_SCHEDULE", "LFR", "CollateralDamageSampler", "LFRSampler", "MixCD", "NonFiniteLossError", "Phase",
           "SamplerCallback", "SamplerStateError", "SamplerTrainer", "assign_bins", "fingerprint", "loss_rule",
           "parse_schedule"]  # LFR: an alias of LFRSampler


def __getattr__(name: str):
    if name == "LFR":
        name = "LFRSampler"
    if name not in _EXPORTS:
        raise AttributeError(f"module 'trustlab.data' has no attribute {name!r}")
    return getattr(importlib.import_module(f"trustlab.data.{_EXPORTS[name]}"), name)
