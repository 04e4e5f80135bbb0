"""The Ray Data pipeline of one pass of models, and the stages that run inside its tasks and actors.

    shards of every dataset ──► read bytes (flat_map per shard, :func:`read_rows`)
        ──► decode once + resize/crop once per distinct preprocessing, as uint8 (map_batches, CPU tasks,
            :func:`decode_batch`)
        ──► model 1 actor pool ──► model 2 actor pool ──► … (ActorPoolStrategy; num_gpus=1 when GPUs exist)
              each normalizes on its device, runs the model (bf16 autocast + channels_last on GPU), keeps top-K
              (:class:`Predictor`)
        ──► the driver (rows carry their shard key; see :mod:`mlray.inference.driver`)

A pass is described by a typed, frozen :class:`PassSpec` (built by :func:`pass_spec`); :func:`build_dataset`
turns it into the Ray Dataset whose rows hold, per model stage ``m<j>``, the columns ``m<j>_idx`` (top-K
classes, -1 where the model did not run), ``m<j>_prob`` and ``m<j>_t`` (when the model finished the batch, NaN
where it skipped the row).
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..config import InferenceConfig
from ..images import ImageError, Shard, decode_image, read_shard_sources
from ..models import ModelSpec, Preprocessing, build_model, normalize, preprocess_uint8
from ..store import softmax, topk_from_scores
from .plan import Hardware

ROW_COLUMNS = ("shard_key", "image_id", "path", "stage", "error")
"""The columns every row keeps to the driver besides the models' outputs."""


@dataclass(frozen=True)
class PredictorSettings:
    """How a model actor runs its model."""

    precision: str = "auto"  # auto (bf16 on GPU, fp32 on CPU), fp32, bf16 or fp16
    channels_last: bool = True  # on GPU
    compile: bool = False  # torch.compile
    cpu_threads: int | None = None  # torch threads on CPU (None = torch's default)


@dataclass(frozen=True)
class ModelStage:
    """One model of a pass: what it runs, which image column it reads and which shards it still needs."""

    spec: ModelSpec
    prep: Preprocessing
    column: str  # the uint8 image column it reads: img<j>, one per distinct resize/crop
    out: str  # the prefix of its output columns: m<j>
    todo: frozenset[str]  # keys of the shards it has not stored yet (it skips the rows of the others)


@dataclass(frozen=True)
class PassSpec:
    """Everything the pipeline of one pass needs (plain, picklable values)."""

    shards: tuple[tuple[str, Shard], ...]  # (key, shard) of the shards the pass reads, in plan order
    preps: tuple[Preprocessing, ...]  # one per distinct resize/crop; preps[j] fills column img<j>
    stages: tuple[ModelStage, ...]
    k: int  # ranked classes kept per image
    max_pixels: int  # decode limit (decompression bombs)
    decode_batch_size: int
    batch_size: int  # images per model batch
    actors: int  # actors per model
    num_gpus: int  # GPUs per model actor (0 or 1)
    cpus_per_actor: float
    predictor: PredictorSettings

    @property
    def output_columns(self) -> list[str]:
        """The columns the pipeline hands to the driver."""
        return list(ROW_COLUMNS) + [f"{s.out}_{x}" for s in self.stages for x in ("idx", "prob", "t")]


def pass_spec(
    models: Sequence[tuple[ModelSpec, Preprocessing, frozenset[str]]],
    shards: Sequence[tuple[str, Shard]],
    settings: InferenceConfig,
    hw: Hardware,
    gpus: float,
) -> PassSpec:
    """The :class:`PassSpec` of a pass: ``models`` as (spec, preprocessing, keys of the shards it needs), in
    order (stage ``m<j>``), over ``shards`` (key, shard); models with the same resize/crop share one image column."""
    distinct: dict[tuple, Preprocessing] = {}
    for _, prep, _ in models:
        distinct.setdefault(prep.resize_key(), prep)
    column_of = {key: f"img{j}" for j, key in enumerate(distinct)}
    stages = tuple(
        ModelStage(spec, prep, column_of[prep.resize_key()], f"m{j}", todo)
        for j, (spec, prep, todo) in enumerate(models)
    )
    return PassSpec(
        shards=tuple(shards),
        preps=tuple(distinct.values()),
        stages=stages,
        k=settings.k,
        max_pixels=settings.max_pixels,
        decode_batch_size=settings.decode_batch_size,
        batch_size=hw.batch_size,
        actors=hw.actors,
        num_gpus=1 if gpus else 0,
        cpus_per_actor=hw.cpus_per_actor,
        predictor=PredictorSettings(
            precision=settings.precision,
            channels_last=settings.channels_last,
            compile=settings.compile,
            cpu_threads=hw.cpu_threads,
        ),
    )


# --------------------------------------------------------------------------------------------------------------
# Stages (run inside Ray tasks and actors)


def read_rows(row: Mapping[str, Any], shards: Sequence[tuple[str, Shard]]) -> list[dict[str, Any]]:
    """The rows of shard ``shards[row["shard"]]``: one per planned image, with its bytes or its read error."""
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


def decode_batch(batch: Mapping[str, Any], preps: Sequence[Preprocessing], max_pixels: int) -> dict[str, Any]:
    """Decode each image once and resize/crop it once per distinct preprocessing (uint8, NHWC, column img<j>);
    an image that fails gets its stage and reason instead (and zeros)."""
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

    def __init__(self, stage: ModelStage, k: int, settings: PredictorSettings, counter: Any = None) -> None:
        import torch

        self.torch = torch
        self.device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
        if self.device.type == "cpu" and settings.cpu_threads:
            torch.set_num_threads(int(settings.cpu_threads))
        self.model = build_model(stage.spec).to(self.device)
        precision = settings.precision
        if precision == "auto":
            precision = "bf16" if self.device.type == "cuda" else "fp32"
        self.autocast = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(precision)
        if self.device.type == "cuda" and settings.channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)
        if settings.compile:
            self.model = torch.compile(self.model)
        self.mean, self.std = stage.prep.mean, stage.prep.std
        self.column, self.out, self.k = stage.column, stage.out, k
        self.todo = list(stage.todo)
        self.counter = counter

    def __call__(self, batch: dict[str, Any]) -> dict[str, Any]:
        """Add ``<out>_idx`` / ``<out>_prob`` (top-K, -1 / NaN where skipped) and ``<out>_t`` to the batch."""
        torch = self.torch
        n = len(batch["image_id"])
        idx = np.full((n, self.k), -1, dtype=np.int16)
        prob = np.full((n, self.k), np.nan, dtype=np.float32)
        mine = np.isin(batch["shard_key"], self.todo)  # rows of shards this model has not stored yet
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
    """Images each model stage's actors have finished, for live per-model progress (a tiny Ray actor, no CPU;
    the reports are fire-and-forget, so the figures it shows may trail by a batch)."""

    def __init__(self) -> None:
        self.counts: dict[str, int] = {}

    def add(self, key: str, n: int) -> None:
        """Count ``n`` more images finished by model stage ``key``."""
        self.counts[key] = self.counts.get(key, 0) + n

    def get(self) -> dict[str, int]:
        """Images finished so far per model stage."""
        return dict(self.counts)


def start_counter(ray: Any) -> Any:
    """A new :class:`_Counter` actor (no CPU) that the model actors of a pass report their batches to."""
    return ray.remote(num_cpus=0)(_Counter).remote()


# --------------------------------------------------------------------------------------------------------------
# The pipeline


def quiet_ray_data(ray: Any) -> None:
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


def build_dataset(ray: Any, spec: PassSpec, counter: Any = None) -> Any:
    """The Ray Dataset of one pass: the ``spec.shards`` through read -> decode -> one actor pool per model stage,
    with only :attr:`PassSpec.output_columns` kept. ``counter`` (a :func:`start_counter` actor) gets every
    model batch's image count; None = no live counts."""
    items = list(spec.shards)
    ds = ray.data.from_items([{"shard": i} for i in range(len(items))], override_num_blocks=len(items))
    ds = ds.flat_map(read_rows, fn_kwargs={"shards": items})
    ds = ds.map_batches(
        decode_batch,
        fn_kwargs={"preps": list(spec.preps), "max_pixels": spec.max_pixels},
        batch_size=spec.decode_batch_size,
        batch_format="numpy",
    )
    for stage in spec.stages:
        ds = ds.map_batches(
            Predictor,
            fn_constructor_kwargs={"stage": stage, "k": spec.k, "settings": spec.predictor, "counter": counter},
            batch_size=spec.batch_size,
            batch_format="numpy",
            compute=ray.data.ActorPoolStrategy(size=spec.actors),
            num_gpus=spec.num_gpus,
            num_cpus=spec.cpus_per_actor,  # GPU actors: 0 unless set (decoding has the CPUs)
        )
    return ds.select_columns(spec.output_columns)
