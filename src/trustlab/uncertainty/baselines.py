"""Sequence-level uncertainty baselines, LM-Polygraph style: small classes, higher = more uncertain.

Every estimator takes a batch of :class:`SampleSet` (an answer to score plus N sampled outputs for
the same prompt) and returns one float per item, so NLI and embedding calls batch across items.
Estimators that read samples refuse a batch whose samples cannot vary (:func:`check_samples_vary`).
"""

from __future__ import annotations

import math
import re
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from trustlab.errors import CapabilityError


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


def check_samples_vary(samples: Sequence[Sequence[str]], *, method: str, sampling: bool | None = None) -> None:
    """Refuse (or flag) a batch whose sampled outputs cannot vary.

    When every prompt with two or more samples got the same text each time, the "samples" are almost
    surely one greedy answer repeated (a server that ignores the temperature), and every sampling-based
    score is a constant (CLUE ln 2, lexical similarity 0, ROC-AUC 0.5), not a measurement.

    Args:
        samples: the sampled texts, one list per prompt.
        method: named in the message.
        sampling: what the generating backend is known to do (:attr:`Capabilities.sampling`). True: it
            samples, so a model this sure is possible: warn. False or None (unknown): refuse.

    Raises:
        CapabilityError: every sample set is constant and the backend is not known to sample.

    Example:
        >>> check_samples_vary([["Paris.", "Paris."], ["4", "4"]], method="lexical similarity")
        Traceback (most recent call last):
        trustlab.errors.CapabilityError: lexical similarity: every prompt's 2 samples are identical ...
    """
    multi = [s for s in samples if len(s) >= 2]
    if not multi or any(len({t.strip() for t in s}) > 1 for s in multi):
        return
    sizes = sorted({len(s) for s in multi})
    msg = (f"{method}: every prompt's {'/'.join(map(str, sizes))} samples are identical ({len(multi)} "
           "prompt(s)), so the uncertainty would be a constant, not a measurement")
    if sampling:
        warnings.warn(msg + "; the backend does sample, so the model may really be this sure", RuntimeWarning,
                      stacklevel=3)
        return
    cause = ("the backend answers greedily at any temperature (measured: Capabilities.sampling is False)"
             if sampling is False else "the backend most likely ignores the temperature (a server answering greedily)")
    raise CapabilityError(f"{msg}: {cause}. Use a backend that samples; if these samples are genuine, say so: "
                          "sampling=True on the estimator, or a model handle whose capabilities have sampling=True.")


class _SampleBased:
    """An estimator that reads sampled outputs: refuses a batch whose samples cannot vary.

    Args:
        sampling: whether the backend that generated the samples is known to sample
            (:attr:`Capabilities.sampling`; default None, unknown). See :func:`check_samples_vary`.
    """

    name = "sample_based"

    def __init__(self, *, sampling: bool | None = None):
        self.sampling = sampling

    def __call__(self, items: Sequence[SampleSet]) -> list[float]:
        check_samples_vary([it.samples for it in items], method=self.name, sampling=self.sampling)
        return self._score(items)

    def _score(self, items: Sequence[SampleSet]) -> list[float]:
        raise NotImplementedError


class MaximumSequenceProbability:
    """-log p(answer): the negative sum of the answer's token log-probs."""

    name = "msp"

    def __call__(self, items: Sequence[SampleSet]) -> list[float]:
        return [-sum(it.answer_logprobs) if it.answer_logprobs else float("nan") for it in items]


class PredictiveEntropy(_SampleBased):
    """Monte-Carlo predictive entropy: mean over samples of -log p(sample) (sum of token log-probs).

    Args:
        normalise: divide each sample's log-prob by its length (default False).
        sampling: see :class:`_SampleBased`.
    """

    name = "predictive_entropy"

    def __init__(self, normalise: bool = False, *, sampling: bool | None = None):
        super().__init__(sampling=sampling)
        self.normalise = normalise

    def _score(self, items: Sequence[SampleSet]) -> list[float]:
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


class LexicalSimilarity(_SampleBased):
    """1 - mean ROUGE-L F1 between the answer and each sample (LM-Polygraph's LexicalSimilarity).

    Args:
        sampling: see :class:`_SampleBased`.
    """

    name = "lexical_similarity"

    def _score(self, items: Sequence[SampleSet]) -> list[float]:
        return [1 - sum(rouge_l(it.answer, s) for s in it.samples) / len(it.samples) if it.samples
                else float("nan") for it in items]


def first_fit_clusters(n: int, same: Callable[[int, int], bool]) -> list[int]:
    """Cluster id of each of ``n`` items: item i joins the first earlier cluster whose representative r
    (its first member) has ``same(i, r)``, else starts a new one.

    Example:
        >>> first_fit_clusters(3, lambda i, r: i % 2 == r % 2)
        [0, 1, 0]
    """
    reps: list[int] = []
    ids: list[int] = []
    for i in range(n):
        hit = next((c for c, r in enumerate(reps) if same(i, r)), None)
        if hit is None:
            reps.append(i)
            hit = len(reps) - 1
        ids.append(hit)
    return ids


def cluster_entropy(ids: Sequence[int]) -> float:
    """Entropy of the cluster frequencies (discrete semantic entropy); NaN for no items."""
    n = len(ids)
    return -sum((ids.count(c) / n) * math.log(ids.count(c) / n) for c in set(ids)) if n else float("nan")


def greedy_clusters(vectors: Any, threshold: float) -> list[int]:
    """Cluster id of each unit-norm vector: joins the first earlier cluster whose representative
    (its first member) has cosine >= threshold, else starts a new one."""
    return first_fit_clusters(len(vectors), lambda i, r: float(vectors[i] @ vectors[r]) >= threshold)


class EmbeddingSemanticEntropy(_SampleBased):
    """Semantic entropy with embedding clusters: samples grouped at cosine >= ``threshold`` with a
    sentence encoder, entropy of the cluster-size distribution (discrete semantic entropy).

    Args:
        encoder: a sentence-transformers model (default: the embedded MiniLM, loaded on first use).
        threshold: cosine for "same meaning" (default 0.85).
        sampling: see :class:`_SampleBased`.
    """

    name = "semantic_entropy"

    def __init__(self, encoder: Any = None, threshold: float = 0.85, *, sampling: bool | None = None):
        super().__init__(sampling=sampling)
        self.encoder = encoder
        self.threshold = threshold

    def _score(self, items: Sequence[SampleSet]) -> list[float]:
        if self.encoder is None:
            from trustlab.models.embedded import load_sentence_encoder

            self.encoder = load_sentence_encoder()
        texts = [s for it in items for s in it.samples]
        vecs = self.encoder.encode(texts, normalize_embeddings=True, convert_to_numpy=True) if texts else []
        out, pos = [], 0
        for it in items:
            out.append(cluster_entropy(greedy_clusters(vecs[pos:pos + len(it.samples)], self.threshold)))
            pos += len(it.samples)
        return out


def entailment_clusters(texts: Sequence[str], entail: dict[tuple[str, str], float], threshold: float = 0.5) -> list[int]:
    """Cluster id of each text by bidirectional entailment (Kuhn et al. 2023, Algorithm 1): a text joins
    the first earlier cluster whose representative (its first member) it entails and is entailed by, each
    direction with P(entailment) > ``threshold``; identical texts (after stripping) always join. A pair
    the NLI could not judge (NaN) does not join.

    Example:
        >>> entailment_clusters(["a", "b", "a"], {("a", "b"): 0.9, ("b", "a"): 0.2})
        [0, 1, 0]
    """
    keys = [t.strip() for t in texts]

    def same(i: int, r: int) -> bool:
        a, b = keys[i], keys[r]
        return a == b or (entail.get((a, b), math.nan) > threshold and entail.get((b, a), math.nan) > threshold)

    return first_fit_clusters(len(keys), same)


class SemanticEntropy(_SampleBased):
    """Semantic entropy with NLI clusters (Kuhn et al. 2023; Farquhar et al. 2024's discrete form), as
    LM-Polygraph computes it: the entailment matrix of every ordered pair of distinct samples in one
    batched NLI call, greedy bidirectional-entailment clusters (:func:`entailment_clusters`), entropy of
    the cluster frequencies. Black-box: it needs no log-probs.

    With the NLI back-end CLUE uses (:mod:`trustlab.uncertainty.nli`, e.g. LLM-as-NLI), this is the
    sequence-level peer of CLUE on equal terms: same samples, same entailment scorer.

    Args:
        nli: an entailment scorer (``entail(pairs) -> P(entailment)``).
        threshold: P(entailment) each direction must exceed to merge (default 0.5).
        sampling: see :class:`_SampleBased`.

    Example:
        >>> SemanticEntropy(LLMNLI(model))([SampleSet("Capital of France?", "Paris", ["Paris", "Lyon", "Paris."])])
    """

    name = "semantic_entropy_nli"

    def __init__(self, nli: Any, threshold: float = 0.5, *, sampling: bool | None = None):
        super().__init__(sampling=sampling)
        self.nli = nli
        self.threshold = threshold

    def _score(self, items: Sequence[SampleSet]) -> list[float]:
        pairs: list[tuple[str, str]] = []
        for it in items:
            distinct = list(dict.fromkeys(s.strip() for s in it.samples))
            pairs += [(a, b) for a in distinct for b in distinct if a != b]
        pairs = list(dict.fromkeys(pairs))
        entail = dict(zip(pairs, self.nli.entail(pairs), strict=True)) if pairs else {}
        return [cluster_entropy(entailment_clusters(it.samples, entail, self.threshold)) for it in items]


class SelfCheckNLI(_SampleBased):
    """SelfCheckGPT-NLI scoring rule: mean over samples of P(contradiction | premise = sample,
    hypothesis = answer), with P over {entailment, contradiction}, so = 1 - P(entailment). Pairs the
    NLI scorer could not judge (NaN: an LLM answer that named no label) are left out of the mean.

    Args:
        nli: an entailment scorer (see :mod:`trustlab.uncertainty.nli`).
        sampling: see :class:`_SampleBased`.
    """

    name = "selfcheck_nli"

    def __init__(self, nli: Any, *, sampling: bool | None = None):
        super().__init__(sampling=sampling)
        self.nli = nli

    def _score(self, items: Sequence[SampleSet]) -> list[float]:
        probs = iter(self.nli.entail([(s, it.answer) for it in items for s in it.samples]))
        out = []
        for it in items:
            judged = [1 - p for p in (next(probs) for _ in it.samples) if p == p]  # p != p: NaN, not judged
            out.append(sum(judged) / len(judged) if judged else float("nan"))
        return out
