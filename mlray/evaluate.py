"""The whole flow for one run config: inference (reusing stored predictions) -> label statistics -> scores
-> (dashboard), into one output directory.

    OUT/predictions/…   the prediction store (mlray.inference)
    OUT/errors/…        images that could not be read or decoded, with the reason
    OUT/run_manifest.json
    OUT/reports/*.parquet   statistics (mlray.reports.stats_report) and scores (mlray.reports.score_report)

``mlray evaluate``, ``mlray demo`` and ``jobs/evaluate.py`` all call :func:`evaluate`; they differ only in how
they print. For an object-store ``--out`` (:mod:`mlray.output`) the shard parts reach the bucket as they are
written during inference; before scoring, the parts an earlier run stored there are copied into the local
working copy (scoring reads every prediction), and the reports are uploaded when the command ends.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from .config import RunConfig
from .dashboard import build_dashboard
from .images.shards import PlanAccounting
from .inference import InferenceResult, run_inference
from .reports import ScoreResult, StatsResult, score_report, stats_report
from .scoring import MetricParams
from .store import store_folders

if TYPE_CHECKING:
    from .output import Destination


@dataclass
class EvaluateResult:
    """What :func:`evaluate` did: the output folder (local), its reports folder, each step's result, the
    seconds it took and the dashboard page (None when none was built)."""

    out: Path
    reports: Path
    inference: InferenceResult
    stats: StatsResult
    scores: ScoreResult
    seconds: float
    dashboard: Path | None = None  # OUT/reports/dashboard.html


def evaluate(
    config: RunConfig,
    out_dir: str | os.PathLike | Destination,
    params: MetricParams | None = None,
    progress=None,
) -> EvaluateResult:
    """Run inference for every dataset with images x every model, then write the stats and score reports and the
    dashboard page built from them (``OUT/reports/dashboard.html``).

    ``out_dir`` is a local folder or a :class:`mlray.output.Destination` (whose local working copy is written;
    for a URI the parts stored there by earlier runs are copied down before scoring)."""
    start = time.perf_counter()
    params = params or MetricParams()
    if isinstance(out_dir, (str, os.PathLike)):
        dest, out = None, Path(out_dir)
    else:
        dest, out = out_dir, out_dir.local
    inference = run_inference(config, out, progress)
    if dest is not None:
        dest.pull_missing(*store_folders("predictions", [d.name for d in config.datasets if d.images is not None]))
    reports = out / "reports"
    stats = stats_report(config, reports)
    scores = score_report(config, [out / "predictions"], reports, params, only_config_datasets=True)
    compare_published(reports, out / "run_manifest.json", scores.frames["model_metrics"])
    from .analysis import analyze  # fits, rank changes, model analysis, group summaries (mlray analyze)

    analyze(reports, n_boot=params.n_boot, seed=params.seed)
    dashboard = build_dashboard(reports)
    return EvaluateResult(out, reports, inference, stats, scores, time.perf_counter() - start, dashboard)


def compare_published(reports: Path, manifest: Path, model_metrics) -> Path | None:
    """When ``reports`` holds published results (``mlray import-results --out REPORTS``), write
    ``published_comparison`` there: each model's top-1 / top-5 next to timm's for the same weights and image size
    (:func:`mlray.external.published_comparison`). Returns its path, or None."""
    from .external import COMPARISON_FILE, RESULTS_FILE, published_comparison, read_results_parquet
    from .reports import write_report

    if not (reports / RESULTS_FILE).is_file() or not manifest.is_file():
        return None
    models = json.loads(manifest.read_text()).get("models") or {}
    frame = published_comparison(model_metrics, read_results_parquet(reports / RESULTS_FILE), models)
    return write_report(frame, reports, COMPARISON_FILE.removesuffix(".parquet"))


def accounting_lines(inference: InferenceResult, datasets: Sequence[str] | None = None) -> list[str]:
    """Where every entry of each dataset's image folder went, after the run: ``photos: 44 entries = 40 images
    + 2 error rows + 2 skipped by extension`` (images = predictions; error rows include the entries flagged
    while listing), one line per dataset when every model agrees, else one per (dataset, model); a mismatch is
    spelled out (:meth:`mlray.images.shards.PlanAccounting.reconciliation`). The skipped counts are read from
    the run manifest."""
    skipped: dict[str, int] = {}
    if inference.manifest is not None and Path(inference.manifest).is_file():
        manifest = json.loads(Path(inference.manifest).read_text())
        skipped = {name: int(d.get("skipped_non_image") or 0) for name, d in manifest.get("datasets", {}).items()}
    names = list(datasets) if datasets is not None else list(dict.fromkeys(d for d, _ in inference.counts))
    lines = []
    for name in names:
        pairs = [(m, c) for (d, m), c in inference.counts.items() if d == name]
        if not pairs:
            continue
        n_skip = skipped.get(name, 0)
        acc = PlanAccounting(entries=pairs[0][1]["images"] + n_skip, readable=0, flagged=0, skipped=n_skip)
        texts = {m: acc.reconciliation(c["predictions"], c["errors"]) for m, c in pairs}
        if len(set(texts.values())) == 1:
            lines.append(f"{name}: {next(iter(texts.values()))}" + (" (each model)" if len(pairs) > 1 else ""))
        else:
            lines += [f"{name} / {m}: {t}" for m, t in texts.items()]
    return lines
