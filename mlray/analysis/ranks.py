"""How the ranking of the models changes between top-1 and each multi-label metric, per dataset.

For a collection and a dataset, the models with both metrics are ranked under each (rank 1 = the highest value;
tied values share the lowest rank, ``scipy.stats.rankdata(method="min")`` of the negated values). Agreement of the
two rankings:

- Kendall's tau-b (:func:`scipy.stats.kendalltau`) and Spearman's rho (:func:`scipy.stats.spearmanr`) of the two
  value vectors;
- percentile bootstrap intervals over models: ``n_boot`` resamples of the models with replacement (seeded),
  tau and rho on each (a resample whose values are all tied in either metric gives no value and is dropped);
- ``movers``: up to ``n_movers`` models that rise most (rank under top-1 minus rank under the other metric,
  largest first) and up to ``n_movers`` that fall most, each with both ranks.

Metric B is every metric of the dataset other than ``top1`` and ``top5`` (the multi-label metrics, ASMA and
``mlpc``). Published results have only top-1 / top-5 per dataset, but timm publishes top-1 under the ReaL labels
as the dataset ``imagenet-val-real``: it is ``real_top1`` of ``imagenet-val`` (top-5 likewise ``real_top5``;
:data:`ALIASES`), so the published rows compare val top-1 with ReaL top-1 over timm's models
(``metric_b_source`` names where such a metric B came from).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
from scipy.stats import kendalltau, rankdata, spearmanr

from .points import OWN

BASE_METRIC = "top1"
NOT_MULTI_LABEL = ("top1", "top5")
ALIASES: dict[tuple[str, str], tuple[str, str]] = {
    ("imagenet-val-real", "top1"): ("imagenet-val", "real_top1"),
    ("imagenet-val-real", "top5"): ("imagenet-val", "real_top5"),
}
"""Published (dataset, metric) -> the (dataset, metric) it is: timm's ReaL results are ImageNet val under ReaL."""

RANK_COLUMNS = ["collection", "dataset", "metric_a", "metric_b", "metric_b_source", "n_models", "kendall_tau",
                "kendall_ci_low", "kendall_ci_high", "spearman_rho", "spearman_ci_low", "spearman_ci_high", "n_boot",
                "movers"]  # fmt: skip


def ranks(values: np.ndarray) -> np.ndarray:
    """Ranks, 1 = the highest value; ties share the lowest rank.

    >>> ranks(np.array([0.7, 0.9, 0.7, 0.5])).tolist()
    [2, 1, 2, 4]
    """
    return rankdata(-np.asarray(values, dtype=np.float64), method="min").astype(np.int64)


def _percentiles(samples: np.ndarray, ci: float) -> tuple[float, float]:
    """The central ``ci`` percentile interval of the finite samples; NaN when there are none."""
    ok = samples[np.isfinite(samples)]
    if not len(ok):
        return float("nan"), float("nan")
    lo, hi = np.percentile(ok, [50 * (1 - ci), 50 * (1 + ci)])
    return float(lo), float(hi)


def rank_correlation(
    a: np.ndarray, b: np.ndarray, n_boot: int = 1000, seed: int = 0, ci: float = 0.95
) -> dict[str, float]:
    """Kendall's tau-b and Spearman's rho between ``a`` and ``b`` (values of the same models under two metrics)
    with percentile bootstrap intervals over models (module docstring). Keys ``kendall_tau``, ``kendall_ci_low``,
    ``kendall_ci_high``, ``spearman_rho``, ``spearman_ci_low``, ``spearman_ci_high``; NaN where undefined (fewer
    than two models, all values tied; no intervals when ``n_boot`` is 0).

    >>> r = rank_correlation(np.array([1.0, 2, 3, 4]), np.array([1.0, 3, 2, 4]), n_boot=0)
    >>> round(r["kendall_tau"], 4), round(r["spearman_rho"], 4)
    (0.6667, 0.8)
    """
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    nan = float("nan")
    out = dict.fromkeys(("kendall_tau", "kendall_ci_low", "kendall_ci_high", "spearman_rho", "spearman_ci_low",
                         "spearman_ci_high"), nan)  # fmt: skip
    n = len(a)
    if n < 2 or np.all(a == a[0]) or np.all(b == b[0]):
        return out
    out["kendall_tau"] = float(kendalltau(a, b).statistic)
    out["spearman_rho"] = float(spearmanr(a, b).statistic)
    if n_boot <= 0:
        return out
    idx = np.random.default_rng(seed).integers(0, n, size=(n_boot, n))
    A, B = a[idx], b[idx]
    taus = np.full(n_boot, nan)
    for i in range(n_boot):
        if np.ptp(A[i]) > 0 and np.ptp(B[i]) > 0:
            taus[i] = kendalltau(A[i], B[i]).statistic
    # Spearman = Pearson of the (average) ranks, for all resamples at once
    ra, rb = rankdata(A, axis=1), rankdata(B, axis=1)
    ra -= ra.mean(axis=1, keepdims=True)
    rb -= rb.mean(axis=1, keepdims=True)
    den = np.sqrt((ra * ra).sum(axis=1) * (rb * rb).sum(axis=1))
    with np.errstate(invalid="ignore", divide="ignore"):
        rhos = np.where(den > 0, (ra * rb).sum(axis=1) / den, nan)
    out["kendall_ci_low"], out["kendall_ci_high"] = _percentiles(taus, ci)
    out["spearman_ci_low"], out["spearman_ci_high"] = _percentiles(rhos, ci)
    return out


def movers(models: Sequence[str], sizes: Sequence[int], a: np.ndarray, b: np.ndarray, n_movers: int = 5) -> list[dict]:
    """The models whose rank changes most from metric A (values ``a``) to metric B (values ``b``): up to
    ``n_movers`` rising (rank_a - rank_b > 0, largest first), then up to ``n_movers`` falling (most negative
    first); ties by model name. Each a dict ``model, img_size (None when -1), rank_a, rank_b``.

    >>> moved = movers(["p", "q", "r"], [-1, -1, 224], np.array([0.9, 0.8, 0.7]), np.array([0.7, 0.8, 0.9]), 1)
    >>> [(m["model"], m["img_size"], m["rank_a"], m["rank_b"]) for m in moved]
    [('r', 224, 3, 1), ('p', None, 1, 3)]
    """
    ra, rb = ranks(a), ranks(b)
    change = ra - rb
    order = sorted(range(len(models)), key=lambda i: (-change[i], models[i]))
    up = [i for i in order if change[i] > 0][:n_movers]
    down = [i for i in sorted(range(len(models)), key=lambda i: (change[i], models[i])) if change[i] < 0][:n_movers]
    return [{"model": str(models[i]), "img_size": None if int(sizes[i]) < 0 else int(sizes[i]),
             "rank_a": int(ra[i]), "rank_b": int(rb[i])} for i in up + down]  # fmt: skip


def with_aliases(points: pd.DataFrame) -> pd.DataFrame:
    """``points`` plus, for published collections, a copy of each :data:`ALIASES` row under its alias (with the
    column ``source`` naming the original ``dataset metric``; empty for the other rows)."""
    out = points.assign(source="")
    extra = []
    for (dataset, metric), (to_dataset, to_metric) in ALIASES.items():
        sel = points[(points["collection"] != OWN) & (points["dataset"] == dataset) & (points["metric"] == metric)]
        if len(sel):
            extra.append(sel.assign(dataset=to_dataset, metric=to_metric, source=f"{dataset} {metric}"))
    return pd.concat([out, *extra], ignore_index=True) if extra else out


def rank_changes_frame(
    points: pd.DataFrame,
    orders: dict[str, list[str]],
    n_boot: int = 1000,
    seed: int = 0,
    ci: float = 0.95,
    n_movers: int = 5,
) -> pd.DataFrame:
    """The ``rank_changes`` report (columns :data:`RANK_COLUMNS`): one row per collection, dataset (in
    ``orders[collection]`` order) and metric B with at least two models that have top-1 and B on it."""
    rows = []
    pts = with_aliases(points)
    for collection, order in orders.items():
        sel = pts[pts["collection"] == collection]
        for dataset in order:
            here = sel[sel["dataset"] == dataset]
            if BASE_METRIC not in set(here["metric"]):
                continue
            for metric in [m for m in pd.unique(here["metric"]) if m not in NOT_MULTI_LABEL]:
                pairs = _paired_metrics(here, metric)
                if len(pairs) < 2:
                    continue
                a, b = pairs["x"].to_numpy(), pairs["y"].to_numpy()
                r = rank_correlation(a, b, n_boot, seed, ci)
                source = str(here.loc[here["metric"] == metric, "source"].iloc[0]) or None
                rows.append({"collection": collection, "dataset": dataset, "metric_a": BASE_METRIC,
                             "metric_b": metric, "metric_b_source": source, "n_models": len(pairs), **r,
                             "n_boot": int(n_boot),
                             "movers": movers(list(pairs["model"]), list(pairs["size"]), a, b, n_movers)})  # fmt: skip
    frame = pd.DataFrame(rows, columns=RANK_COLUMNS)
    return frame.astype({"n_models": "int64", "n_boot": "int64"})


def _paired_metrics(here: pd.DataFrame, metric: str) -> pd.DataFrame:
    """The models of one (collection, dataset) with top-1 (x) and ``metric`` (y): columns model, size, x, y."""
    xa = here[here["metric"] == BASE_METRIC][["model", "size", "value"]].rename(columns={"value": "x"})
    yb = here[here["metric"] == metric][["model", "size", "value"]].rename(columns={"value": "y"})
    return xa.merge(yb, on=["model", "size"], how="inner")
