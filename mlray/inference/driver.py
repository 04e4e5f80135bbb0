"""The driver of an inference run: plan, stream each pass of models, store finished shards, reconcile, manifest.

:func:`run_inference` plans every dataset's shards (:mod:`mlray.inference.plan`), asks the store which shards
each model has finished (:func:`mlray.store.store_listing`; parts of shards the plan no longer has stop the run,
:func:`mlray.store.refuse_stale_parts`), and streams the shards some model still needs through one Ray Data
pipeline per pass of models (:mod:`mlray.inference.pipeline`). As soon as all rows of a shard are back
(:class:`~mlray.inference.collect.ShardCollector`) it is stored for every model of the pass that lacked it
(:func:`mlray.store.finish_shard`: errors part first, then predictions part), so a killed run resumes where it
stopped and never stores a row twice. At the end every (dataset, model) is reconciled (images in = predictions +
errors) and ``OUT/run_manifest.json`` records the settings, the counts and each model's steady images/s.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..config import RunConfig
from ..datasets import plan_images
from ..errors import MlrayError
from ..images import ImagePlan
from ..models import ModelSpec, Preprocessing, model_info, resolve_preprocessing
from ..store import (
    check_layout,
    count_rows,
    errors_root,
    errors_table,
    finish_shard,
    finished_shards,
    predictions_root,
    predictions_table,
    refuse_stale_parts,
    store_listing,
)
from .collect import Rows, ShardCollector
from .pipeline import ModelStage, build_dataset, pass_spec, quiet_ray_data, start_counter
from .plan import (
    Hardware,
    PassPlan,
    PlannedShard,
    cluster_gpus,
    hardware_defaults,
    model_specs,
    plan_passes,
    planned_shards,
    planned_tags,
    reuse_notes,
    reused_shards,
)
from .progress import ProgressSink
from .ticks import Ticking
from .timing import BatchMarks

PROGRESS_INTERVAL = 0.5
"""Seconds between two progress updates while a pass runs."""


@dataclass
class ModelRun:
    """One model of the run: its spec, preprocessing, what the manifest says of it, and its measured rate."""

    spec: ModelSpec
    prep: Preprocessing
    info: dict[str, Any]
    steady: float | None = None  # images/s after its first batch, in this run


@dataclass
class InferenceResult:
    """What :func:`run_inference` did (the same figures as ``run_manifest.json``, plus what it reused)."""

    counts: dict[tuple[str, str], dict[str, int]] = field(
        default_factory=dict
    )  # (dataset, model) -> images/predictions/errors
    seconds: dict[str, float] = field(default_factory=dict)  # dataset -> seconds from the start to its last shard
    images_processed: dict[str, int] = field(default_factory=dict)  # dataset -> images read (summed over passes)
    total_seconds: float = 0.0
    steady_images_per_second: dict[str, float] = field(default_factory=dict)  # model -> after its first batch
    manifest: Path | None = None
    reused_shards: dict[tuple[str, str], int] = field(default_factory=dict)  # (dataset, model) -> found finished
    stored_shards: dict[tuple[str, str], int] = field(default_factory=dict)  # (dataset, model) -> finished at the end
    total_shards: dict[str, int] = field(default_factory=dict)  # dataset -> planned shards


def run_inference(
    config: RunConfig, out_dir: str | os.PathLike, progress: ProgressSink | None = None
) -> InferenceResult:
    """Predictions for every (dataset with images) x model of the config, into ``OUT/predictions`` (resumable).

    All datasets go through one streaming pipeline per pass of models (each model's actors start and load
    their weights once per run, not once per dataset); rows carry their shard key ``<dataset>/<shard tag>``.
    Models go in passes of ``models_per_pass`` (:func:`~mlray.inference.plan.hardware_defaults`), so hundreds of
    models never ask for more GPUs than the cluster has; ``inference.device: gpu`` plans GPU actors even before
    an autoscaling cluster has started its GPU nodes. ``progress`` (a :class:`ProgressSink`) gets a note of what
    the store already held, then the live counts of every pass.
    """
    import ray

    start = time.perf_counter()
    out = Path(out_dir)
    quiet_ray_data(ray)
    specs = model_specs(config.models, config.base_dir)
    if not specs:
        raise MlrayError(f"{config.source}: no models to evaluate (add a 'models:' list)")
    settings = config.inference
    resources = ray.cluster_resources()
    gpus = cluster_gpus(settings.device, resources)
    hw = hardware_defaults(settings, gpus, resources.get("CPU", 1), len(specs))
    runs = [ModelRun(spec, resolve_preprocessing(spec), model_info(spec)) for spec in specs]
    names = [r.spec.name for r in runs]

    plans = {d.name: plan_images(config, d) for d in config.datasets if d.images is not None}
    shards = planned_shards(plans)
    tags = planned_tags(shards)
    check_layout(predictions_root(out))
    check_layout(errors_root(out))
    for model in names:
        for name in plans:
            refuse_stale_parts(out, name, model, tags.get(name, set()))
    listing = store_listing(out, plans, names)
    result = InferenceResult(
        images_processed={name: 0 for name in plans},
        reused_shards=reused_shards(list(plans), names, shards, listing),
        total_shards={name: len(plan.shards) for name, plan in plans.items()},
    )
    if progress is not None:
        for line in reuse_notes(result.reused_shards, result.total_shards):
            progress.note(line)

    finished_at: dict[str, float] = {}
    processed: set[str] = set()
    for pp in plan_passes(names, hw.models_per_pass, shards, listing):
        processed.update(pp.todo)
        for name, n in pp.images(shards).items():
            result.images_processed[name] += n
        if pp.todo:
            pass_runs = runs[pp.first_model : pp.first_model + len(pp.models)]
            _run_pass(ray, pp, pass_runs, shards, config, hw, gpus, progress, out, finished_at, start)

    result.total_seconds = time.perf_counter() - start
    result.steady_images_per_second = {r.spec.name: r.steady for r in runs if r.steady is not None}
    for name, plan in plans.items():
        result.seconds[name] = finished_at.get(name, 0.0)
        for model in names:
            n_pred = count_rows(predictions_root(out), name, model)
            n_err = count_rows(errors_root(out), name, model)
            result.counts[(name, model)] = {"images": plan.n_images, "predictions": n_pred, "errors": n_err}
            result.stored_shards[(name, model)] = len(finished_shards(out, name, model) & tags.get(name, set()))
    result.manifest = _write_manifest(out, config, hw, plans, shards, processed, runs, result)
    bad = [(k, c) for k, c in result.counts.items() if c["predictions"] + c["errors"] != c["images"]]
    if bad:
        (d, m), c = bad[0]
        raise MlrayError(
            f"{d} / {m}: {c['images']:,} images in but {c['predictions']:,} predictions + {c['errors']:,} errors"
        )
    return result


def _run_pass(
    ray: Any,
    pp: PassPlan,
    runs: list[ModelRun],
    shards: Mapping[str, PlannedShard],
    config: RunConfig,
    hw: Hardware,
    gpus: float,
    progress: ProgressSink | None,
    out: Path,
    finished_at: dict[str, float],
    start: float,
) -> None:
    """One pass: the ``pp.todo`` shards through read -> decode -> one actor pool per model of ``runs`` -> the
    store (a shard is stored as soon as all its rows are back); progress about twice a second."""
    spec = pass_spec(
        [(r.spec, r.prep, pp.needs[r.spec.name]) for r in runs],
        [(key, shards[key].shard) for key in pp.todo],
        config.inference,
        hw,
        gpus,
    )
    counter = start_counter(ray) if progress is not None else None
    ds = build_dataset(ray, spec, counter)
    name_of = {s.out: s.spec.name for s in spec.stages}
    collector = ShardCollector({key: shards[key].n for key in pp.todo})
    left: dict[str, int] = {}
    for key in pp.todo:
        left[shards[key].dataset] = left.get(shards[key].dataset, 0) + 1
    stored = {name: 0 for name in pp.stored_totals}
    marks = [BatchMarks() for _ in spec.stages]
    if progress is not None:
        progress.begin(pp.label, dict(pp.stored_totals), dict(pp.model_totals))
    batches = Ticking(ds.iter_batches(batch_size=None, batch_format="numpy"), PROGRESS_INTERVAL)
    last = float("-inf")
    try:
        for batch in batches:
            if batch is not None:
                for stage, m in zip(spec.stages, marks):
                    m.add(batch[f"{stage.out}_t"])
                for key, rows in collector.add(batch):
                    planned = shards[key]
                    _store_shard(out, planned, rows, spec.stages)
                    stored[planned.dataset] += planned.n
                    left[planned.dataset] -= 1
                    if not left[planned.dataset]:
                        finished_at[planned.dataset] = time.perf_counter() - start
            now = time.monotonic()
            if progress is not None and counter is not None and now - last >= PROGRESS_INTERVAL:
                last = now
                inferred = {name_of[k]: n for k, n in ray.get(counter.get.remote()).items()}
                progress.update(dict(stored), inferred, now)
        if collector.pending:
            raise MlrayError(f"shards {collector.pending} came back incomplete")
        if progress is not None:  # the pipeline has drained: every model finished all its rows
            progress.update(dict(stored), dict(pp.model_totals), time.monotonic())
    finally:
        batches.close()
        if progress is not None:
            progress.end()
    for r, m in zip(runs, marks):
        r.steady = m.rate()


def _store_shard(out: Path, planned: PlannedShard, rows: Rows, stages: tuple[ModelStage, ...]) -> None:
    """Store one complete shard for every model stage that lacks it: its errors part, then its predictions part."""
    failed = rows["error"] != ""
    ok = ~failed
    ids = rows["image_id"].astype(str)
    for stage in stages:
        if planned.key not in stage.todo:
            continue
        name = stage.spec.name
        errors = errors_table(
            planned.dataset,
            name,
            ids[failed].tolist(),
            rows["path"][failed].astype(str).tolist(),
            rows["stage"][failed].astype(str).tolist(),
            rows["error"][failed].astype(str).tolist(),
        )
        predictions = predictions_table(
            planned.dataset, name, ids[ok].tolist(), rows[f"{stage.out}_idx"][ok], rows[f"{stage.out}_prob"][ok]
        )
        finish_shard(out, planned.dataset, name, planned.tag, predictions, errors)


def _write_manifest(
    out: Path,
    config: RunConfig,
    hw: Hardware,
    plans: Mapping[str, ImagePlan],
    shards: Mapping[str, PlannedShard],
    processed: set[str],
    runs: list[ModelRun],
    result: InferenceResult,
) -> Path:
    """Write ``OUT/run_manifest.json`` atomically: the config, the settings, per dataset and model the counts and
    timings, and each model's steady images/s. Returns its path."""
    n_all = sum(result.images_processed.values())
    manifest: dict[str, Any] = {
        "config": config.model_dump(mode="json"),
        "settings": {**config.inference.model_dump(), **hw.as_dict()},
        "datasets": {},
        "models": {},
    }
    for name, plan in plans.items():
        manifest["datasets"][name] = {
            "images": plan.n_images, "shards": len(plan.shards),
            "shards_processed": sum(1 for k in processed if shards[k].dataset == name),
            "images_processed": result.images_processed[name],
            "finished_after_s": round(result.seconds[name], 3), "skipped_non_image": plan.n_skipped_non_image,
        }  # fmt: skip
    for r in runs:
        manifest["models"][r.spec.name] = {
            **r.info,
            "steady_images_per_second": result.steady_images_per_second.get(r.spec.name),
        }
    manifest["seconds"] = round(result.total_seconds, 3)
    manifest["images_processed"] = n_all
    manifest["images_per_second"] = round(n_all / result.total_seconds, 2) if n_all else None
    manifest["counts"] = [{"dataset": d, "model": m, **c} for (d, m), c in result.counts.items()]
    manifest["finished"] = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    out.mkdir(parents=True, exist_ok=True)
    path = out / "run_manifest.json"
    tmp = out / ".run_manifest.json.tmp"
    tmp.write_text(json.dumps(manifest, indent=2, default=str))
    os.replace(tmp, path)
    return path
