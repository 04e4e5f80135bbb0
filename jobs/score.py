"""``ray job submit`` entrypoint: score stored predictions (``mlray score`` as a job).

    ray job submit --working-dir . --runtime-env jobs/runtime_env.yaml -- \\
        python jobs/score.py jobs/configs/imagenet-v1-v2.yaml \\
            --predictions s3://YOUR-BUCKET/mlray/paper-run/predictions --out s3://YOUR-BUCKET/mlray/paper-run/rescored

Every metric is a re-scoring of stored ranks: no GPU is needed. ``--predictions`` takes prediction store folders,
store Parquet files or CSV/Parquet files to import (as ``mlray score``), each a local path or a URI (copied down
to the scratch folder first). Writes ``model_metrics``, ``subgroup_metrics``, ``gap_decomposition`` and
``class_metrics`` (``.parquet``) into ``--out`` (local or URI; see :mod:`mlray.output`). Exit status 0 on
success, 2 on a user-input error (one line), 1 otherwise.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

from mlray.jobs import add_scoring_flags, connect, job_parser, run_main, scoring_params


def main(argv: list[str] | None = None) -> None:
    parser = job_parser("Score stored predictions: every multi-label metric, subgroups, ASMA, CIs, gap decomposition.")
    parser.add_argument("config", help="Run config (YAML) naming the datasets and their labels.")
    parser.add_argument(
        "--predictions",
        "-p",
        nargs="+",
        required=True,
        help="Prediction store folders, store Parquet files, or CSV/Parquet files to import; local or URIs.",
    )
    parser.add_argument("--dataset", default=None, help="Dataset of imported files that have no 'dataset' column.")
    parser.add_argument("--model", default=None, help="Model of imported files that have no 'model' column.")
    add_scoring_flags(parser)
    parser.add_argument("--models-per-task", type=int, default=16, help="Models scored per Ray task.")
    parser.add_argument("--show", type=int, default=20, help="(model, dataset) rows of headline metrics to print.")
    args = parser.parse_args(argv)

    from mlray.checks import check_labels, check_predictions
    from mlray.config import load_config
    from mlray.console import print_scores
    from mlray.output import destination, fetch_inputs
    from mlray.reports import score_report

    cfg = load_config(args.config)
    params = scoring_params(cfg, args)
    check_labels(cfg)  # labels and prediction files to import are checked before joining the cluster
    check_predictions(args.predictions, args.dataset, args.model)
    with (
        destination(args.out, args.scratch) as dest,
        tempfile.TemporaryDirectory(prefix="mlray-inputs-", dir=args.scratch) as tmp,
    ):
        inputs = fetch_inputs(args.predictions, Path(tmp))  # URIs copied down; local paths as they are
        connect(args.address)
        result = score_report(
            cfg, inputs, dest.local, params, dataset=args.dataset, model=args.model,
            models_per_task=args.models_per_task,
        )  # fmt: skip
        print_scores(result, [d.name for d in cfg.datasets], limit=args.show)
        print(f"{result.seconds:.1f} s; writing {len(result.paths)} reports to {dest.show()}", flush=True)
        from mlray.analysis import analyze  # fits, rank changes, model analysis, group summaries (mlray analyze)

        analysis = analyze(dest.local, n_boot=params.n_boot, seed=params.seed)
        print(f"analysis: {len(analysis.paths)} reports ({', '.join(analysis.paths)})", flush=True)


if __name__ == "__main__":
    sys.exit(run_main(main))
