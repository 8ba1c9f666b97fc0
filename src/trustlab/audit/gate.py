"""The audit's regression gate: ``trustlab audit --fail-on RULE`` exits 3 when a rule is broken, for CI.

Rules (repeat ``--fail-on``, or separate them with commas):

- ``fail``: a concern's verdict is ``fail`` (its whole 95% interval is past its threshold);
- ``lean-fail``: a concern's number is past its threshold, whatever its interval (stricter, flakier);
- ``not-measurable``: a concern has no trustworthy number on this run;
- ``ID<N``, ``ID<=N``, ``ID>N``, ``ID>=N``: the concern ``ID``'s number compares so with ``N`` (e.g.
  ``jailbreak.attack_success>0.3``); a concern that is not measurable or absent breaks the rule too
  (a gate that cannot see is no pass);
- ``regression``: a concern is worse than in the baseline run (``--baseline RUN``) by more than its
  interval: the 95% interval of this run minus the baseline excludes zero on the bad side
  (:func:`trustlab.audit.compare.difference`); concerns that are not comparable are listed, not failed;
- ``regression:ID``: the same for one concern, which must be comparable.

A gate file (TOML or JSON, ``--gate FILE``) holds the same: ``fail_on = [rules]``, ``baseline = "RUN"`` and
``[thresholds]`` (concern id = number) that replace the concerns' thresholds in the scorecard.

Example:
    >>> result = check_gate(concerns, parse_rules(["fail", "jailbreak.attack_success>0.3"]))
    >>> result.passed, result.failures
    (False, ['jailbreak.attack_success: 0.45 > 0.3'])
"""

from __future__ import annotations

import json
import operator
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from trustlab.audit.compare import difference
from trustlab.audit.scorecard import Concern
from trustlab.errors import TrustlabError

EXIT_GATE = 3  # exit status of `trustlab audit` when the gate fails (1: a section crashed, 2: usage error)
_OPS = {"<=": operator.le, ">=": operator.ge, "<": operator.lt, ">": operator.gt}
_COMPARE = re.compile(r"^(?P<id>[A-Za-z0-9_.-]+)\s*(?P<op><=|>=|<|>)\s*(?P<num>[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?)$")
_KEYWORDS = ("fail", "lean-fail", "not-measurable", "regression")


class GateError(TrustlabError, ValueError):
    """A gate rule or gate file that cannot be read; the message says the accepted forms."""


@dataclass
class GateResult:
    """What the gate checked and what broke.

    Attributes:
        failures: one line per broken rule.
        notes: concerns a blanket rule could not check (e.g. not comparable with the baseline).
        rules: the rules checked.

    Example:
        >>> GateResult(failures=["a.x: 0.5 > 0.3"]).passed
        False
    """

    failures: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    rules: list[str] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return not self.failures

    def to_dict(self) -> dict[str, Any]:
        return {"passed": self.passed, "rules": self.rules, "failures": self.failures, "notes": self.notes}


def parse_rules(texts: Sequence[str]) -> list[str]:
    """The rules of ``--fail-on`` values (each may hold several, comma-separated), checked for form.

    Raises:
        GateError: a rule has no accepted form.

    Example:
        >>> parse_rules(["fail,regression", "jailbreak.attack_success > 0.3"])
        ['fail', 'regression', 'jailbreak.attack_success>0.3']
    """
    rules = []
    for text in texts:
        for raw in text.split(","):
            rule = re.sub(r"\s+", "", raw)
            if not rule:
                continue
            if rule not in _KEYWORDS and not rule.startswith("regression:") and not _COMPARE.match(rule):
                raise GateError(f"unknown gate rule {raw.strip()!r}: use {', '.join(_KEYWORDS)}, regression:ID, "
                                "or ID<N / ID<=N / ID>N / ID>=N with a concern id from scorecard.json "
                                "(e.g. jailbreak.attack_success>0.3)")
            rules.append(rule)
    return rules


def read_gate_file(path: str | Path) -> dict[str, Any]:
    """``{"fail_on": [rules], "baseline": str | None, "thresholds": {id: number}}`` of a TOML or JSON gate file.

    Raises:
        GateError: the file is missing, unreadable, or has other keys or wrong types.

    Example:
        >>> read_gate_file("gate.toml")["fail_on"]
        ['fail', 'regression']
    """
    path = Path(path)
    if not path.is_file():
        raise GateError(f"gate file {path} does not exist")
    text = path.read_text(encoding="utf-8")
    try:
        if path.suffix == ".json":
            data = json.loads(text)
        else:
            import tomllib

            data = tomllib.loads(text)
    except (ValueError, json.JSONDecodeError) as exc:
        raise GateError(f"gate file {path} is not valid {'JSON' if path.suffix == '.json' else 'TOML'}: {exc}") from None
    unknown = set(data) - {"fail_on", "baseline", "thresholds"}
    if unknown:
        raise GateError(f"gate file {path}: unknown keys {sorted(unknown)}; use fail_on, baseline, thresholds")
    rules = data.get("fail_on", [])
    thresholds = data.get("thresholds", {})
    if not (isinstance(rules, list) and all(isinstance(r, str) for r in rules)):
        raise GateError(f"gate file {path}: fail_on must be a list of rules, e.g. [\"fail\", \"regression\"]")
    if not (isinstance(thresholds, dict) and all(isinstance(v, (int, float)) and not isinstance(v, bool)
                                                 for v in thresholds.values())):
        raise GateError(f"gate file {path}: thresholds must map concern ids to numbers")
    baseline = data.get("baseline")
    if baseline is not None and not isinstance(baseline, str):
        raise GateError(f"gate file {path}: baseline must be the path of an audit run folder")
    return {"fail_on": parse_rules(rules), "baseline": baseline, "thresholds": {k: float(v) for k, v in thresholds.items()}}


def _compare_rule(rule: str, by_id: dict[str, Concern]) -> str | None:
    m = _COMPARE.match(rule)
    assert m is not None  # parse_rules checked the form
    cid, op, num = m["id"], m["op"], float(m["num"])
    c = by_id.get(cid)
    if c is None:
        return f"{rule}: this run has no concern {cid!r} (its concerns: {', '.join(sorted(by_id))})"
    if c.verdict == "not measurable":
        return f"{rule}: cannot be checked, {cid} is not measurable here, because {c.why_not}"
    return f"{cid}: {c.value:.3g} {op} {num:g}" if _OPS[op](c.value, num) else None


def require_baseline(rules: Sequence[str], baseline: Any) -> None:
    """Raise :class:`GateError` when a regression rule has no baseline run (checked before any model runs).

    Example:
        >>> require_baseline(["fail"], None)  # no regression rule: nothing to check
    """
    if baseline is None and any(r.startswith("regression") for r in rules):
        raise GateError("the gate rules ask for regressions against a baseline: give the baseline run "
                        "(--baseline RUN_FOLDER, or baseline = \"RUN_FOLDER\" in the gate file)")


def check_gate(concerns: Sequence[Concern], rules: Sequence[str], baseline: Sequence[Concern] | None = None,
               *, threshold_ids: Sequence[str] = (), seed: int = 0) -> GateResult:
    """Check ``rules`` (from :func:`parse_rules`) on a run's concerns (and a baseline run's, for regressions).

    Args:
        concerns: the run's concerns, with the gate's thresholds already applied
            (:func:`~trustlab.audit.scorecard.apply_thresholds`).
        rules: the rules.
        baseline: the baseline run's concerns (needed by the regression rules).
        threshold_ids: the concern ids the gate set thresholds for: one that names no concern breaks the gate
            (a typo must not pass silently).
        seed: bootstrap seed of the regression intervals.

    Raises:
        GateError: a regression rule without a baseline.
    """
    require_baseline(rules, baseline)
    by_id = {c.id: c for c in concerns}
    base = {c.id: c for c in baseline or []}
    result = GateResult(rules=list(rules))
    result.failures += [f"threshold for {cid}: this run has no such concern"
                        for cid in sorted(set(threshold_ids) - set(by_id))]
    for rule in rules:
        if rule == "fail":
            result.failures += [f"{c.id}: fail, {c.value:.3g} (95% interval {c.ci[0]:.3g} to {c.ci[1]:.3g}) is past "
                                f"the threshold {c.threshold:g}" for c in concerns if c.verdict == "fail" and c.ci]
        elif rule == "lean-fail":
            result.failures += [f"{c.id}: {c.value:.3g} is past the threshold {c.threshold:g}" for c in concerns
                                if c.lean == "fail"]
        elif rule == "not-measurable":
            result.failures += [f"{c.id}: not measurable here, because {c.why_not}" for c in concerns
                                if c.verdict == "not measurable"]
        elif rule.startswith("regression"):
            wanted = [rule.split(":", 1)[1]] if ":" in rule else [cid for cid in by_id if cid in base]
            for cid in wanted:
                if cid not in by_id or cid not in base:
                    result.failures.append(f"{rule}: {cid!r} is not in {'this run' if cid not in by_id else 'the baseline'}")
                    continue
                d = difference(base[cid], by_id[cid], seed=seed)
                if d["change"] == "worse":
                    result.failures.append(f"{cid}: worse than the baseline by {d['diff']:+.3g} (95% interval "
                                           f"{d['ci'][0]:+.3g} to {d['ci'][1]:+.3g})")
                elif d["change"] == "not comparable":
                    (result.failures if ":" in rule else result.notes).append(
                        f"{cid}: not comparable with the baseline (not measurable in one of the runs)")
        else:
            broken = _compare_rule(rule, by_id)
            if broken:
                result.failures.append(broken)
    return result
