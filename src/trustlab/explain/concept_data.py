"""Data with known concepts for checking concept attribution.

* :func:`synthetic_concepts`: the spec's ground-truth task (``concept-gradient.md`` section 6, Test 1):
  ``x ~ N(0, I_10)``, concepts ``c1 = x1^2 + x2^2`` (radial), ``c2 = sin(2 x3) x4``, ``c3 = x5`` (linear),
  ``c4 = x6 x7`` (irrelevant), target ``y = 2 c1 - 3 c2 + 0.5 c3 + 0.05 noise``: ``dy/dc = (2, -3, 0.5, 0)``.
* :func:`fashion_concepts`: concept labels for Fashion-MNIST images. Class-level attributes (a table in the
  style of CUB's attributes, :data:`CLASS_ATTRIBUTES`: every item of a class has them) plus instance-level
  concepts computed from the pixels of the 28x28 image (:data:`PIXEL_CONCEPTS`), each thresholded at its
  median over a reference set (the training images), so each holds for about half the items.

Example:
    >>> data = synthetic_concepts(100, seed=0)
    >>> data["x"].shape, data["c"].shape, data["dy_dc"].tolist()
    (torch.Size([100, 10]), torch.Size([100, 4]), [2.0, -3.0, 0.5, 0.0])
"""

from __future__ import annotations

import numpy as np
import torch

SYNTHETIC_CONCEPTS = ("c1_radial", "c2_sin_product", "c3_linear", "c4_irrelevant")
SYNTHETIC_DY_DC = (2.0, -3.0, 0.5, 0.0)

FASHION_CLASSES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag",
                   "Ankle boot")
# concept -> the Fashion-MNIST classes that have it (class ids as in FASHION_CLASSES)
CLASS_ATTRIBUTES: dict[str, tuple[int, ...]] = {
    "upper_body": (0, 2, 4, 6),
    "lower_body": (1,),
    "full_body": (3,),
    "footwear": (5, 7, 9),
    "carried_item": (8,),
    "has_sleeves": (0, 2, 3, 4, 6),
    "long_sleeves": (2, 4, 6),
    "front_opening": (4, 6),
    "two_legs": (1,),
    "covers_ankle": (9,),
    "open_toe": (5,),
    "laced_sport": (7,),
    "has_handle": (8,),
    "warm_layer": (2, 4),
}
PIXEL_CONCEPTS = ("top_heavy_ink", "wide_silhouette", "bright_garment", "large_area", "hollow_centre",
                  "textured", "left_right_symmetric")


def synthetic_concepts(n: int, seed: int = 0, noise: float = 0.05) -> dict[str, torch.Tensor]:
    """The spec's Test 1 data: ``x (n, 10)``, concepts ``c (n, 4)``, target ``y (n,)``, true ``dy/dc (4,)`` and
    the true concept gradients ``dc/dx (n, 4, 10)``."""
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 10, generator=gen)
    c = torch.stack([x[:, 0] ** 2 + x[:, 1] ** 2, torch.sin(2 * x[:, 2]) * x[:, 3], x[:, 4], x[:, 5] * x[:, 6]], 1)
    dy_dc = torch.tensor(SYNTHETIC_DY_DC)
    y = c @ dy_dc + noise * torch.randn(n, generator=gen)
    return {"x": x, "c": c, "y": y, "dy_dc": dy_dc}


def pixel_features(images: np.ndarray) -> np.ndarray:
    """Per-image scalar features behind :data:`PIXEL_CONCEPTS` from ``(N, 28, 28)`` images in [0, 1]."""
    img = images.astype(np.float32)
    ink = img > 0.1
    mass = img.sum((1, 2)) + 1e-6
    rows, cols = ink.any(2), ink.any(1)
    height = rows.sum(1) + 1e-6
    width = cols.sum(1)
    half = img.shape[1] // 2
    centre = img[:, half:, img.shape[2] // 2 - 2: img.shape[2] // 2 + 2].mean((1, 2))
    bright = (img * ink).sum((1, 2)) / np.maximum(ink.sum((1, 2)), 1)
    texture = (np.abs(np.diff(img, axis=2)) * ink[:, :, 1:]).sum((1, 2)) / np.maximum(ink.sum((1, 2)), 1)
    asym = np.abs(img - img[:, :, ::-1]).sum((1, 2)) / mass
    return np.stack([img[:, :half].sum((1, 2)) / mass, width / height, bright, ink.mean((1, 2)), -centre, texture,
                     -asym], 1)


def fashion_concepts(images: np.ndarray, labels: np.ndarray,
                     thresholds: np.ndarray | None = None) -> tuple[np.ndarray, list[str], np.ndarray]:
    """Concept labels ``(N, k)`` (0/1) for Fashion-MNIST images: class attributes, then pixel concepts.

    Args:
        images: ``(N, 28, 28)`` in [0, 1].
        labels: ``(N,)`` class ids.
        thresholds: the pixel features' medians from a reference set (None: computed on ``images``).

    Returns:
        (labels, concept names, thresholds used).

    Example:
        >>> imgs = np.random.default_rng(0).random((6, 28, 28))
        >>> lab, names, thr = fashion_concepts(imgs, np.arange(6))
        >>> lab.shape == (6, len(CLASS_ATTRIBUTES) + len(PIXEL_CONCEPTS)), names[0]
        (True, 'upper_body')
    """
    cls = np.stack([np.isin(labels, members) for members in CLASS_ATTRIBUTES.values()], 1)
    feats = pixel_features(images)
    thr = np.median(feats, 0) if thresholds is None else thresholds
    return (np.concatenate([cls, feats > thr], 1).astype(np.float32), [*CLASS_ATTRIBUTES, *PIXEL_CONCEPTS], thr)


def relevant_present(concepts: np.ndarray, labels: np.ndarray, class_rates: np.ndarray) -> np.ndarray:
    """Ground truth for local recall@k: concepts present in the item (label 1) that are majority concepts of
    its class (``class_rates[y, i] > 0.5``, the share of class ``y``'s reference items with concept ``i``), as
    CUB's attribute processing keeps class-majority attributes. ``(N, k)`` booleans."""
    return (concepts > 0.5) & (class_rates[labels] > 0.5)


def class_rates(concepts: np.ndarray, labels: np.ndarray, n_classes: int) -> np.ndarray:
    """``(n_classes, k)``: the share of each class's items that have each concept."""
    return np.stack([concepts[labels == c].mean(0) for c in range(n_classes)])


def recall_at_k(scores: np.ndarray, truth: np.ndarray, k: int) -> np.ndarray:
    """Per item: the share of its true concepts among its ``k`` highest-scoring concepts (NaN when it has none).

    Example:
        >>> recall_at_k(np.array([[0.9, 0.1, 0.5]]), np.array([[True, False, True]]), 1)
        array([0.5])
    """
    top = np.argsort(-scores, axis=1)[:, :k]
    hits = np.take_along_axis(truth, top, axis=1).sum(1)
    total = truth.sum(1)
    return np.where(total > 0, hits / np.maximum(total, 1), np.nan)
