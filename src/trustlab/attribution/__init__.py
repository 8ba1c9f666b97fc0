"""Training-data attribution: TracIn over checkpoints, and Diffusion-TracIn / Diffusion-ReTrac for diffusion
models (``cache()`` then ``attribute()``, dattri style), with the DDPM trainer that logs what they need.

The names load on first use (PEP 562), so importing ``trustlab.attribution.method`` (the registry record)
does not import torch.

Example:
    >>> from trustlab.attribution import DiffusionTracIn, RandomProjector, TracIn, train_ddpm
"""

import importlib
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # what type checkers and IDEs see
    from trustlab.attribution.ddpm import DDPMConfig, DDPMData, load_images, load_run, tiny_unet, train_ddpm
    from trustlab.attribution.diffusion_tracin import (
        DiffusionAttributionTask,
        DiffusionTracIn,
        ShapeMismatchError,
        TestFeatures,
        TimestepLog,
        TimestepLogError,
        generally_influential,
    )
    from trustlab.attribution.features import CacheMismatchError, FeatureCache
    from trustlab.attribution.projection import RandomProjector
    from trustlab.attribution.tracin import Checkpoint, NonFiniteGradientError, TracIn, checkpoint_weight

_EXPORTS = {
    "DDPMConfig": "ddpm", "DDPMData": "ddpm", "load_images": "ddpm", "load_run": "ddpm", "tiny_unet": "ddpm",
    "train_ddpm": "ddpm", "DiffusionAttributionTask": "diffusion_tracin", "DiffusionTracIn": "diffusion_tracin",
    "ShapeMismatchError": "diffusion_tracin", "TestFeatures": "diffusion_tracin", "TimestepLog": "diffusion_tracin",
    "TimestepLogError": "diffusion_tracin", "generally_influential": "diffusion_tracin", "CacheMismatchError": "features", "FeatureCache": "features",
    "RandomProjector": "projection", "Checkpoint": "tracin", "NonFiniteGradientError": "tracin", "TracIn": "tracin",
    "checkpoint_weight": "tracin",
}
__all__ = ["CacheMismatchError", "Checkpoint", "DDPMConfig", "DDPMData", "DiffusionAttributionTask", "DiffusionTracIn",
           "FeatureCache", "NonFiniteGradientError", "RandomProjector", "ShapeMismatchError", "TestFeatures",
           "TimestepLog", "TimestepLogError", "TracIn", "checkpoint_weight", "generally_influential", "load_images",
           "load_run", "tiny_unet", "train_ddpm"]


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(importlib.import_module(f"trustlab.attribution.{_EXPORTS[name]}"), name)
    raise AttributeError(f"module 'trustlab.attribution' has no attribute {name!r}")
