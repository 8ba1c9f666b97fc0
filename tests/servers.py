"""Real OpenAI-compatible servers on loopback, started and stopped by the tests: llama.cpp
(llama-cpp-python[server]) with the embedded SmolLM2 GGUF, and `transformers serve` with its
dequantised folder."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class _Server:
    """A server process on 127.0.0.1 that is ready once ``GET /v1/models`` answers 200."""

    kind = "server"
    model_alias = ""

    def __init__(self, log_dir: Path, port: int | None = None):
        self.log_dir = Path(log_dir)
        self.port = port or free_port()
        self.proc: subprocess.Popen | None = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    @property
    def log_path(self) -> Path:
        return self.log_dir / f"{self.kind}-{self.port}.log"

    def command(self) -> list[str]:
        raise NotImplementedError

    def env(self) -> dict[str, str]:
        return dict(os.environ)

    def start(self, timeout: float = 90.0) -> None:
        import httpx

        log = open(self.log_path, "w")  # noqa: SIM115 (kept open for the process)
        self.proc = subprocess.Popen(self.command(), stdout=log, stderr=subprocess.STDOUT, env=self.env())
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.kind} exited with {self.proc.returncode}; see {self.log_path}: "
                                   f"{self.log_path.read_text()[-600:]}")
            try:
                if httpx.get(f"{self.base_url}/models", timeout=1.0).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.25)
        self.stop()
        raise TimeoutError(f"{self.kind} did not answer within {timeout}s; see {self.log_path}")

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


class LlamaServer(_Server):
    """``python -m llama_cpp.server`` on 127.0.0.1 with the embedded SmolLM2 GGUF.

    Example:
        >>> server = LlamaServer(tmp_path); server.start(); server.base_url
        'http://127.0.0.1:PORT/v1'
    """

    kind = "llama-server"
    model_alias = "smollm2"

    def __init__(self, log_dir: Path, n_ctx: int = 2048, port: int | None = None):
        super().__init__(log_dir, port)
        self.n_ctx = n_ctx

    def command(self) -> list[str]:
        from trustlab.models.embedded import gguf_path

        return [sys.executable, "-m", "llama_cpp.server", "--model", str(gguf_path()), "--host", "127.0.0.1",
                "--port", str(self.port), "--n_ctx", str(self.n_ctx), "--n_threads", "2",
                "--model_alias", self.model_alias, "--seed", "0"]


class TransformersServer(_Server):
    """``transformers serve --continuous-batching`` on 127.0.0.1 with the embedded SmolLM2's dequantised
    folder (a local path: no hub access, HF_HUB_OFFLINE=1). The served model's id is that path.

    Example:
        >>> server = TransformersServer(tmp_path); server.start(); server.model_alias
        '/root/.cache/trustlab/models/smollm2-135m-instruct-q4_1-v2-transformers5.24.0-gguf0.19.0'
    """

    kind = "transformers-serve"

    def __init__(self, log_dir: Path, port: int | None = None):
        from trustlab.models.embedded import smollm2_dir

        super().__init__(log_dir, port)
        self.model_alias = str(smollm2_dir())

    def command(self) -> list[str]:
        # A small paged KV cache (2048 tokens): the default one is sized from free memory and its set-up
        # made the first request take about a minute on a 2-core CPU (measured; 2 s with this one).
        return [sys.executable, "-m", "transformers.cli.transformers", "serve", self.model_alias,
                "--continuous-batching", "--cb-num-blocks", "64", "--cb-block-size", "32",
                "--cb-max-batch-tokens", "256", "--device", "cpu", "--host", "127.0.0.1", "--port", str(self.port)]

    def env(self) -> dict[str, str]:
        # one torch thread unless told otherwise: oversubscribed threads made each request several times slower
        return {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
                "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}
