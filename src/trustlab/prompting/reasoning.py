"""Strategies for multi-unknown word problems on one model handle: Formulate-and-Solve and its baselines.

Every strategy has ``answer_batch(problems) -> rows``, one row per problem with the model's text, the
predicted ``numbers``, ``valid`` (the output gave an answer that is the model's own: not empty, not a copy of
a demo) and ``invalid_reason``; every model call of a step goes to the handle in one batch.

- ``fs``: Formulate-and-Solve (:class:`~trustlab.prompting.formulate_solve.FormulateAndSolve`), answer stated
  by a second call given the solution (the paper's protocol); ``fs-solution`` reads the solution's values.
- ``cot``: zero-shot chain-of-thought (Kojima et al. 2022): "Let's think step by step", final answer boxed;
  an answer without a box gets a second call that asks only for the boxed answer.
- ``fewshot-cot``: the same with demos whose rationales the model wrote itself (zero-shot CoT on the demo
  problems, each conditioned on the earlier ones).
- ``declarative``: declarative prompting (He-Yueya et al. 2023): the model declares variables and equations
  as ``[[var x]]`` / ``[[eq ...]]`` after two hand-written demos of ours; the same bounded solver solves them.
- ``pot``: program-of-thought: the model writes a Python program, which :mod:`trustlab.prompting.pot`
  interprets (never executes) with a whitelist.

Example:
    >>> strategy = make_strategy("cot", load_model("embedded:qwen2.5-coder-0.5b"))
    >>> strategy.answer_batch(["Two numbers add to 10 and differ by 2. What are they?"])[0]["numbers"]
    [6.0, 4.0]
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

from trustlab.errors import EmptyInputError, ParseError
from trustlab.prompting.answers import extract_numbers
from trustlab.prompting.formulate_solve import Demo, FormulateAndSolve, generate_texts
from trustlab.prompting.solver import DEFAULT_TIMEOUT, Solver
from trustlab.validity import echoes_source, is_fragment

STRATEGIES = ("fs", "fs-solution", "cot", "fewshot-cot", "declarative", "pot")
COT_SUFFIX = ("\n\nLet's think step by step. At the end, give the final answer in \\boxed{} on one line, numbers "
              "only, separated by commas when the problem asks for several numbers.")
BOXED_ONLY = ("Give only the final answer to the problem in \\boxed{} on one line, numbers only, separated by "
              "commas when the problem asks for several numbers.")

# Two worked demos of our own in the declarative format of He-Yueya et al. (2023).
DECLARATIVE_INSTRUCTION = (
    "Solve the problem by declaring it: give each unknown a variable with [[var name]], write every fact as an "
    "equation with [[eq ...]] (one per line, using only the variables, numbers, + - * / ^ and parentheses), and "
    "name the variables the question asks for with [[answer name]]. Do not solve the equations.")
DECLARATIVE_DEMOS = (
    Demo("A shop sold 40 shirts, some plain at $12 each and the rest printed at $20 each, for $640 in all. "
         "How many plain and how many printed shirts were sold?",
         "Let p be the number of plain shirts [[var p]]\nLet q be the number of printed shirts [[var q]]\n"
         "40 shirts were sold [[eq p + q = 40]]\nThey brought $640 [[eq 12*p + 20*q = 640]]\n"
         "[[answer p]]\n[[answer q]]"),
    Demo("Ann is twice as old as Ben, Ben is 4 years older than Cat, and their ages add up to 48. How old is each?",
         "Let a be Ann's age [[var a]]\nLet b be Ben's age [[var b]]\nLet c be Cat's age [[var c]]\n"
         "Ann is twice as old as Ben [[eq a = 2*b]]\nBen is 4 years older than Cat [[eq b = c + 4]]\n"
         "The ages add up to 48 [[eq a + b + c = 48]]\n[[answer a]]\n[[answer b]]\n[[answer c]]"),
)
POT_INSTRUCTION = (
    "Write a short Python program that solves the problem. You may use sympy (symbols, Eq, solve). Store the "
    "final answer numbers in a list named ans, in the order the question asks for them. Write plain statements: "
    "no function definitions, no while loops. Reply with the program in one ```python block.")
_EQ = re.compile(r"\[\[\s*eq\s+(.*?)\]\]", re.S | re.I)
_VAR = re.compile(r"\[\[\s*var\s+([A-Za-z]\w*)\s*\]\]", re.I)
_ANSWER = re.compile(r"\[\[\s*answer\s+([A-Za-z]\w*)\s*\]\]", re.I)


_NUM = re.compile(r"\d+(?:\.\d+)?")


def copies_demo(text: str, problem: str, demos: Sequence[Demo]) -> bool:
    """Whether ``text`` reworks a demo instead of ``problem``: it repeats an 8-word run of a demo's worked
    answer that is not in the problem, and uses at least 3 (or all, if fewer) of the demo's own numbers, those
    that do not occur in the problem."""
    mine = set(_NUM.findall(problem))
    used = set(_NUM.findall(text))
    for d in demos:
        own = set(_NUM.findall(d.problem + " " + d.formulation)) - mine
        need = min(3, len(own))
        if need and len(own & used) >= need and echoes_source(text, d.formulation, 8, unless_in=problem):
            return True
    return False


def _own(text: str, problem: str = "", demos: Sequence[Demo] = ()) -> str | None:
    """Why a model output is not its own data (None when it is)."""
    if not text or not text.strip():
        return "empty"
    if is_fragment(text):
        return "fragment"
    if demos and copies_demo(text, problem, demos):
        return "copies a demo"
    return None


class _Base:
    name = ""

    def __init__(self, llm: Any, *, max_new_tokens: int = 384, chat_template: bool = True):
        self.llm, self.max_new_tokens, self.chat_template = llm, max_new_tokens, chat_template
        self.calls = 0

    def _generate(self, prompts: list[list[dict[str, str]]], max_new_tokens: int | None = None) -> list[str]:
        self.calls += len(prompts)
        return generate_texts(self.llm, prompts, max_new_tokens or self.max_new_tokens,
                              chat_template=self.chat_template)

    def answer_batch(self, problems: Sequence[str]) -> list[dict[str, Any]]:
        raise NotImplementedError

    def describe(self) -> dict[str, Any]:
        return {"strategy": self.name, "max_new_tokens": self.max_new_tokens, "chat_template": self.chat_template}


class ChainOfThought(_Base):
    """Zero-shot (no demos) or few-shot chain-of-thought with a boxed final answer.

    Args:
        llm: the model handle.
        demos: worked demos (problem + rationale) shown as earlier turns; None: zero-shot.
    """

    def __init__(self, llm: Any, demos: Sequence[Demo] | None = None, *, fewshot: bool | None = None, **kw: Any):
        super().__init__(llm, **kw)
        self.demos = list(demos or [])
        self.fewshot = bool(self.demos) if fewshot is None else fewshot
        self.name = "fewshot-cot" if self.fewshot else "cot"

    def messages(self, problem: str, demos: Sequence[Demo] | None = None) -> list[dict[str, str]]:
        msgs: list[dict[str, str]] = []
        for d in self.demos if demos is None else demos:
            msgs += [{"role": "user", "content": d.problem + COT_SUFFIX}, {"role": "assistant", "content": d.formulation}]
        return msgs + [{"role": "user", "content": problem + COT_SUFFIX}]

    def write_demos(self, problems: Sequence[str]) -> list[Demo]:
        """The model's own rationales for the demo problems, each conditioned on the earlier ones; kept as
        :attr:`demos` (the strategy becomes few-shot)."""
        demos: list[Demo] = []
        for p in problems:
            (text,) = self._generate([self.messages(p, demos)])
            demos.append(Demo(p, text.strip()))
        self.demos, self.fewshot, self.name = demos, True, "fewshot-cot"
        return demos

    def answer_batch(self, problems: Sequence[str]) -> list[dict[str, Any]]:
        problems = list(problems)
        if not problems:
            raise EmptyInputError("no problem to answer")
        if self.fewshot and not self.demos:
            raise EmptyInputError("few-shot CoT has no demos yet: give demos, or call write_demos(problems) first")
        prompts = [self.messages(p) for p in problems]
        texts = self._generate(prompts)
        rows = [{"problem": p, "text": t, "answer_text": None, "numbers": extract_numbers(t, boxed_only=True)}
                for p, t in zip(problems, texts, strict=True)]
        again = [i for i, r in enumerate(rows) if not r["numbers"] and r["text"].strip()]
        follow = self._generate([prompts[i] + [{"role": "assistant", "content": rows[i]["text"]},
                                                {"role": "user", "content": BOXED_ONLY}] for i in again], 48)
        for i, text in zip(again, follow, strict=True):
            rows[i]["answer_text"] = text
            rows[i]["numbers"] = extract_numbers(text, boxed_only=True) or extract_numbers(text)
        for r in rows:
            r["invalid_reason"] = _own(r["text"], r["problem"], self.demos) or (None if r["numbers"] else "no answer")
            r["valid"] = r["invalid_reason"] is None
        return rows


class FormulateSolveStrategy(_Base):
    """Formulate-and-Solve as a strategy (see :class:`FormulateAndSolve`; ``answer`` is ``"llm"`` or
    ``"solution"``). A formulation whose equations are a demo's equations is a copy, not the model's own; one
    from which no equation could be read is invalid too (its answer, asked for directly as the paper does,
    still counts in the accuracy, but it is no test of formulating)."""

    def __init__(self, llm: Any, demos: Sequence[Demo] | None = None, *, answer: str = "llm",
                 solver: Solver | None = None, solver_timeout: float = DEFAULT_TIMEOUT, **kw: Any):
        super().__init__(llm, **kw)
        self.fs = FormulateAndSolve(llm, demos, answer=answer, max_new_tokens=self.max_new_tokens,
                                    chat_template=self.chat_template, solver=solver, solver_timeout=solver_timeout)
        self.name = "fs" if answer == "llm" else "fs-solution"

    @property
    def demos(self) -> list[Demo]:
        return self.fs.demos

    def answer_batch(self, problems: Sequence[str]) -> list[dict[str, Any]]:
        before = self.fs.calls
        rows = self.fs.solve_batch(problems)
        self.calls += self.fs.calls - before
        demo_systems = {frozenset(r["equations"]) for r in self._demo_rows()}
        for r in rows:
            copied = r["equations"] and frozenset(r["equations"]) in demo_systems
            r["text"] = r.pop("formulation")
            r["invalid_reason"] = ("copies a demo" if copied else _own(r["text"])
                                   or ("no equation read" if not r["equations"] else None)
                                   or (None if r["valid"] else
                                       ("no answer" if r["solve"]["status"] == "solved" else
                                        f"system {r['solve']['status']}")))
            r["valid"] = r["invalid_reason"] is None
        return rows

    def _demo_rows(self) -> list[dict[str, Any]]:
        out = []
        for d in self.fs.demos:
            _, parsed = self.fs.solver.solve_formulation(d.formulation)
            out.append(parsed)
        return out

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "answer": self.fs.answer, "n_demos": len(self.fs.demos)}


class Declarative(_Base):
    """Declarative prompting: ``[[var]]`` / ``[[eq]]`` / ``[[answer]]`` lines, solved by the bounded solver; the
    numbers are the ``[[answer]]`` variables' values (all values when none is named)."""

    name = "declarative"

    def __init__(self, llm: Any, *, solver: Solver | None = None, solver_timeout: float = DEFAULT_TIMEOUT, **kw: Any):
        super().__init__(llm, **kw)
        self.solver = solver or Solver(timeout=solver_timeout)

    def messages(self, problem: str) -> list[dict[str, str]]:
        msgs: list[dict[str, str]] = []
        for i, d in enumerate(DECLARATIVE_DEMOS):
            head = DECLARATIVE_INSTRUCTION + "\n\n" if i == 0 else ""
            msgs += [{"role": "user", "content": f"{head}Problem: {d.problem}"},
                     {"role": "assistant", "content": d.formulation}]
        return msgs + [{"role": "user", "content": f"Problem: {problem}"}]

    def answer_batch(self, problems: Sequence[str]) -> list[dict[str, Any]]:
        problems = list(problems)
        if not problems:
            raise EmptyInputError("no problem to answer")
        rows = []
        for p, text in zip(problems, self._generate([self.messages(p) for p in problems]), strict=True):
            eqs = [e.strip() for e in _EQ.findall(text)]
            row: dict[str, Any] = {"problem": p, "text": text, "equations": eqs, "numbers": []}
            try:
                result = self.solver.solve("\n".join(eqs)) if eqs else None
            except ParseError as exc:
                result, row["parse_error"] = None, str(exc)[:200]
            row["solve"] = result.to_dict() if result else None
            if result is not None and result.solved:
                wanted = [n for n in _ANSWER.findall(text) if n in result.values]
                row["numbers"] = [result.values[n] for n in wanted] or list(result.values.values())
            declared = set(_VAR.findall(text))
            names = set(re.findall(r"[A-Za-z]\w*", " ".join(eqs)))
            if declared and not names <= declared and result is not None:
                row["numbers"], row["undeclared"] = [], sorted(names - declared)[:5]
            reason = _own(text, p, DECLARATIVE_DEMOS)
            row["invalid_reason"] = reason or (None if row["numbers"] else
                                               "no [[eq]] lines" if not eqs else
                                               "equations do not parse" if "parse_error" in row else
                                               "undeclared names in [[eq]]" if "undeclared" in row else
                                               f"system {result.status}")
            row["valid"] = row["invalid_reason"] is None
            rows.append(row)
        return rows


class ProgramOfThought(_Base):
    """Program-of-thought: the model's program is interpreted by :func:`trustlab.prompting.pot.run_program`
    (a whitelisted AST interpreter: no exec, no file system, no network)."""

    name = "pot"

    def __init__(self, llm: Any, *, solver: Solver | None = None, solver_timeout: float = DEFAULT_TIMEOUT, **kw: Any):
        super().__init__(llm, **kw)
        self.solver = solver or Solver(timeout=solver_timeout)

    def answer_batch(self, problems: Sequence[str]) -> list[dict[str, Any]]:
        from trustlab.prompting.pot import extract_program, run_program

        problems = list(problems)
        if not problems:
            raise EmptyInputError("no problem to answer")
        prompts = [[{"role": "user", "content": f"{POT_INSTRUCTION}\n\nProblem: {p}"}] for p in problems]
        rows = []
        for p, text in zip(problems, self._generate(prompts), strict=True):
            program = extract_program(text)
            result = run_program(program, solver=self.solver) if program else None
            error = "no program" if result is None else result.error
            numbers = [] if result is None else list(result.numbers)
            rows.append({"problem": p, "text": text, "numbers": numbers, "error": error,
                         "invalid_reason": _own(text) or (None if numbers else (error or "no answer")),
                         "valid": bool(numbers) and _own(text) is None})
        return rows


def make_strategy(name: str, llm: Any, *, demos: Sequence[Demo] | None = None, solver: Solver | None = None,
                  **kw: Any) -> Any:
    """A strategy by name (:data:`STRATEGIES`).

    Raises:
        ValueError: an unknown name (the message lists the known ones).
    """
    if name in ("fs", "fs-solution"):
        return FormulateSolveStrategy(llm, demos, answer="llm" if name == "fs" else "solution", solver=solver, **kw)
    if name == "cot":
        return ChainOfThought(llm, **kw)
    if name == "fewshot-cot":
        return ChainOfThought(llm, demos, fewshot=True, **kw)
    if name == "declarative":
        return Declarative(llm, solver=solver, **kw)
    if name == "pot":
        return ProgramOfThought(llm, solver=solver, **kw)
    raise ValueError(f"unknown strategy {name!r}; known: {', '.join(STRATEGIES)}")
