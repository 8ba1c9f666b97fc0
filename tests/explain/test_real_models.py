"""Concept Gradient on the embedded pretrained models (EfficientNet-Lite0, DINOv2-S), the quick reproduction
and the ``trustlab concepts`` command."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from trustlab.errors import DataFileError
from trustlab.explain import ConceptGradient
from trustlab.explain.vision_concepts import OnTail, concept_models, encode, fashion_split, load_backbone
from trustlab.report.schema import read_summary


@pytest.fixture(scope="module")
def effnet():
    return load_backbone("embedded:efficientnet-lite0")


def test_split_backbone_reproduces_the_pretrained_model(effnet):
    from trustlab.models.vision import load_vision_model

    vm = load_vision_model("embedded:efficientnet-lite0", device="cpu")
    x = effnet.prepare(np.random.default_rng(0).random((2, 28, 28)).astype(np.float32))
    with torch.no_grad():
        assert torch.allclose(effnet.classifier(effnet.tail(effnet.trunk(x))), vm(x), atol=1e-4)


def test_cg_at_a_named_layer_of_the_pretrained_cnn_from_pixels(effnet):
    net = effnet.classifier                                               # the ImageNet head, as a check below
    torch.manual_seed(0)
    head = torch.nn.Sequential(torch.nn.Linear(1280, 16), torch.nn.Tanh(), torch.nn.Linear(16, 3))
    g = OnTail(lambda x: effnet.tail(effnet.trunk(x)), head)             # g from pixels, through _blocks.15
    f = OnTail(lambda x: effnet.tail(effnet.trunk(x)), net)
    x = effnet.prepare(np.random.default_rng(1).random((3, 28, 28)).astype(np.float32))
    layer = effnet.tail.blocks[0]                                         # the module named _blocks.15
    cg = ConceptGradient(f, g, layer=layer, mode="joint").attribute(x, target=[1, 2, 3])
    # the same attributions from the cached activations z (CG at the input of the tail)
    z = encode(effnet, np.random.default_rng(1).random((3, 28, 28)).astype(np.float32))
    direct = ConceptGradient(OnTail(effnet.tail, net), OnTail(effnet.tail, head), mode="joint").attribute(
        z, target=[1, 2, 3])
    assert cg.shape == (3, 3) and torch.allclose(cg, direct, rtol=1e-3, atol=1e-5)


def test_encode_cache_is_keyed_by_the_images(effnet, tmp_path):
    rng = np.random.default_rng(4)
    a, b = rng.random((2, 28, 28)).astype(np.float32), rng.random((2, 28, 28)).astype(np.float32)
    za = encode(effnet, a, cache=tmp_path / "z.pt")
    assert torch.equal(encode(effnet, a, cache=tmp_path / "z.pt"), za)
    assert not torch.allclose(encode(effnet, b, cache=tmp_path / "z.pt"), za)      # same length, other images


def test_dinov2_backbone_supports_concept_gradients():
    bb = load_backbone("embedded:dinov2-s")
    z = encode(bb, np.random.default_rng(2).random((2, 28, 28)).astype(np.float32))
    assert z.shape == (2, 65, 384)                                         # CLS + 8x8 patches at 112x112
    torch.manual_seed(0)
    f, g = OnTail(bb.tail, torch.nn.Linear(384, 4)), OnTail(bb.tail, torch.nn.Linear(384, 5))
    assert ConceptGradient(f, g).attribute(z, target=0).shape == (2, 5)


def test_concept_models_are_saved_and_reloaded(effnet, tmp_path):
    path = tmp_path / "models.pt"
    first = concept_models(effnet, n_train=60, seed=0, path=path)
    again = concept_models(effnet, n_train=60, seed=0, path=path)
    z = encode(effnet, fashion_split(20, 8, seed=1)["x_test"])
    with torch.no_grad():
        assert torch.allclose(first["f"](z), again["f"](z)) and torch.allclose(first["g"](z), again["g"](z))
    assert torch.equal(first["cav"].vectors, again["cav"].vectors)
    with pytest.raises(DataFileError, match="holds concept models for"):
        concept_models(effnet, n_train=80, seed=0, path=path)


def test_quick_reproduction_writes_valid_results(tmp_path):
    from trustlab.reproduce.concept_gradient import run

    claims = run(tmp_path / "quick", quick=True)                         # activations cached in the trustlab cache
    summary = read_summary(tmp_path / "quick" / "summary.json")
    assert len(summary) == len(claims) == 7 and all(c["setup"]["quick"] for c in summary)
    assert all(c["n"] > 0 and c["ci"] is not None for c in summary)
    details = json.loads((tmp_path / "quick" / "details.json").read_text())
    assert set(details["real"]) == {"embedded:efficientnet-lite0", "embedded:dinov2-s"}
    assert (tmp_path / "quick" / "cg_vs_cav.png").stat().st_size > 10_000


def test_concepts_command(tmp_path):
    from PIL import Image

    from trustlab.cli import main

    data = fashion_split(20, 2, seed=3)
    paths = []
    for i, img in enumerate(data["x_test"]):
        paths.append(tmp_path / f"item{i}.png")
        Image.fromarray((img * 255).astype(np.uint8)).save(paths[-1])
    runner = CliRunner()
    out = tmp_path / "run"
    res = runner.invoke(main, ["concepts", *map(str, paths), "--out", str(out), "--train-images", "60", "--top", "3",
                               "--concept-model", str(tmp_path / "models.pt")])
    assert res.exit_code == 0, res.output
    rows = [json.loads(line) for line in (out / "samples.jsonl").read_text().splitlines()]
    assert [r["id"] for r in rows] == [str(p) for p in paths] and len(rows[0]["top"]) == 3
    assert len(rows[0]["attributions"]) == 21 and (out / "report.html").exists()
    bad = tmp_path / "notes.txt"
    bad.write_text("not an image")
    for args, message in ((["concepts"], "give at least one image"),
                          (["concepts", str(paths[0]), "--model", "embedded:resnet"], "no concept backbone"),
                          (["concepts", str(bad)], "not an image")):
        res = runner.invoke(main, args)
        assert res.exit_code != 0 and message in res.output, res.output
