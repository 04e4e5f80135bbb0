"""``ray job submit`` entrypoint: label statistics and label-distribution comparisons (``mlray stats`` as a job).

    ray job submit --working-dir . --runtime-env jobs/runtime_env.yaml -- \\
        python jobs/stats.py jobs/configs/labels-v1-v2.yaml --out s3://YOUR-BUCKET/mlray/labels

Writes ``dataset_stats``, ``label_count_hist``, ``class_stats``, ``cooccurrence`` and ``dataset_comparison``
(``.parquet``) into ``--out`` (a local folder or a URI; see ``jobs/_common.py``). Without a config: the built-in
default (ImageNet val with timm's ReaL labels). Exit status 0 on success, 2 on a user-input error (one line),
1 otherwise.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import base_parser, connect, destination, run_main, stats_lines  # noqa: E402


def main(argv: list[str] | None = None) -> None:
    parser = base_parser("Label statistics per dataset and label-distribution comparison per pair, as Parquet reports.")
    parser.add_argument(
        "config", nargs="?", default=None, help="Run config (YAML); default: ImageNet val with timm's ReaL labels."
    )
    parser.add_argument("--top-pairs", type=int, default=100, help="Most frequent class pairs kept per dataset.")
    parser.add_argument(
        "--top-classes", type=int, default=10, help="Classes listed per pair whose multi-label rate differs most."
    )
    parser.add_argument("--json", action="store_true", help="Print the summary as JSON.")
    args = parser.parse_args(argv)

    from mlray.config import default_config, load_config
    from mlray.reports import stats_report

    cfg = default_config() if args.config is None else load_config(args.config)
    log = sys.stderr if args.json else sys.stdout  # with --json, stdout is the JSON document only
    connect(args.address, log)
    with destination(args.out, args.scratch, log=log) as dest:
        result = stats_report(cfg, dest.local, top_pairs=args.top_pairs, top_classes=args.top_classes)
        if args.json:
            summary = result.summary_json()
            summary["reports"] = {name: dest.show(path.name) for name, path in result.paths.items()}
            print(json.dumps(summary, indent=2))
        else:
            for line in stats_lines(result):
                print(line)
            comp = result.comparison
            for (da, db), rows in comp.groupby(["dataset_a", "dataset_b"], sort=False):
                m = rows.set_index("measure")["value"]
                if "multi_fraction_difference" in m.index:
                    print(f"{da} vs {db}: multi-label share difference {100 * m['multi_fraction_difference']:+.2f} points, "
                          f"label-count total variation {m['label_count_total_variation']:.4f}")  # fmt: skip
        print(f"{result.seconds:.1f} s; writing {len(result.paths)} reports to {dest.show()}", file=log, flush=True)


if __name__ == "__main__":
    sys.exit(run_main(main))
