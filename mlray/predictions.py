"""Prediction tables: the schema, the on-disk prediction store, importers for outside predictions, alignment.

A prediction table (DESIGN.md) has one row per (dataset, model, image):

    dataset (str), model (str), image_id (str), topk_idx (list<int16>, best first),
    topk_prob (list<float32>, same length as topk_idx; null = probabilities unknown, e.g. an argmax-only import)

plus an optional ``logits`` column (list<float16>, the full 1,000 outputs) behind a flag.

**The store** keeps one Parquet partition per dataset x model under a root folder::

    ROOT/dataset=<quote(dataset)>/model=<quote(model)>/part-<shard>.parquet

Names are quoted with ``urllib.parse.quote(name, safe="")`` (so ``hf-hub:timm/resnet50.a1_in1k`` becomes
``hf-hub%3Atimm%2Fresnet50.a1_in1k``, one path segment). Every part holds complete rows (the dataset and model
columns included, so a part file is self-describing). A part is written under a temporary name (``.tmp-...``, in
the same folder) and renamed into place with ``os.replace``: a reader never sees a half-written part, and writing
the same shard again replaces it (``part-00012.parquet`` for shard 12, ``part-<quoted name>.parquet`` for a named
shard) instead of adding a second copy. Writing with no shard appends a new uniquely named part. Reading checks
that no (dataset, model, image_id) appears twice across the parts.

**Importers** turn predictions made elsewhere (a CSV or Parquet with ``image_id`` and ``top1`` or ``topk``) into a
prediction table; **align** lays a model's predictions out in the row order of a dataset's labels
(:class:`mlray.labels.LabelArrays`) as dense arrays, the form metrics compute on.

Every problem with the user's input is a one-line :class:`~mlray.errors.MlrayError` naming the file, the row and
what is wrong. Row numbers in CSV messages are file lines (the header is row 1, the first data row is row 2, as
in :mod:`mlray.labels`); in Parquet messages they count data rows from 1.
"""

from __future__ import annotations

import os
import re
import time
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote, unquote

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from .errors import MlrayError
from .io import first_line as _first_line
from .io import read_csv_strict, write_parquet_atomic
from .labels import LabelArrays, image_id_from_name
from .labels import NUM_CLASSES

DEFAULT_K = 20
CLASS_LIST = pa.list_(pa.int16())
PROB_LIST = pa.list_(pa.float32())
LOGITS_FIELD = pa.field("logits", pa.list_(pa.float16()))
PREDICTIONS_SCHEMA = pa.schema(
    [
        ("dataset", pa.string()),
        ("model", pa.string()),
        ("image_id", pa.string()),
        ("topk_idx", CLASS_LIST),
        ("topk_prob", PROB_LIST),  # null = probabilities unknown
    ]
)
KEY_COLUMNS = ("dataset", "model", "image_id")
PARQUET_SUFFIXES = {".parquet", ".pq"}
_INT_TEXT = re.compile(r"[+-]?\d+")
_PROB_TOLERANCE = 1e-6


# --------------------------------------------------------------------------------------------------------------
# Building and checking prediction tables


# --------------------------------------------------------------------------------------------------------------
# Scores -> ranks (how the store makes top-k lists)


def softmax(logits: np.ndarray, axis: int = -1) -> np.ndarray:
    """Numerically stable softmax ``exp(x - max) / sum(exp(x - max))`` along ``axis``.

    float64 input stays float64; any other input is computed and returned as float32. ``-inf`` logits get
    probability 0; a row of ``-inf`` only, or any NaN, gives NaN.
    """
    x = np.asarray(logits)
    x = x.astype(np.float64 if x.dtype == np.float64 else np.float32, copy=False)
    shifted = x - np.max(x, axis=axis, keepdims=True)
    e = np.exp(shifted)
    return e / np.sum(e, axis=axis, keepdims=True)


def topk_from_scores(scores: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """The k best classes of each row of ``scores`` (n, C), best first, ties broken by the lower class index.

    Scores are used as given (probabilities or logits; apply :func:`softmax` first for probabilities). Returns
    ``(idx int16 (n, k), score float32 (n, k))``; the order is descending score, and among equal scores ascending
    class index (a stable sort of the row), so the result is deterministic. Runs in O(n * C): a partition finds
    the k-th largest value, and only the winners are sorted. NaN scores are an error.
    """
    s = np.asarray(scores)
    if s.ndim != 2:
        raise MlrayError(f"topk_from_scores: scores must be 2-D (n, classes), got shape {s.shape}")
    n, c = s.shape
    if not (1 <= int(k) <= c):
        raise MlrayError(f"topk_from_scores: k must be in 1..{c} (number of classes), got {k}")
    if c > np.iinfo(np.int16).max:
        raise MlrayError(f"topk_from_scores: {c} classes do not fit int16 indices")
    k = int(k)
    if n == 0:
        return np.zeros((0, k), np.int16), np.zeros((0, k), np.float32)
    if np.issubdtype(s.dtype, np.floating) and np.isnan(s).any():
        raise MlrayError("topk_from_scores: scores contain NaN")
    thr = np.partition(s, c - k, axis=1)[:, c - k : c - k + 1]  # k-th largest value of each row
    above = s > thr
    equal = s == thr
    room = k - above.sum(axis=1, keepdims=True)  # how many tied-at-threshold entries fit, lowest index first
    chosen = above | (equal & (np.cumsum(equal, axis=1) <= room))
    cols = np.nonzero(chosen)[1].reshape(n, k)  # ascending class index within each row
    vals = np.take_along_axis(s, cols, axis=1)
    order = np.argsort(-vals, axis=1, kind="stable")  # descending score; stable keeps lower index first on ties
    idx = np.take_along_axis(cols, order, axis=1).astype(np.int16)
    return idx, np.take_along_axis(vals, order, axis=1).astype(np.float32)


def predictions_table(
    dataset: str,
    model: str,
    image_ids: Sequence[str],
    topk_idx: np.ndarray,
    topk_prob: np.ndarray | None = None,
    logits: np.ndarray | None = None,
) -> pa.Table:
    """A prediction table from dense arrays: ``topk_idx`` (n, K) ints best first, ``topk_prob`` (n, K) or None,
    ``logits`` (n, C) or None (stored as float16)."""
    shown = f"predictions of model {model!r} on dataset {dataset!r}"
    idx = np.asarray(topk_idx)
    n = len(image_ids)
    if idx.ndim != 2 or idx.shape[0] != n:
        raise MlrayError(f"{shown}: topk_idx must be (n_images={n}, K), got {idx.shape}")
    k = idx.shape[1]
    offsets = pa.array(np.arange(0, n * k + 1, k, dtype=np.int32))
    columns = {
        "dataset": pa.array([dataset] * n, pa.string()),
        "model": pa.array([model] * n, pa.string()),
        "image_id": pa.array(list(image_ids), pa.string()),
        "topk_idx": pa.ListArray.from_arrays(offsets, pa.array(idx.reshape(-1).astype(np.int16))),
    }
    if topk_prob is None:
        columns["topk_prob"] = pa.nulls(n, PROB_LIST)
    else:
        prob = np.asarray(topk_prob, dtype=np.float32)
        if prob.shape != idx.shape:
            raise MlrayError(f"{shown}: topk_prob shape {prob.shape} differs from topk_idx shape {idx.shape}")
        columns["topk_prob"] = pa.ListArray.from_arrays(offsets, pa.array(prob.reshape(-1)))
    schema = PREDICTIONS_SCHEMA
    if logits is not None:
        lg = np.asarray(logits, dtype=np.float16)
        if lg.ndim != 2 or lg.shape[0] != n:
            raise MlrayError(f"{shown}: logits must be (n_images={n}, C), got {lg.shape}")
        c = lg.shape[1]
        lg_offsets = pa.array(np.arange(0, n * c + 1, c, dtype=np.int32))
        columns["logits"] = pa.ListArray.from_arrays(lg_offsets, pa.array(lg.reshape(-1)))
        schema = schema.append(LOGITS_FIELD)
    return pa.table(columns, schema=schema)


def _row_of_flat(offsets: np.ndarray, flat_index: int) -> int:
    """The row that flat list value ``flat_index`` belongs to."""
    return int(np.searchsorted(offsets, flat_index, side="right") - 1)


def _first_repeat_row(offsets: np.ndarray, values: np.ndarray) -> tuple[int, int] | None:
    """(row, class) of the first row whose list holds a class twice, or None."""
    counts = np.diff(offsets)
    rows = np.repeat(np.arange(len(counts)), counts)
    order = np.lexsort((values, rows))
    r, v = rows[order], values[order]
    same = (r[1:] == r[:-1]) & (v[1:] == v[:-1])
    if not same.any():
        return None
    hits = np.flatnonzero(same)
    first = hits[np.argmin(r[hits])]
    return int(r[first]), int(v[first])


def conform(table: pa.Table, shown: str) -> pa.Table:
    """``table`` cast to the prediction schema (``topk_prob`` added as nulls when absent, ``logits`` kept when
    present, other columns dropped) and checked: no null keys or top-k lists, classes 0..999, no class twice in
    one top-k, ``topk_prob`` (where given) as long as ``topk_idx``. ``shown`` names the table in errors."""
    missing = [c for c in ("dataset", "model", "image_id", "topk_idx") if c not in table.column_names]
    if missing:
        raise MlrayError(
            f"{shown}: not a prediction table: missing column(s) {', '.join(missing)} (found: "
            f"{', '.join(table.column_names)}); use import_predictions for CSV/Parquet files made elsewhere"
        )
    n = table.num_rows
    columns, fields = [], []
    for fld in PREDICTIONS_SCHEMA:
        col = table.column(fld.name) if fld.name in table.column_names else pa.nulls(n, fld.type)
        columns.append(_cast(col, fld.type, shown, fld.name))
        fields.append(fld)
    if "logits" in table.column_names:
        columns.append(_cast(table.column("logits"), LOGITS_FIELD.type, shown, "logits"))
        fields.append(LOGITS_FIELD)
    out = pa.Table.from_arrays(columns, schema=pa.schema(fields))

    def row_name(row: int) -> str:
        return f"row {row + 1} ({out.column('image_id')[row].as_py()})"

    for name in ("dataset", "model", "image_id", "topk_idx"):
        col = out.column(name)
        if col.null_count:
            row = int(np.flatnonzero(col.is_null().to_numpy(zero_copy_only=False))[0])
            raise MlrayError(f"{shown}: row {row + 1}: {name} is null")
    idx = out.column("topk_idx").combine_chunks()
    offsets = idx.offsets.to_numpy().astype(np.int64)
    values = idx.values.to_numpy(zero_copy_only=False).astype(np.int64)[offsets[0] : offsets[-1]]
    offsets = offsets - offsets[0]
    counts = np.diff(offsets)
    if (counts == 0).any():
        row = int(np.flatnonzero(counts == 0)[0])
        raise MlrayError(f"{shown}: {row_name(row)}: empty top-k list")
    bad = np.flatnonzero((values < 0) | (values >= NUM_CLASSES))
    if len(bad):
        row = _row_of_flat(offsets, int(bad[0]))
        raise MlrayError(f"{shown}: {row_name(row)}: class index {values[bad[0]]} is outside 0..{NUM_CLASSES - 1}")
    repeat = _first_repeat_row(offsets, values)
    if repeat is not None:
        raise MlrayError(f"{shown}: {row_name(repeat[0])}: class {repeat[1]} appears twice in one top-k list")
    prob = out.column("topk_prob").combine_chunks()
    if prob.null_count < n:
        has = prob.is_valid().to_numpy(zero_copy_only=False)
        plen = pc.fill_null(pc.list_value_length(prob), 0).to_numpy(zero_copy_only=False)
        wrong = np.flatnonzero(has & (plen != counts))
        if len(wrong):
            row = int(wrong[0])
            raise MlrayError(
                f"{shown}: {row_name(row)}: {plen[row]} probabilities for {counts[row]} classes in topk_idx"
            )
    return out


def _cast(col: pa.ChunkedArray | pa.Array, typ: pa.DataType, shown: str, name: str) -> pa.ChunkedArray | pa.Array:
    if col.type == typ:
        return col
    try:
        return col.cast(typ)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
        raise MlrayError(
            f"{shown}: column {name} of type {col.type} does not convert to {typ} ({_first_line(exc)})"
        ) from None


# --------------------------------------------------------------------------------------------------------------
# The store


def _quote(name: str) -> str:
    return quote(name, safe="")


def partition_dir(root: str | os.PathLike, dataset: str, model: str) -> Path:
    """The folder of the (dataset, model) partition under ``root``."""
    return Path(root) / f"dataset={_quote(dataset)}" / f"model={_quote(model)}"


def part_name(shard: int | str | None = None) -> str:
    """The file name of a part: ``part-00012.parquet`` for shard 12, ``part-<quoted>.parquet`` for a named shard,
    a new unique name (time + random) for None (an appended part)."""
    if shard is None:
        return f"part-{time.strftime('%Y%m%dT%H%M%S')}-{uuid.uuid4().hex[:12]}.parquet"
    if isinstance(shard, (bool, np.bool_)):
        raise MlrayError(f"shard {shard!r} is not an integer or a name")
    if isinstance(shard, (int, np.integer)):
        if shard < 0:
            raise MlrayError(f"shard {shard} is negative")
        return f"part-{int(shard):05d}.parquet"
    text = str(shard)
    if not text:
        raise MlrayError("a shard name must not be empty")
    return f"part-{_quote(text)}.parquet"


def write_partition(
    root: str | os.PathLike,
    dataset: str,
    model: str,
    table: pa.Table,
    shard: int | str | None = None,
) -> Path:
    """Write ``table`` as one part of the (dataset, model) partition under ``root``; returns the part's path.

    The table may omit the ``dataset`` / ``model`` columns (they are filled in); where present they must all equal
    the arguments. Rows are checked (:func:`conform`) and must have distinct image ids. The write is atomic
    (temporary file in the same folder, flushed, then ``os.replace``); with ``shard`` the part's name is fixed
    (:func:`part_name`), so writing the same shard again replaces the earlier part.
    """
    if not dataset or not model:
        raise MlrayError(f"write_partition needs a dataset and a model name (got {dataset!r}, {model!r})")
    target = partition_dir(root, dataset, model) / part_name(shard)
    shown = str(target)
    n = table.num_rows
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
            table = table.append_column(name, pa.array([value] * n, pa.string()))
    table = conform(table, shown)
    dup = _first_duplicate(table.column("image_id"))
    if dup is not None:
        raise MlrayError(f"{shown}: image id {dup[0]!r} appears {dup[1]} times in the rows to write")
    return write_parquet_atomic(table, target)


def write_predictions(root: str | os.PathLike, table: pa.Table, shard: int | str | None = None) -> list[Path]:
    """Write a table that may hold several (dataset, model) pairs: one part per pair (see :func:`write_partition`)."""
    paths = []
    for dataset, model in _pairs(table):
        mask = pc.and_(pc.equal(table.column("dataset"), dataset), pc.equal(table.column("model"), model))
        paths.append(write_partition(root, dataset, model, table.filter(mask), shard))
    return paths


def _pairs(table: pa.Table) -> list[tuple[str, str]]:
    if table.num_rows == 0:
        return []
    keys = table.select(["dataset", "model"]).group_by(["dataset", "model"]).aggregate([])
    return sorted(zip(keys.column("dataset").to_pylist(), keys.column("model").to_pylist()))


def _unprefix(name: str, prefix: str) -> str | None:
    return unquote(name[len(prefix) :]) if name.startswith(prefix) else None


def _parts(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_file() and p.name.startswith("part-") and p.suffix == ".parquet")


def list_partitions(root: str | os.PathLike) -> list[tuple[str, str, list[Path]]]:
    """The store's partitions as ``(dataset, model, [part files])``, sorted; folders without parts are left out.
    Temporary files of unfinished writes (``.tmp-*``) and anything not named like the store are ignored."""
    root = Path(root)
    if not root.is_dir():
        raise MlrayError(f"{root}: no such prediction store (folder)")
    out = []
    for dfolder in sorted(root.iterdir()):
        dataset = _unprefix(dfolder.name, "dataset=")
        if dataset is None or not dfolder.is_dir():
            continue
        for mfolder in sorted(dfolder.iterdir()):
            model = _unprefix(mfolder.name, "model=")
            if model is None or not mfolder.is_dir():
                continue
            files = _parts(mfolder)
            if files:
                out.append((dataset, model, files))
    return sorted(out, key=lambda t: (t[0], t[1]))


def _files_of(path: str | os.PathLike) -> list[tuple[Path, str | None, str | None]]:
    """Parquet files named by ``path`` (store root, dataset folder, partition folder or file), each with the
    (dataset, model) its folder names (None when not inside a partition folder)."""
    text = os.fspath(path)
    if "://" not in text and Path(text).is_dir():
        folder = Path(text)
        model = _unprefix(folder.name, "model=")
        if model is not None:
            dataset = _unprefix(folder.parent.name, "dataset=")
            return [(f, dataset, model) for f in _parts(folder)]
        dataset = _unprefix(folder.name, "dataset=")
        if dataset is not None:
            out = []
            for mfolder in sorted(folder.iterdir()):
                m = _unprefix(mfolder.name, "model=")
                if m is not None and mfolder.is_dir():
                    out.extend((f, dataset, m) for f in _parts(mfolder))
            return out
        return [(f, d, m) for d, m, files in list_partitions(folder) for f in files]
    from .io import resolve

    local = resolve(text)
    dataset = _unprefix(local.parent.parent.name, "dataset=")
    model = _unprefix(local.parent.name, "model=")
    if dataset is None or model is None:
        dataset = model = None
    return [(local, dataset, model)]


def read_predictions(path_or_paths: str | os.PathLike | Iterable[str | os.PathLike]) -> pa.Table:
    """Read stored predictions: store roots, dataset folders, partition folders or single Parquet files (a path or
    a list of them) -> one table with :data:`PREDICTIONS_SCHEMA` (plus ``logits`` when any part has it).

    Checks each part (:func:`conform`), that a part inside a partition folder holds only that partition's
    (dataset, model), and that no (dataset, model, image_id) occurs twice across everything read.
    """
    paths = [path_or_paths] if isinstance(path_or_paths, (str, os.PathLike)) else list(path_or_paths)
    entries: list[tuple[Path, str | None, str | None]] = []
    seen: set[Path] = set()
    for p in paths:
        found = _files_of(p)
        if not found and not (("://" not in os.fspath(p)) and Path(p).is_dir()):
            raise MlrayError(f"{p}: no such file or folder")
        for f, d, m in found:
            key = f.resolve()
            if key not in seen:
                seen.add(key)
                entries.append((f, d, m))
    tables = []
    for i, (f, dataset, model) in enumerate(entries):
        try:
            raw = pq.read_table(f)
        except (pa.ArrowInvalid, OSError) as exc:
            raise MlrayError(f"{f}: not a readable Parquet file ({_first_line(exc)})") from None
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
    with_logits = any("logits" in t.column_names for t in tables)
    if with_logits:
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


def _first_duplicate(col: pa.ChunkedArray | pa.Array) -> tuple[str, int] | None:
    counts = pa.table({"k": col}).group_by("k").aggregate([([], "count_all")])
    dups = counts.filter(pc.greater(counts.column("count_all"), 1))
    if not dups.num_rows:
        return None
    first = dups.sort_by("k").slice(0, 1).to_pylist()[0]
    return first["k"], first["count_all"]


# --------------------------------------------------------------------------------------------------------------
# Importing predictions made elsewhere


class _Rows:
    """Names rows of an input file in messages: CSV rows are file lines (header = row 1), Parquet rows count from 1."""

    def __init__(self, shown: str, is_csv: bool, image_ids: Sequence[str]):
        self.shown = shown
        self.base = 2 if is_csv else 1
        self.image_ids = image_ids

    def fail(self, row: int, what: str) -> MlrayError:
        image = self.image_ids[row] if row < len(self.image_ids) else ""
        entry = f"row {row + self.base} ({image})" if image else f"row {row + self.base}"
        return MlrayError(f"{self.shown}: {entry}: {what}")


def _read_input(local: Path, shown: str) -> tuple[dict[str, object], bool, int]:
    """The columns of a CSV (strings, '' = empty) or Parquet file (Arrow arrays), whether it is CSV, row count."""
    suffixes = [s.lower() for s in local.suffixes]
    if suffixes and suffixes[-1] in PARQUET_SUFFIXES:
        try:
            table = pq.read_table(local)
        except (pa.ArrowInvalid, OSError) as exc:
            raise MlrayError(f"{shown}: not a readable Parquet file ({_first_line(exc)})") from None
        return {name: table.column(name).combine_chunks() for name in table.column_names}, False, table.num_rows
    frame = read_csv_strict(local, shown, sep="\t" if ".tsv" in suffixes else ",")
    names = [str(c).strip() for c in frame.columns]
    frame.columns = names
    return {name: frame[name].to_numpy(dtype=object) for name in names}, True, len(frame)


def _cells(column: object) -> list:
    if isinstance(column, (pa.Array, pa.ChunkedArray)):
        return column.to_pylist()
    return list(column)  # type: ignore[call-overload]


def _parse_int(cell: object) -> int | None:
    """An integer class from a cell, or None when it is not an integer."""
    if isinstance(cell, (bool, np.bool_)) or cell is None:
        return None
    if isinstance(cell, (int, np.integer)):
        return int(cell)
    if isinstance(cell, (float, np.floating)):
        return int(cell) if np.isfinite(cell) and float(cell).is_integer() else None
    if isinstance(cell, str):
        text = cell.strip()
        return int(text) if _INT_TEXT.fullmatch(text) else None
    return None


def _class_lists(column: object, single: bool, rows: _Rows, name: str) -> tuple[np.ndarray, np.ndarray]:
    """(offsets, values) of the classes per row; ``single`` = one class per cell (top1)."""
    if isinstance(column, pa.Array):
        typ = column.type
        if single and pa.types.is_integer(typ) and column.null_count == 0:
            values = column.to_numpy(zero_copy_only=False).astype(np.int64)
            return np.arange(len(values) + 1, dtype=np.int64), values
        is_list = pa.types.is_list(typ) or pa.types.is_large_list(typ) or pa.types.is_fixed_size_list(typ)
        if is_list and pa.types.is_integer(typ.value_type) and column.null_count == 0 and column.values.null_count == 0:
            if pa.types.is_fixed_size_list(typ):
                column = column.cast(pa.list_(typ.value_type))
            offsets = column.offsets.to_numpy().astype(np.int64)
            values = column.values.to_numpy(zero_copy_only=False).astype(np.int64)[offsets[0] : offsets[-1]]
            return offsets - offsets[0], values
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
            idx = _parse_int(part)
            if idx is None:
                raise rows.fail(i, f"{name} value {part!r} is not an integer class index")
            values.append(idx)
        offsets[i + 1] = len(values)
    return offsets, np.asarray(values, dtype=np.int64)


def _prob_lists(column: object, rows: _Rows) -> list[list[float] | None]:
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
    if key not in columns:
        if not given:
            raise MlrayError(f"{rows.shown}: no {key} column and no {key} given (pass {key}=...)")
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
    from .io import resolve

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
        row = _row_of_flat(offsets, int(bad[0]))
        raise rows.fail(row, f"class index {values[bad[0]]} is outside 0..{NUM_CLASSES - 1}")
    repeat = _first_repeat_row(offsets, values)
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


# --------------------------------------------------------------------------------------------------------------
# Alignment with a dataset's labels


@dataclass(frozen=True)
class Aligned:
    """One model's predictions on one dataset in the row order of the dataset's labels.

    ``topk[i, j]`` is the j-th ranked class for label row i (-1 = padding: a shorter stored list or no prediction
    at all); ``prob`` the matching probabilities (NaN = unknown or padding); ``has_prediction[i]`` whether image i
    has a prediction. ``n_missing`` images of the dataset have none; ``missing_examples`` lists up to 5 of them.
    """

    dataset: str
    model: str
    topk: np.ndarray  # int16 (n, K)
    prob: np.ndarray  # float32 (n, K)
    has_prediction: np.ndarray  # bool (n,)
    n_missing: int
    missing_examples: list[str]

    @property
    def k(self) -> int:
        return self.topk.shape[1]

    @property
    def n(self) -> int:
        return self.topk.shape[0]


def align(pred: pa.Table, labels: LabelArrays, dataset: str, model: str, source: str | None = None) -> Aligned:
    """Lay out ``model``'s predictions on ``dataset`` (rows of ``pred`` with that dataset and model) in the row
    order of ``labels``. K is the longest stored top-k list. ``source`` names the predictions in errors (default:
    the dataset and model). Errors: no predictions for the pair, an image id predicted twice, predicted ids that
    the dataset does not have (count + an example).
    """
    shown = source or f"predictions of model {model!r} on dataset {dataset!r}"
    mask = pc.and_(pc.equal(pred.column("dataset"), dataset), pc.equal(pred.column("model"), model))
    sub = pred.filter(mask)
    if sub.num_rows == 0:
        pairs = _pairs(pred)
        have = ", ".join(f"{d}/{m}" for d, m in pairs[:10]) or "none"
        raise MlrayError(f"{shown}: no predictions of model {model!r} on dataset {dataset!r} (present: {have})")
    sub = conform(sub, shown)
    dup = _first_duplicate(sub.column("image_id"))
    if dup is not None:
        raise MlrayError(f"{shown}: image id {dup[0]!r} is predicted {dup[1]} times")

    import pandas as pd

    ids = sub.column("image_id").to_numpy(zero_copy_only=False).astype(object)
    label_index = pd.Index(labels.image_ids)
    if not label_index.is_unique:
        raise MlrayError(f"dataset {dataset!r}: the labels hold an image id twice")
    where = label_index.get_indexer(ids)
    unknown = np.flatnonzero(where < 0)
    if len(unknown):
        raise MlrayError(
            f"{shown}: {len(unknown):,} predicted image id(s) are not in dataset {dataset!r}, e.g. {ids[unknown[0]]!r}"
        )

    idx = sub.column("topk_idx").combine_chunks()
    offsets = idx.offsets.to_numpy().astype(np.int64)
    values = idx.values.to_numpy(zero_copy_only=False).astype(np.int16)[offsets[0] : offsets[-1]]
    offsets = offsets - offsets[0]
    counts = np.diff(offsets)
    k = int(counts.max())
    n = labels.n
    rows = np.repeat(where, counts)
    pos = np.arange(len(values)) - np.repeat(offsets[:-1], counts)
    topk = np.full((n, k), -1, dtype=np.int16)
    topk[rows, pos] = values
    prob = np.full((n, k), np.nan, dtype=np.float32)
    prob_col = sub.column("topk_prob").combine_chunks()
    if prob_col.null_count < len(prob_col):
        has = prob_col.is_valid().to_numpy(zero_copy_only=False)
        p_off = prob_col.offsets.to_numpy().astype(np.int64)
        p_val = prob_col.values.to_numpy(zero_copy_only=False).astype(np.float32)
        keep = np.repeat(has, counts)  # conform() checked equal lengths where present
        starts = np.repeat(p_off[:-1], counts)
        prob[rows[keep], pos[keep]] = p_val[(starts + pos)[keep]]
    has_prediction = np.zeros(n, dtype=bool)
    has_prediction[where] = True
    missing = np.flatnonzero(~has_prediction)
    return Aligned(
        dataset=dataset,
        model=model,
        topk=topk,
        prob=prob,
        has_prediction=has_prediction,
        n_missing=int(len(missing)),
        missing_examples=[str(labels.image_ids[i]) for i in missing[:5]],
    )
