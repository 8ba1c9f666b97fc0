"""Concept Gradient (CG): how a small change of a (possibly non-linear) concept changes a prediction.

CAV/TCAV assumes a concept is a direction in some layer. CG drops that assumption: given a target model
``f: x -> logits`` and a concept model ``g: x -> R^k`` that share a space ``z`` (the raw input, or the input
of a layer ``L`` both run through), it maps the gradient of the target logit into concept space through
the concept Jacobian ``J_g(z)`` (``k x d``, row ``i`` = ``grad g_i``):

* ``joint``: the least-squares solution ``v`` of ``J_g^T v = grad f`` (minimum norm when ``J_g`` is rank
  deficient, via ``torch.linalg.lstsq`` with the ``gelsd`` driver, never an explicit pseudo-inverse);
* ``independent`` (default): ``<grad g_i, grad f> / ||grad g_i||^2`` per concept;
* ablations ``cav`` (``/ ||grad g_i||``), ``inner_prod`` and ``cosine``.

Sign convention: gradients of the target *logit* (the raw output column ``target``), not of a loss, so a
positive attribution means "more of this concept raises the class score". Concept outputs are taken as
``g`` returns them (use logits for concept heads trained with BCE).

The concept Jacobian comes from one forward pass of ``g`` and backward passes on that one graph: vectorised
over chunks of concepts (``autograd.grad(..., is_grads_batched=True)``, the default on CUDA) or one per
concept (the default on the CPU, where it measured faster); never one Captum call (forward + backward) per
concept as in the official code. Batch items must not interact (no train-mode batch norm): the per-item
gradient is taken as the gradient of the batch sum.

References:
    Andrew Bai, Chih-Kuan Yeh, Neil Y. C. Lin, Pradeep Ravikumar, Cho-Jui Hsieh. "Concept Gradient:
    Concept-based Interpretation Without Linear Assumption". ICLR 2023. https://arxiv.org/abs/2208.14966

Example:
    >>> import torch
    >>> f = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.Tanh(), torch.nn.Linear(8, 3))
    >>> g = torch.nn.Sequential(f[0], f[1], torch.nn.Linear(8, 2))          # shares f up to f[2]
    >>> cg = ConceptGradient(f, g, layer=f[2], concept_layer=g[2], mode="joint")  # both see f[1]'s output
    >>> cg.attribute(torch.randn(5, 4), target=1).shape
    torch.Size([5, 2])
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from contextlib import contextmanager
from typing import Any

import torch
from torch import nn

from trustlab.errors import CapabilityError, EmptyInputError, TrustlabError

MODES = ("independent", "joint", "cav", "inner_prod", "cosine")
GLOBAL_SCORES = ("signed_avg", "avg")
Target = int | Sequence[int] | torch.Tensor | None
Layer = nn.Module | str | None


class ConceptInputError(TrustlabError, ValueError):
    """Inputs, targets, layers or concept labels that concept attribution cannot use."""


class NoGradientError(CapabilityError):
    """A model whose output does not depend differentiably on the space attributions are taken in."""


def resolve_layer(model: Any, layer: Layer) -> nn.Module | None:
    """The module ``layer`` names in ``model`` (a dotted name from ``named_modules``), or ``layer`` itself.

    Raises:
        ConceptInputError: a name that ``model`` does not have (the message lists some it has), or a name
            given for a model that is not an ``nn.Module``.

    Example:
        >>> net = torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.ReLU())
        >>> resolve_layer(net, "1")
        ReLU()
    """
    if layer is None or isinstance(layer, nn.Module):
        return layer
    if not isinstance(model, nn.Module):
        raise ConceptInputError(f"layer {layer!r} is a name, but the model is a {type(model).__name__}, not an "
                                "nn.Module: pass the layer module itself")
    modules = dict(model.named_modules())
    if layer not in modules:
        names = [n for n in modules if n]
        shown = ", ".join(names[:12]) + (f", ... ({len(names)} in all)" if len(names) > 12 else "")
        raise ConceptInputError(f"the model has no layer {layer!r}; its layers include: {shown}")
    return modules[layer]


def check_inputs(inputs: torch.Tensor) -> torch.Tensor:
    """``inputs`` as a floating tensor with a batch dimension, refusing what cannot be attributed.

    Raises:
        EmptyInputError: a batch of zero items.
        ConceptInputError: not a tensor, no batch dimension, or NaN/inf values.

    Example:
        >>> check_inputs(torch.zeros(2, 3)).shape
        torch.Size([2, 3])
    """
    if not isinstance(inputs, torch.Tensor):
        raise ConceptInputError(f"inputs must be a torch.Tensor of shape (batch, ...), got {type(inputs).__name__}")
    if inputs.dim() == 0:
        raise ConceptInputError("inputs must have a batch dimension, got a scalar tensor")
    if inputs.shape[0] == 0:
        raise EmptyInputError("no inputs to attribute: the batch is empty")
    if inputs.is_floating_point() and not bool(torch.isfinite(inputs).all()):
        bad = int((~torch.isfinite(inputs)).reshape(len(inputs), -1).any(1).sum())
        raise ConceptInputError(f"{bad} of {len(inputs)} inputs hold NaN or inf values; clean or drop them first")
    return inputs


def _target_index(target: Target, batch: int, width: int | None) -> torch.Tensor | None:
    """One output column per item (None: the output is one scalar per item)."""
    if target is None:
        if width not in (None, 1):
            raise ConceptInputError(f"the model returns {width} outputs per item: pass target=<class index>")
        return None
    idx = torch.as_tensor(target, dtype=torch.long).reshape(-1)
    if idx.numel() == 1:
        idx = idx.expand(batch)
    if idx.numel() != batch:
        raise ConceptInputError(f"target has {idx.numel()} entries for a batch of {batch}: give one index or one per item")
    if width is None or bool((idx < 0).any()) or bool((idx >= width).any()):
        raise ConceptInputError(f"target indices must lie in [0, {width}) for a model with {width} outputs per item, "
                                f"got {sorted(set(idx.tolist()))[:5]}")
    return idx


@contextmanager
def _leaf_at(layer: nn.Module | None, store: dict[str, torch.Tensor], *, layer_input: bool,
             noise: torch.Tensor | None):
    """Make the tensor entering (or leaving) ``layer`` a fresh leaf that requires grad, kept in ``store``."""

    def swap(t: torch.Tensor) -> torch.Tensor:
        if "z" in store:
            raise ConceptInputError(f"layer {type(layer).__name__} runs more than once per forward pass; choose a "
                                    "layer the model calls once")
        if not torch.is_tensor(t) or not t.is_floating_point():
            raise NoGradientError(f"the {'input' if layer_input else 'output'} of layer {type(layer).__name__} is "
                                  "not a floating tensor; choose a layer whose activations are floats")
        z = t.detach().clone()
        if noise is not None:
            if noise.shape != z.shape:
                raise ConceptInputError(f"layer {type(layer).__name__} carries shape {tuple(z.shape)}, the target "
                                        f"model's layer {tuple(noise.shape)}: layer and concept_layer must carry the "
                                        "same tensor")
            z = z + noise.to(z)
        z.requires_grad_(True)
        store["z"] = z
        return z

    if layer is None:
        yield
        return
    if layer_input:
        handle = layer.register_forward_pre_hook(lambda _m, args: (swap(args[0]), *args[1:]))
    else:
        handle = layer.register_forward_hook(lambda _m, _a, out: swap(out))
    try:
        yield
    finally:
        handle.remove()


def _forward(fn: Callable[[torch.Tensor], torch.Tensor], inputs: torch.Tensor, layer: nn.Module | None, *,
             layer_input: bool, noise: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
    """Run ``fn`` with a leaf at ``layer`` (or at the input); returns (leaf z, output (B, m))."""
    store: dict[str, torch.Tensor] = {}
    if layer is None:
        if not inputs.is_floating_point():
            raise NoGradientError(f"inputs of dtype {inputs.dtype} have no gradient: for token ids or other "
                                  "integer inputs pass layer= a layer after the embedding")
        z = inputs.detach().clone() + (0 if noise is None else noise.to(inputs))
        store["z"] = z.requires_grad_(True)
    with torch.enable_grad(), _leaf_at(layer, store, layer_input=layer_input, noise=noise):
        out = fn(store["z"] if layer is None else inputs)
    if "z" not in store:
        raise ConceptInputError(f"layer {type(layer).__name__} was never called by the model's forward; pick a "
                                "layer the model runs (see model.named_modules())")
    if not torch.is_tensor(out):
        raise ConceptInputError(f"the model must return a tensor, got {type(out).__name__}")
    if out.dim() == 1:
        out = out[:, None]
    if out.dim() != 2 or out.shape[0] != inputs.shape[0]:
        raise ConceptInputError(f"the model must return (batch, outputs), got shape {tuple(out.shape)} for a batch "
                                f"of {inputs.shape[0]}")
    if not out.requires_grad:
        raise NoGradientError("the model's output does not depend differentiably on the attributed space (it does "
                              "not require grad: a no_grad/detach inside forward, or a non-torch computation)")
    return store["z"], out


def layer_gradient(fn: Callable[[torch.Tensor], torch.Tensor], inputs: torch.Tensor, target: Target = None,
                   layer: nn.Module | None = None, *, layer_input: bool = True,
                   noise: torch.Tensor | None = None) -> torch.Tensor:
    """Per-item gradient of the target logit w.r.t. the input of ``layer`` (or ``inputs``), flattened (B, d).

    Example:
        >>> f = torch.nn.Linear(3, 2)
        >>> torch.allclose(layer_gradient(f, torch.randn(4, 3), target=1), f.weight[1].expand(4, 3))
        True
    """
    z, out = _forward(fn, check_inputs(inputs), layer, layer_input=layer_input, noise=noise)
    idx = _target_index(target, out.shape[0], out.shape[1])
    picked = out[:, 0] if idx is None else out.gather(1, idx[:, None].to(out.device))[:, 0]
    (grad,) = torch.autograd.grad(picked.sum(), z, allow_unused=True)
    if grad is None:
        raise NoGradientError("the target output does not depend on the attributed space")
    return grad.reshape(len(grad), -1).detach()


def concept_jacobian(fn: Callable[[torch.Tensor], torch.Tensor], inputs: torch.Tensor,
                     layer: nn.Module | None = None, *, layer_input: bool = True, chunk_size: int | None = None,
                     noise: torch.Tensor | None = None) -> torch.Tensor:
    """Per-item Jacobian of all concept outputs w.r.t. the input of ``layer`` (or ``inputs``): (B, k, d).

    One forward pass; then one vectorised backward (``is_grads_batched``) per chunk of ``chunk_size``
    concepts, or, with ``chunk_size=1``, one plain backward per concept on the same graph. Default (None): 64
    on CUDA, 1 on the CPU, where vmapped convolution backwards measured slower than the plain loop
    (``benchmarks/cg_attribute.py``).

    Example:
        >>> g = torch.nn.Linear(3, 2)
        >>> torch.allclose(concept_jacobian(g, torch.randn(4, 3))[0], g.weight)
        True
    """
    z, out = _forward(fn, check_inputs(inputs), layer, layer_input=layer_input, noise=noise)
    batch, k = out.shape
    chunk = max(1, chunk_size or (64 if out.is_cuda else 1))
    eye = torch.eye(k, dtype=out.dtype, device=out.device)
    parts = []
    for start in range(0, k, chunk):
        rows = eye[start:start + chunk]                                  # (c, k)
        if chunk == 1:
            (jac,) = torch.autograd.grad(out[:, start].sum(), z, retain_graph=True, allow_unused=True)
            jac = None if jac is None else jac[None]
        else:
            seeds = rows[:, None, :].expand(len(rows), batch, k)         # (c, B, k)
            (jac,) = torch.autograd.grad(out, z, grad_outputs=seeds, is_grads_batched=True, retain_graph=True,
                                         allow_unused=True)
        if jac is None:
            raise NoGradientError("the concept outputs do not depend on the attributed space")
        parts.append(jac.reshape(len(rows), batch, -1).transpose(0, 1).detach())  # (B, c, d)
    return torch.cat(parts, dim=1)


def concept_scores(jac: torch.Tensor, grad: torch.Tensor, mode: str = "independent") -> torch.Tensor:
    """The math core: concept attributions (B, k) from concept Jacobians (B, k, d) and target gradients (B, d).

    Concepts with a zero gradient get 0 in the normalised modes.

    Example:
        >>> jac = torch.tensor([[[1.0, 0.0], [1.0, 1.0]]])              # (1, 2, 2)
        >>> concept_scores(jac, torch.tensor([[2.0, 3.0]]), "joint")   # exact: grad = -1*J_0 + 3*J_1
        tensor([[-1.,  3.]])
    """
    if mode not in MODES:
        raise ConceptInputError(f"unknown mode {mode!r}; choose one of: {', '.join(MODES)}")
    if mode == "joint":
        a = jac.transpose(1, 2).detach().cpu().double()                 # (B, d, k)
        b = grad.detach().cpu().double()[..., None]                      # (B, d, 1)
        sol = torch.linalg.lstsq(a, b, driver="gelsd").solution[..., 0]  # minimum-norm when rank deficient
        return sol.to(device=jac.device, dtype=jac.dtype)
    inner = torch.einsum("bkd,bd->bk", jac, grad)
    if mode == "inner_prod":
        return inner
    norm = jac.norm(dim=2)
    if mode == "independent":
        denom = norm.square()
    elif mode == "cav":
        denom = norm
    else:
        denom = norm * grad.norm(dim=1, keepdim=True)
    return torch.where(denom > 0, inner / denom.clamp_min(torch.finfo(denom.dtype).tiny), torch.zeros_like(inner))


class ConceptGradient:
    """Concept attributions ``(batch, k)`` of a target model's logit, Captum style.

    Args:
        forward_func: the target model ``f`` (an ``nn.Module`` or any callable) returning ``(B, classes)``
            logits or ``(B,)`` scores.
        concept_forward_func: the concept model ``g`` returning ``(B, k)`` concept outputs.
        layer: where to take gradients: None (the raw input), a module both models run, or its name in
            ``forward_func``. Default None.
        concept_layer: the layer in ``g`` (default: ``layer``; a name is looked up in ``g``). It must carry
            the same tensor as ``layer``, e.g. the same module object when ``g`` shares ``f``'s trunk.
        mode: one of :data:`MODES`. Default ``"independent"``.
        attribute_to_layer_input: gradients w.r.t. the layer's input (default True, as in the paper) or
            its output.
        chunk_size: concepts per vectorised backward (1: a plain backward per concept); default None: 64 on
            CUDA, 1 on the CPU (see :func:`concept_jacobian`).

    Raises:
        ConceptInputError: an unknown mode or layer name.

    Example:
        >>> f = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.Tanh(), torch.nn.Linear(8, 3))
        >>> g = torch.nn.Sequential(torch.nn.Linear(4, 2))
        >>> ConceptGradient(f, g).attribute(torch.randn(5, 4), target=[0, 1, 2, 0, 1]).shape
        torch.Size([5, 2])
    """

    seed = 0  # the noise seed of SmoothConceptGradient; plain CG draws no noise

    def __init__(self, forward_func: Callable[[torch.Tensor], torch.Tensor],
                 concept_forward_func: Callable[[torch.Tensor], torch.Tensor], layer: Layer = None,
                 concept_layer: Layer = None, mode: str = "independent", *, attribute_to_layer_input: bool = True,
                 chunk_size: int | None = None):
        if mode not in MODES:
            raise ConceptInputError(f"unknown mode {mode!r}; choose one of: {', '.join(MODES)}")
        self.forward_func = forward_func
        self.concept_forward_func = concept_forward_func
        self.layer = resolve_layer(forward_func, layer)
        given = layer if concept_layer is None else concept_layer
        self.concept_layer = resolve_layer(concept_forward_func, given) if isinstance(given, str) else \
            (self.layer if concept_layer is None else concept_layer)
        self.mode = mode
        self.layer_input = attribute_to_layer_input
        self.chunk_size = chunk_size

    def _once(self, inputs: torch.Tensor, target: Target, noise: torch.Tensor | None) -> torch.Tensor:
        grad = layer_gradient(self.forward_func, inputs, target, self.layer, layer_input=self.layer_input, noise=noise)
        jac = concept_jacobian(self.concept_forward_func, inputs, self.concept_layer, layer_input=self.layer_input,
                               chunk_size=self.chunk_size, noise=noise)
        if jac.shape[2] != grad.shape[1]:
            raise ConceptInputError(f"f's attributed space has {grad.shape[1]} values per item, g's has {jac.shape[2]}: "
                                    "layer and concept_layer must carry the same tensor")
        return concept_scores(jac, grad, self.mode)

    def _scores(self, inputs: torch.Tensor, target: Target, gen: torch.Generator) -> torch.Tensor:
        return self._once(inputs, target, None)

    def attribute(self, inputs: torch.Tensor, target: Target = None,
                  target_concept: int | Sequence[int] | None = None,
                  internal_batch_size: int | None = None) -> torch.Tensor:
        """Concept attributions of ``target``'s logit for each item.

        Args:
            inputs: a batch ``(B, ...)``, floating point unless ``layer`` is set.
            target: the output column per item (an int, a list/tensor of B ints), or None for a model
                with one output per item.
            target_concept: return only these concept columns (the joint solve still uses all).
            internal_batch_size: items per pass (the Jacobian takes ``items x k x d`` floats); default all.

        Returns:
            ``(B, k)`` attributions (``(B, len(target_concept))`` when given), detached.

        Raises:
            EmptyInputError: an empty batch.
            ConceptInputError: NaN/inf inputs, a bad target, a layer the model never calls.
            NoGradientError: integer inputs at the input space, or outputs that do not require grad.
        """
        inputs = check_inputs(inputs)
        idx = None if target is None else torch.as_tensor(target, dtype=torch.long).reshape(-1)
        if idx is not None and idx.numel() not in (1, len(inputs)):
            raise ConceptInputError(f"target has {idx.numel()} entries for a batch of {len(inputs)}: give one index "
                                    "or one per item")
        idx = None if idx is None else idx.expand(len(inputs))
        size = max(1, internal_batch_size or len(inputs))
        gen = torch.Generator().manual_seed(self.seed)
        scores = torch.cat([self._scores(inputs[s:s + size], None if idx is None else idx[s:s + size], gen)
                            for s in range(0, len(inputs), size)])
        return scores if target_concept is None else scores[:, torch.as_tensor(target_concept).reshape(-1)]


class SmoothConceptGradient(ConceptGradient):
    """Concept Gradient averaged over ``nt_samples`` copies with uniform noise of radius ``stdevs`` added to
    the attributed space (the same noise for ``f`` and ``g``).

    Args:
        nt_samples: noisy copies. Default 8 (the paper's).
        stdevs: noise radius. Default 1e-2.
        seed: noise seed (results are reproducible given it).
        *args, **kwargs: as :class:`ConceptGradient`.

    Example:
        >>> f, g = torch.nn.Linear(4, 3), torch.nn.Sequential(torch.nn.Linear(4, 2), torch.nn.Tanh())
        >>> SmoothConceptGradient(f, g, nt_samples=4).attribute(torch.randn(5, 4), target=0).shape
        torch.Size([5, 2])
    """

    def __init__(self, *args: Any, nt_samples: int = 8, stdevs: float = 1e-2, seed: int = 0, **kwargs: Any):
        super().__init__(*args, **kwargs)
        if nt_samples < 1 or not math.isfinite(stdevs) or stdevs < 0:
            raise ConceptInputError(f"need nt_samples >= 1 and a finite stdevs >= 0, got {nt_samples}, {stdevs}")
        self.nt_samples = nt_samples
        self.stdevs = stdevs
        self.seed = seed

    def _space_shape(self, inputs: torch.Tensor) -> torch.Size:
        if self.layer is None:
            return inputs.shape
        z, _ = _forward(self.forward_func, inputs, self.layer, layer_input=self.layer_input, noise=None)
        return z.shape

    def _scores(self, inputs: torch.Tensor, target: Target, gen: torch.Generator) -> torch.Tensor:
        shape = self._space_shape(inputs)
        total = None
        for _ in range(self.nt_samples):
            noise = (torch.rand(shape, generator=gen) * 2 - 1) * self.stdevs
            scores = self._once(inputs, target, noise)
            total = scores if total is None else total + scores
        return total / self.nt_samples


def global_scores(attributions: torch.Tensor, how: str = "signed_avg") -> torch.Tensor:
    """Class-level scores from the attributions ``(N, k)`` of one class's items: ``signed_avg`` = share of
    items with a positive attribution (the TCAV-score analogue), ``avg`` = the mean attribution.

    Example:
        >>> global_scores(torch.tensor([[1.0, -2.0], [3.0, 1.0]]))
        tensor([1.0000, 0.5000])
    """
    if how not in GLOBAL_SCORES:
        raise ConceptInputError(f"unknown global score {how!r}; choose one of: {', '.join(GLOBAL_SCORES)}")
    if attributions.dim() != 2 or len(attributions) == 0:
        raise ConceptInputError(f"need attributions of shape (N >= 1, k), got {tuple(attributions.shape)}")
    return (attributions > 0).float().mean(0) if how == "signed_avg" else attributions.mean(0)
