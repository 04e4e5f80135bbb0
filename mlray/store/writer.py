"""Writing the store: one atomic Parquet part per (dataset, model, shard), and the finished-shard rule.

Every part is written under a temporary name in its folder and renamed into place (:func:`mlray.io.
write_parquet_atomic`): a reader never sees half a part, and writing the same shard again replaces its part
instead of adding a second copy. :func:`finish_shard` writes a shard's errors part first and its predictions part
last, so a predictions part on disk means a finished shard (see :mod:`mlray.store.layout`); for an output folder
linked to object storage it uploads each part as soon as it is written (:mod:`mlray.store.remote`).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from ..errors import MlrayError
from ..io import write_parquet_atomic
from .layout import errors_root, part_name, partition_dir, predictions_root
from .remote import publish
from .schema import ERRORS_SCHEMA
from .tables import conform, first_duplicate, pairs


def _with_names(table: pa.Table, dataset: str, model: str, shown: str) -> pa.Table:
    """``table`` with ``dataset`` / ``model`` columns equal to the arguments (filled in where absent)."""
    for name, value in (("dataset", dataset), ("model", model)):
        if name in table.column_names:
            col = table.column(name)
            mismatch = pc.fill_null(pc.not_equal(col, pa.scalar(value)), True).to_numpy(zero_copy_only=False)
            if mismatch.any():
                row = int(np.flatnonzero(mismatch)[0])
                raise MlrayError(
                    f"{shown}: row {row + 1}: {name} {col[row].as_py()!r} differs from the partition's {name} {value!r}"
                )
        else:
            table = table.append_column(name, pa.array([value] * table.num_rows, pa.string()))
    return table


def write_partition(
    root: str | os.PathLike,
    dataset: str,
    model: str,
    table: pa.Table,
    shard: int | str | None = None,
) -> Path:
    """Write ``table`` as one part of the (dataset, model) partition of the prediction store ``root``; returns
    the part's path.

    The table may omit the ``dataset`` / ``model`` columns (they are filled in); where present they must all equal
    the arguments. Rows are checked (:func:`~mlray.store.tables.conform`) and must have distinct image ids. The
    write is atomic; with ``shard`` the part's name is fixed (:func:`~mlray.store.layout.part_name`), so writing
    the same shard again replaces the earlier part.
    """
    if not dataset or not model:
        raise MlrayError(f"write_partition needs a dataset and a model name (got {dataset!r}, {model!r})")
    target = partition_dir(root, dataset, model) / part_name(shard)
    shown = str(target)
    table = conform(_with_names(table, dataset, model, shown), shown)
    dup = first_duplicate(table.column("image_id"))
    if dup is not None:
        raise MlrayError(f"{shown}: image id {dup[0]!r} appears {dup[1]} times in the rows to write")
    return write_parquet_atomic(table, target)


def write_predictions(root: str | os.PathLike, table: pa.Table, shard: int | str | None = None) -> list[Path]:
    """Write a table that may hold several (dataset, model) pairs: one part per pair (see :func:`write_partition`)."""
    paths = []
    for dataset, model in pairs(table):
        mask = pc.and_(pc.equal(table.column("dataset"), dataset), pc.equal(table.column("model"), model))
        paths.append(write_partition(root, dataset, model, table.filter(mask), shard))
    return paths


def write_errors(root: str | os.PathLike, dataset: str, model: str, table: pa.Table, shard: int | str) -> Path:
    """Write ``table`` (:data:`~mlray.store.schema.ERRORS_SCHEMA`, possibly empty) as the ``shard`` part of the
    (dataset, model) partition of the errors store ``root``, atomically; returns the part's path."""
    target = partition_dir(root, dataset, model) / part_name(shard)
    if table.schema != ERRORS_SCHEMA:
        raise MlrayError(f"{target}: errors table has columns {table.schema.names}, not {ERRORS_SCHEMA.names}")
    _with_names(table, dataset, model, str(target))
    dup = first_duplicate(table.column("image_id"))
    if dup is not None:
        raise MlrayError(f"{target}: image id {dup[0]!r} appears {dup[1]} times in the rows to write")
    return write_parquet_atomic(table, target)


def finish_shard(
    out: str | os.PathLike, dataset: str, model: str, tag: str, predictions: pa.Table, errors: pa.Table
) -> tuple[Path, Path]:
    """Store one finished shard ``tag`` of ``model`` on ``dataset`` in the output folder ``out``: its ``errors``
    part first, then its ``predictions`` part (the part that marks the shard finished), each atomically.

    When ``out`` is linked to a remote store (:func:`mlray.store.remote.linked`, what ``--out s3://...`` sets
    up), each part is uploaded whole right after it is written, in the same order, before this returns: the
    bucket holds every finished shard as soon as it is finished. An image is in one of the two tables, never
    both. Returns the local ``(errors part, predictions part)``.
    """
    both = set(predictions.column("image_id").to_pylist()) & set(errors.column("image_id").to_pylist())
    if both:
        raise MlrayError(
            f"{dataset} / {model}, shard {tag}: image id {min(both)!r} is both predicted and an error "
            f"({len(both)} such image(s))"
        )
    err_part = write_errors(errors_root(out), dataset, model, errors, tag)
    publish(err_part)
    pred_part = write_partition(predictions_root(out), dataset, model, predictions, shard=tag)
    publish(pred_part)
    return err_part, pred_part
