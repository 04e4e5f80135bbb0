"""Reading the store back: whole stores, dataset or partition folders, single parts; checked, never a row twice.

:func:`read_store` reads a prediction store (or the datasets / models of it that you name) in one call;
:func:`read_predictions` reads any mix of store roots, dataset folders, partition folders and part files;
:func:`read_errors` reads an errors store. Plain Parquet readers work too (see :mod:`mlray.store.layout`).
"""

from __future__ import annotations

import os
from collections.abc import Collection, Iterable
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from ..errors import MlrayError, first_line
from .layout import (
    list_partitions,
    name_of_folder,
    part_names,
    partition_dir,
    parts,
    refuse_hive_folder,
    subfolders,
)
from .remote import remote_rows
from .schema import ERRORS_SCHEMA, KEY_COLUMNS, LOGITS_FIELD, PREDICTIONS_SCHEMA
from .tables import conform

_Entry = tuple[Path, str | None, str | None]  # a part file and the (dataset, model) its folders name


def _files_of(path: str | os.PathLike) -> list[_Entry]:
    """Parquet files named by ``path`` (store root, dataset folder, partition folder or file), each with the
    (dataset, model) its folders name (None for a single file, which carries its own names)."""
    text = os.fspath(path)
    if "://" not in text and Path(text).is_dir():
        folder = Path(text)
        refuse_hive_folder(folder)
        files = parts(folder)
        if files:  # a partition folder
            dataset, model = name_of_folder(folder.parent.name), name_of_folder(folder.name)
            return [(f, dataset, model) for f in files]
        models = [m for m in subfolders(folder) if parts(m)]
        if models:  # a dataset folder
            return [(f, name_of_folder(folder.name), name_of_folder(m.name)) for m in models for f in parts(m)]
        return [(f, d, m) for d, m, files in list_partitions(folder) for f in files]
    from ..io import resolve

    return [(resolve(text), None, None)]


def _read_entries(entries: list[_Entry]) -> pa.Table:
    """The parts read, checked (:func:`~mlray.store.tables.conform`, the folder's names, no key twice) and joined."""
    tables = []
    for i, (f, dataset, model) in enumerate(entries):
        try:
            raw = pq.read_table(f)
        except (pa.ArrowInvalid, OSError) as exc:
            raise MlrayError(f"{f}: not a readable Parquet file ({first_line(exc)})") from None
        t = conform(raw, str(f))
        for name, value in (("dataset", dataset), ("model", model)):
            if value is None:
                continue
            other = pc.not_equal(t.column(name), pa.scalar(value)).to_numpy(zero_copy_only=False)
            if other.any():
                row = int(np.flatnonzero(other)[0])
                raise MlrayError(
                    f"{f}: row {row + 1}: {name} {t.column(name)[row].as_py()!r} but the part is in the "
                    f"partition folder of {name} {value!r}"
                )
        tables.append(t.append_column("_file", pa.array(np.full(t.num_rows, i, dtype=np.int32))))
    if not tables:
        return PREDICTIONS_SCHEMA.empty_table()
    if any("logits" in t.column_names for t in tables):
        tables = [
            t if "logits" in t.column_names else t.add_column(5, LOGITS_FIELD, pa.nulls(t.num_rows, LOGITS_FIELD.type))
            for t in tables
        ]
    table = pa.concat_tables(tables)
    counts = table.group_by(list(KEY_COLUMNS)).aggregate([([], "count_all"), ("_file", "min"), ("_file", "max")])
    dups = counts.filter(pc.greater(counts.column("count_all"), 1))
    if dups.num_rows:
        first = dups.sort_by([(k, "ascending") for k in KEY_COLUMNS]).slice(0, 1).to_pylist()[0]
        f_min, f_max = entries[first["_file_min"]][0], entries[first["_file_max"]][0]
        where = f"in {f_min.name}" if f_min == f_max else f"in {f_min.name} and {f_max.name}"
        raise MlrayError(
            f"{f_min.parent}: image id {first['image_id']!r} of dataset {first['dataset']!r}, model "
            f"{first['model']!r} appears {first['count_all']} times ({where}); "
            f"{dups.num_rows:,} duplicated id(s) in all"
        )
    return table.drop_columns(["_file"])


def read_predictions(path_or_paths: str | os.PathLike | Iterable[str | os.PathLike]) -> pa.Table:
    """Read stored predictions: store roots, dataset folders, partition folders or single Parquet files (a path or
    a list of them) -> one table with :data:`~mlray.store.schema.PREDICTIONS_SCHEMA` (plus ``logits`` when any
    part has it).

    Checks each part (:func:`~mlray.store.tables.conform`), that a part inside a partition folder holds only that
    partition's (dataset, model), and that no (dataset, model, image_id) occurs twice across everything read.
    """
    paths = [path_or_paths] if isinstance(path_or_paths, (str, os.PathLike)) else list(path_or_paths)
    entries: list[_Entry] = []
    seen: set[Path] = set()
    for p in paths:
        for f, d, m in _files_of(p):
            key = f.resolve()
            if key not in seen:
                seen.add(key)
                entries.append((f, d, m))
    return _read_entries(entries)


def _selected(
    root: str | os.PathLike, datasets: Collection[str] | None, models: Collection[str] | None
) -> list[tuple[str, str, list[Path]]]:
    """The partitions of a store ``root`` whose dataset is in ``datasets`` and model in ``models`` (None = all)."""
    return [
        (d, m, files)
        for d, m, files in list_partitions(root)
        if (datasets is None or d in datasets) and (models is None or m in models)
    ]


def read_store(
    root: str | os.PathLike, datasets: Collection[str] | None = None, models: Collection[str] | None = None
) -> pa.Table:
    """The prediction store ``root`` read back in one call: every part of the named ``datasets`` and ``models``
    (None = all) as one checked table (see :func:`read_predictions`); an empty table when none match."""
    return _read_entries([(f, d, m) for d, m, files in _selected(root, datasets, models) for f in files])


def read_errors(
    root: str | os.PathLike, datasets: Collection[str] | None = None, models: Collection[str] | None = None
) -> pa.Table:
    """The errors store ``root`` read back: every part of the named ``datasets`` and ``models`` (None = all) as
    one table with :data:`~mlray.store.schema.ERRORS_SCHEMA`, in (dataset, model, part) order."""
    tables = []
    for _, _, files in _selected(root, datasets, models):
        for f in files:
            try:
                tables.append(pq.read_table(f, schema=ERRORS_SCHEMA))
            except (pa.ArrowInvalid, OSError) as exc:
                raise MlrayError(f"{f}: not a readable errors part ({first_line(exc)})") from None
    return pa.concat_tables(tables) if tables else ERRORS_SCHEMA.empty_table()


def count_rows(root: str | os.PathLike, dataset: str, model: str) -> int:
    """The rows of the (dataset, model) partition of a store ``root``, from the parts' footers (no data read); for
    a store linked to a remote one (:mod:`mlray.store.remote`) the remote parts count too (their footers)."""
    folder = partition_dir(root, dataset, model)
    local = {f.name: f for f in parts(folder)}
    n = sum(pq.read_metadata(f).num_rows for f in local.values())
    return n + remote_rows(folder, [name for name in part_names(folder) if name not in local])
