"""LLM-based Symbolic Programs (LSP): learning a tree of prompted LLM modules by divide and conquer.

A single prompt must state the whole decision rule at once; LSP grows it. The root module's rule is
written by a *learner* LLM from labelled examples (RuleSum); then, repeatedly, the node whose answers are
most often wrong gets children, each with its own rule learned only from the examples routed to it. The
result is a readable program (:mod:`trustlab.programs.program`) whose modules run on any model handle.

Learning, with every reconstructed decision (the paper's code was not released; spec lsp-ilbench.md):

1. [paper] RuleSum. The learner sees up to ``rulesum_batch`` (32) of the node's examples (a seeded random
   sample; a different one per candidate) in :data:`~trustlab.programs.prompts.RULESUM` and writes rules;
   ``n_rule_samples`` (4) candidates are sampled (temperature 0.7). [derived] A candidate that is not a
   usable rule (:func:`~trustlab.programs.outputs.clean_rule`) is re-requested with the reason appended,
   ``rule_retries`` (4) times per node at most; all outputs count in ``valid_rate``. [recon] Each valid,
   distinct candidate is *validated on data* (the reviewers' hallucination risk): it runs as the node's
   module on up to ``n_validate`` of the node's examples (a fixed seeded sample; None = all) and the most
   accurate is kept (ties: the earlier). No valid candidate: the node becomes a constant node answering
   its majority label, and the learning record says so.
2. [recon] Node choice (the paper's Eq. 3 score is not recoverable here): an example's error is charged to
   the *slot* (node, answer) where its path ends; the node with the most training errors in its open slots
   is expanded. A slot is open while its node is above ``max_depth``, has fewer than ``max_width``
   children, the slot has at least ``min_errors`` errors and was not tried before.
3. [paper] Expansion: for each open slot of that node, most errors first, while nodes < ``max_nodes``, a
   child is learned by RuleSum on that slot's examples only. [recon] A slot whose examples share one label
   gets a constant child (no model call). A child is kept only when it is more accurate on its slot than
   the parent's answer was, so training accuracy never decreases as nodes are added.
4. [derived] Stop when ``max_nodes`` is reached, no slot is open, or an expansion step raised training
   accuracy by less than ``min_gain`` (1 point).
5. [recon] The paper's small beam over programs (``beam = 2``) is not implemented: the search is greedy over
   nodes, with best-of-``n_rule_samples`` per node.

Every model call is counted: ``learner`` (RuleSum prompts, retries included) and ``module`` (module
prompts sent during learning, retries included; the cache means an (rule, input) pair is asked once).

Example:
    >>> from trustlab.models import load_model
    >>> from trustlab.bench.ilbench import make_syntree
    >>> task = make_syntree(depth=2, seed=0)
    >>> llm = load_model("embedded")
    >>> program = LSP(llm, max_nodes=4).fit([r["input"] for r in task.train], [r["label"] for r in task.train])
    >>> print(program.to_text())
    >>> program.predict(task.test[0]["input"]).label

References:
    Wang, Si, Yu, Wiesmann, Hsieh, Dhillon. "Large Language Models are Interpretable Learners". ICLR 2025.
    https://arxiv.org/abs/2406.17224
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from trustlab.errors import EmptyInputError, TrustlabError
from trustlab.programs.outputs import clean_rule
from trustlab.programs.program import LSPNode, ModuleRunner, Program, route
from trustlab.programs.prompts import EXAMPLE, RULESUM, RULESUM_RETRY
from trustlab.report.run import progress
from trustlab.validity import ValidityCounter


class LabelError(TrustlabError, ValueError):
    """Training labels LSP cannot learn from (a single label, labels it cannot print, unknown labels)."""


@dataclass
class LSPConfig:
    """Settings of an LSP fit (defaults: spec section 3, "toolkit defaults").

    Attributes:
        max_nodes: nodes in the program at most (default 8).
        max_depth: levels of nodes at most; the root is level 1 (default 3).
        max_width: children per node at most (default None: one per label).
        n_rule_samples: RuleSum candidates per node (default 4).
        rulesum_batch: examples shown in one RuleSum prompt (default 32).
        n_validate: node examples each candidate is validated on (default None: all).
        min_gain: stop when an expansion step raises train accuracy by less (default 0.01, one point).
        min_errors: errors a slot needs to be expanded (default 2).
        rule_retries: learner re-asks per node after unusable rules (default 4).
        module_retries: module re-asks in all during a fit (default 64).
        learner_temperature, learner_max_new_tokens: RuleSum sampling (0.7, 160).
        answer_max_new_tokens: tokens of a module answer (default 8).
        chat_template: use the models' chat templates (default None: when they have one).
        seed: example sampling and learner sampling seed (default 0).
    """

    max_nodes: int = 8
    max_depth: int = 3
    max_width: int | None = None
    n_rule_samples: int = 4
    rulesum_batch: int = 32
    n_validate: int | None = None
    min_gain: float = 0.01
    min_errors: int = 2
    rule_retries: int = 4
    module_retries: int = 64
    learner_temperature: float = 0.7
    learner_max_new_tokens: int = 160
    answer_max_new_tokens: int = 8
    chat_template: bool | None = None
    seed: int = 0

    def __post_init__(self) -> None:
        for name in ("max_nodes", "max_depth", "n_rule_samples", "rulesum_batch", "min_errors"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        for name in ("max_width", "n_validate"):
            if getattr(self, name) is not None and getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1 or None, got {getattr(self, name)}")


def check_data(inputs: Sequence[str], labels: Sequence[str], known: Sequence[str] | None = None) -> list[str]:
    """The label list of a training set (sorted, or ``known``), after checking the data.

    Raises:
        EmptyInputError: no examples, or an empty input.
        LabelError: inputs and labels of different lengths, fewer than two distinct labels, a label that
            is empty, multi-line or holds ``" | "``, or one outside ``known``.
    """
    if len(inputs) == 0:
        raise EmptyInputError("no training examples: LSP needs (input, label) pairs")
    if len(inputs) != len(labels):
        raise LabelError(f"{len(inputs)} inputs but {len(labels)} labels: give one label per input")
    for i, (x, y) in enumerate(zip(inputs, labels, strict=True)):
        if not isinstance(x, str) or not x.strip():
            raise EmptyInputError(f"input {i} is empty or not text: {x!r}")
        if not isinstance(y, str) or not y.strip() or "\n" in y or " | " in y or y != y.strip():
            raise LabelError(f"label {i} ({y!r}) must be a non-empty one-line text without ' | ' or outer spaces")
    seen = sorted(set(labels))
    if len(seen) < 2:
        raise LabelError(f"every training example has the label {seen[0]!r}: there is no rule to learn; give "
                         "examples of at least two labels")
    if known is not None:
        unknown = [y for y in seen if y not in known]
        if unknown:
            raise LabelError(f"labels {unknown} are not in the label list {list(known)}")
        return list(known)
    return seen


def slot_errors(traces: Sequence[list[dict[str, Any]]], ys: Sequence[str]
                ) -> tuple[dict[tuple[str, str], list[int]], dict[tuple[str, str], int]]:
    """Training examples and errors per slot (node path, answer) where their paths end.

    Example:
        >>> slot_errors([[{"node": "root", "label": "a"}]], ["b"])
        ({('root', 'a'): [0]}, {('root', 'a'): 1})
    """
    slots: dict[tuple[str, str], list[int]] = {}
    for i, t in enumerate(traces):
        slots.setdefault((t[-1]["node"], t[-1]["label"]), []).append(i)
    return slots, {s: sum(ys[i] != s[1] for i in idx) for s, idx in slots.items()}


def pick_node(open_slots: Sequence[tuple[str, str]], errors: dict[tuple[str, str], int]) -> str:
    """The node with the most errors in its open slots (ties: the shallower, then the first seen).

    Example:
        >>> pick_node([("root", "a"), ("root/a", "b"), ("root/a", "c")],
        ...           {("root", "a"): 3, ("root/a", "b"): 2, ("root/a", "c"): 2})
        'root/a'
    """
    per_node: Counter = Counter()
    for s in open_slots:
        per_node[s[0]] += errors[s]
    return max(per_node, key=lambda p: (per_node[p], -p.count("/")))


class LSP:
    """The LSP learner: ``LSP(module_llm, learner_llm).fit(X, y) -> Program``.

    Args:
        module_llm: the handle the modules run on.
        learner_llm: the handle that writes rules (default: ``module_llm``).
        labels: the closed label list (default: the training labels, sorted).
        config: an :class:`LSPConfig`; keyword overrides replace its fields.
        embedder: optional embedder for the answer-mapping fallback.
        verbose: print progress lines.
    """

    def __init__(self, module_llm: Any, learner_llm: Any = None, labels: Sequence[str] | None = None,
                 config: LSPConfig | None = None, *, embedder: Any = None, verbose: bool = False, **overrides: Any):
        self.module_llm, self.learner = module_llm, learner_llm or module_llm
        self.labels = list(labels) if labels is not None else None
        self.cfg = LSPConfig(**{**asdict(config or LSPConfig()), **overrides})
        self.embedder, self.verbose = embedder, verbose
        self.learner_chat = (self.learner.capabilities.chat_template if self.cfg.chat_template is None
                             else self.cfg.chat_template)

    def _rulesum(self, data: list[tuple[str, str]], labels: list[str], rng: np.random.Generator,
                 stats: dict[str, Any]) -> list[str]:
        """Valid, distinct RuleSum candidates from the node's examples (retries within the budget)."""
        cfg, names = self.cfg, ", ".join(labels)
        batches = []
        for _ in range(cfg.n_rule_samples):
            pick = rng.choice(len(data), size=min(cfg.rulesum_batch, len(data)), replace=False)
            batches.append([data[i] for i in sorted(pick)])
        jobs = [(b, "") for b in batches]
        found: list[str] = []
        retries = cfg.rule_retries
        while jobs:
            prompts = [RULESUM.format(examples="\n\n".join(EXAMPLE.format(input=x, label=y) for x, y in b),
                                      labels=names) + extra for b, extra in jobs]
            out = self.learner.generate(prompts, max_new_tokens=cfg.learner_max_new_tokens,
                                        temperature=cfg.learner_temperature, seed=int(rng.integers(2**31)),
                                        stop=("\nDescription:",), chat_template=self.learner_chat)
            stats["learner_calls"] += len(prompts)
            again = []
            for (b, _), g in zip(jobs, out, strict=True):
                rule, why = clean_rule(g[0].text, labels, [x for x, _ in b])
                if rule is None:
                    stats["rule_validity"].invalid(why)
                    if retries > 0:
                        retries -= 1
                        again.append((b, RULESUM_RETRY.format(reason=why, labels=names)))
                    continue
                stats["rule_validity"].valid()
                if rule not in found:
                    found.append(rule)
            jobs = again
        return found

    def _fit_node(self, data: list[tuple[str, str]], labels: list[str], runner: ModuleRunner, order: int,
                  rng: np.random.Generator, stats: dict[str, Any]) -> LSPNode:
        counts = Counter(y for _, y in data)
        default = counts.most_common(1)[0][0]
        info: dict[str, Any] = {"n_examples": len(data), "label_counts": dict(counts)}
        if len(counts) == 1:
            return LSPNode(None, list(labels), default, {}, order, {**info, "why": "one label"})
        candidates = self._rulesum(data, labels, rng, stats)
        if not candidates:
            return LSPNode(None, list(labels), default, {}, order, {**info, "why": "no valid rule was learned"})
        n_val = len(data) if self.cfg.n_validate is None else min(self.cfg.n_validate, len(data))
        val = [data[i] for i in sorted(rng.choice(len(data), size=n_val, replace=False))]
        scores = []
        for rule in candidates:
            node = LSPNode(rule, list(labels), default)
            answers = runner.answer(node, [x for x, _ in val])
            scores.append(float(np.mean([a[0] == y for a, (_, y) in zip(answers, val, strict=True)])))
        best = int(np.argmax(scores))
        info["candidates"] = [{"rule": c, "val_accuracy": s} for c, s in zip(candidates, scores, strict=True)]
        info["n_validate"] = n_val
        return LSPNode(candidates[best], list(labels), default, {}, order, info)

    def fit(self, inputs: Sequence[str], labels: Sequence[str]) -> Program:
        """Learn a program from training inputs and their labels.

        Raises:
            EmptyInputError, LabelError: see :func:`check_data`.
        """
        cfg = self.cfg
        label_list = check_data(inputs, labels, self.labels)
        xs, ys = [x.strip() for x in inputs], list(labels)
        data = list(zip(xs, ys, strict=True))
        rng = np.random.default_rng(cfg.seed)
        runner = ModuleRunner(self.module_llm, max_new_tokens=cfg.answer_max_new_tokens,
                              chat_template=cfg.chat_template, embedder=self.embedder,
                              retry_budget=cfg.module_retries)
        stats: dict[str, Any] = {"learner_calls": 0, "rule_validity": ValidityCounter()}
        width = cfg.max_width or len(label_list)
        root = self._fit_node(data, label_list, runner, 0, rng, stats)
        program = Program(root, label_list, asdict(cfg), {}, self.module_llm)

        def evaluate() -> tuple[float, list[list[dict[str, Any]]]]:
            traces = route(root, xs, runner)
            return float(np.mean([t[-1]["label"] == y for t, y in zip(traces, ys, strict=True)])), traces

        acc, traces = evaluate()
        history = [{"nodes": 1, "train_accuracy": acc, "learner_calls": stats["learner_calls"],
                    "module_calls": runner.calls}]
        tried: set[tuple[str, str]] = set()
        stop = "max_nodes reached"
        bar = progress(range(cfg.max_nodes - 1), "LSP nodes")
        while program.n_nodes < cfg.max_nodes:
            nodes = dict(root.nodes())
            slots, errors = slot_errors(traces, ys)
            open_ = [s for s in slots if s not in tried and errors[s] >= cfg.min_errors
                     and s[0].count("/") + 1 < cfg.max_depth and len(nodes[s[0]].children) < width]
            if not open_:
                stop = "no slot left to expand"
                break
            target = pick_node(open_, errors)
            parent = nodes[target]
            for s in sorted((s for s in open_ if s[0] == target), key=lambda s: -errors[s]):
                if program.n_nodes >= cfg.max_nodes or len(parent.children) >= width:
                    break
                tried.add(s)
                sub = [data[i] for i in slots[s]]
                child = self._fit_node(sub, label_list, runner, program.n_nodes, rng, stats)
                got = runner.answer(child, [x for x, _ in sub])
                child_acc = float(np.mean([a[0] == y for a, (_, y) in zip(got, sub, strict=True)]))
                parent_acc = 1 - errors[s] / len(sub)
                child.info.update(slot_accuracy=child_acc, parent_slot_accuracy=parent_acc)
                if child_acc > parent_acc:
                    parent.children[s[1]] = child
                    next(bar, None)
                if self.verbose:
                    print(f"LSP: slot {s[0]} -> {s[1]} ({len(sub)} examples): child {child_acc:.2f} vs parent "
                          f"{parent_acc:.2f}{' kept' if s[1] in parent.children else ' dropped'}")
            new_acc, traces = evaluate()
            gain, acc = new_acc - acc, new_acc
            history.append({"nodes": program.n_nodes, "train_accuracy": acc, "expanded": target,
                            "learner_calls": stats["learner_calls"], "module_calls": runner.calls})
            if gain < cfg.min_gain:
                stop = f"train accuracy gain {gain:+.3f} < min_gain {cfg.min_gain}"
                break
        bar.close()
        validity = ValidityCounter()
        validity.update(stats["rule_validity"])
        validity.update(runner.stats.validity())
        program.info = {"calls": {"learner": stats["learner_calls"], "module": runner.calls},
                        "rule_validity": stats["rule_validity"].to_dict(), "answers": runner.stats.to_dict(),
                        "validity": validity.to_dict(), "history": history, "stop": stop,
                        "train_accuracy": acc, "n_train": len(xs)}
        if self.verbose:
            print(f"LSP: {program.n_nodes} nodes, train accuracy {acc:.3f}; stopped: {stop}")
        return program


def fit_lsp(inputs: Sequence[str], labels: Sequence[str], *, model: Any, learner: Any = None,
            **config: Any) -> Program:
    """Learn an LSP program in one call (:class:`LSP` with :class:`LSPConfig` fields as keywords).

    Example:
        >>> program = fit_lsp(xs, ys, model=load_model("embedded"), max_nodes=4)
    """
    return LSP(model, learner, **config).fit(inputs, labels)
