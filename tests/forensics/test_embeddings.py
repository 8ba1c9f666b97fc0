"""Layer embeddings through the vision handle: block discovery, pooling, the on-disk cache and its resume."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from trustlab.errors import EmptyInputError, TrustlabError
from trustlab.forensics import block_layers, layer_embeddings
from trustlab.models.vision import load_vision_model


@pytest.fixture(scope="module")
def vm(tiny_vit):
    return load_vision_model(tiny_vit["path"], device="cpu")  # size and normalisation from its preprocessor file


def test_small_vit_folder_loads_with_its_blocks(vm, tiny_vit):
    assert vm.input_size == 8 and vm.channels == 1 and tiny_vit["epochs"] == 1
    assert block_layers(vm) == [f"backbone.vit.layers.{i}" for i in range(3)]


def test_cls_and_mean_pooling(vm, digits):
    x = (digits[0].x[:10] + 1) / 2
    layers = block_layers(vm)
    cls = layer_embeddings(vm, x, layers)
    mean = layer_embeddings(vm, x, layers, pool="mean")
    with torch.no_grad():
        acts = vm.activations(vm.preprocess(x), layers)
    for name in layers:
        assert cls[name].shape == (10, 32)
        np.testing.assert_allclose(cls[name], acts[name][:, 0].numpy(), rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(mean[name], acts[name][:, 1:].mean(1).numpy(), rtol=1e-5, atol=1e-6)


def test_cache_is_reused_and_resumed(vm, digits, tmp_path):
    x = (digits[0].x[:50] + 1) / 2
    layers = block_layers(vm)[:2]
    first = layer_embeddings(vm, x, layers, cache_dir=tmp_path, shard=20)
    (folder,) = [p for p in tmp_path.iterdir() if p.is_dir()]
    shards = sorted(folder.glob("shard-*.npz"))
    assert len(shards) == 3 and (folder / "done.json").exists()
    # an interrupted run: the last shard and the done marker are gone; the others are read, not recomputed
    (folder / "done.json").unlink()
    shards[-1].unlink()
    kept = shards[0].stat().st_mtime_ns
    again = layer_embeddings(vm, x, layers, cache_dir=tmp_path, shard=20)
    assert shards[0].stat().st_mtime_ns == kept and shards[-1].exists()
    for name in layers:
        np.testing.assert_array_equal(first[name], again[name])
    # other images, another key
    layer_embeddings(vm, x[:10], layers, cache_dir=tmp_path, shard=20)
    assert len([p for p in tmp_path.iterdir() if p.is_dir()]) == 2


def test_uint8_images_match_float_images(vm, digits):
    x = (digits[0].x[:5] + 1) / 2
    u8 = (x * 255).round().to(torch.uint8)
    a = layer_embeddings(vm, u8, block_layers(vm)[:1])
    b = layer_embeddings(vm, u8.float() / 255, block_layers(vm)[:1])
    np.testing.assert_allclose(a[block_layers(vm)[0]], b[block_layers(vm)[0]], atol=1e-6)


def test_bad_input(vm):
    layers = block_layers(vm)
    with pytest.raises(EmptyInputError):
        layer_embeddings(vm, torch.zeros(0, 1, 8, 8), layers)
    with pytest.raises(EmptyInputError):
        layer_embeddings(vm, torch.zeros(2, 1, 8, 8), [])
    with pytest.raises(TrustlabError, match="pool"):
        layer_embeddings(vm, torch.zeros(2, 1, 8, 8), layers, pool="max")
    with pytest.raises(TrustlabError, match="shape"):
        layer_embeddings(vm, torch.zeros(8, 8), layers)
    with pytest.raises(TrustlabError, match="close names"):
        layer_embeddings(vm, torch.zeros(2, 1, 8, 8), ["backbone.vit.layers.9"])


def test_block_layers_needs_blocks():
    cnn = load_vision_model(torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3), torch.nn.Flatten(), torch.nn.LazyLinear(3)),
                            kind="classifier", input_size=8, mean=(0.5,), std=(0.5,), device="cpu")
    with pytest.raises(TrustlabError, match="pass the layer names"):
        block_layers(cnn)


def test_ct_curve_of_copies_and_of_held_out_images(vm, digits):
    from trustlab.forensics import ct_curve

    train, test = ((d.x + 1) / 2 for d in digits)
    copies = ct_curve(vm, train, test[:60], train[:200], k=3, min_cell=5)
    held_out = ct_curve(vm, train, test[:60], test[60:], k=3, min_cell=5)
    assert copies.shape == (3,) and (copies < -3).all()
    assert (np.abs(held_out) < 3).all() and (held_out > copies).all()
