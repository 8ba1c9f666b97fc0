"""Solve parsed systems of equations with sympy, in a worker process with a hard time limit.

``sympy.solve`` on a system a model wrote can take minutes (a high-degree nonlinear system) and cannot be
interrupted from a thread. :class:`Solver` therefore runs it in a separate process that it keeps alive
between calls (so a call costs a pipe round trip, not a process start) and kills and restarts when a call
runs past its ``timeout``. The worker parses model text with trustlab's own bounded grammar
(:func:`trustlab.prompting.parse_equations`) and never evaluates it.

Example:
    >>> with Solver() as solver:
    ...     result = solver.solve("x + y = 10\\nx - y = 2")
    >>> result.status, result.values
    ('solved', {'x': 6.0, 'y': 4.0})
"""

from __future__ import annotations

import multiprocessing as mp
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

DEFAULT_TIMEOUT = 30.0
STATUSES = ("solved", "symbolic", "no_solution", "timeout", "error")


@dataclass
class SolveResult:
    """What the solver made of one system.

    Attributes:
        status: ``"solved"`` (every unknown has a real number), ``"symbolic"`` (underdetermined: some
            values depend on free unknowns), ``"no_solution"`` (inconsistent), ``"timeout"`` or ``"error"``.
        values: unknown name -> float, for a solved system (the first real solution, preferring one whose
            values are all >= 0, as word problems count things).
        exact: unknown name -> the exact sympy value as text, for every unknown sympy solved for.
        n_solutions: how many solutions sympy returned.
        seconds: wall time of the call.
        message: why, for ``timeout`` and ``error``.
    """

    status: str
    values: dict[str, float] = field(default_factory=dict)
    exact: dict[str, str] = field(default_factory=dict)
    n_solutions: int = 0
    seconds: float = 0.0
    message: str = ""

    @property
    def solved(self) -> bool:
        return self.status == "solved"

    def to_dict(self) -> dict[str, Any]:
        return {"status": self.status, "values": self.values, "exact": self.exact,
                "n_solutions": self.n_solutions, "seconds": round(self.seconds, 4), "message": self.message}


def _real(value: Any) -> float | None:
    """A sympy value as a float when it is a real number, else None."""
    if not getattr(value, "is_number", False):
        return None
    c = complex(value.evalf(30))
    return c.real if abs(c.imag) <= 1e-9 * max(1.0, abs(c.real)) else None


def solve_now(equations: Sequence[Any], symbols: Sequence[Any] | None = None) -> SolveResult:
    """Solve in this process, without a time limit (what the worker runs; use :class:`Solver` for model output).

    Args:
        equations: ``sympy.Eq`` objects.
        symbols: the unknowns (default: every free symbol, sorted by name).
    """
    import sympy

    start = time.perf_counter()
    eqs = [e for e in equations if e is not sympy.true]
    if any(e is sympy.false for e in eqs):
        return SolveResult("no_solution", seconds=time.perf_counter() - start, message="an equation is false")
    syms = list(symbols) if symbols is not None else sorted(
        set().union(*(e.free_symbols for e in eqs)) if eqs else set(), key=lambda s: s.name)
    if not eqs or not syms:
        return SolveResult("error", seconds=time.perf_counter() - start, message="no equation with an unknown")
    solutions = sympy.solve(eqs, syms, dict=True)
    seconds = time.perf_counter() - start
    if not solutions:
        return SolveResult("no_solution", seconds=seconds)
    best, best_key = None, None
    for sol in solutions:
        floats = {s.name: _real(sol[s]) for s in syms if s in sol}
        complete = len(floats) == len(syms) and all(v is not None for v in floats.values())
        key = (complete, complete and all(v >= 0 for v in floats.values()))
        if best_key is None or key > best_key:
            best, best_key = sol, key
    exact = {s.name: str(v) for s, v in best.items()}
    if not best_key[0]:
        return SolveResult("symbolic", exact=exact, n_solutions=len(solutions), seconds=seconds)
    values = {s.name: float(_real(best[s])) for s in syms}
    return SolveResult("solved", values=values, exact=exact, n_solutions=len(solutions), seconds=seconds)


def _run_job(job: tuple[str, Any]) -> Any:
    """One job in the worker: ``("objects", (equations, symbols))``, ``("text", text)`` (parsed by
    :func:`parse_equations` there) or ``("formulation", text)`` (read by ``parse_system`` there)."""
    from trustlab.errors import ParseError

    kind, payload = job
    parsed = None
    try:
        if kind == "objects":
            equations, symbols = payload
        elif kind == "text":
            from trustlab.prompting.equations import parse_equations

            equations, symbols = parse_equations(payload), None
        else:
            from trustlab.prompting.formulate_solve import parse_system

            parsed = parse_system(payload)
            equations, symbols = parsed.equations, parsed.symbols
            parsed = {"equations": [str(e) for e in parsed.equations], "lines": parsed.lines,
                      "warnings": parsed.warnings}
    except ParseError as exc:
        return "parse_error", str(exc)
    if not equations:
        return SolveResult("error", message="no equation could be read"), parsed
    try:
        return solve_now(equations, symbols), parsed
    except Exception as exc:  # sympy raises many types (NotImplementedError, PolynomialError, ...)
        return SolveResult("error", message=f"{type(exc).__name__}: {exc}"[:300]), parsed


def _worker(conn: Any) -> None:
    while True:
        try:
            job = conn.recv()
        except EOFError:
            return
        if job is None:
            return
        conn.send(_run_job(job))


class Solver:
    """A sympy solver in a worker process with a hard per-call time limit; thread-safe (calls queue).

    Args:
        timeout: seconds per system before the worker is killed (and restarted for the next call).

    Example:
        >>> solver = Solver(timeout=5)
        >>> solver.solve("2a = 3").values
        {'a': 1.5}
        >>> solver.close()
    """

    def __init__(self, timeout: float = DEFAULT_TIMEOUT):
        if timeout <= 0:
            raise ValueError(f"timeout must be > 0 seconds, got {timeout}")
        self.timeout = timeout
        self._lock = threading.Lock()
        self._proc: Any = None
        self._conn: Any = None
        self.restarts = 0

    def _start(self) -> None:
        ctx = mp.get_context("fork" if "fork" in mp.get_all_start_methods() else "spawn")
        parent, child = ctx.Pipe()
        self._proc = ctx.Process(target=_worker, args=(child,), daemon=True, name="trustlab-solver")
        self._proc.start()
        child.close()
        self._conn = parent

    def _kill(self) -> None:
        if self._proc is not None:
            self._proc.kill()
            self._proc.join(5)
            self._conn.close()
        self._proc = self._conn = None

    def solve(self, equations: str | Sequence[Any], symbols: Sequence[Any] | None = None, *,
              timeout: float | None = None) -> SolveResult:
        """Solve one system within the time limit.

        Args:
            equations: the text of the equations (parsed by :func:`parse_equations` in the worker, the fast
                way: sympy objects are slow to unpickle), or ``sympy.Eq`` objects.
            symbols: the unknowns to solve for (default: every free symbol).
            timeout: this call's limit in seconds (default: the solver's).

        Returns:
            A :class:`SolveResult`; a system that runs past the limit gives status ``"timeout"`` and a
            sympy failure gives ``"error"``.

        Raises:
            ParseError: text outside the equation grammar.
        """
        if isinstance(equations, str):
            result, _ = self._call(("text", equations), timeout)
        else:
            result, _ = self._call(("objects", (list(equations), None if symbols is None else list(symbols))), timeout)
        return result

    def solve_formulation(self, text: str, *, timeout: float | None = None) -> tuple[SolveResult, dict[str, Any]]:
        """Read a model's formulation with ``parse_system`` and solve it, both in the worker.

        Returns:
            (the result, ``{"equations": [...], "lines": [...], "warnings": [...]}``; the latter empty after a
            timeout).
        """
        result, parsed = self._call(("formulation", text), timeout)
        return result, parsed or {"equations": [], "lines": [], "warnings": []}

    def _call(self, job: tuple[str, Any], timeout: float | None) -> tuple[SolveResult, Any]:
        from trustlab.errors import ParseError

        limit = self.timeout if timeout is None else timeout
        with self._lock:
            if self._proc is None or not self._proc.is_alive():
                if self._proc is not None:
                    self._kill()
                    self.restarts += 1
                self._start()
            start = time.perf_counter()
            self._conn.send(job)
            if not self._conn.poll(limit):
                self._kill()
                self.restarts += 1
                return SolveResult("timeout", seconds=time.perf_counter() - start,
                                   message=f"no answer within {limit:g} s"), None
            try:
                result, parsed = self._conn.recv()
            except (EOFError, OSError) as exc:  # the worker died (e.g. out of memory)
                self._kill()
                return SolveResult("error", seconds=time.perf_counter() - start, message=f"solver died: {exc}"), None
        if result == "parse_error":
            raise ParseError(parsed)
        result.seconds = time.perf_counter() - start
        return result, parsed

    def close(self) -> None:
        """Stop the worker process."""
        with self._lock:
            if self._proc is not None and self._proc.is_alive():
                try:
                    self._conn.send(None)
                    self._proc.join(2)
                except OSError:
                    pass
            self._kill()

    def __enter__(self) -> Solver:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def __del__(self) -> None:  # pragma: no cover - best effort at interpreter exit
        try:
            self._kill()
        except Exception:
            pass
