"""Mixture-of-Prompts: Kauto, demo caps, padding, region search, routing, JSON, call counts, bad input,
baselines (scripted model, control flow only), and one run on the embedded SmolLM2 + MiniLM."""

from __future__ import annotations

import itertools
import re

import numpy as np
import pytest

from tests.safety.fakes import ScriptedModel
from trustlab.errors import EmptyInputError, TrustlabError
from trustlab.prompting import mop as M
from trustlab.prompting.mop import MoP, MoPModel, compile
from trustlab.prompting.mop_baselines import BASELINES, ape_search, fit_baseline

WORDS = ["apple", "river", "stone", "cloud", "garden", "window", "pencil", "mirror", "candle", "forest", "silver",
         "rocket", "basket", "planet", "shadow", "bridge", "castle", "dragon", "island", "jacket", "lemon", "tiger",
         "violin", "anchor", "button", "marble"]


class CharEmbedder:
    """Two features per text (share of digits, share of letters) plus a tiny length jitter: numbers and
    words sit in two tight, far apart clusters."""

    name = "char-classes"

    def encode(self, texts):
        x = [t.removeprefix("Input: ").removesuffix("\nOutput: ") for t in texts]
        return np.array([[sum(c.isdigit() for c in s) / len(s), sum(c.isalpha() for c in s) / len(s),
                          1e-3 * len(s)] for s in x])


def two_regions(n_numbers=20, words=WORDS[:20], start=3):
    nums = [(str(n), str(2 * n)) for n in range(start, start + n_numbers)]
    return nums + [(w, w[::-1]) for w in words]


def rule_model():
    """Proposes "double" for demos that are mostly numbers, "reverse" otherwise (each phrasing once); answers
    right only when the prompt's instruction names the query's rule (demos are ignored)."""
    variant = itertools.count()

    def script(prompt: str) -> str:
        if prompt.startswith("I gave a friend"):
            xs = re.findall(r"^Input: (.*)$", prompt, re.M)
            rule = "double the number" if sum(x.isdigit() for x in xs) * 2 > len(xs) else "reverse the word"
            return f" {rule} (variant {next(variant)})\nmore text"
        inst = re.match(r"Instruction: (.*)", prompt)
        query = re.findall(r"^Input: (.*)$", prompt, re.M)[-1]
        if inst and "double" in inst.group(1) and query.isdigit():
            return f" {2 * int(query)}\n"
        if inst and "reverse" in inst.group(1) and query.isalpha():
            return f" {query[::-1]}\n"
        return f" {query}"

    return ScriptedModel(script)


def fit_two_regions(model=None, **kw):
    model = model or rule_model()
    val = two_regions(12, WORDS[4:16], start=40)
    opts = {"budget": 6, "num_samples": 8, "n_experts": 10, "verbose": False, **kw}
    mop = MoP(model, CharEmbedder(), **opts).fit(two_regions(), val)
    return mop, model


def test_kauto_picks_two_regions_and_rbjs_gives_each_its_rule():
    mop, model = fit_two_regions()
    assert mop.info["k"] == 2 and len(mop.experts) == 2
    number_expert = mop.route("123")
    assert {mop.route(q) for q in ["7", "58", "904", "31"]} == {number_expert}  # held-out inputs
    assert {mop.route(q) for q in ["zebra", "violin", "anchor"]} == {1 - number_expert}
    assert "double" in mop.experts[number_expert].instruction
    assert "reverse" in mop.experts[1 - number_expert].instruction
    assert all(x.isdigit() for x, _ in mop.experts[number_expert].demos)
    assert mop.predict(["7", "zebra"]) == ["14", "arbez"]


def test_projected_calls_equal_the_actual_calls():
    mop, model = fit_two_regions()
    sent = sum(len(batch) for batch in model.asked)
    projected = mop.info["projected_calls"]
    assert mop.info["calls"] == projected and sent == projected["generation"] + projected["scoring"]
    # 6 proposals; 6 candidates x 8 items alone; 2 experts x (4 + empty) candidates x 8 items
    assert projected == {"generation": 6, "scoring": 6 * 8 + 2 * 5 * 8}
    assert [len(batch) for batch in model.asked] == [6, 48, 80]  # one batched call per step


def test_projection_is_printed_before_the_first_model_call(capsys):
    inner, printed = rule_model().script, []

    def script(prompt):
        printed.append(capsys.readouterr().out)
        return inner(prompt)

    MoP(ScriptedModel(script), CharEmbedder(), budget=2, num_samples=4).fit(two_regions(), two_regions(4, WORDS[:4]))
    assert "2 experts; projected model calls: 2 generation + 32 scoring" in printed[0]  # 2x4 + 2x3x4


def test_demo_caps_subsample_large_clusters_and_tile_small_ones():
    rng = np.random.default_rng(0)
    keep, trimmed = M.cap_demos(list(range(10, 17)), 3, rng)
    assert len(keep) == 3 and sorted(keep + trimmed) == list(range(10, 17)) and not set(keep) & set(trimmed)
    assert M.cap_demos([4, 9], 5, rng) == ([4, 9, 4, 9, 4], [])
    # 30 numbers and 6 words, N_max = 6: every expert gets floor(36 / 6) = 6 demos
    a = MoP(rule_model(), CharEmbedder(), n_experts=6, verbose=False).assign(two_regions(30, WORDS[:6]))
    assert a["k"] == 2 and a["cap"] == 6 and [len(d) for d in a["demos"]] == [6, 6]
    assert len(a["trimmed"]) == 24 and all(x.isdigit() for x, _ in a["trimmed"])
    words = next(d for d in a["demos"] if d[0][0].isalpha())
    assert sorted(set(words)) == sorted((w, w[::-1]) for w in WORDS[:6])


def test_compensate_pools_show_each_expert_what_its_own_demos_miss():
    mop, model = fit_two_regions()
    pairs = [set(re.findall(r"^Input: (.*)\nOutput: (.*)$", p, re.M)) for p in model.asked[0]]
    assert all(len(p) == 5 for p in pairs)
    own = [set(e.demos) for e in mop.experts]
    # proposals 0-2 are expert 0's, 3-5 expert 1's: never from the expert's own demos, and trimmed ones appear
    assert not any(p & own[0] for p in pairs[:3]) and not any(p & own[1] for p in pairs[3:])
    assert set().union(*pairs) - own[0] - own[1]


def test_padding_adds_the_nearest_items_by_cosine():
    emb = np.array([[1, 0], [0.9, 0.1], [0, 1], [0.6, 0.8], [-1, 0]], dtype=float)
    emb /= np.linalg.norm(emb, axis=1, keepdims=True)
    assert M.nearest(emb, np.array([1.0, 0.0]), [2], 3) == [2, 0, 1]
    assert M.nearest(emb, np.array([0.0, 2.0]), [4, 0, 1], 2) == [4, 0]  # cut to n
    assert M.nearest(emb, np.array([0.0, 1.0]), [], 9) == [2, 3, 1, 0, 4]


def test_an_expert_with_few_routed_items_is_scored_on_its_nearest_neighbours():
    mop, model = fit_two_regions(budget=2, num_samples=10)
    assert mop.info["routed_val"] == [12, 12]
    mop, model = fit_two_regions(budget=2, num_samples=20)
    assert len(model.asked[-1]) == 2 * 3 * 20  # 12 routed + 8 padded per expert, with 2 candidates + empty


def test_json_round_trip_keeps_experts_and_routing(tmp_path):
    mop, model = fit_two_regions()
    path = mop.save(tmp_path / "mop.json")
    same = MoPModel.load(path, model=model, embedder=CharEmbedder())
    assert same.experts == mop.experts and same.to_json() == mop.to_json()
    queries = ["5", "77", "zebra", "violin"]
    assert [same.prompt(q) for q in queries] == [mop.prompt(q) for q in queries]
    assert same.predict(queries) == mop.predict(queries)
    with pytest.raises(TrustlabError, match="embedder"):
        MoPModel.load(path).route("5")  # centroids live in char-classes space, not MiniLM's
    with pytest.raises(TrustlabError, match="format"):
        MoPModel.from_json({"experts": []})
    with pytest.raises(TrustlabError, match="model handle"):
        MoPModel.load(path, embedder=CharEmbedder()).predict(["5"])


def test_describe_prints_experts_demos_and_instructions():
    mop, _ = fit_two_regions()
    text = str(mop)
    assert text.startswith("MoP: 2 expert(s), embedder char-classes, 6 generation + 128 scoring calls")
    assert "Expert 0: 4 demos" in text and "instruction: double the number" in text
    assert "instruction: reverse the word" in text and "demo: " in text


def test_the_prompt_format():
    assert M.render_prompt("Double it.", [("2", "4"), ("5", "10")], "7") == (
        "Instruction: Double it.\n\nInput: 2\nOutput: 4\n\nInput: 5\nOutput: 10\n\nInput: 7\nOutput:")
    assert M.render_prompt("", [], "7") == "Input: 7\nOutput:"


@pytest.mark.parametrize("text, reason", [
    ("", "empty"), ("  \n\n", "empty"), ("..", "fragment"), ("Input: 3 Output: 6", "echoes the prompt format"),
    ("apple", "echoes the demos"), ("Input: apple", "echoes the prompt format"),
    ("3 6 5 10 and so on", "echoes the demos"), ("turn each input below into the output next to it.",
                                                 "echoes the prompt format"), ("It maps 5 10 apple elppa", "echoes the demos"),
])
def test_proposals_that_are_not_instructions_are_invalid(text, reason):
    demos = [("3", "6"), ("5", "10"), ("apple", "elppa")]
    assert M.clean_proposal(text, demos) == (None, reason)


def test_clean_proposal_keeps_the_first_line():
    assert M.clean_proposal(' "double the number"\nInput: 3', [("3", "6")]) == ("double the number", None)


def test_invalid_proposals_are_counted_and_never_scored():
    model = ScriptedModel(lambda p: "Input: 3\nOutput: 6" if p.startswith("I gave") else "0")
    mop, _ = fit_two_regions(model)
    assert mop.info["validity"] == {"valid": 0, "invalid": 6, "valid_rate": 0.0,
                                    "invalid_reasons": {"echoes the prompt format": 6}}
    assert mop.info["candidates"] == [] and {e.instruction for e in mop.experts} == {""}
    assert mop.info["calls"]["scoring"] == 2 * 8 < mop.info["projected_calls"]["scoring"]


def test_bad_input_is_refused_with_clear_errors():
    model = rule_model()
    with pytest.raises(EmptyInputError, match="trainset has 0"):
        compile([], two_regions(), model=model, embedder=CharEmbedder())
    with pytest.raises(EmptyInputError, match="at least 2"):
        compile([("1", "2")], two_regions(), model=model, embedder=CharEmbedder())
    with pytest.raises(EmptyInputError, match="valset has 0"):
        compile(two_regions(), [], model=model, embedder=CharEmbedder())
    with pytest.raises(M.ExamplesError, match=r"trainset\[1\]"):
        compile([("1", "2"), ("3", "")], two_regions(), model=model, embedder=CharEmbedder())
    with pytest.raises(ValueError, match="budget"):
        compile(two_regions(), two_regions(), model=model, embedder=CharEmbedder(), budget=0)
    assert model.asked == []
    assert M.as_examples([{"input": " a ", "output": "b", "source": "x"}], "d") == [("a", "b")]


def test_identical_inputs_give_one_expert():
    k, labels, cents, scores = M.kauto(np.ones((5, 3)), 10)
    assert k == 1 and labels.tolist() == [0] * 5 and scores == {}


def test_kauto_without_scikit_learn_names_the_install(monkeypatch):
    import sys

    from trustlab.errors import MissingExtraError

    monkeypatch.setitem(sys.modules, "sklearn.cluster", None)
    with pytest.raises(MissingExtraError, match="scikit-learn"):
        M.kauto(np.eye(4), 3)


def test_exact_match_normalises_case_spacing_and_final_period():
    assert M.exact_match(" Apple,pear , fig. ", "apple, pear, fig") == 1.0
    assert M.exact_match('"14"', "14") == 1.0 and M.exact_match("14", "-14") == 0.0


@pytest.mark.parametrize("kind", BASELINES)
def test_baselines_at_a_matched_budget(kind):
    model = rule_model()
    train, val = two_regions(), two_regions(12, WORDS[4:16], start=40)
    base = fit_baseline(kind, train, val, model=model, budget=6, scoring_calls=128, num_samples=8,
                        embedder=CharEmbedder())
    assert len(base.experts) == 1 and base.route("5") == 0
    calls = base.info["calls"]
    assert sum(len(b) for b in model.asked) == calls["generation"] + calls["scoring"]
    if kind == "no-instruction":
        assert calls == {"generation": 0, "scoring": 0} and base.experts[0].instruction == ""
        return
    # 6 x 8 alone, then 5 candidates re-scored on min(24, (128 - 48) // 5 = 16) items
    assert calls == {"generation": 6, "scoring": 48 + 5 * 16} and base.info["rescore_items"] == 16
    assert len(base.experts[0].demos) == {"ape": 0, "ape-random": 4, "ape-kcen": 4}[kind]
    assert base.experts[0].instruction  # one of the rules wins on half the items
    if kind == "ape-kcen":  # k-centroid demos cover both regions
        assert {x.isdigit() for x, _ in base.experts[0].demos} == {True, False}
    # a budget beyond the whole eval set re-scores further candidates on all of it: 6 + empty on 24 items
    more = fit_baseline(kind, train, val, model=rule_model(), budget=6, scoring_calls=48 + 7 * 24, num_samples=8,
                        embedder=CharEmbedder())
    assert more.info["calls"]["scoring"] == 48 + 7 * 24 and len(more.info["shortlist"]) == 7


def test_a_shared_ape_search_gives_the_same_baselines_with_fewer_calls():
    train, val = two_regions(), two_regions(12, WORDS[4:16], start=40)
    alone = {k: fit_baseline(k, train, val, model=rule_model(), budget=6, scoring_calls=128, num_samples=8,
                             embedder=CharEmbedder()) for k in ("ape", "ape-random")}
    model = rule_model()
    search = ape_search(train, val, model=model, budget=6, num_samples=8)
    shared = {k: fit_baseline(k, train, val, model=model, budget=6, scoring_calls=128, num_samples=8,
                              embedder=CharEmbedder(), search=search) for k in ("ape", "ape-random")}
    for k in alone:
        assert shared[k].to_json() == alone[k].to_json()
    assert [len(b) for b in model.asked] == [6, 48, 80, 80]  # one search, then each variant's re-scoring


def test_mixed_tasks_are_disjoint_and_mixed():
    from trustlab.prompting.mop_tasks import TASKS, make_task

    for name in TASKS:
        task = make_task(name, n_pool=12, n_eval=6, n_test=6, seed=1)
        items = task.train + task.val + task.test
        assert len(items) == 24 and len({e["input"] for e in items}) == 24
        assert {e["source"] for e in items} == {c.generator for c in TASKS[name]}
        assert all(task.scorer(e["output"], e["output"]) == 1.0 for e in items)
    with pytest.raises(KeyError, match="arith-count-sort"):
        make_task("nope")


def test_mixed_task_answers_follow_the_rules():
    from trustlab.prompting.mop_tasks import make_task

    task = make_task("reverse-numsort", n_pool=20, n_eval=1, n_test=1)
    for e in task.train:
        if e["source"] == "spell_backward":
            assert e["output"] == e["input"][::-1]
        else:
            nums = [float(v) for v in e["output"].split(", ")]
            assert nums == sorted(float(v) for v in e["input"].split(", "))


def test_a_jsonl_task_is_shuffled_and_split(tmp_path):
    import json

    from trustlab.errors import DataFileError
    from trustlab.prompting.mop_tasks import load_task

    path = tmp_path / "task.jsonl"
    rows = [{"input": str(n), "output": str(2 * n)} for n in range(20)]
    path.write_text("\n".join(json.dumps(r) for r in rows))  # no final newline: the last row still counts
    task = load_task(path, n_pool=100, n_eval=100, n_test=100, seed=3)
    assert (len(task.train), len(task.val), len(task.test)) == (8, 8, 4) and task.name == "task"
    assert sorted(e["input"] for e in task.train + task.val + task.test) == sorted(r["input"] for r in rows)
    assert load_task("sum-wordrev", n_pool=4, n_eval=2, n_test=2).name == "sum-wordrev"
    path.write_text('{"input": "1", "output": "2"}\nnot json\n')
    with pytest.raises(DataFileError, match="line 2"):
        load_task(path)
    path.write_text('{"input": "1", "output": "2"}\n{"input": "1"}\n[1, 2]\n')
    with pytest.raises(M.ExamplesError, match=r"\[1\]"):
        load_task(path)
    path.write_text('{"input": "1", "output": "2"}\n["3", "6"]\n')
    with pytest.raises(EmptyInputError, match="at least 3"):
        load_task(path)


@pytest.mark.slow
def test_mop_on_smollm2_and_minilm(smollm):
    from trustlab.prompting.mop_tasks import make_task

    task = make_task("reverse-numsort", n_pool=12, n_eval=6, n_test=4, seed=0)
    mop = compile(task.train, task.val, model=smollm, budget=2, n_experts=3, num_samples=3,
                  gen_max_new_tokens=20, answer_max_new_tokens=12, verbose=False)
    k = mop.info["k"]
    assert 2 <= k <= 3 and mop.embedder_id == M.MINILM_ID
    projected, calls = mop.info["projected_calls"], mop.info["calls"]
    assert calls["generation"] == 2 and calls["scoring"] <= projected["scoring"]
    assert mop.info["validity"]["valid"] + mop.info["validity"]["invalid"] == 2
    # MiniLM separates words from number lists: each expert's demos come from one generator
    source = {e["input"]: e["source"] for e in task.train}
    assert all(len({source[x] for x, _ in e.demos}) == 1 for e in mop.experts)
    answers = mop.predict([e["input"] for e in task.test])
    assert len(answers) == 4 and all(isinstance(a, str) for a in answers)
    again = MoPModel.from_json(mop.to_json(), model=smollm)
    assert [again.route(e["input"]) for e in task.test] == [mop.route(e["input"]) for e in task.test]


def mixed_task_model(answers_right=True):
    """Proposes one instruction; answers a mixed-task query right only with an instruction and a demo from
    the query's own generator in the prompt (so region-matched demos matter); or answers nothing at all."""
    from trustlab.prompting.mop_tasks import TASKS, make_task
    from trustlab.reproduce.mixture_of_prompts import QUICK

    items = {}
    for name in TASKS:
        task = make_task(name, n_pool=QUICK["n_pool"], n_eval=QUICK["n_eval"], n_test=QUICK["n_test"], seed=0)
        items.update({e["input"]: e for e in task.train + task.val + task.test})

    def script(prompt: str) -> str:
        if not answers_right:
            return ""
        if prompt.startswith("I gave a friend"):
            return " apply the rule of the examples"
        *demos, query = re.findall(r"^Input: (.*)$", prompt, re.M)
        same = any(items[d]["source"] == items[query]["source"] for d in demos)
        return " " + (items[query]["output"] if same and prompt.startswith("Instruction:") else "0")

    return ScriptedModel(script)


@pytest.fixture
def char_minilm(monkeypatch):
    """The reproduction's MiniLM replaced by the character-class embedder (no weights, fast)."""
    import trustlab.models.embedded as embedded

    monkeypatch.setattr(embedded, "load_sentence_encoder", lambda device="cpu": CharEmbedder())


def test_reproduction_claims_checkpoints_and_resume(tmp_path, char_minilm):
    from trustlab.report import read_summary
    from trustlab.reproduce.mixture_of_prompts import ARMS, run

    model = mixed_task_model()
    claims = run(tmp_path, quick=True, model=model)
    assert len(claims) == 5 and claims[0].baseline_name in ("ape", "ape-random", "ape-kcen")
    by = {c.baseline_name: c for c in claims[1:]}
    assert all(c.n == 3 * 6 and c.measurable and c.valid_rate == 1.0 and c.setup["quick"] for c in claims)
    assert by["ape"].baseline == 0.0 and by["ape"].ours > 0 and by["ape"].reproduced  # APE shows no demos
    assert by["no-instruction"].baseline == 0.0 and by["no-instruction"].reproduced
    assert by["ape"].ci[0] <= by["ape"].ours - by["ape"].baseline <= by["ape"].ci[1]
    assert (tmp_path / "mop_accuracy.png").exists() and (tmp_path / "details.json").exists()
    assert len(read_summary(tmp_path / "summary.json")) == 5
    rows = [line for line in (tmp_path / "samples.jsonl").read_text().splitlines()]
    assert len(rows) == 3 * (len(ARMS) + 1)  # 5 arms + the shared APE search per task
    asked = len(model.asked)
    assert [c.to_dict() for c in run(tmp_path, quick=True, model=model)] == [c.to_dict() for c in claims]
    assert len(model.asked) == asked  # resumed: no model call
    (tmp_path / "samples.jsonl").write_text("\n".join(rows[:-2]) + "\n")  # lose the last task's last two arms
    again = run(tmp_path, quick=True, model=model)
    assert [c.to_dict() for c in again] == [c.to_dict() for c in claims]
    assert [len(b) for b in model.asked[asked:]] == [2 * 6, 6, 6]  # ape-kcen: re-score 1 + empty on 6, test; bare: test


def test_reproduction_without_valid_outputs_is_not_measurable(tmp_path, char_minilm):
    from trustlab.reproduce.mixture_of_prompts import run

    claims = run(tmp_path, quick=True, model=mixed_task_model(answers_right=False))
    assert all(not c.measurable and not c.reproduced and c.verdict == "not measurable" for c in claims)
    assert all(c.valid_rate == 0.0 and "valid data" in c.note and "below 5%" in c.note for c in claims)
