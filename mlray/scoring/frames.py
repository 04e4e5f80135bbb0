"""Report frames of scored models (pandas), and the Arrow schemas of the score reports they are written as.

=======================  ========================================  =========================================
report                   one row per                               frame (the caller adds the key columns)
=======================  ========================================  =========================================
``model_metrics``        (model, dataset, metric)                  :func:`metrics_frame`
``subgroup_metrics``     (model, dataset, group, metric)           :func:`subgroup_frame`
``gap_decomposition``    (model, dataset_a, dataset_b, metric)     :func:`decomposition_frame`
``class_metrics``        (model, dataset, class_index)             :func:`per_class_accuracy`
=======================  ========================================  =========================================

Typed columns: ``params`` is a struct (:data:`PARAMS_TYPE`: the metric's definition and every choice behind its
value), ``groups_used`` a list of group labels (null except for ASMA), ``class_index`` int16 and every count
int64, as in the statistics reports (:data:`mlray.stats.STATS_SCHEMAS`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa

from ..labels import NUM_CLASSES, LabelArrays
from .decomposition import DECOMPOSITION_KEYS, decompose
from .params import MetricParams
from .registry import ALL_METRICS, METRICS, SHANKAR, spec
from .results import ELIGIBLE_ROW, ROW, ModelScore, ratio

PARAMS_TYPE = pa.struct(
    [
        ("k", pa.string()),  # ranks the per-image value reads: "1", "5" or "k_i"
        ("target", pa.string()),  # what a rank is compared with: "original", "valid set", ...
        ("variant", pa.string()),  # "ReaL", "strict", "fractional", "lenient", ... (null for top1/top5)
        ("over", pa.string()),  # the images the value is taken over
        ("aggregate", pa.string()),  # ASMA rows only
        ("max_group", pa.int64()),
        ("min_group_size", pa.int64()),
        ("K", pa.int64()),  # ranks stored per image (the prediction's K)
        ("seed", pa.int64()),
        ("n_boot", pa.int64()),  # 0 when no intervals were computed
        ("ci", pa.float64()),
        ("n_classes", pa.int64()),  # ml_acc_shankar only: classes averaged over
        ("n_excluded_problematic", pa.int64()),  # ml_acc_shankar only
        ("unclear_given", pa.bool_()),  # ml_acc_shankar only
        ("threshold", pa.float64()),  # penalized_valid_share_conf<t> only: the top-1 probability threshold
        ("bins", pa.int64()),  # ece_* only: equal-width bins of [0, 1]
    ]
)
"""The ``params`` column of ``model_metrics``: the metric's definition and the choices behind its value."""

MODEL_SCHEMA = pa.schema(
    [
        ("metric", pa.string()),
        ("value", pa.float64()),
        ("ci_low", pa.float64()),
        ("ci_high", pa.float64()),
        ("n", pa.int64()),
        ("params", PARAMS_TYPE),
        ("available", pa.bool_()),
        ("reason", pa.string()),
        ("n_excluded_empty", pa.int64()),
        ("n_excluded_unannotated", pa.int64()),
        ("n_excluded_no_original", pa.int64()),
        ("n_no_prediction", pa.int64()),
        ("groups_used", pa.list_(pa.string())),
    ]
)
SUBGROUP_SCHEMA = pa.schema(
    [
        ("group", pa.string()),
        ("metric", pa.string()),
        ("value", pa.float64()),
        ("n", pa.int64()),
        ("ci_low", pa.float64()),
        ("ci_high", pa.float64()),
        ("available", pa.bool_()),
        ("reason", pa.string()),
    ]
)
DECOMPOSITION_SCHEMA = pa.schema(
    [("metric", pa.string())] + [(k, pa.float64()) for k in DECOMPOSITION_KEYS[1:-1]] + [("reason", pa.string())]
)
RELIABILITY_SCHEMA = pa.schema(
    [
        ("truth", pa.string()),  # "original" (ece_top1) or "valid set" (ece_real)
        ("bin", pa.int64()),
        ("bin_low", pa.float64()),
        ("bin_high", pa.float64()),
        ("n", pa.int64()),
        ("confidence", pa.float64()),  # mean top-1 probability (NaN in an empty bin)
        ("accuracy", pa.float64()),
    ]
)
CLASS_SCHEMA = pa.schema(
    [
        ("class_index", pa.int16()),
        ("n", pa.int64()),
        ("top1", pa.float64()),
        ("n_labelled", pa.int64()),
        ("real_top1", pa.float64()),
    ]
)

MODEL_COLUMNS = MODEL_SCHEMA.names
SUBGROUP_COLUMNS = SUBGROUP_SCHEMA.names
DECOMPOSITION_COLUMNS = DECOMPOSITION_SCHEMA.names
CLASS_COLUMNS = CLASS_SCHEMA.names
RELIABILITY_COLUMNS = RELIABILITY_SCHEMA.names

_MODEL_KEYS = [pa.field("model", pa.string()), pa.field("dataset", pa.string())]
_PAIR_KEYS = [pa.field("model", pa.string()), pa.field("dataset_a", pa.string()), pa.field("dataset_b", pa.string())]
SCORE_SCHEMAS: dict[str, pa.Schema] = {
    "model_metrics": pa.schema(_MODEL_KEYS + list(MODEL_SCHEMA)),
    "subgroup_metrics": pa.schema(_MODEL_KEYS + list(SUBGROUP_SCHEMA)),
    "gap_decomposition": pa.schema(_PAIR_KEYS + list(DECOMPOSITION_SCHEMA)),
    "class_metrics": pa.schema(_MODEL_KEYS + list(CLASS_SCHEMA)),
    "reliability": pa.schema(_MODEL_KEYS + list(RELIABILITY_SCHEMA)),
    "policy_metrics": pa.schema(
        _MODEL_KEYS
        + [("classes", pa.string()), ("class_policy", pa.string()), ("configured", pa.bool_())]
        + [MODEL_SCHEMA.field(c) for c in ("metric", "value", "ci_low", "ci_high", "n")]
    ),
}
"""The Arrow schema of each score report as written (key columns first)."""


def metric_params(score: ModelScore, metric: str) -> dict[str, Any]:
    """The ``params`` struct of ``metric`` in ``score`` (every field of :data:`PARAMS_TYPE`, None where it does not
    apply)."""
    s = spec(metric)
    p = score.params
    out: dict[str, Any] = dict.fromkeys(PARAMS_TYPE.names)
    out.update(
        k="k_i" if s.k is None else str(s.k),
        target=s.target,
        variant=s.variant,
        over=s.over,
        aggregate="ASMA: unweighted mean of subgroup values" if metric.startswith("asma_") else None,
        max_group=int(p.max_group),
        min_group_size=int(p.min_group_size),
        K=int(score.K),
        seed=int(p.seed),
        n_boot=int(p.n_boot) if score.boot is not None else 0,
        ci=float(p.ci),
    )
    if metric == SHANKAR:
        out.update({k: v for k, v in score.shankar_info.items() if k in out})
    if s.denominator == "confident":
        out["threshold"] = float(p.confidence_threshold)
    if s.definition == "expected_calibration_error":
        out["bins"] = int(p.ece_bins)
    return out


def metrics_frame(score: ModelScore) -> pd.DataFrame:
    """One row per metric (headline, ``ml_acc_shankar``, ``asma_*``) with the columns of :data:`MODEL_SCHEMA`.

    ``n``: images the value is taken over (for ASMA: the images of the used groups). Exclusion counts are those of
    the metric's population: ``n_excluded_empty``/``n_excluded_unannotated`` for the multi-label metrics (0 for
    top1/top5), ``n_excluded_no_original`` for top1/top5 (and ml_acc_shankar), ``n_no_prediction`` = images that
    would be taken over but have no prediction. ``params``: a dict (:func:`metric_params`). ``groups_used`` (ASMA
    only, else None): the list of group labels used. The caller adds ``model`` and ``dataset``.
    """
    rows = []
    for m in ALL_METRICS + score.confidence_names:
        mv = score.results[m]
        base = spec(m)
        multi = base.denominator != "original"
        labelled = base.denominator in ("labelled", "mistaken", "confident")
        rows.append(
            {
                "metric": m,
                "value": mv.value,
                "ci_low": mv.ci_low,
                "ci_high": mv.ci_high,
                "n": mv.n,
                "params": metric_params(score, m),
                "available": mv.available,
                "reason": mv.reason,
                "n_excluded_empty": score.n_excluded_empty if labelled else 0,
                "n_excluded_unannotated": score.n_excluded_unannotated if multi else 0,
                "n_excluded_no_original": score.n_excluded_no_original if base.denominator != "labelled" else 0,
                "n_no_prediction": score.no_prediction_by_metric.get(base.name, 0),
                "groups_used": list(score.asma_groups[m]) if m in score.asma_groups else None,
            }
        )
    return pd.DataFrame(rows, columns=MODEL_COLUMNS)


def subgroup_frame(score: ModelScore) -> pd.DataFrame:
    """One row per (group, metric) for the groups "1".."max_group-1", "max_group+" (always all of them; a group
    without images has NaN and n = 0). Columns :data:`SUBGROUP_SCHEMA`; the caller adds ``model``, ``dataset``."""
    rows = []
    for label in score.group_labels:
        for m in METRICS + score.confidence_names:
            mv = score.subgroups[(m, label)]
            rows.append({"group": label, "metric": m, "value": mv.value, "n": mv.n, "ci_low": mv.ci_low,
                         "ci_high": mv.ci_high, "available": mv.available, "reason": mv.reason})  # fmt: skip
    return pd.DataFrame(rows, columns=SUBGROUP_COLUMNS)


def reliability_frame(score: ModelScore) -> pd.DataFrame:
    """The reliability-diagram data of ``score``: per truth ("original": the images ``ece_top1`` is taken over;
    "valid set": those of ``ece_real``) and bin, the images, their mean top-1 probability and the share right.
    Columns :data:`RELIABILITY_SCHEMA`; the caller adds ``model``, ``dataset``."""
    from .confidence import reliability_rows

    return pd.DataFrame(reliability_rows(score), columns=RELIABILITY_COLUMNS)


def decomposition_frame(
    score_a: ModelScore,
    b: ModelScore | LabelArrays,
    metrics: Sequence[str] = METRICS,
    params: MetricParams | None = None,
) -> pd.DataFrame:
    """:func:`~mlray.scoring.decomposition.decompose` for each metric, one row each, columns
    :data:`DECOMPOSITION_SCHEMA`. The caller adds ``model``, ``dataset_a`` and ``dataset_b``."""
    return pd.DataFrame([decompose(score_a, b, m, params) for m in metrics], columns=DECOMPOSITION_COLUMNS)


def per_class_accuracy(score: ModelScore, num_classes: int = NUM_CLASSES) -> pd.DataFrame:
    """Per original class c (one row per class 0..num_classes-1): ``class_index, n, top1, n_labelled, real_top1``.

    ``n``: images with original label c and a prediction; ``top1`` = mean [p_i1 = c] over them.
    ``n_labelled``: those of them that are labelled; ``real_top1`` = mean [p_i1 in L_i] over those.
    A class with no images has NaN accuracies (n = 0). Columns :data:`CLASS_SCHEMA`.
    """
    X = score.X
    cls = np.where(score.original >= 0, score.original, 0).astype(np.intp)
    e_orig = X[ELIGIBLE_ROW["original"]] > 0
    e_lab = (X[ELIGIBLE_ROW["labelled"]] > 0) & (score.original >= 0)
    n = np.bincount(cls[e_orig], minlength=num_classes)
    t1 = np.bincount(cls[e_orig], weights=X[ROW["top1"], e_orig].astype(np.float64), minlength=num_classes)
    nl = np.bincount(cls[e_lab], minlength=num_classes)
    r1 = np.bincount(cls[e_lab], weights=X[ROW["real_top1"], e_lab].astype(np.float64), minlength=num_classes)
    return pd.DataFrame(
        {
            "class_index": np.arange(num_classes, dtype=np.int16),
            "n": n.astype(np.int64),
            "top1": ratio(t1, n),
            "n_labelled": nl.astype(np.int64),
            "real_top1": ratio(r1, nl),
        }
    )
