"""``trustlab pretrain``: a small Llama-style model from scratch on offline English text, with a data schedule."""

from __future__ import annotations

import math
import time
from dataclasses import asdict
from pathlib import Path

import click

from trustlab.cli.common import out_option, seed_option


@click.command()
@seed_option
@out_option("runs/pretrain")
@click.option("--schedule", type=click.Choice(["random", "lfr"]), default="lfr", show_default=True,
              help="random: uniform passes over the blocks; lfr: Learn / Focus / Review")
@click.option("--corpus", default="auto", show_default=True,
              help="auto | python-docs (Debian python3-doc) | pydoc-topics (ships with CPython) | a .txt file or folder")
@click.option("--steps", type=click.IntRange(min=1), default=600, show_default=True)
@click.option("--batch-size", type=click.IntRange(min=1), default=32, show_default=True, help="blocks per step per process")
@click.option("--block-len", type=click.IntRange(min=2), default=64, show_default=True, help="tokens per block")
@click.option("--max-blocks", type=click.IntRange(min=1), default=None, help="use at most this many training blocks")
@click.option("--val-fraction", type=click.FloatRange(0.0, 0.5, min_open=True), default=0.05, show_default=True,
              help="share of documents held out for validation")
@click.option("--hidden", type=click.IntRange(min=8), default=128, show_default=True)
@click.option("--layers", type=click.IntRange(min=1), default=2, show_default=True)
@click.option("--heads", type=click.IntRange(min=1), default=4, show_default=True)
@click.option("--lr", type=click.FloatRange(min=0.0, min_open=True), default=3e-3, show_default=True)
@click.option("--eval-every", type=click.IntRange(min=1), default=25, show_default=True)
@click.option("--save-every", type=click.IntRange(min=0), default=100, show_default=True,
              help="checkpoint every N steps (0: at the end only)")
@click.option("--lfr-schedule", default=None,
              help="phases as kind:share[:keep], e.g. learn:0.25,focus:0.25:0.5,review:0.15,focus:0.2:0.3,review:0.15")
@click.option("--focus-sampling", type=click.Choice(["uniform", "ppl_weighted"]), default="uniform", show_default=True)
@click.option("--exclude-stalled", is_flag=True, help="drop blocks whose loss never drops from Focus (noise cap)")
@click.option("--full-vocab", is_flag=True, help="a model over SmolLM2's whole 49,152-token vocabulary "
              "(default: only the ids the corpus uses)")
@click.option("--resume", is_flag=True, help="continue from the last checkpoint in OUT (same options)")
def pretrain(seed: int, out: Path, schedule: str, corpus: str, steps: int, batch_size: int, block_len: int,
             max_blocks: int | None, val_fraction: float, hidden: int, layers: int, heads: int, lr: float,
             eval_every: int, save_every: int, lfr_schedule: str | None, focus_sampling: str, exclude_stalled: bool,
             full_vocab: bool, resume: bool) -> None:
    """Pretrain a small Llama model (SmolLM2 tokenizer) from scratch on English text with a data schedule.

    Writes OUT/model (save_pretrained, plus the compact-vocabulary map), the validation curve
    (samples.jsonl, perplexity.png), results.json and report.html; checkpoints go to OUT/checkpoints with
    the sampler's state, so --resume continues the same schedule. Runs under torchrun / accelerate launch
    as it is (each process gets its slice of every step).
    """
    from trustlab.data import LFRSampler, fingerprint
    from trustlab.data.corpus import blocks_from_ids, english_documents, split_documents
    from trustlab.data.lfr import DEFAULT_SCHEDULE, RANDOM_SCHEDULE, parse_schedule
    from trustlab.report import RunFolder, Section, plt
    from trustlab.train.pretrain import (
        PretrainConfig,
        Vocab,
        save_model,
        smollm2_tokenizer,
        tiny_llama,
        tokenize_documents,
    )
    from trustlab.train.pretrain import pretrain as run_pretrain

    cfg = PretrainConfig(hidden=hidden, layers=layers, heads=heads, block_len=block_len, batch_size=batch_size,
                         steps=steps, lr=lr, eval_every=eval_every, save_every=save_every, seed=seed)
    phases = RANDOM_SCHEDULE if schedule == "random" else (parse_schedule(lfr_schedule) if lfr_schedule
                                                          else DEFAULT_SCHEDULE)
    docs, info = english_documents(corpus)
    tokenizer = smollm2_tokenizer()
    train_docs, val_docs = split_documents(docs, val_fraction, seed=0)
    train = blocks_from_ids(tokenize_documents(tokenizer, train_docs), block_len, max_blocks)
    val = blocks_from_ids(tokenize_documents(tokenizer, val_docs), block_len, 256) if val_docs else train[:0]
    if not len(val):
        raise click.UsageError("no validation block: the corpus has too few documents (use more text)")
    vocab = None if full_vocab else Vocab.from_blocks([train, val])
    if vocab is not None:
        train, val = vocab.encode(train), vocab.encode(val)
    run = RunFolder(out, {"command": "pretrain", "schedule": schedule, "phases": [asdict(p) for p in phases],
                          "corpus": info, "blocks": len(train), "full_vocab": full_vocab,
                          "focus_sampling": focus_sampling, "exclude_stalled": exclude_stalled, **asdict(cfg)},
                    fresh=not resume)
    model = tiny_llama(len(vocab) if vocab is not None else len(tokenizer), cfg)
    sampler = LFRSampler(len(train), steps, batch_size, phases, seed=seed, focus_sampling=focus_sampling,
                         exclude_stalled=exclude_stalled, fingerprint=fingerprint(train))
    click.echo(f"{len(train)} training blocks of {block_len} tokens from {info['source']} ({info['bytes']:,} bytes), "
               f"{len(val)} validation blocks; model {sum(p.numel() for p in model.parameters()) / 1e6:.2f} M "
               f"parameters; schedule {schedule}")
    t0 = time.perf_counter()
    history = run_pretrain(model, train, {"val": val}, sampler, cfg, out, resume=resume, log_name="samples.jsonl")
    seconds = time.perf_counter() - t0
    save_model(model, vocab, cfg, out / "model")
    final = history[-1]["all"]
    results = {"schedule": schedule, "steps": steps, "seconds": seconds, "final_val_loss": final,
               "final_val_ppl": math.exp(final), "tokens": history[-1]["tokens"], "phases": sampler.events,
               "corpus": info, "model_dir": str(out / "model")}
    run.write_results(results)
    pyplot = plt()
    fig, ax = pyplot.subplots(figsize=(6, 4))
    ax.plot([r["step"] for r in history], [math.exp(r["all"]) for r in history])
    for ev in sampler.events:
        ax.axvline(ev["step"], color="gray", lw=0.6, ls=":")
    ax.set(xlabel="step", ylabel="validation perplexity", yscale="log", title=f"pretraining ({schedule} schedule)")
    image = run.save_plot(fig, "perplexity")
    path = run.write_report("Pretraining", [Section("Validation perplexity", text=(
        f"{len(train)} blocks of {block_len} tokens from {info['source']}; {steps} steps of {batch_size}. Dotted "
        "lines: phase starts."), table=[{k: v for k, v in results.items() if k not in ("phases", "corpus")}],
        images=[image]), Section("Phases", table=sampler.events)])
    click.echo(f"validation perplexity {math.exp(final):.1f} after {steps} steps ({seconds:.0f} s); model in "
               f"{out / 'model'}; report: {path}")
