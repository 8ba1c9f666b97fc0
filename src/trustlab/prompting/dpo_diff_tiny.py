"""A tiny offline text-to-image world for DPO-Diff: trained here, cached, and run through the same code
paths as Stable Diffusion + CLIP.

* Text encoder: a ``transformers.CLIPTextModel`` (1 layer, width 32) with a word-level tokenizer
  (``tokenizers`` WordLevel, BOS/EOS/PAD) over caption words, digit words and their synonyms/antonyms.
* Generator: a ``diffusers.UNet2DConditionModel`` (widths 16/32, cross-attention to the text states) on
  scikit-learn digits 8x8 in [-1, 1], pixel space (identity decoder), captions
  ``"a photo of a seven"``, 10% empty captions for classifier-free guidance, DDPM training,
  DDIM sampling.
* Scorer: a ``transformers.CLIPModel`` (ViT with 4x4 patches on 8x8 images, width 32) trained
  contrastively on the same images and captions.

Training takes a few CPU minutes once; weights are cached under ``cache_root()/dpo-diff-tiny-v1``.

Example:
    >>> world = tiny_world()
    >>> adapter = DiffusionAdapter(world.pipe, steps=20, guidance_scale=3.0)
    >>> loss = ClipLoss(world.clip, world.tokenizer)
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from trustlab.errors import require

DIGITS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
EXTRA_WORDS = ("a", "photo", "of", "digit", "number", "picture", "image", "the", "handwritten", "written",
               "bold", "thin", "small", "big", "blurry", "sharp", "dark", "light", "seventh", "eighth")
VERSION = "dpo-diff-tiny-v1"


@dataclass
class TinyWorld:
    """The trained tiny models: ``pipe`` (tokenizer, text_encoder, unet, scheduler; no VAE), ``clip``
    (a CLIPModel) and ``tokenizer`` (shared word-level tokenizer)."""

    pipe: Any
    clip: Any
    tokenizer: Any


def caption(label: int) -> str:
    """The training caption of a digit class, e.g. ``"a photo of a seven"``."""
    return f"a photo of a {DIGITS[label]}"


def word_tokenizer(max_length: int = 16) -> Any:
    """A word-level ``PreTrainedTokenizerFast`` over the tiny world's words, adding BOS/EOS."""
    from tokenizers import Tokenizer, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    specials = ["<pad>", "<unk>", "<bos>", "<eos>"]
    vocab = {w: i for i, w in enumerate([*specials, *DIGITS, *EXTRA_WORDS, ","])}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.Whitespace()])
    tok.post_processor = processors.TemplateProcessing(single="<bos> $A <eos>", special_tokens=[
        ("<bos>", vocab["<bos>"]), ("<eos>", vocab["<eos>"])])
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<bos>", eos_token="<eos>", pad_token="<pad>",
                                   unk_token="<unk>", model_max_length=max_length)


def _models(tokenizer: Any) -> tuple[Any, Any, Any]:
    diffusers = require("diffusers", "diffusion")
    from transformers import CLIPConfig, CLIPModel, CLIPTextConfig, CLIPTextModel

    torch.manual_seed(0)
    text_kw = {"vocab_size": len(tokenizer), "hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 1,
               "num_attention_heads": 2, "max_position_embeddings": tokenizer.model_max_length,
               "bos_token_id": tokenizer.bos_token_id, "eos_token_id": tokenizer.eos_token_id,
               "pad_token_id": tokenizer.pad_token_id}
    text_encoder = CLIPTextModel(CLIPTextConfig(**text_kw))
    unet = diffusers.UNet2DConditionModel(
        sample_size=8, in_channels=1, out_channels=1, block_out_channels=(16, 32), layers_per_block=1,
        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"), up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
        cross_attention_dim=32, attention_head_dim=4, norm_num_groups=8)
    clip = CLIPModel(CLIPConfig(text_config=text_kw, vision_config={
        "image_size": 8, "patch_size": 4, "num_channels": 1, "hidden_size": 32, "intermediate_size": 64,
        "num_hidden_layers": 1, "num_attention_heads": 2}, projection_dim=32))
    return text_encoder, unet, clip


def _digits() -> tuple[torch.Tensor, torch.Tensor]:
    from trustlab.attribution.ddpm import load_images

    d = load_images("digits", split="train")
    return d.x, d.y


def _train_diffusion(text_encoder: Any, unet: Any, tokenizer: Any, steps: int, seed: int) -> None:
    diffusers = require("diffusers", "diffusion")
    from trustlab.report.run import progress

    x, y = _digits()
    sched = diffusers.DDPMScheduler(num_train_timesteps=1000, beta_schedule="squaredcos_cap_v2")
    caps = [caption(i) for i in range(10)] + [""]
    ids = tokenizer(caps, padding="max_length", max_length=tokenizer.model_max_length, return_tensors="pt").input_ids
    params = [*text_encoder.parameters(), *unet.parameters()]
    opt = torch.optim.AdamW(params, lr=2e-3, weight_decay=0.0)
    g = torch.Generator().manual_seed(seed)
    text_encoder.train(), unet.train()
    for _ in progress(range(steps), "training tiny text-to-image UNet"):
        idx = torch.randint(0, len(x), (64,), generator=g)
        lab = torch.where(torch.rand(64, generator=g) < 0.1, 10, y[idx])  # 10% empty captions (CFG)
        noise = torch.randn(x[idx].shape, generator=g)
        t = torch.randint(0, 1000, (64,), generator=g)
        states = text_encoder(input_ids=ids[lab]).last_hidden_state
        pred = unet(sched.add_noise(x[idx], noise, t), t, encoder_hidden_states=states).sample
        loss = F.mse_loss(pred, noise)
        opt.zero_grad()
        loss.backward()
        opt.step()
    text_encoder.eval(), unet.eval()


def _train_clip(clip: Any, tokenizer: Any, steps: int, seed: int) -> None:
    from trustlab.report.run import progress

    x, y = _digits()
    x = (x + 1) / 2  # [0, 1]
    mean, std = 0.5, 0.5
    caps = [caption(i) for i in range(10)]
    ids = tokenizer(caps, padding="max_length", max_length=tokenizer.model_max_length, return_tensors="pt").input_ids
    opt = torch.optim.AdamW(clip.parameters(), lr=2e-3)
    g = torch.Generator().manual_seed(seed)
    clip.train()
    for _ in progress(range(steps), "training tiny CLIP scorer"):
        idx = torch.randint(0, len(x), (128,), generator=g)
        img = F.normalize(clip.get_image_features(pixel_values=(x[idx] - mean) / std).pooler_output, dim=-1)
        txt = F.normalize(clip.get_text_features(input_ids=ids).pooler_output, dim=-1)  # (10, D)
        logits = clip.logit_scale.exp() * img @ txt.T  # classes as the contrastive negatives
        loss = F.cross_entropy(logits, y[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
    clip.eval()


def tiny_world(cache: str | Path | None = None, *, diffusion_steps: int = 1200, clip_steps: int = 300,
               seed: int = 0) -> TinyWorld:
    """Train (once, a few CPU minutes) or load the tiny world.

    Args:
        cache: folder for the weights (default ``cache_root()/dpo-diff-tiny-v1``).
        diffusion_steps, clip_steps: optimisation steps of the generator and the scorer.
        seed: training seed.

    Example:
        >>> world = tiny_world()
        >>> world.pipe.unet.config.sample_size
        8
    """
    diffusers = require("diffusers", "diffusion")
    from transformers import CLIPModel, CLIPTextModel

    from trustlab.models.embedded import cache_root
    from trustlab.report.io import write_json

    folder = Path(cache) if cache is not None else cache_root() / VERSION
    tokenizer = word_tokenizer()
    done = folder / "done.json"
    if done.exists():
        text_encoder = CLIPTextModel.from_pretrained(folder / "text_encoder")
        unet = diffusers.UNet2DConditionModel.from_pretrained(folder / "unet")
        clip = CLIPModel.from_pretrained(folder / "clip")
    else:
        text_encoder, unet, clip = _models(tokenizer)
        _train_diffusion(text_encoder, unet, tokenizer, diffusion_steps, seed)
        _train_clip(clip, tokenizer, clip_steps, seed)
        for name, m in (("text_encoder", text_encoder), ("unet", unet), ("clip", clip)):
            m.save_pretrained(folder / name)
        write_json(done, {"version": VERSION, "diffusion_steps": diffusion_steps, "clip_steps": clip_steps,
                          "seed": seed})
    scheduler = diffusers.DDIMScheduler(num_train_timesteps=1000, beta_schedule="squaredcos_cap_v2",
                                        clip_sample=False, set_alpha_to_one=True)
    pipe = SimpleNamespace(tokenizer=tokenizer, text_encoder=text_encoder.eval(), unet=unet.eval(),
                           scheduler=scheduler, vae=None)
    return TinyWorld(pipe, clip.eval(), tokenizer)


def tiny_clip_loss(world: TinyWorld) -> Any:
    """The :class:`~trustlab.prompting.dpo_diff.ClipLoss` of the tiny scorer (normalisation as in training)."""
    from trustlab.prompting.dpo_diff import ClipLoss

    return ClipLoss(world.clip, world.tokenizer, mean=(0.5,), std=(0.5,))


def clip_predict(world: TinyWorld, images: torch.Tensor) -> np.ndarray:
    """The tiny scorer's zero-shot digit predictions ``(B,)`` for images in [0, 1] (a faithfulness check)."""
    loss = tiny_clip_loss(world)
    with torch.no_grad():
        feats = torch.cat([loss.text_features(caption(i)) for i in range(10)])
        return spherical_argmin(loss.image_features(images), feats)


def spherical_argmin(img: torch.Tensor, txt: torch.Tensor) -> np.ndarray:
    """Index of the nearest text embedding per image (cosine)."""
    return (F.normalize(img, dim=-1) @ F.normalize(txt, dim=-1).T).argmax(-1).numpy()
