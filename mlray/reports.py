"""Aggregation jobs that write the Parquet reports (Ray tasks; the computing itself lives in stats / metrics).

``stats_report``: one Ray task per dataset (read its label sources, compute its statistics) and one per pair of
datasets (compare their label distributions, from the two dataset results), written as

    dataset_stats.parquet  label_count_hist.parquet  class_stats.parquet  cooccurrence.parquet
    dataset_comparison.parquet

Every report is written atomically (temporary name, then rename), so a reader never sees half a file.
"""

from __future__ import annotations

import itertools
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from . import cluster
from .config import RunConfig, load_dataset_labels
from .io import write_parquet_atomic
from .stats import DatasetSummary, compare, summarize

STATS_REPORTS = (
    "dataset_stats",
    "label_count_hist",
    "class_stats",
    "cooccurrence",
    "dataset_comparison",
)


def write_report(frame: pd.DataFrame | pa.Table, out_dir: str | os.PathLike, name: str) -> Path:
    """Write ``out_dir/name.parquet`` atomically and return its path."""
    table = frame if isinstance(frame, pa.Table) else pa.Table.from_pandas(frame, preserve_index=False)
    return write_parquet_atomic(table, Path(out_dir) / f"{name}.parquet")


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
    comparison = (
        pd.concat(comparisons, ignore_index=True)
        if comparisons
        else pd.DataFrame(
            columns=["dataset_a", "dataset_b", "measure", "value", "ci_low", "ci_high", "class_index", "wnid", "name"]
        )
    )
    frames = {
        "dataset_stats": pd.DataFrame([s.stats for s in summaries]),
        "label_count_hist": pd.concat([s.hist for s in summaries], ignore_index=True),
        "class_stats": pd.concat([s.classes for s in summaries], ignore_index=True),
        "cooccurrence": pd.concat([s.cooccurrence for s in summaries], ignore_index=True),
        "dataset_comparison": comparison,
    }
    paths = {name: write_report(frames[name], out_dir, name) for name in STATS_REPORTS}
    return StatsResult(summaries, comparison, paths, time.perf_counter() - start)


# --------------------------------------------------------------------------------------------------------------
# mlray score: stored ranked predictions -> model metrics, subgroup metrics, gap decomposition

SCORE_REPORTS = ("model_metrics", "subgroup_metrics", "gap_decomposition", "class_metrics")


@dataclass
class PredictionUnit:
    """One (dataset, model)'s predictions: partition files read inside the task, or an imported table (a ref)."""

    dataset: str
    model: str
    source: str
    files: list[str] | None = None
    table: object | None = None  # ray.ObjectRef of a pyarrow Table


def collect_predictions(paths, dataset: str | None = None, model: str | None = None) -> list[PredictionUnit]:
    """What each path holds: a prediction store (root or partition folder), store Parquet files, or files to
    import (CSV/Parquet with ``image_id`` + ``top1``/``topk``; ``dataset``/``model`` columns or the flags)."""
    import ray

    from .errors import MlrayError
    from .predictions import import_predictions, list_partitions, read_predictions

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
    from .metrics import prepare_dataset

    arrays = load_dataset_labels(config, config.dataset(name)).arrays()
    ctx = prepare_dataset(arrays, params)
    if params.n_boot:
        for _ in ctx.resample_chunks(params.n_boot, params.seed):
            pass  # built (and kept) here, shared through the object store by every model task
    return arrays, ctx


def _score_batch(prepared, units: list[PredictionUnit], params):
    """Score a batch of models on one dataset (the bootstrap multiplies the shared resamples once per batch)."""
    import ray

    from .metrics import metrics_frame, per_class_accuracy, score_models, subgroup_frame
    from .predictions import align, read_predictions

    labels, ctx = prepared
    aligned = []
    for u in units:
        table = ray.get(u.table) if u.table is not None else read_predictions(u.files)
        aligned.append(align(table, labels, u.dataset, u.model, source=u.source))
    scores = score_models(labels, [a.topk for a in aligned], params, context=ctx)
    frames = {"model_metrics": [], "subgroup_metrics": [], "class_metrics": []}
    missing = {}
    for u, a, s in zip(units, aligned, scores):
        for name, frame in (
            ("model_metrics", metrics_frame(s)),
            ("subgroup_metrics", subgroup_frame(s)),
            ("class_metrics", per_class_accuracy(s)),
        ):
            frame.insert(0, "dataset", u.dataset)
            frame.insert(0, "model", u.model)
            frames[name].append(frame)
        missing[(u.dataset, u.model)] = (a.n_missing, a.missing_examples)
    out = {k: pd.concat(v, ignore_index=True) for k, v in frames.items()}
    return (out, missing), dict(zip((u.model for u in units), scores))


def _decompose_pair(model: str, dataset_a: str, dataset_b: str, scores_a: dict, b, params):
    from .metrics import decomposition_frame

    score_b = b[model] if isinstance(b, dict) else b[0]  # a model's scores on B, or B's labels only
    frame = decomposition_frame(scores_a[model], score_b, params=params)
    frame.insert(0, "dataset_b", dataset_b)
    frame.insert(0, "dataset_a", dataset_a)
    frame.insert(0, "model", model)
    return frame


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
    from .metrics import MetricParams

    params = params or MetricParams()
    start = time.perf_counter()
    units = collect_predictions(prediction_paths, dataset, model)
    if only_config_datasets:  # a shared store may hold other datasets (earlier runs): score the config's only
        names = {d.name for d in config.datasets}
        units = [u for u in units if u.dataset in names]
    if ship_predictions is None:  # store files live on this node; other nodes' tasks cannot read them
        ship_predictions = sum(1 for n in ray.nodes() if n.get("Alive")) > 1
    if ship_predictions:
        from .predictions import read_predictions

        for u in units:
            if u.table is None:
                u.table, u.files = ray.put(read_predictions(u.files)), None
    names = [d.name for d in config.datasets]
    for u in units:
        if u.dataset not in names:
            raise MlrayError(
                f"{u.source}: predictions for dataset {u.dataset!r}, which the config does not have (have: {', '.join(names)})"
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
            frames_ref, scores_ref = batch_task.remote(prepared[n], batch, params)
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
    frames = {
        name: pd.concat([r[0][name] for r in results], ignore_index=True)
        for name in ("model_metrics", "subgroup_metrics", "class_metrics")
    }
    frames["gap_decomposition"] = pd.concat(decompositions, ignore_index=True) if decompositions else pd.DataFrame()
    missing = {key: v for r in results for key, v in r[1].items()}
    paths = {name: write_report(frames[name], out_dir, name) for name in SCORE_REPORTS}
    return ScoreResult(frames, missing, paths, time.perf_counter() - start)
