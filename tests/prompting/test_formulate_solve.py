"""Formulate-and-Solve: reading systems out of model text, solving, answers and scoring, strategies' control flow
(scripted models), the checkpointed evaluation, the CLI on the real SmolLM2, and the claim rules."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.safety.fakes import ScriptedModel
from trustlab.bench.beyondx import (
    BeyondXItem,
    load_beyondx,
    score_beyondx,
    score_relative,
    split_dev_test,
)
from trustlab.errors import DataFileError, EmptyInputError, ParseError
from trustlab.models.base import Generation
from trustlab.prompting.answers import extract_boxed, extract_numbers, parse_number
from trustlab.prompting.formulate_solve import Demo, FormulateAndSolve, parse_system
from trustlab.prompting.reasoning import STRATEGIES, make_strategy
from trustlab.prompting.solver import Solver

DATA = Path("../shared/data/beyondx")


@pytest.fixture(scope="module")
def solver():
    with Solver(timeout=10) as s:
        yield s


# --- parse_system: the spec's check 2 -------------------------------------------------------------------------

def test_reads_the_block_after_the_last_step_5_marker():
    text = ("1- boys and girls\n2- ratio 9 to 4\n3- b = boys, g = girls\n4- ...\n"
            "5- System of equations:\nb/g = 9/4\nb + g = 26\n")
    s = parse_system(text)
    assert [str(e) for e in s.equations] == ["Eq(b/g, 9/4)", "Eq(b + g, 26)"]
    assert [x.name for x in s.symbols] == ["b", "g"]
    assert not s.warnings  # "3- b = boys" is before the marker and never read


def test_percentages_dollars_commas_and_prose_lines():
    s = parse_system("5- The system:\nWe write:\nx + y = $1,200\n0.05x + 4% * y = 54\nThat is all.")
    assert [str(e) for e in s.equations] == ["Eq(x + y, 1200)", "Eq(0.05*x + y/25, 54)"] or \
        [str(e) for e in s.equations] == ["Eq(x + y, 1200)", "Eq(x/20 + y/25, 54)"]


def test_case_is_kept_and_sympy_reserved_letters_are_plain_symbols(solver):
    s = parse_system("5-\nB + b = 10\nB - b = 2\nE + I + N + O + Q + S = 6\nE = I\nI = N\nN = O\nO = Q\nQ = S")
    names = [x.name for x in s.symbols]
    assert names == ["B", "E", "I", "N", "O", "Q", "S", "b"]
    result = solver.solve(s.equations)
    assert result.status == "solved" and result.values["B"] == 6 and result.values["b"] == 4
    assert result.values["E"] == 1 and result.values["S"] == 1


def test_implicit_multiplication_latex_bullets_labels_and_inline_math():
    text = ("5- System of equations:\n- Equation 1: 2x + 3(y - 1) = 10\n2. \\( x = y + 1 \\)\n"
            "We also know that $\\frac{x}{2} = z$ holds.\nTotal: 3a \\times 2 = 12 \\\\")
    s = parse_system(text)
    assert [str(e) for e in s.equations] == ["Eq(2*x + 3*y - 3, 10)", "Eq(x, y + 1)", "Eq(x/2, z)", "Eq(6*a, 12)"]


def test_prose_names_inequalities_and_bare_expressions_are_warned_about():
    s = parse_system("5-\nLet x = number of boys\nx > 3\nx + y - 10\nx - y = 2")
    assert [str(e) for e in s.equations] == ["Eq(x + y - 10, 0)", "Eq(x - y, 2)"]
    assert any("prose names" in w for w in s.warnings)
    assert any("inequality" in w for w in s.warnings)
    assert any("= 0" in w for w in s.warnings)


def test_no_marker_empty_text_and_ratio_lines():
    assert parse_system("").warnings == ["empty formulation"]
    s = parse_system("b:g = 9:4\nb + g = 26")
    assert "no step-5 marker" in s.warnings[0]
    assert [str(e) for e in s.equations] == ["Eq(b/g, 9/4)", "Eq(b + g, 26)"]


def test_equation_lines_that_look_like_step_markers_are_not_markers():
    s = parse_system("5- System:\n5.0 * x + 2 * y = 12\n5.5x - y = 1")
    assert len(s.equations) == 2


def test_unsolvable_underdetermined_and_solved_systems(solver):
    assert solver.solve("x + y = 1\nx + y = 2").status == "no_solution"
    under = solver.solve("x + y + z = 3\nx - y = 1")
    assert under.status == "symbolic" and under.values == {} and under.exact
    quad = solver.solve("x^2 = 9\ny = x + 1")  # two solutions: the non-negative one is preferred
    assert quad.status == "solved" and quad.values == {"x": 3.0, "y": 4.0} and quad.n_solutions == 2


def test_solver_text_parse_errors_raise_and_the_worker_keeps_working(solver):
    with pytest.raises(ParseError):
        solver.solve("__import__('os').system('true') = 1")
    assert solver.solve("2a = 3").values == {"a": 1.5}
    result, parsed = solver.solve_formulation("5-\nLet q = quantity\nq + 1 = 3")
    assert result.values == {"q": 2.0} and parsed["warnings"]


@settings(max_examples=200, deadline=None, derandomize=True)
@given(st.lists(st.tuples(st.integers(-50, 50), st.integers(-50, 50)), min_size=2, max_size=2),
       st.integers(1, 40), st.integers(1, 40))
def test_random_two_unknown_systems_solve_to_their_values(coefs, x, y):
    (a, b), (c, d) = coefs
    if a * d - b * c == 0:
        return
    text = f"5- System:\n{a}x + {b}y = {a * x + b * y}\n{c}x + {d}y = {c * x + d * y}"
    s = parse_system(text)
    from trustlab.prompting.solver import solve_now

    result = solve_now(s.equations, s.symbols)
    assert result.status == "solved" and result.values == {"x": float(x), "y": float(y)}


# --- answers and scoring ------------------------------------------------------------------------------------

def test_boxed_answers_and_numbers():
    assert extract_boxed("x \\boxed{1} then \\boxed{\\frac{1}{2}, 3}") == "\\frac{1}{2}, 3"
    assert extract_boxed("no box") is None
    assert extract_boxed("\\boxed{12, 1") == "12, 1"  # stopped inside the box
    assert extract_numbers("The answer is \\boxed{63, 28, \\$1,200 and 1/4}") == [63.0, 28.0, 1200.0, 0.25]
    assert extract_numbers("\\boxed{\\frac{3}{4}}") == [0.75]
    assert extract_numbers("first 1\nso the answers are 5 and -2.5") == [5.0, -2.5]
    assert extract_numbers("\\boxed{x}", boxed_only=True) == []
    assert extract_numbers("reasoning 4 without box", boxed_only=True) == []
    assert extract_numbers("\\boxed{1/0}") == []
    assert parse_number("3/4") == 0.75 and parse_number("n/a") is None and parse_number("1, 2") is None


def test_official_and_relative_scoring():
    assert score_beyondx([4.0, 6.0], [6, 4]) and not score_beyondx([6.0], [6, 4])
    assert score_beyondx([6.05, 4], [6, 4]) and not score_beyondx([6.15, 4], [6, 4])
    assert not score_beyondx([1.0], [])
    assert score_relative([1005.0], [1000.0]) and not score_relative([1011.0], [1000.0])
    assert not score_beyondx([1000.5], [1000.0]) and score_relative([1000.5], [1000.0])


# --- data ---------------------------------------------------------------------------------------------------

def test_loader_refuses_bad_files_with_the_item_named(tmp_path):
    bad = tmp_path / "BeyondX_3.json"
    bad.write_text("{not json")
    with pytest.raises(DataFileError, match="not a readable"):
        load_beyondx(bad)
    bad.write_text(json.dumps([{"problem": "p", "ans": ["1"], "id": 7}]))
    with pytest.raises(DataFileError, match="item 7 lacks system_of_equations"):
        load_beyondx(bad)
    bad.write_text(json.dumps([{"problem": "p", "system_of_equations": ["x = 1"], "ans": ["one"], "id": 8}]))
    with pytest.raises(DataFileError, match="not a number"):
        load_beyondx(bad)
    bad.write_text("[]")
    with pytest.raises(EmptyInputError):
        load_beyondx(bad)
    with pytest.raises(DataFileError, match="no such file"):
        load_beyondx(tmp_path / "missing")
    with pytest.raises(DataFileError, match="no BeyondX_"):
        load_beyondx(tmp_path / ".." / tmp_path.name, levels=(4,))


@pytest.mark.skipif(not DATA.exists(), reason="the official BeyondX JSON (CC BY-SA, test-only) is not redistributed with trustlab; set it up at ../shared/data/beyondx to run this check")
def test_official_data_and_disjoint_splits():
    items = load_beyondx(DATA)
    assert len(items) == 464 and len({it.id for it in items}) == 464
    dev, test = split_dev_test(items, test_per_level=30, dev_per_level=10, seed=0)
    assert len(dev) == 30 and len(test) == 90 and not {i.id for i in dev} & {i.id for i in test}
    assert [sum(i.unknowns == k for i in test) for k in (3, 4, 5)] == [30, 30, 30]
    assert split_dev_test(items, test_per_level=30, dev_per_level=10, seed=0)[1] == test
    with pytest.raises(EmptyInputError):
        split_dev_test(items, test_per_level=150, dev_per_level=10)


# --- strategies with scripted models (control flow only) --------------------------------------------------------

ITEM = BeyondXItem("3-1", "Three numbers add to 6; the first is 1 and the second is 2. Find them.",
                   ("x + y + z = 6", "x = 1", "y = 2"), (1.0, 2.0, 3.0), 3)
GOOD = "1- the numbers\n2- facts\n3- x, y, z\n4- relations\n5- System of equations:\nx + y + z = 6\nx = 1\ny = 2"


def test_formulate_and_solve_shows_the_solution_to_the_answer_call(solver):
    def script(prompt):
        if "solution of this system" in prompt:
            assert "{x: 1, y: 2, z: 3}" in prompt
            return "The numbers are \\boxed{1, 2, 3}"
        return GOOD

    model = ScriptedModel(script)
    fs = FormulateAndSolve(model, solver=solver)
    (row,) = fs.solve_batch([ITEM.problem])
    assert row["solve"]["status"] == "solved" and row["numbers"] == [1.0, 2.0, 3.0] and row["valid"]
    assert [len(call) for call in model.asked] == [1, 1] and fs.calls == 2
    only = FormulateAndSolve(ScriptedModel(lambda p: GOOD), answer="solution", solver=solver)
    assert only.solve_batch([ITEM.problem, ITEM.problem])[1]["numbers"] == [1.0, 2.0, 3.0] and only.calls == 2
    with pytest.raises(EmptyInputError):
        fs.solve_batch([])
    with pytest.raises(ValueError):
        FormulateAndSolve(model, answer="guess")


def test_unsolved_systems_ask_for_the_answer_directly(solver):
    model = ScriptedModel(lambda p: "\\boxed{7}" if "Give the final answer" in p else "I cannot write equations.")
    (row,) = FormulateAndSolve(model, solver=solver).solve_batch([ITEM.problem])
    assert row["solve"]["status"] == "error" and row["numbers"] == [7.0]
    assert "solution of this system" not in model.asked[1][0]


class TemperatureScript(ScriptedModel):
    """Writes a correct formulation only when sampling (so demo trials differ)."""

    def _generate(self, prompts, cfg, chat_template):
        texts = [p if isinstance(p, str) else "\n".join(m["content"] for m in p) for p in prompts]
        self.asked.append(texts)
        good = cfg.temperature > 0
        return [[Generation(text=GOOD if good else "5-\nx = 0")] for _ in texts]


def test_demo_selection_keeps_the_trial_that_scores_best_on_dev(solver):
    fs = FormulateAndSolve(TemperatureScript(lambda p: ""), answer="solution", solver=solver)
    info = fs.select_demos(["demo one", "demo two"], [ITEM, ITEM], n_trials=3,
                           score=lambda nums, it: score_beyondx(nums, it.answers))
    # demo formulations are conditioned: trial 1 and 2 sample, trial 0 is greedy
    assert [t["dev_accuracy"] for t in info["trials"]] == [0.0, 0.0, 0.0]  # the dev answers follow the demos' model
    assert info["best"] == 0 and len(fs.demos) == 2
    with pytest.raises(EmptyInputError):
        fs.select_demos([], [ITEM], n_trials=1, score=lambda n, i: True)


def test_copying_a_demo_is_invalid_and_counted(solver):
    demo = Demo("a demo problem", GOOD)
    strategy = make_strategy("fs-solution", ScriptedModel(lambda p: GOOD), demos=[demo], solver=solver)
    (row,) = strategy.answer_batch([ITEM.problem])
    assert not row["valid"] and row["invalid_reason"] == "copies a demo"


def test_chain_of_thought_follow_up_and_fewshot_demos():
    def script(prompt):
        if "Give only the final answer" in prompt:
            return "\\boxed{1, 2, 3}"
        return "Step by step, the numbers are one, two and three."

    model = ScriptedModel(script)
    cot = make_strategy("cot", model)
    (row,) = cot.answer_batch([ITEM.problem])
    assert row["numbers"] == [1.0, 2.0, 3.0] and row["answer_text"] == "\\boxed{1, 2, 3}" and cot.calls == 2
    few = make_strategy("fewshot-cot", model)
    with pytest.raises(EmptyInputError, match="no demos"):
        few.answer_batch([ITEM.problem])
    demos = few.write_demos(["demo a", "demo b"])
    assert len(demos) == 2 and "demo a" in model.asked[-1][0]  # the second demo is conditioned on the first
    worked = [Demo("Pens cost 7 and 11; 13 pens cost 111. How many of each?",
                   "Let a pens cost 7 and b pens cost 11. Then a + b = 13 and 7a + 11b = 111, so b = 5 and a = 8. "
                   "\\boxed{8, 5}")]
    copier = make_strategy("fewshot-cot", ScriptedModel(lambda p: worked[0].formulation), demos=worked)
    assert copier.answer_batch([ITEM.problem])[0]["invalid_reason"] == "copies a demo"
    own = make_strategy("fewshot-cot", ScriptedModel(lambda p: "Let a be 1 and b be 2. Then a + b + c = 6 and "
                                                    "7a + 11b is not needed, so \\boxed{1, 2, 3}"), demos=worked)
    assert own.answer_batch([ITEM.problem])[0]["valid"]  # shares words and the numbers 7, 11 only
    with pytest.raises(ValueError, match="known"):
        make_strategy("tree-of-thought", model)
    assert set(STRATEGIES) >= {"fs", "cot", "fewshot-cot", "declarative", "pot"}


def test_declarative_reads_eq_lines_and_answer_variables(solver):
    text = "Let x [[var x]]\nLet y [[var y]]\n[[eq x + y = 10]]\n[[eq x - y = 2]]\n[[answer y]]"
    (row,) = make_strategy("declarative", ScriptedModel(lambda p: text), solver=solver).answer_batch(["q"])
    assert row["numbers"] == [4.0] and row["valid"]
    (bad,) = make_strategy("declarative", ScriptedModel(lambda p: "[[var x]]\n[[eq import os = x]]\n[[eq x = 1]]"),
                           solver=solver).answer_batch(["q"])
    assert not bad["valid"] and bad["invalid_reason"] == "undeclared names in [[eq]]"
    (broken,) = make_strategy("declarative", ScriptedModel(lambda p: "[[eq x = = 2]]"), solver=solver).answer_batch(["q"])
    assert broken["invalid_reason"] == "equations do not parse"
    (none,) = make_strategy("declarative", ScriptedModel(lambda p: "x is 4, y is 6"), solver=solver).answer_batch(["q"])
    assert none["invalid_reason"] == "no [[eq]] lines"


# --- evaluation: checkpoint and resume --------------------------------------------------------------------------

def test_evaluation_resumes_without_model_calls(tmp_path, solver):
    from trustlab.prompting.evaluate import evaluate
    from trustlab.report import RunFolder

    items = [ITEM, BeyondXItem("3-2", "other", ("x = 1",), (5.0, 6.0, 7.0), 3)]
    model = ScriptedModel(lambda p: GOOD)
    strategy = make_strategy("fs-solution", model, solver=solver)
    first = evaluate(strategy, items, run=RunFolder(tmp_path, {"k": 1}), chunk=1)
    assert first["calls"] == 2 and first["correct"] == 1 and first["by_unknowns"]["3"]["ci"][0] < 0.5
    assert "text" in first["rows"][0] and "problem" not in first["rows"][0]  # no BeyondX text in the rows
    again = evaluate(make_strategy("fs-solution", model, solver=solver), items, run=RunFolder(tmp_path, {"k": 1}))
    assert again["calls"] == 0 and again["accuracy"] == first["accuracy"]
    with pytest.raises(EmptyInputError):
        evaluate(strategy, [])


# --- the real model, end to end ---------------------------------------------------------------------------------

def test_eval_beyondx_cli_on_the_embedded_model(tmp_path):
    from click.testing import CliRunner

    from trustlab.cli import main

    out = tmp_path / "run"
    res = CliRunner().invoke(main, ["eval", "beyondx", "--data", "generated", "--levels", "2,3", "--n-per-level", "1",
                                    "--dev-per-level", "1", "--demo-trials", "1", "--max-new-tokens", "20",
                                    "--strategy", "fs", "--strategy", "cot", "--out", str(out)])
    assert res.exit_code == 0, res.output
    results = json.loads((out / "results.json").read_text())
    assert set(results["strategies"]) == {"fs", "cot"}
    for r in results["strategies"].values():
        assert r["n"] == 2 and set(r["by_unknowns"]) == {"2", "3"} and 0 <= r["valid_rate"] <= 1
    assert (out / "report.html").exists() and (out / "accuracy_by_unknowns.png").exists()
    assert json.loads((out / "demos.json").read_text())["fs"]["dev_items"]
    bad = CliRunner().invoke(main, ["eval", "beyondx", "--levels", "three", "--out", str(out)])
    assert bad.exit_code == 2 and "numbers of unknowns" in bad.output


# --- the claims' rules ------------------------------------------------------------------------------------------

def _details(cot_acc: dict[str, tuple[int, int]], fs_acc: dict[str, tuple[int, int]], valid: float = 1.0,
             fs_systems: bool = True):
    rows = []
    for strategy, accs in (("cot", cot_acc), ("fs", fs_acc), ("fewshot-cot", cot_acc)):
        for level, (k, n) in accs.items():
            rows += [{"strategy": strategy, "item": f"{level}-{i}", "unknowns": int(level), "correct": i < k,
                      "valid": True, "equations": ["Eq(x, 1)"] if fs_systems else []} for i in range(n)]

    def block(accs):
        by = {lv: {"n": n, "correct": k, "accuracy": k / n} for lv, (k, n) in accs.items()}
        k, n = sum(k for k, _ in accs.values()), sum(n for _, n in accs.values())
        return {"n": n, "correct": k, "accuracy": k / n, "valid_rate": valid, "by_unknowns": by}

    return {"setup": {"seed": 0, "quick": False}, "rows": rows,
            "gold_check": {"n": 464, "solved": 462, "all_explained": True,
                           "exceptions": [{"id": "4-121", "cause": "underdetermined gold system: rank 3 < 4 unknowns"}]},
            "strategies": {"cot": block(cot_acc), "fs": block(fs_acc), "fewshot-cot": block(cot_acc)}}


def test_claim_rules():
    from trustlab.reproduce.formulate_and_solve import make_claims

    gold, drop, gain = make_claims(_details({"3": (20, 30), "4": (10, 30), "5": (3, 30)},
                                            {"3": (25, 30), "4": (20, 30), "5": (18, 30)}))
    assert gold.verdict == "reproduced" and gold.n == 464
    assert drop.verdict == "reproduced" and drop.ci[1] < 0 and drop.n == 60
    assert gain.verdict == "reproduced" and gain.ci[0] > 0 and gain.n == 90
    floor = make_claims(_details({"3": (1, 30), "4": (0, 30), "5": (0, 30)}, {"3": (1, 30), "4": (0, 30), "5": (0, 30)}))
    assert [c.verdict for c in floor[1:]] == ["not measurable", "not measurable"]
    invalid = make_claims(_details({"3": (20, 30), "4": (10, 30), "5": (3, 30)},
                                   {"3": (25, 30), "4": (20, 30), "5": (18, 30)}, valid=0.3))
    assert [c.verdict for c in invalid[1:]] == ["not measurable", "not measurable"]
    no_systems = make_claims(_details({"3": (20, 30), "4": (10, 30), "5": (3, 30)},
                                      {"3": (25, 30), "4": (20, 30), "5": (18, 30)}, fs_systems=False))
    assert no_systems[1].verdict == "reproduced" and no_systems[2].verdict == "not measurable"
    assert no_systems[2].valid_rate == 0.0
    narrower = make_claims(_details({"3": (10, 30), "4": (10, 30), "5": (9, 30)},
                                    {"3": (20, 30), "4": (12, 30), "5": (10, 30)}))
    assert narrower[1].verdict == "not reproduced"  # 10/30 vs 9/30: no drop shown
    assert narrower[2].verdict == "not reproduced"  # the gap shrinks from 3 to 5 unknowns


def test_the_audit_section_runs_on_generated_problems(smollm, tmp_path):
    from trustlab.audit import run_audit

    run_audit(smollm, tmp_path, sections=["reasoning"], quick=True)
    results = json.loads((tmp_path / "reasoning" / "results.json").read_text())
    assert set(results["strategies"]) == {"fs", "cot"}
    assert {s: set(r["by_unknowns"]) for s, r in results["strategies"].items()} == {
        "fs": {"2", "3", "4", "5"}, "cot": {"2", "3", "4", "5"}}
    assert "generated" in results["setup"]["data"] and results["setup"]["demo_trials"] == 0
    html = (tmp_path / "report.html").read_text()
    assert "Reasoning with several unknowns" in html and "zero-shot (no demos)" in html


def test_an_interrupted_demo_selection_resumes_from_its_checkpoint(tmp_path):
    from trustlab.prompting.beyondx_run import run_beyondx

    model = TemperatureScript(lambda p: "")
    kw = dict(strategies=["fs-solution"], data="generated", levels=(2,), n_per_level=1, dev_per_level=2,
              demo_trials=2, max_new_tokens=16, report=False)
    first = run_beyondx(model, tmp_path, **kw)
    demos = json.loads((tmp_path / "demos.json").read_text())["fs-solution"]
    assert len(demos["trials"]) == 2 and demos["best"] in (0, 1)
    rows = [json.loads(line) for line in (tmp_path / "samples.jsonl").read_text().splitlines()]
    assert sorted({r["strategy"] for r in rows}) == ["fs-solution", "fs-solution-dev0", "fs-solution-dev1"]
    # interrupted after the demo sets were written and one trial's dev rows: nothing of it is asked again
    saved = {"fs-solution": {"dev_items": demos["dev_items"], "trial_demos": [t["demos"] for t in demos["trials"]]}}
    (tmp_path / "demos.json").write_text(json.dumps(saved))
    keep = [r for r in rows if r["strategy"] == "fs-solution-dev0"]
    (tmp_path / "samples.jsonl").write_text("".join(json.dumps(r) + "\n" for r in keep))
    again = TemperatureScript(lambda p: "")
    second = run_beyondx(again, tmp_path, **kw)
    asked = sum(len(call) for call in again.asked)
    assert asked == 2 + 1  # trial 1's two dev problems and the one test problem, no demo writing
    assert second["demos"]["fs-solution"]["best"] == first["demos"]["fs-solution"]["best"]
