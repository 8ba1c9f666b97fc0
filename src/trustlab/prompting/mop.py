"""Mixture-of-Prompts (MoP): a task's input space split into regions, each with its own expert prompt.

A single demo-free instruction (APE) must cover every kind of input a task has. MoP instead clusters the
demo pool by the embeddings of the demo *inputs* (the kernel-regression view of in-context learning),
gives each cluster (an *expert*) its own demos and its own instruction, and answers a query with the
expert whose centroid is nearest to the query's embedding. What differs from APE:

1. Demo assignment ("Kauto"): KMeans for k = 2 .. min(n_experts, |D|) on the embedded inputs
   (``"Input: {x}\\nOutput: "``), ``k* = argmin inertia_k / inertia_1 + k_penalty * k`` (inertia_1: the
   total sum of squares); every expert gets ``floor(|D| / n_experts)`` demos: a larger cluster is
   subsampled (the rest are *trimmed* demos), a smaller one tiled (demos repeat).
2. Instruction proposals ("compensate"): for expert i, APE-style induction prompts built from 5 demos
   drawn from the other experts' demos and the trimmed demos, i.e. what expert i's own demos do not show.
   ``budget`` is the total number of these generation calls, split evenly over the experts.
3. Every candidate is scored *alone* (no demos) on ``num_samples`` eval items; the top ``n_inits`` plus
   the empty instruction form one shared list (ranked without demos, used with demos: by design).
4. Region-based joint search: for each expert, each of those candidates is scored with the expert's demos
   on the eval items routed to it (the first ``num_samples`` of them), padded with the eval items nearest
   to its centroid (cosine) up to ``num_samples``; the best one stays (ties: the better one alone).
   [recon] Padded items are answered by this expert: under routing their answers would not depend on the
   candidate, so they could not help choose. The experts' searches are therefore independent, and all of
   them go to the model in one batched call.

[observed] With MiniLM embeddings (384-d, unit length) inertia falls slowly with k (inertia_2 / inertia_1
is 0.74-0.98 on the mixed tasks of :mod:`trustlab.prompting.mop_tasks`, 100 demos, seeds 0-2), so the
0.02 penalty lets Kauto take k* above the number of generators (2-4 for two, 7-9 for three), splitting
a region over several experts; 88-100% of the demos share their cluster's majority generator. On numbers
vs single words MiniLM gives k* = N_max (the spec's k = 2 holds for well-separated embeddings only).
Baselines (APE, APE-random, APE-kcen, the bare prompt) live in :mod:`trustlab.prompting.mop_baselines`.

Model calls are counted per prompt: ``generation`` (instruction proposals) and ``scoring`` (answers to eval
items). :meth:`MoP.projected_calls` gives both before any call; they are exact when every proposal is
valid and distinct (invalid or duplicate proposals are not scored, so the actual count can only be lower).
A proposal that is empty, a fragment, echoes the demos or the prompt's format is invalid and counted.

Example:
    >>> from trustlab.models import load_model
    >>> from trustlab.prompting.mop import compile
    >>> mop = compile(train, val, model=load_model("embedded"), budget=20)
    Mixture-of-Prompts: 3 experts; projected model calls: 20 generation + 700 scoring
    >>> print(mop.describe())
    >>> mop.predict(["3 + 4", "banana"])
    >>> mop.save("mop.json"); same = MoPModel.load("mop.json", model=llm)

References:
    Wang, An, Cheng, Zhou, Hwang, Hsieh. "One Prompt is not Enough: Automated Construction of a
    Mixture-of-Expert Prompts". ICML 2024. https://arxiv.org/abs/2407.00256
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from trustlab.errors import EmptyInputError, TrustlabError, require
from trustlab.validity import ValidityCounter, copies_example, echoes_source, is_fragment

Example = tuple[str, str]
Scorer = Callable[[str, str], float]
FORMAT = "trustlab.mop/1"
MINILM_ID = "all-MiniLM-L6-v2"
#: answers end where the model starts the next demo (only the first line is read; this saves the decoding)
ANSWER_STOP = ("\nInput:",)
INDUCTION = ("I gave a friend an instruction. Following it, they turned each input below into the output "
             "next to it.\n\n{demos}\n\nThe instruction was to")


class ExamplesError(TrustlabError, ValueError):
    """Examples that are not (input, output) pairs of non-empty strings."""


@dataclass
class MoPConfig:
    """Settings of a MoP fit (defaults as the official code runs them).

    Attributes:
        n_experts: N_max, the most experts Kauto may choose (default 10).
        k_penalty: the per-expert penalty of Kauto (default 0.02).
        n_inits: candidates kept after scoring them alone, besides the empty instruction (default 4).
        budget: generation calls for instruction proposals, in total (default 20).
        demos_per_subsample: demos shown in one induction prompt (default 5).
        num_samples: eval items per scored candidate, at most |valset| (default 20).
        gen_temperature, gen_top_p, gen_max_new_tokens: sampling of proposals (0.9, 0.9, 50).
        answer_max_new_tokens: tokens of one answer, greedy (default 32).
        chat_template: send prompts through the model's chat template (default False: raw completion,
            like the paper's completion model).
        seed: KMeans, demo sampling and proposal sampling seed (default 0).
    """

    n_experts: int = 10
    k_penalty: float = 0.02
    n_inits: int = 4
    budget: int = 20
    demos_per_subsample: int = 5
    num_samples: int = 20
    gen_temperature: float = 0.9
    gen_top_p: float = 0.9
    gen_max_new_tokens: int = 50
    answer_max_new_tokens: int = 32
    chat_template: bool = False
    seed: int = 0

    def __post_init__(self) -> None:
        for name in ("n_experts", "budget", "num_samples", "demos_per_subsample"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")


def as_examples(data: Iterable[Any], what: str, *, at_least: int = 1) -> list[Example]:
    """``(input, output)`` pairs from pairs or ``{"input": ..., "output": ...}`` dicts.

    Raises:
        EmptyInputError: fewer than ``at_least`` examples.
        ExamplesError: an item that is not a pair of non-empty strings.
    """
    out = []
    for i, item in enumerate(data):
        pair = (item.get("input"), item.get("output")) if isinstance(item, dict) else \
            tuple(item) if isinstance(item, (list, tuple)) else ()
        if len(pair) != 2 or not all(isinstance(s, str) and s.strip() for s in pair):
            raise ExamplesError(f"{what}[{i}] is not an (input, output) pair of non-empty strings: {item!r}")
        out.append((pair[0].strip(), pair[1].strip()))
    if len(out) < at_least:
        raise EmptyInputError(f"{what} has {len(out)} examples; MoP needs at least {at_least}")
    return out


def normalise_answer(text: str) -> str:
    """Lower case, outer quotes and final period dropped, single spaces, no spaces around commas."""
    text = " ".join(text.strip().lower().split()).strip("\"'`").rstrip(".").strip()
    return re.sub(r"\s*,\s*", ",", text)


def exact_match(prediction: str, target: str) -> float:
    """1.0 when the two agree after :func:`normalise_answer`, else 0.0."""
    return float(normalise_answer(prediction) == normalise_answer(target))


def demo_block(demos: Sequence[Example]) -> str:
    return "\n\n".join(f"Input: {x}\nOutput: {y}" for x, y in demos)


def render_prompt(instruction: str, demos: Sequence[Example], query: str) -> str:
    """The expert's prompt; the instruction line is left out when the instruction is empty."""
    parts = ([f"Instruction: {instruction}"] if instruction else []) + ([demo_block(demos)] if demos else [])
    return "\n\n".join([*parts, f"Input: {query}\nOutput:"])


def first_line(text: str) -> str:
    return next((line.strip() for line in text.strip().splitlines() if line.strip()), "")


def clean_proposal(text: str, demos: Sequence[Example]) -> tuple[str | None, str | None]:
    """An induced instruction from raw model text, or ``(None, reason)`` when it is not one."""
    inst = first_line(text).strip(" \"'")
    if not inst:
        return None, "empty"
    if is_fragment(inst):
        return None, "fragment"
    if re.search(r"\b(input|output)\s*:", inst, re.I) or echoes_source(inst, INDUCTION, min_words=5):
        return None, "echoes the prompt format"
    shown = [s for d in demos for s in d]
    if copies_example(inst, shown) or echoes_source(inst, " ".join(shown), min_words=4):
        return None, "echoes the demos"
    return inst, None


def embed(embedder: Any, texts: Sequence[str]) -> np.ndarray:
    """``embedder.encode(texts)`` as float64 rows of unit length. Shape (N, d)."""
    vecs = np.asarray(embedder.encode(list(texts)), dtype=np.float64)
    return vecs / np.maximum(np.linalg.norm(vecs, axis=1, keepdims=True), 1e-12)


def input_texts(inputs: Sequence[str]) -> list[str]:
    return [f"Input: {x}\nOutput: " for x in inputs]


def kauto(emb: np.ndarray, n_max: int, k_penalty: float = 0.02, seed: int = 0) -> tuple[int, np.ndarray, np.ndarray, dict]:
    """Kauto: KMeans for k = 2 .. min(n_max, N), ``k* = argmin inertia_k / inertia_1 + k_penalty * k``.

    Returns:
        ``(k*, labels (N,), centroids (k*, d), {k: score})``; k* = 1 when fewer than two inputs differ.
    """
    KMeans = require("sklearn.cluster", "vision", pip='pip install "scikit-learn>=1.3"').KMeans

    total = float(((emb - emb.mean(0)) ** 2).sum())  # inertia at k = 1
    distinct = len(np.unique(emb.round(8), axis=0))
    scores, fits = {}, {}
    for k in range(2, min(n_max, distinct) + 1):
        km = KMeans(n_clusters=k, random_state=seed, n_init="auto").fit(emb)
        scores[k] = km.inertia_ / total + k_penalty * k
        fits[k] = km
    if not scores:
        return 1, np.zeros(len(emb), dtype=int), emb.mean(0, keepdims=True), {}
    best = min(scores, key=scores.get)
    return best, fits[best].labels_.astype(int), fits[best].cluster_centers_, scores


def cap_demos(members: list[int], cap: int, rng: np.random.Generator) -> tuple[list[int], list[int]]:
    """A cluster's demo indices cut to ``cap``: subsampled (returns the trimmed rest) or tiled."""
    if len(members) > cap:
        keep = sorted(rng.choice(members, size=cap, replace=False).tolist())
        return keep, [m for m in members if m not in keep]
    return [members[i % len(members)] for i in range(cap)], []


def nearest(emb: np.ndarray, centroid: np.ndarray, routed: list[int], n: int) -> list[int]:
    """``routed`` (cut to n) padded with the rows of ``emb`` nearest to ``centroid`` by cosine, n in all."""
    chosen = list(routed[:n])
    c = centroid / max(np.linalg.norm(centroid), 1e-12)
    for i in np.argsort(-(emb @ c), kind="stable"):
        if len(chosen) >= n:
            break
        if int(i) not in chosen:
            chosen.append(int(i))
    return chosen


@dataclass
class Expert:
    """One region: its instruction, its demos and its centroid in embedding space."""

    instruction: str
    demos: list[Example]
    centroid: list[float]


@dataclass
class MoPModel:
    """A fitted mixture: experts, routing by nearest centroid, prompts and batched predictions.

    Attributes:
        experts: the experts (one for the single-prompt baselines).
        embedder_id: the embedder the centroids live in.
        config: the fit's :class:`MoPConfig` as a dict.
        info: what the fit did: Kauto scores, candidates with their scores, calls, validity.
        model: the model handle answers come from (not saved).
        embedder: the embedder routing uses (not saved; MiniLM is loaded when needed).
    """

    experts: list[Expert]
    embedder_id: str
    config: dict[str, Any] = field(default_factory=dict)
    info: dict[str, Any] = field(default_factory=dict)
    model: Any = field(default=None, repr=False, compare=False)
    embedder: Any = field(default=None, repr=False, compare=False)

    def _embedder(self) -> Any:
        if self.embedder is None:
            if self.embedder_id != MINILM_ID:
                raise TrustlabError(f"routing needs the embedder {self.embedder_id!r}: pass embedder=")
            from trustlab.models.embedded import load_sentence_encoder

            self.embedder = load_sentence_encoder()
        return self.embedder

    def route_many(self, queries: Sequence[str]) -> list[int]:
        """The expert index of each query (nearest centroid; no embedding when there is one expert)."""
        if len(self.experts) == 1:
            return [0] * len(queries)
        cents = np.asarray([e.centroid for e in self.experts])  # (k, d)
        emb = embed(self._embedder(), input_texts(queries))  # (N, d)
        return np.argmin(((emb[:, None, :] - cents[None]) ** 2).sum(-1), axis=1).astype(int).tolist()

    def route(self, query: str) -> int:
        return self.route_many([query])[0]

    def prompt(self, query: str, expert: int | None = None) -> str:
        e = self.experts[self.route(query) if expert is None else expert]
        return render_prompt(e.instruction, e.demos, query)

    def predict(self, queries: Sequence[str], model: Any = None) -> list[str]:
        """Greedy answers (first line) to ``queries``, all in one batched call."""
        llm = model or self.model
        if llm is None:
            raise TrustlabError("predict needs a model handle: MoPModel.load(path, model=...) or predict(xs, model=)")
        routes = self.route_many(queries)
        prompts = [self.prompt(q, r) for q, r in zip(queries, routes, strict=True)]
        out = llm.generate(prompts, max_new_tokens=self.config.get("answer_max_new_tokens", 32), temperature=0.0,
                           chat_template=self.config.get("chat_template", False), stop=ANSWER_STOP)
        return [first_line(g[0].text) for g in out]

    def to_json(self) -> dict[str, Any]:
        data = {"format": FORMAT, "embedder": self.embedder_id, "config": self.config, "info": self.info,
                "experts": [asdict(e) for e in self.experts]}
        return json.loads(json.dumps(data))  # plain JSON types (lists, not tuples), as load() reads them

    def save(self, path: str | Path) -> Path:
        path = Path(path)
        path.write_text(json.dumps(self.to_json(), indent=1))
        return path

    @classmethod
    def from_json(cls, data: dict[str, Any], *, model: Any = None, embedder: Any = None) -> MoPModel:
        if data.get("format") != FORMAT:
            raise TrustlabError(f"not a saved MoP model (format {data.get('format')!r}, expected {FORMAT!r})")
        experts = [Expert(e["instruction"], [tuple(d) for d in e["demos"]], list(e["centroid"]))
                   for e in data["experts"]]
        return cls(experts, data["embedder"], data.get("config", {}), data.get("info", {}), model, embedder)

    @classmethod
    def load(cls, path: str | Path, *, model: Any = None, embedder: Any = None) -> MoPModel:
        return cls.from_json(json.loads(Path(path).read_text()), model=model, embedder=embedder)

    def describe(self, max_demos: int = 3) -> str:
        calls = self.info.get("calls", {})
        lines = [f"{self.info.get('method', 'MoP')}: {len(self.experts)} expert(s), embedder {self.embedder_id}"
                 + (f", {calls.get('generation', 0)} generation + {calls.get('scoring', 0)} scoring calls"
                    if calls else "")]
        for i, e in enumerate(self.experts):
            uniq = list(dict.fromkeys(e.demos))
            lines.append(f"Expert {i}: {len(e.demos)} demos ({len(uniq)} distinct)")
            lines.append(f"  instruction: {e.instruction or '(none)'}")
            lines += [f"  demo: {x!r} -> {y!r}" for x, y in uniq[:max_demos]]
            if len(uniq) > max_demos:
                lines.append(f"  ... {len(uniq) - max_demos} more")
        return "\n".join(lines)

    __str__ = describe


class Engine:
    """Model calls shared by MoP and the APE baselines (:mod:`trustlab.prompting.mop_baselines`):
    proposals and scoring, each step in one batched call, counted per prompt."""

    def __init__(self, model: Any, scorer: Scorer, cfg: MoPConfig):
        self.model, self.scorer, self.cfg = model, scorer, cfg
        self.calls = {"generation": 0, "scoring": 0}
        self.validity = ValidityCounter()

    def propose(self, pools: list[list[Example]], counts: list[int], rng: np.random.Generator) -> list[str]:
        """Induced instructions, ``counts[i]`` prompts from 5-demo subsamples of ``pools[i]``; valid, distinct."""
        shown = []
        for pool, n in zip(pools, counts, strict=True):
            uniq = list(dict.fromkeys(pool))
            for _ in range(n):
                pick = rng.choice(len(uniq), size=min(self.cfg.demos_per_subsample, len(uniq)), replace=False)
                shown.append([uniq[j] for j in pick])
        if not shown:
            return []
        out = self.model.generate([INDUCTION.format(demos=demo_block(d)) for d in shown],
                                  max_new_tokens=self.cfg.gen_max_new_tokens, temperature=self.cfg.gen_temperature,
                                  top_p=self.cfg.gen_top_p, seed=self.cfg.seed, chat_template=self.cfg.chat_template)
        self.calls["generation"] += len(shown)
        found: list[str] = []
        for gens, demos in zip(out, shown, strict=True):
            inst, why = clean_proposal(gens[0].text, demos)
            if inst is None:
                self.validity.invalid(why)
                continue
            self.validity.valid()
            if inst not in found:
                found.append(inst)
        return found

    def score(self, jobs: list[tuple[str, list[Example], list[Example]]]) -> list[float]:
        """Mean score of each (instruction, demos, items) job, all items of all jobs in one call."""
        prompts = [render_prompt(inst, demos, x) for inst, demos, items in jobs for x, _ in items]
        if not prompts:
            return [0.0] * len(jobs)
        out = self.model.generate(prompts, max_new_tokens=self.cfg.answer_max_new_tokens, temperature=0.0,
                                  chat_template=self.cfg.chat_template, stop=ANSWER_STOP)
        self.calls["scoring"] += len(prompts)
        answers = iter(first_line(g[0].text) for g in out)
        return [float(np.mean([self.scorer(next(answers), y) for _, y in items])) if items else 0.0
                for _, _, items in jobs]

    def rank_alone(self, candidates: list[str], items: list[Example], keep: int | None = None) -> list[tuple]:
        """Candidates scored without demos, best first (ties: proposal order), cut to ``keep`` (default
        ``n_inits``), then the empty instruction (not scored alone: score None)."""
        scores = self.score([(c, [], items) for c in candidates])
        ranked = sorted(zip(candidates, scores, strict=True), key=lambda cs: -cs[1])
        return ranked[: self.cfg.n_inits if keep is None else keep] + [("", None)]


def check_sets(trainset: Iterable[Any], valset: Iterable[Any]) -> tuple[list[Example], list[Example]]:
    """The demo pool (at least two demos) and the eval set (at least one item) as pairs."""
    return as_examples(trainset, "trainset", at_least=2), as_examples(valset, "valset")


def default_embedder(embedder: Any) -> tuple[Any, str]:
    """The embedder (None: the embedded MiniLM, loaded now) and its id for saved models."""
    if embedder is None:
        from trustlab.models.embedded import load_sentence_encoder

        return load_sentence_encoder(), MINILM_ID
    return embedder, str(getattr(embedder, "name", None) or type(embedder).__name__)


class MoP:
    """Fits a Mixture-of-Prompts with one model handle (proposer and task model) and one embedder.

    Args:
        model: a trustlab model handle (``generate``).
        embedder: an object with ``encode(list[str]) -> (N, d) array`` (default: the embedded MiniLM).
        scorer: ``scorer(prediction, target) -> float in [0, 1]`` (default :func:`exact_match`).
        config: a :class:`MoPConfig`; keyword overrides replace its fields.

    Example:
        >>> mop = MoP(load_model("embedded"), budget=20).fit(train, val)
    """

    def __init__(self, model: Any, embedder: Any = None, scorer: Scorer | None = None,
                 config: MoPConfig | None = None, verbose: bool = True, **overrides: Any):
        self.model, self.scorer, self.verbose = model, scorer or exact_match, verbose
        self.cfg = MoPConfig(**{**asdict(config or MoPConfig()), **overrides})
        self.embedder, self.embedder_id = default_embedder(embedder)

    def projected_calls(self, n_val: int, k: int) -> dict[str, int]:
        """Model calls of a fit with ``k`` experts and ``n_val`` eval items, assuming every proposal is valid
        and distinct (otherwise fewer scoring calls)."""
        ns = min(self.cfg.num_samples, n_val)
        n_cands = min(self.cfg.n_inits, self.cfg.budget) + 1
        return {"generation": self.cfg.budget, "scoring": self.cfg.budget * ns + k * n_cands * ns}

    def assign(self, demos: list[Example]) -> dict[str, Any]:
        """Phase 1: Kauto clusters, capped demos per expert and the trimmed demos (no model calls)."""
        cfg, rng = self.cfg, np.random.default_rng(self.cfg.seed)
        k, labels, cents, scores = kauto(embed(self.embedder, input_texts([x for x, _ in demos])), cfg.n_experts,
                                         cfg.k_penalty, cfg.seed)
        cap = max(1, len(demos) // cfg.n_experts)
        own, trimmed = [], []
        for e in range(k):
            keep, cut = cap_demos([i for i in range(len(demos)) if labels[i] == e], cap, rng)
            own.append([demos[i] for i in keep])
            trimmed += [demos[i] for i in cut]
        return {"k": k, "labels": labels, "centroids": cents, "demos": own, "trimmed": trimmed,
                "kauto": {str(kk): round(v, 6) for kk, v in scores.items()}, "cap": cap}

    def fit(self, trainset: Iterable[Any], valset: Iterable[Any]) -> MoPModel:
        """Fit on the demo pool ``trainset`` and the eval set ``valset`` (pairs or input/output dicts).

        Raises:
            EmptyInputError: fewer than two demos or no eval items.
            ExamplesError: an item that is not an (input, output) pair.
        """
        demos, val = check_sets(trainset, valset)
        cfg, rng = self.cfg, np.random.default_rng(self.cfg.seed + 1)
        a = self.assign(demos)
        k = a["k"]
        projected = self.projected_calls(len(val), k)
        if self.verbose:
            print(f"Mixture-of-Prompts: {k} experts; projected model calls: {projected['generation']} generation "
                  f"+ {projected['scoring']} scoring")
        eng = Engine(self.model, self.scorer, cfg)
        # Phase 2a: per-expert proposals from what the expert's own demos do not cover ("compensate").
        counts = [cfg.budget // k + (e < cfg.budget % k) for e in range(k)]
        pools = [[d for j in range(k) if j != e for d in a["demos"][j]] + a["trimmed"] for e in range(k)]
        pools = [p or demos for p in pools]
        candidates = eng.propose(pools, counts, rng)
        ns = min(cfg.num_samples, len(val))
        sample = [val[i] for i in rng.choice(len(val), size=ns, replace=False)]
        shortlist = eng.rank_alone(candidates, sample)
        # Phase 2b: region-based search, each expert on its routed (+ nearest) eval items.
        val_emb = embed(self.embedder, input_texts([x for x, _ in val]))
        routes = np.argmin(((val_emb[:, None, :] - a["centroids"][None]) ** 2).sum(-1), axis=1)
        regions = [nearest(val_emb, a["centroids"][e], np.flatnonzero(routes == e).tolist(), ns) for e in range(k)]
        jobs = [(c, a["demos"][e], [val[i] for i in regions[e]]) for e in range(k) for c, _ in shortlist]
        scores = np.asarray(eng.score(jobs)).reshape(k, len(shortlist))
        best = scores.argmax(1)  # ties: the earlier (higher-ranked alone) candidate
        experts = [Expert(shortlist[best[e]][0], a["demos"][e], a["centroids"][e].tolist()) for e in range(k)]
        info = {"method": "MoP", "k": k, "kauto": a["kauto"], "demos_per_expert": a["cap"],
                "n_trimmed": len(a["trimmed"]), "candidates": candidates,
                "shortlist": [[c, s] for c, s in shortlist], "rbjs_scores": scores.round(4).tolist(),
                "routed_val": [int((routes == e).sum()) for e in range(k)], "projected_calls": projected,
                "calls": dict(eng.calls), "validity": eng.validity.to_dict()}
        if self.verbose:
            print(f"Mixture-of-Prompts: done with {eng.calls['generation']} generation + {eng.calls['scoring']} "
                  f"scoring calls; {eng.validity.n_invalid} of {eng.validity.total} proposals invalid")
        return MoPModel(experts, self.embedder_id, asdict(cfg), info, self.model, self.embedder)


def compile(trainset: Iterable[Any], valset: Iterable[Any], *, model: Any, budget: int = 20, embedder: Any = None,
            scorer: Scorer | None = None, **config: Any) -> MoPModel:
    """Fit a Mixture-of-Prompts in one call (:class:`MoP` with ``budget`` generation calls).

    Example:
        >>> mop = compile(train, val, model=load_model("embedded"), budget=20, n_experts=5)
    """
    return MoP(model, embedder, scorer, budget=budget, **config).fit(trainset, valset)
