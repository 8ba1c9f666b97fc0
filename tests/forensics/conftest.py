"""A tiny ViT (random init, saved as a transformers folder) on 8x8 digits, shared by the forensics tests."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def digits():
    from trustlab.attribution.ddpm import load_images

    return load_images("digits", split="train", limit=300), load_images("digits", split="test", limit=120)


@pytest.fixture(scope="session")
def tiny_vit(tmp_path_factory, digits):
    from trustlab.forensics import train_small_vit

    train, _ = digits
    return train_small_vit((train.x[:128] + 1) / 2, train.y[:128], tmp_path_factory.mktemp("vit") / "vit", layers=3,
                           dim=32, heads=2, epochs=1)
