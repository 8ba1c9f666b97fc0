"""Memory and time of DPO-Diff's shortcut text gradient vs backpropagation through every sampling step.

Setup: the tiny offline text-to-image world (:mod:`trustlab.prompting.dpo_diff_tiny`: conditional UNet on
8x8 digits, CLIP-style scorer), antonym space of "a photo of a seven", gradient of the spherical CLIP loss of
``x0_hat`` at the last sampler step with respect to the slot logits (softmax weights). For 20 / 50 / 100
DDIM steps: the *shortcut* tracks gradients through one guided UNet call; *full* tracks them through every
step. Gradient memory = bytes of the distinct tensor storages autograd saves for backward (a
deterministic stand-in for peak activation memory on CPU); time = seconds of the gradient-tracking part
(forward with gradients + backward), medians of interleaved repeats; the shortcut's no-gradient sampling
prefix is reported separately. Also: cosine between the two gradients (same loss, same ``x0_hat``) over
10 digit prompts x 2 seeds at 20 steps.
Run: ``OMP_NUM_THREADS=1 python benchmarks/dpo_diff_grad.py`` (writes ``results/benchmarks/dpo_diff_grad.json``).
"""

from __future__ import annotations

import argparse
import statistics
from pathlib import Path

from trustlab.prompting.dpo_diff import DiffusionAdapter, RelaxedPrompt
from trustlab.prompting.dpo_diff_cost import cosine_to_full, gradient_cost, prefix_seconds
from trustlab.prompting.dpo_diff_space import SearchSpace
from trustlab.prompting.dpo_diff_tiny import DIGITS, caption, tiny_clip_loss, tiny_world
from trustlab.report import BenchmarkRecord, machine_info, write_benchmark

TABLE = {"seven": ["one", "four", "eight", "three", "nine"], "photo": ["image", "picture"]}


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, nargs="+", default=[20, 50, 100])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--out", type=Path, default=Path("results/benchmarks/dpo_diff_grad.json"))
    args = ap.parse_args(argv)
    world = tiny_world()
    loss = tiny_clip_loss(world)
    space = SearchSpace.from_tables("a photo of a seven", TABLE, kind="antonym", tokenizer=world.tokenizer)
    text = loss.text_features(space.user_prompt)
    fn = lambda im: loss(im, text)  # noqa: E731
    per_steps = {}
    for steps in args.steps:
        rp = RelaxedPrompt(DiffusionAdapter(world.pipe, steps=steps, guidance_scale=3.0), space)
        runs = {"shortcut": [], "full": []}
        for _ in range(args.repeats):
            for mode in runs:
                runs[mode].append(gradient_cost(rp, fn, 0, steps - 1, full=mode == "full"))
        per_steps[steps] = {mode: {"grad_bytes": r[0][0], "grad_seconds": statistics.median(x[1] for x in r)}
                            for mode, r in runs.items()}
        per_steps[steps]["shortcut"]["prefix_seconds"] = prefix_seconds(rp, 0, steps - 1)
        print(steps, per_steps[steps])
    cosines = []
    rp = RelaxedPrompt(DiffusionAdapter(world.pipe, steps=20, guidance_scale=3.0), space)
    for digit in range(10):
        sp = SearchSpace.from_tables(caption(digit), {DIGITS[digit]: [w for w in DIGITS if w != DIGITS[digit]][:5],
                                                      "photo": ["image", "picture"]},
                                     kind="antonym", tokenizer=world.tokenizer)
        txt = loss.text_features(sp.user_prompt)
        cosines += cosine_to_full(RelaxedPrompt(rp.adapter, sp), lambda im, t=txt: loss(im, t), (0, 1), 15)
    lo, hi = min(args.steps), max(args.steps)
    setup = {"model": "dpo-diff tiny world (UNet2DConditionModel 8x8 digits + CLIPModel scorer)",
             "guidance_scale": 3.0, "repeats": args.repeats, "statistic": "median", "per_steps": per_steps,
             "grad_memory": "bytes of distinct storages saved for backward",
             "shortcut_growth": {"bytes": per_steps[hi]["shortcut"]["grad_bytes"] / per_steps[lo]["shortcut"]["grad_bytes"],
                                 "seconds": per_steps[hi]["shortcut"]["grad_seconds"]
                                 / per_steps[lo]["shortcut"]["grad_seconds"]},
             "full_growth": {"bytes": per_steps[hi]["full"]["grad_bytes"] / per_steps[lo]["full"]["grad_bytes"],
                             "seconds": per_steps[hi]["full"]["grad_seconds"] / per_steps[lo]["full"]["grad_seconds"]},
             "cosine_shortcut_vs_full": {"values": cosines, "mean": statistics.mean(cosines),
                                         "setting": "20 steps, x0_hat at step index 15, 10 digit prompts x 2 seeds"}}
    machine = machine_info()
    mid = 50 if 50 in per_steps else hi
    s, f = per_steps[mid]["shortcut"], per_steps[mid]["full"]
    records = [
        BenchmarkRecord(f"gradient time at {mid} sampler steps (s, tracked part)", s["grad_seconds"],
                        f["grad_seconds"], "backprop through all sampling steps", True, 0.3, machine, setup),
        BenchmarkRecord(f"gradient memory at {mid} sampler steps (bytes saved for backward)", s["grad_bytes"],
                        f["grad_bytes"], "backprop through all sampling steps", True, 0.1, machine, setup),
    ]
    write_benchmark(args.out, records)
    for r in records:
        print(f"{r.measure}: ratio {r.ratio:.4f} (target {r.target}, meets: {r.meets_target})")
    print("cosine(shortcut, full) mean", statistics.mean(cosines))


if __name__ == "__main__":
    main()
