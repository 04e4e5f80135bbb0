"""The fast path: every metric of many models on one dataset, vectorized over images (numpy, no Ray).

``topk`` is an integer array (n, K) aligned to the label rows, best first, ``-1`` = no rank stored there (padding,
only at the end of a row); a row of ``-1`` only is an image with no prediction: excluded from every metric and
counted (``n_no_prediction``). Each per-image metric of :data:`~mlray.scoring.registry.PER_IMAGE` is computed from
its registry entry (which ranks it reads and against what) and equals its reference definition in
:mod:`mlray.scoring.functional`; the package docstring (:mod:`mlray.scoring`) states the choices (subgroups, ASMA,
unavailable values, the bootstrap).
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import numpy as np

from ..errors import MlrayError
from ..labels import LabelArrays
from .bootstrap import bootstrap_scores
from .confidence import confidence_columns, fill_confidence
from .context import DatasetContext, prepare_dataset
from .params import MetricParams
from .registry import METRICS, PER_IMAGE, SHANKAR
from .results import ELIGIBLE_ROW, N_ROWS, MetricValue, ModelScore

_K_READ = max(m.k for m in PER_IMAGE if m.k is not None)  # the most ranks a fixed-k metric reads (5)


def score_model(
    labels: LabelArrays,
    topk: np.ndarray,
    params: MetricParams | None = None,
    *,
    bootstrap: bool = True,
    context: DatasetContext | None = None,
    top1_prob: np.ndarray | None = None,
) -> ModelScore:
    """Score one model on one dataset: every metric, every subgroup, ASMA and (``bootstrap``) the intervals.

    ``topk`` (n, K) int, aligned to the rows of ``labels``, best first, ``-1`` = padding (trailing only); rows
    of ``-1`` only are images without prediction. Raises :class:`MlrayError` for a wrong shape, entries outside
    -1..999, a class after padding or a class repeated within the ranks a metric reads. ``top1_prob`` (n,) is
    the probability of each image's top-1 rank (NaN = unknown; None = none stored): the confidence metrics
    (:mod:`mlray.scoring.confidence`) that read it are unavailable without it. Equivalent to
    ``score_models(labels, [topk], ..., top1_probs=[top1_prob])[0]``.
    """
    probs = None if top1_prob is None else [top1_prob]
    return score_models(labels, [topk], params, bootstrap=bootstrap, context=context, top1_probs=probs)[0]


def score_models(
    labels: LabelArrays,
    topks: Iterable[np.ndarray],
    params: MetricParams | None = None,
    *,
    bootstrap: bool = True,
    context: DatasetContext | None = None,
    top1_probs: Iterable[np.ndarray | None] | None = None,
) -> list[ModelScore]:
    """:func:`score_model` for several models of one dataset (``top1_probs``: one ``top1_prob`` per model, or
    None); the bootstrap runs for all of them at once."""
    params = params or MetricParams()
    ctx = context if context is not None else prepare_dataset(labels, params)
    topks = list(topks)
    probs = [None] * len(topks) if top1_probs is None else list(top1_probs)
    if len(probs) != len(topks):
        raise MlrayError(f"scoring: {len(probs)} top-1 probability arrays for {len(topks)} models")
    scores = [_score_point(ctx, t, params, p) for t, p in zip(topks, probs)]
    if bootstrap and params.n_boot > 0 and scores:
        bootstrap_scores(scores, labels, params, context=ctx)
    return scores


def _check_topk(topk: np.ndarray, n: int, num_classes: int) -> np.ndarray:
    t = np.asarray(topk)
    if t.ndim != 2 or t.shape[0] != n or t.shape[1] < 1:
        raise MlrayError(f"predictions: topk must have shape (n_images={n}, K >= 1), got {t.shape}")
    if not np.issubdtype(t.dtype, np.integer):
        raise MlrayError(f"predictions: topk must hold integer class indices, got dtype {t.dtype}")
    if t.size and (t.min() < -1 or t.max() >= num_classes):
        raise MlrayError(f"predictions: topk entries must be -1 (padding) or class indices 0..{num_classes - 1}")
    return t


def _stored_ranks(ctx: DatasetContext, t: np.ndarray) -> np.ndarray:
    """r_i, the number of stored (non-padding) ranks of each image, after checking the padding is trailing."""
    n, K = t.shape
    r = np.full(n, K, dtype=np.int64)
    if t.size and t.min() < 0:
        stored = t >= 0
        if K > 1 and np.any(stored[:, 1:] & ~stored[:, :-1]):
            row = int(np.flatnonzero(np.any(stored[:, 1:] & ~stored[:, :-1], axis=1))[0])
            raise MlrayError(
                f"predictions: row {row} ({ctx.labels.image_ids[row]}) has a class after a -1 padding rank"
            )
        padded = np.flatnonzero(~stored[:, -1])
        r[padded] = stored[padded].sum(axis=1)
    return r


def _per_image_values(ctx: DatasetContext, tn: np.ndarray, hits: np.ndarray) -> dict[str, np.ndarray]:
    """Each per-image metric's value per image (bool or float), from the ranks read ``tn`` (n, kn) and ``hits``
    (n, kn): [rank j of image i is a valid label]. Padding never hits; eligibility is applied by the caller."""
    kn = tn.shape[1]
    k = ctx.k
    if kn <= 52:  # the hits of a row as bits (exact in float64), counted with popcount
        ftype = np.float32 if kn <= 24 else np.float64
        bits = (hits.view(np.uint8).astype(ftype) @ (2.0 ** np.arange(kn)).astype(ftype)).astype(np.int64)

        def valid_in(kk: int | np.ndarray) -> np.ndarray:  # |T_kk(i) ∩ L_i|
            return np.bitwise_count(bits & ((np.int64(1) << np.minimum(kk, kn)) - 1)).astype(np.int64)

    else:
        cum = np.cumsum(hits, axis=1, dtype=np.int32)

        def valid_in(kk: int | np.ndarray) -> np.ndarray:
            kk = np.broadcast_to(np.minimum(kk, kn), (len(cum),))
            at = np.take_along_axis(cum, (np.maximum(kk, 1) - 1)[:, None], axis=1)[:, 0]
            return np.where(kk > 0, at, 0).astype(np.int64)

    orig = ctx.original
    c_k = valid_in(k)  # |T_{k_i}(i) ∩ L_i|
    out: dict[str, np.ndarray] = {}
    for m in PER_IMAGE:
        if m.definition == "top_k_accuracy":
            kk = min(int(m.k or 1), kn)
            hit = tn[:, 0] == orig
            for j in range(1, kk):
                hit |= tn[:, j] == orig
            out[m.name] = hit
        elif m.definition == "real_accuracy":
            out[m.name] = hits[:, 0] if m.k == 1 else valid_in(int(m.k or 1)) > 0
        elif m.mode == "all":
            out[m.name] = c_k == k
        elif m.mode == "frac":
            out[m.name] = c_k / np.maximum(k, 1)
        elif m.mode == "any":
            out[m.name] = c_k > 0
        else:  # a registry entry this scorer does not know
            raise AssertionError(f"no vectorized rule for metric {m.name}")
    return out


def _score_point(
    ctx: DatasetContext, topk: np.ndarray, params: MetricParams, top1_prob: np.ndarray | None = None
) -> ModelScore:
    n, G = ctx.n, ctx.max_group
    t = _check_topk(topk, n, ctx.num_classes)
    K = t.shape[1]
    r = _stored_ranks(ctx, t)
    has_pred = r > 0
    kn = min(K, max(_K_READ, ctx.kmax))  # the ranks any metric reads
    tn = t[:, :kn]
    if kn > 1:
        srt = np.sort(tn, axis=1)
        dup = (srt[:, 1:] == srt[:, :-1]) & (srt[:, 1:] >= 0)
        if dup.any():
            row = int(np.flatnonzero(dup.any(axis=1))[0])
            raise MlrayError(f"predictions: row {row} ({ctx.labels.image_ids[row]}) repeats a class in its ranks")
    hits = ctx.L_flat.take(ctx.row_base() + tn)  # (n, kn) bool: rank j of image i is a valid label
    values = _per_image_values(ctx, tn, hits)

    eligible = {"original": ctx.orig_ok & has_pred, "labelled": ctx.labelled & has_pred}
    X = np.empty((N_ROWS, n), dtype=np.float64)  # one row per per-image column (contiguous for bincount)
    for j, m in enumerate(PER_IMAGE):
        v, e = values[m.name], eligible[m.denominator]
        if v.dtype == bool:
            np.logical_and(v, e, out=X[j], casting="unsafe")
        else:
            np.multiply(v, e, out=X[j])
    for d, row in ELIGIBLE_ROW.items():
        X[row] = eligible[d]

    grp = ctx.group
    nb = G + 1
    num = np.empty((nb, len(METRICS)), np.float64)
    den = np.empty((nb, len(METRICS)), np.int64)
    bad = np.zeros((nb, len(METRICS)), np.int64)
    den_by = {d: np.bincount(grp, weights=X[row], minlength=nb).round().astype(np.int64)
              for d, row in ELIGIBLE_ROW.items()}  # fmt: skip
    for j, m in enumerate(PER_IMAGE):
        num[:, j] = np.bincount(grp, weights=X[j], minlength=nb)
        den[:, j] = den_by[m.denominator]
        if m.k != 1:  # images taken on that lack the ranks they need (every predicted image has 1)
            short = eligible[m.denominator] & (r < (ctx.k if m.k is None else m.k))
            if short.any():
                bad[:, j] = np.bincount(grp[short], minlength=nb)

    score = ModelScore(
        params=params,
        K=K,
        n_images=n,
        group_labels=ctx.group_labels,
        group=grp,
        original=ctx.original,
        X=X.astype(np.float32),
        num=num,
        den=den,
        bad=bad,
        n_no_prediction=int(np.sum(~has_pred)),
        n_excluded_empty=ctx.n_empty,
        n_excluded_unannotated=ctx.n_unannotated,
        n_excluded_no_original=ctx.n_no_original,
        dataset_key=ctx.key,
    )
    population = {"original": ctx.orig_ok, "labelled": ctx.labelled}
    score.no_prediction_by_metric = {m.name: int(np.sum(population[m.denominator] & ~has_pred)) for m in PER_IMAGE}
    _fill_point_results(score)
    _score_shankar(ctx, score, tn[:, 0], hits[:, 0], has_pred)
    if top1_prob is not None and np.shape(top1_prob) != (n,):
        raise MlrayError(f"predictions: top-1 probabilities must have shape ({n},), got {np.shape(top1_prob)}")
    F, lacking = confidence_columns(ctx, tn[:, 0], hits[:, 0] & has_pred, has_pred, top1_prob, params)
    fill_confidence(score, F, lacking)
    unpredicted = int(np.sum(ctx.labelled & ctx.orig_ok & ~has_pred))  # cannot tell whether they are "mistaken"
    score.no_prediction_by_metric.update(
        penalized_valid_share=unpredicted, penalized_valid_share_conf=unpredicted,
        ece_top1=score.no_prediction_by_metric["top1"], ece_real=score.no_prediction_by_metric["real_top1"],
    )  # fmt: skip
    return score


def _fill_point_results(score: ModelScore) -> None:
    """Headline, subgroup and ASMA values (with their reasons when unavailable) from ``num``/``den``/``bad``."""
    p, G = score.params, score.n_groups
    for j, m in enumerate(PER_IMAGE):
        n_all, bad_all = int(score.den[:, j].sum()), int(score.bad[:, j].sum())
        if n_all == 0:
            score.results[m.name] = MetricValue(math.nan, 0, False, f"no images to take {m.name} over ({m.over})")
        elif bad_all:
            score.results[m.name] = MetricValue(
                math.nan, n_all, False,
                f"needs {m.needs}; {bad_all:,} of {n_all:,} images have fewer stored (K={score.K})",
            )  # fmt: skip
        else:
            score.results[m.name] = MetricValue(float(score.num[:, j].sum() / n_all), n_all, True)
        for g in range(1, G + 1):
            label, n_g, bad_g = score.group_labels[g - 1], int(score.den[g, j]), int(score.bad[g, j])
            if n_g == 0:
                mv = MetricValue(math.nan, 0, False, f"group {label}: no images")
            elif bad_g:
                mv = MetricValue(
                    math.nan, n_g, False,
                    f"group {label}: needs {m.needs}; {bad_g:,} of {n_g:,} images have fewer stored (K={score.K})",
                )  # fmt: skip
            else:
                mv = MetricValue(float(score.num[g, j] / n_g), n_g, True)
            score.subgroups[(m.name, label)] = mv
        am = f"asma_{m.name}"
        used = [g for g in range(1, G + 1) if score.den[g, j] >= p.min_group_size]
        score.asma_groups[am] = tuple(score.group_labels[g - 1] for g in used)
        n_used = int(sum(score.den[g, j] for g in used))
        if not used:
            score.results[am] = MetricValue(
                math.nan, 0, False, f"no subgroup has >= min_group_size={p.min_group_size} images"
            )
            continue
        missing = [score.group_labels[g - 1] for g in used if score.bad[g, j]]
        if missing:
            score.results[am] = MetricValue(
                math.nan, n_used, False,
                f"used group(s) {', '.join(missing)} unavailable: needs {m.needs} (K={score.K})",
            )  # fmt: skip
        else:
            vals = [score.num[g, j] / score.den[g, j] for g in used]
            score.results[am] = MetricValue(float(np.mean(vals)), n_used, True)


def _score_shankar(ctx: DatasetContext, score: ModelScore, p1: np.ndarray, p1_valid: np.ndarray,
                   has_pred: np.ndarray) -> None:  # fmt: skip
    """``ml_acc_shankar`` (registry entry :data:`~mlray.scoring.registry.SHANKAR_SPEC`), unavailable without
    problematic flags."""
    labels = ctx.labels
    if labels.problematic is None:
        score.results[SHANKAR] = MetricValue(math.nan, 0, False, "labels carry no problematic flags")
        score.no_prediction_by_metric[SHANKAR] = 0
        return
    hit = p1_valid.copy()
    if labels.unclear_offsets is not None and labels.unclear_values is not None and len(labels.unclear_values):
        rows = np.repeat(np.arange(ctx.n), np.diff(labels.unclear_offsets))
        match = labels.unclear_values.astype(np.int32) == p1[rows]
        hit[rows[match]] = True
    base = np.asarray(labels.annotated, bool) & ~np.asarray(labels.problematic, bool) & ctx.orig_ok
    elig = base & has_pred
    score.shankar_hit, score.shankar_elig = hit & elig, elig
    score.no_prediction_by_metric[SHANKAR] = int(np.sum(base & ~has_pred))
    n_e = int(elig.sum())
    score.shankar_info = {
        "n_excluded_problematic": int(np.sum(np.asarray(labels.annotated, bool) & labels.problematic)),
        "unclear_given": labels.unclear_offsets is not None,
        "n_classes": int(len(np.unique(ctx.original[elig]))),
    }
    if n_e == 0:
        score.results[SHANKAR] = MetricValue(math.nan, 0, False, f"no images to take {SHANKAR} over")
        return
    cls = ctx.original[elig].astype(np.intp)
    per_n = np.bincount(cls, minlength=ctx.num_classes)
    per_hit = np.bincount(cls, weights=hit[elig], minlength=ctx.num_classes)
    present = per_n > 0
    score.results[SHANKAR] = MetricValue(float(np.mean(per_hit[present] / per_n[present])), n_e, True)
