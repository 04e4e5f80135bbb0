"""The prediction and errors stores without Ray: layout and names, atomic parts, the finished-shard rule, the
resume listing, stale parts, reading back (never a row twice), and plain pandas / pyarrow / DuckDB reads."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from conftest import error_of

from mlray.images import Shard
from mlray.store import (
    ERRORS_SCHEMA,
    PREDICTIONS_SCHEMA,
    count_rows,
    errors_root,
    errors_table,
    finish_shard,
    finished_shards,
    folder_name,
    list_partitions,
    name_of_folder,
    part_name,
    part_tag,
    partition_dir,
    predictions_root,
    predictions_table,
    read_errors,
    read_predictions,
    read_store,
    refuse_stale_parts,
    shard_tag,
    store_folders,
    store_listing,
    write_partition,
    write_predictions,
)

HF_MODEL = "hf-hub:timm/resnet50.a1_in1k"


def rows(table: pa.Table) -> list[tuple]:
    return [(r["dataset"], r["model"], r["image_id"], r["topk_idx"], r["topk_prob"]) for r in table.to_pylist()]


# --------------------------------------------------------------------------------------------------------------
# Writing and reading parts


def small(model: str = HF_MODEL, ids=("a", "b"), k: int = 3, start: int = 0, dataset: str = "imagenet-val") -> pa.Table:
    n = len(ids)
    idx = (np.arange(n * k).reshape(n, k) + start) % 1000
    prob = np.tile(np.array([0.5, 0.25, 0.125, 0.0625][:k], np.float32), (n, 1))
    return predictions_table(dataset, model, list(ids), idx, prob)


def test_store_round_trip_with_quoted_names(tmp_path):
    table = small()
    part = write_partition(tmp_path, "imagenet-val", HF_MODEL, table, shard=7)
    assert part == tmp_path / "imagenet-val" / "hf-hub%3Atimm%2Fresnet50.a1_in1k" / "part-00007.parquet"
    assert list_partitions(tmp_path) == [("imagenet-val", HF_MODEL, [part])]
    for source in (tmp_path, part.parent, part.parent.parent, part, [part, tmp_path]):
        back = read_predictions(source)
        assert back.schema == PREDICTIONS_SCHEMA
        assert back.equals(table)
    assert rows(read_predictions(tmp_path))[1] == ("imagenet-val", HF_MODEL, "b", [3, 4, 5], [0.5, 0.25, 0.125])


def test_store_fills_missing_name_columns(tmp_path):
    table = pa.table({"image_id": ["a"], "topk_idx": [[1, 2]]})
    write_partition(tmp_path, "d", "m", table, shard="s")
    assert rows(read_predictions(tmp_path)) == [("d", "m", "a", [1, 2], None)]


def test_store_appends_parts_without_shard(tmp_path):
    write_partition(tmp_path, "d", "m", small("m", ["a"], dataset="d"))
    write_partition(tmp_path, "d", "m", small("m", ["b"], dataset="d"))
    ((_, _, files),) = list_partitions(tmp_path)
    assert len(files) == 2
    assert sorted(read_predictions(tmp_path).column("image_id").to_pylist()) == ["a", "b"]


def test_store_rewriting_a_shard_replaces_it(tmp_path):
    write_partition(tmp_path, "d", "m", small("m", ["a", "b"], dataset="d"), shard=3)
    write_partition(tmp_path, "d", "m", small("m", ["a", "b"], start=100, dataset="d"), shard=3)
    write_partition(tmp_path, "d", "m", small("m", ["c"], dataset="d"), shard="x/y")
    ((_, _, files),) = list_partitions(tmp_path)
    assert [f.name for f in files] == ["part-00003.parquet", "part-x%2Fy.parquet"]
    back = read_predictions(tmp_path)
    assert back.column("image_id").to_pylist() == ["a", "b", "c"]
    assert back.column("topk_idx").to_pylist()[:2] == [[100, 101, 102], [103, 104, 105]]


def test_store_write_is_atomic(tmp_path, monkeypatch):
    part = write_partition(tmp_path, "d", "m", small("m", ["a"], dataset="d"), shard=0)
    before = part.read_bytes()

    def broken(table, where, **kwargs):
        where.write(b"PAR1 half a file")
        raise OSError("disk full")

    monkeypatch.setattr(pq, "write_table", broken)
    with pytest.raises(OSError):
        write_partition(tmp_path, "d", "m", small("m", ["z"], dataset="d"), shard=0)
    assert part.read_bytes() == before
    assert sorted(p.name for p in part.parent.iterdir()) == ["part-00000.parquet"]


def test_store_ignores_temporary_and_foreign_files(tmp_path):
    part = write_partition(tmp_path, "d", "m", small("m", ["a"], dataset="d"), shard=0)
    (part.parent / ".tmp-part-00001.parquet-1-abc").write_bytes(b"partial")
    (tmp_path / "README.txt").write_text("x")
    (tmp_path / "d" / "notes").mkdir()
    (tmp_path / "d" / ".ipynb_checkpoints" / "x").mkdir(parents=True)
    (tmp_path / "d" / ".ipynb_checkpoints" / "x" / "part-00000.parquet").write_bytes(b"hidden")
    assert list_partitions(tmp_path) == [("d", "m", [part])]
    assert read_predictions(tmp_path).num_rows == 1


def test_write_predictions_splits_pairs(tmp_path):
    table = pa.concat_tables([small("m1", ["a"], dataset="d"), small("m2", ["a"], dataset="d")])
    paths = write_predictions(tmp_path, table, shard=1)
    assert [p.relative_to(tmp_path).as_posix() for p in paths] == [
        "d/m1/part-00001.parquet",
        "d/m2/part-00001.parquet",
    ]
    assert [(d, m) for d, m, _ in list_partitions(tmp_path)] == [("d", "m1"), ("d", "m2")]


def test_store_logits_round_trip_and_mixed_parts(tmp_path):
    logits = np.arange(2 * 1000, dtype=np.float32).reshape(2, 1000) / 1000
    with_logits = predictions_table("d", "m", ["a", "b"], np.array([[1, 2], [3, 4]]), None, logits)
    write_partition(tmp_path, "d", "m", with_logits, shard=0)
    write_partition(tmp_path, "d", "m", small("m", ["c"], k=2, dataset="d"), shard=1)
    back = read_predictions(tmp_path)
    assert back.schema.field("logits").type == pa.list_(pa.float16())
    got = back.column("logits").to_pylist()
    assert got[2] is None
    np.testing.assert_array_equal(np.asarray(got[0], np.float16), logits[0].astype(np.float16))


def test_store_error_duplicate_across_parts(tmp_path):
    write_partition(tmp_path, "d", "m", small("m", ["a", "b"], dataset="d"), shard=0)
    write_partition(tmp_path, "d", "m", small("m", ["b", "c"], dataset="d"), shard=1)
    folder = tmp_path / "d" / "m"
    msg = error_of(read_predictions, tmp_path)
    assert msg == (
        f"{folder}: image id 'b' of dataset 'd', model 'm' appears 2 times "
        "(in part-00000.parquet and part-00001.parquet); 1 duplicated id(s) in all"
    )


def test_store_error_duplicate_in_rows_to_write(tmp_path):
    msg = error_of(write_partition, tmp_path, "d", "m", small("m", ["a", "a"], dataset="d"), shard=0)
    part = tmp_path / "d" / "m" / "part-00000.parquet"
    assert msg == f"{part}: image id 'a' appears 2 times in the rows to write"


def test_store_error_model_column_differs_from_partition(tmp_path):
    msg = error_of(write_partition, tmp_path, "d", "other", small("m", ["a"], dataset="d"), shard=0)
    part = tmp_path / "d" / "other" / "part-00000.parquet"
    assert msg == f"{part}: row 1: model 'm' differs from the partition's model 'other'"


def test_store_error_bad_class_in_rows_to_write(tmp_path):
    table = pa.table({"image_id": ["a", "b"], "topk_idx": [[1], [1200]]})
    msg = error_of(write_partition, tmp_path, "d", "m", table, shard=0)
    part = tmp_path / "d" / "m" / "part-00000.parquet"
    assert msg == f"{part}: row 2 (b): class index 1200 is outside 0..999"


def test_store_error_part_in_wrong_folder(tmp_path):
    part = write_partition(tmp_path, "d", "m", small("m", ["a"], dataset="d"), shard=0)
    wrong = tmp_path / "d" / "n"
    wrong.mkdir()
    os.replace(part, wrong / part.name)
    msg = error_of(read_predictions, tmp_path)
    assert msg == f"{wrong / part.name}: row 1: model 'm' but the part is in the partition folder of model 'n'"


def test_store_error_missing_path(tmp_path):
    assert error_of(read_predictions, tmp_path / "nope") == f"{tmp_path / 'nope'}: no such file"


def test_store_error_file_is_not_a_prediction_table(tmp_path):
    path = tmp_path / "x.parquet"
    pq.write_table(pa.table({"image_id": ["a"]}), path)
    msg = error_of(read_predictions, path)
    assert msg.startswith(f"{path}: not a prediction table: missing column(s) dataset, model, topk_idx (found: ")


# --------------------------------------------------------------------------------------------------------------
# Names and folders


def test_folder_names_are_one_segment_without_hive_or_hidden_look():
    assert folder_name(HF_MODEL) == "hf-hub%3Atimm%2Fresnet50.a1_in1k"
    assert folder_name("a=b") == "a%3Db"  # never a hive folder
    assert folder_name("_tmp") == "%5Ftmp" and folder_name(".x") == "%2Ex"  # never skipped as hidden
    assert folder_name("imagenet-val") == "imagenet-val"
    for name in (HF_MODEL, "a=b", "_tmp", ".x", "..", "imagenet-val", "ü/ß"):
        assert name_of_folder(folder_name(name)) == name
    assert partition_dir("R", "d", HF_MODEL) == Path("R") / "d" / "hf-hub%3Atimm%2Fresnet50.a1_in1k"
    assert store_folders("predictions", ["imagenet-val", "a/b"]) == ["predictions/imagenet-val", "predictions/a%2Fb"]


def test_part_names_and_tags():
    assert part_name(12) == "part-00012.parquet"
    assert part_name("s00003-1f0c9a2e") == "part-s00003-1f0c9a2e.parquet"
    assert part_name("x/y") == "part-x%2Fy.parquet"
    assert part_tag("part-s00003-1f0c9a2e.parquet") == "s00003-1f0c9a2e"
    assert part_tag(Path("d") / "part-x%2Fy.parquet") == "x/y"
    assert part_tag(".tmp-part-00001.parquet-12-ab") is None and part_tag("part-.parquet") is None
    assert part_tag(part_name()) is not None and part_name() != part_name()  # appended parts: unique names
    assert error_of(part_name, -1) == "shard -1 is negative"


def test_shard_tag_is_the_shard_id_plus_a_digest_of_its_image_ids():
    shard = Shard("s00003", "imagenet-val-flat", ("a", "b"))
    assert shard_tag(shard) == "s00003-fcd127ff" == f"s00003-{hashlib.sha1(b'a' + bytes([10]) + b'b').hexdigest()[:8]}"
    assert shard_tag(Shard("s00003", "imagenet-val-flat", ("a", "c"))) != shard_tag(shard)  # other images
    assert shard_tag(Shard("s00003", "webdataset", ("a", "b"), file="x.tar")) == shard_tag(shard)  # images only


# --------------------------------------------------------------------------------------------------------------
# The defect this layout fixes: the store reads with plain pandas / pyarrow / DuckDB


def finish(out: Path, dataset: str, model: str, tag: str, ok: list[str], bad: list[str]) -> None:
    """Store one shard: ``ok`` images predicted (classes 1, 2), ``bad`` images as decode errors."""
    preds = predictions_table(dataset, model, ok, np.tile([1, 2], (len(ok), 1)), np.tile([0.5, 0.25], (len(ok), 1)))
    errs = errors_table(
        dataset, model, bad, [f"/img/{i}.JPEG" for i in bad], ["decode"] * len(bad), ["broken"] * len(bad)
    )
    finish_shard(out, dataset, model, tag, preds, errs)


def two_pair_store(out: Path) -> None:
    finish(out, "imagenet-val", HF_MODEL, "s00000-aaaaaaaa", ["a", "b"], ["c"])
    finish(out, "imagenet-val", HF_MODEL, "s00001-bbbbbbbb", ["d"], [])
    finish(out, "v2", "m", "s00000-cccccccc", ["x"], [])


def test_the_store_reads_with_pandas_pyarrow_and_duckdb(tmp_path):
    """Hive folders dataset=<d>/model=<m> that repeated the files' columns made these reads fail with
    'Field dataset has incompatible types: string vs dictionary'."""
    import duckdb

    two_pair_store(tmp_path)
    pred = predictions_root(tmp_path)
    want = [("imagenet-val", HF_MODEL, "a"), ("imagenet-val", HF_MODEL, "b"), ("imagenet-val", HF_MODEL, "d"),
            ("v2", "m", "x")]  # fmt: skip
    frame = pd.read_parquet(pred)
    assert sorted(frame[["dataset", "model", "image_id"]].itertuples(index=False, name=None)) == want
    assert [list(v) for v in frame.topk_idx] == [[1, 2]] * 4
    table = pq.read_table(pred)
    assert table.schema.field("dataset").type == pa.string()
    assert sorted(zip(*(table.column(c).to_pylist() for c in ("dataset", "model", "image_id")))) == want
    for hive in ("false", "true"):
        got = duckdb.sql(
            f"select dataset, model, image_id from read_parquet('{pred}/**/*.parquet', hive_partitioning={hive}) "
            "order by all"
        ).fetchall()
        assert got == want
    # the errors store likewise (its empty parts included)
    assert pd.read_parquet(errors_root(tmp_path)).image_id.tolist() == ["c"]
    assert pq.read_table(errors_root(tmp_path)).schema == ERRORS_SCHEMA
    got = duckdb.sql(f"select dataset, image_id, stage from read_parquet('{errors_root(tmp_path)}/**/*.parquet')")
    assert got.fetchall() == [("imagenet-val", "c", "decode")]
    # and mlray's own checked reader, in one call
    assert sorted(zip(*(read_store(pred).column(c).to_pylist() for c in ("dataset", "model", "image_id")))) == want


def test_read_store_selects_datasets_and_models(tmp_path):
    two_pair_store(tmp_path)
    pred = predictions_root(tmp_path)
    assert read_store(pred, datasets=["v2"]).column("image_id").to_pylist() == ["x"]
    assert read_store(pred, models=[HF_MODEL]).column("image_id").to_pylist() == ["a", "b", "d"]
    assert read_store(pred, datasets=["v2"], models=[HF_MODEL]).num_rows == 0
    assert read_store(pred, datasets=["v2"], models=[HF_MODEL]).schema == PREDICTIONS_SCHEMA
    errors = read_errors(errors_root(tmp_path))
    assert errors.schema == ERRORS_SCHEMA
    assert errors.to_pylist() == [
        {
            "dataset": "imagenet-val",
            "model": HF_MODEL,
            "image_id": "c",
            "path": "/img/c.JPEG",
            "stage": "decode",
            "error": "broken",
        }  # fmt: skip
    ]
    assert read_errors(errors_root(tmp_path), datasets=["v2"]).num_rows == 0
    assert count_rows(pred, "imagenet-val", HF_MODEL) == 3 and count_rows(errors_root(tmp_path), "v2", "m") == 0
    assert count_rows(pred, "nope", "m") == 0


def test_an_old_hive_store_is_refused_with_a_clear_message(tmp_path):
    old = tmp_path / "predictions" / "dataset=d" / "model=m"
    old.mkdir(parents=True)
    pq.write_table(predictions_table("d", "m", ["a"], np.array([[1]])), old / "part-00000.parquet")
    msg = error_of(read_predictions, tmp_path / "predictions")
    assert msg == (
        f"{old.parent}: a folder of an older mlray store (hive names like dataset=<d>/model=<m>), which this version "
        "does not read; re-run into a new --out (or delete that store to redo it)"
    )
    assert error_of(read_predictions, old).startswith(f"{old}: a folder of an older mlray store")
    assert error_of(list_partitions, tmp_path / "predictions") == msg


# --------------------------------------------------------------------------------------------------------------
# The finished-shard rule, resume and stale parts


def test_finish_shard_writes_the_errors_part_first_then_the_predictions_part(tmp_path, monkeypatch):
    from mlray.store import writer

    written = []
    real = writer.write_parquet_atomic

    def record(table, target):
        written.append(Path(target).relative_to(tmp_path).as_posix())
        return real(table, target)

    monkeypatch.setattr(writer, "write_parquet_atomic", record)
    finish(tmp_path, "d", "m", "s00000-aaaaaaaa", ["a"], ["b"])
    assert written == ["errors/d/m/part-s00000-aaaaaaaa.parquet", "predictions/d/m/part-s00000-aaaaaaaa.parquet"]


def test_a_run_killed_between_the_two_parts_leaves_the_shard_unfinished_and_the_redo_replaces_it(tmp_path, monkeypatch):
    from mlray.store import writer

    finish(tmp_path, "d", "m", "s00000-aaaaaaaa", ["a"], [])

    def killed(*args, **kwargs):
        raise KeyboardInterrupt  # the run dies after the errors part, before the predictions part

    monkeypatch.setattr(writer, "write_partition", killed)
    with pytest.raises(KeyboardInterrupt):
        finish(tmp_path, "d", "m", "s00001-bbbbbbbb", ["c"], ["d"])
    assert (errors_root(tmp_path) / "d" / "m" / "part-s00001-bbbbbbbb.parquet").is_file()
    assert finished_shards(tmp_path, "d", "m") == {"s00000-aaaaaaaa"}  # the errors part alone: not finished
    monkeypatch.undo()
    finish(tmp_path, "d", "m", "s00001-bbbbbbbb", ["c"], ["d"])  # the re-run redoes it
    assert finished_shards(tmp_path, "d", "m") == {"s00000-aaaaaaaa", "s00001-bbbbbbbb"}
    assert read_errors(errors_root(tmp_path)).column("image_id").to_pylist() == ["d"]  # replaced, not added
    assert sorted(read_store(predictions_root(tmp_path)).column("image_id").to_pylist()) == ["a", "c"]


def test_finish_shard_refuses_an_image_both_predicted_and_failed(tmp_path):
    msg = error_of(finish, tmp_path, "d", "m", "s00000-aaaaaaaa", ["a", "b"], ["b"])
    assert msg == "d / m, shard s00000-aaaaaaaa: image id 'b' is both predicted and an error (1 such image(s))"
    assert not (tmp_path / "errors").exists() and not (tmp_path / "predictions").exists()


def test_store_listing_says_which_shards_each_pair_holds(tmp_path):
    finish(tmp_path, "photos", "a", "s00000-aaaaaaaa", ["1"], [])
    finish(tmp_path, "photos", "a", "s00001-bbbbbbbb", ["2"], ["3"])
    finish(tmp_path, "photos", "b", "s00001-bbbbbbbb", ["2"], ["3"])
    errors_only = errors_root(tmp_path) / "photos" / "b" / "part-s00000-aaaaaaaa.parquet"
    pq.write_table(ERRORS_SCHEMA.empty_table(), errors_only)  # a run killed between the two parts
    (partition_dir(predictions_root(tmp_path), "photos", "b") / ".tmp-part-s00000-aaaaaaaa.parquet-1-ab").write_bytes(
        b"half"
    )  # and one killed while writing the predictions part
    listing = store_listing(tmp_path, ["photos", "v2"], ["a", "b", "c"])
    assert listing == {
        ("photos", "a"): {"s00000-aaaaaaaa", "s00001-bbbbbbbb"},
        ("photos", "b"): {"s00001-bbbbbbbb"},
        ("photos", "c"): frozenset(),
        ("v2", "a"): frozenset(),
        ("v2", "b"): frozenset(),
        ("v2", "c"): frozenset(),
    }


def test_parts_of_shards_the_plan_does_not_have_are_refused(tmp_path):
    finish(tmp_path, "photos", "m", "s00000-aaaaaaaa", ["1"], [])
    finish(tmp_path, "photos", "m", "s00001-bbbbbbbb", ["2"], [])
    refuse_stale_parts(tmp_path, "photos", "m", {"s00000-aaaaaaaa", "s00001-bbbbbbbb", "s00002-cccccccc"})
    folder = errors_root(tmp_path) / "photos" / "m"  # the errors store is looked at first
    msg = error_of(refuse_stale_parts, tmp_path, "photos", "m", {"s00000-aaaaaaaa", "s00001-dddddddd"})
    assert msg == (
        f"{folder}: holds 1 part(s) of shards this run does not plan (part-s00001-bbbbbbbb.parquet): the images or "
        "the shard_size changed since they were written. Use a new --out, or delete that folder to redo it"
    )
    for part in folder.iterdir():
        os.remove(part)  # no errors parts left: the predictions parts are looked at
    msg = error_of(refuse_stale_parts, tmp_path, "photos", "m", set())
    assert msg.startswith(f"{predictions_root(tmp_path) / 'photos' / 'm'}: holds 2 part(s) of shards")
    refuse_stale_parts(tmp_path, "photos", "other", set())  # nothing stored: nothing stale
