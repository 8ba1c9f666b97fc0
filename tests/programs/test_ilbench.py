"""SynTree generation (deterministic, ground truth, noise, OOD) and IL-Bench loaders (offline: clear errors)."""

from __future__ import annotations

import json
import time
from collections import Counter
from pathlib import Path

import pytest

from trustlab.bench.ilbench import (
    IlBenchUnavailableError,
    load_ilbench,
    load_rows,
    make_syntree,
    render,
    tree_label,
)
from trustlab.errors import DataFileError, EmptyInputError

DATA = Path(__file__).parent / "data"


@pytest.mark.parametrize("depth", [2, 3])
def test_frozen_seed0_split(depth):
    """The shipped seed-0 splits (written once by the generator named in each file) are what it makes now."""
    frozen = json.loads((DATA / f"syntree_d{depth}_seed0.json").read_text())
    task = make_syntree(depth=depth, n_train=200, n_test=100, seed=0)
    assert task.tree == frozen["tree"] and task.labels == frozen["labels"]
    assert [[r["input"], r["label"]] for r in task.train] == frozen["train"]
    assert [[r["input"], r["label"]] for r in task.test] == frozen["test"]


def test_tree_shape_and_labels():
    for seed in range(5):
        task = make_syntree(depth=3, seed=seed, n_train=50, n_test=10)
        for row in task.train + task.test:
            assert row["label"] == tree_label(task.tree, row["attrs"]) == task.label_of(row["attrs"])
            assert row["input"] == render(row["attrs"])
        leaves, stack = [], [task.tree]
        while stack:
            n = stack.pop()
            if "label" in n:
                leaves.append(n["label"])
            else:
                assert n["yes"].get("label") is None or n["yes"].get("label") != n["no"].get("label")
                stack += [n["yes"], n["no"]]
        assert len(leaves) == 8 and set(leaves) == set(task.labels)
        assert task.rule_text().count("if the") == 7


def test_seeds_differ_and_repeat():
    a, b = make_syntree(seed=1), make_syntree(seed=1)
    assert a.train == b.train and a.tree == b.tree
    assert make_syntree(seed=2).train != a.train


def test_label_noise_only_in_train():
    task = make_syntree(depth=2, n_train=1000, n_test=200, noise=0.2, seed=0)
    flipped = sum(r["label"] != r["true_label"] for r in task.train) / len(task.train)
    assert 0.15 < flipped < 0.25
    assert all(r["label"] == r["true_label"] for r in task.test)


def test_ood_split_holds_out_a_combination():
    task = make_syntree(depth=2, n_train=300, n_test=50, ood=True, n_ood=40, seed=4)
    (a1, v1), (a2, v2) = task.held_out
    assert a1 == task.tree["attr"] and a2 != a1
    held = [r for r in task.train + task.test if r["attrs"][a1] == v1 and r["attrs"][a2] == v2]
    assert not held
    assert len(task.ood_test) == 40 and all(r["attrs"][a1] == v1 and r["attrs"][a2] == v2 for r in task.ood_test)
    assert Counter(r["label"] == tree_label(task.tree, r["attrs"]) for r in task.ood_test) == {True: 40}


def test_bad_generator_arguments():
    for kwargs in ({"depth": 0}, {"depth": 7}, {"n_classes": 1}, {"noise": 1.0}, {"n_attributes": 1},
                   {"n_train": 0}):
        with pytest.raises(ValueError):
            make_syntree(**kwargs)


def test_load_rows(tmp_path):
    path = tmp_path / "d.jsonl"
    path.write_text('{"input": "a b", "label": "x"}\n\n{"input": "c", "label": 1}\n')
    assert load_rows(path) == [{"input": "a b", "label": "x"}, {"input": "c", "label": "1"}]
    (tmp_path / "l.json").write_text(json.dumps([{"text": "q", "y": "z"}]))
    assert load_ilbench(tmp_path / "l.json", input_key="text", label_key="y") == [{"input": "q", "label": "z"}]
    (tmp_path / "empty.jsonl").write_text("\n")
    with pytest.raises(EmptyInputError):
        load_rows(tmp_path / "empty.jsonl")
    (tmp_path / "bad.jsonl").write_text('{"input": "a"}\n')
    with pytest.raises(DataFileError, match="row 1 needs the keys"):
        load_rows(tmp_path / "bad.jsonl")
    (tmp_path / "nolabel.jsonl").write_text('{"input": "a", "label": ""}\n')
    with pytest.raises(DataFileError, match="empty or non-scalar"):
        load_rows(tmp_path / "nolabel.jsonl")
    (tmp_path / "broken.jsonl").write_text('{"input": \n')
    with pytest.raises(DataFileError, match="not valid JSON"):
        load_rows(tmp_path / "broken.jsonl")
    with pytest.raises(DataFileError, match="not a file"):
        load_rows(tmp_path / "missing.jsonl")


def test_hub_id_offline_fails_fast(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    t0 = time.perf_counter()
    with pytest.raises(IlBenchUnavailableError, match="HF_HUB_OFFLINE"):
        load_ilbench("someone/ilbench-cubcap")
    assert time.perf_counter() - t0 < 1.0
    with pytest.raises(DataFileError, match="neither a file"):
        load_ilbench("not-a-dataset")


def test_hub_unreachable_fails_fast(monkeypatch):
    from tests.servers import free_port

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("HF_DATASETS_OFFLINE", raising=False)
    monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{free_port()}")  # nothing listens there
    t0 = time.perf_counter()
    with pytest.raises(IlBenchUnavailableError, match="unreachable"):
        load_ilbench("someone/ilbench-cubcap")
    assert time.perf_counter() - t0 < 5.0
