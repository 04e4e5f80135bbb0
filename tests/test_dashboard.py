"""The report dashboard (mlray.dashboard, ``mlray dashboard DIR``): data shaping checked exactly against the
Parquet reports, the summary reports the page shows (``dataset_gaps``, ``external_gap_summary``) and the notes when
they are missing, omitted charts, the report folder found inside an ``mlray evaluate`` output folder, one-line
errors, the analysis reports on the page (fit lines with slope and R², labelled points, colour toggles, rank changes,
group means, no clipped points), and the page in headless Chromium (no console errors, every chart drawn, tables sort
and scroll visibly, the colour buttons work; a full-page screenshot in test-artifacts/dashboard.png and one per
section in test-artifacts/dashboard-<section>.png).

The browser test needs the Debian ``chromium`` and ``chromium-driver`` packages and the ``selenium`` package; it
skips (with the reason) without them, and fails instead when ``MLRAY_REQUIRE_BROWSER=1`` (CI). With
``MLRAY_UPDATE_SCREENSHOT=1`` it also refreshes ``dashboards/screenshot.png`` (the README's picture).
"""

from __future__ import annotations

import itertools
import json
import os
import re
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import REPO, SHARED_DATA

from mlray.cli import main
from mlray.dashboard import DATASET_COLORS, build_dashboard, load_reports
from mlray.errors import MlrayError
from mlray.external import GAP_SUMMARY_FILE, gap_summary, import_results
from mlray.reports import DATASET_GAPS_COLUMNS, dataset_gaps_frame

ARTIFACTS = REPO / "test-artifacts"
SCREENSHOT = REPO / "dashboards" / "screenshot.png"


def embedded(path: Path) -> dict:
    """The JSON document the page embeds (<script id="mlray-data" type="application/json">)."""
    text = path.read_text(encoding="utf-8")
    m = re.search(r'<script type="application/json" id="mlray-data">(.*?)</script>', text, re.S)
    assert m, "the page has no embedded data"
    return json.loads(m.group(1))


def pct(v):
    return None if v is None or (isinstance(v, float) and np.isnan(v)) else 100 * v


# --------------------------------------------------------------------------------------------------------------
# Hand-written reports (no Ray): three datasets with arbitrary names


def write(frame: pd.DataFrame, folder: Path, name: str) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    frame.to_parquet(folder / f"{name}.parquet", index=False)


HIST = pd.DataFrame(
    {
        "dataset": ["alpha", "alpha", "alpha", "beta", "beta", "gamma"],
        "n_labels": [1, 2, 3, 1, 2, 1],
        "n_images": [6, 3, 1, 2, 2, 5],
        "fraction": [0.6, 0.3, 0.1, 0.5, 0.5, 1.0],
    }
)
STATS = pd.DataFrame(
    {
        "dataset": ["alpha", "beta", "gamma"],
        "n_images": [11, 4, 5],
        "n_labelled": [10, 4, 5],
        "n_empty": [1, 0, 0],
        "n_unannotated": [0, 0, 0],
        "n_multi": [4, 2, 0],
        "multi_fraction": [0.4, 0.5, 0.0],
        "mean_labels": [1.5, 1.5, 1.0],
        "original_in_valid_fraction": [0.9, 1.0, 1.0],
    }
)


def model_metrics() -> pd.DataFrame:
    rows = []
    values = {  # (model, dataset) -> top1, real_top1, vtopk_all, asma_vtopk_all
        ("m1", "alpha"): (0.80, 0.85, 0.70, 0.65),
        ("m1", "beta"): (0.60, 0.75, 0.50, 0.55),
        ("m1", "gamma"): (0.70, 0.72, 0.71, 0.71),
        ("m2", "alpha"): (0.90, 0.92, 0.80, 0.78),
        ("m2", "beta"): (0.70, 0.85, 0.60, 0.66),
        ("m3", "alpha"): (0.50, 0.55, 0.40, 0.35),  # only on alpha: left out of the scatters
    }
    for (model, dataset), vals in values.items():
        for metric, v in zip(("top1", "real_top1", "vtopk_all", "asma_vtopk_all"), vals):
            rows.append({"model": model, "dataset": dataset, "metric": metric, "value": v, "ci_low": v - 0.05,
                         "ci_high": v + 0.04, "n": 10, "params": "{}", "available": True, "reason": ""})  # fmt: skip
    rows.append({"model": "m1", "dataset": "alpha", "metric": "top5", "value": np.nan, "ci_low": np.nan,
                 "ci_high": np.nan, "n": 0, "params": "{}", "available": False, "reason": "needs 5 ranks"})  # fmt: skip
    return pd.DataFrame(rows)


def subgroups() -> pd.DataFrame:
    rows = []
    for model, dataset, vals in (("m1", "alpha", (0.9, 0.6, np.nan)), ("m1", "beta", (0.8, 0.5, 0.4))):
        for g, v in zip(("1", "2", "3+"), vals):
            rows.append({"model": model, "dataset": dataset, "group": g, "metric": "vtopk_all", "value": v,
                         "n": 0 if np.isnan(v) else 4, "available": not np.isnan(v)})  # fmt: skip
    return pd.DataFrame(rows)


def gaps() -> pd.DataFrame:
    rows = []
    for model, a, b, gap, comp in (("m1", "alpha", "beta", 0.2, 0.15), ("m2", "alpha", "beta", 0.2, 0.05),
                                   ("m1", "beta", "alpha", -0.2, -0.1)):  # fmt: skip
        rows.append({"model": model, "dataset_a": a, "dataset_b": b, "metric": "top1", "value_a": 0.8,
                     "value_b": 0.8 - gap, "gap": gap, "composition": comp, "within": gap - comp,
                     "gap_ci_low": gap - 0.03, "gap_ci_high": gap + 0.02})  # fmt: skip
    return pd.DataFrame(rows)


@pytest.fixture()
def hand_reports(tmp_path) -> Path:
    folder = tmp_path / "reports"
    write(HIST, folder, "label_count_hist")
    write(STATS, folder, "dataset_stats")
    write(model_metrics(), folder, "model_metrics")
    write(subgroups(), folder, "subgroup_metrics")
    write(gaps(), folder, "gap_decomposition")
    write(dataset_gaps_frame(model_metrics(), gaps(), ["alpha", "beta", "gamma"]), folder, "dataset_gaps")
    return folder


def test_dataset_gaps_report_exact():
    """mlray.reports.dataset_gaps_frame: mean gaps over the models per ordered pair and metric (what score_report
    writes as dataset_gaps.parquet and the page shows)."""
    dg = dataset_gaps_frame(model_metrics(), gaps(), ["alpha", "beta", "gamma"])
    assert list(dg.columns) == DATASET_GAPS_COLUMNS
    assert dg["n_models"].dtype == "int64" and dg["mean_gap"].dtype == "float64"
    rows = dg.set_index(["dataset_a", "dataset_b", "metric"])
    # top5 is unavailable everywhere, so it has no row; m3 (alpha only) is in no pair
    assert set(rows.index.get_level_values("metric")) == {"top1", "real_top1", "vtopk_all", "asma_vtopk_all"}
    assert set(zip(dg.dataset_a, dg.dataset_b)) == set(itertools.permutations(["alpha", "beta", "gamma"], 2))
    ab = rows.loc[("alpha", "beta", "top1")]
    assert ab["n_models"] == 2 and ab["mean_gap"] == ((0.80 - 0.60) + (0.90 - 0.70)) / 2
    assert ab["n_decomposed"] == 2 and ab["mean_decomposed_gap"] == 0.2
    assert ab["mean_composition"] == (0.15 + 0.05) / 2 and ab["mean_within"] == ((0.2 - 0.15) + (0.2 - 0.05)) / 2
    assert ab["share_explained"] == ((0.15 + 0.05) / 2) / 0.2
    ba = rows.loc[("beta", "alpha", "top1")]
    assert ba["n_models"] == 2 and ba["n_decomposed"] == 1 and ba["share_explained"] == -0.1 / -0.2
    ag = rows.loc[("alpha", "gamma", "asma_vtopk_all")]
    assert ag["n_models"] == 1 and ag["mean_gap"] == 0.65 - 0.71 and ag["n_decomposed"] == 0
    assert np.isnan(ag["mean_decomposed_gap"]) and np.isnan(ag["share_explained"])
    # a gap under one point explains nothing: share_explained is NaN
    small = gaps().assign(gap=0.005, composition=0.004, within=0.001)
    assert dataset_gaps_frame(model_metrics(), small, ["alpha", "beta"])["share_explained"].isna().all()
    # one dataset (score_report on a single dataset): no pair, no row, the columns typed
    one = dataset_gaps_frame(model_metrics(), pd.DataFrame(), ["alpha"])
    assert one.empty and list(one.columns) == DATASET_GAPS_COLUMNS and one["n_models"].dtype == "int64"


def test_headline_cards_from_the_summary_reports(hand_reports):
    text = build_dashboard(hand_reports).read_text()
    card = (
        '<div class="card" style="--accent:#E69F00"><div class="card-label">top-1 gap alpha → beta</div>'
        '<div class="card-value">+20.00 pts</div><div class="card-sub">mean over 2 model(s); label-count mix '
        "explains 50 %</div></div>"
    )
    assert card in text and "top-1 gap alpha → gamma" not in text  # no model has a gap alpha -> gamma
    assert "Not shown: the mean gaps" not in text
    assert "docs/design.md" in text and "DESIGN.md" not in text  # the footer cites the design notes


def test_missing_dataset_gaps_is_a_note(hand_reports):
    """A folder written before mlray wrote dataset_gaps.parquet: no gap card, no mean gaps, one note line."""
    (hand_reports / "dataset_gaps.parquet").unlink()
    page = build_dashboard(hand_reports)
    text = page.read_text()
    assert "top-1 gap alpha → beta" not in text
    assert text.count('<p class="note">Not shown: the mean gaps') == 1
    assert (
        '<p class="note">Not shown: the mean gaps between datasets (cards, scatter panels): dataset_gaps.parquet '
        "is not in this report directory (written by mlray score / evaluate).</p>"
    ) in text
    titles = [a["text"] for a in embedded(page)["charts"]["scatter-0"]["figure"]["layout"]["annotations"]]
    assert not [t for t in titles if t.startswith("mean gap")]
    # the rest of the page is unchanged: the scatter and gap charts are drawn
    assert {"scatter-0", "scatter-1", "gap-0"} <= set(embedded(page)["charts"])


def published_csv(folder: Path) -> Path:
    """An imagenet-testbed table: r 76.5 -> 64.5 and s 80 -> 70 (val -> ImageNetV2 MatchedFrequency top-1)."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "robustness_top1s.csv"
    path.write_text("model,val,imagenetv2-matched-frequency-format-val\nr,76.5,64.5\ns,80,70\n")
    return path


def test_published_gap_from_its_report(tmp_path):
    """import_results writes external_gap_summary.parquet next to external_results.parquet; the page's card and
    table show it (and a note stands in for both when a folder lacks it)."""
    folder = tmp_path / "reports"
    df, summary, path = import_results(published_csv(tmp_path / "in"), folder)
    assert sorted(p.name for p in folder.iterdir()) == ["external_gap_summary.parquet", "external_results.parquet"]
    stored = pd.read_parquet(folder / GAP_SUMMARY_FILE)
    pd.testing.assert_frame_equal(stored, gap_summary(df), check_dtype=False)
    assert stored[["collection", "count"]].values.tolist() == [["imagenet-testbed", 2]]
    text = build_dashboard(folder).read_text()
    assert (
        '<div class="card" style="--accent:#6b7280"><div class="card-label">published top-1 gap val → V2 '
        '(imagenet-testbed)</div><div class="card-value">+11.00 pts</div><div class="card-sub">mean over 2 models '
        "(median +11.00)</div></div>"
    ) in text
    assert '<table class="sortable" id="table-published-gap">' in text
    assert '<td>imagenet-testbed</td><td class="num" data-v="2.0">2</td>' in text

    (folder / GAP_SUMMARY_FILE).unlink()
    text = build_dashboard(folder).read_text()
    assert "published top-1 gap val → V2" not in text and 'id="table-published-gap"' not in text
    assert (
        '<p class="note">Not shown: the published val → ImageNetV2 gap (card, table): '
        "external_gap_summary.parquet is not in this report directory (written by mlray import-results).</p>"
    ) in text
    assert 'id="table-published"' in text  # the per-model table reads external_results itself


def test_evaluate_output_folder_finds_its_reports(hand_reports, capsys):
    """``mlray dashboard OUT`` on an ``mlray evaluate`` output folder reads OUT/reports and writes the page there."""
    out = hand_reports.parent
    assert hand_reports == out / "reports" and not list(out.glob("*.parquet"))
    page = build_dashboard(out)
    assert page == hand_reports / "dashboard.html"
    assert embedded(page)["meta"]["source"] == str(hand_reports.resolve())
    assert load_reports(out).directory == hand_reports
    page.unlink()
    assert main(["dashboard", str(out)]) == 0
    assert (hand_reports / "dashboard.html").is_file() and not (out / "dashboard.html").exists()
    assert "dashboard.html" in capsys.readouterr().out


def test_histogram_and_share_exact(hand_reports):
    page = build_dashboard(hand_reports)
    assert page == hand_reports / "dashboard.html"
    data = embedded(page)
    assert data["meta"]["datasets"] == ["alpha", "beta", "gamma"]
    assert data["meta"]["colors"] == {"alpha": DATASET_COLORS[0], "beta": DATASET_COLORS[1], "gamma": DATASET_COLORS[2]}
    bars = data["charts"]["label-hist"]["figure"]["data"]
    assert [t["name"] for t in bars] == ["alpha", "beta", "gamma"]
    assert bars[0]["x"] == [1, 2, 3] and bars[0]["y"] == [60.0, 30.0, 10.0]
    assert bars[1]["x"] == [1, 2] and bars[1]["y"] == [50.0, 50.0]
    assert bars[2]["y"] == [100.0] and bars[2]["marker"]["color"] == DATASET_COLORS[2]
    assert [c[0] for c in bars[0]["customdata"]] == [6, 3, 1]  # image counts in the hover
    share = data["charts"]["multi-share"]["figure"]["data"][0]
    assert share["x"] == ["alpha", "beta", "gamma"] and share["y"] == [40.0, 50.0, 0.0]
    assert share["text"] == ["40.00 %", "50.00 %", "0.00 %"]
    layout = data["charts"]["label-hist"]["figure"]["layout"]
    assert layout["yaxis"]["title"]["text"] == "share of labelled images (%)"


def test_scatter_first_dataset_against_each_other(hand_reports):
    data = embedded(build_dashboard(hand_reports))
    for cid, b, models in (("scatter-0", "beta", ["m1", "m2"]), ("scatter-1", "gamma", ["m1"])):
        fig = data["charts"][cid]["figure"]
        points = [t for t in fig["data"] if t["mode"] == "markers"]
        lines = [t for t in fig["data"] if t["mode"] == "lines"]
        assert len(points) == 4 and len(lines) == 4  # top-1, ReaL, variable top-k, ASMA; one y = x line each
        assert all(t["line"]["dash"] == "dash" and t["x"] == t["y"] for t in lines)
        assert fig["layout"]["xaxis"]["title"]["text"] == "alpha (%)"
        assert fig["layout"]["yaxis"]["title"]["text"] == f"{b} (%)"
        assert points[0]["text"] == models  # hover names; m3 has no value on beta / gamma
        assert all(t["marker"]["color"] == DATASET_COLORS[1 + int(cid[-1])] for t in points)
    top1 = data["charts"]["scatter-0"]["figure"]["data"][1]
    assert top1["x"] == [100 * 0.80, 100 * 0.90] and top1["y"] == [100 * 0.60, 100 * 0.70]
    hi = [100 * (v + 0.04) - 100 * v for v in (0.80, 0.90)]  # the report's ci_high = value + 0.04
    lo = [100 * v - 100 * (v - 0.05) for v in (0.80, 0.90)]
    assert top1["error_x"]["array"] == hi and top1["error_x"]["arrayminus"] == lo
    asma = data["charts"]["scatter-0"]["figure"]["data"][7]
    assert asma["x"] == [100 * 0.65, 100 * 0.78] and asma["y"] == [100 * 0.55, 100 * 0.66]
    titles = [a["text"] for a in data["charts"]["scatter-0"]["figure"]["layout"]["annotations"]]
    assert titles[:4] == ["Top-1 (original label)", "ReaL top-1", "Variable top-k (strict)",
                          "ASMA (variable top-k, strict)"]  # fmt: skip
    assert f"mean gap {((80 - 60) + (90 - 70)) / 2:+.2f} pts" in titles
    assert "Left out (metrics on only one of the two datasets): m3." in (hand_reports / "dashboard.html").read_text()


def test_subgroups_gap_bars_and_tables(hand_reports):
    page = build_dashboard(hand_reports, hand_reports.parent / "out" / "page.html")
    assert page == hand_reports.parent / "out" / "page.html" and not (hand_reports / "dashboard.html").exists()
    data = embedded(page)
    lines = data["charts"]["subgroups"]["figure"]["data"]
    assert [(t["name"], t["text"][0]) for t in lines] == [("alpha", "m1"), ("beta", "m1")]
    assert lines[0]["x"] == ["1", "2", "3+"] and lines[0]["y"] == [90.0, 60.0, None]
    assert lines[1]["y"] == [100 * 0.8, 50.0, 100 * 0.4] and [c[0] for c in lines[1]["customdata"]] == [4, 4, 4]
    gap = data["charts"]["gap-0"]["figure"]["data"]
    comp, within, total = gap
    assert comp["name"].startswith("composition") and comp["y"] == ["m1", "m2"]
    assert comp["x"] == [100 * 0.15, 100 * 0.05]
    assert within["x"] == [100 * (0.2 - 0.15), 100 * (0.2 - 0.05)]
    assert total["x"] == [100 * 0.2, 100 * 0.2] and total["marker"]["symbol"] == "diamond"
    assert data["omitted"]["gap-1"].startswith("gap_decomposition.parquet has no gap for alpha → gamma")
    text = page.read_text()
    # the model table: one row per (model, dataset); top5 unavailable shows n/a with the reason
    assert '<td class="num" data-v="" title="needs 5 ranks">n/a</td>' in text
    assert '<td class="num" data-v="0.8" title="95 % CI 75.00 – 84.00 %, n = 10">80.00</td>' in text
    # the gap table lists A -> B only (report order), never B -> A
    assert text.count("<td>beta</td><td>alpha</td>") == 0 and text.count("<td>alpha</td><td>beta</td>") == 2
    assert "Not shown: external_results.parquet is not in this report directory" in text


# --------------------------------------------------------------------------------------------------------------
# The analysis reports on the page (mlray analyze: fits, rank_changes, model_analysis, group_summaries)


def _markers(fig: dict) -> list[dict]:
    return [t for t in fig["data"] if t.get("mode") == "markers"]


def test_scatter_fits_labels_colours_and_no_clipping(hand_reports):
    """With the analysis reports: each A-vs-B panel draws the linear and probit fits of ``fits`` (the line's ends
    are the report's slope and intercept at x_min and x_max), names them with slope and R², labels every point
    (few models), offers the colour buttons, and keeps every point and whisker inside its axis range."""
    from mlray.analysis import analyze

    result = analyze(hand_reports, n_boot=50)
    fits = result.frames["fits"].set_index(["dataset_a", "dataset_b", "metric", "scale"])
    data = embedded(build_dashboard(hand_reports))
    fig = data["charts"]["scatter-0"]["figure"]
    lines = [t for t in fig["data"] if t.get("name") == "linear fit"]
    assert len(lines) == 4  # one per panel: alpha -> beta has two models under every metric
    top1 = fits.loc[("alpha", "beta", "top1", "linear")]
    assert (top1.slope, top1.n_models) == (pytest.approx(1.0), 2) and top1.intercept == pytest.approx(-0.2)
    assert lines[0]["x"] == [100 * top1.x_min, 100 * top1.x_max]
    assert lines[0]["y"] == pytest.approx([100 * (top1.slope * top1.x_min + top1.intercept),
                                           100 * (top1.slope * top1.x_max + top1.intercept)])  # fmt: skip
    texts = [a["text"] for a in fig["layout"]["annotations"]]
    assert "linear: slope 1.000, R² 1.000" in "".join(texts)
    assert "linear: y = 1.000 x − 20.00, R² 1.000, 2 models" in lines[0]["hovertemplate"]
    assert "m1" in texts and "m2" in texts  # every point named
    probit = [t for t in fig["data"] if t.get("name") == "probit fit"]
    assert len(probit) == 4 and probit[0]["line"]["dash"] == "dot"
    # colour buttons: dataset (the default), family, pretraining; each shows the lines and one colouring
    menu = fig["layout"]["updatemenus"][0]
    assert [b["label"] for b in menu["buttons"]] == ["colour: dataset", "colour: architecture family",
                                                     "colour: pretraining"]  # fmt: skip
    metas = [t.get("meta") for t in fig["data"]]
    for button, kind in zip(menu["buttons"], ("default", "family", "pretrain")):
        visible = button["args"][0]["visible"]
        assert visible == [m == "base" or m == f"color:{kind}" for m in metas]
    assert all(t.get("visible") is False for t in fig["data"] if t.get("meta") in ("color:family", "color:pretrain"))
    # no clipped point: markers are drawn over the axis edge and every value (and whisker) is inside the range
    for i, t in enumerate(_markers(fig)):
        assert t["cliponaxis"] is False
        axis = "" if t.get("xaxis", "x") == "x" else t["xaxis"][1:]
        xr, yr = fig["layout"][f"xaxis{axis}"]["range"], fig["layout"][f"yaxis{axis}"]["range"]
        hi = [v + p for v, p in zip(t["x"], t.get("error_x", {}).get("array") or [0] * len(t["x"]))]
        assert xr[0] < min(t["x"]) and max(hi) < xr[1] and yr[0] < min(t["y"]) and max(t["y"]) < yr[1], i


def test_points_at_100_percent_are_not_on_the_edge(tmp_path):
    """A model at 100 % (the demo's ReaL top-1) sits inside the axis range, not on its edge."""
    rows = []
    for model, (va, vb) in {"a": (1.0, 0.8), "b": (1.0, 0.9), "c": (0.9, 1.0), "d": (1.0, 0.8)}.items():
        for dataset, v in (("one", va), ("two", vb)):
            rows.append({"model": model, "dataset": dataset, "metric": "real_top1", "value": v, "ci_low": v,
                         "ci_high": v, "n": 6, "available": True})  # fmt: skip
    folder = tmp_path / "r"
    write(pd.DataFrame(rows), folder, "model_metrics")
    fig = embedded(build_dashboard(folder))["charts"]["scatter-0"]["figure"]
    points = _markers(fig)[0]
    assert points["x"] == [100.0, 100.0, 90.0, 100.0] and points["cliponaxis"] is False
    assert fig["layout"]["xaxis"]["range"][1] > 100 and fig["layout"]["yaxis"]["range"][1] > 100
    # models at the same place get one label naming them all, so the dots are never anonymous
    labels = [a["text"] for a in fig["layout"]["annotations"] if a.get("showarrow")]
    assert sorted(labels) == ["a, d", "b", "c"]


def test_subgroup_lines_do_not_hide_each_other(hand_reports):
    """Each model's points sit side by side within a label-count group (scattermode group, one offset group per
    model), each model has its marker, and a menu shows one model at a time."""
    sg = subgroups()
    extra = sg.assign(model="m2", value=sg["value"])  # a second model with the same values: drawn beside m1
    write(pd.concat([sg, extra], ignore_index=True), hand_reports, "subgroup_metrics")
    fig = embedded(build_dashboard(hand_reports))["charts"]["subgroups"]["figure"]
    assert fig["layout"]["scattermode"] == "group"
    traces = fig["data"]
    assert [(t["offsetgroup"], t["meta"], t["name"]) for t in traces] == [
        ("m1", "m1", "alpha"), ("m2", "m2", "alpha"), ("m1", "m1", "beta"), ("m2", "m2", "beta")]  # fmt: skip
    assert traces[0]["marker"]["symbol"] != traces[1]["marker"]["symbol"]
    menu = fig["layout"]["updatemenus"][0]
    assert [b["label"] for b in menu["buttons"]] == ["all models", "m1", "m2"]
    assert menu["buttons"][2]["args"][0]["visible"] == [False, True, False, True]


def test_population_section_from_the_analysis_reports(hand_reports):
    """The rank-change chart reads the ranks of model_analysis, the group chart and the tables the rows of
    group_summaries, fits and rank_changes (values as the reports hold them, in %)."""
    from mlray.analysis import analyze

    result = analyze(hand_reports, n_boot=50)
    page = build_dashboard(hand_reports)
    data, text = embedded(page), page.read_text()
    ranks = data["charts"]["rank-changes"]["figure"]
    ma = result.frames["model_analysis"]
    alpha = ma[(ma.dataset == "alpha")].set_index(["model", "metric"])["rank"]
    drawn = {}
    for t in [t for t in ranks["data"] if t.get("xaxis", "x") == "x"]:  # the first panel: alpha
        for name, info in zip(t["text"], t["customdata"]):
            if name is not None:
                drawn[name] = tuple(info[:2])
    assert drawn == {m: (alpha[(m, "top1")], alpha[(m, "asma_vtopk_all")]) for m in ("m1", "m2", "m3")}
    groups = data["charts"]["groups-0"]["figure"]
    gs = result.frames["group_summaries"]
    gap = gs[(gs.grouping == "pretrain") & (gs.quantity == "gap") & (gs.metric == "top1") & (gs.dataset == "beta")]
    first = groups["data"][0]
    assert first["meta"] == "view:pretrain" and first["x"] == [100 * v for v in gap["mean"]]
    for tid in ("table-fits", "table-rank-changes", "table-groups", "table-model-analysis"):
        assert f'<table class="sortable" id="{tid}">' in text
    assert '<a href="#population">Across models</a>' in text
    # without the analysis reports: one note per chart, the tables left out
    for name in ("fits", "rank_changes", "model_analysis", "group_summaries"):
        (hand_reports / f"{name}.parquet").unlink()
    data = embedded(build_dashboard(hand_reports))
    assert data["omitted"]["rank-changes"] == (
        "model_analysis.parquet is not in this report directory (written by mlray analyze, score and evaluate)"
    )
    assert data["omitted"]["groups-0"].startswith("group_summaries.parquet is not in this report directory")


def test_published_fits_on_the_page(tmp_path):
    """import-results + analyze: the published chart draws each collection's fits and names them."""
    from mlray.analysis import analyze

    folder = tmp_path / "reports"
    import_results(published_csv(tmp_path / "in"), folder)
    analyze(folder, n_boot=20)
    fig = embedded(build_dashboard(folder))["charts"]["published"]["figure"]
    line = [t for t in fig["data"] if t.get("name") == "linear fit (imagenet-testbed)"]
    assert len(line) == 1 and line[0]["x"] == [76.5, 80.0] and line[0]["y"] == pytest.approx([64.5, 70.0])
    texts = " ".join(a["text"] for a in fig["layout"]["annotations"])
    slope = (0.70 - 0.645) / (0.80 - 0.765)
    assert f"imagenet-testbed linear: slope {slope:.3f}, R² 1.000" in texts


def test_missing_reports_are_notes_not_errors(tmp_path):
    folder = tmp_path / "stats-only"
    write(HIST, folder, "label_count_hist")
    data = embedded(build_dashboard(folder))
    assert list(data["charts"]) == ["label-hist"]
    assert set(data["omitted"]) == {
        "multi-share",
        "scatter-0",
        "subgroups",
        "gap-0",
        "rank-changes",
        "groups-0",
        "published",
    }
    assert data["omitted"]["multi-share"].startswith("dataset_stats.parquet is not in this report directory")
    # a report with no rows (score_report writes an empty gap table for a single dataset) is not an error
    pd.DataFrame().to_parquet(folder / "gap_decomposition.parquet")
    assert "gap-0" in embedded(build_dashboard(folder))["omitted"]


def test_gap_with_predictions_on_a_only(tmp_path):
    """score_report's rows when only A has a model's predictions: no gap, but A at B's label-count mix."""
    folder = tmp_path / "reports"
    write(HIST, folder, "label_count_hist")
    row = {"model": "m1", "dataset_a": "alpha", "dataset_b": "beta", "metric": "top1", "value_a": 0.75,
           "value_b": np.nan, "gap": np.nan, "composition": np.nan, "within": np.nan, "a_standardized_to_b": 0.62,
           "b_standardized_to_a": np.nan}  # fmt: skip
    write(pd.DataFrame([row]), folder, "gap_decomposition")
    page = build_dashboard(folder)
    data = embedded(page)
    assert data["omitted"]["gap-0"] == (
        "gap_decomposition.parquet has no gap for alpha → beta (models need predictions on both); "
        "the table below gives alpha's accuracy reweighted to beta's label-count mix"
    )
    text = page.read_text()
    assert ('<td>m1</td><td>alpha</td><td>beta</td><td>top1</td><td class="num" data-v="0.75">75.00</td>'
            '<td class="num" data-v="0.62">62.00</td><td class="num" data-v="">n/a</td>') in text  # fmt: skip


def test_errors_are_one_line(tmp_path, capsys):
    with pytest.raises(MlrayError, match=r"no such report directory"):
        build_dashboard(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(MlrayError) as exc:
        build_dashboard(tmp_path / "empty")
    assert "no mlray reports in this folder" in str(exc.value) and "\n" not in str(exc.value)
    # it says where it looked: the folder and its reports/ subfolder (where mlray evaluate writes them)
    assert str(exc.value).startswith(f"{tmp_path / 'empty'}: no mlray reports in this folder or in "
                                     f"{tmp_path / 'empty' / 'reports'} (expected any of ")  # fmt: skip
    (tmp_path / "empty" / "reports").mkdir()
    with pytest.raises(MlrayError, match=r"no mlray reports in this folder or in .*empty/reports \(expected"):
        load_reports(tmp_path / "empty")
    bad = tmp_path / "bad"
    write(pd.DataFrame({"dataset": ["x"], "n_labels": [1]}), bad, "label_count_hist")
    missing = r"label_count_hist.parquet: not an mlray label_count_hist report: missing column\(s\) n_images, fraction"
    with pytest.raises(MlrayError, match=missing):
        load_reports(bad)
    (bad / "label_count_hist.parquet").write_text("not parquet")
    with pytest.raises(MlrayError, match=r"not a readable Parquet file"):
        load_reports(bad)
    assert main(["dashboard", str(tmp_path / "empty")]) == 2
    err = capsys.readouterr().err
    assert "mlray: error:" in err and "no mlray reports in this folder" in err and "Traceback" not in err


def test_cli_dashboard(hand_reports, tmp_path, capsys):
    out = tmp_path / "x" / "d.html"
    assert main(["dashboard", str(hand_reports), "--out", str(out)]) == 0
    assert out.is_file() and str(out) in capsys.readouterr().out.replace("\n", "")
    text = out.read_text()
    from plotly.offline import get_plotlyjs

    assert "<script src" not in text and "<link" not in text and "<img" not in text  # self-contained
    assert text.count(get_plotlyjs()) == 1  # plotly.js inlined, once

    # --out naming an existing folder puts the page inside it; an unwritable target is one line, no temp file left
    folder = tmp_path / "pages"
    folder.mkdir()
    assert main(["dashboard", str(hand_reports), "--out", str(folder)]) == 0
    assert sorted(p.name for p in folder.iterdir()) == ["dashboard.html"]
    blocker = tmp_path / "file"
    blocker.write_text("x")
    capsys.readouterr()
    assert main(["dashboard", str(hand_reports), "--out", str(blocker / "d.html")]) == 2
    assert (
        capsys.readouterr().err.startswith("mlray: error: ")
        and sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".tmp")) == []
    )


# --------------------------------------------------------------------------------------------------------------
# A real report directory: synthetic predictions scored by mlray's own Ray jobs, plus timm's published results

CLASSES = 200
SYNTH_DATASETS = {  # name -> (images, label-count probabilities for k = 1..6, empty images)
    "imagenet-val": (3000, (0.84, 0.11, 0.03, 0.01, 0.007, 0.003), 60),
    "imagenetv2-matched-frequency": (1500, (0.51, 0.24, 0.13, 0.06, 0.035, 0.025), 15),
}
SYNTH_MODELS = {"synthetic-large": 0.92, "synthetic-base": 0.85, "synthetic-small": 0.76, "synthetic-tiny": 0.64}


def synthetic_run(root: Path) -> Path:
    """Label tables for two datasets and top-10 predictions of four models (deterministic), and the config.

    A model puts one valid label first with probability ``skill`` whatever the image's number of labels k (so
    ReaL top-1 hardly depends on k), picks the original label among the valid ones a bit more often than chance
    (so top-1 falls with k) and ranks each other valid label next with probability ``skill`` (so strict variable
    top-k falls with k); on the second dataset it is 1 point worse in every group. The second dataset has far
    more multi-label images, so most of its top-1 gap is composition, as the paper argues for ImageNetV2.
    """
    rng = np.random.default_rng(6)
    lines = ["datasets:"]
    preds = []
    for d_index, (name, (n, probs, n_empty)) in enumerate(SYNTH_DATASETS.items()):
        rows = []
        for i in range(n):
            image = f"{name[:6]}-{i:04d}"
            if i < n_empty:
                rows.append((image, int(rng.integers(CLASSES)), []))
                continue
            k = int(rng.choice(np.arange(1, 7), p=np.array(probs) / sum(probs)))
            valid = [int(c) for c in rng.choice(CLASSES, size=k, replace=False)]
            original = valid[0] if rng.random() < 0.9 else int(rng.integers(CLASSES))
            rows.append((image, original, valid))
        pd.DataFrame(
            {
                "image_id": [r[0] for r in rows],
                "label": [r[1] for r in rows],
                "labels": [";".join(map(str, r[2])) for r in rows],
            }  # fmt: skip
        ).to_csv(root / f"labels-{d_index}.csv", index=False)
        src = f"{{format: table, path: labels-{d_index}.csv}}"
        lines.append(f"  - {{name: {name}, labels: {{original: {src}, multi: {src}}}}}")
        for model, skill in SYNTH_MODELS.items():
            skill_here = skill - 0.01 * d_index
            for image, original, valid in rows:
                ranked: list[int] = []
                if valid and rng.random() < skill_here:
                    k = len(valid)
                    favour = original in valid and rng.random() < 1 / k + (1 - 1 / k) * 0.35
                    first = original if favour else valid[int(rng.integers(k))]
                    ranked.append(first)
                    ranked += [c for c in valid if c != first and rng.random() < skill_here]
                for c in rng.permutation(CLASSES):
                    if len(ranked) >= 10:
                        break
                    if int(c) not in ranked:
                        ranked.append(int(c))
                preds.append((name, model, image, ";".join(map(str, ranked[:10]))))
    pd.DataFrame(preds, columns=["dataset", "model", "image_id", "topk"]).to_csv(root / "predictions.csv", index=False)
    config = root / "run.yaml"
    config.write_text("\n".join(lines) + "\n")
    return config


@pytest.fixture(scope="module")
def scored_reports(ray_cluster, tmp_path_factory) -> Path:
    """stats_report + score_report on the synthetic run (Ray tasks), and external_results from timm's CSVs."""
    from mlray.config import load_config
    from mlray.external import import_results
    from mlray.reports import score_report, stats_report
    from mlray.scoring import MetricParams

    root = tmp_path_factory.mktemp("dash-run")
    config = load_config(synthetic_run(root))
    reports = root / "reports"
    stats_report(config, reports)
    score_report(config, [root / "predictions.csv"], reports, MetricParams(n_boot=40, min_group_size=3, seed=0))
    timm = SHARED_DATA / "timm-results"
    if timm.is_dir():
        import_results([timm / "results-imagenet.csv", timm / "results-imagenet-real.csv",
                        timm / "results-imagenetv2-matched-frequency.csv"], reports)  # fmt: skip
    from mlray.analysis import analyze

    analyze(reports, n_boot=100)  # what mlray score runs after scoring
    return reports


@pytest.mark.ray
def test_page_from_score_reports_matches_parquet(scored_reports):
    page = build_dashboard(scored_reports)
    data = embedded(page)
    assert data["meta"]["datasets"] == list(SYNTH_DATASETS)
    assert data["meta"]["models"] == list(SYNTH_MODELS)
    hist = pd.read_parquet(scored_reports / "label_count_hist.parquet")
    for trace in data["charts"]["label-hist"]["figure"]["data"]:
        rows = hist[hist.dataset == trace["name"]].sort_values("n_labels")
        assert trace["x"] == rows.n_labels.tolist() and trace["y"] == [100 * f for f in rows.fraction]
    mm = pd.read_parquet(scored_reports / "model_metrics.parquet").set_index(["model", "dataset", "metric"])
    a, b = list(SYNTH_DATASETS)
    vtopk = data["charts"]["scatter-0"]["figure"]["data"][5]
    assert vtopk["text"] == list(SYNTH_MODELS)
    assert vtopk["x"] == [100 * mm.loc[(m, a, "vtopk_all"), "value"] for m in SYNTH_MODELS]
    assert vtopk["y"] == [100 * mm.loc[(m, b, "vtopk_all"), "value"] for m in SYNTH_MODELS]
    gd = pd.read_parquet(scored_reports / "gap_decomposition.parquet")
    gd = gd.set_index(["model", "dataset_a", "dataset_b", "metric"])
    comp = data["charts"]["gap-0"]["figure"]["data"][0]
    assert comp["x"] == [100 * gd.loc[(m, a, b, "top1"), "composition"] for m in SYNTH_MODELS]
    # the page shows the summaries score_report wrote (dataset_gaps); they are the means over the models of the
    # reports above (equal up to float rounding: a mean gap of exactly x.xx5 points may show either last digit)
    text = page.read_text()
    dg = pd.read_parquet(scored_reports / "dataset_gaps.parquet").set_index(["dataset_a", "dataset_b", "metric"])
    top1 = gd.loc[(slice(None), a, b, "top1"), :]
    row = dg.loc[(a, b, "top1")]
    assert row["n_decomposed"] == 4 and np.isclose(row["mean_decomposed_gap"], top1["gap"].mean(), rtol=0, atol=1e-12)
    assert np.isclose(row["share_explained"], top1["composition"].mean() / top1["gap"].mean(), rtol=0, atol=1e-12)
    assert (
        f'<div class="card-value">{100 * row["mean_decomposed_gap"]:+.2f} pts</div><div class="card-sub">mean over '
        f"4 model(s); label-count mix explains {100 * row['share_explained']:.0f} %</div>"
    ) in text
    titles = [t["text"] for t in data["charts"]["scatter-0"]["figure"]["layout"]["annotations"]]
    for metric in ("top1", "real_top1", "vtopk_all", "asma_vtopk_all"):
        diffs = [mm.loc[(m, a, metric), "value"] - mm.loc[(m, b, metric), "value"] for m in SYNTH_MODELS]
        assert dg.loc[(a, b, metric), "n_models"] == 4
        assert np.isclose(dg.loc[(a, b, metric), "mean_gap"], sum(diffs) / len(diffs), rtol=0, atol=1e-12)
        assert f"mean gap {100 * dg.loc[(a, b, metric), 'mean_gap']:+.2f} pts" in titles
    if (scored_reports / "external_results.parquet").exists():
        pub = data["charts"]["published"]["figure"]["data"]
        timm = [t for t in pub if t["name"].startswith("timm (")]
        assert len(timm) == 1 and "resnet50.a1_in1k @ 224 px" in timm[0]["text"]
        i = timm[0]["text"].index("resnet50.a1_in1k @ 224 px")
        assert timm[0]["y"][i] == 100 * 0.6847  # the published ImageNetV2 top-1, 68.47 %
        own = [t for t in pub if t["name"].startswith("this report")]
        assert own and own[0]["text"] == list(SYNTH_MODELS)
        summary = gap_summary(pd.read_parquet(scored_reports / "external_results.parquet")).iloc[0]
        assert (
            f'published top-1 gap val → V2 (timm)</div><div class="card-value">{100 * summary["mean"]:+.2f} pts'
            f'</div><div class="card-sub">mean over {summary["count"]:,} models (median {100 * summary["median"]:+.2f})'
        ) in text


# --------------------------------------------------------------------------------------------------------------
# The page in headless Chromium


def _browser():
    """A headless Chromium driven by selenium, or a skip (a failure when MLRAY_REQUIRE_BROWSER=1) with the reason."""
    reason = None
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
    except ImportError:
        reason = "selenium is not installed (pip install selenium)"
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    driver_bin = shutil.which("chromedriver")
    if reason is None and not (chromium and driver_bin):
        reason = "headless Chromium not found (apt-get install chromium chromium-driver)"
    if reason:
        if os.environ.get("MLRAY_REQUIRE_BROWSER") == "1":
            pytest.fail(f"MLRAY_REQUIRE_BROWSER=1 but {reason}")
        pytest.skip(reason)
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--disable-background-networking", "--disable-component-update", "--window-size=1440,1000",
                "--hide-scrollbars", "--force-device-scale-factor=1"):  # fmt: skip
        options.add_argument(arg)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    return webdriver.Chrome(service=Service(driver_bin), options=options)


def _column(driver, table_id: str, index: int) -> list[str]:
    return driver.execute_script(
        "return Array.from(document.getElementById(arguments[0]).tBodies[0].rows)"
        ".map(r => r.cells[arguments[1]].getAttribute('data-v') ?? r.cells[arguments[1]].textContent);",
        table_id,
        index,
    )


@pytest.mark.ray
def test_page_in_headless_chromium(scored_reports):
    page = build_dashboard(scored_reports)
    data = embedded(page)
    driver = _browser()  # skips (or fails under MLRAY_REQUIRE_BROWSER=1) before selenium is imported below
    from selenium.common.exceptions import TimeoutException
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    try:
        driver.get(page.resolve().as_uri())
        try:
            WebDriverWait(driver, 60).until(lambda d: d.execute_script("return document.body.dataset.chartsRendered"))
        except TimeoutException:
            pytest.fail(f"the charts did not finish rendering in 60 s; browser console: {driver.get_log('browser')}")
        charts = driver.find_elements(By.CSS_SELECTOR, ".chart[data-chart]")
        assert sorted(c.get_attribute("id") for c in charts) == sorted(data["charts"])
        assert driver.execute_script("return document.body.dataset.chartsRendered") == str(len(charts))
        for chart in charts:
            svg = chart.find_elements(By.CSS_SELECTOR, "svg.main-svg")
            assert svg, f"chart {chart.get_attribute('id')} has no SVG"
            size = svg[0].size
            assert size["width"] > 200 and size["height"] > 200, chart.get_attribute("id")
            marks = chart.find_elements(By.CSS_SELECTOR, ".scatterlayer .trace path, .barlayer .trace path")
            assert marks, f"chart {chart.get_attribute('id')} drew no marks"

        # sortable tables: the model table by its top1 column, ascending then descending (missing values last)
        table = driver.find_element(By.ID, "table-models")
        headers = table.find_elements(By.CSS_SELECTOR, "thead th")
        names = [h.text.strip() for h in headers]
        col = names.index("top1 (%)")
        mm = pd.read_parquet(scored_reports / "model_metrics.parquet")
        expected = sorted(mm[mm.metric == "top1"].value.tolist())
        headers[col].find_element(By.TAG_NAME, "button").click()
        assert [float(v) for v in _column(driver, "table-models", col)] == expected
        assert headers[col].get_attribute("aria-sort") == "ascending"
        headers[col].find_element(By.TAG_NAME, "button").click()
        assert [float(v) for v in _column(driver, "table-models", col)] == expected[::-1]
        headers[0].find_element(By.TAG_NAME, "button").click()  # text column: model names A..Z
        models = _column(driver, "table-models", 0)
        assert models == sorted(models) and headers[0].get_attribute("aria-sort") == "ascending"

        # the filter box of a long table hides the rows that do not match and says how many are left
        box = driver.find_element(By.CSS_SELECTOR, 'input.table-filter[data-table="table-gaps"]')
        box.send_keys("synthetic-tiny")
        shown = driver.execute_script(
            "return Array.from(document.getElementById('table-gaps').tBodies[0].rows)"
            ".filter(r => r.style.display !== 'none').map(r => r.cells[0].textContent);"
        )
        assert shown == ["synthetic-tiny"] * 7  # one row per metric
        assert driver.find_element(By.CSS_SELECTOR, '.row-count[data-table="table-gaps"]').text == "7 of 28 rows"
        box.clear()
        box.send_keys(" ")  # an input event with an empty query shows every row again
        visible = "return document.querySelectorAll('#table-gaps tbody tr:not([style*=none])').length"
        assert driver.execute_script(visible) == 28

        # wide tables scroll visibly: a table wider than its block marks the block (the hint shows, the wrapper
        # scrolls sideways); a table that fits is not marked
        tables = driver.execute_script(
            "return Array.from(document.querySelectorAll('.table-wrap')).map(w => {"
            "const b = w.closest('.table-block'), h = b.querySelector('.scroll-hint');"
            "return [w.querySelector('table').id, w.scrollWidth > w.clientWidth + 1, b.classList.contains('scrolls-x'),"
            "getComputedStyle(h).display, getComputedStyle(w).overflowX];});"
        )
        assert {"table-fits", "table-rank-changes", "table-groups", "table-model-analysis"} <= {t[0] for t in tables}
        for tid, wider, marked, hint, overflow in tables:
            assert wider == marked and overflow == "auto" and (hint != "none") == wider, tid

        # the colour buttons of the first scatter switch its points to the pretraining colouring
        shown = "return document.getElementById('scatter-0').data.filter(t => t.visible !== false).map(t => t.meta)"
        assert "color:pretrain" not in driver.execute_script(shown)
        button = [b for b in driver.find_elements(By.CSS_SELECTOR, "#scatter-0 .updatemenu-button")
                  if "pretraining" in b.text]  # fmt: skip
        assert button, "no colour button on the scatter"
        button[0].click()
        WebDriverWait(driver, 10).until(lambda d: "color:pretrain" in d.execute_script(shown))
        assert "color:default" not in driver.execute_script(shown)
        back = [
            b for b in driver.find_elements(By.CSS_SELECTOR, "#scatter-0 .updatemenu-button") if "dataset" in b.text
        ]
        back[0].click()  # back to the default colouring for the screenshots
        WebDriverWait(driver, 10).until(lambda d: "color:pretrain" not in d.execute_script(shown))

        ARTIFACTS.mkdir(exist_ok=True)
        driver.execute_script("window.scrollTo(0, 0)")
        height = driver.execute_script("return document.documentElement.scrollHeight")
        driver.set_window_size(1440, min(height, 16000))
        WebDriverWait(driver, 20).until(lambda d: d.execute_script("return document.body.dataset.chartsRendered"))
        assert driver.save_screenshot(str(ARTIFACTS / "dashboard.png"))
        # one screenshot per section (and the header), kept as test artifacts
        parts = driver.find_elements(By.CSS_SELECTOR, "header.top, main > section")
        names = ["header" if p.tag_name == "header" else p.get_attribute("id") for p in parts]
        assert names == ["header", "labels", "models", "gap", "mistakes", "population", "published"]
        for part, name in zip(parts, names):
            assert part.screenshot(str(ARTIFACTS / f"dashboard-{name}.png")), name
        if os.environ.get("MLRAY_UPDATE_SCREENSHOT") == "1":
            # the README's picture: the top of the page down to the end of the first scatter panel
            from PIL import Image

            bottom = driver.execute_script(
                "const r = document.getElementById('scatter-0-panel').getBoundingClientRect();"
                "return Math.ceil(r.bottom + window.scrollY) + 16;"
            )
            with Image.open(ARTIFACTS / "dashboard.png") as full:
                full.crop((0, 0, full.width, min(full.height, bottom))).save(SCREENSHOT, optimize=True)

        severe = [e for e in driver.get_log("browser") if e["level"] == "SEVERE"]
        assert not severe, severe
    finally:
        driver.quit()
