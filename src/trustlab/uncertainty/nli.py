"""Entailment scorers for CLUE: any Hugging Face NLI classifier, or an LLM reading label-word probabilities.

Both return P(entailment | premise, hypothesis) with the softmax taken over {contradiction,
entailment} only (the zero-shot-classification convention of bart-large-mnli), so the two back-ends
are on the same scale. Scores are cached per (premise, hypothesis) pair. A black-box LLM's answer that
is not one of the three labels is invalid: counted in :attr:`LLMNLI.validity` and scored NaN, never 0.5.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, Protocol

from trustlab.errors import CapabilityError, require
from trustlab.models.base import ModelHandle
from trustlab.validity import ValidityCounter

NLI_TEMPLATE = (
    "Premise: {premise}\nHypothesis: {hypothesis}\n"
    "Does the premise entail the hypothesis? Answer with one word: entailment, neutral or contradiction."
)


class EntailmentScorer(Protocol):
    """What CLUE needs from an NLI back-end."""

    name: str

    def entail(self, pairs: Sequence[tuple[str, str]]) -> list[float]: ...


class _Cached:
    """Shared cache: each distinct pair is scored once."""

    name = "nli"

    def __init__(self) -> None:
        self._cache: dict[tuple[str, str], float] = {}

    def entail(self, pairs: Sequence[tuple[str, str]]) -> list[float]:
        """P(entailment) for each (premise, hypothesis) pair.

        Example:
            >>> scorer.entail([("Paris is in France.", "Paris is in Europe.")])
        """
        todo = list(dict.fromkeys(p for p in pairs if p not in self._cache))
        if todo:
            self._cache.update(zip(todo, self._score(todo), strict=True))
        return [self._cache[p] for p in pairs]

    def _score(self, pairs: list[tuple[str, str]]) -> list[float]:
        raise NotImplementedError


NLI_LABELS = {"entailment": ["entailment"], "neutral": ["neutral"], "contradiction": ["contradiction"]}


class LLMNLI(_Cached):
    """An LLM as NLI model: next-token probabilities of the words entailment / contradiction.

    Args:
        model: any handle. White-box: exact label-token probabilities. Black-box: the generated answer
            is parsed strictly (:func:`trustlab.models.labels.parse_label`: entailment, neutral or
            contradiction); with server log-probs it becomes an approximate distribution, without them a
            hard label (scores 1, 0.5 or 0). An answer that names no single label scores NaN and is
            counted in :attr:`validity`.
        template: the prompt, with ``{premise}`` and ``{hypothesis}``; it must ask for one of the
            three label words.
        max_chars: premises are cut to this many characters (default 1000).
        pilot: black-box only: before it has seen a valid answer, a batch of more pairs than this is
            scored in two steps; when none of the first ``pilot`` answers is a label, it refuses with
            :class:`CapabilityError` instead of sending the rest (default 8).

    Attributes:
        validity: scored pairs whose answer parsed into a label, and why the others did not.

    Example:
        >>> nli = LLMNLI(load_model())
        >>> nli.entail([("The sky is blue.", "The sky has a colour.")])
    """

    def __init__(self, model: ModelHandle, template: str = NLI_TEMPLATE, max_chars: int = 1000, pilot: int = 8):
        super().__init__()
        self.model = model
        self.template = template
        self.max_chars = max_chars
        self.pilot = pilot
        self.name = f"llm-nli:{model.name}"
        self.validity = ValidityCounter()

    def _score(self, pairs: list[tuple[str, str]]) -> list[float]:
        from trustlab.models.labels import label_logprobs, reads_logits

        prompts = [self.template.format(premise=p[: self.max_chars], hypothesis=h) for p, h in pairs]
        dists: list = []
        if not reads_logits(self.model) and self.validity.n_valid == 0 and len(prompts) > self.pilot:
            dists = label_logprobs(self.model, prompts[: self.pilot], NLI_LABELS, on_invalid="none")
            if all(d is None for d in dists):
                self.validity.invalid("answer is not one of entailment / neutral / contradiction", len(dists))
                raise CapabilityError(
                    f"LLM-as-NLI with {self.model.name!r}: none of the first {self.pilot} answers was entailment, "
                    f"neutral or contradiction, so the other {len(prompts) - self.pilot} pairs were not sent. "
                    "Use an NLI classifier (a local MNLI model) or a model that follows the NLI prompt.")
        dists += label_logprobs(self.model, prompts[len(dists):], NLI_LABELS, on_invalid="none")
        out = []
        for d in dists:
            if d is None:
                self.validity.invalid("answer is not one of entailment / neutral / contradiction")
                out.append(math.nan)
                continue
            self.validity.valid()
            # P(entail) over {entailment, contradiction} = sigmoid(log e - log c): no underflow, no 0.5 default
            out.append(1 / (1 + math.exp(min(d["contradiction"] - d["entailment"], 700.0))))
        return out


class HFNLI(_Cached):
    """A Hugging Face sequence-classification NLI model (e.g. a local bart-large-mnli or DeBERTa MNLI).

    Args:
        path: hub id or local folder (offline: a local folder).
        batch_size: pairs per forward pass (default 16).
        device: torch device (default ``"cpu"``).

    Example:
        >>> nli = HFNLI("/models/bart-large-mnli")
    """

    def __init__(self, path: str, batch_size: int = 16, device: str = "cpu"):
        super().__init__()
        transformers = require("transformers", "llm")
        self.tokenizer = transformers.AutoTokenizer.from_pretrained(path)
        self.model = transformers.AutoModelForSequenceClassification.from_pretrained(path).to(device).eval()  # safe: torch Module.eval(), not Python eval
        self.batch_size = batch_size
        self.name = f"hf-nli:{path}"
        labels = {int(i): str(v).lower() for i, v in self.model.config.id2label.items()}
        try:
            self.entail_id = next(i for i, v in labels.items() if v.startswith("entail"))
            self.contra_id = next(i for i, v in labels.items() if v.startswith("contradict"))
        except StopIteration:
            raise ValueError(f"{path} is not an NLI classifier: its labels are {sorted(labels.values())}") from None

    def _score(self, pairs: list[tuple[str, str]]) -> list[float]:
        import torch

        out: list[float] = []
        for start in range(0, len(pairs), self.batch_size):
            chunk = pairs[start:start + self.batch_size]
            enc = self.tokenizer([p for p, _ in chunk], [h for _, h in chunk], return_tensors="pt",
                                 padding=True, truncation=True).to(self.model.device)
            with torch.inference_mode():
                logits = self.model(**enc).logits  # (B, n_labels)
            two = logits[:, [self.contra_id, self.entail_id]].float().softmax(-1)  # (B, 2)
            out += two[:, 1].tolist()
        return out


def load_nli(spec: Any, model: ModelHandle | None = None) -> EntailmentScorer:
    """An entailment scorer from a spec.

    Args:
        spec: ``"llm"`` or None (LLM-as-NLI on ``model``); a :class:`ModelHandle` (LLM-as-NLI on that
            handle: the NLI role filled by another model than the one under test); a path / hub id of a
            sequence-classification NLI model (:class:`HFNLI`); or an object that already has ``entail``.
        model: the model under test (used for ``"llm"``).

    Example:
        >>> load_nli("llm", model).name == f"llm-nli:{model.name}"
        True
        >>> load_nli(load_model("embedded:qwen2.5-coder-1.5b"), model).name
        'llm-nli:embedded:Qwen2.5-Coder-1.5B-Instruct'
    """
    if hasattr(spec, "entail"):
        return spec
    if isinstance(spec, ModelHandle):
        return LLMNLI(spec)
    if spec in (None, "llm"):
        if model is None:
            raise ValueError("LLM-as-NLI needs the model handle")
        return LLMNLI(model)
    return HFNLI(str(spec))
