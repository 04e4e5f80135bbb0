"""Folder layouts: one image file per image, found by listing a folder.

=====================  =================================================================================
``imagenet-val-flat``  every image directly in one folder (``ILSVRC2012_val_00000001.JPEG``, ...); the
                       layout gives no labels (they come from the label sources). An image in a subfolder
                       is an error (use a class-folder layout or a manifest).
``wnid-folders``       ``<wnid>/<file>`` (torchvision ``ImageFolder`` / the ImageNet train tree): the
                       original label is the folder's wnid in the ImageNet-1k vocabulary. A folder holding
                       images whose name is not one of the 1,000 wnids is an error naming it.
``imagenetv2``         the public ImageNetV2 tarballs: ``<class_index>/<id>.jpeg``. Folder names are the
                       integers 0..999 and *are* the class index (folder ``10`` is class 10, never the
                       string-sorted position); any other folder name holding images is an error.
=====================  =================================================================================

Nothing under the folder is dropped silently: every entry (see :func:`mlray.images.roots.list_entries`) is

- an image to read: a file (or a symlink to one) whose extension is in :data:`mlray.labels.IMAGE_EXTENSIONS`;
- a planned image that is already a read error, with its reason (``ImagePlan.n_flagged``): a broken symlink
  ('broken link: ...'), a folder named like an image ('a directory, not a file: ...'), a FIFO / socket / device
  ('not a regular file (fifo): ...'); reading it yields ``ImageError('read', reason)`` without opening it (an
  unreadable file is found when read: 'unreadable: permission denied: ...');
- or skipped and counted (``ImagePlan.n_skipped_non_image``): a name without an image extension, or hidden.

So ``entries = images to read + flagged + skipped`` (:meth:`~mlray.images.shards.ImagePlan.accounting`). The image
id is the file stem; two entries with the same stem (``a.jpg`` and ``a.png``) are an :class:`MlrayError` naming
both. Images are sorted by id and cut into shards of ``shard_size`` files.
"""

from __future__ import annotations

import posixpath
import re
from abc import abstractmethod
from typing import ClassVar

import pyarrow.fs as pafs

from ...errors import MlrayError
from ...labels import NUM_CLASSES, SourceLabels, image_id_from_name, imagenet_vocabulary
from ..roots import Root, hidden, is_image_name, list_entries, root_type
from ..shards import ImageIds, ImagePlan, Skips
from ._common import FileLayout


class _FolderLayout(FileLayout):
    """A folder of image files; subclasses say where images may sit and which class each folder is."""

    carries_labels: ClassVar[bool]

    @abstractmethod
    def image_class(self, root: Root, inner: str, parts: list[str], cache: dict[str, int]) -> int | None:
        """The original class of the image at ``inner`` (relative path ``parts``), None when the layout has none;
        an image where the layout does not allow one is an :class:`MlrayError`. ``cache``: folder -> class."""

    def plan(self, root: Root, shard_size: int) -> ImagePlan:
        """List the image files under ``root`` (a folder) into shards of ``shard_size`` files sorted by image id."""
        kind = root_type(root)
        if kind == pafs.FileType.NotFound:
            raise MlrayError(f"{root.show()}: no such folder")
        if kind != pafs.FileType.Directory:
            raise MlrayError(f"{root.show()}: is a file; layout {self.name} expects a folder of images")
        skips, flagged = Skips(), Skips()
        ids = ImageIds(root.show())
        entries: dict[str, str] = {}
        problems: dict[str, str] = {}
        classes: dict[str, int] = {}
        cache: dict[str, int] = {}
        for entry in list_entries(root):
            parts = entry.rel.split("/")
            if hidden(entry.rel) or not is_image_name(parts[-1]):
                skips.add(entry.rel)
                continue
            cls = self.image_class(root, entry.inner, parts, cache)
            image_id = image_id_from_name(parts[-1])
            ids.add(image_id, root.show(entry.inner))
            entries[image_id] = entry.inner
            if entry.problem is not None:
                problems[image_id] = entry.problem
                flagged.add(entry.problem)
            if cls is not None:
                classes[image_id] = cls
        sorted_ids, shards = self.chunk(entries, shard_size, root.uri, problems)
        labels = None
        if self.carries_labels:
            labels = SourceLabels(
                root.show(), f"layout:{self.name}", sorted_ids, original=[classes[i] for i in sorted_ids]
            )
        return ImagePlan(
            root.show(),
            self.name,
            shard_size,
            shards,
            sorted_ids,
            labels,
            skips.n,
            skips.examples,
            n_flagged=flagged.n,
            flagged_examples=flagged.examples,
        )


class FlatLayout(_FolderLayout):
    """``imagenet-val-flat``: every image directly in the folder; no labels."""

    name = "imagenet-val-flat"
    carries_labels = False

    def image_class(self, root: Root, inner: str, parts: list[str], cache: dict[str, int]) -> int | None:
        """None (no labels); an image in a subfolder is an :class:`MlrayError`."""
        if len(parts) > 1:
            raise MlrayError(
                f"{root.show(inner)}: layout imagenet-val-flat expects every image directly in "
                f"{root.show()}, found one in a subfolder (use layout wnid-folders, imagenetv2 or manifest)"
            )
        return None


class _ClassFolders(_FolderLayout):
    """Images inside one folder per class (deeper subfolders allowed); the top folder's name is the class."""

    carries_labels = True
    pattern: ClassVar[str]

    @abstractmethod
    def folder_class(self, root: Root, folder: str) -> int:
        """The class index the top-level ``folder`` names, or an :class:`MlrayError` naming the folder."""

    def image_class(self, root: Root, inner: str, parts: list[str], cache: dict[str, int]) -> int | None:
        """The class of the image's top-level folder; an image at the top level is an :class:`MlrayError`."""
        if len(parts) == 1:
            raise MlrayError(
                f"{root.show(inner)}: layout {self.name} expects images inside class folders ({self.pattern}), "
                "found one at the top level"
            )
        folder = parts[0]
        if folder not in cache:
            cache[folder] = self.folder_class(root, folder)
        return cache[folder]


class WnidFoldersLayout(_ClassFolders):
    """``wnid-folders``: ``<wnid>/<file>``; the folder's wnid is the original class."""

    name = "wnid-folders"
    pattern = "<wnid>/<file>"

    def folder_class(self, root: Root, folder: str) -> int:
        """The ImageNet-1k index of the wnid ``folder``; any other name is an :class:`MlrayError`."""
        index = imagenet_vocabulary().index_of.get(folder)
        if index is None:
            raise MlrayError(
                f"{root.show(posixpath.join(root.path, folder))}: folder {folder!r} is not an ImageNet-1k wnid "
                "(layout wnid-folders expects <wnid>/<file>, e.g. n01440764/...)"
            )
        return index


class ImageNetV2Layout(_ClassFolders):
    """``imagenetv2``: ``<class_index>/<file>``; the folder name (0..999) is the class index itself."""

    name = "imagenetv2"
    pattern = "<class_index>/<file>"

    def folder_class(self, root: Root, folder: str) -> int:
        """The integer ``folder`` names (0..999, digits only); any other name is an :class:`MlrayError`."""
        if not re.fullmatch(r"[0-9]+", folder) or not 0 <= int(folder) < NUM_CLASSES:
            raise MlrayError(
                f"{root.show(posixpath.join(root.path, folder))}: folder {folder!r} is not a class index "
                f"0..{NUM_CLASSES - 1} (layout imagenetv2 expects <class_index>/<file>)"
            )
        return int(folder)
