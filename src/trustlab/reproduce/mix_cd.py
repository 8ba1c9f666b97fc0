"""mix-cd reproduction: which old samples to rehearse while fine-tuning, at an equal rehearsal budget.

Two parts, both in ``results/mix-cd/``:

* **Language model** (the issue's setting): a small Llama pretrained from scratch on the Python
  documentation (:mod:`trustlab.train.pretrain`, random schedule, 400 steps) is fully fine-tuned on a task it
  never saw, 2-3 digit addition (``"a+b="`` -> ``"c"``), for 150 steps of 32 new examples plus ``r = 8``
  rehearsed prose blocks. Arms: ``none``, ``random`` (uniform over the prose pool), ``mixcd`` (10 quantile
  bins of the pretrained model's loss; a rehearsed block counts as damaged when its loss in the training
  forward pass exceeds its original loss by more than ``delta = 0.1`` nats, :func:`trustlab.data.loss_rule`).
  Forgetting = held-out prose loss after fine-tuning minus before (per block, 200 blocks from documents
  never trained on); gain = exact match on 300 held-out sums (teacher-forced argmax over the answer tokens,
  the same as greedy decoding of the answer). 3 seeds (fine-tuning order and rehearsal draws).
  Pass rule, fixed before the run: mix-cd forgets less than random mixing (the paired interval of the
  difference over seeds x held-out blocks lies below zero) and is not worse on the new task: the interval
  of the answer-loss difference reaches zero or below (a model this small rarely gets whole sums right, so
  exact match, also reported, cannot carry the spec's "within 0.5 points").
* **Vision** (the spec's section 6): :mod:`trustlab.reproduce.mix_cd_vision`, an MLP on upright ->
  rotated images, with an oracle that checks the estimator.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from trustlab.report.io import read_json, write_json
from trustlab.report.schema import Claim, write_summary

POLICIES = ("none", "random", "mixcd")
DELTA = 0.1  # nats: a rehearsed block whose loss rose by more is damaged (the sampler's rule and the measure)


def _sizes(quick: bool) -> dict[str, Any]:
    if quick:
        return {"pool": 200, "val": 32, "pretrain_steps": 40, "new_train": 200, "new_test": 40, "steps": 12,
                "batch_size": 16, "rehearsal": 4, "seeds": (0,), "lr": 1e-3}
    return {"pool": 3000, "val": 200, "pretrain_steps": 400, "new_train": 2000, "new_test": 300, "steps": 150,
            "batch_size": 32, "rehearsal": 8, "seeds": (0, 1, 2), "lr": 1e-3}


def _encode_examples(tokenizer: Any, vocab: Any, examples: list[dict[str, str]]) -> list[dict[str, list[int]]]:
    out = []
    for ex in examples:
        p = tokenizer(ex["prompt"], add_special_tokens=False)["input_ids"]
        r = tokenizer(ex["response"], add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
        ids = vocab.encode(torch.tensor(p + r)).tolist()
        out.append({"input_ids": ids, "labels": [-100] * len(p) + ids[len(p):]})
    return out


@torch.no_grad()
def answer_scores(model: Any, items: list[dict[str, list[int]]]) -> tuple[np.ndarray, np.ndarray]:
    """Per item: exact match (1/0: every answer token is the argmax given the gold prefix, which is what
    greedy decoding of the answer gives) and the mean answer-token loss."""
    model.eval()
    hits, losses = [], []
    for it in items:
        ids = torch.tensor([it["input_ids"]])
        logits = model(input_ids=ids).logits[0, :-1].float()
        lab = torch.tensor(it["labels"][1:])
        mask = lab != -100
        hits.append(float(bool((logits.argmax(-1)[mask] == lab[mask]).all())))
        losses.append(float(torch.nn.functional.cross_entropy(logits[mask], lab[mask])))
    return np.array(hits), np.array(losses)


def _base_model(out: Path, sizes: dict[str, Any]) -> dict[str, Any]:
    """Pretrain the prose model once (resumable); returns its pieces."""
    from trustlab.data import LFRSampler, fingerprint
    from trustlab.data.corpus import blocks_from_ids, english_documents, split_documents
    from trustlab.data.lfr import RANDOM_SCHEDULE
    from trustlab.train.pretrain import (
        PretrainConfig,
        Vocab,
        pretrain,
        save_model,
        smollm2_tokenizer,
        tiny_llama,
        tokenize_documents,
    )

    tokenizer = smollm2_tokenizer()
    docs, info = english_documents("auto")
    tr_docs, va_docs = split_documents(docs, 0.1, seed=0)
    g = torch.Generator().manual_seed(0)
    tr = blocks_from_ids(tokenize_documents(tokenizer, tr_docs), 64)
    va = blocks_from_ids(tokenize_documents(tokenizer, va_docs), 64)
    pool = tr[torch.randperm(len(tr), generator=g)[: sizes["pool"]]]
    val = va[torch.randperm(len(va), generator=g)[: sizes["val"]]]
    from trustlab.data.corpus import arithmetic_examples

    new_train = arithmetic_examples(sizes["new_train"], seed=0)
    new_test = arithmetic_examples(sizes["new_test"], seed=1)
    digits = torch.tensor(tokenizer("".join(f"{e['prompt']}{e['response']}" for e in new_train),
                                    add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id])
    vocab = Vocab.from_blocks([pool, val, digits.reshape(1, -1)])
    cfg = PretrainConfig(steps=sizes["pretrain_steps"], batch_size=32, eval_every=50, seed=0)
    folder = out / "base"
    if not (folder / "model" / "config.json").exists():
        model = tiny_llama(len(vocab), cfg)
        sampler = LFRSampler(len(pool), cfg.steps, cfg.batch_size, RANDOM_SCHEDULE, seed=0,
                             fingerprint=fingerprint(pool))
        pretrain(model, vocab.encode(pool), {"prose": vocab.encode(val)}, sampler, cfg, folder, resume=True,
                 progress=False)
        save_model(model, vocab, cfg, folder / "model")
    return {"tokenizer": tokenizer, "vocab": vocab, "pool": vocab.encode(pool), "val": vocab.encode(val),
            "new_train": _encode_examples(tokenizer, vocab, new_train),
            "new_test": _encode_examples(tokenizer, vocab, new_test), "folder": folder / "model", "corpus": info}


def _finetune_unit(base: dict[str, Any], policy: str, seed: int, sizes: dict[str, Any], prior_loss: torch.Tensor,
                   val_before: torch.Tensor, folder: Path) -> dict[str, Any]:
    import transformers

    from trustlab.data import MixCD, fingerprint
    from trustlab.train import SFTConfig, lora_finetune
    from trustlab.train.pretrain import block_losses

    done = folder / "unit.json"
    if done.exists():
        return read_json(done)
    model = transformers.LlamaForCausalLM.from_pretrained(str(base["folder"]))
    old = [{"input_ids": b.tolist(), "labels": b.tolist()} for b in base["pool"]]
    r = sizes["rehearsal"]
    sampler = MixCD(len(base["new_train"]), prior_loss.numpy(), sizes["steps"], sizes["batch_size"],
                    r if policy != "none" else 0, policy, delta=DELTA, seed=seed,
                    fingerprint=fingerprint([*(x["input_ids"] for x in base["new_train"]), *base["pool"]]))
    cfg = SFTConfig(optimizer="adamw", full=True, lr=sizes["lr"], steps=sizes["steps"],
                    batch_size=sizes["batch_size"] + sampler.rehearsal, max_length=64, seed=seed,
                    logging_steps=10, max_grad_norm=1.0)
    model, log = lora_finetune(model, None, base["new_train"], cfg, sampler=sampler, extra_examples=old)
    log.raise_if_diverged()
    val_after = block_losses(model, base["val"])
    pool_after = block_losses(model, base["pool"])
    em, answer_loss = answer_scores(model, base["new_test"])
    est = sampler.estimator
    damaged = (pool_after > prior_loss + DELTA).numpy()
    bins = est.bins if est is not None else None
    row = {"policy": policy, "seed": seed, "forgetting": (val_after - val_before).tolist(), "exact_match": em.tolist(),
           "answer_loss": answer_loss.tolist(),
           "pool_damaged_share": float(damaged.mean()), "rehearsed_samples": int(sampler.rehearsed.sum()),
           "distinct_rehearsed": int((sampler.rehearsed > 0).sum()), "loss_log": list(log),
           "alphas": est.alphas.tolist() if est is not None else None,
           "bin_counts": est.counts.tolist() if est is not None else None,
           "true_bin_damage": ([float(damaged[bins == k].mean()) for k in range(est.n_bins)]
                               if est is not None else None)}
    write_json(done, row)
    return row


def run_lm(out: Path, *, quick: bool = False) -> tuple[list[Claim], dict[str, Any]]:
    from trustlab.report.run import progress
    from trustlab.report.stats import bootstrap_diff_ci
    from trustlab.train.pretrain import block_losses

    sizes = _sizes(quick)
    base = _base_model(out, sizes)
    import transformers

    model0 = transformers.LlamaForCausalLM.from_pretrained(str(base["folder"]))
    prior_loss = block_losses(model0, base["pool"])
    val_before = block_losses(model0, base["val"])
    em0, al0 = answer_scores(model0, base["new_test"])
    em_before, answer_before = float(em0.mean()), float(al0.mean())
    units = [(p, s) for s in sizes["seeds"] for p in POLICIES]
    rows = {(p, s): _finetune_unit(base, p, s, sizes, prior_loss, val_before, out / "runs" / f"{p}-seed{s}")
            for p, s in progress(units, "mix-cd LM arms x seeds")}

    def pooled(policy: str, key: str) -> np.ndarray:
        return np.concatenate([np.asarray(rows[(policy, s)][key]) for s in sizes["seeds"]])

    f_mix, f_rand, f_none = pooled("mixcd", "forgetting"), pooled("random", "forgetting"), pooled("none", "forgetting")
    em_mix, em_rand = pooled("mixcd", "exact_match"), pooled("random", "exact_match")
    al_mix, al_rand = pooled("mixcd", "answer_loss"), pooled("random", "answer_loss")
    ci_f = bootstrap_diff_ci(f_mix, f_rand, seed=0)
    ci_em = bootstrap_diff_ci(em_mix, em_rand, seed=0)
    ci_al = bootstrap_diff_ci(al_mix, al_rand, seed=0)
    new_ok = ci_al is not None and ci_al[0] <= 0  # not worse on the new task
    reproduced = ci_f is not None and ci_f[1] < 0 and new_ok
    measurable = float(f_none.mean()) > 0 and ci_f is not None
    setup = {"model": "Llama 2x128 pretrained from scratch on the Python docs (SmolLM2 tokenizer, compact vocabulary "
                      f"of {len(base['vocab'])} ids)", "quick": quick, "data": base["corpus"]["source"],
             "new_task": "2-3 digit addition, full fine-tuning (AdamW)", **{k: v for k, v in sizes.items()
                                                                          if k != "seeds"},
             "seeds": list(sizes["seeds"]), "delta": DELTA, "n_bins": 10, "epsilon": 0.1, "gamma": 0.1}
    summary = {
        p: {"forgetting": float(pooled(p, "forgetting").mean()), "exact_match": float(pooled(p, "exact_match").mean()),
            "answer_loss": float(pooled(p, "answer_loss").mean()),
            "pool_damaged_share": float(np.mean([rows[(p, s)]["pool_damaged_share"] for s in sizes["seeds"]]))}
        for p in POLICIES}
    claim = Claim("mix-cd", "Rehearsing the estimated collateral-damage samples forgets less than random rehearsal "
                  "at the same budget, at no cost on the new task", "held-out old-data loss increase (nats/token)",
                  float(f_mix.mean()), float(f_rand.mean()), "random rehearsal (same budget)", reproduced, setup,
                  higher_is_better=False, n=len(f_mix), ci=ci_f, valid_rate=None, measurable=measurable,
                  note=f"language model: no rehearsal forgets {f_none.mean():.3f} nats. New task: answer loss "
                       f"{al_mix.mean():.3f} (mix-cd) vs {al_rand.mean():.3f} (random), difference interval "
                       f"{_r(ci_al)}, {answer_before:.3f} before fine-tuning; exact match {em_mix.mean():.3f} vs "
                       f"{em_rand.mean():.3f} ({em_before:.3f} before). Intervals pool seeds x held-out items "
                       "(paired bootstrap).")
    detail = {"summary": summary, "em_before": em_before, "answer_loss_before": answer_before, "ci_forgetting": ci_f,
              "ci_exact_match": ci_em, "ci_answer_loss": ci_al,
              "units": {f"{p}-seed{s}": {k: v for k, v in rows[(p, s)].items()
                                         if k not in ("forgetting", "exact_match", "answer_loss")}
                        for p, s in units}, "setup": setup}
    return [claim], detail


def _r(ci: list[float] | None) -> list[float] | None:
    return [round(x, 3) for x in ci] if ci else None


def run(out: Path, *, quick: bool = False, seed: int = 0) -> list[Claim]:
    """Both parts into ``out`` (each unit resumes where it stopped); returns the claims."""
    from trustlab.reproduce.mix_cd_vision import run_vision

    out = Path(out)
    claims, detail = run_lm(out / "lm", quick=quick)
    write_json(out / "lm" / "details.json", detail)
    _plot_lm(out, detail)
    claims += run_vision(out, quick=quick, seed=seed)
    write_summary(out, claims)
    return claims


def _plot_lm(out: Path, detail: dict[str, Any]) -> None:
    from trustlab.report import plt

    pyplot = plt()
    fig, ax = pyplot.subplots(figsize=(5, 4))
    for p, row in detail["summary"].items():
        ax.scatter(row["forgetting"], row["answer_loss"], s=60, label=p)
    ax.set(xlabel="old-data loss increase (nats, lower is better)", ylabel="new-task answer loss (lower is better)",
           title="mix-cd, language model (mean of seeds)")
    ax.legend()
    fig.tight_layout()
    fig.savefig(out / "lm_forgetting_vs_gain.png", dpi=110)
    pyplot.close(fig)
