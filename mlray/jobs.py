"""What the ``ray job submit`` entrypoints in ``jobs/`` share: their common arguments and how a job runs.

Each entrypoint (``jobs/evaluate.py``, ``jobs/stats.py``, ``jobs/score.py``) parses its arguments with
:func:`job_parser`, joins the cluster it runs in (:func:`mlray.cluster.connect` honours ``RAY_ADDRESS``, which
``ray job submit`` sets for the job's driver), calls the library, writes to ``--out`` through
:func:`mlray.output.destination` (a local folder or an object-store URI) and prints through :mod:`mlray.console`,
the same console as the ``mlray`` command. :func:`run_main` gives the exit status: 0 on success; 2 for a
user-input error, printed as one line ``mlray: error: ...`` without a traceback (checked before the job joins
the cluster where possible: :mod:`mlray.checks`); 130 when interrupted (Ctrl-C, or SIGTERM from ``ray job stop``),
with one line saying what is stored; 1 for anything else (with the traceback).
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable
from typing import Any, TextIO

from .console import run_guarded


def job_parser(description: str) -> argparse.ArgumentParser:
    """An argument parser with the options every job has: ``--out``, ``--address``, ``--scratch``."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument(
        "--out",
        "-o",
        required=True,
        help="Output folder: a local path or a URI (s3://, gs://, file://; an S3-compatible endpoint from "
        "AWS_ENDPOINT_URL). Finished shard parts are uploaded as they are written; a re-run resumes from them.",
    )
    parser.add_argument(
        "--address",
        default=None,
        help="Ray cluster to join (default: $RAY_ADDRESS, which `ray job submit` sets; else a local instance).",
    )
    parser.add_argument(
        "--scratch",
        default=os.environ.get("MLRAY_SCRATCH"),
        help="Local scratch folder for a URI --out (default: $MLRAY_SCRATCH, else the system temp folder).",
    )
    return parser


SCORING_FLAGS = (
    ("--max-group", "Images with >= this many valid labels form one subgroup 'N+'"),
    ("--min-group-size", "ASMA leaves out subgroups with fewer images"),
    ("--n-boot", "Bootstrap resamples for the CIs, 0 = none"),
    ("--seed", "Bootstrap seed"),
)


def add_scoring_flags(parser: argparse.ArgumentParser) -> None:
    """``--max-group``, ``--min-group-size``, ``--n-boot``, ``--seed``: overrides of the config's ``scoring:``."""
    for flag, what in SCORING_FLAGS:
        parser.add_argument(flag, type=int, default=None, help=f"{what} (default: the config's scoring: section).")


def scoring_params(config: Any, args: argparse.Namespace) -> Any:
    """The config's :class:`~mlray.scoring.params.MetricParams` with the scoring flags given in ``args`` applied."""
    return config.scoring.params(
        max_group=args.max_group, min_group_size=args.min_group_size, n_boot=args.n_boot, seed=args.seed
    )


def connect(address: str | None, log: TextIO | None = None) -> None:
    """Join the cluster (``--address``, else ``$RAY_ADDRESS``, else a local instance) and say which one on ``log``
    (default stdout)."""
    from . import cluster

    cluster.connect(address)
    print(cluster.describe(), file=log or sys.stdout, flush=True)


def run_main(main: Callable[[list[str] | None], None], argv: list[str] | None = None) -> int:
    """Run a job's ``main(argv)`` and return its exit status (see the module docstring); SIGTERM (``ray job
    stop``) counts as an interrupt (:func:`mlray.cluster.interrupt_on_sigterm`)."""
    from .cluster import interrupt_on_sigterm

    interrupt_on_sigterm()
    return run_guarded(lambda: main(argv))
