"""LoRA SFT through the HF Trainer with each optimizer, on a tiny random Llama (no tokenizer needed)."""

from __future__ import annotations

import peft  # noqa: F401  (the [test] extra installs it; a missing one must fail, not skip)
import pytest
import torch

from trustlab.train import SFTConfig, TrainingDivergedError, lora_finetune, tokenize_example


def tiny_llama(seed: int = 0):
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    cfg = LlamaConfig(vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                      num_key_value_heads=2, max_position_embeddings=64, pad_token_id=0)
    return LlamaForCausalLM(cfg)


def token_examples(n: int = 16, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    rows = []
    for _ in range(n):
        prompt = torch.randint(1, 32, (6,), generator=g).tolist()
        target = [t + 32 for t in prompt[:3]]  # a learnable mapping
        rows.append({"input_ids": prompt + target, "labels": [-100] * 6 + target})
    return rows


@pytest.mark.parametrize("optimizer", ["lora-rite", "adamw", "loraplus"])
def test_trainer_runs_and_learns(optimizer):
    lr = {"lora-rite": 3e-2, "adamw": 1e-2, "loraplus": 3e-3}[optimizer]
    cfg = SFTConfig(optimizer=optimizer, lr=lr, steps=25, batch_size=8, rank=4, alpha=8,
                    target_modules=("q_proj", "v_proj", "up_proj", "down_proj"))
    model, log = lora_finetune(tiny_llama(), None, token_examples(), cfg)
    assert len(log) == 25 and log[-1]["loss"] < log[0]["loss"]
    assert not log.diverged and log.flags()["steps_run"] == 25
    log.raise_if_diverged()  # a finite run passes
    lora_b = [p for n, p in model.named_parameters() if "lora_B" in n]
    assert lora_b and all(p.abs().sum() > 0 for p in lora_b)


def test_lora_dropout_reaches_the_adapter():
    cfg = SFTConfig(optimizer="adamw", lr=1e-2, steps=2, batch_size=4, rank=4, alpha=8, dropout=0.05,
                    target_modules=("q_proj", "v_proj"))
    model, _ = lora_finetune(tiny_llama(), None, token_examples(8), cfg)
    assert model.peft_config["default"].lora_dropout == 0.05
    drops = [m for n, m in model.named_modules() if n.endswith("lora_dropout.default")]
    assert drops and all(isinstance(m, torch.nn.Dropout) and m.p == 0.05 for m in drops)


def test_extra_special_tokens_train_only_new_rows():
    from transformers import AutoTokenizer

    from trustlab.models.embedded import smollm2_dir

    tok = AutoTokenizer.from_pretrained(smollm2_dir())
    model = tiny_llama()
    model.resize_token_embeddings(len(tok))
    cfg = SFTConfig(steps=2, batch_size=2, rank=2, alpha=4, extra_special_tokens=("[IND]",),
                    target_modules=("q_proj", "v_proj"))
    ex = [{"prompt": "[IND] Say hi.", "response": "hi"}] * 2
    peft_model, log = lora_finetune(model, tok, ex, cfg)
    assert tok.convert_tokens_to_ids("[IND]") == len(tok) - 1 and len(log) == 2
    trainable = [n for n, p in peft_model.named_parameters() if p.requires_grad and "lora_" not in n]
    assert trainable and all("token" in n for n in trainable)


def test_response_only_labels(tokenizer):
    row = tokenize_example(tokenizer, {"prompt": "What is 2+2?", "response": "4"}, 128)
    supervised = [t for t, lab in zip(row["input_ids"], row["labels"], strict=True) if lab != -100]
    assert tokenizer.decode(supervised).strip().startswith("4") and len(supervised) <= 4


def inject_inf_after(model, calls: int):
    """A forward hook on the LM head that turns the logits to inf from forward call ``calls + 1`` on."""
    seen = {"n": 0}

    def hook(module, inputs, output):
        seen["n"] += 1
        return output * float("inf") if seen["n"] > calls else output

    model.lm_head.register_forward_hook(hook)
    return model


@pytest.mark.parametrize("optimizer", ["adamw", "lora-rite"])
def test_nonfinite_loss_is_logged_flagged_and_stops_training(optimizer):
    cfg = SFTConfig(optimizer=optimizer, lr=1e-2, steps=12, batch_size=4, rank=4, alpha=8,
                    target_modules=("q_proj", "v_proj"))
    with pytest.warns(RuntimeWarning, match="training diverged: non-finite loss first at step 4"):
        _, log = lora_finetune(inject_inf_after(tiny_llama(), 3), None, token_examples(), cfg)
    assert [r["step"] for r in log] == [1, 2, 3, 4, 5, 6]  # stopped after 3 consecutive non-finite losses
    assert all(isinstance(r["loss"], float) for r in log[:3])
    assert [(r["loss"], r["nonfinite"]) for r in log[3:]] == [(None, "nan")] * 3
    assert log.flags() == {"diverged": True, "first_nonfinite_step": 4, "nonfinite_steps": 3, "stopped_early": True,
                           "steps_run": 6, "planned_steps": 12}
    with pytest.raises(TrainingDivergedError, match="stopped at step 6 of 12"):
        log.raise_if_diverged()


def test_isolated_nonfinite_loss_is_flagged_without_stopping():
    seen = {"n": 0}

    def hook(module, inputs, output):
        seen["n"] += 1
        return output * float("inf") if seen["n"] == 2 else output

    model = tiny_llama()
    model.lm_head.register_forward_hook(hook)
    cfg = SFTConfig(optimizer="lora-rite", lr=1e-2, steps=6, batch_size=4, rank=4, alpha=8,
                    target_modules=("q_proj", "v_proj"))
    with pytest.warns(RuntimeWarning, match="step 2"):
        _, log = lora_finetune(model, None, token_examples(), cfg)
    assert len(log) == 6 and log[1]["loss"] is None and log.nonfinite_steps == 1
    assert log.diverged and not log.stopped_early
    assert all(r["loss"] is not None for r in log[2:])  # LoRA-RITE skipped the NaN step: training goes on


def test_response_logits_only_gives_the_full_loss():
    """Left padding + the LM head on response positions only = the Trainer's right-padded full loss."""
    from trustlab.train.sft import _collate, response_loss

    torch.manual_seed(0)
    rows = [{"input_ids": list(range(1, 1 + n)) + [40, 41, 42][:k], "labels": [-100] * n + [40, 41, 42][:k]}
            for n, k in ((6, 3), (3, 2), (9, 1))]
    model = tiny_llama().eval()
    with torch.no_grad():
        full = model(**_collate(0)(rows)).loss
        cut = response_loss(model, _collate(0, left=True)(rows))
    assert torch.allclose(full, cut, atol=1e-5)


def test_training_with_response_logits_only_learns():
    cfg = SFTConfig(optimizer="adamw", lr=1e-2, steps=25, batch_size=8, rank=4, alpha=8, response_logits_only=True,
                    target_modules=("q_proj", "v_proj", "up_proj", "down_proj"))
    _, log = lora_finetune(tiny_llama(), None, token_examples(), cfg)
    assert len(log) == 25 and log[-1]["loss"] < log[0]["loss"] and not log.diverged
