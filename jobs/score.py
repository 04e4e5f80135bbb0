"""``ray job submit`` entrypoint: score stored predictions (``mlray score`` as a job).

    ray job submit --working-dir . --runtime-env jobs/runtime_env.yaml -- \\
        python jobs/score.py jobs/configs/imagenet-v1-v2.yaml \\
            --predictions s3://YOUR-BUCKET/mlray/paper-run/predictions --out s3://YOUR-BUCKET/mlray/paper-run/rescored

Every metric is a re-scoring of stored ranks: no GPU is needed. ``--predictions`` takes prediction store folders,
store Parquet files or CSV/Parquet files to import (as ``mlray score``), each a local path or a URI (copied down
to the scratch folder first). Writes ``model_metrics``, ``subgroup_metrics``, ``gap_decomposition`` and
``class_metrics`` (``.parquet``) into ``--out`` (local or URI; see ``jobs/_common.py``). Exit status 0 on
success, 2 on a user-input error (one line), 1 otherwise.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import base_parser, connect, destination, fetch_inputs, headline_table, run_main  # noqa: E402


def main(argv: list[str] | None = None) -> None:
    parser = base_parser("Score stored predictions: every multi-label metric, subgroups, ASMA, CIs, gap decomposition.")
    parser.add_argument("config", help="Run config (YAML) naming the datasets and their labels.")
    parser.add_argument("--predictions", "-p", nargs="+", required=True,
                        help="Prediction store folders, store Parquet files, or CSV/Parquet files to import; local or URIs.")  # fmt: skip
    parser.add_argument("--dataset", default=None, help="Dataset of imported files that have no 'dataset' column.")
    parser.add_argument("--model", default=None, help="Model of imported files that have no 'model' column.")
    parser.add_argument(
        "--max-group", type=int, default=5, help="Images with >= this many valid labels form one subgroup 'N+'."
    )
    parser.add_argument("--min-group-size", type=int, default=10, help="ASMA leaves out subgroups with fewer images.")
    parser.add_argument("--n-boot", type=int, default=1000, help="Bootstrap resamples for the CIs (0 = none).")
    parser.add_argument("--seed", type=int, default=0, help="Bootstrap seed.")
    parser.add_argument("--models-per-task", type=int, default=16, help="Models scored per Ray task.")
    parser.add_argument("--show", type=int, default=20, help="(model, dataset) rows of headline metrics to print.")
    args = parser.parse_args(argv)

    from mlray.config import load_config
    from mlray.metrics import MetricParams
    from mlray.reports import score_report

    cfg = load_config(args.config)
    params = MetricParams(
        max_group=args.max_group, min_group_size=args.min_group_size, n_boot=args.n_boot, seed=args.seed
    )
    connect(args.address)
    with (
        destination(args.out, args.scratch) as dest,
        tempfile.TemporaryDirectory(prefix="mlray-inputs-", dir=args.scratch) as tmp,
    ):
        inputs = fetch_inputs(args.predictions, Path(tmp))  # URIs copied down; local paths as they are
        result = score_report(cfg, inputs, dest.local, params, dataset=args.dataset, model=args.model,
                              models_per_task=args.models_per_task)  # fmt: skip
        for line in headline_table(result.frames["model_metrics"], limit=args.show):
            print(line)
        for (dataset, model), (n_missing, examples) in result.missing.items():
            if n_missing:
                print(
                    f"{model} on {dataset}: {n_missing:,} images have no prediction (excluded), e.g. {', '.join(examples)}"
                )
        print(f"{result.seconds:.1f} s; writing {len(result.paths)} reports to {dest.show()}", flush=True)


if __name__ == "__main__":
    sys.exit(run_main(main))
