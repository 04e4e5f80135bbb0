"""mlray.images.writer (``mlray shard``): Parquet shards that read back with layout parquet-shards."""

from __future__ import annotations

import os
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from image_helpers import labels_by_id, photo_jpeg, put, read_all, tiny

from mlray.errors import MlrayError
from mlray.images import ERRORS_FILE, SHARD_ERRORS_SCHEMA, plan_shards, write_parquet_shards

# ---------------------------------------------------------------- Parquet shard writer


def test_write_parquet_shards_round_trip(tmp_path):
    src = tmp_path / "src"
    rows = ["image_id,path,label,labels"]
    blobs = {}
    for i in range(5):
        blobs[f"im{i}"] = photo_jpeg(seed=i) if i % 2 else tiny(i)
        put(src / f"im{i}.jpg", blobs[f"im{i}"])
        rows.append(f"im{i},im{i}.jpg,{i},{i};{i + 10}")
    put(src / "empty.jpg", b"")
    rows.append("empty,empty.jpg,,")
    put(src / "gone.jpg", tiny(9))
    rows.append("gone,gone.jpg,9,9")
    put(src / "manifest.csv", "\n".join(rows) + "\n")
    plan = plan_shards(src / "manifest.csv", "manifest")
    (src / "gone.jpg").unlink()

    out = tmp_path / "out"
    written = write_parquet_shards(plan, out, shard_size=2)
    assert isinstance(written, list)
    # 7 rows in id order (empty, gone, im0..im4): the 2 unreadable ones stay in, with a null image
    parts = [f"part-{i:05d}.parquet" for i in range(4)]
    assert [Path(p).name for p in written] == parts
    assert (written.n_images, written.n_errors) == (5, 2)
    assert sorted(os.listdir(out)) == [ERRORS_FILE, *parts]
    assert pq.read_table(out / "part-00000.parquet").column("image").to_pylist() == [None, None]
    table = pq.read_table(out / "part-00000.parquet")
    assert table.schema.field("image").type == pa.binary()
    assert table.schema.field("label").type == pa.int16()
    assert table.schema.field("labels").type == pa.list_(pa.int16())
    assert pq.read_schema(written.errors_path) == SHARD_ERRORS_SCHEMA  # image_id, path, stage, error
    errors = pq.read_table(written.errors_path).to_pylist()
    assert errors == [
        {"image_id": "empty", "path": str(src / "empty.jpg"), "stage": "read", "error": "empty file"},
        {"image_id": "gone", "path": str(src / "gone.jpg"), "stage": "read", "error": f"no such file: {src}/gone.jpg"},
    ]

    back = plan_shards(out, "parquet-shards", shard_size=1000)
    assert back.image_ids == ["empty", "gone"] + [f"im{i}" for i in range(5)]  # every source image
    assert [len(s) for s in back.shards] == [2, 2, 2, 1]
    assert back.n_skipped_non_image == 1  # errors.parquet
    got = read_all(back)
    assert {k: v for k, v in got.items() if k.startswith("im")} == {
        k: (v, None) for k, v in blobs.items()
    }  # original bytes
    assert [(got[k][0], got[k][1].stage) for k in ("empty", "gone")] == [(None, "read"), (None, "read")]
    assert labels_by_id(back) == {"empty": -1, "gone": 9, **{f"im{i}": i for i in range(5)}}
    assert labels_by_id(back, "valid") == {"empty": [], "gone": [9], **{f"im{i}": [i, i + 10] for i in range(5)}}

    with pytest.raises(MlrayError, match=r"already holds 5 shard file\(s\).*pass overwrite"):
        write_parquet_shards(plan, out, shard_size=2)
    with pytest.raises(MlrayError, match=r"out: is where the images are read from"):
        write_parquet_shards(back, out, overwrite=True)  # would delete its own input
    again = write_parquet_shards(plan, out, shard_size=10, overwrite=True)
    assert [Path(p).name for p in again] == ["part-00000.parquet"] and again.n_errors == 2
    assert sorted(os.listdir(out)) == [ERRORS_FILE, "part-00000.parquet"]  # no stale parts, no temp files


def test_write_parquet_shards_unlabelled_layout(tmp_path):
    for i in range(3):
        put(tmp_path / "in" / f"ILSVRC2012_val_{i + 1:08d}.JPEG", tiny(i, "JPEG"))
    plan = plan_shards(tmp_path / "in", "imagenet-val-flat")
    written = write_parquet_shards(plan, f"file://{tmp_path / 'out'}")
    assert written == [f"file://{tmp_path / 'out' / 'part-00000.parquet'}"]
    table = pq.read_table(tmp_path / "out" / "part-00000.parquet")
    assert table.column("label").to_pylist() == [-1, -1, -1]
    assert table.column("labels").to_pylist() == [None, None, None]
    assert pq.read_table(tmp_path / "out" / ERRORS_FILE).num_rows == 0
    back = plan_shards(tmp_path / "out", "parquet-shards")
    assert back.labels.original == [-1, -1, -1] and back.labels.valid == [None, None, None]
