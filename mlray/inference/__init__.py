"""Distributed inference: Ray Data streams image shards through decode/preprocess to one actor pool per model,
and the driver writes each finished shard into the resumable Parquet store (:mod:`mlray.store`).

============  ===============================================================================================
``plan``      pure planning (no Ray): models, hardware defaults, passes of models, the shards each model needs
``pipeline``  the Ray Data pipeline of a pass (:class:`PassSpec`), and its stages: read, decode, :class:`Predictor`
``collect``   rows back from the pipeline -> whole shards (never a shard stored in part, never a row twice)
``timing``    each model's steady images/s (after its first batch), as the run manifest records it
``ticks``     an iterator that wakes the driver twice a second while it waits, to poll progress
``progress``  :class:`ProgressSink`: the protocol the driver reports live progress to
``driver``    :func:`run_inference` -> :class:`InferenceResult`: passes, storing shards, reconciliation, manifest
============  ===============================================================================================

Store layout, resume and the finished-shard rule: :mod:`mlray.store.layout`.
"""

from .driver import InferenceResult, ModelRun, run_inference
from .pipeline import ModelStage, PassSpec, Predictor, PredictorSettings, build_dataset, decode_batch, read_rows
from .plan import (
    Hardware,
    PassPlan,
    PlannedShard,
    cluster_gpus,
    hardware_defaults,
    model_specs,
    plan_passes,
    planned_shards,
    reuse_notes,
    reused_shards,
)
from .progress import ProgressSink
from .timing import steady_rate

__all__ = [
    "Hardware",
    "InferenceResult",
    "ModelRun",
    "ModelStage",
    "PassPlan",
    "PassSpec",
    "PlannedShard",
    "Predictor",
    "PredictorSettings",
    "ProgressSink",
    "build_dataset",
    "cluster_gpus",
    "decode_batch",
    "hardware_defaults",
    "model_specs",
    "plan_passes",
    "planned_shards",
    "read_rows",
    "reuse_notes",
    "reused_shards",
    "run_inference",
    "steady_rate",
]
