"""parse_equations: model-written equations into sympy, with a grammar of our own (never eval/sympify)."""

from __future__ import annotations

import time

import pytest
import sympy
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from trustlab.errors import ParseError
from trustlab.prompting import equations as eq
from trustlab.prompting import parse_equations

x, y, z = sympy.symbols("x y z")


def solve(text: str) -> dict:
    eqs = parse_equations(text)
    syms = sorted(set().union(*(e.free_symbols for e in eqs)), key=str)
    (sol,) = [sympy.solve(eqs, syms, dict=True)[0]]
    return {str(k): v for k, v in sol.items()}


def test_a_system_with_implicit_multiplication_percent_and_decimals():
    assert solve("x + y + z = 30\n2x = y\nz = 50% * x + 1.5") == {"x": sympy.Rational(57, 7),
                                                                   "y": sympy.Rational(114, 7),
                                                                   "z": sympy.Rational(39, 7)}


@pytest.mark.parametrize("text, expected", [
    ("3(x + 1) = 12", sympy.Eq(3 * (x + 1), 12)),
    ("(x + 1)(x - 1) = 0", sympy.Eq((x + 1) * (x - 1), 0)),
    ("x^2 - 4", sympy.Eq(x**2 - 4, 0)),                      # a bare expression is = 0
    ("2**3 x = $1,200.", sympy.Eq(8 * x, 1200)),             # $, thousands commas, trailing period
    ("x \u2212 y = 2 \u00d7 3", sympy.Eq(x - y, 6)),          # unicode minus and times
    ("-x = -(-2)", sympy.Eq(-x, 2)),
    ("x / 4 = [y + 1]", sympy.Eq(x / 4, y + 1)),
    ("0.25x = .5", sympy.Eq(sympy.Rational(1, 4) * x, sympy.Rational(1, 2))),
])
def test_grammar(text, expected):
    (got,) = parse_equations(text)
    assert sympy.simplify(got.lhs - got.rhs - (expected.lhs - expected.rhs)) == 0


@pytest.mark.parametrize("text, message", [
    ("__import__('os').system('ls')", "unexpected character"),
    ("exp(x) = 1", "function calls are not allowed"),
    ("lambda: 1", "unexpected character"),
    ("x < 3", "unexpected character"),
    ("x = y = 3", "more than one '='"),
    ("x^y = 2", "exponent y is not an integer"),
    ("2^100000 = x", "exponent 100000 is not an integer with |e| <= 12"),
    ("((((((((((((((((((((((((((((((((((((((((((x))))))))))))))))))))))))))))))))))))))))))) = 1", "nesting deeper"),
    ("1" * 30 + " = x", "more than 24 digits"),
    ("x / 0 = 1", "division by zero"),
    ("x = ", "expected more input"),
    ("(x + 1 = 2", "expected ')'"),
    ("", "no equation found"),
    ("entailment", None),  # a word is a name: it parses (as word = 0): callers check the unknowns
])
def test_refusals(text, message):
    if message is None:
        parse_equations(text)
        return
    with pytest.raises(ParseError, match=message.replace("(", r"\(").replace(")", r"\)").replace("^", r"\^")
                       .replace("|", r"\|")):
        parse_equations(text)


def test_bounds_on_size():
    with pytest.raises(ParseError, match="more than 12 equations"):
        parse_equations("\n".join(f"x{i} = {i}" for i in range(13)))
    with pytest.raises(ParseError, match="more than 12 unknowns"):
        parse_equations(" + ".join(f"v{i}" for i in range(13)) + " = 1")
    with pytest.raises(ParseError, match="longer than 4000 characters"):
        parse_equations("x = 1\n" * 1000)
    with pytest.raises(ParseError, match="would have about"):  # tower of powers, evaluated at once
        parse_equations("((999999^12)^12)^12 = x")


def test_never_calls_eval_or_sympify(monkeypatch):
    """The parser builds sympy objects itself: sympify / parse_expr are never reached with the text."""
    calls = []
    monkeypatch.setattr(sympy, "sympify", lambda *a, **k: calls.append(a) or (_ for _ in ()).throw(AssertionError))
    import sympy.parsing.sympy_parser as sp

    monkeypatch.setattr(sp, "parse_expr", lambda *a, **k: calls.append(a) or (_ for _ in ()).throw(AssertionError))
    parse_equations("2x + 3y = 7\nx - y = 1")
    assert calls == []


ALPHABET = st.sampled_from(list("xyzab0123456789+-*/^=()[]%., $\n;_") + ["**", "__", "import", "os", "e", "\u2212"])


@settings(max_examples=3000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(ALPHABET, max_size=60).map("".join))
def test_fuzz_only_parse_errors_and_fast(text):
    """Arbitrary operator soup: a list of Eq or ParseError, nothing else, and quickly."""
    t0 = time.perf_counter()
    try:
        out = parse_equations(text)
        assert out and all(isinstance(e, sympy.Equality) for e in out)
    except ParseError:
        pass
    assert time.perf_counter() - t0 < 2.0


@settings(max_examples=1000, deadline=None)
@given(st.text(max_size=200))
def test_fuzz_arbitrary_unicode(text):
    try:
        parse_equations(text)
    except ParseError:
        pass


def test_bounds_are_module_constants():
    assert eq.MAX_EXPONENT == 12 and eq.MAX_DIGITS == 24 and eq.MAX_EQUATIONS == 12
