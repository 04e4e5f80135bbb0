"""`mlray propose`: candidate labels ranked by an ensemble of stored predictions, checked against a hand
computation; the CSV and Label Studio files; the errors; and the Label Studio export read back as labels."""

from __future__ import annotations

import doctest
import json

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
from conftest import error_of

import mlray.propose as propose_module
from mlray.cli import main
from mlray.config import parse_config
from mlray.labels import read_source
from mlray.propose import (
    ensemble_candidates,
    ensemble_models,
    label_studio_config,
    label_studio_tasks,
    recall_at,
    write_candidates_csv,
    write_label_studio,
)
from mlray.store import errors_table, finish_shard, predictions_table

# Two models, K = 3, probabilities exact in binary so that every mean below is exact.
M1 = {"img1": ([5, 2, 9], [0.5, 0.25, 0.125]), "img2": ([7, 1, 3], [0.5, 0.25, 0.25])}
M2 = {"img1": ([2, 5, 4], [0.5, 0.25, 0.125]), "img2": ([1, 7, 8], [0.375, 0.375, 0.125])}
# By hand, score = (p_m1 + p_m2) / 2, a class outside a model's top-3 counting 0 for it:
#   img1: 2 -> (0.25 + 0.5) / 2 = 0.375, 5 -> (0.5 + 0.25) / 2 = 0.375 (tie: 2 before 5),
#         4 -> (0 + 0.125) / 2 = 0.0625 (only m2 has it), 9 -> (0.125 + 0) / 2 = 0.0625 (only m1; tie: 4 before 9)
#   img2: 7 -> (0.5 + 0.375) / 2 = 0.4375, 1 -> (0.25 + 0.375) / 2 = 0.3125, 3 -> (0.25 + 0) / 2 = 0.125,
#         8 -> (0 + 0.125) / 2 = 0.0625
HAND = [
    ("img1", 1, 2, "n01484850", "great white shark", 0.375),
    ("img1", 2, 5, "n01496331", "electric ray", 0.375),
    ("img1", 3, 4, "n01494475", "hammerhead", 0.0625),
    ("img1", 4, 9, "n01518878", "ostrich", 0.0625),
    ("img2", 1, 7, "n01514668", "cock", 0.4375),
    ("img2", 2, 1, "n01443537", "goldfish", 0.3125),
    ("img2", 3, 3, "n01491361", "tiger shark", 0.125),
    ("img2", 4, 8, "n01514859", "hen", 0.0625),
]


def model_table(model: str, preds: dict, dataset: str = "v3", with_prob: bool = True) -> pa.Table:
    ids = sorted(preds)
    idx = np.array([preds[i][0] for i in ids])
    prob = np.array([preds[i][1] for i in ids], np.float32) if with_prob else None
    return predictions_table(dataset, model, ids, idx, prob)


def store(out, tables: list[pa.Table]):
    """An evaluate output folder ``out`` holding ``tables`` in its predictions/ store (one shard each)."""
    for t in tables:
        dataset, model = t.column("dataset")[0].as_py(), t.column("model")[0].as_py()
        finish_shard(out, dataset, model, "s00000-test", t, errors_table(dataset, model, [], [], [], []))
    return out


def rows(df: pd.DataFrame) -> list[tuple]:
    return [tuple(r) for r in df.itertuples(index=False)]


# --------------------------------------------------------------------------------------------------------------
# The ranking


def test_candidates_equal_the_hand_computation(tmp_path):
    out = store(tmp_path / "run", [model_table("m1", M1), model_table("m2", M2)])
    df = ensemble_candidates(out / "predictions", "v3", None, top=20)
    assert list(df.columns) == ["image_id", "rank", "class_index", "wnid", "name", "score"]
    assert rows(df) == HAND
    assert df["rank"].dtype == np.int64 and df["class_index"].dtype == np.int64 and df["score"].dtype == np.float64
    top3 = ensemble_candidates(out / "predictions", "v3", ["m1", "m2"], top=3)
    assert rows(top3) == [r for r in HAND if r[1] <= 3]
    # the same from a prediction table, and the models' order does not change the means here
    table = pa.concat_tables([model_table("m2", M2), model_table("m1", M1)])
    assert rows(ensemble_candidates(table, "v3", ["m2", "m1"], top=20)) == HAND


def test_one_model_is_its_own_ranking_and_models_default_to_all_stored(tmp_path):
    out = store(tmp_path / "run", [model_table("m2", M2), model_table("m1", M1)])
    assert ensemble_models(out / "predictions", "v3") == ["m1", "m2"]
    df = ensemble_candidates(out / "predictions", "v3", ["m2"], top=2)
    # m2 alone: img1 2 (0.5), 5 (0.25); img2 1 and 7 tie at 0.375 -> 1 first
    assert [(r[0], r[1], r[2], r[5]) for r in rows(df)] == [
        ("img1", 1, 2, 0.5),
        ("img1", 2, 5, 0.25),
        ("img2", 1, 1, 0.375),
        ("img2", 2, 7, 0.375),
    ]


def test_shorter_topk_lists_and_a_class_in_one_model_only():
    # m1 stored only 2 classes for img1 (a class subset pads with -1): class 9 is in neither, class 4 in m2 only
    m1 = predictions_table("v3", "m1", ["img1"], np.array([[5, 2, -1]]), np.array([[0.5, 0.25, 0.0]], np.float32))
    m2 = predictions_table("v3", "m2", ["img1"], np.array([[2, 5, 4]]), np.array([[0.5, 0.25, 0.125]], np.float32))
    df = ensemble_candidates(pa.concat_tables([m1, m2]), "v3", None, top=10)
    assert [(r[2], r[5]) for r in rows(df)] == [(2, 0.375), (5, 0.375), (4, 0.0625)]


def test_ranking_errors_are_one_line(tmp_path):
    both = [model_table("m1", M1), model_table("m2", M2)]
    argmax = model_table("argmax", M1, with_prob=False)
    partial = model_table("m3", {"img1": M1["img1"]})
    table = pa.concat_tables([*both, argmax, partial])
    assert error_of(ensemble_candidates, table, "v3", ["m1"], top=0) == "top N must be at least 1 (got 0)"
    assert error_of(ensemble_candidates, table, "v9", None) == (
        "the prediction table: no predictions of dataset 'v9' (stored datasets: v3)"
    )
    assert error_of(ensemble_candidates, table, "v3", ["m1", "zz"]) == (
        "the prediction table: no predictions of model 'zz' on dataset 'v3' (stored models: argmax, m1, m2, m3)"
    )
    assert error_of(ensemble_candidates, table, "v3", ["m1", "m1"]) == "model 'm1' is named twice"
    assert error_of(ensemble_candidates, table, "v3", ["m1", "argmax"]) == (
        "the prediction table: model 'argmax' stored no probabilities on dataset 'v3' (top-k classes only, 2 "
        "image(s)): it cannot be ensembled by mean probability; leave it out of --models"
    )
    assert error_of(ensemble_candidates, table, "v3", ["m1", "m3"]) == (
        "the prediction table: model 'm3' has no prediction for 1 of the 2 images of dataset 'v3' that the other "
        "models predicted (first: 'img2'); ensemble models that predicted the same images"
    )
    empty = tmp_path / "empty"
    empty.mkdir()
    assert (
        error_of(ensemble_candidates, empty, "v3", None) == f"{empty}: no predictions of dataset 'v3' (nothing stored)"
    )


# --------------------------------------------------------------------------------------------------------------
# The files


def test_csv_and_label_studio_files(tmp_path):
    df = pd.DataFrame(HAND, columns=["image_id", "rank", "class_index", "wnid", "name", "score"])
    csv = write_candidates_csv(df[df["rank"] <= 2], tmp_path / "c.csv")
    assert csv.read_text() == (
        "image_id,rank,class_index,wnid,name,score\n"
        "img1,1,2,n01484850,great white shark,0.375\n"
        "img1,2,5,n01496331,electric ray,0.375\n"
        "img2,1,7,n01514668,cock,0.4375\n"
        "img2,2,1,n01443537,goldfish,0.3125\n"
    )
    path = write_label_studio(
        df[df["rank"] <= 2], tmp_path / "c.label-studio.json", {"img1": "s3://b/img1.jpeg"}, ["m1", "m2"]
    )
    assert json.loads(path.read_text()) == [
        {
            "data": {"image": "s3://b/img1.jpeg", "image_id": "img1"},
            "predictions": [
                {
                    "model_version": "mlray-ensemble:m1,m2",
                    "score": 0.375,
                    "result": [
                        {
                            "from_name": "label",
                            "to_name": "image",
                            "type": "choices",
                            "value": {"choices": ["n01484850: great white shark", "n01496331: electric ray"]},
                        }
                    ],
                }
            ],
        },
        {
            "data": {"image": "img2", "image_id": "img2"},  # no image file known: the id
            "predictions": [
                {
                    "model_version": "mlray-ensemble:m1,m2",
                    "score": 0.4375,
                    "result": [
                        {
                            "from_name": "label",
                            "to_name": "image",
                            "type": "choices",
                            "value": {"choices": ["n01514668: cock", "n01443537: goldfish"]},
                        }
                    ],
                }
            ],
        },
    ]
    assert label_studio_tasks(df.iloc[:0]) == []


def test_label_studio_config_lists_every_class_once():
    xml = label_studio_config()
    lines = xml.splitlines()
    assert lines[:3] == [
        "<View>",
        '  <Image name="image" value="$image"/>',
        '  <Choices name="label" toName="image" choice="multiple" showInline="false">',
    ]
    assert lines[3] == '    <Choice value="n01440764: tench"/>'
    assert len(lines) == 3 + 1000 + 2 and lines[-2:] == ["  </Choices>", "</View>"]
    assert '    <Choice value="n03590841: jack-o\'-lantern"/>' in lines


def test_recall_at_counts_valid_labels_found_in_the_first_n():
    df = pd.DataFrame(HAND, columns=["image_id", "rank", "class_index", "wnid", "name", "score"])
    # img1 valid {5, 9}: rank 2 and rank 4; img2 valid {8}: rank 4; img3 valid {0}: no candidates; img4 unlabelled
    valid = {"img1": [5, 9], "img2": [8], "img3": [0], "img4": None}
    assert recall_at(df, valid, ns=(1, 2, 4)) == {1: 0.0, 2: 0.25, 4: 0.75}
    assert recall_at(df, {"img1": []}, ns=(1,))[1] != recall_at(df, {"img1": []}, ns=(1,))[1]  # NaN: no label


def test_doctests_of_propose():
    assert doctest.testmod(propose_module, raise_on_error=False).failed == 0


# --------------------------------------------------------------------------------------------------------------
# The command


@pytest.fixture()
def project(tmp_path):
    """A run config with dataset v3 (a flat folder of two images), and an evaluate output folder holding m1, m2
    on v3 (and a model without probabilities on another dataset)."""
    images = tmp_path / "imgs"
    images.mkdir()
    for name in ("img1.jpeg", "img2.jpeg"):
        (images / name).write_bytes(b"\xff\xd8")
    config = tmp_path / "run.yaml"
    (tmp_path / "w.csv").write_text("image_id,label\nimg1,2\nimg2,7\n")
    config.write_text(
        "datasets:\n"
        "  - {name: v3, images: imgs, layout: imagenet-val-flat}\n"
        "  - {name: w, labels: {original: {format: table, path: w.csv}}}\n"
    )
    out = store(
        tmp_path / "run",
        [model_table("m1", M1), model_table("m2", M2), model_table("argmax", M1, dataset="w", with_prob=False)],
    )
    return tmp_path, config, out


def test_cli_propose_end_to_end(project, capsys):
    tmp_path, config, out = project
    csv = tmp_path / "cands" / "v3.csv"
    assert (
        main(["propose", str(config), "--dataset", "v3", "--predictions", str(out), "--top", "3", "--out", str(csv)])
        == 0
    )
    expected_csv = "image_id,rank,class_index,wnid,name,score\n" + "".join(
        f"{i},{r},{c},{w},{n},{s}\n" for i, r, c, w, n, s in HAND if r <= 3
    )
    assert csv.read_text() == expected_csv
    tasks = json.loads((tmp_path / "cands" / "v3.label-studio.json").read_text())
    assert [t["data"] for t in tasks] == [
        {"image": str(tmp_path / "imgs" / "img1.jpeg"), "image_id": "img1"},
        {"image": str(tmp_path / "imgs" / "img2.jpeg"), "image_id": "img2"},
    ]
    assert [(p["model_version"], p["score"]) for t in tasks for p in t["predictions"]] == [
        ("mlray-ensemble:m1,m2", 0.375),
        ("mlray-ensemble:m1,m2", 0.4375),
    ]
    assert [t["predictions"][0]["result"][0]["value"]["choices"] for t in tasks] == [
        ["n01484850: great white shark", "n01496331: electric ray", "n01494475: hammerhead"],
        ["n01514668: cock", "n01443537: goldfish", "n01491361: tiger shark"],
    ]
    assert capsys.readouterr().out == (
        f"v3: 2 images x 2 models (m1, m2), top 3 candidates -> {csv}, {tmp_path / 'cands' / 'v3.label-studio.json'}\n"
    )
    # the predictions folder itself, one model, the default N (20: all 3 stored classes of m2)
    csv2 = tmp_path / "m2.csv"
    args = ["propose", str(config), "-d", "v3", "-p", str(out / "predictions"), "--models", "m2", "-o", str(csv2)]
    assert main(args) == 0
    assert pd.read_csv(csv2)["class_index"].tolist() == [2, 5, 4, 1, 7, 8]
    assert "v3: 2 images x 1 models (m2), top 20 candidates" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"--dataset": "nope"}, "no dataset named 'nope' (have: v3, w)"),
        ({"--models": "m1,zz"}, "no predictions of model 'zz' on dataset 'v3' (stored models: m1, m2)"),
        ({"--top": "0"}, "--top must be at least 1 (got 0)"),
        ({"--dataset": "w"}, "model 'argmax' stored no probabilities on dataset 'w'"),
        ({"--predictions": "missing"}, "missing: no such folder (an evaluate output folder or its predictions folder)"),
        ({"--models": "m1,,m2"}, "--models 'm1,,m2': an empty model name (write --models a,b)"),
    ],
)
def test_cli_propose_errors_are_one_line_exit_2(project, capsys, monkeypatch, change, message):
    tmp_path, config, out = project
    monkeypatch.chdir(tmp_path)
    options = {"--dataset": "v3", "--predictions": str(out), "--out": str(tmp_path / "c.csv"), **change}
    argv = ["propose", str(config)] + [x for kv in options.items() for x in kv]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("mlray: error: ") and err.count("\n") == 1, err
    assert message in err
    assert not (tmp_path / "c.csv").exists()


def test_cli_propose_refuses_a_dataset_the_store_lacks(project, capsys):
    tmp_path, config, out = project
    config.write_text(config.read_text() + "  - {name: x, labels: {original: {format: table, path: w.csv}}}\n")
    assert main(["propose", str(config), "-d", "x", "-p", str(out), "-o", str(tmp_path / "c.csv")]) == 2
    assert capsys.readouterr().err == (
        f"mlray: error: {out / 'predictions'}: no predictions of dataset 'x' (stored datasets: v3, w)\n"
    )


# --------------------------------------------------------------------------------------------------------------
# The refined labels back: the label-studio-json label source


def annotation(*choices: str, **flags) -> dict:
    result = [{"from_name": "label", "to_name": "image", "type": "choices", "value": {"choices": list(choices)}}]
    return {"result": result, **flags}


def test_label_studio_export_reads_back_as_label_sets(tmp_path):
    export = [
        {"id": 1, "data": {"image": "/data/local-files/?d=v3/img1.jpeg", "image_id": "img1"},
         "annotations": [annotation("n01484850: great white shark", "n01496331: electric ray")]},
        # no image_id: the file name of data.image; a cancelled annotation does not count; other tags are ignored
        {"id": 2, "data": {"image": "/data/local-files/?d=v3/img2.jpeg"},
         "annotations": [annotation("n01440764: tench", was_cancelled=True),
                         {"result": [*annotation("n01514668", "1")["result"],
                                     {"from_name": "quality", "type": "choices", "value": {"choices": ["blurry"]}}]}]},
        {"id": 3, "data": {"image_id": "img3"}, "annotations": []},  # not annotated
        {"id": 4, "data": {"image_id": "img4"}, "annotations": [{"result": []}]},  # annotated: no valid class
        {"id": 5, "data": {"image_id": "img5"},  # two annotations: the ground-truth one counts
         "annotations": [annotation("n01443537"), annotation("n01491361: tiger shark", ground_truth=True)]},
        {"id": 6, "data": {"image_id": "img6"}, "annotations": [annotation("n01514668: cock", "n01514668: cock")]},
    ]  # fmt: skip
    path = tmp_path / "export.json"
    path.write_text(json.dumps(export))
    src = read_source("label-studio-json", path)
    assert src.format == "label-studio-json"
    assert src.image_ids == ["img1", "img2", "img3", "img4", "img5", "img6"]
    assert list(src.valid or []) == [[2, 5], [7, 1], None, [], [3], [7]]
    assert src.merged_duplicates == ["task 6 (img6)"]
    cfg = parse_config(
        {"datasets": [{"name": "v3", "labels": {"multi": {"format": "label-studio-json", "path": "e"}}}]}
    )
    assert cfg.datasets[0].labels.multi is not None and cfg.datasets[0].labels.multi.format == "label-studio-json"


def test_label_studio_export_errors_are_one_line(tmp_path):
    def bad(tasks) -> str:
        path = tmp_path / "bad.json"
        path.write_text(json.dumps(tasks))
        return error_of(read_source, "label-studio-json", path)

    shown = tmp_path / "bad.json"
    assert bad({"a": 1}) == f"{shown}: a Label Studio JSON export is a list of tasks, found dict"
    assert bad([{"data": {"image_id": "a"}, "annotations": [annotation("goldfish")]}]) == (
        f"{shown}: task 1 (a): unknown class 'goldfish' (neither a class index 0..999 nor an ImageNet-1k wnid)"
    )
    two = [{"data": {"image_id": "a"}, "annotations": [annotation("1"), annotation("2")]}]
    assert bad(two) == (
        f"{shown}: task 1 (a): 2 annotations and 0 marked ground truth; mark the one to use as ground truth "
        "in Label Studio (or export one annotation per task)"
    )
    assert bad([{"data": {}}]) == f"{shown}: task 1: data has no image_id or image"
