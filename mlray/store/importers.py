"""Importers: predictions made elsewhere (a CSV, TSV or Parquet file with ``image_id`` and ``top1`` or ``topk``)
-> a prediction table (:data:`~mlray.store.schema.PREDICTIONS_SCHEMA`).

Every problem with the file is a one-line :class:`~mlray.errors.MlrayError` naming the file, the row and what is
wrong. Row numbers in CSV messages are file lines (the header is row 1, the first data row is row 2, as in
:mod:`mlray.labels`); in Parquet messages they count data rows from 1. Class indices are parsed by
:func:`mlray.labels.parse.class_index`, the one rule for classes in every input file.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from ..errors import MlrayError, first_line
from ..io import read_csv_strict
from ..labels import NUM_CLASSES, image_id_from_name
from ..labels.parse import class_index
from .schema import PARQUET_SUFFIXES, PREDICTIONS_SCHEMA, PROB_LIST
from .tables import first_repeat_row, row_of_flat

_PROB_TOLERANCE = 1e-6


class _Rows:
    """Names rows of an input file in messages: CSV rows are file lines (header = row 1), Parquet rows count from 1."""

    def __init__(self, shown: str, is_csv: bool, image_ids: Sequence[str]):
        self.shown = shown
        self.base = 2 if is_csv else 1
        self.image_ids = image_ids

    def where(self, row: int) -> str:
        """``<file>: row <n> (<image id>)`` for data row ``row`` (from 0), the image id left out when unknown."""
        image = self.image_ids[row] if row < len(self.image_ids) else ""
        return f"{self.shown}: row {row + self.base} ({image})" if image else f"{self.shown}: row {row + self.base}"

    def fail(self, row: int, what: str) -> MlrayError:
        """The error ``what`` at data row ``row`` (from 0) of the file."""
        return MlrayError(f"{self.where(row)}: {what}")


def _read_input(local: Path, shown: str) -> tuple[dict[str, object], bool, int]:
    """The columns of a CSV (strings, '' = empty) or Parquet file (Arrow arrays), whether it is CSV, row count."""
    suffixes = [s.lower() for s in local.suffixes]
    if suffixes and suffixes[-1] in PARQUET_SUFFIXES:
        try:
            table = pq.read_table(local)
        except (pa.ArrowInvalid, OSError) as exc:
            raise MlrayError(f"{shown}: not a readable Parquet file ({first_line(exc)})") from None
        return {name: table.column(name).combine_chunks() for name in table.column_names}, False, table.num_rows
    frame = read_csv_strict(local, shown, sep="\t" if ".tsv" in suffixes else ",")
    names = [str(c).strip() for c in frame.columns]
    frame.columns = names
    return {name: frame[name].to_numpy(dtype=object) for name in names}, True, len(frame)


def _cells(column: object) -> list:
    """The cells of a column (Arrow array or numpy object array) as Python values."""
    if isinstance(column, (pa.Array, pa.ChunkedArray)):
        return column.to_pylist()
    return list(column)  # type: ignore[call-overload]


def _parse_int(cell: object, where: str) -> int:
    """The class index 0..999 in a cell (:func:`mlray.labels.parse.class_index`); ``where`` names the file and
    row in the error when it is not one."""
    return class_index(cell, where)


def _arrow_class_lists(column: pa.Array, single: bool) -> tuple[np.ndarray, np.ndarray] | None:
    """(offsets, values) straight from an integer (``single``) or integer-list Arrow column without nulls, or
    None when the column needs the cell by cell parse."""
    typ = column.type
    if single and pa.types.is_integer(typ) and column.null_count == 0:
        flat = column.to_numpy(zero_copy_only=False).astype(np.int64)
        return np.arange(len(flat) + 1, dtype=np.int64), flat
    is_list = pa.types.is_list(typ) or pa.types.is_large_list(typ) or pa.types.is_fixed_size_list(typ)
    if not (is_list and pa.types.is_integer(typ.value_type) and column.null_count == 0):
        return None
    lists = column.cast(pa.list_(typ.value_type)) if pa.types.is_fixed_size_list(typ) else column
    if lists.values.null_count:
        return None
    offsets = lists.offsets.to_numpy().astype(np.int64)
    flat = lists.values.to_numpy(zero_copy_only=False).astype(np.int64)[offsets[0] : offsets[-1]]
    return offsets - offsets[0], flat


def _class_lists(column: object, single: bool, rows: _Rows, name: str) -> tuple[np.ndarray, np.ndarray]:
    """(offsets, values) of the classes per row; ``single`` = one class per cell (top1)."""
    if isinstance(column, pa.Array):
        fast = _arrow_class_lists(column, single)
        if fast is not None:
            return fast
    cells = _cells(column)
    offsets = np.zeros(len(cells) + 1, dtype=np.int64)
    values: list[int] = []
    for i, cell in enumerate(cells):
        if single:
            parts = [] if cell is None or (isinstance(cell, str) and not cell.strip()) else [cell]
        elif isinstance(cell, str):
            parts = [p for p in (t.strip() for t in cell.split(";")) if p]
        elif isinstance(cell, (list, tuple, np.ndarray)):
            parts = list(cell)
        elif cell is None:
            parts = []
        else:
            parts = [cell]
        if not parts:
            raise rows.fail(i, f"{name} is empty (no predicted class)")
        for part in parts:
            values.append(_parse_int(part, rows.where(i)))
        offsets[i + 1] = len(values)
    return offsets, np.asarray(values, dtype=np.int64)


def _prob_lists(column: object, rows: _Rows) -> list[list[float] | None]:
    """The probabilities per row (None = unknown): each in [0, 1], best first (non-increasing)."""
    out: list[list[float] | None] = []
    for i, cell in enumerate(_cells(column)):
        if cell is None or (isinstance(cell, str) and not cell.strip()):
            out.append(None)
            continue
        if isinstance(cell, str):
            parts: list = [t.strip() for t in cell.split(";") if t.strip()]
        elif isinstance(cell, (list, tuple, np.ndarray)):
            parts = list(cell)
        else:
            parts = [cell]
        probs = []
        for part in parts:
            try:
                value = float(part)
            except (TypeError, ValueError):
                raise rows.fail(i, f"probs value {part!r} is not a number") from None
            if not (0.0 <= value <= 1.0):
                raise rows.fail(i, f"probs value {part!r} is not a probability in [0, 1]")
            probs.append(value)
        if any(b > a + _PROB_TOLERANCE for a, b in zip(probs, probs[1:])):
            raise rows.fail(i, f"probs {parts} increase; the top-k must be listed best first")
        out.append(probs)
    return out


def _names(columns: dict, key: str, given: str | None, n: int, rows: _Rows) -> list[str]:
    """The ``key`` (dataset or model) of every row: the column's cells, or ``given`` where absent or empty."""
    if key not in columns:
        if not given:
            raise MlrayError(f"{rows.shown}: no {key} column; give the {key} with --{key} NAME")
        return [given] * n
    cells = _cells(columns[key])
    out = []
    for i, cell in enumerate(cells):
        text = "" if cell is None else str(cell).strip()
        if not text:
            if not given:
                raise rows.fail(i, f"empty {key} and no {key} given")
            text = given
        elif given and text != given:
            raise rows.fail(i, f"{key} {text!r} differs from the {key} given ({given!r})")
        out.append(text)
    return out


def import_predictions(
    path: str | os.PathLike,
    dataset: str | None = None,
    model: str | None = None,
    base_dir: str | os.PathLike | None = None,
) -> pa.Table:
    """Import predictions made elsewhere from a CSV (``.tsv``: tab-separated) or Parquet file.

    Columns: ``image_id`` (a file stem, or a file name / path, normalized with
    :func:`mlray.labels.image_id_from_name`) and either ``top1`` (an integer class) or ``topk`` (a list column, or a
    ``;``-separated string, best first; with both, ``top1`` must equal the first of ``topk``). Optional: ``probs``
    (list or ``;``-separated, as long as the top-k, non-increasing, each in [0, 1]; an empty cell = unknown) and
    ``dataset`` / ``model`` columns; without them the ``dataset`` / ``model`` arguments are used (where both are
    given they must agree). Other columns are ignored. ``path`` may be a URL or object-store URI
    (:func:`mlray.io.resolve`).

    Returns a table with :data:`PREDICTIONS_SCHEMA` (``topk_prob`` null where unknown), rows in file order.
    Errors (one line, naming the file and the row): missing columns, malformed CSV, a non-integer class, a class
    outside 0..999, a class twice in one top-k, a probs list of the wrong length, a duplicate image id within one
    (dataset, model).
    """
    from ..io import resolve

    text = os.fspath(path)
    local = resolve(text, base_dir)
    shown = text if "://" in text else str(local)
    columns, is_csv, n = _read_input(local, shown)
    missing = [c for c in ("image_id",) if c not in columns]
    if "top1" not in columns and "topk" not in columns:
        missing.append("top1 or topk")
    if missing:
        raise MlrayError(f"{shown}: missing column(s) {', '.join(missing)} (found: {', '.join(columns) or 'none'})")

    raw_ids = _cells(columns["image_id"])
    rows = _Rows(shown, is_csv, [str(v) if v is not None else "" for v in raw_ids])
    ids = []
    for i, value in enumerate(raw_ids):
        image_id = image_id_from_name(str(value).strip()) if value is not None else ""
        if not image_id:
            raise rows.fail(i, "empty image_id")
        ids.append(image_id)
    rows.image_ids = ids
    datasets = _names(columns, "dataset", dataset, n, rows)
    models = _names(columns, "model", model, n, rows)

    if "topk" in columns:
        offsets, values = _class_lists(columns["topk"], False, rows, "topk")
    else:
        offsets, values = _class_lists(columns["top1"], True, rows, "top1")
    counts = np.diff(offsets)
    bad = np.flatnonzero((values < 0) | (values >= NUM_CLASSES))
    if len(bad):
        row = row_of_flat(offsets, int(bad[0]))
        raise rows.fail(row, f"class index {values[bad[0]]} is outside 0..{NUM_CLASSES - 1}")
    repeat = first_repeat_row(offsets, values)
    if repeat is not None:
        raise rows.fail(repeat[0], f"class {repeat[1]} appears twice in one top-k list")
    if "topk" in columns and "top1" in columns:
        t_off, t_val = _class_lists(columns["top1"], True, rows, "top1")
        differ = np.flatnonzero(t_val != values[offsets[:-1]])
        if len(differ):
            i = int(differ[0])
            raise rows.fail(i, f"top1 {t_val[i]} is not the first class of topk ({values[offsets[i]]})")

    probs: list[list[float] | None] | None = None
    if "probs" in columns:
        probs = _prob_lists(columns["probs"], rows)
        for i, p in enumerate(probs):
            if p is not None and len(p) != counts[i]:
                raise rows.fail(i, f"{len(p)} probs for {counts[i]} classes in the top-k")

    keyed = pa.table({"d": datasets, "m": models, "i": ids, "r": np.arange(n)})
    counted = keyed.group_by(["d", "m", "i"]).aggregate([("r", "min"), ("r", "max"), ([], "count_all")])
    dups = counted.filter(pc.greater(counted.column("count_all"), 1))
    if dups.num_rows:
        # report the duplicate whose second occurrence comes first in the file
        rows_of: dict[tuple, list[int]] = {}
        dup_keys = set(zip(dups.column("d").to_pylist(), dups.column("m").to_pylist(), dups.column("i").to_pylist()))
        for r, key in enumerate(zip(datasets, models, ids)):
            if key in dup_keys:
                rows_of.setdefault(key, []).append(r)
                if len(rows_of[key]) == 2:
                    first = rows_of[key][0] + rows.base
                    what = f"duplicate image id {key[2]!r} for dataset {key[0]!r}, model {key[1]!r}"
                    raise rows.fail(r, f"{what} (first at row {first})")

    offsets32 = pa.array(offsets.astype(np.int32))
    topk = pa.ListArray.from_arrays(offsets32, pa.array(values.astype(np.int16)))
    topk_prob = pa.array(probs, type=PROB_LIST) if probs is not None else pa.nulls(n, PROB_LIST)
    return pa.table(
        {
            "dataset": pa.array(datasets, pa.string()),
            "model": pa.array(models, pa.string()),
            "image_id": pa.array(ids, pa.string()),
            "topk_idx": topk,
            "topk_prob": topk_prob,
        },
        schema=PREDICTIONS_SCHEMA,
    )
