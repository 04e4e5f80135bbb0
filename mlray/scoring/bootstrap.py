"""Percentile bootstrap intervals over images, for every metric of many models of one dataset at once.

A resample draws n images with replacement from all n rows of the dataset; each metric is recomputed on it,
restricted to the images it is taken over (a ratio estimator). The resample-count matrix depends only on
(``seed``, the dataset's image ids, the resample index), so every model of a dataset sees the same resamples
(paired comparisons) and two datasets get independent ones. Resamples in which a quantity is undefined (a used
group drawn empty) are dropped from its percentiles.

The resampled sums are exact: every per-image column summed by a matrix product holds integers (the fractional
variable top-k as its hit count |T_{k_i}(i) & L_i|, divided by k_i after summing the images with the same k_i), so
the intervals do not depend on how models are batched or resamples chunked.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from ..errors import MlrayError
from ..labels import LabelArrays
from .confidence import bootstrap_confidence
from .context import K_SLICES, DatasetContext, prepare_dataset
from .params import MetricParams
from .registry import ASMA_METRICS, METRICS, PER_IMAGE, SHANKAR
from .results import N_ROWS, ModelScore, eligible_row, percentile_ci, ratio

_FRAC_ROWS = [j for j, m in enumerate(PER_IMAGE) if m.mode == "frac"]  # rows of X holding |T ∩ L| / k_i


def _integer_rows(X: np.ndarray, k: np.ndarray) -> np.ndarray:
    """``X`` (N_ROWS, n) with the fractional rows turned back into hit counts (value * k_i) where k_i < K_SLICES."""
    out = np.array(X, dtype=np.float32)
    exact = k < K_SLICES
    for j in _FRAC_ROWS:
        out[j, exact] = np.rint(out[j, exact] * k[exact])
    return out


def bootstrap_scores(
    scores: Sequence[ModelScore],
    labels: LabelArrays,
    params: MetricParams | None = None,
    *,
    context: DatasetContext | None = None,
) -> None:
    """Add percentile bootstrap intervals to ``scores`` (models of one dataset), in place.

    With C (B, n) the resample-count matrix of the dataset (the same for every model: paired), the resampled sums
    of every per-image column are ``C @ X``, computed per slice of images with the same k_i (``C[:, slice] @
    X[slice]``) for all models at once, about B * n * 9 multiply-adds per model. Fills ``ci_low``/``ci_high`` of
    every available headline metric, ``ml_acc_shankar``, ASMA and subgroup value, and keeps the resampled sums per
    group in ``score.boot`` for the decomposition.
    """
    params = params or scores[0].params
    ctx = context if context is not None else prepare_dataset(labels, params)
    B = params.n_boot
    if B == 0 or not scores or ctx.n == 0:
        return
    for s in scores:
        if s.dataset_key != ctx.key or s.n_groups != ctx.max_group:
            raise MlrayError("bootstrap: a score was computed on other labels or with another max_group")
    k_sorted = ctx.k[ctx.order]
    Xp = np.concatenate([_integer_rows(s.X[:, ctx.order], k_sorted) for s in scores], axis=0)  # (9M, n)
    biggest = max(1, min(ctx.kmax, K_SLICES - 1))  # the largest per-image entry of Xp
    dtype = np.float32 if ctx.n * biggest < 2**24 else np.float64  # every partial sum an exact integer
    Xp = Xp.astype(dtype, copy=False)
    n_slices = len(ctx.k_bounds) - 1
    sums = np.empty((B, n_slices, Xp.shape[0]), dtype)
    shankar = [s for s in scores if s.shankar_elig is not None]
    shank_mats = [_shankar_matrix(ctx, s) for s in shankar]
    shank_sums = [np.empty((B, 2 * ctx.num_classes), np.float32) for _ in shankar]
    for b0, C in ctx.resample_chunks(B, params.seed):
        b1 = b0 + C.shape[0]
        ctx.slice_sums(C.astype(dtype, copy=False), Xp.T, sums[b0:b1])
        for mat, out in zip(shank_mats, shank_sums):
            out[b0:b1] = (mat.T @ C.T).T
    groups = _group_sums(ctx, sums, len(scores))
    for i, s in enumerate(scores):
        s.boot = np.ascontiguousarray(groups[:, :, i * N_ROWS : (i + 1) * N_ROWS], dtype=np.float32)
        _fill_boot_results(s)
    for s, out in zip(shankar, shank_sums):
        c = ctx.num_classes
        per = ratio(out[:, :c].astype(np.float64), out[:, c:].astype(np.float64))
        present = ~np.isnan(per)  # classes drawn in the resample
        s.boot_shankar = ratio(np.where(present, per, 0.0).sum(axis=1), present.sum(axis=1))
        res = s.results[SHANKAR]
        if res.available:
            lo, hi = percentile_ci(s.boot_shankar[:, None], params.ci)
            res.ci_low, res.ci_high = float(lo[0]), float(hi[0])
    bootstrap_confidence(scores, ctx, params)


def _group_sums(ctx: DatasetContext, sums: np.ndarray, n_models: int) -> np.ndarray:
    """Per-k-slice sums (B, slices, 9M) -> per-group sums (B, max_group + 1, 9M) in float64, the fractional rows
    divided by their slice's k_i (slice K_SLICES holds values already)."""
    S = sums.astype(np.float64)
    frac = [i * N_ROWS + j for i in range(n_models) for j in _FRAC_ROWS]
    for k in range(2, min(S.shape[1], K_SLICES)):
        S[:, k, frac] /= k
    return ctx.group_sums(S)


def _shankar_matrix(ctx: DatasetContext, s: ModelScore) -> Any:
    """Sparse (n, 2C): per image (in slice order) its hit in the column of its class and 1 in column C + class."""
    from scipy import sparse

    assert s.shankar_elig is not None and s.shankar_hit is not None
    inv = np.empty(ctx.n, np.intp)
    inv[ctx.order] = np.arange(ctx.n)
    rows = inv[s.shankar_elig]
    cls = ctx.original[s.shankar_elig].astype(np.intp)
    data = np.concatenate([s.shankar_hit[s.shankar_elig].astype(np.float32), np.ones(len(rows), np.float32)])
    return sparse.csr_matrix(
        (data, (np.concatenate([rows, rows]), np.concatenate([cls, cls + ctx.num_classes]))),
        shape=(ctx.n, 2 * ctx.num_classes),
    )


def resampled_values(s: ModelScore) -> dict[str, np.ndarray]:
    """Resampled values from ``s.boot``: per metric m, ``m`` (B,) overall, ``group:m`` (B, G) per group and
    ``asma_m`` (B,) over the groups ASMA used."""
    if s.boot is None:
        raise MlrayError("bootstrap: the score has no resamples (bootstrap_scores has not run)")
    S = s.boot.astype(np.float64)
    out: dict[str, np.ndarray] = {}
    for j, m in enumerate(PER_IMAGE):
        d = eligible_row(m)
        out[m.name] = ratio(S[:, :, j].sum(axis=1), S[:, :, d].sum(axis=1))
        groups = ratio(S[:, 1:, j], S[:, 1:, d])
        out[f"group:{m.name}"] = groups
        used = [s.group_labels.index(g) for g in s.asma_groups[f"asma_{m.name}"]]
        out[f"asma_{m.name}"] = groups[:, used].mean(axis=1) if used else np.full(len(S), np.nan)
    return out


def _fill_boot_results(s: ModelScore) -> None:
    rv = resampled_values(s)
    cols, targets = [], []
    for m in METRICS + ASMA_METRICS:
        if s.results[m].available:
            cols.append(rv[m])
            targets.append(s.results[m])
        if m in METRICS:
            for gi, label in enumerate(s.group_labels):
                mv = s.subgroups[(m, label)]
                if mv.available:
                    cols.append(rv[f"group:{m}"][:, gi])
                    targets.append(mv)
    if not cols:
        return
    lo, hi = percentile_ci(np.stack(cols, axis=1), s.params.ci)
    for t, a, b in zip(targets, lo, hi):
        t.ci_low, t.ci_high = float(a), float(b)
