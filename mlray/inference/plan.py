"""Planning an inference run, without Ray: the models, the hardware defaults, the passes of models, and which
shards each model still needs given what the store already holds.

A run streams every dataset's shards through one pipeline per *pass* of models (each model's actors start and
load their weights once). A shard is read in a pass when some model of that pass has not finished it
(:func:`mlray.store.finished_shards`: a predictions part on disk); each model infers only the rows of the shards
it lacks. Shards are keyed ``<dataset>/<shard tag>`` (:func:`mlray.store.shard_tag`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..config import InferenceConfig, ModelConfig
from ..errors import MlrayError
from ..images import ImagePlan, Shard
from ..models import ModelSpec, expand_model_names
from ..store import shard_tag

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
# Hardware


def cluster_gpus(device: str, resources: Mapping[str, float]) -> float:
    """The GPUs to plan for: the cluster's (``auto``), none (``cpu``), or at least one even before an autoscaling
    cluster has started a GPU node (``gpu``). ``resources`` is ``ray.cluster_resources()``."""
    found = float(resources.get("GPU", 0))
    return {"auto": found, "cpu": 0.0, "gpu": max(1.0, found)}[device]


@dataclass(frozen=True)
class Hardware:
    """The per-hardware settings of a run (:func:`hardware_defaults`)."""

    batch_size: int  # images per model batch
    actors: int  # actors per model
    models_per_pass: int
    cpus_per_actor: float  # CPUs each model actor asks for
    cpu_threads: int | None  # torch threads per model actor on CPUs (None on GPUs)

    def as_dict(self) -> dict[str, int | float | None]:
        """The settings by name, as the run manifest records them."""
        return {
            "batch_size": self.batch_size,
            "actors": self.actors,
            "models_per_pass": self.models_per_pass,
            "cpus_per_actor": self.cpus_per_actor,
            "cpu_threads": self.cpu_threads,
        }


def hardware_defaults(settings: InferenceConfig, gpus: float, cpus: float, n_models: int) -> Hardware:
    """Per-hardware defaults for what ``settings`` leaves open (None).

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
    return Hardware(
        batch_size=settings.batch_size or (256 if gpus else 32),
        actors=actors,
        models_per_pass=per_pass,
        cpus_per_actor=cpus_per_actor,
        cpu_threads=None if gpus else max(1, round(cpus / (per_pass * actors))),
    )


# --------------------------------------------------------------------------------------------------------------
# Shards and passes


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


@dataclass(frozen=True)
class PassPlan:
    """What one pass of models does: the shards it reads and, per model, the shards that model infers.

    ``todo`` holds the keys of the shards some model of the pass lacks (plan order); ``needs[model]`` those that
    model lacks (a model skips the rows of the other shards). ``stored_totals`` counts, per dataset, the images
    of ``todo`` (what the pass writes to the store; datasets with none left out), ``model_totals`` the images each
    model infers.
    """

    index: int  # 0-based
    count: int  # passes in the run
    first_model: int  # position of the pass's first model among all models (0-based)
    n_models: int  # models in the run
    models: tuple[str, ...]
    todo: tuple[str, ...]
    needs: Mapping[str, frozenset[str]]
    stored_totals: dict[str, int] = field(default_factory=dict)
    model_totals: dict[str, int] = field(default_factory=dict)

    @property
    def label(self) -> str:
        """What the progress display appends to its lines: ``" (pass 1/2)"``, or ``""`` in a one-pass run."""
        return f" (pass {self.index + 1}/{self.count})" if self.count > 1 else ""

    def images(self, shards: Mapping[str, PlannedShard]) -> dict[str, int]:
        """Images the pass reads per dataset (every dataset of ``shards``, 0 where it reads none)."""
        out = {s.dataset: 0 for s in shards.values()}
        for key in self.todo:
            out[shards[key].dataset] += shards[key].n
        return out


def plan_passes(
    models: Sequence[str], per_pass: int, shards: Mapping[str, PlannedShard], listing: Listing
) -> list[PassPlan]:
    """The passes of a run: ``models`` in groups of ``per_pass`` (in order), each with the shards its models
    still need given the store ``listing``. A pass whose models have every shard has an empty ``todo``."""
    if per_pass < 1:
        raise MlrayError(f"inference: models_per_pass must be at least 1, got {per_pass}")
    groups = [tuple(models[i : i + per_pass]) for i in range(0, len(models), per_pass)]
    out = []
    for index, group in enumerate(groups):
        needs = {m: frozenset(missing_shards(m, shards, listing)) for m in group}
        todo = tuple(key for key in shards if any(key in needs[m] for m in group))
        stored: dict[str, int] = {}
        for key in todo:
            stored[shards[key].dataset] = stored.get(shards[key].dataset, 0) + shards[key].n
        model_totals = {m: sum(shards[key].n for key in needs[m]) for m in group}
        out.append(
            PassPlan(index, len(groups), index * per_pass, len(models), group, todo, needs, stored, model_totals)
        )
    return out


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
