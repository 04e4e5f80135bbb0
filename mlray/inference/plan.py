"""Planning an inference run, without Ray: the models, their preprocessing groups, which shards each model still
needs given what the store already holds, and each model's work as the scheduler sees it.

Shards are keyed ``<dataset>/<shard tag>`` (:func:`mlray.store.shard_tag`). A model needs the shards it has not
finished (:func:`mlray.store.finished_shards`: a predictions part in the store); a shard is read and decoded when
some model of a group needs it, and each model infers only the shards it lacks. Models whose preprocessing resizes
and crops alike (:meth:`mlray.models.Preprocessing.resize_key`) form one *group*: their images are decoded and
resized once and shared.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..config import ModelConfig
from ..images import ImagePlan, Shard
from ..models import ModelSpec, Preprocessing, expand_model_names
from ..store import shard_tag
from .costs import Rate
from .schedule import Work

Listing = Mapping[tuple[str, str], frozenset[str]]
"""What the store holds: ``{(dataset, model): tags of its finished shards}`` (:func:`mlray.store.store_listing`)."""


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
        overrides: dict[str, Any] = m.model_dump(exclude={"name", "weights"}, exclude_none=True)
        for n in expand_model_names(name, weights=weights if weights in ("hub", "pypi", "none") else "none"):
            fields: dict[str, Any] = {k: (tuple(v) if isinstance(v, list) else v) for k, v in overrides.items()}
            spec = ModelSpec(n, weights, **fields)
            if spec not in specs:
                specs.append(spec)
    return specs


# --------------------------------------------------------------------------------------------------------------
# Shards


@dataclass(frozen=True)
class PlannedShard:
    """One shard of a dataset's image plan, under its key ``<dataset>/<tag>`` in the run."""

    dataset: str
    tag: str  # mlray.store.shard_tag: the shard id + a digest of its image ids
    shard: Shard

    @property
    def key(self) -> str:
        """``<dataset>/<tag>``: the shard's name in the run (rows of the pipeline carry it)."""
        return f"{self.dataset}/{self.tag}"

    @property
    def n(self) -> int:
        """Images in the shard."""
        return len(self.shard)


def planned_shards(plans: Mapping[str, ImagePlan]) -> dict[str, PlannedShard]:
    """Every shard of every dataset's image plan, by key, in plan order (datasets in the order given)."""
    out: dict[str, PlannedShard] = {}
    for name, plan in plans.items():
        for shard in plan.shards:
            planned = PlannedShard(name, shard_tag(shard), shard)
            out[planned.key] = planned
    return out


def planned_tags(shards: Mapping[str, PlannedShard]) -> dict[str, set[str]]:
    """The shard tags each dataset plans: ``{dataset: {tag, ...}}``."""
    out: dict[str, set[str]] = {}
    for s in shards.values():
        out.setdefault(s.dataset, set()).add(s.tag)
    return out


def missing_shards(model: str, shards: Mapping[str, PlannedShard], listing: Listing) -> list[str]:
    """The keys of the planned shards ``model`` has not finished (the store ``listing`` lacks them), in plan order."""
    return [key for key, s in shards.items() if s.tag not in listing.get((s.dataset, model), frozenset())]


# --------------------------------------------------------------------------------------------------------------
# What a resumed run reuses


def reused_shards(
    datasets: Sequence[str], models: Sequence[str], shards: Mapping[str, PlannedShard], listing: Listing
) -> dict[tuple[str, str], int]:
    """How many planned shards each (dataset, model) finds finished in the store (``listing``) and reuses."""
    tags = planned_tags(shards)
    return {(d, m): len(listing.get((d, m), frozenset()) & tags.get(d, set())) for d in datasets for m in models}


def reuse_notes(reused: Mapping[tuple[str, str], int], total_shards: Mapping[str, int]) -> list[str]:
    """One line per dataset that reuses anything from the store, e.g. ``"photos: reused 3 of 10 shards from the
    store"`` (``" for each of 2 models"`` when several models reuse the same; a per-(shard, model) count when they
    differ). ``total_shards`` is the number of planned shards per dataset."""
    lines = []
    for dataset, total in total_shards.items():
        counts = [n for (d, _), n in reused.items() if d == dataset]
        if not counts or not any(counts):
            continue
        if len(set(counts)) == 1:
            each = f" for each of {len(counts)} models" if len(counts) > 1 else ""
            lines.append(f"{dataset}: reused {counts[0]} of {total} shards from the store{each}")
        else:
            lines.append(
                f"{dataset}: reused {sum(counts)} of {total * len(counts)} (shard, model) parts from the store "
                f"({total} shards x {len(counts)} models; {min(counts)} to {max(counts)} shards per model)"
            )
    return lines


# --------------------------------------------------------------------------------------------------------------
# Preprocessing groups and the scheduler's works


@dataclass(frozen=True)
class PrepGroup:
    """Models whose images are resized and cropped alike: decoded once, shared (``prep`` is the first model's)."""

    index: int
    prep: Preprocessing
    models: tuple[str, ...]

    @property
    def image_bytes(self) -> int:
        """Bytes one decoded image of this group takes (``uint8 H x W x 3``)."""
        return self.prep.input_size[1] * self.prep.input_size[2] * 3


def prep_groups(models: Sequence[tuple[str, Preprocessing]]) -> list[PrepGroup]:
    """The preprocessing groups of ``(model name, preprocessing)`` pairs, in order of first appearance."""
    firsts: dict[tuple, Preprocessing] = {}
    members: dict[tuple, list[str]] = {}
    for name, prep in models:
        key = prep.resize_key()
        firsts.setdefault(key, prep)
        members.setdefault(key, []).append(name)
    return [PrepGroup(i, firsts[key], tuple(members[key])) for i, key in enumerate(firsts)]


def build_works(
    groups: Sequence[PrepGroup], shards: Mapping[str, PlannedShard], listing: Listing, rates: Mapping[str, Rate]
) -> list[Work]:
    """One :class:`~mlray.inference.schedule.Work` per model (group order, then model order): the shards it lacks
    and the seconds each is expected to take at its rate."""
    works = []
    for group in groups:
        for name in group.models:
            needs = missing_shards(name, shards, listing)
            seconds = tuple(rates[name].seconds(shards[key].n) for key in needs)
            works.append(Work(name, group.index, tuple(needs), seconds))
    return works


def shard_bytes(
    groups: Sequence[PrepGroup], works: Sequence[Work], shards: Mapping[str, PlannedShard]
) -> dict[tuple[int, str], float]:
    """What each (group, shard) some work needs takes in the decode cache, in bytes."""
    by_index = {g.index: g for g in groups}
    return {(w.group, key): float(shards[key].n * by_index[w.group].image_bytes) for w in works for key in w.shards}
