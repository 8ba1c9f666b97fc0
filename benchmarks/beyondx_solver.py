"""The bounded solver against a plain sympy loop, side by side on the 464 BeyondX gold systems.

Ours: :class:`trustlab.prompting.Solver` (the text goes to a long-lived worker process that parses it with
trustlab's grammar and runs ``sympy.solve`` under a hard time limit). Peer: the same parse and
``sympy.solve`` in this process, with no time limit (what a caller who trusts the input would write). The
two alternate per repeat; the median wall time over all systems is reported. Target (spec): ratio <= 1.2,
i.e. the hard timeout costs little.

Usage: ``python benchmarks/beyondx_solver.py [--data ../shared/data/beyondx] [--repeats 3]
[--out results/benchmarks/beyondx_solver.json]``
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from pathlib import Path

OUT = Path(__file__).resolve().parents[1] / "results" / "benchmarks" / "beyondx_solver.json"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", default=None, help="BeyondX folder (default: $TRUSTLAB_BEYONDX_DATA or ../shared/data/beyondx)")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--out", type=Path, default=OUT)
    args = ap.parse_args()

    from trustlab.bench.beyondx import load_beyondx
    from trustlab.prompting.equations import parse_equations
    from trustlab.prompting.solver import Solver, solve_now
    from trustlab.report import BenchmarkRecord, write_benchmark

    texts = ["\n".join(it.equations) for it in load_beyondx(args.data)]
    times: dict[str, list[float]] = {"ours": [], "peer": []}
    solved = {"ours": 0, "peer": 0}
    with Solver(timeout=30) as solver:
        solver.solve("x = 1")  # start the worker outside the timing
        for _ in range(args.repeats):
            t = time.perf_counter()
            solved["ours"] = sum(solver.solve(x).solved for x in texts)
            times["ours"].append(time.perf_counter() - t)
            t = time.perf_counter()
            solved["peer"] = sum(solve_now(parse_equations(x)).solved for x in texts)
            times["peer"].append(time.perf_counter() - t)
    ours, peer = statistics.median(times["ours"]), statistics.median(times["peer"])
    record = BenchmarkRecord(
        f"seconds to parse and solve the {len(texts)} BeyondX gold systems: worker with a hard timeout vs in-process",
        ours, peer, "plain sympy.solve loop in-process (same parser, no time limit)", lower_is_better=True,
        target=1.2, details={"repeats": args.repeats, "times": times, "solved": solved,
                             "load_average": os.getloadavg()})
    write_benchmark(args.out, [record])
    print(f"{record.measure}: ours {ours:.2f} s, peer {peer:.2f} s, ratio {record.ratio:.2f} (target <= 1.2); "
          f"solved {solved}")


if __name__ == "__main__":
    main()
