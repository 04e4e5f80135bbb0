"""The ``group_summaries`` report: the mean over the models of a group (an architecture family, a pretraining
regime, or all of them), with a bootstrap interval over the models.

Groups (``grouping``, ``group``): ``family`` / each family, ``pretrain`` / each regime
(:mod:`mlray.analysis.taxonomy`) and ``all`` / ``all``. For each collection, dataset, metric and quantity of
``model_analysis`` (:mod:`mlray.analysis.per_model`):

- ``value``: the metric on the dataset (for ``mlpc``: the models' multi-label prediction capability);
- ``gap``: value on the reference - value on the dataset;
- ``fit_residual``: the residual from the linear fit of the dataset on the reference over all the collection's
  models (a group above the collection's line has a positive mean);
- ``effective_robustness``: the same from the probit fit (Taori et al. 2020);

the row holds ``n_models`` (models of the group with the quantity), ``mean`` and the central ``ci`` percentile
bootstrap interval of the mean: ``n_boot`` resamples of the group's models with replacement, seeded with
``seed`` (the same resample indices for every group of the same size). Gap and residual rows exist for datasets
other than the reference only. One model = one (collection, model, img_size) row of ``model_analysis``.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

GROUPINGS = ("family", "pretrain")
ALL = "all"
QUANTITIES = ("value", "gap", "fit_residual", "effective_robustness")
GROUP_COLUMNS = ["grouping", "group", "collection", "dataset", "reference", "metric", "quantity", "n_models", "mean",
                 "ci_low", "ci_high"]  # fmt: skip


class _Resamples:
    """Bootstrap resample indices per sample size, drawn once per size from a generator seeded with ``seed``."""

    def __init__(self, n_boot: int, seed: int) -> None:
        self.n_boot, self.seed = n_boot, seed
        self._by_size: dict[int, np.ndarray] = {}

    def of(self, n: int) -> np.ndarray:
        """(n_boot, n) indices into a sample of size n."""
        if n not in self._by_size:
            self._by_size[n] = np.random.default_rng(self.seed).integers(0, n, size=(self.n_boot, n))
        return self._by_size[n]


def mean_interval(values: np.ndarray, n_boot: int = 1000, seed: int = 0, ci: float = 0.95) -> tuple[float, float]:
    """The percentile bootstrap interval of the mean of ``values`` (resampled with replacement); NaN for fewer
    than two values or ``n_boot`` = 0.

    >>> mean_interval(np.array([1.0, 1.0, 1.0]))
    (1.0, 1.0)
    """
    return _interval(np.asarray(values, dtype=np.float64), _Resamples(n_boot, seed), ci)


def _interval(values: np.ndarray, resamples: _Resamples, ci: float) -> tuple[float, float]:
    n = len(values)
    if n < 2 or resamples.n_boot <= 0:
        return float("nan"), float("nan")
    means = values[resamples.of(n)].mean(axis=1)
    lo, hi = np.percentile(means, [50 * (1 - ci), 50 * (1 + ci)])
    return float(lo), float(hi)


def group_summaries_frame(
    model_analysis: pd.DataFrame, n_boot: int = 1000, seed: int = 0, ci: float = 0.95
) -> pd.DataFrame:
    """The ``group_summaries`` report (columns :data:`GROUP_COLUMNS`, module docstring); groups in order of
    decreasing size, then name."""
    resamples = _Resamples(n_boot, seed)
    rows = []
    ma = model_analysis
    keys = ["collection", "dataset", "reference", "metric"]
    for grouping in (ALL, *GROUPINGS):
        labels = pd.Series(ALL, index=ma.index) if grouping == ALL else ma[grouping].astype(str)
        for (collection, dataset, reference, metric), part in ma.groupby(keys, sort=False):
            members = {str(g): idx for g, idx in part.groupby(labels.loc[part.index], sort=False).indices.items()}
            groups = sorted(members, key=lambda g: (-len(members[g]), g))
            for quantity in QUANTITIES:
                if quantity != "value" and dataset == reference:
                    continue
                column = part[quantity].to_numpy(dtype=np.float64)
                for g in groups:
                    v = column[members[g]]
                    v = v[np.isfinite(v)]
                    if not len(v):
                        continue
                    lo, hi = _interval(v, resamples, ci)
                    rows.append((grouping, g, collection, dataset, reference, metric, quantity, len(v),
                                 float(v.mean()), lo, hi))  # fmt: skip
    return pd.DataFrame.from_records(rows, columns=GROUP_COLUMNS).astype({"n_models": "int64"})
