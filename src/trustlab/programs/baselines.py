"""Single-prompt baselines of LSP, from our own prompt-learning library, as label classifiers.

- ``rulesum``: one RuleSum node ([paper] the program at its first step): :class:`~trustlab.programs.lsp.LSP`
  with ``max_nodes = 1``; matched calls by giving it more rule candidates (``n_rule_samples``).
- ``ape``: APE, the best induced instruction (:func:`trustlab.prompting.mop_baselines.ape_search` and
  ``fit_baseline("ape")``), searched on the training set (demo pool and eval set alike: no test data).
- ``mop``: Mixture-of-Prompts (:func:`trustlab.prompting.mop.compile`), the same sets.

[derived] So that APE and MoP know the closed answer list as LSP's modules do, each item's input is
:data:`~trustlab.programs.prompts.SINGLE_PROMPT_INPUT` (the text plus "answer with one of: ..."), their
answers are mapped to a label by the same :func:`~trustlab.programs.outputs.map_answer` (the scorer of their
search too), and an unmapped answer stands for the majority training label, counted invalid, as an LSP
node's default does.

Example:
    >>> ape = fit_single_prompt("ape", xs, ys, model=llm, budget=8, num_samples=16)
    >>> labels = ape.predict_many(test_xs)
    >>> ape.calls, ape.stats.to_dict()["valid_rate"]
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from trustlab.programs.lsp import LSP, check_data
from trustlab.programs.outputs import AnswerStats, map_answer
from trustlab.programs.program import Program
from trustlab.programs.prompts import SINGLE_PROMPT_INPUT

KINDS = ("rulesum", "ape", "mop")


@dataclass
class SinglePrompt:
    """An APE or MoP prompt used as a classifier over a closed label list.

    Attributes:
        kind: ``"ape"`` or ``"mop"``.
        fitted: the :class:`~trustlab.prompting.mop.MoPModel` (one expert for APE).
        labels: the label list.
        default: the majority training label (stands for unmapped answers).
        calls: learning-time model calls (generation + scoring).
        stats: how test answers were mapped.
    """

    kind: str
    fitted: Any
    labels: list[str]
    default: str
    calls: int
    stats: AnswerStats = field(default_factory=AnswerStats)

    def as_input(self, x: str) -> str:
        return SINGLE_PROMPT_INPUT.format(input=x, choices=", ".join(self.labels))

    def predict_many(self, inputs: Sequence[str], model: Any = None) -> list[str]:
        """Labels for ``inputs`` (one batched call), answers mapped as LSP's are."""
        out = []
        for answer in self.fitted.predict([self.as_input(x) for x in inputs], model=model):
            label, how = map_answer(answer, self.labels)
            self.stats.add(how)
            out.append(label or self.default)
        return out

    def describe(self) -> str:
        return self.fitted.describe()


def fit_single_prompt(kind: str, inputs: Sequence[str], labels: Sequence[str], *, model: Any, budget: int = 8,
                      num_samples: int = 20, seed: int = 0, learner: Any = None, n_rule_samples: int = 4,
                      embedder: Any = None, **config: Any) -> SinglePrompt | Program:
    """Fit one baseline of :data:`KINDS` on the training set.

    Args:
        kind: ``rulesum``, ``ape`` or ``mop``.
        inputs, labels: the training set.
        model: the model handle (task model and, for APE/MoP, the instruction proposer).
        budget: APE/MoP generation calls (instruction proposals).
        num_samples: APE/MoP eval items per scored candidate.
        seed: the search seed.
        learner: the rule writer for ``rulesum`` (default: ``model``).
        n_rule_samples: RuleSum candidates for ``rulesum``.
        embedder: MoP's embedder (default: the embedded MiniLM).
        **config: further :class:`~trustlab.programs.lsp.LSPConfig` (rulesum) or
            :class:`~trustlab.prompting.mop.MoPConfig` (ape, mop) fields.

    Raises:
        ValueError: an unknown ``kind``.
        EmptyInputError, LabelError: bad training data (:func:`~trustlab.programs.lsp.check_data`).
    """
    if kind not in KINDS:
        raise ValueError(f"unknown baseline {kind!r}; choose one of {', '.join(KINDS)}")
    label_list = check_data(inputs, labels)
    if kind == "rulesum":
        return LSP(model, learner, label_list, max_nodes=1, n_rule_samples=n_rule_samples, seed=seed,
                   **config).fit(inputs, labels)
    from trustlab.prompting.mop import compile
    from trustlab.prompting.mop_baselines import fit_baseline

    default = Counter(labels).most_common(1)[0][0]
    wrapper = SinglePrompt(kind, None, label_list, default, 0)
    pairs = [(wrapper.as_input(x), y) for x, y in zip(inputs, labels, strict=True)]

    def scorer(prediction: str, target: str) -> float:
        return float(map_answer(prediction, label_list)[0] == target)

    opts = {"budget": budget, "num_samples": num_samples, "seed": seed, "scorer": scorer, **config}
    if kind == "ape":
        wrapper.fitted = fit_baseline("ape", pairs, pairs, model=model, **opts)
    else:
        wrapper.fitted = compile(pairs, pairs, model=model, embedder=embedder, **opts)
    wrapper.calls = int(sum(wrapper.fitted.info["calls"].values()))
    return wrapper
