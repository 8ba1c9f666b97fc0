"""Program-of-thought (Chen et al. 2022) without running the model's program: a whitelisted interpreter.

The model writes a short Python program; :func:`run_program` parses it with :func:`ast.parse` (parsing builds
a syntax tree and runs nothing) and walks that tree with an interpreter of our own, which knows a small subset
of Python and a fixed table of functions. No ``exec``, ``eval`` or ``compile``-to-code ever sees model text,
so a program cannot reach the file system, the network, other processes or the interpreter's internals:
there is no operation in the table that would.

Why an interpreter and not a subprocess "sandbox": a subprocess without OS isolation (seccomp filters,
namespaces, a container, another user) runs with our permissions; it can read and write our files and open
sockets, and ``resource`` limits bound its time and memory, not its reach. Such isolation differs across
Linux, macOS and Windows, needs privileges or extra tools, and this machine has none we can rely on. The
interpreter behaves the same everywhere, and tests/prompting/test_pot.py checks what it refuses.

The subset:

- statements: ``import`` / ``from ... import`` of ``sympy``, ``math`` and ``fractions`` only (they bind the
  table's names; a name the table lacks is bound to a stub that fails when used); assignment to names,
  tuples, list items and dict keys; augmented assignment; expressions; ``if``; ``for`` over ranges, lists,
  tuples, strings and dicts, with ``break`` and ``continue``; ``pass``.
- expressions: numbers, short strings, f-strings, names, ``+ - * / // % **``, ``-x``, ``not``, comparisons,
  ``and``/``or``, ``a if c else b``, list/tuple/dict literals, subscripts, slices, list comprehensions and
  generator expressions, and calls to the table: :data:`BUILTINS` (``print round abs int float str bool len
  min max sum range list tuple sorted enumerate zip``), :data:`MODULES` (``sympy``: ``symbols Symbol Eq solve
  Rational nsimplify sqrt pi E``; ``math``: ``sqrt floor ceil fabs gcd lcm isclose log exp pi e``;
  ``fractions.Fraction``) and :data:`METHODS` (dict ``keys values items get``, list ``append extend index
  count pop``, ``str.join``, ``float.is_integer``, ``Fraction.limit_denominator``, sympy ``evalf subs``).
- anything else (``while``, ``def``, ``class``, ``lambda``, ``with``, ``try``, ``global``, attributes
  outside the table, dunder names, other imports, ``open``, ``getattr``, ``eval``, ...) is refused by
  :func:`check_program` with a :class:`~trustlab.errors.ParseError` naming the construct.

Bounds, so that no program can hang or exhaust the process: source length, AST nodes and depth (which bounds
the interpreter's recursion), statements and loop iterations run (``max_steps``), wall time
(``max_seconds``, solver calls included), integer digits (``2 ** 10 ** 10`` is refused before it is
computed), string and list lengths (checked before ``"a" * n``), total allocation, sympy expression size and
depth, and the work of one comparison or print.

sympy itself turns text into code (``sympify``, which ``solve``, ``subs`` and ``nsimplify`` call on their
arguments): the table hands sympy numbers and sympy objects only, never a string.

:func:`check_program` raises :class:`~trustlab.errors.ParseError` for a program outside the subset;
:func:`run_program` raises nothing for the model's faults: a refused program, a Python error while running
(division by zero, a bad index) or a bound that was hit becomes :attr:`PotResult.error`, a counted invalid
output.

``solve`` goes through :class:`~trustlab.prompting.solver.Solver` (a worker process with a hard time limit)
with the equations as sympy objects. It returns the first real solution (non-negative preferred) as
``{symbol: value}`` (``[value]`` for one equation in one unknown, ``[{...}]`` with ``dict=True``, ``[]``
when there is none), unlike sympy, which lists every solution of a nonlinear system. ``nsimplify`` takes a
number and returns the nearest fraction with a denominator up to 10**6 (sympy's own may call
``mpmath.identify``, which evaluates generated strings).

Example:
    >>> res = run_program("from sympy import symbols, Eq, solve\\nx, y = symbols('x y')\\n"
    ...                   "s = solve([Eq(x + y, 10), Eq(x - y, 2)], [x, y])\\nans = [s[x], s[y]]")
    >>> res.numbers, res.error
    ([6.0, 4.0], None)

References:
    Chen, Ma, Wang, Cohen. Program of Thoughts Prompting: Disentangling Computation from Reasoning for
    Numerical Reasoning Tasks. TMLR (2023), arXiv:2211.12588.
"""

from __future__ import annotations

import ast
import math
import operator
import re
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Any

import sympy

from trustlab.errors import ParseError
from trustlab.prompting.answers import MAX_NUMBERS, extract_numbers
from trustlab.prompting.equations import MAX_EXPONENT

MAX_SOURCE_CHARS = 8000
MAX_NODES = 4000
MAX_DEPTH = 60
MAX_STEPS = 100_000
MAX_SECONDS = 30.0
MAX_INT_DIGITS = 100
MAX_CONST_STR = 1000
MAX_STR = 10_000
MAX_ITEMS = 10_000
MAX_ALLOC = 2_000_000  # list items + characters + sympy arguments created by one program
MAX_WORK = 100_000  # elements one comparison, hash or print may visit
MAX_SYMPY_NODES = 1000
MAX_SYMPY_DEPTH = 60
MAX_SYMBOLS = 50
MAX_PRINT_LINES = 1000
ANSWER_NAMES = ("ans", "answer", "result")
_MAX_BITS = int(MAX_INT_DIGITS * math.log2(10)) + 1
_CONTAINERS = (list, tuple, dict)
_SCALARS = (int, float, bool, str, type(None), Fraction)


class ProgramError(ParseError):
    """A program inside the subset that fails when run: a Python error (division by zero, an unknown name, a
    bad index), a run-time bound (steps, seconds, sizes) or a failed ``solve``."""


@dataclass
class PotResult:
    """What a program computed.

    Attributes:
        numbers: the answer: the numbers in ``ans`` (or ``answer``, ``result``) when the program set one, else
            those on the last printed line that has any; empty after an error.
        printed: one string per ``print`` call.
        variables: the program's variables at the end (modules and functions left out).
        error: why the program was refused or stopped (``ParseError: ...`` / ``ProgramError: line N: ...``),
            or None.
        steps: statements and loop iterations run.
    """

    numbers: list[float] = field(default_factory=list)
    printed: list[str] = field(default_factory=list)
    variables: dict[str, Any] = field(default_factory=dict)
    error: str | None = None
    steps: int = 0


@dataclass(frozen=True)
class _Fn:
    name: str
    impl: Callable[..., Any]
    fresh: bool = True  # returns a new value (counted against the bounds), not one the program already holds

    def __repr__(self) -> str:
        return f"<function {self.name}>"


@dataclass(frozen=True)
class _Module:
    name: str

    def __repr__(self) -> str:
        return f"<module {self.name}>"


@dataclass(frozen=True)
class _Missing:
    name: str


_PY_ERRORS = (ArithmeticError, TypeError, ValueError, LookupError, AttributeError, RecursionError,
              NotImplementedError, sympy.polys.polyerrors.BasePolynomialError)


def _py(fn: Callable[..., Any], *args: Any) -> Any:
    """A primitive operation; the Python errors a program can cause become ProgramError."""
    try:
        return fn(*args)
    except ParseError:
        raise
    except _PY_ERRORS as exc:
        raise ProgramError(f"{type(exc).__name__}: {exc}"[:300]) from None


def _need(name: str, args: list, kwargs: dict, lo: int, hi: int | None, keys: tuple[str, ...] = ()) -> None:
    if len(args) < lo or (hi is not None and len(args) > hi):
        raise ProgramError(f"{name}() takes {lo}..{hi if hi is not None else 'n'} arguments, got {len(args)}")
    if bad := sorted(set(kwargs) - set(keys)):
        raise ProgramError(f"{name}() got unsupported keyword {bad[0]!r}")


def _int_arg(name: str, v: Any, bound: int) -> int:
    if type(v) not in (int, bool) or abs(v) > bound:
        raise ProgramError(f"{name} must be an integer with |n| <= {bound}, got {str(v)[:30]}")
    return int(v)


# --- the static check ---------------------------------------------------------------------------------------

_ALLOWED = {ast.Module, ast.Expr, ast.Assign, ast.AugAssign, ast.If, ast.For, ast.Break, ast.Continue, ast.Pass,
            ast.Import, ast.ImportFrom, ast.alias, ast.Name, ast.Load, ast.Store, ast.Constant, ast.BinOp,
            ast.UnaryOp, ast.BoolOp, ast.Compare, ast.IfExp, ast.Call, ast.keyword, ast.Attribute, ast.Subscript,
            ast.Slice, ast.List, ast.Tuple, ast.Dict, ast.JoinedStr, ast.FormattedValue, ast.ListComp,
            ast.GeneratorExp, ast.comprehension, ast.Add, ast.Sub, ast.Mult, ast.Div, ast.FloorDiv, ast.Mod,
            ast.Pow, ast.USub, ast.UAdd, ast.Not, ast.And, ast.Or, ast.Eq, ast.NotEq, ast.Lt, ast.LtE, ast.Gt,
            ast.GtE, ast.In, ast.NotIn, ast.Is, ast.IsNot}
_NAMED = {"While": "while loops", "FunctionDef": "function definitions (def)", "AsyncFunctionDef": "async def",
          "Lambda": "lambda", "ClassDef": "class definitions", "With": "with blocks", "AsyncWith": "async with",
          "Try": "try blocks", "TryStar": "try blocks", "Global": "global", "Nonlocal": "nonlocal",
          "Delete": "del", "Return": "return", "Assert": "assert", "Raise": "raise", "Set": "set literals",
          "SetComp": "set comprehensions", "DictComp": "dict comprehensions", "NamedExpr": ":= assignments",
          "Starred": "starred expressions", "Yield": "yield", "YieldFrom": "yield", "Await": "await",
          "AnnAssign": "annotated assignments", "Match": "match statements", "MatMult": "the @ operator",
          "Invert": "the ~ operator", "BitAnd": "bit operators", "BitOr": "bit operators", "BitXor": "bit operators",
          "LShift": "shift operators", "RShift": "shift operators", "AsyncFor": "async for", "Del": "del"}


def _refuse(what: str, node: ast.AST) -> ParseError:
    return ParseError(f"not allowed: {what} (line {getattr(node, 'lineno', '?')})")


def _check_node(node: ast.AST, bound: set[str]) -> None:
    if type(node) not in _ALLOWED:
        raise _refuse(_NAMED.get(type(node).__name__) or f"{type(node).__name__} nodes", node)
    if isinstance(node, ast.Name) and "__" in node.id:
        raise _refuse(f"dunder name {node.id!r}", node)
    if isinstance(node, ast.Attribute):
        if node.attr.startswith("_"):
            raise _refuse(f"attribute {node.attr!r} (private or dunder)", node)
        if node.attr not in _ATTR_NAMES:
            raise _refuse(f"attribute {node.attr!r} (not in the table)", node)
        if isinstance(node.ctx, ast.Store):
            raise _refuse("assignment to an attribute", node)
    elif isinstance(node, ast.Constant):
        v = node.value
        if type(v) not in (int, float, str, bool, type(None)):
            raise _refuse(f"a {type(v).__name__} constant", node)
        if (type(v) is str and len(v) > MAX_CONST_STR) or (type(v) is int and v.bit_length() > _MAX_BITS):
            raise _refuse(f"a constant longer than {MAX_CONST_STR} characters or {MAX_INT_DIGITS} digits", node)
    elif isinstance(node, ast.Import):
        for a in node.names:
            if a.name not in MODULES:
                raise _refuse(f"import of {a.name!r} (only {', '.join(MODULES)})", node)
            bound.add(a.asname or a.name)
    elif isinstance(node, ast.ImportFrom):
        if node.level or node.module not in MODULES:
            raise _refuse(f"import from {node.module!r} (only {', '.join(MODULES)})", node)
        for a in node.names:
            if "__" in a.name or "__" in (a.asname or ""):
                raise _refuse(f"import of dunder name {a.name!r}", node)
            bound.update(MODULES[node.module] if a.name == "*" else [a.asname or a.name])
    elif isinstance(node, ast.Call) and any(k.arg is None for k in node.keywords):
        raise _refuse("**kwargs in calls", node)
    elif isinstance(node, ast.Dict) and any(k is None for k in node.keys):
        raise _refuse("** in dict literals", node)
    elif isinstance(node, (ast.ListComp, ast.GeneratorExp)) and len(node.generators) > 3:
        raise _refuse("comprehensions with more than 3 for clauses", node)
    elif isinstance(node, ast.comprehension) and node.is_async:
        raise _refuse("async comprehensions", node)
    elif isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
        bound.add(node.id)


def check_program(source: str) -> ast.Module:
    """Parse a program (without running it) and check that it stays inside the interpreter's subset.

    Raises:
        ParseError: not Python, too long, too deep, a construct outside the subset, or a name that is neither
            in the table nor assigned anywhere in the program; the message names it and its line.

    Example:
        >>> check_program("import os")
        Traceback (most recent call last):
        trustlab.errors.ParseError: not allowed: import of 'os' (only sympy, math, fractions) (line 1)
    """
    if not isinstance(source, str):
        raise ParseError(f"a program must be text, got {type(source).__name__}")
    if len(source) > MAX_SOURCE_CHARS:
        raise ParseError(f"program longer than {MAX_SOURCE_CHARS} characters")
    try:
        with warnings.catch_warnings():  # the model's invalid escapes and the like are not our warnings
            warnings.simplefilter("ignore")
            tree = ast.parse(source, filename="<program>", mode="exec")
    except (SyntaxError, ValueError, RecursionError, MemoryError, OverflowError) as exc:
        raise ParseError(f"not a Python program: {type(exc).__name__}: {exc}"[:300]) from None
    bound: set[str] = set()
    loads: list[ast.Name] = []
    stack, count = [(tree, 0)], 0
    while stack:
        node, depth = stack.pop()
        count += 1
        if count > MAX_NODES:
            raise ParseError(f"program with more than {MAX_NODES} syntax nodes")
        if depth > MAX_DEPTH:
            raise _refuse(f"nesting deeper than {MAX_DEPTH}", node)
        _check_node(node, bound)
        if isinstance(node, ast.Name) and isinstance(node.ctx, ast.Load):
            loads.append(node)
        stack.extend((child, depth + 1) for child in reversed(list(ast.iter_child_nodes(node))))  # in order
    for node in sorted(loads, key=lambda n: (n.lineno, n.col_offset)):
        if node.id not in bound and node.id not in BUILTINS:
            raise _refuse(f"name {node.id!r} (neither assigned nor one of {', '.join(BUILTINS)})", node)
    return tree


# --- the interpreter ----------------------------------------------------------------------------------------

class _Break(Exception):
    pass


class _Continue(Exception):
    pass


_BINOPS = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul, ast.Div: operator.truediv,
           ast.FloorDiv: operator.floordiv, ast.Mod: operator.mod, ast.Pow: operator.pow}
_CMPOPS = {ast.Eq: operator.eq, ast.NotEq: operator.ne, ast.Lt: operator.lt, ast.LtE: operator.le,
           ast.Gt: operator.gt, ast.GtE: operator.ge, ast.In: lambda a, b: a in b,
           ast.NotIn: lambda a, b: a not in b, ast.Is: operator.is_, ast.IsNot: operator.is_not}
_SPEC = re.compile(r"(?:.?[<>=^])?[+\- ]?#?0?\d{0,2}[,_]?(?:\.\d{1,2})?[bcdeEfFgGnosxX%]?")
_EXACT = re.compile(r"(-?\d{1,60})(?:/(\d{1,60}))?")


class _Run:
    def __init__(self, solver: Any, max_steps: int, max_seconds: float):
        self.scopes: list[dict[str, Any]] = [{}]
        self.printed: list[str] = []
        self.steps = self.alloc = self.symbols = self.line = 0
        self.max_steps, self.max_seconds = max_steps, max_seconds
        self.deadline = time.perf_counter() + max_seconds
        self.solver, self.own_solver = solver, None

    # bookkeeping
    def tick(self) -> None:
        self.steps += 1
        if self.steps > self.max_steps:
            raise ProgramError(f"more than {self.max_steps} steps")
        if time.perf_counter() > self.deadline:
            raise ProgramError(f"ran past {self.max_seconds:g} s")

    def spend(self, n: int) -> None:
        self.alloc += n
        if self.alloc > MAX_ALLOC:
            raise ProgramError(f"allocated more than {MAX_ALLOC} items")

    def new(self, v: Any) -> Any:
        """Check a freshly made value against the bounds (and that it is a kind of value we know)."""
        t = type(v)
        if t in (bool, float, type(None), range, _Fn, _Module, _Missing):
            return v
        if t is int:
            if v.bit_length() > _MAX_BITS:
                raise ProgramError(f"an integer with more than {MAX_INT_DIGITS} digits")
        elif t is str or t in _CONTAINERS:
            limit = MAX_STR if t is str else MAX_ITEMS
            if len(v) > limit:
                raise ProgramError(f"a {t.__name__} longer than {limit}")
            self.spend(len(v))
        elif t is Fraction:
            if max(abs(v.numerator).bit_length(), v.denominator.bit_length()) > _MAX_BITS:
                raise ProgramError(f"a fraction with more than {MAX_INT_DIGITS} digits")
        elif isinstance(v, sympy.Basic):
            self.spend(len(v.args) + 1)
            budget, stack = MAX_SYMPY_NODES, [(v, 0)]
            while stack:
                e, depth = stack.pop()
                budget -= 1
                if budget < 0 or depth > MAX_SYMPY_DEPTH:
                    raise ProgramError(f"a sympy expression over {MAX_SYMPY_NODES} nodes or {MAX_SYMPY_DEPTH} deep")
                if e.is_Rational and max(abs(e.p).bit_length(), e.q.bit_length()) > _MAX_BITS:
                    raise ProgramError(f"a sympy number with more than {MAX_INT_DIGITS} digits")
                stack.extend((a, depth + 1) for a in e.args)
        else:
            raise ProgramError(f"a value of type {t.__name__}")
        return v

    def work(self, *values: Any) -> None:
        """Refuse comparisons and hashes that would visit more than MAX_WORK elements (shared or cyclic lists)."""
        if not any(type(v) in _CONTAINERS for v in values):
            return
        budget, stack = MAX_WORK, list(values)
        while stack:
            v = stack.pop()
            budget -= 1
            if budget < 0:
                raise ProgramError(f"a comparison over more than {MAX_WORK} elements")
            if type(v) in (list, tuple):
                stack.extend(v)
            elif type(v) is dict:
                stack.extend(v)
                stack.extend(v.values())

    def text(self, v: Any, top: bool = True) -> str:
        """str(v), bounded (cyclic and shared lists included)."""
        out: list[str] = []
        size = 0

        def put(s: str) -> None:
            nonlocal size
            size += len(s)
            if size > MAX_STR:
                raise ProgramError(f"text longer than {MAX_STR} characters")
            out.append(s)

        def walk(x: Any, depth: int, top: bool) -> None:
            if type(x) in (list, tuple, dict):
                if depth > 20:
                    return put("...")
                brackets = {list: "[]", tuple: "()", dict: "{}"}[type(x)]
                put(brackets[0])
                for i, item in enumerate(x.items() if type(x) is dict else x):
                    put(", " if i else "")
                    if type(x) is dict:
                        walk(item[0], depth + 1, False)
                        put(": ")
                        item = item[1]
                    walk(item, depth + 1, False)
                put(",)" if type(x) is tuple and len(x) == 1 else brackets[1])
            else:
                put(x if top and type(x) is str else repr(x) if type(x) is str else str(x))

        walk(v, 0, top)
        return "".join(out)

    def truth(self, v: Any) -> bool:
        return _py(bool, v)

    def items(self, v: Any) -> tuple:
        if type(v) is range and _py(len, v) > MAX_ITEMS:
            raise ProgramError(f"a range longer than {MAX_ITEMS} as a list")
        if type(v) not in (list, tuple, dict, str, range):
            raise ProgramError(f"cannot iterate over a {type(v).__name__}")
        return tuple(v)

    def to_sympy(self, v: Any, what: str) -> Any:
        if isinstance(v, sympy.Basic):
            return v
        if type(v) is int:
            return sympy.Integer(v)
        if type(v) is float:
            return sympy.Float(v)
        if type(v) is Fraction:
            return sympy.Rational(v.numerator, v.denominator)
        raise ProgramError(f"{what} takes numbers and sympy expressions, not a {type(v).__name__}")

    def get_solver(self) -> Any:
        if self.solver is None:
            from trustlab.prompting.solver import DEFAULT_TIMEOUT, Solver

            self.solver = self.own_solver = Solver(timeout=min(DEFAULT_TIMEOUT, self.max_seconds))
        return self.solver

    def close(self) -> None:
        if self.own_solver is not None:
            self.own_solver.close()

    # statements
    def block(self, body: list[ast.stmt]) -> None:
        for s in body:
            self.line = s.lineno
            self.tick()
            self._EXEC[type(s)](self, s)

    def s_Expr(self, s: ast.Expr) -> None:
        self.value_of(s.value)

    def s_Pass(self, s: ast.Pass) -> None:
        pass

    def s_Break(self, s: ast.Break) -> None:
        raise _Break

    def s_Continue(self, s: ast.Continue) -> None:
        raise _Continue

    def s_Assign(self, s: ast.Assign) -> None:
        value = self.value_of(s.value)
        for target in s.targets:
            self.assign(target, value)

    def s_AugAssign(self, s: ast.AugAssign) -> None:
        if isinstance(s.target, ast.Name):
            self.assign(s.target, self.binop(s.op, self.e_Name(s.target), self.value_of(s.value)))
        elif isinstance(s.target, ast.Subscript):
            obj, key = self.value_of(s.target.value), self.index(s.target.slice)
            self.setitem(obj, key, self.binop(s.op, self.getitem(obj, key), self.value_of(s.value)))
        else:
            raise ProgramError("augmented assignment to this target")

    def s_If(self, s: ast.If) -> None:
        self.block(s.body if self.truth(self.value_of(s.test)) else s.orelse)

    def s_For(self, s: ast.For) -> None:
        seq = self.value_of(s.iter)
        for item in seq if type(seq) is range else self.items(seq):
            self.tick()
            self.assign(s.target, item)
            try:
                self.block(s.body)
            except _Break:
                return
            except _Continue:
                continue
        self.block(s.orelse)

    def s_Import(self, s: ast.Import) -> None:
        for a in s.names:
            self.scopes[0][a.asname or a.name] = _Module(a.name)

    def s_ImportFrom(self, s: ast.ImportFrom) -> None:
        members = MODULES[s.module]
        for a in s.names:
            if a.name == "*":
                self.scopes[0].update(members)
            else:
                self.scopes[0][a.asname or a.name] = members.get(a.name, _Missing(f"{s.module}.{a.name}"))

    def assign(self, target: ast.expr, value: Any) -> None:
        if isinstance(target, ast.Name):
            self.scopes[-1][target.id] = value
        elif isinstance(target, (ast.Tuple, ast.List)):
            values = self.items(value)
            if len(values) != len(target.elts):
                raise ProgramError(f"cannot unpack {len(values)} values into {len(target.elts)} names")
            for t, v in zip(target.elts, values):
                self.assign(t, v)
        elif isinstance(target, ast.Subscript):
            self.setitem(self.value_of(target.value), self.index(target.slice), value)
        else:
            raise ProgramError(f"assignment to a {type(target).__name__}")

    # expressions
    def value_of(self, node: ast.expr) -> Any:
        return self._EVAL[type(node)](self, node)

    def e_Constant(self, node: ast.Constant) -> Any:
        return node.value

    def e_Name(self, node: ast.Name) -> Any:
        for scope in reversed(self.scopes):
            if node.id in scope:
                if isinstance(scope[node.id], _Missing):
                    raise ProgramError(f"{scope[node.id].name} is not available in the interpreter")
                return scope[node.id]
        if node.id in BUILTINS:
            return BUILTINS[node.id]
        raise ProgramError(f"name {node.id!r} is not defined")

    def e_BinOp(self, node: ast.BinOp) -> Any:
        return self.binop(node.op, self.value_of(node.left), self.value_of(node.right))

    def e_UnaryOp(self, node: ast.UnaryOp) -> Any:
        v = self.value_of(node.operand)
        if isinstance(node.op, ast.Not):
            return not self.truth(v)
        if type(v) not in (int, float, bool, Fraction) and not isinstance(v, sympy.Basic):
            raise ProgramError(f"unary minus or plus on a {type(v).__name__}")
        return self.new(_py(operator.neg if isinstance(node.op, ast.USub) else operator.pos, v))

    def e_BoolOp(self, node: ast.BoolOp) -> Any:
        is_and = isinstance(node.op, ast.And)
        for value in node.values:
            v = self.value_of(value)
            if self.truth(v) != is_and:
                return v
        return v

    def e_Compare(self, node: ast.Compare) -> Any:
        left, result = self.value_of(node.left), True
        for op, comp in zip(node.ops, node.comparators):
            right = self.value_of(comp)
            self.work(left, right)
            if type(op) in (ast.In, ast.NotIn) and type(right) is range and type(left) not in (int, bool):
                raise ProgramError("'in range(...)' takes an integer")  # anything else scans the range
            if type(op) in (ast.Lt, ast.LtE, ast.Gt, ast.GtE):
                self._no_text_in_sympy(left, right)
            result = self.new(_py(_CMPOPS[type(op)], left, right))
            if len(node.ops) > 1 and not self.truth(result):
                return False
            left = right
        return result

    def e_IfExp(self, node: ast.IfExp) -> Any:
        return self.value_of(node.body if self.truth(self.value_of(node.test)) else node.orelse)

    def e_List(self, node: ast.List) -> Any:
        return self.new([self.value_of(e) for e in node.elts])

    def e_Tuple(self, node: ast.Tuple) -> Any:
        return self.new(tuple(self.value_of(e) for e in node.elts))

    def e_Dict(self, node: ast.Dict) -> Any:
        out: dict[Any, Any] = {}
        for k, v in zip(node.keys, node.values):
            key = self.value_of(k)
            self.work(key)
            _py(operator.setitem, out, key, self.value_of(v))
        return self.new(out)

    def e_JoinedStr(self, node: ast.JoinedStr) -> str:
        parts = []
        for part in node.values:
            if isinstance(part, ast.Constant):
                parts.append(part.value)
                continue
            v = self.value_of(part.value)
            spec = self.value_of(part.format_spec) if part.format_spec is not None else ""
            if part.conversion == ord("r"):
                v = self.text(v, top=False)
            if not spec:
                parts.append(self.text(v))
            elif not _SPEC.fullmatch(spec) or not (type(v) in _SCALARS or isinstance(v, sympy.Number)):
                raise ProgramError(f"format spec {spec[:20]!r} for a {type(v).__name__}")
            else:
                parts.append(_py(format, v, spec))
        return self.new("".join(parts))

    def e_ListComp(self, node: ast.ListComp | ast.GeneratorExp) -> list:
        out: list[Any] = []
        self.scopes.append({})
        try:
            self._comprehension(node.elt, node.generators, 0, out)
        finally:
            self.scopes.pop()
        return self.new(out)

    e_GeneratorExp = e_ListComp

    def _comprehension(self, elt: ast.expr, gens: list[ast.comprehension], i: int, out: list) -> None:
        seq = self.value_of(gens[i].iter)
        for item in seq if type(seq) is range else self.items(seq):
            self.tick()
            self.assign(gens[i].target, item)
            if all(self.truth(self.value_of(c)) for c in gens[i].ifs):
                if i + 1 < len(gens):
                    self._comprehension(elt, gens, i + 1, out)
                else:
                    out.append(self.value_of(elt))
                    if len(out) > MAX_ITEMS:
                        raise ProgramError(f"a comprehension longer than {MAX_ITEMS}")

    def e_Attribute(self, node: ast.Attribute) -> Any:
        return self.member(self.value_of(node.value), node.attr)

    def member(self, obj: Any, attr: str) -> Any:
        if not isinstance(obj, _Module):
            raise ProgramError(f"attribute {attr!r} of a {type(obj).__name__} (only method calls)")
        if attr not in MODULES[obj.name]:
            raise ProgramError(f"{obj.name}.{attr} is not available in the interpreter")
        return MODULES[obj.name][attr]

    def e_Subscript(self, node: ast.Subscript) -> Any:
        return self.getitem(self.value_of(node.value), self.index(node.slice))

    def index(self, node: ast.expr) -> Any:
        if isinstance(node, ast.Tuple):
            return tuple(self.index(e) for e in node.elts)
        if not isinstance(node, ast.Slice):
            return self.value_of(node)
        parts = [None if p is None else self.value_of(p) for p in (node.lower, node.upper, node.step)]
        if any(p is not None and type(p) not in (int, bool) for p in parts):
            raise ProgramError("slice bounds must be integers")
        return slice(*parts)

    def getitem(self, obj: Any, key: Any) -> Any:
        if type(obj) not in (list, tuple, str, dict, range):
            raise ProgramError(f"a {type(obj).__name__} cannot be indexed")
        self.work(key)
        item = _py(operator.getitem, obj, key)
        return self.new(item) if type(key) is slice else item

    def setitem(self, obj: Any, key: Any, value: Any) -> None:
        if type(obj) not in (list, dict):
            raise ProgramError(f"a {type(obj).__name__} does not support item assignment")
        if type(key) is slice and type(value) not in (list, tuple):
            raise ProgramError("slice assignment takes a list or a tuple")
        self.work(key)
        _py(operator.setitem, obj, key, value)
        if len(obj) > MAX_ITEMS:
            raise ProgramError(f"a {type(obj).__name__} longer than {MAX_ITEMS}")
        self.spend(1)

    def _no_text_in_sympy(self, a: Any, b: Any) -> None:
        """sympy turns text into code when it meets it (sympify): never let a string reach an operation."""
        if isinstance(a, sympy.Basic) or isinstance(b, sympy.Basic):
            other = b if isinstance(a, sympy.Basic) else a
            if not (isinstance(other, sympy.Basic) or type(other) in (int, float, bool, Fraction)):
                raise ProgramError(f"a sympy object with a {type(other).__name__}")

    def binop(self, op: ast.operator, a: Any, b: Any) -> Any:
        self._no_text_in_sympy(a, b)
        kind = type(op)
        if kind is ast.Pow:
            self._check_pow(a, b)
        elif kind is ast.Mult:
            for seq, n in ((a, b), (b, a)):
                if type(seq) in (str, list, tuple) and type(n) in (int, bool):
                    limit = MAX_STR if type(seq) is str else MAX_ITEMS
                    if len(seq) * n > limit:
                        raise ProgramError(f"a {type(seq).__name__} of {len(seq)} times {n} (over {limit})")
        elif kind is ast.Mod and type(a) is str:
            raise ProgramError("% formatting of strings (use an f-string)")
        return self.new(_py(_BINOPS[kind], a, b))

    def _check_pow(self, base: Any, exp: Any) -> None:
        if isinstance(exp, sympy.Basic) and not exp.is_number:
            raise ProgramError(f"a symbolic exponent ({str(exp)[:30]})")
        if type(exp) not in (int, bool, float, Fraction) and not isinstance(exp, sympy.Basic):
            return  # a TypeError of Python's own
        size = _py(lambda: abs(complex(exp)))
        if type(base) in (int, bool, Fraction) or (isinstance(base, sympy.Basic) and base.is_Rational):
            num, den = (base.p, base.q) if isinstance(base, sympy.Basic) else (base.numerator, base.denominator)
            bits = max(math.log2(abs(num) or 1), math.log2(den))
        elif isinstance(base, sympy.Basic) and not base.is_Float:  # symbolic, or exact like sqrt(2)
            if size > MAX_EXPONENT:
                raise ProgramError(f"an exponent above {MAX_EXPONENT} on {str(base)[:30]}")
            return
        else:
            return  # floats overflow by themselves
        if bits > 0 and size * bits > _MAX_BITS:
            raise ProgramError(f"{str(base)[:30]} ** {str(exp)[:30]} would have more than {MAX_INT_DIGITS} digits")

    def e_Call(self, node: ast.Call) -> Any:
        if isinstance(node.func, ast.Attribute):
            obj = self.value_of(node.func.value)
            if isinstance(obj, _Module):
                fn = self.member(obj, node.func.attr)
            else:
                key = (_kind(obj), node.func.attr)
                if key not in METHODS:
                    raise ProgramError(f"a {type(obj).__name__} has no method {node.func.attr!r} here")
                fn = _Fn(node.func.attr, lambda run, args, kwargs: METHODS[key](run, obj, args, kwargs),
                         fresh=key not in _NOT_FRESH)
        else:
            fn = self.value_of(node.func)
        args = [self.value_of(a) for a in node.args]
        kwargs = {k.arg: self.value_of(k.value) for k in node.keywords}
        if not isinstance(fn, _Fn):
            raise ProgramError(f"a {type(fn).__name__} is not callable")
        result = _py(fn.impl, self, args, kwargs)
        return self.new(result) if fn.fresh else result

    def numbers(self) -> list[float]:
        env = self.scopes[0]
        name = next((n for n in ANSWER_NAMES if n in env), None)
        if name is None:
            return extract_numbers("\n".join(self.printed))
        out: list[float] = []

        def add(v: Any, depth: int) -> None:
            if len(out) >= MAX_NUMBERS or depth > 3 or type(v) in (bool, type(None)):
                return
            if type(v) in (list, tuple, dict):
                for x in (v.values() if type(v) is dict else v):
                    add(x, depth + 1)
            elif type(v) is str:
                out.extend(extract_numbers(v)[:MAX_NUMBERS - len(out)])
            elif type(v) in (int, float, Fraction) or (isinstance(v, sympy.Basic) and v.is_number):
                try:
                    c = complex(v)
                except (TypeError, ValueError, OverflowError):
                    return
                if abs(c.imag) <= 1e-9 * max(1.0, abs(c.real)) and math.isfinite(c.real):
                    out.append(c.real)

        add(env[name], 0)
        return out


_Run._EXEC = {getattr(ast, n[2:]): f for n, f in vars(_Run).items() if n.startswith("s_")}
_Run._EVAL = {getattr(ast, n[2:]): f for n, f in vars(_Run).items() if n.startswith("e_")}


def _kind(v: Any) -> str:
    return "sympy" if isinstance(v, sympy.Basic) else type(v).__name__


# --- the table ----------------------------------------------------------------------------------------------

def _print(run: _Run, args: list, kwargs: dict) -> None:
    _need("print", args, kwargs, 0, None, ("sep", "end"))
    sep, end = kwargs.get("sep", " "), kwargs.get("end", "\n")
    if type(sep) is not str or type(end) is not str or len(sep) + len(end) > 100:
        raise ProgramError("print's sep and end must be short strings")
    if len(run.printed) >= MAX_PRINT_LINES:
        raise ProgramError(f"more than {MAX_PRINT_LINES} prints")
    line = sep.join(run.text(a) for a in args) + ("" if end == "\n" else end)
    run.printed.append(run.new(line))


def _number(name: str, conv: Callable[[Any], Any]) -> Callable[..., Any]:
    def impl(run: _Run, args: list, kwargs: dict) -> Any:
        _need(name, args, kwargs, 0, 1)
        if args and type(args[0]) is str and len(args[0]) > 200:
            raise ProgramError(f"{name}() of a string longer than 200 characters")
        if args and not (type(args[0]) in _SCALARS or isinstance(args[0], sympy.Basic)):
            raise ProgramError(f"{name}() of a {type(args[0]).__name__}")
        return conv(*args)
    return impl


def _round(run: _Run, args: list, kwargs: dict) -> Any:
    _need("round", args, kwargs, 1, 2, ("ndigits",))
    nd = args[1] if len(args) > 1 else kwargs.get("ndigits")
    return round(args[0]) if nd is None else round(args[0], _int_arg("ndigits", nd, 20))


def _minmax(fn: Callable[..., Any]) -> Callable[..., Any]:
    def impl(run: _Run, args: list, kwargs: dict) -> Any:
        _need(fn.__name__, args, kwargs, 1, None)
        values = run.items(args[0]) if len(args) == 1 else tuple(args)
        run.work(*values)
        return fn(values)
    return impl


def _sum(run: _Run, args: list, kwargs: dict) -> Any:
    _need("sum", args, kwargs, 1, 2, ("start",))
    total = args[1] if len(args) > 1 else kwargs.get("start", 0)
    for v in run.items(args[0]):
        total = run.binop(ast.Add(), total, v)
    return total


def _range(run: _Run, args: list, kwargs: dict) -> range:
    _need("range", args, kwargs, 1, 3)
    return range(*(operator.index(a) for a in args))


def _sequence(name: str, conv: type) -> Callable[..., Any]:
    def impl(run: _Run, args: list, kwargs: dict) -> Any:
        _need(name, args, kwargs, 0, 1)
        return conv(run.items(args[0])) if args else conv()
    return impl


def _sorted(run: _Run, args: list, kwargs: dict) -> list:
    _need("sorted", args, kwargs, 1, 1, ("reverse",))
    values = run.items(args[0])
    run.work(*values)
    return sorted(values, reverse=bool(kwargs.get("reverse", False)))


def _enumerate(run: _Run, args: list, kwargs: dict) -> list:
    _need("enumerate", args, kwargs, 1, 2, ("start",))
    start = _int_arg("start", args[1] if len(args) > 1 else kwargs.get("start", 0), 10**9)
    return list(enumerate(run.items(args[0]), start))


def _zip(run: _Run, args: list, kwargs: dict) -> list:
    _need("zip", args, kwargs, 1, 10)
    return list(zip(*(run.items(a) for a in args)))


def _symbol_names(run: _Run, name: str, text: Any, kwargs: dict) -> list[str]:
    if type(text) is not str:
        raise ProgramError(f"{name}() takes the names as one string")
    names = [n for n in re.split(r"[\s,]+", text) if n]
    if not names or any(not re.fullmatch(r"[A-Za-z][A-Za-z0-9_]{0,30}", n) or "__" in n for n in names):
        raise ProgramError(f"{name}() names must be letters, digits and _ ({text[:40]!r})")
    if any(k not in ("positive", "negative", "nonnegative", "integer", "real") or type(v) is not bool
           for k, v in kwargs.items()):
        raise ProgramError(f"{name}() takes only positive/negative/nonnegative/integer/real=True|False")
    run.symbols += len(names)
    if run.symbols > MAX_SYMBOLS:
        raise ProgramError(f"more than {MAX_SYMBOLS} symbols")
    return names


def _symbols(run: _Run, args: list, kwargs: dict) -> Any:
    _need("symbols", args, kwargs, 1, 1, tuple(kwargs))
    names = _symbol_names(run, "symbols", args[0], kwargs)
    made = tuple(sympy.Symbol(n, **kwargs) for n in names)
    return made[0] if len(made) == 1 and "," not in args[0] else made


def _symbol(run: _Run, args: list, kwargs: dict) -> Any:
    _need("Symbol", args, kwargs, 1, 1, tuple(kwargs))
    names = _symbol_names(run, "Symbol", args[0], kwargs)
    if len(names) != 1:
        raise ProgramError("Symbol() takes one name")
    return sympy.Symbol(names[0], **kwargs)


def _eq(run: _Run, args: list, kwargs: dict) -> Any:
    _need("Eq", args, kwargs, 2, 2)
    return sympy.Eq(run.to_sympy(args[0], "Eq"), run.to_sympy(args[1], "Eq"))


def _rational(run: _Run, args: list, kwargs: dict) -> Any:
    _need("Rational", args, kwargs, 1, 2)
    return sympy.Rational(*(run.to_sympy(a, "Rational") for a in args))


def _nsimplify(run: _Run, args: list, kwargs: dict) -> Any:
    _need("nsimplify", args, kwargs, 1, 1, ("rational", "tolerance"))
    v = run.to_sympy(args[0], "nsimplify")
    if not v.is_number or not v.is_real:
        raise ProgramError("nsimplify() takes a real number here")
    if v.is_Rational:
        return v
    f = float(v)
    tol = kwargs.get("tolerance") or 1e-9 * max(1.0, abs(f))
    frac = Fraction(f).limit_denominator(10**6)
    return sympy.Rational(frac.numerator, frac.denominator) if abs(frac - Fraction(f)) <= tol else sympy.Rational(f)


def _sqrt(run: _Run, args: list, kwargs: dict) -> Any:
    _need("sqrt", args, kwargs, 1, 1)
    return sympy.sqrt(run.to_sympy(args[0], "sqrt"))


def _solve(run: _Run, args: list, kwargs: dict) -> Any:
    _need("solve", args, kwargs, 1, 20, ("dict",))
    single = not isinstance(args[0], (list, tuple))
    eqs = [run.to_sympy(e, "solve") for e in ([args[0]] if single else args[0])]
    rest = list(args[1]) if len(args) == 2 and isinstance(args[1], (list, tuple)) else args[1:]
    if any(not isinstance(s, sympy.Symbol) for s in rest):
        raise ProgramError("solve()'s unknowns must be symbols")
    if not eqs or len(eqs) > 20:
        raise ProgramError("solve() takes 1 to 20 equations")
    solver = run.get_solver()
    remaining = run.deadline - time.perf_counter()
    if remaining <= 0:
        raise ProgramError(f"ran past {run.max_seconds:g} s")
    res = solver.solve(eqs, rest or None, timeout=min(solver.timeout, remaining))
    if res.status == "no_solution":
        return []
    if res.status != "solved":
        raise ProgramError(f"solve: {res.status}" + (f" ({res.message[:200]})" if res.message else ""))
    unknowns = rest or sorted(set().union(*(e.free_symbols for e in eqs)), key=lambda s: s.name)
    by_name = {s.name: s for s in reversed(unknowns)}
    solution = {}
    for n, value in res.values.items():
        m = _EXACT.fullmatch(res.exact.get(n, ""))
        solution[by_name[n]] = sympy.Rational(int(m[1]), int(m[2] or 1)) if m else sympy.Float(value)
    if kwargs.get("dict"):
        return [solution]
    return [solution[unknowns[0]]] if single and len(unknowns) == 1 else solution


def _fraction(run: _Run, args: list, kwargs: dict) -> Fraction:
    _need("Fraction", args, kwargs, 0, 2)
    if any(type(a) not in (int, bool, float, Fraction) for a in args):
        raise ProgramError("Fraction() takes numbers here")
    return Fraction(*args)


def _math(name: str) -> _Fn:
    fn = getattr(math, name)

    def impl(run: _Run, args: list, kwargs: dict) -> Any:
        _need(f"math.{name}", args, kwargs, 1, None, ("rel_tol", "abs_tol") if name == "isclose" else ())
        if any(not (type(a) in (int, bool, float, Fraction) or isinstance(a, sympy.Basic)) for a in args):
            raise ProgramError(f"math.{name}() takes numbers")
        return fn(*args, **kwargs)
    return _Fn(f"math.{name}", impl)


def _method(name: str, fn: Callable[..., Any], lo: int = 0, hi: int | None = 0,
            keys: tuple[str, ...] = ()) -> Callable[..., Any]:
    def impl(run: _Run, obj: Any, args: list, kwargs: dict) -> Any:
        _need(name, args, kwargs, lo, hi, keys)
        return fn(run, obj, *args, **kwargs)
    return impl


def _append(run: _Run, obj: list, v: Any) -> None:
    run.spend(1)
    if len(obj) >= MAX_ITEMS:
        raise ProgramError(f"a list longer than {MAX_ITEMS}")
    obj.append(v)


def _extend(run: _Run, obj: list, v: Any) -> None:
    items = run.items(v)
    run.spend(len(items))
    if len(obj) + len(items) > MAX_ITEMS:
        raise ProgramError(f"a list longer than {MAX_ITEMS}")
    obj.extend(items)


def _join(run: _Run, sep: str, v: Any) -> str:
    items = run.items(v)
    if any(type(s) is not str for s in items) or sum(map(len, items)) + len(sep) * len(items) > MAX_STR:
        raise ProgramError(f"join() takes strings, at most {MAX_STR} characters in all")
    return sep.join(items)


def _subs(run: _Run, expr: Any, *args: Any) -> Any:
    pairs = args[0].items() if len(args) == 1 and type(args[0]) is dict else \
        run.items(args[0]) if len(args) == 1 else [args]
    mapping = []
    for pair in pairs:
        if type(pair) not in (tuple, list) or len(pair) != 2:
            raise ProgramError("subs() takes a dict, (old, new) pairs, or old, new")
        mapping.append((run.to_sympy(pair[0], "subs"), run.to_sympy(pair[1], "subs")))
    return expr.subs(mapping)


def _evalf(run: _Run, expr: Any, n: Any = 15) -> Any:
    n = _int_arg("evalf's n", n, 50)
    if n < 1:
        raise ProgramError("evalf's n must be 1..50")
    return expr.evalf(n)


def _one(name: str, fn: Callable[[_Run, Any], Any]) -> Callable[..., Any]:
    def impl(run: _Run, args: list, kwargs: dict) -> Any:
        _need(name, args, kwargs, 1, 1)
        return fn(run, args[0])
    return impl


BUILTINS: dict[str, _Fn] = {name: _Fn(name, impl, fresh=name not in ("min", "max")) for name, impl in {
    "print": _print, "round": _round, "abs": _number("abs", abs), "int": _number("int", int),
    "float": _number("float", float), "str": _one("str", _Run.text), "bool": _one("bool", _Run.truth),
    "len": _one("len", lambda run, v: len(v)), "min": _minmax(min), "max": _minmax(max), "sum": _sum,
    "range": _range, "list": _sequence("list", list), "tuple": _sequence("tuple", tuple), "sorted": _sorted,
    "enumerate": _enumerate, "zip": _zip}.items()}
MODULES: dict[str, dict[str, Any]] = {
    "sympy": {**{n: _Fn(f"sympy.{n}", f) for n, f in {
        "symbols": _symbols, "Symbol": _symbol, "Eq": _eq, "solve": _solve, "Rational": _rational,
        "nsimplify": _nsimplify, "sqrt": _sqrt}.items()}, "pi": sympy.pi, "E": sympy.E},
    "math": {**{n: _math(n) for n in ("sqrt", "floor", "ceil", "fabs", "gcd", "lcm", "isclose", "log", "exp")},
             "pi": math.pi, "e": math.e},
    "fractions": {"Fraction": _Fn("Fraction", _fraction)},
}
METHODS: dict[tuple[str, str], Callable[..., Any]] = {
    ("dict", "keys"): _method("keys", lambda run, d: list(d)),
    ("dict", "values"): _method("values", lambda run, d: list(d.values())),
    ("dict", "items"): _method("items", lambda run, d: list(d.items())),
    ("dict", "get"): _method("get", lambda run, d, k, default=None: run.work(k) or d.get(k, default), 1, 2),
    ("list", "append"): _method("append", _append, 1, 1),
    ("list", "extend"): _method("extend", _extend, 1, 1),
    ("list", "index"): _method("index", lambda run, xs, v: run.work(*xs, v) or xs.index(v), 1, 1),
    ("list", "count"): _method("count", lambda run, xs, v: run.work(*xs, v) or xs.count(v), 1, 1),
    ("list", "pop"): _method("pop", lambda run, xs, *i: xs.pop(*i), 0, 1),
    ("str", "join"): _method("join", _join, 1, 1),
    ("float", "is_integer"): _method("is_integer", lambda run, f: f.is_integer()),
    ("Fraction", "limit_denominator"): _method(
        "limit_denominator", lambda run, f, n=10**6: f.limit_denominator(_int_arg("max_denominator", n, 10**12)),
        0, 1),
    ("sympy", "evalf"): _method("evalf", _evalf, 0, 1),
    ("sympy", "subs"): _method("subs", _subs, 1, 2),
}
_NOT_FRESH = {("dict", "get"), ("list", "pop")}
_ATTR_NAMES = {a for _, a in METHODS} | {n for members in MODULES.values() for n in members}


def run_program(source: str, *, solver: Any = None, max_steps: int = MAX_STEPS,
                max_seconds: float = MAX_SECONDS) -> PotResult:
    """Interpret a model's program (never execute it) and read its answer.

    Args:
        source: the program text (see :func:`extract_program` for model output with fences).
        solver: a :class:`~trustlab.prompting.solver.Solver` for ``solve`` calls (default: one started on the
            first call and closed at the end).
        max_steps: statements and loop iterations the program may run.
        max_seconds: wall time the program may take, ``solve`` calls included.

    Returns:
        A :class:`PotResult`. A refused program (``error`` starts with ``ParseError``) or one that fails while
        running (``ProgramError: line N: ...``) gives an error and no numbers; nothing is raised.

    Example:
        >>> run_program("total = 0\\nfor i in range(1, 11):\\n    total += i\\nprint('sum:', total)").numbers
        [55.0]
    """
    try:
        tree = check_program(source)
    except ParseError as exc:
        return PotResult(error=f"ParseError: {exc}")
    run = _Run(solver, max_steps, max_seconds)
    error = None
    try:
        run.block(tree.body)
    except ProgramError as exc:
        error = f"ProgramError: line {run.line}: {exc}"
    except (_Break, _Continue):
        error = f"ProgramError: line {run.line}: break or continue outside a loop"
    except RecursionError:  # a caller already deep in its stack; MAX_DEPTH bounds our own recursion
        error = f"ProgramError: line {run.line}: nested too deeply for this stack"
    finally:
        run.close()
    variables = {k: v for k, v in run.scopes[0].items() if not isinstance(v, (_Fn, _Module, _Missing))}
    return PotResult([] if error else run.numbers(), run.printed, variables, error, run.steps)


_FENCE = re.compile(r"```[ \t]*([A-Za-z0-9_+-]*)[^\n]*\n(.*?)(?:```|\Z)", re.S)


def extract_program(text: str) -> str | None:
    """The program in a model's answer: its ```python (or ```py) blocks joined, else its untagged blocks, else
    the whole text when it parses as Python; None when there is none. An unclosed fence runs to the end.

    Example:
        >>> extract_program("Here:\\n```python\\nans = [1 + 1]\\n```\\nDone.")
        'ans = [1 + 1]\\n'
    """
    if not isinstance(text, str) or not text.strip():
        return None
    blocks = [(lang.lower(), body) for lang, body in _FENCE.findall(text)]
    for wanted in (("python", "py", "python3"), ("",)):
        chosen = [body for lang, body in blocks if lang in wanted]
        if chosen:
            return "\n".join(chosen)
    if len(text) <= MAX_SOURCE_CHARS:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                ast.parse(text, filename="<program>")
        except (SyntaxError, ValueError, RecursionError, MemoryError, OverflowError):
            return None
        return text
    return None
