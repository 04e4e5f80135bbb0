"""The ``model_analysis`` report: per model and per (dataset, metric) value, what the model is and where it
stands against the population.

One row per (collection, model, img_size, dataset, metric) point (:mod:`mlray.analysis.points`), collections
and datasets in analysis order:

=========================  ===================================================================================
``family``                 the architecture family (:func:`mlray.analysis.taxonomy.family`)
``pretrain``               the pretraining regime, and ``pretrain_evidence`` what decided it
                           (:func:`mlray.analysis.taxonomy.pretraining`)
``input_size``             the evaluation resolution: ``img_size`` for published rows; for this report's models
                           the resolution timm publishes for the same name (when it publishes one), else the
                           one the name states (``..._384``), else null
``param_count``            millions of parameters: timm's published count for the name, else NaN
``value``, ``n``           the value (fraction) and the images it is taken over (null for published results)
``reference``              the dataset it is compared with (:func:`mlray.analysis.points.reference_of`: the
                           collection's first dataset; ImageNet-R/-A: their ``-clean`` val subset)
``value_reference``        the model's value of the same metric on ``reference``
``gap``                    value_reference - value (a drop is positive), null on the reference itself
``fit_residual``           value - (slope * value_reference + intercept) of the linear fit of this dataset on
                           the reference over the collection's models (:mod:`mlray.analysis.fits`)
``effective_robustness``   value - Phi(intercept + slope * Phi^-1(value_reference)) of the probit fit: the
                           effective robustness of Taori et al. 2020 (null where either value is 0 or 1)
``rank``                   the model's rank among the collection's models on (dataset, metric), 1 = best
=========================  ===================================================================================

MLPC (the share of multi-label images whose valid labels a model ranks all within its top k_i) is the metric
``mlpc`` of this report's models, so it has its gap, residuals and rank like every other metric.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from .fits import Fit, predict
from .points import OWN, reference_of
from .ranks import ranks
from .taxonomy import family, input_size_from_name, pretraining

MODEL_COLUMNS = ["collection", "model", "img_size", "family", "pretrain", "pretrain_evidence", "input_size",
                 "param_count", "dataset", "metric", "value", "n", "reference", "value_reference", "gap",
                 "fit_residual", "effective_robustness", "rank"]  # fmt: skip


def _published_sizes(points: pd.DataFrame) -> tuple[dict[str, int], dict[str, float]]:
    """Model name -> the one resolution published for it (names published at two are left out), and name ->
    its published parameter count."""
    pub = points[(points["collection"] != OWN) & (points["size"] >= 0)]
    sizes = pub.groupby("model")["size"].unique()
    one = {str(m): int(s[0]) for m, s in sizes.items() if len(s) == 1}
    counts = pub[pub["param_count"].notna()].drop_duplicates("model").set_index("model")["param_count"]
    return one, {str(k): float(v) for k, v in counts.items()}


def model_analysis_frame(points: pd.DataFrame, orders: dict[str, list[str]], fits: dict[tuple, Fit]) -> pd.DataFrame:
    """The ``model_analysis`` report (columns :data:`MODEL_COLUMNS`, module docstring) from the points table,
    the dataset order of each collection and the fits of :func:`mlray.analysis.fits.fits_frame`."""
    if not len(points):
        return _typed(pd.DataFrame(columns=MODEL_COLUMNS))
    df = points[points["collection"].isin(list(orders))].copy()
    names = pd.unique(df["model"])
    fam = {m: family(m) for m in names}
    pre = {m: pretraining(m) for m in names}
    pub_size, pub_params = _published_sizes(points)
    df["family"] = df["model"].map(fam)
    df["pretrain"] = df["model"].map(lambda m: pre[m].regime)
    df["pretrain_evidence"] = df["model"].map(lambda m: pre[m].evidence)
    own = df["collection"] == OWN
    named = df["model"].map(lambda m: pub_size.get(m, input_size_from_name(m)))
    df["input_size"] = np.where(own, named, df["size"]).astype(float)
    df.loc[df["input_size"] < 0, "input_size"] = np.nan
    df["param_count"] = np.where(own & df["param_count"].isna(), df["model"].map(pub_params), df["param_count"])
    df["reference"] = [reference_of(d, orders[c]) for c, d in zip(df["collection"], df["dataset"])]
    ref = df[["collection", "model", "size", "dataset", "metric", "value"]].rename(
        columns={"dataset": "reference", "value": "value_reference"}
    )
    df = df.merge(ref, on=["collection", "model", "size", "reference", "metric"], how="left")
    on_ref = df["dataset"] == df["reference"]
    df["gap"] = np.where(on_ref, np.nan, df["value_reference"] - df["value"])
    df["fit_residual"] = np.nan
    df["effective_robustness"] = np.nan
    for (collection, reference, dataset, metric), idx in (
        df[~on_ref].groupby(["collection", "reference", "dataset", "metric"], sort=False).groups.items()
    ):
        rows = df.loc[idx]
        for scale, column in (("linear", "fit_residual"), ("probit", "effective_robustness")):
            fit = fits.get((collection, reference, dataset, metric, scale))
            if fit is not None:
                df.loc[idx, column] = rows["value"].to_numpy() - predict(fit, rows["value_reference"].to_numpy())
    df["rank"] = 0
    for _, idx in df.groupby(["collection", "dataset", "metric"], sort=False).groups.items():
        df.loc[idx, "rank"] = ranks(df.loc[idx, "value"].to_numpy())
    df["img_size"] = df["size"].where(df["size"] >= 0)
    df["n"] = df["n"].where(df["n"] >= 0)
    position = {(c, d): (i, j) for i, (c, order) in enumerate(orders.items()) for j, d in enumerate(order)}
    df["_order"] = [position[(c, d)] for c, d in zip(df["collection"], df["dataset"])]
    return _typed(df.sort_values("_order", kind="stable")[MODEL_COLUMNS])


def _typed(df: pd.DataFrame) -> pd.DataFrame:
    """``model_analysis`` with nullable integer columns (``img_size``, ``input_size``, ``n``) and int64 ranks."""
    return df.astype(
        {
            "img_size": "Int32",
            "input_size": "Int32",
            "n": "Int64",
            "rank": "int64",
            "param_count": "float64",
            "value": "float64",
            "value_reference": "float64",
            "gap": "float64",
            "fit_residual": "float64",
            "effective_robustness": "float64",
        }  # fmt: skip
    ).reset_index(drop=True)
