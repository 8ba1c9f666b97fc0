"""DPO-Diff core on tiny real diffusers/transformers models: relaxation, shortcut gradient, loss, bad input."""

from __future__ import annotations

import math

import pytest
import torch
from diffusers import DDIMScheduler

from trustlab.errors import CapabilityError
from trustlab.prompting.dpo_diff import (
    DiffusionAdapter,
    DPODiffError,
    RelaxedPrompt,
    gumbel_softmax_weights,
    spherical_distance,
)
from trustlab.prompting.dpo_diff_search import relaxed_loss, step_schedule
from trustlab.prompting.dpo_diff_space import SearchSpace, SearchSpaceError
from trustlab.prompting.dpo_diff_tiny import _models, tiny_clip_loss, word_tokenizer


@pytest.fixture(scope="module")
def parts():
    """Random-weight tiny text encoder, conditional UNet and CLIP scorer (the tiny world's architecture)."""
    tok = word_tokenizer()
    text_encoder, unet, clip = _models(tok)
    return tok, text_encoder, unet, clip


def adapter_of(parts, steps: int = 10) -> DiffusionAdapter:
    tok, text_encoder, unet, _ = parts
    sched = DDIMScheduler(num_train_timesteps=1000, beta_schedule="squaredcos_cap_v2", clip_sample=False)
    return DiffusionAdapter(tokenizer=tok, text_encoder=text_encoder, unet=unet, scheduler=sched, steps=steps,
                            guidance_scale=3.0)


@pytest.fixture(scope="module")
def space(parts):
    return SearchSpace.from_tables("a photo of a seven", {"seven": ["one", "four", "eight"], "photo": ["image"]},
                                   kind="antonym", tokenizer=parts[0])


def test_spherical_distance_values():
    a = torch.tensor([[1.0, 0.0], [1.0, 0.0], [2.0, 0.0]])
    b = torch.tensor([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0]])
    d = spherical_distance(a, b)
    assert torch.allclose(d, torch.tensor([0.0, 2 * (math.pi / 4) ** 2, math.pi ** 2 / 2]), atol=1e-2)


def test_gumbel_weights_are_a_distribution_and_sharpen_at_low_tau():
    g = torch.Generator().manual_seed(0)
    w = gumbel_softmax_weights(torch.tensor([0.0, 1.0, 2.0]), 1.0, g)
    assert torch.isclose(w.sum(), torch.tensor(1.0)) and (w > 0).all()
    sharp = gumbel_softmax_weights(torch.tensor([0.0, 50.0, 0.0]), 0.05, g)
    assert sharp[1] > 1 - 1e-6


def test_relaxation_equals_the_discrete_prompt_at_one_hot(parts, space):
    """One-hot-like alpha at low tau through the hooked embedding path == the tokenized negative prompt
    through the text encoder's ordinary input_ids path."""
    tok, text_encoder, _, _ = parts
    adapter, rp = adapter_of(parts), RelaxedPrompt(adapter_of(parts), space)
    g = torch.Generator().manual_seed(1)
    genome = (1, 2)  # photo -> "image", seven -> "four" as negatives
    weights = [gumbel_softmax_weights(50 * torch.nn.functional.one_hot(torch.tensor(i), n).float(), 0.05, g)
               for i, n in zip(genome, space.sizes)]
    cond, uncond = rp.embed(weights)
    negative = space.prompts(genome)[1]
    assert negative == "image, four"
    ids = tok(["image , four", "a photo of a seven"], padding="max_length", max_length=adapter.max_length,
              return_tensors="pt").input_ids
    with torch.no_grad():
        ref = text_encoder(input_ids=ids).last_hidden_state
    assert torch.allclose(uncond[0], ref[0], atol=1e-5)
    assert torch.allclose(cond[0], ref[1], atol=1e-5)
    mixed, mixed_neg = rp.embed([torch.tensor([0.0, 1.0]), torch.tensor([0.0, 0.5, 0.5, 0.0])])
    assert torch.allclose(mixed, cond)  # the slots sit in the negative prompt only
    assert not torch.allclose(mixed_neg, uncond)


@pytest.mark.parametrize("steps", [8, 32])
def test_shortcut_gradient_is_finite_and_costs_one_unet_call(parts, space, steps):
    adapter = adapter_of(parts, steps=steps)
    rp = RelaxedPrompt(adapter, space)
    loss = tiny_clip_loss_from(parts)
    text = loss.text_features("a photo of a seven")
    alphas = [torch.rand(n, requires_grad=True) for n in space.sizes]
    w = [torch.softmax(a, -1) for a in alphas]
    before = adapter.grad_unet_calls
    value = relaxed_loss(rp, w, lambda im: loss(im, text), seed=0, t=steps // 2)
    value.backward()
    assert adapter.grad_unet_calls - before == 1  # constant in the number of sampler steps
    assert all(torch.isfinite(a.grad).all() and a.grad.abs().sum() > 0 for a in alphas)
    full = relaxed_loss(rp, w, lambda im: loss(im, text), seed=0, t=steps // 2, full=True)
    assert adapter.grad_unet_calls - before == 1 + steps // 2 + 1  # grows with the steps backpropagated
    assert torch.isclose(full, value)  # same forward value; only the graph differs


def tiny_clip_loss_from(parts):
    tok, _, _, clip = parts
    from types import SimpleNamespace

    return tiny_clip_loss(SimpleNamespace(clip=clip, tokenizer=tok))


def test_full_generation_is_deterministic_per_seed(parts, space):
    adapter = adapter_of(parts, steps=4)
    rp = RelaxedPrompt(adapter, space)
    cond, uncond = rp.embed(rp.one_hot((0, 1)))
    with torch.no_grad():
        a, b, c = (adapter.denoise(cond, uncond, s) for s in (0, 0, 1))
    assert a.shape == (1, 1, 8, 8) and torch.equal(a, b) and not torch.equal(a, c)
    assert a.min() >= 0 and a.max() <= 1


def test_step_schedules():
    assert step_schedule("step-15-2", 6) == [15, 15, 16, 16, 17, 17]
    assert step_schedule("fixed-3", 2) == [3, 3]
    r = step_schedule("random-2-4", 50, seed=1)
    assert set(r) <= {2, 3, 4} and len(set(r)) == 3
    with pytest.raises(DPODiffError, match="schedule"):
        step_schedule("linear-1", 3)


def test_bad_input(parts, space):
    tok, text_encoder, unet, _ = parts
    with pytest.raises(CapabilityError, match="unet"):
        DiffusionAdapter(tokenizer=tok, text_encoder=text_encoder, scheduler=DDIMScheduler())
    adapter = adapter_of(parts, steps=4)
    rp = RelaxedPrompt(adapter, space)
    cond, uncond = rp.embed(rp.one_hot((0, 0)))
    with pytest.raises(DPODiffError, match="outside"):
        adapter.denoise(cond, uncond, 0, stop=4)
    long = SearchSpace.from_tables(" ".join(["a photo of a seven"] * 4), {"seven": ["one"]}, tokenizer=tok)
    with pytest.raises(DPODiffError, match="tokens"):
        RelaxedPrompt(adapter, long).embed(RelaxedPrompt(adapter, long).one_hot((0,) * len(long.slots)))
    unfiltered = SearchSpace.from_tables("a photo of a seven", {"seven": ["sneaker"]})
    with pytest.raises(SearchSpaceError, match="single-token"):
        RelaxedPrompt(adapter, unfiltered)


def test_gradient_memory_is_constant_for_the_shortcut_only(parts, space):
    from trustlab.prompting.dpo_diff_cost import gradient_cost

    loss = tiny_clip_loss_from(parts)
    text = loss.text_features("a photo of a seven")
    cost = {}
    for steps in (4, 16):
        rp = RelaxedPrompt(adapter_of(parts, steps=steps), space)
        for full in (False, True):
            cost[steps, full] = gradient_cost(rp, lambda im: loss(im, text), 0, steps - 1, full=full)
    assert cost[4, False][0] == cost[16, False][0]  # bytes saved for backward: the same at 4x the steps
    assert cost[16, True][0] > 3 * cost[4, True][0] > 3 * cost[4, False][0]
    assert torch.isfinite(cost[16, False][2]).all() and cost[16, False][1] > 0


def test_tiny_world_captions_use_known_words_and_styles_split_every_class():
    """v2 captions: every word is in the tokenizer's vocabulary (no <unk>), each class has thin and bold, slanted
    and upright images in the stated shares, and a caption names only styles its image has."""
    import numpy as np

    from trustlab.attribution.ddpm import load_images
    from trustlab.prompting.dpo_diff_tiny import STYLE_SHARE, STYLES, random_caption, style_of

    tok = word_tokenizer()
    d = load_images("digits")
    styles = style_of(d.x, d.y)
    for k in range(10):
        ks = [styles[i] for i in (d.y == k).nonzero().flatten().tolist()]
        for word in STYLES:
            share = sum(word in s for s in ks) / len(ks)
            assert abs(share - STYLE_SHARE) < 0.05, (k, word, share)
        assert not any({"thin", "bold"} <= set(s) or {"slanted", "upright"} <= set(s) for s in ks)
    rng = np.random.default_rng(0)
    synonym_of = {w: key for key, words in STYLES.items() for w in words}
    for i in range(0, len(d.y), 7):
        text = random_caption(int(d.y[i]), styles[i], rng)
        ids = tok(text, add_special_tokens=False)["input_ids"]
        assert tok.unk_token_id not in ids and len(ids) + 2 <= tok.model_max_length
        assert {synonym_of[w] for w in text.split() if w in synonym_of} <= set(styles[i])
