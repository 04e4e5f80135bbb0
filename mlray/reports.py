"""Aggregation jobs that write the Parquet reports (Ray tasks; the computing itself lives in stats / scoring).

``stats_report``: one Ray task per dataset (read its label sources, compute its statistics) and one per pair of
datasets (compare their label distributions, from the two dataset results), written as

    dataset_stats.parquet  label_count_hist.parquet  class_stats.parquet  cooccurrence.parquet
    dataset_comparison.parquet

``score_report``: stored predictions scored per (dataset, model), written as

    model_metrics.parquet  subgroup_metrics.parquet  gap_decomposition.parquet  dataset_gaps.parquet
    class_metrics.parquet

Every report is written atomically (temporary name, then rename), so a reader never sees half a file.
"""

from __future__ import annotations

import itertools
import os
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from . import cluster
from .config import RunConfig
from .datasets import load_dataset_labels
from .io import write_parquet_atomic
from .scoring.frames import SCORE_SCHEMAS
from .stats import STATS_SCHEMAS, DatasetSummary, compare, summarize

STATS_REPORTS = (
    "dataset_stats",
    "label_count_hist",
    "class_stats",
    "cooccurrence",
    "dataset_comparison",
)


def report_schemas() -> dict[str, pa.Schema]:
    """The Arrow schema of every report written here, by report name (:data:`mlray.stats.STATS_SCHEMAS`,
    :data:`mlray.scoring.frames.SCORE_SCHEMAS`, :data:`DATASET_GAPS_SCHEMA`). A column name has one type in all
    of them: class indices int16, counts (``n``, ``n_images``, ...) int64, values float64."""
    return {**STATS_SCHEMAS, **SCORE_SCHEMAS, "dataset_gaps": DATASET_GAPS_SCHEMA}


def empty_report(name: str) -> pd.DataFrame:
    """A report frame with no rows but every column of the report, typed."""
    return report_schemas()[name].empty_table().to_pandas()


def report_table(frame: pd.DataFrame | pa.Table, name: str) -> pa.Table:
    """``frame`` as the Arrow table of report ``name``, cast to its schema (:func:`report_schemas`), so a column
    has the same type in every file and an empty report keeps its typed columns. A frame with no columns at all
    is the empty report; a report name without a schema is converted as it is. Raises ``ValueError`` when the
    columns differ from the schema's."""
    schema = report_schemas().get(name)
    if schema is None:
        return frame if isinstance(frame, pa.Table) else pa.Table.from_pandas(frame, preserve_index=False)
    columns = list(frame.column_names if isinstance(frame, pa.Table) else frame.columns)
    if not columns and not len(frame):
        return schema.empty_table()
    if sorted(columns) != sorted(schema.names):
        raise ValueError(f"report {name}: columns {columns} differ from its schema {schema.names}")
    if isinstance(frame, pa.Table):
        return frame.select(schema.names).cast(schema)
    return pa.Table.from_pandas(frame, schema=schema, preserve_index=False)


def write_report(frame: pd.DataFrame | pa.Table, out_dir: str | os.PathLike, name: str) -> Path:
    """Write ``out_dir/name.parquet`` atomically (typed by :func:`report_table`) and return its path."""
    return write_parquet_atomic(report_table(frame, name), Path(out_dir) / f"{name}.parquet")


def _summarize_dataset(config: RunConfig, name: str, top_pairs: int) -> DatasetSummary:
    labels = load_dataset_labels(config, config.dataset(name))
    return summarize(name, labels.arrays(), top_pairs, labels.skipped_unknown, labels.merged_duplicates)


@dataclass
class StatsResult:
    summaries: list[DatasetSummary]
    comparison: pd.DataFrame
    paths: dict[str, Path] = field(default_factory=dict)
    seconds: float = 0.0

    def summary_json(self) -> dict:
        def clean(v):
            return None if isinstance(v, float) and v != v else v

        comp = self.comparison
        pairs = []
        for (da, db), rows in comp.groupby(["dataset_a", "dataset_b"], sort=False):
            glob = rows[rows["measure"] != "class_multi_rate_difference"]
            entry = {"dataset_a": da, "dataset_b": db}
            for r in glob.itertuples():
                entry[r.measure] = clean(r.value)
                if r.measure == "multi_fraction_difference":
                    entry["multi_fraction_difference_ci"] = [clean(r.ci_low), clean(r.ci_high)]
            pairs.append(entry)
        return {
            "datasets": [{k: clean(v) for k, v in s.stats.items()} for s in self.summaries],
            "label_count_hist": {
                s.name: dict(zip(s.hist["n_labels"].tolist(), s.hist["n_images"].tolist())) for s in self.summaries
            },
            "comparisons": pairs,
            "reports": {k: str(v) for k, v in self.paths.items()},
            "seconds": round(self.seconds, 3),
        }


def stats_report(
    config: RunConfig, out_dir: str | os.PathLike, top_pairs: int = 100, top_classes: int = 10
) -> StatsResult:
    """Statistics for every dataset and a comparison for every pair, as Ray tasks, written as Parquet reports."""
    import ray

    start = time.perf_counter()
    dataset_task = ray.remote(_summarize_dataset)
    pair_task = ray.remote(compare)
    names = [d.name for d in config.datasets]
    refs = {n: dataset_task.remote(config, n, top_pairs) for n in names}
    pair_refs = [pair_task.remote(refs[a], refs[b], top_classes) for a, b in itertools.combinations(names, 2)]
    summaries = cluster.get([refs[n] for n in names])
    comparisons = cluster.get(pair_refs)
    frames = stats_frames(summaries, comparisons)
    paths = {name: write_report(frames[name], out_dir, name) for name in STATS_REPORTS}
    return StatsResult(summaries, frames["dataset_comparison"], paths, time.perf_counter() - start)


def stats_frames(summaries: list[DatasetSummary], comparisons: list[pd.DataFrame]) -> dict[str, pd.DataFrame]:
    """The statistics reports (:data:`STATS_REPORTS`) from the datasets' summaries and the pairs' comparisons
    (a report without rows, such as the comparison of a single dataset, is an empty typed frame)."""

    def concat(name: str, parts: list[pd.DataFrame]) -> pd.DataFrame:
        return pd.concat(parts, ignore_index=True) if parts else empty_report(name)

    return {
        "dataset_stats": pd.DataFrame([s.stats for s in summaries]) if summaries else empty_report("dataset_stats"),
        "label_count_hist": concat("label_count_hist", [s.hist for s in summaries]),
        "class_stats": concat("class_stats", [s.classes for s in summaries]),
        "cooccurrence": concat("cooccurrence", [s.cooccurrence for s in summaries]),
        "dataset_comparison": concat("dataset_comparison", comparisons),
    }


# --------------------------------------------------------------------------------------------------------------
# mlray score: stored ranked predictions -> model metrics, subgroup metrics, gap decomposition

SCORE_REPORTS = ("model_metrics", "subgroup_metrics", "gap_decomposition", "dataset_gaps", "class_metrics")


@dataclass
class PredictionUnit:
    """One (dataset, model)'s predictions: partition files read inside the task, or an imported table (a ref)."""

    dataset: str
    model: str
    source: str
    files: list[str] | None = None
    table: Any = None  # ray.ObjectRef of a pyarrow Table


def collect_predictions(paths, dataset: str | None = None, model: str | None = None) -> list[PredictionUnit]:
    """What each path holds: a prediction store (root or partition folder), store Parquet files, or files to
    import (CSV/Parquet with ``image_id`` + ``top1``/``topk``; ``dataset``/``model`` columns or the flags)."""
    import ray

    from .errors import MlrayError
    from .store import import_predictions, list_partitions, read_predictions

    units: list[PredictionUnit] = []
    for raw in paths:
        path = Path(raw)
        if path.is_dir():
            parts = list_partitions(path)
            if parts:
                units += [PredictionUnit(d, m, str(path), files=[str(f) for f in files]) for d, m, files in parts]
                continue
            table = read_predictions(path)
        elif not path.exists():
            raise MlrayError(f"{path}: no such predictions file or folder")
        elif path.suffix.lower() in (".parquet", ".pq") and "topk_idx" in pq.read_schema(path).names:
            table = read_predictions(path)
        else:
            table = import_predictions(path, dataset=dataset, model=model)
        pairs = table.select(["dataset", "model"]).group_by(["dataset", "model"]).aggregate([]).to_pylist()
        for pair in pairs:
            mask = pc.and_(pc.equal(table["dataset"], pair["dataset"]), pc.equal(table["model"], pair["model"]))
            units.append(PredictionUnit(pair["dataset"], pair["model"], str(path), table=ray.put(table.filter(mask))))
    seen: dict[tuple[str, str], str] = {}
    for u in units:
        key = (u.dataset, u.model)
        if key in seen:
            raise MlrayError(
                f"{u.source}: predictions of model {u.model!r} on {u.dataset!r} also come from {seen[key]}"
            )
        seen[key] = u.source
    return units


def _prepare_labels(config: RunConfig, name: str, params):
    """A dataset's label arrays and its scoring context (label matrix + bootstrap resamples), built once."""
    from .scoring import prepare_dataset

    arrays = load_dataset_labels(config, config.dataset(name)).arrays()
    ctx = prepare_dataset(arrays, params)
    if params.n_boot:
        for _ in ctx.resample_chunks(params.n_boot, params.seed):
            pass  # built (and kept) here, shared through the object store by every model task
    return arrays, ctx


def _score_batch(prepared, units: list[PredictionUnit], params):
    """Score a batch of models on one dataset (the bootstrap multiplies the shared resamples once per batch)."""
    import ray

    from .scoring import score_models
    from .store import align, read_predictions

    labels, ctx = prepared
    aligned = []
    for u in units:
        table = ray.get(u.table) if u.table is not None else read_predictions(u.files or [])
        aligned.append(align(table, labels, u.dataset, u.model, source=u.source))
    scores = score_models(labels, [a.topk for a in aligned], params, context=ctx)
    per_model = [model_frames(u.dataset, u.model, s) for u, s in zip(units, scores)]
    out = {name: pd.concat([f[name] for f in per_model], ignore_index=True) for name in MODEL_REPORTS}
    missing = {(u.dataset, u.model): (a.n_missing, a.missing_examples) for u, a in zip(units, aligned)}
    return (out, missing), dict(zip((u.model for u in units), scores))


MODEL_REPORTS = ("model_metrics", "subgroup_metrics", "class_metrics")


def model_frames(dataset: str, model: str, score) -> dict[str, pd.DataFrame]:
    """The rows of one scored (model, dataset) in each report of :data:`MODEL_REPORTS`, key columns first."""
    from .scoring import metrics_frame, per_class_accuracy, subgroup_frame

    frames = {"model_metrics": metrics_frame(score), "subgroup_metrics": subgroup_frame(score),
              "class_metrics": per_class_accuracy(score)}  # fmt: skip
    for frame in frames.values():
        frame.insert(0, "dataset", dataset)
        frame.insert(0, "model", model)
    return frames


def pair_frame(model: str, dataset_a: str, dataset_b: str, score_a, b, params=None) -> pd.DataFrame:
    """The ``gap_decomposition`` rows of one model between datasets A and B (``b``: the model's score on B, or
    B's label arrays when B has no predictions of it), key columns first."""
    from .scoring import decomposition_frame

    frame = decomposition_frame(score_a, b, params=params)
    frame.insert(0, "dataset_b", dataset_b)
    frame.insert(0, "dataset_a", dataset_a)
    frame.insert(0, "model", model)
    return frame


def _decompose_pair(model: str, dataset_a: str, dataset_b: str, scores_a: dict, b, params):
    score_b = b[model] if isinstance(b, dict) else b[0]  # a model's scores on B, or B's labels only
    return pair_frame(model, dataset_a, dataset_b, scores_a[model], score_b, params)


@dataclass
class ScoreResult:
    frames: dict[str, pd.DataFrame]
    missing: dict[tuple[str, str], tuple[int, list[str]]]
    paths: dict[str, Path] = field(default_factory=dict)
    seconds: float = 0.0


def score_report(
    config: RunConfig,
    prediction_paths,
    out_dir: str | os.PathLike,
    params=None,
    dataset: str | None = None,
    model: str | None = None,
    models_per_task: int = 16,
    ship_predictions: bool | None = None,
    only_config_datasets: bool = False,
) -> ScoreResult:
    """Score stored predictions against the config's datasets and write the score reports.

    Ray tasks: one per dataset (labels + scoring context), one per (dataset, batch of up to ``models_per_task``
    models; 1 = one task per (model, dataset)), and one per (model, ordered pair of datasets) for the
    decomposition. A pair where only A has the model's predictions still reports ``value_a`` and
    ``a_standardized_to_b`` (B's labels give its label-count mix).

    Predictions for a dataset the config does not have are an error, unless ``only_config_datasets`` (what
    ``evaluate`` uses: its output store may hold the datasets of earlier runs), which leaves them out.

    Prediction-store files are read inside the tasks on a single-node cluster; on a multi-node cluster
    (``ship_predictions=None`` = decide by the number of alive nodes) the driver reads them and ships the tables
    through the object store, since the tasks may run on nodes that cannot see the driver's disk.
    """
    import ray

    from .errors import MlrayError
    from .scoring import MetricParams

    params = params or MetricParams()
    start = time.perf_counter()
    units = collect_predictions(prediction_paths, dataset, model)
    if only_config_datasets:  # a shared store may hold other datasets (earlier runs): score the config's only
        wanted = {d.name for d in config.datasets}
        units = [u for u in units if u.dataset in wanted]
    if ship_predictions is None:  # store files live on this node; other nodes' tasks cannot read them
        ship_predictions = sum(1 for n in ray.nodes() if n.get("Alive")) > 1
    if ship_predictions:
        from .store import read_predictions

        for u in units:
            if u.table is None:
                u.table, u.files = ray.put(read_predictions(u.files or [])), None
    names = [d.name for d in config.datasets]
    for u in units:
        if u.dataset not in names:
            raise MlrayError(
                f"{u.source}: predictions for dataset {u.dataset!r}, which the config does not have "
                f"(have: {', '.join(names)})"
            )
    if not units:
        raise MlrayError("no predictions found in " + ", ".join(map(str, prediction_paths)))
    prepare = ray.remote(_prepare_labels)
    batch_task = ray.remote(num_returns=2)(_score_batch)
    pair_task = ray.remote(_decompose_pair)
    prepared = {n: prepare.remote(config, n, params) for n in names}
    frame_refs, score_refs = [], {}  # score_refs[(dataset, model)] -> ref of that batch's scores
    for n in names:
        mine = [u for u in units if u.dataset == n]
        for i in range(0, len(mine), max(1, models_per_task)):
            batch = mine[i : i + max(1, models_per_task)]
            refs: Any = batch_task.remote(prepared[n], batch, params)  # num_returns=2: Ray's stub says one ref
            frames_ref, scores_ref = refs
            frame_refs.append(frames_ref)
            for u in batch:
                score_refs[(n, u.model)] = scores_ref
    pair_refs = []
    for a, b in itertools.permutations(names, 2):
        for m in sorted({u.model for u in units if u.dataset == a}):
            other = score_refs.get((b, m), prepared[b])
            pair_refs.append(pair_task.remote(m, a, b, score_refs[(a, m)], other, params))
    results = cluster.get(frame_refs)
    decompositions = cluster.get(pair_refs)
    frames = {name: pd.concat([r[0][name] for r in results], ignore_index=True) for name in MODEL_REPORTS}
    gaps = pd.concat(decompositions, ignore_index=True) if decompositions else empty_report("gap_decomposition")
    frames["gap_decomposition"] = gaps
    frames["dataset_gaps"] = dataset_gaps_frame(frames["model_metrics"], frames["gap_decomposition"], names)
    missing = {key: v for r in results for key, v in r[1].items()}
    paths = {name: write_report(frames[name], out_dir, name) for name in SCORE_REPORTS}
    return ScoreResult(frames, missing, paths, time.perf_counter() - start)


# --------------------------------------------------------------------------------------------------------------
# dataset_gaps: the mean gap A -> B over the models, per pair of datasets and metric

MIN_GAP_FOR_SHARE = 0.01  # composition / gap is reported only for gaps of at least 1 point (unstable near 0)
DATASET_GAPS_COLUMNS = ["dataset_a", "dataset_b", "metric", "n_models", "mean_gap", "n_decomposed",
                        "mean_decomposed_gap", "mean_composition", "mean_within", "share_explained"]  # fmt: skip
DATASET_GAPS_SCHEMA = pa.schema(
    [(c, pa.string()) for c in DATASET_GAPS_COLUMNS[:3]]
    + [(c, pa.int64() if c.startswith("n_") else pa.float64()) for c in DATASET_GAPS_COLUMNS[3:]]
)


def dataset_gaps_frame(
    model_metrics: pd.DataFrame, gap_decomposition: pd.DataFrame, datasets: Iterable[str]
) -> pd.DataFrame:
    """The mean gap A -> B over the models, one row per ordered pair (A, B) of ``datasets`` and metric (the
    ``dataset_gaps`` report; columns :data:`DATASET_GAPS_COLUMNS`, values fractions like the inputs).

    From ``model_metrics``: ``n_models``, the models with the metric available (and a value) on both A and B, and
    ``mean_gap``, the mean over them of value(A) - value(B). From ``gap_decomposition``: ``n_decomposed``, the
    models with a gap for (A, B, metric), the means over them of ``gap``, ``composition`` and ``within``
    (``mean_decomposed_gap``, ``mean_composition``, ``mean_within``), and ``share_explained`` = mean_composition /
    mean_decomposed_gap, the share of the mean gap that the label-count mix explains (NaN when
    |mean_decomposed_gap| < :data:`MIN_GAP_FOR_SHARE`). The decomposition takes top1 / top5 over labelled images
    with an original label, so there ``mean_decomposed_gap`` may differ from ``mean_gap``. Metrics follow their
    order in ``model_metrics``; a row with no model in either report is left out.
    """
    nan = float("nan")
    mm = model_metrics
    if "available" in mm.columns:
        mm = mm[mm["available"].fillna(False).astype(bool)]
    mm = mm[mm["value"].notna()].drop_duplicates(["model", "dataset", "metric"])
    values = {key: g.set_index("model")["value"] for key, g in mm.groupby(["dataset", "metric"], sort=False)}
    gd = gap_decomposition
    decomposed = {}
    if len(gd):
        gd = gd[gd["gap"].notna()]
        decomposed = {key: g for key, g in gd.groupby(["dataset_a", "dataset_b", "metric"], sort=False)}
    metrics = list(pd.unique(model_metrics["metric"])) if len(model_metrics) else []
    metrics += [m for _, _, m in decomposed if m not in metrics]
    rows = []
    for a, b in itertools.permutations(datasets, 2):
        for metric in metrics:
            va, vb = values.get((a, metric)), values.get((b, metric))
            both = va.index.intersection(vb.index) if va is not None and vb is not None else pd.Index([])
            dec = decomposed.get((a, b, metric))
            if not len(both) and dec is None:
                continue
            mean_gap = nan
            if va is not None and vb is not None and len(both):
                mean_gap = float((va[both] - vb[both]).mean())
            gap, comp, within = (
                (float(dec["gap"].mean()), float(dec["composition"].mean()), float(dec["within"].mean()))
                if dec is not None
                else (nan, nan, nan)
            )
            share = comp / gap if abs(gap) >= MIN_GAP_FOR_SHARE else nan
            rows.append((a, b, metric, len(both), mean_gap, 0 if dec is None else len(dec), gap, comp, within, share))
    frame = pd.DataFrame.from_records(rows, columns=DATASET_GAPS_COLUMNS)
    return frame.astype({c: "int64" if c.startswith("n_") else "float64" for c in DATASET_GAPS_COLUMNS[3:]})
