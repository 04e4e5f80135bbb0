"""The one long table every analysis reads: one row per (collection, model, img_size, dataset, metric) value.

=================  =========================================================================================
column             meaning
=================  =========================================================================================
``collection``     ``mlray`` (:data:`OWN`: this report's own ``model_metrics``), or the published collection
                   of ``external_results`` (``timm``, ``imagenet-testbed``)
``model``          the model name as the report spells it
``size``           the evaluation resolution (timm's ``img_size``); -1 where the source has none (the key
                   column; written as a null ``img_size``)
``dataset``        the dataset name
``metric``         a ``model_metrics`` metric, ``mlpc`` (:func:`mlpc_frame`), or ``top1`` / ``top5`` for
                   published results
``value``          a fraction in 0..1
``n``              images the value is taken over (-1 where unknown: published results)
``param_count``    millions of parameters where known (published timm rows), else NaN
=================  =========================================================================================

Only available values enter (``available`` true, value not NaN). A model is keyed by (collection, model, size):
timm publishes some models at two resolutions, each its own point.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

import numpy as np
import pandas as pd

OWN = "mlray"
"""The collection name of this report's own models (rows of ``model_metrics`` / ``subgroup_metrics``)."""

MLPC = "mlpc"
"""The metric name of the multi-label prediction capability (:func:`mlpc_frame`)."""

MLPC_SOURCE = "vtopk_all"
"""The subgroup metric MLPC is made of: strict variable top-k, [L_i subset of T_{k_i}(i)]."""

POINT_COLUMNS = ["collection", "model", "size", "dataset", "metric", "value", "n", "param_count"]
KEY = ["collection", "model", "size"]
"""The columns that name one model (a published model at two resolutions is two models)."""

PUBLISHED_ORDER = (
    "imagenet-val",
    "imagenet-val-real",
    "imagenetv2-matched-frequency",
    "imagenetv2-threshold0.7",
    "imagenetv2-top-images",
    "imagenet-r-clean",
    "imagenet-r",
    "imagenet-a-clean",
    "imagenet-a",
    "imagenet-sketch",
)
"""The order of the published datasets (others follow alphabetically): the first present is the reference."""

REFERENCES = {"imagenet-r": "imagenet-r-clean", "imagenet-a": "imagenet-a-clean"}
"""A dataset's reference when it is not its collection's first dataset: ImageNet-R and ImageNet-A are compared
with ImageNet val restricted to their 200 classes (timm's ``-clean`` files), as timm's own ``top1_diff`` is."""


def group_size(label: object) -> int | None:
    """The number of valid labels a subgroup label stands for (``"3"`` -> 3, ``"5+"`` -> 5); None if none.

    >>> group_size("2"), group_size("5+"), group_size("all")
    (2, 5, None)
    """
    m = re.match(r"\s*(\d+)", str(label))
    return int(m.group(1)) if m else None


def mlpc_frame(subgroup_metrics: pd.DataFrame) -> pd.DataFrame:
    """Each model's multi-label prediction capability (MLPC) per dataset: the share of its multi-label images
    (k_i >= 2 valid labels) whose valid labels it ranks all within its top k_i, i.e. strict variable top-k
    restricted to those images:

        MLPC = sum_{g >= 2} n_g * v_g / sum_{g >= 2} n_g

    over the ``subgroup_metrics`` rows of ``vtopk_all`` for the groups of two or more labels (``"2"``, ...,
    ``"5+"``) that are available with ``n_g > 0`` images. Columns ``model, dataset, value, n`` (n = the multi-label
    images it is taken over); a (model, dataset) without such a group has no row.
    """
    columns = ["model", "dataset", "value", "n"]
    if subgroup_metrics is None or not len(subgroup_metrics):
        return pd.DataFrame(columns=columns).astype({"value": "float64", "n": "int64"})
    sg = subgroup_metrics[subgroup_metrics["metric"] == MLPC_SOURCE]
    sizes = sg["group"].map(group_size)
    ok = sizes.fillna(0).astype(int).ge(2) & sg["value"].notna() & sg["n"].fillna(0).gt(0)
    if "available" in sg.columns:
        ok &= sg["available"].fillna(False).astype(bool)
    sg = sg[ok].assign(weighted=lambda f: f["value"].astype(float) * f["n"].astype(float))
    agg = sg.groupby(["model", "dataset"], sort=False).agg(weighted=("weighted", "sum"), n=("n", "sum")).reset_index()
    agg["value"] = agg["weighted"] / agg["n"]
    return agg[columns].astype({"value": "float64", "n": "int64"})


def own_points(model_metrics: pd.DataFrame | None, subgroup_metrics: pd.DataFrame | None = None) -> pd.DataFrame:
    """The points of this report's models: every available ``model_metrics`` value, plus ``mlpc`` rows from
    ``subgroup_metrics`` (:func:`mlpc_frame`). Collection :data:`OWN`, size -1, no parameter count."""
    parts = []
    if model_metrics is not None and len(model_metrics):
        mm = model_metrics
        ok = mm["value"].notna()
        if "available" in mm.columns:
            ok &= mm["available"].fillna(False).astype(bool)
        mm = mm[ok].drop_duplicates(["model", "dataset", "metric"])
        n = mm["n"] if "n" in mm.columns else pd.Series(-1, index=mm.index)
        parts.append(pd.DataFrame({"model": mm["model"], "dataset": mm["dataset"], "metric": mm["metric"],
                                   "value": mm["value"], "n": n}))  # fmt: skip
    if subgroup_metrics is not None and len(subgroup_metrics):
        parts.append(mlpc_frame(subgroup_metrics).assign(metric=MLPC))
    if not parts:
        return empty_points()
    df = pd.concat(parts, ignore_index=True)
    df = df.assign(collection=OWN, size=-1, param_count=np.nan)
    return typed(df[POINT_COLUMNS])


def published_points(external_results: pd.DataFrame | None) -> pd.DataFrame:
    """The points of ``external_results`` (:mod:`mlray.external`): one per (collection, model, img_size, dataset,
    metric), with timm's parameter count; n = -1 (the sources publish no image counts)."""
    if external_results is None or not len(external_results):
        return empty_points()
    ext = external_results[external_results["value"].notna()]
    size = ext["img_size"].astype("Int64").fillna(-1).astype("int64")
    params = ext["param_count"] if "param_count" in ext.columns else pd.Series(np.nan, index=ext.index)
    df = pd.DataFrame({"collection": ext["collection"].astype(str), "model": ext["model"].astype(str), "size": size,
                       "dataset": ext["dataset"].astype(str), "metric": ext["metric"].astype(str),
                       "value": ext["value"].astype(float), "n": -1, "param_count": params.astype(float)})  # fmt: skip
    return typed(df.drop_duplicates(["collection", "model", "size", "dataset", "metric"]))


def empty_points() -> pd.DataFrame:
    """A points table with no rows (typed columns)."""
    return typed(pd.DataFrame({c: [] for c in POINT_COLUMNS}))


def typed(df: pd.DataFrame) -> pd.DataFrame:
    """The points table with its column types (strings as ``object``, ``size``/``n`` int64, values float64)."""
    out = df[POINT_COLUMNS].astype({"size": "int64", "n": "int64", "value": "float64", "param_count": "float64"})
    for c in ("collection", "model", "dataset", "metric"):
        out[c] = out[c].astype(str)
    return out.reset_index(drop=True)


def dataset_order(points: pd.DataFrame, collection: str, first: Iterable[str] = ()) -> list[str]:
    """The datasets of one collection in analysis order: those of ``first`` that it has (for this report's models:
    the order of ``dataset_stats``, the run config's; for published results :data:`PUBLISHED_ORDER`), then the
    others in order of first appearance (published: alphabetically)."""
    have = list(pd.unique(points.loc[points["collection"] == collection, "dataset"]))
    order = [d for d in first if d in have]
    rest = [d for d in have if d not in order]
    return order + (sorted(rest) if collection != OWN else rest)


def reference_of(dataset: str, order: list[str]) -> str:
    """The dataset ``dataset`` is compared with: :data:`REFERENCES` where that is in ``order``, else the first of
    ``order`` (the collection's reference, e.g. ImageNet val)."""
    ref = REFERENCES.get(dataset)
    return ref if ref is not None and ref in order else order[0]


def paired(points: pd.DataFrame, collection: str, a: str, b: str, metric: str) -> pd.DataFrame:
    """The models of ``collection`` with ``metric`` on both ``a`` and ``b``: columns ``model, size, x, y``
    (x = value on a, y = value on b), in the order of the points table."""
    sel = points[(points["collection"] == collection) & (points["metric"] == metric)]
    xa = sel[sel["dataset"] == a][["model", "size", "value"]].rename(columns={"value": "x"})
    yb = sel[sel["dataset"] == b][["model", "size", "value"]].rename(columns={"value": "y"})
    return xa.merge(yb, on=["model", "size"], how="inner")
