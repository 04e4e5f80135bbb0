"""Hostile inputs through the real path (plan -> read -> decode -> preprocess for tf_efficientnet_lite0): every
directory entry is accounted for (entries = decoded + error rows + skipped), special entries (broken links,
folders named like images, FIFOs, sockets, devices) are error rows instead of vanishing or hanging, and the
per-image memory budget refuses extreme aspect ratios before allocating. No Ray."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pytest
from hostile_corpus import Case, build_corpus, encode, photo, thin_png
from image_helpers import GOLDFISH, TENCH, labels_by_id, put
from PIL import Image

from mlray.errors import MlrayError
from mlray.images import ImageError, ImagePlan, decode_image, plan_shards, read_shard
from mlray.images.budget import MAX_BUFFER_BYTES, MAX_BUFFER_PIXELS, check_buffer, pillow_bytes_per_pixel
from mlray.models import Preprocessing, check_resize, preprocess_uint8, resize_size, resolve_preprocessing

Outcome = tuple  # ("ok", (w, h)) | ("error", stage, reason)


@pytest.fixture(scope="module")
def prep() -> Preprocessing:
    """tf_efficientnet_lite0's preprocessing: 224 px, crop 0.875 (resize short side to 256), center, bicubic."""
    p = resolve_preprocessing("tf_efficientnet_lite0")
    assert (p.input_size, p.crop_pct, p.crop_mode) == ((3, 224, 224), 0.875, "center")
    return p


def outcomes(plan: ImagePlan, prep: Preprocessing) -> dict[str, Outcome]:
    """Read every shard, decode and preprocess each image as the inference pipeline does: image id -> outcome."""
    out: dict[str, Outcome] = {}
    for shard in plan.shards:
        for image_id, data, err in read_shard(shard):
            assert image_id not in out, f"{image_id} read twice"
            if err is None:
                assert data is not None
                try:
                    img = decode_image(data)
                    arr = preprocess_uint8(img, prep)
                except ImageError as exc:
                    err = exc
                else:
                    assert img.mode == "RGB" and arr.shape == (224, 224, 3) and arr.dtype.name == "uint8"
                    out[image_id] = ("ok", img.size)
                    continue
            assert "\n" not in err.reason
            out[image_id] = ("error", err.stage, err.reason)
    return out


def check_case(case: Case, got: Outcome | None) -> None:
    """Assert that ``got`` (None = not planned) is what ``case`` expects."""
    exp = case.expect
    if exp.outcome == "skip":
        assert got is None, (case.kind, got)
    elif exp.outcome == "ok":
        assert got == ("ok", exp.size), (case.kind, got)
    else:
        assert got is not None and got[0] == "error", (case.kind, got)
        assert got[1] == exp.stage and exp.text in got[2], (case.kind, got)


# ---------------------------------------------------------------- the corpus, flat folder


def test_hostile_corpus_every_entry_accounted_for(tmp_path, prep):
    folder = tmp_path / "val"
    cases = build_corpus(folder)
    assert len({c.kind for c in cases}) >= 25
    assert len(os.listdir(folder)) == len(cases)  # one directory entry per case

    plan = plan_shards(folder, "imagenet-val-flat", shard_size=7)
    acc = plan.accounting()
    n_skip = sum(c.expect.outcome == "skip" for c in cases)
    listed = {"broken link", "a directory, not a file", "not a regular file"}  # known from the listing
    n_flagged = sum(c.expect.outcome == "error" and any(c.expect.text.startswith(k) for k in listed) for c in cases)
    assert (acc.entries, acc.skipped, acc.flagged) == (len(cases), n_skip, n_flagged)
    assert acc.entries == acc.readable + acc.flagged + acc.skipped and acc.planned == plan.n_images
    assert plan.n_skipped_non_image == n_skip and plan.n_flagged == n_flagged == 7
    assert sorted(plan.image_ids) == sorted(c.image_id for c in cases if c.expect.outcome != "skip")
    assert acc.line() == (
        f"{len(cases)} entries = {acc.readable} images to read + 7 error rows (found while listing) + "
        f"{n_skip} skipped by extension"
    )

    for case in cases:
        if case.after_planning is not None:
            case.after_planning(folder / case.name)
    got = outcomes(plan, prep)
    for case in cases:
        check_case(case, got.get(case.image_id))

    decoded = sum(o[0] == "ok" for o in got.values())
    errors = sum(o[0] == "error" for o in got.values())
    assert decoded + errors + acc.skipped == acc.entries == len(cases)
    assert (
        acc.reconciliation(decoded, errors)
        == f"{len(cases)} entries = {decoded} images + {errors} error rows + {n_skip} skipped by extension"
    )
    assert "MISMATCH: 1 entries" in acc.reconciliation(decoded - 1, errors)


def test_reasons_name_the_entry(tmp_path, prep):
    folder = tmp_path / "val"
    build_corpus(folder)
    got = outcomes(plan_shards(folder, "imagenet-val-flat"), prep)
    assert got["broken"] == ("error", "read", f"broken link: {folder / 'broken.JPEG'} -> missing.JPEG")
    assert got["folder"] == ("error", "read", f"a directory, not a file: {folder / 'folder.JPEG'}")
    assert got["fifo"] == ("error", "read", f"not a regular file (fifo): {folder / 'fifo.JPEG'}")
    assert got["device"] == ("error", "read", f"not a regular file (character device): {folder / 'device.JPEG'}")
    assert got["tall"] == (
        "error",
        "decode",
        "resize to 256x2560000 would need 2.62 GB (655,360,000 pixels), over the per-image budget "
        "(178,956,970 pixels, 0.72 GB per buffer)",
    )
    assert got["bomb"] == ("error", "decode", "decompression bomb: 100000 x 100000 = 10000000000 pixels > 178956970")


@pytest.mark.parametrize(("layout", "folder_name", "cls"), [("wnid-folders", TENCH, 0), ("imagenetv2", "1", 1)])
def test_class_folder_layouts_carry_special_entries(tmp_path, prep, layout, folder_name, cls):
    root = tmp_path / "train"
    d = root / folder_name
    put(d / "good.JPEG", encode(photo(), "JPEG"))
    (d / "broken.JPEG").symlink_to("gone.JPEG")
    (d / "folder.JPEG").mkdir()
    os.mkfifo(d / "fifo.JPEG")
    put(d / "README.txt", "x")
    put(d / ".DS_Store", b"\0")
    other = GOLDFISH if layout == "wnid-folders" else "2"
    put(root / other / "x.png", encode(photo(), "PNG"))

    plan = plan_shards(root, layout)
    acc = plan.accounting()
    assert (acc.entries, acc.readable, acc.flagged, acc.skipped) == (7, 2, 3, 2)
    labels = labels_by_id(plan)
    assert labels == {"broken": cls, "fifo": cls, "folder": cls, "good": cls, "x": cls + 1}  # flagged rows keep a label
    got = outcomes(plan, prep)
    assert got["good"] == got["x"] == ("ok", (64, 48))
    assert got["broken"][:2] == got["folder"][:2] == got["fifo"][:2] == ("error", "read")
    assert "not a regular file (fifo)" in got["fifo"][2] and "a directory, not a file" in got["folder"][2]


@pytest.mark.timeout(60)
def test_manifest_rows_pointing_at_special_entries_are_error_rows(tmp_path, prep):
    d = tmp_path / "imgs"
    put(d / "good.jpg", encode(photo(), "JPEG"))
    (d / "broken.jpg").symlink_to("gone.jpg")
    (d / "folder.jpg").mkdir()
    os.mkfifo(d / "fifo.jpg")  # opening it for reading without O_NONBLOCK would block forever
    (d / "zeros.jpg").symlink_to("/dev/zero")  # reading it to the end would never end
    rows = ["good", "broken", "folder", "fifo", "zeros", "missing"]
    manifest = put(tmp_path / "m.csv", "image_id,path\n" + "".join(f"{r},imgs/{r}.jpg\n" for r in rows))
    plan = plan_shards(manifest, "manifest")
    assert plan.accounting().entries == 6 and plan.n_flagged == 0  # manifest rows are not stat'ed while planning
    got = outcomes(plan, prep)
    assert got == {
        "good": ("ok", (64, 48)),
        "broken": ("error", "read", f"broken link: {d / 'broken.jpg'} -> gone.jpg"),
        "folder": ("error", "read", f"a directory, not a file: {d / 'folder.jpg'}"),
        "fifo": ("error", "read", f"not a regular file (fifo): {d / 'fifo.jpg'}"),
        "zeros": ("error", "read", f"not a regular file (character device): {d / 'zeros.jpg'}"),
        "missing": ("error", "read", f"no such file: {d / 'missing.jpg'}"),
    }


def test_duplicate_stems_with_different_extensions_are_a_planning_error(tmp_path):
    """Today (kept): the image id is the file stem, so a.jpg + a.png is an error naming both (never one dropped)."""
    put(tmp_path / "a.jpg", encode(photo(), "JPEG"))
    put(tmp_path / "a.png", encode(photo(), "PNG"))
    with pytest.raises(MlrayError) as info:
        plan_shards(tmp_path, "imagenet-val-flat")
    assert str(info.value) == f"{tmp_path}: duplicate image id 'a': {tmp_path / 'a.jpg'} and {tmp_path / 'a.png'}"


def test_symlink_back_to_an_enclosing_folder_is_a_planning_error(tmp_path):
    put(tmp_path / TENCH / "a.jpg", encode(photo(), "JPEG"))
    (tmp_path / TENCH / "up").symlink_to("..")
    with pytest.raises(MlrayError) as info:
        plan_shards(tmp_path, "wnid-folders")
    assert (
        str(info.value) == f"{tmp_path / TENCH / 'up'}: a symlink back to a folder that encloses it (a loop); remove it"
    )


def test_symlinked_folders_are_followed(tmp_path):
    put(tmp_path / "real" / TENCH / "a.jpg", encode(photo(), "JPEG"))
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / TENCH).symlink_to(tmp_path / "real" / TENCH)
    plan = plan_shards(tmp_path / "data", "wnid-folders")
    assert plan.image_ids == ["a"] and plan.shards[0].paths == (str(tmp_path / "data" / TENCH / "a.jpg"),)


# ---------------------------------------------------------------- an unreadable file (root reads everything)


def _read_as(plan: ImagePlan, uid: int) -> dict[str, list[str]]:
    """Read ``plan`` in a forked child running as ``uid``: image id -> [stage, reason] or ["ok"]."""
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: drop root, read, report, exit without running any cleanup
        try:
            os.close(r)
            os.setgid(uid)
            os.setuid(uid)
            out = {i: ["ok"] if e is None else [e.stage, e.reason] for s in plan.shards for i, _, e in read_shard(s)}
        except BaseException as exc:  # noqa: BLE001
            out = {"__failed__": [repr(exc)]}
        os.write(w, json.dumps(out).encode())
        os._exit(0)
    os.close(w)
    with os.fdopen(r, "rb") as fh:
        data = fh.read()
    os.waitpid(pid, 0)
    return json.loads(data)


def test_unreadable_file_is_a_read_error():
    folder = Path(tempfile.mkdtemp(prefix="mlray-unreadable-", dir="/tmp"))
    try:
        folder.chmod(0o755)
        put(folder / "good.JPEG", encode(photo(), "JPEG")).chmod(0o644)
        put(folder / "secret.JPEG", encode(photo(), "JPEG")).chmod(0o000)
        plan = plan_shards(folder, "imagenet-val-flat")
        assert plan.accounting().readable == 2  # not opened while planning: found when read
        if os.geteuid() == 0:  # root reads a chmod 000 file: read it as nobody instead
            got = _read_as(plan, 65534)
            if "__failed__" in got:
                pytest.skip(f"running as root and cannot drop to uid 65534 here: {got['__failed__'][0]}")
        else:
            got = {i: ["ok"] if e is None else [e.stage, e.reason] for s in plan.shards for i, _, e in read_shard(s)}
        assert got == {"good": ["ok"], "secret": ["read", f"unreadable: permission denied: {folder / 'secret.JPEG'}"]}
    finally:
        shutil.rmtree(folder, ignore_errors=True)


# ---------------------------------------------------------------- the per-image memory budget


def test_thin_png_is_refused_before_allocating(prep):
    """The 1x10000 PNG fails in preprocess_uint8 before timm is even imported; the child's peak RSS barely moves
    (a 200 MB numpy allocation afterwards shows that the measurement sees allocations). A subprocess, so that the
    peak is this image's and nothing else's."""
    script = r"""
import io, json, resource, sys
from PIL import Image
from mlray.images import ImageError, decode_image
from mlray.models import Preprocessing, preprocess_uint8

def peak():
    # VmHWM: this process's peak RSS. (ru_maxrss would do, but Linux carries the parent's over fork + exec.)
    try:
        with open("/proc/self/status") as fh:
            return next(int(line.split()[1]) * 1024 for line in fh if line.startswith("VmHWM:"))
    except OSError:
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024

prep = Preprocessing(**json.loads(sys.argv[1]))
import numpy as np
buf = io.BytesIO()
Image.fromarray((np.random.default_rng(0).random((10000, 1)) * 255).astype("uint8")).save(buf, "PNG")
data = buf.getvalue()  # 13 KB of noise
before = peak()
img = decode_image(data)
try:
    preprocess_uint8(img, prep)
    reason = None
except ImageError as exc:
    reason = str(exc)
after = peak()
control = np.ones(200_000_000, dtype=np.uint8)
print(json.dumps({"bytes": len(data), "size": img.size, "reason": reason, "growth": after - before,
                  "control": peak() - after, "timm": "timm" in sys.modules}))
"""
    run = subprocess.run(
        [sys.executable, "-c", script, json.dumps(prep.to_dict())], capture_output=True, text=True, timeout=60
    )
    assert run.returncode == 0, run.stderr
    res = json.loads(run.stdout)
    assert res["bytes"] < 40_000 and res["size"] == [1, 10000]
    assert res["reason"] == (
        "decode: resize to 256x2560000 would need 2.62 GB (655,360,000 pixels), over the per-image budget "
        "(178,956,970 pixels, 0.72 GB per buffer)"
    )
    assert res["growth"] < 20_000_000, res  # without the budget: +2.8 GB (VmHWM) and 5 s of resizing
    assert res["control"] > 150_000_000, res
    assert res["timm"] is False  # refused from the preprocessing alone, before the transform is built


def test_budget_constants_and_bytes_per_pixel():
    assert MAX_BUFFER_PIXELS == 178_956_970 and MAX_BUFFER_BYTES == 715_827_880
    assert [pillow_bytes_per_pixel(m) for m in ("1", "L", "P", "I;16", "I;16B", "LA", "RGB", "CMYK", "F")] == [
        1, 1, 1, 2, 2, 4, 4, 4, 4,
    ]  # fmt: skip
    check_buffer("x", 7_000, 7_000)  # a 49 MP photo fits
    with pytest.raises(ImageError) as info:
        check_buffer("resize to", 1000, 1000, max_pixels=None, max_bytes=3_000_000)
    assert str(info.value) == (
        "decode: resize to 1000x1000 would need 4.00 MB (1,000,000 pixels), over the per-image budget "
        "(3.00 MB per buffer)"
    )


def test_decode_refuses_a_raster_over_the_byte_budget():
    data = encode(photo(mode="RGBA"), "PNG")
    assert decode_image(data, max_bytes=64 * 48 * 4).size == (64, 48)
    with pytest.raises(ImageError) as info:
        decode_image(data, max_bytes=64 * 48 * 4 - 1)
    assert info.value.stage == "decode"
    assert info.value.reason.startswith("decoding the RGBA image 64x48 would need 0.01 MB (3,072 pixels)")
    gray = encode(photo(mode="L"), "PNG")  # 1 byte per pixel decoded, but 4 for its RGB conversion
    with pytest.raises(ImageError, match="decoding the RGB image 64x48"):
        decode_image(gray, max_bytes=64 * 48 * 2)


def test_preprocess_budget_every_buffer(prep):
    with pytest.raises(ImageError, match=r"^decode: image from an array of 64x48 would need"):
        preprocess_uint8(np.asarray(photo()), prep, max_pixels=1000)
    with pytest.raises(ImageError, match=r"^decode: converting L to RGB: 64x48 would need"):
        preprocess_uint8(photo(mode="L"), prep, max_pixels=1000)
    squash = Preprocessing((3, 224, 224), 0.875, "squash", "bicubic", (0.5,) * 3, (0.5,) * 3)
    with pytest.raises(ImageError) as info:  # Pillow's horizontal pass: 256 x 800000 before the vertical one
        check_resize(squash, 1, 800_000)
    assert info.value.reason.startswith("resize (first pass) to 256x800000 would need 0.82 GB (204,800,000 pixels)")
    border = Preprocessing((3, 224, 224), 0.875, "border", "bicubic", (0.5,) * 3, (0.5,) * 3)
    with pytest.raises(ImageError) as info:
        preprocess_uint8(decode_image(thin_png(1, 10_000)), border)
    assert info.value.reason == "resize to 0x256 is empty: a 1x10000 image is too thin for this preprocessing"
    assert preprocess_uint8(decode_image(thin_png(1, 100)), prep).shape == (224, 224, 3)


@pytest.mark.parametrize("mode", ["center", "squash", "border"])
@pytest.mark.parametrize("input_size", [(3, 224, 224), (3, 224, 240)])
def test_resize_size_matches_timm(mode, input_size):
    """The budget's prediction of the resize equals what timm's transform does (checked again on every call)."""
    from mlray.models import _resize_transform

    p = Preprocessing(input_size, 0.9, mode, "bilinear", (0.5,) * 3, (0.5,) * 3)
    resize = _resize_transform(p).transforms[0]
    for w, h in [(1, 1), (64, 48), (48, 64), (3, 500), (500, 3), (333, 257), (257, 333), (249, 248), (1000, 999)]:
        expected = resize(Image.new("RGB", (w, h))).size
        assert resize_size(p, w, h) == expected, (w, h)
        assert check_resize(p, w, h) == expected


def test_shard_file_layouts_refuse_a_broken_shard_file(tmp_path):
    """parquet-shards / webdataset: a broken link named like a shard file stops planning with its reason (it would
    hold an unknown number of images); one named otherwise is skipped and counted."""
    (tmp_path / "part-00000.parquet").symlink_to("gone.parquet")
    with pytest.raises(MlrayError) as info:
        plan_shards(tmp_path, "parquet-shards")
    assert str(info.value) == (
        f"broken link: {tmp_path / 'part-00000.parquet'} -> gone.parquet (layout parquet-shards)"
    )


def test_a_file_that_changes_while_being_read_is_a_read_error(tmp_path, monkeypatch):
    import mlray.images.roots as roots

    put(tmp_path / "a.JPEG", encode(photo(), "JPEG"))
    plan = plan_shards(tmp_path, "imagenet-val-flat")
    real_fstat = os.fstat

    class Grown:  # the size fstat reports when the file is opened: 10 bytes more than will be read
        def __init__(self, st: os.stat_result):
            self.st_mode, self.st_size = st.st_mode, st.st_size + 10

    monkeypatch.setattr(roots.os, "fstat", lambda fd: Grown(real_fstat(fd)))
    ((image_id, data, err),) = list(read_shard(plan.shards[0]))
    size = (tmp_path / "a.JPEG").stat().st_size
    assert data is None and (err.stage, err.reason) == (
        "read",
        f"changed while being read: {tmp_path / 'a.JPEG'} ({size + 10} bytes when opened, {size} read)",
    )
