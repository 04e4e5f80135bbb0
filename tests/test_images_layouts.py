"""mlray.images layouts and shard planning: the layout registry, tiny generated trees for every layout, labels
carried by manifests / Parquet shards / tars (parsed by mlray.labels.parse, repeats counted), and determinism."""

from __future__ import annotations

import importlib
import pickle
import pkgutil
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from image_helpers import GOLDFISH, TENCH, TOILET_TISSUE, labels_by_id, make_tar, put, read_all, tiny

import mlray.images.layouts
from mlray.errors import MlrayError
from mlray.images import LAYOUTS, REGISTRY, ImageError, Layout, Shard, plan_shards, read_shard, shard_items

# ---------------------------------------------------------------- the registry


def test_registry_names_one_module_per_layout():
    assert LAYOUTS == ("imagenet-val-flat", "wnid-folders", "imagenetv2", "manifest", "parquet-shards", "webdataset")
    modules = {m.name for m in pkgutil.iter_modules(mlray.images.layouts.__path__) if not m.name.startswith("_")}
    assert modules == {"folders", "manifest", "parquet", "webdataset"}
    owner = {}
    for name in LAYOUTS:
        layout = REGISTRY[name]
        assert isinstance(layout, Layout) and layout.name == name  # concrete: plan, read and sources implemented
        package, module = type(layout).__module__.rsplit(".", 1)
        assert package == "mlray.images.layouts"
        owner[name] = module
    assert owner == {
        "imagenet-val-flat": "folders",
        "wnid-folders": "folders",
        "imagenetv2": "folders",
        "manifest": "manifest",
        "parquet-shards": "parquet",
        "webdataset": "webdataset",
    }
    for module in modules:  # each layout module defines exactly the layouts the registry credits it with
        namespace = vars(importlib.import_module(f"mlray.images.layouts.{module}"))
        defined = {
            obj.name
            for obj in namespace.values()
            if isinstance(obj, type)
            and issubclass(obj, Layout)
            and obj.__module__.endswith(f".{module}")
            and "name" in vars(obj)
        }
        assert defined == {name for name, m in owner.items() if m == module}, module


def make_dataset(tmp_path: Path, layout: str) -> Path:
    """A two-image dataset (ids a, b) in ``layout``; the path to give as ``images``."""
    if layout == "imagenet-val-flat":
        put(tmp_path / "a.jpg", tiny(1))
        put(tmp_path / "b.png", tiny(2))
        return tmp_path
    if layout == "wnid-folders":
        put(tmp_path / TENCH / "a.jpg", tiny(1))
        put(tmp_path / GOLDFISH / "b.png", tiny(2))
        return tmp_path
    if layout == "imagenetv2":
        put(tmp_path / "0" / "a.jpg", tiny(1))
        put(tmp_path / "1" / "b.png", tiny(2))
        return tmp_path
    if layout == "manifest":
        put(tmp_path / "x" / "a.jpg", tiny(1))
        put(tmp_path / "x" / "b.png", tiny(2))
        return put(tmp_path / "m.csv", "path,label\nx/a.jpg,0\nx/b.png,1\n")
    if layout == "parquet-shards":
        table = pa.table({"image_id": ["a", "b"], "image": [tiny(1), tiny(2)], "label": [0, 1]})
        pq.write_table(table, tmp_path / "p.parquet")
        return tmp_path
    assert layout == "webdataset"
    make_tar(tmp_path / "w.tar", [("a.jpg", tiny(1)), ("a.cls", b"0"), ("b.png", tiny(2)), ("b.cls", b"1")])
    return tmp_path


@pytest.mark.parametrize("layout", LAYOUTS)
def test_every_layout_plans_and_reads(tmp_path, layout):
    plan = plan_shards(make_dataset(tmp_path, layout), layout, shard_size=1 if layout != "webdataset" else 5)
    assert plan.layout == layout and plan.image_ids == ["a", "b"]
    assert {s.layout for s in plan.shards} == {layout}
    assert read_all(plan) == {"a": (tiny(1), None), "b": (tiny(2), None)}
    assert [i for s in plan.shards for i, _ in shard_items(s)] == [i for s in plan.shards for i in s.image_ids]
    if layout != "imagenet-val-flat":
        assert labels_by_id(plan) == {"a": 0, "b": 1}
        assert plan.labels.format == f"layout:{layout}"


def test_unknown_layout_of_a_shard_is_an_error():
    with pytest.raises(MlrayError, match=r"unknown image layout 'zip'; known layouts: imagenet-val-flat, "):
        list(read_shard(Shard("s00000", "zip", ("a",), paths=("a.jpg",))))


# ---------------------------------------------------------------- layouts


def test_imagenet_val_flat(tmp_path):
    names = [f"ILSVRC2012_val_{i:08d}.JPEG" for i in (3, 1, 2)]
    blobs = {n: tiny(i, "JPEG") for i, n in enumerate(names)}
    for n, b in blobs.items():
        put(tmp_path / n, b)
    put(tmp_path / "README.md", "notes")
    put(tmp_path / "manifest.csv", "a,b\n")
    put(tmp_path / ".DS_Store", b"\0")
    plan = plan_shards(tmp_path, "imagenet-val-flat")
    assert plan.image_ids == [f"ILSVRC2012_val_{i:08d}" for i in (1, 2, 3)]
    assert plan.labels is None
    assert plan.n_skipped_non_image == 3
    assert [s.shard_id for s in plan.shards] == ["s00000"]
    expected_items = [(f"ILSVRC2012_val_{i:08d}", str(tmp_path / f"ILSVRC2012_val_{i:08d}.JPEG")) for i in (1, 2, 3)]
    assert shard_items(plan.shards[0]) == expected_items
    got = read_all(plan)
    for n, b in blobs.items():
        assert got[n[: -len(".JPEG")]] == (b, None)


def test_flat_rejects_images_in_subfolders(tmp_path):
    put(tmp_path / "a.jpg", tiny(1))
    put(tmp_path / "sub" / "b.jpg", tiny(2))
    with pytest.raises(MlrayError, match=r"sub/b\.jpg: layout imagenet-val-flat expects every image directly"):
        plan_shards(tmp_path, "imagenet-val-flat")


def test_wnid_folders(tmp_path):
    put(tmp_path / TENCH / "n01440764_1.JPEG", tiny(1))
    put(tmp_path / TENCH / "n01440764_2.JPEG", tiny(2))
    put(tmp_path / GOLDFISH / "n01443537_7.jpeg", tiny(3))
    put(tmp_path / TOILET_TISSUE / "deeper" / "x_9.png", tiny(4))
    put(tmp_path / GOLDFISH / "labels.txt", "x")
    put(tmp_path / "LOC_synset_mapping.txt", "x")
    plan = plan_shards(tmp_path, "wnid-folders")
    assert plan.image_ids == ["n01440764_1", "n01440764_2", "n01443537_7", "x_9"]
    assert plan.labels.format == "layout:wnid-folders"
    assert labels_by_id(plan) == {"n01440764_1": 0, "n01440764_2": 0, "n01443537_7": 1, "x_9": 999}
    assert plan.labels.valid is None
    assert plan.n_skipped_non_image == 2


def test_wnid_folders_unknown_wnid(tmp_path):
    put(tmp_path / TENCH / "a.jpg", tiny(1))
    put(tmp_path / "n99999999" / "b.jpg", tiny(2))
    put(tmp_path / "docs" / "README.md", "folders holding no image are fine")
    with pytest.raises(MlrayError, match=r"n99999999: folder 'n99999999' is not an ImageNet-1k wnid"):
        plan_shards(tmp_path, "wnid-folders")


def test_class_layouts_reject_top_level_images(tmp_path):
    put(tmp_path / "0" / "a.jpg", tiny(1))
    put(tmp_path / "stray.jpg", tiny(2))
    with pytest.raises(MlrayError, match=r"stray\.jpg: layout imagenetv2 expects images inside class folders"):
        plan_shards(tmp_path, "imagenetv2")


def test_imagenetv2_integer_folders_not_string_order(tmp_path):
    ids = {"0": "aa" * 20, "2": "bb" * 20, "10": "cc" * 20, "100": "dd" * 20}
    for folder, image_id in ids.items():
        put(tmp_path / folder / f"{image_id}.jpeg", tiny(int(folder)))
    put(tmp_path / "README.txt", "x")
    put(tmp_path / "10" / "notes.txt", "x")
    plan = plan_shards(tmp_path, "imagenetv2")
    assert plan.image_ids == sorted(ids.values())
    assert labels_by_id(plan) == {image_id: int(folder) for folder, image_id in ids.items()}  # 0, 2, 10, 100
    assert plan.labels.format == "layout:imagenetv2"
    assert plan.n_skipped_non_image == 2
    got = read_all(plan)
    assert got["cc" * 20] == (tiny(10), None)


@pytest.mark.parametrize("folder", ["abc", "1000", "-1", "1.5"])
def test_imagenetv2_bad_folder(tmp_path, folder):
    put(tmp_path / "3" / "a.jpeg", tiny(1))
    put(tmp_path / folder / "b.jpeg", tiny(2))
    with pytest.raises(MlrayError, match=rf"folder '{folder}' is not a class index 0..999"):
        plan_shards(tmp_path, "imagenetv2")


def test_duplicate_image_ids_name_both_paths(tmp_path):
    put(tmp_path / TENCH / "same.jpg", tiny(1))
    put(tmp_path / GOLDFISH / "same.png", tiny(2))
    with pytest.raises(MlrayError) as info:
        plan_shards(tmp_path, "wnid-folders")
    message = str(info.value)
    assert "duplicate image id 'same'" in message and "\n" not in message
    assert str(tmp_path / TENCH / "same.jpg") in message and str(tmp_path / GOLDFISH / "same.png") in message
    flat = tmp_path / "flat"
    put(flat / "x.jpg", tiny(1))
    put(flat / "x.JPEG", tiny(2))
    with pytest.raises(MlrayError, match=r"duplicate image id 'x'"):
        plan_shards(flat, "imagenet-val-flat")


def test_missing_folder_and_unknown_layout(tmp_path):
    with pytest.raises(MlrayError, match=r"nope: no such folder"):
        plan_shards(tmp_path / "nope", "imagenet-val-flat")
    with pytest.raises(MlrayError, match=r"unknown image layout 'flat'"):
        plan_shards(tmp_path, "flat")
    with pytest.raises(MlrayError, match=r"shard_size must be a positive integer"):
        plan_shards(tmp_path, "imagenet-val-flat", shard_size=0)


def test_manifest_csv_relative_paths_and_labels(tmp_path):
    root = tmp_path / "ds"
    put(root / "imgs" / "b.jpg", tiny(2))
    put(root / "imgs" / "a.png", tiny(1))
    put(tmp_path / "elsewhere" / "c.jpeg", tiny(3))
    put(root / "imgs" / "d.webp", tiny(4))
    manifest = put(
        root / "manifest.csv",
        "image_id,path,label,labels\n"
        "b,imgs/b.jpg,5,5;7\n"
        "a,imgs/a.png,,\n"
        f"c,../elsewhere/c.jpeg,-1,999\n"
        f"d,{root / 'imgs' / 'd.webp'},3,3;3\n",
    )
    plan = plan_shards(manifest, "manifest", shard_size=3)
    assert plan.image_ids == ["a", "b", "c", "d"]
    assert [len(s) for s in plan.shards] == [3, 1]
    assert plan.labels.format == "layout:manifest"
    assert labels_by_id(plan) == {"a": -1, "b": 5, "c": -1, "d": 3}
    assert labels_by_id(plan, "valid") == {"a": [], "b": [5, 7], "c": [999], "d": [3]}
    assert plan.labels.merged_duplicates == [f"{manifest}: row 5 (d)"]  # 3;3 kept once, counted
    assert plan.shards[0].paths[2] == str(tmp_path / "elsewhere" / "c.jpeg")
    got = read_all(plan)
    assert {k: v[0] for k, v in got.items()} == {"a": tiny(1), "b": tiny(2), "c": tiny(3), "d": tiny(4)}


def test_manifest_parquet_list_labels_and_derived_ids(tmp_path):
    put(tmp_path / "x" / "one.jpg", tiny(1))
    put(tmp_path / "x" / "two.jpg", tiny(2))
    pq.write_table(
        pa.table({"path": ["x/one.jpg", "x/two.jpg"], "labels": pa.array([[1, 2], None], pa.list_(pa.int64()))}),
        tmp_path / "m.parquet",
    )
    plan = plan_shards(tmp_path / "m.parquet", "manifest")
    assert plan.image_ids == ["one", "two"]
    assert plan.labels.original is None
    assert labels_by_id(plan, "valid") == {"one": [1, 2], "two": None}


def test_manifest_errors(tmp_path):
    put(tmp_path / "no_path.csv", "image_id,file\na,a.jpg\n")
    with pytest.raises(MlrayError, match=r"no_path\.csv: missing column path"):
        plan_shards(tmp_path / "no_path.csv", "manifest")
    put(tmp_path / "dup.csv", "image_id,path\na,a.jpg\na,sub/a.png\n")
    with pytest.raises(MlrayError, match=r"dup\.csv: duplicate image id 'a': row 2 \(a\.jpg\) and row 3 \(sub/a\.png"):
        plan_shards(tmp_path / "dup.csv", "manifest")
    put(tmp_path / "bad_label.csv", "image_id,path,label\na,a.jpg,1000\n")
    with pytest.raises(MlrayError, match=r"bad_label\.csv: row 2 \(a\): class index 1000 is outside 0..999"):
        plan_shards(tmp_path / "bad_label.csv", "manifest")
    put(tmp_path / "empty_path.csv", "image_id,path\na,\n")
    with pytest.raises(MlrayError, match=r"empty_path\.csv: row 2: empty path"):
        plan_shards(tmp_path / "empty_path.csv", "manifest")
    with pytest.raises(MlrayError, match=r"is a folder; layout manifest expects the manifest file"):
        plan_shards(tmp_path, "manifest")
    with pytest.raises(MlrayError, match=r"missing\.csv: no such file"):
        plan_shards(tmp_path / "missing.csv", "manifest")


def test_parquet_shards_row_ranges(tmp_path):
    blobs = {f"img{i}": tiny(i) for i in range(5)}
    ids = list(blobs)
    pq.write_table(
        pa.table(
            {
                "image_id": ids[:3],
                "image": [blobs[i] for i in ids[:3]],
                "label": pa.array([4, -1, 6], pa.int16()),
                "labels": pa.array([[4], None, []], pa.list_(pa.int16())),
            }
        ),
        tmp_path / "a.parquet",
        row_group_size=1,
    )
    # a Hugging Face style struct<bytes, path> image column, no label columns
    struct_images = pa.array([{"bytes": blobs[i], "path": f"{i}.png"} for i in ids[3:]])
    pq.write_table(pa.table({"image_id": ids[3:], "image": struct_images}), tmp_path / "b.parquet")
    put(tmp_path / "README.md", "x")
    put(tmp_path / "_SUCCESS", "")
    plan = plan_shards(tmp_path, "parquet-shards", shard_size=2)
    assert plan.image_ids == ids
    assert [(s.shard_id, Path(s.file).name, s.rows) for s in plan.shards] == [
        ("s00000", "a.parquet", (0, 2)),
        ("s00001", "a.parquet", (2, 3)),
        ("s00002", "b.parquet", (0, 2)),
    ]
    assert plan.n_skipped_non_image == 2
    assert labels_by_id(plan) == {"img0": 4, "img1": -1, "img2": 6, "img3": -1, "img4": -1}
    assert labels_by_id(plan, "valid") == {"img0": [4], "img1": None, "img2": [], "img3": None, "img4": None}
    assert {k: v for k, v in read_all(plan).items()} == {i: (b, None) for i, b in blobs.items()}
    one = plan_shards(tmp_path / "b.parquet", "parquet-shards")
    assert one.image_ids == ["img3", "img4"]


def test_parquet_shards_missing_column(tmp_path):
    pq.write_table(pa.table({"image_id": ["a"], "jpeg": [b"x"]}), tmp_path / "a.parquet")
    with pytest.raises(MlrayError, match=r"a\.parquet: missing column\(s\) image"):
        plan_shards(tmp_path, "parquet-shards")


def test_webdataset(tmp_path):
    make_tar(
        tmp_path / "shard-000000.tar",
        [
            ("train/sample0002.jpg", tiny(2, "JPEG")),
            ("train/sample0002.cls", b"281\n"),
            ("train/sample0002.json", b"{}"),
            ("train/sample0001.png", tiny(1)),
            ("__meta__.json", b"{}"),  # a sample without an image: skipped and counted
        ],
    )
    make_tar(
        tmp_path / "shard-000001.tar.gz",
        [("sample0003.cls", b"7"), ("sample0003.webp", tiny(3)), ("._sample0004.jpg", b"apple double")],
        mode="w:gz",
    )
    put(tmp_path / "README.md", "x")
    plan = plan_shards(tmp_path, "webdataset")
    assert plan.image_ids == ["sample0001", "sample0002", "sample0003"]
    assert [(s.shard_id, Path(s.file).name, s.image_ids) for s in plan.shards] == [
        ("s00000", "shard-000000.tar", ("sample0002", "sample0001")),
        ("s00001", "shard-000001.tar.gz", ("sample0003",)),
    ]
    assert labels_by_id(plan) == {"sample0001": -1, "sample0002": 281, "sample0003": 7}
    assert plan.n_skipped_non_image == 3  # __meta__ sample, ._sample0004.jpg, README.md
    assert read_all(plan) == {
        "sample0001": (tiny(1), None),
        "sample0002": (tiny(2, "JPEG"), None),
        "sample0003": (tiny(3), None),
    }
    # the tar disappears after planning: every planned image is a read error, nothing raises
    (tmp_path / "shard-000000.tar").unlink()
    items = list(read_shard(plan.shards[0]))
    assert [i for i, _, _ in items] == ["sample0002", "sample0001"]
    assert all(d is None and e.stage == "read" and e.reason.startswith("no such file") for _, d, e in items)


def test_webdataset_errors(tmp_path):
    make_tar(tmp_path / "a" / "x.tar", [("k.jpg", tiny(1)), ("k.png", tiny(2))])
    with pytest.raises(MlrayError, match=r"x\.tar: sample 'k' has two image members: k\.jpg and k\.png"):
        plan_shards(tmp_path / "a", "webdataset")
    make_tar(tmp_path / "b" / "1.tar", [("d/k.jpg", tiny(1))])
    make_tar(tmp_path / "b" / "2.tar", [("e/k.jpg", tiny(2))])
    with pytest.raises(MlrayError, match=r"duplicate image id 'k': .*1\.tar:d/k\.jpg and .*2\.tar:e/k\.jpg"):
        plan_shards(tmp_path / "b", "webdataset")
    make_tar(tmp_path / "c" / "x.tar", [("k.jpg", tiny(1)), ("k.cls", b"dog")])
    with pytest.raises(MlrayError, match=r"x\.tar:k\.cls: label 'dog' is not a class index"):
        plan_shards(tmp_path / "c", "webdataset")
    put(tmp_path / "d" / "bad.tar", b"not a tar at all" * 100)
    with pytest.raises(MlrayError, match=r"bad\.tar: not a readable tar file"):
        plan_shards(tmp_path / "d", "webdataset")


def test_file_uri_goes_through_from_uri(tmp_path):
    put(tmp_path / "0" / "a.jpeg", tiny(1))
    plan = plan_shards(f"file://{tmp_path}", "imagenetv2")
    assert plan.shards[0].filesystem == f"file://{tmp_path}"
    assert shard_items(plan.shards[0]) == [("a", f"file://{tmp_path}/0/a.jpeg")]
    assert read_all(plan) == {"a": (tiny(1), None)}


# ---------------------------------------------------------------- shard planning


def test_shard_sizes_and_determinism(tmp_path):
    one = tiny(0)
    for i in range(2500):
        (tmp_path / f"ILSVRC2012_val_{2500 - i:08d}.JPEG").write_bytes(one)
    plan = plan_shards(tmp_path, "imagenet-val-flat", shard_size=1000)
    assert [len(s) for s in plan.shards] == [1000, 1000, 500]
    assert [s.shard_id for s in plan.shards] == ["s00000", "s00001", "s00002"]
    assert plan.shards[0].image_ids[0] == "ILSVRC2012_val_00000001"
    assert plan.shards[1].image_ids[0] == "ILSVRC2012_val_00001001"
    assert plan.shards[2].image_ids[-1] == "ILSVRC2012_val_00002500"
    assert [i for s in plan.shards for i in s.image_ids] == plan.image_ids == sorted(plan.image_ids)
    again = plan_shards(tmp_path, "imagenet-val-flat", shard_size=1000)
    assert again.shards == plan.shards
    restored = pickle.loads(pickle.dumps(plan))
    assert restored.shards == plan.shards and restored.image_ids == plan.image_ids


def test_image_error_pickles():
    err = pickle.loads(pickle.dumps(ImageError("read", "no such file:\n x")))
    assert (err.stage, err.reason, str(err)) == ("read", "no such file: x", "read: no such file: x")


# ---------------------------------------------------------------- labels in manifests, Parquet shards and tars


def test_label_set_naming_a_class_twice_is_kept_once_and_counted(tmp_path):
    from mlray.labels import build_dataset_labels

    put(tmp_path / "a.jpg", tiny(1))
    put(tmp_path / "b.jpg", tiny(2))
    manifest = put(tmp_path / "m.csv", "path,labels\na.jpg,5;7;5\nb.jpg,8\n")
    plan = plan_shards(manifest, "manifest")
    assert labels_by_id(plan, "valid") == {"a": [5, 7], "b": [8]}
    assert plan.labels.merged_duplicates == [f"{manifest}: row 2 (a)"]
    joined = build_dataset_labels("m", None, plan.labels, "skip", image_ids=plan.image_ids)
    assert joined.merged_duplicates == 1

    shards = tmp_path / "shards"
    shards.mkdir()
    pq.write_table(
        pa.table(
            {
                "image_id": ["p", "q", "r"],
                "image": [tiny(1), tiny(2), tiny(3)],
                "labels": pa.array([[1], [2, 2, 3], [4, 4]], pa.list_(pa.int16())),
            }
        ),
        shards / "s.parquet",
    )
    plan = plan_shards(shards, "parquet-shards")
    assert labels_by_id(plan, "valid") == {"p": [1], "q": [2, 3], "r": [4]}
    assert plan.labels.merged_duplicates == [f"{shards / 's.parquet'}: row 1 (q)", f"{shards / 's.parquet'}: row 2 (r)"]
    assert build_dataset_labels("s", None, plan.labels, "skip", image_ids=plan.image_ids).merged_duplicates == 2


def test_float_text_is_not_a_class_index(tmp_path):
    put(tmp_path / "a.jpg", tiny(1))
    put(tmp_path / "label.csv", "image_id,path,label\na,a.jpg,3.0\n")
    with pytest.raises(MlrayError, match=r"label\.csv: row 2 \(a\): label '3\.0' is not a class index$"):
        plan_shards(tmp_path / "label.csv", "manifest")
    put(tmp_path / "labels.csv", "image_id,path,labels\na,a.jpg,1;3.0\n")
    with pytest.raises(MlrayError, match=r"labels\.csv: row 2 \(a\): label '3\.0' is not a class index$"):
        plan_shards(tmp_path / "labels.csv", "manifest")
    shards = tmp_path / "shards"
    shards.mkdir()
    pq.write_table(
        pa.table({"image_id": ["p", "q"], "image": [tiny(1), tiny(2)], "label": ["4", "3.0"]}), shards / "s.parquet"
    )
    with pytest.raises(MlrayError, match=r"s\.parquet: row 1 \(q\): label '3\.0' is not a class index$"):
        plan_shards(shards, "parquet-shards")
    make_tar(tmp_path / "wds" / "x.tar", [("k.jpg", tiny(1)), ("k.cls", b"3.0")])
    with pytest.raises(MlrayError, match=r"x\.tar:k\.cls: label '3\.0' is not a class index$"):
        plan_shards(tmp_path / "wds", "webdataset")
