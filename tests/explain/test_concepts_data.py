"""Concept labels, heads and the offline concept data: validation errors, the Fashion-MNIST concept table,
the ground-truth rule and recall@k."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from trustlab.errors import EmptyInputError
from trustlab.explain import CAV, ConceptInputError, check_concept_labels, train_head
from trustlab.explain.concept_data import (
    CLASS_ATTRIBUTES,
    PIXEL_CONCEPTS,
    class_rates,
    fashion_concepts,
    recall_at_k,
    relevant_present,
    synthetic_concepts,
)


def test_concept_label_errors_name_the_problem():
    good = torch.tensor([[1, 0], [0, 1], [1, 1]])
    assert check_concept_labels(good, 3).shape == (3, 2)
    with pytest.raises(ConceptInputError, match=r"concept\(s\) stripes have the same label"):
        check_concept_labels(torch.tensor([[1, 1], [0, 1], [1, 1]]), 3, ["dots", "stripes"])
    with pytest.raises(ConceptInputError, match=r"2 rows for 3 items \(transposed\?\)"):
        check_concept_labels(torch.tensor([[1, 0, 1], [0, 1, 0]]), 3)
    with pytest.raises(ConceptInputError, match="0/1"):
        check_concept_labels(torch.tensor([[2, 0], [0, 1], [1, 1]]), 3)
    with pytest.raises(ConceptInputError, match=r"\(items, concepts\)"):
        check_concept_labels(torch.tensor([1, 0, 1]), 3)
    with pytest.raises(EmptyInputError):
        check_concept_labels(torch.zeros(0, 2), 0)
    with pytest.raises(ConceptInputError, match="same label"):
        CAV(torch.nn.Linear(4, 2)).fit(torch.randn(5, 4), torch.ones(5, 1))
    with pytest.raises(ConceptInputError, match="call fit"):
        CAV(torch.nn.Linear(4, 2)).attribute(torch.randn(2, 4), target=0)
    with pytest.raises(ConceptInputError, match="4 values, the layer has 3"):
        CAV(torch.nn.Linear(3, 2), vectors=torch.ones(1, 4)).attribute(torch.randn(2, 3), target=0)


def test_train_head_learns_a_non_linear_concept():
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(600, 2, generator=gen)
    labels = (x.norm(dim=1) > 1.2).float()[:, None]                  # a ring: not linearly separable
    mlp = train_head(x, labels, task="multilabel", hidden=32, epochs=150, lr=1e-2)
    linear = train_head(x, labels, task="multilabel", epochs=150)
    acc = lambda head: float(((head(x) > 0).float() == labels).float().mean())  # noqa: E731
    assert acc(mlp) > 0.9 > acc(linear) + 0.1
    with pytest.raises(ConceptInputError, match="unknown task"):
        train_head(x, labels, task="ranking")


def test_synthetic_data_matches_its_formulas():
    d = synthetic_concepts(50, seed=3)
    x, c = d["x"], d["c"]
    assert torch.allclose(c[:, 0], x[:, 0] ** 2 + x[:, 1] ** 2)
    assert torch.allclose(c[:, 1], torch.sin(2 * x[:, 2]) * x[:, 3])
    assert (d["y"] - c @ d["dy_dc"]).abs().max() < 0.3


def test_fashion_concepts_and_the_ground_truth_rule():
    rng = np.random.default_rng(0)
    images = rng.random((40, 28, 28)).astype(np.float32)
    labels = np.arange(40) % 10
    concepts, names, thr = fashion_concepts(images, labels)
    assert names == [*CLASS_ATTRIBUTES, *PIXEL_CONCEPTS] and concepts.shape == (40, len(names))
    footwear = names.index("footwear")
    assert set(np.flatnonzero(concepts[:10, footwear])) == {5, 7, 9}
    pixel = concepts[:, len(CLASS_ATTRIBUTES):]
    assert 0.3 < pixel.mean() < 0.7                                   # median thresholds: about half hold
    again, _, _ = fashion_concepts(images, labels, thr)
    assert np.array_equal(again, concepts)
    rates = class_rates(concepts, labels, 10)
    truth = relevant_present(concepts, labels, rates)
    assert truth[labels == 5][:, footwear].all() and not truth[labels == 0][:, footwear].any()


def test_recall_at_k():
    scores = np.array([[0.9, 0.1, 0.5, 0.3], [0.0, 0.2, 0.1, 0.4]])
    truth = np.array([[True, False, False, True], [False, False, False, False]])
    r = recall_at_k(scores, truth, 2)
    assert r[0] == 0.5 and np.isnan(r[1])
    assert recall_at_k(scores, truth, 4)[0] == 1.0
