"""A tiny offline text-to-image world for DPO-Diff: trained here, cached, and run through the same code
paths as Stable Diffusion + CLIP.

* Text encoder: a ``transformers.CLIPTextModel`` (1 layer, width 32) with a word-level tokenizer
  (``tokenizers`` WordLevel, BOS/EOS/PAD).
* Captions (spec section 6): templates such as ``"a sketch of the thick tilted 7"``. Every digit has three
  surface forms (name 60%, numeral 25%, Roman numeral or "nought" 15% of captions), every template noun and
  style word several synonyms, so attack spaces (synonyms) and enhancement spaces (antonyms: opposite
  styles, confusable digits) are made of words the generator learned. Styles come from pixel statistics,
  per digit class: ink mass (lowest 30% "thin", highest 30% "bold") and shear of the image moments (largest
  30% "slanted", smallest 30% "upright"); a caption names a style the image has with probability 0.7.
* Generator: a ``diffusers.UNet2DConditionModel`` (widths 16/32, cross-attention to the text states) on
  scikit-learn digits 8x8 in [-1, 1], pixel space (identity decoder), 10% empty captions for
  classifier-free guidance, DDPM training, DDIM sampling.
* Scorer: a ``transformers.CLIPModel`` (ViT with 4x4 patches on 8x8 images, width 32) trained
  contrastively on the same images and captions (every caption of the image's digit in the batch counts as
  a positive).

Training takes a few CPU minutes once; weights are cached under ``cache_root()/dpo-diff-tiny-v2``.

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
NUMERALS = tuple(str(k) for k in range(10))
ROMAN = ("nought", "i", "ii", "iii", "iv", "v", "vi", "vii", "viii", "ix")
FORMS = (DIGITS, NUMERALS, ROMAN)
FORM_SHARE = (0.6, 0.25, 0.15)
STYLES = {"thin": ("thin", "skinny", "slim"), "bold": ("bold", "thick", "heavy"),
          "slanted": ("slanted", "tilted", "italic"), "upright": ("upright", "straight", "vertical")}
OPPOSITE = {"thin": "bold", "bold": "thin", "slanted": "upright", "upright": "slanted"}
NOUNS = ("photo", "picture", "image", "drawing", "sketch", "snapshot")
EXTRA_WORDS = ("a", "the", "of", *NOUNS, *(w for ws in STYLES.values() for w in ws), "digit", "number",
               "handwritten", "small", "big", "blurry", "sharp", "dark", "light")
VERSION = "dpo-diff-tiny-v2"
STYLE_SHARE, STYLE_PROB = 0.3, 0.7


@dataclass
class TinyWorld:
    """The trained tiny models: ``pipe`` (tokenizer, text_encoder, unet, scheduler; no VAE), ``clip``
    (a CLIPModel) and ``tokenizer`` (shared word-level tokenizer)."""

    pipe: Any
    clip: Any
    tokenizer: Any


def caption(label: int) -> str:
    """The canonical caption of a digit class, e.g. ``"a photo of a seven"``."""
    return f"a photo of a {DIGITS[label]}"


def style_stats(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Ink mass and absolute moment shear ``(B,)`` of images ``(B, 1, 8, 8)`` in [-1, 1] (the style statistics).

    Example:
        >>> mass, shear = style_stats(torch.zeros(2, 1, 8, 8))
        >>> mass.tolist()
        [32.0, 32.0]
    """
    ink = (x + 1) / 2
    mass = ink.flatten(1).sum(1)
    side = x.shape[-1]
    rows = torch.arange(float(side)).view(1, side, 1).expand(len(x), side, side)
    cols = torch.arange(float(side)).view(1, 1, side).expand(len(x), side, side)
    w = ink[:, 0] / mass.clamp_min(1e-6).view(-1, 1, 1)
    r_mean, c_mean = (w * rows).sum((1, 2)), (w * cols).sum((1, 2))
    dr, dc = rows - r_mean.view(-1, 1, 1), cols - c_mean.view(-1, 1, 1)
    shear = ((w * dr * dc).sum((1, 2)) / (w * dr * dr).sum((1, 2)).clamp_min(1e-6)).abs()
    return mass, shear


def style_of(x: torch.Tensor, y: torch.Tensor) -> list[tuple[str, ...]]:
    """The style words each image has (keys of :data:`STYLES`), from per-class quantiles of ink mass and
    moment shear (:func:`style_stats`).

    Example:
        >>> from trustlab.attribution.ddpm import load_images
        >>> d = load_images("digits")
        >>> style_of(d.x, d.y)[:2]
        [('thin', 'slanted'), ('slanted',)]
    """
    mass, shear = style_stats(x)
    out: list[tuple[str, ...]] = [() for _ in range(len(x))]
    for k in y.unique().tolist():
        idx = (y == k).nonzero().flatten()
        for stat, (lo_word, hi_word) in ((mass, ("thin", "bold")), (shear, ("upright", "slanted"))):
            lo, hi = torch.quantile(stat[idx], STYLE_SHARE), torch.quantile(stat[idx], 1 - STYLE_SHARE)
            for i in idx.tolist():
                word = lo_word if stat[i] <= lo else hi_word if stat[i] >= hi else None
                if word:
                    out[i] = (*out[i], word)
    return out


def random_caption(label: int, styles: tuple[str, ...], rng: np.random.Generator) -> str:
    """One training caption of an image: template, digit surface form and style synonyms drawn at random.

    Example:
        >>> random_caption(7, ("bold",), np.random.default_rng(0))
        'a bold 7'
    """
    form = FORMS[int(rng.choice(3, p=FORM_SHARE))][label]
    words = [str(rng.choice(STYLES[s])) for s in styles if rng.random() < STYLE_PROB]
    det = str(rng.choice(("a", "the")))
    head = [det] if rng.random() < 0.5 else [det, str(rng.choice(NOUNS)), "of", str(rng.choice(("a", "the")))]
    return " ".join([*head, *words, form])


def word_tokenizer(max_length: int = 16) -> Any:
    """A word-level ``PreTrainedTokenizerFast`` over the tiny world's words, adding BOS/EOS."""
    from tokenizers import Tokenizer, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    specials = ["<pad>", "<unk>", "<bos>", "<eos>"]
    words = dict.fromkeys([*DIGITS, *NUMERALS, *ROMAN, *EXTRA_WORDS, ","])
    vocab = {w: i for i, w in enumerate([*specials, *words])}
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
    styles = style_of(x, y)
    sched = diffusers.DDPMScheduler(num_train_timesteps=1000, beta_schedule="squaredcos_cap_v2")
    params = [*text_encoder.parameters(), *unet.parameters()]
    opt = torch.optim.AdamW(params, lr=2e-3, weight_decay=0.0)
    g = torch.Generator().manual_seed(seed)
    rng = np.random.default_rng(seed)
    text_encoder.train(), unet.train()
    for _ in progress(range(steps), "training tiny text-to-image UNet"):
        idx = torch.randint(0, len(x), (64,), generator=g)
        drop = torch.rand(64, generator=g) < 0.1  # 10% empty captions (CFG)
        caps = ["" if d else random_caption(int(y[i]), styles[i], rng) for i, d in zip(idx.tolist(), drop.tolist())]
        ids = tokenizer(caps, padding="max_length", max_length=tokenizer.model_max_length,
                        return_tensors="pt").input_ids
        noise = torch.randn(x[idx].shape, generator=g)
        t = torch.randint(0, 1000, (64,), generator=g)
        states = text_encoder(input_ids=ids).last_hidden_state
        pred = unet(sched.add_noise(x[idx], noise, t), t, encoder_hidden_states=states).sample
        loss = F.mse_loss(pred, noise)
        opt.zero_grad()
        loss.backward()
        opt.step()
    text_encoder.eval(), unet.eval()


def _train_clip(clip: Any, tokenizer: Any, steps: int, seed: int) -> None:
    from trustlab.report.run import progress

    x, y = _digits()
    styles = style_of(x, y)
    x = (x + 1) / 2  # [0, 1]
    mean, std = 0.5, 0.5
    opt = torch.optim.AdamW(clip.parameters(), lr=2e-3)
    g = torch.Generator().manual_seed(seed)
    rng = np.random.default_rng(seed + 1)
    clip.train()
    for _ in progress(range(steps), "training tiny CLIP scorer"):
        idx = torch.randint(0, len(x), (128,), generator=g)
        caps = [random_caption(int(y[i]), styles[i], rng) for i in idx.tolist()]
        ids = tokenizer(caps, padding="max_length", max_length=tokenizer.model_max_length,
                        return_tensors="pt").input_ids
        img = F.normalize(clip.get_image_features(pixel_values=(x[idx] - mean) / std).pooler_output, dim=-1)
        txt = F.normalize(clip.get_text_features(input_ids=ids).pooler_output, dim=-1)
        logits = clip.logit_scale.exp() * img @ txt.T
        same = y[idx].view(-1, 1) == y[idx].view(1, -1)  # every caption of the same digit is a positive
        loss = -(torch.logsumexp(logits.masked_fill(~same, -1e4), 1) - torch.logsumexp(logits, 1)).mean() \
            - (torch.logsumexp(logits.T.masked_fill(~same, -1e4), 1) - torch.logsumexp(logits.T, 1)).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    clip.eval()


def tiny_world(cache: str | Path | None = None, *, diffusion_steps: int = 3000, clip_steps: int = 600,
               seed: int = 0) -> TinyWorld:
    """Train (once, a few CPU minutes) or load the tiny world.

    Args:
        cache: folder for the weights (default ``cache_root()/dpo-diff-tiny-v2``).
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
