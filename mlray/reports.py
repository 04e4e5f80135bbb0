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
import pyarrow.parquet as pq

from . import cluster
from .config import RunConfig, load_dataset_labels
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
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    table = frame if isinstance(frame, pa.Table) else pa.Table.from_pandas(frame, preserve_index=False)
    final = out / f"{name}.parquet"
    tmp = out / f".{name}.parquet.tmp-{os.getpid()}"
    pq.write_table(table, tmp)
    os.replace(tmp, final)
    return final


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
            "label_count_hist": {s.name: dict(zip(s.hist["n_labels"].tolist(), s.hist["n_images"].tolist())) for s in self.summaries},
            "comparisons": pairs,
            "reports": {k: str(v) for k, v in self.paths.items()},
            "seconds": round(self.seconds, 3),
        }


def stats_report(config: RunConfig, out_dir: str | os.PathLike, top_pairs: int = 100, top_classes: int = 10) -> StatsResult:
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
    comparison = pd.concat(comparisons, ignore_index=True) if comparisons else pd.DataFrame(
        columns=["dataset_a", "dataset_b", "measure", "value", "ci_low", "ci_high", "class_index", "wnid", "name"]
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
