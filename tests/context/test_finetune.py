"""Experiment C's pipeline (scores -> balanced [IND]-labelled training sets -> checkpointed LoRA arm), the
model option and the grid sizing of the context-awareness reproduction."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from tests.conftest import embedded_or_skip
from trustlab.context.finetune import ZEPHYR_TEMPLATE, apply_zephyr_template, finetune_arm, training_sets
from trustlab.context.indicator import score_conversations
from trustlab.reproduce import default_out, run_options
from trustlab.reproduce.context_awareness import SIZES, grid_size
from trustlab.train import SFTConfig, tokenize_example


def chats(n: int) -> tuple[list, list[int]]:
    ctx = [[{"role": "user", "content": f"The code of door {i} is {100 + i}. What is the code of door {i}?"},
            {"role": "assistant", "content": f"The code is {100 + i}."}] for i in range(n)]
    know = [[{"role": "user", "content": f"What is {i} plus {i}?"}, {"role": "assistant", "content": str(2 * i)}]
            for i in range(n)]
    return ctx + know, [1] * n + [0] * n


def test_the_model_option_reaches_run_and_writes_beside_the_default():
    assert "model" in run_options("context-awareness")
    assert default_out("context-awareness", quick=False) == Path("results/context-awareness")
    assert default_out("context-awareness", quick=False, options={"model": "embedded:qwen2.5-coder-0.5b"}) == Path(
        "results/context-awareness--qwen2.5-coder-0.5b")


def test_grid_size_fits_the_context_window():
    assert grid_size("smollm2-135m", 8192)["lengths"] == SIZES["smollm2-135m"]["lengths"]
    assert grid_size("qwen2.5-coder-0.5b", 32768)["lengths"] == SIZES["default"]["lengths"] == (250, 1000)
    assert grid_size("x", 1100)["lengths"] == (250,)  # 1000 + prompt + answer do not fit in 1100
    assert grid_size("x", 1024)["lengths"] == (250,)
    with pytest.raises(ValueError, match="fits none"):
        grid_size("x", 300)
    assert grid_size("smollm2-135m", 8192, quick=True)["lengths"] == (200,)


def test_training_sets_are_balanced_and_labelled_above_tau(tiny):
    convs, labels = chats(4)
    scores = score_conversations(convs, tiny, layer=1)
    assert len(scores) == 8 and all(len(s) == 1 and 0.0 <= s[0] <= 1.0 for s in scores)
    plain, labelled, info = training_sets(convs, scores, labels, 4, tau=-1.0)  # every score is above -1
    assert info == {"chats": 4, "tau": -1.0, "group_1": 2, "group_0": 2, "labelled_group_1": 2, "labelled_group_0": 2}
    assert all(m[0]["content"].endswith(" [IND]") for m in labelled)
    assert all(not m[0]["content"].endswith("[IND]") for m in plain)
    _, none, info = training_sets(convs, scores, labels, 4, tau=1.0)  # a score never exceeds 1
    assert info["labelled_group_1"] + info["labelled_group_0"] == 0 and none == _
    with pytest.raises(ValueError):
        training_sets(convs, scores[:-1], labels, 4)


def test_finetune_arm_trains_in_float32_checkpoints_and_resumes(tiny_dir, tmp_path):
    convs, labels = chats(2)
    _, labelled, _ = training_sets(convs, [[0.9]] * 4, labels, 4, tau=0.6)
    cfg = SFTConfig(optimizer="adamw", lr=1e-2, steps=2, batch_size=2, rank=2, alpha=4, dropout=0.05,
                    target_modules=("q_proj", "v_proj"), extra_special_tokens=("[IND]",), response_logits_only=True)
    first, log = finetune_arm(str(tiny_dir), labelled, cfg, tmp_path / "ck", dtype="float32")
    assert not log["resumed"] and log["steps_run"] == 2 and not log["diverged"]
    assert (tmp_path / "ck" / "adapter_config.json").exists() and first.tokenizer.chat_template == ZEPHYR_TEMPLATE
    again, log2 = finetune_arm(str(tiny_dir), labelled, cfg, tmp_path / "ck", dtype="float32")
    assert log2["resumed"] and log2["losses"] == log["losses"]
    ids = torch.tensor([again.tokenize([{"role": "user", "content": "What is the code? [IND]"}])])
    assert again.tokenizer.convert_tokens_to_ids("[IND]") in ids[0].tolist()
    with torch.no_grad():
        assert torch.allclose(first.model(input_ids=ids).logits, again.model(input_ids=ids).logits, atol=1e-5)


@pytest.mark.models
def test_gemma_base_gets_the_zephyr_template_and_response_only_labels():
    from transformers import AutoTokenizer

    from trustlab.models.embedded import model_dir

    embedded_or_skip("gemma-3-270m")
    tok = apply_zephyr_template(AutoTokenizer.from_pretrained(model_dir("gemma-3-270m")))
    conv = [{"role": "user", "content": "Doc. What is the code? [IND]"}, {"role": "assistant", "content": "4471"}]
    row = tokenize_example(tok, {"messages": conv}, 384)
    text = tok.decode(row["input_ids"])
    assert text.startswith("<bos><|user|>\nDoc.") and text.endswith("<|assistant|>\n4471<eos>\n")
    supervised = tok.decode([t for t, lab in zip(row["input_ids"], row["labels"], strict=True) if lab != -100])
    assert supervised.startswith("4471")
