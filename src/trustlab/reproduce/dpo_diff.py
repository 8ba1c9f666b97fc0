"""DPO-Diff reproduction on the tiny offline text-to-image world (spec section 6).

World: :mod:`trustlab.prompting.dpo_diff_tiny` (a conditional ``UNet2DConditionModel`` on 8x8 digits with a
``CLIPTextModel`` text encoder, and a ``CLIPModel`` scorer, all trained here), DDIM 15 steps, guidance 3.
Loss: spherical CLIP distance of the image to the user prompt. Independent check: a logistic-regression
digit classifier on pixels (scikit-learn, trained on the digits train split), applied to generated images.

Claims (pass rules fixed before the run, from the spec; where the spec left a choice it is written here):

* (a) the shortcut gradient's memory (bytes saved for backward) and tracked time stay within 1.2x from
  20 to 100 sampler steps, while full backprop's memory grows >= 3x (the spec's "roughly linearly").
* (b) mean cosine(shortcut, full-backprop gradient) >= 0.3 over 10 digit prompts x 2 seeds.
* (c, enhancement) on the 20 hardest prompts (highest loss under the plain prompt on selection seeds
  100-101, from a pool of styled templates the generator never saw), antonym space (confusable digit words
  and opposite style words as a negative prompt): hybrid DPO-Diff reaches a lower best loss than random
  search at the same budget (16 distinct prompts x 2 seeds; paired interval over prompts below zero), and
  its prompt raises the classifier's accuracy over the plain user prompt on held-out seeds 10-13 (paired
  interval over prompt x seed above zero).
* (attack) on the 20 easiest prompts, synonym space (MiniLM cosine >= 0.9): the hybrid attack prompt has a
  higher held-out loss than a random synonym rewrite (interval of the difference above zero).

The spec's budget (32 x 2 seeds), 50 sampler steps and GPO's 20 iterations are cut to 16, 15 and 8 to fit
the CPU. Each prompt x direction is one resumable unit (``units.jsonl``).
"""

from __future__ import annotations

import statistics
import zlib
from pathlib import Path
from typing import Any

import numpy as np
import torch

from trustlab.report.io import append_jsonl, read_jsonl, write_json
from trustlab.report.schema import Claim, write_summary

METHOD = "dpo-diff"
TEMPLATES_HARD = ("a bold {}", "a thin {}", "the {}", "a small blurry {}", "a dark handwritten {}",
                  "a picture of the big {}", "{}")
TEMPLATES_EASY = ("a photo of a {}", "a picture of a {}", "a photo of the {}")
STYLE_ANTONYMS = {"bold": ["thin", "light"], "thin": ["bold", "big"], "small": ["big"], "big": ["small", "thin"],
                  "dark": ["light"], "blurry": ["sharp"], "handwritten": ["written"]}
SYNONYMS = {"a": ["the"], "the": ["a"], "photo": ["picture", "image"], "picture": ["photo", "image"],
            "image": ["photo", "picture"], "seven": ["seventh"], "eight": ["eighth"]}
HELD_OUT = (10, 11, 12, 13)


def _sizes(quick: bool) -> dict[str, Any]:
    if quick:
        return {"prompts": 2, "budget": 4, "iters": 2, "steps": 6, "t": 2, "seeds": (0,), "cos_prompts": 2,
                "cost_steps": (4, 8)}
    return {"prompts": 20, "budget": 16, "iters": 8, "steps": 15, "t": 5, "seeds": (0, 1), "cos_prompts": 10,
            "cost_steps": (20, 100)}


def _classifier() -> Any:
    from sklearn.linear_model import LogisticRegression

    from trustlab.attribution.ddpm import load_images

    tr = load_images("digits", split="train")
    return LogisticRegression(max_iter=2000).fit(tr.x.reshape(len(tr.x), -1).numpy(), tr.y.numpy())


def _confusable(world: Any) -> dict[int, list[int]]:
    """The 5 digits whose mean training image is nearest to each digit's (confusable digit words)."""
    from trustlab.attribution.ddpm import load_images

    d = load_images("digits", split="train")
    means = torch.stack([d.x[d.y == k].mean(0).flatten() for k in range(10)])
    dist = torch.cdist(means, means)
    return {k: [int(j) for j in dist[k].argsort()[1:6]] for k in range(10)}


def _user_losses(adapter: Any, loss: Any, prompts: list[str], seeds: tuple[int, ...]) -> list[float]:
    out = []
    with torch.no_grad():
        uncond = adapter.encode([], [])
        for p in prompts:
            ids = adapter.tokenizer(p, add_special_tokens=False)["input_ids"]
            cond = adapter.encode([int(i) for i in ids], [])
            text = loss.text_features(p)
            out.append(float(np.mean([float(loss(adapter.denoise(cond, uncond, s), text)[0]) for s in seeds])))
    return out


def _held_out(rp: Any, genome: tuple[int, ...], loss: Any, clf: Any, digit: int) -> tuple[list[float], list[int]]:
    """Loss and classifier correctness of ``genome`` on the held-out seeds."""
    text = loss.text_features(rp.space.user_prompt)
    losses, hits = [], []
    with torch.no_grad():
        cond, uncond = rp.embed(rp.one_hot(genome))
        for s in HELD_OUT:
            img = rp.adapter.denoise(cond, uncond, s)
            losses.append(float(loss(img, text)[0]))
            hits.append(int(clf.predict((img * 2 - 1).reshape(1, -1).numpy())[0] == digit))
    return losses, hits


def _unit(world: Any, adapter: Any, loss: Any, clf: Any, prompt: str, digit: int, direction: str,
          table: dict[str, list[str]], sizes: dict[str, Any], seed: int) -> dict[str, Any]:
    from trustlab.prompting.dpo_diff import RelaxedPrompt
    from trustlab.prompting.dpo_diff_search import DPODiff, Evaluator, random_search
    from trustlab.prompting.dpo_diff_space import SearchSpace

    kind = "antonym" if direction == "enhance" else "synonym"
    space = SearchSpace.from_tables(prompt, table, kind=kind, tokenizer=world.tokenizer)
    hybrid = DPODiff(adapter, loss, space, algo="hybrid", direction=direction, seeds=sizes["seeds"],
                     schedule=f"fixed-{sizes['t']}", iters=sizes["iters"], budget=sizes["budget"], seed=seed).search()
    rp = RelaxedPrompt(adapter, space)
    text = loss.text_features(prompt)
    sign = 1.0 if direction == "enhance" else -1.0
    ev = Evaluator(rp, lambda im: loss(im, text), sign, sizes["seeds"])
    rand_best, rand_signed = random_search(ev, budget=sizes["budget"], seed=seed + 1)
    rng = np.random.default_rng([seed, zlib.crc32(prompt.encode())])
    rewrite = tuple(int(rng.integers(1, n)) for n in space.sizes)  # every slot rewritten (random synonym)
    arms = {"user": (0,) * len(space.slots), "hybrid": tuple(hybrid["genome"]), "random_search": rand_best,
            "random_rewrite": rewrite}
    held = {k: _held_out(rp, g, loss, clf, digit) for k, g in arms.items()}
    return {"prompt": prompt, "digit": digit, "direction": direction, "space_size": space.size,
            "hybrid_search_loss": hybrid["loss"], "random_search_loss": rand_signed * sign,
            "user_search_loss": hybrid["user_loss"], "hybrid_prompt": hybrid["prompt"],
            "hybrid_negative": hybrid["negative_prompt"], "genomes": {k: list(v) for k, v in arms.items()},
            "held_out_loss": {k: v[0] for k, v in held.items()}, "held_out_hits": {k: v[1] for k, v in held.items()}}


def _cost_claims(world: Any, loss: Any, sizes: dict[str, Any], setup: dict[str, Any]) -> tuple[list[Claim], dict]:
    from trustlab.prompting.dpo_diff import DiffusionAdapter, RelaxedPrompt
    from trustlab.prompting.dpo_diff_cost import cosine_to_full, gradient_cost
    from trustlab.prompting.dpo_diff_space import SearchSpace
    from trustlab.prompting.dpo_diff_tiny import DIGITS, caption
    from trustlab.report.stats import bootstrap_diff_ci

    space = SearchSpace.from_tables(caption(7), {"seven": ["one", "four"], "photo": ["image"]}, tokenizer=world.tokenizer)
    text = loss.text_features(space.user_prompt)
    cost = {}
    for steps in sizes["cost_steps"]:
        rp = RelaxedPrompt(DiffusionAdapter(world.pipe, steps=steps, guidance_scale=3.0), space)
        for mode in ("shortcut", "full"):
            b, sec, _ = gradient_cost(rp, lambda im: loss(im, text), 0, steps - 1, full=mode == "full")
            cost[f"{mode}-{steps}"] = {"bytes": b, "seconds": sec}
    lo, hi = sizes["cost_steps"]
    growth = {m: {k: cost[f"{m}-{hi}"][k] / cost[f"{m}-{lo}"][k] for k in ("bytes", "seconds")}
              for m in ("shortcut", "full")}
    ok_a = growth["shortcut"]["bytes"] <= 1.2 and growth["shortcut"]["seconds"] <= 1.2 and growth["full"]["bytes"] >= 3
    claim_a = Claim(METHOD, "the shortcut text gradient has constant memory and time in the number of sampler steps",
                    f"growth of gradient memory {lo}->{hi} steps (x)", growth["shortcut"]["bytes"],
                    growth["full"]["bytes"], "backprop through all steps", ok_a, setup, higher_is_better=False,
                    note=f"time growth shortcut {growth['shortcut']['seconds']:.2f}x vs full "
                         f"{growth['full']['seconds']:.2f}x (tracked part; the no-grad prefix is excluded)",
                    n=1, ci=None, valid_rate=None)
    rp = RelaxedPrompt(DiffusionAdapter(world.pipe, steps=20, guidance_scale=3.0), space)
    cos = []
    for d in range(sizes["cos_prompts"]):
        sp = SearchSpace.from_tables(caption(d), {DIGITS[d]: [w for w in DIGITS if w != DIGITS[d]][:5]},
                                     tokenizer=world.tokenizer)
        txt = loss.text_features(caption(d))
        cos += cosine_to_full(RelaxedPrompt(rp.adapter, sp), lambda im, t=txt: loss(im, t), (0, 1), 15)
    mean = statistics.mean(cos)
    claim_b = Claim(METHOD, "the shortcut gradient points like the full-backprop gradient (cosine >= 0.3)",
                    "mean cosine(shortcut, full) w.r.t. slot logits", mean, 0.3, "pass threshold 0.3", mean >= 0.3,
                    setup, n=len(cos), ci=bootstrap_diff_ci(cos, [0.3] * len(cos)), valid_rate=None)
    return [claim_a, claim_b], {"cost": cost, "growth": growth, "cosines": cos}


def run(out: Path, *, quick: bool = False, seed: int = 0) -> list[Claim]:
    """Run the reproduction into ``out`` (resumes per prompt x direction); returns the claims."""
    from trustlab.prompting.dpo_diff import DiffusionAdapter
    from trustlab.prompting.dpo_diff_tiny import DIGITS, tiny_clip_loss, tiny_world
    from trustlab.report.run import progress
    from trustlab.report.stats import bootstrap_diff_ci

    sizes = _sizes(quick)
    out = Path(out)
    world = tiny_world()
    loss = tiny_clip_loss(world)
    adapter = DiffusionAdapter(world.pipe, steps=sizes["steps"], guidance_scale=3.0)
    clf = _classifier()
    setup = {"model": "dpo-diff tiny world (UNet2DConditionModel + CLIPTextModel on 8x8 digits, CLIPModel scorer)",
             "quick": quick, "seed": seed, **{k: list(v) if isinstance(v, tuple) else v for k, v in sizes.items()},
             "held_out_seeds": list(HELD_OUT), "guidance_scale": 3.0, "algo": "hybrid"}
    pool_hard = [(t.format(DIGITS[d]), d) for t in TEMPLATES_HARD for d in range(10)]
    pool_easy = [(t.format(DIGITS[d]), d) for t in TEMPLATES_EASY for d in range(10)]
    sel = (100, 101)
    hard_l = _user_losses(adapter, loss, [p for p, _ in pool_hard], sel)
    easy_l = _user_losses(adapter, loss, [p for p, _ in pool_easy], sel)
    hard = [pool_hard[i] for i in np.argsort(hard_l)[::-1][: sizes["prompts"]]]
    easy = [pool_easy[i] for i in np.argsort(easy_l)[: sizes["prompts"]]]
    conf = _confusable(world)
    units_path = out / "units.jsonl"
    done = {(r["prompt"], r["direction"]): r for r in read_jsonl(units_path)} if units_path.exists() else {}
    todo = [(p, d, "enhance") for p, d in hard] + [(p, d, "attack") for p, d in easy]
    for p, d, direction in progress(todo, "DPO-Diff prompts"):
        if (p, direction) in done:
            continue
        if direction == "enhance":
            table = {DIGITS[d]: [DIGITS[j] for j in conf[d]], **STYLE_ANTONYMS}
        else:
            table = SYNONYMS
        row = _unit(world, adapter, loss, clf, p, d, direction, table, sizes, seed)
        append_jsonl(units_path, row)
        done[(p, direction)] = row
    enh = [done[(p, "enhance")] for p, _ in hard]
    att = [done[(p, "attack")] for p, _ in easy]
    claims, cost = _cost_claims(world, loss, sizes, setup)

    def coverage(rows: list[dict]) -> str:
        small = sum(r["space_size"] <= sizes["budget"] for r in rows)
        return (f"{small} of {len(rows)} spaces hold no more prompts than the budget ({sizes['budget']}; sizes "
                f"{min(r['space_size'] for r in rows)}-{max(r['space_size'] for r in rows)}), where every search "
                "sees the whole space")

    def held(rows: list[dict], arm: str) -> float:
        return float(np.mean([x for r in rows for x in r["held_out_loss"][arm]]))

    hyb, rnd = [r["hybrid_search_loss"] for r in enh], [r["random_search_loss"] for r in enh]
    ci = bootstrap_diff_ci(hyb, rnd)
    claims.append(Claim(METHOD, "DPO-Diff (hybrid) finds better negative prompts than random search at equal budget",
                        "best spherical CLIP loss at equal budget (search seeds)", float(np.mean(hyb)),
                        float(np.mean(rnd)), "random search", bool(ci and ci[1] < 0), setup,
                        higher_is_better=False, n=len(enh), ci=ci, valid_rate=None, note=coverage(enh) + "; "
                        f"held-out loss user {held(enh, 'user'):.3f}, hybrid {held(enh, 'hybrid'):.3f}"))
    h_hits = [h for r in enh for h in r["held_out_hits"]["hybrid"]]
    u_hits = [h for r in enh for h in r["held_out_hits"]["user"]]
    ci = bootstrap_diff_ci(h_hits, u_hits)
    claims.append(Claim(METHOD, "optimised negative prompts raise faithfulness over the plain user prompt",
                        "digit-classifier accuracy on generated images (held-out seeds)", float(np.mean(h_hits)),
                        float(np.mean(u_hits)), "user prompt", bool(ci and ci[0] > 0), setup, n=len(h_hits), ci=ci,
                        valid_rate=None, note="the hard prompts use style words the tiny generator never saw in "
                        "training; it draws the wrong digit for them whatever the negative prompt"))
    a_h = [x for r in att for x in r["held_out_loss"]["hybrid"]]
    a_r = [x for r in att for x in r["held_out_loss"]["random_rewrite"]]
    ci = bootstrap_diff_ci(a_h, a_r)
    a_acc = {k: float(np.mean([h for r in att for h in r["held_out_hits"][k]])) for k in ("user", "hybrid",
                                                                                          "random_rewrite")}
    claims.append(Claim(METHOD, "DPO-Diff attack prompts (synonyms, MiniLM cosine >= 0.9) destroy faithfulness "
                        "more than a random synonym rewrite", "spherical CLIP loss on held-out seeds",
                        float(np.mean(a_h)), float(np.mean(a_r)), "random synonym rewrite",
                        bool(ci and ci[0] > 0), setup, n=len(a_h), ci=ci, valid_rate=None,
                        note=f"classifier accuracy user {a_acc['user']:.2f}, attack {a_acc['hybrid']:.2f}, "
                             f"random rewrite {a_acc['random_rewrite']:.2f}; held-out loss user "
                             f"{held(att, 'user'):.3f}; " + coverage(att)))
    write_json(out / "details.json", {"enhance": enh, "attack": att, **cost, "attack_accuracy": a_acc,
                                      "selection_losses": {"hard": hard_l, "easy": easy_l}})
    _plot(enh, att, out)
    write_summary(out, claims)
    return claims


def _plot(enh: list[dict], att: list[dict], out: Path) -> None:
    from trustlab.report.run import plt

    pyplot = plt()
    fig, axes = pyplot.subplots(1, 2, figsize=(9, 3.5))
    for ax, rows, title in ((axes[0], enh, "enhancement (lower is better)"), (axes[1], att, "attack (higher)")):
        arms = ["user", "hybrid", "random_search", "random_rewrite"]
        means = [np.mean([x for r in rows for x in r["held_out_loss"][a]]) for a in arms]
        ax.bar(arms, means, color=["grey", "tab:blue", "tab:orange", "tab:green"])
        ax.set_title(title)
        ax.set_ylabel("held-out spherical CLIP loss")
        ax.tick_params(axis="x", rotation=20)
    fig.tight_layout()
    fig.savefig(out / "held_out_loss.png", dpi=120)
    pyplot.close(fig)
