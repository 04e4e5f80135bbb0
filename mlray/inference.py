"""Distributed inference: Ray Data streams image shards through decode/preprocess to one actor pool per model,
and the driver writes each finished shard into the resumable Parquet prediction store.

    shards of every dataset (mlray.data.plan_shards) ──► read bytes (flat_map per shard)
        ──► decode once + resize/crop once per distinct preprocessing, as uint8 (map_batches, CPU tasks)
        ──► model 1 actor pool ──► model 2 actor pool ──► … (ActorPoolStrategy; num_gpus=1 when GPUs exist)
              each normalizes on its device, runs the model (bf16 autocast + channels_last on GPU), keeps top-K
        ──► driver: rows of a shard complete ──► predictions/…/part-<shard>.parquet (+ errors/…/part-<shard>)

Store layout under ``OUT``: ``predictions/dataset=<d>/model=<m>/part-<shard>-<digest>.parquet`` (mlray.predictions)
and ``errors/dataset=<d>/model=<m>/part-<shard>-<digest>.parquet`` (``dataset, model, image_id, path, stage, error``), each part
written atomically; the errors part is written first, so a predictions part marks the shard as finished for
that model. The digest is of the shard's image ids (:func:`shard_tag`): a part is reused only for the images it
was written for, and parts of shards the plan no longer has (the images or shard_size changed) stop the run
with a clear error instead of mixing two plans. Resume: a re-run plans the same shards and processes only shards
that some model has not finished;
a model's actors skip the rows of shards it already has. Never a duplicate row: a shard is written whole or not
at all. At the end every (dataset, model) is reconciled: images in = predictions + errors.

All datasets of a run stream through one pipeline per pass of models, so each model's actors start and load
weights once; models go in passes that fit the cluster's GPUs (``inference.models_per_pass``).
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from .config import InferenceConfig, ModelConfig, RunConfig, plan_images
from .data import ImageError, decode_image, read_shard_sources
from .errors import MlrayError
from .io import write_parquet_atomic
from .models import (
    ModelSpec,
    Preprocessing,
    build_model,
    expand_model_names,
    model_info,
    normalize,
    preprocess_uint8,
    resolve_preprocessing,
)
from .predictions import part_name, partition_dir, predictions_table, softmax, topk_from_scores, write_partition

ERRORS_SCHEMA = pa.schema(
    [
        ("dataset", pa.string()),
        ("model", pa.string()),
        ("image_id", pa.string()),
        ("path", pa.string()),
        ("stage", pa.string()),
        ("error", pa.string()),
    ]
)


def model_specs(models: list[ModelConfig], base_dir: Path | None) -> list[ModelSpec]:
    """Expand wildcards / list files and build one ModelSpec per model (duplicates dropped, order kept)."""
    specs: list[ModelSpec] = []
    for m in models:
        name = m.name
        if name.endswith(".txt") and base_dir is not None and not Path(name).is_absolute():
            name = str(base_dir / name)
        weights = m.weights
        if weights not in ("hub", "pypi", "none") and base_dir is not None and not Path(weights).is_absolute():
            weights = str(base_dir / weights)
        overrides = m.model_dump(exclude={"name", "weights"}, exclude_none=True)
        for n in expand_model_names(name, weights=weights if weights in ("hub", "pypi", "none") else "none"):
            spec = ModelSpec(n, weights, **{k: (tuple(v) if isinstance(v, list) else v) for k, v in overrides.items()})
            if spec not in specs:
                specs.append(spec)
    return specs


# --------------------------------------------------------------------------------------------------------------
# Pipeline stages (run inside Ray tasks and actors)


def _read_rows(row: dict, shards) -> list[dict]:
    key, shard = shards[row["shard"]]
    out = []
    for image_id, where, data, err in read_shard_sources(shard):
        out.append(
            {
                "shard_key": key,
                "image_id": image_id,
                "path": where,
                "data": data if data is not None else b"",
                "stage": err.stage if err is not None else "",
                "error": err.reason if err is not None else "",
            }
        )
    return out


def _decode_batch(batch: dict, preps: list[Preprocessing], max_pixels: int) -> dict:
    """Decode each image once and resize/crop it once per distinct preprocessing (uint8, NHWC)."""
    n = len(batch["image_id"])
    images = [np.zeros((n, p.input_size[1], p.input_size[2], 3), dtype=np.uint8) for p in preps]
    stage = np.asarray(batch["stage"], dtype=object)
    error = np.asarray(batch["error"], dtype=object)
    for i in range(n):
        if error[i]:
            continue
        try:
            img = decode_image(bytes(batch["data"][i]), max_pixels=max_pixels)
            for j, prep in enumerate(preps):
                images[j][i] = preprocess_uint8(img, prep)
        except ImageError as exc:
            stage[i], error[i] = exc.stage, exc.reason
        except Exception as exc:  # anything else an image can do to a decoder or resizer
            stage[i], error[i] = "decode", f"{type(exc).__name__}: {exc}".splitlines()[0]
    out = {k: batch[k] for k in ("shard_key", "image_id", "path")}
    out["stage"], out["error"] = stage.astype(str), error.astype(str)
    for j, arr in enumerate(images):
        out[f"img{j}"] = arr
    return out


class Predictor:
    """One model in an actor: built once in ``__init__``, then top-K ranks for every batch of uint8 images."""

    def __init__(
        self,
        spec: ModelSpec,
        prep: Preprocessing,
        column: str,
        out: str,
        k: int,
        todo: frozenset[str],
        settings: dict,
        counter=None,
    ):
        import torch

        self.torch = torch
        self.device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
        if self.device.type == "cpu" and settings.get("cpu_threads"):
            torch.set_num_threads(int(settings["cpu_threads"]))
        self.model = build_model(spec).to(self.device)
        precision = settings.get("precision", "auto")
        if precision == "auto":
            precision = "bf16" if self.device.type == "cuda" else "fp32"
        self.autocast = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(precision)
        if self.device.type == "cuda" and settings.get("channels_last", True):
            self.model = self.model.to(memory_format=torch.channels_last)
        if settings.get("compile"):
            self.model = torch.compile(self.model)
        self.mean, self.std = prep.mean, prep.std
        self.column, self.out, self.k, self.todo = column, out, k, todo
        self.counter = counter

    def __call__(self, batch: dict) -> dict:
        torch = self.torch
        n = len(batch["image_id"])
        idx = np.full((n, self.k), -1, dtype=np.int16)
        prob = np.full((n, self.k), np.nan, dtype=np.float32)
        mine = np.isin(batch["shard_key"], list(self.todo))  # rows of shards this model has not stored yet
        run = np.flatnonzero((np.asarray(batch["error"]) == "") & mine)
        if len(run):
            x = torch.from_numpy(np.ascontiguousarray(batch[self.column][run])).to(self.device, non_blocking=True)
            x = normalize(x, self.mean, self.std)
            with (
                torch.inference_mode(),
                torch.autocast(self.device.type, dtype=self.autocast, enabled=self.autocast is not None),
            ):
                logits = self.model(x)
            scores = softmax(logits.float().cpu().numpy().astype(np.float32), axis=1)
            idx[run], prob[run] = topk_from_scores(scores, self.k)
        batch[f"{self.out}_idx"] = idx
        batch[f"{self.out}_prob"] = prob
        batch[f"{self.out}_t"] = np.where(mine, time.time(), np.nan)  # when this model finished the batch
        if self.counter is not None:
            self.counter.add.remote(self.out, int(mine.sum()))  # live per-model progress, fire and forget
        return batch


class _Counter:
    """Images each model's actors have finished, for live per-model progress (a tiny Ray actor, no CPU; the
    reports are fire-and-forget, so the figures it shows may trail by a batch)."""

    def __init__(self) -> None:
        self.counts: dict[str, int] = {}

    def add(self, key: str, n: int) -> None:
        self.counts[key] = self.counts.get(key, 0) + n

    def get(self) -> dict[str, int]:
        return dict(self.counts)


def steady_rate(marks: dict[float, int]) -> float | None:
    """Images/s after the first batch, from ``{finish time of a model batch: images in it}`` (start-up and model
    loading excluded)."""
    if len(marks) < 2:
        return None
    times = sorted(marks)
    return sum(marks[t] for t in times[1:]) / (times[-1] - times[0]) if times[-1] > times[0] else None


# --------------------------------------------------------------------------------------------------------------
# Driver


@dataclass
class ModelRun:
    spec: ModelSpec
    prep: Preprocessing
    info: dict
    done: set[str] = field(default_factory=set)  # shard keys "<dataset>/<shard_id>" already in the store
    steady: float | None = None  # images/s after its first batch, in this run


@dataclass
class InferenceResult:
    counts: dict[tuple[str, str], dict] = field(default_factory=dict)  # (dataset, model) -> in/predicted/errors
    seconds: dict[str, float] = field(default_factory=dict)  # dataset -> seconds from the start to its last shard
    images_processed: dict[str, int] = field(default_factory=dict)
    total_seconds: float = 0.0
    steady_images_per_second: dict[str, float] = field(default_factory=dict)  # model -> after its first batch
    manifest: Path | None = None


def _errors_part(root: Path, dataset: str, model: str, shard_id: str) -> Path:
    return partition_dir(root, dataset, model) / part_name(shard_id)


def _count_rows(folder: Path) -> int:
    if not folder.is_dir():
        return 0
    return sum(pq.read_metadata(f).num_rows for f in folder.glob("part-*.parquet"))


def _defaults(settings: InferenceConfig, gpus: float, cpus: float, n_models: int) -> dict:
    """Per-hardware defaults.

    Models go through the pipeline in passes of ``models_per_pass`` (every pass reads and decodes the images
    once for its models). On GPUs every model actor holds one GPU, so a pass holds as many models as there are
    GPUs for their actors (one model per pass on one GPU; never more GPUs than the cluster has). On CPUs the
    model actors of a pass share what is left after one CPU for reading/decoding (fractional CPU requests, so
    the read stage can always be scheduled), and each actor's torch uses about as many threads as the CPUs it
    was given (no oversubscription).
    """
    actors = settings.actors_per_model or (max(1, int(gpus)) if gpus else 1)
    per_pass = settings.models_per_pass or (max(1, int(gpus) // actors) if gpus else 8)
    per_pass = min(per_pass, n_models)
    if gpus and settings.device == "auto" and actors * per_pass > gpus:
        raise MlrayError(
            f"inference: {per_pass} models per pass x {actors} actors per model need {actors * per_pass} GPUs at once, "
            f"but the cluster has {gpus:g} (lower models_per_pass / actors_per_model, or set device: gpu to let "
            "an autoscaler add GPU nodes)"
        )
    cpus_per_actor = settings.cpus_per_actor or (0.0 if gpus else max(0.25, (cpus - 1.0) / (per_pass * actors)))
    return {
        "batch_size": settings.batch_size or (256 if gpus else 32),
        "actors": actors,
        "models_per_pass": per_pass,
        "cpus_per_actor": cpus_per_actor,
        "cpu_threads": None if gpus else max(1, round(cpus / (per_pass * actors))),
    }


def _quiet_ray_data(ray) -> None:
    """mlray prints its own progress (per dataset and model); Ray Data's progress bars and INFO lines would
    interleave with it, so they go (warnings and errors still show; full logs stay in the Ray session dir)."""
    import logging

    ctx = ray.data.DataContext.get_current()
    ctx.enable_progress_bars = False
    ctx.print_on_execution_start = False
    logging.getLogger("ray.data").setLevel(logging.WARNING)
    logging.getLogger("ray.data._internal.progress").setLevel(logging.ERROR)  # "progress bars disabled"
    # each model actor holds one model: its memory is known and bounded, so the "uses N MiB per worker but
    # requests 0" detector only adds noise; the other detectors (hanging tasks ...) stay on
    detectors = ctx.issue_detectors_config.detectors
    ctx.issue_detectors_config.detectors = [d for d in detectors if d.__name__ != "HighMemoryIssueDetector"]


def run_inference(config: RunConfig, out_dir: str | os.PathLike, progress=None) -> InferenceResult:
    """Predictions for every (dataset with images) x model of the config, into ``OUT/predictions`` (resumable).

    All datasets go through one streaming pipeline per pass of models (each model's actors start and load
    their weights once per run, not once per dataset); rows carry their shard key ``<dataset>/<shard_id>``.
    Models go in passes of ``models_per_pass`` (see :func:`_defaults`), so hundreds of models never ask for
    more GPUs than the cluster has; ``inference.device: gpu`` plans GPU actors even before an autoscaling
    cluster has started its GPU nodes.
    """
    import ray

    start = time.perf_counter()
    out = Path(out_dir)
    pred_root, err_root = out / "predictions", out / "errors"
    _quiet_ray_data(ray)
    specs = model_specs(config.models, config.base_dir)
    if not specs:
        raise MlrayError(f"{config.source}: no models to evaluate (add a 'models:' list)")
    settings = config.inference
    resources = ray.cluster_resources()
    gpus = {"auto": resources.get("GPU", 0), "cpu": 0, "gpu": max(1.0, resources.get("GPU", 0))}[settings.device]
    hw = _defaults(settings, gpus, resources.get("CPU", 1), len(specs))
    runs = [ModelRun(spec, resolve_preprocessing(spec), model_info(spec)) for spec in specs]
    result = InferenceResult()
    manifest: dict = {
        "config": config.model_dump(mode="json"),
        "settings": {**settings.model_dump(), **hw},
        "datasets": {},
        "models": {},
    }

    # plan every dataset; a shard is to do when some model has no part for it yet
    plans = {d.name: plan_images(config, d) for d in config.datasets if d.images is not None}
    shards: dict[str, tuple[str, object]] = {}  # key "<dataset>/<tag>" -> (dataset, Shard), in plan order
    planned: dict[str, set[str]] = {name: set() for name in plans}  # dataset -> tags of its planned shards
    for name, plan in plans.items():
        for shard in plan.shards:
            tag = shard_tag(shard)
            shards[f"{name}/{tag}"] = (name, shard)
            planned[name].add(tag)
    for r in runs:
        for name in plans:
            stored = {}
            for root in (err_root, pred_root):
                folder = partition_dir(root, name, r.spec.name)
                stored[root] = {p.stem[len("part-") :] for p in folder.glob("part-*.parquet")}
                _refuse_stale_parts(folder, stored[root] - planned[name])
            r.done |= {f"{name}/{tag}" for tag in stored[pred_root]}  # a predictions part = a finished shard
    finished_at: dict[str, float] = {}
    result.images_processed = {name: 0 for name in plans}
    todo_all: set[str] = set()
    n = hw["models_per_pass"]
    passes = [runs[i : i + n] for i in range(0, len(runs), n)]
    for i, pass_runs in enumerate(passes):
        todo = [key for key in shards if any(key not in r.done for r in pass_runs)]
        todo_all.update(todo)
        for key in todo:
            result.images_processed[shards[key][0]] += len(shards[key][1])
        if todo:
            label = f" (models {i * n + 1}-{i * n + len(pass_runs)} of {len(runs)})" if len(passes) > 1 else ""
            _stream(
                ray,
                pass_runs,
                shards,
                todo,
                plans,
                settings,
                hw,
                gpus,
                progress,
                label,
                pred_root,
                err_root,
                finished_at,
                start,
            )

    result.total_seconds = time.perf_counter() - start
    result.steady_images_per_second = {r.spec.name: r.steady for r in runs if r.steady is not None}
    for name, plan in plans.items():
        result.seconds[name] = finished_at.get(name, 0.0)
        for r in runs:
            n_pred = _count_rows(partition_dir(pred_root, name, r.spec.name))
            n_err = _count_rows(partition_dir(err_root, name, r.spec.name))
            result.counts[(name, r.spec.name)] = {"images": plan.n_images, "predictions": n_pred, "errors": n_err}
        n_todo = result.images_processed[name]
        manifest["datasets"][name] = {
            "images": plan.n_images, "shards": len(plan.shards),
            "shards_processed": sum(1 for k in todo_all if shards[k][0] == name), "images_processed": n_todo,
            "finished_after_s": round(result.seconds[name], 3), "skipped_non_image": plan.n_skipped_non_image,
        }  # fmt: skip
    for r in runs:
        manifest["models"][r.spec.name] = {
            **r.info,
            "steady_images_per_second": result.steady_images_per_second.get(r.spec.name),
        }
    n_all = sum(result.images_processed.values())
    manifest["seconds"] = round(result.total_seconds, 3)
    manifest["images_processed"] = n_all
    manifest["images_per_second"] = round(n_all / result.total_seconds, 2) if n_all else None
    manifest["counts"] = [{"dataset": d, "model": m, **c} for (d, m), c in result.counts.items()]
    manifest["finished"] = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    out.mkdir(parents=True, exist_ok=True)
    result.manifest = out / "run_manifest.json"
    tmp = out / ".run_manifest.json.tmp"
    tmp.write_text(json.dumps(manifest, indent=2, default=str))
    os.replace(tmp, result.manifest)
    bad = [(k, c) for k, c in result.counts.items() if c["predictions"] + c["errors"] != c["images"]]
    if bad:
        (d, m), c = bad[0]
        raise MlrayError(
            f"{d} / {m}: {c['images']:,} images in but {c['predictions']:,} predictions + {c['errors']:,} errors"
        )
    return result


def _stream(
    ray, runs, shards, todo, plans, settings, hw, gpus, progress, label, pred_root, err_root, finished_at, start
) -> None:
    """One pass: the ``todo`` shards of every dataset through read -> decode -> one actor pool per model of
    ``runs`` -> the store (a shard's parts are written as soon as all its rows are back)."""
    distinct = {r.prep.resize_key(): r.prep for r in runs}  # one resize/crop per distinct key, shared
    column_of = {key: f"img{j}" for j, key in enumerate(distinct)}
    items = [(key, shards[key][1]) for key in todo]
    ds = ray.data.from_items([{"shard": i} for i in range(len(items))], override_num_blocks=len(items))
    ds = ds.flat_map(_read_rows, fn_kwargs={"shards": items})
    ds = ds.map_batches(
        _decode_batch,
        fn_kwargs={"preps": list(distinct.values()), "max_pixels": settings.max_pixels},
        batch_size=settings.decode_batch_size,
        batch_format="numpy",
    )
    counter = ray.remote(num_cpus=0)(_Counter).remote() if progress is not None else None
    for j, r in enumerate(runs):
        ds = ds.map_batches(
            Predictor,
            fn_constructor_kwargs={
                "spec": r.spec,
                "prep": r.prep,
                "column": column_of[r.prep.resize_key()],
                "out": f"m{j}",
                "k": settings.k,
                "todo": frozenset(k for k in todo if k not in r.done),
                "settings": {
                    "precision": settings.precision,
                    "channels_last": settings.channels_last,
                    "compile": settings.compile,
                    "cpu_threads": hw["cpu_threads"],
                },
                "counter": counter,
            },  # fmt: skip
            batch_size=hw["batch_size"],
            batch_format="numpy",
            compute=ray.data.ActorPoolStrategy(size=hw["actors"]),
            num_gpus=1 if gpus else 0,
            num_cpus=hw["cpus_per_actor"],  # GPU actors: 0 unless set (decoding has the CPUs)
        )
    keep = ["shard_key", "image_id", "path", "stage", "error"] + [
        f"m{j}_{x}" for j in range(len(runs)) for x in ("idx", "prob", "t")
    ]
    ds = ds.select_columns(keep)

    tasks, totals = {}, {}
    if progress is not None:
        for name in plans:
            totals[name] = sum(len(shards[k][1]) for k in todo if shards[k][0] == name)
            if totals[name]:
                tasks[name] = progress.add_task(f"{name}: written to the store{label}", total=totals[name])
        for j, r in enumerate(runs):
            totals[f"m{j}"] = sum(len(shards[k][1]) for k in todo if k not in r.done)
            tasks[f"m{j}"] = progress.add_task(f"{r.spec.name}", total=totals[f"m{j}"])
    left = {name: sum(1 for k in todo if shards[k][0] == name) for name in plans}
    pending: dict[str, list[dict]] = {}
    marks: list[dict[float, int]] = [{} for _ in runs]  # per model: batch finish time -> images
    for batch in ds.iter_batches(batch_size=None, batch_format="numpy"):
        for j, m in enumerate(marks):
            t = batch[f"m{j}_t"]
            for value, count in zip(*np.unique(t[~np.isnan(t)], return_counts=True)):
                m[float(value)] = m.get(float(value), 0) + int(count)
        written: dict[str, int] = {}
        for key in np.unique(batch["shard_key"]):
            key = str(key)
            sel = batch["shard_key"] == key
            pending.setdefault(key, []).append({k: v[sel] for k, v in batch.items()})
            name, shard = shards[key]
            written[name] = written.get(name, 0) + int(sel.sum())
            if sum(len(p["image_id"]) for p in pending[key]) == len(shard):
                _finish_shard(name, shard, key, pending.pop(key), runs, pred_root, err_root)
                left[name] -= 1
                if not left[name]:
                    finished_at[name] = time.perf_counter() - start
        if progress is not None:
            _update_progress(progress, tasks, counter, written)
    if progress is not None:  # the pipeline has drained: every model finished all its rows
        for key, t in tasks.items():
            progress.update(t, completed=totals[key])
    for r, m in zip(runs, marks):
        r.steady = steady_rate(m)
    if pending:
        raise MlrayError(f"shards {sorted(pending)} came back incomplete")


def _update_progress(progress, tasks: dict, counter, written: dict[str, int]) -> None:
    import ray

    for name, n in written.items():
        if name in tasks:
            progress.advance(tasks[name], n)
    for key, n in ray.get(counter.get.remote()).items():
        progress.update(tasks[key], completed=n)


def shard_tag(shard) -> str:
    """A shard's name in the store: its id plus a digest of the image ids it holds (``s00003-1f0c9a2e``), so a
    part is reused only for the very images it was written for."""
    import hashlib

    return f"{shard.shard_id}-{hashlib.sha1(chr(10).join(shard.image_ids).encode()).hexdigest()[:8]}"


def _refuse_stale_parts(folder: Path, stale: set[str]) -> None:
    if stale:
        shown = ", ".join(f"part-{t}.parquet" for t in sorted(stale)[:3]) + (", ..." if len(stale) > 3 else "")
        raise MlrayError(
            f"{folder}: holds {len(stale)} part(s) of shards this run does not plan ({shown}): the images or the "
            "shard_size changed since they were written. Use a new --out, or delete that folder to redo it"
        )


def _finish_shard(
    dataset: str, shard, key: str, parts: list[dict], runs: list[ModelRun], pred_root: Path, err_root: Path
) -> None:
    """Write one finished shard for every model that lacks it: its errors part first, then its predictions part."""
    tag = key.split("/", 1)[1]
    rows = {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
    failed = rows["error"] != ""
    for j, r in enumerate(runs):
        if key in r.done:
            continue
        name = r.spec.name
        errs = pa.table(
            {
                "dataset": [dataset] * int(failed.sum()),
                "model": [name] * int(failed.sum()),
                "image_id": rows["image_id"][failed].astype(str).tolist(),
                "path": rows["path"][failed].astype(str).tolist(),
                "stage": rows["stage"][failed].astype(str).tolist(),
                "error": rows["error"][failed].astype(str).tolist(),
            },
            schema=ERRORS_SCHEMA,
        )
        write_parquet_atomic(errs, _errors_part(err_root, dataset, name, tag))
        ok = ~failed
        table = predictions_table(
            dataset, name, rows["image_id"][ok].astype(str).tolist(), rows[f"m{j}_idx"][ok], rows[f"m{j}_prob"][ok]
        )
        write_partition(pred_root, dataset, name, table, shard=tag)
        r.done.add(key)
