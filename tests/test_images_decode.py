"""mlray.images.decode: a corpus of bad images, the bomb check, every mode conversion, and the real ImageNet val
photos in ../shared/data."""

from __future__ import annotations

import io
import struct
import zlib

import pytest
from conftest import shared
from image_helpers import encode, photo_jpeg, put
from PIL import Image, ImageFile

from mlray.images import DEFAULT_MAX_PIXELS, ImageError, decode_image, plan_shards, read_shard

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


def test_default_max_pixels():
    assert DEFAULT_MAX_PIXELS == 178_956_970  # 2 x Pillow's default MAX_IMAGE_PIXELS


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
    folder = shared("images-ilsvrc2012-val-original")
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
