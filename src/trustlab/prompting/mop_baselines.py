"""Single-prompt baselines of Mixture-of-Prompts, at the same model-call budget, as one-expert MoP models.

- ``ape``: the best induced instruction, no demos (APE).
- ``ape-random``: the APE search, with ``floor(|D| / n_experts)`` random demos (as many as one MoP expert).
- ``ape-kcen``: the same, with the demos nearest to the centroids of a KMeans with that many clusters.
- ``no-instruction``: the bare ``Input: ... Output:`` prompt (no calls; a floor).

The APE search (:func:`ape_search`) makes ``budget`` proposals from 5-demo subsamples of the whole pool and
scores each alone on ``num_samples`` eval items, exactly as MoP's first scoring step; each variant then
re-scores the top ``n_inits`` plus the empty instruction *with its demos* on as many eval items as
``scoring_calls`` (MoP's scoring calls, for a matched budget) leaves; once that is the whole eval set, the
calls left re-score further candidates (next best alone) on it, so the baseline spends its budget too. The three APE variants share one
search (their proposals and first scores are identical by construction), so a caller may run it once
and pass it to each; every variant still reports what it would cost alone.

Example:
    >>> mop = compile(train, val, model=llm, budget=20)
    >>> search = ape_search(train, val, model=llm, budget=20)
    >>> ape = fit_baseline("ape-random", train, val, model=llm, search=search,
    ...                    scoring_calls=mop.info["calls"]["scoring"])
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import asdict
from typing import Any

import numpy as np

from trustlab.errors import require
from trustlab.prompting.mop import (
    MINILM_ID,
    Engine,
    Expert,
    MoPConfig,
    MoPModel,
    Scorer,
    check_sets,
    default_embedder,
    embed,
    exact_match,
    input_texts,
)

BASELINES = ("ape", "ape-random", "ape-kcen", "no-instruction")


def _eval_order(n_val: int, seed: int) -> np.ndarray:
    """The eval items' order: the first ``num_samples`` score candidates alone, a prefix re-scores them."""
    return np.random.default_rng(seed + 2).permutation(n_val)


def ape_search(trainset: Iterable[Any], valset: Iterable[Any], *, model: Any, budget: int = 20,
               scorer: Scorer | None = None, **config: Any) -> dict[str, Any]:
    """APE's proposals and their scores alone: ``budget`` generation and ``budget * num_samples`` scoring calls.

    Returns:
        ``{"candidates", "ranked" ([instruction, score alone] for every candidate, best first, then the empty
        one), "calls", "validity"}``, plain JSON (a checkpoint can store it).
    """
    demos, val = check_sets(trainset, valset)
    cfg = MoPConfig(**{**config, "budget": budget})
    eng = Engine(model, scorer or exact_match, cfg)
    candidates = eng.propose([demos], [cfg.budget], np.random.default_rng(cfg.seed + 1))
    ns = min(cfg.num_samples, len(val))
    ranked = eng.rank_alone(candidates, [val[i] for i in _eval_order(len(val), cfg.seed)[:ns]], keep=len(candidates))
    return {"candidates": candidates, "ranked": [list(cs) for cs in ranked], "calls": dict(eng.calls),
            "validity": eng.validity.to_dict()}


def baseline_demos(kind: str, demos: list[tuple[str, str]], n_demos: int, embedder: Any, seed: int) -> list:
    """The demos a baseline shows: none, ``n_demos`` random ones, or those nearest to ``n_demos`` centroids."""
    n_demos = min(n_demos, len(demos))
    if kind == "ape-random":
        rng = np.random.default_rng(seed + 3)
        return [demos[i] for i in sorted(rng.choice(len(demos), size=n_demos, replace=False))]
    if kind == "ape-kcen":
        KMeans = require("sklearn.cluster", "vision", pip='pip install "scikit-learn>=1.3"').KMeans
        emb = embed(embedder, input_texts([x for x, _ in demos]))  # (N, d)
        km = KMeans(n_clusters=n_demos, random_state=seed, n_init="auto").fit(emb)
        picks = [int(np.argmin(((emb - c) ** 2).sum(1))) for c in km.cluster_centers_]
        return [demos[i] for i in dict.fromkeys(picks)]
    return []


def fit_baseline(kind: str, trainset: Iterable[Any], valset: Iterable[Any], *, model: Any, budget: int = 20,
                 scoring_calls: int | None = None, embedder: Any = None, scorer: Scorer | None = None,
                 search: dict[str, Any] | None = None, verbose: bool = False, **config: Any) -> MoPModel:
    """One baseline of :data:`BASELINES` as a one-expert :class:`~trustlab.prompting.mop.MoPModel`.

    Args:
        kind: the baseline.
        trainset, valset: the demo pool and the eval set, as for MoP.
        model: the model handle (proposer and task model).
        budget: generation calls (instruction proposals).
        scoring_calls: scoring calls in all (default: what a one-expert MoP would spend).
        embedder: for ``ape-kcen`` (default: the embedded MiniLM).
        scorer: ``scorer(prediction, target)`` (default exact match).
        search: a :func:`ape_search` result to reuse (made with the same sets, budget and config).
        verbose: print the calls.
        **config: :class:`~trustlab.prompting.mop.MoPConfig` fields.

    Raises:
        ValueError: an unknown ``kind``.
    """
    if kind not in BASELINES:
        raise ValueError(f"unknown baseline {kind!r}; choose one of {', '.join(BASELINES)}")
    demos, val = check_sets(trainset, valset)
    cfg = MoPConfig(**{**config, "budget": budget})
    emb_id = MINILM_ID
    if kind == "ape-kcen":
        embedder, emb_id = default_embedder(embedder)
    elif embedder is not None:
        emb_id = default_embedder(embedder)[1]
    shown = baseline_demos(kind, demos, max(1, len(demos) // cfg.n_experts), embedder, cfg.seed)
    eng = Engine(model, scorer or exact_match, cfg)
    info: dict[str, Any] = {"method": kind, "demos": len(shown)}
    instruction = ""
    if kind != "no-instruction":
        search = search or ape_search(demos, val, model=model, budget=budget, scorer=scorer, **config)
        *ranked, empty = [(c, s) for c, s in search["ranked"]]
        ns = min(cfg.num_samples, len(val))
        n_c = min(cfg.n_inits, len(ranked))
        left = (n_c + 1) * ns if scoring_calls is None else scoring_calls - search["calls"]["scoring"]
        m = max(0, min(len(val), left // (n_c + 1)))
        if m == len(val):  # every eval item is used: spend what is left on further candidates
            n_c = min(len(ranked), max(n_c, left // len(val) - 1))
        shortlist = [*ranked[:n_c], empty]
        order = _eval_order(len(val), cfg.seed)
        rescored = eng.score([(c, shown, [val[i] for i in order[:m]]) for c, _ in shortlist]) if m else []
        instruction = shortlist[int(np.argmax(rescored)) if rescored else 0][0]  # ties: the better one alone
        eng.calls = {k: search["calls"][k] + eng.calls[k] for k in eng.calls}  # its cost alone
        info.update(candidates=search["candidates"], shortlist=[list(cs) for cs in shortlist], rescored=rescored,
                    rescore_items=m, rescore_calls=m * len(shortlist), search_validity=search["validity"])
    info["calls"] = dict(eng.calls)
    if verbose:
        print(f"{kind}: {eng.calls['generation']} generation + {eng.calls['scoring']} scoring calls")
    return MoPModel([Expert(instruction, shown, [])], emb_id, asdict(cfg), info, model, embedder)
