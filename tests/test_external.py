"""Published results import: timm's results CSVs and imagenet-testbed's robustness_top1s.csv -> one long table
(values as fractions 0..1), and the val -> ImageNetV2-MatchedFrequency gap summary."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import error_of

from mlray.external import (
    COLUMNS,
    gap_summary,
    import_results,
    read_results,
    read_results_parquet,
    timm_dataset_name,
    write_results,
)

SHARED = Path(__file__).parents[1].parent / "shared" / "data"
TIMM = SHARED / "timm-results"
TESTBED = SHARED / "imagenet-testbed"
TIMM_HEADER = "model,img_size,top1,top1_err,top5,top5_err,param_count,crop_pct,interpolation\n"


def value(df: pd.DataFrame, model: str, dataset: str, img_size=None, metric: str = "top1") -> float:
    sel = df[(df["model"] == model) & (df["dataset"] == dataset) & (df["metric"] == metric)]
    sel = sel[sel["img_size"].isna()] if img_size is None else sel[sel["img_size"] == img_size]
    assert len(sel) == 1
    return float(sel["value"].iloc[0])


@pytest.fixture(scope="module")
def real() -> pd.DataFrame:
    if not (TIMM / "results-imagenet.csv").is_file() or not (TESTBED / "robustness_top1s.csv").is_file():
        pytest.skip(f"published results not found under {SHARED} (timm-results/ and imagenet-testbed/ are needed)")
    return read_results([TIMM, TESTBED / "robustness_top1s.csv"])


# --------------------------------------------------------------------------------------------------------------
# Real files


@pytest.mark.integration
def test_real_row_counts_per_file(real):
    counts = real.groupby(["source", "dataset"]).size().to_dict()
    assert counts == {
        ("results-imagenet-a-clean.csv", "imagenet-a-clean"): 2 * 1556,
        ("results-imagenet-a.csv", "imagenet-a"): 2 * 1556,
        ("results-imagenet-r-clean.csv", "imagenet-r-clean"): 2 * 1556,
        ("results-imagenet-r.csv", "imagenet-r"): 2 * 1556,
        ("results-imagenet-real.csv", "imagenet-val-real"): 2 * 1556,
        ("results-imagenet.csv", "imagenet-val"): 2 * 1556,
        ("results-imagenetv2-matched-frequency.csv", "imagenetv2-matched-frequency"): 2 * 1556,
        ("results-sketch.csv", "imagenet-sketch"): 2 * 1556,
        ("robustness_top1s.csv", "imagenet-val"): 335,
        ("robustness_top1s.csv", "imagenetv2-matched-frequency"): 335,
        ("robustness_top1s.csv", "imagenetv2-threshold0.7"): 335,
        ("robustness_top1s.csv", "imagenetv2-top-images"): 335,
    }
    timm = real[real["collection"] == "timm"]
    assert timm[["model", "img_size"]].drop_duplicates().shape[0] == 1557  # 1,556 per file; imagenet-a differs by one
    assert timm["model"].nunique() == 1267
    assert list(real.columns) == COLUMNS


@pytest.mark.integration
def test_real_resnet50_a1_values_at_two_sizes(real):
    m = "resnet50.a1_in1k"
    assert [value(real, m, d, 224) for d in ("imagenet-val", "imagenet-val-real", "imagenetv2-matched-frequency")] == [
        0.80382,
        0.85712,
        0.6847,
    ]
    assert [value(real, m, d, 288) for d in ("imagenet-val", "imagenet-val-real", "imagenetv2-matched-frequency")] == [
        0.8124,
        0.86579,
        0.6969,
    ]
    assert value(real, m, "imagenet-val", 224, "top5") == 0.94598
    row = real[(real["model"] == m) & (real["img_size"] == 224) & (real["dataset"] == "imagenet-val")].iloc[0]
    assert (row["param_count"], row["crop_pct"], row["interpolation"], row["source"]) == (
        25.56,
        0.95,
        "bicubic",
        "results-imagenet.csv",
    )


@pytest.mark.integration
def test_real_thousands_separator_row(real):
    m = "eva_giant_patch14_336.clip_ft_in1k"
    sel = real[(real["model"] == m) & (real["source"] == "results-imagenet-real.csv")]
    assert sel["param_count"].tolist() == [1013.01, 1013.01]
    assert sel["img_size"].tolist() == [336, 336]
    assert sel["value"].tolist() == [0.91078, 0.98604]
    assert real["param_count"].max() == 1282.6  # regnety_2560.seer_ft_in1k, "1,282.60"


@pytest.mark.integration
def test_real_testbed_columns(real):
    tb = real[real["collection"] == "imagenet-testbed"]
    assert tb["img_size"].isna().all() and (tb["metric"] == "top1").all()
    assert [
        value(real, "resnet50", d)
        for d in ("imagenet-val", "imagenetv2-matched-frequency", "imagenetv2-threshold0.7", "imagenetv2-top-images")
    ] == [0.761300048828125, 0.6320999908447266, 0.7229000091552734, 0.7772999572753906]
    assert value(real, "FixResNeXt101_32x48d_v2", "imagenetv2-matched-frequency") == 0.7793999481201172
    assert tb["model"].nunique() == 335  # 338 rows; 3 subsampled-class models have no val value


@pytest.mark.integration
def test_real_gap_summary(real):
    s = gap_summary(real).set_index("collection")
    assert list(s.index) == ["imagenet-testbed", "timm"]
    t = s.loc["timm"]
    assert (t["base_source"], t["other_source"]) == ("results-imagenet.csv", "results-imagenetv2-matched-frequency.csv")
    assert t["count"] == 1556
    # SOURCE.md: mean gap val - V2 = 10.85 points, median 10.89 (values here are fractions)
    assert round(t["mean"], 10) == 0.1085431105
    assert round(t["median"], 10) == 0.10893
    assert round(t["std"], 10) == 0.0114494447
    assert [round(t[c], 10) for c in ("min", "p10", "p90", "max")] == [0.0715, 0.09333, 0.12269, 0.15874]
    b = s.loc["imagenet-testbed"]
    assert b["count"] == 335
    # SOURCE.md: mean 9.02, median 11.03 points (against imagenetv2-matched-frequency-format-val)
    assert round(b["mean"], 10) == 0.0902147814
    assert round(b["median"], 10) == 0.1103400421
    assert [round(b[c], 8) for c in ("min", "max")] == [0.00052, 0.13572002]


@pytest.mark.integration
def test_real_folder_skips_metadata_csv():
    if not (TIMM / "model_metadata-in1k.csv").is_file():
        pytest.skip(f"timm results folder not found under {SHARED}")
    df = read_results(TIMM)
    assert sorted(df["source"].unique()) == sorted(p.name for p in TIMM.glob("results-*.csv"))


# --------------------------------------------------------------------------------------------------------------
# Hand-made files


def timm_csv(folder: Path, name: str, body: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.write_text(TIMM_HEADER + body)
    return path


def test_timm_dataset_names():
    assert [
        timm_dataset_name(n)
        for n in (
            "results-imagenet.csv",
            "results-imagenet-real.csv",
            "results-imagenetv2-matched-frequency.csv",
            "results-imagenet-r.csv",
            "results-imagenet-a-clean.csv",
            "results-sketch.csv",
        )
    ] == [
        "imagenet-val",
        "imagenet-val-real",
        "imagenetv2-matched-frequency",
        "imagenet-r",
        "imagenet-a-clean",
        "imagenet-sketch",
    ]


def test_timm_file_percent_to_fraction_and_thousands(tmp_path):
    path = timm_csv(
        tmp_path,
        "results-imagenet.csv",
        'a,224,80.5,19.5,95.25,4.75,"1,013.01",0.950,bicubic\na,288,81,19,96,4,25.56,1.0,bilinear\n',
    )
    df = read_results(path)
    assert df[["model", "img_size", "dataset", "metric", "value", "source", "collection"]].values.tolist() == [
        ["a", 224, "imagenet-val", "top1", 0.805, "results-imagenet.csv", "timm"],
        ["a", 224, "imagenet-val", "top5", 0.9525, "results-imagenet.csv", "timm"],
        ["a", 288, "imagenet-val", "top1", 0.81, "results-imagenet.csv", "timm"],
        ["a", 288, "imagenet-val", "top5", 0.96, "results-imagenet.csv", "timm"],
    ]
    assert df["param_count"].tolist() == [1013.01, 1013.01, 25.56, 25.56]
    assert df["interpolation"].tolist() == ["bicubic", "bicubic", "bilinear", "bilinear"]


def test_testbed_layout_detected_by_columns(tmp_path):
    path = tmp_path / "my_testbed.csv"
    path.write_text(
        "model,val,imagenetv2-matched-frequency-format-val,imagenetv2-matched-frequency,imagenet-a\n"
        "r,76.5,63.25,63.5,1\n"
        "s,,60,,\n"
    )
    df = read_results(path)
    assert df[["model", "dataset", "metric", "value", "collection"]].values.tolist() == [
        ["r", "imagenet-val", "top1", 0.765, "imagenet-testbed"],
        ["r", "imagenetv2-matched-frequency", "top1", 0.6325, "imagenet-testbed"],
        ["s", "imagenetv2-matched-frequency", "top1", 0.6, "imagenet-testbed"],
    ]
    assert df["img_size"].isna().all()


def test_gap_summary_pairs_on_model_and_img_size(tmp_path):
    rest = ",,90,,1,1,bicubic\n"
    timm_csv(tmp_path, "results-imagenet.csv", f"a,224,80{rest}a,288,82{rest}b,224,70{rest}c,224,60{rest}")
    timm_csv(tmp_path, "results-imagenetv2-matched-frequency.csv", f"a,224,70{rest}a,288,67{rest}b,224,65{rest}")
    s = gap_summary(read_results(tmp_path))
    assert len(s) == 1
    row = s.iloc[0]
    assert row["count"] == 3  # c has no V2 value
    gaps = np.array([0.8 - 0.7, 0.82 - 0.67, 0.7 - 0.65])
    assert [row[c] for c in ("mean", "median", "std", "min", "p10", "p90", "max")] == [
        gaps.mean(),
        np.median(gaps),
        gaps.std(ddof=1),
        gaps.min(),
        np.percentile(gaps, 10),
        np.percentile(gaps, 90),
        gaps.max(),
    ]
    assert round(row["mean"], 12) == 0.1 and round(row["p10"], 12) == 0.06


def test_write_and_read_back(tmp_path):
    src = timm_csv(tmp_path / "in", "results-imagenet.csv", "a,224,80.5,,95.25,,1,0.95,bicubic\n")
    tb = tmp_path / "in" / "robustness_top1s.csv"
    tb.write_text("model,val\nr,76.5\n")
    df, summary, path = import_results(tmp_path / "in", tmp_path / "out")
    assert path == tmp_path / "out" / "external_results.parquet"
    assert summary.empty
    back = read_results_parquet(path)
    pd.testing.assert_frame_equal(back, df)
    assert back["img_size"].tolist()[:2] == [224, 224] and pd.isna(back["img_size"].iloc[2])
    assert write_results(df, tmp_path / "x.parquet") == tmp_path / "x.parquet"
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [
        "external_gap_summary.parquet",
        "external_results.parquet",
    ]
    assert src.is_file()


def test_error_unknown_layout(tmp_path):
    path = tmp_path / "scores.csv"
    path.write_text("name,acc\na,1\n")
    msg = error_of(read_results, path)
    assert msg == (
        f"{path}: unknown results layout: missing column(s) model, img_size, top1, top5 (timm results-*.csv) "
        "or model, val (imagenet-testbed robustness_top1s.csv)"
    )


def test_error_timm_file_missing_columns(tmp_path):
    path = tmp_path / "results-imagenet.csv"
    path.write_text("model,img_size,top1\na,224,80\n")
    msg = error_of(read_results, path)
    assert msg == (
        f"{path}: unknown results layout: missing column(s) top5 of a timm results CSV (found: model, img_size, top1)"
    )


def test_error_value_not_a_number(tmp_path):
    path = timm_csv(tmp_path, "results-imagenet.csv", "a,224,80,,90,,1,1,bicubic\nb,224,high,,90,,1,1,bicubic\n")
    assert error_of(read_results, path) == f"{path}: row 3: top1 'high' is not a number"


def test_error_value_not_a_percentage(tmp_path):
    path = timm_csv(tmp_path, "results-imagenet.csv", "a,224,180,,90,,1,1,bicubic\n")
    assert error_of(read_results, path) == f"{path}: row 2: top1 '180' is not a percentage in 0..100"


def test_error_bad_img_size(tmp_path):
    path = timm_csv(tmp_path, "results-imagenet.csv", "a,224.5,80,,90,,1,1,bicubic\n")
    assert error_of(read_results, path) == f"{path}: row 2: img_size '224.5' is not a positive integer"


def test_error_duplicate_model_and_size_in_file(tmp_path):
    rest = ",,90,,1,1,bicubic\n"
    path = timm_csv(tmp_path, "results-imagenet.csv", f"a,224,80{rest}a,288,81{rest}a,224,82{rest}")
    assert error_of(read_results, path) == f"{path}: row 4: model 'a' at img_size 224 also in row 2"


def test_error_same_results_from_two_files(tmp_path):
    one = timm_csv(tmp_path / "one", "results-imagenet.csv", "a,224,80,,90,,1,1,bicubic\n")
    timm_csv(tmp_path / "two", "results-imagenet.csv", "a,224,81,,90,,1,1,bicubic\n")
    msg = error_of(read_results, [tmp_path / "one", tmp_path / "two"])
    assert msg == (
        f"{tmp_path / 'two' / 'results-imagenet.csv'}: imagenet-val top1 of model 'a' at img_size 224 is also in "
        f"{one}; import each results file once"
    )
    assert len(read_results([one, tmp_path / "one"])) == 2  # the same file named twice is read once


def test_error_folder_without_results(tmp_path):
    (tmp_path / "model_metadata-in1k.csv").write_text("model,pretrain\na,in1k\n")
    msg = error_of(read_results, tmp_path)
    assert msg == f"{tmp_path}: no results CSV in the folder (results-*.csv or robustness_top1s.csv)"


def test_error_malformed_csv(tmp_path):
    path = timm_csv(tmp_path, "results-imagenet.csv", "a,224,80,,90,,1,1,bicubic,extra,fields\n")
    assert error_of(read_results, path) == f"{path}: malformed CSV: rows have more fields than the header"


def test_error_missing_file(tmp_path):
    assert error_of(read_results, tmp_path / "results-x.csv") == f"{tmp_path / 'results-x.csv'}: no such file"


def test_published_comparison_matches_on_pretrained_config_and_image_size_and_the_evaluate_step_writes_it(tmp_path):
    import json

    from mlray.evaluate import compare_published
    from mlray.external import published_comparison, read_results, write_results

    mm = pd.DataFrame({"model": ["lite0", "lite0", "lite0", "r50"], "dataset": ["imagenet-r", "imagenet-r",
                       "imagenet-val", "imagenet-r"], "metric": ["top1", "real_top1", "top1", "top1"],
                       "value": [0.30, 0.5, 0.75, 0.4]})  # fmt: skip
    size = {"input_size": [3, 224, 224]}
    models = {"lite0": {"pretrained_cfg": "tf_efficientnet_lite0.in1k", "preprocessing": size},
              "r50": {"pretrained_cfg": "resnet50.a1_in1k", "preprocessing": size}}  # fmt: skip
    csv = tmp_path / "results-imagenet-r.csv"
    csv.write_text("model,img_size,top1,top1_err,top5,top5_err,param_count,crop_pct,interpolation\n"
                   "tf_efficientnet_lite0.in1k,224,31.25,68.75,50.0,50.0,4.65,0.875,bicubic\n"
                   "resnet50.a1_in1k,288,45.0,55.0,60.0,40.0,25.56,1.0,bicubic\n")  # fmt: skip
    ext = read_results([csv])
    comp = published_comparison(mm, ext, models)
    # lite0 matches (same pretrained config, 224 px); r50 was published at 288 px only; real_top1 is not published
    assert comp[["model", "dataset", "metric", "img_size", "published_model"]].values.tolist() == [
        ["lite0", "imagenet-r", "top1", 224, "tf_efficientnet_lite0.in1k"]
    ]
    assert comp["published"].tolist() == [pytest.approx(0.3125)] and comp["difference"].tolist() == [
        pytest.approx(0.30 - 0.3125)
    ]
    reports = tmp_path / "reports"
    write_results(ext, reports)
    manifest = tmp_path / "run_manifest.json"
    manifest.write_text(json.dumps({"models": models}))
    path = compare_published(reports, manifest, mm)
    assert pd.read_parquet(path)["difference"].tolist() == [pytest.approx(-0.0125)]
    assert compare_published(tmp_path / "nowhere", manifest, mm) is None
