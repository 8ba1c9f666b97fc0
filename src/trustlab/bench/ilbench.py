"""IL-Bench tasks: an offline SynTree generator, and loaders for the public IL-Bench tasks.

SynTree (Wang et al., "Large Language Models are Interpretable Learners", ICLR 2025) is a synthetic
classification task from a random decision tree over made-up symbols, so no pretrained model knows the
rule and it must be learned from data; the true rule is known. The paper's generator and data were not
released; this one is ours (spec lsp-ilbench.md, section 6), deterministic given its seed.

Decisions, written down here because the paper does not give them:

- [recon] Items have ``n_attributes`` invented attributes (default 6; names from :data:`ATTRIBUTE_WORDS`),
  each with 3-4 invented values (:data:`VALUE_WORDS`), drawn uniformly and independently; an item is
  rendered as one sentence in a fixed attribute order: ``"The blorp is teal-ish ..."``. The values are
  invented words, so nothing but the examples says what they mean.
- [recon] The tree is binary: an internal node tests ``attribute == value`` (an attribute is tested at most
  once on a path), every path has exactly ``depth`` tests, so there are ``2 ** depth`` leaves. Leaves carry
  one of ``n_classes`` invented class names (:data:`CLASS_WORDS`), siblings never share a class (every test
  matters) and, when there are at least as many leaves as classes, every class occurs.
- Label noise: with probability ``noise`` a *training* item's label is replaced by another class (test
  labels are always the tree's). The true labels are kept in ``true_label``.
- Out of distribution (``ood=True``): one (attribute, value) pair tested by the root and one value of
  another attribute form a *held-out combination*; training items never show it, ``ood_test`` holds only
  items that do (their labels still come from the tree). ``test`` stays in distribution.

Loaders: :func:`load_rows` reads a JSON list or JSONL file of ``{"input": ..., "label": ...}`` rows (or any
two columns named by ``input_key`` / ``label_key``); :func:`load_ilbench` also accepts a Hugging Face hub
id, read with ``datasets`` when online. Offline (``HF_HUB_OFFLINE=1`` / ``HF_DATASETS_OFFLINE=1``, or the
hub unreachable within a few seconds) it raises :class:`IlBenchUnavailableError` at once instead of
waiting on retries. Tests never download.

Example:
    >>> task = make_syntree(depth=2, n_train=200, n_test=100, seed=0)
    >>> task.train[0]["input"], task.train[0]["label"]
    >>> print(task.rule_text())
"""

from __future__ import annotations

import json
import os
import socket
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import numpy as np

from trustlab.errors import DataFileError, EmptyInputError, TrustlabError

ATTRIBUTE_WORDS = ("blorp", "glim", "frell", "quon", "zarb", "yint", "mortle", "skiv", "plunth", "dravv")
VALUE_WORDS = ("teal", "vosk", "pim", "drabe", "kelo", "snur", "ottle", "jask", "wemp", "fozz", "lirr", "quib",
               "barn", "treg", "nolp", "higg", "zent", "mab", "crull", "yeft", "pardo", "gwim", "tolk", "ress",
               "umber", "flan", "sprig", "dolo", "kwell", "rask")
CLASS_WORDS = ("zand", "murl", "pib", "hosk", "tarv")


class IlBenchUnavailableError(TrustlabError, ConnectionError):
    """A public IL-Bench task cannot be read here (offline, hub unreachable, or ``datasets`` missing)."""


@dataclass
class SynTreeTask:
    """One generated SynTree task.

    Attributes:
        attributes: attribute name -> its possible values.
        tree: the ground-truth tree: ``{"attr", "value", "yes", "no"}`` nodes, ``{"label"}`` leaves.
        labels: the class names in use.
        train, test: rows ``{"input", "label", "true_label", "attrs"}``.
        ood_test: held-out-combination rows (empty unless ``ood``).
        held_out: the held-out combination ``[[attr, value], [attr, value]]`` (None unless ``ood``).
        config: the generator's arguments (with the seed).
    """

    attributes: dict[str, list[str]]
    tree: dict[str, Any]
    labels: list[str]
    train: list[dict[str, Any]]
    test: list[dict[str, Any]]
    ood_test: list[dict[str, Any]] = field(default_factory=list)
    held_out: list[list[str]] | None = None
    config: dict[str, Any] = field(default_factory=dict)

    def label_of(self, attrs: dict[str, str]) -> str:
        """The tree's label for an attribute assignment."""
        return tree_label(self.tree, attrs)

    def rule_text(self) -> str:
        """The ground-truth rule as nested if/else lines."""
        return "\n".join(_rule_lines(self.tree, 0))


def tree_label(node: dict[str, Any], attrs: dict[str, str]) -> str:
    """Follow ``node``'s tests down to a leaf label."""
    while "label" not in node:
        node = node["yes"] if attrs[node["attr"]] == node["value"] else node["no"]
    return node["label"]


def _rule_lines(node: dict[str, Any], indent: int) -> list[str]:
    pad = "  " * indent
    if "label" in node:
        return [f"{pad}label {node['label']}"]
    return ([f"{pad}if the {node['attr']} is {node['value']}:", *_rule_lines(node["yes"], indent + 1),
             f"{pad}else:", *_rule_lines(node["no"], indent + 1)])


def render(attrs: dict[str, str]) -> str:
    """An item as one sentence, attributes in the task's order.

    Example:
        >>> render({"blorp": "teal", "glim": "pim"})
        'The blorp is teal, its glim is pim.'
    """
    parts = [f"its {a} is {v}" for a, v in attrs.items()]
    first = parts[0].replace("its ", "The ", 1)
    return ", ".join([first, *parts[1:]]) + "."


def _grow(rng: np.random.Generator, attributes: dict[str, list[str]], depth: int, used: tuple[str, ...]) -> dict:
    if depth == 0:
        return {"label": None}
    attr = str(rng.choice([a for a in attributes if a not in used]))
    value = str(rng.choice(attributes[attr]))
    return {"attr": attr, "value": value, "yes": _grow(rng, attributes, depth - 1, (*used, attr)),
            "no": _grow(rng, attributes, depth - 1, (*used, attr))}


def _leaves(node: dict[str, Any]) -> list[dict[str, Any]]:
    return [node] if "attr" not in node else _leaves(node["yes"]) + _leaves(node["no"])


def _label_leaves(rng: np.random.Generator, tree: dict[str, Any], classes: list[str]) -> None:
    """Sibling leaves get different classes; every class occurs when there are enough leaves."""
    leaves = _leaves(tree)
    for _ in range(1000):
        picks = [str(c) for c in rng.choice(classes, size=len(leaves))]
        pairs_differ = all(picks[i] != picks[i + 1] for i in range(0, len(picks), 2))
        if pairs_differ and (len(set(picks)) == len(classes) or len(leaves) < len(classes)):
            break
    for leaf, c in zip(leaves, picks, strict=True):
        leaf["label"] = c


def make_syntree(depth: int = 2, *, n_train: int = 200, n_test: int = 100, n_attributes: int = 6,
                 n_classes: int = 3, noise: float = 0.0, ood: bool = False, n_ood: int | None = None,
                 seed: int = 0) -> SynTreeTask:
    """Generate a SynTree task (see the module docstring for every choice).

    Args:
        depth: tests on every root-to-leaf path (1 to ``n_attributes``).
        n_train, n_test: items per split.
        n_attributes: invented attributes per item (2 to 10).
        n_classes: invented class names (2 to 5).
        noise: share of training labels replaced by another class (0 to < 1).
        ood: hold out one attribute-value combination from training and test it in ``ood_test``.
        n_ood: items in ``ood_test`` (default ``n_test``).
        seed: everything is deterministic given it.

    Raises:
        ValueError: an argument outside its range.

    Example:
        >>> task = make_syntree(depth=3, noise=0.1, ood=True, seed=1)
        >>> len(task.ood_test), task.held_out
    """
    if not 2 <= n_attributes <= len(ATTRIBUTE_WORDS):
        raise ValueError(f"n_attributes must be 2..{len(ATTRIBUTE_WORDS)}, got {n_attributes}")
    if not 1 <= depth <= n_attributes:
        raise ValueError(f"depth must be 1..n_attributes ({n_attributes}), got {depth}")
    if not 2 <= n_classes <= len(CLASS_WORDS):
        raise ValueError(f"n_classes must be 2..{len(CLASS_WORDS)}, got {n_classes}")
    if not 0 <= noise < 1:
        raise ValueError(f"noise must be in [0, 1), got {noise}")
    if n_train < 1 or n_test < 1:
        raise ValueError(f"n_train and n_test must be >= 1, got {n_train} and {n_test}")
    rng = np.random.default_rng(seed)
    names = [str(a) for a in rng.choice(ATTRIBUTE_WORDS, size=n_attributes, replace=False)]
    pool = [str(v) for v in rng.permutation(VALUE_WORDS)]
    attributes: dict[str, list[str]] = {}
    for a in names:
        k = int(rng.integers(3, 5))
        attributes[a], pool = pool[:k], pool[k:]
    classes = [str(c) for c in rng.choice(CLASS_WORDS, size=n_classes, replace=False)]
    tree = _grow(rng, attributes, depth, ())
    _label_leaves(rng, tree, classes)
    held = None
    if ood:
        other = str(rng.choice([a for a in names if a != tree["attr"]]))
        held = [[tree["attr"], tree["value"]], [other, str(rng.choice(attributes[other]))]]

    def held_out(attrs: dict[str, str]) -> bool:
        return held is not None and all(attrs[a] == v for a, v in held)

    def draw(n: int, want_held: bool) -> list[dict[str, Any]]:
        rows = []
        while len(rows) < n:
            attrs = {a: str(rng.choice(vals)) for a, vals in attributes.items()}
            if want_held:
                attrs.update({a: v for a, v in held})
            elif held_out(attrs):
                continue
            label = tree_label(tree, attrs)
            rows.append({"input": render(attrs), "label": label, "true_label": label, "attrs": attrs})
        return rows

    train, test = draw(n_train, False), draw(n_test, False)
    for row in train:
        if noise and rng.random() < noise:
            row["label"] = str(rng.choice([c for c in classes if c != row["true_label"]]))
    config = {"depth": depth, "n_train": n_train, "n_test": n_test, "n_attributes": n_attributes,
              "n_classes": n_classes, "noise": noise, "ood": ood, "seed": seed}
    return SynTreeTask(attributes, tree, classes, train, test, draw(n_ood or n_test, True) if ood else [], held,
                       config)


def _pairs(records: list[Any], where: str, input_key: str, label_key: str) -> list[dict[str, str]]:
    rows = []
    for i, rec in enumerate(records):
        if not isinstance(rec, dict) or input_key not in rec or label_key not in rec:
            raise DataFileError(f"{where}: row {i + 1} needs the keys {input_key!r} and {label_key!r}, got "
                                f"{str(rec)[:120]}")
        x, y = rec[input_key], rec[label_key]
        if not isinstance(x, str) or not x.strip():
            raise DataFileError(f"{where}: row {i + 1} has an empty or non-text {input_key!r}: {x!r}")
        if not isinstance(y, (str, int, bool)) or not str(y).strip():
            raise DataFileError(f"{where}: row {i + 1} has an empty or non-scalar {label_key!r} (a label must be "
                                f"a short text or an integer): {y!r}")
        rows.append({"input": x.strip(), "label": str(y).strip()})
    if not rows:
        raise EmptyInputError(f"{where} holds no rows; give at least one {{{input_key!r}: ..., {label_key!r}: ...}}")
    return rows


def load_rows(path: str | os.PathLike, *, input_key: str = "input", label_key: str = "label") -> list[dict[str, str]]:
    """``{"input", "label"}`` rows from a JSONL file or a JSON list (labels become strings).

    Raises:
        DataFileError: missing file, a line that is not JSON, a row without the keys or with an empty value.
        EmptyInputError: no rows.

    Example:
        >>> rows = load_rows("train.jsonl")
    """
    p = Path(path)
    if not p.is_file():
        raise DataFileError(f"{p} is not a file; give a JSONL file of {{\"input\": ..., \"label\": ...}} rows")
    text = p.read_text(encoding="utf-8")
    try:
        if p.suffix == ".json":
            records = json.loads(text)
            if not isinstance(records, list):
                raise DataFileError(f"{p}: a .json file must hold a list of rows")
        else:
            records = [json.loads(line) for line in text.splitlines() if line.strip()]
    except json.JSONDecodeError as exc:
        raise DataFileError(f"{p} is not valid JSON/JSONL ({exc}); one {{\"input\", \"label\"}} object per line") \
            from exc
    return _pairs(records, str(p), input_key, label_key)


def _hub_reachable(timeout: float = 3.0) -> bool:
    url = urlparse(os.environ.get("HF_ENDPOINT", "https://huggingface.co"))
    try:
        with socket.create_connection((url.hostname or "", url.port or 443), timeout=timeout):
            return True
    except OSError:
        return False


def load_ilbench(source: str | os.PathLike, *, split: str = "train", input_key: str = "input",
                 label_key: str = "label", config_name: str | None = None) -> list[dict[str, str]]:
    """Rows of a public IL-Bench task: a local JSON/JSONL file, or a Hugging Face hub dataset id.

    Args:
        source: a file path, or a hub id such as ``"org/ilbench-cubcap"`` (read with ``datasets``).
        split: the hub dataset's split.
        input_key, label_key: the columns holding the input text and the label.
        config_name: the hub dataset's configuration, if it has several.

    Raises:
        IlBenchUnavailableError: a hub id while offline or with the hub unreachable, or ``datasets`` missing.
        DataFileError, EmptyInputError: see :func:`load_rows`.

    Example:
        >>> rows = load_ilbench("data/cubcap_group1_train.jsonl")
    """
    text = os.fspath(source)
    if Path(text).exists() or text.endswith((".json", ".jsonl")):
        return load_rows(text, input_key=input_key, label_key=label_key)
    if "/" not in text:
        raise DataFileError(f"{text!r} is neither a file nor a Hugging Face dataset id (org/name)")
    if os.environ.get("HF_HUB_OFFLINE") == "1" or os.environ.get("HF_DATASETS_OFFLINE") == "1":
        raise IlBenchUnavailableError(f"{text!r} is a hub dataset, but HF_HUB_OFFLINE/HF_DATASETS_OFFLINE is set; "
                                      "download it where there is a network and pass the JSONL path instead")
    if not _hub_reachable():
        raise IlBenchUnavailableError(f"the Hugging Face hub is unreachable, so {text!r} cannot be read; pass a "
                                      "local JSON/JSONL path instead")
    try:
        import datasets
    except ImportError as exc:
        raise IlBenchUnavailableError("reading hub datasets needs `pip install datasets`") from exc
    try:
        data = datasets.load_dataset(text, config_name, split=split)
    except Exception as exc:  # datasets raises many types (FileNotFoundError, ConnectionError, DatasetNotFoundError)
        raise IlBenchUnavailableError(f"could not load {text!r} (split {split!r}) from the hub: {exc}") from exc
    return _pairs(list(data), text, input_key, label_key)
