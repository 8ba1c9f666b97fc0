"""A real two-process ``accelerate launch`` run on CPU (gloo): both ranks end with identical LoRA weights.

``accelerate launch --cpu`` alone uses the single-process "simple" launcher (multi-CPU needs MPI there),
so the test uses the torchrun-based launcher (``--multi_gpu --num_processes 2``) on a CPU-only setup and
the worker asks for ``Accelerator(cpu=True)``: two processes, DDP over gloo. The worker checks both.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import accelerate  # noqa: F401  (the [test] extra installs it; a missing one must fail, not skip)
import peft  # noqa: F401  (the [test] extra installs it; a missing one must fail, not skip)
import torch


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_process_launch_keeps_ranks_identical(tmp_path: Path):
    launcher = shutil.which("accelerate", path=os.path.dirname(sys.executable)) or shutil.which("accelerate")
    assert launcher, "the accelerate CLI is not installed"
    worker = Path(__file__).with_name("accelerate_worker.py")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": "", "PYTHONPATH": os.pathsep.join(sys.path)}
    cmd = [launcher, "launch", "--num_processes", "2", "--num_machines", "1", "--multi_gpu", "--mixed_precision", "no",
           "--dynamo_backend", "no", "--main_process_port", str(_free_port()), str(worker), str(tmp_path)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=env)
    assert proc.returncode == 0, proc.stderr[-4000:]
    r0, r1 = (torch.load(tmp_path / f"rank{i}.pt") for i in (0, 1))
    assert r0["world"] == 2 and r0["backend"] == "gloo" and r0["skipped"] == 0
    assert r0["lora"].keys() == r1["lora"].keys() and r0["lora"]
    for name, w in r0["lora"].items():
        assert torch.equal(w, r1["lora"][name]), name
    assert all(w.abs().sum() > 0 for n, w in r0["lora"].items() if "lora_B" in n)  # training happened
