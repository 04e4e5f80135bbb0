"""Distributed inference: Ray Data streams image shards through decode/preprocess to one actor pool per model,
and the driver writes each finished shard into the resumable Parquet prediction store.

    shards (mlray.data.plan_shards) ──► read bytes (flat_map per shard)
        ──► decode once + resize/crop once per distinct preprocessing, as uint8 (map_batches, CPU tasks)
        ──► model 1 actor pool ──► model 2 actor pool ──► … (ActorPoolStrategy; num_gpus=1 when GPUs exist)
              each normalizes on its device, runs the model (bf16 autocast + channels_last on GPU), keeps top-K
        ──► driver: rows of a shard complete ──► predictions/…/part-<shard>.parquet (+ errors/…/part-<shard>)

Store layout under ``OUT``: ``predictions/dataset=<d>/model=<m>/part-<shard>.parquet`` (mlray.predictions) and
``errors/dataset=<d>/model=<m>/part-<shard>.parquet`` (``dataset, model, image_id, path, stage, error``), each part
written atomically; the errors part is written first, so a predictions part marks the shard as finished for
that model. Resume: a re-run plans the same shards and processes only shards that some model has not finished;
a model's actors skip the rows of shards it already has. Never a duplicate row: a shard is written whole or not
at all. At the end every (dataset, model) is reconciled: images in = predictions + errors.
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
from .data import ImageError, decode_image, read_shard
from .errors import MlrayError
from .io import write_parquet_atomic
from .models import ModelSpec, Preprocessing, build_model, expand_model_names, model_info, normalize, preprocess_uint8, resolve_preprocessing
from .predictions import partition_dir, part_name, predictions_table, softmax, topk_from_scores, write_partition

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
    shard = shards[row["shard"]]
    out = []
    for (image_id, data, err), where in zip(read_shard(shard), (s for _, s in shard.items)):
        out.append(
            {
                "shard_id": shard.shard_id,
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
    out = {k: batch[k] for k in ("shard_id", "image_id", "path")}
    out["stage"], out["error"] = stage.astype(str), error.astype(str)
    for j, arr in enumerate(images):
        out[f"img{j}"] = arr
    return out


class Predictor:
    """One model in an actor: built once in ``__init__``, then top-K ranks for every batch of uint8 images."""

    def __init__(
        self, spec: ModelSpec, prep: Preprocessing, column: str, out: str, k: int, todo: frozenset[str], settings: dict, counter=None
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
        run = np.flatnonzero((np.asarray(batch["error"]) == "") & np.isin(batch["shard_id"], list(self.todo)))
        if len(run):
            x = torch.from_numpy(np.ascontiguousarray(batch[self.column][run])).to(self.device, non_blocking=True)
            x = normalize(x, self.mean, self.std)
            with torch.inference_mode(), torch.autocast(self.device.type, dtype=self.autocast, enabled=self.autocast is not None):
                logits = self.model(x)
            scores = softmax(logits.float().cpu().numpy().astype(np.float32), axis=1)
            idx[run], prob[run] = topk_from_scores(scores, self.k)
        batch[f"{self.out}_idx"] = idx
        batch[f"{self.out}_prob"] = prob
        if self.counter is not None:
            self.counter.add.remote(self.out, int(np.isin(batch["shard_id"], list(self.todo)).sum()))  # per-model progress, fire and forget
        return batch


class _Counter:
    """Images each model's actors have finished, for per-model progress (a tiny Ray actor, no CPU)."""

    def __init__(self) -> None:
        self.counts: dict[str, int] = {}

    def add(self, key: str, n: int) -> None:
        self.counts[key] = self.counts.get(key, 0) + n

    def get(self) -> dict[str, int]:
        return dict(self.counts)


# --------------------------------------------------------------------------------------------------------------
# Driver


@dataclass
class ModelRun:
    spec: ModelSpec
    prep: Preprocessing
    info: dict
    done: set[str] = field(default_factory=set)  # shard ids already in the store


@dataclass
class InferenceResult:
    counts: dict[tuple[str, str], dict] = field(default_factory=dict)  # (dataset, model) -> in/predicted/errors
    seconds: dict[str, float] = field(default_factory=dict)  # dataset -> wall seconds
    images_processed: dict[str, int] = field(default_factory=dict)
    manifest: Path | None = None


def _errors_part(root: Path, dataset: str, model: str, shard_id: str) -> Path:
    return partition_dir(root, dataset, model) / part_name(shard_id)


def _count_rows(folder: Path) -> int:
    if not folder.is_dir():
        return 0
    return sum(pq.read_metadata(f).num_rows for f in folder.glob("part-*.parquet"))


def _defaults(settings: InferenceConfig, gpus: float, cpus: float, n_models: int) -> dict:
    """Per-hardware defaults. On CPUs the model actors of all models share what is left after one CPU for
    reading/decoding (fractional CPU requests), so the read stage can always be scheduled."""
    actors = settings.actors_per_model or (max(1, int(gpus)) if gpus else 1)
    cpus_per_actor = settings.cpus_per_actor or (1.0 if gpus else max(0.25, (cpus - 1.0) / (n_models * actors)))
    return {
        "batch_size": settings.batch_size or (256 if gpus else 32),
        "actors": actors,
        "cpus_per_actor": cpus_per_actor,
        "cpu_threads": None if gpus else max(1, int(cpus)),
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


def run_inference(config: RunConfig, out_dir: str | os.PathLike, progress=None) -> InferenceResult:
    """Predictions for every (dataset with images) x model of the config, into ``OUT/predictions`` (resumable)."""
    import ray

    out = Path(out_dir)
    pred_root, err_root = out / "predictions", out / "errors"
    _quiet_ray_data(ray)
    specs = model_specs(config.models, config.base_dir)
    if not specs:
        raise MlrayError(f"{config.source}: no models to evaluate (add a 'models:' list)")
    runs_template = [(spec, resolve_preprocessing(spec)) for spec in specs]
    settings = config.inference
    resources = ray.cluster_resources()
    hw = _defaults(settings, resources.get("GPU", 0), resources.get("CPU", 1), len(specs))
    result = InferenceResult()
    manifest: dict = {"config": config.model_dump(mode="json"), "settings": {**settings.model_dump(), **hw}, "datasets": {}, "models": {}}

    for dataset in config.datasets:
        if dataset.images is None:
            continue
        start = time.perf_counter()
        plan = plan_images(config, dataset)
        by_id = {s.shard_id: s for s in plan.shards}
        runs = []
        for spec, prep in runs_template:
            done = {p.stem[len("part-"):] for p in partition_dir(pred_root, dataset.name, spec.name).glob("part-*.parquet")}
            runs.append(ModelRun(spec, prep, model_info(spec), done & set(by_id)))
        todo_ids = [s.shard_id for s in plan.shards if any(s.shard_id not in r.done for r in runs)]
        distinct = {r.prep.resize_key(): r.prep for r in runs}  # one resize/crop per distinct key, shared
        preps = list(distinct.values())
        column_of = {key: f"img{j}" for j, key in enumerate(distinct)}
        n_todo = sum(len(by_id[s]) for s in todo_ids)
        result.images_processed[dataset.name] = n_todo
        if todo_ids:
            shards = [by_id[s] for s in todo_ids]
            ds = ray.data.from_items([{"shard": i} for i in range(len(shards))], override_num_blocks=len(shards))
            ds = ds.flat_map(_read_rows, fn_kwargs={"shards": shards})
            ds = ds.map_batches(
                _decode_batch,
                fn_kwargs={"preps": preps, "max_pixels": settings.max_pixels},
                batch_size=settings.decode_batch_size,
                batch_format="numpy",
            )
            gpus = resources.get("GPU", 0)
            counter = ray.remote(num_cpus=0)(_Counter).remote() if progress is not None else None
            for j, r in enumerate(runs):
                todo = frozenset(s for s in todo_ids if s not in r.done)
                ds = ds.map_batches(
                    Predictor,
                    fn_constructor_kwargs={
                        "spec": r.spec, "prep": r.prep, "column": column_of[r.prep.resize_key()], "out": f"m{j}",
                        "k": settings.k, "todo": todo,
                        "settings": {"precision": settings.precision, "channels_last": settings.channels_last,
                                     "compile": settings.compile, "cpu_threads": hw["cpu_threads"]},
                        "counter": counter,
                    },  # fmt: skip
                    batch_size=hw["batch_size"],
                    batch_format="numpy",
                    compute=ray.data.ActorPoolStrategy(size=hw["actors"]),
                    num_gpus=1 if gpus else 0,
                    num_cpus=0 if gpus else hw["cpus_per_actor"],
                )
            keep = ["shard_id", "image_id", "path", "stage", "error"] + [f"m{j}_{x}" for j in range(len(runs)) for x in ("idx", "prob")]
            ds = ds.select_columns(keep)
            pending: dict[str, list[dict]] = {}
            tasks, totals = {}, {"store": n_todo}
            if progress is not None:
                tasks["store"] = progress.add_task(f"{dataset.name}: written to the store", total=n_todo)
                for j, r in enumerate(runs):
                    totals[f"m{j}"] = sum(len(by_id[s]) for s in todo_ids if s not in r.done)
                    tasks[f"m{j}"] = progress.add_task(f"{dataset.name} / {r.spec.name}", total=totals[f"m{j}"])
            for batch in ds.iter_batches(batch_size=None, batch_format="numpy"):
                for shard_id in np.unique(batch["shard_id"]):
                    sel = batch["shard_id"] == shard_id
                    pending.setdefault(str(shard_id), []).append({k: v[sel] for k, v in batch.items()})
                    got = sum(len(p["image_id"]) for p in pending[str(shard_id)])
                    if got == len(by_id[str(shard_id)]):
                        _finish_shard(dataset.name, by_id[str(shard_id)], pending.pop(str(shard_id)), runs, pred_root, err_root, settings.k)
                if progress is not None:
                    _update_progress(progress, tasks, counter, len(batch["image_id"]))
            if progress is not None:  # the pipeline has drained: every model finished all its rows
                _update_progress(progress, tasks, counter, 0)
                for key, t in tasks.items():
                    progress.update(t, completed=totals[key])
            if pending:
                raise MlrayError(f"dataset {dataset.name!r}: shards {sorted(pending)} came back incomplete")
        seconds = time.perf_counter() - start
        result.seconds[dataset.name] = seconds
        for r in runs:
            n_pred = _count_rows(partition_dir(pred_root, dataset.name, r.spec.name))
            n_err = _count_rows(partition_dir(err_root, dataset.name, r.spec.name))
            result.counts[(dataset.name, r.spec.name)] = {"images": plan.n_images, "predictions": n_pred, "errors": n_err}
            manifest["models"][r.spec.name] = r.info
        manifest["datasets"][dataset.name] = {
            "images": plan.n_images, "shards": len(plan.shards), "shards_processed": len(todo_ids),
            "images_processed": n_todo, "seconds": round(seconds, 3),
            "images_per_second": round(n_todo / seconds, 2) if n_todo else None,
            "skipped_non_image": plan.n_skipped_non_image,
        }  # fmt: skip
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
        raise MlrayError(f"{d} / {m}: {c['images']:,} images in but {c['predictions']:,} predictions + {c['errors']:,} errors")
    return result


def _update_progress(progress, tasks: dict, counter, written: int) -> None:
    import ray

    progress.advance(tasks["store"], written)
    for key, n in ray.get(counter.get.remote()).items():
        progress.update(tasks[key], completed=n)


def _finish_shard(dataset: str, shard, parts: list[dict], runs: list[ModelRun], pred_root: Path, err_root: Path, k: int) -> None:
    rows = {key: np.concatenate([p[key] for p in parts]) for key in parts[0]}
    failed = rows["error"] != ""
    for j, r in enumerate(runs):
        if shard.shard_id in r.done:
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
        write_parquet_atomic(errs, _errors_part(err_root, dataset, name, shard.shard_id))
        ok = ~failed
        table = predictions_table(
            dataset, name, rows["image_id"][ok].astype(str).tolist(), rows[f"m{j}_idx"][ok], rows[f"m{j}_prob"][ok]
        )
        write_partition(pred_root, dataset, name, table, shard=shard.shard_id)
        r.done.add(shard.shard_id)
