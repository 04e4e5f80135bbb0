"""`mlray demo` end to end (reduced image count, all three real pretrained models) on the session's Ray cluster:
the story's reports and page section, the built sets, the Parquet reports and their key figures, the printed
summary, and a resumed re-run. The story's figures: tests/test_story.py."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from mlray.cli import main
from mlray.demo import DEMO_OBJECTS, MODELS, MULTI, SINGLE, multi_grids, read_story, run_demo, summarize
from mlray.reports import COMPOSITION_REPORT, SCORE_REPORTS, STATS_REPORTS


def expected_label_sets(small: bool) -> dict[str, list[set[int]]]:
    """The valid-label sets the demo must place, from DEMO_OBJECTS alone: the PatchML pool is sorted by source
    photo, and the multi-object grids are the object combinations of multi_grids()."""
    by_photo = [o.classes for o in sorted(DEMO_OBJECTS, key=lambda o: o.photo)]
    single = [set(c) for c in by_photo]
    grids = multi_grids(len(by_photo), small)
    multi = [set().union(*(by_photo[i] for i in grid)) for name in ("1x2", "2x2") for grid in grids[name]]
    return {SINGLE: single, MULTI: multi}


def test_demo_objects_are_well_formed():
    assert len({o.name for o in DEMO_OBJECTS}) == len(DEMO_OBJECTS) == 6
    for o in DEMO_OBJECTS:
        assert all(0 <= c < 1000 for c in o.classes) and len(set(o.classes)) == len(o.classes)
    full, small = multi_grids(6), multi_grids(6, small=True)
    assert [len(full["1x2"]), len(full["2x2"]), len(small["1x2"]), len(small["2x2"])] == [15, 15, 3, 3]
    assert sorted(tuple(sorted(g)) for g in full["2x2"]) == sorted(
        (a, b, c, d) for a in range(6) for b in range(a + 1, 6) for c in range(b + 1, 6) for d in range(c + 1, 6)
    )
    assert multi_grids(6) == full  # fixed seed


def test_demo_config_carries_its_metric_settings(tmp_path):
    """Re-running the demo's own demo.yaml (as its header suggests) scores with the demo's settings, not others."""
    from mlray.config import load_config
    from mlray.demo import build_demo
    from mlray.scoring.params import MetricParams

    build = build_demo(tmp_path / "demo", small=True)
    again = load_config(build.config_path).scoring.params()
    assert again == build.params == MetricParams(max_group=2, min_group_size=1, n_boot=1000, seed=0, ci=0.95)
    # the story is scored with the defaults (its datasets are large): groups 1 .. 5+, written before any Ray work
    assert build.story is not None
    assert load_config(tmp_path / "demo" / "story" / "story.yaml").scoring.params() == MetricParams()
    effect = read_story(tmp_path / "demo" / "reports")
    assert effect[effect.quantity == "share_a"]["group"].tolist() == ["1", "2", "3", "4", "5+"]


@pytest.mark.ray
@pytest.mark.timeout(400)
def test_demo_end_to_end_small(ray_cluster, tmp_path, capsys):
    out = tmp_path / "demo"
    assert main(["demo", "--small", "--out", str(out)]) == 0
    text = " ".join(capsys.readouterr().out.split())  # rich wraps at the terminal width
    assert "6 single-object images, 6 multi-object PatchML images" in text
    for model in MODELS:
        assert f"{SINGLE} / {model}: 6 images = 6 predictions + 0 errors" in text
        assert f"{MULTI} / {model}: 6 images = 6 predictions + 0 errors" in text
    assert "Demo (%)" in text and "Gap S -> M (points)" in text

    reports = out / "reports"
    for name in (*STATS_REPORTS, *SCORE_REPORTS, COMPOSITION_REPORT):
        assert (reports / f"{name}.parquet").is_file(), name
    assert (reports / "dashboard.html").is_file()
    # the story opens the page: read from composition_effect (its figures: tests/test_story.py)
    page = (reports / "dashboard.html").read_text()
    assert page.index('<section id="story">') < page.index('<section id="labels">')
    for name in (*STATS_REPORTS, *SCORE_REPORTS, "external_gap_summary", COMPOSITION_REPORT):
        assert (out / "story" / "reports" / f"{name}.parquet").is_file(), name

    # the built sets: exactly the label sets DEMO_OBJECTS and multi_grids() imply
    expected = expected_label_sets(small=True)
    for dataset in (SINGLE, MULTI):
        labels = pd.read_csv(out / dataset / "labels.csv", dtype=str)
        assert [set(map(int, v.split(";"))) for v in labels["labels"]] == expected[dataset]
    assert json.loads((out / "demo.json").read_text())["multi"]["combinations"] == "every 5th"

    ds = pd.read_parquet(reports / "dataset_stats.parquet").set_index("dataset")
    for dataset in (SINGLE, MULTI):
        sets = expected[dataset]
        n_multi = sum(len(s) >= 2 for s in sets)
        assert ds.loc[dataset, ["n_images", "n_labelled", "n_empty", "n_multi"]].tolist() == [6, 6, 0, n_multi]
        assert ds.loc[dataset, "multi_fraction"] == pytest.approx(n_multi / 6, abs=1e-12)
        assert ds.loc[dataset, "mean_labels"] == pytest.approx(sum(map(len, sets)) / 6, abs=1e-12)
        assert ds.loc[dataset, "original_in_valid_fraction"] == 1.0
    assert ds.loc[SINGLE, "n_multi"] == 4 and ds.loc[MULTI, "n_multi"] == 6  # cat, espresso, motorcycle, rocket
    hist = pd.read_parquet(reports / "label_count_hist.parquet")
    single_hist = hist[hist.dataset == SINGLE].set_index("n_labels")["n_images"].to_dict()
    assert single_hist == {1: 2, 2: 3, 3: 1}

    mm = pd.read_parquet(reports / "model_metrics.parquet")
    assert set(mm["model"]) == set(MODELS) and set(mm["dataset"]) == {SINGLE, MULTI}
    point = mm.set_index(["model", "dataset", "metric"])["value"]
    for model in MODELS:
        # real-model facts on the single-object set: every object's top-1 is in its valid set and every valid
        # set fills the first k ranks; only the cat's recorded single label (tabby) loses to Egyptian cat
        assert point[(model, SINGLE, "top1")] == pytest.approx(5 / 6, abs=1e-12)
        assert point[(model, SINGLE, "real_top1")] == 1.0
        assert point[(model, SINGLE, "vtopk_all")] == 1.0
    sub = pd.read_parquet(reports / "subgroup_metrics.parquet")
    assert set(sub["group"]) == {"1", "2+"}  # the demo's max_group=2

    summary = summarize(reports)
    assert summary["model"].tolist() == list(MODELS)
    gd = pd.read_parquet(reports / "gap_decomposition.parquet")
    for r in summary.itertuples():
        assert r.top1_gap == pytest.approx(r.top1_single - r.top1_multi, abs=1e-12)
        assert r.vtopk_all_gap == pytest.approx(r.vtopk_all_single - r.vtopk_all_multi, abs=1e-12)
        assert r.top1_composition + r.top1_within == pytest.approx(r.top1_gap, abs=1e-9)
        assert r.vtopk_all_composition == pytest.approx(0.0, abs=1e-12)  # 100 % in both single-object subgroups
        row = gd[(gd.model == r.model) & (gd.dataset_a == SINGLE) & (gd.dataset_b == MULTI) & (gd.metric == "top1")]
        assert row["gap"].iloc[0] == r.top1_gap

    # a second run reuses every stored prediction and gives the same summary
    again = run_demo(out, small=True)
    assert sum(again.evaluation.inference.images_processed.values()) == 0
    pd.testing.assert_frame_equal(again.summary, summary)
