"""The quick reproduction: a real (tiny) DDPM on digits with injected outliers, TracIn and ReTrac scores,
the claim schema, the plots, and the resume (a second run reads the saved units back)."""

from __future__ import annotations

import json
from pathlib import Path

import torch

from tests.snapshots import file_stamps
from trustlab.report.schema import read_summary
from trustlab.reproduce.diffusion_tracin import QUICK, build_data, gi_count, run


def test_quick_run_writes_claims_plots_and_resumes(tmp_path: Path):
    claims = run(tmp_path, quick=True)
    assert len(claims) == 5 and all(c.method == "diffusion-tracin" and c.setup["quick"] for c in claims)
    assert all(c.valid_rate is None and c.measurable for c in claims)
    assert [c.n for c in claims] == [QUICK["norm_samples"], 9, 3, 128, 9]
    assert len(read_summary(tmp_path / "summary.json")) == 5
    detail = json.loads((tmp_path / "details.json").read_text())
    assert detail["outlier_indices"] == list(range(120, 128))
    assert sum(detail["proponent_counts"]["retrac"]) == 9 * QUICK["top_k"]
    assert -1 <= detail["projection"]["tracin"]["pearson_all"] <= 1
    for png in ("grad_norm_by_timestep", "proponent_counts", "proponents", "ddpm_samples"):
        assert (tmp_path / f"{png}.png").stat().st_size > 5_000
    assert not (tmp_path / "checkpoints" / "features").exists()  # deleted once the scores are saved
    before = file_stamps(tmp_path / "checkpoints")
    assert before  # the DDPM checkpoints and the saved scores
    again = run(tmp_path, quick=True)
    assert [c.to_dict() for c in again] == [c.to_dict() for c in claims]
    assert file_stamps(tmp_path / "checkpoints") == before  # nothing retrained or recomputed


def test_outliers_are_inverted_digits_and_gi_counts_shares():
    data = build_data(QUICK)
    out = data["outlier"]
    assert (data["x_train"][out] > 0).float().mean() > 0.5  # inverted: mostly light background
    assert (data["x_train"][: out[0]] < 0).float().mean() > 0.5
    assert data["query_outlier"].sum() == QUICK["q_outlier"]
    tops = torch.tensor([[0, 1], [0, 2], [0, 3], [4, 5], [6, 7]]).numpy()
    assert gi_count(tops, 8, 0.2) == 8  # 20% of 5 queries = 1: every sample that appears
    assert gi_count(tops, 8, 0.6) == 1  # only sample 0 (3 of 5)
