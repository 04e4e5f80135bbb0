"""Reference definitions of the metrics: small functions on plain inputs (validate -> format -> compute).

In the style of ``sklearn.metrics.top_k_accuracy_score`` and ``torchmetrics.functional``: each function checks
its inputs, turns them into Python lists and sets, and computes its formula literally, image by image. They are
the definitions the fast path (:mod:`mlray.scoring.batch`) is tested against; use that one for real datasets.

Inputs (n images):

``topk``        2-D integer array-like (n, K) of ranked classes, best first; ``-1`` = no rank stored there
                (padding, trailing only). A row of ``-1`` only is an image without prediction: every metric
                leaves it out. r_i = the number of stored ranks of image i, T_k(i) = its first k ranks.
``original``    1-D integer array-like (n,): the original label y_i, ``-1`` = unknown.
``valid_sets``  list of n valid-label sets L_i (lists of class indices); ``None`` = not annotated, ``[]`` =
                annotated with no valid class. An image is *labelled* when L_i is a non-empty list.

Classes are 0..999. A metric that needs more ranks than an image it is taken over has stored (k, or k_i for the
variable top-k) is *unavailable*: NaN, never zero and never truncated. No image to take a metric over: NaN.
Invalid inputs raise :class:`~mlray.errors.MlrayError`.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
from numpy.typing import ArrayLike

from ..errors import MlrayError
from ..labels import NUM_CLASSES
from .params import MetricParams
from .registry import METRICS, MetricSpec, Mode, spec

ValidSets = Sequence[Sequence[int] | None]


# --------------------------------------------------------------------------------------------------------------
# Validate and format


def _ranks(topk: ArrayLike) -> list[list[int]]:
    """The stored ranks of each image (padding removed), after checking shape, range, padding and repeats."""
    t = np.asarray(topk)
    if t.ndim != 2 or t.shape[1] < 1:
        raise MlrayError(f"topk must be a 2-D array (n_images, K >= 1), got shape {t.shape}")
    if t.size and not np.issubdtype(t.dtype, np.integer):
        raise MlrayError(f"topk must hold integer class indices, got dtype {t.dtype}")
    rows: list[list[int]] = []
    for i, row in enumerate(t.tolist()):
        stored = [int(c) for c in row if c != -1]
        if any(not 0 <= c < NUM_CLASSES for c in stored):
            raise MlrayError(f"topk row {i}: entries must be -1 (padding) or class indices 0..{NUM_CLASSES - 1}")
        if row[: len(stored)] != stored:
            raise MlrayError(f"topk row {i}: a class after a -1 padding rank")
        if len(set(stored)) != len(stored):
            raise MlrayError(f"topk row {i}: repeats a class in its ranks")
        rows.append(stored)
    return rows


def _original(original: ArrayLike, n: int) -> list[int]:
    y = np.asarray(original)
    if y.ndim != 1 or len(y) != n:
        raise MlrayError(f"original must be 1-D with one entry per image ({n}), got shape {y.shape}")
    if len(y) and (not np.issubdtype(y.dtype, np.integer) or y.min() < -1 or y.max() >= NUM_CLASSES):
        raise MlrayError(f"original must hold -1 (unknown) or class indices 0..{NUM_CLASSES - 1}")
    return [int(v) for v in y]


def _sets(sets: ValidSets | None, n: int, name: str) -> list[set[int] | None]:
    if sets is None:
        return [None] * n
    if len(sets) != n:
        raise MlrayError(f"{name} must have one entry per image ({n}), got {len(sets)}")
    out: list[set[int] | None] = []
    for i, s in enumerate(sets):
        if s is None:
            out.append(None)
            continue
        cls = [int(c) for c in s]
        if any(not 0 <= c < NUM_CLASSES for c in cls):
            raise MlrayError(f"{name}[{i}]: class indices must be 0..{NUM_CLASSES - 1}")
        if len(set(cls)) != len(cls):
            raise MlrayError(f"{name}[{i}]: repeats a class")
        out.append(set(cls))
    return out


def _k(k: int) -> int:
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
        raise MlrayError(f"k must be an integer >= 1, got {k!r}")
    return int(k)


def _mean(values: list[float], available: list[bool]) -> float:
    """Mean of the per-image values; NaN when there are none or one image lacks the ranks it needs."""
    if not values or not all(available):
        return math.nan
    return math.fsum(values) / len(values)


# --------------------------------------------------------------------------------------------------------------
# Per-image metrics


def top_k_accuracy(topk: ArrayLike, original: ArrayLike, k: int) -> float:
    """Top-k accuracy against the original label.

    ``(1/|I|) Σ_{i∈I} [y_i ∈ T_k(i)]`` over I = {i : y_i >= 0 and r_i >= 1} (images with an original label and a
    prediction). NaN when I is empty, or when an image of I has r_i < k (unavailable).

    >>> topk = [[3, 1, 2], [0, 2, 1], [-1, -1, -1], [2, 0, 1]]
    >>> top_k_accuracy(topk, [3, 2, 0, -1], k=1)  # image 2 has no prediction, image 3 no original label
    0.5
    >>> top_k_accuracy(topk, [3, 2, 0, -1], k=2)
    1.0
    >>> top_k_accuracy(topk, [3, 2, 0, -1], k=4)  # 3 ranks stored
    nan
    """
    ranks = _ranks(topk)
    y = _original(original, len(ranks))
    k = _k(k)
    taken = [i for i, r in enumerate(ranks) if y[i] >= 0 and r]
    return _mean([float(y[i] in ranks[i][:k]) for i in taken], [len(ranks[i]) >= k for i in taken])


def real_accuracy(topk: ArrayLike, valid_sets: ValidSets, k: int) -> float:
    """ReaL accuracy (Beyer et al. 2020): a hit when any of the first k ranks is a valid label.

    ``(1/|I|) Σ_{i∈I} [T_k(i) ∩ L_i ≠ ∅]`` over I = {i : L_i is a non-empty set and r_i >= 1} (empty and
    unannotated images are left out). NaN when I is empty, or when an image of I has r_i < k.

    >>> topk = [[3, 1, 2], [0, 2, 1], [5, 6, 7], [2, 0, 1]]
    >>> valid = [[1, 3], [2], [], None]  # image 2: no valid class, image 3: not annotated
    >>> real_accuracy(topk, valid, k=1)
    0.5
    >>> real_accuracy(topk, valid, k=2)
    1.0
    """
    ranks = _ranks(topk)
    sets = _sets(valid_sets, len(ranks), "valid_sets")
    k = _k(k)
    taken = [(r, s) for r, s in zip(ranks, sets) if s and r]
    return _mean([float(bool(set(r[:k]) & s)) for r, s in taken], [len(r) >= k for r, _ in taken])


def variable_top_k(topk: ArrayLike, valid_sets: ValidSets, mode: Mode) -> float:
    """Variable top-k accuracy: the first k_i = |L_i| ranks are compared with the valid set L_i.

    Per image, with T = T_{k_i}(i): ``mode="all"`` (strict) ``[L_i ⊆ T]``; ``mode="frac"`` (fractional)
    ``|T ∩ L_i| / k_i``; ``mode="any"`` (lenient) ``[T ∩ L_i ≠ ∅]``; averaged over I = {i : L_i non-empty and
    r_i >= 1}. NaN when I is empty, or when an image of I has r_i < k_i. With k_i = 1 all three equal ReaL top-1.

    >>> topk = [[1, 5, 3, 0], [2, 4, 0, 1], [7, 8, 9, 6]]
    >>> valid = [[1, 3], [2, 4, 6], [7]]  # T_{k_i} ∩ L_i: {1} of 2, {2, 4} of 3, {7} of 1
    >>> round(variable_top_k(topk, valid, mode="all"), 4)  # only image 2
    0.3333
    >>> round(variable_top_k(topk, valid, mode="frac"), 4)  # (1/2 + 2/3 + 1) / 3
    0.7222
    >>> variable_top_k(topk, valid, mode="any")
    1.0
    """
    if mode not in ("all", "frac", "any"):
        raise MlrayError(f"mode must be 'all', 'frac' or 'any', got {mode!r}")
    ranks = _ranks(topk)
    sets = _sets(valid_sets, len(ranks), "valid_sets")
    values, available = [], []
    for r, s in zip(ranks, sets):
        if not s or not r:
            continue
        found = len(set(r[: len(s)]) & s)  # |T_{k_i}(i) ∩ L_i|
        if mode == "all":
            values.append(float(found == len(s)))
        elif mode == "frac":
            values.append(found / len(s))
        else:
            values.append(float(found > 0))
        available.append(len(r) >= len(s))
    return _mean(values, available)


# --------------------------------------------------------------------------------------------------------------
# Confidence: valid labels a single-label benchmark penalizes, and calibration under both truths


def _top1_prob(top1_prob: ArrayLike, n: int) -> list[float]:
    p = np.asarray(top1_prob, dtype=np.float64)
    if p.ndim != 1 or len(p) != n:
        raise MlrayError(f"top1_prob must be 1-D with one entry per image ({n}), got shape {p.shape}")
    finite = p[~np.isnan(p)]
    if finite.size and (finite.min() < 0.0 or finite.max() > 1.0):
        raise MlrayError("top1_prob must hold probabilities in [0, 1] (NaN = unknown)")
    return [float(v) for v in p]


def penalized_valid_share(
    topk: ArrayLike,
    original: ArrayLike,
    valid_sets: ValidSets,
    top1_prob: ArrayLike | None = None,
    threshold: float | None = None,
) -> float:
    """The share of top-1 "mistakes" that are valid labels: what a single-label benchmark penalizes wrongly.

    ``(1/|I|) Σ_{i∈I} [p_i1 ∈ L_i]`` over I = {i : L_i non-empty, y_i >= 0, r_i >= 1, p_i1 != y_i} (labelled
    images with an original label whose top-1 differs from it). With ``threshold`` t, I keeps only the images
    whose top-1 probability c_i >= t (``penalized_valid_share_conf50`` is t = 0.5); an image of I with an unknown
    probability (NaN) makes the value unavailable (NaN). NaN when I is empty.

    >>> topk = [[3, 1], [0, 2], [5, 6], [2, 0], [4, 1]]
    >>> original, valid = [1, 2, 5, 2, 7], [[1, 3], [2], [5, 6], [2], [9]]
    >>> penalized_valid_share(topk, original, valid)  # images 0, 1, 4 are "wrong"; 0's top-1 is valid
    0.3333333333333333
    >>> penalized_valid_share(topk, original, valid, [0.9, 0.4, 0.8, 0.7, 0.6], threshold=0.5)  # 0 and 4
    0.5
    """
    ranks = _ranks(topk)
    n = len(ranks)
    y = _original(original, n)
    sets = _sets(valid_sets, n, "valid_sets")
    taken = [i for i in range(n) if sets[i] and y[i] >= 0 and ranks[i] and ranks[i][0] != y[i]]
    if threshold is not None:
        if top1_prob is None:
            raise MlrayError("penalized_valid_share: a threshold needs top1_prob")
        c = _top1_prob(top1_prob, n)
        if any(math.isnan(c[i]) for i in taken):
            return math.nan
        taken = [i for i in taken if c[i] >= threshold]
    return _mean([float(ranks[i][0] in (sets[i] or ())) for i in taken], [True] * len(taken))


def calibration_bin(confidence: float, bins: int) -> int:
    """The bin of a confidence c among ``bins`` equal-width bins of [0, 1]: bin b holds b/M <= c < (b+1)/M, and
    c = 1 falls in the last bin (M = ``bins``; edges as ``numpy.linspace(0, 1, M + 1)``).

    >>> [calibration_bin(c, 15) for c in (0.0, 0.4, 0.4 - 1e-9, 0.999, 1.0)]
    [0, 6, 5, 14, 14]
    """
    edges = np.linspace(0.0, 1.0, bins + 1)
    return min(int(np.searchsorted(edges, confidence, side="right")) - 1, bins - 1)


def reliability_bins(
    topk: ArrayLike,
    top1_prob: ArrayLike,
    *,
    original: ArrayLike | None = None,
    valid_sets: ValidSets | None = None,
    bins: int = 15,
) -> list[tuple[int, float, float]]:
    """Per bin (:func:`calibration_bin`): ``(n_b, mean confidence, accuracy)`` of the images taken over (NaN means
    for an empty bin), against exactly one truth: ``original`` (I = images with y_i >= 0 and a prediction; right =
    [p_i1 = y_i]) or ``valid_sets`` (I = labelled images with a prediction; right = [p_i1 ∈ L_i]). An image of I
    whose probability is unknown (NaN) raises :class:`MlrayError`.

    >>> reliability_bins([[1], [2], [3]], [0.95, 0.9, 0.5], original=[1, 0, 3], bins=2)
    [(0, nan, nan), (3, 0.7833333333333333, 0.6666666666666666)]
    """
    ranks = _ranks(topk)
    n = len(ranks)
    c = _top1_prob(top1_prob, n)
    if isinstance(bins, bool) or not isinstance(bins, (int, np.integer)) or bins < 1:
        raise MlrayError(f"bins must be an integer >= 1, got {bins!r}")
    if (original is None) == (valid_sets is None):
        raise MlrayError("reliability_bins: give exactly one truth, original or valid_sets")
    if original is not None:
        y = _original(original, n)
        taken = [(i, ranks[i][0] == y[i]) for i in range(n) if y[i] >= 0 and ranks[i]]
    else:
        sets = _sets(valid_sets, n, "valid_sets")
        taken = [(i, ranks[i][0] in (sets[i] or ())) for i in range(n) if sets[i] and ranks[i]]
    per: list[list[tuple[float, bool]]] = [[] for _ in range(bins)]
    for i, right in taken:
        if math.isnan(c[i]):
            raise MlrayError(f"reliability_bins: image {i} has no top-1 probability")
        per[calibration_bin(c[i], bins)].append((c[i], right))
    return [
        (len(b), math.fsum(v for v, _ in b) / len(b), sum(r for _, r in b) / len(b)) if b else (0, math.nan, math.nan)
        for b in per
    ]


def expected_calibration_error(
    topk: ArrayLike,
    top1_prob: ArrayLike,
    *,
    original: ArrayLike | None = None,
    valid_sets: ValidSets | None = None,
    bins: int = 15,
) -> float:
    """Expected calibration error of the top-1 probability (Guo et al. 2017) against one truth, as in
    :func:`reliability_bins`: ``ECE = Σ_b (n_b / N) |acc_b - conf_b|`` over the ``bins`` equal-width bins of
    [0, 1], N = the images taken over. ``ece_top1`` is it against the original labels, ``ece_real`` against the
    valid sets, both with 15 bins. NaN when no image is taken over or one of them has an unknown probability.

    >>> round(expected_calibration_error([[1], [2], [3]], [0.95, 0.9, 0.5], original=[1, 0, 3], bins=2), 6)
    0.116667
    >>> round(expected_calibration_error([[1], [2]], [0.95, 0.9], valid_sets=[[1, 2], [2]], bins=2), 6)
    0.075
    """
    try:
        per = reliability_bins(topk, top1_prob, original=original, valid_sets=valid_sets, bins=bins)
    except MlrayError as exc:
        if "has no top-1 probability" in str(exc):
            return math.nan
        raise
    total = sum(n for n, _, _ in per)
    if not total:
        return math.nan
    return math.fsum(n / total * abs(acc - conf) for n, conf, acc in per if n)


_DEFINITIONS: dict[str, Callable[..., float]] = {
    "top_k_accuracy": top_k_accuracy,
    "real_accuracy": real_accuracy,
    "variable_top_k": variable_top_k,
}


def metric_value(metric: str, topk: ArrayLike, original: ArrayLike, valid_sets: ValidSets) -> float:
    """The per-image metric named ``metric`` (``top1`` ... ``vtopk_any``, see :mod:`mlray.scoring.registry`) by
    its definition above: e.g. ``metric_value("top5", ...) = top_k_accuracy(topk, original, k=5)``.

    >>> metric_value("real_top1", [[3, 1], [0, 2]], [3, 2], [[1, 3], [2]])
    0.5
    """
    s = _per_image_spec(metric)
    labels: Any = original if s.denominator == "original" else valid_sets
    return _DEFINITIONS[s.definition](topk, labels, **s.options)


def _per_image_spec(metric: str) -> MetricSpec:
    if metric not in METRICS:
        raise MlrayError(f"unknown per-image metric {metric!r}; one of {', '.join(METRICS)}")
    return spec(metric)


# --------------------------------------------------------------------------------------------------------------
# Subgroups and ASMA


def group_labels(max_group: int = MetricParams.max_group) -> list[str]:
    """The subgroup labels: ``"1"`` .. ``str(max_group - 1)`` and the merged ``f"{max_group}+"``.

    >>> group_labels(3)
    ['1', '2', '3+']
    """
    if isinstance(max_group, bool) or not isinstance(max_group, (int, np.integer)) or max_group < 1:
        raise MlrayError(f"max_group must be an integer >= 1, got {max_group!r}")
    return [str(g) for g in range(1, max_group)] + [f"{max_group}+"]


def _groups(
    ranks: list[list[int]], y: list[int], sets: list[set[int] | None], metric: str, max_group: int
) -> tuple[dict[str, list[int]], dict[str, int]]:
    """Per group label: the rows of the labelled images in it, and how many of them ``metric`` is taken over."""
    labels = group_labels(max_group)
    rows: dict[str, list[int]] = {g: [] for g in labels}
    sizes = dict.fromkeys(labels, 0)
    by_original = _per_image_spec(metric).denominator == "original"
    for i, s in enumerate(sets):
        if s:
            g = labels[min(len(s), max_group) - 1]
            rows[g].append(i)
            sizes[g] += int(bool(ranks[i]) and (y[i] >= 0 or not by_original))
    return rows, sizes


def subgroup_sizes(
    topk: ArrayLike,
    original: ArrayLike,
    valid_sets: ValidSets,
    metric: str,
    max_group: int = MetricParams.max_group,
) -> dict[str, int]:
    """n(g) = |S_g ∩ I|: per subgroup g, the number of images ``metric`` is taken over.

    S_g = labelled images with exactly g valid labels (g < max_group), or with at least max_group of them (the
    merged group ``f"{max_group}+"``); I = the images ``metric`` is taken over (with a prediction; for
    ``top1``/``top5`` also with an original label).

    >>> subgroup_sizes([[1, 0], [2, 3], [4, 5]], [1, -1, 4], [[1], [2, 3], [4, 5, 6]], "top1", max_group=2)
    {'1': 1, '2+': 1}
    """
    ranks = _ranks(topk)
    y = _original(original, len(ranks))
    return _groups(ranks, y, _sets(valid_sets, len(ranks), "valid_sets"), metric, max_group)[1]


def subgroup_accuracy(
    topk: ArrayLike,
    original: ArrayLike,
    valid_sets: ValidSets,
    metric: str,
    max_group: int = MetricParams.max_group,
) -> dict[str, float]:
    """m(g): ``metric`` restricted to each subgroup S_g (see :func:`subgroup_sizes`), by group label.

    Only labelled images belong to a subgroup, so ``top1`` of group g is taken over the labelled images of g with
    an original label. A group without images, or with an image lacking the ranks the metric needs, gives NaN.

    >>> topk = [[1, 0, 5], [2, 9, 5], [9, 4, 5], [7, 8, 5]]
    >>> valid = [[1], [2, 3], [4, 5], [6, 7, 8]]
    >>> subgroup_accuracy(topk, [1, 2, 4, 6], valid, "vtopk_frac", max_group=3)  # 1/1, (1/2 + 1/2) / 2, 2/3
    {'1': 1.0, '2': 0.5, '3+': 0.6666666666666666}
    >>> subgroup_accuracy([r[:2] for r in topk], [1, 2, 4, 6], valid, "vtopk_frac", max_group=3)  # k_3 = 3 > K
    {'1': 1.0, '2': 0.5, '3+': nan}
    """
    ranks = _ranks(topk)
    y = _original(original, len(ranks))
    sets = _sets(valid_sets, len(ranks), "valid_sets")
    rows = _groups(ranks, y, sets, metric, max_group)[0]
    t = np.asarray(topk)
    vs = list(valid_sets)
    return {g: metric_value(metric, t[r].reshape(len(r), t.shape[1]), [y[i] for i in r], [vs[i] for i in r])
            for g, r in rows.items()}  # fmt: skip


def asma(
    topk: ArrayLike,
    original: ArrayLike,
    valid_sets: ValidSets,
    metric: str,
    max_group: int = MetricParams.max_group,
    min_group_size: int = MetricParams.min_group_size,
) -> float:
    """ASMA (Aggregate Subgroup Model Accuracy): the unweighted mean of the subgroup values of ``metric``.

    ``(1/|U|) Σ_{g∈U} m(g)`` with U = {g : n(g) >= min_group_size} (:func:`subgroup_sizes`,
    :func:`subgroup_accuracy`). NaN when U is empty, or when a group of U is unavailable (lacks ranks).

    >>> topk = [[1, 0], [9, 1], [2, 3], [4, 9], [5, 6]]
    >>> valid = [[1], [1], [2, 3], [4, 7], [0, 1, 2]]
    >>> asma(topk, [1, 1, 2, 4, 0], valid, "real_top1", max_group=2, min_group_size=2)  # (1/2 + 2/3) / 2
    0.5833333333333333
    >>> asma(topk, [1, 1, 2, 4, 0], valid, "real_top1", max_group=3, min_group_size=2)  # group "3+" left out
    0.75
    """
    if isinstance(min_group_size, bool) or not isinstance(min_group_size, (int, np.integer)) or min_group_size < 1:
        raise MlrayError(f"min_group_size must be an integer >= 1, got {min_group_size!r}")
    sizes = subgroup_sizes(topk, original, valid_sets, metric, max_group)
    values = subgroup_accuracy(topk, original, valid_sets, metric, max_group)
    used = [g for g, n in sizes.items() if n >= min_group_size]
    if not used or any(math.isnan(values[g]) for g in used):
        return math.nan
    return math.fsum(values[g] for g in used) / len(used)


# --------------------------------------------------------------------------------------------------------------
# Shankar et al. 2020


def shankar_accuracy(
    topk: ArrayLike,
    original: ArrayLike,
    valid_sets: ValidSets,
    problematic: Sequence[bool],
    unclear_sets: ValidSets | None = None,
) -> float:
    """Multi-label accuracy of Shankar et al. 2020 (``ml_acc_shankar``), averaged over classes.

    ``(1/|C|) Σ_{c∈C} (1/|I_c|) Σ_{i∈I_c} [p_i1 ∈ L_i ∪ U_i]`` with I = {i : L_i is not None (annotated, possibly
    empty), not problematic, y_i >= 0, r_i >= 1}, I_c = {i ∈ I : y_i = c}, C = {c : I_c ≠ ∅} and U_i the unclear
    set of image i (empty when ``unclear_sets`` or its entry is None). NaN when I is empty.

    >>> topk = [[0], [2], [5], [1], [3]]
    >>> valid = [[0], [1], [0], [1], [1]]
    >>> problematic = [False, False, False, True, False]
    >>> unclear = [[], [2], [], [], []]  # image 1: its top-1 is an unclear class
    >>> round(shankar_accuracy(topk, [0, 0, 0, 1, 1], valid, problematic, unclear), 4)  # (2/3 + 0/1) / 2
    0.3333
    """
    ranks = _ranks(topk)
    n = len(ranks)
    y = _original(original, n)
    sets = _sets(valid_sets, n, "valid_sets")
    unclear = _sets(unclear_sets, n, "unclear_sets")
    flags = [bool(p) for p in problematic]
    if len(flags) != n:
        raise MlrayError(f"problematic must have one entry per image ({n}), got {len(flags)}")
    per_class: dict[int, list[float]] = {}
    for i in range(n):
        s = sets[i]
        if s is None or flags[i] or y[i] < 0 or not ranks[i]:
            continue
        per_class.setdefault(y[i], []).append(float(ranks[i][0] in s | (unclear[i] or set())))
    if not per_class:
        return math.nan
    return math.fsum(math.fsum(h) / len(h) for h in per_class.values()) / len(per_class)


# --------------------------------------------------------------------------------------------------------------
# Standardization and the gap decomposition


def _weights(sizes: Mapping[str, int], groups: Sequence[str]) -> list[float] | None:
    total = sum(int(sizes[g]) for g in groups)
    return [int(sizes[g]) / total for g in groups] if total > 0 else None


def _wsum(w: Sequence[float], m: Sequence[float]) -> float:
    """Σ_g w(g) m(g), where a term with weight exactly 0 is 0 even if m(g) is undefined (NaN)."""
    return math.fsum(wg * mg for wg, mg in zip(w, m) if wg != 0)


def _check_groups(*maps: Mapping[str, Any]) -> list[str]:
    groups = list(maps[0])
    for m in maps[1:]:
        if set(m) != set(groups):
            raise MlrayError(f"subgroup values and sizes must have the same groups, got {sorted(m)} and {groups}")
    return groups


def standardized_accuracy(values: Mapping[str, float], reference_sizes: Mapping[str, int]) -> float:
    """Subgroup values reweighted to a reference's label-count distribution: ``Σ_g w_ref(g) · m(g)``.

    w_ref(g) = n_ref(g) / Σ_h n_ref(h) (``reference_sizes``: :func:`subgroup_sizes` of the reference dataset),
    m(g) = ``values`` (:func:`subgroup_accuracy`). A term with weight 0 is 0; NaN when the reference has no images
    or a group it weighs has a NaN value.

    >>> standardized_accuracy({"1": 0.8, "2": 0.5}, {"1": 1, "2": 3})  # 1/4 * 0.8 + 3/4 * 0.5
    0.575
    """
    groups = _check_groups(values, reference_sizes)
    w = _weights(reference_sizes, groups)
    return math.nan if w is None else _wsum(w, [values[g] for g in groups])


def gap_decomposition(
    values_a: Mapping[str, float],
    sizes_a: Mapping[str, int],
    values_b: Mapping[str, float],
    sizes_b: Mapping[str, int],
) -> dict[str, float]:
    """The gap between datasets A and B split into label-count composition and within-group differences.

    With w_X(g) = n_X(g) / Σ n_X and m_X(g) the subgroup values of X (:func:`subgroup_sizes`,
    :func:`subgroup_accuracy`): ``value_a`` = Σ_g w_A m_A, ``value_b`` = Σ_g w_B m_B, ``gap`` = value_a − value_b
    = ``composition`` + ``within`` with ``composition`` = Σ_g (w_A − w_B) m_A and ``within`` = Σ_g w_B (m_A − m_B);
    ``a_standardized_to_b`` = Σ_g w_B m_A, ``b_standardized_to_a`` = Σ_g w_A m_B. A term whose weight is exactly 0
    is 0; a sum that needs a NaN m(g) is NaN; everything is NaN when A or B has no images.

    >>> d = gap_decomposition({"1": 0.75, "2+": 0.5}, {"1": 4, "2+": 2}, {"1": 0.5, "2+": 0.25}, {"1": 2, "2+": 4})
    >>> [round(d[k], 4) for k in ("value_a", "value_b", "gap", "composition", "within")]  # 2/3, 1/3, 1/12, 1/4
    [0.6667, 0.3333, 0.3333, 0.0833, 0.25]
    >>> [round(d[k], 4) for k in ("a_standardized_to_b", "b_standardized_to_a")]  # 7/12, 5/12
    [0.5833, 0.4167]
    """
    groups = _check_groups(values_a, sizes_a, values_b, sizes_b)
    wa, wb = _weights(sizes_a, groups), _weights(sizes_b, groups)
    keys = ("value_a", "value_b", "gap", "composition", "within", "a_standardized_to_b", "b_standardized_to_a")
    if wa is None or wb is None:
        return dict.fromkeys(keys, math.nan)
    ma, mb = [values_a[g] for g in groups], [values_b[g] for g in groups]
    value_a, value_b = _wsum(wa, ma), _wsum(wb, mb)
    return {
        "value_a": value_a,
        "value_b": value_b,
        "gap": value_a - value_b,
        "composition": _wsum([a - b for a, b in zip(wa, wb)], ma),
        "within": _wsum(wb, [a - b for a, b in zip(ma, mb)]),
        "a_standardized_to_b": _wsum(wb, ma),
        "b_standardized_to_a": _wsum(wa, mb),
    }
