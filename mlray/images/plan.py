"""The layout registry: :func:`plan_shards` lists a dataset with the layout named in the config, and
:func:`read_shard` reads a shard with the layout that planned it.

Adding a layout = one module under :mod:`mlray.images.layouts` defining a :class:`~mlray.images.shards.Layout`
subclass (it both plans and reads its shards) + one line in :data:`REGISTRY`.

Shard ids are ``s00000``, ``s00001``, ... in plan order, so the same input and ``shard_size`` always give the same
shards (a resumed run can skip the ones it finished). :func:`read_shard` yields ``(image_id, bytes, None)`` or
``(image_id, None, ImageError('read', reason))`` for every image the shard planned -- each planned image exactly
once, and a missing file, member or row is an error item, never an exception.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

from ..errors import MlrayError
from .layouts.folders import FlatLayout, ImageNetV2Layout, WnidFoldersLayout
from .layouts.manifest import ManifestLayout
from .layouts.parquet import ParquetShardsLayout
from .layouts.webdataset import WebDatasetLayout
from .roots import filesystem, open_root
from .shards import DEFAULT_SHARD_SIZE, ImagePlan, Layout, Shard, ShardItem, SourcedItem

REGISTRY: dict[str, Layout] = {
    layout.name: layout
    for layout in (
        FlatLayout(),
        WnidFoldersLayout(),
        ImageNetV2Layout(),
        ManifestLayout(),
        ParquetShardsLayout(),
        WebDatasetLayout(),
    )
}
"""Layout name -> the layout that plans and reads it (one instance each)."""

LAYOUTS: tuple[str, ...] = tuple(REGISTRY)
"""The layout names a config may give (``layout:``), in documentation order."""


def layout_of(name: str) -> Layout:
    """The registered layout called ``name``; an unknown name is an :class:`MlrayError` listing the known ones."""
    layout = REGISTRY.get(name)
    if layout is None:
        raise MlrayError(f"unknown image layout {name!r}; known layouts: {', '.join(LAYOUTS)}")
    return layout


def plan_shards(
    images: str | os.PathLike[str],
    layout: str,
    shard_size: int = DEFAULT_SHARD_SIZE,
    *,
    base_dir: str | os.PathLike[str] | None = None,
) -> ImagePlan:
    """List a dataset and cut it into deterministic shards (see :mod:`mlray.images` for the layouts).

    ``images`` is a local path (relative to ``base_dir`` when given, else the working folder) or a URI.
    Every problem with the input is a one-line :class:`MlrayError` naming the file / folder / row.
    """
    chosen = layout_of(layout)
    if isinstance(shard_size, bool) or not isinstance(shard_size, int) or shard_size < 1:
        raise MlrayError(f"shard_size must be a positive integer, got {shard_size!r}")
    return chosen.plan(open_root(images, base_dir), shard_size)


def read_shard_sources(shard: Shard) -> Iterator[SourcedItem]:
    """:func:`read_shard` with where each image came from: ``(image_id, where, bytes, error)``, where ``where``
    names the file, Parquet row or tar member that was actually read (tar order is not plan order)."""
    layout = layout_of(shard.layout)
    yield from layout.read(shard, filesystem(shard.filesystem))


def read_shard(shard: Shard) -> Iterator[ShardItem]:
    """Yield ``(image_id, bytes, None)`` or ``(image_id, None, ImageError('read', reason))`` per planned image.

    Every image the shard planned comes out exactly once (files and Parquet rows in plan order; tar members in
    tar order, then any member that was missing). An empty file is a read error ('empty file'). Only a
    filesystem that cannot be opened at all (bad URI, credentials) raises :class:`MlrayError`.
    """
    for image_id, _where, data, err in read_shard_sources(shard):
        yield image_id, data, err


def shard_items(shard: Shard) -> list[tuple[str, str]]:
    """(image_id, where) per planned image, in plan order: the file (file layouts), ``tar:member``
    (webdataset) or ``file#row<n>`` (Parquet shards), as shown to the user."""
    return list(zip(shard.image_ids, layout_of(shard.layout).sources(shard)))
