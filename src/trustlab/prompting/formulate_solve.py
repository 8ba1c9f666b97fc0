"""Formulate-and-Solve (Kao, Wang and Hsieh 2024): the model writes a system of equations, sympy solves it.

A word problem with several unknowns is hard to reason through step by step and easy to write down as
equations. The model is asked for a five-step formulation ending with the system, one equation per line;
:func:`parse_system` reads that system with trustlab's own bounded grammar (:func:`parse_equations`: no
``eval``, ``exec`` or ``sympify`` of model text), :class:`~trustlab.prompting.solver.Solver` solves it in a
worker process with a hard time limit, and a second call has the model state the final answer in
``\\boxed{}`` given the solution (``answer="llm"``, the paper's protocol); ``answer="solution"`` reads the
numbers straight from the solution instead and spares that call.

Demos are automatic: the model writes its own formulation of a few fixed demo problems, each conditioned on
the earlier ones, ``n_demo_trials`` times; the demo set that scores best on a dev split is kept
(:meth:`FormulateAndSolve.select_demos`). Unlike the official code, the dev split is disjoint from the test
items, variables keep their case (every name is its own symbol, so sympy's ``E``, ``I``, ``N``, ``O``, ``Q``,
``S`` mean nothing special) and every dropped line or inequality is a warning in the trace.

Example:
    >>> fs = FormulateAndSolve(load_model("embedded:qwen2.5-coder-1.5b"))
    >>> out = fs.solve_batch(["Tom has twice as many apples as Ann; together they have 12. How many each?"])[0]
    >>> out["numbers"]
    [8.0, 4.0]

References:
    Kao, Wang, Hsieh. Solving for X and Beyond: Can Large Language Models Solve Complex Math Problems with
    More-Than-Two Unknowns? arXiv:2407.05134 (2024).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from trustlab.errors import EmptyInputError, ParseError
from trustlab.prompting.answers import extract_numbers
from trustlab.prompting.equations import parse_equations
from trustlab.prompting.solver import DEFAULT_TIMEOUT, Solver, SolveResult

INSTRUCTION = (
    "Translate the math word problem into a system of equations. Work carefully and formally, in five steps:\n"
    "1- State what the question asks for.\n"
    "2- List the relevant facts as short, simple statements.\n"
    "3- Choose a single-letter symbol for each unknown.\n"
    "4- Say how the statements relate the unknowns mathematically.\n"
    "5- Write the system of equations only, one equation per line, using the symbols of step 3."
)
ANSWER_GIVEN_SOLUTION = (
    "Problem: {problem}\n\nFormulation:\n{formulation}\n\nThe solution of this system of equations is: {solution}.\n"
    "Do not solve the system again. Give the final answer to the problem in \\boxed{{}} on one line, numbers only "
    "(decimals, not fractions), separated by commas when the problem asks for several numbers."
)
ANSWER_DIRECT = (
    "Problem: {problem}\n\nFormulation:\n{formulation}\n\n"
    "Give the final answer to the problem in \\boxed{{}} on one line, numbers only (decimals, not fractions), "
    "separated by commas when the problem asks for several numbers."
)

_STEP5 = re.compile(r"(?im)^[\s*#>]*(?:step\s*)?5\s*[-.):](?!\d)")
_BULLET = re.compile(r"^\s*(?:[-*\u2022]\s+|\d+\s*[.)]\s+|\(\d+\)\s*|(?:equation|eq)\s*\d*\s*[:.)]\s*)", re.I)
_LATEX = [(re.compile(r"\\\\\s*$"), ""), (re.compile(r"_\{\s*(?:\\text\{)?(\w+)\}?\s*\}"), r"_\1"),
          (re.compile(r"\\(?:times|cdot)"), "*"), (re.compile(r"\\[()\[\]]"), " "), (re.compile(r"\\[,;! ]"), " "),
          (re.compile(r"\\text\{[^{}]*\}"), " "), (re.compile(r"\\left|\\right"), "")]
_INLINE = re.compile(r"\\\((.*?)\\\)|\$([^$]+)\$")
_FRAC = re.compile(r"\\d?frac\s*\{([^{}]*)\}\s*\{([^{}]*)\}")
_RATIO = re.compile(r"^\s*([A-Za-z]\w*)\s*:\s*([A-Za-z]\w*)\s*=\s*([\d.]+)\s*:\s*([\d.]+)\s*$")
_INEQUALITY = re.compile(r"<|>|\u2264|\u2265|\u2260|!=")
MAX_TEXT = 20_000  # characters of a formulation read (its tail: the system comes last)
MAX_LINE = 400  # characters of one candidate line: an equation is shorter, and longer prose is skipped unparsed
_SHORT_NAME = re.compile(r"^[A-Za-z](?:_?\d{1,2})?$")
_TRIM_AT = re.compile(r"\s+(?:where|if|so|since|because|for|#|--|\u2014)\s.*$|\s*\((?=[^)]*[A-Za-z]{3}).*$", re.I)


@dataclass
class ParsedSystem:
    """A system read out of model text.

    Attributes:
        equations: the ``sympy.Eq`` objects, in order, without duplicates.
        symbols: their unknowns, sorted by name.
        lines: the text of each kept equation, as parsed.
        warnings: every line dropped and why, inequalities, the ``0 = expr`` rule.
    """

    equations: list[Any] = field(default_factory=list)
    symbols: list[Any] = field(default_factory=list)
    lines: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


def _clean(line: str) -> str:
    line = line.strip().strip("`").strip()
    for pattern, new in _LATEX:
        line = pattern.sub(new, line)
    for _ in range(3):  # nested \frac{\frac{a}{b}}{c}: innermost first
        line = _FRAC.sub(r"((\1)/(\2))", line)
    line = _BULLET.sub("", line).strip()
    if "=" in line and ":" in line.split("=")[0] and not _RATIO.match(line):
        line = line.split("=")[0].rsplit(":", 1)[1] + "=" + line.split("=", 1)[1]  # "Total cost: 3x = 12"
    m = _RATIO.match(line)
    if m:
        line = f"{m.group(1)} / {m.group(2)} = {m.group(3)} / {m.group(4)}"
    return line.replace("{", "(").replace("}", ")").strip().rstrip(".,;").strip()


def _parse_line(line: str) -> list[Any]:
    """Parse one cleaned line, whole or without trailing prose, into equations over unknowns' symbols only
    (:data:`_SHORT_NAME`); a chain ``a = b = c`` gives two equations.

    Raises:
        ParseError: no variant parses, or every variant that parses uses prose names.
    """
    tries = [line]
    trimmed = _TRIM_AT.sub("", line).strip().rstrip(".,;")
    if trimmed and trimmed != line:
        tries.append(trimmed)
    error: ParseError | None = None
    for text in tries:
        parts = text.split("=")
        chain = [f"{a}={b}" for a, b in zip(parts, parts[1:], strict=False)] if len(parts) > 2 else [text]
        try:
            eqs = [parse_equations(c)[0] for c in chain]
        except ParseError as exc:
            error = error or exc
            continue
        names = sorted({s.name for e in eqs for s in e.free_symbols})
        if not names:
            error = ParseError(f"no unknown in {line[:60]!r}")
        elif any(not _SHORT_NAME.match(n) for n in names):
            error = ParseError(f"prose names {names[:4]}")
        else:
            return eqs
    raise error or ParseError(f"nothing to parse in {line!r}")


def parse_system(text: str) -> ParsedSystem:
    """Read the system of equations out of a model's formulation.

    The system is what follows the last step-5 marker (``5-``, ``5.``, ``Step 5:``), or the whole text when there
    is none (a warning). Each line is cleaned of list bullets, ``Equation 1:`` labels, ``$`` and LaTeX
    (``\\times``, ``\\frac{a}{b}``), ``b:g = 9:4`` ratios and trailing prose, then parsed by
    :func:`parse_equations`. A line is dropped, with a warning, when it holds an inequality, does not parse,
    or uses a name that is not an unknown's symbol (a letter, optionally followed by up to two digits, e.g.
    ``x``, ``B``, ``x1``, ``p_2``: longer names are prose such as "Let x = number of boys"). A line of
    mathematics without ``=`` becomes ``expr = 0`` (the official rule), with a warning.

    Example:
        >>> s = parse_system("1- ...\\n5- System of equations:\\nb/g = 9/4\\n$b + g = 26$ (the total)")
        >>> [str(e) for e in s.equations], [x.name for x in s.symbols]
        (['Eq(b/g, 9/4)', 'Eq(b + g, 26)'], ['b', 'g'])
    """
    out = ParsedSystem()
    if not isinstance(text, str) or not text.strip():
        out.warnings.append("empty formulation")
        return out
    if len(text) > MAX_TEXT:
        out.warnings.append(f"formulation longer than {MAX_TEXT} characters: read its last {MAX_TEXT}")
        text = text[-MAX_TEXT:]
    marks = list(_STEP5.finditer(text))
    if marks:
        block = text[marks[-1].end():]
    else:
        block = text
        out.warnings.append("no step-5 marker: read equations from the whole answer")
    seen: set[str] = set()
    for raw in _candidates(block):
        if len(raw) > MAX_LINE:
            if "=" in raw:
                out.warnings.append(f"skipped a line of {len(raw)} characters (> {MAX_LINE})")
            continue
        line = _clean(raw)
        if not line or not re.search(r"[A-Za-z]", line):
            continue
        if _INEQUALITY.search(line):
            out.warnings.append(f"dropped an inequality: {raw.strip()[:80]!r}")
            continue
        if "=" not in line and not re.search(r"[-+*/^]", line):
            continue  # prose or a heading
        try:
            eqs = _parse_line(line)
        except ParseError as exc:
            if "=" in line:
                out.warnings.append(f"dropped {raw.strip()[:80]!r}: {exc}"[:200])
            continue
        if "=" not in line:
            out.warnings.append(f"read {line[:60]!r} as {line[:60]} = 0")
        for e in eqs:
            key = str(e)
            if key not in seen:
                seen.add(key)
                out.equations.append(e)
                out.lines.append(line)
    out.symbols = sorted({s for e in out.equations for s in e.free_symbols}, key=lambda s: s.name)
    return out


def _candidates(block: str) -> list[str]:
    """The block's lines; a line of prose with inline maths (``\\( ... \\)`` or ``$ ... $``) gives its
    inline pieces that hold an ``=`` instead."""
    out: list[str] = []
    for line in block.splitlines():
        pieces = [a or b for a, b in _INLINE.findall(line)]
        math = [p for p in pieces if "=" in p]
        out += math if math and _INLINE.sub("", line).strip(" .,:;-*") else [line]
    return out


def format_solution(result: SolveResult) -> str:
    """The solution as the answer prompt shows it, e.g. ``{x: 6, y: 4}`` (values rounded to 6 digits)."""
    return "{" + ", ".join(f"{k}: {v:.6g}" for k, v in sorted(result.values.items())) + "}"


@dataclass
class Demo:
    """One worked demo: a problem and the model's own formulation of it."""

    problem: str
    formulation: str


class FormulateAndSolve:
    """Formulate-and-Solve on a model handle: formulate, parse, solve, then answer.

    Args:
        llm: a :class:`~trustlab.models.ModelHandle` (any backend; the calls of one step go in one batch).
        demos: worked demos (:class:`Demo`); None: zero-shot, or pick them with :meth:`select_demos`.
        solver_timeout: seconds per system before the solver worker is killed (default 30, as the paper).
        answer: ``"llm"`` (a second call states the boxed answer given the solution, the paper's protocol) or
            ``"solution"`` (the numbers are the solution's values; no second call).
        max_new_tokens: tokens for the formulation (default 384); the answer call gets 64.
        chat_template: render prompts with the model's chat template (default True).

    Example:
        >>> fs = FormulateAndSolve(model, answer="solution")
        >>> fs.solve_batch(["..."])[0]["solve"]["status"]
        'solved'
    """

    def __init__(self, llm: Any, demos: Sequence[Demo] | None = None, *, solver_timeout: float = DEFAULT_TIMEOUT,
                 answer: str = "llm", max_new_tokens: int = 384, chat_template: bool = True,
                 solver: Solver | None = None):
        if answer not in ("llm", "solution"):
            raise ValueError(f"answer must be 'llm' or 'solution', got {answer!r}")
        self.llm, self.demos, self.answer = llm, list(demos or []), answer
        self.max_new_tokens, self.chat_template = max_new_tokens, chat_template
        self.solver = solver or Solver(timeout=solver_timeout)
        self.calls = 0

    def messages(self, problem: str, demos: Sequence[Demo] | None = None) -> list[dict[str, str]]:
        """The formulation prompt: the instruction, then each demo as a user/assistant turn, then the problem."""
        demos = self.demos if demos is None else demos
        msgs: list[dict[str, str]] = []
        for i, d in enumerate(demos):
            head = INSTRUCTION + "\n\n" if i == 0 else ""
            msgs += [{"role": "user", "content": f"{head}Problem: {d.problem}"},
                     {"role": "assistant", "content": d.formulation}]
        head = INSTRUCTION + "\n\n" if not demos else ""
        msgs.append({"role": "user", "content": f"{head}Problem: {problem}"})
        return msgs

    def _generate(self, prompts: list[Any], max_new_tokens: int, **kw: Any) -> list[str]:
        self.calls += len(prompts)
        return generate_texts(self.llm, prompts, max_new_tokens, chat_template=self.chat_template, **kw)

    def formulate(self, problems: Sequence[str], demos: Sequence[Demo] | None = None, **kw: Any) -> list[str]:
        """The model's formulations of ``problems`` (one batched call)."""
        return self._generate([self.messages(p, demos) for p in problems], self.max_new_tokens, **kw)

    def solve_batch(self, problems: Sequence[str], demos: Sequence[Demo] | None = None) -> list[dict[str, Any]]:
        """Formulate, parse, solve and answer each problem.

        Returns:
            Per problem: ``formulation`` (model text), ``equations`` (as parsed), ``warnings``, ``solve``
            (:meth:`SolveResult.to_dict`), ``answer_text`` (the second call's text, or None), ``numbers``
            (the predicted numbers) and ``valid`` (whether the model's output gave an answer at all:
            a solved system, or a boxed answer).
        """
        problems = list(problems)
        if not problems:
            raise EmptyInputError("no problem to solve")
        formulations = self.formulate(problems, demos)
        rows: list[dict[str, Any]] = []
        results: list[SolveResult] = []
        for problem, text in zip(problems, formulations, strict=True):
            result, system = self.solver.solve_formulation(text)  # parsed and solved in the worker
            results.append(result)
            rows.append({"problem": problem, "formulation": text, "equations": system["equations"],
                         "warnings": system["warnings"], "solve": result.to_dict(), "answer_text": None,
                         "numbers": list(result.values.values()) if result.solved else [],
                         "solution_numbers": list(result.values.values()) if result.solved else [],
                         "valid": result.solved})
        if self.answer == "llm":
            prompts = [[{"role": "user", "content": (ANSWER_GIVEN_SOLUTION if res.solved else ANSWER_DIRECT).format(
                problem=r["problem"], formulation=r["formulation"].strip()[-1500:], solution=format_solution(res))}]
                for r, res in zip(rows, results, strict=True)]
            for r, text in zip(rows, self._generate(prompts, 64), strict=True):
                r["answer_text"] = text
                r["numbers"] = extract_numbers(text, boxed_only=True) or extract_numbers(text)
                r["valid"] = bool(r["numbers"])
        return rows

    def select_demos(self, demo_problems: Sequence[str], dev: Sequence[Any], *, n_trials: int = 10,
                     score: Callable[[list[float], Any], bool], temperature: float = 0.7,
                     seed: int = 0) -> dict[str, Any]:
        """Automatic demos: the model formulates each demo problem in turn (conditioned on the earlier ones),
        ``n_trials`` times (trial 0 greedy, the others sampled); the demo set with the best dev accuracy is
        kept in :attr:`demos`.

        Args:
            demo_problems: the fixed demo problems (not test items).
            dev: dev items with ``.problem`` (disjoint from the test items).
            n_trials: demo sets to try (the paper: 10).
            score: ``score(numbers, item) -> bool``, e.g. ``lambda nums, it: score_beyondx(nums, it.answers)``.

        Returns:
            ``{"trials": [{"demos": [...], "dev_accuracy": ...}], "best": index}``.
        """
        if not demo_problems or not dev:
            raise EmptyInputError("demo selection needs demo problems and dev items")
        trial_demos = self.write_demo_trials(demo_problems, n_trials, temperature=temperature, seed=seed)
        trials = []
        for ds in trial_demos:
            rows = self.solve_batch([it.problem for it in dev], ds)
            acc = sum(score(r["numbers"], it) for r, it in zip(rows, dev, strict=True)) / len(dev)
            trials.append({"demos": [d.__dict__ for d in ds], "dev_accuracy": acc,
                           "dev_valid_rate": sum(r["valid"] for r in rows) / len(rows)})
        best = best_trial(trials)
        self.demos = trial_demos[best]
        return {"trials": trials, "best": best}

    def write_demo_trials(self, demo_problems: Sequence[str], n_trials: int, *, temperature: float = 0.7,
                          seed: int = 0) -> list[list[Demo]]:
        """``n_trials`` demo sets: the model formulates each demo problem in turn, conditioned on the earlier
        ones (trial 0 greedy, the others sampled)."""
        if not demo_problems or n_trials < 1:
            raise EmptyInputError("writing demos needs demo problems and at least one trial")
        trial_demos: list[list[Demo]] = [[] for _ in range(n_trials)]
        for problem in demo_problems:
            prompts = [self.messages(problem, ds) for ds in trial_demos]
            for ds, text in zip(trial_demos, self._batched_trials(prompts, temperature, seed), strict=True):
                ds.append(Demo(problem, text.strip()))
        return trial_demos

    def _batched_trials(self, prompts: list[Any], temperature: float, seed: int) -> list[str]:
        """Trial 0 greedy; trial i > 0 sampled with seed ``seed + i``, one call each: a server given one seed for
        a batch of equal prompts (every trial's first demo) would return the same text for all of them."""
        texts = self._generate(prompts[:1], self.max_new_tokens)
        for i, prompt in enumerate(prompts[1:], start=1):
            texts += self._generate([prompt], self.max_new_tokens, temperature=temperature, top_p=0.95,
                                    seed=seed + i)
        return texts


def generate_texts(llm: Any, prompts: list[Any], max_new_tokens: int, *, chat_template: bool = True,
                   **kw: Any) -> list[str]:
    """One greedy (or configured) text per chat prompt, in one batched call; without the chat template the
    messages are sent as plain text (:func:`~trustlab.models.base.plain_text`)."""
    from trustlab.models.base import plain_text

    if not prompts:
        return []
    if not chat_template:
        prompts = [plain_text(p) + "\n\n" for p in prompts]
    gens = llm.generate(prompts, max_new_tokens=max_new_tokens, chat_template=chat_template, **kw)
    return [g[0].text for g in gens]


def best_trial(trials: Sequence[dict[str, Any]]) -> int:
    """The index of the trial with the best ``dev_accuracy`` (the first on ties)."""
    return max(range(len(trials)), key=lambda i: (trials[i]["dev_accuracy"], -i))
