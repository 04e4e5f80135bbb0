"""A configured dataset = its images (:mod:`mlray.images`) joined with its labels (:mod:`mlray.labels`).

:func:`plan_images` lists a dataset's images into shards, :func:`load_dataset_labels` joins its label sources
(and the labels its image layout carries) into the canonical labels table, :func:`class_space` gives the classes
it covers (``classes:`` / ``class_map:``; :mod:`mlray.labels.classes`), and :func:`shard_dataset` writes images
and labels into Parquet shards (``mlray shard``).
"""

from __future__ import annotations

from dataclasses import replace

from .config import DatasetConfig, RunConfig
from .errors import MlrayError
from .images import DEFAULT_SHARD_SIZE, ImagePlan, WrittenShards, plan_shards, write_parquet_shards
from .labels import DatasetLabels, SourceLabels, build_dataset_labels, read_source
from .labels.classes import ClassSpace, map_space, subset_space


def plan_images(config: RunConfig, dataset: DatasetConfig) -> ImagePlan:
    """The image plan (shards, image ids, labels the layout carries) of a dataset with ``images``.

    Relative ``images`` paths resolve against the config file's folder. Raises :class:`MlrayError` for a dataset
    without ``images`` and for any problem with the images (see :func:`mlray.images.plan_shards`).
    """
    if dataset.images is None or dataset.layout is None:
        raise MlrayError(f"{config.source}: dataset {dataset.name!r} has no 'images:'")
    return plan_shards(dataset.images, dataset.layout, dataset.shard_size, base_dir=config.base_dir)


def class_space(config: RunConfig, dataset: DatasetConfig) -> ClassSpace | None:
    """The classes ``dataset`` covers (its ``classes:`` subset or ``class_map:``), or None: all 1,000. Relative
    files resolve against the config file's folder; a bad entry is one line naming the file and line or row."""
    try:
        if dataset.classes is not None:
            return subset_space(dataset.classes, config.base_dir)
        if dataset.class_map is not None:
            return map_space(dataset.class_map, config.base_dir)
    except MlrayError as exc:
        raise MlrayError(f"{config.source}: dataset {dataset.name!r}: {exc}") from None
    return None


def load_dataset_labels(config: RunConfig, dataset: DatasetConfig, plan: ImagePlan | None = None) -> DatasetLabels:
    """Read a dataset's label sources and join them into its canonical labels table.

    With ``images``, the images define the dataset: label entries for other images are skipped and counted
    (``skipped_unknown``), images without a label stay in as unlabelled, and labels the layout itself carries
    (class folders, manifest columns, shard columns) serve as the original / multi source where none is given.
    ``plan`` is the dataset's image plan when already made (else it is planned here).
    """
    sources: dict[str, SourceLabels] = {}
    for role in ("original", "multi"):
        src = getattr(dataset.labels, role)
        if src is not None:
            sources[role] = read_source(src.format, src.path, config.base_dir)
    if dataset.images is None:
        return build_dataset_labels(
            dataset.name, sources.get("original"), sources.get("multi"), dataset.on_unknown_image
        )
    plan = plan if plan is not None else plan_images(config, dataset)
    if plan.labels is not None:
        if "original" not in sources and plan.labels.original is not None:
            sources["original"] = plan.labels
        if "multi" not in sources and plan.labels.valid is not None and any(v is not None for v in plan.labels.valid):
            sources["multi"] = plan.labels
    return build_dataset_labels(
        dataset.name, sources.get("original"), sources.get("multi"), "skip", image_ids=plan.image_ids
    )


def shard_dataset(
    config: RunConfig, name: str, out_uri: str, shard_size: int | None = None, overwrite: bool = False
) -> tuple[WrittenShards, DatasetLabels]:
    """Convert a dataset's images (any layout) into Parquet shards that carry its joined labels.

    The shards hold the original file bytes (never re-encoded) and, per image, ``label`` (the original class,
    -1 = unknown) and ``labels`` (the valid multi-label set, null = not annotated) from the dataset's label
    sources joined as for inference (:func:`load_dataset_labels`), so a config can read them back with
    ``layout: parquet-shards`` and no ``labels:`` section. Unreadable images go to ``errors.parquet``.
    Returns the written shards and the joined labels.
    """
    dataset = config.dataset(name)
    if dataset.images is None:
        raise MlrayError(f"{config.source}: dataset {name!r} has no 'images:' to shard")
    plan = plan_images(config, dataset)
    labels = load_dataset_labels(config, dataset, plan)
    t = labels.table
    joined = SourceLabels(
        f"{config.source}:{name}",
        "joined",
        t.column("image_id").to_pylist(),
        original=t.column("original").to_pylist(),
        valid=t.column("valid").to_pylist(),
    )
    written = write_parquet_shards(
        replace(plan, labels=joined), out_uri, shard_size or DEFAULT_SHARD_SIZE, overwrite=overwrite
    )
    return written, labels
