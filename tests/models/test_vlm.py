"""Vision-language models in the handle: a tiny random-weight LLaVA built from a config (control flow only),
routing by folder and object, images to OpenAI-compatible servers as base64 content parts, and the clear
error for images sent to a text-only model."""

from __future__ import annotations

import base64
import io
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from trustlab.errors import CapabilityError, ModelSpecError
from trustlab.models import load_model
from trustlab.models.openai import image_data_url, image_messages
from trustlab.models.vlm import HFVisionModel, is_vision_config

TEMPLATE = ("{% for m in messages %}<|im_start|>{{ m['role'] }}\n{% for c in m['content'] %}{% if c['type'] == "
            "'image' %}<image>{% else %}{{ c['text'] }}{% endif %}{% endfor %}<|im_end|>\n{% endfor %}"
            "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")


def make_tiny_vlm(tokenizer_dir, seed: int = 0):
    """A tiny LLaVA (CLIP vision tower 2x32, Llama 2x64) with random weights over the SmolLM2 tokenizer."""
    import torch
    from transformers import (
        AutoTokenizer,
        CLIPImageProcessor,
        CLIPVisionConfig,
        LlamaConfig,
        LlavaConfig,
        LlavaForConditionalGeneration,
        LlavaProcessor,
    )

    tok = AutoTokenizer.from_pretrained(tokenizer_dir)
    tok.add_special_tokens({"additional_special_tokens": ["<image>"]})
    vision = CLIPVisionConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
                              image_size=32, patch_size=8, projection_dim=32)
    text = LlamaConfig(vocab_size=len(tok), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                       num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512,
                       bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)
    config = LlavaConfig(vision_config=vision, text_config=text, image_token_id=tok.convert_tokens_to_ids("<image>"),
                         vision_feature_layer=-1, vision_feature_select_strategy="full")
    torch.manual_seed(seed)
    model = LlavaForConditionalGeneration(config).eval()
    processor = LlavaProcessor(image_processor=CLIPImageProcessor(size={"shortest_edge": 32},
                                                                  crop_size={"height": 32, "width": 32}),
                               tokenizer=tok, patch_size=8, vision_feature_select_strategy="full",
                               num_additional_image_tokens=1, chat_template=TEMPLATE)
    return model, processor


@pytest.fixture(scope="module")
def tiny_vlm(smollm_dir):
    model, processor = make_tiny_vlm(smollm_dir)
    return load_model(model, tokenizer=processor)


def _image(color, size=(40, 30)):
    from PIL import Image

    return Image.new("RGB", size, color)


def test_objects_are_routed_to_the_vision_handle_and_generate_with_images(tiny_vlm, tmp_path):
    assert isinstance(tiny_vlm, HFVisionModel) and tiny_vlm.capabilities.vision is True
    red, blue = _image((255, 0, 0)), _image((0, 0, 255), (20, 20))
    blue.save(tmp_path / "blue.png")
    batch = tiny_vlm.generate(["What is this?", "And this?", "No image here."],
                              images=[[red], [str(tmp_path / "blue.png")], None], max_new_tokens=5)
    alone = tiny_vlm.generate(["What is this?"], images=[[red]], max_new_tokens=5)
    assert batch[0][0].text == alone[0][0].text  # left padding in a batch changes nothing
    assert batch[0][0].prompt_tokens > tiny_vlm.generate(["What is this?"], max_new_tokens=2)[0][0].prompt_tokens
    other = tiny_vlm.generate(["What is this?"], images=[[blue]], max_new_tokens=5)
    assert other[0][0].text != alone[0][0].text  # the image reaches the model
    assert "<image>" in tiny_vlm.render("hi", 1) and "<image>" not in tiny_vlm.render("hi", 0)
    with pytest.raises(ValueError, match="one list per prompt"):
        tiny_vlm.generate(["a", "b"], images=[[red]])


def test_a_saved_vision_folder_loads_as_the_vision_handle(tiny_vlm, tmp_path, tiny_dir):
    tiny_vlm.model.save_pretrained(tmp_path / "vlm")
    tiny_vlm.processor.save_pretrained(tmp_path / "vlm")
    loaded = load_model(str(tmp_path / "vlm"), dtype="float32", batch_size=2)
    assert isinstance(loaded, HFVisionModel) and loaded.batch_size == 2
    red = _image((255, 0, 0))
    assert (loaded.generate(["What is this?"], images=[[red]], max_new_tokens=4)[0][0].text
            == tiny_vlm.generate(["What is this?"], images=[[red]], max_new_tokens=4)[0][0].text)
    assert not isinstance(load_model(str(tiny_dir)), HFVisionModel)  # a text model folder stays HFModel
    assert is_vision_config({"vision_config": {}}) and not is_vision_config({"model_type": "llama"})
    with pytest.raises(ModelSpecError, match="AutoProcessor"):  # a bare tokenizer cannot feed images
        load_model(tiny_vlm.model, tokenizer=tiny_vlm.tokenizer)


def test_images_to_a_text_only_model_fail_clearly(tiny):
    with pytest.raises(CapabilityError, match="text-only"):
        tiny.generate(["What is this?"], images=[[_image((0, 0, 0))]])
    assert tiny.capabilities.vision is False


class CannedChatServer:
    """A real HTTP server on 127.0.0.1 speaking the OpenAI chat API: records each request body and answers
    every chat request with ``reply`` (a string or a function of the body)."""

    def __init__(self, reply="ok"):
        self.reply = reply
        self.bodies: list[dict] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def _send(self, obj):
                data = json.dumps(obj).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self):
                self._send({"data": [{"id": "canned"}]})

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                outer.bodies.append(body)
                text = outer.reply(body) if callable(outer.reply) else outer.reply
                self._send({"choices": [{"message": {"content": text}, "finish_reason": "stop"}],
                            "usage": {"prompt_tokens": 3}})

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.httpd.shutdown()
        self.httpd.server_close()


def test_openai_backend_sends_images_as_base64_content_parts():
    with CannedChatServer("a red square") as server:
        model = load_model(f"openai:{server.url}", model_name="canned", probe=False)
        assert model.capabilities.vision is None  # unknown until a request tells
        out = model.generate([[{"role": "system", "content": "Be brief."}, {"role": "user", "content": "What?"}]],
                             images=[[_image((255, 0, 0), (6, 4))]], max_new_tokens=8)
        assert out[0][0].text == "a red square"
        msgs = server.bodies[-1]["messages"]
        assert msgs[0] == {"role": "system", "content": "Be brief."}
        part, text = msgs[1]["content"]
        assert text == {"type": "text", "text": "What?"}
        url = part["image_url"]["url"]
        assert url.startswith("data:image/png;base64,")
        from PIL import Image

        assert Image.open(io.BytesIO(base64.b64decode(url.split(",", 1)[1]))).size == (6, 4)
        with pytest.raises(CapabilityError, match="chat endpoint"):
            model.generate(["What?"], images=[[_image((0, 0, 0))]], chat_template=False)
        blind = load_model(f"openai:{server.url}", model_name="canned", probe=False, capabilities={"vision": False})
        with pytest.raises(CapabilityError, match="text-only"):
            blind.generate(["What?"], images=[[_image((0, 0, 0))]])


def test_image_data_url_and_messages_refuse_what_they_cannot_send():
    assert image_data_url(b"\xff\xd8\xff\xe0rest").startswith("data:image/jpeg;base64,")
    with pytest.raises(ValueError, match="PNG or JPEG"):
        image_data_url(b"GIF89a")
    with pytest.raises(ValueError, match="user turn"):
        image_messages([{"role": "system", "content": "x"}], [_image((0, 0, 0))])
