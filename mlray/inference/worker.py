"""What runs inside Ray: reading and decoding a shard once for several preprocessings, and the model slots.

    shards of a wave ──► Ray Data ``map_batches(decode_batch)`` (CPU tasks, one block per shard): read each
              image once, decode it once, resize/crop it once per preprocessing (group) of the wave ──► the
              shard's block in Ray's object store (the cache; it spills to disk)
          ──► :class:`SlotWorker` (one actor per slot, GPU or CPU): for each chunk it is given, builds the
              chunk's model if it holds another one, runs it over the chunk's decoded shards batch by batch
              (normalize on the device, bf16 autocast + channels_last on GPU, top-K) and returns one
              :data:`ShardResult` per shard
          ──► the driver, which stores it (:mod:`mlray.inference.driver`)

Every image comes back in its shard's result: with its top-K, or with the stage and reason it failed.
"""

from __future__ import annotations

import gc
import math
import os
import sys
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

from ..images import ImageError, Shard, decode_image, read_shard_sources
from ..models import ModelSpec, Preprocessing, build_model, normalize, preprocess_uint8
from ..store import softmax, topk_from_scores, topk_with_classes
from .malloc import keep_freed_memory

T = TypeVar("T")
DECODE_NICE = 19
"""The niceness of decode work where Linux's ``SCHED_IDLE`` policy is refused (:func:`lower_this_thread`)."""

Decoded = dict[str, np.ndarray]
"""One shard decoded for one preprocessing: ``image_id``, ``path``, ``stage``, ``error`` (str arrays; ``error``
empty where the image is fine) and ``images`` (``uint8 (n, H, W, 3)``, zeros where it failed)."""

ShardResult = dict[str, Any]
"""One shard through one model: ``key``, the ``image_id`` / ``path`` / ``stage`` / ``error`` arrays of all its
images, ``idx`` / ``prob`` (top-K of the images without an error, in order) and ``marks`` (``[(finish time,
images)]`` of each model batch)."""


@dataclass(frozen=True)
class PredictorSettings:
    """How a slot runs its models."""

    precision: str = "auto"  # auto (bf16 on GPU, fp32 on CPU), fp32, bf16 or fp16
    channels_last: bool = True  # on GPU
    compile: bool = False  # torch.compile
    cpu_threads: int | None = None  # torch threads on CPU (None = torch's default)


@dataclass(frozen=True)
class ModelStage:
    """One model as a slot runs it: what it is and the preprocessing of the images it reads."""

    spec: ModelSpec
    prep: Preprocessing

    @property
    def name(self) -> str:
        """The model's name."""
        return self.spec.name


# --------------------------------------------------------------------------------------------------------------
# Reading and decoding


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


def decode_batch(
    batch: Mapping[str, np.ndarray],
    shards: Mapping[str, Shard],
    preps: Mapping[int, Preprocessing],
    max_pixels: int,
    threads: int = 1,
) -> dict[str, np.ndarray]:
    """The Ray Data ``map_batches`` function of a decode wave: ``batch`` is one row ``{"key": shard key, "groups":
    "0,3"}`` (the groups of ``preps`` that need the shard); the result is the shard's images, one row each: every
    image read once, decoded once and resized/cropped once per needed group (columns ``image_id``, ``path`` and
    per group ``g`` of ``preps``: ``stage_<g>``, ``error_<g>``, ``images_<g>``). Groups of
    ``preps`` the shard is not needed for get 1 x 1 placeholders. A read or decode failure is that image's error
    for every group; a resize failure only for the group it failed in. The work runs at a lower CPU priority
    (:func:`at_low_priority`), so a model on the same node's CPUs runs at full speed and decoding takes the
    cycles it leaves; with ``threads`` > 1 (the plan's :attr:`~mlray.inference.slots.SlotPlan.decode_threads`),
    on Linux, the shard's images are decoded by that many threads (no more than :func:`usable_cpus`), each at that
    priority, so every core a model leaves idle decodes (Pillow releases the GIL while it decodes and resizes);
    elsewhere by one thread, since no thread there can be put below the model. The result does not depend on
    ``threads``."""
    return at_low_priority(_decode_shard, batch, shards, preps, max_pixels, threads)


def _decode_shard(
    batch: Mapping[str, np.ndarray],
    shards: Mapping[str, Shard],
    preps: Mapping[int, Preprocessing],
    max_pixels: int,
    threads: int = 1,
) -> dict[str, np.ndarray]:
    key = str(batch["key"][0])
    needed = {int(g) for g in str(batch["groups"][0]).split(",") if g}
    rows = read_rows({"shard": 0}, [(key, shards[key])])
    n = len(rows)
    size = {g: (p.input_size[1], p.input_size[2]) if g in needed else (1, 1) for g, p in preps.items()}
    images = {g: np.zeros((n, h, w, 3), dtype=np.uint8) for g, (h, w) in size.items()}
    stage = {g: [r["stage"] for r in rows] for g in preps}
    error = {g: [r["error"] for r in rows] for g in preps}

    def one(i: int) -> None:  # image i, into row i of every output (threads write distinct rows)
        if rows[i]["error"]:
            return
        try:
            img = decode_image(rows[i]["data"], max_pixels=max_pixels)
        except Exception as exc:  # ImageError, or anything else an image can do to a decoder
            for g in preps:
                stage[g][i], error[g][i] = _failure(exc)
            return
        for g in needed:
            try:
                images[g][i] = preprocess_uint8(img, preps[g])
            except Exception as exc:  # the memory budget of the resize, or anything else a resizer can do
                stage[g][i], error[g][i] = _failure(exc)

    if threads > 1:  # only then the CPUs are looked up (GPU nodes ask for one thread)
        threads = min(threads, usable_cpus(), n) if sys.platform == "linux" else 1
    if threads > 1:
        with ThreadPoolExecutor(threads, thread_name_prefix="mlray-decode", initializer=lower_this_thread) as pool:
            for _ in pool.map(one, range(n)):
                pass
    else:
        for i in range(n):
            one(i)
    out: dict[str, np.ndarray] = {
        "image_id": np.array([r["image_id"] for r in rows], dtype=str),
        "path": np.array([r["path"] for r in rows], dtype=str),
    }
    for g in preps:
        out[f"stage_{g}"] = np.array(stage[g], dtype=str)
        out[f"error_{g}"] = np.array(error[g], dtype=str)
        out[f"images_{g}"] = images[g]
    return out


def usable_cpus(cgroup: str = "/sys/fs/cgroup") -> int:
    """The CPUs this process may use, at least 1: the CPUs it may run on (its affinity where the platform has one,
    else every CPU), and no more than its cgroup's CPU quota rounded up (a container's CPU limit: cgroup v2
    ``cpu.max``, else v1 ``cpu/cpu.cfs_quota_us`` over ``cpu.cfs_period_us``), where ``cgroup`` has one.

    Why the quota: threads at idle priority still spend it, and a container over its quota is throttled, models
    included."""
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        cpus = os.cpu_count() or 1
    quota = _cgroup_quota(cgroup)
    if quota is not None:
        cpus = min(cpus, math.ceil(quota))
    return max(1, cpus)


def _cgroup_quota(root: str) -> float | None:
    """CPUs of the cgroup CPU quota under ``root`` (v2 ``cpu.max``: "QUOTA PERIOD" or "max PERIOD"; else v1
    ``cpu/cpu.cfs_quota_us`` and ``cpu/cpu.cfs_period_us``, -1 for none); None where there is no quota."""
    try:
        quota, period = (Path(root) / "cpu.max").read_text().split()
    except (OSError, ValueError):
        try:
            quota = (Path(root) / "cpu" / "cpu.cfs_quota_us").read_text().strip()
            period = (Path(root) / "cpu" / "cpu.cfs_period_us").read_text().strip()
        except OSError:
            return None
    try:
        if quota in ("max", "-1") or float(period) <= 0:
            return None
        return float(quota) / float(period)
    except ValueError:
        return None


def lower_this_thread() -> None:
    """Put the calling thread at the lowest CPU priority it may take: Linux's ``SCHED_IDLE`` policy (it runs when a
    core would otherwise idle), else niced by :data:`DECODE_NICE`, else (not allowed: a sandbox, say) as it is.
    Per thread on Linux: the process's other threads keep their scheduling. Elsewhere than Linux, nothing."""
    if sys.platform != "linux":
        return
    try:
        os.sched_setscheduler(0, os.SCHED_IDLE, os.sched_param(0))  # 0: this thread only
    except OSError:
        try:  # no SCHED_IDLE here: the nicest priority instead (niceness is per thread on Linux too)
            os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), DECODE_NICE)
        except OSError:  # not allowed either: the caller's priority
            pass


def at_low_priority(fn: Callable[..., T], *args: Any) -> T:
    """``fn(*args)``, run in a new thread of the lowest CPU priority (:func:`lower_this_thread`); elsewhere than
    Linux (where a thread's scheduling is not its own) in the calling thread, as is. Its result or exception is
    the caller's; the calling thread's own scheduling never changes (a Ray worker process runs later tasks as it
    started).

    Why: on a CPU node a slot's torch threads use every core, and a decode task beside them stalls every parallel
    region of the model. lite0 on 2 cores, in a process niced by 15 as Ray's workers are, beside one process
    decoding photos: 0.32 s per batch of 32 alone, 0.53 s with the decoding process at nice 15 or at 19 alike, 0.35 s
    with it at ``SCHED_IDLE`` (which still decoded 157 photos/s, against 250 alone, filling the model's gaps)."""
    if sys.platform != "linux":
        return fn(*args)
    out: list[Any] = []

    def work() -> None:
        lower_this_thread()
        try:
            out.append((True, fn(*args)))
        except BaseException as exc:  # the caller raises it
            out.append((False, exc))

    thread = threading.Thread(target=work, name="mlray-decode-low-priority")
    thread.start()
    thread.join()
    ok, value = out[0]
    if not ok:
        raise value
    return value


def shard_for_group(blocks: Sequence[Any], group: int) -> Decoded:
    """One decoded shard as a model of ``group`` reads it: the Ray Data blocks (Arrow tables, in order) that
    :func:`decode_batch` made of it, as ``image_id``, ``path``, ``stage``, ``error`` and ``images`` arrays."""
    from ray.data.block import BlockAccessor

    names = {"image_id": "image_id", "path": "path", f"stage_{group}": "stage", f"error_{group}": "error",
             f"images_{group}": "images"}  # fmt: skip
    parts = [BlockAccessor.for_block(b.select(list(names))).to_batch_format("numpy") for b in blocks]
    return {new: np.concatenate([p[old] for p in parts]) if len(parts) > 1 else parts[0][old]
            for old, new in names.items()}  # fmt: skip


def _failure(exc: Exception) -> tuple[str, str]:
    """(stage, one-line reason) of an exception raised while decoding or resizing one image."""
    if isinstance(exc, ImageError):
        return exc.stage, exc.reason
    return "decode", f"{type(exc).__name__}: {exc}".splitlines()[0]


# --------------------------------------------------------------------------------------------------------------
# Models


class Predictor:
    """One model, built once, then top-K ranks for batches of uint8 images."""

    def __init__(self, stage: ModelStage, k: int, settings: PredictorSettings) -> None:
        import torch

        self.torch = torch
        self.device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
        self.model = build_model(stage.spec).to(self.device)
        precision = settings.precision
        if precision == "auto":
            precision = "bf16" if self.device.type == "cuda" else "fp32"
        self.autocast = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(precision)
        if self.device.type == "cuda" and settings.channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)
        if settings.compile:
            self.model = torch.compile(self.model)
        self.mean, self.std, self.k = stage.prep.mean, stage.prep.std, k
        self.size = (stage.prep.input_size[1], stage.prep.input_size[2])

    def warm_up(self) -> None:
        """One forward pass on a single blank image of the model's input size (its first pass is the slow one)."""
        self(np.zeros((1, self.size[0], self.size[1], 3), dtype=np.uint8))

    def __call__(self, images: np.ndarray, classes: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Top-K class indices (int16) and probabilities (float32) of ``uint8 (n, H, W, 3)`` images; with
        ``classes`` (a dataset's class space), the top-K and every class of it (-1 / NaN padded:
        :func:`mlray.store.topk_with_classes`)."""
        torch = self.torch
        x = torch.from_numpy(np.ascontiguousarray(images)).to(self.device, non_blocking=True)
        x = normalize(x, self.mean, self.std)
        with (
            torch.inference_mode(),
            torch.autocast(self.device.type, dtype=self.autocast, enabled=self.autocast is not None),
        ):
            logits = self.model(x)
        scores = softmax(logits.float().cpu().numpy().astype(np.float32), axis=1)
        if classes is not None:
            idx, prob = topk_with_classes(scores, self.k, classes)
        else:
            idx, prob = topk_from_scores(scores, self.k)
        return idx.astype(np.int16), prob.astype(np.float32)


class SlotWorker:
    """One model slot (a Ray actor): runs chunks of shards through their model, one model held at a time (a chunk
    of another model replaces it). It is started before the run is planned (its process imports torch and timm
    meanwhile); :meth:`configure` then gives it what the plan found."""

    def __init__(self, settings: PredictorSettings, k: int, batch_size: int) -> None:
        import timm  # noqa: F401  (what building a model imports: here it overlaps the driver's planning)
        import torch

        keep_freed_memory()  # each batch's buffers stay in the heap for the next one (see mlray.inference.malloc)
        if settings.cpu_threads and not torch.cuda.is_available():
            torch.set_num_threads(int(settings.cpu_threads))
        self.settings, self.k, self.batch_size = settings, k, batch_size
        self.counter: Any = None
        self.classes: dict[str, np.ndarray] = {}
        self.stage: ModelStage | None = None
        self.predictor: Predictor | None = None

    def configure(self, counter: Any = None, classes: Mapping[str, np.ndarray] | None = None) -> None:
        """``counter`` (a :func:`start_counter` actor, or None) gets each batch's image count for live progress;
        ``classes`` maps a dataset that covers only some classes to them (its rows keep the top-K and every one of
        those classes)."""
        self.counter, self.classes = counter, dict(classes or {})

    def ready(self) -> str:
        """The id of the node this slot runs on (answers once the actor is placed and started)."""
        import ray

        return str(ray.get_runtime_context().get_node_id())

    def prepare(self, stage: ModelStage) -> None:
        """Build ``stage``'s model now and run it once on one blank image (lazy initialisation: imports, CUDA
        context, kernels), while the shards of its first chunk are still being decoded; that chunk's :meth:`run`
        finds it built. A failure leaves nothing built: :meth:`run` builds again and reports it."""
        try:
            self._load(stage).warm_up()
        except Exception:  # run() raises it, with the chunk it belongs to
            self.predictor, self.stage = None, None

    def _load(self, stage: ModelStage) -> Predictor:
        """The predictor of ``stage``, building it (and dropping the previous model) unless it is held already."""
        if self.predictor is None or self.stage != stage:
            self.predictor = None
            gc.collect()
            import torch

            if torch.cuda.is_available():
                torch.cuda.empty_cache()
            self.predictor = Predictor(stage, self.k, self.settings)
            self.stage = stage
        return self.predictor

    def run(self, stage: ModelStage, group: int, windows: list[list[tuple[str, list[Any]]]]) -> list[ShardResult]:
        """Run ``stage``'s model (of preprocessing group ``group``) over the decoded shards of ``windows`` (lists of
        ``(shard key, ObjectRefs of its Ray Data blocks)``, each window fetched in one call while the next one moves
        here); one :data:`ShardResult` per shard, in order."""
        import ray

        predictor = self._load(stage)
        out = []
        for i, window in enumerate(windows):
            if i + 1 < len(windows):  # start moving the next window's shards here while this one runs
                ahead = [ref for _, refs in windows[i + 1] for ref in refs]
                ray.wait(ahead, num_returns=len(ahead), timeout=0, fetch_local=True)
            blocks = ray.get([ref for _, refs in window for ref in refs])
            at = 0
            for key, refs in window:
                shard = shard_for_group(blocks[at : at + len(refs)], group)
                at += len(refs)
                out.append(self._infer(predictor, stage.name, key, shard))
            del blocks
        return out

    def _infer(self, predictor: Predictor, name: str, key: str, shard: Decoded) -> ShardResult:
        """One decoded shard through the model, batch by batch."""
        ok = np.flatnonzero(shard["error"] == "")
        classes = self.classes.get(key.split("/", 1)[0])
        width = self.k + (len(classes) if classes is not None else 0)
        idx = np.empty((len(ok), width), dtype=np.int16)
        prob = np.empty((len(ok), width), dtype=np.float32)
        marks = []
        for start in range(0, len(ok), self.batch_size):
            rows = ok[start : start + self.batch_size]
            idx[start : start + len(rows)], prob[start : start + len(rows)] = predictor(shard["images"][rows], classes)
            marks.append((time.time(), len(rows)))
            if self.counter is not None:
                self.counter.add.remote(name, len(rows))  # live progress, fire and forget
        return {"key": key, "image_id": shard["image_id"], "path": shard["path"], "stage": shard["stage"],
                "error": shard["error"], "idx": idx, "prob": prob, "marks": marks}  # fmt: skip


class _Counter:
    """Images each model's slots have finished, for live per-model progress (a tiny Ray actor, no CPU; the reports
    are fire-and-forget, so the figures it shows may trail by a batch)."""

    def __init__(self) -> None:
        self.counts: dict[str, int] = {}

    def add(self, key: str, n: int) -> None:
        """Count ``n`` more images finished by model ``key``."""
        self.counts[key] = self.counts.get(key, 0) + n

    def get(self) -> dict[str, int]:
        """Images finished so far per model."""
        return dict(self.counts)


def start_counter(ray: Any) -> Any:
    """A new :class:`_Counter` actor (no CPU) that the slots report their batches to."""
    return ray.remote(num_cpus=0)(_Counter).remote()
