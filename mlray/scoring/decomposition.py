"""Standardized accuracy and the gap decomposition between two datasets, for one model (with bootstrap CIs).

The formulas are those of :func:`mlray.scoring.functional.standardized_accuracy` and
:func:`mlray.scoring.functional.gap_decomposition`, applied to the subgroup values and sizes of scored models.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from ..errors import MlrayError
from ..labels import LabelArrays
from .bootstrap import percentile_ci
from .context import prepare_dataset
from .params import MetricParams
from .registry import METRICS, spec
from .results import ROW, ModelScore, eligible_row, ratio

DECOMPOSITION_KEYS = ("metric", "value_a", "value_b", "gap", "composition", "within", "a_standardized_to_b",
                      "b_standardized_to_a", "gap_ci_low", "gap_ci_high", "composition_ci_low",
                      "composition_ci_high", "within_ci_low", "within_ci_high", "reason")  # fmt: skip
"""The keys of :func:`decompose`'s result (the columns of the ``gap_decomposition`` report)."""


def _wsum(w: np.ndarray, m: np.ndarray) -> np.ndarray:
    """Σ_g w(g) m(g) over the last axis, where a term with weight exactly 0 is 0 even if m(g) is undefined."""
    with np.errstate(invalid="ignore"):
        return np.where(w != 0, w * m, 0.0).sum(axis=-1)


_Boot = tuple[np.ndarray, np.ndarray]


def _group_weights(
    x: ModelScore | LabelArrays, metric: str, params: MetricParams
) -> tuple[np.ndarray, np.ndarray | None, list[str | None], _Boot | None]:
    """(den (G,), m (G,) or None, unavailable-reason per group, resampled (den (B,G), num (B,G)) or None)."""
    j = ROW[metric]
    if isinstance(x, ModelScore):
        den = x.den[1:, j].astype(np.float64)
        m = ratio(x.num[1:, j], den)
        why: list[str | None] = [None] * len(den)
        for gi, label in enumerate(x.group_labels):
            mv = x.subgroups[(metric, label)]
            if not mv.available and den[gi] > 0:
                m[gi] = np.nan
                why[gi] = mv.reason
        boot = None
        if x.boot is not None:
            S = x.boot.astype(np.float64)
            boot = (S[:, 1:, eligible_row(spec(metric))], S[:, 1:, j])
        return den, m, why, boot
    ctx = prepare_dataset(x, params)
    mask = ctx.labelled & (ctx.orig_ok if spec(metric).denominator == "original" else True)
    den = np.bincount(ctx.group[mask], minlength=ctx.max_group + 1)[1:].astype(np.float64)
    return den, None, [None] * len(den), None


def standardized_accuracy(
    score: ModelScore, reference: ModelScore | LabelArrays, metric: str, params: MetricParams | None = None
) -> float:
    """``Σ_g w_ref(g) · m(g)``: the subgroup values of ``score`` reweighted to the reference's group shares.

    w_ref(g) = share of the reference's images (those ``metric`` is taken on: labelled, with an original label for
    top1/top5, with a prediction when the reference is a ModelScore) in group g. NaN when a group the reference
    weighs has no value in ``score`` (no images, or the metric is unavailable there). Equals
    ``decompose(score, reference, metric)["a_standardized_to_b"]``.
    """
    return float(decompose(score, reference, metric, params)["a_standardized_to_b"])


def decompose(
    score_a: ModelScore, b: ModelScore | LabelArrays, metric: str, params: MetricParams | None = None
) -> dict[str, Any]:
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
    if metric not in ROW:
        raise MlrayError(f"decompose: unknown metric {metric!r}; one of {', '.join(METRICS)}")
    params = params or score_a.params
    if isinstance(b, ModelScore) and b.n_groups != score_a.n_groups:
        raise MlrayError("decompose: A and B were scored with different max_group")
    if not isinstance(b, ModelScore) and params.max_group != score_a.n_groups:
        raise MlrayError("decompose: params.max_group differs from the one A was scored with")
    den_a, m_a, why_a, boot_a = _group_weights(score_a, metric, params)
    den_b, m_b, why_b, boot_b = _group_weights(b, metric, params)
    assert m_a is not None
    labels = score_a.group_labels
    out: dict[str, Any] = {k: math.nan for k in DECOMPOSITION_KEYS if k != "metric"}
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
                lo, hi = percentile_ci(np.stack([R[k] for k in names], axis=1), params.ci)
                for k, a, c in zip(names, lo, hi):
                    out[f"{k}_ci_low"], out[f"{k}_ci_high"] = float(a), float(c)
    out["reason"] = "; ".join(dict.fromkeys(reasons))
    return out


def _boot_groups(boot: _Boot, m_point: np.ndarray, nbt: int) -> tuple[np.ndarray, np.ndarray]:
    """Resampled (weights (B, G), values (B, G)); a group unavailable at the point estimate stays unavailable."""
    den, num = boot[0][:nbt], boot[1][:nbt]
    tot = den.sum(axis=1, keepdims=True)
    w = ratio(den, tot)
    m = ratio(num, den)
    m[:, np.isnan(m_point)] = np.nan
    return w, m
