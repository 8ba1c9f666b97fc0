"""DPO-Diff core: the relaxed prompt, the shortcut text gradient and the spherical CLIP loss.

The pipeline-facing part is one class, :class:`DiffusionAdapter`, built from a ``diffusers``
text-to-image pipeline (``StableDiffusionPipeline`` or anything with ``tokenizer``, ``text_encoder``,
``unet``, ``scheduler`` and optionally ``vae``) or from those parts. It embeds prompts whose slots are
*mixtures* of token embeddings (the Gumbel-softmax relaxation of section 3.2 of the paper), samples with
classifier-free guidance, and computes the **Shortcut Text Gradient**: the sampler runs without gradients
down to step index ``t``, one guided UNet call runs with gradients, ``x0_hat = (x_t - sqrt(1 - abar_t)
eps_hat) / sqrt(abar_t)`` is decoded and scored. Its memory and backward time do not depend on the number
of sampler steps; ``grad_from=0`` instead backpropagates through every step (the costly baseline).

:class:`ClipLoss` scores images against the user prompt with any CLIP-like model
(``get_image_features`` / ``get_text_features`` as in transformers' ``CLIPModel``) by the spherical
distance ``d(a, b) = 2 * arcsin(||a - b|| / 2) ** 2`` of L2-normalised embeddings.

Search (GPO, EPO, hybrid) lives in :mod:`trustlab.prompting.dpo_diff_search`; spaces in
:mod:`trustlab.prompting.dpo_diff_space`.

References:
    Ruochen Wang, Ting Liu, Cho-Jui Hsieh, Boqing Gong. "On Discrete Prompt Optimization for
    Diffusion Models." ICML 2024. arXiv:2407.01606.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from contextlib import contextmanager
from typing import Any

import torch
import torch.nn.functional as F

from trustlab.errors import CapabilityError, TrustlabError
from trustlab.prompting.dpo_diff_space import SearchSpace, SearchSpaceError

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


class DPODiffError(TrustlabError, ValueError):
    """Bad arguments to DPO-Diff (a step index past the sampler, a prompt longer than the encoder, ...)."""


def spherical_distance(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``2 * arcsin(||a - b|| / 2) ** 2`` of L2-normalised rows (0 for equal, pi^2 / 2 for opposite).

    Example:
        >>> float(spherical_distance(torch.tensor([[1.0, 0.0]]), torch.tensor([[0.0, 1.0]])))  # (pi/2)^2 / 2
        1.2337005...
    """
    a, b = F.normalize(a, dim=-1), F.normalize(b, dim=-1)
    half = ((a - b).norm(dim=-1) / 2).clamp(max=1 - 1e-6)  # arcsin' is infinite at 1
    return 2 * torch.arcsin(half) ** 2


def gumbel_softmax_weights(alpha: torch.Tensor, tau: float = 1.0, generator: torch.Generator | None = None
                           ) -> torch.Tensor:
    """Soft Gumbel-softmax weights ``softmax((alpha + g) / tau)`` (not straight-through).

    Example:
        >>> w = gumbel_softmax_weights(torch.tensor([3.0, 0.0]), generator=torch.Generator().manual_seed(0))
        >>> float(w.sum())
        1.0
    """
    u = torch.rand(alpha.shape, generator=generator).clamp(1e-10, 1 - 1e-10).to(alpha.device)
    return torch.softmax((alpha - torch.log(-torch.log(u))) / tau, dim=-1)


def _tensor(out: Any) -> torch.Tensor:
    """Feature tensors from transformers 4 (a tensor) and 5 (an output object with ``pooler_output``)."""
    if isinstance(out, torch.Tensor):
        return out
    for name in ("image_embeds", "text_embeds", "pooler_output"):
        if getattr(out, name, None) is not None:
            return getattr(out, name)
    raise CapabilityError("the scorer's get_*_features returned no tensor; pass a CLIP-like model")


class ClipLoss:
    """Spherical CLIP distance of images to a text, with any CLIP-like scorer.

    Args:
        model: an object with ``get_image_features(pixel_values=...)`` and ``get_text_features(input_ids=...)``
            (transformers ``CLIPModel``), or a path / hub id loaded with ``CLIPModel.from_pretrained``.
        tokenizer: its tokenizer (loaded from the same path when ``model`` is a path).
        image_size: side the images are resized to (default: the model's ``vision_config.image_size``).
        mean, std: per-channel normalisation after resizing (default: CLIP's).

    Example:
        >>> loss = ClipLoss("openai/clip-vit-base-patch32")
        >>> d = loss(images, loss.text_features("a photo of a cat"))   # (B,)
    """

    def __init__(self, model: Any, tokenizer: Any = None, *, image_size: int | None = None,
                 mean: Sequence[float] = CLIP_MEAN, std: Sequence[float] = CLIP_STD):
        if isinstance(model, str):
            from transformers import AutoTokenizer, CLIPModel

            tokenizer = tokenizer or AutoTokenizer.from_pretrained(model)
            model = CLIPModel.from_pretrained(model)
        if not (hasattr(model, "get_image_features") and hasattr(model, "get_text_features")):
            raise CapabilityError(f"{type(model).__name__} has no get_image_features/get_text_features; "
                                  "pass a CLIP-like model (transformers CLIPModel)")
        if tokenizer is None:
            raise DPODiffError("ClipLoss needs the scorer's tokenizer when the model is an object")
        self.model, self.tokenizer = model.eval().requires_grad_(False), tokenizer
        vc = getattr(getattr(model, "config", None), "vision_config", None)
        self.image_size = image_size or getattr(vc, "image_size", 224)
        self.channels = getattr(vc, "num_channels", 3)
        self.mean = torch.tensor(mean[: self.channels]).view(1, -1, 1, 1)
        self.std = torch.tensor(std[: self.channels]).view(1, -1, 1, 1)

    @torch.no_grad()
    def text_features(self, text: str) -> torch.Tensor:
        """The scorer's text embedding ``(1, D)`` of ``text``."""
        device = next(self.model.parameters()).device
        ids = self.tokenizer([text], padding=True, truncation=True, return_tensors="pt").to(device)
        return _tensor(self.model.get_text_features(**ids))

    def image_features(self, images: torch.Tensor) -> torch.Tensor:
        """Embeddings ``(B, D)`` of images ``(B, C, H, W)`` in [0, 1] (resized, channels matched, normalised)."""
        x = F.interpolate(images, size=(self.image_size, self.image_size), mode="bilinear", align_corners=False)
        if x.shape[1] != self.channels:
            x = x.mean(1, keepdim=True).expand(-1, self.channels, -1, -1)
        x = (x - self.mean.to(x)) / self.std.to(x)
        param = next(self.model.parameters())
        return _tensor(self.model.get_image_features(pixel_values=x.to(param.device, param.dtype)))

    def __call__(self, images: torch.Tensor, text_emb: torch.Tensor) -> torch.Tensor:
        """Spherical distance ``(B,)`` of each image to ``text_emb`` (lower = more faithful)."""
        feats = self.image_features(images)
        return spherical_distance(feats.float(), text_emb.to(feats.device).float())


class DiffusionAdapter:
    """The pipeline-facing side of DPO-Diff: relaxed prompt embeddings, guided sampling, shortcut gradient.

    Args:
        pipe: a diffusers text-to-image pipeline; its parts are used unless given separately.
        tokenizer, text_encoder, unet, scheduler, vae: the parts (``vae=None`` decodes with the identity,
            for pixel-space models).
        steps: sampler steps (50 in the paper).
        guidance_scale: classifier-free guidance ``eps_neg + w (eps_pos - eps_neg)`` (7.5 in the paper).
        height, width: image size in pixels (default: the UNet's ``sample_size`` times the VAE factor).

    Attributes:
        grad_unet_calls: UNet forward calls made with gradients since construction (a cost meter).
        grad_started_at: ``time.perf_counter()`` when the last :meth:`denoise` began tracking gradients
            (splits the no-gradient prefix from the differentiated part in timings).

    Example:
        >>> from diffusers import StableDiffusionPipeline
        >>> adapter = DiffusionAdapter(StableDiffusionPipeline.from_pretrained("CompVis/stable-diffusion-v1-4"))
    """

    def __init__(self, pipe: Any = None, *, tokenizer: Any = None, text_encoder: Any = None, unet: Any = None,
                 scheduler: Any = None, vae: Any = None, steps: int = 50, guidance_scale: float = 7.5,
                 height: int | None = None, width: int | None = None):
        parts = {"tokenizer": tokenizer, "text_encoder": text_encoder, "unet": unet, "scheduler": scheduler}
        for name in parts:
            parts[name] = parts[name] if parts[name] is not None else getattr(pipe, name, None)
        missing = [k for k, v in parts.items() if v is None]
        if missing:
            raise CapabilityError(f"the pipeline has no {', '.join(missing)}; DPO-Diff needs a text-to-image "
                                  "pipeline with tokenizer, text_encoder, unet and scheduler")
        self.tokenizer, self.text_encoder = parts["tokenizer"], parts["text_encoder"]
        self.unet, self.scheduler = parts["unet"], parts["scheduler"]
        self.vae = vae if vae is not None else getattr(pipe, "vae", None)
        for m in (self.text_encoder, self.unet, self.vae):
            if m is not None:
                m.eval().requires_grad_(False)
        if steps < 1:
            raise DPODiffError(f"steps must be >= 1, got {steps}")
        self.steps, self.guidance_scale = steps, guidance_scale
        factor = 2 ** (len(self.vae.config.block_out_channels) - 1) if self.vae is not None else 1
        side = self.unet.config.sample_size
        side = side if isinstance(side, int) else side[0]
        h, w = height or side * factor, width or side * factor
        self.latent_shape = (self.unet.config.in_channels, h // factor, w // factor)
        self.max_length = min(int(getattr(self.tokenizer, "model_max_length", 77)),
                              int(self.text_encoder.config.max_position_embeddings))
        tok = self.tokenizer
        self.bos = tok.bos_token_id
        self.eos = tok.eos_token_id
        self.pad = tok.pad_token_id if tok.pad_token_id is not None else self.eos
        if self.eos is None:
            raise CapabilityError("the tokenizer has no EOS token; DPO-Diff builds [BOS, slots, EOS, pad]")
        self.grad_unet_calls = 0
        self.grad_started_at = 0.0

    @property
    def device(self) -> torch.device:
        """Where the UNet lives."""
        return next(self.unet.parameters()).device

    @property
    def token_embedding(self) -> torch.nn.Embedding:
        """The text encoder's token-embedding table."""
        return self.text_encoder.get_input_embeddings()

    def token_id(self, word: str) -> int:
        """The single token of ``word`` (``""`` -> the pad token); raises SearchSpaceError otherwise."""
        if word == "":
            return self.pad
        ids = self.tokenizer(word, add_special_tokens=False)["input_ids"]
        if len(ids) != 1 or ids[0] == getattr(self.tokenizer, "unk_token_id", None):
            raise SearchSpaceError(f"{word!r} is not a single known token for this tokenizer; build the space with "
                                   "tokenizer=adapter.tokenizer so only single-token options are kept")
        return int(ids[0])

    def plan(self, space: SearchSpace, side: int) -> list[int | tuple[int, torch.Tensor]]:
        """Token plan of one prompt side (0 positive, 1 negative): token ids and ``(slot, option ids)``."""
        pieces = space.segments((0,) * len(space.slots))[side]
        out: list[int | tuple[int, torch.Tensor]] = []
        for p in pieces:
            if isinstance(p, str):
                out += [int(i) for i in self.tokenizer(p, add_special_tokens=False)["input_ids"]]
            else:
                out.append((p, torch.tensor([self.token_id(o) for o in space.slots[p].options])))
        return out

    def encode(self, plan: list[int | tuple[int, torch.Tensor]], weights: Sequence[torch.Tensor]) -> torch.Tensor:
        """Text-encoder states ``(1, L, d)`` of ``[BOS, plan tokens, EOS, pad...]``; slot ``i`` is embedded as
        ``weights[i] @ E[options]`` (one-hot weights give the discrete prompt)."""
        table = self.token_embedding.weight  # (V, d)
        n = len(plan) + 2
        if n > self.max_length:
            raise DPODiffError(f"the prompt needs {n} tokens but the text encoder takes {self.max_length}")
        first = self.bos if self.bos is not None else self.pad
        rows, ids = [table[first]], [first]
        for item in plan:
            if isinstance(item, int):
                rows.append(table[item])
                ids.append(item)
            else:
                slot, opts = item
                rows.append(weights[slot].to(table) @ table[opts.to(table.device)])  # (n_opt,) @ (n_opt, d)
                ids.append(self.pad if self.pad != self.eos else 0)  # placeholder, not read as EOS by pooling
        rows += [table[self.eos]] + [table[self.pad]] * (self.max_length - n)
        ids += [self.eos] + [self.pad] * (self.max_length - n)
        embeds = torch.stack(rows)[None]  # (1, L, d)
        with self._replace_embeddings(embeds):
            out = self.text_encoder(input_ids=torch.tensor([ids], device=table.device))
        return out[0] if isinstance(out, tuple) else out.last_hidden_state

    @contextmanager
    def _replace_embeddings(self, embeds: torch.Tensor):
        handle = self.token_embedding.register_forward_hook(lambda mod, inp, out: embeds)
        try:
            yield
        finally:
            handle.remove()

    def initial_latents(self, seed: int) -> torch.Tensor:
        """Starting noise ``(1, C, h, w)`` of ``seed`` (the same on every device)."""
        g = torch.Generator().manual_seed(int(seed))
        x = torch.randn((1, *self.latent_shape), generator=g)
        return (x * self.scheduler.init_noise_sigma).to(self.device)

    def _eps(self, latents: torch.Tensor, t: Any, cond: torch.Tensor, uncond: torch.Tensor) -> torch.Tensor:
        n = len(latents)
        x = self.scheduler.scale_model_input(torch.cat([latents, latents]), t)
        states = torch.cat([uncond.expand(n, -1, -1), cond.expand(n, -1, -1)])
        eps_u, eps_c = self.unet(x, t, encoder_hidden_states=states).sample.chunk(2)
        if torch.is_grad_enabled():
            self.grad_unet_calls += 1
        return eps_u + self.guidance_scale * (eps_c - eps_u)

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        """Images ``(B, C, H, W)`` in [0, 1] from latents (identity decoder without a VAE)."""
        if self.vae is not None:
            latents = self.vae.decode(latents / self.vae.config.scaling_factor).sample
        return (latents / 2 + 0.5).clamp(0, 1)

    def denoise(self, cond: torch.Tensor, uncond: torch.Tensor, seed: int | Sequence[int], *,
                stop: int | None = None, grad_from: int | None = None) -> torch.Tensor:
        """Run the guided sampler from the noise of ``seed``.

        Args:
            cond, uncond: text states of the positive and negative prompt ``(1, L, d)``.
            seed: the noise seed, or several: one batch, one image per seed (the same images as one call each).
            stop: step index at which to stop and return the decoded ``x0_hat`` estimate; None runs every
                step and returns the decoded final sample.
            grad_from: step index from which gradients are tracked (None: none; ``stop``: the shortcut
                gradient, one UNet call with gradients; 0: backprop through every step).

        Returns:
            Images ``(B, C, H, W)`` in [0, 1], B the number of seeds.
        """
        self.scheduler.set_timesteps(self.steps)
        timesteps = self.scheduler.timesteps
        if stop is not None and not 0 <= stop < len(timesteps):
            raise DPODiffError(f"step index {stop} is outside the sampler's {len(timesteps)} steps; "
                               "lower the step schedule or raise steps")
        seeds = [int(x) for x in seed] if isinstance(seed, (list, tuple, range)) else [int(seed)]
        latents = torch.cat([self.initial_latents(s) for s in seeds])
        for i, t in enumerate(timesteps):
            if i == grad_from:
                self.grad_started_at = time.perf_counter()
            with torch.set_grad_enabled(grad_from is not None and i >= grad_from):
                eps = self._eps(latents, t, cond, uncond)
                if i == stop:
                    abar = self.scheduler.alphas_cumprod[int(t)].to(latents)
                    x0 = (latents - (1 - abar).sqrt() * eps) / abar.sqrt()
                    return self.decode(x0)
                latents = self.scheduler.step(eps, t, latents).prev_sample
        with torch.set_grad_enabled(grad_from is not None):
            return self.decode(latents)


class RelaxedPrompt:
    """A search space bound to an adapter: embeds genomes (discrete) and slot weights (relaxed).

    Example:
        >>> rp = RelaxedPrompt(adapter, space)
        >>> cond, uncond = rp.embed(rp.one_hot((0,) * len(space.slots)))
    """

    def __init__(self, adapter: DiffusionAdapter, space: SearchSpace):
        self.adapter, self.space = adapter, space
        self.plans = (adapter.plan(space, 0), adapter.plan(space, 1))

    def one_hot(self, genome: Sequence[int]) -> list[torch.Tensor]:
        """One-hot slot weights of a genome."""
        g = self.space.check(genome)
        return [F.one_hot(torch.tensor(i), n).float() for i, n in zip(g, self.space.sizes)]

    def embed(self, weights: Sequence[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """``(cond, uncond)`` text states for slot weights (positive and negative prompt)."""
        return self.adapter.encode(self.plans[0], weights), self.adapter.encode(self.plans[1], weights)


_SEARCH = ("DPODiff", "Evaluator", "gpo", "epo", "random_search", "relaxed_loss", "step_schedule")
__all__ = ["ClipLoss", "DiffusionAdapter", "DPODiffError", "RelaxedPrompt", "SearchSpace", "SearchSpaceError",
           "gumbel_softmax_weights", "spherical_distance", *_SEARCH]


def __getattr__(name: str) -> Any:
    """The searches live in :mod:`trustlab.prompting.dpo_diff_search` (which imports this module); reach them
    from here too, e.g. ``from trustlab.prompting.dpo_diff import DPODiff``."""
    if name in _SEARCH:
        from trustlab.prompting import dpo_diff_search

        return getattr(dpo_diff_search, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
