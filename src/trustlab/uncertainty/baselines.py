"""Sequence-level uncertainty baselines, LM-Polygraph style: small classes, higher = more uncertain.

Every estimator takes a batch of :class:`SampleSet` (an answer to score plus N sampled outputs for
the same prompt) and returns one float per item, so NLI and embedding calls batch across items.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any


@dataclass
class SampleSet:
    """What sequence-level estimators read for one prompt.

    Attributes:
        prompt: the question.
        answer: the output being scored (e.g. the greedy answer).
        samples: N sampled outputs for the same prompt.
        answer_logprobs: token log-probs of ``answer`` (for MSP), when known.
        sample_logprobs: token log-probs of each sample (for predictive entropy), when known.
    """

    prompt: str
    answer: str
    samples: list[str]
    answer_logprobs: list[float] | None = None
    sample_logprobs: list[list[float] | None] = field(default_factory=list)


class MaximumSequenceProbability:
    """-log p(answer): the negative sum of the answer's token log-probs."""

    name = "msp"

    def __call__(self, items: Sequence[SampleSet]) -> list[float]:
        return [-sum(it.answer_logprobs) if it.answer_logprobs else float("nan") for it in items]


class PredictiveEntropy:
    """Monte-Carlo predictive entropy: mean over samples of -log p(sample) (sum of token log-probs).

    Args:
        normalise: divide each sample's log-prob by its length (default False).
    """

    name = "predictive_entropy"

    def __init__(self, normalise: bool = False):
        self.normalise = normalise

    def __call__(self, items: Sequence[SampleSet]) -> list[float]:
        out = []
        for it in items:
            lps = [lp for lp in it.sample_logprobs if lp]
            vals = [-sum(lp) / (len(lp) if self.normalise else 1) for lp in lps]
            out.append(sum(vals) / len(vals) if vals else float("nan"))
        return out


def _words(text: str) -> list[str]:
    return re.findall(r"\w+", text.lower())


def rouge_l(a: str, b: str) -> float:
    """ROUGE-L F1 between two texts over lower-cased word tokens.

    Example:
        >>> rouge_l("the cat sat", "the cat sat down")
        0.857...
    """
    x, y = _words(a), _words(b)
    if not x or not y:
        return float(x == y)
    prev = [0] * (len(y) + 1)
    for xi in x:
        cur = [0]
        for j, yj in enumerate(y):
            cur.append(prev[j] + 1 if xi == yj else max(prev[j + 1], cur[j]))
        prev = cur
    lcs = prev[-1]
    if lcs == 0:
        return 0.0
    p, r = lcs / len(x), lcs / len(y)
    return 2 * p * r / (p + r)


class LexicalSimilarity:
    """1 - mean ROUGE-L F1 between the answer and each sample (LM-Polygraph's LexicalSimilarity)."""

    name = "lexical_similarity"

    def __call__(self, items: Sequence[SampleSet]) -> list[float]:
        return [1 - sum(rouge_l(it.answer, s) for s in it.samples) / len(it.samples) if it.samples
                else float("nan") for it in items]


def greedy_clusters(vectors: Any, threshold: float) -> list[int]:
    """Cluster id of each unit-norm vector: joins the first earlier cluster whose representative
    (its first member) has cosine >= threshold, else starts a new one."""
    reps: list[int] = []
    ids: list[int] = []
    for i in range(len(vectors)):
        hit = next((c for c, r in enumerate(reps) if float(vectors[i] @ vectors[r]) >= threshold), None)
        if hit is None:
            reps.append(i)
            hit = len(reps) - 1
        ids.append(hit)
    return ids


class EmbeddingSemanticEntropy:
    """Semantic entropy with embedding clusters: samples grouped at cosine >= ``threshold`` with a
    sentence encoder, entropy of the cluster-size distribution (discrete semantic entropy).

    Args:
        encoder: a sentence-transformers model (default: the embedded MiniLM, loaded on first use).
        threshold: cosine for "same meaning" (default 0.85).
    """

    name = "semantic_entropy"

    def __init__(self, encoder: Any = None, threshold: float = 0.85):
        self.encoder = encoder
        self.threshold = threshold

    def __call__(self, items: Sequence[SampleSet]) -> list[float]:
        if self.encoder is None:
            from trustlab.models.embedded import load_sentence_encoder

            self.encoder = load_sentence_encoder()
        texts = [s for it in items for s in it.samples]
        vecs = self.encoder.encode(texts, normalize_embeddings=True, convert_to_numpy=True) if texts else []
        out, pos = [], 0
        for it in items:
            ids = greedy_clusters(vecs[pos:pos + len(it.samples)], self.threshold)
            pos += len(it.samples)
            n = len(ids)
            out.append(-sum((ids.count(c) / n) * math.log(ids.count(c) / n) for c in set(ids)) if n else float("nan"))
        return out


class SelfCheckNLI:
    """SelfCheckGPT-NLI scoring rule: mean over samples of P(contradiction | premise = sample,
    hypothesis = answer), with P over {entailment, contradiction}, so = 1 - P(entailment).

    Args:
        nli: an entailment scorer (see :mod:`trustlab.uncertainty.nli`).
    """

    name = "selfcheck_nli"

    def __init__(self, nli: Any):
        self.nli = nli

    def __call__(self, items: Sequence[SampleSet]) -> list[float]:
        pairs = [(s, it.answer) for it in items for s in it.samples]
        probs = iter(self.nli.entail(pairs))
        return [sum(1 - next(probs) for _ in it.samples) / len(it.samples) if it.samples else float("nan")
                for it in items]
