"""The generator families: shapes, ranges, seeds, and memorization in pixel space where it is known."""

from __future__ import annotations

import pytest
import torch

from trustlab.errors import EmptyInputError, TrustlabError
from trustlab.forensics import ct_score, generate


@pytest.mark.parametrize("family", ["noisy-copy", "kde-narrow", "kde-wide", "gmm", "pca-gauss", "vae", "gan"])
def test_families_draw_images_in_range(family, digits):
    x = digits[0].x
    imgs = generate(family, x, 40, seed=1, budget=0.05)
    assert imgs.shape == (40, 1, 8, 8) and imgs.dtype == torch.float32
    assert float(imgs.min()) >= -1 and float(imgs.max()) <= 1 and float(imgs.std()) > 0.05
    assert not torch.equal(imgs, generate(family, x, 40, seed=2, budget=0.05))  # seeds are instances


def test_copier_memorizes_and_smooth_family_does_not(digits):
    train, test = digits
    flat = lambda t: t.reshape(len(t), -1).numpy()  # noqa: E731
    copies = generate("noisy-copy", train.x, 300, seed=0)
    smooth = generate("kde-wide", train.x, 300, seed=0)
    kw = {"k": 4, "min_cell": 10}
    assert ct_score(flat(train.x), flat(test.x), flat(copies), **kw).ct < -3
    assert ct_score(flat(train.x), flat(test.x), flat(smooth), **kw).ct > 0


def test_bad_family_and_data(digits):
    with pytest.raises(TrustlabError, match="unknown generator family"):
        generate("flow", digits[0].x, 4)
    with pytest.raises(EmptyInputError):
        generate("gmm", digits[0].x[:0], 4)
    with pytest.raises(TrustlabError, match="work=PATH"):
        generate("ddpm", digits[0].x[:8], 4)
