"""``trustlab train-ddpm`` then ``trustlab attribute`` on a tiny run: the run folders and clean errors."""

from __future__ import annotations

import json

import torch
from click.testing import CliRunner

from trustlab.cli import main

TRAIN = ["train-ddpm", "--limit", "40", "--epochs", "2", "--checkpoints", "2", "--batch-size", "16", "--timesteps",
         "50", "--widths", "8,16", "--groups", "4", "--device", "cpu"]


def test_train_then_attribute(tmp_path):
    runner = CliRunner()
    run_dir, out = tmp_path / "ddpm", tmp_path / "attr"
    for _ in range(2):  # the rerun finds the finished run: nothing retrained, no row written twice
        res = runner.invoke(main, [*TRAIN, "--out", str(run_dir)])
        assert res.exit_code == 0, res.output
        assert f"report: {run_dir / 'report.html'}" in res.output
        assert len((run_dir / "samples.jsonl").read_text().splitlines()) == 2  # one row per epoch
    assert len(list((run_dir / "checkpoints").glob("epoch-*.pt"))) == 2
    assert {"config.json", "results.json", "loss.png", "samples.png"} <= {p.name for p in run_dir.iterdir()}
    queries = tmp_path / "q.pt"
    torch.save(torch.zeros(2, 8, 8), queries)  # (N, H, W): a channel axis is added
    for spec, n in (("test:3", 3), ("train:0,5", 2), (str(queries), 2)):
        res = runner.invoke(main, ["attribute", "--run", str(run_dir), "--queries", spec, "--n-avg", "3", "--n-noise",
                                   "1", "--proj-dim", "64", "--top-k", "4", "--device", "cpu", "--out", str(out)])
        assert res.exit_code == 0, res.output
        assert f"report: {out / 'report.html'}" in res.output
        rows = [json.loads(line) for line in (out / "samples.jsonl").read_text().splitlines()]
        assert len(rows) == n and all(len(r["retrac_proponents"]) == 4 for r in rows)
    assert rows[0]["id"] == "q-0"
    results = json.loads((out / "results.json").read_text())
    assert set(results["generally_influential"]) == {"tracin", "retrac"}
    assert (out / "report.html").exists() and (out / "proponents.png").exists()
    assert (run_dir / "features-proj64-seed0").is_dir()  # the resumable train-feature cache

    res = runner.invoke(main, ["attribute", "--run", str(run_dir), "--queries", "train:99", "--out", str(out)])
    assert res.exit_code == 2 and "0..39" in res.output
    res = runner.invoke(main, ["attribute", "--run", str(tmp_path / "nothing"), "--out", str(out)])
    assert res.exit_code == 2 and "holds no DDPM run" in res.output
    res = runner.invoke(main, [*TRAIN, "--lr", "0.5", "--out", str(run_dir)])
    assert res.exit_code == 2 and "another DDPM run" in res.output
    res = runner.invoke(main, [*TRAIN[:-2], "--widths", "8,x", "--out", str(tmp_path / "w")])
    assert res.exit_code == 2 and "widths" in res.output
