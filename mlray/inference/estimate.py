"""What a run would do, without running it: ``mlray plan``. No inference, no download, no Ray unless asked.

:func:`estimate_run` expands the models, groups them by preprocessing, counts each dataset's images (a local
folder is listed; a remote one, which an offline plan cannot list, counts as the size of the dataset its layout
is made for, said so), asks the output folder what it already holds (what a resume skips), costs every model
(:mod:`mlray.inference.costs`) and runs the scheduler on those costs for the slots given
(:func:`mlray.inference.schedule.simulate`): the schedule, the GPU-hours and the wall time.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..config import DatasetConfig, RunConfig
from ..datasets import plan_images
from ..errors import MlrayError, first_line
from ..images import Shard
from ..models import resolve_preprocessing
from ..store import finished_shards
from .costs import Rate, model_rate, stored_rates
from .plan import PlannedShard, PrepGroup, build_works, model_specs, planned_shards, prep_groups, shard_bytes
from .schedule import LOAD_SECONDS, Simulation, simulate
from .slots import SlotPlan

LAYOUT_SIZES = {"imagenet-val-flat": (50_000, "ImageNet val"), "imagenetv2": (10_000, "an ImageNetV2 variant")}
"""Images assumed for a dataset an offline plan cannot list, by the layout made for it (and what that is)."""


@dataclass(frozen=True)
class DatasetCount:
    """How many images a dataset has for the plan, and how that is known (``listed`` or ``assumed: ...``)."""

    name: str
    images: int
    shards: int
    how: str


@dataclass(frozen=True)
class ModelCost:
    """One model in the plan: its preprocessing group, expected rate, images left to infer, expected seconds."""

    name: str
    group: int
    rate: Rate
    images: int
    seconds: float


@dataclass
class RunEstimate:
    """Everything ``mlray plan`` prints (:func:`mlray.console.print_plan`)."""

    source: str
    datasets: list[DatasetCount]
    groups: list[PrepGroup]
    models: list[ModelCost]
    slots: int
    slot_kind: str
    slots_from: str  # "--gpus 8", or the cluster's description
    simulation: Simulation
    store: str | None = None
    stored: dict[tuple[str, str], int] = field(default_factory=dict)  # (dataset, model) -> finished shards
    load_seconds: float = LOAD_SECONDS

    @property
    def work_seconds(self) -> float:
        """Expected seconds of all models' work on one slot (model loads not included)."""
        return math.fsum(m.seconds for m in self.models)

    @property
    def sources(self) -> Counter[str]:
        """How many models' rates come from each source (``store``, ``table``, ``assumed``)."""
        return Counter(m.rate.source for m in self.models)


def _is_remote(images: str) -> bool:
    return "://" in images


def count_dataset(config: RunConfig, d: DatasetConfig) -> tuple[DatasetCount, dict[str, PlannedShard]]:
    """A dataset's image count and its shards (by key): listed when its images are local, else the size its
    layout stands for (:data:`LAYOUT_SIZES`) in shards of ``shard_size`` named ``<dataset>/assumed-<i>``."""
    assert d.images is not None and d.layout is not None
    reason = "remote, not listed offline"
    if not _is_remote(d.images):
        try:
            plan = plan_images(config, d)
        except MlrayError as exc:
            reason = first_line(exc)
        else:
            shards = planned_shards({d.name: plan})
            return DatasetCount(d.name, plan.n_images, len(plan.shards), "listed"), shards
    if d.layout not in LAYOUT_SIZES:
        raise MlrayError(
            f"{config.source}: dataset {d.name!r}: cannot count its images ({reason}) and layout {d.layout!r} has "
            "no known size"
        )
    n, what = LAYOUT_SIZES[d.layout]
    shards = {}
    for i in range(math.ceil(n / d.shard_size)):
        ids = tuple(f"{i}-{j}" for j in range(min(d.shard_size, n - i * d.shard_size)))
        planned = PlannedShard(d.name, f"assumed-{i:05d}", Shard(f"s{i:05d}", d.layout, ids))
        shards[planned.key] = planned
    return DatasetCount(d.name, n, len(shards), f"assumed: {n:,} as {what} ({reason})"), shards


def _listing(
    out: Path, counts: Sequence[DatasetCount], shards: Mapping[str, PlannedShard], models: Sequence[str]
) -> dict[tuple[str, str], frozenset[str]]:
    """What ``out`` holds, as tags of the plan's shards: a listed dataset's finished shards by tag; for an assumed
    one, as many of its first shards as the store has parts of."""
    by_dataset: dict[str, list[str]] = {}
    for s in shards.values():
        by_dataset.setdefault(s.dataset, []).append(s.tag)
    listing: dict[tuple[str, str], frozenset[str]] = {}
    for c in counts:
        tags = by_dataset.get(c.name, [])
        for m in models:
            done = finished_shards(out, c.name, m)
            listing[(c.name, m)] = frozenset(done & set(tags)) if c.how == "listed" else frozenset(tags[: len(done)])
    return listing


def estimate_run(config: RunConfig, slot_plan: SlotPlan, slots_from: str, out: str | Path | None = None) -> RunEstimate:
    """The plan of ``config`` on the slots of ``slot_plan`` (``slots_from`` says where they come from), with what
    the output folder ``out`` already holds (None: nothing). Reads no image and starts nothing."""
    specs = model_specs(config.models, config.base_dir)
    if not specs:
        raise MlrayError(f"{config.source}: no models to evaluate (add a 'models:' list)")
    preps = [(s.name, resolve_preprocessing(s)) for s in specs]
    groups = prep_groups(preps)
    counts, shards = [], {}
    for d in config.datasets:
        if d.images is not None:
            count, mine = count_dataset(config, d)
            counts.append(count)
            shards.update(mine)
    if not counts:
        raise MlrayError(f"{config.source}: no dataset has images: nothing to infer")
    names = [s.name for s in specs]
    listing = _listing(Path(out), counts, shards, names) if out is not None else {}
    earlier = stored_rates(out, slot_plan.kind) if out is not None else {}
    rates = {name: model_rate(name, prep.input_size[1], earlier) for name, prep in preps}
    works = build_works(groups, shards, listing, rates)
    sim = simulate(works, shard_bytes(groups, works, shards), len(slot_plan.slots), load_seconds=LOAD_SECONDS,
                   max_slots_per_work=config.inference.actors_per_model)  # fmt: skip
    models = [ModelCost(w.name, w.group, rates[w.name], sum(shards[k].n for k in w.shards), w.total) for w in works]
    stored = {key: len(tags) for key, tags in listing.items()}
    return RunEstimate(
        config.source, counts, groups, models, len(slot_plan.slots), slot_plan.kind, slots_from, sim,
        str(out) if out is not None else None, stored,
    )  # fmt: skip


def estimate_dict(estimate: RunEstimate) -> dict[str, Any]:
    """The whole plan as plain JSON values: datasets, preprocessings, every model with its rate, source and
    expected seconds, the store's finished shards, and every chunk of the simulated schedule."""
    sim = estimate.simulation
    return {
        "config": estimate.source,
        "slots": estimate.slots,
        "slot_kind": estimate.slot_kind,
        "slots_from": estimate.slots_from,
        "datasets": [vars(d) for d in estimate.datasets],
        "preprocessings": [{"index": g.index, **g.prep.to_dict(), "models": list(g.models)} for g in estimate.groups],
        "models": [
            {
                "name": m.name,
                "preprocessing": m.group,
                "images": m.images,
                "seconds": m.seconds,
                "images_per_second": m.rate.images_per_second,
                "rate_source": m.rate.source,
                "rate_detail": m.rate.detail,
            }
            for m in estimate.models
        ],  # fmt: skip
        "store": estimate.store,
        "stored_shards": [{"dataset": d, "model": m, "shards": n} for (d, m), n in estimate.stored.items()],
        "load_seconds": estimate.load_seconds,
        "work_seconds": estimate.work_seconds,
        "makespan_s": sim.makespan,
        "lower_bound_s": sim.lower_bound,
        "ratio": sim.ratio,
        "schedule": [vars(c) for c in sim.chunks],
    }
