"""Deterministic model handles for LSP's parsing and control-flow tests (real ``ModelHandle`` subclasses:
they go through ``generate``'s checks like any backend).

- :class:`RuleModel` is a module "LLM" that *evaluates* the rule in a module prompt: lines
  ``If the <attr> is <value>, the label is <label>.`` are tried in order, ``Otherwise, the label is <label>.``
  ends them. A rule containing ``GARBLE`` gets an answer that names no label; a prompt that is not a module
  prompt (APE's, MoP's) gets an empty answer.
- :class:`DataLearner` is a learner "LLM" that reads the examples of a RuleSum prompt and writes the best
  single test ``If the A is V, the label is L1. Otherwise, the label is L2.``; ``bad`` outputs come first.
"""

from __future__ import annotations

import re
from collections import Counter

from trustlab.models.base import Capabilities, Generation, ModelHandle

_IF = re.compile(r"If the (\w+) is (\w+), the label is (\w+)\.")
_ELSE = re.compile(r"Otherwise, the label is (\w+)\.")


def attrs_of(description: str) -> dict[str, str]:
    return dict(re.findall(r"(?:The|its) (\w+) is (\w+)", description))


def apply_rule(rule: str, description: str) -> str | None:
    attrs = attrs_of(description)
    for line in rule.splitlines():
        if (m := _IF.search(line)) and attrs.get(m.group(1)) == m.group(2):
            return m.group(3)
        if m := _ELSE.search(line):
            return m.group(1)
    return None


class RuleModel(ModelHandle):
    """Applies the rule of each module prompt to its description (see the module docstring)."""

    name = "rule-evaluator"
    capabilities = Capabilities("test", chat_template=False)

    def __init__(self):
        self.prompts: list[str] = []

    def _generate(self, prompts, cfg, chat_template):
        out = []
        for p in prompts:
            self.prompts.append(p)
            rule, desc = re.search(r"Rule:\n(.*?)\n\n", p, re.S), re.search(r"Description: (.*)", p)
            if rule is None or desc is None:  # not a module prompt (an APE/MoP prompt): no answer
                out.append([Generation("") for _ in range(cfg.n)])
                continue
            label = apply_rule(rule.group(1), desc.group(1))
            text = "I am not sure." if "GARBLE" in rule.group(1) or label is None else f"The label is {label}."
            out.append([Generation(text) for _ in range(cfg.n)])
        return out


def best_split(examples: list[tuple[str, str]]) -> str:
    """The single-test rule with the highest accuracy on ``examples`` (ties: first found)."""
    best, best_acc = None, -1.0
    candidates = sorted({(a, v) for x, _ in examples for a, v in attrs_of(x).items()})
    for a, v in candidates:
        yes = [y for x, y in examples if attrs_of(x)[a] == v]
        no = [y for x, y in examples if attrs_of(x)[a] != v]
        if not yes or not no:
            continue
        ly, ln = Counter(yes).most_common(1)[0][0], Counter(no).most_common(1)[0][0]
        acc = (yes.count(ly) + no.count(ln)) / len(examples)
        if acc > best_acc:
            best, best_acc = f"If the {a} is {v}, the label is {ly}.\nOtherwise, the label is {ln}.", acc
    if best is None:
        best = f"Otherwise, the label is {Counter(y for _, y in examples).most_common(1)[0][0]}."
    return best


class DataLearner(ModelHandle):
    """Writes the best single-test rule for the examples in each RuleSum prompt; ``bad`` texts first."""

    name = "data-learner"
    capabilities = Capabilities("test", chat_template=False)

    def __init__(self, bad: list[str] | None = None):
        self.bad = list(bad or [])
        self.seen: list[list[tuple[str, str]]] = []

    def _generate(self, prompts, cfg, chat_template):
        out = []
        for p in prompts:
            examples = re.findall(r"Description: (.*)\nLabel: (.*)", p)
            self.seen.append(examples)
            text = self.bad.pop(0) if self.bad else best_split(examples)
            out.append([Generation(text) for _ in range(cfg.n)])
        return out
