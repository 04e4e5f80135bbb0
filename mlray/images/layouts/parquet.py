"""The ``parquet-shards`` layout: Parquet files holding the encoded images themselves.

``images:`` names a folder of Parquet files (read sorted by path) or one file, with columns ``image_id``,
``image`` (binary, or a Hugging Face ``struct<bytes, path>``) and optional ``label`` (a class index, -1/null =
unknown) / ``labels`` (a list, null = not annotated). Classes are parsed by :mod:`mlray.labels.parse`: a class
named twice in one label set is kept once and counted (``SourceLabels.merged_duplicates``). Each file is cut into
row ranges of at most ``shard_size`` rows. ``errors.parquet`` (the quarantine :mod:`mlray.images.writer` writes)
is skipped. Rows are numbered from 0 in messages (``file#row3``).
"""

from __future__ import annotations

from collections.abc import Iterator

import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from ...errors import MlrayError, first_line
from ...labels import class_index, image_id_from_name, label_set
from ..roots import Root, read_reason, show
from ..shards import ImageError, ImageIds, ImagePlan, Layout, Shard, SourcedItem, checked, labels_from_columns, shard_id
from ._common import candidate_files

PARQUET_EXTENSIONS = (".parquet", ".pq")
ERRORS_FILE = "errors.parquet"


def image_type_ok(kind: pa.DataType) -> bool:
    """True for a column type holding encoded images: binary (any width) or a struct with a binary ``bytes``."""
    if pa.types.is_struct(kind):
        return kind.get_field_index("bytes") >= 0 and image_type_ok(kind.field("bytes").type)
    return pa.types.is_binary(kind) or pa.types.is_large_binary(kind) or str(kind) == "binary_view"


def image_column(table: pa.Table) -> pa.ChunkedArray:
    """The ``image`` column as binary (the ``bytes`` field of a Hugging Face ``struct<bytes, path>``)."""
    column = table.column("image")
    if pa.types.is_struct(column.type):
        import pyarrow.compute as pc

        column = pc.struct_field(column, "bytes")
    return column


class ParquetShardsLayout(Layout):
    """``parquet-shards``: shards are row ranges ``rows = (start, stop)`` of one Parquet ``file``."""

    name = "parquet-shards"

    def plan(self, root: Root, shard_size: int) -> ImagePlan:
        """Read the ids (and label columns) of every Parquet file and cut each file into row ranges."""
        files, skips = candidate_files(root, self.name, PARQUET_EXTENSIONS, skip_names=(ERRORS_FILE,))
        ids = ImageIds(root.show())
        all_ids: list[str] = []
        label: dict[str, int] | None = None
        labels: dict[str, list[int] | None] | None = None
        merged: list[str] = []
        shards: list[Shard] = []
        for inner in files:
            shown = root.show(inner)
            table = self._read_index(root, inner)
            file_ids = []
            for r, raw in enumerate(table.column("image_id").to_pylist()):
                if raw is None or not str(raw).strip():
                    raise MlrayError(f"{shown}: row {r}: empty image_id")
                image_id = image_id_from_name(str(raw).strip())
                ids.add(image_id, f"{shown} row {r}")
                file_ids.append(image_id)
            if "label" in table.column_names:
                label = {} if label is None else label
                for r, (image_id, value) in enumerate(zip(file_ids, table.column("label").to_pylist())):
                    label[image_id] = class_index(value, f"{shown}: row {r} ({image_id})", unknown_ok=True)
            if "labels" in table.column_names:
                labels = {} if labels is None else labels
                for r, (image_id, value) in enumerate(zip(file_ids, table.column("labels").to_pylist())):
                    labels[image_id] = label_set(value, f"{shown}: row {r} ({image_id})", repeats=merged)
            for start in range(0, len(file_ids), shard_size):
                stop = min(start + shard_size, len(file_ids))
                shards.append(
                    Shard(
                        shard_id=shard_id(len(shards)),
                        layout=self.name,
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
            self.name,
            shard_size,
            shards,
            sorted_ids,
            labels_from_columns(root.show(), self.name, sorted_ids, label, labels, merged),
            skips.n,
            skips.examples,
        )

    @staticmethod
    def _read_index(root: Root, inner: str) -> pa.Table:
        """The ``image_id`` (+ ``label`` / ``labels``) columns of one file, after checking its schema."""
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
                if not image_type_ok(image_type):
                    raise MlrayError(
                        f"{shown}: column image must be binary (the encoded image file) or struct<bytes, path>, "
                        f"found {image_type}"
                    )
                return pf.read(columns=["image_id"] + [c for c in ("label", "labels") if c in names])
        except MlrayError:
            raise
        except (pa.ArrowException, OSError) as exc:
            raise MlrayError(f"{shown}: not a readable Parquet file ({first_line(exc)})") from None

    def read(self, shard: Shard, fs: pafs.FileSystem) -> Iterator[SourcedItem]:
        """Read the shard's rows group by group, in plan order; a row whose id changed since planning, a null
        image and a file that cannot be read (every row not yet read) are read error items."""
        start, stop = shard.rows or (0, len(shard.image_ids))
        file = shard.file or ""
        shown = show(shard.filesystem, file)
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
                        blobs = image_column(table).to_pylist()
                        for k, (got, blob) in enumerate(zip(got_ids, blobs)):
                            row = lo + k
                            planned = shard.image_ids[row - start]
                            where = f"{shown}#row{row}"
                            if got is None or image_id_from_name(str(got).strip()) != planned:
                                changed = (
                                    f"{where} holds image {got!r}, planned {planned!r} (file changed since planning)"
                                )
                                yield planned, where, None, ImageError("read", changed)
                            else:
                                yield checked(planned, where, blob)
                            done += 1
                    offset += n
                    if offset >= stop:
                        break
        except MlrayError as exc:
            failure = str(exc)
        except (OSError, pa.ArrowException, ValueError) as exc:
            failure = read_reason(exc, shown)
        for i in range(done, len(shard.image_ids)):
            reason = failure or f"{shown}: row {start + i} missing (file changed since planning)"
            yield shard.image_ids[i], f"{shown}#row{start + i}", None, ImageError("read", reason)

    def sources(self, shard: Shard) -> list[str]:
        """``file#row<n>`` for each image (rows numbered from 0 in the file)."""
        start = shard.rows[0] if shard.rows else 0
        shown = show(shard.filesystem, shard.file or "")
        return [f"{shown}#row{start + i}" for i in range(len(shard.image_ids))]
