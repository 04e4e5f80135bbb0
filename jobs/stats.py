"""``ray job submit`` entrypoint: label statistics and label-distribution comparisons (``mlray stats`` as a job).

    ray job submit --working-dir . --runtime-env jobs/runtime_env.yaml -- \\
        python jobs/stats.py jobs/configs/labels-v1-v2.yaml --out s3://YOUR-BUCKET/mlray/labels

Writes ``dataset_stats``, ``label_count_hist``, ``class_stats``, ``cooccurrence`` and ``dataset_comparison``
(``.parquet``) into ``--out`` (a local folder or a URI; see :mod:`mlray.output`). Without a config: the built-in
default (ImageNet val with timm's ReaL labels). Exit status 0 on success, 2 on a user-input error (one line),
1 otherwise.
"""

from __future__ import annotations

import json
import sys

from mlray.jobs import connect, job_parser, run_main


def main(argv: list[str] | None = None) -> None:
    parser = job_parser("Label statistics per dataset and label-distribution comparison per pair, as Parquet reports.")
    parser.add_argument(
        "config", nargs="?", default=None, help="Run config (YAML); default: ImageNet val with timm's ReaL labels."
    )
    parser.add_argument("--top-pairs", type=int, default=100, help="Most frequent class pairs kept per dataset.")
    parser.add_argument(
        "--top-classes", type=int, default=10, help="Classes listed per pair whose multi-label rate differs most."
    )
    parser.add_argument("--json", action="store_true", help="Print the summary as JSON.")
    args = parser.parse_args(argv)

    from mlray.checks import check_labels
    from mlray.config import default_config, load_config
    from mlray.console import stats_lines
    from mlray.output import destination
    from mlray.reports import stats_report

    cfg = default_config() if args.config is None else load_config(args.config)
    check_labels(cfg)  # every label source read and checked before joining the cluster
    log = sys.stderr if args.json else sys.stdout  # with --json, stdout is the JSON document only
    with destination(args.out, args.scratch, log=log) as dest:
        connect(args.address, log)
        result = stats_report(cfg, dest.local, top_pairs=args.top_pairs, top_classes=args.top_classes)
        if args.json:
            summary = result.summary_json()
            summary["reports"] = {name: dest.show(path.name) for name, path in result.paths.items()}
            print(json.dumps(summary, indent=2))
        else:
            for line in stats_lines(result):
                print(line)
        print(f"{result.seconds:.1f} s; writing {len(result.paths)} reports to {dest.show()}", file=log, flush=True)


if __name__ == "__main__":
    sys.exit(run_main(main))
