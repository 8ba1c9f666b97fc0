"""C_T on data where the answer is known, agreement with scipy, the cell rules, fingerprint matching, bad input."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import mannwhitneyu

from trustlab.errors import EmptyInputError, TrustlabError
from trustlab.forensics import (
    CTReference,
    FingerprintMatcher,
    LayerCT,
    MemorizationInputError,
    NoCellKeptError,
    ct_score,
    curve_identifier,
    leave_one_instance_out,
    mann_whitney_z,
)


@pytest.fixture(scope="module")
def sets():
    rng = np.random.default_rng(0)
    centres = rng.normal(scale=4, size=(5, 12))
    def draw(n):
        return centres[rng.integers(0, 5, n)] + rng.normal(size=(n, 12))
    return {"train": draw(1500), "test": draw(400), "like": draw(500), "rng": rng}


def test_copies_of_train_are_strongly_negative(sets):
    copies = sets["train"][:500] + 0.01 * sets["rng"].normal(size=(500, 12))
    for distance in ("cos", "l2"):
        assert ct_score(sets["train"], sets["test"], copies, distance=distance).ct < -5


def test_samples_drawn_like_test_are_near_zero(sets):
    assert abs(ct_score(sets["train"], sets["test"], sets["like"], distance="l2").ct) < 2.5


def test_samples_far_from_train_are_positive(sets):
    far = sets["like"] + 1.5 * sets["rng"].normal(size=sets["like"].shape)  # blurrier than the data
    assert ct_score(sets["train"], sets["test"], far, distance="l2").ct > 3


def _brute_cell_distances(ref, points, cell):
    """Nearest-training-point distances in one cell, recomputed without the class (1 - |cos| in PCA space)."""
    proj = ref.pca.transform(points)
    mine = proj[ref.kmeans.predict(proj) == cell]
    train = ref.pca.transform(ref._train_raw)[ref.kmeans.labels_ == cell]
    a = mine / np.linalg.norm(mine, axis=1, keepdims=True)
    b = train / np.linalg.norm(train, axis=1, keepdims=True)
    return 1 - np.abs(a @ b.T).max(1)


def test_per_cell_u_and_z_agree_with_scipy(sets):
    gen = sets["like"][:300] * 0.9
    ref = CTReference(k=6, min_cell=5).fit(sets["train"], sets["test"])
    ref._train_raw = sets["train"]
    res = ref.score(gen)
    assert res.kept.sum() >= 3
    for c in np.flatnonzero(res.kept):
        lq, lp = _brute_cell_distances(ref, gen, c), _brute_cell_distances(ref, sets["test"], c)
        u = mannwhitneyu(lq, lp).statistic  # scipy: U of the first sample
        n, m = len(lp), len(lq)
        assert res.u[c] == pytest.approx(u, abs=1e-9)
        assert res.z[c] == pytest.approx((u - (n * m / 2 - 0.5)) / np.sqrt(n * m * (n + m + 1) / 12), abs=1e-9)
    w = res.weights
    assert res.ct == pytest.approx((w[res.kept] * res.z[res.kept]).sum() / w[res.kept].sum())
    assert w.sum() == pytest.approx(1.0) and (res.n_test == np.bincount(
        ref.kmeans.predict(ref.pca.transform(sets["test"])), minlength=6)).all()


def test_mann_whitney_with_ties_matches_scipy():
    rng = np.random.default_rng(1)
    a, b = rng.integers(0, 5, 40).astype(float), rng.integers(0, 5, 70).astype(float)
    assert mann_whitney_z(a, b)[0] == pytest.approx(mannwhitneyu(a, b).statistic)


def test_cells_need_more_than_min_cell_generated_points(sets):
    ref = CTReference(k=5, min_cell=20).fit(sets["train"], sets["test"])
    proj = ref.pca.transform(sets["like"])
    cells = ref.kmeans.predict(proj)
    c0, c1 = cells[0], next(c for c in cells if c != cells[0])
    gen = np.concatenate([sets["like"][cells == c0][:20], sets["like"][cells == c1][:21]])
    res = ref.score(gen)
    assert not res.kept[c0] and "20 generated points (needs more than 20)" in res.reasons[c0]
    assert res.kept[c1] and res.reasons[c1] is None and res.n_gen[c1] == 21
    assert res.ct == pytest.approx(res.z[c1])  # the only kept cell
    assert np.isnan(res.z[c0])
    with pytest.raises(NoCellKeptError, match="lower min_cell"):
        ref.score(sets["like"][cells == c0][:20])


def test_layer_ct_curve_follows_each_layer(sets):
    copies = sets["train"][:500] + 0.01 * sets["rng"].normal(size=(500, 12))
    train = {"a": sets["train"], "b": sets["train"] * 2}
    test = {"a": sets["test"], "b": sets["test"] * 2}
    lct = LayerCT(k=5, distance="l2").fit(train, test)
    curve = lct.curve({"a": copies, "b": sets["like"] * 2})
    assert curve.shape == (2,) and curve[0] < -5 and abs(curve[1]) < 3
    with pytest.raises(MemorizationInputError, match="lack layers"):
        lct.curve({"a": copies})


@pytest.mark.parametrize("bad, exc, match", [
    ({"train": np.zeros((0, 4))}, EmptyInputError, "train is empty"),
    ({"generated": np.zeros((0, 4))}, EmptyInputError, "generated is empty"),
    ({"test": np.ones((30, 5))}, MemorizationInputError, "differ in width"),
    ({"generated": np.ones((30, 5))}, MemorizationInputError, "same encoder"),
    ({"train": np.ones((4, 4))}, MemorizationInputError, "cannot fill k=10 cells"),
    ({"generated": np.full((30, 4), np.nan)}, MemorizationInputError, "NaN"),
    ({"test": np.ones(30)}, MemorizationInputError, "2-d array"),
])
def test_bad_input_raises_clear_errors(bad, exc, match):
    rng = np.random.default_rng(0)
    args = {"train": rng.normal(size=(200, 4)), "test": rng.normal(size=(50, 4)), "generated": rng.normal(size=(60, 4))}
    args.update(bad)
    with pytest.raises(exc, match=match) as info:
        ct_score(args["train"], args["test"], args["generated"], min_cell=1)
    assert isinstance(info.value, TrustlabError)


def test_bad_options():
    with pytest.raises(MemorizationInputError, match="distance"):
        CTReference(distance="manhattan")
    with pytest.raises(MemorizationInputError, match="fit"):
        CTReference().score(np.ones((3, 3)))


def _synthetic_curves(rng, n_inst=3, n_batch=2):
    """Four families with distinct curve shapes; 'rising' and 'flat' share the last layer's value."""
    shapes = {"rising": np.linspace(-8, 0, 6), "flat": np.zeros(6), "falling": np.linspace(2, -2, 6),
              "high": np.full(6, 6.0)}
    curves, fams, insts = [], [], []
    for fam, shape in shapes.items():
        for i in range(n_inst):
            for _ in range(n_batch):
                curves.append(shape + 0.5 * rng.normal(size=6))
                fams.append(fam)
                insts.append(f"{fam}-{i}")
    return curves, fams, insts


def test_fingerprint_identification_on_synthetic_curves():
    curves, fams, insts = _synthetic_curves(np.random.default_rng(0))
    full = leave_one_instance_out(curves, fams, insts, curve_identifier())
    single = leave_one_instance_out(curves, fams, insts, curve_identifier(layer=-1))
    assert full["accuracy"] == 1.0
    assert single["accuracy"] < 0.9  # rising and flat end at the same value
    assert sum(full["confusion"]["rising"].values()) == 6


def test_matcher_score_formula_and_errors():
    m = FingerprintMatcher(a=0.5).fit([[1.0, 0.0], [0.0, 2.0]], ["x", "y"])
    q = np.array([[1.0, 1.0]])
    expect = [0.5 * (1 / np.sqrt(2)) + 0.5 / (1 + 1), 0.5 * (2 / (2 * np.sqrt(2))) + 0.5 / (1 + np.sqrt(2))]
    np.testing.assert_allclose(m.similarity(q)[0], expect)
    with pytest.raises(MemorizationInputError, match="layers"):
        m.predict([[1.0, 2.0, 3.0]])
    with pytest.raises(MemorizationInputError, match="families"):
        FingerprintMatcher().fit([[1.0, 2.0]], ["a", "b"])
    with pytest.raises(MemorizationInputError, match="a must lie"):
        FingerprintMatcher(a=2)
    with pytest.raises(MemorizationInputError, match="one instance"):
        leave_one_instance_out([[1.0], [2.0]], ["a", "b"], ["a0", "b0"], curve_identifier())
