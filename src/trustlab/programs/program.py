"""An LSP program: a decision tree whose nodes are prompted LLM modules, run on any model handle.

[paper] The DSL has two operators: the prompted-LLM module ``f(x; s) = LLM(s, x)`` and conditional branching
on a module's output. [recon] Here every module answers one label of the task's closed label list
(:data:`~trustlab.programs.prompts.MODULE` gives it the list): a node's answer either selects a child (the
node was expanded on the examples it routed to that answer) or, when that answer has no child, *is* the
prediction. So a root alone is a complete classifier, and each child refines one of its parent's answers.
An answer that maps to no label (see :mod:`trustlab.programs.outputs`) is re-asked once with
:data:`~trustlab.programs.prompts.MODULE_RETRY` while the retry budget lasts, else the node's ``default``
(the majority label of its training examples) stands in, counted as invalid. A node whose examples all had
one label is a *constant* node (``rule=None``): it answers that label without a model call.

Nodes are keyed by their path (``"root"``, ``"root/murl"``); children are a ``dict`` from answer to node,
so the node/edge structure could become a DAG later (spec section 5). Programs are model-free data: a
program learned with one model runs on another (``predict(..., model=other)``), loads from JSON and
prints as readable rules (:meth:`Program.to_text`), which :meth:`Program.from_text` reads back.

Example:
    >>> program = Program.load("program.json", model=load_model("embedded"))
    >>> pred = program.predict("The blorp is teal, its glim is pim.")
    >>> pred.label, [step["node"] for step in pred.trace]
    >>> print(program.to_text())
"""

from __future__ import annotations

import copy
import json
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from trustlab.errors import TrustlabError
from trustlab.programs.outputs import AnswerStats, map_answer
from trustlab.programs.prompts import MODULE, MODULE_RETRY

FORMAT = "trustlab.lsp/1"
STOP = ("\n",)


class ProgramFormatError(TrustlabError, ValueError):
    """A saved or printed program that cannot be read back."""


@dataclass
class LSPNode:
    """One LLM module of the tree.

    Attributes:
        rule: the module's prompt ``s`` (the learned rule), or None for a constant node.
        choices: the closed answer list.
        default: the answer used when the module's output maps to no choice (and a constant node's answer).
        children: answer -> the child that refines it.
        order: when the node was added (0 for the root); :meth:`Program.prefix` keeps the first k.
        info: what learning saw: examples, candidates and their validation accuracy.
    """

    rule: str | None
    choices: list[str]
    default: str
    children: dict[str, LSPNode] = field(default_factory=dict)
    order: int = 0
    info: dict[str, Any] = field(default_factory=dict)

    @property
    def is_leaf(self) -> bool:
        return not self.children

    def nodes(self, path: str = "root") -> list[tuple[str, LSPNode]]:
        """(path, node) of this node and all below it, depth first."""
        out = [(path, self)]
        for answer, child in self.children.items():
            out += child.nodes(f"{path}/{answer}")
        return out

    def to_json(self) -> dict[str, Any]:
        return {"rule": self.rule, "choices": list(self.choices), "default": self.default, "order": self.order,
                "info": self.info, "children": {a: c.to_json() for a, c in self.children.items()}}

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> LSPNode:
        return cls(d["rule"], list(d["choices"]), d["default"], {a: cls.from_json(c) for a, c in d["children"].items()},
                   int(d.get("order", 0)), dict(d.get("info", {})))


@dataclass
class Prediction:
    """A prediction with its path: one step per visited node (``node`` path, raw ``answer``, mapped
    ``label``, mapping ``how``)."""

    label: str
    trace: list[dict[str, Any]]


class ModuleRunner:
    """Runs LLM modules on a model handle: batched ``generate`` calls, a cache, counted calls and answers.

    Args:
        model: any :func:`trustlab.models.load_model` handle (only ``generate`` is used).
        max_new_tokens: tokens of one module answer (default 8; answers are one label).
        chat_template: use the model's chat template (None: when it has one).
        embedder: optional ``encode(list[str])`` object for the embedding fallback of answer mapping.
        retry_budget: module re-asks allowed in all (default 64).
    """

    def __init__(self, model: Any, *, max_new_tokens: int = 8, chat_template: bool | None = None,
                 embedder: Any = None, retry_budget: int = 64):
        if model is None or not hasattr(model, "generate"):
            raise TrustlabError("running an LSP program needs a model handle: load_model(...) or predict(model=)")
        self.model, self.max_new_tokens, self.embedder = model, max_new_tokens, embedder
        self.chat = model.capabilities.chat_template if chat_template is None else chat_template
        self.retry_budget = retry_budget
        self.calls = 0
        self.stats = AnswerStats()
        self._cache: dict[tuple, tuple[str, str, str]] = {}

    def _ask(self, prompts: list[str]) -> list[str]:
        out = self.model.generate(prompts, max_new_tokens=self.max_new_tokens, temperature=0.0, stop=STOP,
                                  chat_template=self.chat)
        self.calls += len(prompts)
        return [g[0].text for g in out]

    def answer(self, node: LSPNode, inputs: Sequence[str]) -> list[tuple[str, str, str]]:
        """``(label, how, raw text)`` of ``node`` for each input (constant nodes: no call)."""
        if node.rule is None:
            return [(node.default, "constant", "")] * len(inputs)
        choices = ", ".join(node.choices)
        keys = [(node.rule, tuple(node.choices), x) for x in inputs]
        todo = list(dict.fromkeys(k for k in keys if k not in self._cache))
        if todo:
            raws = self._ask([MODULE.format(rule=node.rule, input=k[2], choices=choices) for k in todo])
            mapped = [map_answer(r, node.choices, self.embedder) for r in raws]
            again = [i for i, (lab, _) in enumerate(mapped) if lab is None][: max(0, self.retry_budget)]
            if again:
                self.retry_budget -= len(again)
                self.stats.retries += len(again)
                raws2 = self._ask([MODULE_RETRY.format(rule=node.rule, input=todo[i][2], choices=choices)
                                   for i in again])
                for i, r in zip(again, raws2, strict=True):
                    mapped[i], raws[i] = map_answer(r, node.choices, self.embedder), r
            for k, (lab, how), raw in zip(todo, mapped, raws, strict=True):
                self.stats.add(how)
                self._cache[k] = (lab or node.default, how, raw)
        return [self._cache[k] for k in keys]


def route(root: LSPNode, inputs: Sequence[str], runner: ModuleRunner) -> list[list[dict[str, Any]]]:
    """Each input's path through the tree (one batched call per visited node); the last step's label is the
    prediction."""
    traces: list[list[dict[str, Any]]] = [[] for _ in inputs]
    frontier = [("root", root, list(range(len(inputs))))]
    while frontier:
        path, node, idx = frontier.pop(0)
        groups: dict[str, list[int]] = {}
        for i, (label, how, raw) in zip(idx, runner.answer(node, [inputs[i] for i in idx]), strict=True):
            traces[i].append({"node": path, "answer": raw, "label": label, "how": how})
            if label in node.children:
                groups.setdefault(label, []).append(i)
        frontier += [(f"{path}/{a}", node.children[a], g) for a, g in groups.items()]
    return traces


@dataclass
class Program:
    """A learned LSP program.

    Attributes:
        root: the root module.
        labels: the task's label list.
        config: the learner's settings (an :class:`~trustlab.programs.lsp.LSPConfig` as a dict).
        info: what learning did: calls, validity, the nodes-vs-train-accuracy history, why it stopped.
        model: the handle its modules run on (not saved).
    """

    root: LSPNode
    labels: list[str]
    config: dict[str, Any] = field(default_factory=dict)
    info: dict[str, Any] = field(default_factory=dict)
    model: Any = field(default=None, repr=False, compare=False)

    @property
    def n_nodes(self) -> int:
        return len(self.root.nodes())

    def runner(self, model: Any = None, **options: Any) -> ModuleRunner:
        """A :class:`ModuleRunner` on ``model`` (default: the program's), with the program's answer length."""
        opts = {"max_new_tokens": self.config.get("answer_max_new_tokens", 8),
                "chat_template": self.config.get("chat_template"), **options}
        return ModuleRunner(model or self.model, **opts)

    def predict_many(self, inputs: Sequence[str], model: Any = None, runner: ModuleRunner | None = None
                     ) -> list[Prediction]:
        """Predictions with their paths, one batched call per visited node.

        Args:
            inputs: the texts.
            model: run the modules on this handle instead of the program's (transfer to another model).
            runner: reuse a runner (its cache and counters); overrides ``model``.
        """
        traces = route(self.root, list(inputs), runner or self.runner(model))
        return [Prediction(t[-1]["label"], t) for t in traces]

    def predict(self, x: str, model: Any = None) -> Prediction:
        return self.predict_many([x], model)[0]

    def prefix(self, k: int) -> Program:
        """The program as it was with its first ``k`` nodes (children added later are cut)."""
        root = copy.deepcopy(self.root)
        for _, node in root.nodes():
            node.children = {a: c for a, c in node.children.items() if c.order < k}
        return Program(root, list(self.labels), self.config, {}, self.model)

    def to_json(self) -> dict[str, Any]:
        data = {"format": FORMAT, "labels": self.labels, "config": self.config, "info": self.info,
                "root": self.root.to_json()}
        return json.loads(json.dumps(data))

    @classmethod
    def from_json(cls, data: dict[str, Any], *, model: Any = None) -> Program:
        if not isinstance(data, dict) or data.get("format") != FORMAT:
            got = data.get("format") if isinstance(data, dict) else type(data).__name__
            raise ProgramFormatError(f"not a saved LSP program (format {got!r}, expected {FORMAT!r})")
        return cls(LSPNode.from_json(data["root"]), list(data["labels"]), data.get("config", {}),
                   data.get("info", {}), model)

    def save(self, path: str | Path) -> Path:
        from trustlab.report.io import write_json

        return write_json(path, self.to_json())

    @classmethod
    def load(cls, path: str | Path, *, model: Any = None) -> Program:
        try:
            data = json.loads(Path(path).read_text())
        except (OSError, json.JSONDecodeError) as exc:
            raise ProgramFormatError(f"cannot read an LSP program from {path}: {exc}") from exc
        return cls.from_json(data, model=model)

    def to_text(self) -> str:
        """The program as readable rules (:meth:`from_text` reads it back).

        Example:
            >>> print(program.to_text())
            LSP program; labels: zand | murl | pib
            [#0] rule:
              | If the blorp is teal, the label is zand.
              default: murl
              when zand:
                [#1] always pib
        """
        lines = [f"LSP program; labels: {' | '.join(self.labels)}"]

        def emit(node: LSPNode, pad: str) -> None:
            if node.rule is None:
                lines.append(f"{pad}[#{node.order}] always {node.default}")
            else:
                lines.append(f"{pad}[#{node.order}] rule:")
                lines.extend(f"{pad}  | {ln}" for ln in node.rule.splitlines())
                lines.append(f"{pad}  default: {node.default}")
            for answer, child in node.children.items():
                lines.append(f"{pad}  when {answer}:")
                emit(child, pad + "    ")

        emit(self.root, "")
        return "\n".join(lines)

    @classmethod
    def from_text(cls, text: str, *, model: Any = None) -> Program:
        """Read a program printed by :meth:`to_text` (each node's choices are the label list).

        Raises:
            ProgramFormatError: text that is not in that form.
        """
        lines = text.rstrip("\n").splitlines()
        head = re.fullmatch(r"LSP program; labels: (.+)", lines[0]) if lines else None
        if head is None:
            raise ProgramFormatError("a printed LSP program starts with 'LSP program; labels: a | b | ...'")
        labels = head.group(1).split(" | ")
        pos = 1

        def node(pad: str) -> LSPNode:
            nonlocal pos
            line = lines[pos] if pos < len(lines) else ""
            m = re.fullmatch(re.escape(pad) + r"\[#(\d+)\] (?:always (.+)|rule:)", line)
            if m is None:
                raise ProgramFormatError(f"line {pos + 1}: expected a node at indent {len(pad)}, got {line!r}")
            pos += 1
            order, rule = int(m.group(1)), None
            if m.group(2) is None:
                body = []
                while pos < len(lines) and lines[pos].startswith(pad + "  | "):
                    body.append(lines[pos][len(pad) + 4:])
                    pos += 1
                d = re.fullmatch(re.escape(pad) + r"  default: (.+)", lines[pos] if pos < len(lines) else "")
                if d is None:
                    raise ProgramFormatError(f"line {pos + 1}: expected '  default: <label>' after the rule")
                pos += 1
                rule, default = "\n".join(body), d.group(1)
            else:
                default = m.group(2)
            out = LSPNode(rule, list(labels), default, {}, order)
            while pos < len(lines) and (w := re.fullmatch(re.escape(pad) + r"  when (.+):", lines[pos])):
                pos += 1
                out.children[w.group(1)] = node(pad + "    ")
            return out

        root = node("")
        if pos != len(lines):
            raise ProgramFormatError(f"line {pos + 1}: unexpected {lines[pos]!r}")
        return cls(root, labels, {}, {}, model)
