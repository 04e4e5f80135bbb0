"""Image datasets -> deterministic shards of (image_id, original file bytes) -> decoded RGB images.

This module is plain Python (no Ray): the objects it returns are small and picklable, so the Ray Data pipeline
can plan once on the driver and call :func:`read_shard` / :func:`decode_image` inside its tasks.

Where the images are (``images:``) is a local path or any URI ``pyarrow.fs.FileSystem.from_uri`` understands
(``s3://bucket/prefix``, ``gs://...``, ``file:///...``). Local paths go through pyarrow's ``LocalFileSystem``
too, so there is one code path for listing and reading.

Layouts (``layout:``)
=====================

=====================  =================================================================================
``imagenet-val-flat``  every image directly in one folder (``ILSVRC2012_val_00000001.JPEG``, ...); the
                       layout gives no labels (they come from the label sources). An image in a subfolder
                       is an error (use a class-folder layout or a manifest).
``wnid-folders``       ``<wnid>/<file>`` (torchvision ``ImageFolder`` / the ImageNet train tree): the
                       original label is the folder's wnid in the ImageNet-1k vocabulary. A folder holding
                       images whose name is not one of the 1,000 wnids is an error naming it.
``imagenetv2``         the public ImageNetV2 tarballs: ``<class_index>/<id>.jpeg``. Folder names are the
                       integers 0..999 and *are* the class index (folder ``10`` is class 10, never the
                       string-sorted position); any other folder name holding images is an error.
``manifest``           ``images:`` names a CSV/TSV/Parquet file with ``path`` (+ ``image_id``, else the
                       file stem) and optional ``label`` (int, -1/empty = unknown) and/or ``labels`` (a list,
                       or a ``;``-separated string; an empty CSV cell = the empty set, a Parquet null = not
                       annotated). Relative paths resolve against the manifest's folder; a URI must be on
                       the manifest's filesystem. Rows are taken as listed (no extension filter) and are not
                       stat'ed while planning: a missing file is a read error when its shard is read.
``parquet-shards``     Parquet files (a folder of them, or one file) with ``image_id``, ``image`` (binary,
                       or a Hugging Face ``struct<bytes, path>``) + optional ``label`` / ``labels``.
                       ``errors.parquet`` (the quarantine :func:`write_parquet_shards` writes) is skipped.
``webdataset``         ``.tar`` / ``.tar.gz`` / ``.tgz`` shards (a folder of them, or one file). Members are
                       grouped into samples by key (WebDataset's rule: the member name up to the first dot
                       of its base name); the image is the member with an image extension, an optional
                       ``cls`` member (integer text) is the original label; image_id = the key's base name.
                       A sample with no image member is skipped and counted; two image members of one
                       sample are an error.
=====================  =================================================================================

In folder layouts, files whose extension is not in :data:`mlray.labels.IMAGE_EXTENSIONS` (README, manifest.csv,
.txt ...) and hidden files/folders (a path part starting with ``.``: ``.DS_Store``, macOS ``._x.jpg``,
``.ipynb_checkpoints``) are skipped and counted in ``n_skipped_non_image`` -- never an error. Two files with
the same image id (file stem) anywhere in a dataset are an error naming both paths.

Shards
======

:func:`plan_shards` lists a dataset once and returns an :class:`ImagePlan`. File layouts (flat, wnid-folders,
imagenetv2, manifest) are sorted by image id and cut into shards of ``shard_size`` images; ``parquet-shards``
cuts each Parquet file (sorted by path) into row ranges of at most ``shard_size`` rows; ``webdataset`` has one
shard per tar. Shard ids are ``s00000``, ``s00001``, ... in that order, so the same input and ``shard_size``
always give the same shards (a resumed run can skip the ones it finished). :func:`read_shard` yields
``(image_id, bytes, None)`` or ``(image_id, None, ImageError('read', reason))`` for every image the shard
planned -- each planned image exactly once, and a missing file, member or row is an error item, never an
exception.

Decoding
========

:func:`decode_image` does what timm's loader does (``Image.open(f).convert('RGB')``) with explicit failures:
empty data (stage ``read``), not an image, a decompression bomb (width x height from the header checked against
``max_pixels`` *before* decoding, independent of Pillow's global ``MAX_IMAGE_PIXELS``), and truncated or corrupt
data (a full ``load()``; mlray never sets ``ImageFile.LOAD_TRUNCATED_IMAGES`` and relies on Pillow's default,
False). EXIF orientation is NOT applied: timm's ``validate.py`` does not apply it either, and the published
numbers were produced without it. Only the raster formats of ``IMAGE_EXTENSIONS`` are opened (JPEG/MPO, PNG,
WebP, BMP, GIF, TIFF, PPM/PGM), whatever the file is named; Pillow's other plugins (EPS, PDF, ...) are never
tried. Corrupt JPEG data that libjpeg recovers from with a warning decodes (as it does in timm).
"""

from __future__ import annotations

import functools
import io
import numbers
import os
import posixpath
import re
import struct
import tarfile
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import unquote, urlparse

import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from .errors import MlrayError
from .io import scheme_of
from .labels import IMAGE_EXTENSIONS, SourceLabels, image_id_from_name
from .labels import NUM_CLASSES, imagenet_vocabulary

LAYOUTS = ("imagenet-val-flat", "wnid-folders", "imagenetv2", "manifest", "parquet-shards", "webdataset")
FILE_LAYOUTS = ("imagenet-val-flat", "wnid-folders", "imagenetv2", "manifest")
DEFAULT_SHARD_SIZE = 1000
DEFAULT_MAX_PIXELS = 178_956_970  # = 2 x Pillow's default MAX_IMAGE_PIXELS (the size Pillow refuses outright)
ERRORS_FILE = "errors.parquet"
PARQUET_EXTENSIONS = (".parquet", ".pq")
TAR_EXTENSIONS = (".tar", ".tar.gz", ".tgz")
MANIFEST_EXTENSIONS = (".csv", ".tsv", ".parquet", ".pq")
STAGES = ("read", "decode")

LABEL_LIST = pa.list_(pa.int16())
SHARD_SCHEMA = pa.schema(
    [("image_id", pa.string()), ("image", pa.binary()), ("label", pa.int16()), ("labels", LABEL_LIST)]
)
ERRORS_SCHEMA = pa.schema(
    [("image_id", pa.string()), ("path", pa.string()), ("stage", pa.string()), ("error", pa.string())]
)
_SHARD_COMPRESSION = {"image_id": "SNAPPY", "image": "NONE", "label": "SNAPPY", "labels": "SNAPPY"}
_PART_NAME = re.compile(r"^part-\d{5,}\.parquet$")
# WebDataset's key rule (webdataset.tariterators.base_plus_ext): key = up to the first dot of the base name.
_WDS_NAME = re.compile(r"^((?:.*/|)[^.]+)[.]([^/]*)$")
# Pillow formats tried, in order (JPEG's factory also returns MPO files). Nothing else is ever opened.
_PIL_FORMATS = ("JPEG", "PNG", "WEBP", "BMP", "GIF", "TIFF", "PPM")


# --------------------------------------------------------------------------------------------------------------
# Errors of one image


class ImageError(Exception):
    """One image that could not be read or decoded: ``stage`` ('read' | 'decode') and a one-line ``reason``.

    ``str(err)`` is ``'<stage>: <reason>'``. Picklable (it crosses Ray task boundaries).
    """

    def __init__(self, stage: str, reason: str):
        reason = " ".join(str(reason).split())  # one line
        super().__init__(stage, reason)
        self.stage = stage
        self.reason = reason

    def __str__(self) -> str:
        return f"{self.stage}: {self.reason}"


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    line = text.splitlines()[0] if text else type(exc).__name__
    return line if len(line) <= 300 else line[:297] + "..."


# --------------------------------------------------------------------------------------------------------------
# Filesystems


@dataclass(frozen=True)
class _Root:
    """Where a dataset (or an output) lives: a pyarrow filesystem and the path inside it."""

    fs: pafs.FileSystem
    path: str
    uri: str | None  # the URI the filesystem was built from; None = local path (LocalFileSystem)

    @property
    def local(self) -> bool:
        return isinstance(self.fs, pafs.LocalFileSystem)

    def show(self, inner: str | None = None) -> str:
        return _show(self.uri, self.path if inner is None else inner)


def _show(uri: str | None, inner: str) -> str:
    """How a path inside a filesystem is shown to the user: the local path, or ``scheme://path``."""
    if uri is None:
        return inner
    return f"{scheme_of(uri)}://{inner}"


def _open_root(where: str | os.PathLike, base_dir: str | os.PathLike | None = None) -> _Root:
    text = os.fspath(where)
    if not text.strip():
        raise MlrayError("images: empty path")
    if scheme_of(text) is None:
        local = Path(text).expanduser()
        if not local.is_absolute() and base_dir is not None:
            local = Path(base_dir) / local
        return _Root(pafs.LocalFileSystem(), os.path.abspath(local), None)
    try:
        fs, inner = pafs.FileSystem.from_uri(text)
    except Exception as exc:  # unknown scheme, bad URI, missing credentials / region
        raise MlrayError(f"{text}: cannot open this location ({type(exc).__name__}: {_first_line(exc)})") from None
    inner = inner.rstrip("/") or inner
    return _Root(fs, inner, text)


@functools.lru_cache(maxsize=32)
def _filesystem(uri: str | None) -> pafs.FileSystem:
    """The filesystem of a shard, built once per process (Ray workers re-use it across shards)."""
    if uri is None:
        return pafs.LocalFileSystem()
    try:
        return pafs.FileSystem.from_uri(uri)[0]
    except Exception as exc:
        raise MlrayError(f"{uri}: cannot open this location ({type(exc).__name__}: {_first_line(exc)})") from None


def _list_files(root: _Root) -> list[tuple[str, str]]:
    """Every file under ``root`` as (relative posix path, path inside the filesystem), sorted."""
    try:
        infos = root.fs.get_file_info(pafs.FileSelector(root.path, recursive=True))
    except FileNotFoundError:
        raise MlrayError(f"{root.show()}: no such folder") from None
    except OSError as exc:
        raise MlrayError(f"{root.show()}: cannot list the folder ({_first_line(exc)})") from None
    base = root.path.rstrip("/") + "/"
    out = []
    for info in infos:
        if info.type != pafs.FileType.File:
            continue
        rel = info.path[len(base) :] if info.path.startswith(base) else posixpath.basename(info.path)
        out.append((rel, info.path))
    out.sort()
    return out


def _root_type(root: _Root) -> pafs.FileType:
    try:
        return root.fs.get_file_info(root.path).type
    except OSError as exc:
        raise MlrayError(f"{root.show()}: cannot read ({_first_line(exc)})") from None


def _hidden(rel: str) -> bool:
    return any(part.startswith(".") for part in rel.split("/"))


def _is_image_name(name: str) -> bool:
    return posixpath.splitext(name)[1].lower() in IMAGE_EXTENSIONS


def _read_reason(exc: BaseException, shown: str) -> str:
    if isinstance(exc, FileNotFoundError):
        return f"no such file: {shown}"
    if isinstance(exc, PermissionError):
        return f"permission denied: {shown}"
    if isinstance(exc, IsADirectoryError) or "is a directory" in str(exc):
        return f"is a folder, not a file: {shown}"
    return f"{shown}: {_first_line(exc)}"


# --------------------------------------------------------------------------------------------------------------
# Plans and shards


@dataclass(frozen=True)
class Shard:
    """What one task reads. Plain strings and tuples only: cheap to pickle, equal across identical plans.

    - file layouts: ``paths[i]`` is the file of ``image_ids[i]`` (a path inside ``filesystem``);
    - ``parquet-shards``: rows ``rows = (start, stop)`` of the Parquet ``file``;
    - ``webdataset``: the tar ``file``; ``paths[i]`` is the member holding ``image_ids[i]``.

    ``filesystem`` is the URI the pyarrow filesystem is built from (None = local).
    """

    shard_id: str
    layout: str
    image_ids: tuple[str, ...]
    paths: tuple[str, ...] = ()
    file: str | None = None
    rows: tuple[int, int] | None = None
    filesystem: str | None = None

    def __len__(self) -> int:
        return len(self.image_ids)

    @property
    def kind(self) -> str:
        """``files``, ``parquet`` or ``tar``."""
        if self.layout == "parquet-shards":
            return "parquet"
        if self.layout == "webdataset":
            return "tar"
        return "files"

    @property
    def items(self) -> list[tuple[str, str]]:
        """(image_id, where): the file (file layouts), ``tar:member`` (webdataset) or ``file#row`` (Parquet)."""
        return [(image_id, self.source(i)) for i, image_id in enumerate(self.image_ids)]

    def source(self, i: int) -> str:
        """Where image ``i`` of this shard comes from, as shown to the user."""
        if self.kind == "files":
            return _show(self.filesystem, self.paths[i])
        if self.kind == "tar":
            return f"{_show(self.filesystem, self.file or '')}:{self.paths[i]}"
        start = self.rows[0] if self.rows else 0
        return f"{_show(self.filesystem, self.file or '')}#row{start + i}"


@dataclass
class ImagePlan:
    """A listed dataset: its shards, all its image ids (sorted), and the labels the layout itself carries.

    ``labels`` is None when the layout carries none (``imagenet-val-flat``; a manifest / Parquet / tar without
    label columns or members); otherwise its format is ``layout:<name>`` and its rows follow ``image_ids``.
    """

    images: str
    layout: str
    shard_size: int
    shards: list[Shard]
    image_ids: list[str]
    labels: SourceLabels | None = None
    n_skipped_non_image: int = 0
    skipped_examples: list[str] = field(default_factory=list)  # a few skipped names, for messages

    @property
    def n_images(self) -> int:
        return len(self.image_ids)


def _chunk_files(
    entries: dict[str, str], layout: str, shard_size: int, uri: str | None
) -> tuple[list[str], list[Shard]]:
    ids = sorted(entries)
    shards = [
        Shard(
            shard_id=_shard_id(k),
            layout=layout,
            image_ids=tuple(ids[start : start + shard_size]),
            paths=tuple(entries[i] for i in ids[start : start + shard_size]),
            filesystem=uri,
        )
        for k, start in enumerate(range(0, len(ids), shard_size))
    ]
    return ids, shards


def _shard_id(k: int) -> str:
    return f"s{k:05d}"


class _Skips:
    def __init__(self) -> None:
        self.n = 0
        self.examples: list[str] = []

    def add(self, name: str) -> None:
        self.n += 1
        if len(self.examples) < 5:
            self.examples.append(name)


class _Ids:
    """image id -> where it was seen; a second sighting is an error naming both."""

    def __init__(self, shown: str):
        self.shown = shown
        self.where: dict[str, str] = {}

    def add(self, image_id: str, where: str) -> None:
        if image_id in self.where:
            raise MlrayError(f"{self.shown}: duplicate image id {image_id!r}: {self.where[image_id]} and {where}")
        self.where[image_id] = where


def plan_shards(
    images: str | os.PathLike,
    layout: str,
    shard_size: int = DEFAULT_SHARD_SIZE,
    *,
    base_dir: str | os.PathLike | None = None,
) -> ImagePlan:
    """List a dataset and cut it into deterministic shards (see the module docstring for the layouts).

    ``images`` is a local path (relative to ``base_dir`` when given, else the working folder) or a URI.
    Every problem with the input is a one-line :class:`MlrayError` naming the file / folder / row.
    """
    if layout not in LAYOUTS:
        raise MlrayError(f"unknown image layout {layout!r}; known layouts: {', '.join(LAYOUTS)}")
    if isinstance(shard_size, bool) or not isinstance(shard_size, int) or shard_size < 1:
        raise MlrayError(f"shard_size must be a positive integer, got {shard_size!r}")
    root = _open_root(images, base_dir)
    if layout == "manifest":
        return _plan_manifest(root, shard_size)
    if layout == "parquet-shards":
        return _plan_parquet(root, shard_size)
    if layout == "webdataset":
        return _plan_webdataset(root, shard_size)
    return _plan_folder(root, layout, shard_size)


# ---------------------------------------------------------------- folder layouts


def _plan_folder(root: _Root, layout: str, shard_size: int) -> ImagePlan:
    kind = _root_type(root)
    if kind == pafs.FileType.NotFound:
        raise MlrayError(f"{root.show()}: no such folder")
    if kind != pafs.FileType.Directory:
        raise MlrayError(f"{root.show()}: is a file; layout {layout} expects a folder of images")
    skips = _Skips()
    ids = _Ids(root.show())
    entries: dict[str, str] = {}
    classes: dict[str, int] = {}
    folder_class: dict[str, int] = {}
    for rel, inner in _list_files(root):
        parts = rel.split("/")
        if _hidden(rel) or not _is_image_name(parts[-1]):
            skips.add(rel)
            continue
        if layout == "imagenet-val-flat":
            if len(parts) > 1:
                raise MlrayError(
                    f"{root.show(inner)}: layout imagenet-val-flat expects every image directly in "
                    f"{root.show()}, found one in a subfolder (use layout wnid-folders, imagenetv2 or manifest)"
                )
        else:
            if len(parts) == 1:
                pattern = "<wnid>/<file>" if layout == "wnid-folders" else "<class_index>/<file>"
                raise MlrayError(
                    f"{root.show(inner)}: layout {layout} expects images inside class folders ({pattern}), "
                    "found one at the top level"
                )
            folder = parts[0]
            if folder not in folder_class:
                folder_class[folder] = _folder_class(root, layout, folder)
        image_id = image_id_from_name(parts[-1])
        ids.add(image_id, root.show(inner))
        entries[image_id] = inner
        if layout != "imagenet-val-flat":
            classes[image_id] = folder_class[parts[0]]
    sorted_ids, shards = _chunk_files(entries, layout, shard_size, root.uri)
    labels = None
    if layout != "imagenet-val-flat":
        labels = SourceLabels(root.show(), f"layout:{layout}", sorted_ids, original=[classes[i] for i in sorted_ids])
    return ImagePlan(root.show(), layout, shard_size, shards, sorted_ids, labels, skips.n, skips.examples)


def _folder_class(root: _Root, layout: str, folder: str) -> int:
    shown = root.show(posixpath.join(root.path, folder))
    if layout == "wnid-folders":
        index = imagenet_vocabulary().index_of.get(folder)
        if index is None:
            raise MlrayError(
                f"{shown}: folder {folder!r} is not an ImageNet-1k wnid (layout wnid-folders expects "
                "<wnid>/<file>, e.g. n01440764/...)"
            )
        return index
    if not re.fullmatch(r"[0-9]+", folder) or not 0 <= int(folder) < NUM_CLASSES:
        raise MlrayError(
            f"{shown}: folder {folder!r} is not a class index 0..{NUM_CLASSES - 1} "
            "(layout imagenetv2 expects <class_index>/<file>)"
        )
    return int(folder)


# ---------------------------------------------------------------- labels in manifests and Parquet shards


def _class_index(value: object, where: str, allow_unknown: bool) -> int:
    """A class index from an int / integer string; -1, None and '' are 'unknown' where allowed."""
    if value is None or (isinstance(value, str) and not value.strip()):
        if allow_unknown:
            return -1
        raise MlrayError(f"{where}: empty class index")
    if isinstance(value, numbers.Integral) and not isinstance(value, bool):
        idx = int(value)
    elif isinstance(value, numbers.Real) and not isinstance(value, bool) and float(value).is_integer():
        idx = int(value)
    elif isinstance(value, str) and re.fullmatch(r"-?[0-9]+", value.strip()):
        idx = int(value.strip())
    else:
        raise MlrayError(f"{where}: label {value!r} is not a class index")
    if allow_unknown and idx == -1:
        return -1
    if not 0 <= idx < NUM_CLASSES:
        raise MlrayError(f"{where}: class index {idx} is outside 0..{NUM_CLASSES - 1}")
    return idx


def _label_set(value: object, where: str) -> list[int] | None:
    """A valid-label set: a list, or a ';'-separated string ('' = the empty set); None = not annotated."""
    if value is None:
        return None
    if isinstance(value, str):
        items: Sequence[object] = [p.strip() for p in value.split(";") if p.strip()]
    elif isinstance(value, (list, tuple)):
        items = value
    else:
        raise MlrayError(f"{where}: labels {value!r} is not a list of class indices")
    return list(dict.fromkeys(_class_index(v, where, allow_unknown=False) for v in items))


def _labels_from_columns(
    shown: str, layout: str, ids: list[str], label: dict[str, int] | None, labels: dict[str, list[int] | None] | None
) -> SourceLabels | None:
    if label is None and labels is None:
        return None
    return SourceLabels(
        shown,
        f"layout:{layout}",
        list(ids),
        original=[label.get(i, -1) for i in ids] if label is not None else None,
        valid=[labels.get(i) for i in ids] if labels is not None else None,
    )


# ---------------------------------------------------------------- manifest


def _read_manifest_columns(root: _Root) -> tuple[dict[str, list[object]], int]:
    """The manifest's columns (as Python lists) and the number of its first data row (for messages)."""
    shown = root.show()
    suffix = posixpath.splitext(root.path)[1].lower()
    if suffix not in MANIFEST_EXTENSIONS:
        raise MlrayError(f"{shown}: a manifest must be .csv, .tsv, .parquet or .pq (layout manifest)")
    try:
        with root.fs.open_input_file(root.path) as fh:
            data = fh.read()
    except OSError as exc:
        raise MlrayError(f"{_read_reason(exc, shown)}") from None
    if suffix in (".parquet", ".pq"):
        try:
            table = pq.read_table(pa.BufferReader(data))
        except (pa.ArrowException, OSError) as exc:
            raise MlrayError(f"{shown}: not a readable Parquet file ({_first_line(exc)})") from None
        return {name: table.column(name).to_pylist() for name in table.column_names}, 1
    import pandas as pd

    try:
        frame = pd.read_csv(io.BytesIO(data), dtype=str, keep_default_na=False, sep="\t" if suffix == ".tsv" else ",")
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise MlrayError(f"{shown}: malformed CSV: {_first_line(exc)}") from None
    frame.columns = [str(c).strip() for c in frame.columns]
    return {name: [str(v) for v in frame[name].tolist()] for name in frame.columns}, 2


def _manifest_entry(root: _Root, folder: str, raw: str, where: str) -> str:
    """The path inside the manifest's filesystem of a manifest row's ``path``."""
    scheme = scheme_of(raw)
    if scheme is not None:
        root_scheme = scheme_of(root.uri) if root.uri else None
        if scheme == "file" and root.local:
            return os.path.normpath(unquote(urlparse(raw).path))
        if root_scheme is not None and scheme == root_scheme and scheme in ("s3", "gs", "gcs"):
            return posixpath.normpath(raw.split("://", 1)[1])
        raise MlrayError(
            f"{where}: {raw!r} is not on the manifest's filesystem ({root_scheme or 'local'}); "
            "keep the images next to the manifest or give relative paths"
        )
    if raw.startswith("/"):
        return os.path.normpath(raw) if root.local else posixpath.normpath(raw.lstrip("/"))
    return posixpath.normpath(posixpath.join(folder, raw))


def _plan_manifest(root: _Root, shard_size: int) -> ImagePlan:
    shown = root.show()
    kind = _root_type(root)
    if kind == pafs.FileType.NotFound:
        raise MlrayError(f"{shown}: no such file")
    if kind == pafs.FileType.Directory:
        raise MlrayError(f"{shown}: is a folder; layout manifest expects the manifest file (CSV or Parquet)")
    columns, first_row = _read_manifest_columns(root)
    if "path" not in columns:
        raise MlrayError(
            f"{shown}: missing column path (found: {', '.join(columns) or 'none'}); a manifest has "
            "image_id, path [, label, labels]"
        )
    folder = posixpath.dirname(root.path)
    ids = _Ids(shown)
    entries: dict[str, str] = {}
    label: dict[str, int] | None = {} if "label" in columns else None
    labels: dict[str, list[int] | None] | None = {} if "labels" in columns else None
    for i, raw in enumerate(columns["path"]):
        row = f"{shown}: row {i + first_row}"
        path = "" if raw is None else str(raw).strip()
        if not path:
            raise MlrayError(f"{row}: empty path")
        if "image_id" in columns:
            raw_id = columns["image_id"][i]
            if raw_id is None or not str(raw_id).strip():
                raise MlrayError(f"{row}: empty image_id")
            image_id = image_id_from_name(str(raw_id).strip())
        else:
            image_id = image_id_from_name(path)
        inner = _manifest_entry(root, folder, path, row)
        ids.add(image_id, f"row {i + first_row} ({path})")
        entries[image_id] = inner
        where = f"{row} ({image_id})"
        if label is not None:
            label[image_id] = _class_index(columns["label"][i], where, allow_unknown=True)
        if labels is not None:
            labels[image_id] = _label_set(columns["labels"][i], where)
    sorted_ids, shards = _chunk_files(entries, "manifest", shard_size, root.uri)
    return ImagePlan(
        shown,
        "manifest",
        shard_size,
        shards,
        sorted_ids,
        _labels_from_columns(shown, "manifest", sorted_ids, label, labels),
    )


# ---------------------------------------------------------------- parquet shards


def _candidate_files(root: _Root, layout: str, extensions: tuple[str, ...]) -> tuple[list[str], _Skips]:
    """The files a shard layout reads (a folder of them, or the one file named), and the skipped others."""
    kind = _root_type(root)
    if kind == pafs.FileType.NotFound:
        raise MlrayError(f"{root.show()}: no such file or folder")
    skips = _Skips()
    if kind == pafs.FileType.File:
        if not root.path.lower().endswith(extensions):
            raise MlrayError(f"{root.show()}: layout {layout} reads {', '.join(extensions)} files")
        return [root.path], skips
    files = []
    for rel, inner in _list_files(root):
        name = rel.rsplit("/", 1)[-1]
        if _hidden(rel) or not name.lower().endswith(extensions) or name == ERRORS_FILE:
            skips.add(rel)
            continue
        files.append(inner)
    if not files:
        raise MlrayError(f"{root.show()}: no {' / '.join(extensions)} files here (layout {layout})")
    return files, skips


def _image_type_ok(kind: pa.DataType) -> bool:
    if pa.types.is_struct(kind):
        return kind.get_field_index("bytes") >= 0 and _image_type_ok(kind.field("bytes").type)
    return pa.types.is_binary(kind) or pa.types.is_large_binary(kind) or str(kind) == "binary_view"


def _image_column(table: pa.Table) -> pa.ChunkedArray:
    """The ``image`` column as binary (the ``bytes`` field of a Hugging Face ``struct<bytes, path>``)."""
    column = table.column("image")
    if pa.types.is_struct(column.type):
        import pyarrow.compute as pc

        column = pc.struct_field(column, "bytes")
    return column


def _plan_parquet(root: _Root, shard_size: int) -> ImagePlan:
    files, skips = _candidate_files(root, "parquet-shards", PARQUET_EXTENSIONS)
    ids = _Ids(root.show())
    all_ids: list[str] = []
    label: dict[str, int] | None = None
    labels: dict[str, list[int] | None] | None = None
    shards: list[Shard] = []
    for inner in files:
        shown = root.show(inner)
        try:
            with root.fs.open_input_file(inner) as fh:
                pf = pq.ParquetFile(fh)
                names = pf.schema_arrow.names
                missing = [c for c in ("image_id", "image") if c not in names]
                if missing:
                    raise MlrayError(
                        f"{shown}: missing column(s) {', '.join(missing)} (found: {', '.join(names)}); layout "
                        "parquet-shards expects image_id, image [, label, labels]"
                    )
                image_type = pf.schema_arrow.field("image").type
                if not _image_type_ok(image_type):
                    raise MlrayError(
                        f"{shown}: column image must be binary (the encoded image file) or struct<bytes, path>, "
                        f"found {image_type}"
                    )
                table = pf.read(columns=["image_id"] + [c for c in ("label", "labels") if c in names])
        except MlrayError:
            raise
        except (pa.ArrowException, OSError) as exc:
            raise MlrayError(f"{shown}: not a readable Parquet file ({_first_line(exc)})") from None
        file_ids = []
        for r, raw in enumerate(table.column("image_id").to_pylist()):
            if raw is None or not str(raw).strip():
                raise MlrayError(f"{shown}: row {r}: empty image_id")
            image_id = image_id_from_name(str(raw).strip())
            ids.add(image_id, f"{shown} row {r}")
            file_ids.append(image_id)
        if "label" in table.column_names:
            label = {} if label is None else label
            for image_id, value in zip(file_ids, table.column("label").to_pylist()):
                label[image_id] = _class_index(value, f"{shown}: image {image_id}", allow_unknown=True)
        if "labels" in table.column_names:
            labels = {} if labels is None else labels
            for image_id, value in zip(file_ids, table.column("labels").to_pylist()):
                labels[image_id] = _label_set(value, f"{shown}: image {image_id}")
        for start in range(0, len(file_ids), shard_size):
            stop = min(start + shard_size, len(file_ids))
            shards.append(
                Shard(
                    shard_id=_shard_id(len(shards)),
                    layout="parquet-shards",
                    image_ids=tuple(file_ids[start:stop]),
                    file=inner,
                    rows=(start, stop),
                    filesystem=root.uri,
                )
            )
        all_ids.extend(file_ids)
    sorted_ids = sorted(all_ids)
    return ImagePlan(
        root.show(),
        "parquet-shards",
        shard_size,
        shards,
        sorted_ids,
        _labels_from_columns(root.show(), "parquet-shards", sorted_ids, label, labels),
        skips.n,
        skips.examples,
    )


# ---------------------------------------------------------------- webdataset


def _open_tar(fs: pafs.FileSystem, inner: str, seekable: bool):
    """(tarfile, the underlying stream). Local tars are read with seeks (headers only); remote ones streamed."""
    if seekable:
        stream = fs.open_input_file(inner)
        return tarfile.open(fileobj=stream, mode="r:*"), stream
    stream = fs.open_input_stream(inner)
    return tarfile.open(fileobj=stream, mode="r|*"), stream


def _plan_webdataset(root: _Root, shard_size: int) -> ImagePlan:
    files, skips = _candidate_files(root, "webdataset", TAR_EXTENSIONS)
    ids = _Ids(root.show())
    all_ids: list[str] = []
    label: dict[str, int] = {}
    shards: list[Shard] = []
    for inner in files:
        shown = root.show(inner)
        samples: dict[str, dict[str, object]] = {}
        try:
            tf, stream = _open_tar(root.fs, inner, seekable=root.local)
            try:
                for member in tf:
                    if not member.isfile():
                        continue
                    match = _WDS_NAME.match(member.name)
                    if match is None:
                        skips.add(f"{posixpath.basename(inner)}:{member.name}")
                        continue
                    key, ext = match.group(1), match.group(2).lower()
                    sample = samples.setdefault(key, {})
                    if f".{ext}" in IMAGE_EXTENSIONS:
                        if "image" in sample:
                            raise MlrayError(
                                f"{shown}: sample {key!r} has two image members: {sample['image']} and {member.name}"
                            )
                        sample["image"] = member.name
                    elif ext == "cls":
                        data = tf.extractfile(member).read()  # type: ignore[union-attr]
                        sample["cls"] = _class_index(
                            data.decode("utf-8", "replace").strip(), f"{shown}:{member.name}", allow_unknown=True
                        )
            finally:
                tf.close()
                stream.close()
        except MlrayError:
            raise
        except (tarfile.TarError, OSError, EOFError, pa.ArrowException) as exc:
            raise MlrayError(f"{shown}: not a readable tar file ({_first_line(exc)})") from None
        tar_ids: list[str] = []
        members: list[str] = []
        for key, sample in samples.items():
            if "image" not in sample:
                skips.add(f"{posixpath.basename(inner)}:{key}")
                continue
            image_id = key.rsplit("/", 1)[-1]
            ids.add(image_id, f"{shown}:{sample['image']}")
            tar_ids.append(image_id)
            members.append(str(sample["image"]))
            if "cls" in sample:
                label[image_id] = int(sample["cls"])  # type: ignore[call-overload]
        if tar_ids:
            shards.append(
                Shard(
                    shard_id=_shard_id(len(shards)),
                    layout="webdataset",
                    image_ids=tuple(tar_ids),
                    paths=tuple(members),
                    file=inner,
                    filesystem=root.uri,
                )
            )
        all_ids.extend(tar_ids)
    sorted_ids = sorted(all_ids)
    return ImagePlan(
        root.show(),
        "webdataset",
        shard_size,
        shards,
        sorted_ids,
        _labels_from_columns(root.show(), "webdataset", sorted_ids, label or None, None),
        skips.n,
        skips.examples,
    )


# --------------------------------------------------------------------------------------------------------------
# Reading shards


ShardItem = tuple[str, "bytes | None", "ImageError | None"]


def read_shard(shard: Shard) -> Iterator[ShardItem]:
    """Yield ``(image_id, bytes, None)`` or ``(image_id, None, ImageError('read', reason))`` per planned image.

    Every image the shard planned comes out exactly once (files and Parquet rows in plan order; tar members in
    tar order, then any member that was missing). An empty file is a read error ('empty file'). Only a
    filesystem that cannot be opened at all (bad URI, credentials) raises :class:`MlrayError`.
    """
    for image_id, _where, data, err in _iter_shard(shard):
        yield image_id, data, err


def read_shard_sources(shard: Shard) -> Iterator[tuple[str, str, bytes | None, ImageError | None]]:
    """:func:`read_shard` with where each image came from: ``(image_id, where, bytes, error)``, where ``where``
    names the file, Parquet row or tar member that was actually read (tar order is not plan order)."""
    return _iter_shard(shard)


def _iter_shard(shard: Shard) -> Iterator[tuple[str, str, bytes | None, ImageError | None]]:
    fs = _filesystem(shard.filesystem)
    if shard.kind == "files":
        yield from _iter_files(shard, fs)
    elif shard.kind == "parquet":
        yield from _iter_parquet(shard, fs)
    else:
        yield from _iter_tar(shard, fs)


def _checked(image_id: str, where: str, data: bytes | None) -> tuple[str, str, bytes | None, ImageError | None]:
    if data is None:
        return image_id, where, None, ImageError("read", f"no image bytes (null) at {where}")
    if len(data) == 0:
        return image_id, where, None, ImageError("read", "empty file")
    return image_id, where, data, None


def _iter_files(shard: Shard, fs: pafs.FileSystem) -> Iterator[tuple[str, str, bytes | None, ImageError | None]]:
    for image_id, path in zip(shard.image_ids, shard.paths):
        where = _show(shard.filesystem, path)
        try:
            with fs.open_input_stream(path) as fh:
                data = fh.read()
        except (OSError, pa.ArrowException) as exc:
            yield image_id, where, None, ImageError("read", _read_reason(exc, where))
            continue
        yield _checked(image_id, where, data)


def _iter_parquet(shard: Shard, fs: pafs.FileSystem) -> Iterator[tuple[str, str, bytes | None, ImageError | None]]:
    start, stop = shard.rows or (0, len(shard.image_ids))
    file = shard.file or ""
    shown = _show(shard.filesystem, file)
    done = 0
    failure = None
    try:
        with fs.open_input_file(file) as fh:
            pf = pq.ParquetFile(fh)
            offset = 0
            for group in range(pf.num_row_groups):
                n = pf.metadata.row_group(group).num_rows
                lo, hi = max(start, offset), min(stop, offset + n)
                if lo < hi:
                    table = pf.read_row_group(group, columns=["image_id", "image"]).slice(lo - offset, hi - lo)
                    got_ids = table.column("image_id").to_pylist()
                    blobs = _image_column(table).to_pylist()
                    for k, (got, blob) in enumerate(zip(got_ids, blobs)):
                        row = lo + k
                        planned = shard.image_ids[row - start]
                        where = f"{shown}#row{row}"
                        if got is None or image_id_from_name(str(got).strip()) != planned:
                            changed = f"{where} holds image {got!r}, planned {planned!r} (file changed since planning)"
                            yield planned, where, None, ImageError("read", changed)
                        else:
                            yield _checked(planned, where, blob)
                        done += 1
                offset += n
                if offset >= stop:
                    break
    except MlrayError as exc:
        failure = str(exc)
    except (OSError, pa.ArrowException, ValueError) as exc:
        failure = _read_reason(exc, shown)
    for i in range(done, len(shard.image_ids)):
        reason = failure or f"{shown}: row {start + i} missing (file changed since planning)"
        yield shard.image_ids[i], f"{shown}#row{start + i}", None, ImageError("read", reason)


def _iter_tar(shard: Shard, fs: pafs.FileSystem) -> Iterator[tuple[str, str, bytes | None, ImageError | None]]:
    file = shard.file or ""
    shown = _show(shard.filesystem, file)
    wanted = dict(zip(shard.paths, shard.image_ids))
    done: set[str] = set()
    failure = None
    try:
        tf, stream = _open_tar(fs, file, seekable=False)
        try:
            for member in tf:
                name = member.name
                if name not in wanted or name in done or not member.isfile():
                    continue
                data = tf.extractfile(member).read()  # type: ignore[union-attr]
                done.add(name)
                yield _checked(wanted[name], f"{shown}:{name}", data)
        finally:
            tf.close()
            stream.close()
    except (tarfile.TarError, OSError, EOFError, pa.ArrowException) as exc:
        failure = _read_reason(exc, shown)
    for name, image_id in wanted.items():
        if name not in done:
            reason = failure or f"member {name} not found in {shown}"
            yield image_id, f"{shown}:{name}", None, ImageError("read", reason)


# --------------------------------------------------------------------------------------------------------------
# Decoding


def _open_header(data: bytes):
    """Identify the image and parse its header without decoding pixels (and without Pillow's bomb check)."""
    from PIL import Image

    Image.init()
    prefix = data[:16]
    buf = io.BytesIO(data)
    failures: list[str] = []
    for fmt in _PIL_FORMATS:
        entry = Image.OPEN.get(fmt)
        if entry is None:  # plugin not available in this Pillow build
            continue
        factory, accept = entry
        ok = accept(prefix) if accept else True
        if not ok or isinstance(ok, str):
            continue
        buf.seek(0)
        try:
            return factory(buf, "")
        except (SyntaxError, IndexError, TypeError, struct.error, ValueError, OSError, EOFError) as exc:
            failures.append(f"{fmt} header: {_first_line(exc)}")
    if not failures:
        raise ImageError("decode", f"not an image (unknown format, starts with {data[:8]!r})")
    if "truncat" in failures[0].lower():  # cut inside the header: recognisably an image, but truncated
        raise ImageError("decode", f"truncated image ({failures[0]})")
    raise ImageError("decode", f"not an image ({failures[0]})")


def decode_image(data: bytes, max_pixels: int | None = DEFAULT_MAX_PIXELS):
    """Decode image file bytes to an RGB ``PIL.Image`` exactly as timm's loader does (``.convert('RGB')``).

    Raises :class:`ImageError` with stage ``read`` for empty data ('empty file'), and stage ``decode`` for:
    'not an image (...)', 'decompression bomb: W x H = N pixels > limit' (checked from the header before any
    pixel is decoded; ``max_pixels=None`` disables it), 'truncated image (...)', 'corrupt image (...)' (a full
    ``load()``), and a mode Pillow cannot convert to RGB. Modes L, LA, P (with or without transparency), RGBA,
    CMYK, I;16, 1 ... are converted by Pillow's ``convert('RGB')``: alpha/transparency is dropped (not composited),
    I;16 values are clipped to 255. EXIF orientation is not applied (timm's validate.py does not apply it).
    Thread-safe: no Pillow global (``LOAD_TRUNCATED_IMAGES``, ``MAX_IMAGE_PIXELS``) is read or changed here.
    """
    if data is None or len(data) == 0:
        raise ImageError("read", "empty file")
    img = _open_header(bytes(data))
    width, height = img.size
    if max_pixels is not None and width * height > max_pixels:
        raise ImageError("decode", f"decompression bomb: {width} x {height} = {width * height} pixels > {max_pixels}")
    try:
        img.load()
    except Exception as exc:  # noqa: BLE001 - any decoder failure is this image's problem
        message = _first_line(exc)
        kind = "truncated image" if "truncated" in message.lower() else "corrupt image"
        raise ImageError("decode", f"{kind} ({message})") from None
    try:
        return img.convert("RGB")
    except Exception as exc:  # noqa: BLE001
        raise ImageError("decode", f"cannot convert mode {img.mode} to RGB ({_first_line(exc)})") from None


# --------------------------------------------------------------------------------------------------------------
# Writing Parquet shards (`mlray shard`)


class WrittenShards(list):
    """The shard files :func:`write_parquet_shards` wrote (a ``list[str]`` of their paths / URIs) plus counts."""

    def __init__(self, paths: Sequence[str] = (), n_images: int = 0, n_errors: int = 0, errors_path: str | None = None):
        super().__init__(paths)
        self.n_images = n_images
        self.n_errors = n_errors
        self.errors_path = errors_path

    def __repr__(self) -> str:
        return (
            f"WrittenShards({list(self)!r}, n_images={self.n_images}, n_errors={self.n_errors}, "
            f"errors_path={self.errors_path!r})"
        )


class _AtomicParquet:
    """A Parquet file written under a hidden temporary name and renamed into place when complete (local paths);
    on object storage the object is written directly (an upload becomes visible only once it completes)."""

    def __init__(self, root: _Root, name: str, schema: pa.Schema, compression: object):
        self.root = root
        self.final = posixpath.join(root.path, name)
        self.temp = posixpath.join(root.path, f".{name}.tmp-{uuid.uuid4().hex[:12]}") if root.local else self.final
        self.stream = root.fs.open_output_stream(self.temp)
        self.writer = pq.ParquetWriter(self.stream, schema, compression=compression)

    def write(self, table: pa.Table) -> None:
        self.writer.write_table(table)

    def close(self) -> str:
        self.writer.close()
        self.stream.close()
        if self.temp != self.final:
            self.root.fs.move(self.temp, self.final)
        return self.final

    def abort(self) -> None:
        try:
            self.writer.close()
            self.stream.close()
        finally:
            if self.temp != self.final:
                try:
                    self.root.fs.delete_file(self.temp)
                except OSError:
                    pass


def _plan_files(plan: ImagePlan) -> set[tuple[str | None, str]]:
    files: set[tuple[str | None, str]] = set()
    for shard in plan.shards:
        if shard.file is not None:
            files.add((shard.filesystem, shard.file))
        else:
            files.update((shard.filesystem, p) for p in shard.paths)
    return files


def _prepare_output(root: _Root, overwrite: bool, inputs: set[tuple[str | None, str]]) -> None:
    kind = _root_type(root)
    if kind == pafs.FileType.File:
        raise MlrayError(f"{root.show()}: is a file; the output of mlray shard is a folder")
    if kind == pafs.FileType.Directory:
        ours, others = [], []
        for rel, inner in _list_files(root):
            if "/" in rel or _hidden(rel):
                continue
            if _PART_NAME.match(rel) or rel == ERRORS_FILE:
                ours.append(inner)
            elif rel.lower().endswith(PARQUET_EXTENSIONS):
                others.append(rel)
        if others:
            raise MlrayError(
                f"{root.show()}: already holds other Parquet files (e.g. {others[0]}); use an empty folder"
            )
        if ours and not overwrite:
            raise MlrayError(
                f"{root.show()}: already holds {len(ours)} shard file(s) (e.g. {posixpath.basename(ours[0])}); "
                "pass overwrite to replace them"
            )
        same_fs = {p for uri, p in inputs if (uri is None) == root.local}
        clash = [inner for inner in ours if inner in same_fs]
        if clash:
            raise MlrayError(
                f"{root.show()}: is where the images are read from ({posixpath.basename(clash[0])}); write elsewhere"
            )
        for inner in ours:
            root.fs.delete_file(inner)
    root.fs.create_dir(root.path, recursive=True)


def write_parquet_shards(
    plan: ImagePlan,
    out_uri: str | os.PathLike,
    shard_size: int = DEFAULT_SHARD_SIZE,
    *,
    overwrite: bool = False,
    row_group_size: int = 100,
) -> WrittenShards:
    """Copy a planned dataset into Parquet shards ``part-00000.parquet``, ... of ``shard_size`` images each.

    Columns: ``image_id`` (string), ``image`` (binary: the original file bytes, never re-encoded), ``label``
    (int16, -1 = unknown) and ``labels`` (list<int16>, null = unknown), both from ``plan.labels``. Images are
    written in plan order (sorted by id for file layouts). Images that cannot be READ (missing, unreadable,
    empty) are not dropped: they are written with a null ``image`` (so a run over the shards still holds every
    source image and reports them as read errors) and listed in ``errors.parquet`` (image_id, path, stage,
    error), always written, maybe empty. ``n_images`` counts the images written with their bytes. Images are not decoded here (decode failures surface at inference, as for any other layout).
    The output (a local folder or a URI) must not hold shard files already unless ``overwrite``. Each file is
    written atomically on local disks (a hidden temporary name, then a rename). The result reads back with
    layout ``parquet-shards`` and is a list of the shard paths with ``n_images``, ``n_errors``, ``errors_path``.
    """
    if isinstance(shard_size, bool) or not isinstance(shard_size, int) or shard_size < 1:
        raise MlrayError(f"shard_size must be a positive integer, got {shard_size!r}")
    row_group_size = max(1, min(row_group_size, shard_size))
    root = _open_root(out_uri)
    _prepare_output(root, overwrite, _plan_files(plan))

    label_of: dict[str, int] = {}
    labels_of: dict[str, list[int] | None] = {}
    if plan.labels is not None:
        src = plan.labels
        for i, image_id in enumerate(src.image_ids):
            if src.original is not None:
                label_of[image_id] = src.original[i]
            if src.valid is not None:
                labels_of[image_id] = src.valid[i]

    written: list[str] = []
    errors: list[tuple[str, str, str, str]] = []
    n_images = 0
    part: _AtomicParquet | None = None
    in_part = 0
    rows: list[tuple[str, bytes]] = []

    def flush() -> None:
        nonlocal rows
        if not rows or part is None:
            return
        ids = [r[0] for r in rows]
        part.write(
            pa.table(
                {
                    "image_id": pa.array(ids, pa.string()),
                    "image": pa.array([r[1] for r in rows], pa.binary()),
                    "label": pa.array([label_of.get(i, -1) for i in ids], pa.int16()),
                    "labels": pa.array([labels_of.get(i) for i in ids], LABEL_LIST),
                },
                schema=SHARD_SCHEMA,
            )
        )
        rows = []

    try:
        for shard in plan.shards:
            for image_id, where, data, err in _iter_shard(shard):
                if err is not None or data is None:
                    err = err or ImageError("read", "no data")
                    errors.append((image_id, where, err.stage, err.reason))
                    data = None  # kept as a row with a null image: evaluating the shards reports it as an error
                else:
                    n_images += 1
                if part is None:
                    part = _AtomicParquet(root, f"part-{len(written):05d}.parquet", SHARD_SCHEMA, _SHARD_COMPRESSION)
                rows.append((image_id, data))
                in_part += 1
                if len(rows) >= row_group_size:
                    flush()
                if in_part >= shard_size:
                    flush()
                    written.append(root.show(part.close()))
                    part, in_part = None, 0
        if part is not None:
            flush()
            written.append(root.show(part.close()))
            part = None
    except BaseException:
        if part is not None:
            part.abort()
        raise

    err_file = _AtomicParquet(root, ERRORS_FILE, ERRORS_SCHEMA, "SNAPPY")
    try:
        err_file.write(
            pa.table(
                {
                    "image_id": pa.array([e[0] for e in errors], pa.string()),
                    "path": pa.array([e[1] for e in errors], pa.string()),
                    "stage": pa.array([e[2] for e in errors], pa.string()),
                    "error": pa.array([e[3] for e in errors], pa.string()),
                },
                schema=ERRORS_SCHEMA,
            )
        )
        errors_path = root.show(err_file.close())
    except BaseException:
        err_file.abort()
        raise
    return WrittenShards(written, n_images=n_images, n_errors=len(errors), errors_path=errors_path)
