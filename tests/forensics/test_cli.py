"""``trustlab fingerprint``: the run folder, references (save, then identify), and bad input."""

from __future__ import annotations

import json

import numpy as np
from click.testing import CliRunner

from trustlab.cli import main


def _args(tiny_vit, tmp_path, generated):
    return ["fingerprint", generated, "--train", "digits", "--limit-train", "300", "--limit-test", "120",
            "--model", tiny_vit["path"], "--k", "3", "--min-cell", "5", "--cache", str(tmp_path / "emb")]


def test_fingerprint_saves_references_and_identifies(tiny_vit, digits, tmp_path):
    rng = np.random.default_rng(0)
    train = (digits[0].x.numpy() + 1) / 2
    copies = np.clip(train[:150] + 0.02 * rng.normal(size=train[:150].shape), 0, 1).astype(np.float32)
    np.save(tmp_path / "copies.npy", copies)
    np.savez(tmp_path / "copies2.npz", images=(copies[::-1] * 255).astype(np.uint8))
    refs = tmp_path / "refs.json"
    runner = CliRunner()
    for src, fam in ((str(tmp_path / "copies.npy"), "copier"), ("digits:test", "real")):
        res = runner.invoke(main, [*_args(tiny_vit, tmp_path, src), "--references", str(refs),
                                   "--save-reference", fam, "--out", str(tmp_path / fam)])
        assert res.exit_code == 0, res.output
    saved = json.loads(refs.read_text())
    assert [r["family"] for r in saved["references"]] == ["copier", "real"]
    assert saved["references"][0]["curve"][0] < -3  # copies of the training set
    out = tmp_path / "query"
    res = runner.invoke(main, [*_args(tiny_vit, tmp_path, str(tmp_path / "copies2.npz")), "--references", str(refs),
                               "--out", str(out)])
    assert res.exit_code == 0, res.output
    assert f"report: {out / 'report.html'}" in res.output and "family copier" in res.output
    results = json.loads((out / "results.json").read_text())
    assert results["identification"]["family"] == "copier" and len(results["curve"]) == 3
    rows = (out / "samples.jsonl").read_text().splitlines()
    assert [json.loads(r)["id"] for r in rows] == [f"backbone.vit.layers.{i}" for i in range(3)]
    assert (out / "ct_by_layer.png").is_file() and (out / "config.json").is_file()


def test_fingerprint_bad_input(tiny_vit, tmp_path):
    runner = CliRunner()
    (tmp_path / "empty").mkdir()
    for generated, needle in ((str(tmp_path / "empty"), "no image files"), ("nothing.txt", "neither a data set"),
                              ("digits:val", "split must be train or test")):
        res = runner.invoke(main, [*_args(tiny_vit, tmp_path, generated), "--out", str(tmp_path / "bad")])
        assert res.exit_code != 0 and needle in res.output, res.output
    np.save(tmp_path / "few.npy", np.zeros((3, 8, 8), np.float32))
    res = runner.invoke(main, [*_args(tiny_vit, tmp_path, str(tmp_path / "few.npy")), "--out", str(tmp_path / "bad")])
    assert res.exit_code != 0 and "no cell" in res.output, res.output
    res = runner.invoke(main, ["fingerprint", "digits:train", "--train", str(tmp_path / "few.npy")])
    assert res.exit_code != 0 and "give --test" in res.output


def test_fingerprint_on_a_saved_torch_module_with_named_layers(tmp_path):
    import torch

    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.ReLU(), torch.nn.Conv2d(8, 16, 3, stride=2),
                              torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten())
    torch.save(net, tmp_path / "cnn.pt")
    out = tmp_path / "run"
    res = CliRunner().invoke(main, ["fingerprint", "digits:train", "--limit-train", "200", "--limit-test", "100",
                                    "--limit-generated", "100", "--model", str(tmp_path / "cnn.pt"), "--input-size",
                                    "16", "--layers", "0,2", "--k", "3", "--min-cell", "5", "--cache",
                                    str(tmp_path / "emb"), "--out", str(out)])
    assert res.exit_code == 0, res.output
    results = json.loads((out / "results.json").read_text())
    assert results["layers"] == ["0", "2"] and all(c < -3 for c in results["curve"])  # copies of the training set
