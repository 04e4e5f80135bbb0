"""Confidence metrics, vectorized: valid labels a single-label benchmark penalizes, and calibration under both truths.

The metrics (:data:`~mlray.scoring.registry.CONFIDENCE`; exact definitions and reference functions in
:mod:`mlray.scoring.functional`), for image i with top-1 rank p_i1 and its probability c_i:

* ``penalized_valid_share``: over *mistaken* images (labelled, with an original label y_i, a prediction, and
  p_i1 != y_i), the share with p_i1 in L_i: top-1 "mistakes" that are valid labels;
* ``penalized_valid_share_conf50``: the same over the mistaken images with c_i >= t (``confidence_threshold``,
  default 0.5; the name carries t in percent);
* ``ece_top1`` / ``ece_real``: expected calibration error of c_i, ``sum_b (n_b / N) |acc_b - conf_b|`` over
  ``ece_bins`` (15) equal-width bins of [0, 1] (bin b holds b/M <= c < (b+1)/M, c = 1 in the last), right meaning
  p_i1 = y_i over the images with an original label (``ece_top1``), p_i1 in L_i over the labelled images
  (``ece_real``).

Every value is a function of per-image columns summed over images (:data:`COLUMNS`: the mistaken counts, and per
bin and truth the image count, the confidence sum and the hit count), so the subgroups (by k_i, as every metric),
the overall value (all images, unlabelled ones included for ``ece_top1``) and the bootstrap (resampled sums:
``C @ F``, the same resamples as the other metrics, paired across models) all come from column sums. A metric
that reads c_i is unavailable (NaN with a reason) where an image it is taken over has no probability stored
(an imported top-1 list, say).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from .context import DatasetContext
from .params import MetricParams
from .results import MetricValue, ModelScore, percentile_ci, ratio

MIS, MIS_VALID, CONF, CONF_VALID = 0, 1, 2, 3
"""The first columns: mistaken images, those whose top-1 is valid, and the same for the confident ones."""
TRUTHS = ("original", "valid set")
"""The two truths of the calibration columns and the reliability table (``ece_top1``, ``ece_real``)."""


def n_columns(bins: int) -> int:
    """Per-image columns for ``bins`` bins: the 4 mistaken counts, then per truth the count, confidence sum and hit
    count of each bin."""
    return 4 + 6 * bins


def bin_columns(bins: int, truth: int) -> tuple[slice, slice, slice]:
    """The (count, confidence sum, hit count) column slices of truth ``truth`` (0 = original, 1 = valid set)."""
    base = 4 + 3 * bins * truth
    return slice(base, base + bins), slice(base + bins, base + 2 * bins), slice(base + 2 * bins, base + 3 * bins)


def confidence_bins(conf: np.ndarray, bins: int) -> np.ndarray:
    """The bin of each confidence (NaN -> bin 0; the caller masks those), as
    :func:`~mlray.scoring.functional.calibration_bin`."""
    edges = np.linspace(0.0, 1.0, bins + 1)
    return np.minimum(np.searchsorted(edges, np.nan_to_num(conf), side="right") - 1, bins - 1).clip(0)


def confidence_columns(
    ctx: DatasetContext,
    top1: np.ndarray,
    top1_valid: np.ndarray,
    has_pred: np.ndarray,
    top1_prob: np.ndarray | None,
    params: MetricParams,
) -> tuple[np.ndarray, np.ndarray]:
    """The per-image columns F (n, :func:`n_columns`) float32, and per image which of the three probability
    readers (confident share, ECE original, ECE valid set) it lacks a probability for: bool (3, n)."""
    n, M = ctx.n, params.ece_bins
    c = np.full(n, np.nan) if top1_prob is None else np.asarray(top1_prob, dtype=np.float64)
    has_p = has_pred & ~np.isnan(c)
    mistaken = ctx.labelled & ctx.orig_ok & has_pred & (top1 != ctx.original)
    confident = mistaken & has_p & (c >= params.confidence_threshold)
    F = np.zeros((n, n_columns(M)), dtype=np.float32)
    F[:, MIS] = mistaken
    F[:, MIS_VALID] = mistaken & top1_valid
    F[:, CONF] = confident
    F[:, CONF_VALID] = confident & top1_valid
    b = confidence_bins(c, M)
    rows = np.arange(n)
    takers = (ctx.orig_ok & has_pred, ctx.labelled & has_pred)
    rights = (top1 == ctx.original, top1_valid)
    for t, (taken, right) in enumerate(zip(takers, rights)):
        count, conf_sum, hits = bin_columns(M, t)
        on = taken & has_p
        F[rows[on], count.start + b[on]] = 1.0
        F[rows[on], conf_sum.start + b[on]] = c[on]
        F[rows[on], hits.start + b[on]] = right[on]
    lacking = np.stack([mistaken & ~has_p, takers[0] & ~has_p, takers[1] & ~has_p])
    return F, lacking


def values(S: np.ndarray, params: MetricParams) -> dict[str, np.ndarray]:
    """Each confidence metric from column sums ``S`` (..., n_columns): NaN where it is taken over no image."""
    M = params.ece_bins
    out = {
        "penalized_valid_share": ratio(S[..., MIS_VALID], S[..., MIS]),
        params.confident_metric: ratio(S[..., CONF_VALID], S[..., CONF]),
    }
    for t, name in enumerate(("ece_top1", "ece_real")):
        count, conf_sum, hits = bin_columns(M, t)
        out[name] = ratio(np.abs(S[..., hits] - S[..., conf_sum]).sum(axis=-1), S[..., count].sum(axis=-1))
    return out


def denominators(S: np.ndarray, params: MetricParams) -> dict[str, np.ndarray]:
    """The images each confidence metric is taken over, from column sums ``S``."""
    M = params.ece_bins
    return {
        "penalized_valid_share": S[..., MIS],
        params.confident_metric: S[..., CONF],
        "ece_top1": S[..., bin_columns(M, 0)[0]].sum(axis=-1),
        "ece_real": S[..., bin_columns(M, 1)[0]].sum(axis=-1),
    }


def names(params: MetricParams) -> tuple[str, ...]:
    """The report names of the confidence metrics, in report order."""
    return ("penalized_valid_share", params.confident_metric, "ece_top1", "ece_real")


_READS = {1: 0, 2: 1, 3: 2}  # metric position in names() -> row of ``lacking`` (the share reads no probability)


def fill_confidence(score: ModelScore, F: np.ndarray, lacking: np.ndarray) -> None:
    """Point values of the confidence metrics, overall and per subgroup, into ``score.results`` /
    ``score.subgroups`` (unavailable where an image taken over lacks its probability)."""
    p, G = score.params, score.n_groups
    nb = G + 1
    S = np.stack([np.bincount(score.group, weights=col, minlength=nb) for col in F.T.astype(np.float64)], axis=1)
    bad = np.stack([np.bincount(score.group, weights=row, minlength=nb) for row in lacking]).round().astype(np.int64)
    score.confidence_F, score.confidence_sums = F, S
    score.confidence_names = names(p)
    total = values(S.sum(axis=0), p)
    total_n = denominators(S.sum(axis=0), p)
    per_group = values(S, p)
    group_n = denominators(S, p)
    for j, name in enumerate(score.confidence_names):
        miss = bad[_READS[j]] if j in _READS else np.zeros(nb, np.int64)
        score.results[name] = _value(float(total[name]), int(np.rint(total_n[name])), int(miss.sum()), name, "")
        for g in range(1, G + 1):
            label = score.group_labels[g - 1]
            score.subgroups[(name, label)] = _value(
                float(per_group[name][g]), int(np.rint(group_n[name][g])), int(miss[g]), name, f"group {label}: "
            )


def _value(v: float, n: int, missing: int, name: str, prefix: str) -> MetricValue:
    if missing:
        return MetricValue(
            math.nan, n + missing, False,
            f"{prefix}needs top-1 probabilities; {missing:,} of {n + missing:,} images have none stored",
        )  # fmt: skip
    if n == 0 or math.isnan(v):
        return MetricValue(math.nan, 0, False, f"{prefix}no images to take {name} over")
    return MetricValue(v, n, True)


def bootstrap_confidence(scores: Sequence[ModelScore], ctx: DatasetContext, params: MetricParams) -> None:
    """Percentile intervals of the confidence metrics (overall and per subgroup) of ``scores``, in place, from
    the dataset's resamples (the same as every other metric's): resampled column sums ``C @ F`` per slice of
    images with the same k_i, merged into groups."""
    scores = [s for s in scores if s.confidence_F is not None]
    B = params.n_boot
    if not scores or B == 0 or ctx.n == 0:
        return
    width = scores[0].confidence_F.shape[1]  # type: ignore[union-attr]
    Fp = np.concatenate([s.confidence_F[ctx.order] for s in scores], axis=1)  # type: ignore[index]
    sums = np.zeros((B, len(ctx.k_bounds) - 1, Fp.shape[1]), np.float32)
    for b0, C in ctx.resample_chunks(B, params.seed):
        ctx.slice_sums(C, Fp, sums[b0 : b0 + C.shape[0]])
    groups = ctx.group_sums(sums)
    for i, s in enumerate(scores):
        S = groups[:, :, i * width : (i + 1) * width]
        total, per_group = values(S.sum(axis=1), params), values(S[:, 1:], params)
        cols, targets = [], []
        for name in s.confidence_names:
            if s.results[name].available:
                cols.append(total[name])
                targets.append(s.results[name])
            for gi, label in enumerate(s.group_labels):
                mv = s.subgroups[(name, label)]
                if mv.available:
                    cols.append(per_group[name][:, gi])
                    targets.append(mv)
        if cols:
            lo, hi = percentile_ci(np.stack(cols, axis=1), params.ci)
            for t, a_, b_ in zip(targets, lo, hi):
                t.ci_low, t.ci_high = float(a_), float(b_)


def reliability_rows(score: ModelScore) -> list[dict[str, object]]:
    """The reliability table of ``score``: per truth and bin, ``truth, bin, bin_low, bin_high, n, confidence,
    accuracy`` (NaN means in an empty bin), over every image the ECE of that truth is taken over."""
    M = score.params.ece_bins
    S = score.confidence_sums.sum(axis=0) if score.confidence_sums is not None else np.zeros(n_columns(M))
    edges = np.linspace(0.0, 1.0, M + 1)
    rows: list[dict[str, object]] = []
    for t, truth in enumerate(TRUTHS):
        count, conf_sum, hits = bin_columns(M, t)
        n = S[count]
        conf, acc = ratio(S[conf_sum], n), ratio(S[hits], n)
        for b in range(M):
            rows.append({"truth": truth, "bin": b, "bin_low": float(edges[b]), "bin_high": float(edges[b + 1]),
                         "n": int(round(n[b])), "confidence": float(conf[b]), "accuracy": float(acc[b])})  # fmt: skip
    return rows
