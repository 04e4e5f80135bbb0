"""The reference definitions (mlray.scoring.functional) against the fast path (mlray.scoring.batch), and doctests."""

from __future__ import annotations

import doctest
import importlib
import math
import pkgutil

import numpy as np
import pytest
from test_metrics import make_labels

import mlray.scoring as scoring
from mlray.errors import MlrayError
from mlray.scoring import (
    ASMA_METRICS,
    METRICS,
    PER_IMAGE,
    SHANKAR,
    MetricParams,
    decompose,
    functional,
    score_model,
    standardized_accuracy,
)
from mlray.scoring.registry import SPECS
from mlray.store import topk_from_scores

NOBOOT = dict(n_boot=0)
POOL = np.array([0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 500, 501, 502, 990, 995, 997, 998, 999])


def same(a: float, b: float) -> bool:
    """Equal up to float rounding, or both NaN."""
    return (math.isnan(a) and math.isnan(b)) or math.isclose(a, b, rel_tol=1e-12, abs_tol=1e-12)


def random_case(seed: int, n: int | None = None, prefix: str = "img"):
    """Random labels and ranks: ties in the scores, empty and unannotated sets, unknown originals, rows without
    prediction, problematic flags, unclear sets; for even seeds also rows with fewer stored ranks and K from 1 to 8
    (so k_i > K happens)."""
    rng = np.random.default_rng(seed)
    n = int(rng.integers(60, 160)) if n is None else n
    full = seed % 2 == 1  # odd seeds: every prediction has all the ranks any metric needs
    K = 8 if full else int(rng.integers(1, 9))
    kind = rng.choice(["none", "empty", "1", "1", "1", "2", "2", "3", "4", "6"], size=n)
    valid: list[list[int] | None] = []
    for kd in kind:
        valid.append(None if kd == "none" else [] if kd == "empty" else
                     sorted(rng.choice(POOL, int(kd), replace=False).tolist()))  # fmt: skip
    original = []
    for v in valid:
        u = rng.random()
        original.append(-1 if u < 0.1 else int(rng.choice(POOL)) if u < 0.35 or not v else v[0])
    scores = rng.integers(0, 4, size=(n, len(POOL))).astype(np.float32)  # many ties
    for i, v in enumerate(valid):
        if v and rng.random() < 0.6:  # a decent model: the valid labels score high
            scores[i, np.searchsorted(POOL, v)] += rng.integers(1, 4, size=len(v))
    idx, _ = topk_from_scores(scores, K)
    topk = POOL[idx].astype(np.int16)
    for i in range(n):
        u = rng.random()
        if u < 0.05:
            topk[i] = -1  # no prediction
        elif u < 0.15 and K > 1 and not full:
            topk[i, rng.integers(1, K) :] = -1  # fewer ranks stored
    problematic = (rng.random(n) < 0.15).tolist()
    unclear = [None if v is None else sorted(rng.choice(POOL, int(rng.integers(0, 3)), replace=False).tolist())
               for v in valid]  # fmt: skip
    labels = make_labels(original, valid, problematic=problematic, unclear=unclear, prefix=prefix)
    return labels, topk, original, valid, problematic, unclear


CASES = [(seed, max_group) for seed in range(8) for max_group in (1, 2, 3, 5)]


@pytest.mark.parametrize("seed,max_group", CASES)
def test_functional_equals_batch(seed, max_group):
    labels, topk, original, valid, problematic, unclear = random_case(seed)
    min_group_size = 1 + seed % 4
    s = score_model(labels, topk, MetricParams(max_group=max_group, min_group_size=min_group_size, **NOBOOT))
    for m in PER_IMAGE:
        ref = functional.metric_value(m.name, topk, original, valid)
        # the registry's definition reference is the function metric_value calls
        direct = getattr(functional, m.definition)(topk, original if m.denominator == "original" else valid,
                                                   **m.options)  # fmt: skip
        assert same(ref, direct), m.name
        assert same(ref, s.results[m.name].value), (m.name, ref, s.results[m.name])
        values = functional.subgroup_accuracy(topk, original, valid, m.name, max_group)
        sizes = functional.subgroup_sizes(topk, original, valid, m.name, max_group)
        assert list(values) == list(s.group_labels)
        for g in s.group_labels:
            assert same(values[g], s.subgroups[(m.name, g)].value), (m.name, g)
            assert sizes[g] == s.subgroups[(m.name, g)].n, (m.name, g)
        a = functional.asma(topk, original, valid, m.name, max_group, min_group_size)
        assert same(a, s.results[f"asma_{m.name}"].value), m.name
    ref = functional.shankar_accuracy(topk, original, valid, problematic, unclear)
    assert same(ref, s.results[SHANKAR].value)


@pytest.mark.parametrize("seed", range(6))
def test_decomposition_equals_functional(seed):
    max_group = 2 + seed % 3
    p = MetricParams(max_group=max_group, **NOBOOT)
    la, ta, oa, va, *_ = random_case(100 + seed, prefix="a")
    lb, tb, ob, vb, *_ = random_case(200 + seed, prefix="b")
    sa, sb = score_model(la, ta, p), score_model(lb, tb, p)
    full_b = np.tile(np.array([999], np.int16), (lb.n, 1))  # every image of B predicted: B's label mix only
    for m in METRICS:
        values_a = functional.subgroup_accuracy(ta, oa, va, m, max_group)
        sizes_a = functional.subgroup_sizes(ta, oa, va, m, max_group)
        values_b = functional.subgroup_accuracy(tb, ob, vb, m, max_group)
        sizes_b = functional.subgroup_sizes(tb, ob, vb, m, max_group)
        ref = functional.gap_decomposition(values_a, sizes_a, values_b, sizes_b)
        got = decompose(sa, sb, m)
        for key, v in ref.items():
            assert same(v, got[key]), (m, key, v, got[key])
        std = functional.standardized_accuracy(values_a, sizes_b)
        assert same(std, standardized_accuracy(sa, sb, m)) and same(std, ref["a_standardized_to_b"])
        labels_only = functional.subgroup_sizes(full_b, ob, vb, m, max_group)
        assert same(
            functional.standardized_accuracy(values_a, labels_only), decompose(sa, lb, m)["a_standardized_to_b"]
        )


def test_ranks_not_stored_are_unavailable_in_both():
    original = [1, 2, 3]
    valid = [[1], [2, 4], [3, 5, 6]]
    topk = np.array([[1, 0], [2, 4], [9, 3]], np.int16)  # K = 2 < k_3 = 3
    s = score_model(make_labels(original, valid), topk, MetricParams(max_group=3, min_group_size=1, **NOBOOT))
    for name in ("top5", "real_top5", "vtopk_all", "vtopk_frac", "vtopk_any"):
        assert math.isnan(functional.metric_value(name, topk, original, valid)), name
        assert not s.results[name].available, name
    groups = functional.subgroup_accuracy(topk, original, valid, "vtopk_all", 3)
    assert groups["1"] == groups["2"] == 1.0 and math.isnan(groups["3+"])  # T_2 = {2, 4} = L_2; k_3 = 3 > K
    assert s.subgroups[("vtopk_all", "2")].value == 1.0 and not s.subgroups[("vtopk_all", "3+")].available
    assert math.isnan(functional.asma(topk, original, valid, "vtopk_all", 3, 1))  # a used group is unavailable
    assert not s.results["asma_vtopk_all"].available


def test_no_image_to_take_over_is_nan():
    topk = np.array([[1], [2], [-1]], np.int16)
    original, valid = [-1, -1, 3], [None, [], [3]]  # unannotated, empty, no prediction
    for name in METRICS:
        assert math.isnan(functional.metric_value(name, topk, original, valid)), name
    assert math.isnan(functional.shankar_accuracy(topk, original, valid, [False] * 3))
    s = score_model(make_labels(original, valid, problematic=[False] * 3), topk, MetricParams(**NOBOOT))
    for name in METRICS + ASMA_METRICS + (SHANKAR,):
        assert not s.results[name].available, name


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda: functional.top_k_accuracy([1, 2], [1, 2], k=1), "2-D"),
        (lambda: functional.top_k_accuracy([[1.0], [2.0]], [1, 2], k=1), "integer"),
        (lambda: functional.top_k_accuracy([[1, 1000]], [1], k=1), "class indices"),
        (lambda: functional.top_k_accuracy([[-1, 3]], [3], k=1), "after a -1"),
        (lambda: functional.top_k_accuracy([[3, 3]], [3], k=1), "repeats"),
        (lambda: functional.top_k_accuracy([[3]], [3, 4], k=1), "one entry per image"),
        (lambda: functional.top_k_accuracy([[3]], [3], k=0), "k must be"),
        (lambda: functional.real_accuracy([[3]], [[3, 3]], k=1), "repeats"),
        (lambda: functional.real_accuracy([[3]], [[3], [4]], k=1), "one entry per image"),
        (lambda: functional.variable_top_k([[3]], [[3]], mode="most"), "mode"),  # type: ignore[arg-type]
        (lambda: functional.metric_value("asma_top1", [[3]], [3], [[3]]), "unknown"),
        (lambda: functional.subgroup_accuracy([[3]], [3], [[3]], "top1", max_group=0), "max_group"),
        (lambda: functional.asma([[3]], [3], [[3]], "top1", min_group_size=0), "min_group_size"),
        (lambda: functional.standardized_accuracy({"1": 1.0}, {"2": 1}), "same groups"),
    ],
)
def test_functional_rejects_bad_input(call, match):
    with pytest.raises(MlrayError, match=match):
        call()


def test_registry_is_the_one_list_of_metrics():
    assert METRICS == ("top1", "top5", "real_top1", "real_top5", "vtopk_all", "vtopk_frac", "vtopk_any")
    confidence = {"penalized_valid_share", "penalized_valid_share_conf", "ece_top1", "ece_real"}
    assert set(SPECS) == set(METRICS) | {SHANKAR} | confidence
    for m in SPECS.values():
        assert callable(getattr(functional, m.definition)), m.name
    default = MetricParams.max_group
    assert functional.group_labels() == [str(g) for g in range(1, default)] + [f"{default}+"]


def test_doctests_of_the_scoring_package():
    attempted = 0
    for info in pkgutil.iter_modules(scoring.__path__, prefix="mlray.scoring."):
        module = importlib.import_module(info.name)
        result = doctest.testmod(module, optionflags=doctest.ELLIPSIS)
        assert result.failed == 0, info.name
        attempted += result.attempted
    assert attempted >= 20
