"""Dataset statistics and comparisons on tiny hand-computed datasets, and on the real annotations."""

from __future__ import annotations

import math

import numpy as np
import pytest
from conftest import shared

from mlray.labels import SourceLabels, build_dataset_labels, read_source
from mlray.stats import (
    class_stats,
    compare,
    cooccurrence,
    dataset_stats,
    label_count_hist,
    newcombe_difference_interval,
    summarize,
    wilson_interval,
)


def tiny(name, ids, original, valid):
    return build_dataset_labels(name, None, SourceLabels("tiny", "table", ids, original=original, valid=valid)).arrays()


@pytest.fixture()
def a():
    # a1: {0} orig 0 | a2: {1,2} orig 1 | a3: {0,1,2} orig 2 | a4: {} orig 3 | a5: {2} orig 0 (original not valid)
    return tiny("A", ["a1", "a2", "a3", "a4", "a5"], [0, 1, 2, 3, 0], [[0], [1, 2], [0, 1, 2], [], [2]])


@pytest.fixture()
def b():
    return tiny("B", ["b1", "b2", "b3"], [5, 5, 6], [[5], [5], [5, 6]])


def test_dataset_stats_by_hand(a):
    s = dataset_stats("A", a)
    assert s == {
        "dataset": "A",
        "n_images": 5,
        "n_labelled": 4,
        "n_empty": 1,
        "n_unannotated": 0,
        "n_multi": 2,
        "multi_fraction": 0.5,
        "mean_labels": 1.75,
        "n_with_original": 5,
        "original_in_valid_fraction": 0.75,
    }


def test_label_count_hist_by_hand(a):
    h = label_count_hist("A", a)
    assert h.n_labels.tolist() == [1, 2, 3]
    assert h.n_images.tolist() == [2, 1, 1]
    assert h.fraction.tolist() == [0.5, 0.25, 0.25]


def test_class_stats_by_hand(a):
    c = class_stats("A", a).set_index("class_index")
    assert c.loc[0, "wnid"] == "n01440764" and c.loc[0, "name"] == "tench"
    assert c.loc[[0, 1, 2, 3], "n_original"].tolist() == [2, 1, 1, 1]
    assert c.loc[[0, 1, 2, 3], "n_valid"].tolist() == [2, 2, 3, 0]
    assert c.loc[[0, 1, 2], "multi_rate"].tolist() == [0.5, 1.0, 2 / 3]
    assert c.loc[[0, 1, 2], "original_valid_rate"].tolist() == [0.5, 1.0, 1.0]
    assert math.isnan(c.loc[3, "multi_rate"]) and math.isnan(c.loc[3, "original_valid_rate"])
    assert len(c) == 1000 and int(c.n_valid.sum()) == 7


def test_cooccurrence_by_hand(a):
    co = cooccurrence("A", a, top=10)
    assert list(zip(co.class_a, co.class_b, co.n_images)) == [(1, 2, 2), (0, 1, 1), (0, 2, 1)]
    # lift = n_ab * N / (n_a * n_b), N = 4 labelled, n_0 = 2, n_1 = 2, n_2 = 3
    assert co.lift.tolist() == pytest.approx([2 * 4 / (2 * 3), 1 * 4 / (2 * 2), 1 * 4 / (2 * 3)])
    assert len(cooccurrence("A", a, top=1)) == 1


def test_wilson_and_newcombe_reference_values():
    # Newcombe (1998), Stat Med 17: 81/263 -> Wilson (0.2553, 0.3662); 56/70 vs 48/80 -> method 10 (0.0524, 0.3339)
    assert wilson_interval(81, 263) == pytest.approx((0.2553, 0.3662), abs=5e-5)
    assert newcombe_difference_interval(56, 70, 48, 80) == pytest.approx((0.0524, 0.3339), abs=5e-5)


def test_compare_by_hand(a, b):
    comp = compare(summarize("A", a), summarize("B", b), top_classes=5, min_class_images=1).set_index("measure")
    value = comp["value"]
    # p = (1/2, 1/4, 1/4), q = (2/3, 1/3, 0)
    assert value["label_count_total_variation"] == pytest.approx(0.25)
    p, q = np.array([0.5, 0.25, 0.25]), np.array([2 / 3, 1 / 3, 0.0])
    m = (p + q) / 2
    kl = lambda x, y: sum(xi * math.log2(xi / yi) for xi, yi in zip(x, y) if xi > 0)  # noqa: E731
    assert value["label_count_js_distance"] == pytest.approx(math.sqrt((kl(p, m) + kl(q, m)) / 2))
    assert value["label_count_js_distance"] == pytest.approx(0.371383, abs=1e-6)
    # 2 x 3 table [[2, 1, 1], [2, 1, 0]]: chi2 = 0.875 on 2 dof, p = exp(-0.875 / 2)
    assert value["label_count_chi2_statistic"] == pytest.approx(0.875)
    assert value["label_count_chi2_dof"] == 2
    assert value["label_count_chi2_pvalue"] == pytest.approx(math.exp(-0.4375))
    row = comp.loc["multi_fraction_difference"]
    assert row["value"] == pytest.approx(0.5 - 1 / 3)
    assert (row["ci_low"], row["ci_high"]) == pytest.approx(newcombe_difference_interval(2, 4, 1, 3))
    assert value["mean_labels_difference"] == pytest.approx(1.75 - 4 / 3)
    assert value["original_in_valid_fraction_difference"] == pytest.approx(0.75 - 1.0)
    # no class has valid images in both datasets -> no class rows
    assert "class_multi_rate_difference" not in comp.index
    assert (comp["dataset_a"] == "A").all() and (comp["dataset_b"] == "B").all()


def test_compare_class_rates(a):
    # B2: x {0}, y {1,2}, z {2,0}. multi-rates A: 0 -> 1/2, 1 -> 1, 2 -> 2/3; B2: 0 -> 1/2, 1 -> 1 (1 image), 2 -> 1
    b2 = tiny("B2", ["x", "y", "z"], [0, 1, 2], [[0], [1, 2], [2, 0]])
    comp = compare(summarize("A", a), summarize("B2", b2), top_classes=5, min_class_images=2)
    rows = comp[comp.measure == "class_multi_rate_difference"]
    # class 1 has a single image in B2 (< 2): left out; largest |difference| first
    assert rows.class_index.tolist() == [2, 0]
    assert rows.value.tolist() == pytest.approx([2 / 3 - 1.0, 0.0])
    assert rows.name.tolist() == ["great white shark", "tench"]


@pytest.mark.integration
def test_real_comparison_val_vs_v2():
    val = build_dataset_labels(
        "val",
        read_source("imagenetv2-json", shared("imagenetv2", "imagenet-validation-original.json")),
        read_source("real-json", shared("reassessed-imagenet", "real.json")),
    )
    v2 = build_dataset_labels(
        "v2",
        read_source("imagenetv2-json", shared("imagenetv2", "imagenetv2-b-33.json")),
        read_source("multilabelfy-json", shared("multilabelfy-imagenetv2", "imagenetv2_refined_labels.json")),
    )
    comp = compare(summarize("val", val.arrays()), summarize("v2", v2.arrays())).set_index("measure")
    hv = np.array([39394, 5408, 1319, 411, 161, 88, 41, 13, 2, 0, 0, 0]) / 46837
    h2 = np.array([5083, 2385, 1306, 628, 237, 127, 48, 23, 18, 13, 1, 2]) / 9871
    assert comp.loc["label_count_total_variation", "value"] == pytest.approx(0.5 * np.abs(hv - h2).sum())
    assert comp.loc["multi_fraction_difference", "value"] == pytest.approx(7443 / 46837 - 4788 / 9871)
    lo, hi = comp.loc["multi_fraction_difference", ["ci_low", "ci_high"]]
    assert lo < 7443 / 46837 - 4788 / 9871 < hi and hi - lo < 0.025
    assert comp.loc["label_count_chi2_dof", "value"] == 11
    assert comp.loc["label_count_chi2_pvalue", "value"] < 1e-300
