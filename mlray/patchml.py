"""PatchML-style datasets: object patches cut from real images, resized and placed on a grid; the image's label
set is the set of classes placed. Plain Python (PIL + numpy), no Ray.

PatchML (Anzaku et al., arXiv 2412.18409) tests whether a single-label classifier ranks *every* object of an image
near the top when the objects come without their usual context. mlray builds such sets from any patch source:

Patch sources (each returns a :class:`PatchSource`: a list of :class:`Patch` plus what was skipped, counted)
==========================================================================================================

======================================  ==================================================================
:func:`read_wsolevaluation_boxes`       wsolevaluation's ``ilsvrc2012_val_localization.txt`` (no header:
                                        ``val/ILSVRC2012_val_XXXXXXXX.JPEG,x0,y0,x1,y1``, one line per box)
                                        + a class file (``../derived/ilsvrc2012_val_labels.csv`` with
                                        ``file_name, class_index``, or wsolevaluation's ``class_labels.txt``
                                        ``path,class_index`` without header) + the image folder. The box file
                                        covers all 50,000 val images; boxes of images that are not in the
                                        folder are skipped and counted (``image not in the folder``).
:func:`read_box_table`                  a plain table (CSV/TSV/Parquet) ``image_id, class, x0, y0, x1, y1``
                                        + the image folder (``image_id`` = file stem). ``class`` is a class
                                        index (0..999) or a wnid, or several joined by ``;`` (the object's
                                        class first, then other classes that are also valid for it, e.g.
                                        ``281;282;285`` for a cat). Every row must be usable: a missing
                                        image is an error.
:func:`read_whole_images`               whole images with their class: image files whose name starts with a
                                        wnid (``n01582220_magpie.JPEG``) or that lie in a folder named by a
                                        wnid (``n01582220/x.JPEG``); the box is the whole image.
======================================  ==================================================================

Boxes are pixel coordinates in the stored image (no EXIF rotation, as in :mod:`mlray.data`), cropped the way
PIL crops: columns ``x0 .. x1-1``, rows ``y0 .. y1-1``; non-integer coordinates are rounded. A box is rejected
with a one-line :class:`MlrayError` naming the file and line when it has zero (or negative) area, lies (partly)
outside its image (``0 <= x0 < x1 <= width``, same for y), names an unknown class, or (box table) names an image
that is not in the folder. Boxes whose width or height is below ``min_patch_size`` are skipped and counted.

Building (:func:`build_patchml`)
===============================

For each requested layout ``RxC`` (R rows, C columns: ``1x1``, ``1x2``, ``2x2``, ``3x3``, ...) and each of its
``n`` images, R*C patches are drawn from the pool (all patches sorted by source image, box and classes) with one
``numpy.random.default_rng(seed)``, layouts in the order given: with ``distinct=True`` (default) no two patches of
an image share a class (their class sets are disjoint: a random permutation of the pool is walked and a patch
is taken when none of its classes is already placed); with ``distinct=False`` R*C different patches are drawn
uniformly (classes may repeat). Patches are placed row by row (slot = r*C + c). Each cell is a
``patch_size`` x ``patch_size`` square; cells are separated from each other and from the border by ``spacing``
pixels of ``background``, so the grid is ``C*P + (C+1)*S`` wide and ``R*P + (R+1)*S`` high. With ``square=True``
(default) the grid is centred on a square canvas of the background colour, so the centre crop of a classifier's
preprocessing (which squares the image) cuts no patch of a ``1x2`` grid; ``square=False`` keeps the grid's own
size. ``resize='fit'`` (default) scales the patch to fit the cell keeping its aspect ratio (bicubic) and centres
it; ``'stretch'`` fills the cell. The same sources, options and seed give byte-identical output (PNG
written by the same Pillow and zlib).

Output folder
=============

``images/<image_id>.png``  the grid images, lossless PNG (image id ``patchml-<R>x<C>-<nnnnn>``)
``labels.csv``             ``image_id, path, label, labels``: ``labels`` = the distinct classes placed
                           (``;``-separated, ascending: the valid-label set); ``label`` = the class of the patch in
                           slot 0 (the single label a single-label benchmark would record for the image). A run
                           config reads it as a dataset: ``{name: ..., images: OUT/labels.csv, layout: manifest}``.
``patches.csv``            the geometry: ``image_id, slot, class, classes, source_image, x0, y0, x1, y1`` (box in
                           the source image) ``, cx0, cy0, cx1, cy1`` (where the resized patch lies on the canvas)
``patchml.json``           the options, the source and the counts (patches read, skipped and why)
"""

from __future__ import annotations

import json
import math
import numbers
import os
import re
import shutil
from collections import OrderedDict
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from .errors import MlrayError, first_line
from .labels import IMAGE_EXTENSIONS, class_index, image_id_from_name, imagenet_vocabulary

LAYOUT_RE = re.compile(r"^\s*([1-9][0-9]?)\s*x\s*([1-9][0-9]?)\s*(?::\s*([0-9]+)\s*)?$")
WNID_RE = re.compile(r"^n[0-9]{8}")
RESIZE_MODES = ("fit", "stretch")
LABELS_FILE = "labels.csv"
PATCHES_FILE = "patches.csv"
INFO_FILE = "patchml.json"
IMAGES_DIR = "images"
_MAX_CACHED_IMAGES = 32


# --------------------------------------------------------------------------------------------------------------
# Patches and their sources


@dataclass(frozen=True, order=True)
class Patch:
    """One object: a box in a source image and its ImageNet classes (``classes[0]`` = the object's class, the
    rest = other classes also valid for it). ``where`` names the file and line it came from (for messages)."""

    source: str
    box: tuple[int, int, int, int]
    classes: tuple[int, ...]
    where: str = field(default="", compare=False)

    @property
    def width(self) -> int:
        return self.box[2] - self.box[0]

    @property
    def height(self) -> int:
        return self.box[3] - self.box[1]


@dataclass
class PatchSource:
    """The patches of a source (sorted), what it was read from, and the entries skipped with the reason."""

    description: str
    patches: list[Patch]
    n_entries: int
    skipped: dict[str, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.patches = sorted(self.patches)


class _Sizes:
    """Image sizes from the file headers (PIL opens lazily), read once per file."""

    def __init__(self) -> None:
        self._sizes: dict[str, tuple[int, int]] = {}

    def __call__(self, path: str, where: str) -> tuple[int, int]:
        if path not in self._sizes:
            from PIL import Image, UnidentifiedImageError

            try:
                with Image.open(path) as im:
                    self._sizes[path] = im.size
            except (OSError, UnidentifiedImageError) as exc:
                raise MlrayError(f"{where}: cannot read image {path} ({first_line(exc)})") from None
        return self._sizes[path]


def _number(value: object, name: str, where: str) -> int:
    if isinstance(value, numbers.Real) and not isinstance(value, bool):
        x = float(value)
    else:
        try:
            x = float(str(value).strip())
        except ValueError:
            raise MlrayError(f"{where}: {name} {value!r} is not a number") from None
    if not math.isfinite(x):
        raise MlrayError(f"{where}: {name} {value!r} is not a finite number")
    return int(round(x))


def parse_class(value: object, where: str) -> int:
    """A class index from an integer (0..999) or an ImageNet-1k wnid (:func:`mlray.labels.class_index`)."""
    return class_index(value, where, wnids=True)


def parse_classes(value: object, where: str) -> tuple[int, ...]:
    """One class or several joined by ``;`` (the object's class first); duplicates are kept once."""
    if isinstance(value, (list, tuple)):
        parts = list(value)
    else:
        parts = [p for p in ("" if value is None else str(value)).split(";") if p.strip()] or [""]
    return tuple(dict.fromkeys(parse_class(p, where) for p in parts))


def checked_box(coords: Sequence[object], size: tuple[int, int], where: str) -> tuple[int, int, int, int]:
    """``(x0, y0, x1, y1)`` as integers, checked: positive area and inside the ``(width, height)`` image."""
    x0, y0, x1, y1 = (_number(v, n, where) for v, n in zip(coords, ("x0", "y0", "x1", "y1")))
    box = (x0, y0, x1, y1)
    if x1 <= x0 or y1 <= y0:
        raise MlrayError(f"{where}: box {box} has zero area (needs x0 < x1 and y0 < y1)")
    w, h = size
    if x0 < 0 or y0 < 0 or x1 > w or y1 > h:
        raise MlrayError(
            f"{where}: box {box} lies outside the image ({w} x {h}: needs 0 <= x0 < x1 <= {w}, 0 <= y0 < y1 <= {h})"
        )
    return box


def _image_files(folder: Path) -> list[Path]:
    """Image files under ``folder`` (recursive, sorted; hidden files/folders skipped)."""
    if not folder.is_dir():
        raise MlrayError(f"{folder}: no such image folder")
    files = []
    for p in folder.rglob("*"):
        rel = p.relative_to(folder)
        if any(part.startswith(".") for part in rel.parts) or not p.is_file():
            continue
        if p.suffix.lower() in IMAGE_EXTENSIONS:
            files.append(p)
    return sorted(files)


def _images_by_id(folder: Path) -> dict[str, Path]:
    """Image id (file stem) -> file; two files with one stem are an error naming both."""
    out: dict[str, Path] = {}
    for p in _image_files(folder):
        image_id = image_id_from_name(p.name)
        if image_id in out:
            raise MlrayError(f"{folder}: two images with the id {image_id!r}: {out[image_id]} and {p}")
        out[image_id] = p
    return out


def _lines(path: Path) -> list[str]:
    if not path.is_file():
        raise MlrayError(f"{path}: no such file")
    try:
        return path.read_text().splitlines()
    except UnicodeDecodeError as exc:
        raise MlrayError(f"{path}: not a text file ({first_line(exc)})") from None


def read_class_file(path: str | os.PathLike) -> dict[str, int]:
    """Image id -> class index from ``file_name,class_index[,wnid]`` (with header, e.g.
    ``derived/ilsvrc2012_val_labels.csv``) or wsolevaluation's ``class_labels.txt`` (``path,class_index``, no
    header)."""
    path = Path(path)
    out: dict[str, int] = {}
    lines = _lines(path)
    start = 0
    if lines and not re.fullmatch(r"\s*[0-9]+\s*", lines[0].split(",")[1] if "," in lines[0] else ""):
        header = [c.strip() for c in lines[0].split(",")]
        if "class_index" not in header or not ({"file_name", "image_id", "path"} & set(header)):
            raise MlrayError(
                f"{path}: line 1: a class file has file_name (or image_id/path) and class_index columns, found {header}"
            )
        name_col = next(header.index(c) for c in ("file_name", "image_id", "path") if c in header)
        cls_col = header.index("class_index")
        start = 1
    else:
        name_col, cls_col = 0, 1
    for n, line in enumerate(lines[start:], start + 1):
        if not line.strip():
            continue
        cells = [c.strip() for c in line.split(",")]
        where = f"{path}: line {n}"
        if len(cells) <= max(name_col, cls_col):
            raise MlrayError(f"{where}: expected at least {max(name_col, cls_col) + 1} comma-separated fields")
        image_id = image_id_from_name(cells[name_col])
        if image_id in out:
            raise MlrayError(f"{where}: image {image_id!r} is listed twice")
        out[image_id] = parse_class(cells[cls_col], where)
    return out


def read_wsolevaluation_boxes(
    localization: str | os.PathLike, class_labels: str | os.PathLike, images: str | os.PathLike
) -> PatchSource:
    """Boxes of wsolevaluation's ILSVRC ``localization.txt`` for the images present in ``images``.

    The class of every box is its image's class (ILSVRC CLS-LOC boxes are per class) from ``class_labels``
    (:func:`read_class_file`). Lines of images absent from the folder are skipped and counted; for the images
    present, a box outside the image, of zero area, or of an image without a class is an error.
    """
    localization, images = Path(localization), Path(images)
    classes = read_class_file(class_labels)
    files = _images_by_id(images)
    sizes = _Sizes()
    patches: list[Patch] = []
    skipped: dict[str, int] = {}
    seen_paths: dict[str, str] = {}
    n_entries = 0
    for n, line in enumerate(_lines(localization), 1):
        if not line.strip():
            continue
        n_entries += 1
        where = f"{localization}: line {n}"
        cells = [c.strip() for c in line.split(",")]
        if len(cells) != 5:
            raise MlrayError(f"{where}: expected image_path,x0,y0,x1,y1 (5 fields), found {len(cells)}")
        image_id = image_id_from_name(cells[0])
        if seen_paths.setdefault(image_id, cells[0]) != cells[0]:
            raise MlrayError(
                f"{where}: {cells[0]!r} and {seen_paths[image_id]!r} have the same file stem; "
                "convert such boxes to a plain table (image_id, class, x0, y0, x1, y1)"
            )
        if image_id not in files:
            skipped["image not in the folder"] = skipped.get("image not in the folder", 0) + 1
            continue
        if image_id not in classes:
            raise MlrayError(f"{where}: unknown class: {image_id} has no entry in {class_labels}")
        src = str(files[image_id])
        box = checked_box(cells[1:], sizes(src, where), where)
        patches.append(Patch(src, box, (classes[image_id],), where))
    return PatchSource(
        f"wsolevaluation boxes {localization} + classes {class_labels} + images {images}", patches, n_entries, skipped
    )


def read_box_table(table: str | os.PathLike, images: str | os.PathLike) -> PatchSource:
    """Boxes from a plain table ``image_id, class, x0, y0, x1, y1`` (CSV, TSV or Parquet) over the images in
    ``images`` (image id = file stem). Every row must be usable (missing image, unknown class, a box of zero
    area or outside its image: an error naming the row)."""
    table, images = Path(table), Path(images)
    if not table.is_file():
        raise MlrayError(f"{table}: no such file")
    suffix = table.suffix.lower()
    if suffix in (".parquet", ".pq"):
        import pyarrow.parquet as pq

        try:
            t = pq.read_table(table)
        except Exception as exc:  # noqa: BLE001 - any unreadable Parquet is one line naming the file
            raise MlrayError(f"{table}: not a readable Parquet file ({first_line(exc)})") from None
        columns = {name: t.column(name).to_pylist() for name in t.column_names}
        first = 1
    else:
        from .io import read_csv_strict

        frame = read_csv_strict(table, str(table), sep="\t" if suffix == ".tsv" else ",")
        columns = {name: frame[name].tolist() for name in frame.columns}
        first = 2
    need = ("image_id", "class", "x0", "y0", "x1", "y1")
    missing = [c for c in need if c not in columns]
    if missing:
        raise MlrayError(
            f"{table}: missing column {', '.join(missing)} "
            f"(a box table has {', '.join(need)}; found {', '.join(columns) or 'none'})"
        )
    files = _images_by_id(images)
    sizes = _Sizes()
    patches = []
    n_rows = len(columns["image_id"])
    for i in range(n_rows):
        where = f"{table}: row {i + first}"
        image_id = image_id_from_name(str(columns["image_id"][i] or "").strip())
        if not image_id:
            raise MlrayError(f"{where}: empty image_id")
        if image_id not in files:
            raise MlrayError(f"{where}: image {image_id!r} not found in {images}")
        cls = parse_classes(columns["class"][i], where)
        src = str(files[image_id])
        box = checked_box([columns[c][i] for c in ("x0", "y0", "x1", "y1")], sizes(src, where), where)
        patches.append(Patch(src, box, cls, where))
    return PatchSource(f"box table {table} + images {images}", patches, n_rows)


def read_whole_images(folder: str | os.PathLike) -> PatchSource:
    """Every image under ``folder`` as one patch (the whole image). Its class is the wnid its file name starts
    with, else the wnid its folder is named by; an image with neither is an 'unknown class' error."""
    folder = Path(folder)
    vocab = imagenet_vocabulary()
    sizes = _Sizes()
    patches = []
    files = _image_files(folder)
    for p in files:
        where = str(p)
        m = WNID_RE.match(p.name)
        wnid = m.group(0) if m else (p.parent.name if p.parent != folder and WNID_RE.fullmatch(p.parent.name) else None)
        if wnid is None:
            raise MlrayError(
                f"{where}: unknown class: the file name does not start with a wnid and its folder is not named by one"
            )
        if wnid not in vocab.index_of:
            raise MlrayError(f"{where}: unknown class {wnid!r} (not one of the 1,000 ImageNet-1k wnids)")
        w, h = sizes(str(p), where)
        patches.append(Patch(str(p), (0, 0, w, h), (vocab.index_of[wnid],), where))
    if not patches:
        raise MlrayError(f"{folder}: no images found")
    return PatchSource(f"whole images {folder}", patches, len(files))


def open_source(
    boxes: str | os.PathLike | None = None,
    images: str | os.PathLike | None = None,
    class_labels: str | os.PathLike | None = None,
    whole: str | os.PathLike | None = None,
) -> PatchSource:
    """The patch source the arguments name: ``whole`` (whole images with their wnid), or ``boxes`` + ``images``:
    with ``class_labels`` the box file is wsolevaluation's ``localization.txt``, without it a plain box table."""
    if (whole is None) == (boxes is None):
        raise MlrayError(
            "patchml: give either a box file (--boxes with --images) or a folder of whole images (--whole)"
        )
    if whole is not None:
        if images is not None or class_labels is not None:
            raise MlrayError(
                "patchml: --whole takes no --images or --class-labels (the class is the wnid in the file name)"
            )
        return read_whole_images(whole)
    if images is None or boxes is None:
        raise MlrayError(
            f"patchml: {boxes}: a box file needs --images, the folder of the images the boxes are drawn on"
        )
    if class_labels is not None:
        return read_wsolevaluation_boxes(boxes, class_labels, images)
    return read_box_table(boxes, images)


# --------------------------------------------------------------------------------------------------------------
# Building the grid images


@dataclass(frozen=True)
class PatchMLOptions:
    """How to build a PatchML set (see the module docstring). ``layouts``: ``(rows, cols, n_images)`` triples."""

    layouts: tuple[tuple[int, int, int], ...]
    patch_size: int = 224
    spacing: int = 0
    background: tuple[int, int, int] = (0, 0, 0)
    distinct: bool = True
    min_patch_size: int = 1
    resize: str = "fit"
    square: bool = True
    seed: int = 0

    def __post_init__(self) -> None:
        if not self.layouts:
            raise MlrayError("patchml: give at least one layout (e.g. 2x2)")
        for r, c, n in self.layouts:
            if r < 1 or c < 1 or n < 0:
                raise MlrayError(f"patchml: layout {r}x{c} with {n} images is not valid")
        if self.patch_size < 8:
            raise MlrayError(f"patchml: patch size must be at least 8 pixels, got {self.patch_size}")
        if self.spacing < 0:
            raise MlrayError(f"patchml: spacing must be >= 0, got {self.spacing}")
        if len(self.background) != 3 or any(not 0 <= int(v) <= 255 for v in self.background):
            raise MlrayError(f"patchml: background must be an RGB triple of 0..255, got {self.background!r}")
        if self.min_patch_size < 1:
            raise MlrayError(f"patchml: minimum patch size must be >= 1, got {self.min_patch_size}")
        if self.resize not in RESIZE_MODES:
            raise MlrayError(f"patchml: resize must be one of {', '.join(RESIZE_MODES)}, got {self.resize!r}")
        if self.seed < 0:
            raise MlrayError(f"patchml: seed must be >= 0, got {self.seed}")


def parse_layouts(specs: Iterable[str], per_layout: int) -> tuple[tuple[int, int, int], ...]:
    """Layout specs to ``(rows, cols, n)``.

    ``['1x2', '2x2:5', '3x3,1x1']`` -> ``((1, 2, per_layout), (2, 2, 5), (3, 3, per_layout), (1, 1, per_layout))``.
    """
    out: list[tuple[int, int, int]] = []
    for spec in specs:
        for part in str(spec).split(","):
            if not part.strip():
                continue
            m = LAYOUT_RE.match(part)
            if not m:
                raise MlrayError(f"patchml: layout {part.strip()!r} is not ROWSxCOLS[:N] (e.g. 2x2 or 2x2:50)")
            r, c = int(m.group(1)), int(m.group(2))
            n = int(m.group(3)) if m.group(3) is not None else per_layout
            if any((r, c) == (a, b) for a, b, _ in out):
                raise MlrayError(f"patchml: layout {r}x{c} is given twice")
            out.append((r, c, n))
    return tuple(out)


def parse_color(text: str) -> tuple[int, int, int]:
    """An RGB colour from ``'128,128,128'``, ``'#808080'`` or a colour name (``'gray'``)."""
    from PIL import ImageColor

    t = str(text).strip()
    if re.fullmatch(r"\d{1,3}\s*,\s*\d{1,3}\s*,\s*\d{1,3}", t):
        rgb = tuple(int(v) for v in t.split(","))
    else:
        try:
            rgb = ImageColor.getrgb(t)[:3]
        except ValueError:
            raise MlrayError(f"patchml: background {text!r} is not a colour (R,G,B, #rrggbb or a name)") from None
    if any(not 0 <= v <= 255 for v in rgb):
        raise MlrayError(f"patchml: background {text!r} has a value outside 0..255")
    return rgb  # type: ignore[return-value]


def grid_size(rows: int, cols: int, patch_size: int, spacing: int) -> tuple[int, int]:
    """(width, height) of a ``rows x cols`` grid: cells plus spacing between them and around the border."""
    return cols * patch_size + (cols + 1) * spacing, rows * patch_size + (rows + 1) * spacing


def canvas_size(rows: int, cols: int, patch_size: int, spacing: int, square: bool) -> tuple[int, int]:
    """(width, height) of the canvas: the grid, padded to a square with ``square``."""
    w, h = grid_size(rows, cols, patch_size, spacing)
    return (max(w, h), max(w, h)) if square else (w, h)


def cell_origin(slot: int, rows: int, cols: int, patch_size: int, spacing: int, square: bool) -> tuple[int, int]:
    """Top-left corner on the canvas of grid cell ``slot`` (row-major; the grid is centred on a square canvas)."""
    w, h = grid_size(rows, cols, patch_size, spacing)
    cw, ch = canvas_size(rows, cols, patch_size, spacing, square)
    r, c = divmod(slot, cols)
    return (cw - w) // 2 + spacing + c * (patch_size + spacing), (ch - h) // 2 + spacing + r * (patch_size + spacing)


def fitted_size(width: int, height: int, patch_size: int, resize: str) -> tuple[int, int]:
    """Size of a ``width x height`` patch once resized into a ``patch_size`` cell."""
    if resize == "stretch":
        return patch_size, patch_size
    scale = patch_size / max(width, height)
    return max(1, min(patch_size, round(width * scale))), max(1, min(patch_size, round(height * scale)))


def choose_patches(pool: Sequence[Patch], n: int, distinct: bool, rng: np.random.Generator, layout: str) -> list[int]:
    """Indices of ``n`` patches of ``pool`` for one image (see the module docstring for the rule)."""
    if n > len(pool):
        raise MlrayError(f"patchml: layout {layout} needs {n} patches per image but the source has only {len(pool)}")
    if not distinct:
        return [int(i) for i in rng.choice(len(pool), size=n, replace=False)]
    chosen: list[int] = []
    used: set[int] = set()
    for i in rng.permutation(len(pool)):
        cls = set(pool[i].classes)
        if cls & used:
            continue
        chosen.append(int(i))
        used |= cls
        if len(chosen) == n:
            return chosen
    n_classes = len({p.classes[0] for p in pool})
    raise MlrayError(
        f"patchml: layout {layout} needs {n} patches of distinct classes per image, but the source's patches "
        f"cover only {n_classes} classes (use fewer cells or allow repeated classes)"
    )


class _ImageCache:
    """Decoded RGB source images, the last few kept (patches of one image are usually drawn more than once)."""

    def __init__(self, size: int = _MAX_CACHED_IMAGES) -> None:
        self.size = size
        self._images: OrderedDict[str, object] = OrderedDict()

    def get(self, path: str, where: str):
        from PIL import Image, UnidentifiedImageError

        if path in self._images:
            self._images.move_to_end(path)
            return self._images[path]
        try:
            with Image.open(path) as im:
                img = im.convert("RGB")
        except (OSError, UnidentifiedImageError) as exc:
            raise MlrayError(f"{where}: cannot read image {path} ({first_line(exc)})") from None
        self._images[path] = img
        if len(self._images) > self.size:
            self._images.popitem(last=False)
        return img


def render_grid(
    patches: Sequence[Patch], rows: int, cols: int, options: PatchMLOptions, cache: _ImageCache | None = None
):
    """The canvas (PIL RGB image) with ``patches`` placed row by row, and each patch's canvas box."""
    from PIL import Image

    cache = cache or _ImageCache()
    P, S = options.patch_size, options.spacing
    canvas = Image.new("RGB", canvas_size(rows, cols, P, S, options.square), tuple(int(v) for v in options.background))
    boxes = []
    for slot, patch in enumerate(patches):
        crop = cache.get(patch.source, patch.where).crop(patch.box)
        w, h = fitted_size(patch.width, patch.height, P, options.resize)
        if (w, h) != crop.size:
            crop = crop.resize((w, h), Image.Resampling.BICUBIC)
        ox, oy = cell_origin(slot, rows, cols, P, S, options.square)
        x, y = ox + (P - w) // 2, oy + (P - h) // 2
        canvas.paste(crop, (x, y))
        boxes.append((x, y, x + w, y + h))
    return canvas, boxes


@dataclass
class PatchMLResult:
    out: Path
    labels: Path
    patches: Path
    n_images: dict[str, int]
    n_patches_used: int
    n_pool: int
    skipped: dict[str, int]
    multi_fraction: float


def _prepare_out(out: Path) -> None:
    """Create ``out``; a previous PatchML output there is replaced, any other non-empty folder is an error."""
    if out.exists() and not out.is_dir():
        raise MlrayError(f"{out}: exists and is not a folder")
    if out.is_dir() and any(out.iterdir()):
        if not (out / INFO_FILE).is_file():
            raise MlrayError(
                f"{out}: folder is not empty and holds no earlier PatchML output ({INFO_FILE}); choose another --out"
            )
        shutil.rmtree(out / IMAGES_DIR, ignore_errors=True)
        for name in (LABELS_FILE, PATCHES_FILE, INFO_FILE):
            (out / name).unlink(missing_ok=True)
    (out / IMAGES_DIR).mkdir(parents=True, exist_ok=True)


def _write_csv(path: Path, header: Sequence[str], rows: Iterable[Sequence[object]]) -> None:
    import csv

    with open(path, "w", newline="") as fh:
        w = csv.writer(fh, lineterminator="\n")
        w.writerow(header)
        w.writerows(rows)


def build_patchml(
    source: PatchSource,
    options: PatchMLOptions,
    out: str | os.PathLike,
    grids: dict[str, list[list[int]]] | None = None,
) -> PatchMLResult:
    """Write a PatchML set into ``out`` (see the module docstring for the rule and the files).

    ``grids`` (optional) fixes the patches instead of drawing them: layout ``'RxC'`` -> a list of images, each a
    list of R*C indices into the filtered, sorted pool (``[[0], [1], ...]`` with ``'1x1'`` = every patch alone).
    Layouts in ``grids`` replace the drawn images of that layout.
    """
    out = Path(out)
    pool = [p for p in source.patches if p.width >= options.min_patch_size and p.height >= options.min_patch_size]
    skipped = dict(source.skipped)
    n_small = len(source.patches) - len(pool)
    if n_small:
        skipped[f"smaller than {options.min_patch_size} px"] = n_small
    if not pool:
        raise MlrayError(f"patchml: no usable patches in {source.description} (skipped: {skipped or 'none'})")
    names = [f"{r}x{c}" for r, c, _ in options.layouts]
    unknown = sorted(set(grids or {}) - set(names))
    if unknown:
        raise MlrayError(
            f"patchml: grids given for layout {unknown[0]}, which is not among the layouts ({', '.join(names)})"
        )
    rng = np.random.default_rng(options.seed)
    plan: list[tuple[int, int, list[int]]] = []
    for rows, cols, n in options.layouts:
        name = f"{rows}x{cols}"
        if grids is not None and name in grids:
            for i, idx in enumerate(grids[name]):
                if len(idx) != rows * cols or any(not 0 <= j < len(pool) for j in idx):
                    raise MlrayError(
                        f"patchml: grid {i} of layout {name} must list {rows * cols} patch indices "
                        f"in 0..{len(pool) - 1}"
                    )
                plan.append((rows, cols, list(idx)))
            continue
        for _ in range(n):
            plan.append((rows, cols, choose_patches(pool, rows * cols, options.distinct, rng, name)))
    _prepare_out(out)
    cache = _ImageCache()
    label_rows, patch_rows = [], []
    counters: dict[str, int] = dict.fromkeys(names, 0)
    used: set[int] = set()
    n_multi = 0
    for rows, cols, idx in plan:
        name = f"{rows}x{cols}"
        k = counters.get(name, 0)
        counters[name] = k + 1
        image_id = f"patchml-{name}-{k:05d}"
        patches = [pool[j] for j in idx]
        canvas, boxes = render_grid(patches, rows, cols, options, cache)
        rel = f"{IMAGES_DIR}/{image_id}.png"
        canvas.save(out / rel, format="PNG", optimize=False, compress_level=6)
        labels = sorted({c for p in patches for c in p.classes})
        n_multi += len(labels) >= 2
        label_rows.append((image_id, rel, patches[0].classes[0], ";".join(map(str, labels))))
        for slot, (p, cb) in enumerate(zip(patches, boxes)):
            patch_rows.append((image_id, slot, p.classes[0], ";".join(map(str, p.classes)), p.source, *p.box, *cb))
        used.update(idx)
    header = [
        "image_id",
        "slot",
        "class",
        "classes",
        "source_image",
        "x0",
        "y0",
        "x1",
        "y1",
        "cx0",
        "cy0",
        "cx1",
        "cy1",
    ]
    _write_csv(out / PATCHES_FILE, header, patch_rows)
    info = {
        "source": source.description,
        "options": {**asdict(options), "layouts": [f"{r}x{c}:{n}" for r, c, n in options.layouts]},
        "grids_given": sorted(grids) if grids else [],
        "n_source_entries": source.n_entries,
        "n_pool": len(pool),
        "skipped": skipped,
        "n_images": counters,
        "n_patches_used": len(used),
    }
    (out / INFO_FILE).write_text(json.dumps(info, indent=2, sort_keys=True) + "\n")
    _write_csv(out / LABELS_FILE, ["image_id", "path", "label", "labels"], label_rows)  # last: marks a finished set
    total = len(label_rows)
    return PatchMLResult(
        out, out / LABELS_FILE, out / PATCHES_FILE, counters, len(used), len(pool), skipped,
        n_multi / total if total else float("nan"),
    )  # fmt: skip
