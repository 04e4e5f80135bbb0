"""Where models run: model *slots* sized per node, never from the whole cluster's totals (no node may be asked for
more than it has), and checked before anything starts.

A slot is one long-lived Ray actor that runs one model at a time (:class:`~mlray.inference.worker.SlotWorker`).

- GPU nodes (the cluster has GPUs and ``device`` is ``auto``, or ``device: gpu``): one slot per GPU
  (``models_per_pass: n`` lets n models share each GPU, ``1/n`` GPU each), no CPUs asked unless
  ``cpus_per_actor`` is set (the node's CPUs decode); model batches of 256.
- CPU nodes: one slot per 8 CPUs of the node, at least one (``models_per_pass`` sets the number per node). The
  slots of a node share its CPUs minus up to one kept for decoding (half of a one-CPU node), and each slot's
  torch uses about the node's CPUs over its slots in threads; model batches of 32.

Decode tasks ask for ``decode_cpus``: one CPU, or what the nodes keep free for decoding when that is less. Each
decodes its shard with ``decode_threads`` threads at the lowest CPU priority (see
:func:`mlray.inference.worker.decode_batch`, which also caps them at the CPUs its process may use): one on GPU
nodes, whose CPUs each run a decode task of their own; on CPU nodes the largest node's CPUs, at most
:data:`MAX_DECODE_THREADS`, so the CPUs a slot holds decode whenever its model leaves them idle (while it waits
for its next shard, say).
:func:`plan_slots` raises a one-line :class:`~mlray.errors.MlrayError` naming the resource when a setting asks
for what no node has, so a run never waits forever for an actor that cannot be placed.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from ..config import InferenceConfig
from ..errors import MlrayError

CPU_SLOT_CPUS = 8
"""A CPU node gets one model slot per this many CPUs (at least one)."""
MAX_DECODE_THREADS = 4
"""On CPU nodes a decode task decodes with at most this many threads (each holds one image's buffers)."""
GPU_BATCH_SIZE = 256
CPU_BATCH_SIZE = 32


@dataclass(frozen=True)
class Node:
    """One alive node of the cluster: its id and its total CPUs, GPUs and object store bytes."""

    id: str
    cpus: float
    gpus: float
    object_store_bytes: float = 0.0


def cluster_nodes(ray: Any) -> list[Node]:
    """The alive nodes of the connected Ray cluster (``ray.nodes()``), in Ray's order."""
    out = []
    for n in ray.nodes():
        if n.get("Alive"):
            res = n.get("Resources") or {}
            out.append(
                Node(
                    str(n["NodeID"]),
                    float(res.get("CPU", 0)),
                    float(res.get("GPU", 0)),
                    float(res.get("object_store_memory", 0)),
                )
            )
    return out


@dataclass(frozen=True)
class Slot:
    """One model slot: the node it is pinned to (None: any node, e.g. a GPU node an autoscaler has still to
    start), the CPUs and GPUs its actor asks for, and its torch threads on a CPU (None: torch's default)."""

    id: str
    node: str | None
    cpus: float
    gpus: float
    threads: int | None

    def as_dict(self) -> dict[str, Any]:
        """The slot by field, as the run manifest records it."""
        return {"node": self.node, "cpus": self.cpus, "gpus": self.gpus, "threads": self.threads}


@dataclass(frozen=True)
class SlotPlan:
    """The slots of a run, the kind of device they hold (``gpu`` or ``cpu``), the images per model batch, the
    CPUs each decode task asks for and the threads it may decode with."""

    kind: str
    slots: tuple[Slot, ...]
    batch_size: int
    decode_cpus: float
    decode_threads: int = 1

    def as_dict(self) -> dict[str, Any]:
        """The plan, as the run manifest records it."""
        return {
            "slot_kind": self.kind,
            "batch_size": self.batch_size,
            "decode_cpus": self.decode_cpus,
            "decode_threads": self.decode_threads,
            "slots": [s.as_dict() for s in self.slots],
        }


def uses_gpus(device: str, nodes: Sequence[Node]) -> bool:
    """Whether models run on GPUs: ``device: gpu``, or ``auto`` on a cluster with a GPU; never for ``cpu``."""
    return device == "gpu" or (device == "auto" and any(n.gpus > 0 for n in nodes))


def plan_slots(nodes: Sequence[Node], settings: InferenceConfig) -> SlotPlan:
    """The model slots of a run on ``nodes`` (see the module docstring), or a one-line MlrayError naming the
    resource that no node has."""
    if uses_gpus(settings.device, nodes):
        return _gpu_slots(nodes, settings)
    return _cpu_slots(nodes, settings)


def _gpu_slots(nodes: Sequence[Node], settings: InferenceConfig) -> SlotPlan:
    per_gpu = settings.models_per_pass or 1
    gpus = 1.0 / per_gpu
    cpus = float(settings.cpus_per_actor or 0.0)
    slots: list[Slot] = []
    for node in nodes:
        count = math.floor(node.gpus * per_gpu + 1e-9)
        if cpus:
            count = min(count, math.floor(node.cpus / cpus + 1e-9))
        slots += [Slot(f"{node.id}/{i}", node.id, cpus, gpus, None) for i in range(count)]
    gpu_nodes = [n for n in nodes if n.gpus > 0]
    if not slots and gpu_nodes:
        most = max(n.cpus for n in gpu_nodes)
        raise MlrayError(
            f"inference: each model slot asks for {cpus:g} CPUs (cpus_per_actor) beside its GPU, but no GPU node "
            f"has more than {most:g} CPUs: lower cpus_per_actor"
        )
    if not slots:  # device: gpu before an autoscaler has started a GPU node: one slot, placed where one appears
        slots = [Slot("any/0", None, cpus, gpus, None)]
    most_cpus = max((n.cpus for n in nodes), default=0.0)
    if most_cpus <= 0:
        raise MlrayError("inference: no node has a CPU to read and decode images on")
    return SlotPlan("gpu", tuple(slots), settings.batch_size or GPU_BATCH_SIZE, min(1.0, most_cpus))


def _cpu_slots(nodes: Sequence[Node], settings: InferenceConfig) -> SlotPlan:
    cpu_nodes = [n for n in nodes if n.cpus > 0]
    if not cpu_nodes:
        raise MlrayError("inference: no node of the cluster has a CPU to run models on")
    asked = settings.cpus_per_actor
    most = max(n.cpus for n in cpu_nodes)
    if asked is not None and asked > most:
        raise MlrayError(
            f"inference: each model slot asks for {asked:g} CPUs (cpus_per_actor), but no node has more than "
            f"{most:g}: lower cpus_per_actor"
        )
    slots: list[Slot] = []
    free: list[float] = []
    for node in cpu_nodes:
        count = settings.models_per_pass or max(1, int(node.cpus // CPU_SLOT_CPUS))
        if asked is not None:
            count = min(count, math.floor(node.cpus / asked + 1e-9))
            cpus = float(asked)
        else:
            cpus = (node.cpus - min(1.0, node.cpus / 2)) / count
        threads = max(1, round(asked if asked is not None else node.cpus / count))
        slots += [Slot(f"{node.id}/{i}", node.id, cpus, 0.0, threads) for i in range(count)]
        free.append(node.cpus - count * cpus)
    decode_cpus = min(1.0, max(free))
    if decode_cpus <= 1e-9:
        raise MlrayError(
            f"inference: model slots of {asked:g} CPUs (cpus_per_actor) leave no CPU on any node to decode images "
            "on: lower cpus_per_actor"
        )
    decode_threads = max(1, min(MAX_DECODE_THREADS, int(most)))
    return SlotPlan("cpu", tuple(slots), settings.batch_size or CPU_BATCH_SIZE, decode_cpus, decode_threads)


def gpu_slot_plan(gpus: int, settings: InferenceConfig) -> SlotPlan:
    """The slots of ``gpus`` GPUs, wherever they are (``mlray plan --gpus N``): as :func:`plan_slots` plans them
    on one node with that many GPUs and CPUs to spare."""
    if gpus < 1:
        raise MlrayError(f"--gpus must be at least 1, got {gpus}")
    return _gpu_slots([Node("planned", cpus=1e6, gpus=float(gpus))], settings)
