"""Per-layer image embeddings from a vision model (CLS or mean token of every block), cached on disk, and a
small ViT trained on the data for the offline reproduction.

:func:`layer_embeddings` runs a :class:`~trustlab.models.vision.VisionModel` with forward hooks on the named
layers and keeps, per image, the CLS token (``(B, T, D) -> [:, 0]``) or the mean of the other tokens; a 4-d
convolutional activation is averaged over space, a 2-d one is kept. With ``cache_dir`` every shard of
``shard`` images is written atomically under a key of the model's weights, the images, the layers and the
pooling, so an interrupted run resumes and a rerun reads the cache.

Example:
    >>> from trustlab.models.vision import load_vision_model
    >>> vm = load_vision_model("embedded:dinov2-s")
    >>> emb = layer_embeddings(vm, images, block_layers(vm), cache_dir="runs/emb")   # {layer: (N, 384)}
"""

from __future__ import annotations

import hashlib
import io
import os
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from trustlab.errors import EmptyInputError, TrustlabError
from trustlab.report.io import atomic_write_bytes, read_json, write_json

POOLS = ("cls", "mean")
_BLOCK = re.compile(r"(?:.*\.)?(?:encoder\.layers?|layers|blocks)\.(\d+)")


def block_layers(vm: Any) -> list[str]:
    """The transformer blocks of ``vm`` (names ending in ``encoder.layer.<i>``, ``layers.<i>`` (transformers 5
    ViT) or ``blocks.<i>`` (timm)), in depth order.

    Raises:
        TrustlabError: the model has no such layers (pass layer names yourself).

    Example:
        >>> block_layers(load_vision_model("embedded:dinov2-s"))[-1]
        'backbone.encoder.layer.11'
    """
    names = [n for n in vm.layer_names() if _BLOCK.fullmatch(n)]
    if not names:
        raise TrustlabError(f"{vm.name} has no layers named '...encoder.layer.<i>', '...layers.<i>' or '...blocks.<i>'; pass the layer names to embed "
                            f"(see vm.layer_names(), e.g. {vm.layer_names()[:3]})")
    return sorted(names, key=lambda n: int(_BLOCK.fullmatch(n)[1]))  # type: ignore[index]


def model_key(vm: Any) -> str:
    """A content hash of the model's weights, preprocessing and name (the cache key's model part)."""
    h = hashlib.sha256(f"{vm.name}|{vm.input_size}|{vm.mean}|{vm.std}".encode())
    for name, t in vm.module.state_dict().items():
        h.update(name.encode())
        h.update(t.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()[:16]


def _pool(act: torch.Tensor, pool: str) -> torch.Tensor:
    if act.ndim == 3:  # (B, T, D) tokens, CLS first
        return act[:, 0] if pool == "cls" else act[:, 1:].mean(1)
    if act.ndim == 4:  # (B, C, H, W) feature map
        return act.mean((2, 3))
    return act.flatten(1)


def _to_unit(images: Any) -> torch.Tensor:
    """Images as a float tensor ``(N, C, H, W)`` in [0, 1] (uint8 arrays/tensors are scaled)."""
    t = torch.as_tensor(np.asarray(images)) if not isinstance(images, torch.Tensor) else images
    if t.dtype == torch.uint8:
        t = t.float() / 255.0
    t = t.float()
    if t.ndim == 3:  # (N, H, W) grey
        t = t[:, None]
    if t.ndim != 4:
        raise TrustlabError(f"images must be (N, H, W) or (N, C, H, W), got shape {tuple(t.shape)}")
    if len(t) == 0:
        raise EmptyInputError("no images to embed")
    return t


def layer_embeddings(vm: Any, images: Any, layers: Sequence[str], *, pool: str = "cls", batch_size: int = 64,
                     cache_dir: str | os.PathLike | None = None, shard: int = 512,
                     description: str = "embedding") -> dict[str, np.ndarray]:
    """Embeddings ``{layer: (N, D)}`` (float32) of ``images`` at ``layers`` of ``vm``.

    Args:
        vm: a :class:`~trustlab.models.vision.VisionModel` (any ViT/timm/torch module behind the handle).
        images: ``(N, C, H, W)`` or ``(N, H, W)``, float in [0, 1] or uint8.
        layers: layer names (``vm.layer_names()``; :func:`block_layers` for a ViT's blocks).
        pool: ``"cls"`` (token 0) or ``"mean"`` (mean of tokens 1..T-1).
        batch_size: images per forward pass. shard: images per cached file.
        cache_dir: where to cache (resumable); None computes without caching.
        description: the progress bar's label.

    Raises:
        TrustlabError: unknown pooling or image shape. EmptyInputError: no images or no layers.

    Example:
        >>> emb = layer_embeddings(vm, x, ["backbone.encoder.layer.0"], pool="mean")
    """
    from trustlab.report.run import progress

    if pool not in POOLS:
        raise TrustlabError(f"pool must be one of {POOLS}, got {pool!r}")
    layers = list(layers)
    if not layers:
        raise EmptyInputError("no layers to embed")
    x = _to_unit(images)
    folder = None
    if cache_dir is not None:
        key = hashlib.sha256(f"{model_key(vm)}|{layers}|{pool}|{shard}".encode()
                             + x.numpy().tobytes() + str(tuple(x.shape)).encode()).hexdigest()[:20]
        folder = Path(cache_dir) / key
        if (folder / "done.json").exists():
            return _read_shards(folder, layers, read_json(folder / "done.json")["shards"])
        write_json(folder / "meta.json", {"model": vm.name, "layers": layers, "pool": pool, "n": len(x)})
    starts = list(range(0, len(x), shard))
    parts: list[dict[str, np.ndarray]] = []
    for i in progress(range(len(starts)), description, total=len(starts)):
        path = folder / f"shard-{i:05d}.npz" if folder else None
        if path is not None and path.exists():
            parts.append(dict(np.load(path)))
            continue
        chunk = x[starts[i]: starts[i] + shard]
        out: dict[str, list[np.ndarray]] = {name: [] for name in layers}
        with torch.no_grad():
            for lo in range(0, len(chunk), batch_size):
                acts = vm.activations(vm.preprocess(chunk[lo: lo + batch_size]), layers)
                for name in layers:
                    out[name].append(_pool(acts[name], pool).float().cpu().numpy())
        part = {name: np.concatenate(v) for name, v in out.items()}
        if path is not None:
            buf = io.BytesIO()
            np.savez(buf, **part)
            atomic_write_bytes(path, buf.getvalue())
        parts.append(part)
    if folder is not None:
        write_json(folder / "done.json", {"shards": len(starts)})
    return {name: np.concatenate([p[name] for p in parts]) for name in layers}


def _read_shards(folder: Path, layers: list[str], n: int) -> dict[str, np.ndarray]:
    parts = [np.load(folder / f"shard-{i:05d}.npz") for i in range(n)]
    return {name: np.concatenate([p[name] for p in parts]) for name in layers}


def train_small_vit(x: torch.Tensor, y: torch.Tensor, out: str | os.PathLike, *, patch: int = 2, layers: int = 6,
                    dim: int = 64, heads: int = 4, epochs: int = 30, batch_size: int = 128, lr: float = 1e-3,
                    seed: int = 0, train: bool = True) -> dict[str, Any]:
    """Train a small ``transformers`` ViT classifier on ``x`` ``(N, C, H, W)`` in [0, 1] and labels ``y``,
    saved with ``save_pretrained`` into ``out`` (reused when ``out`` already holds it).

    ``train=False`` saves the seeded initialisation (the untrained-ViT control of the paper). Load the result
    with ``load_vision_model(out)`` (a ``preprocessor_config.json`` gives its size and normalisation).

    Returns:
        ``{"path", "accuracy" (training-set accuracy at the end), "epochs", "seconds"}``.

    Example:
        >>> info = train_small_vit(x, y, "runs/vit-digits", epochs=30)
        >>> vm = load_vision_model(info["path"])
    """
    import time

    from transformers import ViTConfig, ViTForImageClassification

    out = Path(out)
    if (out / "trained.json").exists():
        return read_json(out / "trained.json")
    if len(x) == 0:
        raise EmptyInputError("no training images for the ViT")
    torch.manual_seed(seed)
    cfg = ViTConfig(image_size=x.shape[-1], patch_size=patch, num_channels=x.shape[1], hidden_size=dim,
                    num_hidden_layers=layers, num_attention_heads=heads, intermediate_size=2 * dim,
                    num_labels=int(y.max()) + 1, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    model = ViTForImageClassification(cfg)
    xn = (x.float() - 0.5) / 0.5
    t0 = time.perf_counter()
    if train:
        opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.01)
        gen = torch.Generator().manual_seed(seed)
        model.train()
        for _ in range(epochs):
            for idx in torch.randperm(len(x), generator=gen).split(batch_size):
                loss = torch.nn.functional.cross_entropy(model(pixel_values=xn[idx]).logits, y[idx])
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
    model.eval()
    with torch.no_grad():
        acc = float((model(pixel_values=xn).logits.argmax(1) == y).float().mean())
    model.save_pretrained(out)
    c = x.shape[1]  # the folder loads with load_vision_model(out): size and normalisation from this file
    write_json(out / "preprocessor_config.json", {"image_mean": [0.5] * c, "image_std": [0.5] * c,
                                                   "size": {"height": x.shape[-2], "width": x.shape[-1]}})
    info = {"path": str(out), "accuracy": acc, "epochs": epochs if train else 0, "seconds": time.perf_counter() - t0,
            "config": {"patch": patch, "layers": layers, "dim": dim, "heads": heads}}
    write_json(out / "trained.json", info)
    return info


def ct_curve(vm: Any, train: Any, test: Any, generated: Any, *, layers: Sequence[str] | None = None,
             pool: str = "cls", cache_dir: str | os.PathLike | None = None, **ct_kwargs: Any) -> np.ndarray:
    """The C_T curve (one value per layer) of ``generated`` images against ``train`` with held-out ``test``
    images, in ``vm``'s embedding spaces (images as :func:`layer_embeddings` takes them).

    Args:
        vm: the encoder. layers: default :func:`block_layers`. pool, cache_dir: see :func:`layer_embeddings`.
        ct_kwargs: ``k``, ``n_pca``, ``distance``, ``min_cell``, ``seed`` of
            :class:`~trustlab.forensics.memorization.CTReference`.

    Example:
        >>> ct_curve(load_vision_model("runs/vit-digits"), x_train, x_test, x_generated).shape   # 6 blocks
        (6,)
    """
    from trustlab.forensics.memorization import LayerCT

    names = list(layers) if layers is not None else block_layers(vm)
    emb = [layer_embeddings(vm, imgs, names, pool=pool, cache_dir=cache_dir, description=f"embedding {what}")
           for what, imgs in (("train", train), ("test", test), ("generated", generated))]
    return LayerCT(**ct_kwargs).fit(emb[0], emb[1]).curve(emb[2])
