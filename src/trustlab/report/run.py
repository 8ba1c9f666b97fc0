"""Run folders: every CLI command writes config.json, results.json, samples.jsonl, PNG plots and a
self-contained report.html into one folder, and can resume from the samples it already wrote."""

from __future__ import annotations

import base64
import html
import io
import os
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from trustlab.report.io import (
    append_jsonl,
    atomic_write_bytes,
    atomic_write_text,
    read_json,
    read_jsonl,
    write_json,
)
from trustlab.report.schema import machine_info

T = TypeVar("T")


def progress(items: Iterable[T], description: str = "", total: int | None = None) -> Iterator[T]:
    """Iterate with a rich progress bar on a terminal, silently otherwise (CI logs stay readable)."""
    import sys

    from rich.progress import track

    if not sys.stderr.isatty() or os.environ.get("TRUSTLAB_NO_PROGRESS"):
        yield from items
        return
    yield from track(items, description=description or "working", total=total, transient=True)


@dataclass
class Section:
    """One section of report.html: a title, a paragraph, optional table rows and PNG images."""

    title: str
    text: str = ""
    table: list[dict[str, Any]] | None = None
    images: list[Path] = field(default_factory=list)
    anchor: str = ""

    @property
    def anchor_id(self) -> str:
        return self.anchor or "".join(c if c.isalnum() else "-" for c in self.title.lower())

    def to_html(self) -> str:
        parts = [f'<section id="{html.escape(self.anchor_id)}"><h2>{html.escape(self.title)}</h2>']
        if self.text:
            parts += [f"<p>{html.escape(p)}</p>" for p in self.text.split("\n\n")]
        if self.table:
            cols = list(dict.fromkeys(k for row in self.table for k in row))
            head = "".join(f"<th>{html.escape(str(c))}</th>" for c in cols)
            body = "".join(
                "<tr>" + "".join(f"<td>{html.escape(_fmt(row.get(c, '')))}</td>" for c in cols) + "</tr>"
                for row in self.table
            )
            parts.append(f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>")
        for img in self.images:
            data = base64.b64encode(Path(img).read_bytes()).decode()
            parts.append(f'<figure><img alt="{html.escape(Path(img).stem)}" src="data:image/png;base64,{data}">'
                         f"<figcaption>{html.escape(Path(img).stem)}</figcaption></figure>")
        parts.append("</section>")
        return "\n".join(parts)


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    return str(v)


_CSS = """body{font-family:system-ui,sans-serif;max-width:980px;margin:2em auto;padding:0 1em;color:#222}
table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ccc;padding:4px 8px;text-align:left}
th{background:#f3f3f3}img{max-width:100%}figure{margin:1em 0}section{margin-bottom:2.5em}
.meta{color:#666;font-size:.9em}"""


def render_html(title: str, sections: list[Section], meta: dict[str, Any] | None = None, *, lead: str = "",
                css: str = "") -> str:
    """A self-contained HTML page (plots embedded as data URIs, no scripts, no external assets).

    Args:
        title: the page title and heading.
        sections: the report sections, listed in a table of contents.
        meta: key/value pairs shown under the heading.
        lead: trusted HTML placed right under the heading, before the table of contents (e.g. the audit's
            scorecard, so that it is the first thing on screen).
        css: extra style rules for ``lead``.

    Example:
        >>> render_html("demo", [Section("Results", "All good.")]).startswith("<!DOCTYPE html>")
        True
    """
    meta_html = ""
    if meta:
        meta_html = '<p class="meta">' + " &middot; ".join(
            f"{html.escape(str(k))}: {html.escape(_fmt(v))}" for k, v in meta.items()
        ) + "</p>"
    toc = "".join(f'<li><a href="#{html.escape(s.anchor_id)}">{html.escape(s.title)}</a></li>' for s in sections)
    body = "\n".join(s.to_html() for s in sections)
    return (
        f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>'
        f"<style>{_CSS}{css}</style></head><body><h1>{html.escape(title)}</h1>{meta_html}{lead}<ul>{toc}</ul>{body}"
        "</body></html>\n"
    )


VOLATILE_KEYS = frozenset({"started", "machine", "config_hash", "resumed"})
# Recorded, but left out of the hash at any depth: a run resumed with another thread count is the same run.
RUNTIME_KEYS = frozenset({"threads"})


def _without_runtime(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _without_runtime(v) for k, v in value.items() if k not in RUNTIME_KEYS}
    if isinstance(value, (list, tuple)):
        return [_without_runtime(v) for v in value]
    return value


def config_hash(config: dict[str, Any]) -> str:
    """A short stable hash of a run's configuration (timestamps, machine info and thread counts left out)."""
    import hashlib
    import json

    from trustlab.report.io import dumps

    stable = {k: v for k, v in config.items() if k not in VOLATILE_KEYS}
    text = json.dumps(_without_runtime(json.loads(dumps(stable, indent=None))), sort_keys=True)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


class RunFolder:
    """The folder a command writes into, keyed by a hash of its configuration.

    Reopening a folder with the same configuration resumes it: :meth:`done_keys` lists the items already
    written, and :meth:`add_sample` never writes an id twice. Reopening it with another configuration
    starts fresh: the old run's files move to ``.superseded/<old hash>/`` inside the folder (nothing is
    deleted), so a folder never mixes the rows of two configurations. ``fresh=True`` starts fresh even with
    the same configuration.

    Args:
        path: the folder (created if missing).
        config: the run's configuration, written to ``config.json`` with its hash, machine info and a
            timestamp.
        fresh: start over even when the configuration matches.
        key: the field that identifies a sample row (default ``"id"``).

    Example:
        >>> run = RunFolder("runs/demo", {"model": "embedded", "seed": 0})
        >>> if "q1" not in run.done_keys():
        ...     run.add_sample({"id": "q1", "prompt": "hi", "answer": "hello"})
        >>> run.write_results({"accuracy": 1.0})
    """

    def __init__(self, path: str | os.PathLike, config: dict[str, Any] | None = None, *, fresh: bool = False,
                 key: str = "id"):
        self.path = Path(path)
        self.path.mkdir(parents=True, exist_ok=True)
        self.config = dict(config or {})
        self.key = key
        self.hash = config_hash(self.config)
        previous = self._previous_hash()
        self.resumed = previous == self.hash and not fresh and self.samples_path.exists()
        if previous is not None and not self.resumed:
            self._supersede(previous)
        self._keys: set[Any] = {row[key] for row in self.samples() if key in row}
        write_json(self.path / "config.json", {**self.config, "config_hash": self.hash, "resumed": self.resumed,
                                               "machine": machine_info(),
                                               "started": time.strftime("%Y-%m-%dT%H:%M:%S")})

    def _previous_hash(self) -> str | None:
        cfg = self.path / "config.json"
        if not cfg.exists():
            return None
        try:
            old = read_json(cfg)
        except ValueError:
            return "unreadable"
        return old.get("config_hash") or config_hash(old)

    def _supersede(self, old_hash: str) -> None:
        """Move the previous run's files out of the way (never delete them)."""
        entries = [e for e in self.path.iterdir() if e.name != ".superseded"]
        if not entries:
            return
        dest = self.path / ".superseded" / f"{old_hash}-{time.strftime('%Y%m%dT%H%M%S')}"
        dest.mkdir(parents=True, exist_ok=True)
        for entry in entries:
            os.replace(entry, dest / entry.name)

    @property
    def samples_path(self) -> Path:
        return self.path / "samples.jsonl"

    def add_sample(self, row: dict[str, Any]) -> bool:
        """Append one per-item record (the checkpoint a resumed run reads back).

        Returns:
            False when a row with the same key was already written (it is not written again).
        """
        k = row.get(self.key)
        if k is not None:
            if k in self._keys:
                return False
            self._keys.add(k)
        append_jsonl(self.samples_path, row)
        return True

    def samples(self) -> list[dict[str, Any]]:
        return list(read_jsonl(self.samples_path)) if self.samples_path.exists() else []

    def done_keys(self, key: str | None = None) -> set[Any]:
        """Keys of the samples already written: skip these when resuming."""
        if key is None or key == self.key:
            return set(self._keys)
        return {row[key] for row in self.samples() if key in row}

    def write_results(self, results: dict[str, Any]) -> Path:
        return write_json(self.path / "results.json", results)

    def save_plot(self, fig: Any, name: str) -> Path:
        """Save a matplotlib figure as ``<name>.png`` (atomically) and close it."""
        import matplotlib.pyplot as plt

        buf = io.BytesIO()
        fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
        plt.close(fig)
        return atomic_write_bytes(self.path / f"{name}.png", buf.getvalue())

    def write_report(self, title: str, sections: list[Section], meta: dict[str, Any] | None = None, *,
                     lead: str = "", css: str = "") -> Path:
        """Write report.html (see :func:`render_html` for ``lead`` and ``css``)."""
        return atomic_write_text(self.path / "report.html", render_html(title, sections, meta, lead=lead, css=css))


def plt():
    """matplotlib.pyplot with the non-interactive Agg backend (no display needed)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as pyplot

    return pyplot
