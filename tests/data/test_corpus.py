"""Offline corpora (:mod:`trustlab.data.corpus`): real English text from the Python documentation, the
synthetic strata of the LFR reproduction, and blocks cut from token streams (with their bad input)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from trustlab.data.corpus import (
    arithmetic_examples,
    blocks_from_ids,
    english_documents,
    noise_blocks,
    python_docs_root,
    rst_to_prose,
    split_documents,
    strata_documents,
)
from trustlab.errors import EmptyInputError, TrustlabError

RST = """.. _tut-if:

:keyword:`!if` Statements
=========================

Perhaps the most well-known statement type is the :keyword:`if` statement.  For
example::

   >>> x = int(input("Please enter an integer: "))

There can be zero or more ``elif`` parts, see :ref:`the match statement <tut-match>` for more.

.. note::
   This note body is dropped entirely, it is a directive.
"""


def test_rst_markup_is_stripped_to_prose():
    text = rst_to_prose(RST)
    assert "Perhaps the most well-known statement type is the if statement.  For example:" in text
    assert "There can be zero or more elif parts, see the match statement for more." in text
    assert ">>>" not in text and "====" not in text and "directive" not in text and ":keyword:" not in text


def test_pydoc_topics_ship_with_python():
    docs, info = english_documents("pydoc-topics")
    assert info["source"] == "pydoc-topics" and "PSF" in info["licence"]
    assert info["bytes"] > 300_000 and len(docs) > 50
    assert sum("the" in d.split() for d in docs) > 0.9 * len(docs)  # English text


@pytest.mark.skipif(python_docs_root() is None, reason="Debian python3-doc is not installed (apt-get install python3-doc)")
def test_python_docs_give_megabytes_of_prose():
    docs, info = english_documents("python-docs")
    assert info["files"] > 400 and info["bytes"] > 2_000_000
    assert any("Besides the while statement just introduced" in d for d in docs)


def test_a_path_corpus_and_bad_sources(tmp_path: Path):
    (tmp_path / "a.txt").write_text("one two three four five six seven")
    (tmp_path / "b.md").write_text("eight nine ten")
    docs, info = english_documents(str(tmp_path))
    assert len(docs) == 2 and info["source"] == "path"
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "x.txt").write_text("   \n")
    with pytest.raises(EmptyInputError, match="holds no text"):
        english_documents(str(tmp_path / "empty"))
    with pytest.raises(TrustlabError, match="neither"):
        english_documents("no-such-corpus")


def test_blocks_and_splits():
    b = blocks_from_ids(list(range(10)), 4)
    assert b.tolist() == [[0, 1, 2, 3], [4, 5, 6, 7]]
    with pytest.raises(EmptyInputError, match="fewer than one block"):
        blocks_from_ids(list(range(3)), 4)
    with pytest.raises(TrustlabError, match="too short"):
        blocks_from_ids(list(range(10)), 1)
    train, val = split_documents([f"d{i}" for i in range(20)], 0.1, seed=0)
    assert len(val) == 2 and not set(train) & set(val) and len(train) + len(val) == 20


def test_strata_are_deterministic_and_distinct():
    easy = strata_documents("easy", 3, seed=0)
    assert easy == strata_documents("easy", 3, seed=0) != strata_documents("easy", 3, seed=1)
    assert len(set(easy[0].split())) <= 3  # one short pattern repeated
    for eq in strata_documents("arithmetic", 2, seed=0)[0].split(" ; "):
        a, rest = eq.split("+")
        b, c = rest.split("=")
        assert int(a) + int(b) == int(c)
    noise = noise_blocks(4, 8, [3, 5, 7], seed=0)
    assert isinstance(noise, torch.Tensor) and noise.shape == (4, 8) and set(noise.unique().tolist()) <= {3, 5, 7}
    for e in arithmetic_examples(5, seed=0):
        a, b = e["prompt"][:-1].split("+")
        assert int(a) + int(b) == int(e["response"])
    with pytest.raises(TrustlabError, match="no synthetic stratum"):
        strata_documents("prose", 1, seed=0)
