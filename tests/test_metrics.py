"""Hand-computed cases for the scoring fast path, mlray.scoring (no Ray)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from mlray.errors import MlrayError
from mlray.labels import LabelArrays
from mlray.scoring import (
    DECOMPOSITION_COLUMNS,
    METRICS,
    MODEL_COLUMNS,
    SUBGROUP_COLUMNS,
    MetricParams,
    decompose,
    decomposition_frame,
    metrics_frame,
    per_class_accuracy,
    prepare_dataset,
    score_model,
    score_models,
    standardized_accuracy,
    subgroup_frame,
)
from mlray.store import softmax, topk_from_scores

NOBOOT = dict(n_boot=0)


def make_labels(original, valid, problematic=None, unclear=None, prefix="img"):
    n = len(original)
    counts = [0 if v is None else len(v) for v in valid]
    offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
    values = np.array([c for v in valid if v for c in v], dtype=np.int16)
    kw = {}
    if problematic is not None:
        kw["problematic"] = np.array(problematic, dtype=bool)
    if unclear is not None:
        uc = [0 if u is None else len(u) for u in unclear]
        kw["unclear_offsets"] = np.concatenate([[0], np.cumsum(uc)]).astype(np.int64)
        kw["unclear_values"] = np.array([c for u in unclear if u for c in u], dtype=np.int16)
    return LabelArrays(
        image_ids=np.array([f"{prefix}{i}" for i in range(n)], dtype=object),
        original=np.array(original, dtype=np.int16),
        offsets=offsets,
        values=values,
        annotated=np.array([v is not None for v in valid]),
        **kw,
    )


# 11 images. k: 1,1,1,2,2,3,4, empty, unannotated, 1 (no original), 1 (no prediction)
ORIGINAL = [1, 2, 3, 4, 6, 8, 11, 15, 16, -1, 18]
VALID = [[1], [2], [3], [4, 5], [6, 7], [8, 9, 10], [11, 12, 13, 14], [], None, [17], [18]]
TOPK = np.array(
    [
        [1, 0, 20, 21, 22, 23],  # i0 k=1: top1, top5, real1, vtopk hit
        [0, 2, 20, 21, 22, 23],  # i1 k=1: top1 miss, top5 hit, real1 miss, real5 hit, vtopk miss
        [0, 20, 21, 22, 24, 3],  # i2 k=1: label at rank 6: everything misses
        [5, 4, 20, 21, 22, 23],  # i3 k=2: top1 miss, top5 hit, T2 = L: all/frac/any = 1/1/1
        [6, 0, 7, 21, 22, 23],  # i4 k=2: top1 hit, T2 has 1 of 2: 0/.5/1
        [0, 9, 20, 8, 10, 21],  # i5 k=3: top1 miss, top5 hit (rank 4), T3 has 1 of 3: 0/(1/3)/1
        [11, 12, 13, 14, 0, 20],  # i6 k=4: all hit: 1/1/1
        [15, 0, 20, 21, 22, 23],  # i7 empty set: only top1/top5 (hit, hit)
        [0, 16, 20, 21, 22, 23],  # i8 unannotated: only top1/top5 (miss, hit)
        [17, 0, 20, 21, 22, 23],  # i9 no original: only multi-label metrics (all hit)
        [-1, -1, -1, -1, -1, -1],  # i10 no prediction
    ],
    dtype=np.int16,
)

EXPECTED = {
    "top1": 4 / 9,
    "top5": 8 / 9,
    "real_top1": 5 / 8,
    "real_top5": 7 / 8,
    "vtopk_all": 4 / 8,
    "vtopk_frac": (1 + 0 + 0 + 1 + 0.5 + 1 / 3 + 1 + 1) / 8,
    "vtopk_any": 6 / 8,
}
# max_group = 3 -> groups "1" (i0, i1, i2, i9), "2" (i3, i4), "3+" (i5 k=3, i6 k=4 merged)
EXPECTED_GROUPS = {
    "top1": (1 / 3, 1 / 2, 1 / 2),  # group "1" without i9 (no original)
    "top5": (2 / 3, 1.0, 1.0),
    "real_top1": (2 / 4, 1.0, 0.5),
    "real_top5": (3 / 4, 1.0, 1.0),
    "vtopk_all": (2 / 4, 0.5, 0.5),
    "vtopk_frac": (2 / 4, 0.75, (1 / 3 + 1) / 2),
    "vtopk_any": (2 / 4, 1.0, 1.0),
}


@pytest.fixture(scope="module")
def labels():
    return make_labels(ORIGINAL, VALID)


def approx(x):
    return pytest.approx(x, rel=1e-12, abs=1e-12)


# ---------------------------------------------------------------------------------------------------- headline


def test_headline_metrics_hand_computed(labels):
    s = score_model(labels, TOPK, MetricParams(max_group=3, **NOBOOT))
    for m, v in EXPECTED.items():
        assert s.results[m].available, m
        assert s.results[m].value == approx(v), m
    assert s.results["top1"].n == 9 and s.results["real_top1"].n == 8


def test_exclusions_counted(labels):
    s = score_model(labels, TOPK, MetricParams(max_group=3, **NOBOOT))
    assert (s.n_excluded_empty, s.n_excluded_unannotated, s.n_excluded_no_original) == (1, 1, 1)
    assert s.n_no_prediction == 1
    f = metrics_frame(s).set_index("metric")
    assert f.loc["real_top1", "n_excluded_empty"] == 1
    assert f.loc["real_top1", "n_excluded_unannotated"] == 1
    assert f.loc["real_top1", "n_no_prediction"] == 1  # i10 is labelled, has no prediction
    assert f.loc["top1", "n_excluded_no_original"] == 1
    assert f.loc["top1", "n_excluded_empty"] == 0  # the empty image i7 counts for top1
    assert f.loc["top1", "n_no_prediction"] == 1


def test_no_prediction_rows_are_excluded_not_zero(labels):
    # removing the prediction of i0 (a hit everywhere) drops it from every denominator
    t = TOPK.copy()
    t[0] = -1
    s = score_model(labels, t, MetricParams(max_group=3, **NOBOOT))
    assert s.n_no_prediction == 2
    assert s.results["top1"].value == approx(3 / 8)
    assert s.results["real_top1"].value == approx(4 / 7)
    assert s.results["vtopk_all"].value == approx(3 / 7)
    assert s.subgroups[("real_top1", "1")].n == 3


def test_vtopk_equals_real_top1_when_k_is_one():
    lab = make_labels([0, 1, 2], [[0], [1], [2]])
    t = np.array([[0, 5], [5, 1], [7, 8]], dtype=np.int16)
    s = score_model(lab, t, MetricParams(**NOBOOT))
    for m in ("vtopk_all", "vtopk_frac", "vtopk_any"):
        assert s.results[m].value == approx(1 / 3) == s.results["real_top1"].value


# ---------------------------------------------------------------------------------------------------- subgroups


def test_subgroups_with_merging(labels):
    s = score_model(labels, TOPK, MetricParams(max_group=3, **NOBOOT))
    assert s.group_labels == ("1", "2", "3+")
    for m, vals in EXPECTED_GROUPS.items():
        for label, v in zip(s.group_labels, vals):
            assert s.subgroups[(m, label)].value == approx(v), (m, label)
    assert s.subgroups[("real_top1", "3+")].n == 2
    f = subgroup_frame(s)
    assert list(f.columns[:4]) == ["group", "metric", "value", "n"] and list(f.columns) == SUBGROUP_COLUMNS
    assert len(f) == 3 * (len(METRICS) + len(s.confidence_names))


def test_default_groups_and_empty_merged_group(labels):
    s = score_model(labels, TOPK, MetricParams(**NOBOOT))
    assert s.group_labels == ("1", "2", "3", "4", "5+")
    assert s.subgroups[("vtopk_frac", "3")].value == approx(1 / 3)
    assert s.subgroups[("vtopk_frac", "4")].value == approx(1.0)
    empty = s.subgroups[("vtopk_frac", "5+")]
    assert empty.n == 0 and math.isnan(empty.value) and not empty.available


def test_asma_with_min_group_size(labels):
    s = score_model(labels, TOPK, MetricParams(max_group=3, min_group_size=2, **NOBOOT))
    assert s.results["asma_real_top1"].value == approx((0.5 + 1 + 0.5) / 3)
    assert s.results["asma_top1"].value == approx((1 / 3 + 1 / 2 + 1 / 2) / 3)
    assert s.results["asma_vtopk_frac"].value == approx(23 / 36)
    assert s.asma_groups["asma_vtopk_frac"] == ("1", "2", "3+")
    # min_group_size = 3: groups "2" and "3+" (2 images each) are left out; for top1 group "1" has 3 images
    s3 = score_model(labels, TOPK, MetricParams(max_group=3, min_group_size=3, **NOBOOT))
    assert s3.results["asma_real_top1"].value == approx(0.5)
    assert s3.results["asma_top1"].value == approx(1 / 3)
    assert s3.asma_groups["asma_real_top1"] == ("1",)
    f = metrics_frame(s3).set_index("metric")
    assert f.loc["asma_real_top1", "groups_used"] == ["1"]
    assert f.loc["asma_real_top1", "n"] == 4
    # min_group_size = 5: no group qualifies -> NaN with a reason
    s5 = score_model(labels, TOPK, MetricParams(max_group=3, min_group_size=5, **NOBOOT))
    assert math.isnan(s5.results["asma_real_top1"].value)
    assert "min_group_size=5" in s5.results["asma_real_top1"].reason


# ---------------------------------------------------------------------------------------------------- ranks


def test_k_greater_than_stored_ranks_is_unavailable_not_zero(labels):
    p = MetricParams(max_group=3, min_group_size=2, **NOBOOT)
    s = score_model(labels, TOPK[:, :3], p)  # K = 3: i6 has k = 4
    for m in ("top5", "real_top5", "vtopk_all", "vtopk_frac", "vtopk_any"):
        assert not s.results[m].available and math.isnan(s.results[m].value), m
        assert s.results[m].reason
    assert "K=3" in s.results["top5"].reason
    assert s.results["top1"].value == approx(4 / 9)
    assert s.results["real_top1"].value == approx(5 / 8)
    # groups "1" and "2" have their ranks; "3+" (k = 3 and 4) does not
    assert s.subgroups[("vtopk_frac", "1")].value == approx(0.5)
    assert s.subgroups[("vtopk_frac", "2")].value == approx(0.75)
    assert math.isnan(s.subgroups[("vtopk_frac", "3+")].value)
    assert "1 of 2" in s.subgroups[("vtopk_frac", "3+")].reason
    assert not s.results["asma_vtopk_frac"].available  # uses group 3+
    s3 = score_model(labels, TOPK[:, :3], MetricParams(max_group=3, min_group_size=3, **NOBOOT))
    assert s3.results["asma_vtopk_frac"].value == approx(0.5)  # uses group "1" only


def test_padding_inside_k_makes_row_unavailable(labels):
    t = TOPK.copy()
    t[6, 3:] = -1  # i6 (k = 4) has only 3 stored ranks
    s = score_model(labels, t, MetricParams(max_group=3, **NOBOOT))
    assert not s.results["vtopk_all"].available
    assert not s.results["top5"].available and not s.results["real_top5"].available
    assert s.subgroups[("vtopk_all", "2")].value == approx(0.5)
    assert s.results["real_top1"].value == approx(5 / 8)


def test_top1_only_import(labels):
    s = score_model(labels, TOPK[:, :1], MetricParams(max_group=3, **NOBOOT))
    assert s.K == 1
    assert s.results["top1"].value == approx(4 / 9)
    assert s.results["real_top1"].value == approx(5 / 8)
    for m in ("top5", "real_top5", "vtopk_all", "vtopk_frac", "vtopk_any"):
        assert not s.results[m].available, m
    for m in ("vtopk_all", "vtopk_frac", "vtopk_any"):
        assert s.subgroups[(m, "1")].value == approx(0.5)
        assert not s.subgroups[(m, "2")].available
    f = metrics_frame(s).set_index("metric")
    assert f.loc["top1", "params"]["K"] == 1
    assert not f.loc["top5", "available"] and "K=1" in f.loc["top5", "reason"]


def test_bad_predictions_raise(labels):
    with pytest.raises(MlrayError, match="shape"):
        score_model(labels, TOPK[:5], MetricParams(**NOBOOT))
    t = TOPK.copy()
    t[0, 1] = -1  # a class after padding
    with pytest.raises(MlrayError, match="after a -1"):
        score_model(labels, t, MetricParams(**NOBOOT))
    t = TOPK.copy()
    t[0, 2] = 1  # class 1 twice
    with pytest.raises(MlrayError, match="repeats"):
        score_model(labels, t, MetricParams(**NOBOOT))
    t = TOPK.copy()
    t[0, 0] = 1000
    with pytest.raises(MlrayError, match="class indices"):
        score_model(labels, t, MetricParams(**NOBOOT))


# ---------------------------------------------------------------------------------------------------- ties, softmax


def test_topk_from_scores_ties_lower_index_first():
    s = np.array([[0.2, 0.5, 0.5, 0.1, 0.5], [1.0, 1.0, 1.0, 1.0, 1.0], [0.0, -1.0, 3.0, 3.0, 2.0]])
    idx, val = topk_from_scores(s, 2)
    assert idx.dtype == np.int16 and val.dtype == np.float32
    assert idx.tolist() == [[1, 2], [0, 1], [2, 3]]
    idx, val = topk_from_scores(s, 4)
    assert idx.tolist() == [[1, 2, 4, 0], [0, 1, 2, 3], [2, 3, 4, 0]]
    assert val[0].tolist() == pytest.approx([0.5, 0.5, 0.5, 0.2])
    idx, _ = topk_from_scores(s, 5)
    assert idx.tolist()[0] == [1, 2, 4, 0, 3]
    with pytest.raises(MlrayError):
        topk_from_scores(s, 6)


def test_topk_from_scores_matches_stable_argsort():
    rng = np.random.default_rng(3)
    s = rng.integers(0, 4, size=(50, 30)).astype(np.float32)  # many ties
    idx, _ = topk_from_scores(s, 7)
    ref = np.argsort(-s, axis=1, kind="stable")[:, :7]
    assert np.array_equal(idx, ref)


def test_softmax():
    p = softmax(np.array([[0.0, np.log(3.0)], [1000.0, 1000.0]]))
    assert p.tolist() == [pytest.approx([0.25, 0.75]), pytest.approx([0.5, 0.5])]
    assert softmax(np.zeros((1, 4), np.float16)).dtype == np.float32


# -------------------------------------------------------------------------------------------- Shankar, per class


def test_ml_acc_shankar():
    lab = make_labels(
        original=[0, 0, 0, 1, 1, 2, 3],
        valid=[[0], [1], [0], [1], [1], [], None],
        problematic=[False, False, False, True, False, False, False],
        unclear=[[], [2], [], [], [], [7], None],
    )
    t = np.array([[0], [2], [5], [1], [3], [7], [3]], dtype=np.int16)
    s = score_model(lab, t, MetricParams(**NOBOOT))
    # class 0: j0 hit, j1 hit via unclear, j2 miss -> 2/3; class 1: j3 problematic (out), j4 miss -> 0;
    # class 2: j5 (annotated, empty valid) hit via unclear -> 1; class 3: j6 unannotated (out)
    r = s.results["ml_acc_shankar"]
    assert r.value == approx((2 / 3 + 0 + 1) / 3) and r.n == 5
    info = metrics_frame(s).set_index("metric").loc["ml_acc_shankar", "params"]
    assert info["n_classes"] == 3 and info["n_excluded_problematic"] == 1
    no_flags = score_model(make_labels([0], [[0]]), np.array([[0]], np.int16), MetricParams(**NOBOOT))
    assert not no_flags.results["ml_acc_shankar"].available
    assert "problematic" in no_flags.results["ml_acc_shankar"].reason


def test_per_class_accuracy(labels):
    s = score_model(labels, TOPK, MetricParams(**NOBOOT))
    f = per_class_accuracy(s).set_index("class_index")
    assert len(f) == 1000
    assert f.loc[1].tolist() == [1, 1.0, 1, 1.0]  # i0
    assert f.loc[4].tolist() == [1, 0.0, 1, 1.0]  # i3: top-1 is 5 (valid, not original)
    assert f.loc[15, "n"] == 1 and f.loc[15, "top1"] == 1.0 and f.loc[15, "n_labelled"] == 0  # i7 empty set
    assert math.isnan(f.loc[15, "real_top1"])
    assert f.loc[18, "n"] == 0 and math.isnan(f.loc[18, "top1"])  # i10: no prediction


# ---------------------------------------------------------------------------------------------------- decomposition


def _two_group_dataset(hits_per_group, sizes, prefix):
    """max_group = 2 data: `sizes[g]` images with g+1 labels, the first `hits_per_group[g]` ranked right."""
    original, valid, rows = [], [], []
    c = 0
    for g, (n_g, h) in enumerate(zip(sizes, hits_per_group)):
        for i in range(n_g):
            labs = list(range(c, c + g + 1))
            c += g + 1
            original.append(labs[0])
            valid.append(labs)
            rows.append([labs[0], 999] if i < h else [999, 998])
    return make_labels(original, valid, prefix=prefix), np.array(rows, dtype=np.int16)


def test_decomposition_hand_computed():
    p = MetricParams(max_group=2, **NOBOOT)
    la, ta = _two_group_dataset([3, 1], [4, 2], "a")  # m_A = (.75, .5), w_A = (4/6, 2/6)
    lb, tb = _two_group_dataset([1, 1], [2, 4], "b")  # m_B = (.5, .25), w_B = (2/6, 4/6)
    sa, sb = score_model(la, ta, p), score_model(lb, tb, p)
    for metric in ("real_top1", "top1"):
        d = decompose(sa, sb, metric)
        assert d["value_a"] == approx(2 / 3) and d["value_b"] == approx(1 / 3)
        assert d["gap"] == approx(1 / 3)
        assert d["composition"] == approx(1 / 12)
        assert d["within"] == approx(1 / 4)
        assert d["a_standardized_to_b"] == approx(7 / 12)
        assert d["b_standardized_to_a"] == approx(5 / 12)
        assert abs(d["gap"] - (d["composition"] + d["within"])) < 1e-15
    assert standardized_accuracy(sa, sb, "real_top1") == approx(7 / 12)
    f = decomposition_frame(sa, sb)
    assert list(f.columns) == DECOMPOSITION_COLUMNS and len(f) == len(METRICS)


def test_decomposition_only_a_has_predictions():
    p = MetricParams(max_group=2, **NOBOOT)
    la, ta = _two_group_dataset([3, 1], [4, 2], "a")
    lb, _ = _two_group_dataset([0, 0], [2, 4], "b")
    d = decompose(score_model(la, ta, p), lb, "real_top1")
    assert d["value_a"] == approx(2 / 3) and d["a_standardized_to_b"] == approx(7 / 12)
    for k in ("value_b", "gap", "composition", "within", "b_standardized_to_a", "gap_ci_low"):
        assert math.isnan(d[k]), k


def test_decomposition_group_missing_in_a():
    p = MetricParams(max_group=2, **NOBOOT)
    la, ta = _two_group_dataset([3, 0], [4, 0], "a")  # A has no multi-label images
    lb, tb = _two_group_dataset([1, 1], [2, 4], "b")
    d = decompose(score_model(la, ta, p), score_model(lb, tb, p), "real_top1")
    assert d["value_a"] == approx(0.75) and d["value_b"] == approx(1 / 3)
    assert d["gap"] == approx(0.75 - 1 / 3)
    assert math.isnan(d["a_standardized_to_b"]) and math.isnan(d["composition"]) and math.isnan(d["within"])
    assert d["b_standardized_to_a"] == approx(0.5)
    assert "group 2+: B has images but A has none" in d["reason"]


# ---------------------------------------------------------------------------------------------------- bootstrap


def _random_dataset(n, seed, prefix):
    rng = np.random.default_rng(seed)
    k = rng.choice([1, 1, 1, 2, 3], size=n)
    valid = [sorted(rng.choice(50, size=kk, replace=False).tolist()) for kk in k]
    original = [v[0] for v in valid]
    topk = np.stack([rng.permutation(50)[:5] for _ in range(n)]).astype(np.int16)
    good = rng.random(n) < 0.6
    for i in np.flatnonzero(good):  # put the first valid label first
        row = [valid[i][0]] + [c for c in topk[i] if c != valid[i][0]][:4]
        topk[i] = row
    return make_labels(original, valid, prefix=prefix), topk


def test_bootstrap_deterministic_and_contains_point():
    lab, t = _random_dataset(300, 0, "r")
    p = MetricParams(n_boot=200, seed=7, max_group=3)
    s1 = score_model(lab, t, p)
    s2 = score_model(lab, t, p)
    for m in ("top1", "real_top1", "vtopk_frac", "asma_real_top1"):
        r1, r2 = s1.results[m], s2.results[m]
        assert (r1.ci_low, r1.ci_high) == (r2.ci_low, r2.ci_high), m
        assert r1.ci_low <= r1.value <= r1.ci_high and r1.ci_low < r1.ci_high, m
    other = score_model(lab, t, MetricParams(n_boot=200, seed=8, max_group=3))
    assert other.results["top1"].ci_low != s1.results["top1"].ci_low or (
        other.results["top1"].ci_high != s1.results["top1"].ci_high
    )
    f = metrics_frame(s1)
    assert list(f.columns) == MODEL_COLUMNS
    assert f.set_index("metric").loc["real_top1", "params"]["n_boot"] == 200


def test_bootstrap_matches_direct_resampling():
    lab, t = _random_dataset(120, 1, "d")
    p = MetricParams(n_boot=150, seed=3, max_group=3)
    s = score_model(lab, t, p)
    ctx = prepare_dataset(lab, p)
    C = np.concatenate([c for _, c in ctx.resample_chunks(p.n_boot, p.seed)], axis=0)
    counts = np.empty_like(C)
    counts[:, ctx.order] = C  # back to row order
    x = s.X[2].astype(np.float64)  # real_top1 per image (all images labelled here)
    direct = (counts @ x) / counts.sum(axis=1)
    lo, hi = np.percentile(direct, [2.5, 97.5])
    assert s.results["real_top1"].ci_low == pytest.approx(lo, rel=1e-6)
    assert s.results["real_top1"].ci_high == pytest.approx(hi, rel=1e-6)
    # the same resamples for every model of the dataset (paired), batched or not
    t2 = np.ascontiguousarray(t[:, [1, 0, 2, 3, 4]])  # another model: first two ranks swapped
    a, b = score_models(lab, [t, t2], p)
    assert np.array_equal(a.boot, s.boot)
    assert b.results["real_top1"].ci_low == score_model(lab, t2, p).results["real_top1"].ci_low


def test_decomposition_ci():
    la, ta = _random_dataset(300, 2, "A")
    lb, tb = _random_dataset(200, 5, "B")
    p = MetricParams(n_boot=200, seed=1, max_group=3)
    d = decompose(score_model(la, ta, p), score_model(lb, tb, p), "vtopk_frac")
    assert abs(d["gap"] - (d["composition"] + d["within"])) < 1e-12
    for k in ("gap", "composition", "within"):
        assert d[f"{k}_ci_low"] <= d[k] <= d[f"{k}_ci_high"], k


def test_shankar_bootstrap_matches_direct_resampling():
    lab, t = _random_dataset(200, 4, "s")
    rng = np.random.default_rng(0)
    lab = LabelArrays(
        image_ids=lab.image_ids, original=(lab.original % 7).astype(np.int16), offsets=lab.offsets,
        values=lab.values, annotated=lab.annotated, problematic=rng.random(200) < 0.2,
    )  # fmt: skip
    p = MetricParams(n_boot=100, seed=2, max_group=3)
    s = score_model(lab, t, p)
    ctx = prepare_dataset(lab, p)
    C = np.concatenate([c for _, c in ctx.resample_chunks(p.n_boot, p.seed)], axis=0)
    counts = np.empty_like(C)
    counts[:, ctx.order] = C
    keep = ~lab.problematic
    hit = s.X[2] > 0  # p_i1 in valid (no unclear sets here)
    cls = lab.original
    direct = []
    for row in counts.astype(np.float64):
        per = [(row[keep & (cls == c)] @ hit[keep & (cls == c)]) / row[keep & (cls == c)].sum()
               for c in range(7) if row[keep & (cls == c)].sum() > 0]  # fmt: skip
        direct.append(np.mean(per))
    lo, hi = np.percentile(direct, [2.5, 97.5])
    r = s.results["ml_acc_shankar"]
    assert (r.ci_low, r.ci_high) == (pytest.approx(lo, rel=1e-6), pytest.approx(hi, rel=1e-6))
    assert r.ci_low <= r.value <= r.ci_high


def test_decomposition_unavailable_group_gives_reason():
    p = MetricParams(max_group=2, **NOBOOT)
    la, ta = _two_group_dataset([3, 1], [4, 2], "a")
    lb, tb = _two_group_dataset([1, 1], [2, 4], "b")
    d = decompose(score_model(la, ta[:, :1], p), score_model(lb, tb, p), "vtopk_all")  # A: top-1-only import
    assert math.isnan(d["value_a"]) and math.isnan(d["gap"]) and math.isnan(d["within"])
    assert "group 2+" in d["reason"] and "K=1" in d["reason"]
    d1 = decompose(score_model(la, ta[:, :1], p), score_model(lb, tb, p), "real_top1")
    assert d1["gap"] == approx(1 / 3)


def test_bootstrap_same_without_cached_resamples(monkeypatch):
    import mlray.scoring.context as mm

    lab, t = _random_dataset(150, 6, "c")
    p = MetricParams(n_boot=250, seed=4, max_group=3)  # 3 chunks of resamples (100, 100, 50)
    cached = score_model(lab, t, p, context=mm.DatasetContext(lab, p.max_group))
    monkeypatch.setattr(mm, "BOOT_CACHE_BYTES", 0)  # regenerate chunk by chunk
    streamed = score_model(lab, t, p, context=mm.DatasetContext(lab, p.max_group))
    assert np.array_equal(cached.boot, streamed.boot)
    assert cached.results["vtopk_any"].ci_low == streamed.results["vtopk_any"].ci_low
