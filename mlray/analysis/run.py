"""``mlray analyze DIR``: read a report folder, compute the population analyses, write them as Parquet reports.

Reads (whichever the folder holds; ``DIR`` itself or ``DIR/reports``, where ``mlray evaluate`` writes them):
``model_metrics`` and ``subgroup_metrics`` (this report's models, collection ``mlray``), ``dataset_stats`` (the
dataset order) and ``external_results`` (published results, one collection each). Writes, next to them unless
told otherwise, atomically and typed (:data:`~mlray.analysis.schema.ANALYSIS_SCHEMAS`):

=========================  =====================================================================================
``fits.parquet``           linear and probit fits of B on A for each pair of datasets, metric and collection
                           (:mod:`mlray.analysis.fits`)
``rank_changes.parquet``   Kendall tau / Spearman rho between the rankings under top-1 and each multi-label
                           metric, with bootstrap intervals and the models that move most
                           (:mod:`mlray.analysis.ranks`)
``model_analysis.parquet`` per model and value: family, pretraining regime, input size, parameters, gap,
                           residuals (effective robustness), rank, MLPC (:mod:`mlray.analysis.per_model`)
``group_summaries.parquet`` means by family, by pretraining regime and over all models, with bootstrap
                           intervals (:mod:`mlray.analysis.groups`)
=========================  =====================================================================================

It runs in this process (no Ray): a few thousand points take seconds.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from ..errors import MlrayError, first_line
from ..io import write_parquet_atomic
from .fits import fits_frame
from .groups import group_summaries_frame
from .per_model import model_analysis_frame
from .points import OWN, PUBLISHED_ORDER, dataset_order, own_points, published_points
from .ranks import rank_changes_frame
from .schema import ANALYSIS_SCHEMAS

INPUTS = ("model_metrics", "subgroup_metrics", "dataset_stats", "external_results")
"""The reports the analysis reads (the first, second and fourth are what it analyses)."""
ANALYSIS_REPORTS = tuple(ANALYSIS_SCHEMAS)
REPORTS_SUBFOLDER = "reports"


@dataclass
class AnalysisResult:
    """What :func:`analyze` wrote: each report's frame and path, the folder it read, the seconds it took."""

    frames: dict[str, pd.DataFrame]
    paths: dict[str, Path] = field(default_factory=dict)
    source: Path | None = None
    seconds: float = 0.0


def find_inputs(path: str | os.PathLike) -> Path:
    """The folder holding the reports to analyse: ``path`` when it holds ``model_metrics.parquet`` or
    ``external_results.parquet``, else ``path/reports`` when that does. A one-line
    :class:`~mlray.errors.MlrayError` otherwise (naming both folders)."""
    directory = Path(path)
    if not directory.is_dir():
        raise MlrayError(f"{directory}: no such report directory")
    for candidate in (directory, directory / REPORTS_SUBFOLDER):
        if any((candidate / f"{name}.parquet").is_file() for name in ("model_metrics", "external_results")):
            return candidate
    raise MlrayError(
        f"{directory}: nothing to analyse in this folder or in {directory / REPORTS_SUBFOLDER} (expected "
        "model_metrics.parquet from mlray score / evaluate or external_results.parquet from mlray import-results)"
    )


def read_inputs(directory: Path) -> dict[str, pd.DataFrame]:
    """The reports of :data:`INPUTS` present in ``directory`` (one line naming the file when one is unreadable)."""
    frames = {}
    for name in INPUTS:
        path = directory / f"{name}.parquet"
        if path.is_file():
            try:
                frames[name] = pq.read_table(path).to_pandas()
            except (pa.ArrowInvalid, OSError) as exc:
                raise MlrayError(f"{path}: not a readable Parquet file ({first_line(exc)})") from None
    return frames


def analysis_frames(inputs: dict[str, pd.DataFrame], n_boot: int = 1000, seed: int = 0) -> dict[str, pd.DataFrame]:
    """The four analysis reports from the input reports (:data:`INPUTS`; any may be missing)."""
    own = own_points(inputs.get("model_metrics"), inputs.get("subgroup_metrics"))
    published = published_points(inputs.get("external_results"))
    points = pd.concat([own, published], ignore_index=True)
    stats = inputs.get("dataset_stats")
    first = list(stats["dataset"]) if stats is not None and len(stats) else []
    orders = {}
    if len(own):
        orders[OWN] = dataset_order(points, OWN, first)
    for collection in sorted(pd.unique(published["collection"])):
        orders[collection] = dataset_order(points, collection, PUBLISHED_ORDER)
    fits, found = fits_frame(points, orders)
    per_model = model_analysis_frame(points, orders, found)
    return {
        "fits": fits,
        "rank_changes": rank_changes_frame(points, orders, n_boot=n_boot, seed=seed),
        "model_analysis": per_model,
        "group_summaries": group_summaries_frame(per_model, n_boot=n_boot, seed=seed),
    }


def analysis_table(frame: pd.DataFrame, name: str) -> pa.Table:
    """An analysis report as the Arrow table it is written as (:data:`ANALYSIS_SCHEMAS`; typed when empty)."""
    schema = ANALYSIS_SCHEMAS[name]
    if not len(frame):
        return schema.empty_table()
    return pa.Table.from_pandas(frame[schema.names], schema=schema, preserve_index=False)


def analyze(
    reports_dir: str | os.PathLike, out_dir: str | os.PathLike | None = None, n_boot: int = 1000, seed: int = 0
) -> AnalysisResult:
    """Read the reports in ``reports_dir`` (:func:`find_inputs`), compute the analyses and write them to
    ``out_dir`` (default: the folder the reports were read from). ``n_boot`` resamples (0 = no intervals) seeded
    with ``seed`` for every bootstrap interval."""
    if n_boot < 0 or seed < 0:
        raise MlrayError(f"analyze: n_boot and seed must be >= 0, got {n_boot} and {seed}")
    start = time.perf_counter()
    source = find_inputs(reports_dir)
    frames = analysis_frames(read_inputs(source), n_boot=n_boot, seed=seed)
    out = Path(out_dir) if out_dir is not None else source
    paths = {name: write_parquet_atomic(analysis_table(frames[name], name), out / f"{name}.parquet")
             for name in ANALYSIS_REPORTS}  # fmt: skip
    return AnalysisResult(frames, paths, source, time.perf_counter() - start)
