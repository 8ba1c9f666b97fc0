"""The quick reproduction end to end: claims with their fields, plots, and a resumed rerun."""

from __future__ import annotations

import json

from tests.snapshots import file_stamps
from trustlab.reproduce.memorization_fingerprint import run


def test_quick_reproduction_writes_claims_and_resumes(tmp_path):
    claims = run(tmp_path, quick=True)
    assert len(claims) == 4
    for c in claims:
        d = c.to_dict()
        assert d["n"] > 0 and d["valid_rate"] is None and d["measurable"] and d["setup"]["quick"] is True
        assert d["ci"] is not None and d["ci"][0] <= d["ci"][1]
    copier = claims[0]
    assert copier.ours < -3 and copier.ours < copier.baseline  # noisy copies copy, even in a 2-epoch ViT
    for name in ("summary.json", "details.json", "ct_by_layer.png", "identification_confusion.png", "samples.png"):
        assert (tmp_path / name).is_file(), name
    details = json.loads((tmp_path / "details.json").read_text())
    rows = details["curves"]["vit-trained"]["rows"]
    assert len(rows) == 4 * 2 * 2 and all(len(r["curve"]) == 3 for r in rows)
    assert set(details["results"]["vit-trained"]["identification"]) == {
        "curves", "single-layer", "pixel mean/std", "logistic regression"}
    before = file_stamps(tmp_path / "checkpoints")
    again = run(tmp_path, quick=True)  # every unit is on disk: nothing is trained, sampled or embedded again
    assert file_stamps(tmp_path / "checkpoints") == before
    assert [c.ours for c in again] == [c.ours for c in claims]
