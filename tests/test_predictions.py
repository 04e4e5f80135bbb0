"""Prediction tables: importers (every input path and every bad input), alignment, and a real-data check with
cleanlab's cross-validated ResNet-50 argmax predictions on ImageNet val. The store itself: tests/test_store.py."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from conftest import error_of

from mlray.labels import SourceLabels, build_dataset_labels, read_source
from mlray.store import PREDICTIONS_SCHEMA, align, import_predictions, predictions_table

SHARED = Path(__file__).parents[1].parent / "shared" / "data"
HF_MODEL = "hf-hub:timm/resnet50.a1_in1k"


def write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def rows(table: pa.Table) -> list[tuple]:
    return [(r["dataset"], r["model"], r["image_id"], r["topk_idx"], r["topk_prob"]) for r in table.to_pylist()]


# --------------------------------------------------------------------------------------------------------------
# Importers: good inputs


def test_import_csv_top1_normalizes_ids_and_takes_names_from_arguments(tmp_path):
    path = write(
        tmp_path,
        "preds.csv",
        "image_id,top1\nval/n01440764/ILSVRC2012_val_00000293.JPEG,0\nILSVRC2012_val_00000001.jpg,65\nabc,999\n",
    )
    table = import_predictions(path, dataset="imagenet-val", model="m1")
    assert table.schema == PREDICTIONS_SCHEMA
    assert rows(table) == [
        ("imagenet-val", "m1", "ILSVRC2012_val_00000293", [0], None),
        ("imagenet-val", "m1", "ILSVRC2012_val_00000001", [65], None),
        ("imagenet-val", "m1", "abc", [999], None),
    ]


def test_import_csv_topk_strings_with_probs_and_name_columns(tmp_path):
    path = write(
        tmp_path,
        "preds.csv",
        "dataset,model,image_id,topk,probs\n"
        "v2,a,x.jpeg,3;1;2,0.5;0.25;0.125\n"
        "v2,b,x.jpeg, 7 ; 8 ,0.75;0.125\n"
        "v2,a,y,5,\n",
    )
    table = import_predictions(path)
    assert rows(table) == [
        ("v2", "a", "x", [3, 1, 2], [0.5, 0.25, 0.125]),
        ("v2", "b", "x", [7, 8], [0.75, 0.125]),
        ("v2", "a", "y", [5], None),
    ]


def test_import_csv_with_top1_and_matching_topk(tmp_path):
    path = write(tmp_path, "p.csv", "image_id,top1,topk\na,4,4;9\n")
    assert rows(import_predictions(path, dataset="d", model="m")) == [("d", "m", "a", [4, 9], None)]


def test_import_csv_top1_with_single_prob(tmp_path):
    path = write(tmp_path, "p.csv", "image_id,top1,probs\na,4,0.5\nb,5,\n")
    assert rows(import_predictions(path, dataset="d", model="m")) == [
        ("d", "m", "a", [4], [0.5]),
        ("d", "m", "b", [5], None),
    ]


def test_import_csv_dataset_column_with_matching_argument_and_empty_cells_filled(tmp_path):
    path = write(tmp_path, "p.csv", "image_id,top1,dataset\na,1,d\nb,2,\n")
    assert rows(import_predictions(path, dataset="d", model="m")) == [
        ("d", "m", "a", [1], None),
        ("d", "m", "b", [2], None),
    ]


def test_import_tsv(tmp_path):
    path = write(tmp_path, "p.tsv", "image_id\ttopk\na\t1;2\n")
    assert rows(import_predictions(path, dataset="d", model="m")) == [("d", "m", "a", [1, 2], None)]


def test_import_parquet_list_columns(tmp_path):
    path = tmp_path / "p.parquet"
    pq.write_table(
        pa.table(
            {
                "image_id": ["dir/a.png", "b"],
                "topk": pa.array([[10, 20, 30], [40]], pa.list_(pa.int64())),
                "probs": pa.array([[0.5, 0.25, 0.125], None], pa.list_(pa.float64())),
                "model": ["m", "m"],
                "extra": [1, 2],
            }
        ),
        path,
    )
    table = import_predictions(path, dataset="d")
    assert table.schema == PREDICTIONS_SCHEMA
    assert rows(table) == [("d", "m", "a", [10, 20, 30], [0.5, 0.25, 0.125]), ("d", "m", "b", [40], None)]


def test_import_parquet_top1_int_column(tmp_path):
    path = tmp_path / "p.parquet"
    table = pa.table({"image_id": ["a", "b"], "top1": pa.array([0, 999], pa.int32()), "dataset": ["d", "d"]})
    pq.write_table(table, path)
    assert rows(import_predictions(path, model="m")) == [("d", "m", "a", [0], None), ("d", "m", "b", [999], None)]


def test_import_parquet_topk_string_column(tmp_path):
    path = tmp_path / "p.parquet"
    pq.write_table(pa.table({"image_id": ["a"], "topk": ["5;6;7"], "probs": ["0.5;0.5;0"]}), path)
    assert rows(import_predictions(path, dataset="d", model="m")) == [("d", "m", "a", [5, 6, 7], [0.5, 0.5, 0.0])]


def test_import_same_image_in_two_models_is_fine(tmp_path):
    path = write(tmp_path, "p.csv", "model,image_id,top1\na,x,1\nb,x,2\n")
    assert len(import_predictions(path, dataset="d")) == 2


# --------------------------------------------------------------------------------------------------------------
# Importers: bad inputs, one test each; the message names the file and the entry


def test_import_error_duplicate_id_after_normalization(tmp_path):
    path = write(tmp_path, "p.csv", "image_id,top1\nval/x.JPEG,1\ny,2\nx,3\n")
    msg = error_of(import_predictions, path, dataset="d", model="m")
    assert msg == f"{path}: row 4 (x): duplicate image id 'x' for dataset 'd', model 'm' (first at row 2)"


def test_import_error_class_above_range(tmp_path):
    path = write(tmp_path, "p.csv", "image_id,topk\na,1;2\nb,3;1000\n")
    msg = error_of(import_predictions, path, dataset="d", model="m")
    assert msg == f"{path}: row 3 (b): class index 1000 is outside 0..999"


def test_import_error_negative_class(tmp_path):
    path = write(tmp_path, "p.csv", "image_id,top1\na,-1\n")
    msg = error_of(import_predictions, path, dataset="d", model="m")
    assert msg == f"{path}: row 2 (a): class index -1 is outside 0..999"


def test_import_error_repeated_class_in_topk(tmp_path):
    path = write(tmp_path, "p.csv", "image_id,topk\na,1;2\nb,3;4;3\n")
    msg = error_of(import_predictions, path, dataset="d", model="m")
    assert msg == f"{path}: row 3 (b): class 3 appears twice in one top-k list"


def test_import_error_repeated_class_in_parquet_list(tmp_path):
    path = tmp_path / "p.parquet"
    pq.write_table(pa.table({"image_id": ["a", "b"], "topk": [[1, 2], [5, 5]]}), path)
    msg = error_of(import_predictions, path, dataset="d", model="m")
    assert msg == f"{path}: row 2 (b): class 5 appears twice in one top-k list"


def test_import_error_probs_length_mismatch(tmp_path):
    path = write(tmp_path, "p.csv", "image_id,topk,probs\na,1;2,0.5;0.25\nb,3;4,0.5\n")
    msg = error_of(import_predictions, path, dataset="d", model="m")
    assert msg == f"{path}: row 3 (b): 1 probs for 2 classes in the top-k"


def test_import_error_fractional_class(tmp_path):
    path = write(tmp_path, "p.csv", "image_id,top1\na,1.5\n")
    msg = error_of(import_predictions, path, dataset="d", model="m")
    assert msg == f"{path}: row 2 (a): label '1.5' is not a class index"  # mlray.labels.parse.class_index


def test_import_error_word_as_class_in_topk(tmp_path):
    path = write(tmp_path, "p.csv", "image_id,topk\na,1;cat\n")
    msg = error_of(import_predictions, path, dataset="d", model="m")
    assert msg == f"{path}: row 2 (a): label 'cat' is not a class index"


def test_import_error_empty_top1(tmp_path):
    path = write(tmp_path, "p.csv", "image_id,top1\na,1\nb,\n")
    msg = error_of(import_predictions, path, dataset="d", model="m")
    assert msg == f"{path}: row 3 (b): top1 is empty (no predicted class)"


def test_import_error_empty_topk(tmp_path):
    path = write(tmp_path, "p.csv", "image_id,topk\na,;\n")
    msg = error_of(import_predictions, path, dataset="d", model="m")
    assert msg == f"{path}: row 2 (a): topk is empty (no predicted class)"


def test_import_error_empty_image_id(tmp_path):
    path = write(tmp_path, "p.csv", "image_id,top1\na,1\n,2\n")
    msg = error_of(import_predictions, path, dataset="d", model="m")
    assert msg == f"{path}: row 3: empty image_id"


def test_import_error_missing_image_id_column(tmp_path):
    path = write(tmp_path, "p.csv", "id,top1\na,1\n")
    msg = error_of(import_predictions, path, dataset="d", model="m")
    assert msg == f"{path}: missing column(s) image_id (found: id, top1)"


def test_import_error_missing_class_column(tmp_path):
    path = write(tmp_path, "p.csv", "image_id,label\na,1\n")
    msg = error_of(import_predictions, path, dataset="d", model="m")
    assert msg == f"{path}: missing column(s) top1 or topk (found: image_id, label)"


def test_import_error_malformed_csv_extra_field(tmp_path):
    path = write(tmp_path, "p.csv", "image_id,top1\na,1\nb,2,3\n")
    msg = error_of(import_predictions, path, dataset="d", model="m")
    assert msg.startswith(f"{path}: malformed CSV: ")
    assert "line 3" in msg


def test_import_error_malformed_csv_every_row_too_long(tmp_path):
    # pandas alone would silently use the first field as an index and shift the columns
    path = write(tmp_path, "p.csv", "image_id,top1\na,1,2\nb,3,4\n")
    msg = error_of(import_predictions, path, dataset="d", model="m")
    assert msg == f"{path}: malformed CSV: rows have more fields than the header"


def test_import_error_empty_csv(tmp_path):
    path = write(tmp_path, "p.csv", "")
    msg = error_of(import_predictions, path, dataset="d", model="m")
    assert msg.startswith(f"{path}: malformed CSV: ")


def test_import_error_csv_not_text(tmp_path):
    path = tmp_path / "p.csv"
    path.write_bytes(b"image_id,top1\n\xff\xfe\x00a,1\n")
    msg = error_of(import_predictions, path, dataset="d", model="m")
    assert msg.startswith(f"{path}: malformed CSV: ")


def test_import_error_unreadable_parquet(tmp_path):
    path = tmp_path / "p.parquet"
    path.write_bytes(b"not parquet at all")
    msg = error_of(import_predictions, path, dataset="d", model="m")
    assert msg.startswith(f"{path}: not a readable Parquet file (")


def test_import_error_no_such_file(tmp_path):
    msg = error_of(import_predictions, tmp_path / "nope.csv", dataset="d", model="m")
    assert msg == f"{tmp_path / 'nope.csv'}: no such file"


def test_import_error_no_dataset(tmp_path):
    path = write(tmp_path, "p.csv", "image_id,top1\na,1\n")
    msg = error_of(import_predictions, path, model="m")
    assert msg == f"{path}: no dataset column; give the dataset with --dataset NAME"


def test_import_error_no_model(tmp_path):
    path = write(tmp_path, "p.csv", "image_id,top1\na,1\n")
    msg = error_of(import_predictions, path, dataset="d")
    assert msg == f"{path}: no model column; give the model with --model NAME"


def test_import_error_empty_model_cell_without_argument(tmp_path):
    path = write(tmp_path, "p.csv", "image_id,top1,model\na,1,m\nb,2,\n")
    msg = error_of(import_predictions, path, dataset="d")
    assert msg == f"{path}: row 3 (b): empty model and no model given"


def test_import_error_dataset_column_conflicts_with_argument(tmp_path):
    path = write(tmp_path, "p.csv", "image_id,top1,dataset\na,1,d\nb,2,other\n")
    msg = error_of(import_predictions, path, dataset="d", model="m")
    assert msg == f"{path}: row 3 (b): dataset 'other' differs from the dataset given ('d')"


def test_import_error_top1_differs_from_topk(tmp_path):
    path = write(tmp_path, "p.csv", "image_id,top1,topk\na,4,4;9\nb,1,2;1\n")
    msg = error_of(import_predictions, path, dataset="d", model="m")
    assert msg == f"{path}: row 3 (b): top1 1 is not the first class of topk (2)"


def test_import_error_prob_not_a_number(tmp_path):
    path = write(tmp_path, "p.csv", "image_id,topk,probs\na,1;2,0.5;high\n")
    msg = error_of(import_predictions, path, dataset="d", model="m")
    assert msg == f"{path}: row 2 (a): probs value 'high' is not a number"


def test_import_error_prob_out_of_range(tmp_path):
    path = write(tmp_path, "p.csv", "image_id,topk,probs\na,1;2,1.5;0.25\n")
    msg = error_of(import_predictions, path, dataset="d", model="m")
    assert msg == f"{path}: row 2 (a): probs value '1.5' is not a probability in [0, 1]"


def test_import_error_probs_not_best_first(tmp_path):
    path = write(tmp_path, "p.csv", "image_id,topk,probs\na,1;2,0.25;0.5\n")
    msg = error_of(import_predictions, path, dataset="d", model="m")
    assert msg == f"{path}: row 2 (a): probs ['0.25', '0.5'] increase; the top-k must be listed best first"


def test_import_parquet_error_rows_count_from_one(tmp_path):
    path = tmp_path / "p.parquet"
    pq.write_table(pa.table({"image_id": ["a", "b"], "top1": [1, 1000]}), path)
    msg = error_of(import_predictions, path, dataset="d", model="m")
    assert msg == f"{path}: row 2 (b): class index 1000 is outside 0..999"


# --------------------------------------------------------------------------------------------------------------
# Alignment


def labels_of(ids: list[str]):
    src = SourceLabels("labels.json", "imagenetv2-json", ids, original=[1] * len(ids))
    return build_dataset_labels("d", src, None).arrays()


def test_align_pads_and_counts_missing(tmp_path):
    path = write(
        tmp_path,
        "p.csv",
        "model,image_id,topk,probs\nm,c,7,\nm,a,3;1;2,0.5;0.25;0.125\nother,b,9;8;7;6,\n",
    )
    pred = import_predictions(path, dataset="d")
    out = align(pred, labels_of(["a", "b", "c"]), "d", "m")
    assert (out.k, out.n, out.n_missing, out.missing_examples) == (3, 3, 1, ["b"])
    assert out.topk.dtype == np.int16 and out.prob.dtype == np.float32
    np.testing.assert_array_equal(out.topk, [[3, 1, 2], [-1, -1, -1], [7, -1, -1]])
    np.testing.assert_array_equal(out.prob, [[0.5, 0.25, 0.125], [np.nan] * 3, [np.nan] * 3])
    np.testing.assert_array_equal(out.has_prediction, [True, False, True])


def test_align_lists_at_most_five_missing_examples():
    ids = [f"i{j}" for j in range(8)]
    pred = predictions_table("d", "m", ["i7"], np.array([[5, 6]]))
    out = align(pred, labels_of(ids), "d", "m")
    assert (out.n_missing, out.missing_examples) == (7, ["i0", "i1", "i2", "i3", "i4"])
    np.testing.assert_array_equal(out.topk[7], [5, 6])


def test_align_error_unknown_ids():
    pred = predictions_table("d", "m", ["a", "zz", "yy"], np.array([[1], [2], [3]]))
    msg = error_of(align, pred, labels_of(["a", "b"]), "d", "m", source="preds.csv")
    assert msg == "preds.csv: 2 predicted image id(s) are not in dataset 'd', e.g. 'zz'"


def test_align_error_no_predictions_for_pair():
    pred = predictions_table("d", "m", ["a"], np.array([[1]]))
    msg = error_of(align, pred, labels_of(["a"]), "d", "other")
    shown = "predictions of model 'other' on dataset 'd'"
    assert msg == f"{shown}: no predictions of model 'other' on dataset 'd' (present: d/m)"


def test_align_error_duplicate_prediction():
    pred = pa.concat_tables([predictions_table("d", "m", ["a"], np.array([[1]]))] * 2)
    msg = error_of(align, pred, labels_of(["a"]), "d", "m", source="store")
    assert msg == "store: image id 'a' is predicted 2 times"


# --------------------------------------------------------------------------------------------------------------
# Real data: cleanlab's cross-validated ResNet-50 argmax predictions on ImageNet val


@pytest.mark.integration
def test_cleanlab_resnet50_argmax_top1_and_real(tmp_path):
    cleanlab = SHARED / "cleanlab-label-errors"
    val_json = SHARED / "imagenetv2" / "imagenet-validation-original.json"
    if not (cleanlab / "imagenet_val_set_pyx_argmax_predicted_labels.npy").is_file() or not val_json.is_file():
        pytest.skip(f"real data not found under {SHARED} (cleanlab-label-errors/ and imagenetv2/ are needed)")
    # rows of the .npy follow imagenet_val_set_index_to_filepath.json (sorted by class folder), not file numbers
    paths = json.loads((cleanlab / "imagenet_val_set_index_to_filepath.json").read_text())
    top1 = np.load(cleanlab / "imagenet_val_set_pyx_argmax_predicted_labels.npy")
    assert len(paths) == len(top1) == 50_000
    csv = tmp_path / "cleanlab.csv"
    csv.write_text("image_id,top1\n" + "".join(f"{p},{int(c)}\n" for p, c in zip(paths, top1)))
    pred = import_predictions(csv, dataset="imagenet-val", model="resnet50-cleanlab-cv")
    assert pred.num_rows == 50_000
    labels = build_dataset_labels(
        "imagenet-val", read_source("imagenetv2-json", val_json), read_source("real-json", None)
    ).arrays()
    out = align(pred, labels, "imagenet-val", "resnet50-cleanlab-cv")
    assert (out.n_missing, out.k) == (0, 1)
    first = out.topk[:, 0]
    assert (first == labels.original).sum() == 36_366
    assert (first == labels.original).mean() == 0.72732
    # ReaL: the prediction is in the valid set, over the images with a non-empty valid set
    rows = labels.row_of_values()
    hit = np.zeros(labels.n, dtype=bool)
    np.logical_or.at(hit, rows, labels.values == first[rows])
    labelled = labels.labelled
    assert labelled.sum() == 46_837
    assert hit[labelled].sum() == 36_352
    assert round(hit[labelled].mean(), 4) == 0.7761
