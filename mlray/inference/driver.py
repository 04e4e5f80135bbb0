"""The driver of an inference run: plan, schedule every model onto the slots, store each shard as it comes back,
reconcile, write the manifest.

:func:`run_inference` first sizes the model slots per node (:mod:`mlray.inference.slots`; a setting no node can
hold stops the run here, in one line) and starts their actors, whose processes import torch while the driver plans
(a run that stops before the dispatch kills them). It plans every dataset's shards (:mod:`mlray.inference.plan`),
asks the store which shards each model has finished (:func:`mlray.store.store_listing`; parts of shards the plan
no longer has stop the run, :func:`mlray.store.refuse_stale_parts`), and gives each model's missing shards, costed by
:mod:`mlray.inference.costs`, to the scheduler (:mod:`mlray.inference.schedule`) and the dispatch loop
(:mod:`mlray.inference.dispatch`). Each (model, shard) result is stored as soon as it is back
(:func:`mlray.store.finish_shard`: errors part first, then predictions part; :func:`_store_shard` is the one
place this module writes to the store), so a killed run resumes where it stopped and never stores a row twice. At
the end every (dataset, model) is reconciled (images in = predictions + errors) and ``OUT/run_manifest.json``
records the settings, the slots, the counts, each model's expected and steady images/s.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..config import InferenceConfig, RunConfig
from ..datasets import class_space, load_dataset_labels, plan_images
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
from .costs import Rate, model_rate, stored_rates
from .dispatch import dispatch, slot_options
from .plan import (
    PlannedShard,
    PrepGroup,
    build_works,
    model_specs,
    planned_shards,
    planned_tags,
    prep_groups,
    reuse_notes,
    reused_shards,
    shard_bytes,
)
from .progress import ProgressSink
from .schedule import LOAD_SECONDS, Chunk, Scheduler, Work
from .slots import Node, Slot, SlotPlan, cluster_nodes, plan_slots
from .timing import SteadyRates
from .worker import ModelStage, PredictorSettings, ShardResult, SlotWorker, decode_batch, start_counter

PROGRESS_INTERVAL = 0.5
"""Seconds between two progress updates while the run goes."""
CACHE_OBJECT_STORES = 2.0
"""The decode cache may hold this many times the cluster's object store memory (Ray spills the rest to disk)."""


@dataclass
class ModelRun:
    """One model of the run: its spec, preprocessing, what the manifest says of it, its expected and measured rate."""

    spec: ModelSpec
    prep: Preprocessing
    info: dict[str, Any]
    rate: Rate | None = None  # expected images/s on one slot, and where the figure comes from
    steady: float | None = None  # images/s after its first batch, in this run


@dataclass
class InferenceResult:
    """What :func:`run_inference` did (the same figures as ``run_manifest.json``, plus what it reused)."""

    counts: dict[tuple[str, str], dict[str, int]] = field(
        default_factory=dict
    )  # (dataset, model) -> images/predictions/errors
    seconds: dict[str, float] = field(default_factory=dict)  # dataset -> seconds from the start to its last shard
    images_processed: dict[str, int] = field(default_factory=dict)  # dataset -> images read
    decodes: dict[str, int] = field(default_factory=dict)  # dataset -> images resized (summed over preprocessings)
    total_seconds: float = 0.0
    steady_images_per_second: dict[str, float] = field(default_factory=dict)  # model -> after its first batch
    manifest: Path | None = None
    reused_shards: dict[tuple[str, str], int] = field(default_factory=dict)  # (dataset, model) -> found finished
    stored_shards: dict[tuple[str, str], int] = field(default_factory=dict)  # (dataset, model) -> finished at the end
    total_shards: dict[str, int] = field(default_factory=dict)  # dataset -> planned shards
    slots: int = 0  # model slots the run planned
    preprocessings: int = 0  # distinct preprocessings (groups) among the models


def run_inference(
    config: RunConfig, out_dir: str | os.PathLike, progress: ProgressSink | None = None
) -> InferenceResult:
    """Predictions for every (dataset with images) x model of the config, into ``OUT/predictions`` (resumable).

    Every image is read and decoded once per distinct preprocessing of the models that lack it, and every model
    runs on the first free slot, longest first, until the work runs out (see :mod:`mlray.inference.schedule`).
    ``progress`` (a :class:`ProgressSink`) gets a note of what the store already held, then the live counts.
    """
    import ray

    start = time.perf_counter()
    if not config.models:
        raise MlrayError(f"{config.source}: no models to evaluate (add a 'models:' list)")
    settings = config.inference
    nodes = cluster_nodes(ray)
    slot_plan = plan_slots(nodes, settings)
    early: dict[str, Any] = {}  # slot id -> its actor, until the dispatch loop takes it
    try:  # the slots' processes import torch while the run is planned; those the dispatch never took go here
        for slot in slot_plan.slots:
            early[slot.id] = _start_slot(ray, slot, settings, slot_plan.batch_size)
        return _run_inference(ray, config, Path(out_dir), progress, start, nodes, slot_plan, early)
    finally:
        for handle in early.values():
            try:
                ray.kill(handle)
            except Exception:  # the run's own error (a lost connection, say) is the one to report
                pass


def _run_inference(
    ray: Any, config: RunConfig, out: Path, progress: ProgressSink | None, start: float, nodes: Sequence[Node],
    slot_plan: SlotPlan, early: dict[str, Any],
) -> InferenceResult:  # fmt: skip
    """:func:`run_inference` once its slots are started (``early``: slot id -> actor, each taken out as the dispatch
    loop uses it)."""
    settings = config.inference
    specs = model_specs(config.models, config.base_dir)  # never empty: a list file naming no model raises
    runs = [ModelRun(spec, resolve_preprocessing(spec), model_info(spec)) for spec in specs]
    names = [r.spec.name for r in runs]

    plans = {d.name: plan_images(config, d) for d in config.datasets if d.images is not None}
    classes: dict[str, np.ndarray] = {}  # dataset -> the classes it covers, for those that cover a subset
    for ds in config.datasets:  # a label outside a dataset's classes stops the run before any image is decoded
        space = class_space(config, ds) if ds.name in plans else None
        if space is not None:
            space.labels(load_dataset_labels(config, ds, plans[ds.name]).arrays(), ds.name)
            classes[ds.name] = space.members
    shards = planned_shards(plans)
    tags = planned_tags(shards)
    check_layout(predictions_root(out))
    check_layout(errors_root(out))
    for model in names:
        for name in plans:
            refuse_stale_parts(out, name, model, tags.get(name, set()))
    listing = store_listing(out, plans, names)
    groups = prep_groups([(r.spec.name, r.prep) for r in runs])
    result = InferenceResult(
        images_processed={name: 0 for name in plans},
        decodes={name: 0 for name in plans},
        reused_shards=reused_shards(list(plans), names, shards, listing),
        total_shards={name: len(plan.shards) for name, plan in plans.items()},
        slots=len(slot_plan.slots),
        preprocessings=len(groups),
    )
    if progress is not None:
        for line in reuse_notes(result.reused_shards, result.total_shards):
            progress.note(line)

    earlier = stored_rates(out, slot_plan.kind)
    for r in runs:
        r.rate = model_rate(r.spec.name, r.prep.input_size[1], earlier)
    works = build_works(groups, shards, listing, {r.spec.name: r.rate for r in runs if r.rate is not None})
    finished_at: dict[str, float] = {}
    if any(w.shards for w in works):
        cache = CACHE_OBJECT_STORES * sum(n.object_store_bytes for n in nodes) or float("inf")
        scheduler = Scheduler(
            works, shard_bytes(groups, works, shards), len(slot_plan.slots), cache_bytes=cache,
            load_seconds=LOAD_SECONDS, max_slots_per_work=settings.actors_per_model,
        )  # fmt: skip
        run = _Run(ray, config, out, runs, groups, works, shards, slot_plan, classes, progress, start, early)
        run.go(scheduler, lambda: [s for s in plan_slots(cluster_nodes(ray), settings).slots])
        finished_at = run.finished_at
        for key, n in run.stats_reads.items():
            result.images_processed[shards[key].dataset] += n * shards[key].n
        for key, n in run.stats_decodes.items():
            result.decodes[shards[key].dataset] += n * shards[key].n

    result.total_seconds = time.perf_counter() - start
    result.steady_images_per_second = {r.spec.name: r.steady for r in runs if r.steady is not None}
    for name, plan in plans.items():
        result.seconds[name] = finished_at.get(name, 0.0)
        for model in names:
            n_pred = count_rows(predictions_root(out), name, model)
            n_err = count_rows(errors_root(out), name, model)
            result.counts[(name, model)] = {"images": plan.n_images, "predictions": n_pred, "errors": n_err}
            result.stored_shards[(name, model)] = len(finished_shards(out, name, model) & tags.get(name, set()))
    result.manifest = _write_manifest(out, config, slot_plan, plans, runs, result)
    bad = [(k, c) for k, c in result.counts.items() if c["predictions"] + c["errors"] != c["images"]]
    if bad:
        (d, m), c = bad[0]
        raise MlrayError(
            f"{d} / {m}: {c['images']:,} images in but {c['predictions']:,} predictions + {c['errors']:,} errors"
        )
    return result


def _start_slot(ray: Any, slot: Slot, settings: InferenceConfig, batch_size: int) -> Any:
    """A new :class:`~mlray.inference.worker.SlotWorker` actor for ``slot`` (not configured yet)."""
    predictor = PredictorSettings(settings.precision, settings.channels_last, settings.compile, slot.threads)
    worker = ray.remote(SlotWorker).options(**slot_options(slot))
    return worker.remote(predictor, settings.k, batch_size)


class _Backend:
    """The real :class:`~mlray.inference.dispatch.Backend`: slots that run timm models, and
    :func:`~mlray.inference.worker.decode_batch` reading and decoding shards for the groups' preprocessings."""

    def __init__(
        self, ray: Any, config: RunConfig, runs: Sequence[ModelRun], groups: Sequence[PrepGroup],
        works: Sequence[Work], shards: Mapping[str, PlannedShard], slot_plan: SlotPlan,
        classes: Mapping[str, np.ndarray], counter: Any, early: dict[str, Any],
    ) -> None:  # fmt: skip
        by_name = {r.spec.name: r for r in runs}
        self._ray = ray
        self._stages = [ModelStage(by_name[w.name].spec, by_name[w.name].prep) for w in works]
        self._preps = {g.index: g.prep for g in groups}
        self._shards = shards
        self._settings = config.inference
        self._plan = slot_plan
        self._counter = counter
        self._classes = dict(classes)
        self._early = early
        self.decode_cpus = slot_plan.decode_cpus

    def start(self, slot: Slot) -> Any:
        """The :class:`~mlray.inference.worker.SlotWorker` actor of ``slot``: the one started before the run was
        planned (taken out of ``early``), else a new one; configured with the run's counter and class spaces."""
        handle = self._early.pop(slot.id, None)
        if handle is None:
            handle = _start_slot(self._ray, slot, self._settings, self._plan.batch_size)
        handle.configure.remote(self._counter, self._classes)
        return handle

    def payload(self, work: int) -> ModelStage:
        """The model stage of work ``work``."""
        return self._stages[work]

    def decoder(self, keys: Sequence[str], groups: Sequence[int]) -> tuple[Any, dict[str, Any]]:
        """:func:`~mlray.inference.worker.decode_batch` with the shards of ``keys`` and the preprocessings of
        ``groups``."""
        shards = {key: self._shards[key].shard for key in keys}
        preps = {g: self._preps[g] for g in groups}
        return decode_batch, {"shards": shards, "preps": preps, "max_pixels": self._settings.max_pixels,
                              "threads": self._plan.decode_threads}  # fmt: skip

    def rows(self, key: str) -> int:
        """Images in shard ``key``."""
        return self._shards[key].n


class _Run:
    """One dispatch of the run's works: stores each (model, shard) as it comes back, reports progress."""

    def __init__(
        self, ray: Any, config: RunConfig, out: Path, runs: list[ModelRun], groups: Sequence[PrepGroup],
        works: Sequence[Work], shards: Mapping[str, PlannedShard], slot_plan: SlotPlan,
        classes: Mapping[str, np.ndarray], progress: ProgressSink | None, start: float, early: dict[str, Any],
    ) -> None:  # fmt: skip
        self.ray, self.config, self.out, self.runs, self.groups = ray, config, out, runs, groups
        self.early = early
        self.classes = classes
        self.works, self.shards, self.slot_plan, self.progress, self.start = works, shards, slot_plan, progress, start
        self.finished_at: dict[str, float] = {}
        self.stats_reads: dict[str, int] = {}
        self.stats_decodes: dict[str, int] = {}
        self._owners: dict[str, int] = {}  # shard key -> works that still have to store it
        for w in works:
            for key in w.shards:
                self._owners[key] = self._owners.get(key, 0) + 1
        self._left: dict[str, int] = {}  # dataset -> shards some work still has to store
        self.stored_totals: dict[str, int] = {}
        for key in self._owners:
            d = shards[key].dataset
            self._left[d] = self._left.get(d, 0) + 1
            self.stored_totals[d] = self.stored_totals.get(d, 0) + shards[key].n
        self.model_totals = {w.name: sum(shards[k].n for k in w.shards) for w in works if w.shards}
        self.stored = {d: 0 for d in self.stored_totals}
        self.rates = SteadyRates()
        self._last = float("-inf")
        self._counter: Any = None

    def go(self, scheduler: Scheduler, replan: Any) -> None:
        """Dispatch every work, storing results as they come; progress about twice a second."""
        ray = self.ray
        if self.progress is not None:
            self._counter = start_counter(ray)
            self.progress.begin("", dict(self.stored_totals), dict(self.model_totals))
        backend = _Backend(ray, self.config, self.runs, self.groups, self.works, self.shards, self.slot_plan,
                           self.classes, self._counter, self.early)  # fmt: skip
        try:
            stats = dispatch(ray, scheduler, self.slot_plan.slots, backend, self._on_result, self._tick, replan=replan)
            if self.progress is not None:  # everything has come back: the final counts
                self.progress.update(dict(self.stored), dict(self.model_totals), time.monotonic())
        finally:
            if self.progress is not None:
                self.progress.end()
            if self._counter is not None:
                ray.kill(self._counter)
        self.stats_reads, self.stats_decodes = stats.reads, stats.decodes
        for r in self.runs:
            r.steady = self.rates.rate(r.spec.name)

    def _on_result(self, slot: str, chunk: Chunk, results: list[ShardResult]) -> None:
        """Store each shard of a chunk that came back, and count it."""
        model = self.works[chunk.work].name
        for res in results:
            planned = self.shards[res["key"]]
            _store_shard(self.out, planned, model, res)
            self.rates.add(slot, model, res["marks"])
            self._owners[planned.key] -= 1
            if not self._owners[planned.key]:
                self.stored[planned.dataset] += planned.n
                self._left[planned.dataset] -= 1
                if not self._left[planned.dataset]:
                    self.finished_at[planned.dataset] = time.perf_counter() - self.start

    def _tick(self) -> None:
        """Live counts to the progress sink, at most every :data:`PROGRESS_INTERVAL` seconds."""
        now = time.monotonic()
        if self.progress is None or self._counter is None or now - self._last < PROGRESS_INTERVAL:
            return
        self._last = now
        inferred = self.ray.get(self._counter.get.remote())
        self.progress.update(dict(self.stored), {m: inferred.get(m, 0) for m in self.model_totals}, now)


def _store_shard(out: Path, planned: PlannedShard, model: str, res: ShardResult) -> None:
    """Store one shard of one model: its errors part, then its predictions part (the one place this module writes
    to the store). The shard must come back whole, each image once."""
    ids = np.asarray(res["image_id"]).astype(str)
    if len(ids) != planned.n or len(set(ids.tolist())) != len(ids):
        raise MlrayError(
            f"pipeline: shard {planned.key} came back with {len(ids)} rows ({len(set(ids.tolist()))} distinct image "
            f"ids) for {planned.n} images"
        )
    error = np.asarray(res["error"]).astype(str)
    failed = error != ""
    errors = errors_table(
        planned.dataset, model, ids[failed].tolist(), np.asarray(res["path"])[failed].astype(str).tolist(),
        np.asarray(res["stage"])[failed].astype(str).tolist(), error[failed].tolist(),
    )  # fmt: skip
    predictions = predictions_table(planned.dataset, model, ids[~failed].tolist(), res["idx"], res["prob"])
    finish_shard(out, planned.dataset, model, planned.tag, predictions, errors)


def _write_manifest(
    out: Path,
    config: RunConfig,
    slot_plan: SlotPlan,
    plans: Mapping[str, ImagePlan],
    runs: list[ModelRun],
    result: InferenceResult,
) -> Path:
    """Write ``OUT/run_manifest.json`` atomically: the config, the settings and slots, per dataset and model the
    counts and timings, each model's expected rate (and its source) and steady images/s (a model this run did
    not measure keeps the rate an earlier run into this store measured). Returns its path."""
    path = out / "run_manifest.json"
    try:
        earlier = json.loads(path.read_text()).get("models") or {}
    except (OSError, ValueError):
        earlier = {}
    n_all = sum(result.images_processed.values())
    manifest: dict[str, Any] = {
        "config": config.model_dump(mode="json"),
        "settings": {**config.inference.model_dump(), **slot_plan.as_dict()},
        "datasets": {},
        "models": {},
    }
    for name, plan in plans.items():
        manifest["datasets"][name] = {
            "images": plan.n_images, "shards": len(plan.shards),
            "images_processed": result.images_processed[name], "decodes": result.decodes[name],
            "finished_after_s": round(result.seconds[name], 3), "skipped_non_image": plan.n_skipped_non_image,
        }  # fmt: skip
    for r in runs:
        entry = {**r.info, "steady_images_per_second": r.steady, "rate_measured_on": slot_plan.kind}
        old = earlier.get(r.spec.name) if isinstance(earlier, dict) else None
        if r.steady is None and isinstance(old, dict) and old.get("steady_images_per_second"):
            entry["steady_images_per_second"] = old["steady_images_per_second"]
            entry["rate_measured_on"] = old.get("rate_measured_on")
        elif r.steady is None:
            entry["rate_measured_on"] = None
        if r.rate is not None:
            entry["expected_images_per_second"] = round(r.rate.images_per_second, 3)
            entry["rate_source"] = f"{r.rate.source}: {r.rate.detail}"
        manifest["models"][r.spec.name] = entry
    manifest["slots"] = result.slots
    manifest["preprocessings"] = result.preprocessings
    manifest["seconds"] = round(result.total_seconds, 3)
    manifest["images_processed"] = n_all
    manifest["images_per_second"] = round(n_all / result.total_seconds, 2) if n_all else None
    manifest["counts"] = [{"dataset": d, "model": m, **c} for (d, m), c in result.counts.items()]
    manifest["finished"] = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    out.mkdir(parents=True, exist_ok=True)
    tmp = out / ".run_manifest.json.tmp"
    tmp.write_text(json.dumps(manifest, indent=2, default=str))
    os.replace(tmp, path)
    return path
