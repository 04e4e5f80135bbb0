"""``ray job submit`` entrypoint: inference + statistics + scores for a run config (``mlray evaluate`` as a job).

    ray job submit --working-dir . --runtime-env jobs/runtime_env.yaml -- \\
        python jobs/evaluate.py jobs/configs/imagenet-v1-v2.yaml --out s3://YOUR-BUCKET/mlray/paper-run

Writes ``OUT/predictions/...`` (the prediction store), ``OUT/errors/...``, ``OUT/run_manifest.json`` and
``OUT/reports/*.parquet`` (see :mod:`mlray.evaluate`). ``--out`` may be a local folder or a URI; for a URI an
existing remote prediction store is copied down first, so a resubmitted job only infers the shards it lacks
(details in ``jobs/_common.py``). Exit status 0 on success, 2 on a user-input error (one line), 1 otherwise.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import (  # noqa: E402
    LogProgress,
    base_parser,
    connect,
    destination,
    gpus_requested,
    headline_table,
    run_main,
    stats_lines,
)

STORE = ("predictions", "errors")  # what a resubmitted job reuses: copied down first, uploaded even on failure


def main(argv: list[str] | None = None) -> None:
    parser = base_parser("Inference (reusing stored predictions), then label statistics and scores, into --out.")
    parser.add_argument("config", help="Run config (YAML) with datasets (images + layout + labels) and models.")
    parser.add_argument("--n-boot", type=int, default=1000, help="Bootstrap resamples for the CIs (0 = none).")
    parser.add_argument("--show", type=int, default=20, help="(model, dataset) rows of headline metrics to print.")
    parser.add_argument("--gpus", type=int, default=0,
                        help="Ask the autoscaler for this many GPUs and wait for them before inference (0 = use what is there).")  # fmt: skip
    parser.add_argument("--gpu-wait", type=float, default=1800, help="Seconds to wait for --gpus before giving up.")
    args = parser.parse_args(argv)

    from mlray.config import load_config
    from mlray.evaluate import evaluate
    from mlray.metrics import MetricParams

    cfg = load_config(args.config)  # a bad config fails here, before joining the cluster
    connect(args.address)
    # only the config's datasets: the same --out may hold other datasets' predictions from earlier runs
    pull = tuple(f"{root}/dataset={d.name}" for d in cfg.datasets if d.images is not None for root in STORE)
    with (
        destination(args.out, args.scratch, pull=pull, keep_on_failure=STORE) as dest,
        gpus_requested(args.gpus, args.gpu_wait),
    ):
        result = evaluate(cfg, dest.local, MetricParams(n_boot=args.n_boot), progress=LogProgress())
        inf = result.inference
        for dataset in [d.name for d in cfg.datasets if d.images is not None]:
            counts = [c for (d, _), c in inf.counts.items() if d == dataset]
            n_images = counts[0]["images"] if counts else 0
            n_pred = sum(c["predictions"] for c in counts)
            n_err = sum(c["errors"] for c in counts)
            seconds = inf.seconds.get(dataset, 0.0)
            done = inf.images_processed.get(dataset, 0)
            print(f"{dataset}: {n_images:,} images x {len(counts)} models = {n_pred:,} predictions + {n_err:,} errors; "
                  + (f"{done:,} images inferred, done {seconds:.1f} s into the run" if done else "all reused from the store"), flush=True)  # fmt: skip
        for line in stats_lines(result.stats):
            print(line)
        for line in headline_table(result.scores.frames["model_metrics"], limit=args.show):
            print(line)
        print(f"{result.seconds:.1f} s; writing to {dest.show()}", flush=True)
    print(
        f"predictions in {dest.show('predictions')}, errors in {dest.show('errors')}, reports in {dest.show('reports')}",
        flush=True,
    )
    dashboard = getattr(result, "dashboard", None)
    if dashboard is not None:
        print(f"dashboard: {dest.show(Path(dashboard).relative_to(dest.local).as_posix())}", flush=True)


if __name__ == "__main__":
    sys.exit(run_main(main))
