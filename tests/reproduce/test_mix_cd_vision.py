"""The mix-cd vision reproduction (spec section 6) in quick mode: files, claim schema, resume, compute counts."""

from __future__ import annotations

import gzip
import json
import time

import numpy as np
import pytest

from trustlab.errors import DataFileError
from trustlab.report import read_jsonl, read_summary, write_summary
from trustlab.reproduce import mix_cd_vision as mcv


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("mixcd")
    seen: list[str] = []
    t0 = time.perf_counter()
    claims = mcv.run_vision(out, quick=True, progress=lambda i, n, key: seen.append(key))
    return out, claims, seen, time.perf_counter() - t0


def test_quick_run_writes_files_and_schema_claims(quick_run, tmp_path):
    out, claims, seen, _ = quick_run
    folder = out / "vision"
    for name in ("units.jsonl", "details.json", "pareto.png", "estimator.png"):
        assert (folder / name).stat().st_size > 0, name
    assert len(seen) == len(mcv.ARMS)  # one budget in quick mode: none + 4 rehearsal arms
    write_summary(tmp_path, claims)  # validates against the shared schema
    retained, estimator = read_summary(tmp_path / "summary.json")
    assert retained["method"] == estimator["method"] == "mix-cd"
    assert retained["setup"]["quick"] is True and retained["setup"]["seeds"] == [0]
    assert retained["setup"]["data_source"] in ("fashion-mnist", "digits")
    assert 0.0 <= retained["ours"] <= 1.0 and 0.0 <= retained["baseline"] <= 1.0
    lo, hi = retained["ci"]
    assert -1.0 <= lo <= retained["ours"] - retained["baseline"] <= hi <= 1.0
    fashion = retained["setup"]["data_source"] == "fashion-mnist"
    assert retained["n"] == (retained["setup"]["n_test"] if fashion else mcv.DIGITS["n_test"])  # test images x 1 seed
    assert retained["valid_rate"] is None and retained["measurable"] is True
    assert estimator["baseline"] == 0.7 and estimator["baseline_name"] == "spec threshold"
    assert -1.0 <= estimator["ours"] <= 1.0 and estimator["n"] >= 1
    assert estimator["reproduced"] == (estimator["ours"] >= 0.7)
    assert "Spec verdict" in retained["note"] and "Spec verdict" in estimator["note"]


def test_oracle_pays_extra_passes_and_mixcd_none(quick_run):
    out, *_ = quick_run
    detail = json.loads((out / "vision" / "details.json").read_text())
    units = detail["units"]
    oracle, mix, rand = units["oracle:r=16:seed=0"], units["mixcd:r=16:seed=0"], units["random:r=16:seed=0"]
    assert oracle["forward"]["sampler_extra"] > 0
    assert oracle["forward"]["total"] == oracle["forward"]["train_new"] + oracle["forward"]["train_rehearsed"] \
        + oracle["forward"]["sampler_extra"]
    assert mix["forward"]["sampler_extra"] == 0
    assert mix["forward"]["total"] == rand["forward"]["total"]  # equal rehearsal compute
    assert mix["forward"]["measurement_only"] > 0  # the estimator check, reported apart
    for row in units.values():
        assert 0.0 <= row["p_acc"] <= 1.0 and 0.0 <= row["n_acc"] <= 1.0
    trace = mix["trace"]
    assert trace and all(len(p["alphas"]) == len(p["true_cd_rate"]) == 10 for p in trace)
    assert all(0.0 <= a <= 1.0 for p in trace for a in p["alphas"] + p["true_cd_rate"])
    assert sum(mix["final_counts"]) == 16 * detail["setup"]["steps"]  # every rehearsed sample observed once


def test_rerun_resumes_from_the_jsonl(quick_run):
    out, claims, _, first = quick_run
    lines = (out / "vision" / "units.jsonl").read_text().count("\n")
    seen: list[str] = []
    t0 = time.perf_counter()
    again = mcv.run_vision(out, quick=True, progress=lambda i, n, key: seen.append(key))
    second = time.perf_counter() - t0
    assert seen == [] and second < first
    assert (out / "vision" / "units.jsonl").read_text().count("\n") == lines
    assert json.loads((out / "vision" / "details.json").read_text())["computed_units"] == 0
    assert [c.to_dict() for c in again] == [c.to_dict() for c in claims]


def test_falls_back_to_digits_without_the_debian_package(monkeypatch, tmp_path):
    monkeypatch.setattr(mcv, "fashion_mnist_files", lambda: None)
    data = mcv.load_data(mcv.QUICK)
    assert data["source"] == "digits" and data["dim"] == 64
    assert data["p_train"][0].shape[1] == data["n_train"][0].shape[1] == 64
    with pytest.raises(DataFileError, match="dataset-fashion-mnist"):
        mcv.load_data(mcv.QUICK, source="fashion-mnist")
    claims = mcv.run_vision(tmp_path, quick=True, progress=lambda *a: None)
    assert claims[0].setup["data_source"] == "digits" and claims[0].setup["model"] == "MLP 64-256-10"
    assert len(list(read_jsonl(tmp_path / "vision" / "units.jsonl"))) == len(mcv.ARMS)


def test_read_idx_and_rotation(tmp_path):
    imgs = np.arange(2 * 3 * 3, dtype=np.uint8).reshape(2, 3, 3)
    path = tmp_path / "x.gz"
    with gzip.open(path, "wb") as f:
        f.write((2051).to_bytes(4, "big") + b"".join(n.to_bytes(4, "big") for n in (2, 3, 3)) + imgs.tobytes())
    assert (mcv.read_idx(path) == imgs).all()
    with gzip.open(path, "wb") as f:
        f.write((2049).to_bytes(4, "big") + (5).to_bytes(4, "big") + bytes(4))
    with pytest.raises(DataFileError, match="promises 5"):
        mcv.read_idx(path)
    import torch

    x = torch.arange(9.0).reshape(1, 9)
    assert mcv.rotate(x, 3).reshape(3, 3).tolist() == [[2, 5, 8], [1, 4, 7], [0, 3, 6]]


def test_spearman_and_candidate_bins():
    assert mcv.spearman([1, 2, 3], [10, 20, 30]) == pytest.approx(1.0)
    assert mcv.spearman([1, 2, 3], [3, 2, 1]) == pytest.approx(-1.0)
    assert mcv.spearman([1, 1, 2], [1, 2, 3]) == pytest.approx(np.corrcoef([1.5, 1.5, 3], [1, 2, 3])[0, 1])
    assert mcv.spearman([0.5, 0.5], [1, 2]) is None
    l0 = np.linspace(0, 1, 40)
    k0 = np.arange(40) % 4 != 0
    bins = mcv.candidate_bins(l0, k0, 10)
    assert np.bincount(bins[k0], minlength=10).tolist() == [3] * 10  # equal-size quantiles of the candidates


def test_new_batches_cycle_through_the_new_data():
    seen = np.concatenate([mcv._new_batch(10, 4, s, seed=0) for s in range(5)])
    assert sorted(seen[:10].tolist()) == list(range(10)) and sorted(seen[10:20].tolist()) == list(range(10))
    assert (mcv._new_batch(10, 4, 3, seed=0) == mcv._new_batch(10, 4, 3, seed=0)).all()
