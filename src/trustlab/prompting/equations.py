"""A bounded parser for systems of equations written by a model (untrusted text), into sympy objects.

Model output is never passed to ``eval``, ``exec``, ``sympify`` or ``parse_expr``: this module tokenises the
text itself and builds the sympy objects with its own recursive-descent grammar::

    system    := equation ((newline | ";") equation)*      one equation per line (or ; separated)
    equation  := expr "=" expr | expr                        a bare expression e means e = 0
    expr      := term (("+" | "-") term)*
    term      := factor (("*" | "/" | implicit) factor)*   implicit: 2x, 3(x + 1), (a + b)(a - b), x y
    factor    := ("+" | "-") factor | power
    power     := atom (("^" | "**") factor)?               right-associative
    atom      := number "%"? | name | "(" expr ")" | "[" expr "]"

Numbers are decimals (``12``, ``0.5``, ``1,200``, ``3.``), turned into exact rationals; ``%`` multiplies by 1/100.
Names are letters, digits and underscores starting with a letter (``x``, ``price_1``); ``$`` and a trailing
period are ignored. Everything else (function calls, ``__import__``, ``lambda``, inequalities, ``==`` chains,
unicode operators other than the minus sign, ``×`` and ``÷``) raises :class:`~trustlab.errors.ParseError`.

Bounds, so that no input can make parsing or the later solve hang or blow up: at most ``MAX_CHARS``
characters, ``MAX_EQUATIONS`` equations, ``MAX_NAMES`` distinct names, ``MAX_DIGITS`` digits per number,
nesting depth ``MAX_DEPTH``, and exponents that are integers with ``|e| <= MAX_EXPONENT`` (a symbolic or huge
exponent is refused, not evaluated).

Example:
    >>> eqs = parse_equations("x + y = 10\\n2x - y = 2")
    >>> [str(e) for e in eqs]
    ['Eq(x + y, 10)', 'Eq(2*x - y, 2)']
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from trustlab.errors import ParseError

MAX_CHARS = 4000
MAX_EQUATIONS = 12
MAX_NAMES = 12
MAX_DIGITS = 24
MAX_DEPTH = 40
MAX_EXPONENT = 12
MAX_TOKENS = 800
MAX_RESULT_DIGITS = 400  # of a number raised to a power

_TOKEN = re.compile(r"""
    (?P<ws>[ \t]+)
  | (?P<number>\d{1,3}(?:,\d{3})+(?:\.\d*)?|\d+\.\d*|\.\d+|\d+)
  | (?P<name>[A-Za-z][A-Za-z0-9_]*)
  | (?P<op>\*\*|[-+*/^=()\[\]%])
""", re.VERBOSE)
_SEPARATORS = re.compile(r"[\n;]+")
_REPLACE = {"\u2212": "-", "\u00d7": "*", "\u00b7": "*", "\u00f7": "/", "$": ""}


@dataclass(frozen=True)
class _Tok:
    kind: str
    text: str
    pos: int


def _tokens(line: str) -> list[_Tok]:
    out: list[_Tok] = []
    pos = 0
    while pos < len(line):
        m = _TOKEN.match(line, pos)
        if m is None:
            raise ParseError(f"unexpected character {line[pos]!r} at position {pos} in {line[:80]!r}")
        kind = m.lastgroup or ""
        if kind != "ws":
            out.append(_Tok(kind, m.group(), pos))
            if len(out) > MAX_TOKENS:
                raise ParseError(f"equation longer than {MAX_TOKENS} tokens")
        pos = m.end()
    return out


class _Parser:
    def __init__(self, toks: list[_Tok], names: dict[str, Any], line: str):
        self.toks, self.i, self.names, self.line, self.depth = toks, 0, names, line, 0

    def peek(self) -> _Tok | None:
        return self.toks[self.i] if self.i < len(self.toks) else None

    def take(self, text: str | None = None) -> _Tok:
        tok = self.peek()
        if tok is None or (text is not None and tok.text != text):
            want = repr(text) if text else "more input"
            got = repr(tok.text) if tok else "the end"
            raise ParseError(f"expected {want}, got {got} in {self.line[:80]!r}")
        self.i += 1
        return tok

    def nest(self) -> None:
        self.depth += 1
        if self.depth > MAX_DEPTH:
            raise ParseError(f"nesting deeper than {MAX_DEPTH}")

    def equation(self) -> Any:
        import sympy

        left = self.expr()
        tok = self.peek()
        if tok is None:
            return sympy.Eq(left, 0, evaluate=False)
        self.take("=")
        right = self.expr()
        if self.peek() is not None:
            raise ParseError(f"unexpected {self.peek().text!r} after the equation in {self.line[:80]!r}")
        return sympy.Eq(left, right, evaluate=False)

    def expr(self) -> Any:
        self.nest()
        value = self.term()
        while (tok := self.peek()) is not None and tok.text in "+-" and tok.kind == "op":
            self.take()
            rhs = self.term()
            value = value + rhs if tok.text == "+" else value - rhs
        self.depth -= 1
        return value

    def _starts_factor(self, tok: _Tok | None) -> bool:
        return tok is not None and (tok.kind in ("number", "name") or tok.text in ("(", "["))

    def term(self) -> Any:
        value = self.factor()
        while True:
            tok = self.peek()
            if tok is not None and tok.text in ("*", "/"):
                self.take()
                rhs = self.factor()
                if tok.text == "*":
                    value = value * rhs
                else:
                    if rhs == 0:
                        raise ParseError(f"division by zero in {self.line[:80]!r}")
                    value = value / rhs
            elif self._starts_factor(tok):  # implicit multiplication: 2x, 3(x+1), (a)(b)
                value = value * self.power()
            else:
                return value

    def factor(self) -> Any:
        tok = self.peek()
        if tok is not None and tok.text in ("+", "-"):
            self.take()
            self.nest()
            inner = self.factor()
            self.depth -= 1
            return -inner if tok.text == "-" else inner
        return self.power()

    def power(self) -> Any:
        import sympy

        base = self.atom()
        tok = self.peek()
        if tok is not None and tok.text in ("^", "**"):
            self.take()
            self.nest()
            exp = self.factor()
            self.depth -= 1
            if not (exp.is_Integer or (exp.is_Rational and exp.q == 1)) or abs(int(exp)) > MAX_EXPONENT:
                raise ParseError(f"exponent {exp} is not an integer with |e| <= {MAX_EXPONENT}")
            if base == 0 and int(exp) < 0:
                raise ParseError(f"0 raised to a negative power in {self.line[:80]!r}")
            if base.is_Rational:  # evaluated at once: bound the digits of the result
                size = max(len(str(abs(base.p))), len(str(base.q))) * abs(int(exp))
                if size > MAX_RESULT_DIGITS:
                    raise ParseError(f"{base}^{exp} would have about {size} digits (more than {MAX_RESULT_DIGITS})")
            return sympy.Pow(base, exp)
        return base

    def atom(self) -> Any:
        import sympy

        tok = self.take()
        if tok.kind == "number":
            digits = tok.text.replace(",", "")
            if sum(c.isdigit() for c in digits) > MAX_DIGITS:
                raise ParseError(f"number {tok.text[:30]}... has more than {MAX_DIGITS} digits")
            value = sympy.Rational(digits.rstrip(".") or "0")
            if (nxt := self.peek()) is not None and nxt.text == "%":
                self.take()
                value = value / 100
            return value
        if tok.kind == "name":
            if (nxt := self.peek()) is not None and nxt.text in ("(",) and tok.text not in self.names \
                    and len(tok.text) > 1:
                raise ParseError(f"function calls are not allowed ({tok.text}(...)) in {self.line[:80]!r}")
            if tok.text not in self.names:
                if len(self.names) >= MAX_NAMES:
                    raise ParseError(f"more than {MAX_NAMES} unknowns")
                self.names[tok.text] = sympy.Symbol(tok.text)
            return self.names[tok.text]
        if tok.text in ("(", "["):
            close = ")" if tok.text == "(" else "]"
            inner = self.expr()
            self.take(close)
            return inner
        raise ParseError(f"unexpected {tok.text!r} at position {tok.pos} in {self.line[:80]!r}")


def parse_equations(text: str) -> list[Any]:
    """Parse one equation per line (or ``;``-separated) into ``sympy.Eq`` objects, strictly and boundedly.

    Args:
        text: the equations, e.g. a model's answer after its "5-" marker. Blank lines are skipped; a trailing
            period on a line is ignored.

    Returns:
        The equations, in order, over ``sympy.Symbol`` unknowns named as in the text.

    Raises:
        ParseError: anything outside the grammar of the module docstring, or past one of its bounds; the
            message says what and where.

    Example:
        >>> parse_equations("a + b + c = 30; a = 2b; c = 50% * a")[2]
        Eq(c, a/2)
    """
    if not isinstance(text, str):
        raise ParseError(f"equations must be text, got {type(text).__name__}")
    if len(text) > MAX_CHARS:
        raise ParseError(f"equations longer than {MAX_CHARS} characters")
    for old, new in _REPLACE.items():
        text = text.replace(old, new)
    names: dict[str, Any] = {}
    out = []
    for raw in _SEPARATORS.split(text):
        line = raw.strip().rstrip(".").strip()
        if not line:
            continue
        if len(out) >= MAX_EQUATIONS:
            raise ParseError(f"more than {MAX_EQUATIONS} equations")
        toks = _tokens(line)
        if sum(t.text == "=" for t in toks) > 1:
            raise ParseError(f"more than one '=' in {line[:80]!r}")
        out.append(_Parser(toks, names, line).equation())
    if not out:
        raise ParseError("no equation found")
    return out
