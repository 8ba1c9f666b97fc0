"""Entailment scorers for CLUE: any Hugging Face NLI classifier, or an LLM reading label-word probabilities.

Both return P(entailment | premise, hypothesis) with the softmax taken over {contradiction,
entailment} only (the zero-shot-classification convention of bart-large-mnli), so the two back-ends
are on the same scale. Scores are cached per (premise, hypothesis) pair. A black-box LLM's answer that
is not one of the three labels is invalid: counted in :attr:`LLMNLI.validity` and scored NaN, never 0.5.

A white-box Hugging Face LLM reads all pairs of one premise over one KV-cached prefix: the chat template
and the premise run once, then only each hypothesis and the question after it (the pairs of many premises
in one forward). CLUE scores every concept against every sample, so this is most of its NLI work: about
half the tokens (49 of 77 in a typical pair with SmolLM2) are shared. Same tokens, same positions, same
numbers up to float rounding (tested to 1e-5 against one full forward per pair in float32).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any, Protocol

from trustlab.errors import CapabilityError, require
from trustlab.models.base import ModelHandle, Prompt
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
#: prompts of one premise share their prefix through a KV cache when it is at least this many tokens
MIN_SHARED_TOKENS = 8


def shares_prefixes(model: ModelHandle) -> bool:
    """Whether ``model`` is a white-box Hugging Face handle whose KV cache of a prefix can be reused
    (full attention in every layer, prefix sharing not switched off, e.g. by a steering context)."""
    from trustlab.models.labels import reads_logits

    return (reads_logits(model) and bool(getattr(model, "share_prefixes", False))
            and hasattr(model, "_prefix_cache_ok") and model._prefix_cache_ok())


def _common_length(a: list[int], b: list[int]) -> int:
    return next((j for j, (x, y) in enumerate(zip(a, b, strict=False)) if x != y), min(len(a), len(b)))


def grouped_label_logprobs(model: ModelHandle, prompts: Sequence[Prompt], keys: Sequence[Any],
                           labels: Mapping[str, Sequence[str]]) -> list[dict[str, float]]:
    """:func:`~trustlab.models.labels.label_logprobs` on a white-box handle, where prompts with the same
    key (e.g. the same premise) share one KV-cached token prefix.

    Each group's common token prefix (at least :data:`MIN_SHARED_TOKENS`, at most its shortest prompt
    minus one token) runs once, the prefixes of up to ``batch_size`` groups in one left-padded forward
    (groups in order of prefix length); the groups' rows then run only their own tokens, ``batch_size``
    rows per forward (rows of several groups together, in order of length, so that little is padding),
    over their group's cached prefix, with positions that skip the padding (what the handle's
    shared-prefix generation does). Groups of one prompt, or with a shorter common prefix, take
    ``label_logprobs`` itself. The label distributions match one full forward per prompt up to float
    rounding.

    Example:
        >>> grouped_label_logprobs(model, ["P: a. H: b?", "P: a. H: c?"], ["a", "a"], {"yes": ["yes"], "no": ["no"]})
    """
    import copy

    import torch

    from trustlab.models.labels import _first_token_ids, _normalise, label_logprobs

    prompts = list(prompts)
    label_ids = _first_token_ids(model.tokenizer, labels)
    rows = [model.tokenize(p, chat_template=True) for p in prompts]
    by_key: dict[Any, list[int]] = {}
    for i, key in enumerate(keys):
        by_key.setdefault(key, []).append(i)
    groups: list[tuple[list[int], int]] = []  # (members, shared prefix length)
    alone: list[int] = []
    for members in by_key.values():
        first = rows[members[0]]
        n = min([len(rows[i]) - 1 for i in members] + [_common_length(first, rows[i]) for i in members[1:]])
        if len(members) < 2 or n < MIN_SHARED_TOKENS:
            alone += members
        else:
            groups.append((members, n))
    # shortest prefixes first, and within a forward's rows shortest tails first: less padding to run
    groups.sort(key=lambda g: g[1])
    out: dict[int, dict[str, float]] = {}
    step = max(1, int(getattr(model, "batch_size", 8)))
    pad = model.tokenizer.pad_token_id

    def left_padded(seqs: list[list[int]]) -> tuple[Any, Any]:
        width = max(len(q) for q in seqs)
        ids = torch.full((len(seqs), width), pad, dtype=torch.long)
        mask = torch.zeros((len(seqs), width), dtype=torch.long)
        for r, q in enumerate(seqs):
            ids[r, width - len(q):] = torch.tensor(q, dtype=torch.long)
            mask[r, width - len(q):] = 1
        return ids, mask

    def run(ids: Any, mask: Any, n_past: int, **cache: Any) -> Any:
        positions = (mask.cumsum(-1) - 1).clamp(min=0)[:, n_past:]  # skip the padding, continue the prefix
        with torch.inference_mode():
            return model.model(input_ids=ids.to(model.device), attention_mask=mask.to(model.device),
                               position_ids=positions.to(model.device), logits_to_keep=1, **cache)

    for g0 in range(0, len(groups), step):
        part = groups[g0:g0 + step]
        pre_ids, pre_mask = left_padded([rows[members[0]][:n] for members, n in part])  # (G, P)
        res = run(pre_ids, pre_mask, 0, use_cache=True)
        cache = res["cache"] if "cache" in res else res["past_key_values"]
        jobs = sorted(((g, i) for g, (members, _) in enumerate(part) for i in members),
                      key=lambda job: len(rows[job[1]]) - part[job[0]][1])
        for j0 in range(0, len(jobs), step):
            chunk = jobs[j0:j0 + step]
            which = torch.tensor([g for g, _ in chunk])
            ids, tail_mask = left_padded([rows[i][part[g][1]:] for g, i in chunk])  # (B, W)
            mask = torch.cat([pre_mask[which], tail_mask], dim=1)  # (B, P + W)
            rows_cache = copy.deepcopy(cache)
            rows_cache.batch_select_indices(which.to(model.device))
            logits = run(ids, mask, pre_mask.shape[1], **{model._cache_kwarg: rows_cache}).logits
            logp = torch.log_softmax(logits[:, -1].float(), dim=-1)  # (B, V)
            for (_, i), row in zip(chunk, logp, strict=True):
                out[i] = _normalise({lab: torch.logsumexp(row[t], 0).item() for lab, t in label_ids.items()})
    if alone:
        out.update(zip(alone, label_logprobs(model, [prompts[i] for i in alone], labels), strict=True))
    return [out[i] for i in range(len(prompts))]


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
        if shares_prefixes(self.model):
            dists = grouped_label_logprobs(self.model, prompts, [p for p, _ in pairs], NLI_LABELS)
        elif not reads_logits(self.model) and self.validity.n_valid == 0 and len(prompts) > self.pilot:
            dists = label_logprobs(self.model, prompts[: self.pilot], NLI_LABELS, on_invalid="none")
            if all(d is None for d in dists):
                self.validity.invalid("answer is not one of entailment / neutral / contradiction", len(dists))
                raise CapabilityError(
                    f"LLM-as-NLI with {self.model.name!r}: none of the first {self.pilot} answers was entailment, "
                    f"neutral or contradiction, so the other {len(prompts) - self.pilot} pairs were not sent. "
                    "Use an NLI classifier (a local MNLI model) or a model that follows the NLI prompt.")
        if len(dists) < len(prompts):
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
