"""Hugging Face vision-language chat models (LLaVA, Qwen2-VL, SmolVLM / Idefics3 ... : whatever
``AutoModelForImageTextToText`` loads) behind the common handle.

``generate(prompts, images=[[img], ...])`` shows each prompt's images before the text of its last user turn;
prompts without images work too. The processor's chat template renders the turns (their contents become
``[{"type": "image"}, ..., {"type": "text", "text": ...}]`` parts, the form these templates expect), the
processor turns text and images into model inputs, and ``model.generate`` decodes (greedy or sampled,
batched with left padding). :class:`~trustlab.models.base.Capabilities` has ``vision=True``.

Example:
    >>> from trustlab.models import load_model
    >>> vlm = load_model("HuggingFaceTB/SmolVLM-256M-Instruct")      # routed here: its config has a vision part
    >>> vlm.generate(["What is in the image?"], images=[[Image.open("cat.png")]], max_new_tokens=20)
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from trustlab.errors import CapabilityError, ModelSpecError, require
from trustlab.models.base import (
    Capabilities,
    Generation,
    GenerationConfig,
    ModelHandle,
    Prompt,
    as_messages,
    strip_at_stop,
)


def is_vision_config(config: Any) -> bool:
    """Whether a transformers config (object or ``config.json`` dict) is a vision-language model's: it has a
    vision part (``vision_config``) beside its text model.

    Example:
        >>> is_vision_config({"model_type": "llava", "vision_config": {}, "text_config": {}})
        True
    """
    get = config.get if isinstance(config, dict) else (lambda k, d=None: getattr(config, k, d))
    return get("vision_config") is not None


class HFVisionModel(ModelHandle):
    """A transformers image-text-to-text model and its processor.

    Args:
        model: a loaded vision-language ``PreTrainedModel`` (``AutoModelForImageTextToText``).
        processor: its processor (tokenizer + image processor, with a chat template).
        name: a display name (default: the model's ``name_or_path``).
        batch_size: prompts per ``generate`` batch.

    Example:
        >>> from transformers import AutoModelForImageTextToText, AutoProcessor
        >>> vlm = HFVisionModel(AutoModelForImageTextToText.from_pretrained(p), AutoProcessor.from_pretrained(p))
        >>> vlm.complete("Describe the image.", images=[[img]], max_new_tokens=16)
    """

    def __init__(self, model: Any, processor: Any, name: str | None = None, batch_size: int = 4):
        tokenizer = getattr(processor, "tokenizer", None)
        if tokenizer is None or not hasattr(processor, "image_processor"):
            raise ModelSpecError(f"{type(processor).__name__} is not a vision-language processor (it needs a tokenizer "
                                 "and an image processor); load it with transformers.AutoProcessor")
        self.model = model
        self.processor = processor
        self.tokenizer = tokenizer
        self.batch_size = batch_size
        tokenizer.padding_side = "left"
        if tokenizer.pad_token_id is None:
            tokenizer.pad_token = tokenizer.eos_token
        config = getattr(model.config, "text_config", None) or model.config
        max_ctx = getattr(config, "max_position_embeddings", None)
        self.name = name or getattr(model.config, "name_or_path", None) or type(model).__name__
        self.capabilities = Capabilities(backend="hf-vlm", chat_template=bool(getattr(processor, "chat_template", None)),
                                         max_context=int(max_ctx) if max_ctx else None, sampling=True, native_n=True,
                                         seed=True, vision=True)

    @classmethod
    def from_pretrained(cls, path: str | Path, *, dtype: Any = None, device: str = "cpu",
                        attn_implementation: str = "sdpa", name: str | None = None,
                        threads: int | None = None, **kwargs: Any) -> HFVisionModel:
        """Load a vision-language model and its processor from a hub id or a local folder.

        Example:
            >>> HFVisionModel.from_pretrained("HuggingFaceTB/SmolVLM-256M-Instruct").capabilities.vision
            True
        """
        from trustlab.models.policy import apply_threads, resolve_dtype

        torch = require("torch", "llm")
        transformers = require("transformers", "llm")
        apply_threads(threads)
        processor = transformers.AutoProcessor.from_pretrained(str(path))
        model = transformers.AutoModelForImageTextToText.from_pretrained(
            str(path), dtype=getattr(torch, resolve_dtype(dtype, device)), attn_implementation=attn_implementation,
            **kwargs)
        model.to(device).eval()  # safe: torch Module.eval(), not Python eval
        return cls(model, processor, name=name or str(path))

    @property
    def device(self) -> Any:
        return next(self.model.parameters()).device

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "dtype": str(next(self.model.parameters()).dtype).removeprefix("torch.")}

    def render(self, prompt: Prompt, n_images: int = 0) -> str:
        """The text the model sees: the chat template over content parts, ``n_images`` image slots before the
        last user turn's text."""
        msgs: list[dict[str, Any]] = [{"role": m["role"], "content": [{"type": "text", "text": m["content"]}]}
                                      for m in as_messages(prompt)]
        last = max((k for k, m in enumerate(msgs) if m["role"] == "user"), default=None)
        if n_images and last is None:
            raise ValueError("a prompt with images needs a user turn to attach them to")
        if n_images:
            msgs[last]["content"] = [{"type": "image"}] * n_images + msgs[last]["content"]
        return self.processor.apply_chat_template(msgs, tokenize=False, add_generation_prompt=True)

    def _generate(self, prompts: list[Prompt], cfg: GenerationConfig, chat_template: bool) -> list[list[Generation]]:
        return self._generate_images(prompts, [[] for _ in prompts], cfg, chat_template)

    def _generate_images(self, prompts: list[Prompt], images: list[list[Any]], cfg: GenerationConfig,
                         chat_template: bool) -> list[list[Generation]]:
        import torch
        from PIL import Image

        from trustlab.report.run import progress

        if not chat_template:
            raise CapabilityError("a vision-language model is prompted through its chat template: chat_template=True")
        images = [[Image.open(im).convert("RGB") if isinstance(im, (str, Path)) else im for im in ims]
                  for ims in images]
        if cfg.seed is not None:
            torch.manual_seed(cfg.seed)
        k = 1 if cfg.greedy else cfg.n
        gen_kwargs = {"max_new_tokens": cfg.max_new_tokens, "do_sample": not cfg.greedy,
                      "num_return_sequences": k, "pad_token_id": self.tokenizer.pad_token_id}
        if not cfg.greedy:
            gen_kwargs.update(temperature=cfg.temperature, top_p=cfg.top_p, top_k=None)
        # prompts with and without images are batched apart: a processor call takes images for all rows or none
        groups = [[i for i in range(len(prompts)) if bool(images[i]) == has] for has in (True, False)]
        chunks = [g[s:s + self.batch_size] for g in groups for s in range(0, len(g), self.batch_size)]
        results: list[list[Generation]] = [[] for _ in prompts]
        for idx in progress(chunks, f"generating ({len(prompts)} prompts)") if len(chunks) > 1 else chunks:
            texts = [self.render(prompts[i], len(images[i])) for i in idx]
            ims = [images[i] for i in idx] if images[idx[0]] else None
            batch = self.processor(text=texts, images=ims, padding=True, return_tensors="pt").to(self.device)
            with torch.inference_mode():
                out = self.model.generate(**batch, **gen_kwargs)
            new = out[:, batch["input_ids"].shape[1]:]  # (B * k, T_new)
            width = int(batch["input_ids"].shape[1])
            for b, i in enumerate(idx):
                samples = [self._decode(new[b * k + j], cfg, width) for j in range(k)]
                results[i] = samples if k == cfg.n else [samples[0]] * cfg.n
        return results

    def _decode(self, row: Any, cfg: GenerationConfig, n_prompt: int) -> Generation:
        ids = row.tolist()
        eos = self.model.generation_config.eos_token_id
        stop_ids = set(eos if isinstance(eos, list) else [eos]) | {self.tokenizer.eos_token_id, self.tokenizer.pad_token_id}
        end = next((t for t, tok in enumerate(ids) if tok in stop_ids), None)
        text = self.tokenizer.decode(ids[:end], skip_special_tokens=True)
        text, hit = strip_at_stop(text, cfg.stop)
        return Generation(text=text, finish_reason="stop" if end is not None or hit else "length", prompt_tokens=n_prompt)
