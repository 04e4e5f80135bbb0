"""Aggregation jobs that write the Parquet reports (Ray tasks; the computing itself lives in stats / scoring).

``stats_report``: one Ray task per dataset (read its label sources, compute its statistics) and one per pair of
datasets (compare their label distributions, from the two dataset results), written as

    dataset_stats.parquet  label_count_hist.parquet  class_stats.parquet  cooccurrence.parquet
    dataset_comparison.parquet

``score_report``: stored predictions scored per (dataset, model), written as

    model_metrics.parquet  subgroup_metrics.parquet  gap_decomposition.parquet  dataset_gaps.parquet
    class_metrics.parquet  policy_metrics.parquet  reliability.parquet
    gallery.parquet  thumbnails.parquet          (mlray.gallery: the models of ``scoring.gallery``)

Every report is written atomically (temporary name, then rename), so a reader never sees half a file.
"""

from __future__ import annotations

import itertools
import math
import os
import time
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from . import cluster
from .config import RunConfig
from .datasets import class_space, load_dataset_labels
from .gallery import GALLERY_SCHEMAS
from .io import write_parquet_atomic
from .scoring.frames import SCORE_SCHEMAS
from .scoring.params import MIN_GAP_FOR_SHARE
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
    return {**STATS_SCHEMAS, **SCORE_SCHEMAS, **GALLERY_SCHEMAS, "dataset_gaps": DATASET_GAPS_SCHEMA}


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
    summaries, comparisons = cluster.gather([refs[n] for n in names], pair_refs)
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

SCORE_REPORTS = (
    "model_metrics",
    "subgroup_metrics",
    "gap_decomposition",
    "dataset_gaps",
    "class_metrics",
    "policy_metrics",
    "reliability",
)
GALLERY_REPORTS = ("gallery", "thumbnails")


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
    """A dataset's label arrays (mapped to its class space, if it has one), its scoring context (label matrix +
    bootstrap resamples), built once, and its class space: ``(arrays, context, (space, policy, dropped))``."""
    from .scoring import prepare_dataset

    dataset = config.dataset(name)
    arrays = load_dataset_labels(config, dataset).arrays()
    space, dropped = class_space(config, dataset), 0
    if space is not None:
        arrays, dropped = space.labels(arrays, name)
    ctx = prepare_dataset(arrays, params)
    if params.n_boot:
        for _ in ctx.resample_chunks(params.n_boot, params.seed):
            pass  # built (and kept) here, shared through the object store by every model task
    return arrays, ctx, (space, dataset.class_policy, dropped)


def _score_batch(prepared, units: list[PredictionUnit], params, gallery: tuple[frozenset[str], int] = (frozenset(), 0)):
    """Score a batch of models on one dataset (the bootstrap multiplies the shared resamples once per batch). A
    dataset with a class space is scored under its ``class_policy`` (every report), and under the other policy too
    (``policy_metrics``, no bootstrap). ``gallery``: the models that get ``gallery`` rows, and how many per kind."""
    import ray

    from .errors import MlrayError
    from .scoring import metrics_frame, score_models
    from .store import align, read_predictions

    labels, ctx, (space, policy, dropped) = prepared
    aligned = []
    for u in units:
        table = ray.get(u.table) if u.table is not None else read_predictions(u.files or [])
        aligned.append(align(table, labels, u.dataset, u.model, source=u.source))
    ranked: list[tuple[np.ndarray, np.ndarray]] = [
        (a.topk, a.prob) if space is None else space.ranking(a.topk, a.prob, policy) for a in aligned
    ]
    scores = score_models(labels, [t for t, _ in ranked], params, context=ctx, top1_probs=[_top1(p) for _, p in ranked])
    per_model = [model_frames(u.dataset, u.model, s) for u, s in zip(units, scores)]
    out = {name: pd.concat([f[name] for f in per_model], ignore_index=True) for name in MODEL_REPORTS[:-1]}
    chosen, per_kind = gallery
    shown = [(u, t, p) for u, (t, p) in zip(units, ranked) if u.model in chosen]
    if shown and per_kind:
        from .gallery import gallery_rows

        sets = labels.valid_sets()
        out["gallery"] = pd.concat(
            [
                gallery_rows(u.model, u.dataset, t, p, labels.original, sets, labels.image_ids, per_kind)
                for u, t, p in shown
            ],
            ignore_index=True,
        )
    else:
        out["gallery"] = empty_report("gallery")
    policy_rows = []
    if space is not None:
        other = "all" if policy == "mask" else "mask"
        others: list = [None] * len(aligned)
        try:
            again = [space.ranking(a.topk, a.prob, other) for a in aligned]
            others = score_models(
                labels,
                [t for t, _ in again],
                params,
                bootstrap=False,
                context=ctx,
                top1_probs=[_top1(p) for _, p in again],
            )
        except MlrayError:  # e.g. mask on an imported top-k list: only the configured policy is reported
            pass
        described = space.describe() + (f"; {dropped:,} valid labels outside dropped" if dropped else "")
        for u, mine, theirs in zip(units, scores, others):
            for pol, sc in ((policy, mine), (other, theirs)):
                if sc is None:
                    continue
                frame = metrics_frame(sc)[["metric", "value", "ci_low", "ci_high", "n"]]
                frame.insert(0, "configured", pol == policy)
                frame.insert(0, "class_policy", pol)
                frame.insert(0, "classes", described)
                frame.insert(0, "dataset", u.dataset)
                frame.insert(0, "model", u.model)
                policy_rows.append(frame)
    out["policy_metrics"] = pd.concat(policy_rows, ignore_index=True) if policy_rows else empty_report("policy_metrics")
    missing = {(u.dataset, u.model): (a.n_missing, a.missing_examples) for u, a in zip(units, aligned)}
    return (out, missing), dict(zip((u.model for u in units), scores))


MODEL_REPORTS = ("model_metrics", "subgroup_metrics", "class_metrics", "reliability", "policy_metrics")


def _top1(prob: np.ndarray) -> np.ndarray | None:
    """The probability of each image's top-1 rank (NaN = unknown), None when no rank is stored at all."""
    return prob[:, 0].astype(np.float64) if prob.ndim == 2 and prob.shape[1] else None


def model_frames(dataset: str, model: str, score) -> dict[str, pd.DataFrame]:
    """The rows of one scored (model, dataset) in each report of :data:`MODEL_REPORTS` but ``policy_metrics``,
    key columns first."""
    from .scoring import metrics_frame, per_class_accuracy, reliability_frame, subgroup_frame

    frames = {"model_metrics": metrics_frame(score), "subgroup_metrics": subgroup_frame(score),
              "class_metrics": per_class_accuracy(score), "reliability": reliability_frame(score)}  # fmt: skip
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
    images: dict[str, str] | None = None,
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

    The gallery (:mod:`mlray.gallery`) covers the models ``config.scoring.gallery`` chooses; its thumbnails are
    read from each dataset's ``images:``, or ``images[dataset]`` (``mlray score --images NAME=PATH``).
    """
    import ray

    from .errors import MlrayError
    from .gallery import gallery_models
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
    gallery = config.scoring.gallery
    chosen = frozenset(gallery_models((u.model for u in units), gallery.models))
    prepare = ray.remote(_prepare_labels)
    batch_task = ray.remote(num_returns=2)(_score_batch)
    pair_task = ray.remote(_decompose_pair)
    prepared = {n: prepare.remote(config, n, params) for n in names}
    frame_refs, score_refs = [], {}  # score_refs[(dataset, model)] -> ref of that batch's scores
    for n in names:
        mine = [u for u in units if u.dataset == n]
        for i in range(0, len(mine), max(1, models_per_task)):
            batch = mine[i : i + max(1, models_per_task)]
            refs: Any = batch_task.remote(prepared[n], batch, params, (chosen, gallery.per_kind))  # stub: one ref
            frames_ref, scores_ref = refs
            frame_refs.append(frames_ref)
            for u in batch:
                score_refs[(n, u.model)] = scores_ref
    pair_refs = []
    for a, b in itertools.permutations(names, 2):
        for m in sorted({u.model for u in units if u.dataset == a}):
            other = score_refs.get((b, m), prepared[b])
            pair_refs.append(pair_task.remote(m, a, b, score_refs[(a, m)], other, params))
    others = list(prepared.values()) + list(dict.fromkeys(score_refs.values()))  # fetched on an error only
    results, decompositions = cluster.gather(frame_refs, pair_refs, also=others)
    frames = {name: pd.concat([r[0][name] for r in results], ignore_index=True) for name in (*MODEL_REPORTS, "gallery")}
    frames["thumbnails"] = _thumbnails(config, frames["gallery"], gallery.thumbnail_px, images)
    gaps = pd.concat(decompositions, ignore_index=True) if decompositions else empty_report("gap_decomposition")
    frames["gap_decomposition"] = gaps
    frames["dataset_gaps"] = dataset_gaps_frame(frames["model_metrics"], frames["gap_decomposition"], names)
    missing = {key: v for r in results for key, v in r[1].items()}
    paths = {name: write_report(frames[name], out_dir, name) for name in (*SCORE_REPORTS, *GALLERY_REPORTS)}
    return ScoreResult(frames, missing, paths, time.perf_counter() - start)


def _thumbnails(
    config: RunConfig, gallery: pd.DataFrame, px: int, images: dict[str, str] | None = None
) -> pd.DataFrame:
    """The ``thumbnails`` of every image the gallery shows: one Ray task per dataset, reading its own images (or
    ``images[dataset]``)."""
    import ray

    from .gallery import thumbnails_frame

    if not len(gallery):
        return empty_report("thumbnails")
    task = ray.remote(thumbnails_frame)
    refs = [
        task.remote(config, d, list(dict.fromkeys(rows["image_id"])), px, (images or {}).get(str(d)))
        for d, rows in gallery.groupby("dataset", sort=False)
    ]
    return pd.concat(cluster.gather(refs)[0], ignore_index=True)


# --------------------------------------------------------------------------------------------------------------
# dataset_gaps: the mean gap A -> B over the models, per pair of datasets and metric

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


# --------------------------------------------------------------------------------------------------------------
# composition_effect: one model's accuracy on A reweighted to B's label-count mix, next to the published gap

COMPOSITION_REPORT = "composition_effect"
ALL_GROUPS = "all"  # the group label of the rows taken over every subgroup
COMPOSITION_QUANTITIES = ("share_a", "share_b", "value_a", "a_standardized_to_b", "composition",
                          "a_standardized_to_b_cut", "published_gap_mean", "published_gap_median")  # fmt: skip
COMPOSITION_SCHEMA = pa.schema(
    [(c, pa.string()) for c in ("dataset_a", "dataset_b", "model", "metric", "quantity", "group")]
    + [(c, pa.float64()) for c in ("value", "ci_low", "ci_high")]
    + [("n", pa.int64())]
)
COMPOSITION_COLUMNS = COMPOSITION_SCHEMA.names


def _group_counts_b(labels_b, metric: str, params) -> tuple[np.ndarray, np.ndarray]:
    """B's images per subgroup that ``metric`` is taken on (labelled; with an original label for top1/top5), as
    ``decompose`` weighs B when B has labels only: (counts (G,), resampled counts (n_boot, G) from B's own
    bootstrap resamples, seeded as every resample of B is)."""
    from .scoring import prepare_dataset
    from .scoring.registry import spec

    ctx = prepare_dataset(labels_b, params)
    taken = ctx.labelled & (ctx.orig_ok if spec(metric).denominator == "original" else True)
    weight = taken[ctx.order].astype(np.float32)
    groups = range(1, ctx.max_group + 1)
    counts = np.array([weight[ctx.bounds[g] : ctx.bounds[g + 1]].sum() for g in groups], np.float64)
    resampled = np.zeros((params.n_boot, ctx.max_group), np.float64)
    for b0, C in ctx.resample_chunks(params.n_boot, params.seed) if params.n_boot else ():
        for i, g in enumerate(groups):
            lo, hi = ctx.bounds[g], ctx.bounds[g + 1]
            resampled[b0 : b0 + len(C), i] = C[:, lo:hi] @ weight[lo:hi]
    return counts, resampled


def _weighted(w: np.ndarray, m: np.ndarray) -> np.ndarray:
    """Σ_g w(g) m(g) over the last axis, a term with weight 0 being 0 even where m(g) is undefined (as in the
    decomposition)."""
    with np.errstate(invalid="ignore"):
        return np.where(w != 0, w * m, 0.0).sum(axis=-1)


def composition_frame(
    score,
    labels_b,
    dataset_a: str,
    dataset_b: str,
    model: str,
    params=None,
    metric: str = "top1",
    published: pd.DataFrame | None = None,
    cuts: Iterable = (),
) -> pd.DataFrame:
    """The ``composition_effect`` report (columns :data:`COMPOSITION_COLUMNS`, values fractions): how much of a
    drop from dataset A to dataset B one model's subgroup accuracies on A predict from B's label-count mix alone.

    ``score``: the model's :class:`~mlray.scoring.ModelScore` on A (with its bootstrap resamples); ``labels_b``:
    B's :class:`~mlray.labels.LabelArrays` (no predictions on B are needed). Rows (``quantity``, ``group``; group
    g = images with g valid labels, the last group ``"{max_group}+"``, ``"all"`` = every group):

    ==========================  =======================================================================
    ``share_a`` / ``share_b``    per group: w_A(g), w_B(g), the share of A's / B's images the metric is
                                 taken on (labelled; with an original label for top1) in group g; ``n`` =
                                 their count (A: those with a prediction) -- the weights of
                                 :func:`mlray.scoring.decompose`
    ``value_a``                  per group: m_A(g), the model's value on A's group g (= ``subgroup_metrics``,
                                 with its interval); ``all``: Σ_g w_A m_A (= ``gap_decomposition.value_a``)
    ``a_standardized_to_b``      ``all``: Σ_g w_B m_A, A's accuracy under B's label-count mix
                                 (= ``gap_decomposition.a_standardized_to_b``)
    ``composition``              ``all``: value_a - a_standardized_to_b, the drop the mix alone predicts
    ``a_standardized_to_b_cut``  a_standardized_to_b with the subgroups cut at another ``max_group`` (``group``
                                 = the label of the merged top group, ``"3+"``, ...): one row per entry of
                                 ``cuts`` (scores of the model at those cut-offs), no interval
    ``published_gap_mean`` /     ``all``: the mean / median published gap value(A) - value(B) across models
    ``published_gap_median``     (``published``: :func:`mlray.external.gap_summary`; ``model`` = its
                                 collection, ``n`` = models), when ``published`` has a row for (metric, A, B)
    ==========================  =======================================================================

    Intervals (``ci_low``, ``ci_high``; NaN for the shares and the published rows): percentile bootstrap. The
    "all" rows resample A's images (the resamples behind every interval of ``score``) and B's images (B's own
    resamples, which move w_B) independently, as the decomposition's intervals do; ``composition``'s interval
    comes from the same resample pairs. A resample where a weighed group is empty is dropped.
    """
    from .scoring import MetricParams, decompose, percentile_ci
    from .scoring.registry import spec
    from .scoring.results import ROW, eligible_row, ratio

    params = params or MetricParams()
    point = decompose(score, labels_b, metric, params)
    den_a = score.den[1:, ROW[metric]].astype(np.float64)
    den_b, boot_b = _group_counts_b(labels_b, metric, params)
    w_a, w_b = ratio(den_a, den_a.sum()), ratio(den_b, den_b.sum())
    rows: list[tuple] = []

    def add(quantity: str, group: str, value: float, n: float, lo: float = math.nan, hi: float = math.nan,
            who: str = model) -> None:  # fmt: skip
        rows.append((dataset_a, dataset_b, who, metric, quantity, group, float(value), float(lo), float(hi), int(n)))

    for gi, label in enumerate(score.group_labels):
        add("share_a", label, w_a[gi], den_a[gi])
    for gi, label in enumerate(score.group_labels):
        add("share_b", label, w_b[gi], den_b[gi])
    for label in score.group_labels:
        mv = score.subgroups[(metric, label)]
        add("value_a", label, mv.value, mv.n, mv.ci_low, mv.ci_high)

    intervals = {k: (math.nan, math.nan) for k in ("value_a", "a_standardized_to_b", "composition")}
    if score.boot is not None and len(boot_b):
        S = score.boot.astype(np.float64)
        num, den = S[:, 1:, ROW[metric]], S[:, 1:, eligible_row(spec(metric))]
        nb = min(len(S), len(boot_b))
        m = ratio(num[:nb], den[:nb])
        point_m = np.array([score.subgroups[(metric, label)].value for label in score.group_labels], np.float64)
        m[:, np.isnan(point_m)] = np.nan  # a group unavailable at the point estimate stays unavailable
        value_a = _weighted(ratio(den[:nb], den[:nb].sum(axis=1, keepdims=True)), m)
        standardized = _weighted(ratio(boot_b[:nb], boot_b[:nb].sum(axis=1, keepdims=True)), m)
        lo, hi = percentile_ci(np.stack([value_a, standardized, value_a - standardized], axis=1), params.ci)
        intervals = {k: (float(a), float(b)) for k, a, b in zip(intervals, lo, hi)}
    add("value_a", ALL_GROUPS, point["value_a"], den_a.sum(), *intervals["value_a"])
    add("a_standardized_to_b", ALL_GROUPS, point["a_standardized_to_b"], den_b.sum(), *intervals["a_standardized_to_b"])
    composition = point["value_a"] - point["a_standardized_to_b"]
    add("composition", ALL_GROUPS, composition, den_a.sum(), *intervals["composition"])
    for other in cuts:
        cut = decompose(other, labels_b, metric, other.params)
        add("a_standardized_to_b_cut", other.group_labels[-1], cut["a_standardized_to_b"], den_b.sum())

    if published is not None and len(published):
        sel = published[(published["metric"] == metric) & (published["base"] == dataset_a)
                        & (published["other"] == dataset_b)]  # fmt: skip
        for r in sel.itertuples():
            add("published_gap_mean", ALL_GROUPS, r.mean, r.count, who=r.collection)
            add("published_gap_median", ALL_GROUPS, r.median, r.count, who=r.collection)
    return pd.DataFrame.from_records(rows, columns=COMPOSITION_COLUMNS)


@dataclass
class CompositionResult:
    """What :func:`composition_report` wrote: every report frame by name and its path."""

    frames: dict[str, pd.DataFrame]
    paths: dict[str, Path] = field(default_factory=dict)
    seconds: float = 0.0

    @property
    def frame(self) -> pd.DataFrame:
        """The ``composition_effect`` report."""
        return self.frames[COMPOSITION_REPORT]


def composition_report(
    config: RunConfig,
    predictions: pa.Table,
    out_dir: str | os.PathLike,
    model: str,
    dataset_a: str,
    dataset_b: str,
    params=None,
    published: Iterable[str | os.PathLike] = (),
    metric: str = "top1",
    cuts: Iterable[int] = (),
    top_pairs: int = 100,
    top_classes: int = 10,
) -> CompositionResult:
    """One model's predictions on dataset A against the label-count mix of dataset B, in this process (no Ray:
    two label sets and one prediction vector take seconds), written to ``out_dir`` as the usual reports plus
    ``composition_effect``, from the same functions :func:`stats_report` and :func:`score_report` run as tasks:

    * :data:`STATS_REPORTS` of A and B (:func:`mlray.stats.summarize`, :func:`mlray.stats.compare`);
    * :data:`SCORE_REPORTS` of ``model`` on A (``predictions``: a prediction table holding its rows, aligned by
      :func:`mlray.store.align`) with the decomposition A -> B from B's labels (B needs no predictions);
    * ``external_results`` and ``external_gap_summary`` of the ``published`` results files
      (:func:`mlray.external.import_results`), when given;
    * ``composition_effect`` (:func:`composition_frame`, with the published gap of A -> B and the standardized
      value at each subgroup cut-off ``max_group`` in ``cuts``, scored without intervals).

    ``config`` holds datasets A and B; ``params`` the metric settings (default :class:`MetricParams()`).
    """
    from .external import GAP_SUMMARY_FILE, import_results
    from .scoring import MetricParams, prepare_dataset, score_models
    from .store import align

    params = params or MetricParams()
    start = time.perf_counter()
    out = Path(out_dir)
    labels = {name: load_dataset_labels(config, config.dataset(name)) for name in (dataset_a, dataset_b)}
    arrays = {name: labels[name].arrays() for name in labels}
    summaries = [
        summarize(name, arrays[name], top_pairs, labels[name].skipped_unknown, labels[name].merged_duplicates)
        for name in labels
    ]
    frames = stats_frames(summaries, [compare(summaries[0], summaries[1], top_classes)])
    aligned = align(predictions, arrays[dataset_a], dataset_a, model)
    ctx = prepare_dataset(arrays[dataset_a], params)
    score = score_models(arrays[dataset_a], [aligned.topk], params, context=ctx, top1_probs=[_top1(aligned.prob)])[0]
    frames.update(model_frames(dataset_a, model, score))
    frames["policy_metrics"] = empty_report("policy_metrics")
    frames["gap_decomposition"] = pair_frame(model, dataset_a, dataset_b, score, arrays[dataset_b], params)
    frames["dataset_gaps"] = dataset_gaps_frame(
        frames["model_metrics"], frames["gap_decomposition"], [dataset_a, dataset_b]
    )
    paths = {name: write_report(frames[name], out, name) for name in (*STATS_REPORTS, *SCORE_REPORTS)}
    gaps = None
    sources = list(published)
    if sources:
        _, gaps, results_path = import_results(sources, out)
        paths["external_results"] = results_path
        paths["external_gap_summary"] = results_path.parent / GAP_SUMMARY_FILE
        frames["external_gap_summary"] = gaps
    others = [
        score_models(arrays[dataset_a], [aligned.topk], replace(params, max_group=int(g), n_boot=0))[0] for g in cuts
    ]
    effect = composition_frame(score, arrays[dataset_b], dataset_a, dataset_b, model, params, metric, gaps, others)
    frames[COMPOSITION_REPORT] = effect
    paths[COMPOSITION_REPORT] = write_composition(effect, out)
    return CompositionResult(frames, paths, time.perf_counter() - start)


def write_composition(frame: pd.DataFrame, out_dir: str | os.PathLike) -> Path:
    """Write ``out_dir/composition_effect.parquet`` atomically, typed by :data:`COMPOSITION_SCHEMA`."""
    table = pa.Table.from_pandas(frame[COMPOSITION_COLUMNS], schema=COMPOSITION_SCHEMA, preserve_index=False)
    return write_parquet_atomic(table, Path(out_dir) / f"{COMPOSITION_REPORT}.parquet")
