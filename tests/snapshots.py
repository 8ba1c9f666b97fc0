"""File stamps for resume tests: a rerun that redid a unit rewrites its files, which changes their stamps."""

from __future__ import annotations

from pathlib import Path


def file_stamps(root: Path) -> dict[str, tuple[int, int]]:
    """Every file under ``root`` with its size and modification time (ns), keyed by relative path.

    Example:
        >>> before = file_stamps(tmp_path / "checkpoints"); run(tmp_path); file_stamps(tmp_path / "checkpoints") == before
    """
    return {str(p.relative_to(root)): (p.stat().st_size, p.stat().st_mtime_ns) for p in root.rglob("*") if p.is_file()}
