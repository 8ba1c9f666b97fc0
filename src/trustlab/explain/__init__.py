"""Explaining predictions with concepts: Concept Gradient (CG) and the CAV/TCAV baseline.

The names below are imported on first use, so importing the package (as the method record does) does not
import torch.

Example:
    >>> import torch
    >>> from trustlab.explain import ConceptGradient
    >>> f, g = torch.nn.Linear(4, 3), torch.nn.Sequential(torch.nn.Linear(4, 2), torch.nn.Tanh())
    >>> ConceptGradient(f, g, mode="joint").attribute(torch.randn(2, 4), target=0).shape
    torch.Size([2, 2])
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "CAV": "cav", "layer_activations": "cav",
    "MODES": "concept_gradient", "ConceptGradient": "concept_gradient", "ConceptInputError": "concept_gradient",
    "NoGradientError": "concept_gradient", "SmoothConceptGradient": "concept_gradient",
    "concept_jacobian": "concept_gradient", "concept_scores": "concept_gradient", "global_scores": "concept_gradient",
    "layer_gradient": "concept_gradient",
    "check_concept_labels": "concepts", "head_module": "concepts", "train_head": "concepts",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'trustlab.explain' has no attribute {name!r}")
    return getattr(importlib.import_module(f"trustlab.explain.{_EXPORTS[name]}"), name)
