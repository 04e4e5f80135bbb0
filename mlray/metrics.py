"""Multi-label metrics: pure, vectorized re-scoring of stored ranks against a dataset's labels.

Every function here is numpy on flat arrays (no Ray, no torch), in the style of ``sklearn.metrics`` and
``torchmetrics.functional``. The inputs are a dataset's :class:`~mlray.labels.LabelArrays` and, for one model,
its stored ranks aligned to the label rows:

``topk``  integer array (n, K), best first, ``-1`` = no rank stored there (padding, only at the end of a row).
          A row of ``-1`` only is an image with no prediction: it is excluded from every metric and counted
          (``n_no_prediction``). K is the number of columns (K = 1 for a top-1-only import).

Notation (DESIGN.md, "Metric definitions"): image i has original label y_i (``-1`` unknown), valid-label set L_i,
k_i = |L_i|, unclear set U_i (Shankar et al. labels; empty when not given), stored ranks p_i1, ..., p_ir_i (r_i =
the number of non-padding ranks) and T_k(i) = its top k. An image is *labelled* when it is annotated (valid not
null) and L_i is non-empty.

========================  =======================================================  ===========================
metric                    per-image value                                          taken over
========================  =======================================================  ===========================
``top1``                  [y_i = p_i1]                                             y_i >= 0, with prediction
``top5``                  [y_i in T_5(i)]                                          y_i >= 0, with prediction
``real_top1``             [T_1(i) & L_i != {}]  (ReaL)                             labelled, with prediction
``real_top5``             [T_5(i) & L_i != {}]                                     labelled, with prediction
``vtopk_all``             [L_i subset of T_{k_i}(i)]  (strict variable top-k)      labelled, with prediction
``vtopk_frac``            |T_{k_i}(i) & L_i| / k_i  (fractional)                   labelled, with prediction
``vtopk_any``             [T_{k_i}(i) & L_i != {}]  (lenient)                      labelled, with prediction
``asma_<metric>``         unweighted mean of the subgroup values of <metric>       used subgroups (below)
``ml_acc_shankar``        per original class c: mean of [p_i1 in L_i | U_i];       annotated, not problematic,
                          then the mean over the classes that have such images     y_i >= 0, with prediction
========================  =======================================================  ===========================

Each metric is the mean of its per-image value over the images it is taken over. Images outside that set are
excluded and counted: ``n_excluded_empty`` (annotated with an empty valid set), ``n_excluded_unannotated`` (valid is
null), ``n_excluded_no_original`` (y_i = -1, for ``top1``/``top5``) and ``n_no_prediction`` (label-eligible images
whose row is all ``-1``). With k_i = 1 the three variable top-k variants equal ``real_top1``.

Choices this project makes (each recorded in the ``params`` JSON next to every value):

* **Subgroups.** The group of a labelled image is k_i. Groups ``1 .. max_group-1`` are kept individually and every
  image with k_i >= ``max_group`` falls in one merged group labelled ``f"{max_group}+"`` (default 5: groups
  "1", "2", "3", "4", "5+"). Subgroups exist only for labelled images, so ``top1`` of group g is taken over the
  labelled images of g that have an original label. Every metric (``top1`` too) is reported per subgroup.
* **ASMA.** ``asma_<m>`` is the unweighted mean over subgroups of the subgroup values of ``m``. A group with fewer
  than ``min_group_size`` images (counted over the images ``m`` is taken on) is left out; the groups used are
  reported (``groups_used``). No group large enough -> NaN.
* **Ranks not stored.** A metric that needs more ranks than an image has stored (``top5``/``real_top5`` need 5,
  the variable top-k variants need k_i) is *unavailable* (NaN plus a reason), never zero and never truncated.
  Availability is decided per subgroup: group g is available iff every image of g it is taken on has the ranks it
  needs; the overall value iff every image it is taken on has them; ASMA iff every *used* group is available.
  A top-1-only import (K = 1) therefore gives ``top1``, ``real_top1`` and the variable top-k variants of group
  "1", while ``top5``, ``real_top5`` and the overall variable top-k values are unavailable.
* **Ties.** Ranks are used as stored. :func:`mlray.predictions.topk_from_scores` produces them from scores with ties broken by the
  lower class index.
* **Bootstrap.** Percentile intervals over images: a resample draws n images with replacement from all n rows of
  the dataset, and each metric is recomputed on the resample restricted to the images it is taken over (a ratio
  estimator). The resample-count matrix depends only on (``seed``, the dataset's image ids, the resample index),
  so every model of a dataset sees the same resamples (paired comparisons) and two datasets get independent
  ones. Resamples in which a quantity is undefined (a used group drawn empty) are dropped from its percentiles.
* **Standardization and the gap decomposition** (:func:`decompose`): see its docstring.
"""

from __future__ import annotations

import hashlib
import json
import math
import weakref
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from mlray.errors import MlrayError
from mlray.labels import LabelArrays
from mlray.scoring.params import MetricParams

NUM_CLASSES = 1000

METRICS = ("top1", "top5", "real_top1", "real_top5", "vtopk_all", "vtopk_frac", "vtopk_any")
ASMA_METRICS = tuple(f"asma_{m}" for m in METRICS)
SHANKAR = "ml_acc_shankar"
ALL_METRICS = METRICS + (SHANKAR,) + ASMA_METRICS

MODEL_COLUMNS = ["metric", "value", "ci_low", "ci_high", "n", "params", "available", "reason",
                 "n_excluded_empty", "n_excluded_unannotated", "n_excluded_no_original", "n_no_prediction",
                 "groups_used"]  # fmt: skip
SUBGROUP_COLUMNS = ["group", "metric", "value", "n", "ci_low", "ci_high", "available", "reason"]
DECOMPOSITION_COLUMNS = ["metric", "value_a", "value_b", "gap", "composition", "within", "a_standardized_to_b",
                         "b_standardized_to_a", "gap_ci_low", "gap_ci_high", "composition_ci_low",
                         "composition_ci_high", "within_ci_low", "within_ci_high", "reason"]  # fmt: skip

# Per-image columns of ModelScore.X: one numerator per metric (value * eligible), then the two eligibility masks.
_COL = {m: j for j, m in enumerate(METRICS)}
_ELIG_ORIG, _ELIG_LAB = len(METRICS), len(METRICS) + 1
_NCOL = len(METRICS) + 2
_DEN = {m: (_ELIG_ORIG if m in ("top1", "top5") else _ELIG_LAB) for m in METRICS}

_SPEC = {
    "top1": {"k": 1, "target": "original", "over": "images with an original label"},
    "top5": {"k": 5, "target": "original", "over": "images with an original label"},
    "real_top1": {"k": 1, "target": "valid set", "variant": "ReaL", "over": "labelled images"},
    "real_top5": {"k": 5, "target": "valid set", "variant": "ReaL", "over": "labelled images"},
    "vtopk_all": {"k": "k_i", "target": "valid set", "variant": "strict", "over": "labelled images"},
    "vtopk_frac": {"k": "k_i", "target": "valid set", "variant": "fractional", "over": "labelled images"},
    "vtopk_any": {"k": "k_i", "target": "valid set", "variant": "lenient", "over": "labelled images"},
    SHANKAR: {
        "k": 1,
        "target": "valid set | unclear set",
        "variant": "Shankar et al. 2020, per-class mean",
        "over": "annotated, non-problematic images with an original label",
    },  # fmt: skip
}

_BOOT_CHUNK = 100  # resamples generated per random stream; fixed so resample b never depends on caching
_BOOT_CACHE_BYTES = 1 << 30  # keep a dataset's resample-count matrix in memory up to this size, else regenerate


# --------------------------------------------------------------------------------------------------------------
# Parameters and results


@dataclass
class MetricValue:
    """One metric value: NaN with ``available=False`` and a ``reason`` when it cannot be computed."""

    value: float
    n: int
    available: bool
    reason: str = ""
    ci_low: float = math.nan
    ci_high: float = math.nan


@dataclass
class ModelScore:
    """Everything scored for one (model, dataset); frames and :func:`decompose` read it without re-gathering.

    ``X`` holds the per-image columns (float32, 9 x n, one row per column): for each metric of :data:`METRICS`
    its per-image value times its eligibility, then the eligibility masks (original known & predicted; labelled &
    predicted).
    ``num``/``den``/``bad`` are per slice (0 = not labelled, then groups 1..max_group) and metric: the sum of the
    per-image values, the number of images taken over, and how many of those lack the ranks they need.
    ``boot`` (n_boot x slices x 9, float32) holds the resampled column sums once :func:`bootstrap_scores` ran.
    """

    params: MetricParams
    K: int
    n_images: int
    group_labels: tuple[str, ...]
    group: np.ndarray  # int16 (n,): 0 = not labelled, g = subgroup index (1-based)
    original: np.ndarray  # int16 (n,)
    X: np.ndarray  # float32 (9, n)
    num: np.ndarray  # float64 (G+1, 7)
    den: np.ndarray  # int64 (G+1, 7)
    bad: np.ndarray  # int64 (G+1, 7)
    n_no_prediction: int  # rows without any stored rank (all images)
    n_excluded_empty: int
    n_excluded_unannotated: int
    n_excluded_no_original: int
    results: dict[str, MetricValue] = field(default_factory=dict)  # headline, ml_acc_shankar, asma_*
    subgroups: dict[tuple[str, str], MetricValue] = field(default_factory=dict)  # (metric, group label)
    asma_groups: dict[str, tuple[str, ...]] = field(default_factory=dict)  # asma metric -> groups used
    no_prediction_by_metric: dict[str, int] = field(default_factory=dict)
    shankar_hit: np.ndarray | None = None  # bool (n,) [p_i1 in valid | unclear]
    shankar_elig: np.ndarray | None = None  # bool (n,)
    boot: np.ndarray | None = None  # float32 (B, G+1, 9)
    boot_shankar: np.ndarray | None = None  # float64 (B,) resampled ml_acc_shankar
    shankar_info: dict = field(default_factory=dict)  # n_classes, n_excluded_problematic, unclear_given
    dataset_key: str = ""

    @property
    def n_groups(self) -> int:
        return len(self.group_labels)


# --------------------------------------------------------------------------------------------------------------
# Scores -> ranks


# --------------------------------------------------------------------------------------------------------------
# Per-dataset preparation (once per dataset, reused for every model)


class DatasetContext:
    """What scoring needs from a dataset's labels, built once and reused for every model.

    Holds the subgroup of each image, the slices of images per subgroup (``order``/``bounds``), the dense label
    matrix ``L`` (n x 1001 bool; column c+1 = class c, column 0 is always False so a padding rank -1 never hits;
    built on first use) and the bootstrap resample counts (built on first use). Use :func:`prepare_dataset`.
    """

    def __init__(self, labels: LabelArrays, max_group: int, num_classes: int = NUM_CLASSES):
        n = labels.n
        for name in ("original", "annotated"):
            if len(getattr(labels, name)) != n:
                raise MlrayError(f"labels: {name} has {len(getattr(labels, name))} entries for {n} images")
        if len(labels.offsets) != n + 1 or (n and labels.offsets[-1] != len(labels.values)):
            raise MlrayError("labels: valid-set offsets do not match the number of images / label values")
        if len(labels.values) and (labels.values.min() < 0 or labels.values.max() >= num_classes):
            raise MlrayError(f"labels: valid labels must be class indices 0..{num_classes - 1}")
        if n and (labels.original.min() < -1 or labels.original.max() >= num_classes):
            raise MlrayError(f"labels: original labels must be -1 (unknown) or 0..{num_classes - 1}")
        self.labels = labels
        self.n = n
        self.num_classes = num_classes
        self.max_group = int(max_group)
        counts = np.diff(labels.offsets).astype(np.int64)
        annotated = np.asarray(labels.annotated, dtype=bool)
        if np.any(counts[~annotated] > 0):
            raise MlrayError("labels: an unannotated image (valid = null) has valid labels")
        self.labelled = annotated & (counts > 0)
        self.k = np.where(self.labelled, counts, 0)
        self.kmax = int(self.k.max()) if n else 0
        self.original = np.asarray(labels.original, dtype=np.int16)
        self.orig_ok = self.original >= 0
        self.group = np.where(self.labelled, np.minimum(self.k, self.max_group), 0).astype(np.int16)
        self.group_labels = tuple(str(g) for g in range(1, self.max_group)) + (f"{self.max_group}+",)
        self.order = np.argsort(self.group, kind="stable")
        self.bounds = np.searchsorted(self.group[self.order], np.arange(self.max_group + 2))
        self.n_empty = int(np.sum(annotated & (counts == 0)))
        self.n_unannotated = int(np.sum(~annotated))
        self.n_no_original = int(np.sum(~self.orig_ok))
        self.key = _dataset_key(labels)
        self._L: np.ndarray | None = None
        self._resamples: dict[tuple[int, int], np.ndarray] = {}

    @property
    def L_flat(self) -> np.ndarray:
        """The dense label matrix, flattened (row i, class c at ``i * (C+1) + c + 1``)."""
        if self._L is None:
            width = self.num_classes + 1
            L = np.zeros((self.n, width), dtype=bool)
            rows = np.repeat(np.arange(self.n), np.diff(self.labels.offsets))
            L[rows, self.labels.values.astype(np.intp) + 1] = True
            if np.count_nonzero(L) != len(self.labels.values):
                raise MlrayError("labels: a valid-label set repeats a class")
            self._L = L.reshape(-1)
        return self._L

    def row_base(self) -> np.ndarray:
        width = self.num_classes + 1
        dtype = np.int32 if self.n * width < np.iinfo(np.int32).max else np.int64
        return (np.arange(self.n, dtype=dtype) * width + 1)[:, None]

    def resample_chunks(self, n_boot: int, seed: int) -> Iterable[tuple[int, np.ndarray]]:
        """Yield ``(b0, C)``: C (b, n) float32 resample counts for resamples b0..b0+b-1, columns in ``order``.

        Resample b of a dataset depends only on (seed, the dataset's image ids, b).
        """
        key = (int(n_boot), int(seed))
        if key in self._resamples:
            yield 0, self._resamples[key]
            return
        keep = n_boot * self.n * 4 <= _BOOT_CACHE_BYTES
        parts = []
        for b0 in range(0, n_boot, _BOOT_CHUNK):
            chunk = self._resample_chunk(b0 // _BOOT_CHUNK, min(_BOOT_CHUNK, n_boot - b0), seed)
            if keep:
                parts.append(chunk)
            else:
                yield b0, chunk
        if keep:
            full = np.concatenate(parts, axis=0) if parts else np.zeros((0, self.n), np.float32)
            self._resamples = {key: full}  # one (n_boot, seed) per dataset kept
            yield 0, full

    def _resample_chunk(self, index: int, size: int, seed: int) -> np.ndarray:
        rng = np.random.default_rng([int(seed), int(self.key[:15], 16), index])
        n = self.n
        draws = rng.integers(0, n, size=(size, n), dtype=np.int64)
        draws += (np.arange(size, dtype=np.int64) * n)[:, None]  # row b counts into bins b*n .. b*n+n-1
        counts = np.bincount(draws.ravel(), minlength=size * n).reshape(size, n).astype(np.float32)
        return np.take(counts, self.order, axis=1)


def _dataset_key(labels: LabelArrays) -> str:
    h = hashlib.blake2b(digest_size=16)
    h.update("\n".join(map(str, labels.image_ids.tolist())).encode())
    return h.hexdigest()


_CONTEXTS: dict[tuple[int, int], tuple[weakref.ref, DatasetContext]] = {}
_MAX_CONTEXTS = 4


def prepare_dataset(labels: LabelArrays, params: MetricParams | None = None) -> DatasetContext:
    """The :class:`DatasetContext` of ``labels`` (cached per labels object and ``max_group``, a few at a time)."""
    params = params or MetricParams()
    key = (id(labels), int(params.max_group))
    hit = _CONTEXTS.get(key)
    if hit is not None and hit[0]() is labels:
        return hit[1]
    ctx = DatasetContext(labels, params.max_group)
    while len(_CONTEXTS) >= _MAX_CONTEXTS:
        _CONTEXTS.pop(next(iter(_CONTEXTS)))
    _CONTEXTS[key] = (weakref.ref(labels, lambda _r, k=key: _CONTEXTS.pop(k, None)), ctx)
    return ctx


# --------------------------------------------------------------------------------------------------------------
# Scoring one model


def _check_topk(topk: np.ndarray, n: int, num_classes: int) -> np.ndarray:
    t = np.asarray(topk)
    if t.ndim != 2 or t.shape[0] != n or t.shape[1] < 1:
        raise MlrayError(f"predictions: topk must have shape (n_images={n}, K >= 1), got {t.shape}")
    if not np.issubdtype(t.dtype, np.integer):
        raise MlrayError(f"predictions: topk must hold integer class indices, got dtype {t.dtype}")
    if t.size and (t.min() < -1 or t.max() >= num_classes):
        raise MlrayError(f"predictions: topk entries must be -1 (padding) or class indices 0..{num_classes - 1}")
    return t


def score_model(
    labels: LabelArrays,
    topk: np.ndarray,
    params: MetricParams | None = None,
    *,
    bootstrap: bool = True,
    context: DatasetContext | None = None,
) -> ModelScore:
    """Score one model on one dataset: every metric, every subgroup, ASMA and (``bootstrap``) the intervals.

    ``topk`` (n, K) int, aligned to the rows of ``labels``, best first, ``-1`` = padding (trailing only); rows
    of ``-1`` only are images without prediction. Raises :class:`MlrayError` for a wrong shape, entries outside
    -1..999, a class after padding or a class repeated within the ranks a metric reads. See the module docstring
    for the definitions. Equivalent to ``score_models(labels, [topk], ...)[0]``.
    """
    return score_models(labels, [topk], params, bootstrap=bootstrap, context=context)[0]


def score_models(
    labels: LabelArrays,
    topks: Iterable[np.ndarray],
    params: MetricParams | None = None,
    *,
    bootstrap: bool = True,
    context: DatasetContext | None = None,
) -> list[ModelScore]:
    """:func:`score_model` for several models of one dataset; the bootstrap runs for all of them at once."""
    params = params or MetricParams()
    ctx = context if context is not None else prepare_dataset(labels, params)
    scores = [_score_point(ctx, t, params) for t in topks]
    if bootstrap and params.n_boot > 0 and scores:
        bootstrap_scores(scores, labels, params, context=ctx)
    return scores


def _score_point(ctx: DatasetContext, topk: np.ndarray, params: MetricParams) -> ModelScore:
    n, G = ctx.n, ctx.max_group
    t = _check_topk(topk, n, ctx.num_classes)
    K = t.shape[1]
    if t.size and t.min() < 0:  # some padding: check it is trailing, count the stored ranks
        stored = t >= 0
        if K > 1 and np.any(stored[:, 1:] & ~stored[:, :-1]):
            row = int(np.flatnonzero(np.any(stored[:, 1:] & ~stored[:, :-1], axis=1))[0])
            raise MlrayError(
                f"predictions: row {row} ({ctx.labels.image_ids[row]}) has a class after a -1 padding rank"
            )
        r = np.full(n, K, dtype=np.int64)
        padded = np.flatnonzero(~stored[:, -1])
        r[padded] = stored[padded].sum(axis=1)
    else:
        r = np.full(n, K, dtype=np.int64)
    has_pred = r > 0
    kn = min(K, max(5, ctx.kmax))  # the ranks any metric reads
    tn = t[:, :kn]
    if kn > 1:
        srt = np.sort(tn, axis=1)
        dup = (srt[:, 1:] == srt[:, :-1]) & (srt[:, 1:] >= 0)
        if dup.any():
            row = int(np.flatnonzero(dup.any(axis=1))[0])
            raise MlrayError(f"predictions: row {row} ({ctx.labels.image_ids[row]}) repeats a class in its ranks")

    hits = ctx.L_flat.take(ctx.row_base() + tn)  # (n, kn) bool: rank j of image i is a valid label
    k = ctx.k
    k5 = min(5, kn)
    if kn <= 52:  # hits of a row as bits (exact in float64), counted with popcount
        ftype = np.float32 if kn <= 24 else np.float64
        bits = (hits.view(np.uint8).astype(ftype) @ (2.0 ** np.arange(kn)).astype(ftype)).astype(np.int64)
        hit5 = (bits & ((1 << k5) - 1)) != 0
        c_k = np.bitwise_count(bits & ((np.int64(1) << np.minimum(k, kn)) - 1)).astype(np.int64)
    else:
        cum = np.cumsum(hits, axis=1, dtype=np.int32)
        hit5 = cum[:, k5 - 1] > 0
        c_k = np.where(k > 0, np.take_along_axis(cum, (np.clip(k, 1, kn) - 1)[:, None], axis=1)[:, 0], 0)
    orig = ctx.original
    top1 = tn[:, 0] == orig
    top5 = top1.copy()
    for j in range(1, k5):
        top5 |= tn[:, j] == orig

    elig_orig = ctx.orig_ok & has_pred
    elig_lab = ctx.labelled & has_pred
    X = np.empty((_NCOL, n), dtype=np.float64)  # one row per per-image column (contiguous for bincount)
    np.logical_and(top1, elig_orig, out=X[0], casting="unsafe")
    np.logical_and(top5, elig_orig, out=X[1], casting="unsafe")
    np.logical_and(hits[:, 0], elig_lab, out=X[2], casting="unsafe")
    np.logical_and(hit5, elig_lab, out=X[3], casting="unsafe")
    np.logical_and(c_k == k, elig_lab, out=X[4], casting="unsafe")
    np.divide(c_k, np.maximum(k, 1), out=X[5])
    X[5] *= elig_lab
    np.logical_and(c_k > 0, elig_lab, out=X[6], casting="unsafe")
    X[_ELIG_ORIG] = elig_orig
    X[_ELIG_LAB] = elig_lab

    # images taken on but lacking the ranks they need
    short5 = r < 5
    short_k = r < k
    bad_masks = {
        "top5": elig_orig & short5,
        "real_top5": elig_lab & short5,
        "vtopk_all": elig_lab & short_k,
    }
    bad_masks["vtopk_frac"] = bad_masks["vtopk_any"] = bad_masks["vtopk_all"]

    grp = ctx.group
    nb = G + 1
    num = np.empty((nb, len(METRICS)), np.float64)
    den = np.empty((nb, len(METRICS)), np.int64)
    bad = np.zeros((nb, len(METRICS)), np.int64)
    den_orig = np.bincount(grp, weights=X[_ELIG_ORIG], minlength=nb).round().astype(np.int64)
    den_lab = np.bincount(grp, weights=X[_ELIG_LAB], minlength=nb).round().astype(np.int64)
    for j, m in enumerate(METRICS):
        num[:, j] = np.bincount(grp, weights=X[j], minlength=nb)
        den[:, j] = den_orig if _DEN[m] == _ELIG_ORIG else den_lab
        if m in bad_masks and bad_masks[m].any():
            bad[:, j] = np.bincount(grp[bad_masks[m]], minlength=nb)

    score = ModelScore(
        params=params,
        K=K,
        n_images=n,
        group_labels=ctx.group_labels,
        group=grp,
        original=orig,
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
    score.no_prediction_by_metric = {
        m: int(np.sum((ctx.orig_ok if _DEN[m] == _ELIG_ORIG else ctx.labelled) & ~has_pred)) for m in METRICS
    }
    _fill_point_results(score)
    _score_shankar(ctx, score, tn[:, 0], hits[:, 0], has_pred)
    return score


def _need_text(m: str) -> str:
    return "5 ranks" if m in ("top5", "real_top5") else "k_i ranks (one per valid label)"


def _fill_point_results(score: ModelScore) -> None:
    p, G = score.params, score.n_groups
    for j, m in enumerate(METRICS):
        n_all, bad_all = int(score.den[:, j].sum()), int(score.bad[:, j].sum())
        if n_all == 0:
            score.results[m] = MetricValue(math.nan, 0, False, f"no images to take {m} over ({_SPEC[m]['over']})")
        elif bad_all:
            score.results[m] = MetricValue(
                math.nan, n_all, False,
                f"needs {_need_text(m)}; {bad_all:,} of {n_all:,} images have fewer stored (K={score.K})",
            )  # fmt: skip
        else:
            score.results[m] = MetricValue(float(score.num[:, j].sum() / n_all), n_all, True)
        for g in range(1, G + 1):
            label, n_g, bad_g = score.group_labels[g - 1], int(score.den[g, j]), int(score.bad[g, j])
            if n_g == 0:
                mv = MetricValue(math.nan, 0, False, f"group {label}: no images")
            elif bad_g:
                mv = MetricValue(
                    math.nan, n_g, False,
                    f"group {label}: needs {_need_text(m)}; {bad_g:,} of {n_g:,} images have fewer stored "
                    f"(K={score.K})",
                )  # fmt: skip
            else:
                mv = MetricValue(float(score.num[g, j] / n_g), n_g, True)
            score.subgroups[(m, label)] = mv
        # ASMA
        am = f"asma_{m}"
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
                f"used group(s) {', '.join(missing)} unavailable: needs {_need_text(m)} (K={score.K})",
            )  # fmt: skip
        else:
            vals = [score.num[g, j] / score.den[g, j] for g in used]
            score.results[am] = MetricValue(float(np.mean(vals)), n_used, True)


def _score_shankar(ctx: DatasetContext, score: ModelScore, p1: np.ndarray, p1_valid: np.ndarray,
                   has_pred: np.ndarray) -> None:  # fmt: skip
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


# --------------------------------------------------------------------------------------------------------------
# Bootstrap


def _percentile_ci(R: np.ndarray, ci: float) -> tuple[np.ndarray, np.ndarray]:
    """Columnwise percentile interval of R (B, q), NaN resamples dropped (numpy's 'linear' percentile)."""
    R = np.asarray(R, dtype=np.float64)
    s = np.sort(R, axis=0)  # NaN sorts last
    nv = np.sum(~np.isnan(R), axis=0)
    alpha = (1.0 - ci) / 2.0
    out = []
    cols = np.arange(R.shape[1])
    for q in (alpha, 1.0 - alpha):
        pos = q * np.maximum(nv - 1, 0)
        lo = np.floor(pos).astype(np.intp)
        hi = np.minimum(lo + 1, np.maximum(nv - 1, 0))
        frac = pos - lo
        v = s[lo, cols] * (1 - frac) + s[hi, cols] * frac
        out.append(np.where(nv > 0, v, np.nan))
    return out[0], out[1]


def _ratio(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(b > 0, a / np.where(b > 0, b, 1), np.nan)


def bootstrap_scores(
    scores: Sequence[ModelScore],
    labels: LabelArrays,
    params: MetricParams | None = None,
    *,
    context: DatasetContext | None = None,
) -> None:
    """Add percentile bootstrap intervals to ``scores`` (models of one dataset), in place.

    With C (B, n) the resample-count matrix of the dataset (the same for every model: paired), the resampled sums
    of every per-image column are ``C @ X``; it is computed per subgroup slice (``C[:, slice] @ X[slice]``), for
    all models at once, so the cost is about B * n * 9 multiply-adds per model. Fills ``ci_low``/``ci_high`` of
    every available headline metric, ``ml_acc_shankar``, ASMA and subgroup value, and keeps the resampled sums in
    ``score.boot`` for :func:`decompose`.
    """
    params = params or scores[0].params
    ctx = context if context is not None else prepare_dataset(labels, params)
    B = params.n_boot
    if B == 0 or not scores or ctx.n == 0:
        return
    for s in scores:
        if s.dataset_key != ctx.key or s.n_groups != ctx.max_group:
            raise MlrayError("bootstrap: a score was computed on other labels or with another max_group")
    nb = ctx.max_group + 1
    M = len(scores)
    Xp = np.concatenate([s.X[:, ctx.order] for s in scores], axis=0)  # (9M, n), images in slice order
    sums = np.empty((B, nb, _NCOL * M), np.float32)
    shankar = [s for s in scores if s.shankar_elig is not None]
    shank_mats = [_shankar_matrix(ctx, s) for s in shankar]
    shank_sums = [np.empty((B, 2 * ctx.num_classes), np.float32) for _ in shankar]
    for b0, C in ctx.resample_chunks(B, params.seed):
        b1 = b0 + C.shape[0]
        for g in range(nb):
            a, e = ctx.bounds[g], ctx.bounds[g + 1]
            if e > a:
                sums[b0:b1, g] = C[:, a:e] @ Xp[:, a:e].T
            else:
                sums[b0:b1, g] = 0
        for mat, out in zip(shank_mats, shank_sums):
            out[b0:b1] = (mat.T @ C.T).T
    for i, s in enumerate(scores):
        s.boot = np.ascontiguousarray(sums[:, :, i * _NCOL : (i + 1) * _NCOL])
        _fill_boot_results(s)
    for s, out in zip(shankar, shank_sums):
        c = ctx.num_classes
        per = _ratio(out[:, :c].astype(np.float64), out[:, c:].astype(np.float64))
        present = ~np.isnan(per)  # classes drawn in the resample
        s.boot_shankar = _ratio(np.where(present, per, 0.0).sum(axis=1), present.sum(axis=1))
        res = s.results[SHANKAR]
        if res.available:
            lo, hi = _percentile_ci(s.boot_shankar[:, None], params.ci)
            res.ci_low, res.ci_high = float(lo[0]), float(hi[0])


def _shankar_matrix(ctx: DatasetContext, s: ModelScore):
    from scipy import sparse

    inv = np.empty(ctx.n, np.intp)
    inv[ctx.order] = np.arange(ctx.n)
    rows = inv[s.shankar_elig]
    cls = ctx.original[s.shankar_elig].astype(np.intp)
    data = np.concatenate([s.shankar_hit[s.shankar_elig].astype(np.float32), np.ones(len(rows), np.float32)])
    return sparse.csr_matrix(
        (data, (np.concatenate([rows, rows]), np.concatenate([cls, cls + ctx.num_classes]))),
        shape=(ctx.n, 2 * ctx.num_classes),
    )


def _resampled_values(s: ModelScore) -> dict[str, np.ndarray]:
    """Resampled overall, per-group and ASMA values of every metric (B,) / (B, G) from ``s.boot``."""
    S = s.boot.astype(np.float64)
    out: dict[str, np.ndarray] = {}
    for j, m in enumerate(METRICS):
        d = _DEN[m]
        out[m] = _ratio(S[:, :, j].sum(axis=1), S[:, :, d].sum(axis=1))
        groups = _ratio(S[:, 1:, j], S[:, 1:, d])
        out[f"group:{m}"] = groups
        used = [s.group_labels.index(g) for g in s.asma_groups[f"asma_{m}"]]
        out[f"asma_{m}"] = groups[:, used].mean(axis=1) if used else np.full(len(S), np.nan)
    return out


def _fill_boot_results(s: ModelScore) -> None:
    rv = _resampled_values(s)
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
    lo, hi = _percentile_ci(np.stack(cols, axis=1), s.params.ci)
    for t, a, b in zip(targets, lo, hi):
        t.ci_low, t.ci_high = float(a), float(b)


# --------------------------------------------------------------------------------------------------------------
# Standardization and the gap decomposition


def _wsum(w: np.ndarray, m: np.ndarray) -> np.ndarray:
    """Σ_g w(g) m(g) over the last axis, where a term with weight exactly 0 is 0 even if m(g) is undefined."""
    with np.errstate(invalid="ignore"):
        return np.where(w != 0, w * m, 0.0).sum(axis=-1)


def _group_weights(x: ModelScore | LabelArrays, metric: str, params: MetricParams):
    """(den (G,), m (G,) or None, unavailable-reason per group or None, resampled (den (B,G), num (B,G)) or None)."""
    j = _COL[metric]
    if isinstance(x, ModelScore):
        den = x.den[1:, j].astype(np.float64)
        m = _ratio(x.num[1:, j], den)
        why = [None] * len(den)
        for gi, label in enumerate(x.group_labels):
            mv = x.subgroups[(metric, label)]
            if not mv.available and den[gi] > 0:
                m[gi] = np.nan
                why[gi] = mv.reason
        boot = None
        if x.boot is not None:
            S = x.boot.astype(np.float64)
            boot = (S[:, 1:, _DEN[metric]], S[:, 1:, j])
        return den, m, why, boot
    ctx = prepare_dataset(x, params)
    mask = ctx.labelled & (ctx.orig_ok if _DEN[metric] == _ELIG_ORIG else True)
    den = np.bincount(ctx.group[mask], minlength=ctx.max_group + 1)[1:].astype(np.float64)
    return den, None, None, None


def standardized_accuracy(
    score: ModelScore, reference: ModelScore | LabelArrays, metric: str, params: MetricParams | None = None
) -> float:
    """``Σ_g w_ref(g) · m(g)``: the subgroup values of ``score`` reweighted to the reference's group shares.

    w_ref(g) = share of the reference's images (those ``metric`` is taken on: labelled, with an original label for
    top1/top5, with a prediction when the reference is a ModelScore) in group g. NaN when a group the reference
    weighs has no value in ``score`` (no images, or the metric is unavailable there). Equals
    ``decompose(score, reference, metric)["a_standardized_to_b"]``.
    """
    return decompose(score, reference, metric, params)["a_standardized_to_b"]


def decompose(
    score_a: ModelScore, b: ModelScore | LabelArrays, metric: str, params: MetricParams | None = None
) -> dict:
    """Standardized accuracy and the gap decomposition of ``metric`` between datasets A and B, for one model.

    With m_X(g) the subgroup values and w_X(g) = n_X(g) / Σ n_X the share of X's images in group g (over the
    images the metric is taken on in the subgroups: labelled images with a prediction, and for top1/top5 with an
    original label — so ``value_a`` of ``top1`` is top-1 over *labelled* images with an original label, not the
    headline ``top1`` over every image with an original label; for the other metrics it equals the headline):

    ==========================  =========================
    ``value_a``, ``value_b``    Σ_g w_A m_A,  Σ_g w_B m_B
    ``gap``                     value_a − value_b
    ``composition``             Σ_g (w_A − w_B) m_A
    ``within``                  Σ_g w_B (m_A − m_B)
    ``a_standardized_to_b``     Σ_g w_B m_A
    ``b_standardized_to_a``     Σ_g w_A m_B
    ==========================  =========================

    so gap = composition + within (up to float rounding). A term whose weight is exactly 0 is 0. A group that a
    weight needs but whose m is undefined (no images in it, or the metric unavailable there for lack of ranks)
    makes the sums that need it NaN; ``reason`` says which. ``b`` may be a ModelScore or, when B has no
    predictions for this model, B's LabelArrays: then only ``value_a`` and ``a_standardized_to_b`` are given
    (w_B from B's labelled images) and the rest is NaN. Percentile bootstrap intervals for gap, composition and
    within resample A and B independently (each from its own ``score.boot``); NaN without them.
    """
    if metric not in _COL:
        raise MlrayError(f"decompose: unknown metric {metric!r}; one of {', '.join(METRICS)}")
    params = params or score_a.params
    if isinstance(b, ModelScore) and b.n_groups != score_a.n_groups:
        raise MlrayError("decompose: A and B were scored with different max_group")
    if not isinstance(b, ModelScore) and params.max_group != score_a.n_groups:
        raise MlrayError("decompose: params.max_group differs from the one A was scored with")
    den_a, m_a, why_a, boot_a = _group_weights(score_a, metric, params)
    den_b, m_b, why_b, boot_b = _group_weights(b, metric, params)
    labels = score_a.group_labels
    nan = math.nan
    out = {k: nan for k in DECOMPOSITION_COLUMNS if k != "metric"}
    out["metric"] = metric
    reasons: list[str] = []
    if den_a.sum() == 0:
        out["reason"] = f"A has no labelled images to take {metric} over (subgroups hold labelled images only)"
        return out
    if den_b.sum() == 0:
        out["reason"] = f"B has no labelled images to take {metric} over (subgroups hold labelled images only)"
        return out
    w_a, w_b = den_a / den_a.sum(), den_b / den_b.sum()
    for gi, label in enumerate(labels):
        if w_b[gi] > 0 and den_a[gi] == 0:
            reasons.append(f"group {label}: B has images but A has none")
        if w_a[gi] > 0 and why_a[gi]:
            reasons.append(f"A {why_a[gi]}")
        if m_b is not None and (w_a[gi] > 0 or w_b[gi] > 0):
            if w_b[gi] > 0 and why_b[gi]:
                reasons.append(f"B {why_b[gi]}")
            if w_a[gi] > 0 and den_b[gi] == 0:
                reasons.append(f"group {label}: A has images but B has none")
    out["value_a"] = float(_wsum(w_a, m_a))
    out["a_standardized_to_b"] = float(_wsum(w_b, m_a))
    if m_b is None:
        reasons.append("B has no predictions for this model: only value_a and a_standardized_to_b")
    else:
        out["value_b"] = float(_wsum(w_b, m_b))
        out["b_standardized_to_a"] = float(_wsum(w_a, m_b))
        out["gap"] = out["value_a"] - out["value_b"]
        out["composition"] = float(_wsum(w_a - w_b, m_a))
        out["within"] = float(_wsum(w_b, m_a - m_b))
        if boot_a is not None and boot_b is not None:
            nbt = min(len(boot_a[0]), len(boot_b[0]))
            ra = _boot_groups(boot_a, m_a, nbt)
            rb = _boot_groups(boot_b, m_b, nbt)
            R = {
                "gap": _wsum(ra[0], ra[1]) - _wsum(rb[0], rb[1]),
                "composition": _wsum(ra[0] - rb[0], ra[1]),
                "within": _wsum(rb[0], ra[1] - rb[1]),
            }
            names = [k for k in R if np.isfinite(out[k])]
            if names:
                lo, hi = _percentile_ci(np.stack([R[k] for k in names], axis=1), params.ci)
                for k, a, c in zip(names, lo, hi):
                    out[f"{k}_ci_low"], out[f"{k}_ci_high"] = float(a), float(c)
    out["reason"] = "; ".join(dict.fromkeys(reasons))
    return out


def _boot_groups(boot: tuple[np.ndarray, np.ndarray], m_point: np.ndarray, nbt: int):
    den, num = boot[0][:nbt], boot[1][:nbt]
    tot = den.sum(axis=1, keepdims=True)
    w = _ratio(den, tot)
    m = _ratio(num, den)
    m[:, np.isnan(m_point)] = np.nan  # a group unavailable at the point estimate stays unavailable
    return w, m


# --------------------------------------------------------------------------------------------------------------
# Per-class accuracy


def per_class_accuracy(score: ModelScore, num_classes: int = NUM_CLASSES) -> pd.DataFrame:
    """Per original class c (one row per class 0..num_classes-1): ``class_index, n, top1, n_labelled, real_top1``.

    ``n``: images with original label c and a prediction; ``top1`` = mean [p_i1 = c] over them.
    ``n_labelled``: those of them that are labelled; ``real_top1`` = mean [p_i1 in L_i] over those.
    A class with no images has NaN accuracies (n = 0).
    """
    X = score.X
    cls = np.where(score.original >= 0, score.original, 0).astype(np.intp)
    e_orig = X[_ELIG_ORIG] > 0
    e_lab = (X[_ELIG_LAB] > 0) & (score.original >= 0)
    n = np.bincount(cls[e_orig], minlength=num_classes)
    t1 = np.bincount(cls[e_orig], weights=X[_COL["top1"], e_orig].astype(np.float64), minlength=num_classes)
    nl = np.bincount(cls[e_lab], minlength=num_classes)
    r1 = np.bincount(cls[e_lab], weights=X[_COL["real_top1"], e_lab].astype(np.float64), minlength=num_classes)
    return pd.DataFrame(
        {
            "class_index": np.arange(num_classes, dtype=np.int16),
            "n": n.astype(np.int64),
            "top1": _ratio(t1, n),
            "n_labelled": nl.astype(np.int64),
            "real_top1": _ratio(r1, nl),
        }
    )


# --------------------------------------------------------------------------------------------------------------
# Report frames


def _params_json(score: ModelScore, metric: str, extra: dict | None = None) -> str:
    base = metric[5:] if metric.startswith("asma_") else metric
    d = dict(_SPEC[base])
    if metric.startswith("asma_"):
        d["aggregate"] = "ASMA: unweighted mean of subgroup values"
    d.update({"max_group": score.params.max_group, "min_group_size": score.params.min_group_size, "K": score.K,
              "seed": score.params.seed, "n_boot": score.params.n_boot if score.boot is not None else 0,
              "ci": score.params.ci})  # fmt: skip
    if extra:
        d.update(extra)
    return json.dumps(d, sort_keys=True)


def metrics_frame(score: ModelScore) -> pd.DataFrame:
    """One row per metric (headline, ``ml_acc_shankar``, ``asma_*``) with the columns of :data:`MODEL_COLUMNS`.

    ``n``: images the value is taken over (for ASMA: the images of the used groups). Exclusion counts are those of
    the metric's population: ``n_excluded_empty``/``n_excluded_unannotated`` for the multi-label metrics (0 for
    top1/top5), ``n_excluded_no_original`` for top1/top5 (and ml_acc_shankar), ``n_no_prediction`` = images that
    would be taken over but have no prediction. ``groups_used`` (ASMA only): comma-separated group labels.
    The caller adds ``model`` and ``dataset``.
    """
    rows = []
    for m in ALL_METRICS:
        mv = score.results[m]
        base = m[5:] if m.startswith("asma_") else m
        multi = base not in ("top1", "top5")
        rows.append(
            {
                "metric": m,
                "value": mv.value,
                "ci_low": mv.ci_low,
                "ci_high": mv.ci_high,
                "n": mv.n,
                "params": _params_json(score, m, score.shankar_info if m == SHANKAR else None),
                "available": mv.available,
                "reason": mv.reason,
                "n_excluded_empty": score.n_excluded_empty if multi and base != SHANKAR else 0,
                "n_excluded_unannotated": score.n_excluded_unannotated if multi else 0,
                "n_excluded_no_original": score.n_excluded_no_original if not multi or base == SHANKAR else 0,
                "n_no_prediction": score.no_prediction_by_metric.get(base, 0),
                "groups_used": ",".join(score.asma_groups[m]) if m in score.asma_groups else None,
            }
        )
    return pd.DataFrame(rows, columns=MODEL_COLUMNS)


def subgroup_frame(score: ModelScore) -> pd.DataFrame:
    """One row per (group, metric) for the groups "1".."max_group-1", "max_group+" (always all of them; a group
    without images has NaN and n = 0). Columns :data:`SUBGROUP_COLUMNS`."""
    rows = []
    for label in score.group_labels:
        for m in METRICS:
            mv = score.subgroups[(m, label)]
            rows.append({"group": label, "metric": m, "value": mv.value, "n": mv.n, "ci_low": mv.ci_low,
                         "ci_high": mv.ci_high, "available": mv.available, "reason": mv.reason})  # fmt: skip
    return pd.DataFrame(rows, columns=SUBGROUP_COLUMNS)


def decomposition_frame(
    score_a: ModelScore,
    b: ModelScore | LabelArrays,
    metrics: Sequence[str] = METRICS,
    params: MetricParams | None = None,
) -> pd.DataFrame:
    """:func:`decompose` for each metric, one row each, columns :data:`DECOMPOSITION_COLUMNS`. The caller adds
    ``model``, ``dataset_a`` and ``dataset_b``."""
    return pd.DataFrame([decompose(score_a, b, m, params) for m in metrics], columns=DECOMPOSITION_COLUMNS)
