"""The backtranslation reproduction's pass rules: each claim's condition, gated by the pre-check."""

from __future__ import annotations

from trustlab.reproduce.backtranslation import make_claims


def details(precheck_ok: bool, asr=(0.8, 0.5), benign=(0.0, 0.04, 0.08)):
    arm = lambda a, b: {"asr_keyword": a, "benign_refusal_keyword": b, "asr_judge": a}  # noqa: E731
    return {"precheck": {"refusal_rate_plain_goals_keyword": 0.9 if precheck_ok else 0.1, "passes": precheck_ok},
            "arms": {"none": arm(asr[0], benign[0]), "backtranslation": arm(asr[1], benign[1]),
                     "backtranslation_no_filter": arm(asr[1], benign[2])},
            "detectors": [{"fnr": 0.4}, {"fnr": 0.9}], "setup": {"model": "m"}}


def test_claims_follow_the_spec_conditions():
    assert [c.reproduced for c in make_claims(details(True))] == [True, True, True]
    assert [c.reproduced for c in make_claims(details(True, asr=(0.8, 0.75), benign=(0.0, 0.1, 0.1)))] == [
        False, False, False]


def test_failed_precheck_reproduces_nothing_and_says_why():
    claims = make_claims(details(False))
    assert [c.reproduced for c in claims] == [False, False, False]
    assert all("pre-check failed" in c.note for c in claims)
