"""``trustlab expand-beyondx``: add one unknown to word problems with a strong model (BeyondX's expansion)."""

from __future__ import annotations

import random
from collections import Counter
from pathlib import Path

import click

from trustlab.cli.common import load_from_options, model_options, out_option, parse_levels, seed_option


@click.command("expand-beyondx")
@model_options
@seed_option
@click.option("--data", type=click.Path(path_type=Path, exists=True), default=None,
              help="folder of the official BeyondX JSON files, or a JSON list of items (default: problems from "
                   "trustlab's offline generator)")
@click.option("--levels", default="2,3,4", show_default=True, callback=lambda ctx, p, v: parse_levels(v, 2, 5),
              help="numbers of unknowns of the problems to expand (each gains one)")
@click.option("--n", "n", type=click.IntRange(min=1), default=10, show_default=True,
              help="problems to expand per level (drawn with --seed)")
@click.option("--max-new-tokens", type=click.IntRange(min=1), default=768, show_default=True)
@out_option("runs/expand-beyondx")
def expand_beyondx(model_spec: str, model_name: str | None, attn_implementation: str | None, seed: int,
                   data: Path | None, levels: tuple[int, ...], n: int, max_new_tokens: int, out: Path) -> None:
    """Expand problems from n to n+1 unknowns with the model, fix up their constants with sympy, keep the
    verified ones.

    Items whose system has no unique solution, answers that do not follow the format and systems that stay
    inconsistent or underdetermined after the fix-up are counted as failures, with their reasons.

    Writes the run folder OUT: expanded.json (the new items, BeyondX format, loadable with --data), one row per
    problem in samples.jsonl (expanded, or the failure's kind and reason); a rerun starts over.
    """
    from trustlab.bench.beyondx import load_beyondx
    from trustlab.bench.beyondx_gen import expand_items, generate_problems
    from trustlab.report.io import write_json

    if data is None:
        items = generate_problems(n, unknowns=levels, seed=seed)
    else:
        pool = load_beyondx(data, levels=levels)
        rng = random.Random(seed)
        items = []
        for level in levels:
            at_level = [it for it in pool if it.unknowns == level]
            items += rng.sample(at_level, min(n, len(at_level)))
    model = load_from_options(model_spec, model_name, attn_implementation)
    click.echo(f"expanding {len(items)} problems with {model.name} (one batched call)")
    new_items, failures = expand_items(model, items, seed=seed, max_new_tokens=max_new_tokens)
    from trustlab.report import RunFolder, Section

    run = RunFolder(out, {"command": "expand-beyondx", "model": model.describe(), "seed": seed, "levels": list(levels),
                          "n": n, "data": str(data) if data else "generated", "max_new_tokens": max_new_tokens},
                    fresh=True)
    write_json(run.path / "expanded.json", [it.to_dict() for it in new_items])
    failed = {f["id"]: f for f in failures}
    for it in items:
        f = failed.get(it.id)
        run.add_sample({"id": it.id, "unknowns": it.unknowns, "expanded": f is None,
                        **({"kind": f["kind"], "reason": f["reason"][:300], "output": f["output"][:400]} if f else {})})
    by_kind = Counter(f["kind"] for f in failures)
    run.write_results({"asked": len(items), "expanded": len(new_items), "failures_by_kind": dict(by_kind)})
    text = (f"{len(new_items)} of {len(items)} problems gained one unknown and passed the sympy fix-up and the "
            "unique-solution check; the others failed as counted below (samples.jsonl has each reason).")
    report = run.write_report(f"trustlab expand-beyondx: {model.name}", [Section(
        "Progressive expansion", text, [{"failure kind": k, "count": c} for k, c in sorted(by_kind.items())])])
    click.echo(f"expanded {len(new_items)} of {len(items)}; failures {len(failures)}"
               + (" (" + ", ".join(f"{k} {c}" for k, c in sorted(by_kind.items())) + ")" if failures else ""))
    click.echo(f"items: {run.path / 'expanded.json'}")
    click.echo(f"report: {report}")
