"""``mlray shard``: copy a planned dataset into Parquet shards that read back with layout ``parquet-shards``.

The shards hold the original file bytes (never re-encoded) and the labels the plan carries; images that cannot
be read stay in with a null image and are listed in ``errors.parquet``. Each file is written atomically on local
disks (a hidden temporary name, then a rename).
"""

from __future__ import annotations

import os
import posixpath
import re
import uuid
from collections.abc import Sequence

import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from ..errors import MlrayError
from ..labels import LABEL_LIST
from .layouts.parquet import ERRORS_FILE, PARQUET_EXTENSIONS
from .plan import read_shard_sources
from .roots import Root, hidden, list_files, open_root, root_type
from .shards import DEFAULT_SHARD_SIZE, ImageError, ImagePlan

SHARD_SCHEMA = pa.schema(
    [("image_id", pa.string()), ("image", pa.binary()), ("label", pa.int16()), ("labels", LABEL_LIST)]
)
"""The columns of a shard file: the image id, the original file bytes (null = unreadable), the original class
(-1 = unknown) and the valid-label set (null = not annotated)."""

SHARD_ERRORS_SCHEMA = pa.schema(
    [("image_id", pa.string()), ("path", pa.string()), ("stage", pa.string()), ("error", pa.string())]
)
"""The columns of the ``errors.parquet`` that ``mlray shard`` writes beside its shards.

It is :data:`mlray.store.ERRORS_SCHEMA` without ``dataset`` and ``model``: sharding reads the images of one
dataset and runs no model, so those columns would be constant (``model`` meaningless); the file lists the images
that could not be read, where they were read from, the stage ('read') and the reason.
"""

_SHARD_COMPRESSION = {"image_id": "SNAPPY", "image": "NONE", "label": "SNAPPY", "labels": "SNAPPY"}
_PART_NAME = re.compile(r"^part-\d{5,}\.parquet$")


class WrittenShards(list[str]):
    """The shard files :func:`write_parquet_shards` wrote (a ``list[str]`` of their paths / URIs) plus counts:
    ``n_images`` (written with their bytes), ``n_errors`` (unreadable) and ``errors_path``."""

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


class AtomicParquet:
    """A Parquet file written under a hidden temporary name and renamed into place when complete (local paths);
    on object storage the object is written directly (an upload becomes visible only once it completes)."""

    def __init__(self, root: Root, name: str, schema: pa.Schema, compression: str | dict[str, str]):
        self.root = root
        self.final = posixpath.join(root.path, name)
        self.temp = posixpath.join(root.path, f".{name}.tmp-{uuid.uuid4().hex[:12]}") if root.local else self.final
        self.stream = root.fs.open_output_stream(self.temp)
        self.writer = pq.ParquetWriter(self.stream, schema, compression=compression)

    def write(self, table: pa.Table) -> None:
        """Append ``table`` (one or more row groups)."""
        self.writer.write_table(table)

    def close(self) -> str:
        """Finish the file and move it into place; returns its final path inside the filesystem."""
        self.writer.close()
        self.stream.close()
        if self.temp != self.final:
            self.root.fs.move(self.temp, self.final)
        return self.final

    def abort(self) -> None:
        """Close the file and delete the temporary (local paths); the final name is never created."""
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
    """Every (filesystem URI, path) the plan reads: its shard files, or its image files."""
    files: set[tuple[str | None, str]] = set()
    for shard in plan.shards:
        if shard.file is not None:
            files.add((shard.filesystem, shard.file))
        else:
            files.update((shard.filesystem, p) for p in shard.paths)
    return files


def _prepare_output(root: Root, overwrite: bool, inputs: set[tuple[str | None, str]]) -> None:
    """Create the output folder, or empty it of earlier shard files (only with ``overwrite``); refuse a folder
    holding other Parquet files, and one whose shard files are the plan's own ``inputs``."""
    kind = root_type(root)
    if kind == pafs.FileType.File:
        raise MlrayError(f"{root.show()}: is a file; the output of mlray shard is a folder")
    if kind == pafs.FileType.Directory:
        ours, others = [], []
        for rel, inner in list_files(root):
            if "/" in rel or hidden(rel):
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
    out_uri: str | os.PathLike[str],
    shard_size: int = DEFAULT_SHARD_SIZE,
    *,
    overwrite: bool = False,
    row_group_size: int = 100,
) -> WrittenShards:
    """Copy a planned dataset into Parquet shards ``part-00000.parquet``, ... of ``shard_size`` images each.

    Columns (:data:`SHARD_SCHEMA`): ``image_id`` (string), ``image`` (binary: the original file bytes, never
    re-encoded), ``label`` (int16, -1 = unknown) and ``labels`` (list<int16>, null = unknown), both from
    ``plan.labels``. Images are written in plan order (sorted by id for file layouts). Images that cannot be READ
    (missing, unreadable, empty) are not dropped: they are written with a null ``image`` (so a run over the shards
    still holds every source image and reports them as read errors) and listed in ``errors.parquet``
    (:data:`SHARD_ERRORS_SCHEMA`: image_id, path, stage, error), always written, maybe empty. ``n_images`` counts
    the images written with their bytes. Images are not decoded here (decode failures surface at inference, as
    for any other layout). The output (a local folder or a URI) must not hold shard files already unless
    ``overwrite``. Each file is written atomically on local disks (a hidden temporary name, then a rename). The
    result reads back with layout ``parquet-shards`` and is a list of the shard paths with ``n_images``,
    ``n_errors``, ``errors_path``.
    """
    if isinstance(shard_size, bool) or not isinstance(shard_size, int) or shard_size < 1:
        raise MlrayError(f"shard_size must be a positive integer, got {shard_size!r}")
    row_group_size = max(1, min(row_group_size, shard_size))
    root = open_root(out_uri)
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
    part: AtomicParquet | None = None
    in_part = 0
    rows: list[tuple[str, bytes | None]] = []

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
            for image_id, where, data, err in read_shard_sources(shard):
                if err is not None or data is None:
                    err = err or ImageError("read", "no data")
                    errors.append((image_id, where, err.stage, err.reason))
                    data = None  # kept as a row with a null image: evaluating the shards reports it as an error
                else:
                    n_images += 1
                if part is None:
                    part = AtomicParquet(root, f"part-{len(written):05d}.parquet", SHARD_SCHEMA, _SHARD_COMPRESSION)
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

    err_file = AtomicParquet(root, ERRORS_FILE, SHARD_ERRORS_SCHEMA, "SNAPPY")
    try:
        err_file.write(
            pa.table(
                {
                    "image_id": pa.array([e[0] for e in errors], pa.string()),
                    "path": pa.array([e[1] for e in errors], pa.string()),
                    "stage": pa.array([e[2] for e in errors], pa.string()),
                    "error": pa.array([e[3] for e in errors], pa.string()),
                },
                schema=SHARD_ERRORS_SCHEMA,
            )
        )
        errors_path = root.show(err_file.close())
    except BaseException:
        err_file.abort()
        raise
    return WrittenShards(written, n_images=n_images, n_errors=len(errors), errors_path=errors_path)
