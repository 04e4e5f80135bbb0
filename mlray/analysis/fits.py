"""Linear fits of one dataset's accuracy on another's across models, on the linear and the probit scale.

For a pair of datasets (A, B), a metric and a collection, every model with the metric on both gives a point
(x_i, y_i) = (value on A, value on B). The fit is ordinary least squares of t(y) on t(x):

    t(y_i) = slope * t(x_i) + intercept + e_i,      t = identity (``linear``) or Phi^-1 (``probit``)

where Phi^-1 is the standard normal quantile function (:func:`scipy.stats.norm.ppf`). The probit fit is the
convention of Taori et al. 2020 ("Measuring robustness to natural distribution shifts in image classification"):
on that scale the accuracies of models trained on ImageNet lie close to a line, and a model's *effective
robustness* is its distance above the line in accuracy units, ``y - Phi(intercept + slope * Phi^-1(x))``
(:func:`predict`). A value of exactly 0 or 1 has no probit (it is left out of the probit fit only, so that fit
may have fewer models). Reported per fit (:func:`fit_line`):

- ``n_models``: the points fitted; ``slope``, ``intercept``: on the fit's scale;
- ``r2`` = 1 - SSR / SST on the fit's scale (NaN when all t(y) are equal);
- ``residual_std`` = sqrt(SSR / (n - 2)), the standard error of the regression on the fit's scale (NaN for n < 3);
- ``x_min``, ``x_max``: the range of the fitted x values, as fractions (where a chart draws the line).

A pair with fewer than two points, or whose x values are all equal, has no fit.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy.stats import norm

SCALES = ("linear", "probit")
FIT_COLUMNS = ["dataset_a", "dataset_b", "metric", "collection", "scale", "n_models", "slope", "intercept", "r2",
               "residual_std", "x_min", "x_max"]  # fmt: skip


@dataclass(frozen=True)
class Fit:
    """One least-squares line on the scale ``scale`` (module docstring)."""

    scale: str
    n: int
    slope: float
    intercept: float
    r2: float
    residual_std: float
    x_min: float
    x_max: float


def transform(values: np.ndarray, scale: str) -> np.ndarray:
    """Values (fractions) on the fit's scale: as they are (``linear``) or Phi^-1 (``probit``; NaN outside (0, 1)).

    >>> transform(np.array([0.5, 0.975, 1.0]), "probit").round(3).tolist()
    [0.0, 1.96, nan]
    """
    v = np.asarray(values, dtype=np.float64)
    if scale == "linear":
        return v
    if scale != "probit":
        raise ValueError(f"unknown scale {scale!r}; one of {', '.join(SCALES)}")
    out = np.full(v.shape, np.nan)
    inside = (v > 0) & (v < 1)
    out[inside] = norm.ppf(v[inside])
    return out


def fit_line(x: np.ndarray, y: np.ndarray, scale: str = "linear") -> Fit | None:
    """The least-squares fit of t(y) on t(x) (module docstring); None with fewer than two usable points or all
    usable x equal.

    >>> f = fit_line(np.array([0.1, 0.2, 0.3, 0.4]), np.array([0.05, 0.15, 0.25, 0.35]))
    >>> round(f.slope, 12), round(f.intercept, 12), f.r2, f.n
    (1.0, -0.05, 1.0, 4)
    """
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    tx, ty = transform(x, scale), transform(y, scale)
    ok = np.isfinite(tx) & np.isfinite(ty)
    n = int(ok.sum())
    if n < 2:
        return None
    tx, ty = tx[ok], ty[ok]
    dx = tx - tx.mean()
    sxx = float(dx @ dx)
    if sxx <= 0:
        return None
    slope = float(dx @ (ty - ty.mean())) / sxx
    intercept = float(ty.mean() - slope * tx.mean())
    resid = ty - (slope * tx + intercept)
    ssr = float(resid @ resid)
    sst = float(((ty - ty.mean()) ** 2).sum())
    r2 = 1.0 - ssr / sst if sst > 0 else float("nan")
    std = float(np.sqrt(ssr / (n - 2))) if n > 2 else float("nan")
    return Fit(scale, n, slope, intercept, r2, std, float(x[ok].min()), float(x[ok].max()))


def predict(fit: Fit, x: np.ndarray) -> np.ndarray:
    """The fitted y for ``x`` in accuracy units (fractions): ``slope * x + intercept`` (linear) or
    ``Phi(intercept + slope * Phi^-1(x))`` (probit; NaN where x is 0 or 1)."""
    tx = transform(np.asarray(x, dtype=np.float64), fit.scale)
    ty = fit.slope * tx + fit.intercept
    return ty if fit.scale == "linear" else norm.cdf(ty)


def fits_frame(points: pd.DataFrame, orders: dict[str, list[str]]) -> tuple[pd.DataFrame, dict[tuple, Fit]]:
    """Every fit: for each collection, each pair of its datasets (A before B in ``orders[collection]``, the order
    of :func:`~mlray.analysis.points.dataset_order`), each metric both have, each scale. Returns the ``fits``
    report (columns :data:`FIT_COLUMNS`) and the fits by (collection, A, B, metric, scale)."""
    rows = []
    found: dict[tuple, Fit] = {}
    for collection, order in orders.items():
        sel = points[points["collection"] == collection]
        for metric, part in sel.groupby("metric", sort=False):
            by_dataset = {d: g.set_index(["model", "size"])["value"] for d, g in part.groupby("dataset", sort=False)}
            for i, a in enumerate(order):
                for b in order[i + 1 :]:
                    if a not in by_dataset or b not in by_dataset:
                        continue
                    xy = pd.concat([by_dataset[a].rename("x"), by_dataset[b].rename("y")], axis=1, join="inner")
                    if len(xy) < 2:
                        continue
                    for scale in SCALES:
                        fit = fit_line(xy["x"].to_numpy(), xy["y"].to_numpy(), scale)
                        if fit is None:
                            continue
                        found[(collection, a, b, metric, scale)] = fit
                        rows.append((a, b, metric, collection, scale, fit.n, fit.slope, fit.intercept, fit.r2,
                                     fit.residual_std, fit.x_min, fit.x_max))  # fmt: skip
    rows.sort(key=lambda r: (list(orders).index(r[3]), orders[r[3]].index(r[0]), orders[r[3]].index(r[1])))
    frame = pd.DataFrame.from_records(rows, columns=FIT_COLUMNS)
    return frame.astype({"n_models": "int64"}), found
