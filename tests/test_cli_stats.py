"""`mlray stats` end to end: the README's built-in default in a fresh process, the real V1/V2 config on the
session's Ray cluster, and bad input as one line with exit status 2."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pandas as pd
import pytest
from conftest import REPO, shared

from mlray.cli import main
from mlray.reports import STATS_REPORTS

MLRAY = [sys.executable, "-m", "mlray.cli"]


def run_cli(args, tmp_path, **kw):
    env = {**os.environ, "RAY_AUTH_MODE": "disabled", "HOME": str(tmp_path / "home"), "RAY_USAGE_STATS_ENABLED": "0"}
    return subprocess.run(MLRAY + args, capture_output=True, text=True, env=env, cwd=tmp_path, timeout=240, **kw)


def test_stats_builtin_default_in_a_fresh_process(tmp_path):
    """The README's first command: no config, offline, ImageNet val with timm's ReaL copy (own local Ray)."""
    out = tmp_path / "reports"
    proc = run_cli(["stats", "--out", str(out), "--json", "--num-cpus", "2"], tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    summary = json.loads(proc.stdout)
    (val,) = summary["datasets"]
    assert val["dataset"] == "imagenet-val-real"
    assert (val["n_images"], val["n_labelled"], val["n_empty"], val["n_multi"]) == (50000, 46837, 3163, 7443)
    assert val["original_in_valid_fraction"] is None  # the built-in default has no original labels
    assert summary["label_count_hist"]["imagenet-val-real"] == {
        "1": 39394,
        "2": 5408,
        "3": 1319,
        "4": 411,
        "5": 161,
        "6": 88,
        "7": 41,
        "8": 13,
        "9": 2,
    }
    assert summary["comparisons"] == []
    assert sorted(p.name for p in out.iterdir()) == sorted(f"{n}.parquet" for n in STATS_REPORTS)


@pytest.mark.integration
@pytest.mark.ray
def test_stats_real_v1_v2_config(ray_cluster, tmp_path, capsys):
    shared("multilabelfy-imagenetv2")
    config = REPO / "jobs" / "configs" / "labels-v1-v2.yaml"
    out = tmp_path / "r"
    assert main(["stats", str(config), "--out", str(out), "--top-pairs", "25"]) == 0
    text = capsys.readouterr().out
    assert "15.89 %" in text and "48.51 %" in text and "90.02 %" in text and "89.12 %" in text

    ds = pd.read_parquet(out / "dataset_stats.parquet").set_index("dataset")
    assert ds.loc["imagenet-val", ["n_images", "n_labelled", "n_empty", "n_multi"]].tolist() == [
        50000,
        46837,
        3163,
        7443,
    ]
    assert ds.loc["imagenetv2-matched-frequency", ["n_images", "n_labelled", "n_empty", "n_multi"]].tolist() == [
        10000,
        9871,
        129,
        4788,
    ]
    assert round(ds.loc["imagenet-val", "mean_labels"], 3) == 1.229
    assert round(ds.loc["imagenetv2-matched-frequency", "mean_labels"], 3) == 1.933

    hist = pd.read_parquet(out / "label_count_hist.parquet")
    v2 = hist[hist.dataset == "imagenetv2-matched-frequency"]
    assert dict(zip(v2.n_labels, v2.n_images)) == {
        1: 5083,
        2: 2385,
        3: 1306,
        4: 628,
        5: 237,
        6: 127,
        7: 48,
        8: 23,
        9: 18,
        10: 13,
        11: 1,
        12: 2,
    }
    assert v2.fraction.sum() == pytest.approx(1.0)

    classes = pd.read_parquet(out / "class_stats.parquet")
    assert len(classes) == 2000
    assert list(classes.columns[:8]) == [
        "dataset",
        "class_index",
        "wnid",
        "name",
        "n_original",
        "n_valid",
        "multi_rate",
        "original_valid_rate",
    ]
    val_classes = classes[classes.dataset == "imagenet-val"]
    assert (val_classes.n_original == 50).all()  # 50 val images per class
    # sum of k x n_k over the histogram: 39394 + 2*5408 + 3*1319 + 4*411 + 5*161 + 6*88 + 7*41 + 8*13 + 9*2
    assert int(val_classes.n_valid.sum()) == 57_553

    co = pd.read_parquet(out / "cooccurrence.parquet")
    assert co.groupby("dataset").size().tolist() == [25, 25]
    assert list(co.columns[:5]) == ["dataset", "class_a", "class_b", "n_images", "lift"]

    comp = pd.read_parquet(out / "dataset_comparison.parquet")
    assert set(comp.measure) >= {
        "label_count_total_variation",
        "label_count_js_distance",
        "label_count_chi2_statistic",
        "label_count_chi2_pvalue",
        "multi_fraction_difference",
        "class_multi_rate_difference",
    }
    # the reports are plain Parquet: fastparquet reads them too
    assert pd.read_parquet(out / "dataset_comparison.parquet", engine="fastparquet").shape == comp.shape


def test_bad_config_is_one_line_exit_2(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("datasets:\n  - name: v2\n    labels: {multi: {format: multilabelfy-json, path: nowhere.json}}\n")
    proc = run_cli(["stats", str(bad), "--out", str(tmp_path / "o")], tmp_path)
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.strip() and "authentication" not in line]
    assert lines == [f"mlray: error: {tmp_path / 'nowhere.json'}: no such file"]


def test_bad_label_file_is_one_line_exit_2(tmp_path):
    (tmp_path / "m.json").write_text(json.dumps({"a.jpeg": ["1200"]}))
    bad = tmp_path / "bad.yaml"
    bad.write_text("datasets:\n  - name: v2\n    labels: {multi: {format: multilabelfy-json, path: m.json}}\n")
    proc = run_cli(["stats", str(bad), "--out", str(tmp_path / "o"), "--num-cpus", "1"], tmp_path)
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr
    assert f"mlray: error: {tmp_path / 'm.json'}: entry 'a.jpeg': class index 1200 is outside 0..999" in proc.stderr


def test_help_lists_the_commands(tmp_path):
    proc = run_cli(["--help"], tmp_path)
    assert proc.returncode == 0 and "stats" in proc.stdout


def test_version_and_usage_errors():
    from mlray import __version__
    from mlray.cli import main

    proc = subprocess.run([sys.executable, "-m", "mlray.cli", "--version"], capture_output=True, text=True)
    assert (proc.returncode, proc.stdout) == (0, f"mlray {__version__}\n")
    assert main(["stats", "--no-such-flag"]) == 2
