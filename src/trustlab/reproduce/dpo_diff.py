"""DPO-Diff reproduction on the tiny offline text-to-image world (spec section 6).

World: :mod:`trustlab.prompting.dpo_diff_tiny` v2 (a conditional ``UNet2DConditionModel`` on 8x8 digits with
a ``CLIPTextModel`` text encoder, and a ``CLIPModel`` scorer, all trained here on captions with digit surface
forms, style words from pixel statistics and their synonyms), DDIM 15 steps, guidance 3. Loss: spherical
CLIP distance of the image to the user prompt. Independent check: a logistic-regression digit classifier on
pixels (scikit-learn, trained on the digits train split), applied to generated images.

Search arms per prompt, all at the spec's equal budget (32 distinct full generations x 2 noise seeds):
``random_search``, ``gpo`` (GPO with the shortcut gradient, 20 iterations, then sampling from alpha),
``gpo_full`` (the same with backprop through every sampler step before the scheduled one; enhancement
only, to fit the CPU) and ``hybrid`` (GPO then EPO). References: the user prompt and, for attacks, a
random synonym rewrite of every slot.

Claims (pass rules fixed before this run, from the spec; where the spec left a choice it is written here):

* (a) the shortcut gradient's memory (bytes saved for backward) and tracked time (median of 5 timings) stay
  within 1.2x from 20 to 100 sampler steps, while full backprop's memory grows >= 3x (the spec's "roughly
  linearly"). (The median was added after a single-timing run measured 2.45x for 15 vs 36 ms under a load
  of 5 processes on 2 cores; the memory, which is deterministic, was 1.00x in both.)
* (b) mean cosine(shortcut, full-backprop gradient) >= 0.3 over 10 digit prompts x 2 seeds.
* (c, search) on the 12 hardest prompts (highest loss under the plain prompt on selection seeds 100-101,
  from 80 styled prompts such as "a photo of a thin slanted seven"), antonym space (the opposite style's
  words for each style word, the 5 most confusable digit names for the digit: 96 prompts per space, 3x the
  budget): hybrid or GPO-shortcut reaches a lower best search loss than random search (paired bootstrap
  interval over prompts of the better arm minus random search below zero). Not measurable if more than
  half of the spaces hold no more prompts than the budget.
* (c, faithfulness) the hybrid's negative prompt raises faithfulness over the plain user prompt on held-out
  seeds 10-17 (paired interval over prompt x seed above zero). Faithfulness of an image = the digit
  classifier's hit x the share of the prompt's style words the image shows (its ink mass / moment shear on
  the requested side of the digit class's training median). Not measurable when the user prompt's
  faithfulness is already >= 0.95 (no headroom). (Decided after seeing that the v2 generator draws the
  requested digit in 100% of pilot images: digit accuracy alone has no headroom; the style part and this
  rule were fixed before any search ran.)
* (attack) on the 12 easiest prompts, synonym space (template words, style synonyms, digit numeral and
  Roman forms; MiniLM cosine >= 0.9 per substitution): the hybrid attack prompt has a higher held-out loss
  than a random synonym rewrite (interval of the difference over prompt x seed above zero).

Cut to fit the CPU: 12 prompts per direction (the spec: 20), 15 sampler steps (the spec: 20-50), full-backprop
GPO only in enhancement.
Each prompt x direction is one resumable unit (``units.jsonl``).
"""

from __future__ import annotations

import statistics
import time
import zlib
from pathlib import Path
from typing import Any

import numpy as np
import torch

from trustlab.report.io import append_jsonl, read_jsonl, write_json
from trustlab.report.schema import Claim, write_summary

METHOD = "dpo-diff"
HARD_TEMPLATES = ("a photo of a {} {} {}", "the {} {} {}")
EASY_TEMPLATES = ("a photo of a {}", "a picture of the {}", "a drawing of a {}", "a sketch of the {}")
HELD_OUT = tuple(range(10, 18))
SELECTION = (100, 101)
TIMING_REPEATS = 5  # median of 5 gradient timings (a single ~15 ms timing is noise on a shared CPU)
CEILING = 0.95  # faithfulness of the user prompt at or above this leaves no room to improve: not measurable


def _sizes(quick: bool) -> dict[str, Any]:
    if quick:
        return {"prompts": 2, "budget": 4, "iters": 2, "steps": 6, "t": 2, "seeds": (0,), "cos_prompts": 2,
                "cost_steps": (4, 8)}
    return {"prompts": 12, "budget": 32, "iters": 20, "steps": 15, "t": 5, "seeds": (0, 1), "cos_prompts": 10,
            "cost_steps": (20, 100)}


def _synonyms() -> dict[str, list[str]]:
    """The attack table: template nouns, determiners, style synonyms and digit surface forms."""
    from trustlab.prompting.dpo_diff_tiny import DIGITS, NOUNS, NUMERALS, ROMAN, STYLES

    table: dict[str, list[str]] = {"a": ["the"], "the": ["a"]}
    table.update({n: [m for m in NOUNS if m != n] for n in NOUNS})
    for words in STYLES.values():
        table.update({w: [v for v in words if v != w] for w in words})
    table.update({DIGITS[k]: [NUMERALS[k], ROMAN[k]] for k in range(10)})
    return table


def _antonyms(style_words: tuple[str, ...], digit: int, conf: dict[int, list[int]]) -> dict[str, list[str]]:
    """The enhancement table of a styled prompt: opposite-style words and confusable digit names."""
    from trustlab.prompting.dpo_diff_tiny import DIGITS, OPPOSITE, STYLES

    table = {w: list(STYLES[OPPOSITE[w]]) for w in style_words}
    table[DIGITS[digit]] = [DIGITS[j] for j in conf[digit]]
    return table


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


def _style_medians() -> dict[int, tuple[float, float]]:
    """Per digit class, the training images' median ink mass and shear (the style-faithfulness cut points)."""
    from trustlab.attribution.ddpm import load_images
    from trustlab.prompting.dpo_diff_tiny import style_stats

    d = load_images("digits", split="train")
    mass, shear = style_stats(d.x)
    return {k: (float(mass[d.y == k].median()), float(shear[d.y == k].median())) for k in range(10)}


def _faithful(images: torch.Tensor, digit: int, styles: tuple[str, ...], clf: Any,
              medians: dict[int, tuple[float, float]]) -> tuple[list[int], list[float]]:
    """Per image: the classifier's digit hit, and faithfulness = hit x the share of the requested styles the
    image shows (ink mass / shear on the requested side of the class median; 1 when no style is requested)."""
    from trustlab.prompting.dpo_diff_tiny import style_stats

    x = images * 2 - 1
    hits = (clf.predict(x.reshape(len(x), -1).numpy()) == digit).astype(int).tolist()
    mass, shear = style_stats(x)
    m_mass, m_shear = medians[digit]
    side = {"thin": mass < m_mass, "bold": mass > m_mass, "upright": shear < m_shear, "slanted": shear > m_shear}
    share = torch.stack([side[s].float() for s in styles]).mean(0) if styles else torch.ones(len(x))
    return hits, [float(h * v) for h, v in zip(hits, share.tolist(), strict=True)]


def _held_out(rp: Any, genome: tuple[int, ...], loss: Any, clf: Any, digit: int, styles: tuple[str, ...],
              medians: dict[int, tuple[float, float]]) -> dict[str, list[float]]:
    """Loss, classifier hits and faithfulness of ``genome`` on the held-out seeds (one batch)."""
    text = loss.text_features(rp.space.user_prompt)
    with torch.no_grad():
        cond, uncond = rp.embed(rp.one_hot(genome))
        images = rp.adapter.denoise(cond, uncond, HELD_OUT)
        hits, faithful = _faithful(images, digit, styles, clf, medians)
        return {"loss": [round(float(v), 6) for v in loss(images, text)], "hits": hits, "faithful": faithful}


def _unit(world: Any, adapter: Any, loss: Any, judge: tuple[Any, dict], prompt: str, digit: int,
          styles: tuple[str, ...], direction: str, table: dict[str, list[str]], sizes: dict[str, Any],
          seed: int) -> dict[str, Any]:
    from trustlab.prompting.dpo_diff import RelaxedPrompt
    from trustlab.prompting.dpo_diff_search import DPODiff
    from trustlab.prompting.dpo_diff_space import SearchSpace

    kind = "antonym" if direction == "enhance" else "synonym"
    space = SearchSpace.from_tables(prompt, table, kind=kind, tokenizer=world.tokenizer)
    arms = {"user": (0,) * len(space.slots)}
    search, seconds, traces = {}, {}, {}
    plan = [("random_search", "random", "shortcut"), ("gpo", "gpo", "shortcut"), ("hybrid", "hybrid", "shortcut")]
    if direction == "enhance":
        plan.insert(2, ("gpo_full", "gpo", "full"))
    for name, algo, grad in plan:
        t0 = time.perf_counter()
        out = DPODiff(adapter, loss, space, algo=algo, direction=direction, seeds=sizes["seeds"],
                      schedule=f"fixed-{sizes['t']}", iters=sizes["iters"], budget=sizes["budget"], grad_from=grad,
                      seed=seed + (1 if algo == "random" else 0)).search()
        seconds[name] = time.perf_counter() - t0
        arms[name], search[name] = tuple(out["genome"]), out["loss"]
        sign = 1.0 if direction == "enhance" else -1.0  # trace: (evaluations, best signed loss) per evaluation
        traces[name] = [round(b * sign, 5) for n, b in out["trace"] if n <= sizes["budget"]]
        user_search = out["user_loss"]
    if direction == "attack":
        rng = np.random.default_rng([seed, zlib.crc32(prompt.encode())])
        arms["random_rewrite"] = tuple(int(rng.integers(1, n)) for n in space.sizes)  # every slot rewritten
    rp = RelaxedPrompt(adapter, space)
    clf, medians = judge
    held = {k: _held_out(rp, g, loss, clf, digit, styles, medians) for k, g in arms.items()}
    return {"prompt": prompt, "digit": digit, "direction": direction, "space_size": space.size,
            "space": [list(sl.options) for sl in space.slots], "search_loss": search, "user_search_loss": user_search,
            "seconds": seconds, "traces": traces, "prompts": {k: list(space.prompts(g)) for k, g in arms.items()},
            "genomes": {k: list(v) for k, v in arms.items()},
            "styles": list(styles), "held_out_loss": {k: v["loss"] for k, v in held.items()},
            "held_out_hits": {k: v["hits"] for k, v in held.items()},
            "held_out_faithful": {k: v["faithful"] for k, v in held.items()}}


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
            runs = [gradient_cost(rp, lambda im: loss(im, text), 0, steps - 1, full=mode == "full")
                    for _ in range(TIMING_REPEATS)]
            cost[f"{mode}-{steps}"] = {"bytes": runs[0][0], "seconds": statistics.median(r[1] for r in runs),
                                       "all_seconds": [r[1] for r in runs]}
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


def _pools(adapter: Any, loss: Any, sizes: dict[str, Any]) -> dict[str, Any]:
    """The styled (hard) and plain (easy) prompt pools, ranked by the user prompt's loss on the selection seeds.
    Easy prompts whose synonym space is empty (every substitution fails the MiniLM cosine) are not eligible."""
    from trustlab.prompting.dpo_diff_space import SearchSpace, SearchSpaceError
    from trustlab.prompting.dpo_diff_tiny import DIGITS

    def attackable(prompt: str) -> bool:
        try:
            SearchSpace.from_tables(prompt, _synonyms(), kind="synonym", tokenizer=adapter.tokenizer)
        except SearchSpaceError:
            return False
        return True

    hard = [(t.format(s1, s2, DIGITS[d]), d, (s1, s2)) for t in HARD_TEMPLATES for d in range(10)
            for s1 in ("thin", "bold") for s2 in ("slanted", "upright")]
    easy = [(t.format(DIGITS[d]), d, ()) for t in EASY_TEMPLATES for d in range(10)]
    easy = [e for e in easy if attackable(e[0])]
    hard_l = _user_losses(adapter, loss, [p for p, _, _ in hard], SELECTION)
    easy_l = _user_losses(adapter, loss, [p for p, _, _ in easy], SELECTION)
    return {"hard": [hard[i] for i in np.argsort(hard_l)[::-1][: sizes["prompts"]]],
            "easy": [easy[i] for i in np.argsort(easy_l)[: sizes["prompts"]]],
            "selection_losses": {"hard": dict(zip([p for p, _, _ in hard], hard_l, strict=True)),
                                 "easy": dict(zip([p for p, _, _ in easy], easy_l, strict=True))}}


def run(out: Path, *, quick: bool = False, seed: int = 0) -> list[Claim]:
    """Run the reproduction into ``out`` (resumes per prompt x direction); returns the claims."""
    from trustlab.prompting.dpo_diff import DiffusionAdapter
    from trustlab.prompting.dpo_diff_tiny import VERSION, tiny_clip_loss, tiny_world
    from trustlab.report.run import progress

    sizes = _sizes(quick)
    out = Path(out)
    world = tiny_world()
    loss = tiny_clip_loss(world)
    adapter = DiffusionAdapter(world.pipe, steps=sizes["steps"], guidance_scale=3.0)
    clf = _classifier()
    setup = {"model": f"dpo-diff tiny world {VERSION} (UNet2DConditionModel + CLIPTextModel on 8x8 digits, "
             "CLIPModel scorer)", "quick": quick, "seed": seed,
             **{k: list(v) if isinstance(v, tuple) else v for k, v in sizes.items()},
             "held_out_seeds": list(HELD_OUT), "guidance_scale": 3.0}
    pools = _pools(adapter, loss, sizes)
    conf = _confusable(world)
    medians = _style_medians()
    units_path = out / "units.jsonl"
    done = {(r["prompt"], r["direction"]): r for r in read_jsonl(units_path)} if units_path.exists() else {}
    todo = [(p, d, st, "enhance") for p, d, st in pools["hard"]] + [(p, d, st, "attack") for p, d, st in pools["easy"]]
    for p, d, st, direction in progress(todo, "DPO-Diff prompts"):
        if (p, direction) in done:
            continue
        table = _antonyms(st, d, conf) if direction == "enhance" else _synonyms()
        row = _unit(world, adapter, loss, (clf, medians), p, d, st, direction, table, sizes, seed)
        append_jsonl(units_path, row)
        done[(p, direction)] = row
    enh = [done[(p, "enhance")] for p, _, _ in pools["hard"]]
    att = [done[(p, "attack")] for p, _, _ in pools["easy"]]
    claims, cost = _cost_claims(world, loss, sizes, setup)
    claims += _search_claims(enh, att, sizes, setup)
    write_json(out / "details.json", {"enhance": enh, "attack": att, **cost,
                                      "selection_losses": pools["selection_losses"],
                                      "arm_means": _arm_means(enh, att)})
    _plot(enh, att, out)
    write_summary(out, claims)
    return claims


def _arm_means(enh: list[dict], att: list[dict]) -> dict[str, Any]:
    """Per direction and arm: mean best search loss, held-out loss and classifier accuracy, search seconds."""
    res = {}
    for name, rows in (("enhance", enh), ("attack", att)):
        arms = list(rows[0]["held_out_loss"])
        res[name] = {a: {"held_out_loss": float(np.mean([x for r in rows for x in r["held_out_loss"][a]])),
                         "accuracy": float(np.mean([x for r in rows for x in r["held_out_hits"][a]])),
                         "faithfulness": float(np.mean([x for r in rows for x in r["held_out_faithful"][a]])),
                         **({"search_loss": float(np.mean([r["search_loss"][a] for r in rows])),
                             "seconds": float(np.mean([r["seconds"][a] for r in rows]))}
                            if a in rows[0]["search_loss"] else {})} for a in arms}
    return res


def _search_claims(enh: list[dict], att: list[dict], sizes: dict[str, Any], setup: dict[str, Any]) -> list[Claim]:
    from trustlab.report.stats import bootstrap_diff_ci

    budget = sizes["budget"]
    small = sum(r["space_size"] <= budget for r in enh)
    coverage = (f"{small} of {len(enh)} spaces hold no more prompts than the budget ({budget}; sizes "
                f"{min(r['space_size'] for r in enh)}-{max(r['space_size'] for r in enh)})")
    rnd = [r["search_loss"]["random_search"] for r in enh]
    cis = {a: bootstrap_diff_ci([r["search_loss"][a] for r in enh], rnd) for a in ("hybrid", "gpo")}
    best = min(("hybrid", "gpo"), key=lambda a: float(np.mean([r["search_loss"][a] for r in enh])))
    means = {a: float(np.mean([r["search_loss"][a] for r in enh])) for a in ("hybrid", "gpo", "gpo_full")}
    measurable = small <= len(enh) / 2
    ok = measurable and any(ci is not None and ci[1] < 0 for ci in cis.values())
    claims = [Claim(METHOD, "DPO-Diff (hybrid or GPO-shortcut) finds better negative prompts than random search at "
                    "equal budget", "best spherical CLIP loss at equal budget (search seeds)", means[best],
                    float(np.mean(rnd)), "random search", ok, setup, higher_is_better=False, n=len(enh),
                    ci=cis[best], valid_rate=None, measurable=measurable,
                    note=f"better arm {best}; hybrid {means['hybrid']:.4f} (ci {_fmt(cis['hybrid'])}), GPO-shortcut "
                         f"{means['gpo']:.4f} (ci {_fmt(cis['gpo'])}), GPO-full {means['gpo_full']:.4f}; "
                         + coverage)]
    h_f = [h for r in enh for h in r["held_out_faithful"]["hybrid"]]
    u_f = [h for r in enh for h in r["held_out_faithful"]["user"]]
    ci = bootstrap_diff_ci(h_f, u_f)
    headroom = float(np.mean(u_f)) < CEILING
    acc = {k: float(np.mean([h for r in enh for h in r["held_out_hits"][k]])) for k in enh[0]["held_out_hits"]}
    claims.append(Claim(METHOD, "optimised negative prompts raise faithfulness over the plain user prompt",
                        "faithfulness on held-out seeds (digit classifier hit x share of requested styles shown)",
                        float(np.mean(h_f)), float(np.mean(u_f)), "user prompt", bool(headroom and ci and ci[0] > 0),
                        setup, n=len(h_f), ci=ci, valid_rate=None, measurable=headroom,
                        note="digit accuracy " + ", ".join(f"{k} {v:.3f}" for k, v in acc.items())
                             + ("" if headroom else f"; the user prompt is already at the ceiling (>= {CEILING})")))
    a_h = [x for r in att for x in r["held_out_loss"]["hybrid"]]
    a_r = [x for r in att for x in r["held_out_loss"]["random_rewrite"]]
    ci = bootstrap_diff_ci(a_h, a_r)
    acc = {k: float(np.mean([h for r in att for h in r["held_out_hits"][k]])) for k in ("user", "hybrid",
                                                                                        "random_rewrite")}
    small_a = sum(r["space_size"] <= budget for r in att)
    claims.append(Claim(METHOD, "DPO-Diff attack prompts (synonyms, MiniLM cosine >= 0.9) destroy faithfulness "
                        "more than a random synonym rewrite", "spherical CLIP loss on held-out seeds",
                        float(np.mean(a_h)), float(np.mean(a_r)), "random synonym rewrite",
                        bool(ci and ci[0] > 0), setup, n=len(a_h), ci=ci, valid_rate=None,
                        note=f"classifier accuracy user {acc['user']:.2f}, attack {acc['hybrid']:.2f}, random "
                             f"rewrite {acc['random_rewrite']:.2f}; {small_a} of {len(att)} spaces hold no more "
                             f"prompts than the budget"))
    return claims


def _fmt(ci: Any) -> str:
    return "n/a" if ci is None else f"[{ci[0]:+.4f}, {ci[1]:+.4f}]"


def _plot(enh: list[dict], att: list[dict], out: Path) -> None:
    from trustlab.report.run import plt

    pyplot = plt()
    fig, axes = pyplot.subplots(1, 3, figsize=(13, 3.6))
    colors = {"user": "grey", "random_search": "tab:orange", "gpo": "tab:purple", "gpo_full": "tab:pink",
              "hybrid": "tab:blue", "random_rewrite": "tab:green"}
    for ax, rows, title in ((axes[0], enh, "enhancement: held-out loss (lower is better)"),
                            (axes[1], att, "attack: held-out loss (higher)")):
        arms = list(rows[0]["held_out_loss"])
        means = [np.mean([x for r in rows for x in r["held_out_loss"][a]]) for a in arms]
        ax.bar(arms, means, color=[colors[a] for a in arms])
        ax.set_title(title, fontsize=9)
        ax.set_ylabel("spherical CLIP loss")
        ax.tick_params(axis="x", rotation=25, labelsize=8)
    ax = axes[2]
    for arm in ("random_search", "gpo", "gpo_full", "hybrid"):
        curves = [r["traces"][arm] for r in enh if r["traces"].get(arm)]
        n = min(len(c) for c in curves)
        ax.plot(range(1, n + 1), np.mean([c[:n] for c in curves], 0), label=arm, color=colors[arm])
    ax.set_title("enhancement: best loss vs evaluations", fontsize=9)
    ax.set_xlabel("full generations (x2 seeds)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out / "held_out_loss.png", dpi=120)
    pyplot.close(fig)
