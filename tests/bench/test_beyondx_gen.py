"""bench.beyondx_gen: verified generated problems, the expansion's parsing and fix-up, the expand-beyondx command,
and the solver check on the official BeyondX gold systems."""

from __future__ import annotations

import json
from fractions import Fraction
from pathlib import Path

import pytest
import sympy
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.safety.fakes import ScriptedModel
from trustlab.bench import beyondx_gen as gen
from trustlab.bench.beyondx import BeyondXItem, load_beyondx, score_beyondx
from trustlab.errors import EmptyInputError, ParseError
from trustlab.prompting import parse_equations
from trustlab.prompting.solver import Solver

SHARED = Path(__file__).resolve().parents[3] / "shared" / "data" / "beyondx"
FARM_SOLUTION = {"x": Fraction(18), "y": Fraction(12)}
FARM = BeyondXItem("gen-2-farm", gen.EXAMPLE["problem"], ("x + y = 30", "5*x + 8*y = 186"), (18.0, 12.0), 2, "generated")


@pytest.fixture(scope="module")
def solver():
    with Solver(timeout=20) as s:
        yield s


@pytest.mark.parametrize("seed", [0, 1, 7])
def test_generated_items_solve_uniquely_to_their_answers_at_every_level(seed, solver):
    items = gen.generate_problems(len(gen.SCENARIOS), seed=seed)  # every scenario at every level
    assert [it.unknowns for it in items] == [k for k in (2, 3, 4, 5) for _ in gen.SCENARIOS]
    for it in items:
        assert it.source == "generated" and it.id.startswith(f"gen-{it.unknowns}-")
        assert len(it.equations) == it.unknowns and "=" not in it.problem and it.problem.endswith("?")
        result = solver.solve("\n".join(it.equations))
        assert result.status == "solved" and result.n_solutions == 1, it
        assert [result.values[s] for s in gen.SYMBOLS[:it.unknowns]] == pytest.approx(list(it.answers), abs=1e-9)
        assert all(a > 0 for a in it.answers)


def test_generation_is_deterministic_and_prefix_stable():
    a = gen.generate_problems(5, unknowns=(3, 5), seed=3)
    assert a == gen.generate_problems(5, unknowns=(3, 5), seed=3)
    assert gen.generate_problems(2, unknowns=(3,), seed=3) == a[:2]
    assert [it.problem for it in gen.generate_problems(5, unknowns=(3, 5), seed=4)] != [it.problem for it in a]
    assert len({it.id for it in a}) == len(a) == 10


def test_generation_refuses_bad_arguments():
    with pytest.raises(ValueError, match="n must be"):
        gen.generate_problems(0)
    with pytest.raises(ValueError, match="from 2 to 5"):
        gen.generate_problems(1, unknowns=(1, 6))


def test_the_prompt_shows_the_problem_its_system_and_solution():
    prompt = gen.expansion_prompt(FARM)
    assert "with 3 unknowns" in prompt and "The new math word problem is:" in prompt
    assert prompt.endswith("Problem: " + FARM.problem + "\nSystem of equations:\nx + y = 30\n5*x + 8*y = 186\n"
                           "Solution: x = 18, y = 12\nAnswer:\n")


def test_a_well_formed_expansion_becomes_a_verified_item():
    new = gen.parse_expansion(gen.EXAMPLE["answer"], FARM)
    assert new.id == "3-exp-gen-2-farm" and new.unknowns == 3 and new.source == "generated"
    assert new.answers == (18.0, 12.0, 7.0)
    assert new.equations == ("x + y + z = 37", "5*x + 8*y + 6*z = 228", "x = z + 11")
    assert new.problem.startswith("A farm stand sold 37 baskets") and new.problem.endswith("were sold?")


def test_the_fix_up_recomputes_wrong_constants_in_the_equations_and_the_text():
    # the model's arithmetic slipped: 228 -> 230 and 11 -> 10, both in its equations and in its text
    wrong = gen.EXAMPLE["answer"].replace("228", "230").replace("11 more", "10 more").replace("z + 11", "z + 10")
    new = gen.parse_expansion(wrong, FARM)
    assert new.equations == ("x + y + z = 37", "5*x + 8*y + 6*z = 228", "x = z + 11")
    assert "$228 in all" in new.problem and "11 more baskets" in new.problem and "230" not in new.problem
    # only an equation is wrong (37 -> 40); the text already states the right number and stays as it is
    new = gen.parse_expansion(gen.EXAMPLE["answer"].replace("x + y + z = 37", "x + y + z = 40"), FARM)
    assert new.equations[0] == "x + y + z = 37" and new.problem == gen.parse_expansion(gen.EXAMPLE["answer"], FARM).problem
    # a constant on the left-hand side: x - 11 = z
    new = gen.parse_expansion(gen.EXAMPLE["answer"].replace("x = z + 11", "x - 12 = z").replace("11 more", "12 more"), FARM)
    assert new.equations[2] == "x - 11 = z" and "11 more baskets" in new.problem


@pytest.mark.parametrize("problem, old, new, expected", [
    ("It costs $1,200 in all.", 1200, 1350, "It costs $1,350 in all."),
    ("Sales came to $12.50.", 12.5, 13, "Sales came to $13.00."),
    ("A 38% solution.", 0.38, 0.4, "A 40% solution."),
    ("It holds 7.4 liters.", 7.4, 7.25, "It holds 7.25 liters."),
])
def test_a_recomputed_constant_keeps_the_style_of_the_number_it_replaces(problem, old, new, expected):
    assert gen._retext(problem, Fraction(str(old)), Fraction(str(new))) == expected


@pytest.mark.parametrize("answer, kind", [
    ("", "format"),
    ("I cannot do this.", "format"),
    (gen.EXAMPLE["answer"].split("5- ")[0], "format"),                                          # no new problem
    (gen.EXAMPLE["answer"].replace("x = z + 11", "x = __import__('os').system('true')"), "equations"),
    (gen.EXAMPLE["answer"].replace("x = z + 11", "x = z + 11\nx + q = 3"), "variables"),       # an unknown too many
    (gen.EXAMPLE["answer"].replace("z = 7", "y = 7"), "variables"),                              # reuses an old name
    (gen.EXAMPLE["answer"].replace("x = z + 11", "x = 2*z"), "fixup"),                          # false, no constant
    (gen.EXAMPLE["answer"].replace("x = z + 11", "x + z = 26"), "fixup"),                       # 26 -> 25: neither in the text
    (gen.EXAMPLE["answer"].replace("x = z + 11\n", ""), "unsolvable"),                          # underdetermined
    (gen.EXAMPLE["answer"].replace("The stand sold 11", "Apples x = z + 11. The stand sold 11"), "text"),
])
def test_malformed_expansions_raise_parse_error(answer, kind):
    with pytest.raises(ParseError) as info:
        gen.parse_expansion(answer, FARM)
    assert isinstance(info.value, gen.ExpansionError) and info.value.kind == kind, info.value


_PIECES = ["The new variable is: z = 7\n", "The new system of equations is:\n", "The new math word problem is: ",
           "x + y + z = 37\n", "5*x + 8*y + 6*z = 228\n", "x = z + 11\n", "x = 2**99**99\n", "(" * 50, "1/0 = x\n",
           "5- ", "1. ", "$1,200 ", "38% ", "= = ", "z = -3\n", "\u00d7", "How many?"]


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.one_of(st.sampled_from(_PIECES), st.text(max_size=30)), max_size=12))
def test_any_answer_gives_an_item_or_a_parse_error(solver, pieces):
    try:
        new = gen.parse_expansion("".join(pieces), FARM, solution=FARM_SOLUTION, solver=solver)
    except ParseError as exc:
        assert isinstance(exc, gen.ExpansionError) and exc.kind in gen.FAILURE_KINDS
    else:
        values = solver.solve("\n".join(new.equations)).values
        assert sorted(values.values()) == pytest.approx(sorted(new.answers))


def test_expand_items_makes_one_batched_call_and_counts_failures():
    broken = BeyondXItem("4-broken", "Some problem with too few facts.", ("x + y = 3", "z + w = 4", "x = 1"),
                         (1.0, 2.0, 3.0, 1.0), 4)
    other = gen.generate_problems(1, unknowns=(3,), seed=0)[0]
    llm = ScriptedModel(lambda p: gen.EXAMPLE["answer"] if "Problem: " + FARM.problem in p.split("Now the")[-1]
                        else "The new variable is: q = 2\nSorry, that is all.")
    new, failures = gen.expand_items(llm, [FARM, broken, other], seed=1, max_new_tokens=64)
    assert len(llm.asked) == 1 and len(llm.asked[0]) == 2        # the seed failure is never sent
    assert [it.id for it in new] == ["3-exp-gen-2-farm"]
    assert [(f["id"], f["kind"]) for f in failures] == [("4-broken", "seed"), (other.id, "format")]
    assert all(f["kind"] in gen.FAILURE_KINDS and f["reason"] for f in failures)
    assert failures[1]["output"].startswith("The new variable is: q = 2")
    with pytest.raises(EmptyInputError):
        gen.expand_items(llm, [])


@pytest.mark.slow
def test_the_command_on_the_embedded_model_writes_valid_files_and_counts_failures(tmp_path):
    from trustlab.cli.beyondx_expand import expand_beyondx

    out = tmp_path / "run"
    res = CliRunner().invoke(expand_beyondx, ["--model", "embedded", "--levels", "2,3", "--n", "1",
                                              "--max-new-tokens", "24", "--out", str(out)])
    assert res.exit_code == 0, res.output
    items = json.loads((out / "expanded.json").read_text())
    results = json.loads((out / "results.json").read_text())
    rows = [json.loads(line) for line in (out / "samples.jsonl").read_text().splitlines()]
    failures = [r for r in rows if not r["expanded"]]
    assert results["asked"] == len(rows) == 2 and results["expanded"] == len(items) == 2 - len(failures)
    assert all(f["kind"] in gen.FAILURE_KINDS and f["output"] for f in failures)
    assert sum(results["failures_by_kind"].values()) == len(failures)
    assert all(set(it) >= {"id", "problem", "system_of_equations", "ans", "source"} for it in items)
    assert f"expanded {len(items)} of 2; failures {len(failures)}" in res.output
    assert (out / "report.html").exists()


def test_the_command_refuses_bad_levels(tmp_path):
    from trustlab.cli.beyondx_expand import expand_beyondx

    res = CliRunner().invoke(expand_beyondx, ["--levels", "1,x", "--out", str(tmp_path / "o")])
    assert res.exit_code == 2 and "comma-separated" in res.output


def _rank(equations: tuple[str, ...]) -> tuple[int, int]:
    eqs = parse_equations("\n".join(equations))
    syms = sorted(set().union(*(e.free_symbols for e in eqs)), key=str)
    matrix, _ = sympy.linear_eq_to_matrix([e.lhs - e.rhs for e in eqs], syms)
    return matrix.rank(), len(syms)


@pytest.mark.skipif(not SHARED.exists(), reason="the official BeyondX JSON (CC BY-SA, test-only) is not redistributed with trustlab; set it up at ../shared/data/beyondx to run this check")
def test_462_of_the_464_official_gold_systems_solve_to_their_answers(solver):
    items = load_beyondx(SHARED)
    assert [sum(it.unknowns == k for it in items) for k in (3, 4, 5)] == [194, 158, 112]
    bad = []
    for it in items:
        result = solver.solve("\n".join(it.equations))
        if not (result.status == "solved" and score_beyondx(list(result.values.values()), it.answers)):
            bad.append((it.id, result.status, _rank(it.equations)))
    # both exceptions are underdetermined gold systems: one equation short of a unique solution
    assert bad == [("4-121", "symbolic", (3, 4)), ("5-91", "symbolic", (4, 5))]
    by_id = {it.id: it for it in items}
    _, failures = gen.expand_items(ScriptedModel(lambda p: ""), [by_id["4-121"], by_id["5-91"]])
    assert [f["kind"] for f in failures] == ["seed", "seed"]


CEMENT_ANSWER = """1- x: 20% mixture (7), y: 80% (3), z: 50% (2), w: 30% (3).
2- The new variable is: v = 5 (tons of a 10% cement mixture)
3- **The new system of equations is:**
1. 0.2x + 0.8y + 0.5z + 0.3w + 0.1v = 6.2
2. x + y + z + w + v = 20
3. x + y = 3z + 4
4. x + y + z = 4w
5. v = w + 3
4- Adds a 10% mixture.
5- **The new math word problem is:**
You are making 20 tons of concrete that is 31% cement. To do this, you are mixing a 20%, an 80%, a 50%, a 30% and a
10% cement mixture. The 20% and 80% mixtures together are three times the 50% mixture plus 4 tons. The 20%, 80% and
50% mixtures together are four times the 30% mixture. There are 3 more tons of the 10% mixture than of the 30% one.
How much of each mixture must you use?"""


@pytest.mark.skipif(not SHARED.exists(), reason="the official BeyondX JSON (CC BY-SA, test-only) is not redistributed with trustlab; set it up at ../shared/data/beyondx to run this check")
def test_an_official_item_expands_from_a_numbered_answer_with_bold_markers():
    item = load_beyondx(SHARED, levels=(4,))[1]  # the 15-ton cement problem, x, y, z, w = 7, 3, 2, 3
    new = gen.parse_expansion(CEMENT_ANSWER, item)
    # "5. v = w + 3" is an equation, not a step-5 marker; the fix-up turns 3 into 2, in the text too
    assert new.equations == ("0.2*x + 0.8*y + 0.5*z + 0.3*w + 0.1*v = 6.2", "x + y + z + w + v = 20",
                             "x + y = 3*z + 4", "x + y + z = 4*w", "v = w + 2")
    assert "There are 2 more tons" in new.problem and new.answers == (7.0, 3.0, 2.0, 3.0, 5.0)
    assert new.id == "5-exp-4-2" and new.source == "ALG514"
