"""The backtranslation reproduction's pass rules: each claim's condition, gated by the pre-check and by
the share of backtranslations that named a real request."""

from __future__ import annotations

from trustlab.reproduce.backtranslation import make_claims


def details(precheck_ok: bool, asr=(0.8, 0.5), benign=(0.0, 0.04, 0.08), valid=(10, 10), n=50):
    arm = lambda a, b: {"asr_keyword": a, "benign_refusal_keyword": b, "asr_judge": a}  # noqa: E731
    refused = lambda rate: [i < round(rate * n) for i in range(n)]  # noqa: E731
    names = ("none", "backtranslation", "backtranslation_no_filter")
    validity = {kind: {"valid": v, "invalid": 10 - v, "valid_rate": v / 10,
                       "invalid_reasons": {"copies the worked example": 10 - v} if v < 10 else {}}
                for kind, v in zip(("attack", "benign"), valid, strict=True)}
    return {"precheck": {"refusal_rate_plain_goals_keyword": 0.9 if precheck_ok else 0.1, "passes": precheck_ok},
            "arms": {"none": arm(asr[0], benign[0]), "backtranslation": arm(asr[1], benign[1]),
                     "backtranslation_no_filter": arm(asr[1], benign[2])},
            "per_prompt": {"attack": {a: refused(1 - r) for a, r in zip(names, (asr[0], asr[1], asr[1]), strict=True)},
                           "benign": {a: refused(r) for a, r in zip(names, benign, strict=True)}},
            "validity": validity, "detectors": [{"fnr": 0.4}, {"fnr": 0.9}], "setup": {"model": "m", "quick": False}}


def test_claims_follow_the_spec_conditions():
    claims = make_claims(details(True))
    assert [c.reproduced for c in claims] == [True, True, True] and all(c.measurable for c in claims)
    assert [c.n for c in claims] == [50, 50, 50]
    lo, hi = claims[0].ci
    assert lo <= -0.3 + 1e-9 <= hi and hi < 0  # ASR 0.5 - 0.8, paired over the 50 attack prompts
    assert [c.valid_rate for c in claims] == [1.0, 1.0, 1.0]
    assert [c.reproduced for c in make_claims(details(True, asr=(0.8, 0.75), benign=(0.0, 0.1, 0.1)))] == [
        False, False, False]


def test_failed_precheck_makes_every_claim_not_measurable_and_says_why():
    claims = make_claims(details(False))
    assert [(c.reproduced, c.measurable) for c in claims] == [(False, False)] * 3
    assert all("pre-check failed" in c.note and c.to_dict()["verdict"] == "not measurable" for c in claims)


def test_few_valid_backtranslations_make_a_claim_not_measurable():
    claims = make_claims(details(True, valid=(4, 10)))  # 4 of 10 attack backtranslations named a request
    assert [c.measurable for c in claims] == [False, True, True]
    assert claims[0].valid_rate == 0.4 and "4 of 10 backtranslations" in claims[0].note
    assert "copies the worked example" in claims[0].note
