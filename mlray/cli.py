"""The ``mlray`` command. It parses arguments, calls the library and prints through :mod:`mlray.console`; it owns
no logic of its own.

Exit status (:func:`mlray.console.run_guarded`): 0 success; 2 an error in the user's input, printed as one line
``mlray: error: ...`` with no traceback (also when raised inside a Ray task) or a usage error; 130 interrupted
(the line says what is stored and that the same command resumes); 1 anything else.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Optional

import typer

from . import __version__
from .console import (
    EXIT_INTERRUPTED,
    InferenceProgress,
    console,
    pct,
    print_analysis,
    print_demo_story,
    print_demo_summary,
    print_inference,
    print_plan,
    print_published_gaps,
    print_scores,
    print_stats,
    resumable,
    run_guarded,
)

app = typer.Typer(
    name="mlray",
    help="Multi-label evaluation of ImageNet classifiers on Ray: ReaL, variable top-k, ASMA, and the "
    "ImageNet -> ImageNetV2 gap decomposition.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def _version(value: bool) -> None:
    if value:
        console.print(f"mlray {__version__}", highlight=False)
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Print mlray's version and exit.")
    ] = False,
) -> None:
    """Multi-label evaluation of ImageNet classifiers on Ray."""


ConfigArg = Annotated[
    Optional[Path],
    typer.Argument(help="Run config (YAML). Without it: the built-in default, ImageNet val with timm's ReaL labels."),
]
OutOpt = Annotated[
    str,
    typer.Option(
        "--out", "-o", help="Report directory: a local folder or a URI (s3://, gs://, ...; created if missing)."
    ),
]
ScratchOpt = Annotated[
    Optional[str],
    typer.Option(
        "--scratch",
        envvar="MLRAY_SCRATCH",
        help="Local scratch folder for a URI --out (default: $MLRAY_SCRATCH, else the system temp folder).",
    ),
]
AddressOpt = Annotated[
    Optional[str],
    typer.Option("--address", help="Ray cluster to join (default: $RAY_ADDRESS, else start a local one)."),
]
CpusOpt = Annotated[Optional[int], typer.Option("--num-cpus", help="CPUs of a locally started Ray instance.")]
MaxGroupOpt = Annotated[
    Optional[int],
    typer.Option(help="Images with >= this many valid labels form one subgroup 'N+' (default: the config's scoring:)."),
]
MinGroupOpt = Annotated[
    Optional[int], typer.Option(help="ASMA leaves out subgroups with fewer images (default: the config's scoring:).")
]
NBootOpt = Annotated[
    Optional[int], typer.Option(help="Bootstrap resamples for the CIs, 0 = none (default: the config's scoring:).")
]
SeedOpt = Annotated[Optional[int], typer.Option(help="Bootstrap seed (default: the config's scoring:).")]


def _load(config: Path | None):
    from .config import default_config, load_config

    return default_config() if config is None else load_config(config)


@app.command()
def stats(
    config: ConfigArg = None,
    out: OutOpt = "mlray-out/stats",
    top_pairs: Annotated[
        int, typer.Option(help="How many of the most frequent class pairs to keep per dataset.")
    ] = 100,
    top_classes: Annotated[int, typer.Option(help="Classes listed per pair whose multi-label rate differs most.")] = 10,
    as_json: Annotated[bool, typer.Option("--json", help="Print the summary as JSON (for scripts).")] = False,
    address: AddressOpt = None,
    num_cpus: CpusOpt = None,
    scratch: ScratchOpt = None,
) -> None:
    """Label statistics per dataset and label-distribution comparison per pair, as Parquet reports."""
    from . import cluster
    from .checks import check_labels
    from .output import destination
    from .reports import stats_report

    cfg = _load(config)
    check_labels(cfg)  # every label source read and checked before Ray starts
    with destination(out, scratch, log=sys.stderr if as_json else None) as dest:
        cluster.connect(address, num_cpus)
        result = stats_report(cfg, dest.local, top_pairs=top_pairs, top_classes=top_classes)
        if as_json:
            print(json.dumps(result.summary_json(), indent=2))
            return
        print_stats(result)
        console.print(
            f"reports in [bold]{dest.show()}[/] ({', '.join(p.name for p in result.paths.values())}); "
            f"{result.seconds:.1f} s"
        )


@app.command("import-results")
def import_results_cmd(
    paths: Annotated[
        list[Path],
        typer.Argument(help="timm results-*.csv files, imagenet-testbed robustness_top1s.csv, or folders of them."),
    ],
    out: OutOpt = "mlray-out/reports",
    scratch: ScratchOpt = None,
) -> None:
    """Import published aggregate results (timm, imagenet-testbed) into external_results.parquet."""
    from .external import import_results
    from .output import destination

    with destination(out, scratch) as dest:
        df, summary, path = import_results(paths, dest.local)
        console.print(
            f"{len(df):,} rows: {df['model'].nunique():,} models x {df['dataset'].nunique()} datasets "
            f"from {df['source'].nunique()} files -> [bold]{dest.show(path.name)}[/]"
        )
        print_published_gaps(summary)


@app.command()
def analyze(
    reports: Annotated[
        str,
        typer.Argument(
            help="Report folder (model_metrics / subgroup_metrics of mlray score or evaluate, external_results of "
            "mlray import-results; or an evaluate output folder, whose reports/ is read); local or a URI."
        ),
    ],
    out: Annotated[
        Optional[str],
        typer.Option("--out", "-o", help="Where to write the analysis reports (default: the report folder)."),
    ] = None,
    n_boot: Annotated[int, typer.Option(help="Bootstrap resamples over models for the intervals (0 = none).")] = 1000,
    seed: Annotated[int, typer.Option(help="Bootstrap seed.")] = 0,
    scratch: ScratchOpt = None,
) -> None:
    """Fits of one dataset on another across models (linear, probit: effective robustness), rank changes from
    top-1 to the multi-label metrics, per-model family / pretraining / MLPC, and group summaries."""
    import tempfile

    from .analysis import analyze as run_analysis
    from .analysis import find_inputs
    from .output import destination, fetch_inputs

    with tempfile.TemporaryDirectory(prefix="mlray-analyze-", dir=scratch) as tmp:
        (local,) = fetch_inputs([reports], Path(tmp) / "in")
        source = find_inputs(local)
        target = out if out is not None else (reports if source == local else f"{reports.rstrip('/')}/reports")
        with destination(target, scratch) as dest:
            print_analysis(run_analysis(source, dest.local, n_boot=n_boot, seed=seed), where=dest.show())


@app.command()
def score(
    config: Annotated[Path, typer.Argument(help="Run config (YAML) naming the datasets and their labels.")],
    predictions: Annotated[
        list[str],
        typer.Option(
            "--predictions",
            "-p",
            help="Prediction store folders, store Parquet files, or CSV/Parquet files to import "
            "(image_id + top1 or topk), local or URIs. Several may follow one --predictions.",
        ),
    ],
    out: OutOpt = "mlray-out/reports",
    dataset: Annotated[
        Optional[str], typer.Option(help="Dataset of imported files that have no 'dataset' column.")
    ] = None,
    model: Annotated[Optional[str], typer.Option(help="Model of imported files that have no 'model' column.")] = None,
    max_group: MaxGroupOpt = None,
    min_group_size: MinGroupOpt = None,
    n_boot: NBootOpt = None,
    seed: SeedOpt = None,
    models_per_task: Annotated[
        int, typer.Option(help="Models scored per Ray task (1 = one task per model and dataset).")
    ] = 16,
    images: Annotated[
        Optional[list[str]],
        typer.Option(
            "--images",
            help="NAME=PATH: where dataset NAME's images are, for the gallery's thumbnails, when the config has no "
            "images: for it (imported predictions). Read with the dataset's layout:, else a manifest for "
            ".csv/.tsv/.parquet, else a flat folder. Repeat per dataset.",
        ),
    ] = None,
    address: AddressOpt = None,
    num_cpus: CpusOpt = None,
    scratch: ScratchOpt = None,
) -> None:
    """Score stored predictions: every multi-label metric, subgroups, ASMA, CIs, the gap decomposition, the
    confidence metrics and the gallery."""
    import tempfile

    from . import cluster
    from .checks import check_labels, check_predictions
    from .config import load_config
    from .output import destination, fetch_inputs
    from .reports import score_report

    cfg = load_config(config)
    params = cfg.scoring.params(max_group=max_group, min_group_size=min_group_size, n_boot=n_boot, seed=seed)
    check_labels(cfg)  # labels and prediction files to import are checked before Ray starts
    check_predictions(predictions, dataset, model)
    image_paths = _image_overrides(cfg, images or [])
    with destination(out, scratch) as dest, tempfile.TemporaryDirectory(prefix="mlray-inputs-", dir=scratch) as tmp:
        inputs = fetch_inputs(predictions, Path(tmp))  # URIs copied down; local paths as they are
        cluster.connect(address, num_cpus)
        result = score_report(
            cfg, inputs, dest.local, params, dataset=dataset, model=model, models_per_task=models_per_task,
            images=image_paths,
        )  # fmt: skip
        print_scores(result, [d.name for d in cfg.datasets])
        console.print(
            f"reports in [bold]{dest.show()}[/] ({', '.join(p.name for p in result.paths.values())}); "
            f"{result.seconds:.1f} s"
        )
        from .analysis import analyze as run_analysis  # mlray analyze on the reports just written

        print_analysis(run_analysis(dest.local, n_boot=params.n_boot, seed=params.seed), where=dest.show())


def _image_overrides(cfg, given: list[str]) -> dict[str, str]:
    """``--images NAME=PATH`` values as {dataset: path} (a local path made absolute: Ray tasks run elsewhere);
    a malformed value or an unknown dataset is a one-line error."""
    from .errors import MlrayError

    out: dict[str, str] = {}
    names = [d.name for d in cfg.datasets]
    for value in given:
        name, eq, path = value.partition("=")
        if not eq or not name or not path:
            raise MlrayError(
                f"--images {value!r}: expected NAME=PATH (a dataset of the config and where its images are)"
            )
        if name not in names:
            raise MlrayError(f"--images {value!r}: the config has no dataset {name!r} (have: {', '.join(names)})")
        out[name] = path if "://" in path else str(Path(path).resolve())
    return out


@app.command()
def propose(
    config: Annotated[
        Path,
        typer.Argument(help="Run config (YAML) naming the dataset; with images: the Label Studio tasks show them."),
    ],
    dataset: Annotated[str, typer.Option("--dataset", "-d", help="Dataset to propose candidate labels for.")],
    predictions: Annotated[
        list[str],
        typer.Option(
            "--predictions",
            "-p",
            help="An evaluate output folder (its predictions/ is read) or a prediction store folder; local or a URI.",
        ),
    ],
    out: Annotated[
        Path,
        typer.Option(
            "--out",
            "-o",
            help="Candidates CSV to write (NAME.csv); the Label Studio tasks go beside it as NAME.label-studio.json.",
        ),
    ],
    models: Annotated[
        Optional[str],
        typer.Option(help="Models to ensemble, comma-separated (default: every model stored for the dataset)."),
    ] = None,
    top: Annotated[int, typer.Option("--top", "-n", help="Candidate labels per image.")] = 20,
    scratch: Annotated[
        Optional[str],
        typer.Option(
            "--scratch",
            envvar="MLRAY_SCRATCH",
            help="Local scratch folder for a URI --predictions (default: $MLRAY_SCRATCH, else the system temp folder).",
        ),
    ] = None,
) -> None:
    """Candidate labels per image for annotating a dataset: classes ranked by the mean probability of an ensemble
    of stored predictions, as CSV and as Label Studio pre-annotated tasks (docs/propose.md)."""
    import tempfile

    from .config import load_config
    from .errors import MlrayError
    from .output import fetch_inputs
    from .propose import (
        ensemble_candidates,
        ensemble_models,
        image_locations,
        label_studio_path,
        prediction_store,
        write_candidates_csv,
        write_label_studio,
    )

    if len(predictions) != 1:
        raise MlrayError(f"--predictions takes one folder (got {len(predictions)}: {', '.join(predictions)})")
    if top < 1:
        raise MlrayError(f"--top must be at least 1 (got {top})")
    names = None if models is None else [m.strip() for m in models.split(",")]
    if names is not None and not all(names):
        raise MlrayError(f"--models {models!r}: an empty model name (write --models a,b)")
    cfg = load_config(config)
    cfg.dataset(dataset)  # one line naming the config's datasets when it has no such dataset
    with tempfile.TemporaryDirectory(prefix="mlray-inputs-", dir=scratch) as tmp:
        (local,) = fetch_inputs(predictions, Path(tmp))  # a URI copied down; a local path as it is
        store = prediction_store(local)
        chosen = ensemble_models(store, dataset, names)
        candidates = ensemble_candidates(store, dataset, chosen, top)
    images = image_locations(cfg, dataset)
    out.parent.mkdir(parents=True, exist_ok=True)
    csv_path = write_candidates_csv(candidates, out)
    json_path = write_label_studio(candidates, label_studio_path(out), images, chosen)
    console.print(
        f"{dataset}: {candidates['image_id'].nunique():,} images x {len(chosen)} models ({', '.join(chosen)}), "
        f"top {top} candidates -> {csv_path}, {json_path}",
        markup=False,
        highlight=False,
        soft_wrap=True,
    )


@app.command()
def evaluate(
    config: Annotated[Path, typer.Argument(help="Run config with datasets (images + layout + labels) and models.")],
    out: Annotated[
        str,
        typer.Option(
            "--out",
            "-o",
            help="Output directory: predictions/, errors/, run_manifest.json, reports/; a local folder or a URI "
            "(s3://, gs://, ...: each finished shard part is uploaded as it is written). Created if missing; "
            "re-runs resume.",
        ),
    ] = "mlray-out/evaluate",
    max_group: MaxGroupOpt = None,
    min_group_size: MinGroupOpt = None,
    n_boot: NBootOpt = None,
    seed: SeedOpt = None,
    address: AddressOpt = None,
    num_cpus: CpusOpt = None,
    scratch: ScratchOpt = None,
) -> None:
    """Inference (reusing stored predictions), then statistics, scores and the dashboard page, into one directory."""
    from . import cluster
    from .checks import preflight
    from .config import load_config
    from .output import destination

    cfg = load_config(config)
    params = cfg.scoring.params(max_group=max_group, min_group_size=min_group_size, n_boot=n_boot, seed=seed)
    preflight(cfg, models=True)  # labels, models, weights; --out by destination(): all before Ray starts
    with destination(out, scratch) as dest:
        cluster.connect(address, num_cpus)
        result = _run_evaluate(cfg, dest, params, f"mlray evaluate {config} --out {out}")
        dashboard = dest.show(result.dashboard.relative_to(dest.local).as_posix()) if result.dashboard else None
        console.print(
            f"predictions in [bold]{dest.show('predictions')}[/], errors in {dest.show('errors')}, "
            f"reports in [bold]{dest.show('reports')}[/]" + (f", dashboard [bold]{dashboard}[/]" if dashboard else "")
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

    from .checks import check_labels
    from .config import load_config
    from .datasets import shard_dataset
    from .output import check_output

    start = time.perf_counter()
    cfg = load_config(config)
    check_labels(cfg)
    check_output(out)
    written, labels = shard_dataset(cfg, dataset, out, shard_size, overwrite)
    n_labelled = sum(v is not None for v in labels.table.column("valid").to_pylist())
    console.print(
        f"{dataset}: {written.n_images:,} images -> {len(written):,} shards in [bold]{out}[/] "
        f"({n_labelled:,} with a multi-label set); {written.n_errors:,} unreadable -> {written.errors_path}; "
        f"{time.perf_counter() - start:.1f} s"
    )
    console.print(
        f"read back with:  - {{name: {dataset}, images: {out}, layout: parquet-shards}}"
        "   (labels travel in the shards)",
        highlight=False,
        soft_wrap=True,
    )


@app.command()
def plan(
    config: Annotated[Path, typer.Argument(help="Run config (YAML) with datasets (images: + layout:) and models.")],
    gpus: Annotated[
        Optional[int],
        typer.Option(
            "--gpus",
            help="Plan for this many GPUs, offline (no Ray). Default: the slots of the cluster joined (--address / "
            "$RAY_ADDRESS), else of a local Ray instance.",
        ),
    ] = None,
    out: Annotated[
        Optional[Path],
        typer.Option(
            "--out",
            "-o",
            help="Output folder of the run: the shards it already holds are what a resume skips, and the rates its "
            "earlier runs measured are used.",
        ),
    ] = None,
    as_json: Annotated[
        Optional[Path], typer.Option("--json", help="Also write the whole plan (every model, every chunk) here.")
    ] = None,
    address: AddressOpt = None,
    num_cpus: CpusOpt = None,
) -> None:
    """What a run would do, without running it: the models, preprocessings, images, what the store holds, the
    schedule and the estimated GPU-hours and wall time (offline with --gpus)."""
    from .config import load_config
    from .inference.estimate import estimate_dict, estimate_run
    from .inference.slots import cluster_nodes, gpu_slot_plan, plan_slots

    cfg = load_config(config)
    if gpus is not None:
        slot_plan, slots_from = gpu_slot_plan(gpus, cfg.inference), f"--gpus {gpus}"
    else:
        import ray

        from . import cluster

        cluster.connect(address, num_cpus)
        slot_plan, slots_from = plan_slots(cluster_nodes(ray), cfg.inference), cluster.describe()
    estimate = estimate_run(cfg, slot_plan, slots_from, out)
    print_plan(estimate)
    if as_json is not None:
        as_json.write_text(json.dumps(estimate_dict(estimate), indent=1))
        console.print(f"plan written to [bold]{as_json}[/]", soft_wrap=True)


def _run_evaluate(cfg, dest, params, command: str):
    """evaluate() into the :class:`~mlray.output.Destination` ``dest`` with live progress, then the counts (and
    where every listed entry went), timings, statistics and scores printed."""
    from .evaluate import accounting_lines
    from .evaluate import evaluate as run

    with resumable(dest.local / "predictions", command):
        result = run(cfg, dest, params, InferenceProgress())
    print_inference(result.inference)
    for line in accounting_lines(result.inference):
        console.print(line, markup=False, highlight=False)
    print_stats(result.stats)
    print_scores(result.scores, [d.name for d in cfg.datasets])
    return result


@app.command()
def dashboard(
    reports: Annotated[
        str,
        typer.Argument(
            help="Report directory (Parquet reports of mlray stats / score / evaluate / import-results); local or a "
            "URI."
        ),
    ],
    out: Annotated[
        Optional[str],
        typer.Option(
            "--out",
            "-o",
            help="HTML file (or folder) to write, local or a URI (default: dashboard.html beside the reports).",
        ),
    ] = None,
) -> None:
    """One self-contained HTML page (works offline) with the charts and sortable tables of a report directory."""
    import tempfile

    from .dashboard import build_dashboard
    from .io import scheme_of
    from .output import check_output_file, fetch_inputs, upload_file

    if out is None and scheme_of(reports) is None:  # beside the reports it finds (DIR, or DIR/reports)
        page = build_dashboard(reports)
        console.print(f"dashboard: [bold]{page}[/] (open it in a browser; it needs no network)", soft_wrap=True)
        return
    target = out if out is not None else f"{reports.rstrip('/')}/dashboard.html"
    if scheme_of(target) is None and Path(target).is_dir():  # a folder: the page goes inside it
        target = str(Path(target) / "dashboard.html")
    check_output_file(target)
    with tempfile.TemporaryDirectory(prefix="mlray-dashboard-") as tmp:
        (local_reports,) = fetch_inputs([reports], Path(tmp) / "in")
        remote = scheme_of(target) is not None
        path = build_dashboard(local_reports, Path(tmp) / "dashboard.html" if remote else Path(target))
        if remote:
            upload_file(path, target)
    shown = target if remote else path
    console.print(f"dashboard: [bold]{shown}[/] (open it in a browser; it needs no network)", soft_wrap=True)


@app.command()
def patchml(
    out: Annotated[
        Path, typer.Option("--out", "-o", help="Output folder: images/, labels.csv, patches.csv, patchml.json.")
    ] = Path("mlray-out/patchml"),
    boxes: Annotated[
        Optional[Path],
        typer.Option(
            help="Box file: a table image_id,class,x0,y0,x1,y1 (CSV/TSV/Parquet), "
            "or with --class-labels wsolevaluation's localization.txt."
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
        f"multi-label share {pct(result.multi_fraction)} -> [bold]{result.labels}[/] (+ {result.patches.name}, images/)"
    )
    console.print(
        f"use it in a run config:  - {{name: patchml, images: {result.labels}, layout: manifest}}",
        highlight=False,
        soft_wrap=True,
    )


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
    from .demo import build_demo, read_story, summarize

    start = time.perf_counter()
    build = build_demo(out, small=small)  # the composition story is computed here, without Ray (a few seconds)
    print_demo_story(read_story(out / "reports"))
    console.print(
        f"demo sets in [bold]{out}[/]: {sum(build.single.n_images.values())} single-object images, "
        f"{sum(build.multi.n_images.values())} multi-object PatchML images; run config {build.config_path}"
    )
    from .output import destination

    with destination(out) as dest:
        cluster.connect(address, num_cpus)
        command = f"mlray demo --out {out}" + (" --small" if small else "")
        result = _run_evaluate(build.config, dest, build.params, command)
    print_demo_summary(summarize(result.reports))
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


def _invoke(argv: list[str]) -> None:
    """Run the typer app without click's standalone handling, so that :func:`run_guarded` owns the exit status."""
    try:
        code = app(args=argv, prog_name="mlray", standalone_mode=False)
    except typer.Abort as exc:  # click turns Ctrl-C into Abort
        raise KeyboardInterrupt from exc
    except Exception as exc:
        if not (hasattr(exc, "show") and hasattr(exc, "exit_code")):
            raise
        exc.show()  # a usage error (click's ClickException, vendored by typer): its own message, exit status 2
        raise SystemExit(exc.exit_code) from None
    if code == EXIT_INTERRUPTED:  # typer turns Ctrl-C into an exit status of 130
        raise KeyboardInterrupt
    if isinstance(code, int) and code:
        raise SystemExit(code)


def main(argv: list[str] | None = None) -> int:
    """Console entry point: see the module docstring for the exit status (SIGTERM counts as an interrupt)."""
    from .cluster import interrupt_on_sigterm

    interrupt_on_sigterm()
    args = _expand_multi_options(list(sys.argv[1:] if argv is None else argv))
    return run_guarded(lambda: _invoke(args))


if __name__ == "__main__":
    sys.exit(main())
