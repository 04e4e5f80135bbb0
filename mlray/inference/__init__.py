"""Distributed inference: every model runs on the first free slot (GPU, or a share of a CPU node), longest first,
on images decoded once per distinct preprocessing by Ray Data and cached in Ray's object store; the driver writes
each finished (model, shard) into the resumable Parquet store (:mod:`mlray.store`).

============  ===============================================================================================
``plan``      pure planning (no Ray): models, preprocessing groups, the shards each model needs, its work
``costs``     each model's expected images/s: this store's earlier runs, else the bundled timm table
``slots``     model slots sized per node (never from the cluster's totals), checked before anything starts
``schedule``  the policy (pure): open groups, longest model first, helping at the end; :func:`simulate`
``worker``    what runs inside Ray: :func:`decode_batch` (Ray Data: read + decode once, resize per
              preprocessing, at idle CPU priority), :class:`SlotWorker` (one actor per slot, one model at a
              time)
``malloc``    a slot process's allocator: freed memory kept for the next batch (glibc ``mallopt``)
``dispatch``  the loop: starts slots, decodes groups into the cache, hands out chunks, survives lost slots
``timing``    each model's steady images/s (after its first batch on a slot), as the manifest records it
``progress``  :class:`ProgressSink`: the protocol the driver reports live progress to
``driver``    :func:`run_inference` -> :class:`InferenceResult`: slots started, planning, dispatch, storing,
              reconciliation
``estimate``  :func:`estimate_run`: what ``mlray plan`` prints (no inference, offline)
============  ===============================================================================================

Store layout, resume and the finished-shard rule: :mod:`mlray.store.layout`. The design and the figures:
``docs/design.md`` ("Scheduling").
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .costs import Rate, cost_table, model_rate, stored_rates, table_rate
    from .driver import InferenceResult, ModelRun, run_inference
    from .plan import (
        PlannedShard,
        PrepGroup,
        build_works,
        model_specs,
        planned_shards,
        prep_groups,
        reuse_notes,
        reused_shards,
    )
    from .progress import ProgressSink
    from .schedule import Chunk, Scheduler, Simulation, Work, lower_bound, simulate
    from .slots import Node, Slot, SlotPlan, cluster_nodes, plan_slots
    from .timing import SteadyRates
    from .worker import ModelStage, Predictor, PredictorSettings, SlotWorker, decode_batch, read_rows

_HOME = {
    "costs": ("Rate", "cost_table", "model_rate", "stored_rates", "table_rate"),
    "driver": ("InferenceResult", "ModelRun", "run_inference"),
    "plan": (
        "PlannedShard", "PrepGroup", "build_works", "model_specs", "planned_shards", "prep_groups", "reuse_notes",
        "reused_shards",
    ),
    "progress": ("ProgressSink",),
    "schedule": ("Chunk", "Scheduler", "Simulation", "Work", "lower_bound", "simulate"),
    "slots": ("Node", "Slot", "SlotPlan", "cluster_nodes", "plan_slots"),
    "timing": ("SteadyRates",),
    "worker": ("ModelStage", "Predictor", "PredictorSettings", "SlotWorker", "decode_batch", "read_rows"),
}  # fmt: skip
_MODULE_OF = {name: module for module, names in _HOME.items() for name in names}
__all__ = [
    "Chunk",
    "InferenceResult",
    "ModelRun",
    "ModelStage",
    "Node",
    "PlannedShard",
    "Predictor",
    "PredictorSettings",
    "PrepGroup",
    "ProgressSink",
    "Rate",
    "Scheduler",
    "Simulation",
    "Slot",
    "SlotPlan",
    "SlotWorker",
    "SteadyRates",
    "Work",
    "build_works",
    "cluster_nodes",
    "cost_table",
    "decode_batch",
    "lower_bound",
    "model_rate",
    "model_specs",
    "plan_slots",
    "planned_shards",
    "prep_groups",
    "read_rows",
    "reuse_notes",
    "reused_shards",
    "run_inference",
    "simulate",
    "stored_rates",
    "table_rate",
]


def __getattr__(name: str) -> Any:
    """The public names above, each imported from its module on first use (PEP 562): a Ray worker process that
    imports :mod:`mlray.inference.worker` then imports what the worker needs, not the driver, mlray's config and
    pydantic (0.2-0.3 s per process here)."""
    module = _MODULE_OF.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    """The module's globals and its lazy public names."""
    return sorted({*globals(), *__all__})
