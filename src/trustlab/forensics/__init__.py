"""Forensics of generative models: layer-wise memorization scores (C_T) in a ViT's embedding spaces, the
generator fingerprint they form over depth, and identification of a generator by its fingerprint.

The names below are imported on first use, so importing the package (as the method record does) does not
import torch.

Example:
    >>> import numpy as np
    >>> from trustlab.forensics import ct_score
    >>> rng = np.random.default_rng(0)
    >>> train, test = rng.normal(size=(2000, 8)), rng.normal(size=(500, 8))
    >>> ct_score(train, test, train[:500]).ct < -3          # exact copies of training points
    True
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "CTReference": "memorization", "CTResult": "memorization", "FingerprintMatcher": "memorization",
    "LayerCT": "memorization", "MemorizationInputError": "memorization", "NoCellKeptError": "memorization",
    "ct_score": "memorization", "fingerprint_similarity": "memorization", "mann_whitney_z": "memorization",
    "block_layers": "embeddings", "ct_curve": "embeddings", "layer_embeddings": "embeddings", "train_small_vit": "embeddings",
    "FAMILIES": "generators", "generate": "generators",
    "classifier_identifier": "identify", "curve_identifier": "identify", "leave_one_instance_out": "identify",
    "pixel_stats_identifier": "identify",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'trustlab.forensics' has no attribute {name!r}")
    return getattr(importlib.import_module(f"trustlab.forensics.{_EXPORTS[name]}"), name)
