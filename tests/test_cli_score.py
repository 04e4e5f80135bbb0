"""`mlray score` and `mlray import-results` end to end on the session's Ray cluster."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pyarrow.compute as pc
import pytest
from conftest import REPO, shared

from mlray.cli import main


def write(path, text):
    path.write_text(text)
    return path


@pytest.fixture()
def tiny_config(tmp_path):
    """Two tiny datasets: A = 4 images (k = 1, 1, 2, 2), B = 4 images (k = 1, 2, 2, 2)."""
    write(
        tmp_path / "a.csv",
        "image_id,label,labels\na1,0,0\na2,1,1\na3,2,2;3\na4,4,4;5\n",
    )
    write(
        tmp_path / "b.csv",
        "image_id,label,labels\nb1,0,0\nb2,2,2;3\nb3,4,4;5\nb4,6,6;7\n",
    )
    return write(
        tmp_path / "run.yaml",
        "datasets:\n"
        "  - {name: A, labels: {original: {format: table, path: a.csv}, multi: {format: table, path: a.csv}}}\n"
        "  - {name: B, labels: {original: {format: table, path: b.csv}, multi: {format: table, path: b.csv}}}\n",
    )


@pytest.mark.ray
def test_score_tiny_by_hand(ray_cluster, tiny_config, tmp_path, capsys):
    # model m: A: a1 right, a2 wrong, a3 both labels in top 2, a4 only one of two -> top1 2/4 (a1, a3? see below)
    write(
        tmp_path / "pred.csv",
        "dataset,model,image_id,topk\n"
        "A,m,a1,0;9\nA,m,a2,9;1\nA,m,a3,3;2\nA,m,a4,4;9\n"
        "B,m,b1,0;9\nB,m,b2,9;2\nB,m,b3,5;4\nB,m,b4,6;9\n",
    )
    out = tmp_path / "r"
    assert main(["score", str(tiny_config), "--predictions", str(tmp_path / "pred.csv"), "--out", str(out),
                 "--n-boot", "50", "--min-group-size", "1"]) == 0  # fmt: skip
    mm = pd.read_parquet(out / "model_metrics.parquet").set_index(["dataset", "metric"])
    # A: top1 = [a1 0==0, a2 9!=1, a3 3!=2, a4 4==4] = 2/4; real_top1 = [yes, no, yes (3 in {2,3}), yes] = 3/4
    assert mm.loc[("A", "top1"), "value"] == 0.5
    assert mm.loc[("A", "real_top1"), "value"] == 0.75
    # vtopk_all: a1 yes, a2 no, a3 {3,2} == {2,3} yes, a4 {4,9} != {4,5} no -> 2/4; frac: 1, 0, 1, 1/2 -> 2.5/4
    assert mm.loc[("A", "vtopk_all"), "value"] == 0.5
    assert mm.loc[("A", "vtopk_frac"), "value"] == 0.625
    # B: top1 = [yes, no (9 vs 2), no (5 vs 4), yes] = 1/2; vtopk_all: b1 yes, b2 no, b3 yes, b4 no = 1/2
    assert mm.loc[("B", "top1"), "value"] == 0.5
    assert mm.loc[("B", "vtopk_all"), "value"] == 0.5
    # ASMA over groups 1 and 2: A vtopk_all = (1/2 + 1/2) / 2; B = (1 + 1/3) / 2
    assert mm.loc[("A", "asma_vtopk_all"), "value"] == pytest.approx(0.5)
    assert mm.loc[("B", "asma_vtopk_all"), "value"] == pytest.approx(2 / 3)
    assert mm.loc[("A", "top1"), "params"]["K"] == 2

    sg = pd.read_parquet(out / "subgroup_metrics.parquet").set_index(["dataset", "group", "metric"])
    assert (
        sg.loc[("B", "2", "vtopk_all"), "value"] == pytest.approx(1 / 3) and sg.loc[("B", "2", "vtopk_all"), "n"] == 3
    )

    gd = pd.read_parquet(out / "gap_decomposition.parquet").set_index(["dataset_a", "dataset_b", "metric"])
    r = gd.loc[("A", "B", "vtopk_all")]
    # w_A = (1/2, 1/2), w_B = (1/4, 3/4); m_A = (1/2, 1/2), m_B = (1, 1/3)
    assert r["value_a"] == pytest.approx(0.5) and r["value_b"] == pytest.approx(0.5)
    assert r["composition"] == pytest.approx((0.5 - 0.25) * 0.5 + (0.5 - 0.75) * 0.5)  # 0
    assert r["within"] == pytest.approx(0.25 * (0.5 - 1) + 0.75 * (0.5 - 1 / 3))  # 0
    assert r["a_standardized_to_b"] == pytest.approx(0.25 * 0.5 + 0.75 * 0.5)
    assert r["b_standardized_to_a"] == pytest.approx(0.5 * 1 + 0.5 * (1 / 3))
    assert len(gd.loc[("B", "A")]) == 7  # both orders, every metric
    text = capsys.readouterr().out
    assert "Gap A -> B" in text


@pytest.mark.ray
def test_score_errors_are_one_line_exit_2(ray_cluster, tiny_config, tmp_path, capsys):
    write(tmp_path / "p.csv", "image_id,top1\nzz,3\n")
    args = ["score", str(tiny_config), "-p", str(tmp_path / "p.csv"), "--model", "m", "--out", str(tmp_path / "o")]
    assert main([*args, "--dataset", "A"]) == 2
    err = capsys.readouterr().err
    assert f"mlray: error: {tmp_path / 'p.csv'}: 1 predicted image id(s) are not in dataset 'A', e.g. 'zz'" in err
    assert "Traceback" not in err
    assert main([*args, "--dataset", "C"]) == 2
    assert "predictions for dataset 'C', which the config does not have (have: A, B)" in capsys.readouterr().err


@pytest.mark.integration
@pytest.mark.ray
def test_score_cleanlab_resnet50_on_real_val_labels(ray_cluster, tmp_path):
    """The cleanlab ResNet-50 figures: top1 = 0.72732 over 50,000 images and real_top1 = 0.7761 over 46,837."""
    folder = shared("cleanlab-label-errors")
    shared("imagenetv2")
    paths = json.loads((folder / "imagenet_val_set_index_to_filepath.json").read_text())
    pred = np.load(folder / "imagenet_val_set_pyx_argmax_predicted_labels.npy")
    pd.DataFrame({"image_id": paths, "top1": pred.astype(int)}).to_csv(tmp_path / "cleanlab.csv", index=False)
    out = tmp_path / "r"
    config = REPO / "jobs" / "configs" / "labels-v1-v2.yaml"
    assert main(["score", str(config), "-p", str(tmp_path / "cleanlab.csv"), "--dataset", "imagenet-val",
                 "--model", "resnet50-cleanlab-cv", "--out", str(out), "--n-boot", "100"]) == 0  # fmt: skip
    mm = pd.read_parquet(out / "model_metrics.parquet").set_index("metric")
    assert mm.loc["top1", "value"] == pytest.approx(0.72732, abs=5e-6) and mm.loc["top1", "n"] == 50_000
    assert round(mm.loc["real_top1", "value"], 4) == 0.7761 and mm.loc["real_top1", "n"] == 46_837
    assert mm.loc["top1", "ci_low"] < 0.72732 < mm.loc["top1", "ci_high"]
    # a top-1-only import: metrics needing more ranks are unavailable, not zero
    assert not mm.loc["top5", "available"] and np.isnan(mm.loc["top5", "value"])
    assert not mm.loc["vtopk_all", "available"]
    sg = pd.read_parquet(out / "subgroup_metrics.parquet").set_index(["group", "metric"])
    assert sg.loc[("1", "vtopk_all"), "available"] and sg.loc[("1", "vtopk_all"), "n"] == 39_394
    # only A has predictions: the V2 row still says what A's accuracy would be with V2's label-count mix
    gd = pd.read_parquet(out / "gap_decomposition.parquet").set_index(["dataset_a", "metric"])
    row = gd.loc[("imagenet-val", "real_top1")]
    assert row["value_a"] == pytest.approx(0.7761, abs=5e-5)
    assert np.isnan(row["value_b"]) and row["a_standardized_to_b"] < row["value_a"]


@pytest.mark.integration
def test_import_results_cli(tmp_path, capsys):
    timm = shared("timm-results")
    assert main(["import-results", str(timm), str(shared("imagenet-testbed")), "--out", str(tmp_path)]) == 0
    text = capsys.readouterr().out
    assert "10.85" in text and "10.89" in text  # timm: mean and median val -> V2 gap in points
    df = pd.read_parquet(tmp_path / "external_results.parquet")
    row = df[
        (df.model == "resnet50.a1_in1k")
        & (df.img_size == 224)
        & (df.dataset == "imagenetv2-matched-frequency")
        & (df.metric == "top1")
    ]
    assert row.value.tolist() == [0.6847]


@pytest.mark.ray
def test_store_tables_shipped_through_the_object_store_score_identically(ray_cluster, tiny_config, tmp_path):
    """Multi-node clusters: the driver reads the store and ships the tables (tasks may run where its disk is not);
    the scores equal those of tasks reading the files themselves (the single-node path)."""
    from mlray.config import load_config
    from mlray.reports import score_report
    from mlray.scoring import MetricParams
    from mlray.store import import_predictions, write_partition

    write(
        tmp_path / "pred.csv",
        "dataset,model,image_id,topk\nA,m,a1,0;9\nA,m,a2,9;1\nA,m,a3,3;2\nA,m,a4,4;9\nB,m,b1,0;9\nB,m,b2,9;2\nB,m,b3,5;4\nB,m,b4,6;9\n",
    )
    table = import_predictions(tmp_path / "pred.csv")
    for name in ("A", "B"):
        write_partition(tmp_path / "store", name, "m", table.filter(pc.equal(table["dataset"], name)), shard="s00000")
    cfg, params = load_config(tiny_config), MetricParams(n_boot=20, min_group_size=1)
    local = score_report(cfg, [tmp_path / "store"], tmp_path / "r1", params, ship_predictions=False)
    shipped = score_report(cfg, [tmp_path / "store"], tmp_path / "r2", params, ship_predictions=True)
    for name in ("model_metrics", "subgroup_metrics", "gap_decomposition"):
        pd.testing.assert_frame_equal(local.frames[name], shipped.frames[name])
    assert local.frames["model_metrics"].set_index(["dataset", "metric"]).loc[("A", "top1"), "value"] == 0.5
