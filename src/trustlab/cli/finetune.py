"""``trustlab finetune``: LoRA fine-tuning of a causal LM on a JSONL of chat examples."""

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
def finetune(data: Path, model_spec: str, model_name: str | None, attn_implementation: str | None, seed: int,
             out: Path, optimizer: str, lr: float, steps: int, batch_size: int, rank: int, alpha: int,
             lora_dropout: float, target_modules: str, max_length: int, warmup_steps: int, weight_decay: float,
             loraplus_ratio: float, indicator: bool, tau: float, probe_layer: int | None) -> None:
    """LoRA fine-tune a causal LM (default: the embedded SmolLM2) on DATA, a JSONL of chat examples.

    Each line is {"messages": [...]} (the last message is the assistant's target) or
    {"prompt": ..., "response": ...}; the loss covers the response only. Writes the run folder and the
    LoRA adapter (out/adapter, loadable with peft.PeftModel.from_pretrained). A rerun starts over (the
    previous run moves to OUT/.superseded/).
    """
    from trustlab.report import RunFolder, Section, plt
    from trustlab.train import SFTConfig, lora_finetune, read_examples

    cfg = SFTConfig(optimizer=optimizer, lr=lr, steps=steps, batch_size=batch_size, rank=rank, alpha=alpha,
                    dropout=lora_dropout, target_modules=tuple(t.strip() for t in target_modules.split(",") if t.strip()),
                    max_length=max_length, warmup_steps=warmup_steps, weight_decay=weight_decay,
                    loraplus_ratio=loraplus_ratio, seed=seed, extra_special_tokens=("[IND]",) if indicator else ())
    examples = read_examples(data)
    run = RunFolder(out, {"command": "finetune", "data": str(data), "model": model_spec, **asdict(cfg)}, fresh=True)
    handle = load_from_options(model_spec, model_name, attn_implementation)
    if indicator:
        from trustlab.context.indicator import label_for_indicator
        from trustlab.report import write_jsonl
        from trustlab.train.sft import as_messages

        convs, scores = label_for_indicator(handle, [as_messages(e) for e in examples], tau=tau, layer=probe_layer)
        examples = [{"messages": c} for c in convs]
        write_jsonl(out / "labelled.jsonl", [{"messages": c, "scores": s} for c, s in zip(convs, scores)])
        click.echo(f"[IND] on {sum(any(x > tau for x in s) for s in scores)} of {len(scores)} examples (tau {tau})")
    t0 = time.perf_counter()
    model, log = lora_finetune(handle.model, handle.tokenizer, examples, cfg)
    seconds = time.perf_counter() - t0
    for row in log:
        run.add_sample(row)
    if not log.diverged:  # a diverged adapter is not saved as if it were a result
        model.save_pretrained(str(out / "adapter"))
    results = {"optimizer": optimizer, "examples": len(examples), "steps": steps, "seconds": seconds,
               "first_loss": log[0]["loss"] if log else None, "final_loss": log[-1]["loss"] if log else None,
               **log.flags()}
    run.write_results(results)
    pyplot = plt()
    fig, ax = pyplot.subplots(figsize=(6, 4))
    ax.plot([r["step"] for r in log], [r["loss"] for r in log])
    ax.set(xlabel="step", ylabel="training loss", title=f"LoRA fine-tuning ({optimizer})")
    image = run.save_plot(fig, "loss")
    path = run.write_report("LoRA fine-tuning", [Section("Training", text=f"{len(examples)} examples, {steps} steps, "
                                                         f"{optimizer} at lr {lr:g}. {log.describe()}", table=[results],
                                                    images=[image])])
    if not log.diverged:
        click.echo(f"final loss {results['final_loss']} after {steps} steps ({seconds:.1f} s); adapter in {out / 'adapter'}")
    click.echo(f"report: {path}")
    log.raise_if_diverged()  # one-line error, non-zero exit; the run folder above shows the null losses
