"""The ``manifest`` layout: a CSV / TSV / Parquet file listing the images.

``images:`` names the manifest, with a ``path`` column (+ ``image_id``, else the file stem) and optional ``label``
(a class index, -1/empty = unknown) and/or ``labels`` (a list, or a ``;``-separated string; an empty CSV cell =
the empty set, a Parquet null = not annotated). Classes are parsed by :mod:`mlray.labels.parse`: a class named
twice in one label set is kept once and counted (``SourceLabels.merged_duplicates``). Relative paths resolve
against the manifest's folder; a URI must be on the manifest's filesystem. Rows are taken as listed (no extension
filter) and are not stat'ed while planning: a missing file is a read error when its shard is read. Images are
sorted by id and cut into shards of ``shard_size`` files.
"""

from __future__ import annotations

import io
import os
import posixpath
from urllib.parse import unquote, urlparse

import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from ...errors import MlrayError, first_line
from ...io import scheme_of
from ...labels import class_index, image_id_from_name, label_set
from ..roots import Root, read_reason, root_type
from ..shards import ImageIds, ImagePlan, labels_from_columns
from ._common import FileLayout

MANIFEST_EXTENSIONS = (".csv", ".tsv", ".parquet", ".pq")


def read_manifest_columns(root: Root) -> tuple[dict[str, list[object]], int]:
    """The manifest's columns (as Python lists; CSV cells as text) and the number of its first data row.

    Raises :class:`MlrayError` for another extension, an unreadable file, or a malformed CSV / Parquet file.
    """
    shown = root.show()
    suffix = posixpath.splitext(root.path)[1].lower()
    if suffix not in MANIFEST_EXTENSIONS:
        raise MlrayError(f"{shown}: a manifest must be .csv, .tsv, .parquet or .pq (layout manifest)")
    try:
        with root.fs.open_input_file(root.path) as fh:
            data = fh.read()
    except OSError as exc:
        raise MlrayError(read_reason(exc, shown)) from None
    if suffix in (".parquet", ".pq"):
        try:
            table = pq.read_table(pa.BufferReader(data))
        except (pa.ArrowException, OSError) as exc:
            raise MlrayError(f"{shown}: not a readable Parquet file ({first_line(exc)})") from None
        return {name: table.column(name).to_pylist() for name in table.column_names}, 1
    import pandas as pd

    try:
        frame = pd.read_csv(io.BytesIO(data), dtype=str, keep_default_na=False, sep="\t" if suffix == ".tsv" else ",")
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise MlrayError(f"{shown}: malformed CSV: {first_line(exc)}") from None
    frame.columns = [str(c).strip() for c in frame.columns]
    return {name: [str(v) for v in frame[name].tolist()] for name in frame.columns}, 2


def manifest_entry(root: Root, folder: str, raw: str, where: str) -> str:
    """The path inside the manifest's filesystem of a manifest row's ``path`` (relative to ``folder``).

    A URI must be on the manifest's filesystem (``file://`` for a local manifest, the same ``s3`` / ``gs`` scheme
    for a remote one), else it is an :class:`MlrayError` naming ``where``.
    """
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


class ManifestLayout(FileLayout):
    """``manifest``: the images a CSV / TSV / Parquet manifest lists, with its optional label columns."""

    name = "manifest"

    def plan(self, root: Root, shard_size: int) -> ImagePlan:
        """Read the manifest at ``root`` and cut its rows, sorted by image id, into shards of ``shard_size``."""
        shown = root.show()
        kind = root_type(root)
        if kind == pafs.FileType.NotFound:
            raise MlrayError(f"{shown}: no such file")
        if kind == pafs.FileType.Directory:
            raise MlrayError(f"{shown}: is a folder; layout manifest expects the manifest file (CSV or Parquet)")
        columns, first_row = read_manifest_columns(root)
        if "path" not in columns:
            raise MlrayError(
                f"{shown}: missing column path (found: {', '.join(columns) or 'none'}); a manifest has "
                "image_id, path [, label, labels]"
            )
        folder = posixpath.dirname(root.path)
        ids = ImageIds(shown)
        entries: dict[str, str] = {}
        label: dict[str, int] | None = {} if "label" in columns else None
        labels: dict[str, list[int] | None] | None = {} if "labels" in columns else None
        merged: list[str] = []
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
            inner = manifest_entry(root, folder, path, row)
            ids.add(image_id, f"row {i + first_row} ({path})")
            entries[image_id] = inner
            where = f"{row} ({image_id})"
            if label is not None:
                label[image_id] = class_index(columns["label"][i], where, unknown_ok=True)
            if labels is not None:
                labels[image_id] = label_set(columns["labels"][i], where, repeats=merged)
        sorted_ids, shards = self.chunk(entries, shard_size, root.uri)
        return ImagePlan(
            shown,
            self.name,
            shard_size,
            shards,
            sorted_ids,
            labels_from_columns(shown, self.name, sorted_ids, label, labels, merged),
        )
