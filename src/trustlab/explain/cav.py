"""CAV/TCAV baseline with the same call shape as :class:`~trustlab.explain.ConceptGradient`.

A Concept Activation Vector ``v_i`` is the normal of a linear probe that separates items with concept ``i``
from items without it, fitted on activations ``z`` at a layer (a linear regression for continuous
concepts). The attribution of a target logit to concept ``i`` is the directional derivative
``<grad_z f, v_i / ||v_i||>`` (``scale="unit"``, TCAV's); ``scale="concept"`` divides by ``||v_i||^2``
instead, which is Concept Gradient with the linear concept model ``g_i(z) = <v_i, z>`` (concept units, the
paper's "CG reduces to CAV"). The TCAV score of a class is the share of its items with a positive
directional derivative (:func:`~trustlab.explain.global_scores` ``"signed_avg"``). Captum's TCAV returns
the same ``sign_count`` for the same vectors (``tests/explain/test_cav_captum.py``); unlike Captum we fit
all concepts against their own negatives (multi-label), not each against a random set, and report no
p-values (no random-CAV repeats).

Example:
    >>> import torch
    >>> f = torch.nn.Sequential(torch.nn.Linear(4, 6), torch.nn.Tanh(), torch.nn.Linear(6, 2))
    >>> x = torch.randn(40, 4)
    >>> cav = CAV(f, layer=f[2]).fit(x, (x[:, :2] > 0).float(), epochs=20)
    >>> cav.attribute(x[:5], target=1).shape
    torch.Size([5, 2])
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import nn

from trustlab.explain.concept_gradient import (
    ConceptInputError,
    Layer,
    Target,
    _forward,
    check_inputs,
    concept_scores,
    layer_gradient,
    resolve_layer,
)
from trustlab.explain.concepts import check_concept_labels, train_head

SCALES = ("unit", "concept")


def layer_activations(fn: Callable[[torch.Tensor], torch.Tensor], inputs: torch.Tensor, layer: Layer = None, *,
                      layer_input: bool = True, batch_size: int = 256) -> torch.Tensor:
    """The flattened tensor entering (or leaving) ``layer`` when ``fn`` runs on ``inputs``: ``(N, d)``.

    Example:
        >>> f = torch.nn.Sequential(torch.nn.Linear(3, 5), torch.nn.ReLU())
        >>> layer_activations(f, torch.randn(4, 3), f[1]).shape
        torch.Size([4, 5])
    """
    inputs = check_inputs(inputs)
    module = resolve_layer(fn, layer)
    parts = []
    for chunk in inputs.split(batch_size):
        z, _ = _forward(fn, chunk, module, layer_input=layer_input, noise=None)
        parts.append(z.detach().reshape(len(chunk), -1))
    return torch.cat(parts)


class CAV:
    """Linear concept directions at a layer and the directional derivatives of a target logit along them.

    Args:
        forward_func: the target model (module or callable) returning ``(B, classes)`` logits.
        layer: None (the input), a module, or its name in ``forward_func``.
        vectors: ``(k, d)`` concept directions, if already known (else call :meth:`fit`).
        scale: ``"unit"`` (TCAV directional derivative) or ``"concept"`` (divide by ``||v||^2``).
        attribute_to_layer_input: use the layer's input (default) or output.

    Example:
        >>> f = torch.nn.Linear(3, 2)
        >>> CAV(f, vectors=torch.eye(3)[:2]).attribute(torch.randn(4, 3), target=0).shape
        torch.Size([4, 2])
    """

    def __init__(self, forward_func: Callable[[torch.Tensor], torch.Tensor], layer: Layer = None, *,
                 vectors: torch.Tensor | None = None, scale: str = "unit", attribute_to_layer_input: bool = True):
        if scale not in SCALES:
            raise ConceptInputError(f"unknown scale {scale!r}; choose one of: {', '.join(SCALES)}")
        self.forward_func = forward_func
        self.layer = resolve_layer(forward_func, layer)
        self.layer_input = attribute_to_layer_input
        self.scale = scale
        self.vectors = None if vectors is None else torch.as_tensor(vectors).float()

    def fit_activations(self, activations: torch.Tensor, labels: torch.Tensor, *, names: Sequence[str] | None = None,
                        epochs: int = 100, weight_decay: float = 1e-3, seed: int = 0) -> CAV:
        """Fit one linear probe per concept on ``(N, d)`` activations: logistic (BCE with ``pos_weight``) for
        0/1 labels, least squares for continuous ones. Returns ``self``."""
        labels = torch.as_tensor(labels).float()
        binary = bool(((labels == 0) | (labels == 1)).all())
        if binary:
            labels = check_concept_labels(labels, len(activations), names)
        elif labels.dim() != 2 or len(labels) != len(activations):
            raise ConceptInputError(f"concept values must be (items={len(activations)}, concepts), got "
                                    f"{tuple(labels.shape)}")
        # standardise so the probe's optimiser sees well-scaled inputs; map the normal back to z's units
        mu, sd = activations.mean(0), activations.std(0).clamp_min(1e-6)
        probe = train_head((activations - mu) / sd, labels, task="multilabel" if binary else "regression",
                           epochs=epochs, weight_decay=weight_decay, seed=seed)
        linear: nn.Linear = probe[1]
        self.vectors = (linear.weight.detach() / sd).float()           # (k, d)
        return self

    def fit(self, inputs: torch.Tensor, labels: torch.Tensor, **kwargs) -> CAV:
        """Fit the probes on the activations of ``inputs`` at the layer (kwargs: :meth:`fit_activations`)."""
        acts = layer_activations(self.forward_func, inputs, self.layer, layer_input=self.layer_input)
        return self.fit_activations(acts, labels, **kwargs)

    def attribute(self, inputs: torch.Tensor, target: Target = None,
                  target_concept: int | Sequence[int] | None = None) -> torch.Tensor:
        """Directional derivatives ``(B, k)`` of ``target``'s logit along the concept vectors.

        Raises:
            ConceptInputError: no vectors yet, or vectors whose width differs from the layer's.
        """
        if self.vectors is None:
            raise ConceptInputError("the CAV has no concept vectors: call fit(...) or pass vectors=")
        grad = layer_gradient(self.forward_func, inputs, target, self.layer, layer_input=self.layer_input)
        if grad.shape[1] != self.vectors.shape[1]:
            raise ConceptInputError(f"concept vectors have {self.vectors.shape[1]} values, the layer has {grad.shape[1]}")
        jac = self.vectors.to(grad)[None].expand(len(grad), -1, -1)      # (B, k, d)
        scores = concept_scores(jac, grad, "cav" if self.scale == "unit" else "independent")
        return scores if target_concept is None else scores[:, torch.as_tensor(target_concept).reshape(-1)]
