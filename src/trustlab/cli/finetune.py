"""``trustlab finetune``: LoRA (or full) fine-tuning of a causal LM on a JSONL of examples, optionally
rehearsing old data (random mixing or mix-cd) and measuring forgetting on held-out old data."""

from __future__ import annotations

import time
from dataclasses import asdict
from pathlib import Path

import click

from trustlab.cli.common import load_from_options, model_options, out_option, seed_option


@click.command()
@click.argument("data", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@model_options
@seed_option
@out_option("runs/finetune")
@click.option("--optimizer", type=click.Choice(["lora-rite", "adamw", "loraplus"]), default="lora-rite",
              show_default=True)
@click.option("--lr", type=click.FloatRange(min=0.0, min_open=True), default=1e-3, show_default=True, help="learning rate (LoRA+: of lora_A)")
@click.option("--steps", type=click.IntRange(min=1), default=100, show_default=True)
@click.option("--batch-size", type=click.IntRange(min=1), default=8, show_default=True)
@click.option("--rank", type=click.IntRange(min=1), default=16, show_default=True, help="LoRA rank")
@click.option("--alpha", type=click.IntRange(min=1), default=32, show_default=True, help="LoRA alpha (scale = alpha / rank)")
@click.option("--lora-dropout", type=click.FloatRange(0.0, 1.0, max_open=True), default=0.0, show_default=True,
              help="LoRA dropout (the [IND] recipe uses 0.05; LoRA-RITE's uses 0)")
@click.option("--target-modules", default="q_proj,k_proj,v_proj,o_proj,gate_proj,up_proj,down_proj",
              show_default=True, help="comma-separated module names that get LoRA")
@click.option("--max-length", type=click.IntRange(min=2), default=256, show_default=True, help="tokens per example at most")
@click.option("--warmup-steps", type=click.IntRange(min=0), default=0, show_default=True,
              help="linear warm-up steps (the LoRA-RITE recipe uses 100)")
@click.option("--weight-decay", type=click.FloatRange(min=0.0), default=0.0, show_default=True)
@click.option("--loraplus-ratio", type=click.FloatRange(min=0.0, min_open=True), default=16.0, show_default=True, help="LoRA+ lr_B / lr_A")
@click.option("--indicator", is_flag=True,
              help="conditional fine-tuning: score each example's user-attention ratio with the model itself and "
                   "append ' [IND]' (a new special token) to context-dependent user turns")
@click.option("--tau", type=float, default=0.6, show_default=True, help="--indicator: score threshold")
@click.option("--probe-layer", type=int, default=None, help="--indicator: attention layer (default: 2/3 depth)")
@click.option("--full", is_flag=True, help="train every weight (AdamW) instead of LoRA pairs")
@click.option("--rehearsal", type=click.Choice(["none", "random", "mixcd"]), default="none", show_default=True,
              help="mix old data into every step: uniformly (random) or where fine-tuning damages it (mixcd)")
@click.option("--old-data", default=None, help="old (pretraining) text to rehearse and to measure forgetting on: "
              "auto | python-docs | pydoc-topics | a .txt file or folder (default with --rehearsal: auto)")
@click.option("--rehearsal-budget", type=click.IntRange(min=1), default=4, show_default=True,
              help="old samples per step, on top of --batch-size new ones")
@click.option("--old-pool", type=click.IntRange(min=1), default=2000, show_default=True, help="old blocks to rehearse from")
@click.option("--old-block-len", type=click.IntRange(min=2), default=128, show_default=True)
@click.option("--mixcd-bins", type=click.IntRange(min=1), default=10, show_default=True,
              help="quantile bins of the original model's loss")
@click.option("--mixcd-delta", type=click.FloatRange(min=0.0), default=0.1, show_default=True,
              help="an old block counts as damaged when its loss rises by more than this many nats")
@click.option("--mixcd-epsilon", type=click.FloatRange(0.0, 1.0, min_open=True), default=0.1, show_default=True,
              help="share of uniform exploration over bins")
def finetune(data: Path, model_spec: str, model_name: str | None, attn_implementation: str | None, seed: int,
             out: Path, optimizer: str, lr: float, steps: int, batch_size: int, rank: int, alpha: int,
             lora_dropout: float, target_modules: str, max_length: int, warmup_steps: int, weight_decay: float,
             loraplus_ratio: float, indicator: bool, tau: float, probe_layer: int | None, full: bool, rehearsal: str,
             old_data: str | None, rehearsal_budget: int, old_pool: int, old_block_len: int, mixcd_bins: int,
             mixcd_delta: float, mixcd_epsilon: float) -> None:
    """Fine-tune a causal LM (default: the embedded SmolLM2; LoRA unless --full) on DATA, a JSONL of examples.

    Each line is {"messages": [...]} (the last message is the assistant's target), {"prompt": ...,
    "response": ...} (the loss covers the response only) or {"text": ...}. With --rehearsal, every step also
    trains on --rehearsal-budget old blocks from --old-data (mix-cd picks them where its per-bin estimate of
    collateral damage is highest, from the same forward pass); with --old-data, the loss on held-out old
    blocks before and after measures forgetting. --model may also be a `trustlab pretrain` model folder.
    Writes the run folder and the LoRA adapter (out/adapter, loadable with peft.PeftModel.from_pretrained)
    or, with --full, the model (out/model). A rerun starts over (the previous run moves to OUT/.superseded/).
    """
    from trustlab.report import RunFolder, Section, plt
    from trustlab.train import SFTConfig, lora_finetune, read_examples

    if full and optimizer != "adamw":
        if optimizer != "lora-rite" or click.get_current_context().get_parameter_source("optimizer").name != "DEFAULT":
            raise click.UsageError(f"--full trains every weight with adamw, not {optimizer}")
        optimizer = "adamw"
    if rehearsal != "none" and old_data is None:
        old_data = "auto"
    cfg = SFTConfig(optimizer=optimizer, lr=lr, steps=steps, batch_size=batch_size, rank=rank, alpha=alpha,
                    dropout=lora_dropout, target_modules=tuple(t.strip() for t in target_modules.split(",") if t.strip()),
                    max_length=max(max_length, old_block_len) if old_data else max_length, warmup_steps=warmup_steps,
                    weight_decay=weight_decay, loraplus_ratio=loraplus_ratio, seed=seed,
                    extra_special_tokens=("[IND]",) if indicator else (), full=full)
    examples = read_examples(data)
    run = RunFolder(out, {"command": "finetune", "data": str(data), "model": model_spec, "rehearsal": rehearsal,
                          "old_data": old_data, "rehearsal_budget": rehearsal_budget, "old_pool": old_pool,
                          "old_block_len": old_block_len, "mixcd": [mixcd_bins, mixcd_delta, mixcd_epsilon],
                          **asdict(cfg)}, fresh=True)
    handle = _load(model_spec, model_name, attn_implementation)
    if indicator and handle.handle is None:
        raise click.UsageError("--indicator needs a model handle that gives attentions (not a compact-vocabulary "
                               "pretrain folder)")
    if indicator:
        from trustlab.context.indicator import label_for_indicator
        from trustlab.report import write_jsonl
        from trustlab.train.sft import as_messages

        convs, scores = label_for_indicator(handle.handle, [as_messages(e) for e in examples], tau=tau, layer=probe_layer)
        examples = [{"messages": c} for c in convs]
        write_jsonl(out / "labelled.jsonl", [{"messages": c, "scores": s} for c, s in zip(convs, scores)])
        click.echo(f"[IND] on {sum(any(x > tau for x in s) for s in scores)} of {len(scores)} examples (tau {tau})")
    tokenizer = handle.tokenizer
    if handle.vocab is not None:  # a compact-vocabulary model: tokenize with SmolLM2, then map the ids
        from trustlab.train import tokenize_example

        examples = [_mapped(handle.vocab, tokenize_example(tokenizer, ex, cfg.max_length)) for ex in examples]
        tokenizer = None
    sampler, old_items, held, before, extra = None, [], None, None, {}
    if old_data:
        from trustlab.data import MixCD, fingerprint
        from trustlab.train.pretrain import block_losses
        from trustlab.train.rehearsal import as_items, old_data_blocks

        pool, held, info = old_data_blocks(handle.tokenizer, old_data, n_pool=old_pool, n_held_out=128,
                                           block_len=old_block_len, seed=seed, vocab=handle.vocab)
        before = block_losses(handle.model, held)
        extra["old_data"] = info
        if rehearsal != "none":
            click.echo(f"scoring {len(pool)} old blocks with the original model (mix-cd's prior losses)")
            prior = block_losses(handle.model, pool)
            sampler = MixCD(len(examples), prior.numpy(), steps, batch_size, rehearsal_budget, rehearsal, n_bins=mixcd_bins,
                            epsilon=mixcd_epsilon, delta=mixcd_delta, seed=seed,
                            fingerprint=fingerprint([str(e) for e in examples] + [pool]))
            old_items = as_items(pool)
            cfg.batch_size = batch_size + rehearsal_budget
    t0 = time.perf_counter()
    model, log = lora_finetune(handle.model, tokenizer, examples, cfg, sampler=sampler, extra_examples=old_items)
    seconds = time.perf_counter() - t0
    for row in log:
        run.add_sample(row)
    if not log.diverged:  # a diverged adapter is not saved as if it were a result
        model.save_pretrained(str(out / ("model" if full else "adapter")))
        if full and handle.vocab is not None:
            handle.vocab.save(out / "model")
    if held is not None:
        from trustlab.train.pretrain import block_losses
        from trustlab.train.rehearsal import forgetting_report

        extra.update(forgetting_report(before, block_losses(model, held)))
    if sampler is not None:
        extra["rehearsed"] = {"samples": int(sampler.rehearsed.sum()), "distinct": int((sampler.rehearsed > 0).sum())}
        if sampler.estimator is not None:
            # random mixing observes the same statistics without acting on them
            extra["cd_estimates"] = {"used_for_sampling": rehearsal == "mixcd",
                                     "alphas": sampler.estimator.alphas.round(4).tolist(),
                                     "observations": sampler.estimator.counts.tolist(),
                                     "bin_sizes": sampler.estimator.sizes.tolist()}
    results = {"optimizer": cfg.optimizer, "full": full, "rehearsal": rehearsal, "examples": len(examples),
               "steps": steps, "seconds": seconds, "first_loss": log[0]["loss"] if log else None,
               "final_loss": log[-1]["loss"] if log else None, **extra, **log.flags()}
    run.write_results(results)
    pyplot = plt()
    fig, ax = pyplot.subplots(figsize=(6, 4))
    ax.plot([r["step"] for r in log], [r["loss"] for r in log])
    ax.set(xlabel="step", ylabel="training loss", title=f"fine-tuning ({cfg.optimizer}, rehearsal {rehearsal})")
    image = run.save_plot(fig, "loss")
    table = [{k: v for k, v in results.items() if not isinstance(v, dict)}]
    sections = [Section("Training", text=f"{len(examples)} examples, {steps} steps, {cfg.optimizer} at lr {lr:g}; "
                                         f"rehearsal {rehearsal}. {log.describe()}", table=table, images=[image])]
    if "cd_estimates" in extra:
        est = extra["cd_estimates"]
        sections.append(Section("Collateral-damage estimates per bin (low to high original loss)", text=(
            "mix-cd drew its rehearsal bins from these" if est["used_for_sampling"] else
            "observed under random mixing, not used for sampling"), table=[
            {"bin": k, "alpha": a, "observations": c, "size": z} for k, (a, c, z) in enumerate(zip(
                est["alphas"], est["observations"], est["bin_sizes"]))]))
    path = run.write_report("Fine-tuning", sections)
    if "forgetting" in extra:
        click.echo(f"old data: loss {extra['old_loss_before']:.3f} -> {extra['old_loss_after']:.3f} "
                   f"(forgetting {extra['forgetting']:+.3f} nats)")
    if not log.diverged:
        click.echo(f"final loss {results['final_loss']} after {steps} steps ({seconds:.1f} s); saved in "
                   f"{out / ('model' if full else 'adapter')}")
    click.echo(f"report: {path}")
    log.raise_if_diverged()  # one-line error, non-zero exit; the run folder above shows the null losses


def _load(model_spec: str, model_name: str | None, attn_implementation: str | None):
    """The model handle, with ``.vocab``: the compact vocabulary of a `trustlab pretrain` folder, else None."""
    from types import SimpleNamespace

    from trustlab.train.pretrain import Vocab

    vocab = Vocab.load(model_spec) if Path(model_spec).is_dir() else None
    if vocab is None:
        handle = load_from_options(model_spec, model_name, attn_implementation)
        return SimpleNamespace(model=handle.model, tokenizer=handle.tokenizer, vocab=None, handle=handle)
    import transformers

    from trustlab.train.pretrain import smollm2_tokenizer

    return SimpleNamespace(model=transformers.LlamaForCausalLM.from_pretrained(model_spec),
                           tokenizer=smollm2_tokenizer(), vocab=vocab, handle=None)


def _mapped(vocab, item: dict[str, list[int]]) -> dict[str, list[int]]:
    import torch

    ids = vocab.encode(torch.tensor(item["input_ids"])).tolist()
    return {"input_ids": ids, "labels": [-100 if lab == -100 else i for i, lab in zip(ids, item["labels"])]}
