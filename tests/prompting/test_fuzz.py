"""Fuzzing the readers of model-written equations (parse_equations, parse_system) and the bounded Solver.

Over 100,000 generated inputs in all (see :data:`PLAN`; each goes through both parsers): arbitrary unicode,
text over the grammar's alphabet, token soup, mutated real-looking systems and Python-injection strings.
Every call must succeed or raise ParseError (nothing else escapes), return within :data:`PER_CALL_S`, leave
no side effect (a canary file and environment variable that the injection strings would create when run as
Python stay absent, and a PEP 578 audit hook sees no exec/compile of non-file code, no write, no process, no
socket) and, when it succeeds, build sympy trees of Symbols, Rationals, Add, Mul, Pow and Eq only.

Inputs are drawn in batches (one hypothesis example = :data:`BATCH` inputs): hypothesis spends ~1 ms per
example and ~0.15 ms per input inside a batch, which keeps this file near a minute on one core. Runs are
derandomized, so a failure reproduces exactly.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
import sympy
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from trustlab.errors import ParseError
from trustlab.prompting import parse_equations
from trustlab.prompting.formulate_solve import parse_system
from trustlab.prompting.solver import STATUSES, Solver

BATCH = 20
PER_CALL_S = 1.0
# examples per fuzz test; inputs = examples * BATCH
PLAN = {"unicode": 2000, "alphabet": 1800, "tokens": 600, "mutated": 750, "injection": 500}
CANARY = Path(tempfile.gettempdir()) / "trustlab-fuzz-canary"  # a fixed name: the inputs hold it, runs repeat
CANARY_ENV = "TRUSTLAB_FUZZ_CANARY"
ALLOWED_NODES = (sympy.Symbol, sympy.Rational, sympy.Add, sympy.Mul, sympy.Pow, sympy.Equality)


def fuzz_settings(examples: int) -> settings:
    return settings(max_examples=examples, deadline=None, derandomize=True, database=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


# --- the guard: a process-wide audit hook, active only while a parser runs --------------------------------

class _Audit:
    """Records sensitive runtime events (PEP 578) while ``active``; raising in the hook also blocks them.

    Module imports are allowed (sympy imports lazily: exec of a code object from a real file, read-only
    opens, and writes under ``__pycache__`` when a module is compiled for the first time); exec/compile of code that is not a file, opens for writing, processes, sockets, environment
    changes and file system changes are not. ``ast_only`` names the filenames whose compile events are
    ``ast.parse`` calls (a syntax tree, never run: running it would need an exec event, still blocked).
    """

    BLOCKED = ("os.system", "os.exec", "os.spawn", "os.posix_spawn", "os.fork", "os.forkpty", "os.kill",
               "os.putenv", "os.unsetenv", "os.remove", "os.rename", "os.rmdir", "os.mkdir", "os.chmod",
               "os.chown", "os.truncate", "os.link", "os.symlink", "os.utime", "os.startfile", "subprocess.",
               "socket.", "shutil.", "ctypes.", "urllib.", "http.", "ftplib.", "smtplib.", "pty.", "webbrowser.",
               "builtins.input", "sys.addaudithook", "code.__new__", "function.__new__")

    def __init__(self, ast_only: frozenset[str] = frozenset()) -> None:
        self.active = False
        self.events: list[str] = []
        self.ast_only = ast_only

    def __call__(self, event: str, args: tuple) -> None:
        if not self.active or (event in ("os.mkdir", "os.rename", "open") and "__pycache__" in str(args[:2])):
            return
        bad = event.startswith(self.BLOCKED)
        if event == "exec":
            bad = not Path(getattr(args[0], "co_filename", "<none>")).is_file()
        elif event == "compile":
            bad = not (isinstance(args[1], str) and (args[1] in self.ast_only or Path(args[1]).is_file()))
        elif event == "open":
            bad = any(c in str(args[1] or "r") for c in "wax+")
        if bad:
            self.events.append(f"{event} {str(args)[:120]}")
            raise RuntimeError(f"blocked audit event {event} during parsing")

    def run(self, fn, *args, **kwargs):
        """``fn(*args, **kwargs)`` under the hook, timed: (its result or the ParseError it raised, seconds);
        the events it caused are in ``events`` until the next run."""
        self.events = []
        self.active = True
        t0 = time.perf_counter()
        try:
            out = fn(*args, **kwargs)
        except ParseError as exc:
            out = exc
        finally:
            seconds = time.perf_counter() - t0
            self.active = False
        return out, seconds


AUDIT = _Audit()
sys.addaudithook(AUDIT)  # hooks cannot be removed; this one is a no-op outside AUDIT.run


def check_tree(eq) -> None:
    assert isinstance(eq, sympy.Equality), type(eq)
    for node in sympy.preorder_traversal(eq):
        assert isinstance(node, ALLOWED_NODES), f"{type(node).__name__} node {node} in {eq}"
        if isinstance(node, sympy.Pow):
            assert node.exp.is_Integer, f"non-integer exponent in {eq}"


def timed(fn, text: str):
    """``AUDIT.run(fn, text)``, asserting no audit event and a time under PER_CALL_S. A slow first call is timed
    once more before it fails: on a shared machine a pause can come from another job; a slow input is slow twice."""
    out, seconds = AUDIT.run(fn, text)
    assert AUDIT.events == [], AUDIT.events
    if seconds >= PER_CALL_S:
        seconds = min(seconds, AUDIT.run(fn, text)[1])
    assert seconds < PER_CALL_S, f"{fn.__name__} took {seconds:.2f} s on {text[:200]!r}"
    return out


def check_input(text: str) -> None:
    """Both parsers on one input: ParseError or well-formed sympy, in time, without side effects."""
    out = timed(parse_equations, text)
    if not isinstance(out, ParseError):
        assert 1 <= len(out) <= 12
        for e in out:
            check_tree(e)
    system = timed(parse_system, text)
    if not isinstance(system, ParseError):
        assert len(system.equations) == len(system.lines)
        for e in system.equations:
            check_tree(e)
    assert not CANARY.exists(), f"the canary file was created by {text[:200]!r}"
    assert CANARY_ENV not in os.environ, f"the canary variable was set by {text[:200]!r}"


def run_fuzz(name: str, strategy) -> None:
    """Feed ``PLAN[name]`` batches of ``strategy`` through :func:`check_input`; check the count."""
    count = 0

    @fuzz_settings(PLAN[name])
    @given(st.lists(strategy, min_size=BATCH, max_size=BATCH))
    def batch(texts):
        nonlocal count
        for text in texts:
            check_input(text)
            count += 1

    batch()
    assert count >= PLAN[name] * BATCH


@pytest.fixture(scope="module", autouse=True)
def warm_and_clean():
    """Warm sympy's lazy imports and printers outside the guard; remove the canaries either way."""
    for text in SYSTEMS:
        try:
            parse_equations(text)
        except ParseError:
            pass
        [str(e) for e in parse_system(text).equations]
    yield
    CANARY.unlink(missing_ok=True)
    os.environ.pop(CANARY_ENV, None)


# --- inputs ---------------------------------------------------------------------------------------------

SYSTEMS = [
    "x + y = 10\n2x - y = 2",
    "a + b + c = 30; a = 2b; c = 50% * a",
    "1- Find b and g.\n5- System of equations:\nb/g = 9/4\n$b + g = 26$ (the total)",
    "3x + 2y - z = 1\n2x - 2y + 4z = -2\n-x + 0.5y - z = 0",
    "Equation 1: p + q = 1,200\nEquation 2: 0.05p + 0.08q = 75",
    "Step 5: \\frac{x}{2} + y = 7\nx \\times 3 = y",
    "w = 2l\n2w + 2l = 36.",
    "x^2 + y^2 = 25\nx - y = 1",
    "c1 + c2 + c3 + c4 = 100\nc1 = c2 + 5\nc3 = 2 c4\nc2 = c4 - 3",
    "n*(n + 1)/2 = 55",
    "s = 0.8 * 120\nt = s - 3.5",
    "a:b = 3:4\na + b = 35",
    "x \u2212 y = 2 \u00d7 3\n- x + y = -6 \u00f7 1",
    "[x + 1] / 4 = y; y**3 = 8",
    "5. Let x = apples, y = pears.\nx + y = 12 where x is apples\nx = 2y",
    "2(a - 3) + 4b = $18\nb >= 0\na = b = 3",
]
GRAMMAR_CHARS = "0123456789xyzabcnXYZEIS_+-*/^=()[]%$.,;: \t\n{}\\" + "\u2212\u00d7\u00f7"
TOKENS = (list(GRAMMAR_CHARS) + ["**", "x1", "p_2", "12", "1,200", "0.5", ".25", "3.", "999999999999", "^12",
          "^-12", "^13", "\\frac{", "}{", "\\times", "\\cdot", "\\left(", "\\right)", "5-", "Step 5:", "\n5. ",
          "Equation 1:", "(the total)", " where ", "<=", "!=", "==", "lambda", "import", "os", "__", "e", "pi",
          "sqrt(", "exp(", "Eq(", "0/", "/0", "(x-x)", "^-1", "0^-1"])
# Python that creates CANARY or sets CANARY_ENV when run (test_canary_payloads_are_live checks that it does)
FILE_PAYLOADS = [
    "__import__('os').system('echo x > {path}')",
    "open('{path}', 'w').write('x')",
    "exec(\"open('{path}', 'w')\")",
    "eval(\"open('{path}', 'w')\")",
    "(lambda: open('{path}', 'w'))()",
    "f\"{{open('{path}', 'w')}}\"",
    "getattr(__import__('builtins'), 'open')('{path}', 'w')",
    "__import__('pathlib').Path('{path}').touch()",
    "[c for c in ().__class__.__base__.__subclasses__() if c.__name__ == '_wrap_close'][0]"
    ".__init__.__globals__['system']('echo x > {path}')",
    "import os; os.system('echo x > {path}')",
    "x = 1; __builtins__.__dict__['exec'](\"open('{path}', 'w')\")",
    "exec(compile(\"open('{path}', 'w')\", 's', 'exec'))",
]
ENV_PAYLOADS = [
    "__import__('os').environ.__setitem__('{env}', '1')",
    "getattr(getattr(__import__('os'), 'environ'), '__setitem__')('{env}', '1')",
    "import os\nos.environ['{env}'] = '1'",
    "exec('import os; os.putenv(\"{env}\", \"1\"); os.environ[\"{env}\"] = \"1\"')",
]
PAYLOADS = [p.format(path=CANARY, env=CANARY_ENV) for p in FILE_PAYLOADS + ENV_PAYLOADS]
WRAPPERS = ["{}", "x = {}", "{} = 1", "5- System:\n{}", "$ {} $", "\\frac{{{}}}{{2}}", "x + y = 10\n{}\nx - y = 2",
            "Equation 1: {}", "x = 2 ({})", "{{{}}}", "{0}\n{0}\n{0}"]


@st.composite
def mutated(draw):
    """A real-looking system with a few characters inserted, deleted or replaced."""
    text = list(draw(st.sampled_from(SYSTEMS)))
    chars = st.sampled_from(GRAMMAR_CHARS) | st.characters()
    for op, pos in draw(st.lists(st.tuples(st.sampled_from("idr"), st.integers(0, 200)), min_size=1, max_size=6)):
        pos = pos % (len(text) + 1)
        if op == "i":
            text.insert(pos, draw(chars))
        elif op == "d" and pos < len(text):
            del text[pos]
        elif pos < len(text):
            text[pos] = draw(chars)
    return "".join(text)


@st.composite
def injection(draw):
    """An injection payload, maybe wrapped, maybe cut or spliced into a real system."""
    payload = draw(st.sampled_from(PAYLOADS))
    text = draw(st.sampled_from(WRAPPERS)).format(payload)
    how = draw(st.sampled_from(["whole", "splice", "cut"]))
    if how == "splice":
        system = draw(st.sampled_from(SYSTEMS))
        pos = draw(st.integers(0, len(system)))
        text = system[:pos] + text + system[pos:]
    elif how == "cut":
        a, b = sorted(draw(st.tuples(st.integers(0, len(text)), st.integers(0, len(text)))))
        text = text[a:b]
    return text


STRATEGIES = {
    "unicode": st.text(max_size=120),
    "alphabet": st.text(alphabet=GRAMMAR_CHARS, max_size=80),
    "tokens": st.lists(st.sampled_from(TOKENS), max_size=30).map("".join),
    "mutated": mutated(),
    "injection": injection(),
}


def test_the_plan_has_over_100k_inputs():
    assert sum(PLAN.values()) * BATCH >= 100_000


@pytest.mark.parametrize("name", list(PLAN))
def test_fuzz_parsers(name):
    run_fuzz(name, STRATEGIES[name])


def test_canary_payloads_are_live(tmp_path):
    """Run as Python (in a child interpreter), every payload does create the canary or set the variable,
    so the fuzz tests' "canary absent" checks mean something."""
    path, env = tmp_path / "canary", "TRUSTLAB_LIVE_CANARY"
    for template in FILE_PAYLOADS:
        path.unlink(missing_ok=True)
        subprocess.run([sys.executable, "-c", template.format(path=path, env=env)], cwd=tmp_path, check=True,
                       capture_output=True, timeout=30)
        assert path.exists(), template
    check = f"\nimport os, sys\nsys.exit(0 if os.environ.get({env!r}) == '1' else 3)"
    for template in ENV_PAYLOADS:
        subprocess.run([sys.executable, "-c", template.format(path=path, env=env) + check], cwd=tmp_path,
                       check=True, capture_output=True, timeout=30)


def test_the_guard_catches_execution():
    """The audit hook does see what the payloads would do (here: a compile of non-file code)."""
    with pytest.raises(RuntimeError, match="blocked audit event compile"):
        AUDIT.run(compile, "1 + 1", "<model>", "eval")
    assert AUDIT.events and AUDIT.events[0].startswith("compile")
    AUDIT.events.clear()


@pytest.mark.parametrize("payload", PAYLOADS)
def test_each_payload_is_refused_or_inert(payload):
    """Each payload whole: parse_equations refuses it; parse_system keeps no equation from its code."""
    with pytest.raises(ParseError):
        parse_equations(payload)
    check_input(payload)


def test_worst_cases_at_the_bounds():
    """Inputs built to be slow (distinct monomials up to the 4000-character bound, towers of powers,
    deep nesting): still well-defined and bounded (the first takes up to ~1 s with sympy's cache cold)."""
    import random

    rng = random.Random(0)
    names = "abcdefghijkl"
    lines = [" + ".join(" ".join(rng.sample(names, 3)) for _ in range(100)) + " = 1" for _ in range(12)]
    monomials = "\n".join(lines)[:4000].rsplit("\n", 1)[0]
    cases = [monomials, "((((a + b)^12)^12)^12)^12 = 1", "(" * 39 + "x" + ")" * 39 + " = 1",
             "(" + ")(".join(f"{names[i % 12]} + {i}" for i in range(150)) + ") = 0", "9" * 24 + "^12 = x"]
    for text in cases:
        out, seconds = AUDIT.run(parse_equations, text)
        assert AUDIT.events == [] and seconds < 5.0, (seconds, text[:80])
        if not isinstance(out, ParseError):
            for e in out:
                check_tree(e)


def test_parse_system_is_bounded_on_long_lines():
    # the trailing-prose regex is quadratic in a line's '(' count: lines past MAX_LINE are skipped unparsed
    t0 = time.perf_counter()
    out = parse_system("x = 1 (" + "(" * 8000)
    assert time.perf_counter() - t0 < 0.25 and not out.equations and "skipped a line" in out.warnings[-1]
    t0 = time.perf_counter()
    out = parse_system("5-\nx = 1\n" + "word (" * 200_000 + "\n5-\ny = 2")
    assert time.perf_counter() - t0 < 0.5 and [str(e) for e in out.equations] == ["Eq(y, 2)"]


# --- the Solver: a few hundred inputs end to end, and a system that times out ---------------------------

SOLVER_TIMEOUT = 2.0
SOLVER_MARGIN = 3.0  # killing and joining the worker, the pipe, a loaded machine


@st.composite
def linear_system(draw):
    """A small system with integer coefficients, written the way a model writes it."""
    names = draw(st.lists(st.sampled_from("abcxyz"), min_size=1, max_size=4, unique=True))
    lines = []
    for _ in range(draw(st.integers(1, 4))):
        terms = [f"{draw(st.integers(-9, 9))}{n}" for n in names if draw(st.booleans())] or [names[0]]
        lines.append(" + ".join(terms) + f" = {draw(st.integers(-50, 50))}")
    return draw(st.sampled_from(["{}", "5- System of equations:\n{}", "Step 5: {}"])).format("\n".join(lines))


SOLVER_INPUTS = (linear_system() | mutated() | st.text(alphabet=GRAMMAR_CHARS, max_size=40)
                 | st.text(max_size=60) | injection())


@pytest.fixture(scope="module")
def solver():
    with Solver(timeout=SOLVER_TIMEOUT) as s:
        yield s


def _solver_call(fn, *args):
    t0 = time.perf_counter()
    try:
        out = fn(*args)
    except ParseError as exc:
        out = exc
    seconds = time.perf_counter() - t0
    assert seconds < SOLVER_TIMEOUT + SOLVER_MARGIN, (seconds, args)
    return out


def test_fuzz_solver(solver):
    """300 inputs through Solver.solve (text and, when it parses here, sympy objects) and solve_formulation."""
    count = 0

    @fuzz_settings(30)
    @given(st.lists(SOLVER_INPUTS, min_size=10, max_size=10))
    def batch(texts):
        nonlocal count
        for text in texts:
            result = _solver_call(solver.solve, text)
            if not isinstance(result, ParseError):
                assert result.status in STATUSES
                eqs = parse_equations(text)
                assert _solver_call(solver.solve, eqs).status in STATUSES
            formulation = _solver_call(solver.solve_formulation, text)
            if not isinstance(formulation, ParseError):
                result, parsed = formulation
                assert result.status in STATUSES and set(parsed) == {"equations", "lines", "warnings"}
            count += 1
        assert not CANARY.exists() and CANARY_ENV not in os.environ

    batch()
    assert count >= 300


# sympy.solve on this takes over 60 s (measured with Solver(timeout=60) while writing this test)
SLOW_SYSTEM = "x^12 + y^12 + z^12 = 3\nx^11 y + z = 5\nx y z^10 = 2"


def test_a_slow_system_times_out_and_the_solver_recovers():
    with Solver(timeout=SOLVER_TIMEOUT) as s:
        assert s.solve("x = 1").solved  # the worker is up
        t0 = time.perf_counter()
        result = s.solve(SLOW_SYSTEM)
        seconds = time.perf_counter() - t0
        assert result.status == "timeout", result
        assert SOLVER_TIMEOUT <= seconds < SOLVER_TIMEOUT + SOLVER_MARGIN
        assert s.restarts == 1
        result, parsed = s.solve_formulation("5- System:\n" + SLOW_SYSTEM)
        assert result.status == "timeout" and parsed["equations"] == []
        again = s.solve("x + y = 10\nx - y = 2")
        assert again.status == "solved" and again.values == {"x": 6.0, "y": 4.0}
        assert s.restarts == 2
