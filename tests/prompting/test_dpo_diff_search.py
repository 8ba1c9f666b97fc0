"""DPO-Diff search: EPO / random budgets and caching on a tiny real pipeline; GPO on the trained tiny world."""

from __future__ import annotations

import pytest
import torch
from diffusers import DDIMScheduler

from trustlab.prompting.dpo_diff import DiffusionAdapter, DPODiffError, RelaxedPrompt
from trustlab.prompting.dpo_diff_search import DPODiff, Evaluator, epo, gpo, random_search, relaxed_loss
from trustlab.prompting.dpo_diff_space import SearchSpace
from trustlab.prompting.dpo_diff_tiny import _models, tiny_clip_loss, tiny_world, word_tokenizer

TABLE = {"seven": ["one", "four", "eight", "three", "nine"], "photo": ["image", "picture"], "a": ["the"]}


class CountingLoss:
    """A real tiny CLIP loss that counts the images it scores."""

    def __init__(self, loss, text):
        self.loss, self.text, self.images = loss, text, 0

    def __call__(self, images):
        self.images += len(images)
        return self.loss(images, self.text)


@pytest.fixture(scope="module")
def random_setup():
    from types import SimpleNamespace

    tok = word_tokenizer()
    text_encoder, unet, clip = _models(tok)
    sched = DDIMScheduler(num_train_timesteps=1000, beta_schedule="squaredcos_cap_v2", clip_sample=False)
    adapter = DiffusionAdapter(tokenizer=tok, text_encoder=text_encoder, unet=unet, scheduler=sched, steps=3)
    space = SearchSpace.from_tables("a photo of a seven", TABLE, kind="antonym", tokenizer=tok)
    loss = tiny_clip_loss(SimpleNamespace(clip=clip, tokenizer=tok))
    return RelaxedPrompt(adapter, space), loss


def test_epo_respects_budget_and_never_reevaluates(random_setup):
    rp, loss = random_setup
    assert rp.space.sizes == (2, 3, 2, 6)  # "a", photo, "a", seven
    counting = CountingLoss(loss, loss.text_features(rp.space.user_prompt))
    ev = Evaluator(rp, counting, seeds=(0, 1))
    best, value = epo(ev, budget=25, population=8, keep=4, mutations=4, crossovers=4, seed=3)
    assert len(ev.cache) == 25 and counting.images == 25 * 2  # each genome generated once per seed
    assert value == min(ev.cache.values()) and ev.cache[best] == value
    assert [n for n, _ in ev.trace] == list(range(1, 26))
    assert all(b2 <= b1 for (_, b1), (_, b2) in zip(ev.trace, ev.trace[1:]))
    ev(best)  # a visited genome is read from the cache
    assert counting.images == 50


def test_epo_stops_when_the_space_is_exhausted(random_setup):
    rp, loss = random_setup
    small = SearchSpace.from_tables("a photo of a seven", {"seven": ["one", "four"]}, kind="antonym",
                                    tokenizer=rp.adapter.tokenizer)
    ev = Evaluator(RelaxedPrompt(rp.adapter, small), CountingLoss(loss, loss.text_features("a photo of a seven")),
                   seeds=(0,))
    epo(ev, budget=40, seed=0)
    assert len(ev.cache) == 3
    with pytest.raises(DPODiffError, match="budget"):
        epo(ev, budget=0)


def test_hybrid_initialises_from_alpha(random_setup):
    rp, loss = random_setup
    alphas = [torch.tensor([0.0, 3.0]), torch.tensor([0.0, 0.0, 3.0]), torch.tensor([0.0, 3.0]),
              torch.tensor([0.0, 0.0, 0.0, 3.0, 0.0, 0.0])]
    ev = Evaluator(rp, CountingLoss(loss, loss.text_features(rp.space.user_prompt)), seeds=(0,))
    epo(ev, budget=4, population=4, seed=0, alphas=alphas)
    first = next(iter(ev.cache))
    assert first == (1, 2, 1, 3)  # argmax(alpha)
    peaked = sum(g[3] == 3 for g in ev.cache)
    assert peaked >= 3  # softmax(alpha) puts ~0.8 on option 3 (explore = 0)


def test_random_search_budget(random_setup):
    rp, loss = random_setup
    ev = Evaluator(rp, CountingLoss(loss, loss.text_features(rp.space.user_prompt)), seeds=(0,))
    random_search(ev, budget=7, seed=1)
    assert len(ev.cache) == 7


def test_dpodiff_rejects_bad_arguments(random_setup):
    from trustlab.prompting import dpo_diff

    assert dpo_diff.DPODiff is DPODiff  # the module home re-exports the searches
    rp, loss = random_setup
    with pytest.raises(DPODiffError, match="algo"):
        DPODiff(rp.adapter, loss, rp.space, algo="annealing")
    with pytest.raises(DPODiffError, match="direction"):
        DPODiff(rp.adapter, loss, rp.space, direction="sideways")
    with pytest.raises(DPODiffError, match="seed"):
        DPODiff(rp.adapter, loss, rp.space, seeds=())


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """The trained tiny world (cached; trained smaller into a temporary folder when the cache is empty)."""
    from trustlab.models.embedded import cache_root
    from trustlab.prompting.dpo_diff_tiny import VERSION

    if (cache_root() / VERSION / "done.json").exists():
        return tiny_world()
    return tiny_world(tmp_path_factory.mktemp("tiny"), diffusion_steps=400, clip_steps=150)


@pytest.mark.parametrize("gumbel_seed", [0, 1])
def test_gpo_lowers_the_relaxed_loss_on_the_trained_world(world, gumbel_seed):
    """Attack (maximise the distance) with a synonym-shaped space whose options change the digit: the
    signed relaxed loss under softmax(alpha) must fall clearly. (Enhancing "a photo of a seven" is flat here:
    the tiny generator already draws sevens, so that direction cannot show a drop.)"""
    adapter = DiffusionAdapter(world.pipe, steps=10, guidance_scale=3.0)
    table = {"seven": ["one", "four", "seventh"], "photo": ["image", "picture"]}
    space = SearchSpace.from_tables("a photo of a seven", table, kind="synonym", tokenizer=world.tokenizer,
                                    sentence_encoder=None)
    rp = RelaxedPrompt(adapter, space)
    loss = tiny_clip_loss(world)
    text = loss.text_features(space.user_prompt)
    fn = lambda im: loss(im, text)  # noqa: E731

    def signed(alphas):  # deterministic relaxed loss: softmax weights, fixed seeds and step
        with torch.no_grad():
            return -sum(float(relaxed_loss(rp, [torch.softmax(a, -1) for a in alphas], fn, s, 5)) for s in (0, 1, 2))

    init = [torch.nn.functional.one_hot(torch.tensor(0), n).float() for n in space.sizes]
    alphas, losses = gpo(rp, fn, sign=-1.0, seeds=(0, 1, 2), iters=8, schedule="fixed-5", seed=gumbel_seed)
    assert len(losses) == 8 and all(torch.isfinite(torch.tensor(losses)))
    assert all(0 <= float(a.min()) and float(a.max()) <= 3 for a in alphas)
    assert signed(alphas) < signed(init) - 0.5  # measured: -0.78 -> -2.4 / -4.0 (seeds 0 / 1)


def test_dpodiff_search_end_to_end(world):
    adapter = DiffusionAdapter(world.pipe, steps=6, guidance_scale=3.0)
    space = SearchSpace.from_tables("a photo of a seven", TABLE, kind="antonym", tokenizer=world.tokenizer)
    out = DPODiff(adapter, tiny_clip_loss(world), space, algo="hybrid", seeds=(0,), schedule="step-2-2", iters=3,
                  budget=6).search()
    assert out["evaluations"] == 6 and len(out["gpo_losses"]) == 3
    assert out["loss"] <= out["user_loss"] or tuple(out["genome"]) != (0,) * len(space.slots)
    assert out["prompt"] == "a photo of a seven" and isinstance(out["negative_prompt"], str)
    assert space.prompts(out["genome"]) == (out["prompt"], out["negative_prompt"])


def test_cli_writes_a_run_folder(world, tmp_path):
    import json

    from click.testing import CliRunner

    from trustlab.cli.dpo_diff import dpo_diff

    table = tmp_path / "table.json"
    table.write_text(json.dumps({"seven": ["one", "four"], "bold": ["thin"]}))
    args = ["a bold seven", "--table", str(table), "--steps", "6", "--guidance", "3", "--iters", "2", "--schedule",
            "fixed-2", "--budget", "4", "--noise-seeds", "0", "--out", str(tmp_path / "run")]
    result = CliRunner().invoke(dpo_diff, args)
    assert result.exit_code == 0, result.output
    out = json.loads((tmp_path / "run" / "results.json").read_text())
    assert out["evaluations"] == 4 and out["space"]["options"] == [["", "thin"], ["", "one", "four"]]
    assert (tmp_path / "run" / "report.html").exists()
    bad = CliRunner().invoke(dpo_diff, [*args[:-2], "--noise-seeds", "zero", "--out", str(tmp_path / "bad")])
    assert bad.exit_code != 0 and "integers" in bad.output


def test_trained_world_draws_the_captioned_digit(world):
    """The tiny generator follows its captions and the tiny scorer recognises them (the loss means something)."""
    from trustlab.prompting.dpo_diff_tiny import caption, clip_predict

    adapter = DiffusionAdapter(world.pipe, steps=10, guidance_scale=3.0)
    hits = 0
    with torch.no_grad():
        uncond = adapter.encode([], [])
        for digit in (1, 4, 7):
            ids = world.tokenizer(caption(digit), add_special_tokens=False)["input_ids"]
            cond = adapter.encode([int(i) for i in ids], [])
            images = torch.cat([adapter.denoise(cond, uncond, s) for s in (0, 1)])
            hits += int((clip_predict(world, images) == digit).sum())
    assert hits >= 5  # of 6; measured 6/6 (and 99/100 over all digits at 20 steps)
