"""The ``mlray`` command. It parses arguments, calls the library and prints; it owns no logic of its own.

Errors in the user's input (:class:`mlray.errors.MlrayError`) are printed as one line, ``mlray: error: ...``,
with exit status 2 and no traceback.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console
from rich.table import Table

from .errors import MlrayError

app = typer.Typer(
    name="mlray",
    help="Multi-label evaluation of ImageNet classifiers on Ray: ReaL, variable top-k, ASMA, and the "
    "ImageNet -> ImageNetV2 gap decomposition.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
console = Console()


@app.callback()
def _root() -> None:
    """Multi-label evaluation of ImageNet classifiers on Ray."""

err_console = Console(stderr=True)

ConfigArg = Annotated[
    Optional[Path],
    typer.Argument(help="Run config (YAML). Without it: the built-in default, ImageNet val with timm's ReaL labels."),
]
OutOpt = Annotated[Path, typer.Option("--out", "-o", help="Report directory (created if missing).")]
AddressOpt = Annotated[
    Optional[str],
    typer.Option("--address", help="Ray cluster to join (default: $RAY_ADDRESS, else start a local one)."),
]
CpusOpt = Annotated[Optional[int], typer.Option("--num-cpus", help="CPUs of a locally started Ray instance.")]


def _load(config: Path | None):
    from .config import default_config, load_config

    return default_config() if config is None else load_config(config)


def _pct(v: float) -> str:
    return "-" if v != v else f"{100 * v:.2f} %"


def _print_stats(result) -> None:
    """One column per dataset (tables stay readable at 80 columns), then one small table per pair."""
    table = Table(title="Label statistics (fractions of labelled images)", title_justify="left")
    table.add_column("")
    for s in result.summaries:
        table.add_column(s.name, justify="right", overflow="fold")
    st = [s.stats for s in result.summaries]
    rows = [
        ("images", lambda x: f"{x['n_images']:,}"),
        ("labelled", lambda x: f"{x['n_labelled']:,}"),
        ("empty (no valid class)", lambda x: f"{x['n_empty']:,}"),
        ("not annotated", lambda x: f"{x['n_unannotated']:,}"),
        ("multi-label (>= 2)", lambda x: f"{x['n_multi']:,}"),
        ("multi-label share", lambda x: _pct(x["multi_fraction"])),
        ("mean valid labels", lambda x: f"{x['mean_labels']:.3f}"),
        ("original label in valid set", lambda x: _pct(x["original_in_valid_fraction"])),
    ]
    for label, fmt in rows:
        table.add_row(label, *(fmt(x) for x in st))
    console.print(table)
    for s in result.summaries:
        hist = ", ".join(f"{k}: {v}" for k, v in zip(s.hist["n_labels"], s.hist["n_images"]))
        console.print(f"[bold]{s.name}[/] images by number of valid labels: {{{hist}}}", soft_wrap=True)
        if s.stats.get("n_skipped_unknown"):
            console.print(f"  {s.stats['n_skipped_unknown']:,} label entries named images outside the dataset (skipped)")
        if s.stats.get("n_merged_duplicate_labels"):
            console.print(f"  {s.stats['n_merged_duplicate_labels']:,} label sets named a class twice (kept once)")
    comp = result.comparison
    for (da, db), rows in comp.groupby(["dataset_a", "dataset_b"], sort=False):
        m = rows[rows["measure"] != "class_multi_rate_difference"].set_index("measure")
        ctable = Table(title=f"{da} vs {db}", title_justify="left")
        ctable.add_column("measure")
        ctable.add_column("value", justify="right")
        for measure, r in m.iterrows():
            ci = "" if r["ci_low"] != r["ci_low"] else f"  (95 % CI {r['ci_low']:+.4f}, {r['ci_high']:+.4f})"
            ctable.add_row(measure, f"{r['value']:.4g}{ci}")
        top = rows[rows["measure"] == "class_multi_rate_difference"].head(3)
        if len(top):
            ctable.add_row(
                "multi-label rate differs most",
                "; ".join(f"{r.name} {r.value:+.2f}" for r in top.itertuples()),
            )
        console.print(ctable)


@app.command()
def stats(
    config: ConfigArg = None,
    out: OutOpt = Path("mlray-out/stats"),
    top_pairs: Annotated[int, typer.Option(help="How many of the most frequent class pairs to keep per dataset.")] = 100,
    top_classes: Annotated[int, typer.Option(help="Classes listed per pair whose multi-label rate differs most.")] = 10,
    as_json: Annotated[bool, typer.Option("--json", help="Print the summary as JSON (for scripts).")] = False,
    address: AddressOpt = None,
    num_cpus: CpusOpt = None,
) -> None:
    """Label statistics per dataset and label-distribution comparison per pair, as Parquet reports."""
    from . import cluster
    from .reports import stats_report

    cfg = _load(config)
    cluster.connect(address, num_cpus)
    result = stats_report(cfg, out, top_pairs=top_pairs, top_classes=top_classes)
    if as_json:
        print(json.dumps(result.summary_json(), indent=2))
        return
    _print_stats(result)
    console.print(f"reports in [bold]{out}[/] ({', '.join(p.name for p in result.paths.values())}); {result.seconds:.1f} s")


def main(argv: list[str] | None = None) -> int:
    """Console entry point: usage errors are click's; input errors one line, exit status 2."""
    try:
        app(args=argv, prog_name="mlray")
    except MlrayError as exc:
        err_console.print(f"[red]mlray: error:[/] {exc}", highlight=False, soft_wrap=True)
        return 2
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
