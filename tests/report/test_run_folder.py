"""Run folders keyed by their configuration: resume, start fresh, never duplicate, survive a kill."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest

from trustlab.report import RunFolder, append_jsonl, config_hash, read_jsonl


def test_same_config_resumes_and_never_duplicates_a_row(tmp_path):
    run = RunFolder(tmp_path / "run", {"seed": 0, "sizes": [1, 2]})
    assert run.add_sample({"id": "a", "v": 1}) and run.add_sample({"id": "b", "v": 2})
    again = RunFolder(tmp_path / "run", {"sizes": [1, 2], "seed": 0})  # key order does not matter
    assert again.resumed and again.done_keys() == {"a", "b"}
    assert not again.add_sample({"id": "a", "v": 99})
    again.add_sample({"id": "c", "v": 3})
    rows = again.samples()
    assert [r["id"] for r in rows] == ["a", "b", "c"] and rows[0]["v"] == 1
    cfg = json.loads((tmp_path / "run" / "config.json").read_text())
    assert cfg["config_hash"] == config_hash({"seed": 0, "sizes": [1, 2]}) and cfg["resumed"] is True


def test_other_config_starts_fresh_and_keeps_the_old_files_aside(tmp_path):
    run = RunFolder(tmp_path / "run", {"lengths": [250, 1000]})
    run.add_sample({"id": "len2000", "v": 1})
    (tmp_path / "run" / "plot.png").write_bytes(b"png")
    fresh = RunFolder(tmp_path / "run", {"lengths": [250]})
    assert not fresh.resumed and fresh.samples() == [] and fresh.done_keys() == set()
    assert not (tmp_path / "run" / "plot.png").exists()
    moved = list((tmp_path / "run" / ".superseded").iterdir())
    assert len(moved) == 1 and moved[0].name.startswith(config_hash({"lengths": [250, 1000]}))
    assert [r["id"] for r in read_jsonl(moved[0] / "samples.jsonl")] == ["len2000"]
    forced = RunFolder(tmp_path / "run", {"lengths": [250]}, fresh=True)
    assert not forced.resumed


def test_the_hash_ignores_timestamps_and_machine_info():
    assert config_hash({"a": 1, "started": "x", "machine": {"cpus": 2}}) == config_hash({"a": 1})
    assert config_hash({"a": 1}) != config_hash({"a": 2})


def test_append_after_a_torn_line_keeps_every_complete_row(tmp_path):
    p = tmp_path / "s.jsonl"
    append_jsonl(p, {"id": 1})
    with open(p, "ab") as f:
        f.write('{"id": 2, "text": "caf\u00e9'.encode()[:-1])  # torn mid-character
    assert [r["id"] for r in read_jsonl(p)] == [1]
    append_jsonl(p, {"id": 3})
    assert [r["id"] for r in read_jsonl(p)] == [1, 3]
    assert p.read_bytes().endswith(b"\n") and p.read_bytes().count(b"\n") == 2


_WRITER = textwrap.dedent("""
    import sys, time
    from trustlab.report import RunFolder
    run = RunFolder(sys.argv[1], {"command": "kill-test", "items": 400})
    done = run.done_keys()
    print("resumed" if run.resumed else "fresh", len(done), flush=True)
    for i in range(400):
        if i in done:
            continue
        run.add_sample({"id": i, "payload": "x" * 20000})
        time.sleep(0.002)
    print("finished", flush=True)
""")


def test_a_killed_run_resumes_without_losing_or_duplicating_rows(tmp_path):
    script = tmp_path / "writer.py"
    script.write_text(_WRITER)
    folder = tmp_path / "run"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    proc = subprocess.Popen([sys.executable, str(script), str(folder)], stdout=subprocess.PIPE, text=True, env=env)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:  # kill it once a good part of the rows is on disk
        if (folder / "samples.jsonl").exists() and (folder / "samples.jsonl").stat().st_size > 40 * 20000:
            break
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait(10)
    assert proc.returncode == -signal.SIGKILL
    before = [r["id"] for r in read_jsonl(folder / "samples.jsonl")]
    assert 0 < len(before) < 400, "the run must be killed part-way"
    with open(folder / "samples.jsonl", "ab") as f:  # and, to be sure, a row torn mid-write
        f.write(b'{"id": %d, "payload": "xx' % (max(before) + 1))
    out = subprocess.run([sys.executable, str(script), str(folder)], capture_output=True, text=True, env=env,
                         timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines()[0] == f"resumed {len(before)}"
    rows = list(read_jsonl(folder / "samples.jsonl"))
    assert sorted(r["id"] for r in rows) == list(range(400))
    assert all(len(r["payload"]) == 20000 for r in rows)


@pytest.mark.parametrize("text", ["{not json}\n{\"id\": 2}\n"])
def test_damage_other_than_a_torn_tail_is_an_error(tmp_path, text):
    p = tmp_path / "s.jsonl"
    p.write_text(text)
    with pytest.raises(ValueError, match="line 1"):
        list(read_jsonl(p))


def test_a_killed_trustlab_generate_resumes_with_the_answers_of_an_uninterrupted_run(tiny_dir, tmp_path):
    """SIGKILL a real `trustlab generate --out` part-way, rerun it, compare with a run that was never killed."""
    prompts = [f"Tell me fact number {i} about the sea." for i in range(12)]
    cmd = [sys.executable, "-m", "trustlab", "generate", *prompts, "--model", str(tiny_dir), "-n", "2",
           "--temperature", "0.8", "--max-new-tokens", "48"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    killed = tmp_path / "killed"
    proc = subprocess.Popen([*cmd, "--out", str(killed)], env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    samples = killed / "samples.jsonl"
    while time.monotonic() < deadline and proc.poll() is None:
        if samples.exists() and samples.read_bytes().count(b"\n") >= 6:  # 3 of 12 prompts done
            break
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait(10)
    assert proc.returncode == -signal.SIGKILL, "the run finished before it could be killed"
    kept = [r["id"] for r in read_jsonl(samples)]
    assert 0 < len(kept) < 24
    subprocess.run([*cmd, "--out", str(killed)], env=env, check=True, capture_output=True, timeout=300)
    whole = tmp_path / "whole"
    subprocess.run([*cmd, "--out", str(whole)], env=env, check=True, capture_output=True, timeout=300)
    resumed = {r["id"]: r["text"] for r in read_jsonl(samples)}
    clean = {r["id"]: r["text"] for r in read_jsonl(whole / "samples.jsonl")}
    assert len(list(read_jsonl(samples))) == 24 and resumed == clean
    results = json.loads((killed / "results.json").read_text())
    assert results["resumed_prompts"] >= len(kept) // 2 and results["generated_prompts"] < 12


def test_atomic_writes_make_ordinary_files(tmp_path):
    from trustlab.report import write_json

    path = write_json(tmp_path / "r.json", {"a": 1})
    mask = os.umask(0)
    os.umask(mask)
    assert path.stat().st_mode & 0o777 == 0o666 & ~mask
