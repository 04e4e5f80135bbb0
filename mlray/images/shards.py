"""What planning produces and reading consumes: :class:`Shard`, :class:`ImagePlan`, :class:`ImageError`, the
:class:`Layout` interface every layout module implements, and the bookkeeping planning shares (skipped names,
duplicate image ids, shard ids, labels from columns).

Plain Python, no Ray: a :class:`Shard` is small and picklable, so a Ray pipeline can plan once on the driver and
read the shards inside its tasks.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import ClassVar

import pyarrow.fs as pafs

from ..errors import MlrayError
from ..labels import SourceLabels
from .roots import Root

DEFAULT_SHARD_SIZE = 1000

# --------------------------------------------------------------------------------------------------------------
# Errors of one image


class ImageError(Exception):
    """One image that could not be read or decoded: ``stage`` ('read' | 'decode') and a one-line ``reason``.

    ``str(err)`` is ``'<stage>: <reason>'``. Picklable (it crosses Ray task boundaries).
    """

    def __init__(self, stage: str, reason: str):
        reason = " ".join(str(reason).split())  # one line
        super().__init__(stage, reason)
        self.stage = stage
        self.reason = reason

    def __str__(self) -> str:
        return f"{self.stage}: {self.reason}"


ShardItem = tuple[str, "bytes | None", "ImageError | None"]
"""``(image_id, bytes, None)`` or ``(image_id, None, ImageError('read', reason))``: one image of a shard."""

SourcedItem = tuple[str, str, "bytes | None", "ImageError | None"]
"""``(image_id, where, bytes, error)``: a :data:`ShardItem` with the file, Parquet row or tar member read."""


# --------------------------------------------------------------------------------------------------------------
# Plans and shards


@dataclass(frozen=True)
class Shard:
    """What one task reads. Plain strings and tuples only: cheap to pickle, equal across identical plans.

    ``layout`` is the name of the layout that planned the shard; reading dispatches on it through the layout
    registry (:func:`mlray.images.plan.read_shard`). What the other fields hold is up to that layout:

    - file layouts (flat, wnid-folders, imagenetv2, manifest): ``paths[i]`` is the file of ``image_ids[i]``, and
      ``problems`` is empty or ``problems[i]`` is why ``paths[i]`` cannot be read, known from the listing (a broken
      link, a folder named like an image, a FIFO ...; "" = none): that image is a read error, never opened;
    - ``parquet-shards``: rows ``rows = (start, stop)`` of the Parquet ``file``;
    - ``webdataset``: the tar ``file``; ``paths[i]`` is the member holding ``image_ids[i]``.

    Paths are inside the filesystem built from the URI ``filesystem`` (None = local).
    """

    shard_id: str
    layout: str
    image_ids: tuple[str, ...]
    paths: tuple[str, ...] = ()
    file: str | None = None
    rows: tuple[int, int] | None = None
    filesystem: str | None = None
    problems: tuple[str, ...] = ()

    def __len__(self) -> int:
        return len(self.image_ids)


@dataclass(frozen=True)
class PlanAccounting:
    """Where every entry a plan listed went: ``entries = readable + flagged + skipped``.

    ``readable``: planned images expected to read; ``flagged``: planned images already known to be read errors
    (a broken link, a folder named like an image, a FIFO ...: each becomes an error row with stage ``read``);
    ``skipped``: entries skipped and counted (not an image name, hidden, a tar sample without an image, the
    ``errors.parquet`` quarantine). ``planned = readable + flagged`` is the plan's ``n_images``.
    """

    entries: int
    readable: int
    flagged: int
    skipped: int

    @property
    def planned(self) -> int:
        """The images the plan's shards hold (each comes out of reading exactly once)."""
        return self.readable + self.flagged

    def line(self) -> str:
        """'12 entries = 8 images to read + 2 error rows (found while listing) + 2 skipped by extension'."""
        return (
            f"{self.entries} entries = {self.readable} images to read + {self.flagged} error rows (found while "
            f"listing) + {self.skipped} skipped by extension"
        )

    def reconciliation(self, decoded: int, errors: int) -> str:
        """The line after a run that decoded ``decoded`` images and wrote ``errors`` error rows (``flagged``
        included): '12 entries = 7 images + 3 error rows + 2 skipped by extension', with ' (MISMATCH: N
        entries unaccounted for)' appended when they do not add up."""
        text = f"{self.entries} entries = {decoded} images + {errors} error rows + {self.skipped} skipped by extension"
        missing = self.entries - decoded - errors - self.skipped
        return text if missing == 0 else f"{text} (MISMATCH: {missing} entries unaccounted for)"


@dataclass
class ImagePlan:
    """A listed dataset: its shards, all its image ids (sorted), and the labels the layout itself carries.

    ``labels`` is None when the layout carries none (``imagenet-val-flat``; a manifest / Parquet / tar without
    label columns or members); otherwise its format is ``layout:<name>`` and its rows follow ``image_ids``.
    ``n_skipped_non_image`` counts the entries skipped (not an image name, hidden, ...), ``n_flagged`` the planned
    images already known to be read errors from the listing (see :meth:`accounting`).
    """

    images: str
    layout: str
    shard_size: int
    shards: list[Shard]
    image_ids: list[str]
    labels: SourceLabels | None = None
    n_skipped_non_image: int = 0
    skipped_examples: list[str] = field(default_factory=list)  # a few skipped names, for messages
    n_flagged: int = 0
    flagged_examples: list[str] = field(default_factory=list)  # a few reasons, for messages

    @property
    def n_images(self) -> int:
        """How many images the plan holds (the flagged ones included: each is one error row)."""
        return len(self.image_ids)

    def accounting(self) -> PlanAccounting:
        """Where every listed entry went: ``entries = readable + flagged + skipped`` (see :class:`PlanAccounting`)."""
        return PlanAccounting(
            entries=self.n_images + self.n_skipped_non_image,
            readable=self.n_images - self.n_flagged,
            flagged=self.n_flagged,
            skipped=self.n_skipped_non_image,
        )


class Layout(ABC):
    """One image layout: how a dataset stored that way is listed into shards, and how one of its shards is read.

    A layout module defines a subclass per layout name; the registry (:data:`mlray.images.plan.REGISTRY`) holds
    one instance of each. Instances hold no state: planning and reading depend only on the arguments.
    """

    name: ClassVar[str]

    @abstractmethod
    def plan(self, root: Root, shard_size: int) -> ImagePlan:
        """List the dataset at ``root`` and cut it into deterministic shards of at most ``shard_size`` images.

        Every problem with the input is a one-line :class:`MlrayError` naming the file / folder / row.
        """

    @abstractmethod
    def read(self, shard: Shard, fs: pafs.FileSystem) -> Iterator[SourcedItem]:
        """Yield one :data:`SourcedItem` per image ``shard`` planned, each exactly once; a missing or unreadable
        file, member or row is an error item, never an exception."""

    @abstractmethod
    def sources(self, shard: Shard) -> list[str]:
        """Where each image of ``shard`` comes from as shown to the user, in ``shard.image_ids`` order."""


# --------------------------------------------------------------------------------------------------------------
# Bookkeeping shared by the layouts


def shard_id(k: int) -> str:
    """The id of the ``k``-th shard of a plan: ``s00000``, ``s00001``, ..."""
    return f"s{k:05d}"


class Skips:
    """Entries skipped while planning (not images, hidden, samples without an image), or flagged as read errors
    (:class:`ImagePlan`'s ``n_flagged``): a count and a few names or reasons."""

    def __init__(self) -> None:
        self.n = 0
        self.examples: list[str] = []

    def add(self, name: str) -> None:
        """Count one skipped ``name``; the first five are kept as examples."""
        self.n += 1
        if len(self.examples) < 5:
            self.examples.append(name)


class ImageIds:
    """image id -> where it was seen; a second sighting is an :class:`MlrayError` naming both places."""

    def __init__(self, shown: str):
        self.shown = shown
        self.where: dict[str, str] = {}

    def add(self, image_id: str, where: str) -> None:
        """Record that ``image_id`` was seen at ``where``; raise :class:`MlrayError` if it was seen before."""
        if image_id in self.where:
            raise MlrayError(f"{self.shown}: duplicate image id {image_id!r}: {self.where[image_id]} and {where}")
        self.where[image_id] = where


def checked(image_id: str, where: str, data: bytes | None) -> SourcedItem:
    """The item of image bytes read from ``where``: null bytes and an empty file are read errors."""
    if data is None:
        return image_id, where, None, ImageError("read", f"no image bytes (null) at {where}")
    if len(data) == 0:
        return image_id, where, None, ImageError("read", "empty file")
    return image_id, where, data, None


def labels_from_columns(
    shown: str,
    layout: str,
    ids: list[str],
    label: dict[str, int] | None,
    labels: dict[str, list[int] | None] | None,
    merged: list[str] | None = None,
) -> SourceLabels | None:
    """The labels a layout carries (format ``layout:<name>``, rows in ``ids`` order), or None when it has none.

    ``label`` maps image ids to original classes (missing = -1), ``labels`` to valid-label sets (missing = not
    annotated); ``merged`` names the entries whose label set named a class twice (kept once, counted).
    """
    if label is None and labels is None:
        return None
    return SourceLabels(
        shown,
        f"layout:{layout}",
        list(ids),
        original=[label.get(i, -1) for i in ids] if label is not None else None,
        valid=[labels.get(i) for i in ids] if labels is not None else None,
        merged_duplicates=list(merged or []),
    )
