"""Open a report.html in headless Chromium (Debian's ``chromium`` package) and return its rendered DOM
and any console errors. Used by every test that checks a report renders."""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from pathlib import Path

_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
          "--disable-background-networking", "--disable-component-update", "--disable-sync",
          "--enable-logging=stderr", "--v=0"]


def chromium() -> str:
    exe = shutil.which("chromium") or shutil.which("chromium-browser")
    if exe is None:
        raise RuntimeError("headless report tests need Debian's chromium: apt-get install -y chromium")
    return exe


def render_dom(page: str | Path, timeout: float = 60) -> tuple[str, list[str]]:
    """(DOM after load, console error lines) for a local HTML file."""
    with tempfile.TemporaryDirectory() as profile:
        proc = subprocess.run(
            [chromium(), *_FLAGS, f"--user-data-dir={profile}", "--dump-dom", Path(page).resolve().as_uri()],
            capture_output=True, text=True, timeout=timeout,
        )
    if proc.returncode != 0:
        raise RuntimeError(f"chromium failed ({proc.returncode}): {proc.stderr[-2000:]}")
    # our reports carry no scripts, so any console message at all is unexpected
    errors = [line for line in proc.stderr.splitlines() if ":CONSOLE" in line]
    return proc.stdout, errors
