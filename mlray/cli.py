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
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
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
            console.print(
                f"  {s.stats['n_skipped_unknown']:,} label entries named images outside the dataset (skipped)"
            )
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
    top_pairs: Annotated[
        int, typer.Option(help="How many of the most frequent class pairs to keep per dataset.")
    ] = 100,
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
    console.print(
        f"reports in [bold]{out}[/] ({', '.join(p.name for p in result.paths.values())}); {result.seconds:.1f} s"
    )


@app.command("import-results")
def import_results_cmd(
    paths: Annotated[
        list[Path],
        typer.Argument(help="timm results-*.csv files, imagenet-testbed robustness_top1s.csv, or folders of them."),
    ],
    out: OutOpt = Path("mlray-out/reports"),
) -> None:
    """Import published aggregate results (timm, imagenet-testbed) into external_results.parquet."""
    from .external import import_results

    df, summary, path = import_results(paths, out)
    console.print(
        f"{len(df):,} rows: {df['model'].nunique():,} models x {df['dataset'].nunique()} datasets "
        f"from {df['source'].nunique()} files -> [bold]{path}[/]"
    )
    table = Table(
        title="ImageNet val -> ImageNetV2 MatchedFrequency top-1 gap across models (points)", title_justify="left"
    )
    for col in ("collection", "models", "mean", "median", "std", "min", "p10", "p90", "max"):
        table.add_column(col, justify="left" if col == "collection" else "right")
    for r in summary.itertuples():
        table.add_row(
            r.collection,
            f"{r.count:,}",
            *(f"{100 * getattr(r, c):.2f}" for c in ("mean", "median", "std", "min", "p10", "p90", "max")),
        )
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
            t = Table(
                title=f"Gap {da} -> {db} in points (share explained by the label-count mix)", title_justify="left"
            )
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
                        share = (
                            r["composition"] / r["gap"]
                            if r["gap"] and r["composition"] == r["composition"]
                            else float("nan")
                        )
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
        typer.Option(
            "--predictions",
            "-p",
            help="Prediction store folders, store Parquet files, or CSV/Parquet files to import (image_id + top1 or topk). Several may follow one --predictions.",
        ),
    ],
    out: OutOpt = Path("mlray-out/reports"),
    dataset: Annotated[
        Optional[str], typer.Option(help="Dataset of imported files that have no 'dataset' column.")
    ] = None,
    model: Annotated[Optional[str], typer.Option(help="Model of imported files that have no 'model' column.")] = None,
    max_group: Annotated[
        int, typer.Option(help="Images with >= this many valid labels form one merged subgroup 'N+'.")
    ] = 5,
    min_group_size: Annotated[int, typer.Option(help="ASMA leaves out subgroups with fewer images.")] = 10,
    n_boot: Annotated[int, typer.Option(help="Bootstrap resamples for the CIs (0 = none).")] = 1000,
    seed: Annotated[int, typer.Option(help="Bootstrap seed.")] = 0,
    models_per_task: Annotated[
        int, typer.Option(help="Models scored per Ray task (1 = one task per model and dataset).")
    ] = 16,
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
    console.print(
        f"reports in [bold]{out}[/] ({', '.join(p.name for p in result.paths.values())}); {result.seconds:.1f} s"
    )


@app.command()
def evaluate(
    config: Annotated[Path, typer.Argument(help="Run config with datasets (images + layout + labels) and models.")],
    out: Annotated[
        Path,
        typer.Option(
            "--out",
            "-o",
            help="Output directory: predictions/, errors/, run_manifest.json, reports/ (created if missing; re-runs resume).",
        ),
    ] = Path("mlray-out/evaluate"),
    n_boot: Annotated[int, typer.Option(help="Bootstrap resamples for the CIs (0 = none).")] = 1000,
    address: AddressOpt = None,
    num_cpus: CpusOpt = None,
) -> None:
    """Inference (reusing stored predictions), then statistics, scores and the dashboard page, into one directory."""
    from . import cluster
    from .config import load_config
    from .metrics import MetricParams

    cfg = load_config(config)
    cluster.connect(address, num_cpus)
    result = _run_evaluate(cfg, out, MetricParams(n_boot=n_boot))
    console.print(
        f"predictions in [bold]{out / 'predictions'}[/], errors in {out / 'errors'}, reports in [bold]{result.reports}[/]"
        + (f", dashboard [bold]{result.dashboard}[/]" if result.dashboard else "")
    )


@app.command()
def shard(
    config: Annotated[Path, typer.Argument(help="Run config (YAML) naming the dataset.")],
    dataset: Annotated[str, typer.Option("--dataset", "-d", help="Name of the dataset (with images:) to convert.")],
    out: Annotated[
        str, typer.Option("--out", "-o", help="Output folder or URI (s3://, gs://) for the Parquet shards.")
    ],
    shard_size: Annotated[int, typer.Option(help="Images per Parquet shard.")] = 1000,
    overwrite: Annotated[bool, typer.Option(help="Replace shard files already in the output.")] = False,
) -> None:
    """Convert a dataset's images (any layout) into Parquet shards (image bytes + joined labels), the format
    that streams best from object storage; read them back with layout: parquet-shards."""
    import time

    from .config import load_config, shard_dataset

    start = time.perf_counter()
    cfg = load_config(config)
    written, labels = shard_dataset(cfg, dataset, out, shard_size, overwrite)
    n_labelled = sum(v is not None for v in labels.table.column("valid").to_pylist())
    console.print(
        f"{dataset}: {written.n_images:,} images -> {len(written):,} shards in [bold]{out}[/] "
        f"({n_labelled:,} with a multi-label set); {written.n_errors:,} unreadable -> {written.errors_path}; "
        f"{time.perf_counter() - start:.1f} s"
    )
    console.print(
        f"read back with:  - {{name: {dataset}, images: {out}, layout: parquet-shards}}   (labels travel in the shards)",
        highlight=False,
        soft_wrap=True,
    )


class _RateProgress(Progress):
    """rich Progress whose tasks carry a ``rate`` field: images/s since the task's first image."""

    def add_task(self, description, **kw):
        return super().add_task(description, rate="", **kw)

    def update(self, task_id, **kw):
        super().update(task_id, **kw)
        task = self._tasks[task_id]
        if task.completed and task.elapsed:
            task.fields["rate"] = f"{task.completed / task.elapsed:,.1f} img/s"

    def advance(self, task_id, advance=1):
        self.update(task_id, advance=advance)


def _run_evaluate(cfg, out: Path, params):
    """evaluate() with rich progress, then the counts, timings, statistics and scores printed."""
    from .evaluate import evaluate as run

    speed = TextColumn("{task.fields[rate]}")
    with _RateProgress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), speed, TimeElapsedColumn(),
                       console=console, transient=False) as progress:  # fmt: skip
        result = run(cfg, out, params, progress)
    inf = result.inference
    for (dataset, model), c in inf.counts.items():
        console.print(
            f"{dataset} / {model}: {c['images']:,} images = {c['predictions']:,} predictions + {c['errors']:,} errors"
        )
    n = sum(inf.images_processed.values())
    console.print(
        f"{n:,} images inferred by {len({m for _, m in inf.counts})} models in {inf.total_seconds:.1f} s"
        + (f" ({n / inf.total_seconds:.1f} img/s, start-up included)" if n else " (all reused from the store)")
    )
    _print_stats(result.stats)
    _print_scores(result.scores, [d.name for d in cfg.datasets])
    return result


@app.command()
def dashboard(
    reports: Annotated[
        Path,
        typer.Argument(help="Report directory (Parquet reports of mlray stats / score / evaluate / import-results)."),
    ],
    out: Annotated[
        Optional[Path], typer.Option("--out", "-o", help="HTML file to write (default: DIR/dashboard.html).")
    ] = None,
) -> None:
    """One self-contained HTML page (works offline) with the charts and sortable tables of a report directory."""
    from .dashboard import build_dashboard

    path = build_dashboard(reports, out)
    console.print(f"dashboard: [bold]{path}[/] (open it in a browser; it needs no network)", soft_wrap=True)


@app.command()
def patchml(
    out: Annotated[
        Path, typer.Option("--out", "-o", help="Output folder: images/, labels.csv, patches.csv, patchml.json.")
    ] = Path("mlray-out/patchml"),
    boxes: Annotated[
        Optional[Path],
        typer.Option(
            help="Box file: a table image_id,class,x0,y0,x1,y1 (CSV/TSV/Parquet), or with --class-labels wsolevaluation's localization.txt."
        ),
    ] = None,
    images: Annotated[
        Optional[Path], typer.Option(help="Folder of the images the boxes are drawn on (image id = file stem).")
    ] = None,
    class_labels: Annotated[
        Optional[Path],
        typer.Option(
            help="Class of each image for a wsolevaluation box file (file_name,class_index CSV or class_labels.txt)."
        ),
    ] = None,
    whole: Annotated[
        Optional[Path],
        typer.Option(help="Instead of boxes: a folder of whole images named <wnid>... or in <wnid>/ folders."),
    ] = None,
    layout: Annotated[
        Optional[list[str]],
        typer.Option(help="Grid layouts ROWSxCOLS[:N], repeatable or comma-separated (default 1x1,1x2,2x2,3x3)."),
    ] = None,
    per_layout: Annotated[int, typer.Option(help="Images per layout (a layout's own :N wins).")] = 50,
    patch_size: Annotated[int, typer.Option(help="Side of a grid cell in pixels.")] = 224,
    spacing: Annotated[int, typer.Option(help="Background pixels between cells and around the grid.")] = 0,
    background: Annotated[str, typer.Option(help="Background colour: R,G,B, #rrggbb or a name.")] = "124,116,104",
    distinct: Annotated[
        bool, typer.Option("--distinct/--repeat-classes", help="No class twice in one image (default), or allow it.")
    ] = True,
    min_patch_size: Annotated[
        int, typer.Option(help="Boxes narrower or lower than this (source pixels) are skipped and counted.")
    ] = 32,
    resize: Annotated[str, typer.Option(help="fit (keep aspect ratio, centred) or stretch.")] = "fit",
    square: Annotated[
        bool,
        typer.Option(
            "--square/--no-square",
            help="Centre the grid on a square canvas (default) so a model's centre crop cuts no patch.",
        ),
    ] = True,
    seed: Annotated[int, typer.Option(help="Random seed: the same seed gives byte-identical output.")] = 0,
) -> None:
    """Build a PatchML set: object patches (boxes or whole images) resized onto grids; labels = the classes placed."""
    from .patchml import PatchMLOptions, build_patchml, open_source, parse_color, parse_layouts

    source = open_source(boxes=boxes, images=images, class_labels=class_labels, whole=whole)
    options = PatchMLOptions(
        layouts=parse_layouts(layout or ["1x1,1x2,2x2,3x3"], per_layout), patch_size=patch_size, spacing=spacing,
        background=parse_color(background), distinct=distinct, min_patch_size=min_patch_size, resize=resize,
        square=square, seed=seed,
    )  # fmt: skip
    result = build_patchml(source, options, out)
    console.print(
        f"source: {source.description}: {source.n_entries:,} entries -> {result.n_pool:,} usable patches",
        soft_wrap=True,
    )
    for why, n in result.skipped.items():
        console.print(f"  skipped {n:,} ({why})")
    images_made = ", ".join(f"{k}: {v:,}" for k, v in result.n_images.items())
    console.print(
        f"{sum(result.n_images.values()):,} images ({images_made}) from {result.n_patches_used:,} distinct patches; "
        f"multi-label share {_pct(result.multi_fraction)} -> [bold]{result.labels}[/] (+ {result.patches.name}, images/)"
    )
    console.print(
        f"use it in a run config:  - {{name: patchml, images: {result.labels}, layout: manifest}}",
        highlight=False,
        soft_wrap=True,
    )


def _print_demo_summary(summary) -> None:
    """The demo's per-model tables: top-1 vs variable top-k on both sets, then the single -> multi gap split."""

    def pts(v: float) -> str:
        return "n/a" if v != v else f"{round(100 * v, 1) + 0.0:+.1f}"

    table = Table(title="Demo (%): S = single-object set, M = multi-object PatchML set", title_justify="left")
    cols = {"top1_single": "top-1 S", "top1_multi": "top-1 M", "vtopk_all_single": "var. top-k S",
            "vtopk_all_multi": "var. top-k M", "real_top1_single": "ReaL S", "real_top1_multi": "ReaL M"}  # fmt: skip
    table.add_column("model", no_wrap=True)
    for label in cols.values():
        table.add_column(label, justify="right")
    for _, r in summary.iterrows():
        table.add_row(r["model"], *("n/a" if r[c] != r[c] else f"{100 * r[c]:.1f}" for c in cols))
    console.print(table)
    gaps = Table(title="Gap S -> M (points) = composition (label-count mix) + within subgroups", title_justify="left")
    gaps.add_column("model", no_wrap=True)
    for label in ("top-1 gap", "comp.", "within", "var. top-k gap", "comp.", "within"):
        gaps.add_column(label, justify="right")
    for _, r in summary.iterrows():
        gaps.add_row(
            r["model"], *(pts(r[f"{m}_{p}"]) for m in ("top1", "vtopk_all") for p in ("gap", "composition", "within"))
        )
    console.print(gaps)


@app.command()
def demo(
    out: Annotated[
        Path, typer.Option("--out", "-o", help="Demo folder: photos, the two sets, run config, predictions, reports.")
    ] = Path("mlray-out/demo"),
    small: Annotated[bool, typer.Option(help="A smaller multi-object set (3 + 3 grids instead of 15 + 15).")] = False,
    address: AddressOpt = None,
    num_cpus: CpusOpt = None,
) -> None:
    """Offline demo: real photos shipped with scikit-image -> a single-object set and a PatchML multi-object set,
    evaluated with the three pretrained EfficientNet-Lite models; reports, dashboard and a summary."""
    import time

    from . import cluster
    from .demo import build_demo, summarize

    start = time.perf_counter()
    build = build_demo(out, small=small)
    console.print(
        f"demo sets in [bold]{out}[/]: {sum(build.single.n_images.values())} single-object images, "
        f"{sum(build.multi.n_images.values())} multi-object PatchML images; run config {build.config_path}"
    )
    cluster.connect(address, num_cpus)
    result = _run_evaluate(build.config, out, build.params)
    _print_demo_summary(summarize(result.reports))
    dashboard = next((p for p in (result.reports / "dashboard.html", out / "dashboard.html") if p.is_file()), None)
    console.print(
        f"reports in [bold]{result.reports}[/]"
        + (f", dashboard [bold]{dashboard}[/]" if dashboard else "")
        + f"; demo done in {time.perf_counter() - start:.0f} s"
    )


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
