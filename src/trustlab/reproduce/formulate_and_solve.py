"""Small-scale reproduction of Formulate-and-Solve on BeyondX (spec: beyondx-formulate-and-solve.md, section 6).

Data: the official BeyondX JSON (``$TRUSTLAB_BEYONDX_DATA``, default ``../shared/data/beyondx``; CC BY-SA,
test-only, read at run time and never copied into results: rows keep item ids, numbers and model text cut to
400 characters). Per number of unknowns (3, 4, 5): 30 test items and a disjoint 10-item dev slice (fixed
seed), so 90 test items in all. Methods: zero-shot CoT, few-shot CoT (the model's own rationales of three
generated demo problems, one per level) and Formulate-and-Solve (the best of 3 self-written demo sets on the
dev slice; the paper: 10 on the first 20 test problems, which leaks test data). Max 384 new tokens. The
F&S rows are also scored by the solver's values (no answer call; ``fs-solution``), reported beside.

Check 1 (no model): the solver on the 464 gold systems. Reproduced when every item solves to its ``ans``
or its exception is listed with a cause (an underdetermined gold system: its rank is below its number of
unknowns).

Pass conditions, fixed before running:
- Claim A (benchmark): zero-shot CoT accuracy is lower at 5 unknowns than at 3, with the 95% interval of
  acc5 - acc3 (Newcombe, unpaired) below zero.
- Claim B (method): Formulate-and-Solve beats zero-shot CoT on the pooled items, with the paired bootstrap
  95% interval over items of acc(F&S) - acc(CoT) above zero, and its gap at 5 unknowns is >= its gap at 3.

Measurability, fixed before running: a claim is "not measurable" (never "reproduced") when its outputs'
``valid_rate`` is < 0.5 (an output is valid when it gave an answer of the model's own: not empty, not a copy
of a demo; for F&S, also a formulation from which a system could be read; claim B takes the weaker arm's
rate), or when the model is at the floor: claim A needs CoT accuracy >= 0.1 at 3 unknowns (a drop
cannot show below it), claim B needs one of the two methods >= 0.1 pooled.

Runs checkpoint per chunk of items and resume (the picked demos are kept in ``demos.json``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from trustlab.report import Claim, write_json, write_summary

METHOD = "formulate-and-solve"
MIN_VALID_RATE = 0.5
MIN_FLOOR = 0.1
STRATEGIES = ["cot", "fewshot-cot", "fs"]


def gold_check(data: Any = None) -> dict[str, Any]:
    """Check 1: solve every gold system with the bounded solver and compare with ``ans``; every exception
    gets its cause (rank of the linear system vs its unknowns)."""
    import sympy

    from trustlab.bench.beyondx import load_beyondx, score_beyondx
    from trustlab.prompting.equations import parse_equations
    from trustlab.prompting.solver import Solver

    items = load_beyondx(data)
    exceptions = []
    with Solver(timeout=30) as solver:
        for it in items:
            text = "\n".join(it.equations)
            result = solver.solve(text)
            if result.solved and score_beyondx(list(result.values.values()), it.answers):
                continue
            eqs = parse_equations(text)
            syms = sorted(set().union(*(e.free_symbols for e in eqs)), key=lambda s: s.name)
            try:
                rank = sympy.linear_eq_to_matrix([e.lhs - e.rhs for e in eqs], syms)[0].rank()
                cause = (f"underdetermined gold system: rank {rank} < {len(syms)} unknowns" if rank < len(syms)
                         else f"solver status {result.status}")
            except (sympy.SympifyError, ValueError, TypeError) as exc:  # nonlinear: no matrix
                rank, cause = None, f"solver status {result.status} ({type(exc).__name__})"
            exceptions.append({"id": it.id, "status": result.status, "rank": rank, "unknowns": len(syms),
                               "cause": cause, "exact": result.exact})
    return {"n": len(items), "solved": len(items) - len(exceptions), "exceptions": exceptions,
            "all_explained": all(e["cause"].startswith("underdetermined") for e in exceptions)}


def _correct(rows: list[dict[str, Any]], level: int | None = None) -> list[float]:
    return [float(r["correct"]) for r in rows if level is None or r["unknowns"] == level]


def make_claims(details: dict[str, Any]) -> list[Claim]:
    """The three claims from ``details.json`` (rebuildable without the model)."""
    from trustlab.report.stats import bootstrap_diff_ci, proportion_diff_ci

    setup, gold, res, rows = details["setup"], details["gold_check"], details["strategies"], details["rows"]
    seed = setup.get("seed", 0)
    claims = [Claim(METHOD, "A symbolic solver on the gold equation systems recovers the BeyondX answers",
                    "share of the 464 gold systems that solve to ans", gold["solved"] / gold["n"], 1.0, "all items",
                    gold["all_explained"], setup,
                    note=f"{gold['solved']}/{gold['n']} solve to their answers; exceptions: " + "; ".join(
                        f"{e['id']} ({e['cause']})" for e in gold["exceptions"]) + ". Pass: every exception has a "
                    "cause.", n=gold["n"], ci=None, valid_rate=None)]
    cot, fs = res["cot"], res["fs"]
    c3, c5 = cot["by_unknowns"]["3"], cot["by_unknowns"]["5"]
    ci_a = proportion_diff_ci(c5["correct"], c5["n"], c3["correct"], c3["n"])
    why_a = []
    if cot["valid_rate"] < MIN_VALID_RATE:
        why_a.append(f"only {cot['valid_rate']:.0%} of the CoT outputs were valid answers")
    if c3["accuracy"] < MIN_FLOOR:
        why_a.append(f"CoT solves {c3['accuracy']:.0%} at 3 unknowns (< {MIN_FLOOR:.0%}): a drop cannot show")
    claims.append(Claim(
        METHOD, "Accuracy drops as the number of unknowns grows (zero-shot CoT, 3 vs 5 unknowns)",
        "zero-shot CoT accuracy at 5 unknowns (baseline: at 3)", c5["accuracy"], c3["accuracy"],
        "zero-shot CoT at 3 unknowns", not why_a and ci_a is not None and ci_a[1] < 0, setup,
        note="By level: " + ", ".join(f"{k} unknowns {b['accuracy']:.2f}" for k, b in cot["by_unknowns"].items())
        + ". Pass: acc5 < acc3 with the interval below zero." + (" Not measurable: " + "; ".join(why_a) + "."
                                                                 if why_a else ""),
        n=c3["n"] + c5["n"], ci=ci_a, valid_rate=cot["valid_rate"], measurable=not why_a))
    fs_rows = [r for r in rows if r["strategy"] == "fs"]
    cot_rows = [r for r in rows if r["strategy"] == "cot"]
    by_item = {r["item"]: r for r in cot_rows}
    paired = [(float(r["correct"]), float(by_item[r["item"]]["correct"])) for r in fs_rows if r["item"] in by_item]
    ci_b = bootstrap_diff_ci([a for a, _ in paired], [b for _, b in paired], seed=seed)
    gap = {k: fs["by_unknowns"][k]["accuracy"] - cot["by_unknowns"][k]["accuracy"] for k in ("3", "5")}
    # an F&S output is valid data when the model's formulation gave a system (recomputed from the rows, so the
    # rule holds for rows written before it was the strategy's own); CoT outputs as the strategy says
    fs_valid = [bool(r["valid"] and r.get("equations")) for r in fs_rows]
    valid_b = min(sum(fs_valid) / len(fs_valid) if fs_valid else 0.0, cot["valid_rate"])  # the weaker arm
    why_b = []
    if valid_b < MIN_VALID_RATE:
        why_b.append(f"only {valid_b:.0%} of one arm's outputs were valid (F&S: a readable system and an answer)")
    if max(fs["accuracy"], cot["accuracy"]) < MIN_FLOOR:
        why_b.append(f"both methods are below {MIN_FLOOR:.0%} pooled (F&S {fs['accuracy']:.2f}, CoT "
                     f"{cot['accuracy']:.2f})")
    claims.append(Claim(
        METHOD, "Formulate-and-Solve beats zero-shot CoT, and more so with more unknowns",
        "accuracy on the pooled BeyondX items", fs["accuracy"], cot["accuracy"], "zero-shot CoT",
        not why_b and ci_b is not None and ci_b[0] > 0 and gap["5"] >= gap["3"], setup,
        note=(f"Gap F&S - CoT at 3 unknowns {gap['3']:+.2f}, at 5 {gap['5']:+.2f}; few-shot CoT "
              f"{res['fewshot-cot']['accuracy']:.2f}; F&S scored by the solver's values "
              f"{fs.get('accuracy_solution_values', float('nan')):.2f}; formulations that solved "
              f"{fs.get('formulations_solved', float('nan')):.0%}; formulations with a readable system "
              f"{(sum(fs_valid) / len(fs_valid)) if fs_valid else float('nan'):.0%}"
              + ". Pass: interval above zero and gap(5) >= gap(3)."
              + (" Not measurable: " + "; ".join(why_b) + "." if why_b else "")),
        n=len(paired), ci=ci_b, valid_rate=valid_b, measurable=not why_b))
    return claims


def run(out: Path, *, quick: bool = False, seed: int = 0, model: Any = None) -> list[Claim]:
    """Run the reproduction into ``out`` (resuming a run with the same setup); returns the three claims.

    Args:
        out: the output folder.
        quick: 2 test + 1 dev item per level, 1 demo trial, 96 new tokens (a smoke test).
        seed: the item draw, demo sampling and bootstrap seed.
        model: the model under test (spec or handle; default: the embedded SmolLM2).

    Example:
        >>> run(Path("results/formulate-and-solve--qwen2.5-coder-0.5b"), model="embedded:qwen2.5-coder-0.5b")
    """
    from trustlab.bench.beyondx import default_data_dir
    from trustlab.prompting.beyondx_run import run_beyondx
    from trustlab.reproduce import load_roles, role_setup

    data = default_data_dir()
    gold = gold_check(data)
    roles = load_roles({"model": model}, hf_options={"attn_implementation": "sdpa", "batch_size": 16})
    names, described = role_setup(roles)
    target = roles["model"]
    n, dev, trials, tokens = (2, 1, 1, 96) if quick else (30, 10, 3, 384)
    summary = run_beyondx(target, out, strategies=STRATEGIES, data=str(data) if data else None, n_per_level=n,
                          dev_per_level=dev, demo_trials=trials, max_new_tokens=tokens, seed=seed,
                          extra_config={"quick": quick, "roles": names, "role_models": described})
    details = {"setup": {**summary["setup"], "roles": names, "quick": quick}, "gold_check": gold,
               "strategies": summary["strategies"], "demos": summary["demos"], "rows": summary["rows"],
               "plot": "accuracy_by_unknowns.png", "report": "report.html"}
    write_json(Path(out) / "details.json", details)
    claims = make_claims(details)
    write_summary(out, claims)
    return claims
