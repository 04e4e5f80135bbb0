"""Alignment: one model's stored predictions on a dataset laid out in the row order of the dataset's labels
(:class:`mlray.labels.LabelArrays`) as dense arrays, the form the metrics compute on."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from ..errors import MlrayError
from ..labels import LabelArrays
from .tables import conform, first_duplicate, pairs


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
        """Ranks per image (the longest stored top-k list)."""
        return self.topk.shape[1]

    @property
    def n(self) -> int:
        """Images of the dataset (label rows)."""
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
        present = pairs(pred)
        have = ", ".join(f"{d}/{m}" for d, m in present[:10]) or "none"
        raise MlrayError(f"{shown}: no predictions of model {model!r} on dataset {dataset!r} (present: {have})")
    sub = conform(sub, shown)
    dup = first_duplicate(sub.column("image_id"))
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
