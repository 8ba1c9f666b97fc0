"""The README's method table, generated from committed results so it never claims more than was measured.

Each method has its default results in ``results/<method>/summary.json`` and, for runs with other role
models, ``results/<method>--<slug>/summary.json`` beside it (see :func:`trustlab.reproduce.default_out`).
The table shows one row per summary: a summary whose claims record their role models
(``setup["roles"]``, e.g. ``{"model": ..., "judge": ...}``) names them after the method's title; one
without (the older results) keeps the plain title.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from trustlab.registry import all_methods
from trustlab.report.io import atomic_write_text
from trustlab.report.schema import read_benchmark, read_summary, verdict

START, END = "<!-- methods-table:start -->", "<!-- methods-table:end -->"


def _num(v: object) -> str:
    return f"{v:.3g}" if isinstance(v, (int, float)) and not isinstance(v, bool) else str(v)


_MARK = {"reproduced": "✔", "not reproduced": "✘", "not measurable": "⚠ not measurable:"}


def _claim_cell(c: dict) -> str:
    """One claim: verdict mark, numbers, n, the interval of ours - baseline, and the valid-output share."""
    facts = [f"n={c['n']}"]
    if c["ci"] is not None:
        facts.append(f"Δ 95% CI [{_num(c['ci'][0])}, {_num(c['ci'][1])}]")
    if c["valid_rate"] is not None:
        facts.append(f"valid {c['valid_rate']:.0%}")
    return (f"{_MARK[verdict(c)]} {c['metric']}: {_num(c['ours'])} vs {_num(c['baseline'])} "
            f"({c['baseline_name']}; {', '.join(facts)})")


def _short(name: str) -> str:
    """A model name as the table shows it: ``embedded:`` dropped (``embedded:SmolLM2-135M-Instruct`` ->
    ``SmolLM2-135M-Instruct``)."""
    return name.removeprefix("embedded:")


def roles_label(claims: list[dict]) -> str | None:
    """The models of a summary's roles for its row: the model under test, then each other role whose
    model differs from it; None when the claims record no roles.

    Example:
        >>> roles_label([{"setup": {"roles": {"model": "embedded:SmolLM2-135M-Instruct",
        ...                                   "judge": "embedded:qwen2.5-coder-1.5b", "nli": "embedded:SmolLM2-135M-Instruct"}}}])
        'SmolLM2-135M-Instruct; judge: qwen2.5-coder-1.5b'
    """
    roles = next((c["setup"]["roles"] for c in claims if isinstance(c["setup"].get("roles"), dict)), None)
    if not roles:
        return None
    main = roles.get("model")
    parts = [_short(str(main))] if main else []
    parts += [f"{role}: {_short(str(name))}" for role, name in roles.items() if role != "model" and name != main]
    return "; ".join(parts)


def summary_paths(results_dir: str | os.PathLike, method_id: str) -> list[Path]:
    """A method's summaries: ``<method>/summary.json`` first, then each ``<method>--<slug>/summary.json``
    (runs with other role models), by folder name."""
    results_dir = Path(results_dir)
    default = results_dir / method_id / "summary.json"
    others = sorted(results_dir.glob(f"{method_id}--*/summary.json")) if results_dir.is_dir() else []
    return ([default] if default.exists() else []) + others


def method_table(results_dir: str | os.PathLike = "results") -> str:
    """Markdown table: one row per (method, role models) with its status and its checked claims; a
    method with no results has one row saying so.

    Raises:
        ValueError: a summary comes from a quick run (a smoke test is never shown as a result).
    """
    rows = ["| Method | Area | Status | Checked claims (ours vs baseline; n, 95% interval of the difference, "
            "valid model outputs) |", "|---|---|---|---|"]
    for m in all_methods():
        paths = summary_paths(results_dir, m.id)
        if not paths:
            status = "not yet implemented" if m.planned else "implemented; no committed results"
            rows.append(f"| {m.title} | {m.area} | {status} | - |")
        for path in paths:
            claims = read_summary(path)
            if any(c["setup"]["quick"] for c in claims):
                raise ValueError(f"{path} comes from a quick run; re-run `trustlab reproduce {m.id}` without --quick")
            verdicts = [verdict(c) for c in claims]
            status = f"{verdicts.count('reproduced')}/{len(claims)} claims reproduced"
            if "not measurable" in verdicts:
                status += f", {verdicts.count('not measurable')} not measurable"
            label = roles_label(claims)
            title = f"{m.title} ({label})" if label else m.title
            rows.append(f"| {title} | {m.area} | {status} | {'; '.join(_claim_cell(c) for c in claims)} |")
    return "\n".join(rows)


def benchmark_table(results_dir: str | os.PathLike = "results") -> str:
    """Markdown table of every committed benchmark record."""
    bench = Path(results_dir) / "benchmarks"
    rows = ["| Benchmark | Measure | Ours | Peer | Ratio | Target | Met |", "|---|---|---|---|---|---|---|"]
    for path in sorted(bench.glob("*.json")) if bench.exists() else []:
        for r in read_benchmark(path):
            op = "<=" if r["lower_is_better"] else ">="
            target = f"{op} {r['target']}" if r["target"] is not None else "-"
            met = {True: "yes", False: "no", None: "-"}[r.get("meets_target")]
            rows.append(f"| {path.stem} | {r['measure']} | {_num(r['ours'])} | {_num(r['peer'])} ({r['peer_name']}) "
                        f"| {_num(r['ratio'])} | {target} | {met} |")
    return "\n".join(rows)


def update_readme(readme: str | os.PathLike = "README.md", results_dir: str | os.PathLike = "results") -> bool:
    """Replace the text between the table markers in the README. Returns whether it changed."""
    readme = Path(readme)
    text = readme.read_text(encoding="utf-8")
    if START not in text or END not in text:
        raise ValueError(f"{readme} has no {START} ... {END} markers")
    block = f"{START}\n{method_table(results_dir)}\n\n{benchmark_table(results_dir)}\n{END}"
    new = re.sub(re.escape(START) + r".*?" + re.escape(END), lambda _: block, text, flags=re.S)
    if new != text:
        atomic_write_text(readme, new)
    return new != text
