"""Reading a report folder for the dashboard: which reports it holds (:data:`REPORT_COLUMNS`), where they are (the
folder itself, or its ``reports/`` subfolder, where ``mlray evaluate`` writes them), and the order of the datasets
and models every chart and table follows."""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from ..errors import MlrayError, first_line

REPORTS_SUBFOLDER = "reports"  # mlray evaluate OUT writes its reports to OUT/reports

# Report name -> the columns the dashboard needs from it (extra columns are fine).
REPORT_COLUMNS: dict[str, tuple[str, ...]] = {
    "dataset_stats": ("dataset", "n_images", "n_labelled", "n_multi", "multi_fraction", "mean_labels"),
    "label_count_hist": ("dataset", "n_labels", "n_images", "fraction"),
    "dataset_comparison": ("dataset_a", "dataset_b", "measure", "value", "ci_low", "ci_high"),
    "model_metrics": ("model", "dataset", "metric", "value", "ci_low", "ci_high", "n", "available"),
    "subgroup_metrics": ("model", "dataset", "group", "metric", "value", "n"),
    "gap_decomposition": (
        "model",
        "dataset_a",
        "dataset_b",
        "metric",
        "value_a",
        "value_b",
        "gap",
        "composition",
        "within",
    ),  # fmt: skip
    "dataset_gaps": (
        "dataset_a",
        "dataset_b",
        "metric",
        "n_models",
        "mean_gap",
        "n_decomposed",
        "mean_decomposed_gap",
        "mean_composition",
        "share_explained",
    ),  # fmt: skip
    "external_results": ("model", "img_size", "dataset", "metric", "value", "source", "collection"),
    "published_comparison": ("model", "dataset", "metric", "img_size", "value", "published", "difference"),
    "external_gap_summary": ("collection", "count", "mean", "median", "std", "min", "p10", "p90", "max"),
    "fits": (
        "dataset_a",
        "dataset_b",
        "metric",
        "collection",
        "scale",
        "n_models",
        "slope",
        "intercept",
        "r2",
        "residual_std",
        "x_min",
        "x_max",
    ),
    "rank_changes": (
        "collection",
        "dataset",
        "metric_a",
        "metric_b",
        "n_models",
        "kendall_tau",
        "kendall_ci_low",
        "kendall_ci_high",
        "spearman_rho",
        "spearman_ci_low",
        "spearman_ci_high",
        "movers",
    ),
    "model_analysis": (
        "collection",
        "model",
        "img_size",
        "family",
        "pretrain",
        "dataset",
        "metric",
        "value",
        "reference",
        "value_reference",
        "gap",
        "fit_residual",
        "effective_robustness",
        "rank",
    ),
    "group_summaries": (
        "grouping",
        "group",
        "collection",
        "dataset",
        "reference",
        "metric",
        "quantity",
        "n_models",
        "mean",
        "ci_low",
        "ci_high",
    ),
    "composition_effect": (
        "dataset_a",
        "dataset_b",
        "model",
        "metric",
        "quantity",
        "group",
        "value",
        "ci_low",
        "ci_high",
        "n",
    ),
    "reliability": ("model", "dataset", "truth", "bin", "bin_low", "bin_high", "n", "confidence", "accuracy"),
    "gallery": (
        "model",
        "dataset",
        "kind",
        "rank",
        "image_id",
        "original",
        "original_name",
        "valid",
        "valid_names",
        "top",
        "top_names",
        "top_prob",
        "confidence",
    ),
    "thumbnails": ("dataset", "image_id", "jpeg", "width", "height", "note"),
}


@dataclass
class Reports:
    """The reports found in one folder, with the dataset and model order the page uses."""

    directory: Path  # the folder the reports were read from (``DIR`` or ``DIR/reports``)
    frames: dict[str, pd.DataFrame]  # report name -> its table (possibly with no rows)
    files: dict[str, Path]
    datasets: list[str] = field(default_factory=list)
    models: list[str] = field(default_factory=list)

    def get(self, name: str) -> pd.DataFrame | None:
        """The report's rows, or None when the report is absent or has no rows."""
        frame = self.frames.get(name)
        return frame if frame is not None and len(frame) else None


def missing(report: str, what: str = "") -> str:
    """The note that stands in for a chart or table whose report is absent: ``"{report}.parquet is not in this
    report directory ({what})"``."""
    return f"{report}.parquet is not in this report directory" + (f" ({what})" if what else "")


def _has_reports(directory: Path) -> bool:
    return any((directory / f"{name}.parquet").is_file() for name in REPORT_COLUMNS)


def find_reports_dir(path: str | os.PathLike) -> Path:
    """The folder that holds the reports: ``path`` itself when it has any of them, else ``path/reports`` (the
    layout of an ``mlray evaluate`` output folder) when that has any.

    Errors (one line): ``path`` is not a folder; neither folder holds a report (the message names both).
    """
    directory = Path(path)
    if not directory.is_dir():
        raise MlrayError(f"{directory}: no such report directory")
    if _has_reports(directory):
        return directory
    sub = directory / REPORTS_SUBFOLDER
    if sub.is_dir() and _has_reports(sub):
        return sub
    expected = ", ".join(f"{n}.parquet" for n in REPORT_COLUMNS)
    raise MlrayError(
        f"{directory}: no mlray reports in this folder or in {sub} (expected any of {expected}; "
        "write them with mlray stats / score / evaluate / import-results)"
    )


def load_reports(reports_dir: str | os.PathLike) -> Reports:
    """Read every known report Parquet file present in ``reports_dir`` (or in ``reports_dir/reports``, see
    :func:`find_reports_dir`).

    Errors (one line each): the folder does not exist; neither it nor its ``reports/`` subfolder holds any of the
    reports; a report is not a readable Parquet file or, having rows, lacks a column the dashboard needs.
    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    directory = find_reports_dir(reports_dir)
    frames: dict[str, pd.DataFrame] = {}
    files: dict[str, Path] = {}
    for name, needed in REPORT_COLUMNS.items():
        path = directory / f"{name}.parquet"
        if not path.is_file():
            continue
        try:
            frame = pq.read_table(path).to_pandas()
        except (pa.ArrowInvalid, OSError) as exc:
            raise MlrayError(f"{path}: not a readable Parquet file ({first_line(exc)})") from None
        absent = [c for c in needed if c not in frame.columns]
        if len(frame) and absent:
            raise MlrayError(f"{path}: not an mlray {name} report: missing column(s) {', '.join(absent)}")
        frames[name], files[name] = frame, path
    reports = Reports(directory, frames, files)
    reports.datasets = _dataset_order(reports)
    reports.models = _model_order(reports)
    return reports


def _dataset_order(r: Reports) -> list[str]:
    """Datasets in report order: ``dataset_stats`` (the run config's order), then first appearance elsewhere."""
    order: list[str] = []

    def add(values: Iterable[object]) -> None:
        for v in values:
            if isinstance(v, str) and v not in order:
                order.append(v)

    for name in ("dataset_stats", "label_count_hist", "model_metrics", "subgroup_metrics"):
        frame = r.get(name)
        if frame is not None:
            add(frame["dataset"])
    gd = r.get("gap_decomposition")
    if gd is not None:
        add(pd.unique(pd.concat([gd["dataset_a"], gd["dataset_b"]], ignore_index=True)))
    for name in ("reliability", "gallery"):
        frame = r.get(name)
        if frame is not None:
            add(frame["dataset"])
    return order


def _model_order(r: Reports) -> list[str]:
    """Models in order of first appearance in the model, subgroup and gap reports."""
    order: list[str] = []
    for name in ("model_metrics", "subgroup_metrics", "gap_decomposition"):
        frame = r.get(name)
        if frame is not None:
            order += [m for m in pd.unique(frame["model"]) if m not in order]
    return order
