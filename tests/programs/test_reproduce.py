"""The LSP reproduction end to end on deterministic handles (quick sizes): rows, claims, resume."""

from __future__ import annotations

import json

from tests.programs.helpers import DataLearner, RuleModel
from trustlab.reproduce.lsp import FLOOR_MARGIN, make_claims, run


def test_quick_run_writes_claims_and_resumes(tmp_path):
    model, learner, moved = RuleModel(), DataLearner(), RuleModel()
    claims = run(tmp_path, quick=True, model=model, learner_model=learner, transfer_model=moved)
    assert [c.verdict for c in claims] and len(claims) == 2  # depth 2, and transfer
    main, transfer = claims
    assert main.n == 8 and main.ci is not None and main.valid_rate is not None
    assert main.setup["quick"] is True and main.setup["roles"]["learner"] == "data-learner"
    rows = [json.loads(line) for line in (tmp_path / "samples.jsonl").read_text().splitlines()]
    assert {r["arm"] for r in rows} == {"floor", "tree", "lsp", "rulesum", "ape", "mop"}
    lsp = next(r for r in rows if r["arm"] == "lsp")
    assert lsp["transfer"]["model"] == "rule-evaluator" and len(lsp["transfer"]["correct"]) == 8
    assert lsp["curve"][0]["nodes"] == 1 and lsp["learning_calls"] > 0
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert [c["claim"] for c in summary] == [c.claim for c in claims]
    assert (tmp_path / "lsp_accuracy.png").exists() and (tmp_path / "details.json").exists()
    # a second run resumes: no new rows, no new model calls
    n_calls = (len(model.prompts), len(learner.seen))
    again = run(tmp_path, quick=True, model=model, learner_model=learner, transfer_model=moved)
    assert (len(model.prompts), len(learner.seen)) == n_calls
    assert len((tmp_path / "samples.jsonl").read_text().splitlines()) == len(rows)
    assert [c.to_dict() for c in again] == [c.to_dict() for c in claims]


def test_every_arm_at_floor_is_not_measurable():
    arm = {"accuracy": 0.5, "correct": [1.0, 0.0] * 5, "learning_calls": 10.0, "validity": {"valid": 9, "invalid": 1}}
    floor = {**arm, "validity": {"valid": 0, "invalid": 0}}
    details = {"setup": {"model": "m", "quick": False, "seed": 0},
               "depths": {"2": {"seeds": [0], "arms": {"lsp": arm, "rulesum": arm, "ape": arm, "floor": floor,
                                                      "tree": floor},
                                "nodes_curve": [0.5, 0.5 + FLOOR_MARGIN / 2], "n_nodes": [2], "transfer": None}}}
    (claim,) = make_claims(details)
    assert claim.measurable is False and claim.verdict == "not measurable" and "floor" in claim.note
    details["depths"]["2"]["arms"]["lsp"] = {**arm, "accuracy": 0.8, "correct": [1.0] * 8 + [0.0] * 2}
    details["depths"]["2"]["nodes_curve"] = [0.5, 0.8]
    (claim,) = make_claims(details)
    assert claim.measurable and claim.reproduced and claim.ci[1] > 0
