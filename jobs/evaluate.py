"""``ray job submit`` entrypoint: inference + statistics + scores for a run config (``mlray evaluate`` as a job).

    ray job submit --working-dir . --runtime-env jobs/runtime_env.yaml -- \\
        python jobs/evaluate.py jobs/configs/imagenet-v1-v2.yaml --out s3://YOUR-BUCKET/mlray/paper-run

Writes ``OUT/predictions/...`` (the prediction store), ``OUT/errors/...``, ``OUT/run_manifest.json`` and
``OUT/reports/*.parquet`` (see :mod:`mlray.evaluate`). ``--out`` may be a local folder or a URI: each finished shard
part reaches it as soon as it is written, and a resubmitted job resumes by listing the parts already there
(nothing is downloaded first; details in :mod:`mlray.output`). Labels, models, weights and ``--out`` are checked
before the job joins the cluster (:mod:`mlray.checks`). Exit status 0 on success, 2 on a user-input error (one
line), 130 when stopped (``ray job stop``: SIGTERM; one line says what is stored), 1 otherwise.
"""

from __future__ import annotations

import sys
from pathlib import Path

from mlray.jobs import add_scoring_flags, connect, job_parser, run_main, scoring_params


def main(argv: list[str] | None = None) -> None:
    parser = job_parser("Inference (reusing stored predictions), then label statistics and scores, into --out.")
    parser.add_argument("config", help="Run config (YAML) with datasets (images + layout + labels) and models.")
    add_scoring_flags(parser)
    parser.add_argument("--show", type=int, default=20, help="(model, dataset) rows of headline metrics to print.")
    parser.add_argument(
        "--gpus",
        type=int,
        default=0,
        help="Ask the autoscaler for this many GPUs and wait for them before inference (0 = use what is there).",
    )
    parser.add_argument("--gpu-wait", type=float, default=1800, help="Seconds to wait for --gpus before giving up.")
    args = parser.parse_args(argv)

    from mlray.checks import preflight
    from mlray.cluster import gpus_requested
    from mlray.config import load_config
    from mlray.console import InferenceProgress, inference_lines, print_headline, resumable, stats_lines
    from mlray.evaluate import accounting_lines, evaluate
    from mlray.output import destination

    cfg = load_config(args.config)  # a bad config, label file, model or --out fails here, before joining the cluster
    params = scoring_params(cfg, args)
    preflight(cfg, models=True)
    # only the config's datasets: the same --out may hold other datasets' predictions from earlier runs
    with_images = [d.name for d in cfg.datasets if d.images is not None]
    with destination(args.out, args.scratch) as dest:
        connect(args.address)
        with gpus_requested(args.gpus, args.gpu_wait), resumable(dest.local / "predictions", "the same job"):
            result = evaluate(cfg, dest, params, progress=InferenceProgress(live=False))
        for line in inference_lines(result.inference, with_images) + accounting_lines(result.inference, with_images):
            print(line, flush=True)
        for line in stats_lines(result.stats):
            print(line)
        print_headline(result.scores.frames["model_metrics"], limit=args.show)
        print(f"{result.seconds:.1f} s; writing to {dest.show()}", flush=True)
    print(
        f"predictions in {dest.show('predictions')}, errors in {dest.show('errors')}, "
        f"reports in {dest.show('reports')}",
        flush=True,
    )
    if result.dashboard is not None:
        print(f"dashboard: {dest.show(Path(result.dashboard).relative_to(dest.local).as_posix())}", flush=True)


if __name__ == "__main__":
    sys.exit(run_main(main))
