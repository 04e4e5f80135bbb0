"""The output layer against a real S3-compatible server (moto on 127.0.0.1): each finished part reaches the bucket
as it is written (errors part first), whole or not at all; a fresh working copy lists the bucket's parts to resume
(nothing downloaded); ``--out`` is checked before anything runs; leftovers of killed uploads are swept."""

from __future__ import annotations

import numpy as np
import pyarrow.parquet as pq
import pytest
from conftest import error_of

from mlray.errors import MlrayError
from mlray.output import Destination, check_output, check_output_file, destination
from mlray.store import (
    count_rows,
    errors_table,
    finish_shard,
    finished_shards,
    linked,
    open_remote,
    predictions_root,
    predictions_table,
    read_predictions,
    refuse_stale_parts,
    store_listing,
)
from mlray.store.remote import RemoteFolder

pytest_plugins = ("s3_server",)  # the s3 fixture: moto's S3 server on 127.0.0.1

DS, MODEL = "photos", "hf-hub:timm/x"  # a model name that needs quoting into one folder name
MODEL_DIR = "hf-hub%3Atimm%2Fx"


def _tables(ids: list[str], failed: list[str], model: str = MODEL):
    idx = np.tile(np.arange(5, dtype=np.int64), (len(ids), 1))
    prob = np.tile(np.linspace(0.5, 0.1, 5, dtype=np.float32), (len(ids), 1))
    return (
        predictions_table(DS, model, ids, idx, prob),
        errors_table(DS, model, failed, [f"/x/{i}.png" for i in failed], ["decode"] * len(failed),
                     ["bad"] * len(failed)),
    )  # fmt: skip


def test_finished_parts_reach_the_bucket_as_written_and_a_fresh_copy_resumes_by_listing(s3, tmp_path):
    bucket = s3.bucket()
    uri = f"s3://{bucket}/run"
    first = tmp_path / "first"
    order: list[str] = []
    remote = open_remote(uri)
    put = remote.put_file

    def recording(local, rel):
        put(local, rel)
        order.append(rel)
        assert rel in [k[len("run/") :] for k in s3.keys(bucket)]  # on the bucket before the next part is written

    remote.put_file = recording  # type: ignore[method-assign]
    with linked(first, remote):
        finish_shard(first, DS, MODEL, "s00000-aaaa", *_tables(["a", "b"], ["c"]))
        finish_shard(first, DS, MODEL, "s00001-bbbb", *_tables(["d"], []))
    assert order == [
        f"errors/{DS}/{MODEL_DIR}/part-s00000-aaaa.parquet",
        f"predictions/{DS}/{MODEL_DIR}/part-s00000-aaaa.parquet",
        f"errors/{DS}/{MODEL_DIR}/part-s00001-bbbb.parquet",
        f"predictions/{DS}/{MODEL_DIR}/part-s00001-bbbb.parquet",
    ]
    assert s3.keys(bucket) == sorted(f"run/{rel}" for rel in order)  # nothing else: no temporary object

    # a re-run works in a fresh, empty local copy: it learns what is finished from the part names on the bucket
    again = tmp_path / "again"
    with linked(again, open_remote(uri)):
        assert finished_shards(again, DS, MODEL) == {"s00000-aaaa", "s00001-bbbb"}
        assert store_listing(again, [DS], [MODEL, "other"]) == {
            (DS, MODEL): frozenset({"s00000-aaaa", "s00001-bbbb"}),
            (DS, "other"): frozenset(),
        }
        assert count_rows(predictions_root(again), DS, MODEL) == 3  # from the footers
        assert count_rows(again / "errors", DS, MODEL) == 1
        message = error_of(refuse_stale_parts, again, DS, MODEL, {"s00000-aaaa"})
        assert message.startswith(f"{uri}/errors/{DS}/{MODEL_DIR}: holds 1 part(s) of shards this run does not plan")
    assert not again.exists()  # nothing was downloaded
    # outside the link the same folder is just an empty local store
    assert finished_shards(again, DS, MODEL) == frozenset()
    open_remote(uri).get_file(f"predictions/{DS}/{MODEL_DIR}/part-s00000-aaaa.parquet", tmp_path / "p.parquet")
    got = read_predictions(tmp_path / "p.parquet")
    assert sorted(got.column("image_id").to_pylist()) == ["a", "b"]


def test_a_failed_upload_of_the_errors_part_leaves_the_shard_unfinished_on_the_bucket(s3, tmp_path):
    bucket = s3.bucket()
    remote = open_remote(f"s3://{bucket}/run")

    def broken(local, rel):
        raise MlrayError(f"{remote.show(rel)}: cannot upload (OSError: connection reset)")

    remote.put_file = broken  # type: ignore[method-assign]
    with linked(tmp_path / "o", remote), pytest.raises(MlrayError, match="cannot upload"):
        finish_shard(tmp_path / "o", DS, MODEL, "s00000-aaaa", *_tables(["a"], []))
    assert s3.keys(bucket) == []  # no predictions part: the shard is redone by the next run
    assert not (tmp_path / "o" / "predictions").exists()  # the predictions part was not even written locally


def test_uploads_through_a_renaming_filesystem_leave_no_temporary_name(tmp_path):
    """file:// (and HDFS) have real renames: a temporary name, then a move; a failed move leaves nothing."""
    target = tmp_path / "bucket"
    remote = open_remote(f"file://{target}")
    assert remote.renames
    src = tmp_path / "x.bin"
    src.write_bytes(b"12345")
    remote.put_file(src, "a/b/part-1.parquet")
    assert sorted(p.relative_to(target).as_posix() for p in target.rglob("*") if p.is_file()) == ["a/b/part-1.parquet"]

    class NoMove:
        """A filesystem whose rename fails (a lost connection at the worst moment)."""

        def __init__(self, fs):
            self.fs, self.type_name = fs, fs.type_name

        def __getattr__(self, name):
            return getattr(self.fs, name)

        def move(self, a, b):
            raise OSError("connection lost")

    broken = RemoteFolder(remote.uri, NoMove(remote.fs), remote.root)
    with pytest.raises(MlrayError, match=r"/a/b/part-2.parquet: cannot upload \(OSError: connection lost\)"):
        broken.put_file(src, "a/b/part-2.parquet")
    assert sorted(p.name for p in (target / "a" / "b").iterdir()) == ["part-1.parquet"]


def test_out_is_checked_before_anything_runs(s3, tmp_path):
    afile = tmp_path / "report.txt"
    afile.write_text("x")
    assert error_of(check_output, afile) == f"{afile}: is a file, not a folder; --out names the output folder"
    assert (
        error_of(check_output, afile / "sub") == f"{afile / 'sub'}: cannot create the output folder: {afile} is a file"
    )
    with pytest.raises(MlrayError) as info, destination(str(afile)):
        pass
    assert str(info.value) == f"{afile}: is a file, not a folder; --out names the output folder"
    check_output(tmp_path / "new" / "deeper")  # a folder to be created: fine, and nothing is created by the check
    assert not (tmp_path / "new").exists()
    check_output_file(tmp_path)  # an existing folder: the page goes inside it
    assert error_of(check_output_file, afile / "d.html") == f"{afile / 'd.html'}: cannot write there: {afile} is a file"

    bucket = s3.bucket()
    check_output(f"s3://{bucket}/run")
    assert s3.keys(bucket) == []  # the write probe is gone
    s3.put(bucket, "run/afile", b"x")
    assert error_of(check_output, f"s3://{bucket}/run/afile") == (
        f"s3://{bucket}/run/afile: is an object (a file), not a folder; --out names the output folder"
    )
    message = error_of(check_output, "s3://no-such-bucket-here/run")
    assert message.startswith("s3://no-such-bucket-here/run: cannot write there (") and "bucket" in message.lower()
    assert error_of(Destination, "nosuchscheme://bucket/x").startswith(
        "nosuchscheme://bucket/x: not a usable output URI ("
    )


def test_destination_sweeps_leftovers_uploads_the_rest_at_the_end_and_removes_its_scratch(s3, tmp_path, capsys):
    bucket = s3.bucket()
    uri = f"s3://{bucket}/run"
    s3.put(bucket, f"run/predictions/{DS}/m/.tmp-part-s00000-x.parquet-123-abcdef12", b"half")  # a killed upload
    s3.put(bucket, f"run/predictions/{DS}/m/part-s00009-zzzz.parquet", b"not read")  # an earlier run's part
    scratch = tmp_path / "scratch"
    with destination(uri, scratch) as dest:
        assert dest.is_remote and dest.local.is_relative_to(scratch)
        finish_shard(dest.local, DS, MODEL, "s00000-aaaa", *_tables(["a"], []))
        (dest.local / "reports").mkdir()
        pq.write_table(_tables(["a"], [])[0], dest.local / "reports" / "r.parquet")
        (dest.local / "reports" / ".hidden").write_text("never uploaded")
    out = capsys.readouterr().out
    assert "removed 1 temporary file(s) a killed run left in" in out
    assert f"uploaded 1 files to {uri} (+ 2 shard parts as they finished)" in out
    assert s3.keys(bucket) == sorted(
        [
            f"run/errors/{DS}/{MODEL_DIR}/part-s00000-aaaa.parquet",
            f"run/predictions/{DS}/m/part-s00009-zzzz.parquet",
            f"run/predictions/{DS}/{MODEL_DIR}/part-s00000-aaaa.parquet",
            "run/reports/r.parquet",
        ]
    )
    assert list(scratch.iterdir()) == []

    # the parts an earlier run stored are copied down on demand (what scoring reads), and not uploaded again
    with destination(uri, scratch) as dest:
        assert dest.pull_missing(f"predictions/{DS}") == 2
        assert (dest.local / "predictions" / DS / MODEL_DIR / "part-s00000-aaaa.parquet").is_file()
    assert "uploaded 0 files" in capsys.readouterr().out


def test_a_local_out_sweeps_temporaries_of_dead_writers_only(tmp_path):
    folder = tmp_path / "out" / "predictions" / DS / "m"
    folder.mkdir(parents=True)
    dead = folder / ".tmp-part-s00000-x.parquet-999999999-abcdef12"  # no such process
    mine = folder / f".tmp-part-s00001-x.parquet-{__import__('os').getpid()}-abcdef12"  # a live writer's
    dead.write_bytes(b"x")
    mine.write_bytes(b"x")
    with destination(tmp_path / "out") as dest:
        assert not dest.is_remote and dest.local == tmp_path / "out"
    assert not dead.exists() and mine.exists()


@pytest.mark.ray
def test_stats_writes_its_reports_to_the_bucket(ray_cluster, s3, tmp_path, capsys):
    from mlray import cli

    bucket = s3.bucket()
    assert cli.main(["stats", "--out", f"s3://{bucket}/labels", "--scratch", str(tmp_path / "scratch")]) == 0
    out = capsys.readouterr().out
    assert f"reports in s3://{bucket}/labels (" in out and f"uploaded 5 files to s3://{bucket}/labels" in out
    assert s3.keys(bucket) == [
        f"labels/{name}.parquet"
        for name in ("class_stats", "cooccurrence", "dataset_comparison", "dataset_stats", "label_count_hist")
    ]
    assert list((tmp_path / "scratch").iterdir()) == []


def test_a_store_of_many_partitions_is_listed_once_per_dataset(s3, tmp_path):
    """Resuming a run of hundreds of models asks the bucket once per (store, dataset) folder, not once per
    partition; the run's own uploads keep that listing current."""
    bucket = s3.bucket()
    for m in range(5):
        s3.put(bucket, f"run/predictions/{DS}/m{m}/part-s00000-aaaa.parquet", b"x")
    remote = open_remote(f"s3://{bucket}/run")
    calls: list[str] = []
    entries = remote.entries

    def counting(rel="", recursive=False):
        calls.append(rel)
        return entries(rel, recursive)

    remote.entries = counting  # type: ignore[method-assign]
    local = tmp_path / "o"
    with linked(local, remote):
        listing = store_listing(local, [DS], [f"m{m}" for m in range(7)])
        assert [len(listing[(DS, f"m{m}")]) for m in range(7)] == [1, 1, 1, 1, 1, 0, 0]
        finish_shard(local, DS, "m6", "s00001-bbbb", *_tables(["a"], [], "m6"))
        assert finished_shards(local, DS, "m6") == {"s00001-bbbb"}
    assert calls == [f"predictions/{DS}"]  # the errors store was never asked: store_listing reads predictions
