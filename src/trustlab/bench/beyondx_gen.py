"""Verified word problems with 2 to 5 unknowns: an offline generator, and BeyondX's progressive expansion.

:func:`generate_problems` needs no model and no data licence. It draws the solution first (positive integers
or short decimals), builds a linear system whose constants follow from it (totals, weighted totals, "k more
than", "m times", ratios, ages in the past or future, purchases), states each fact in words (the text holds
no equation), and keeps an item only when the :class:`~trustlab.prompting.solver.Solver` finds that its
``system_of_equations`` has exactly the drawn solution; singular draws are redrawn.

:func:`expand_items` is the paper's construction for users with a strong model (section 3a of the spec): the
model adds one unknown to a problem (:func:`expansion_prompt`, our paraphrase of the five instructions with a
worked example of our own), and :func:`parse_expansion` reads its answer with trustlab's bounded grammar (no
``eval``, ``exec`` or ``sympify`` of model text), then applies the fix-up: the known solution (old values and
the new value) is substituted into each new equation and the constant of a side is recomputed, so the system is
exactly consistent. Unlike the official pipeline, which left the text to human filtering, a recomputed constant
is also put into the problem text when the model's wrong number appears there exactly once; when it cannot be
placed, the item is a counted failure rather than a problem whose text and gold system disagree.

Example:
    >>> items = generate_problems(2, unknowns=(3,), seed=0)
    >>> [it.id for it in items], items[0].unknowns
    (['gen-3-0', 'gen-3-1'], 3)
    >>> new_items, failures = expand_items(load_model("openai:http://127.0.0.1:8000/v1"), items)

References:
    Kao, Wang, Hsieh. Solving for X and Beyond: Can Large Language Models Solve Complex Math Problems with
    More-Than-Two Unknowns? arXiv:2407.05134 (2024).
"""

from __future__ import annotations

import random
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from fractions import Fraction
from typing import Any

from trustlab.bench.beyondx import BeyondXItem, score_beyondx
from trustlab.errors import EmptyInputError, ParseError
from trustlab.prompting.solver import Solver

SYMBOLS = ("x", "y", "z", "w", "v")
MAX_ATTEMPTS = 200
MAX_NEW_TOKENS = 768
F = Fraction


# ---------------------------------------------------------------- number and equation text

def _dec(q: Fraction, max_places: int = 6) -> str:
    """The exact decimal text of ``q`` (``12``, ``0.05``, ``-3.5``); ValueError when it needs more places."""
    for places in range(max_places + 1):
        scaled = q * 10**places
        if scaled.denominator == 1:
            digits = str(abs(scaled.numerator)).rjust(places + 1, "0")
            body = f"{digits[:-places]}.{digits[-places:]}" if places else digits
            return ("-" if q < 0 else "") + body
    raise ValueError(f"{q} has no decimal form with at most {max_places} places")


def _money(q: Fraction) -> str:
    return f"${int(q):,}" if q.denominator == 1 else f"${float(q):,.2f}"


def _lin(terms: Sequence[tuple[Fraction, str]]) -> str:
    """``[(5, "x"), (-1, "y")]`` -> ``"5*x - y"`` (zero terms dropped)."""
    out = ""
    for c, name in terms:
        if c == 0:
            continue
        mag = "" if abs(c) == 1 else f"{_dec(abs(c))}*"
        out += (f" {'-' if c < 0 else '+'} " if out else ("-" if c < 0 else "")) + mag + name
    return out


def _plus(c: Fraction) -> str:
    """`` + 5``, `` - 5`` or nothing: a constant to append to an expression."""
    return "" if c == 0 else f" {'+' if c > 0 else '-'} {_dec(abs(c))}"


def _units(q: Fraction, unit: str) -> str:
    return f"{_dec(q)} {unit}{'' if q == 1 else 's'}"


def _join(words: Sequence[str]) -> str:
    return words[0] if len(words) == 1 else ", ".join(words[:-1]) + " and " + words[-1]


_TIMES = {2: "twice", 3: "three times", 4: "four times"}


# ---------------------------------------------------------------- scenarios

@dataclass(frozen=True)
class _Scenario:
    """One story. ``kinds(rng, n)`` draws n (label, quantity phrase, weight) triples; ``value(rng)`` one solution
    value; ``facts`` the fixed facts ("total", "weighted"); ``relations`` those drawn for the rest."""

    name: str
    kinds: Callable[[random.Random, int], list[tuple[str, str, Fraction | None]]]
    value: Callable[[random.Random], Fraction]
    intro: str                                  # {kinds}: the labels joined
    question: str
    amount: Callable[[Fraction], str] = _dec    # a quantity in the unknowns' unit, in the text
    facts: tuple[str, ...] = ("total",)
    relations: tuple[str, ...] = ("diff", "mult", "ratio", "sumvs", "pairsum")
    total: str = "There are {T} in all."
    weighted: str = ""                          # {S}
    weights: Callable[[list[tuple[str, str, Fraction | None]]], str] | None = None
    more: str = "{Qi} is {k} more than {qj}."     # {Qi}/{qj}: quantity phrases; {Ni}/{Nj}: labels
    times: str = "{Qi} is {m} {qj}."


def _pick(pool: Sequence[Any], rng: random.Random, n: int) -> list[Any]:
    return [pool[i] for i in sorted(rng.sample(range(len(pool)), n))]


def _priced(labels: Sequence[str], prices: Sequence[int]) -> Callable[[random.Random, int], list]:
    """Kinds with prices that rise in the order of ``labels`` (cheaper tickets first, small pizzas first)."""
    def kinds(rng: random.Random, n: int) -> list:
        return [(lab, f"the number of {lab}", F(p))
                for lab, p in zip(_pick(labels, rng, n), sorted(rng.sample(list(prices), n)), strict=True)]
    return kinds


def _coins(rng: random.Random, n: int) -> list:
    pool = [("nickels", F(5, 100)), ("dimes", F(10, 100)), ("quarters", F(25, 100)), ("half-dollars", F(50, 100)),
            ("dollar coins", F(1))]
    return [(lab, f"the number of {lab}", w) for lab, w in _pick(pool, rng, n)]


def _accounts(rng: random.Random, n: int) -> list:
    names = ["savings account", "bond fund", "stock fund", "certificate of deposit", "money-market fund"]
    rates = sorted(rng.sample(range(2, 10), n))
    return [(name, f"the amount invested in the {name}", F(r, 100))
            for name, r in zip(_pick(names, rng, n), rates, strict=True)]


def _solutions(rng: random.Random, n: int) -> list:
    pcts = sorted(rng.sample([10, 15, 20, 25, 30, 40, 50, 60, 75, 80], n))
    return [(f"{p}% acid", f"the amount of the {p}% solution", F(p, 100)) for p in pcts]


def _people(rng: random.Random, n: int) -> list:
    names = rng.sample(["Ana", "Ben", "Carla", "Dev", "Eli", "Farah", "Gus", "Hana"], n)
    return [(name, f"{name}'s age", None) for name in names]


def _colors(rng: random.Random, n: int) -> list:
    return [(f"{c} marbles", f"the number of {c} marbles", None)
            for c in _pick(["red", "blue", "green", "yellow", "white"], rng, n)]


_MENU = {"coffees": "coffee", "muffins": "muffin", "sandwiches": "sandwich", "salads": "salad", "juices": "juice",
         "bagels": "bagel"}


def _menu(rng: random.Random, n: int) -> list:
    return [(many, f"the price of a {_MENU[many]}", None) for many in _pick(list(_MENU), rng, n)]


def _cap(text: str) -> str:
    return text[:1].upper() + text[1:]


def _list_prices(kinds: list, verb: str) -> str:
    parts = [f"{lab} {verb} {_money(w)}" for lab, _, w in kinds]
    return _cap(_join(parts)) + "."


def _list_rates(kinds: list) -> str:
    return _cap(_join([f"the {name} paid {_dec(w * 100)}%" for name, _, w in kinds])) + " a year."


SCENARIOS: dict[str, _Scenario] = {s.name: s for s in (
    _Scenario("tickets", _priced(["child tickets", "student tickets", "senior tickets", "adult tickets",
                                  "VIP tickets"], [4, 5, 6, 7, 8, 9, 10, 12, 15, 18, 20, 25]),
              lambda r: F(r.randint(5, 90)), "A theater sold {kinds} for a show.",
              "How many tickets of each kind were sold?", facts=("total", "weighted"),
              total="It sold {T} tickets in all.", weighted="Ticket sales came to {S}.",
              weights=lambda ks: _list_prices(ks, "cost")),
    _Scenario("pizzas", _priced(["small pizzas", "medium pizzas", "large pizzas", "extra-large pizzas",
                                 "party pizzas"], [6, 8, 9, 10, 11, 12, 14, 16, 18, 21]),
              lambda r: F(r.randint(3, 60)), "On Friday a pizzeria sold {kinds}.",
              "How many pizzas of each size did it sell?", facts=("total", "weighted"),
              total="It sold {T} pizzas altogether.", weighted="Its pizza sales that day were {S}.",
              weights=lambda ks: _list_prices(ks, "sell for")),
    _Scenario("coins", _coins, lambda r: F(r.randint(3, 45)), "A jar holds only {kinds}.",
              "How many coins of each kind are in the jar?", facts=("total", "weighted"),
              total="There are {T} coins in the jar.", weighted="The coins are worth {S} in total."),
    _Scenario("investments", _accounts, lambda r: F(100 * r.randint(5, 90)),
              "For one year, Maya split her savings between a {kinds}.", "How much did she invest in each?",
              amount=_money, facts=("total", "weighted"), relations=("diff", "mult", "sumvs", "pairsum"),
              total="She invested {T} in all.", weighted="Together they earned {S} in interest that year.",
              weights=_list_rates),
    _Scenario("mixtures", _solutions, lambda r: F(r.randint(2, 30)),
              "A chemist makes a mixture from acid solutions that are {kinds}.",
              "How many liters of each solution did the chemist use?", amount=lambda q: _units(q, "liter"),
              facts=("total", "weighted"), relations=("diff", "mult", "sumvs", "pairsum"),
              total="The mixture holds {T}.", weighted="It contains {S} of pure acid."),
    _Scenario("ages", _people, lambda r: F(r.randint(4, 70)), "{kinds} are relatives.", "How old is each of them?",
              amount=lambda q: _units(q, "year"), relations=("diff", "mult", "future", "past", "sumvs"),
              total="The sum of their ages is {T}.", more="{Ni} is {k} older than {Nj}.",
              times="{Ni} is {m} as old as {Nj}."),
    _Scenario("marbles", _colors, lambda r: F(r.randint(3, 60)), "A bag holds {kinds}.",
              "How many marbles of each color are in the bag?", total="There are {T} marbles in the bag."),
    _Scenario("cafe", _menu, lambda r: F(r.randint(4, 36), 4), "A cafe sells {kinds}.",
              "What is the price of each item?", amount=_money, facts=(),
              relations=("purchase", "purchase", "purchase", "diff")),
)}


def _fact(kind: str, sc: _Scenario, kinds: list, vals: list[Fraction], rng: random.Random) -> tuple[str, str] | None:
    """One (equation, sentence) of the given kind, or None when the drawn values do not allow it."""
    n, syms = len(vals), SYMBOLS[:len(vals)]
    labels, q = [k[0] for k in kinds], [k[1] for k in kinds]
    if kind == "total":
        return " + ".join(syms) + f" = {_dec(sum(vals))}", sc.total.format(T=sc.amount(sum(vals)))
    if kind == "weighted":
        s = sum(k[2] * v for k, v in zip(kinds, vals, strict=True))
        shown = _units(s, "liter") if sc.name == "mixtures" else _money(s)
        return _lin([(k[2], x) for k, x in zip(kinds, syms, strict=True)]) + f" = {_dec(s)}", sc.weighted.format(S=shown)
    if kind == "purchase":
        counts = [rng.randint(0, 4) for _ in range(n)]
        if sum(c > 0 for c in counts) < 2:
            return None
        cost = sum(c * v for c, v in zip(counts, vals, strict=True))
        bought = [f"{c} {lab if c > 1 else _MENU[lab]}" for lab, c in zip(labels, counts, strict=True) if c]
        buyer = rng.choice(["Lena", "Omar", "Priya", "Tom", "Yuki", "Zoe"])
        return _lin([(F(c), x) for c, x in zip(counts, syms, strict=True)]) + f" = {_dec(cost)}", \
            f"{buyer} paid {_money(cost)} for {_join(bought)}."
    idx = rng.sample(range(n), min(n, 3))
    i, j = sorted(idx[:2], key=lambda t: -vals[t])  # vals[i] > vals[j]
    a, b = vals[i], vals[j]
    words = {"Qi": _cap(q[i]), "qj": q[j], "Ni": labels[i], "Nj": labels[j]}
    if kind == "diff":
        return f"{syms[i]} = {syms[j]}{_plus(a - b)}", sc.more.format(k=sc.amount(a - b), **words)
    if kind == "mult" and a / b in _TIMES:
        return f"{syms[i]} = {int(a / b)}*{syms[j]}", sc.times.format(m=_TIMES[int(a / b)], **words)
    if kind == "ratio" and a.denominator == 1 == b.denominator and max((a / b).numerator, (a / b).denominator) <= 12:
        r = a / b
        return f"{_lin([(F(r.denominator), syms[i])])} = {_lin([(F(r.numerator), syms[j])])}", \
            f"The ratio of {labels[i]} to {labels[j]} is {r.numerator} to {r.denominator}."
    if kind in ("future", "past"):
        m = rng.choice((2, 3))
        t = (a - m * b) / (m - 1) if kind == "future" else (m * b - a) / (m - 1)
        if t.denominator != 1 or not 0 < t < (40 if kind == "future" else b):
            return None
        op = "+" if kind == "future" else "-"
        when = f"In {_units(t, 'year')}, {labels[i]} will be" if kind == "future" else \
            f"{_units(t, 'year')} ago, {labels[i]} was"
        return f"{syms[i]} {op} {t} = {m}*({syms[j]} {op} {t})", f"{when} {_TIMES[m]} as old as {labels[j]}."
    if kind == "sumvs" and n >= 3:
        o = idx[2]
        k = vals[i] + vals[j] - vals[o]
        how = f"{sc.amount(abs(k))} {'more' if k > 0 else 'less'} than" if k else "the same as"
        return f"{syms[i]} + {syms[j]} = {syms[o]}{_plus(k)}", f"{_cap(q[i])} plus {q[j]} is {how} {q[o]}."
    if kind == "pairsum" and n >= 3:
        return f"{syms[i]} + {syms[j]} = {_dec(a + b)}", f"{_cap(q[i])} and {q[j]} add up to {sc.amount(a + b)}."
    return None


def _draw(sc: _Scenario, n: int, rng: random.Random) -> tuple[str, list[str], list[Fraction]]:
    """One candidate (text, equations, solution); may be singular (the caller verifies)."""
    kinds = sc.kinds(rng, n)
    vals = [sc.value(rng) for _ in range(n)]
    while len(set(vals)) < n:  # distinct values read better and avoid trivial ties
        vals = [sc.value(rng) for _ in range(n)]
    facts = [_fact(f, sc, kinds, vals, rng) for f in sc.facts[:n]]
    tries = 0
    while len(facts) < n and tries < 50:
        tries += 1
        fact = _fact(rng.choice(sc.relations), sc, kinds, vals, rng)
        if fact is not None and fact[0] not in {e for e, _ in facts}:
            facts.append(fact)
    text = [sc.intro.format(kinds=_join([k[0] for k in kinds]))]
    if sc.weights is not None:
        text.append(sc.weights(kinds))
    text += [s for _, s in facts] + [sc.question]
    return " ".join(text), [e for e, _ in facts], vals


def _verified(solver: Solver, equations: Sequence[str], solution: Mapping[str, Fraction]) -> bool:
    """Whether the system's unique solution is ``solution`` (names -> values)."""
    result = solver.solve("\n".join(equations))
    return (result.status == "solved" and result.n_solutions == 1 and set(result.values) == set(solution)
            and all(abs(result.values[k] - float(v)) <= 1e-9 * max(1.0, abs(float(v))) for k, v in solution.items()))


def generate_problems(n: int, *, unknowns: Sequence[int] = (2, 3, 4, 5), seed: int = 0) -> list[BeyondXItem]:
    """``n`` verified word problems per number of unknowns, in BeyondX's format.

    Scenarios (tickets, pizzas, coins, investments, mixtures, ages, marbles, cafe prices) take turns within a
    level. Each item is drawn from its own seed ``(seed, level, k)``, so a smaller ``n`` gives a prefix of a
    larger one, and the same arguments give the same items on every machine.

    Args:
        n: problems per level (>= 1).
        unknowns: the levels, each from 2 to 5.
        seed: random seed.

    Returns:
        Items with ids ``"gen-<unknowns>-<k>"``, ``source="generated"``, level by level.

    Raises:
        ValueError: ``n < 1`` or a level outside 2..5.

    Example:
        >>> generate_problems(1, unknowns=(2,))[0].equations
        ('x + y = 147', '7*x + 10*y = 1200')
    """
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    if not unknowns or any(u not in (2, 3, 4, 5) for u in unknowns):
        raise ValueError(f"unknowns must be numbers from 2 to 5, got {tuple(unknowns)}")
    order = list(SCENARIOS.values())
    items = []
    with Solver(timeout=10) as solver:
        for level in unknowns:
            for k in range(n):
                sc = order[k % len(order)]
                for attempt in range(MAX_ATTEMPTS):
                    rng = random.Random(f"beyondx-gen/{seed}/{level}/{k}/{attempt}")
                    text, eqs, vals = _draw(sc, level, rng)
                    if len(eqs) == level and "=" not in text and \
                            _verified(solver, eqs, dict(zip(SYMBOLS, vals, strict=False))):
                        break
                else:  # pragma: no cover - every scenario verifies within a few draws
                    raise RuntimeError(f"no verified {sc.name} problem with {level} unknowns in {MAX_ATTEMPTS} draws")
                items.append(BeyondXItem(id=f"gen-{level}-{k}", problem=text, equations=tuple(eqs),
                                         answers=tuple(float(v) for v in vals), unknowns=level, source="generated"))
    return items


# ---------------------------------------------------------------- progressive expansion (n -> n + 1 unknowns)

EXPANSION_INSTRUCTION = (
    "Turn a math word problem with {n} unknowns into a harder problem with {m} unknowns in the same scenario, in "
    "five steps:\n"
    "1- Say what each variable of the system means and its value in the solution.\n"
    "2- Add one new variable that belongs to the scenario, with a value that fits the existing solution. Write it "
    "on one line as: The new variable is: <letter> = <value>\n"
    "3- Add terms or equations so that the system with {m} unknowns has exactly one solution: the old values and "
    "the new one. Write: The new system of equations is: then one equation per line, using the old letters, the "
    "new letter, numbers, + - * / ( ) and = only.\n"
    "4- Say which statements of the problem you add or change; stay within the same scenario.\n"
    "5- Write the whole problem again as one coherent word problem that states every fact in words, with numbers "
    "in digits and no equations, ending with its question. Write: The new math word problem is: then the problem."
)
EXAMPLE = {
    "problem": "A farm stand sold 30 baskets of apples and pears for $186. A basket of apples costs $5 and a basket "
               "of pears costs $8. How many baskets of each fruit were sold?",
    "system": "x + y = 30\n5*x + 8*y = 186",
    "solution": "x = 18, y = 12",
    "answer": "1- x is the number of baskets of apples (18); y is the number of baskets of pears (12).\n"
              "2- The new variable is: z = 7 (the number of baskets of plums, at $6 a basket)\n"
              "3- The new system of equations is:\nx + y + z = 37\n5*x + 8*y + 6*z = 228\nx = z + 11\n"
              "4- The stand now also sells plums at $6 a basket, so the totals become 37 baskets and $228; a new "
              "statement says that it sold 11 more baskets of apples than baskets of plums.\n"
              "5- The new math word problem is: A farm stand sold 37 baskets of apples, pears and plums for $228 in "
              "all. A basket of apples costs $5, a basket of pears costs $8 and a basket of plums costs $6. The "
              "stand sold 11 more baskets of apples than baskets of plums. How many baskets of each fruit were sold?",
}
FAILURE_KINDS = ("seed", "format", "equations", "variables", "fixup", "text", "unsolvable")
MAX_ANSWER_CHARS = 20_000

_NUMBER = r"(-?\d{1,3}(?:,\d{3})+(?:\.\d{1,8})?|-?\d{1,12}(?:\.\d{1,8})?)(?!\d)(?!\.\d)"
_NEW_VAR = re.compile(r"new\s+(?:variable|unknown)\b[^\n=]{0,80}?\b([A-Za-z]\w{0,15})\s*=\s*\$?\s*" + _NUMBER, re.I)
_SYSTEM = re.compile(r"new\s+system(?:\s+of\s+equations)?(?:\s+is)?\s*\**\s*:", re.I)
_PROBLEM = re.compile(r"new\s+(?:math\s+)?(?:word\s+)?problem(?:\s+is)?\s*\**\s*:", re.I)
_STEP = re.compile(r"(?m)^[ \t*#>]*(?:step\s*)?\d\s*[-.):](?!\d)(?=[^\n=]*$)")  # a step heading, not "1. x = 2"
_NUMBERED = re.compile(r"(?m)^[ \t]*(?:\(?\d{1,2}[.)]|\d{1,2}-)[ \t]+")
_TEXT_NUMBER = re.compile(r"(?<![\w.,])(\d{1,3}(?:,\d{3})+|\d+)(\.\d+)?(?!\w)(?!\.\d)(\s*%)?")


class ExpansionError(ParseError):
    """A model's expansion that cannot become an item; ``kind`` (one of :data:`FAILURE_KINDS`) says why."""

    def __init__(self, kind: str, message: str):
        super().__init__(message)
        self.kind = kind


def _seed_solution(item: BeyondXItem, solver: Solver) -> dict[str, Fraction]:
    """The item's own unique, rational solution (names -> values), checked against its ``ans``."""
    try:
        result = solver.solve("\n".join(item.equations))
    except ParseError as exc:
        raise ExpansionError("seed", f"{item.id}: its system does not parse ({exc})") from exc
    if result.status != "solved" or result.n_solutions != 1:
        raise ExpansionError("seed", f"{item.id}: its own system has no unique solution ({result.status})")
    try:
        values = {k: Fraction(v) for k, v in result.exact.items()}
    except (ValueError, ZeroDivisionError) as exc:
        raise ExpansionError("seed", f"{item.id}: its solution is not rational ({result.exact})") from exc
    if not score_beyondx(list(result.values.values()), item.answers):
        raise ExpansionError("seed", f"{item.id}: its system solves to {result.values}, not to its ans {item.answers}")
    return values


def _show(values: Mapping[str, Fraction]) -> str:
    def one(q: Fraction) -> str:
        try:
            return _dec(q)
        except ValueError:
            return str(q)
    return ", ".join(f"{k} = {one(v)}" for k, v in sorted(values.items()))


def expansion_prompt(item: BeyondXItem, *, solution: Mapping[str, Fraction] | None = None) -> str:
    """The prompt that asks a model to add one unknown to ``item`` (five instructions, one worked example).

    Args:
        item: the problem to expand; its system must have a unique solution.
        solution: that solution (names -> values); None solves the item's system here.

    Raises:
        ExpansionError: (kind ``"seed"``) the item's system has no unique rational solution.
    """
    if solution is None:
        with Solver(timeout=10) as solver:
            solution = _seed_solution(item, solver)
    n = len(solution)

    def block(problem: str, system: str, values: str) -> str:
        return f"Problem: {problem}\nSystem of equations:\n{system}\nSolution: {values}\nAnswer:\n"

    return (EXPANSION_INSTRUCTION.format(n=n, m=n + 1) + "\n\nExample\n"
            + block(EXAMPLE["problem"], EXAMPLE["system"], EXAMPLE["solution"]) + EXAMPLE["answer"]
            + f"\n\nNow the problem to expand to {n + 1} unknowns\n"
            + block(item.problem, "\n".join(item.equations), _show(solution)))


def _section_end(text: str, start: int) -> int:
    ends = [m.start() for pat in (_SYSTEM, _PROBLEM, _NEW_VAR, _STEP) if (m := pat.search(text, start))]
    return min(ends, default=len(text))


def _fix(eq: Any, point: Mapping[Any, Any]) -> tuple[Any, tuple[Fraction, Fraction] | None]:
    """The fix-up of one equation: when it does not hold at ``point``, recompute the constant of its right-hand
    side (else of its left-hand side). Returns (the equation, (old |constant|, new |constant|) or None)."""
    import sympy

    residual = (eq.lhs - eq.rhs).subs(point)
    if not residual.is_Rational:
        raise ExpansionError("fixup", f"{eq} does not give a number at the solution")
    if residual == 0:
        return eq, None
    for side, expr in (("rhs", eq.rhs), ("lhs", eq.lhs)):
        c = expr.as_coeff_Add()[0]
        if c == 0 or not c.is_Rational:
            continue
        new = c + residual if side == "rhs" else c - residual
        if new == 0 or (new > 0) != (c > 0):
            raise ExpansionError("fixup", f"{eq}: the constant {c} would become {new} (the sign of a stated number)")
        fixed = sympy.Eq(eq.lhs, eq.rhs + residual, evaluate=False) if side == "rhs" else \
            sympy.Eq(eq.lhs - residual, eq.rhs, evaluate=False)
        return fixed, (Fraction(abs(int(c.p)), int(c.q)), Fraction(abs(int(new.p)), int(new.q)))
    raise ExpansionError("fixup", f"{eq} does not hold for the solution and has no constant to recompute")


def _expr_text(expr: Any, order: Mapping[str, int]) -> str:
    """An expression in the equation grammar: linear ones as ``0.2*x + y - 3`` in ``order``, else sympy's text."""
    import sympy

    coeffs = expr.as_coefficients_dict()
    if all(t == 1 or t.is_Symbol for t in coeffs) and all(c.is_Rational for c in coeffs.values()):
        terms = [(Fraction(int(coeffs[t].p), int(coeffs[t].q)), t.name)
                 for t in sorted((t for t in coeffs if t != 1), key=lambda t: (order.get(t.name, 99), t.name))]
        const = Fraction(int(coeffs[1].p), int(coeffs[1].q)) if 1 in coeffs else Fraction(0)
        try:
            return (_lin(terms) + _plus(const)).strip() if terms else _dec(const)
        except ValueError:
            pass
    return sympy.sstr(expr)


def _number_in_text(m: re.Match) -> Fraction:
    value = Fraction(m.group(1).replace(",", "") + (m.group(2) or ""))
    return value / 100 if m.group(3) else value


def _retext(problem: str, old: Fraction, new: Fraction) -> str:
    """Put a recomputed constant into the text: replace ``old`` when it appears exactly once; keep the text when
    ``old`` is absent but ``new`` is there (only the equation was wrong)."""
    found = list(_TEXT_NUMBER.finditer(problem))
    hits = [m for m in found if _number_in_text(m) == old]
    if not hits and any(_number_in_text(m) == new for m in found):
        return problem
    if len(hits) != 1:
        raise ExpansionError("fixup", f"the recomputed constant {new} (the model wrote {old}) cannot be put into the "
                                      f"text: {old} appears {len(hits)} times there")
    m = hits[0]
    shown = new * 100 if m.group(3) else new
    try:
        body = _dec(shown, 4)
    except ValueError as exc:
        raise ExpansionError("fixup", f"the recomputed constant {new} has no short decimal form") from exc
    if m.group(2) and len(m.group(2)) == 3 and (shown * 100).denominator == 1:  # money style: 12.50
        body = f"{float(shown):.2f}"
    if "," in m.group(1):
        whole, _, frac = body.partition(".")
        body = f"{int(whole):,}" + (f".{frac}" if frac else "")
    return problem[:m.start()] + body + (m.group(3) or "") + problem[m.end():]


def parse_expansion(text: str, item: BeyondXItem, *, solution: Mapping[str, Fraction] | None = None,
                    solver: Solver | None = None) -> BeyondXItem:
    """Read a model's expansion of ``item`` into a verified item with one more unknown, after the fix-up.

    The answer must hold ``The new variable is: <name> = <value>``, ``The new system of equations is:`` followed
    by one equation per line (read with :func:`~trustlab.prompting.formulate_solve.parse_system`, strictly: a
    dropped line is a failure), and ``The new math word problem is:`` followed by the problem (similar markers
    such as ``New problem:`` count). Each equation that does not hold for the old values plus the new one has a
    constant recomputed (:func:`_fix`), also in the text; the result must have exactly that solution.

    Args:
        text: the model's answer (untrusted).
        item: the problem it expanded.
        solution: ``item``'s solution (names -> values); None solves it here.
        solver: the solver to verify with (default: a fresh one for this call).

    Returns:
        An item with id ``"<unknowns>-exp-<item id>"``, the item's ``source``, answers ``item.answers`` plus the
        new value.

    Raises:
        ExpansionError: (a :class:`~trustlab.errors.ParseError`) whatever makes the answer unusable; its
            ``kind`` is one of :data:`FAILURE_KINDS`.
    """
    import sympy

    from trustlab.prompting.formulate_solve import parse_system

    if not isinstance(text, str) or not text.strip():
        raise ExpansionError("format", "empty answer")
    if len(text) > MAX_ANSWER_CHARS:
        raise ExpansionError("format", f"answer longer than {MAX_ANSWER_CHARS} characters")
    own = solver is None
    solver = solver or Solver(timeout=10)
    try:
        old = dict(solution) if solution is not None else _seed_solution(item, solver)
        var = list(_NEW_VAR.finditer(text))
        sys_marks = list(_SYSTEM.finditer(text))
        prob_marks = list(_PROBLEM.finditer(text))
        if not (var and sys_marks and prob_marks):
            missing = [w for w, found in (("new variable", var), ("new system", sys_marks),
                                          ("new problem", prob_marks)) if not found]
            raise ExpansionError("format", f"no {', '.join(missing)} marker")
        name, value = var[-1].group(1), Fraction(var[-1].group(2).replace(",", ""))
        if name in old:
            raise ExpansionError("variables", f"the new variable {name} is already an unknown of the problem")
        start = sys_marks[-1].end()
        block = _NUMBERED.sub("", text[start:_section_end(text, start)])  # "5. x = 2" is no step-5 marker here
        parsed = parse_system(block)
        dropped = [w for w in parsed.warnings if not w.startswith("no step-5 marker")]
        if dropped or not parsed.equations:
            raise ExpansionError("equations", "; ".join(dropped) or "no equation after the new-system marker")
        names = {s.name for s in parsed.symbols}
        if names != set(old) | {name}:
            raise ExpansionError("variables", f"the new system's unknowns are {sorted(names)}, expected "
                                              f"{sorted(set(old) | {name})}")
        start = prob_marks[-1].end()
        problem = " ".join(text[start:_section_end(text, start)].replace("**", " ").split()).strip("\"' ")
        known = {**old, name: value}
        point = {s: sympy.Rational(known[s.name].numerator, known[s.name].denominator) for s in parsed.symbols}
        order = {k: m.start() for k in names if (m := re.search(rf"\b{k}\b", block))}
        equations = []
        for eq in parsed.equations:
            fixed, change = _fix(eq, point)
            if change is not None:
                problem = _retext(problem, *change)
            equations.append(f"{_expr_text(fixed.lhs, order)} = {_expr_text(fixed.rhs, order)}")
        if len(problem) < 20 or "=" in problem or problem == item.problem:
            raise ExpansionError("text", f"the new problem is empty, unchanged or states an equation: {problem[:80]!r}")
        if not _verified(solver, equations, known):
            raise ExpansionError("unsolvable", f"the new system has no unique solution: {equations}")
    finally:
        if own:
            solver.close()
    return BeyondXItem(id=f"{item.unknowns + 1}-exp-{item.id}", problem=problem, equations=tuple(equations),
                       answers=(*item.answers, float(value)), unknowns=item.unknowns + 1, source=item.source)


def expand_items(llm: Any, items: Sequence[BeyondXItem], *, seed: int = 0,
                 max_new_tokens: int = MAX_NEW_TOKENS) -> tuple[list[BeyondXItem], list[dict[str, Any]]]:
    """Expand each item by one unknown with one batched, greedy call to ``llm``; keep the verified ones.

    Args:
        llm: a :class:`~trustlab.models.ModelHandle` (a strong model: small models rarely follow the format).
        items: the problems to expand (BeyondX's or :func:`generate_problems`').
        seed: passed to the model call.
        max_new_tokens: tokens per answer.

    Returns:
        (the new items, the failures: one ``{"id", "unknowns", "kind", "reason", "output"}`` per item that gave
        none; ``kind`` is one of :data:`FAILURE_KINDS`, ``"seed"`` for an item whose own system has no unique
        solution, which is not sent to the model).

    Raises:
        EmptyInputError: no item.
    """
    items = list(items)
    if not items:
        raise EmptyInputError("no item to expand")
    new_items: list[BeyondXItem] = []
    failures: list[dict[str, Any]] = []

    def fail(it: BeyondXItem, exc: ParseError, output: str) -> None:
        failures.append({"id": it.id, "unknowns": it.unknowns, "kind": getattr(exc, "kind", "format"),
                         "reason": str(exc), "output": output})

    with Solver(timeout=10) as solver:
        todo = []
        for it in items:
            try:
                todo.append((it, _seed_solution(it, solver)))
            except ExpansionError as exc:
                fail(it, exc, "")
        if todo:
            gens = llm.generate([expansion_prompt(it, solution=sol) for it, sol in todo],
                                max_new_tokens=max_new_tokens, temperature=0, seed=seed)
            for (it, sol), gen in zip(todo, gens, strict=True):
                try:
                    new_items.append(parse_expansion(gen[0].text, it, solution=sol, solver=solver))
                except ParseError as exc:
                    fail(it, exc, gen[0].text)
    return new_items, failures
