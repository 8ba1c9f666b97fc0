"""A real llama.cpp server (llama-cpp-python[server]) on loopback, started and stopped by the tests."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from pathlib import Path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class LlamaServer:
    """``python -m llama_cpp.server`` on 127.0.0.1 with the embedded SmolLM2 GGUF.

    Example:
        >>> server = LlamaServer(); server.start(); server.base_url
        'http://127.0.0.1:PORT/v1'
    """

    model_alias = "smollm2"

    def __init__(self, log_dir: Path, n_ctx: int = 2048, port: int | None = None):
        self.log_dir = Path(log_dir)
        self.n_ctx = n_ctx
        self.port = port or free_port()
        self.proc: subprocess.Popen | None = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def start(self, timeout: float = 90.0) -> None:
        import httpx

        from trustlab.models.embedded import gguf_path

        log = open(self.log_dir / f"server-{self.port}.log", "w")  # noqa: SIM115 (kept open for the process)
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "llama_cpp.server", "--model", str(gguf_path()), "--host", "127.0.0.1",
             "--port", str(self.port), "--n_ctx", str(self.n_ctx), "--n_threads", "2",
             "--model_alias", self.model_alias, "--seed", "0"],
            stdout=log, stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"llama.cpp server exited with {self.proc.returncode}; "
                                   f"see {self.log_dir / f'server-{self.port}.log'}")
            try:
                if httpx.get(f"{self.base_url}/models", timeout=1.0).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.25)
        self.stop()
        raise TimeoutError(f"llama.cpp server did not answer within {timeout}s")

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
