"""Generator identification: leave-one-instance-out evaluation of fingerprint matchers and the spec's
baselines (pixel mean/std matching, a logistic-regression classifier on the images).

A query is one batch of generated images from one instance (a trained generator, e.g. one seed); its
references are the batches of every other instance, so a family is recognised from its other instances
only. Every identifier maps ``(reference items, reference families, query items) -> predicted families``.

Example:
    >>> from trustlab.forensics import FingerprintMatcher
    >>> curves = [[-5, -3], [-6, -2], [4, 5], [5, 6]]
    >>> fams, insts = ["copy", "copy", "gmm", "gmm"], ["c0", "c1", "g0", "g1"]
    >>> leave_one_instance_out(curves, fams, insts, curve_identifier())["accuracy"]
    1.0
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from trustlab.errors import EmptyInputError
from trustlab.forensics.memorization import FingerprintMatcher, MemorizationInputError

Identifier = Callable[[list[Any], list[str], list[Any]], list[str]]


def curve_identifier(a: float = 0.5, layer: int | None = None) -> Identifier:
    """Nearest reference C_T curve (:class:`FingerprintMatcher`); ``layer=i``: the single-layer baseline."""
    def identify(refs: list[Any], families: list[str], queries: list[Any]) -> list[str]:
        return FingerprintMatcher(a, layer).fit(np.asarray(refs, float), families).predict(np.asarray(queries, float))

    return identify


def _pixel_stats(batch: Any) -> np.ndarray:
    flat = np.asarray(batch, dtype=np.float64).reshape(len(batch), -1)
    return np.concatenate([flat.mean(0), flat.std(0)])


def pixel_stats_identifier() -> Identifier:
    """Baseline: nearest reference by L2 between (per-pixel mean image, per-pixel std image) of each batch."""
    def identify(refs: list[Any], families: list[str], queries: list[Any]) -> list[str]:
        r = np.stack([_pixel_stats(b) for b in refs])
        q = np.stack([_pixel_stats(b) for b in queries])
        return [families[j] for j in np.linalg.norm(q[:, None] - r[None], axis=2).argmin(1)]

    return identify


def classifier_identifier(per_batch: int = 50, seed: int = 0) -> Identifier:
    """Baseline: logistic regression on the pixels of ``per_batch`` images of each reference batch (labels: the
    family); a query batch gets the family with the highest mean predicted probability over its images."""
    def identify(refs: list[Any], families: list[str], queries: list[Any]) -> list[str]:
        from sklearn.linear_model import LogisticRegression
        from sklearn.preprocessing import StandardScaler

        rng = np.random.default_rng(seed)
        xs, ys = [], []
        for batch, fam in zip(refs, families):
            flat = np.asarray(batch, dtype=np.float64).reshape(len(batch), -1)
            xs.append(flat[rng.permutation(len(flat))[:per_batch]])
            ys += [fam] * len(xs[-1])
        scaler = StandardScaler().fit(np.concatenate(xs))
        clf = LogisticRegression(max_iter=2000).fit(scaler.transform(np.concatenate(xs)), ys)
        out = []
        for batch in queries:
            flat = np.asarray(batch, dtype=np.float64).reshape(len(batch), -1)
            out.append(str(clf.classes_[clf.predict_proba(scaler.transform(flat)).mean(0).argmax()]))
        return out

    return identify


def leave_one_instance_out(items: Sequence[Any], families: Sequence[str], instances: Sequence[str],
                           identify: Identifier) -> dict[str, Any]:
    """Identify every item from the items of all other instances.

    Args:
        items: one per query batch (a C_T curve, or the batch's images for the pixel baselines).
        families: each item's true family. instances: each item's instance id (batches of one instance
            share it and never serve as each other's references).
        identify: see :data:`Identifier`.

    Returns:
        ``{"accuracy", "correct" (per item, 0/1), "predicted", "families", "confusion" ({true: {pred: count}})}``.

    Raises:
        EmptyInputError: no items. MemorizationInputError: lengths differ, or an instance has no
            references of its own family left (the family has a single instance).
    """
    items, families, instances = list(items), [str(f) for f in families], [str(i) for i in instances]
    if not items:
        raise EmptyInputError("no items to identify")
    if not len(items) == len(families) == len(instances):
        raise MemorizationInputError(f"{len(items)} items, {len(families)} families, {len(instances)} instances")
    for fam in set(families):
        if len({i for i, f in zip(instances, families) if f == fam}) < 2:
            raise MemorizationInputError(f"family {fam!r} has one instance: leave-one-instance-out needs >= 2")
    predicted: list[str] = [""] * len(items)
    for inst in dict.fromkeys(instances):
        q = [j for j, i in enumerate(instances) if i == inst]
        r = [j for j, i in enumerate(instances) if i != inst]
        for j, pred in zip(q, identify([items[k] for k in r], [families[k] for k in r], [items[k] for k in q])):
            predicted[j] = pred
    correct = [int(p == f) for p, f in zip(predicted, families)]
    confusion: dict[str, dict[str, int]] = {f: {} for f in dict.fromkeys(families)}
    for f, p in zip(families, predicted):
        confusion[f][p] = confusion[f].get(p, 0) + 1
    return {"accuracy": float(np.mean(correct)), "correct": correct, "predicted": predicted, "families": families,
            "confusion": confusion}
