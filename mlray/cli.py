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


@app.command("import-results")
def import_results_cmd(
    paths: Annotated[list[Path], typer.Argument(help="timm results-*.csv files, imagenet-testbed robustness_top1s.csv, or folders of them.")],
    out: OutOpt = Path("mlray-out/reports"),
) -> None:
    """Import published aggregate results (timm, imagenet-testbed) into external_results.parquet."""
    from .external import import_results

    df, summary, path = import_results(paths, out)
    console.print(
        f"{len(df):,} rows: {df['model'].nunique():,} models x {df['dataset'].nunique()} datasets "
        f"from {df['source'].nunique()} files -> [bold]{path}[/]"
    )
    table = Table(title="ImageNet val -> ImageNetV2 MatchedFrequency top-1 gap across models (points)", title_justify="left")
    for col in ("collection", "models", "mean", "median", "std", "min", "p10", "p90", "max"):
        table.add_column(col, justify="left" if col == "collection" else "right")
    for r in summary.itertuples():
        table.add_row(r.collection, f"{r.count:,}", *(f"{100 * getattr(r, c):.2f}" for c in ("mean", "median", "std", "min", "p10", "p90", "max")))
    console.print(table)


def _print_scores(result, dataset_order: list[str]) -> None:
    mm = result.frames["model_metrics"]
    table = Table(title="Headline metrics (%; CIs in model_metrics.parquet)", title_justify="left")
    show = ["top1", "real_top1", "vtopk_all", "vtopk_frac", "asma_vtopk_all"]
    for col in ("model", "dataset", *show):
        table.add_column(col, justify="left" if col in ("model", "dataset") else "right", overflow="fold")
    for (model, dataset), rows in mm.groupby(["model", "dataset"], sort=False):
        m = rows.set_index("metric")
        cells = []
        for metric in show:
            r = m.loc[metric]
            cells.append("n/a" if not r["available"] else f"{100 * r['value']:.2f}")
        table.add_row(model, dataset, *cells)
    console.print(table)
    gd = result.frames["gap_decomposition"]
    if len(gd):
        order = {name: i for i, name in enumerate(dataset_order)}
        forward = gd[[order[a] < order[b] for a, b in zip(gd.dataset_a, gd.dataset_b)]]
        for (da, db), rows in forward.groupby(["dataset_a", "dataset_b"], sort=False):
            t = Table(title=f"Gap {da} -> {db} in points (share explained by the label-count mix)", title_justify="left")
            t.add_column("model", overflow="fold")
            for metric in ("top1", "real_top1", "vtopk_all"):
                t.add_column(metric, justify="right")
            t.add_column("asma_vtopk_all", justify="right")
            for model, mrows in rows.groupby("model", sort=False):
                m = mrows.set_index("metric")
                cells = []
                for metric in ("top1", "real_top1", "vtopk_all"):
                    r = m.loc[metric]
                    if r["gap"] != r["gap"]:
                        cells.append("n/a")
                    else:
                        share = r["composition"] / r["gap"] if r["gap"] and r["composition"] == r["composition"] else float("nan")
                        cells.append(f"{100 * r['gap']:+.2f} ({'-' if share != share else f'{100 * share:.0f} %'})")
                am = mm[(mm.model == model) & (mm.metric == "asma_vtopk_all")].set_index("dataset")["value"]
                cells.append(f"{100 * (am[da] - am[db]):+.2f}" if da in am and db in am else "n/a")
                t.add_row(model, *cells)
            console.print(t)
    for (dataset, model), (n_missing, examples) in result.missing.items():
        if n_missing:
            console.print(
                f"[yellow]{model} on {dataset}: {n_missing:,} images have no prediction (excluded), e.g. {', '.join(examples)}[/]"
            )


@app.command()
def score(
    config: Annotated[Path, typer.Argument(help="Run config (YAML) naming the datasets and their labels.")],
    predictions: Annotated[
        list[Path],
        typer.Option("--predictions", "-p", help="Prediction store folders, store Parquet files, or CSV/Parquet files to import (image_id + top1 or topk). Several may follow one --predictions."),
    ],
    out: OutOpt = Path("mlray-out/reports"),
    dataset: Annotated[Optional[str], typer.Option(help="Dataset of imported files that have no 'dataset' column.")] = None,
    model: Annotated[Optional[str], typer.Option(help="Model of imported files that have no 'model' column.")] = None,
    max_group: Annotated[int, typer.Option(help="Images with >= this many valid labels form one merged subgroup 'N+'.")] = 5,
    min_group_size: Annotated[int, typer.Option(help="ASMA leaves out subgroups with fewer images.")] = 10,
    n_boot: Annotated[int, typer.Option(help="Bootstrap resamples for the CIs (0 = none).")] = 1000,
    seed: Annotated[int, typer.Option(help="Bootstrap seed.")] = 0,
    models_per_task: Annotated[int, typer.Option(help="Models scored per Ray task (1 = one task per model and dataset).")] = 16,
    address: AddressOpt = None,
    num_cpus: CpusOpt = None,
) -> None:
    """Score stored predictions: every multi-label metric, subgroups, ASMA, CIs and the gap decomposition."""
    from . import cluster
    from .config import load_config
    from .metrics import MetricParams
    from .reports import score_report

    cfg = load_config(config)
    params = MetricParams(max_group=max_group, min_group_size=min_group_size, n_boot=n_boot, seed=seed)
    cluster.connect(address, num_cpus)
    result = score_report(cfg, predictions, out, params, dataset=dataset, model=model, models_per_task=models_per_task)
    _print_scores(result, [d.name for d in cfg.datasets])
    console.print(f"reports in [bold]{out}[/] ({', '.join(p.name for p in result.paths.values())}); {result.seconds:.1f} s")


@app.command()
def evaluate(
    config: Annotated[Path, typer.Argument(help="Run config with datasets (images + layout + labels) and models.")],
    out: OutOpt = Path("mlray-out/evaluate"),
    n_boot: Annotated[int, typer.Option(help="Bootstrap resamples for the CIs (0 = none).")] = 1000,
    address: AddressOpt = None,
    num_cpus: CpusOpt = None,
) -> None:
    """Inference (reusing stored predictions), then statistics and scores, into one report directory."""
    from . import cluster
    from .config import load_config
    from .metrics import MetricParams

    cfg = load_config(config)
    cluster.connect(address, num_cpus)
    result = _run_evaluate(cfg, out, MetricParams(n_boot=n_boot))
    console.print(f"predictions in [bold]{out / 'predictions'}[/], errors in {out / 'errors'}, reports in [bold]{result.reports}[/]")


def _run_evaluate(cfg, out: Path, params):
    """evaluate() with rich progress, then the counts, timings, statistics and scores printed."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from .evaluate import evaluate as run

    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.speed} img/s"),
                  TimeElapsedColumn(), console=console, transient=False) as progress:  # fmt: skip
        result = run(cfg, out, params, progress)
    inf = result.inference
    for (dataset, model), c in inf.counts.items():
        console.print(f"{dataset} / {model}: {c['images']:,} images = {c['predictions']:,} predictions + {c['errors']:,} errors")
    for dataset, seconds in inf.seconds.items():
        n = inf.images_processed.get(dataset, 0)
        console.print(f"{dataset}: {n:,} images inferred in {seconds:.1f} s" + (f" ({n / seconds:.1f} img/s)" if n else " (all reused)"))
    _print_stats(result.stats)
    _print_scores(result.scores, [d.name for d in cfg.datasets])
    return result


def _expand_multi_options(argv: list[str], options=("--predictions", "-p")) -> list[str]:
    """``--predictions a b c`` -> ``--predictions a --predictions b --predictions c`` (typer options take one value)."""
    out, i = [], 0
    while i < len(argv):
        out.append(argv[i])
        if argv[i] in options:
            i += 1
            first = True
            while i < len(argv) and (first or not argv[i].startswith("-")):
                if not first:
                    out.append(options[0])
                out.append(argv[i])
                first = False
                i += 1
            continue
        i += 1
    return out


def main(argv: list[str] | None = None) -> int:
    """Console entry point: usage errors are click's; input errors one line, exit status 2."""
    argv = _expand_multi_options(list(sys.argv[1:] if argv is None else argv))
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
