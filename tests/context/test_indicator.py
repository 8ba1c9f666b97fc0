"""The user-attention-ratio scorer, [IND] labelling and conditional fine-tuning on tiny random models."""

from __future__ import annotations

import pytest
import torch

from trustlab.context.indicator import (
    add_indicator,
    label_conversations,
    label_for_indicator,
    score_conversations,
    user_attention_ratio,
)
from trustlab.context.spans import render_with_spans
from trustlab.errors import CapabilityError, EmptyInputError

CONV = [{"role": "user", "content": "Document: the vault code is 7312. What is the vault code?"},
        {"role": "assistant", "content": "The vault code is 7312."},
        {"role": "user", "content": "And twice that?"},
        {"role": "assistant", "content": "14624."}]


def test_ratio_is_one_when_every_head_attends_only_to_user_tokens_and_zero_when_none():
    t, user, response = 10, [1, 2, 3], [7, 8, 9]
    on_user = torch.zeros(4, t, t)
    on_user[:, :, 1] = 0.5
    on_user[:, :, 3] = 0.5
    assert user_attention_ratio(on_user, user, response) == pytest.approx(1.0)
    elsewhere = torch.zeros(4, t, t)
    elsewhere[:, :, 0] = 1.0
    assert user_attention_ratio(elsewhere, user, response) == 0.0
    assert user_attention_ratio(on_user, [], response) == 0.0
    with pytest.raises(EmptyInputError):
        user_attention_ratio(on_user, user, [])


def test_ratio_takes_the_max_over_heads_and_the_mean_over_response_tokens():
    attn = torch.zeros(2, 4, 4)
    attn[0, 2, 0], attn[1, 2, 0] = 0.2, 0.6  # token 2: best head 0.6
    attn[0, 3, 0], attn[1, 3, 0] = 0.4, 0.0  # token 3: best head 0.4
    assert user_attention_ratio(attn, [0], [2, 3]) == pytest.approx(0.5)


def test_scores_match_the_attention_maps_of_a_forward_pass(tiny):
    scores = score_conversations([CONV], tiny, layer=1)
    assert len(scores) == 1 and len(scores[0]) == 2 and all(0 <= s <= 1 for s in scores[0])
    rendered = render_with_spans(tiny, CONV)
    out, _ = tiny.forward([CONV], output_attentions=True)
    attn = out.attentions[1][0]
    u1, a1, u2, a2 = (list(range(*s.tokens)) for s in rendered.spans)
    assert scores[0][0] == pytest.approx(user_attention_ratio(attn, u1, a1), abs=1e-6)
    assert scores[0][1] == pytest.approx(user_attention_ratio(attn, u1 + u2, a2), abs=1e-6)  # all earlier turns


def test_labels_go_on_the_user_turn_before_high_scoring_answers():
    labelled = label_conversations([CONV], [[0.9, 0.1]], tau=0.6)[0]
    assert labelled[0]["content"].endswith("vault code? [IND]")
    assert labelled[2]["content"] == "And twice that?"
    assert CONV[0]["content"].endswith("code?")  # inputs untouched
    assert label_conversations([CONV], [[0.6, 0.6]], tau=0.6)[0] == CONV  # strictly above tau
    assert add_indicator("the code") == "the code. [IND]" and add_indicator("code?  ") == "code? [IND]"
    with pytest.raises(ValueError, match="assistant turns"):
        label_conversations([CONV], [[0.9]])


def test_label_for_indicator_and_black_box_refusal(tiny):
    from trustlab.models.openai import OpenAIModel

    labelled, scores = label_for_indicator(tiny, [CONV], tau=-1.0)
    assert len(scores[0]) == 2 and labelled[0][0]["content"].endswith("[IND]")
    assert labelled[0][2]["content"].endswith("[IND]")
    with pytest.raises(CapabilityError):
        score_conversations([CONV], OpenAIModel("http://127.0.0.1:9/v1", model_name="x", probe=False), layer=0)
    with pytest.raises(ValueError, match="out of range"):
        score_conversations([CONV], tiny, layer=7)


@pytest.mark.slow
def test_finetune_indicator_command(smollm_dir, tmp_path):
    """`trustlab finetune --indicator`: scores, labels, adds the [IND] token and trains a LoRA adapter."""
    import json

    from click.testing import CliRunner

    from trustlab.cli import main

    data = tmp_path / "data.jsonl"
    data.write_text("".join(json.dumps({"messages": CONV[:2]}) + "\n" for _ in range(4)))
    out = tmp_path / "ft"
    res = CliRunner().invoke(main, ["finetune", str(data), "--indicator", "--tau", "0.0", "--steps", "2",
                                    "--batch-size", "2", "--optimizer", "adamw", "--out", str(out)])
    assert res.exit_code == 0, res.output
    rows = [json.loads(line) for line in (out / "labelled.jsonl").read_text().splitlines()]
    assert len(rows) == 4 and all(r["messages"][0]["content"].endswith(" [IND]") for r in rows)
    assert "[IND] on 4 of 4" in res.output and (out / "adapter").is_dir()
