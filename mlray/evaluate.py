"""The whole flow for one run config: inference (reusing stored predictions) -> label statistics -> scores
-> (dashboard), into one output directory.

    OUT/predictions/…   the prediction store (mlray.inference)
    OUT/errors/…        images that could not be read or decoded, with the reason
    OUT/run_manifest.json
    OUT/reports/*.parquet   statistics (mlray.reports.stats_report) and scores (mlray.reports.score_report)

``mlray evaluate``, ``mlray demo`` and ``jobs/evaluate.py`` all call :func:`evaluate`; they differ only in how
they print.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path

from .config import RunConfig
from .dashboard import build_dashboard
from .inference import InferenceResult, run_inference
from .reports import ScoreResult, StatsResult, score_report, stats_report
from .scoring import MetricParams


@dataclass
class EvaluateResult:
    out: Path
    reports: Path
    inference: InferenceResult
    stats: StatsResult
    scores: ScoreResult
    seconds: float
    dashboard: Path | None = None  # OUT/reports/dashboard.html


def evaluate(
    config: RunConfig,
    out_dir: str | os.PathLike,
    params: MetricParams | None = None,
    progress=None,
) -> EvaluateResult:
    """Run inference for every dataset with images x every model, then write the stats and score reports and the
    dashboard page built from them (``OUT/reports/dashboard.html``)."""
    start = time.perf_counter()
    out = Path(out_dir)
    inference = run_inference(config, out, progress)
    reports = out / "reports"
    stats = stats_report(config, reports)
    scores = score_report(config, [out / "predictions"], reports, params or MetricParams(), only_config_datasets=True)
    dashboard = build_dashboard(reports)
    return EvaluateResult(out, reports, inference, stats, scores, time.perf_counter() - start, dashboard)
