"""Building and checking prediction and errors tables (the schemas of :mod:`mlray.store.schema`).

Every problem is a one-line :class:`~mlray.errors.MlrayError` that names the table (``shown``), the row and
what is wrong.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from ..errors import MlrayError, first_line
from ..labels import NUM_CLASSES
from .schema import ERRORS_SCHEMA, LOGITS_FIELD, PREDICTIONS_SCHEMA, PROB_LIST


def predictions_table(
    dataset: str,
    model: str,
    image_ids: Sequence[str],
    topk_idx: np.ndarray,
    topk_prob: np.ndarray | None = None,
    logits: np.ndarray | None = None,
) -> pa.Table:
    """A prediction table from dense arrays: ``topk_idx`` (n, K) ints best first, ``topk_prob`` (n, K) or None,
    ``logits`` (n, C) or None (stored as float16). Trailing -1 entries of a ``topk_idx`` row are padding: that
    row's lists are stored shorter (:func:`mlray.store.topk_with_classes` pads so)."""
    shown = f"predictions of model {model!r} on dataset {dataset!r}"
    idx = np.asarray(topk_idx)
    n = len(image_ids)
    if idx.ndim != 2 or idx.shape[0] != n:
        raise MlrayError(f"{shown}: topk_idx must be (n_images={n}, K), got {idx.shape}")
    k = idx.shape[1]
    stored = idx >= 0
    if stored.all():
        offsets = pa.array(np.arange(0, n * k + 1, k, dtype=np.int32))
    else:
        if k > 1 and np.any(stored[:, 1:] & ~stored[:, :-1]):
            row = int(np.flatnonzero(np.any(stored[:, 1:] & ~stored[:, :-1], axis=1))[0])
            raise MlrayError(f"{shown}: image {image_ids[row]!r} has a class after a -1 padding rank")
        offsets = pa.array(np.concatenate([[0], np.cumsum(stored.sum(axis=1))]).astype(np.int32))
    columns = {
        "dataset": pa.array([dataset] * n, pa.string()),
        "model": pa.array([model] * n, pa.string()),
        "image_id": pa.array(list(image_ids), pa.string()),
        "topk_idx": pa.ListArray.from_arrays(offsets, pa.array(idx[stored].astype(np.int16))),
    }
    if topk_prob is None:
        columns["topk_prob"] = pa.nulls(n, PROB_LIST)
    else:
        prob = np.asarray(topk_prob, dtype=np.float32)
        if prob.shape != idx.shape:
            raise MlrayError(f"{shown}: topk_prob shape {prob.shape} differs from topk_idx shape {idx.shape}")
        columns["topk_prob"] = pa.ListArray.from_arrays(offsets, pa.array(prob[stored]))
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


def errors_table(
    dataset: str,
    model: str,
    image_ids: Sequence[str],
    paths: Sequence[str],
    stages: Sequence[str],
    errors: Sequence[str],
) -> pa.Table:
    """An errors table (:data:`~mlray.store.schema.ERRORS_SCHEMA`): one row per image of ``dataset`` that
    ``model`` could not predict, with where it was read (``paths``), the failing ``stages`` and the ``errors``."""
    n = len(image_ids)
    if not len(paths) == len(stages) == len(errors) == n:
        raise MlrayError(
            f"errors of model {model!r} on dataset {dataset!r}: {n} image ids but {len(paths)} paths, "
            f"{len(stages)} stages and {len(errors)} errors"
        )
    return pa.table(
        {
            "dataset": [dataset] * n,
            "model": [model] * n,
            "image_id": [str(v) for v in image_ids],
            "path": [str(v) for v in paths],
            "stage": [str(v) for v in stages],
            "error": [str(v) for v in errors],
        },
        schema=ERRORS_SCHEMA,
    )


def row_of_flat(offsets: np.ndarray, flat_index: int) -> int:
    """The row that flat list value ``flat_index`` belongs to (``offsets``: the list offsets, from 0)."""
    return int(np.searchsorted(offsets, flat_index, side="right") - 1)


def first_repeat_row(offsets: np.ndarray, values: np.ndarray) -> tuple[int, int] | None:
    """``(row, class)`` of the first row whose list (``offsets`` / flat ``values``) holds a class twice, or None."""
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


def first_duplicate(col: pa.ChunkedArray | pa.Array) -> tuple[str, int] | None:
    """The smallest value that occurs more than once in ``col`` and how often it occurs, or None."""
    counts = pa.table({"k": col}).group_by("k").aggregate([([], "count_all")])
    dups = counts.filter(pc.greater(counts.column("count_all"), 1))
    if not dups.num_rows:
        return None
    first = dups.sort_by("k").slice(0, 1).to_pylist()[0]
    return first["k"], first["count_all"]


def pairs(table: pa.Table) -> list[tuple[str, str]]:
    """The distinct ``(dataset, model)`` pairs of a table, sorted."""
    if table.num_rows == 0:
        return []
    keys = table.select(["dataset", "model"]).group_by(["dataset", "model"]).aggregate([])
    return sorted(zip(keys.column("dataset").to_pylist(), keys.column("model").to_pylist()))


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
        row = row_of_flat(offsets, int(bad[0]))
        raise MlrayError(f"{shown}: {row_name(row)}: class index {values[bad[0]]} is outside 0..{NUM_CLASSES - 1}")
    repeat = first_repeat_row(offsets, values)
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
    """``col`` as type ``typ``, or a one-line error naming the table and the column."""
    if col.type == typ:
        return col
    try:
        return col.cast(typ)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
        raise MlrayError(
            f"{shown}: column {name} of type {col.type} does not convert to {typ} ({first_line(exc)})"
        ) from None
