"""Label readers and the canonical labels table: tiny hand-made files, every bad input, and the real files."""

from __future__ import annotations

import json

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from conftest import shared

from mlray.errors import MlrayError
from mlray.labels import (
    LABELS_SCHEMA,
    build_dataset_labels,
    image_id_from_name,
    imagenet_vocabulary,
    read_source,
)
from mlray.stats import dataset_stats, label_count_hist


def write(path, text):
    path.write_text(text)
    return path


def real_file(tmp_path, entries):
    """A ReaL-format file of 50,000 entries: ``entries`` (index -> labels) and [1] elsewhere."""
    data = [[1]] * 50_000
    for i, labels in entries.items():
        data[i] = labels
    return write(tmp_path / "real.json", json.dumps(data))


# ---------------------------------------------------------------- vocabulary and ids


def test_vocabulary_from_timm():
    v = imagenet_vocabulary()
    assert len(v) == 1000
    assert v.wnids[0] == "n01440764" and v.names[0] == "tench"
    assert v.wnids[999] == "n15075141" and v.names[999] == "toilet tissue"
    assert v.index_of["n01751748"] == 65


def test_image_id_from_name():
    assert image_id_from_name("ILSVRC2012_val_00000001.JPEG") == "ILSVRC2012_val_00000001"
    assert image_id_from_name("val/n01440764/ILSVRC2012_val_00000293.JPEG") == "ILSVRC2012_val_00000293"
    assert (
        image_id_from_name("f4603db396353d99a52840da512a04c1f79b1fef.jpeg")
        == "f4603db396353d99a52840da512a04c1f79b1fef"
    )
    assert image_id_from_name("25949dd0704552263197b05a8359771a4192ff45") == "25949dd0704552263197b05a8359771a4192ff45"
    assert image_id_from_name("photo.v2.png") == "photo.v2"
    assert image_id_from_name("archive.tar") == "archive.tar"  # not an image extension: kept


# ---------------------------------------------------------------- readers


def test_real_json_builtin_copy_in_timm():
    src = read_source("real-json", None)
    assert len(src.image_ids) == 50_000
    assert src.image_ids[0] == "ILSVRC2012_val_00000001" and src.image_ids[-1] == "ILSVRC2012_val_00050000"
    assert src.valid[:4] == [[], [970, 795], [230, 231], [809]]
    assert sum(1 for v in src.valid if not v) == 3163


def test_real_json_small(tmp_path):
    src = read_source("real-json", real_file(tmp_path, {0: [], 1: [5, 7], 2: ["999"]}))
    assert src.valid[:3] == [[], [5, 7], [999]]
    assert src.image_ids[1] == "ILSVRC2012_val_00000002"


def test_multilabelfy_json(tmp_path):
    path = write(tmp_path / "m.json", json.dumps({"aa.jpeg": ["370"], "bb.jpeg": ["356", "359"], "cc.jpeg": []}))
    src = read_source("multilabelfy-json", path)
    assert src.image_ids == ["aa", "bb", "cc"]
    assert src.valid == [[370], [356, 359], []]
    assert src.original is None


def test_imagenetv2_json(tmp_path):
    path = write(
        tmp_path / "v2.json",
        json.dumps(
            {"seed": 1, "image_filenames": [["aa", "n01440764"], ["ILSVRC2012_val_00000002.JPEG", "n15075141"]]}
        ),
    )
    src = read_source("imagenetv2-json", path)
    assert src.image_ids == ["aa", "ILSVRC2012_val_00000002"]
    assert src.original == [0, 999]


def test_tfds_multilabel_csv(tmp_path):
    path = write(
        tmp_path / "t.csv",
        "id,category,original_label,proposed_labels,manually_validated,unclear_multi_labels,wrong_multi_labels,is_problematic\n"
        "ILSVRC2012_val_00000001.JPEG,A,24,24,True,,,False\n"
        'ILSVRC2012_val_00000002.JPEG,M,582,"415, 813, 868",True,,"467, 582",True\n'
        'ILSVRC2012_val_00000003.JPEG,Z,7,,True,"3, 4",,False\n',
    )
    src = read_source("tfds-multilabel-csv", path)
    assert src.image_ids == ["ILSVRC2012_val_00000001", "ILSVRC2012_val_00000002", "ILSVRC2012_val_00000003"]
    assert src.original == [24, 582, 7]
    assert src.valid == [[24], [415, 813, 868], []]
    assert src.unclear == [[], [], [3, 4]]
    assert src.problematic == [False, True, False]


def test_loc_val_solution_csv(tmp_path):
    path = write(
        tmp_path / "LOC_val_solution.csv",
        "ImageId,PredictionString\n"
        "ILSVRC2012_val_00008726,n02119789 255 142 454 329 n02119789 44 21 322 295 \n"
        "ILSVRC2012_val_00000001,n01751748 1 2 3 4\n",
    )
    src = read_source("loc-val-solution-csv", path)
    assert src.image_ids == ["ILSVRC2012_val_00008726", "ILSVRC2012_val_00000001"]
    assert src.original == [imagenet_vocabulary().index_of["n02119789"], 65]


def test_table_csv_and_parquet(tmp_path):
    csv = write(tmp_path / "t.csv", "image_id,label,labels\na.jpg,3,3;4\nb,-1,\nc,,7\n")
    src = read_source("table", csv)
    assert src.image_ids == ["a", "b", "c"]
    assert src.original == [3, -1, -1]
    assert src.valid == [[3, 4], [], [7]]
    pq.write_table(
        pa.table(
            {
                "image_id": ["x", "y"],
                "labels": pa.array([[1, 2], None], type=pa.list_(pa.int64())),
                "problematic": [True, False],
            }
        ),
        tmp_path / "t.parquet",
    )
    src = read_source("table", tmp_path / "t.parquet")
    assert src.valid == [[1, 2], None]
    assert src.original is None
    assert src.problematic == [True, False]


# ---------------------------------------------------------------- bad inputs: one clear line each


def expect_error(match, fmt, path):
    with pytest.raises(MlrayError, match=match) as info:
        read_source(fmt, path)
    message = str(info.value)
    assert "\n" not in message
    assert str(path) in message
    return message


def test_bad_class_index_outside_range(tmp_path):
    path = write(tmp_path / "m.json", json.dumps({"aa.jpeg": ["370"], "bb.jpeg": ["1000"]}))
    msg = expect_error("class index 1000 is outside 0..999", "multilabelfy-json", path)
    assert "'bb.jpeg'" in msg


def test_bad_negative_class_in_real(tmp_path):
    msg = expect_error("class index -3 is outside", "real-json", real_file(tmp_path, {41: [-3]}))
    assert "ILSVRC2012_val_00000042" in msg


def test_bad_unknown_wnid(tmp_path):
    path = write(tmp_path / "v2.json", json.dumps({"image_filenames": [["aa", "n01440764"], ["bb", "n99999999"]]}))
    msg = expect_error("unknown wnid 'n99999999'", "imagenetv2-json", path)
    assert "image_filenames[1] (bb)" in msg


def test_bad_malformed_json(tmp_path):
    expect_error(
        "malformed JSON at line 2 column",
        "multilabelfy-json",
        write(tmp_path / "m.json", '{"a.jpeg": [1],\n "b.jpeg" [2]}'),
    )


def test_bad_malformed_csv(tmp_path):
    path = write(tmp_path / "t.csv", "image_id,label\na,1\nb,2,3,4\n")
    expect_error("malformed CSV", "table", path)


def test_bad_csv_missing_columns(tmp_path):
    path = write(tmp_path / "t.csv", "ImageId,Prediction\na,b\n")
    expect_error("missing column\\(s\\) PredictionString", "loc-val-solution-csv", path)


def test_bad_real_length(tmp_path):
    path = write(tmp_path / "real.json", json.dumps([[1]] * 49_999))
    expect_error("a ReaL file has 50,000 entries .* found 49,999", "real-json", path)


def test_bad_duplicate_image_ids(tmp_path):
    path = write(tmp_path / "t.csv", "image_id,label\nILSVRC2012_val_00000001.JPEG,1\nb,2\nILSVRC2012_val_00000001,3\n")
    msg = expect_error("duplicate image id 'ILSVRC2012_val_00000001'", "table", path)
    assert "entries 1 and 3" in msg


def test_bad_label_not_an_integer(tmp_path):
    path = write(tmp_path / "t.csv", "image_id,labels\na,3;cat\n")
    msg = expect_error("label 'cat' is not a class index", "table", path)
    assert "row 2 (a)" in msg


def test_repeated_class_in_one_set_is_kept_once_and_counted(tmp_path):
    path = write(tmp_path / "m.json", json.dumps({"a.jpeg": ["5", "7", "5"], "b.jpeg": ["1"]}))
    src = read_source("multilabelfy-json", path)
    assert src.valid == [[5, 7], [1]]
    assert src.merged_duplicates == ["'a.jpeg'"]
    assert build_dataset_labels("d", None, src).merged_duplicates == 1


def test_bad_loc_boxes_disagree(tmp_path):
    path = write(tmp_path / "loc.csv", "ImageId,PredictionString\nx,n01440764 1 2 3 4 n15075141 1 2 3 4\n")
    expect_error("boxes name different classes", "loc-val-solution-csv", path)


def test_bad_format_and_missing_path(tmp_path):
    with pytest.raises(MlrayError, match="unknown label format 'real'"):
        read_source("real", None)
    with pytest.raises(MlrayError, match="needs a path"):
        read_source("multilabelfy-json", None)
    with pytest.raises(MlrayError, match="no such file"):
        read_source("table", tmp_path / "nope.csv")


# ---------------------------------------------------------------- joining sources into the canonical table


def _sources(tmp_path):
    original = read_source(
        "imagenetv2-json",
        write(
            tmp_path / "o.json",
            json.dumps({"image_filenames": [["a", "n01440764"], ["b", "n01443537"], ["c", "n01484850"]]}),
        ),
    )
    multi = read_source(
        "multilabelfy-json",
        write(tmp_path / "m.json", json.dumps({"a.jpeg": ["0", "5"], "c.jpeg": [], "zz.jpeg": ["1"]})),
    )
    return original, multi


def test_labels_for_unknown_images_are_an_error(tmp_path):
    original, multi = _sources(tmp_path)
    with pytest.raises(MlrayError, match=r"1 entries name images that dataset 'd' does not have, e\.g\. zz") as info:
        build_dataset_labels("d", original, multi)
    assert "m.json" in str(info.value) and "on_unknown_image: skip" in str(info.value)


def test_join_with_skip_policy_counts_what_it_skips(tmp_path):
    original, multi = _sources(tmp_path)
    d = build_dataset_labels("d", original, multi, on_unknown_image="skip")
    assert d.table.schema == LABELS_SCHEMA
    assert d.skipped_unknown == 1 and d.skipped_examples == ["zz"]
    assert d.table.column("image_id").to_pylist() == ["a", "b", "c"]
    assert d.table.column("original").to_pylist() == [0, 1, 2]
    # b has no multi-label entry: null (not annotated); c is annotated with no valid class: []
    assert d.table.column("valid").to_pylist() == [[0, 5], None, []]
    a = d.arrays()
    assert a.offsets.tolist() == [0, 2, 2, 2]
    assert a.annotated.tolist() == [True, False, True]
    assert a.labelled.tolist() == [True, False, False]
    s = dataset_stats("d", a)
    assert (s["n_images"], s["n_labelled"], s["n_empty"], s["n_unannotated"], s["n_multi"]) == (3, 1, 1, 1, 1)
    assert s["original_in_valid_fraction"] == 1.0


def test_multi_only_dataset_takes_originals_from_tfds(tmp_path):
    path = write(
        tmp_path / "t.csv",
        'id,original_label,proposed_labels,unclear_multi_labels,is_problematic\nx.JPEG,3,"3, 4",,False\ny.JPEG,9,1,2,True\n',  # noqa: E501
    )
    d = build_dataset_labels("t", None, read_source("tfds-multilabel-csv", path))
    assert d.table.column("original").to_pylist() == [3, 9]
    assert d.table.column("problematic").to_pylist() == [False, True]
    assert d.table.column("unclear").to_pylist() == [[], [2]]
    a = d.arrays()
    assert a.problematic.tolist() == [False, True]
    assert a.unclear_offsets.tolist() == [0, 0, 1] and a.unclear_values.tolist() == [2]


def test_role_mismatch_is_reported(tmp_path):
    original, multi = _sources(tmp_path)
    with pytest.raises(MlrayError, match="carries no original labels"):
        build_dataset_labels("d", multi, None)
    with pytest.raises(MlrayError, match="carries no multi-label sets"):
        build_dataset_labels("d", None, original)


# ---------------------------------------------------------------- the real annotation files (docs/design.md numbers)


@pytest.mark.integration
def test_real_val_with_real_labels():
    original = read_source("imagenetv2-json", shared("imagenetv2", "imagenet-validation-original.json"))
    multi = read_source("real-json", shared("reassessed-imagenet", "real.json"))
    a = build_dataset_labels("imagenet-val", original, multi).arrays()
    assert a.image_ids[0] == "ILSVRC2012_val_00000001"  # rows sorted by image id
    assert a.original[:5].tolist() == [65, 970, 230, 809, 516]
    s = dataset_stats("imagenet-val", a)
    assert (s["n_images"], s["n_labelled"], s["n_empty"], s["n_multi"]) == (50_000, 46_837, 3_163, 7_443)
    assert round(s["multi_fraction"], 4) == 0.1589
    assert round(s["mean_labels"], 3) == 1.229
    assert round(s["original_in_valid_fraction"], 4) == 0.9002  # 42,164 / 46,837
    assert round(s["original_in_valid_fraction"] * s["n_labelled"]) == 42_164
    h = label_count_hist("imagenet-val", a)
    assert dict(zip(h.n_labels, h.n_images)) == {1: 39394, 2: 5408, 3: 1319, 4: 411, 5: 161, 6: 88, 7: 41, 8: 13, 9: 2}


@pytest.mark.integration
def test_real_imagenetv2_matched_frequency_refined_labels():
    original = read_source("imagenetv2-json", shared("imagenetv2", "imagenetv2-b-33.json"))
    multi = read_source("multilabelfy-json", shared("multilabelfy-imagenetv2", "imagenetv2_refined_labels.json"))
    a = build_dataset_labels("v2", original, multi).arrays()
    s = dataset_stats("v2", a)
    assert (s["n_images"], s["n_labelled"], s["n_empty"], s["n_multi"], s["n_unannotated"]) == (
        10_000,
        9_871,
        129,
        4_788,
        0,
    )
    assert round(s["multi_fraction"], 4) == 0.4851
    assert round(s["mean_labels"], 3) == 1.933
    assert round(s["original_in_valid_fraction"] * s["n_labelled"]) == 8_797
    assert round(s["original_in_valid_fraction"], 4) == 0.8912
    h = label_count_hist("v2", a)
    assert dict(zip(h.n_labels, h.n_images)) == {
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


@pytest.mark.integration
def test_real_tfds_multilabel_csv():
    d = build_dataset_labels(
        "shankar", None, read_source("tfds-multilabel-csv", shared("tfds-imagenet2012-multilabel", "multilabel.csv"))
    )
    a = d.arrays()
    assert a.n == 20_000
    assert int(a.problematic.sum()) == 1_308
    # SOURCE.md counts row 6467 (ILSVRC2012_val_00000955: "872, 759, 622, 622") as 4 labels; it is 3 distinct ones
    assert d.merged_duplicates == 1
    counts = np.bincount(a.counts)
    assert dict(enumerate(counts.tolist())) == {
        0: 451,
        1: 15892,
        2: 2784,
        3: 580,
        4: 223,
        5: 52,
        6: 16,
        7: 1,
        8: 0,
        9: 1,
    }
    # original labels agree with the ILSVRC ground truth for every row
    truth = read_source("imagenetv2-json", shared("imagenetv2", "imagenet-validation-original.json"))
    gt = dict(zip(truth.image_ids, truth.original))
    assert all(gt[i] == o for i, o in zip(a.image_ids, a.original.tolist()))


@pytest.mark.integration
def test_real_derived_csv_as_table_equals_imagenetv2_json(tmp_path):
    """The derived 50k ground-truth CSV read as a `table` (after renaming its columns) gives the same labels."""
    import pandas as pd

    frame = pd.read_csv(shared("derived", "ilsvrc2012_val_labels.csv")).rename(
        columns={"file_name": "image_id", "class_index": "label"}
    )
    frame[["image_id", "label"]].to_csv(tmp_path / "gt.csv", index=False)
    table = read_source("table", tmp_path / "gt.csv")
    v2json = read_source("imagenetv2-json", shared("imagenetv2", "imagenet-validation-original.json"))
    assert dict(zip(table.image_ids, table.original)) == dict(zip(v2json.image_ids, v2json.original))


def test_bad_csv_every_row_wider_than_header(tmp_path):
    # pandas would silently shift the columns (extra leading fields become an index)
    path = write(tmp_path / "t.csv", "image_id,label\na,1,5\nb,2,6\n")
    expect_error("malformed CSV: rows have more fields than the header", "table", path)
