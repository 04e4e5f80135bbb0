"""PatchML: box sources (plain table, wsolevaluation, whole images), grid geometry, labels = classes placed,
determinism by seed, and bad boxes as one-line errors. No Ray."""

from __future__ import annotations

import csv
import re

import numpy as np
import pytest
from conftest import shared
from PIL import Image

from mlray.cli import main
from mlray.config import parse_config
from mlray.datasets import load_dataset_labels
from mlray.errors import MlrayError
from mlray.patchml import (
    PatchMLOptions,
    build_patchml,
    canvas_size,
    cell_origin,
    fitted_size,
    open_source,
    parse_color,
    parse_layouts,
    read_box_table,
    read_class_file,
    read_whole_images,
    read_wsolevaluation_boxes,
)

# class index -> a solid colour; every source image is one colour, so every pixel of a placed patch is known
COLOURS = {
    0: (200, 10, 10),
    1: (10, 200, 10),
    2: (10, 10, 200),
    3: (200, 200, 10),
    4: (10, 200, 200),
    5: (200, 10, 200),
}
BG = (1, 2, 3)


def solid_images(folder, sizes):
    """``{image_id: (class, (w, h))}`` -> PNG files of the class colour in ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    for image_id, (cls, size) in sizes.items():
        Image.new("RGB", size, COLOURS[cls]).save(folder / f"{image_id}.png")
    return folder


def box_table(path, rows):
    with open(path, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["image_id", "class", "x0", "y0", "x1", "y1"])
        w.writerows(rows)
    return path


@pytest.fixture
def six_classes(tmp_path):
    """Six source images (classes 0..5, different shapes) and one box per image (one of them a sub-box)."""
    images = solid_images(
        tmp_path / "src",
        {f"img{c}": (c, (40 + 10 * c, 30 + 5 * c)) for c in range(6)},
    )
    rows = [[f"img{c}", c, 0, 0, 40 + 10 * c, 30 + 5 * c] for c in range(5)] + [["img5", "n01496331", 10, 5, 60, 45]]
    return read_box_table(box_table(tmp_path / "boxes.csv", rows), images)


def read_rows(path):
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def test_layout_and_colour_parsing():
    assert parse_layouts(["1x1,1x2", "2x2:5", "3x3"], 7) == ((1, 1, 7), (1, 2, 7), (2, 2, 5), (3, 3, 7))
    with pytest.raises(MlrayError, match=r"^patchml: layout '2by2' is not ROWSxCOLS\[:N\]"):
        parse_layouts(["2by2"], 1)
    with pytest.raises(MlrayError, match="layout 2x2 is given twice"):
        parse_layouts(["2x2,2x2:3"], 1)
    assert parse_color("128, 64,0") == (128, 64, 0)
    assert parse_color("#0a0b0c") == (10, 11, 12)
    assert parse_color("white") == (255, 255, 255)
    with pytest.raises(MlrayError, match="is not a colour"):
        parse_color("not-a-colour")


def test_grid_arithmetic():
    # 2 columns of 32 px, 4 px around and between: 2*32 + 3*4 = 76 wide, 1*32 + 2*4 = 40 high
    assert canvas_size(1, 2, 32, 4, square=False) == (76, 40)
    assert canvas_size(1, 2, 32, 4, square=True) == (76, 76)
    assert cell_origin(1, 1, 2, 32, 4, square=False) == (40, 4)
    assert cell_origin(1, 1, 2, 32, 4, square=True) == (40, 4 + 18)  # grid centred: (76 - 40) // 2 = 18
    assert cell_origin(3, 2, 2, 32, 0, square=True) == (32, 32)
    assert fitted_size(40, 20, 32, "fit") == (32, 16)
    assert fitted_size(20, 40, 32, "fit") == (16, 32)
    assert fitted_size(40, 20, 32, "stretch") == (32, 32)


def test_geometry_labels_and_pixels(six_classes, tmp_path):
    opts = PatchMLOptions(layouts=((1, 1, 2), (1, 2, 3), (2, 2, 3), (3, 3, 0)), patch_size=32, spacing=4,
                          background=BG, square=False, seed=7)  # fmt: skip
    res = build_patchml(six_classes, opts, tmp_path / "out")
    assert res.n_images == {"1x1": 2, "1x2": 3, "2x2": 3, "3x3": 0}
    assert res.n_pool == 6 and res.skipped == {}
    labels = read_rows(res.labels)
    patches = read_rows(res.patches)
    assert [r["image_id"] for r in labels] == [f"patchml-1x1-{i:05d}" for i in range(2)] + [
        f"patchml-1x2-{i:05d}" for i in range(3)
    ] + [f"patchml-2x2-{i:05d}" for i in range(3)]
    assert len(patches) == 2 * 1 + 3 * 2 + 3 * 4
    assert res.multi_fraction == 6 / 8
    for row in labels:
        placed = [p for p in patches if p["image_id"] == row["image_id"]]
        rows_, cols_ = map(int, row["image_id"].split("-")[1].split("x"))
        assert [int(p["slot"]) for p in placed] == list(range(rows_ * cols_))
        classes = [int(p["class"]) for p in placed]
        assert len(set(classes)) == len(classes)  # distinct by default
        assert int(row["label"]) == classes[0]  # the class of slot 0
        assert row["labels"] == ";".join(str(c) for c in sorted(set(classes)))
        img = np.asarray(Image.open(tmp_path / "out" / row["path"]))
        W, H = canvas_size(rows_, cols_, 32, 4, square=False)
        assert img.shape == (H, W, 3)
        covered = np.zeros((H, W), bool)
        for p in placed:
            cx0, cy0, cx1, cy1 = (int(p[k]) for k in ("cx0", "cy0", "cx1", "cy1"))
            ox, oy = cell_origin(int(p["slot"]), rows_, cols_, 32, 4, square=False)
            # inside its own cell, hence inside the canvas
            assert ox <= cx0 < cx1 <= ox + 32 and oy <= cy0 < cy1 <= oy + 32
            w, h = int(p["x1"]) - int(p["x0"]), int(p["y1"]) - int(p["y0"])
            assert (cx1 - cx0, cy1 - cy0) == fitted_size(w, h, 32, "fit")
            assert max(cx1 - cx0, cy1 - cy0) == 32  # fit: the longer side fills the cell
            # a solid source stays solid through the bicubic resize
            assert (img[cy0:cy1, cx0:cx1] == COLOURS[int(p["class"])]).all()
            covered[cy0:cy1, cx0:cx1] = True
        assert (img[~covered] == BG).all()


def test_manifest_output_is_a_dataset(six_classes, tmp_path):
    """labels.csv reads as a run-config dataset (layout manifest) with no other label source."""
    res = build_patchml(six_classes, PatchMLOptions(layouts=((2, 2, 4),), patch_size=16, seed=1), tmp_path / "pm")
    cfg = parse_config({"datasets": [{"name": "pm", "images": str(res.labels), "layout": "manifest"}]})
    table = load_dataset_labels(cfg, cfg.datasets[0]).table.to_pydict()
    rows = read_rows(res.labels)
    assert table["image_id"] == [r["image_id"] for r in rows]
    assert table["original"] == [int(r["label"]) for r in rows]
    assert table["valid"] == [[int(c) for c in r["labels"].split(";")] for r in rows]
    assert all(len(v) == 4 for v in table["valid"])


def test_same_seed_gives_byte_identical_output(six_classes, tmp_path):
    opts = PatchMLOptions(layouts=((1, 2, 4), (2, 2, 4), (3, 3, 0)), patch_size=24, spacing=2, seed=3)
    a = build_patchml(six_classes, opts, tmp_path / "a")
    b = build_patchml(six_classes, opts, tmp_path / "b")
    files_a = sorted(p.relative_to(a.out) for p in a.out.rglob("*") if p.is_file())
    files_b = sorted(p.relative_to(b.out) for p in b.out.rglob("*") if p.is_file())
    assert files_a == files_b and len(files_a) == 8 + 3
    for rel in files_a:
        assert (a.out / rel).read_bytes() == (b.out / rel).read_bytes(), rel
    # rebuilding into the same folder replaces it with the same bytes
    again = build_patchml(six_classes, opts, tmp_path / "a")
    assert sorted(p.relative_to(again.out) for p in again.out.rglob("*") if p.is_file()) == files_a
    assert (tmp_path / "a" / "labels.csv").read_bytes() == (tmp_path / "b" / "labels.csv").read_bytes()
    other = build_patchml(
        six_classes, PatchMLOptions(layouts=opts.layouts, patch_size=24, spacing=2, seed=4), tmp_path / "c"
    )
    assert other.labels.read_bytes() != a.labels.read_bytes()


def test_distinct_classes_and_repeats(tmp_path):
    # three boxes of class 0 and one of class 1: a 1x2 image with distinct classes is always {0, 1}
    images = solid_images(tmp_path / "src", {"a": (0, (20, 20)), "b": (1, (20, 20))})
    rows = [["a", 0, 0, 0, 10, 10], ["a", 0, 10, 10, 20, 20], ["a", 0, 0, 0, 20, 20], ["b", 1, 0, 0, 20, 20]]
    source = read_box_table(box_table(tmp_path / "boxes.csv", rows), images)
    res = build_patchml(source, PatchMLOptions(layouts=((1, 2, 10),), patch_size=8), tmp_path / "d")
    assert {r["labels"] for r in read_rows(res.labels)} == {"0;1"}
    with pytest.raises(
        MlrayError,
        match=r"^patchml: layout 1x3 needs 3 patches of distinct classes per image, but the source's patches cover only 2 classes",  # noqa: E501
    ):
        build_patchml(source, PatchMLOptions(layouts=((1, 3, 1),), patch_size=8), tmp_path / "e")
    rep = build_patchml(
        source, PatchMLOptions(layouts=((1, 3, 10),), patch_size=8, distinct=False, seed=0), tmp_path / "f"
    )
    labels = read_rows(rep.labels)
    assert all(r["labels"] in ("0", "0;1") for r in labels)
    assert any(r["labels"] == "0" for r in labels)  # three class-0 boxes in one image: one distinct class placed
    assert rep.multi_fraction == sum(r["labels"] == "0;1" for r in labels) / 10
    with pytest.raises(MlrayError, match="layout 3x3 needs 9 patches per image but the source has only 4"):
        build_patchml(source, PatchMLOptions(layouts=((3, 3, 1),), patch_size=8, distinct=False), tmp_path / "g")


def test_min_patch_size_skips_and_counts(tmp_path):
    images = solid_images(tmp_path / "src", {"a": (0, (64, 64)), "b": (1, (64, 64)), "c": (2, (64, 64))})
    rows = [["a", 0, 0, 0, 64, 64], ["b", 1, 0, 0, 31, 64], ["c", 2, 0, 0, 64, 64]]
    source = read_box_table(box_table(tmp_path / "boxes.csv", rows), images)
    res = build_patchml(source, PatchMLOptions(layouts=((1, 2, 2),), patch_size=16, min_patch_size=32), tmp_path / "o")
    assert res.n_pool == 2 and res.skipped == {"smaller than 32 px": 1}
    assert {r["labels"] for r in read_rows(res.labels)} == {"0;2"}


@pytest.mark.parametrize(
    "row, message",
    [
        (
            ["a", 0, 0, 0, 41, 30],
            "row 3: box (0, 0, 41, 30) lies outside the image (40 x 30: needs 0 <= x0 < x1 <= 40, 0 <= y0 < y1 <= 30)",
        ),
        (["a", 0, -1, 0, 10, 10], "row 3: box (-1, 0, 10, 10) lies outside the image"),
        (["a", 0, 5, 5, 5, 20], "row 3: box (5, 5, 5, 20) has zero area (needs x0 < x1 and y0 < y1)"),
        (["a", 0, 10, 5, 4, 20], "row 3: box (10, 5, 4, 20) has zero area"),
        (["a", 1000, 0, 0, 10, 10], "row 3: class index 1000 is outside 0..999"),
        (
            ["a", "n99999999", 0, 0, 10, 10],
            "row 3: unknown class 'n99999999' (neither a class index 0..999 nor an ImageNet-1k wnid)",
        ),
        (["a", "", 0, 0, 10, 10], "row 3: empty class index"),
        (["a", "5;cat", 0, 0, 10, 10], "row 3: unknown class 'cat'"),
        (["zzz", 0, 0, 0, 10, 10], "row 3: image 'zzz' not found in"),
        (["a", 0, 0, 0, "ten", 10], "row 3: x1 'ten' is not a number"),
    ],
)
def test_bad_boxes_in_a_table_are_one_line_errors(tmp_path, row, message):
    images = solid_images(tmp_path / "src", {"a": (0, (40, 30))})
    table = box_table(tmp_path / "boxes.csv", [["a", 0, 0, 0, 40, 30], row])
    with pytest.raises(MlrayError) as err:
        read_box_table(table, images)
    text = str(err.value)
    assert text.startswith(f"{table}: {message}"), text
    assert "\n" not in text


def test_box_table_class_sets_and_missing_columns(tmp_path):
    images = solid_images(tmp_path / "src", {"a": (0, (40, 30))})
    src = read_box_table(box_table(tmp_path / "b.csv", [["a", "281;n02123159;285;281", 0, 0, 40, 30]]), images)
    assert src.patches[0].classes == (281, 282, 285)  # wnid resolved, duplicate kept once, order kept
    bad = tmp_path / "bad.csv"
    bad.write_text("image_id,class,x0,y0\na,0,0,0\n")
    with pytest.raises(
        MlrayError, match=re.escape(f"{bad}: missing column x1, y1 (a box table has image_id, class, x0, y0, x1, y1")
    ):
        read_box_table(bad, images)


def write_wsol(tmp_path):
    """A wsolevaluation-style box file over three val images, of which two are in the folder."""
    images = solid_images(
        tmp_path / "val",
        {"ILSVRC2012_val_00000001": (0, (50, 40)), "ILSVRC2012_val_00000003": (1, (30, 30))},
    )
    (images / "SOURCE.md").write_text("not an image")
    loc = tmp_path / "localization.txt"
    loc.write_text(
        "val/ILSVRC2012_val_00000001.JPEG,0,0,50,40\n"
        "val/ILSVRC2012_val_00000001.JPEG,5,5,20,20\n"
        "val/ILSVRC2012_val_00000002.JPEG,1,1,9,9\n"
        "val/ILSVRC2012_val_00000003.JPEG,2,3,30,30\n"
    )
    derived = tmp_path / "ilsvrc2012_val_labels.csv"
    derived.write_text(
        "file_name,class_index,wnid\n"
        "ILSVRC2012_val_00000001.JPEG,65,n01751748\nILSVRC2012_val_00000002.JPEG,970,n09193705\n"
        "ILSVRC2012_val_00000003.JPEG,230,n02105855\n"
    )
    return loc, derived, images


def test_wsolevaluation_boxes_skip_absent_images_and_count(tmp_path):
    loc, derived, images = write_wsol(tmp_path)
    src = read_wsolevaluation_boxes(loc, derived, images)
    assert src.n_entries == 4 and src.skipped == {"image not in the folder": 1}
    assert [(p.box, p.classes) for p in src.patches] == [
        ((0, 0, 50, 40), (65,)),
        ((5, 5, 20, 20), (65,)),
        ((2, 3, 30, 30), (230,)),
    ]
    # wsolevaluation's own class_labels.txt (no header) reads the same
    wsol_classes = tmp_path / "class_labels.txt"
    wsol_classes.write_text("val/ILSVRC2012_val_00000001.JPEG,65\nval/ILSVRC2012_val_00000003.JPEG,230\n")
    assert read_class_file(wsol_classes) == {"ILSVRC2012_val_00000001": 65, "ILSVRC2012_val_00000003": 230}
    assert open_source(boxes=loc, images=images, class_labels=wsol_classes).patches == src.patches


def test_wsolevaluation_bad_lines(tmp_path):
    loc, derived, images = write_wsol(tmp_path)
    loc.write_text("val/ILSVRC2012_val_00000001.JPEG,0,0,51,40\n")
    with pytest.raises(
        MlrayError, match=re.escape(f"{loc}: line 1: box (0, 0, 51, 40) lies outside the image (50 x 40")
    ):
        read_wsolevaluation_boxes(loc, derived, images)
    loc.write_text("val/ILSVRC2012_val_00000003.JPEG,0,0,0,10\n")
    with pytest.raises(MlrayError, match=re.escape(f"{loc}: line 1: box (0, 0, 0, 10) has zero area")):
        read_wsolevaluation_boxes(loc, derived, images)
    loc.write_text("val/ILSVRC2012_val_00000001.JPEG,0,0,5,5\nval/ILSVRC2012_val_00000003.JPEG,0,0,5\n")
    with pytest.raises(
        MlrayError, match=re.escape(f"{loc}: line 2: expected image_path,x0,y0,x1,y1 (5 fields), found 4")
    ):
        read_wsolevaluation_boxes(loc, derived, images)
    derived.write_text("file_name,class_index,wnid\nILSVRC2012_val_00000001.JPEG,65,n01751748\n")
    loc.write_text("val/ILSVRC2012_val_00000003.JPEG,0,0,5,5\n")
    with pytest.raises(
        MlrayError, match=re.escape(f"{loc}: line 1: unknown class: ILSVRC2012_val_00000003 has no entry in {derived}")
    ):
        read_wsolevaluation_boxes(loc, derived, images)


def test_whole_images_take_the_wnid_of_the_name_or_folder(tmp_path):
    folder = tmp_path / "whole"
    solid_images(folder, {"n01440764_tench": (0, (20, 10))})
    solid_images(folder / "n01443537", {"goldfish_photo": (1, (8, 12))})
    (folder / "manifest.csv").write_text("skipped: not an image\n")
    src = read_whole_images(folder)
    assert [(p.classes, p.box) for p in src.patches] == [((0,), (0, 0, 20, 10)), ((1,), (0, 0, 8, 12))]
    solid_images(folder, {"no_wnid_here": (2, (5, 5))})
    with pytest.raises(
        MlrayError,
        match=re.escape(f"{folder / 'no_wnid_here.png'}: unknown class: the file name does not start with a wnid"),
    ):
        read_whole_images(folder)


def test_out_folder_safety_and_source_arguments(six_classes, tmp_path):
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "keep.txt").write_text("not ours")
    with pytest.raises(MlrayError, match="folder is not empty and holds no earlier PatchML output"):
        build_patchml(six_classes, PatchMLOptions(layouts=((1, 1, 1),), patch_size=8), tmp_path / "busy")
    assert (tmp_path / "busy" / "keep.txt").read_text() == "not ours"
    with pytest.raises(MlrayError, match="give either a box file"):
        open_source()
    with pytest.raises(MlrayError, match="a box file needs --images"):
        open_source(boxes=tmp_path / "boxes.csv")


def test_cli_patchml_and_a_bad_box(six_classes, tmp_path, capsys):
    images = tmp_path / "src"
    table = tmp_path / "boxes.csv"
    out = tmp_path / "cli"
    args = ["patchml", "--boxes", str(table), "--images", str(images), "--out", str(out), "--layout", "1x2:2,2x2:1",
            "--patch-size", "16", "--spacing", "2", "--background", "gray", "--seed", "5"]  # fmt: skip
    assert main(args) == 0
    text = capsys.readouterr().out
    assert "3 images (1x2: 2, 2x2: 1)" in text and "layout: manifest" in text
    assert len(read_rows(out / "labels.csv")) == 3
    assert Image.open(out / "images" / "patchml-2x2-00000.png").size == (38, 38)  # 2*16 + 3*2
    box_table(table, [["img0", 0, 0, 0, 40, 30], ["img1", 1, 0, 0, 51, 10]])
    assert main(args) == 2
    err = capsys.readouterr().err
    assert err.startswith("mlray: error:") and "row 3: box (0, 0, 51, 10) lies outside the image (50 x 35" in err


@pytest.mark.integration
def test_real_wsolevaluation_boxes_over_the_val_originals(tmp_path):
    """The real box file (80,477 boxes of 50,000 val images) over the 89 val originals here."""
    loc = shared("wsolevaluation-boxes", "ilsvrc2012_val_localization.txt")
    classes = shared("derived", "ilsvrc2012_val_labels.csv")
    images = shared("images-ilsvrc2012-val-original")
    src = read_wsolevaluation_boxes(loc, classes, images)
    assert src.n_entries == 80477
    assert len(src.patches) == 151 and src.skipped == {"image not in the folder": 80477 - 151}
    assert len({p.source for p in src.patches}) == 89 and len({p.classes for p in src.patches}) == 84
    first = next(p for p in src.patches if p.source.endswith("ILSVRC2012_val_00000001.JPEG"))
    assert (first.box, first.classes) == ((111, 108, 441, 193), (65,))  # line 1 of the box file, class 65
    opts = PatchMLOptions(layouts=((3, 3, 4),), patch_size=64, min_patch_size=32, seed=0)
    res = build_patchml(src, opts, tmp_path / "real")
    assert res.skipped == {"image not in the folder": 80326, "smaller than 32 px": 7}
    assert res.n_pool == 144 and res.multi_fraction == 1.0
    assert all(len(r["labels"].split(";")) == 9 for r in read_rows(res.labels))
