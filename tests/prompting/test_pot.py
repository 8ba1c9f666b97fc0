"""Program-of-thought: the whitelisted interpreter runs typical model programs, refuses everything outside its
subset (naming the construct), keeps every bound, and never executes model text: a canary file and variable
that the injection programs would create when run as Python stay absent, and an audit hook sees no exec."""

from __future__ import annotations

import ast
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
import sympy
from hypothesis import given
from hypothesis import strategies as st

from tests.prompting.test_fuzz import _Audit, fuzz_settings
from trustlab.errors import ParseError
from trustlab.prompting import pot
from trustlab.prompting.pot import PotResult, ProgramError, check_program, extract_program, run_program
from trustlab.prompting.solver import Solver

CANARY = Path(tempfile.gettempdir()) / "trustlab-pot-canary"  # a fixed name: the programs hold it, runs repeat
CANARY_ENV = "TRUSTLAB_POT_CANARY"
AUDIT = _Audit(ast_only=frozenset({"<program>"}))  # pot parses programs under this name, never compiles them
sys.addaudithook(AUDIT)


@pytest.fixture(scope="module")
def solver():
    with Solver(timeout=5) as s:
        s.solve("x = 1")  # the worker starts (forks) here, outside any audit
        yield s
    CANARY.unlink(missing_ok=True)
    os.environ.pop(CANARY_ENV, None)


def run(source: str, solver=None, **kw) -> PotResult:
    out, seconds = AUDIT.run(run_program, source, solver=solver, **kw)
    assert isinstance(out, PotResult), out
    assert AUDIT.events == [], AUDIT.events
    assert not CANARY.exists() and CANARY_ENV not in os.environ
    return out


# --- typical programs ---------------------------------------------------------------------------------------

THREE_UNKNOWNS = """\
from sympy import symbols, Eq, solve

# a + b + c = 30, a = 2b, c = a/2 + 1
a, b, c = symbols('a b c')
eq1 = Eq(a + b + c, 30)
eq2 = Eq(a, 2 * b)
eq3 = Eq(c, a / 2 + 1)
solution = solve((eq1, eq2, eq3), (a, b, c))
print(f"a = {solution[a]}, b = {solution[b]}, c = {solution[c]}")
ans = [solution[a], solution[b], solution[c]]
"""


def test_arithmetic_and_the_ans_convention():
    res = run("price = 12.5\nqty = 4\ndiscount = 0.1\ntotal = price * qty * (1 - discount)\nans = round(total, 2)")
    assert res.error is None and res.numbers == [45.0] and res.variables["qty"] == 4
    res = run("x = 7 // 2\ny = 7 % 3\nz = 2 ** 10\nw = -x + abs(-3) + int('4') + float('0.5')\nanswer = [x, y, z, w]")
    assert res.numbers == [3.0, 1.0, 1024.0, 4.5]


def test_a_sympy_system_with_three_unknowns(solver):
    res = run(THREE_UNKNOWNS, solver)
    assert res.error is None, res.error
    assert res.numbers == [14.5, 7.25, 8.25]
    assert res.printed == ["a = 29/2, b = 29/4, c = 33/4"]  # exact rationals come back from the solver
    assert res.variables["solution"][sympy.Symbol("a")] == sympy.Rational(29, 2)


def test_solve_shapes(solver):
    res = run("import sympy as sp\nx = sp.Symbol('x')\nroots = sp.solve(sp.Eq(3*x + 2, 11), x)\n"
              "d = sp.solve([x - 4], [x], dict=True)\nnone = sp.solve([sp.Eq(x, 1), sp.Eq(x, 2)])\n"
              "ans = [roots[0], d[0][x], len(none)]", solver)
    assert res.error is None and res.numbers == [3.0, 4.0, 0.0]
    res = run("from sympy import *\nx, y = symbols('x y', positive=True)\ns = solve([x*y - 6, x - y - 1], [x, y])\n"
              "result = s", solver)  # nonlinear: the first real solution, non-negative preferred
    assert res.error is None and res.numbers == [3.0, 2.0]


def test_loops_comprehensions_and_printing():
    res = run("total = 0\nfor i in range(1, 101):\n    if i % 2 == 0:\n        continue\n    total += i\n"
              "    if i > 90:\n        break\nsquares = [i * i for i in range(6) if i % 2]\n"
              "ages = {'ann': 4, 'bob': 6}\nfor name, age in ages.items():\n    print(name, age)\n"
              "print('odd sum:', total, 'squares:', squares, sum(squares), max(ages.values()))")
    assert res.error is None
    assert res.printed == ["ann 4", "bob 6", "odd sum: 2116 squares: [1, 9, 25] 35 6"]
    assert res.numbers == [2116.0, 1.0, 9.0, 25.0, 35.0, 6.0]  # no ans: the last printed line with numbers


def test_printed_numbers_and_fractions_and_math():
    res = run("from fractions import Fraction\nimport math\nx = Fraction(1, 3) + Fraction(1, 6)\n"
              "print(f'{float(x):.2f} and {math.sqrt(16):g}')\nprint('done')")
    assert res.numbers == [0.5, 4.0] and res.printed == ["0.50 and 4", "done"]
    res = run("ans = {'boys': 12, 'girls': 14}")
    assert res.numbers == [12.0, 14.0]


@pytest.mark.parametrize("text, expected", [
    ("Here it is:\n```python\nans = [1 + 1]\n```\nThe answer is 2.", "ans = [1 + 1]\n"),
    ("```py\nx = 1\n```\n```python\nans = x\n```", "x = 1\n\nans = x\n"),
    ("```\nans = 3\n```", "ans = 3\n"),
    ("```python\nans = 4\n", "ans = 4\n"),  # the model stopped inside the fence
    ("ans = 5", "ans = 5"),  # bare code
    ("The answer is five.", None),
    ("", None),
])
def test_extract_program(text, expected):
    assert extract_program(text) == expected


# --- refusals: named constructs, bounds ---------------------------------------------------------------------

@pytest.mark.parametrize("source, message", [
    ("open('/etc/passwd')", "name 'open'"),
    ("open('/etc/passwd').read()", "attribute 'read'"),
    ("os = __import__('os')", "dunder name '__import__'"),
    ("__import__('os').system('ls')", "attribute 'system'"),
    ("import os", "import of 'os'"),
    ("import subprocess as sp", "import of 'subprocess'"),
    ("from os import path", "import from 'os'"),
    ("import sympy.parsing.sympy_parser", "import of 'sympy.parsing.sympy_parser'"),
    ("x = ().__class__.__bases__[0].__subclasses__()", "attribute '__subclasses__'"),
    ("x = getattr(1, 'real')", "name 'getattr'"),
    ("f = lambda: 1", "lambda"),
    ("while True:\n    pass", "while loops"),
    ("def f():\n    return 1", "function definitions"),
    ("class A:\n    pass", "class definitions"),
    ("with open('x') as f:\n    pass", "with blocks"),
    ("try:\n    x = 1\nexcept Exception:\n    pass", "try blocks"),
    ("global x", "global"),
    ("x = eval('1 + 1')", "name 'eval'"),
    ("exec('x = 1')", "name 'exec'"),
    ("x = {i for i in range(3)}", "set comprehensions"),
    ("import sympy\nx = sympy.sympify('1 + 1')", "attribute 'sympify'"),
    ("import math\nm = math.__dict__", "attribute '__dict__'"),
    ("x = 1\ny = x.real", "attribute 'real'"),
    ("x = [1]\nx.append.__self__", "attribute '__self__'"),
    ("print(*[1, 2])", "starred"),
    ("x = 1j", "complex constant"),
    ("x = b'abc'", "bytes constant"),
    ("(x := 3)", ":= assignments"),
    ("x = 'a' * 2000 if False else 1\ny = '" + "a" * 1001 + "'", "constant longer"),
    ("x = " + "-" * 80 + "1", "nesting deeper"),
    ("x = 1 +", "not a Python program"),
    ("x = " + "[" * 300 + "]" * 300, "not a Python program"),  # the parser's own nesting limit
    ("x = 1\n" * 3000, "longer than 8000 characters"),
])
def test_refused_constructs(source, message):
    with pytest.raises(ParseError, match=message.replace("(", r"\(").replace("*", r"\*")):
        check_program(source)
    res = run(source)
    assert res.error.startswith("ParseError:") and message in res.error and res.numbers == []


@pytest.mark.parametrize("source, message", [
    ("x = 10 ** 10 ** 10", "would have more than 100 digits"),
    ("x = 2 ** 400", "would have more than 100 digits"),
    ("s = 'ab' * 10 ** 9", "a str of 2 times 1000000000"),
    ("xs = [0] * 10 ** 8", "a list of 1 times 100000000"),
    ("s = 'abc'\nfor i in range(20):\n    s = s + s", "a str longer than 10000"),
    ("n = 1\nfor i in range(1000):\n    n = n * 12345678901234567890", "more than 100 digits"),
    ("for i in range(10 ** 12):\n    pass", "more than 100000 steps"),
    ("t = sum(i for i in range(10 ** 12))", "a comprehension longer than 10000"),
    ("t = sum(i for i in range(10 ** 12) if i < 0)", "more than 100000 steps"),
    ("t = sum(range(10 ** 12))", "a range longer than 10000"),
    ("ok = 0.5 in range(10 ** 12)", "'in range(...)' takes an integer"),
    ("a = [1]\nfor i in range(30):\n    a = [a, a]\nprint(a)", "text longer than 10000"),
    ("a = [1]\nb = [1]\nfor i in range(30):\n    a = [a, a]\n    b = [b, b]\nsame = a == b", "comparison over"),
    ("a = []\na.append(a)\nb = []\nb.append(b)\nsame = a == b", "comparison over"),
    ("print(f'{1:>1000000}')", "format spec"),
    ("s = '%s' % 1", "% formatting"),
    ("from sympy import symbols\nx = symbols('x:100000')", "names must be letters"),
    ("from sympy import symbols\nxs = symbols(' '.join(['v' + str(i) for i in range(60)]))", "more than 50 symbols"),
    ("from sympy import Symbol\nx = Symbol('x')\ny = x ** 13", "an exponent above 12"),
    ("from sympy import Symbol\nx = Symbol('x')\ny = 2 ** x", "a symbolic exponent"),
    ("from sympy import sqrt\ny = sqrt(2) ** (10 ** 9)", "an exponent above 12"),
    ("from sympy import Rational\ny = Rational(10 ** 99) * 10 ** 99 * 10 ** 99", "more than 100 digits"),
    ("from sympy import Symbol\nx = Symbol('x')\ne = x\nfor i in range(200):\n    e = (e + 1) * x", "sympy expression"),
    ("from sympy import sympify\ny = sympify('2')", "sympy.sympify is not available"),
    ("from sympy import nsimplify\ny = nsimplify('1/3')", "nsimplify takes numbers"),
    ("from sympy import Symbol\nx = Symbol('x')\ny = x.subs(x, '1 + 1')", "subs takes numbers"),
    ("from sympy import Eq, Symbol\ne = Eq(Symbol('x'), 'y')", "Eq takes numbers"),
    ("from sympy import solve\ns = solve(['x - 1'])", "solve takes numbers"),
    ("from sympy import Symbol\nx = Symbol('x')\ny = x + 'a'", "a sympy object with a str"),
    ("x = 1 / 0", "ZeroDivisionError"),
    ("x = [1, 2][5]", "IndexError"),
    ("x = {'a': 1}['b']", "KeyError"),
    ("x = y + 1\ny = 2", "name 'y' is not defined"),
    ("x = (-8) ** (1 / 3)", "a value of type complex"),
    ("break", "outside a loop"),
    ("x = 2.0 ** 10000", "OverflowError"),
])
def test_runtime_bounds_and_errors(source, message):
    res = run(source)
    assert res.error is not None and res.error.startswith("ProgramError: line ") and message in res.error, res.error
    assert res.numbers == []


def test_the_step_and_time_limits_are_parameters():
    res = run("t = 0\nfor i in range(100):\n    t += i\nans = t", max_steps=50)
    assert "more than 50 steps" in res.error
    t0 = time.perf_counter()
    res = run("t = 0\nfor i in range(10 ** 9):\n    t += i", max_steps=10 ** 9, max_seconds=0.5)
    assert "ran past 0.5 s" in res.error and time.perf_counter() - t0 < 3


def test_a_slow_solve_runs_into_the_time_limit(solver):
    slow = ("from sympy import symbols, solve\nx, y, z = symbols('x y z')\n"
            "s = solve([x**12 + y**12 + z**12 - 3, x**11*y + z - 5, x*y*z**10 - 2], [x, y, z])")
    with Solver(timeout=1) as own:
        own.solve("x = 1")
        res = run_program(slow, solver=own)  # not audited: the solver kills its worker (os.kill)
        assert "solve: timeout" in res.error
        assert own.solve("x = 2").solved  # a fresh worker (started here, outside the audit)
        assert run(THREE_UNKNOWNS, own).numbers == [14.5, 7.25, 8.25]


def test_unavailable_names_fail_only_when_used():
    res = run("from sympy import symbols, simplify\nx = symbols('x')\nans = 2")
    assert res.error is None and res.numbers == [2.0]
    res = run("from sympy import symbols, simplify\nx = symbols('x')\nans = simplify(x + x)")
    assert res.error == "ProgramError: line 3: sympy.simplify is not available in the interpreter"
    assert run("import sympy\nans = [sympy.pi, sympy.E]").numbers == pytest.approx([3.14159265, 2.71828183])


def test_program_error_is_a_parse_error():
    assert issubclass(ProgramError, ParseError)


# --- canaries: what Python would do, and that the interpreter does not --------------------------------------

FILE_PROGRAMS = [
    "import os\nos.system('echo x > {path}')",
    "open('{path}', 'w').write('x')",
    "__import__('os').system('echo x > {path}')",
    "exec(\"open('{path}', 'w')\")",
    "eval(\"open('{path}', 'w')\")",
    "f = lambda: open('{path}', 'w')\nf()",
    "getattr(__builtins__, 'open')('{path}', 'w')",
    "x = [c for c in ().__class__.__base__.__subclasses__() if c.__name__ == '_wrap_close'][0]\n"
    "x.__init__.__globals__['system']('echo x > {path}')",
    "def f():\n    open('{path}', 'w')\nf()",
    "class A:\n    open('{path}', 'w')",
    "with open('{path}', 'w') as f:\n    pass",
    "print(f\"{{open('{path}', 'w')}}\")",
]
ENV_PROGRAMS = [
    "import os\nos.environ['{env}'] = '1'",
    "__import__('os').environ.__setitem__('{env}', '1')",
    "import os as math\nmath.environ['{env}'] = '1'",
]
SYMPY_PROGRAMS = [  # sympy evaluates text it is given (sympify): these reach eval through sympy's own API
    "from sympy import sympify\nsympify(\"open('{path}', 'w')\")",
    "from sympy import nsimplify\nnsimplify(\"open('{path}', 'w')\")",
    "from sympy import Symbol\nx = Symbol('x')\nx.subs(x, \"open('{path}', 'w')\")",
    "from sympy import solve\nsolve([\"open('{path}', 'w')\"])",
]


def _programs(path: Path, env: str) -> list[str]:
    return [p.format(path=path, env=env) for p in FILE_PROGRAMS + ENV_PROGRAMS + SYMPY_PROGRAMS]


def test_the_canary_programs_are_live(tmp_path):
    """Run by Python itself (in a child interpreter), each program does create its file or set the variable."""
    env = "TRUSTLAB_LIVE_POT"
    for i, template in enumerate(FILE_PROGRAMS + SYMPY_PROGRAMS):
        path = tmp_path / f"canary{i}"
        subprocess.run([sys.executable, "-c", template.format(path=path, env=env)], cwd=tmp_path,
                       capture_output=True, timeout=60)  # the sympy ones fail after opening the file
        assert path.exists(), template
    check = f"\nimport os, sys\nsys.exit(0 if os.environ.get({env!r}) == '1' else 3)"
    for template in ENV_PROGRAMS:
        subprocess.run([sys.executable, "-c", template.format(path="", env=env) + check], cwd=tmp_path,
                       check=True, capture_output=True, timeout=30)


@pytest.mark.parametrize("program", _programs(CANARY, CANARY_ENV))
def test_the_interpreter_never_runs_them(program, solver):
    res = run(program, solver)  # run() asserts: no canary, no audit event
    assert res.error is not None and res.numbers == []


# --- fuzz: a few thousand programs --------------------------------------------------------------------------

PROGRAMS = [THREE_UNKNOWNS,
            "total = 0\nfor i in range(1, 11):\n    total += i * i\nans = total",
            "a = 3\nb = 4.5\nc = (a * b) / 2 - 1\nprint('c =', c)\nans = [c, a ** 2]",
            "import math\nr = 2.5\narea = math.pi * r ** 2\nprint(round(area, 2))",
            "prices = {'apple': 3, 'pear': 2}\ncount = {'apple': 4, 'pear': 5}\n"
            "cost = sum(prices[k] * count[k] for k in prices)\nanswer = cost",
            "from fractions import Fraction\nparts = [Fraction(1, 2), Fraction(1, 3)]\nrest = 1 - sum(parts)\n"
            "print(f'{rest} of the cake is left')",
            "xs = []\nfor i in range(5):\n    if i % 2 == 0:\n        xs.append(i)\n    else:\n        xs.extend([i, i])\n"
            "result = [len(xs), max(xs), sorted(xs)[0]]",
            "from sympy import symbols, Eq, solve\nx, y = symbols('x y')\ns = solve([Eq(x + y, 10), Eq(x - y, 2)])\n"
            "ans = [s[x], s[y]]"]
PAYLOADS = _programs(CANARY, CANARY_ENV)
TOKENS = ["x", "y", "ans", "i", "s", "sympy", "math", " = ", " + ", " - ", " * ", " / ", " ** ", " // ", " % ", "(",
          ")", "[", "]", "{", "}", ":", ",", ".", "\n", "\n    ", "for ", " in ", "range(", "if ", "else", "elif ",
          "import ", "from ", "print(", "while ", "def ", "lambda ", "return ", "'a'", "f'{x}'", "1", "0", "2.5",
          "10 ** 10", "__class__", "__import__", "open", "getattr", "eval", "symbols('x y')", "Eq(", "solve(",
          ".append(", ".items()", "True", "None", "not ", " and ", " or ", "==", "<", "#", "\\", "'''", "@", "*"]


@st.composite
def mutated_program(draw):
    """A typical program or an injection with lines dropped, duplicated or swapped and characters changed."""
    lines = draw(st.sampled_from(PROGRAMS + PAYLOADS)).split("\n")
    for _ in range(draw(st.integers(0, 3))):
        i = draw(st.integers(0, len(lines) - 1))
        op = draw(st.sampled_from(["drop", "dup", "swap", "char", "number"]))
        if op == "drop" and len(lines) > 1:
            del lines[i]
        elif op == "dup":
            lines.insert(i, lines[i])
        elif op == "swap":
            j = draw(st.integers(0, len(lines) - 1))
            lines[i], lines[j] = lines[j], lines[i]
        elif op == "char" and lines[i]:
            k = draw(st.integers(0, len(lines[i]) - 1))
            lines[i] = lines[i][:k] + draw(st.sampled_from(TOKENS) | st.characters()) + lines[i][k + 1:]
        elif op == "number":
            lines.insert(i, draw(st.sampled_from(["x = 10 ** 99", "n = 0", "s = 'ab' * 5000", "xs = [0] * 9999",
                                                  "for i in range(10 ** 6):\n    n = i"])))
    return "\n".join(lines)


EXPR = st.recursive(
    st.sampled_from(["1", "2.5", "0", "-3", "10 ** 50", "'ab'", "x", "y", "xs", "d", "s", "True", "None"]),
    lambda inner: st.one_of(
        st.tuples(inner, st.sampled_from([" + ", " - ", " * ", " / ", " // ", " % ", " ** ", " == ", " < ",
                                          " and ", " in "]), inner).map(lambda t: f"({t[0]}{t[1]}{t[2]})"),
        st.tuples(st.sampled_from(["abs", "int", "float", "str", "len", "round", "min", "max", "sum", "list",
                                   "sorted", "math.sqrt", "math.floor", "Eq", "Rational", "nsimplify"]),
                  st.lists(inner, min_size=1, max_size=2)).map(lambda t: f"{t[0]}({', '.join(t[1])})"),
        st.lists(inner, max_size=3).map(lambda xs: "[" + ", ".join(xs) + "]"),
        st.tuples(inner, inner).map(lambda t: f"{t[0]}[{t[1]}]"),
        st.tuples(inner, st.sampled_from(["evalf()", "subs(x, 2)", "append(1)", "values()", "items()",
                                          "join(['a'])", "is_integer()"])).map(lambda t: f"({t[0]}).{t[1]}"),
        inner.map(lambda e: f"[v * 2 for v in range(3) if {e}]"),
        inner.map(lambda e: f'f"{{{e}:>8}}"' if '"' not in e and "f'" not in e else f"str({e})"),
    ), max_leaves=8)
PRELUDE = ("import math\nfrom sympy import symbols, Eq, Rational, nsimplify\nx, y = symbols('x y')\n"
           "xs = [1, 2, 3]\nd = {'a': 1}\ns = 'text'\n")


@st.composite
def generated_program(draw):
    """Programs inside the subset's syntax, built from random expressions: they reach the run-time paths."""
    body = []
    for _ in range(draw(st.integers(1, 4))):
        e = draw(EXPR)
        body.append(draw(st.sampled_from(["ans = {}", "print({})", "if {}:\n    y = 1", "for v in [{}]:\n    s = v",
                                          "xs.append({})", "d['k'] = {}"])).format(e))
    return PRELUDE + "\n".join(body)


POT_INPUTS = {"text": st.text(max_size=200), "tokens": st.lists(st.sampled_from(TOKENS), max_size=40).map("".join),
              "mutated": mutated_program(), "generated": generated_program()}


@pytest.mark.parametrize("name, examples", [("text", 1000), ("tokens", 1000), ("mutated", 800), ("generated", 1200)])
def test_fuzz_run_program(name, examples, solver):
    """Only ParseError leaves check_program; run_program never raises, stays in time, and its results are clean."""
    count = 0

    @fuzz_settings(examples)
    @given(POT_INPUTS[name])
    def one(source):
        nonlocal count
        checked, _ = AUDIT.run(check_program, source)
        assert isinstance(checked, (ParseError, ast.Module))
        res, seconds = AUDIT.run(run_program, source, solver=solver, max_steps=5000, max_seconds=2.0)
        assert seconds < 2.0 + 5.0, (seconds, source)  # + one solve past the deadline, on a loaded machine
        assert isinstance(res, PotResult) and all(isinstance(p, str) for p in res.printed)
        assert res.error is None or res.error.startswith(("ParseError: ", "ProgramError: line "))
        assert all(isinstance(v, float) and v == v for v in res.numbers) and len(res.numbers) <= 20
        if isinstance(checked, ParseError):
            assert res.error == f"ParseError: {checked}"
        assert AUDIT.events == [] and not CANARY.exists() and CANARY_ENV not in os.environ, source
        count += 1

    one()
    assert count >= examples


def test_bounds_are_module_constants():
    assert pot.MAX_STEPS == 100_000 and pot.MAX_INT_DIGITS == 100 and pot.MAX_ITEMS == 10_000
