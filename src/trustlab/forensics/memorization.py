"""The C_T data-copying statistic (Meehan, Chaudhuri, Dasgupta 2020) in any embedding space, its layer-wise
curve (a generator's memorization fingerprint) and fingerprint matching (He, Zhao, Bai, Hsieh 2024).

C_T compares how close generated samples Q sit to the training set T with how close held-out real samples P
sit to T, cell by cell: PCA fitted on T, k-means cells fitted on projected T, in each cell the distance of
every P and Q point to its nearest training point of the same cell, a Mann-Whitney z-score of
``(L(Q), L(P))``, and a test-mass weighted mean over the cells that hold more than ``min_cell`` generated
points. ``C_T << 0``: generated samples are closer to the training set than real unseen data (copying);
``C_T >> 0``: under-fitting. Computed at every layer of a ViT, the curve of C_T values over depth is the
generator's fingerprint; an unknown generator is assigned the family of the nearest reference fingerprint
under ``a * cos(F_q, F_r) + (1 - a) / (1 + ||F_q - F_r||_2)``.

What differs from the reference code: arrays in, arrays out (no paths); a cell whose statistic is undefined
gets NaN with a reason and is left out of the weighted mean, and no kept cell raises
:class:`NoCellKeptError` instead of returning NaN.

Example:
    >>> rng = np.random.default_rng(0)
    >>> train, test = rng.normal(size=(2000, 8)), rng.normal(size=(500, 8))
    >>> copies = train[:500] + 0.01 * rng.normal(size=(500, 8))
    >>> ct_score(train, test, copies).ct < -3          # copies of T sit far closer to T than P does
    True

References:
    Meehan, Chaudhuri, Dasgupta. "A Non-Parametric Test to Detect Data-Copying in Generative Models."
    AISTATS 2020. He, Zhao, Bai, Hsieh. "Embedding Space Selection for Detecting Memorization and
    Fingerprinting in Generative Models." arXiv 2407.21159, 2024.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from trustlab.errors import EmptyInputError, TrustlabError

DISTANCES = ("cos", "l2")


class MemorizationInputError(TrustlabError, ValueError):
    """Embeddings the C_T test cannot use: mismatched widths, NaN/inf, too few points for the cells."""


class NoCellKeptError(TrustlabError, ValueError):
    """No cell holds enough generated (and test) points for its statistic: C_T is undefined."""


def _as_2d(x: Any, name: str) -> np.ndarray:
    a = np.asarray(x, dtype=np.float64)
    if a.ndim != 2:
        raise MemorizationInputError(f"{name} must be a 2-d array (points x dims), got shape {a.shape}")
    if len(a) == 0:
        raise EmptyInputError(f"{name} is empty: the C_T test needs at least one point in each set")
    if not np.isfinite(a).all():
        bad = int((~np.isfinite(a)).any(1).sum())
        raise MemorizationInputError(f"{name} holds {bad} rows with NaN/inf values; drop or fix those embeddings "
                                     "(a layer that overflows, or images outside the encoder's range)")
    return a


def mann_whitney_z(gen: np.ndarray, test: np.ndarray) -> tuple[float, float]:
    """``(U, Z_U)`` of the Mann-Whitney test of ``gen`` against ``test`` as C_T uses it.

    ``U`` counts the (generated, test) pairs where the generated value is larger (ties count 1/2): scipy's
    ``mannwhitneyu(gen, test).statistic``. ``Z_U = (U - (n m / 2 - 0.5)) / sqrt(n m (n + m + 1) / 12)``
    (the reference code's continuity term, no tie correction).

    Example:
        >>> mann_whitney_z(np.array([0.1, 0.2]), np.array([0.3, 0.4, 0.5]))[0]
        0.0
    """
    m, n = len(gen), len(test)
    ranks = _ranks(np.concatenate([gen, test]))
    u = float(ranks[:m].sum() - m * (m + 1) / 2)
    return u, (u - (n * m / 2 - 0.5)) / np.sqrt(n * m * (n + m + 1) / 12)


def _ranks(x: np.ndarray) -> np.ndarray:
    """Average ranks (1-based; ties share their mean rank)."""
    order = np.argsort(x, kind="mergesort")
    sorted_x = x[order]
    starts = np.r_[0, np.flatnonzero(np.diff(sorted_x)) + 1]
    ends = np.r_[starts[1:], len(x)]
    avg = (starts + ends + 1) / 2.0  # mean of the 1-based ranks starts+1..ends
    ranks = np.empty(len(x))
    ranks[order] = np.repeat(avg, ends - starts)
    return ranks


def _nearest_distance(points: np.ndarray, ref: np.ndarray, distance: str, chunk: int = 2048) -> np.ndarray:
    """Distance of every row of ``points`` to its nearest row of ``ref``."""
    out = np.empty(len(points))
    if distance == "cos":
        unit = lambda a: a / np.maximum(np.linalg.norm(a, axis=1, keepdims=True), 1e-12)  # noqa: E731
        p, r = unit(points), unit(ref)
        for lo in range(0, len(p), chunk):
            out[lo: lo + chunk] = 1.0 - np.abs(p[lo: lo + chunk] @ r.T).max(1)  # 1 - |cos|, as the reference
    else:
        r2 = (ref ** 2).sum(1)
        for lo in range(0, len(points), chunk):
            q = points[lo: lo + chunk]
            d2 = (q ** 2).sum(1)[:, None] - 2 * q @ ref.T + r2[None]
            out[lo: lo + chunk] = np.sqrt(np.maximum(d2.min(1), 0.0))
    return out


@dataclass
class CTResult:
    """C_T of one generated set, with its per-cell parts.

    Attributes:
        ct: the weighted mean of the kept cells' z-scores.
        z: per-cell ``Z_U`` (NaN where undefined). u: per-cell U (NaN where undefined).
        kept: cells in the weighted mean. reasons: why each left-out cell was left out (None if kept).
        n_train, n_test, n_gen: points per cell. weights: test mass ``P(pi)`` per cell.
    """

    ct: float
    z: np.ndarray
    u: np.ndarray
    kept: np.ndarray
    reasons: list[str | None]
    n_train: np.ndarray
    n_test: np.ndarray
    n_gen: np.ndarray
    weights: np.ndarray = field(repr=False)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (NaN becomes None)."""
        def clean(a: np.ndarray) -> list:
            return [None if not np.isfinite(v) else float(v) for v in a]

        return {"ct": self.ct, "z": clean(self.z), "u": clean(self.u), "kept": self.kept.tolist(),
                "reasons": self.reasons, "n_train": self.n_train.tolist(), "n_test": self.n_test.tolist(),
                "n_gen": self.n_gen.tolist(), "weights": self.weights.tolist()}


class CTReference:
    """The training-side part of C_T (PCA, cells, per-cell training points and test distances), fitted
    once per embedding space and reused for every generated set.

    Args:
        k: k-means cells. n_pca: PCA dimensions (``min(l, d, n_pca)`` are kept).
        distance: ``"cos"`` (``1 - |cos|``, the reference code's) or ``"l2"``.
        min_cell: a cell is kept when it holds more than ``min_cell`` generated points (the spec's
            ``Q(pi) > tau`` with ``tau = min_cell / m``) and at least one test point.
        seed: k-means seed (``n_init = 10``, as the reference).

    Example:
        >>> ref = CTReference(k=10).fit(train_emb, test_emb)
        >>> ref.score(gen_emb).ct
    """

    def __init__(self, k: int = 10, n_pca: int = 64, distance: str = "cos", min_cell: int = 20, seed: int = 0):
        if distance not in DISTANCES:
            raise MemorizationInputError(f"distance must be one of {DISTANCES}, got {distance!r}")
        if k < 1 or n_pca < 1 or min_cell < 0:
            raise MemorizationInputError(f"need k >= 1, n_pca >= 1, min_cell >= 0; got {k}, {n_pca}, {min_cell}")
        self.k, self.n_pca, self.distance, self.min_cell, self.seed = k, n_pca, distance, min_cell, seed

    def fit(self, train: Any, test: Any) -> CTReference:
        """Fit PCA and cells on ``train`` ``(l, d)`` and cache the test set's distances ``(n, d)``.

        Raises:
            EmptyInputError: an empty set. MemorizationInputError: widths differ, NaN/inf values, or
                fewer training points than cells.
        """
        from sklearn.cluster import KMeans
        from sklearn.decomposition import PCA

        t, p = _as_2d(train, "train"), _as_2d(test, "test")
        if t.shape[1] != p.shape[1]:
            raise MemorizationInputError(f"train and test embeddings differ in width: {t.shape[1]} vs {p.shape[1]}")
        if len(t) < self.k:
            raise MemorizationInputError(f"{len(t)} training points cannot fill k={self.k} cells; give more "
                                         "training points or lower k")
        self.dim = t.shape[1]
        self.pca = PCA(n_components=min(len(t), t.shape[1], self.n_pca), random_state=self.seed).fit(t)
        tp = self.pca.transform(t)
        self.kmeans = KMeans(n_clusters=self.k, n_init=10, random_state=self.seed).fit(tp)
        self.train_cells = [tp[self.kmeans.labels_ == c] for c in range(self.k)]
        pp = self.pca.transform(p)
        cells = self.kmeans.predict(pp)
        self.n_test = np.bincount(cells, minlength=self.k)
        self.test_dist = [self._dist(pp[cells == c], c) for c in range(self.k)]
        return self

    def _dist(self, points: np.ndarray, c: int) -> np.ndarray:
        if len(points) == 0 or len(self.train_cells[c]) == 0:
            return np.empty(0)
        return _nearest_distance(points, self.train_cells[c], self.distance)

    def score(self, generated: Any) -> CTResult:
        """C_T of ``generated`` ``(m, d)``.

        Raises:
            EmptyInputError, MemorizationInputError: bad embeddings (see :meth:`fit`).
            NoCellKeptError: no cell holds more than ``min_cell`` generated points and a test point.
        """
        if not hasattr(self, "kmeans"):
            raise MemorizationInputError("call fit(train, test) before score(generated)")
        q = _as_2d(generated, "generated")
        if q.shape[1] != self.dim:
            raise MemorizationInputError(f"generated embeddings have width {q.shape[1]}, the reference {self.dim}; "
                                         "embed them with the same encoder and layer")
        qp = self.pca.transform(q)
        cells = self.kmeans.predict(qp)
        n_gen = np.bincount(cells, minlength=self.k)
        n_train = np.array([len(c) for c in self.train_cells])
        z, u = np.full(self.k, np.nan), np.full(self.k, np.nan)
        reasons: list[str | None] = []
        for c in range(self.k):
            if n_gen[c] <= self.min_cell:
                reasons.append(f"{n_gen[c]} generated points (needs more than {self.min_cell})")
            elif self.n_test[c] == 0:
                reasons.append("no test points")
            elif n_train[c] == 0:
                reasons.append("no training points")
            else:
                u[c], z[c] = mann_whitney_z(self._dist(qp[cells == c], c), self.test_dist[c])
                reasons.append(None)
        kept = np.isfinite(z)
        weights = self.n_test / self.n_test.sum()
        if not kept.any():
            raise NoCellKeptError(f"no cell of {self.k} is usable ({'; '.join(sorted(set(map(str, reasons))))}); give "
                                  f"more generated samples (m={len(q)}), lower min_cell ({self.min_cell}) or k")
        ct = float((weights[kept] * z[kept]).sum() / weights[kept].sum())
        return CTResult(ct, z, u, kept, reasons, n_train, self.n_test.copy(), n_gen, weights)


def ct_score(train: Any, test: Any, generated: Any, *, k: int = 10, n_pca: int = 64, distance: str = "cos",
             min_cell: int = 20, seed: int = 0) -> CTResult:
    """C_T of ``generated`` against ``train`` with held-out ``test`` in one embedding space.

    Args:
        train: ``(l, d)`` training-set embeddings. test: ``(n, d)`` held-out real embeddings.
        generated: ``(m, d)`` generated-sample embeddings. Others: see :class:`CTReference`.

    Example:
        >>> ct_score(train, test, generated).ct
    """
    return CTReference(k, n_pca, distance, min_cell, seed).fit(train, test).score(generated)


class LayerCT:
    """One :class:`CTReference` per layer: the layer-wise C_T curve of generated sets.

    Example:
        >>> lct = LayerCT(k=10).fit(train_by_layer, test_by_layer)       # {layer: (l, d)}, {layer: (n, d)}
        >>> lct.curve(gen_by_layer)                                      # array, one C_T per layer
    """

    def __init__(self, **ct_kwargs: Any):
        self.ct_kwargs = ct_kwargs

    def fit(self, train: Mapping[str, Any], test: Mapping[str, Any]) -> LayerCT:
        """Fit every layer of ``train`` (``test`` must have the same layers)."""
        if not train:
            raise EmptyInputError("no layers given")
        if set(train) != set(test):
            raise MemorizationInputError(f"train and test embeddings name different layers: {sorted(train)} vs "
                                         f"{sorted(test)}")
        self.layers = list(train)
        self.refs = {name: CTReference(**self.ct_kwargs).fit(train[name], test[name]) for name in self.layers}
        return self

    def results(self, generated: Mapping[str, Any]) -> dict[str, CTResult]:
        """Per-layer :class:`CTResult` of one generated set (``{layer: (m, d)}``, every fitted layer)."""
        missing = [name for name in self.layers if name not in generated]
        if missing:
            raise MemorizationInputError(f"generated embeddings lack layers {missing}")
        return {name: self.refs[name].score(generated[name]) for name in self.layers}

    def curve(self, generated: Mapping[str, Any]) -> np.ndarray:
        """The fingerprint: C_T at every fitted layer, in layer order."""
        return np.array([r.ct for r in self.results(generated).values()])


def fingerprint_similarity(queries: Any, refs: Any, a: float = 0.5) -> np.ndarray:
    """``(Q, R)`` scores ``a * cos(F_q, F_r) + (1 - a) / (1 + ||F_q - F_r||_2)`` (higher = closer).

    Example:
        >>> fingerprint_similarity([[1.0, 2.0]], [[1.0, 2.0], [-1.0, 0.0]]).argmax(1)   # itself scores 1
        array([0])
    """
    q, r = _as_2d(queries, "query curves"), _as_2d(refs, "reference curves")
    if q.shape[1] != r.shape[1]:
        raise MemorizationInputError(f"curves have {q.shape[1]} and {r.shape[1]} layers; compare curves over the "
                                     "same layers")
    nq, nr = np.linalg.norm(q, axis=1), np.linalg.norm(r, axis=1)
    cos = (q @ r.T) / np.maximum(nq[:, None] * nr[None], 1e-12)
    dist = np.linalg.norm(q[:, None] - r[None], axis=2)
    return a * cos + (1 - a) / (1 + dist)


class FingerprintMatcher:
    """Identify a generator's family from its layer-wise C_T curve by the nearest reference curve.

    ``layer`` set to an index gives the single-layer baseline: the nearest reference by ``|C_T_q - C_T_r|``
    at that layer alone (the spec's score is degenerate on one number).

    Example:
        >>> m = FingerprintMatcher(a=0.5).fit([[-5.0, -2.0], [3.0, 4.0]], ["copier", "gmm"])
        >>> m.predict([[-4.0, -1.0]])
        ['copier']
    """

    def __init__(self, a: float = 0.5, layer: int | None = None):
        if not 0.0 <= a <= 1.0:
            raise MemorizationInputError(f"a must lie in [0, 1], got {a}")
        self.a, self.layer = a, layer

    def fit(self, curves: Any, families: Sequence[str]) -> FingerprintMatcher:
        """Store reference curves ``(R, L)`` and their families."""
        self.curves = _as_2d(curves, "reference curves")
        self.families = [str(f) for f in families]
        if len(self.families) != len(self.curves):
            raise MemorizationInputError(f"{len(self.curves)} reference curves but {len(self.families)} families")
        if self.layer is not None and not -self.curves.shape[1] <= self.layer < self.curves.shape[1]:
            raise MemorizationInputError(f"layer {self.layer} is outside the curves' {self.curves.shape[1]} layers")
        return self

    def similarity(self, queries: Any) -> np.ndarray:
        """``(Q, R)`` similarity of each query curve to each reference (higher = closer)."""
        q = _as_2d(queries, "query curves")
        if q.shape[1] != self.curves.shape[1]:
            raise MemorizationInputError(f"query curves have {q.shape[1]} layers, references {self.curves.shape[1]}")
        if self.layer is not None:
            return -np.abs(q[:, [self.layer]] - self.curves[:, self.layer][None])
        return fingerprint_similarity(q, self.curves, self.a)

    def predict(self, queries: Any) -> list[str]:
        """The family of the most similar reference, per query curve."""
        return [self.families[j] for j in self.similarity(queries).argmax(1)]
