"""CLUE: concept-level uncertainty estimation.

What differs from sequence-level uncertainty: instead of one number for a whole output, an LLM
lists the concepts of each of N sampled outputs, equivalent concepts are merged, and each concept
gets its own uncertainty from how strongly the N samples entail it:

    s_ij = P(entail | premise = o_i, hypothesis = "This example is {c_j}.")
    U(c_j) = -(1/N) * sum_i log s_ij            (higher = more uncertain)

An output's score is ``max`` (or ``mean``) of U over its own concepts. Concepts the extractor copied
from the one-shot example (not from the text) are dropped and counted (``echoed_concepts``); an
extraction left with no concept is a bad extraction, and ``valid_rate`` is the share of good ones.

References:
    Yu-Hsiang Wang, Andrew Bai, Che-Ping Tsai, Cho-Jui Hsieh. "CLUE: Concept-Level Uncertainty
    Estimation for Large Language Models". arXiv 2409.03021 (2024).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from trustlab.errors import CapabilityError
from trustlab.models.base import ModelHandle, Prompt, plain_text
from trustlab.uncertainty.baselines import check_samples_vary, greedy_clusters
from trustlab.uncertainty.concepts import example_copies, extraction_prompt, parse_concepts
from trustlab.uncertainty.nli import HFNLI, EntailmentScorer, load_nli

HYPOTHESIS = "This example is {concept}."


def concept_uncertainty(entail: np.ndarray) -> np.ndarray:
    """U for each concept from the (N samples, C concepts) entailment matrix: -mean_i log clip(s_ij).
    NaN entries (pairs the NLI scorer could not judge) are left out; a concept with none judged is NaN.

    Example:
        >>> concept_uncertainty(np.array([[1.0, 0.5], [1.0, 0.5]]))
        array([-0.        ,  0.69314718])
    """
    logs = np.log(np.clip(np.asarray(entail, dtype=float), 1e-6, 1.0))  # (N, C); NaN stays NaN
    judged = ~np.isnan(logs)
    total = np.where(judged, logs, 0.0).sum(axis=0)
    return np.where(judged.any(axis=0), -total / np.maximum(judged.sum(axis=0), 1), np.nan)


def pool_concepts(concepts: Sequence[str], vectors: np.ndarray | None, *, threshold: float = 0.85,
                  same: Callable[[int, int], bool] | None = None, band: tuple[float, float] | None = None) -> list[int]:
    """Merge equivalent concepts; returns a cluster id per concept (the first member represents it).

    Args:
        concepts: the concepts, in first-seen order.
        vectors: their unit-norm embeddings (None: only ``same`` decides).
        threshold: cosine at or above which two concepts are the same.
        same: a judge ``(i, j) -> bool`` (e.g. bidirectional entailment). Without ``vectors`` it
            decides every pair; with them it breaks ties for cosines inside ``band``.
        band: (low, high) cosine range handed to ``same`` (default: none).

    Example:
        >>> pool_concepts(["Paris", "paris city", "France"], vecs)
        [0, 0, 1]
    """
    if vectors is None:
        if same is None:
            raise ValueError("pooling needs embeddings or a judge")
        reps: list[int] = []
        ids = []
        for i in range(len(concepts)):
            hit = next((c for c, r in enumerate(reps) if same(r, i)), None)
            if hit is None:
                reps.append(i)
                hit = len(reps) - 1
            ids.append(hit)
        return ids
    if same is None or band is None:
        return greedy_clusters(vectors, threshold)
    reps, ids = [], []
    for i in range(len(concepts)):
        hit = None
        for c, r in enumerate(reps):
            cos = float(vectors[i] @ vectors[r])
            if cos >= threshold or (band[0] <= cos < band[1] and same(r, i)):
                hit = c
                break
        if hit is None:
            reps.append(i)
            hit = len(reps) - 1
        ids.append(hit)
    return ids


@dataclass
class ConceptScore:
    """One pooled concept: its uncertainty, per-sample entailment, where it came from, its aliases."""

    concept: str
    uncertainty: float
    entailment: list[float]
    sources: list[int]
    aliases: list[str] = field(default_factory=list)


@dataclass
class ConceptReport:
    """CLUE's result for one prompt.

    Attributes:
        prompt: the prompt (plain text).
        answer: the scored output (None when only samples were given).
        samples: the N sampled outputs.
        concepts: pooled concepts, most uncertain first (sources: sample indices, -1 = the answer).
        answer_concepts: the pooled concepts of the answer.
        score: output-level score (``agg`` of U over the answer's concepts; over all concepts when there
            is no answer or its extraction failed); NaN when no concept was extracted at all.
        bad_extractions: extractions that gave no valid concept (counted, never fatal).
        n_extractions: extractions attempted.
        echoed_concepts: concepts dropped as copies of the one-shot example, one entry per copy.
    """

    prompt: str
    answer: str | None
    samples: list[str]
    concepts: list[ConceptScore]
    answer_concepts: list[str]
    score: float
    bad_extractions: int
    n_extractions: int
    echoed_concepts: list[str] = field(default_factory=list)

    @property
    def valid_rate(self) -> float | None:
        """Share of extractions that gave at least one valid concept (None when none was attempted)."""
        return 1 - self.bad_extractions / self.n_extractions if self.n_extractions else None

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "valid_rate": self.valid_rate}

    def table(self) -> list[dict[str, Any]]:
        """Rows for printing: concept, U, mean entailment, in the answer?"""
        return [{"concept": c.concept, "U": round(c.uncertainty, 4), "mean_entail": round(float(np.mean(c.entailment)), 4),
                 "in_answer": c.concept in self.answer_concepts, "aliases": ", ".join(c.aliases[1:])}
                for c in self.concepts]


class CLUE:
    """Concept-level uncertainty of an LLM's answers (see the module docstring).

    Three roles, each any handle: ``llm`` (the model under test: its answers are scored), ``extractor``
    (lists the concepts) and the NLI (scores entailment). The extractor and an LLM-as-NLI default to
    ``llm``; give other handles to let e.g. a larger model extract and judge a small model's answers.

    Args:
        llm: the model under test (any backend): it answers (greedy and N samples).
        nli: entailment scorer: ``"llm"`` (default: ``llm`` reads label-token probabilities), another
            model handle (LLM-as-NLI on that model), a path to a Hugging Face NLI classifier, or an
            object with ``entail(pairs)`` (see :func:`~trustlab.uncertainty.nli.load_nli`).
        embedder: sentence encoder for pooling (default: the embedded MiniLM, loaded when needed).
        extractor: the model that lists concepts (default: ``llm``).
        n_samples: N sampled outputs (default 5).
        temperature: sampling temperature (default 1.0); top_p 1.0.
        max_new_tokens: tokens per output (default 64).
        extract_max_new_tokens: tokens per concept list (default 48).
        max_concepts: concepts kept per extraction (default 12).
        pooler: ``"cosine"`` (embedding cosine >= threshold), ``"nli"`` (both-way entailment > 0.5)
            or ``"auto"`` (default: nli with a real NLI classifier, else cosine).
        threshold: cosine for merging (default 0.85).
        tie_band: with the cosine pooler, cosines in this (low, high) range go to the NLI scorer as a
            tie-breaker (both-way entailment > 0.5); default None (no tie-breaker).
        agg: ``"max"`` (default) or ``"mean"`` of U over the answer's concepts.
        seed: sampling seed.

    Example:
        >>> clue = CLUE(load_model(), n_samples=5)
        >>> report = clue.estimate("Answer in one sentence with details: who founded Apple?")
        >>> report.table()[:3]
        >>> judge = load_model("embedded:qwen2.5-coder-1.5b")     # extractor and NLI: another model
        >>> CLUE(load_model(), nli=judge, extractor=judge).roles()["nli"]
        'llm-nli:embedded:Qwen2.5-Coder-1.5B-Instruct'
    """

    def __init__(self, llm: ModelHandle, nli: Any = "llm", embedder: Any = None, extractor: ModelHandle | None = None,
                 *, n_samples: int = 5, temperature: float = 1.0, max_new_tokens: int = 64,
                 extract_max_new_tokens: int = 48, max_concepts: int = 12, pooler: str = "auto", threshold: float = 0.85,
                 tie_band: tuple[float, float] | None = None, agg: str = "max", seed: int | None = None):
        if agg not in ("max", "mean"):
            raise ValueError(f"agg must be 'max' or 'mean', got {agg!r}")
        if pooler not in ("auto", "cosine", "nli"):
            raise ValueError(f"pooler must be 'auto', 'cosine' or 'nli', got {pooler!r}")
        self.llm = llm
        self.nli: EntailmentScorer = load_nli(nli, llm)
        self.embedder = embedder
        self.extractor = extractor or llm
        self.n_samples = n_samples
        self.temperature = temperature
        self.max_new_tokens = max_new_tokens
        self.extract_max_new_tokens = extract_max_new_tokens
        self.max_concepts = max_concepts
        self.pooler = ("nli" if isinstance(self.nli, HFNLI) else "cosine") if pooler == "auto" else pooler
        self.threshold = threshold
        self.tie_band = tie_band
        self.agg = agg
        self.seed = seed

    def roles(self) -> dict[str, str]:
        """The name of the model (or scorer) in each role: model, extractor, nli."""
        return {"model": self.llm.name, "extractor": self.extractor.name, "nli": self.nli.name}

    # ------------------------------------------------------------------ entry points
    def estimate(self, prompt: Prompt) -> ConceptReport:
        """Sample N outputs and a greedy answer for ``prompt`` and score them."""
        return self.estimate_many([prompt])[0]

    def estimate_many(self, prompts: Sequence[Prompt]) -> list[ConceptReport]:
        """:meth:`estimate` for many prompts, every model step batched across prompts."""
        prompts = list(prompts)
        if self.n_samples > 1 and self.temperature > 0:
            self.llm.capabilities.require_sampling(method="CLUE")
        greedy = self.llm.generate(prompts, max_new_tokens=self.max_new_tokens, temperature=0.0)
        samples = self.llm.generate(prompts, max_new_tokens=self.max_new_tokens, temperature=self.temperature,
                                    top_p=1.0, n=self.n_samples, seed=self.seed)
        return self.estimate_from_samples_many([
            {"prompt": plain_text(p), "answer": g[0].text, "samples": [s.text for s in row]}
            for p, g, row in zip(prompts, greedy, samples, strict=True)])

    def estimate_from_samples(self, samples: Sequence[str], answer: str | None = None, prompt: str = "") -> ConceptReport:
        """Post-hoc: score stored generations without running the generator.

        Example:
            >>> clue.estimate_from_samples(["Jobs founded Apple.", "Wozniak and Jobs founded Apple."])
        """
        return self.estimate_from_samples_many([{"prompt": prompt, "answer": answer, "samples": list(samples)}])[0]

    def estimate_from_jsonl(self, path: str) -> list[ConceptReport]:
        """Post-hoc scoring of a JSONL file of saved generations, one prompt per line:
        ``{"prompt": str, "samples": [str | {"text": str}], "answer": str | {"text": str} | null}``.

        Example:
            >>> clue.estimate_from_jsonl("runs/generations.jsonl")
        """
        from trustlab.report import read_jsonl

        def text(x: Any) -> str:
            return x["text"] if isinstance(x, dict) else str(x)

        items = []
        for k, row in enumerate(read_jsonl(path)):
            if not isinstance(row.get("samples"), list) or not row["samples"]:
                raise ValueError(f"{path}: line {k + 1} needs a non-empty 'samples' list")
            answer = row.get("answer")
            items.append({"prompt": str(row.get("prompt", "")), "samples": [text(s) for s in row["samples"]],
                          "answer": None if answer is None else text(answer)})
        if not items:
            raise ValueError(f"{path} holds no generations")
        return self.estimate_from_samples_many(items)

    def estimate_from_samples_many(self, items: Sequence[dict[str, Any]]) -> list[ConceptReport]:
        """Post-hoc scoring of many ``{"prompt", "samples": [...], "answer": optional}`` items, batched."""
        items = [{"prompt": it.get("prompt", ""), "answer": it.get("answer"), "samples": list(it["samples"])}
                 for it in items]
        if any(not it["samples"] for it in items):
            raise ValueError("every item needs at least one sample")
        check_samples_vary([it["samples"] for it in items], method="CLUE", sampling=self.llm.capabilities.sampling)
        extracted, echoed = self._extract([t for it in items for t in self._texts(it)])
        pooled = self._pool_many(items, [[extracted[t] for t in self._texts(it)] for it in items])
        pairs = [(s, HYPOTHESIS.format(concept=c)) for it, (reps, *_) in zip(items, pooled, strict=True)
                 for c in reps for s in it["samples"]]
        scored = self.nli.entail(pairs)
        if scored and all(math.isnan(x) for x in scored):
            raise CapabilityError(
                f"CLUE: the NLI scorer {self.nli.name!r} judged none of the {len(scored)} (sample, concept) pairs "
                "(a generated answer that is not entailment / neutral / contradiction is invalid), so every "
                "uncertainty would be undefined. Use an NLI classifier (nli=PATH) or a model that follows the "
                "NLI prompt.")
        probs = iter(scored)
        reports = []
        for it, (reps, aliases, sources, answer_reps) in zip(items, pooled, strict=True):
            n = len(it["samples"])
            mat = np.array([[next(probs) for _ in range(n)] for _ in reps]).reshape(len(reps), n).T  # (N, C)
            u = concept_uncertainty(mat) if reps else np.zeros(0)
            scores = [ConceptScore(c, float(u[j]), mat[:, j].tolist(), sources[j], aliases[j]) for j, c in enumerate(reps)]
            scores.sort(key=lambda c: (math.isnan(c.uncertainty), -c.uncertainty))  # unjudged (NaN) last
            texts = self._texts(it)
            bad = sum(not extracted[t] for t in texts)
            reports.append(ConceptReport(it["prompt"], it["answer"], it["samples"], scores, answer_reps,
                                         self._aggregate(scores, answer_reps), bad, len(texts),
                                         [c for t in texts for c in echoed[t]]))
        return reports

    # ------------------------------------------------------------------ steps
    @staticmethod
    def _texts(item: dict[str, Any]) -> list[str]:
        return ([item["answer"]] if item["answer"] is not None else []) + item["samples"]

    def _extract(self, texts: list[str]) -> tuple[dict[str, list[str]], dict[str, list[str]]]:
        """Valid concepts and dropped example copies of each distinct text (one extractor call per
        distinct non-empty text)."""
        todo = [t for t in dict.fromkeys(texts) if t.strip()]
        out: dict[str, list[str]] = {t: [] for t in texts}
        echoed: dict[str, list[str]] = {t: [] for t in texts}
        if todo:
            answers = self.extractor.generate([extraction_prompt(t.strip()) for t in todo],
                                              max_new_tokens=self.extract_max_new_tokens, temperature=0.0)
            for t, a in zip(todo, answers, strict=True):
                concepts = parse_concepts(a[0].text, self.max_concepts)
                copied = example_copies(concepts, t)
                out[t] = [c for c, x in zip(concepts, copied, strict=True) if not x]
                echoed[t] = [c for c, x in zip(concepts, copied, strict=True) if x]
        return out, echoed

    def _pool_many(self, items: list[dict[str, Any]], per_texts: list[list[list[str]]]) -> list[tuple]:
        """For each item: pooled representatives, their aliases and sources, and the answer's
        representatives. The concepts of all items are embedded in one call and the pairs that need an
        entailment judge are scored in one call."""
        flats: list[list[str]] = []
        origins: list[list[int]] = []
        for item, per_text in zip(items, per_texts, strict=True):
            offset = 0 if item["answer"] is None else 1
            flats.append([c for concepts in per_text for c in concepts])
            origins.append([k - offset for k, concepts in enumerate(per_text) for _ in concepts])  # -1 = the answer
        vecs: list[np.ndarray | None] = [None] * len(items)
        every = [c for flat in flats for c in flat]
        if self.pooler == "cosine" and every:
            if self.embedder is None:
                from trustlab.models.embedded import load_sentence_encoder

                self.embedder = load_sentence_encoder()
            stacked = self.embedder.encode(every, normalize_embeddings=True, convert_to_numpy=True)  # (sum C, D)
            bounds = np.cumsum([0] + [len(f) for f in flats])
            vecs = [stacked[a:b] for a, b in zip(bounds[:-1], bounds[1:], strict=True)]
        judges = self._both_ways_many(flats, vecs) if (self.pooler == "nli" or self.tie_band) else [None] * len(items)
        return [self._pool_one(flat, origin, v, same)
                for flat, origin, v, same in zip(flats, origins, vecs, judges, strict=True)]

    def _pool_one(self, flat: list[str], origin: list[int], vecs: np.ndarray | None,
                  same: Callable[[int, int], bool] | None) -> tuple:
        if not flat:
            return [], [], [], []
        ids = pool_concepts(flat, vecs, threshold=self.threshold, same=same, band=self.tie_band)
        members = {cid: [i for i, x in enumerate(ids) if x == cid] for cid in dict.fromkeys(ids)}
        reps = [flat[m[0]] for m in members.values()]
        aliases = [list(dict.fromkeys(flat[i] for i in m)) for m in members.values()]
        sources = [sorted({origin[i] for i in m}) for m in members.values()]
        answer_reps = list(dict.fromkeys(flat[members[ids[i]][0]] for i in range(len(flat)) if origin[i] == -1))
        return reps, aliases, sources, answer_reps

    def _both_ways_many(self, flats: list[list[str]],
                        vecs: list[np.ndarray | None]) -> list[Callable[[int, int], bool]]:
        """A pair judge per item (both-way entailment > 0.5), the pairs of all items scored in one batch."""
        needs = [[(i, j) for i in range(len(flat)) for j in range(i + 1, len(flat))
                  if v is None or (self.tie_band and self.tie_band[0] <= float(v[i] @ v[j]) < self.tie_band[1])]
                 for flat, v in zip(flats, vecs, strict=True)]
        probs = self.nli.entail([(flat[a], flat[b]) for flat, need in zip(flats, needs, strict=True)
                                 for i, j in need for a, b in ((i, j), (j, i))])
        judges, pos = [], 0
        for need in needs:
            ok = {p: probs[pos + 2 * k] > 0.5 and probs[pos + 2 * k + 1] > 0.5 for k, p in enumerate(need)}
            pos += 2 * len(need)
            judges.append(lambda i, j, ok=ok: ok.get((min(i, j), max(i, j)), False))
        return judges

    def _aggregate(self, scores: list[ConceptScore], answer_reps: list[str]) -> float:
        chosen = [c.uncertainty for c in scores if c.concept in answer_reps] or [c.uncertainty for c in scores]
        chosen = [u for u in chosen if not math.isnan(u)]
        if not chosen:
            return math.nan
        return max(chosen) if self.agg == "max" else float(np.mean(chosen))
