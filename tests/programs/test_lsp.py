"""LSP learning, programs and answer mapping with deterministic rule-evaluating handles (no weights)."""

from __future__ import annotations

import numpy as np
import pytest

from tests.programs.helpers import DataLearner, RuleModel
from trustlab.bench.ilbench import make_syntree
from trustlab.errors import EmptyInputError
from trustlab.programs import LSP, LabelError, Program, map_answer
from trustlab.programs.lsp import pick_node, slot_errors
from trustlab.programs.outputs import clean_rule
from trustlab.programs.program import LSPNode, ProgramFormatError, route


@pytest.fixture(scope="module")
def task():
    return make_syntree(depth=2, n_train=120, n_test=60, seed=3)


def xy(rows):
    return [r["input"] for r in rows], [r["label"] for r in rows]


@pytest.fixture(scope="module")
def fitted(task):
    learner = DataLearner()
    program = LSP(RuleModel(), learner, max_nodes=6, n_rule_samples=2, rulesum_batch=200).fit(*xy(task.train))
    return program, learner


def test_map_answer_routes():
    labels = ["zand", "murl", "pib"]
    assert map_answer("murl", labels) == ("murl", "exact")
    assert map_answer("Label: pib.", labels) == ("pib", "exact")
    assert map_answer("The label is ZAND.", labels) == ("zand", "substring")
    assert map_answer("pib, not murl", labels) == ("pib", "substring")  # the first one named
    assert map_answer("murlish", labels) == (None, "unmapped")  # whole words only
    assert map_answer("", labels) == (None, "unmapped")

    class Letters:  # bag-of-letters vectors: "zanda" is nearest to "zand"
        def encode(self, texts):
            return np.array([[t.count(c) for c in "abcdefghijklmnopqrstuvwxyz"] for t in texts], float)

    assert map_answer("zanda", labels, Letters()) == ("zand", "embedding")


def test_clean_rule_reasons():
    labels = ["zand", "murl"]
    assert clean_rule("If the glim is pim, the label is zand.\n\nDescription: x", labels)[0] == \
        "If the glim is pim, the label is zand."
    assert clean_rule("Rules:\n\nIf the glim is pim, the label is zand.\n\nOtherwise, murl.\nInput: x", labels)[0] == \
        "Rules:\nIf the glim is pim, the label is zand.\nOtherwise, murl."
    assert clean_rule("If the a is b, the label is zand.\nIf the a is b, the label is zand.", labels)[0] == \
        "If the a is b, the label is zand."
    assert clean_rule("   ", labels) == (None, "empty")
    assert clean_rule("1.", labels) == (None, "fragment")
    assert clean_rule("The rule is about colours.", labels) == (None, "names no label")
    assert clean_rule("The glim is zand.", labels, ["The glim is zand."]) == (None, "copies an example")


def test_fit_learns_the_tree_and_accuracy_never_drops(task, fitted):
    program, _ = fitted
    hist = [h["train_accuracy"] for h in program.info["history"]]
    assert all(b >= a for a, b in zip(hist, hist[1:], strict=False))
    assert program.n_nodes >= 2 and hist[-1] > hist[0]
    xs, ys = xy(task.test)
    preds = [p.label for p in program.predict_many(xs, model=RuleModel())]
    assert np.mean([p == y for p, y in zip(preds, ys, strict=True)]) >= 0.9  # a depth-2 tree: root + children
    # each prefix of the program is at least as accurate on the training set as the one before
    tx, ty = xy(task.train)
    accs = [np.mean([p.label == y for p, y in zip(program.prefix(k).predict_many(tx, model=RuleModel()), ty,
                                                   strict=True)]) for k in range(1, program.n_nodes + 1)]
    assert all(b >= a for a, b in zip(accs, accs[1:], strict=False)) and accs[-1] == hist[-1]


def test_children_see_only_their_subset(task, fitted):
    program, learner = fitted
    tx, _ = xy(task.train)
    traces = route(program.root, tx, program.runner(RuleModel()))
    assert [len(seen) for seen in learner.seen[:2]] == [len(tx)] * 2  # the root's two RuleSum calls: everything
    assert all(len(seen) < len(tx) for seen in learner.seen[2:])  # every later call: a subset
    children = [(p, a, c) for p, n in program.root.nodes() for a, c in n.children.items()]
    assert children
    for path, answer, child in children:
        subset = sorted(x for x, t in zip(tx, traces, strict=True)
                        if any(s["node"] == path and s["label"] == answer for s in t))
        assert child.info["n_examples"] == len(subset) < len(tx)
        if child.rule is not None:  # rulesum_batch 200: both of its calls saw exactly its subset
            assert sum(sorted(x for x, _ in seen) == subset for seen in learner.seen) == 2


def test_pick_node_targets_most_errors():
    traces = [[{"node": "root", "label": "a"}]] * 3 + [[{"node": "root", "label": "a"},
                                                         {"node": "root/a", "label": "b"}]] * 4
    ys = ["b", "b", "a", "a", "a", "a", "b"]
    slots, errors = slot_errors(traces, ys)
    assert errors == {("root", "a"): 2, ("root/a", "b"): 3}
    assert pick_node(list(slots), errors) == "root/a"
    assert pick_node([("root", "a"), ("root/a", "b")], {("root", "a"): 2, ("root/a", "b"): 2}) == "root"


def test_expansion_targets_node_with_most_errors(task):
    learner = DataLearner()
    program = LSP(RuleModel(), learner, max_nodes=3, max_width=1, n_rule_samples=1, rulesum_batch=200,
                  min_gain=0.0).fit(*xy(task.train))
    tx, ty = xy(task.train)
    for k, step in enumerate(program.info["history"][1:], start=1):
        before = program.prefix(k)
        slots, errors = slot_errors(route(before.root, tx, before.runner(RuleModel())), ty)
        worst = max({p for p, _ in slots}, key=lambda p: sum(e for s, e in errors.items() if s[0] == p))
        assert step["expanded"] == worst


def test_json_and_text_round_trip(task, fitted):
    program, _ = fitted
    again = Program.from_json(program.to_json())
    assert again.to_json() == program.to_json()
    text = program.to_text()
    parsed = Program.from_text(text)
    assert parsed.to_text() == text
    assert "when" in text and "| If the" in text
    xs, _ = xy(task.test[:20])
    assert [p.label for p in parsed.predict_many(xs, model=RuleModel())] == \
        [p.label for p in program.predict_many(xs, model=RuleModel())]
    with pytest.raises(ProgramFormatError):
        Program.from_text("not a program")
    with pytest.raises(ProgramFormatError):
        Program.from_json({"format": "other"})


def test_prediction_trace_follows_path(fitted, task):
    program, _ = fitted
    pred = program.predict(task.test[0]["input"], model=RuleModel())
    assert pred.trace[0]["node"] == "root" and pred.label == pred.trace[-1]["label"]
    for a, b in zip(pred.trace, pred.trace[1:], strict=False):
        assert b["node"] == f"{a['node']}/{a['label']}"


def test_learner_retries_and_valid_rate(task):
    bad = ["", "1.", "I cannot tell.", "Some words without labels"]
    learner = DataLearner(bad=list(bad))
    program = LSP(RuleModel(), learner, max_nodes=1, n_rule_samples=2, rule_retries=4).fit(*xy(task.train))
    rv = program.info["rule_validity"]
    assert rv["invalid"] == 4 and rv["valid"] == 2  # 2 first tries + 4 retries; the last 2 succeed
    assert rv["invalid_reasons"] == {"empty": 1, "fragment": 1, "names no label": 2}
    assert program.info["calls"]["learner"] == 6
    # no valid rule within the budget: a constant node, no crash
    program = LSP(RuleModel(), DataLearner(bad=[""] * 10), max_nodes=1, n_rule_samples=2,
                  rule_retries=1).fit(*xy(task.train))
    assert program.root.rule is None and program.info["rule_validity"]["valid_rate"] == 0.0
    assert program.root.info["why"] == "no valid rule was learned"


def test_module_retry_budget_and_counted_fallbacks(task):
    xs = list(dict.fromkeys(r["input"] for r in task.train))[:30]  # distinct inputs: the cache asks each once
    labels = task.labels
    node = LSPNode("GARBLE: If the x is y, the label is z.", labels, labels[0])
    program = Program(node, labels)
    runner = program.runner(RuleModel(), retry_budget=5)
    preds = program.predict_many(xs, runner=runner)
    assert runner.stats.retries == 5 and runner.calls == 30 + 5
    assert runner.stats.how["unmapped"] == 30 and runner.stats.validity().rate == 0.0
    assert all(p.label == labels[0] for p in preds)  # the node's default stands in
    again = program.predict_many(xs, runner=runner)  # cached: no new calls
    assert runner.calls == 35 and len(again) == 30


def test_bad_training_data():
    model = RuleModel()
    with pytest.raises(EmptyInputError):
        LSP(model).fit([], [])
    with pytest.raises(LabelError, match="at least two labels"):
        LSP(model).fit(["a", "b"], ["x", "x"])
    with pytest.raises(LabelError, match="one label per input"):
        LSP(model).fit(["a", "b"], ["x"])
    with pytest.raises(LabelError, match="one-line"):
        LSP(model).fit(["a", "b"], ["x | y", "z"])
    with pytest.raises(LabelError, match="not in the label list"):
        LSP(model, labels=["x", "y"]).fit(["a", "b"], ["x", "q"])
    with pytest.raises(EmptyInputError):
        LSP(model).fit(["a", " "], ["x", "y"])
