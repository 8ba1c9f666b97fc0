"""Text corpora that ship offline, cut into fixed-length token blocks for pretraining and rehearsal.

English text (``english_documents``), first source found:

* ``python-docs``: the reStructuredText sources of the Python documentation (tutorial, HOWTOs, FAQ,
  "What's New", library and language reference: about 11 MB, 497 files), from Debian's ``python3-doc``
  package (``/usr/share/doc/python3.X/html/_sources``; ``apt-get install python3-doc``). Licence: the
  PSF License Agreement (Python documentation), see ``/usr/share/doc/python3.X/copyright``. Markup is
  stripped to prose paragraphs: directives, comments, code blocks and section underlines are dropped,
  roles (``:func:`len```) keep their text.
* ``pydoc-topics``: the language-reference topics that ship inside every CPython (``pydoc_data.topics``,
  about 750 KB, PSF licence): always there, a smaller corpus of the same kind.
* a path: a ``.txt`` file, or a folder of ``.txt`` / ``.rst.txt`` / ``.md`` files (one document each).

Synthetic strata with known difficulty (``strata_documents``), for the LFR reproduction: ``easy`` (short
word patterns repeated), ``grammar`` (sentences from a small template grammar), ``arithmetic`` ("a+b=c"
with 2-3 digit numbers), and ``noise`` (random tokens: unlearnable). ``arithmetic_examples`` is the
fine-tuning task of the mix-cd reproduction (text the prose model never saw, so learning it displaces what
the model knew).

Example:
    >>> docs, info = english_documents("pydoc-topics")
    >>> info["source"], len(docs) > 50
    ('pydoc-topics', True)
"""

from __future__ import annotations

import glob
import random
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from trustlab.errors import EmptyInputError, TrustlabError

SOURCES = ("python-docs", "pydoc-topics")
_ROLE = re.compile(r":[\w:+.-]+:`!?~?([^`<]*?)\s*(?:<[^>]*>)?`")
_LITERAL = re.compile(r"``([^`]*)``")
_LINK = re.compile(r"`([^`<]*?)\s*(?:<[^>]*>)?`_+")
_UNDERLINE = re.compile(r"^([=\-~^*#+\"'`.:_])\1{2,}\s*$")


def python_docs_root() -> Path | None:
    """The newest ``/usr/share/doc/python3.X/html/_sources`` folder, if Debian's python3-doc is installed."""
    found = sorted(glob.glob("/usr/share/doc/python3*/html/_sources"), key=lambda p: [int(x) for x in
                                                                                    re.findall(r"\d+", p)])
    return Path(found[-1]) if found else None


def rst_to_prose(text: str) -> str:
    """Prose paragraphs of a reStructuredText document (markup stripped; code and directives dropped)."""
    paragraphs, current = [], []
    skip_indented = False
    for line in text.splitlines():
        stripped = line.strip()
        if not stripped:
            if current:
                paragraphs.append(" ".join(current))
                current = []
            continue
        indented = line[:1] in (" ", "\t")
        if indented and (skip_indented or not current):
            continue  # a code block, a directive's body, or an indented literal
        skip_indented = False
        if stripped.startswith(".. ") or stripped == "..":
            skip_indented = True
            if current:
                paragraphs.append(" ".join(current))
                current = []
            continue
        if _UNDERLINE.match(stripped) or stripped.startswith((">>>", "...", "|", "+-", "=")):
            continue
        if stripped.endswith("::"):
            stripped = stripped[:-1].rstrip(": ") + ":" if stripped != "::" else ""
            skip_indented = True
        stripped = _LINK.sub(r"\1", _LITERAL.sub(r"\1", _ROLE.sub(r"\1", stripped)))
        if stripped:
            current.append(stripped)
        if skip_indented and current:
            paragraphs.append(" ".join(current))
            current = []
    if current:
        paragraphs.append(" ".join(current))
    keep = [p for p in paragraphs if len(p.split()) >= 6 and not p.startswith((":", "*"))]
    return "\n\n".join(keep)


def english_documents(source: str = "auto") -> tuple[list[str], dict[str, Any]]:
    """English documents and a record of where they came from (source, path, licence, bytes).

    Args:
        source: ``"auto"`` (python-docs if installed, else pydoc-topics), ``"python-docs"``,
            ``"pydoc-topics"``, or a path to a text file or folder.

    Raises:
        TrustlabError: python-docs is asked for and not installed.
        EmptyInputError: the source holds no text.
    """
    if source == "auto":
        source = "python-docs" if python_docs_root() else "pydoc-topics"
    if source == "python-docs":
        root = python_docs_root()
        if root is None:
            raise TrustlabError("the Python documentation sources are not installed: apt-get install python3-doc "
                                "(Debian/Ubuntu), or use --corpus pydoc-topics or a path to your own text")
        files = sorted(root.rglob("*.rst.txt"))
        docs = [rst_to_prose(f.read_text(encoding="utf-8", errors="replace")) for f in files]
        info = {"source": source, "path": str(root), "files": len(files),
                "licence": f"PSF License Agreement (Python documentation); see {root.parents[1] / 'copyright'}"}
    elif source == "pydoc-topics":
        from pydoc_data.topics import topics

        docs = [topics[k] for k in sorted(topics)]
        info = {"source": source, "path": "pydoc_data.topics (CPython standard library)", "files": len(docs),
                "licence": "PSF License Agreement (ships with CPython)"}
    else:
        path = Path(source)
        if not path.exists():
            raise TrustlabError(f"corpus {source!r} is neither {' nor '.join(SOURCES)} nor an existing path")
        files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.suffix in (".txt", ".md"))
        docs = [f.read_text(encoding="utf-8", errors="replace") for f in files]
        info = {"source": "path", "path": str(path), "files": len(files), "licence": "the user's own"}
    docs = [d for d in docs if d.strip()]
    if not docs:
        raise EmptyInputError(f"corpus {source!r} holds no text")
    info["bytes"] = sum(len(d.encode()) for d in docs)
    return docs, info


def split_documents(docs: Sequence[str], val_fraction: float, seed: int = 0) -> tuple[list[str], list[str]]:
    """A document-level train / validation split (no block of a validation document is trained on)."""
    order = list(range(len(docs)))
    random.Random(seed).shuffle(order)
    n_val = max(1, round(val_fraction * len(docs))) if len(docs) > 1 else 0
    val = [docs[i] for i in sorted(order[:n_val])]
    train = [docs[i] for i in sorted(order[n_val:])]
    return train, val


def blocks_from_ids(ids: Sequence[int], block_len: int, max_blocks: int | None = None) -> torch.Tensor:
    """Cut a token stream into ``(n, block_len)`` blocks (the tail that does not fill a block is dropped)."""
    if block_len < 2:
        raise TrustlabError(f"block length {block_len} is too short (a block needs at least 2 tokens)")
    n = len(ids) // block_len
    if n == 0:
        raise EmptyInputError(f"the corpus has {len(ids)} tokens, fewer than one block of {block_len}: "
                              "use a shorter --block-len or more text")
    if max_blocks is not None:
        n = min(n, max_blocks)
    return torch.tensor(np.asarray(ids[: n * block_len], dtype=np.int64).reshape(n, block_len))


# --- synthetic strata ---------------------------------------------------------------------------------------
_WORDS = ("red blue green small large quick slow bright dark warm cold old new soft hard").split()
_NOUNS = ("cat dog bird river stone house tree ship cloud road city child horse lamp book").split()
_VERBS = ("sees finds follows carries watches builds paints opens moves holds").split()
_PLACES = ("near the hill", "by the sea", "in the town", "under the bridge", "at night", "in spring")


def _easy(rng: random.Random) -> str:
    pattern = " ".join(rng.choice(_WORDS) for _ in range(rng.randint(2, 3)))
    return " ".join([pattern] * 40)


def _grammar(rng: random.Random) -> str:
    out = []
    for _ in range(12):
        out.append(f"the {rng.choice(_WORDS)} {rng.choice(_NOUNS)} {rng.choice(_VERBS)} the "
                   f"{rng.choice(_WORDS)} {rng.choice(_NOUNS)} {rng.choice(_PLACES)}.")
    return " ".join(out)


def arithmetic_line(rng: random.Random) -> str:
    a, b = rng.randint(10, 999), rng.randint(10, 999)
    return f"{a}+{b}={a + b}"


def _arithmetic(rng: random.Random) -> str:
    return " ; ".join(arithmetic_line(rng) for _ in range(16))


STRATA = ("easy", "grammar", "arithmetic", "prose", "noise")
LEARNABLE = ("easy", "grammar", "arithmetic", "prose")


def strata_documents(kind: str, n_docs: int, seed: int) -> list[str]:
    """``n_docs`` synthetic documents of stratum ``kind`` (``easy``, ``grammar`` or ``arithmetic``)."""
    make = {"easy": _easy, "grammar": _grammar, "arithmetic": _arithmetic}.get(kind)
    if make is None:
        raise TrustlabError(f"no synthetic stratum {kind!r}")
    rng = random.Random(f"{kind}-{seed}")
    return [make(rng) for _ in range(n_docs)]


def noise_blocks(n: int, block_len: int, vocab: Sequence[int], seed: int) -> torch.Tensor:
    """``(n, block_len)`` blocks of tokens drawn uniformly from ``vocab``: nothing in them can be learned."""
    rng = np.random.default_rng(seed)
    vocab = np.asarray(vocab, dtype=np.int64)
    return torch.tensor(vocab[rng.integers(0, len(vocab), size=(n, block_len))])


def arithmetic_examples(n: int, seed: int) -> list[dict[str, str]]:
    """The mix-cd fine-tuning task: ``{"prompt": "a+b=", "response": "c"}`` with 2-3 digit numbers."""
    rng = random.Random(f"arith-task-{seed}")
    out = []
    for _ in range(n):
        a, b = rng.randint(10, 999), rng.randint(10, 999)
        out.append({"prompt": f"{a}+{b}=", "response": f"{a + b}"})
    return out
