"""Shared fixtures: a tiny DDPM really trained on 48 scikit-learn digits (widths 8, 16; T = 100; 4 epochs,
2 checkpoints), built once per test session."""

from __future__ import annotations

import pytest

TINY = {"epochs": 4, "checkpoints": 2, "batch_size": 16, "lr": 2e-3, "num_timesteps": 100,
        "block_out_channels": (8, 16), "norm_num_groups": 4}


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory):
    """``(run folder, task, training images)`` of the tiny DDPM."""
    from trustlab.attribution.ddpm import DDPMConfig, load_images, load_run, train_ddpm

    out = tmp_path_factory.mktemp("ddpm")
    data = load_images("digits", split="train", limit=48)
    train_ddpm(data.x, out, DDPMConfig(**TINY), data_spec=data.spec, device="cpu")
    task, loaded = load_run(out)
    return out, task, loaded.x
