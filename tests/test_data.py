"""Image layouts, shard planning, reading, decoding and the Parquet shard writer: tiny generated trees, a corpus
of bad images, every mode conversion, and the real ImageNet val photos in ../shared/data."""

from __future__ import annotations

import io
import os
import pickle
import struct
import tarfile
import zlib
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image, ImageFile

from mlray.data import (
    DEFAULT_MAX_PIXELS,
    ERRORS_FILE,
    ImageError,
    ImagePlan,
    Shard,
    decode_image,
    plan_shards,
    read_shard,
    write_parquet_shards,
)
from mlray.errors import MlrayError

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"

TENCH, GOLDFISH, TOILET_TISSUE = "n01440764", "n01443537", "n15075141"  # classes 0, 1, 999


# ---------------------------------------------------------------- helpers


def encode(img: Image.Image, fmt: str = "PNG", **kw) -> bytes:
    buf = io.BytesIO()
    img.save(buf, fmt, **kw)
    return buf.getvalue()


def tiny(seed: int = 0, fmt: str = "PNG") -> bytes:
    """A distinct 1x1 image per seed."""
    return encode(Image.new("RGB", (1, 1), (seed % 256, (seed // 256) % 256, 7)), fmt)


def photo_jpeg(size=(64, 48), seed=0) -> bytes:
    rng = np.random.default_rng(seed)
    return encode(Image.fromarray((rng.random((size[1], size[0], 3)) * 255).astype("uint8")), "JPEG", quality=90)


def put(path: Path, data: bytes | str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(data, str):
        path.write_text(data)
    else:
        path.write_bytes(data)
    return path


def read_all(plan: ImagePlan) -> dict[str, tuple[bytes | None, ImageError | None]]:
    out = {}
    for shard in plan.shards:
        for image_id, data, err in read_shard(shard):
            assert image_id not in out, f"{image_id} read twice"
            out[image_id] = (data, err)
    return out


def labels_by_id(plan: ImagePlan, column: str = "original") -> dict:
    assert plan.labels is not None
    return dict(zip(plan.labels.image_ids, getattr(plan.labels, column)))


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
    assert plan.shards[0].items == expected_items
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


def add_member(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    tar.addfile(info, io.BytesIO(data))


def make_tar(path: Path, members: list[tuple[str, bytes]], mode: str = "w") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(path, mode) as tar:
        for name, data in members:
            add_member(tar, name, data)
    return path


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
    assert plan.shards[0].items == [("a", f"file://{tmp_path}/0/a.jpeg")]
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


# ---------------------------------------------------------------- bad images


def patched_png_header(width: int, height: int) -> bytes:
    """A real PNG whose IHDR claims width x height (CRC fixed): a decompression bomb by its header."""
    data = bytearray(encode(Image.new("1", (1, 1))))
    assert data[12:16] == b"IHDR"
    data[16:24] = struct.pack(">II", width, height)
    data[29:33] = struct.pack(">I", zlib.crc32(bytes(data[12:29])) & 0xFFFFFFFF)
    return bytes(data)


def test_bad_image_corpus(tmp_path):
    good = photo_jpeg()
    sos = good.find(b"\xff\xda")
    corpus = {
        "good": good,
        "truncated": good[: len(good) // 2],
        "corrupt": good[: sos + 14] + b"\xff\xd8" * 1000,  # header intact, garbage entropy data
        "zero": b"",
        "text": b"This is not an image, it is a text file renamed .jpg\n",
        "bomb": patched_png_header(20000, 20000),
        "gone": good,
    }
    for name, data in corpus.items():
        put(tmp_path / f"{name}.jpg", data)
    plan = plan_shards(tmp_path, "imagenet-val-flat")
    (tmp_path / "gone.jpg").unlink()  # unreadable after planning

    outcome = {}
    for image_id, data, err in read_shard(plan.shards[0]):
        if err is None:
            try:
                decode_image(data)
            except ImageError as exc:
                err = exc
        outcome[image_id] = None if err is None else (err.stage, err.reason)

    assert outcome["good"] is None
    assert outcome["truncated"][0] == "decode" and outcome["truncated"][1].startswith("truncated image (")
    assert outcome["corrupt"][0] == "decode" and outcome["corrupt"][1].startswith("corrupt image (")
    assert outcome["zero"] == ("read", "empty file")
    assert outcome["text"][0] == "decode" and outcome["text"][1].startswith("not an image (")
    assert outcome["bomb"] == ("decode", "decompression bomb: 20000 x 20000 = 400000000 pixels > 178956970")
    assert outcome["gone"] == ("read", f"no such file: {tmp_path / 'gone.jpg'}")
    assert all("\n" not in r[1] for r in outcome.values() if r)


def test_decode_errors_direct():
    with pytest.raises(ImageError) as info:
        decode_image(b"")
    assert (info.value.stage, info.value.reason) == ("read", "empty file")
    with pytest.raises(ImageError, match=r"decode: not an image \(unknown format, starts with b'hello wo'\)"):
        decode_image(b"hello world")
    with pytest.raises(ImageError, match=r"decode: not an image \(PNG header"):
        decode_image(b"\x89PNG\r\n\x1a\n" + b"\0" * 40)
    small = encode(Image.new("RGB", (10, 10)))
    with pytest.raises(ImageError, match=r"^decode: decompression bomb: 10 x 10 = 100 pixels > 99$"):
        decode_image(small, max_pixels=99)
    assert decode_image(small, max_pixels=100).size == (10, 10)
    assert decode_image(small, max_pixels=None).size == (10, 10)  # None: no bomb check


def test_decode_independent_of_pillow_globals(monkeypatch):
    before = (ImageFile.LOAD_TRUNCATED_IMAGES, Image.MAX_IMAGE_PIXELS)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 10)  # Pillow's own check would refuse a 100x100 image
    assert decode_image(encode(Image.new("RGB", (100, 100)))).size == (100, 100)
    with pytest.raises(ImageError, match="decompression bomb: 100 x 100 = 10000 pixels > 9999"):
        decode_image(encode(Image.new("RGB", (100, 100))), max_pixels=9999)
    monkeypatch.undo()
    with pytest.raises(ImageError, match=r"decode: truncated image \(JPEG header"):
        decode_image(photo_jpeg()[:500])  # cut inside the header
    assert (ImageFile.LOAD_TRUNCATED_IMAGES, Image.MAX_IMAGE_PIXELS) == before


def test_no_exif_transpose():
    img = Image.new("RGB", (4, 2), (200, 10, 10))
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation: rotate 90 CW on display
    decoded = decode_image(encode(img, "JPEG", exif=exif.tobytes()))
    assert decoded.size == (4, 2)  # as stored, like timm


# ---------------------------------------------------------------- mode conversions


def test_mode_conversions_exact_pixels():
    gray = Image.new("L", (2, 1))
    gray.putpixel((0, 0), 77)
    gray.putpixel((1, 0), 255)
    la = Image.new("LA", (1, 1), (120, 0))
    pal = Image.new("P", (2, 1))
    pal.putpalette([255, 0, 0, 0, 128, 255] + [0] * 762)
    pal.putpixel((1, 0), 1)
    rgba = Image.new("RGBA", (1, 1), (10, 20, 30, 0))
    cmyk = Image.new("CMYK", (2, 1), (0, 255, 0, 0))
    cmyk.putpixel((1, 0), (0, 0, 0, 255))
    i16 = Image.new("I;16", (3, 1))
    for x, v in enumerate((0, 200, 300)):
        i16.putpixel((x, 0), v)
    bilevel = Image.new("1", (2, 1))
    bilevel.putpixel((1, 0), 1)
    cases = [
        (encode(gray), "L", [(77, 77, 77), (255, 255, 255)]),
        (encode(la), "LA", [(120, 120, 120)]),
        (encode(pal, transparency=0), "P", [(255, 0, 0), (0, 128, 255)]),  # transparency dropped, not composited
        (encode(rgba), "RGBA", [(10, 20, 30)]),  # alpha dropped
        (encode(cmyk, "TIFF"), "CMYK", [(255, 0, 255), (0, 0, 0)]),
        (encode(i16), "I;16", [(0, 0, 0), (200, 200, 200), (255, 255, 255)]),  # clipped at 255, like Pillow
        (encode(bilevel), "1", [(0, 0, 0), (255, 255, 255)]),
        (encode(Image.new("RGB", (1, 1), (1, 2, 3)), "BMP"), "RGB", [(1, 2, 3)]),
    ]
    for data, mode, pixels in cases:
        assert Image.open(io.BytesIO(data)).mode == mode
        img = decode_image(data)
        assert img.mode == "RGB", mode
        assert [img.getpixel((x, 0)) for x in range(len(pixels))] == pixels, mode
        assert img.tobytes() == Image.open(io.BytesIO(data)).convert("RGB").tobytes()  # exactly timm's loader


# ---------------------------------------------------------------- real photos


def test_real_val_photos_decode():
    folder = SHARED_DATA / "images-ilsvrc2012-val-original"
    if not folder.is_dir():
        pytest.skip(f"real data not available: {folder} (the ../shared/data folder beside the checkout)")
    plan = plan_shards(folder, "imagenet-val-flat", shard_size=32)
    expected = sorted(p.stem for p in folder.iterdir() if p.suffix.lower() in (".jpeg", ".jpg"))
    assert len(expected) == 89 and plan.image_ids == expected
    assert plan.n_skipped_non_image == 2 and "SOURCE.md" in plan.skipped_examples  # + manifest.csv
    assert [len(s) for s in plan.shards] == [32, 32, 25]
    modes = {}
    for shard in plan.shards:
        for image_id, data, err in read_shard(shard):
            assert err is None, (image_id, err)
            modes[image_id] = Image.open(io.BytesIO(data)).mode
            img = decode_image(data)
            assert img.mode == "RGB" and min(img.size) > 0
    assert len(modes) == 89
    assert modes["ILSVRC2012_val_00000034"] == "L" and modes["ILSVRC2012_val_00033079"] == "L"


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


def test_constants():
    assert DEFAULT_MAX_PIXELS == 178_956_970
    assert Shard("s00000", "imagenet-val-flat", ()).kind == "files"
