"""What scoring produces: :class:`MetricValue` (one value) and :class:`ModelScore` (one model on one dataset).

``ModelScore.X`` has one row per per-image metric (in :data:`~mlray.scoring.registry.PER_IMAGE` order) holding its
per-image value times its eligibility, then the two eligibility rows :data:`ELIGIBLE_ROW` (original label known
and predicted; labelled and predicted).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from .params import MetricParams
from .registry import METRICS, PER_IMAGE, MetricSpec

ROW: dict[str, int] = {m: j for j, m in enumerate(METRICS)}
"""The row of ``ModelScore.X`` (and column of ``num``/``den``/``bad``) of each per-image metric."""
ELIGIBLE_ROW: dict[str, int] = {"original": len(PER_IMAGE), "labelled": len(PER_IMAGE) + 1}
"""The row of ``ModelScore.X`` holding the eligibility of each denominator of a per-image metric."""
N_ROWS = len(PER_IMAGE) + 2


def eligible_row(m: MetricSpec) -> int:
    """The eligibility row of ``X`` that is the denominator of the per-image metric ``m``."""
    return ELIGIBLE_ROW[m.denominator]


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
    """Everything scored for one (model, dataset); the frames and the decomposition read it without re-gathering.

    ``X`` (float32, N_ROWS x n): per-image columns, see the module docstring. ``num``/``den``/``bad`` (per slice
    0 = not labelled, then groups 1..max_group, and per-image metric): the sum of the per-image values, the number
    of images taken over, and how many of those lack the ranks they need. ``boot`` (n_boot x slices x N_ROWS,
    float32) holds the resampled column sums once :func:`~mlray.scoring.bootstrap.bootstrap_scores` ran.
    """

    params: MetricParams
    K: int
    n_images: int
    group_labels: tuple[str, ...]
    group: np.ndarray  # int16 (n,): 0 = not labelled, g = subgroup index (1-based)
    original: np.ndarray  # int16 (n,)
    X: np.ndarray  # float32 (N_ROWS, n)
    num: np.ndarray  # float64 (G+1, len(METRICS))
    den: np.ndarray  # int64 (G+1, len(METRICS))
    bad: np.ndarray  # int64 (G+1, len(METRICS))
    n_no_prediction: int  # rows without any stored rank (all images)
    n_excluded_empty: int
    n_excluded_unannotated: int
    n_excluded_no_original: int
    results: dict[str, MetricValue] = field(default_factory=dict)  # per-image metrics, ml_acc_shankar, asma_*
    subgroups: dict[tuple[str, str], MetricValue] = field(default_factory=dict)  # (metric, group label)
    asma_groups: dict[str, tuple[str, ...]] = field(default_factory=dict)  # asma metric -> groups used
    no_prediction_by_metric: dict[str, int] = field(default_factory=dict)
    shankar_hit: np.ndarray | None = None  # bool (n,) [p_i1 in valid | unclear] on eligible images
    shankar_elig: np.ndarray | None = None  # bool (n,)
    boot: np.ndarray | None = None  # float32 (B, G+1, N_ROWS)
    boot_shankar: np.ndarray | None = None  # float64 (B,) resampled ml_acc_shankar
    shankar_info: dict[str, int | bool] = field(default_factory=dict)  # n_classes, n_excluded_problematic, ...
    dataset_key: str = ""
    confidence_names: tuple[str, ...] = ()  # the confidence metrics' report names (mlray.scoring.confidence)
    confidence_F: np.ndarray | None = None  # float32 (n, columns): their per-image columns
    confidence_sums: np.ndarray | None = None  # float64 (G+1, columns): the columns summed per slice

    @property
    def n_groups(self) -> int:
        """The number of subgroups (= ``max_group``)."""
        return len(self.group_labels)


def ratio(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Elementwise ``a / b`` where ``b > 0``, NaN elsewhere (no warnings)."""
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(b > 0, a / np.where(b > 0, b, 1), np.nan)


def percentile_ci(R: np.ndarray, ci: float) -> tuple[np.ndarray, np.ndarray]:
    """Columnwise central ``ci`` percentile interval of R (B, q), NaN resamples dropped (numpy's 'linear'
    percentile); NaN where a column has no finite resample."""
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
