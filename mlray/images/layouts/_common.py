"""What several layouts share (not a layout itself): shards of one file per image, and finding shard files.

:class:`FileLayout` is the base of the layouts whose images are separate files (the folder layouts and the
manifest): they sort the images by id, cut them into shards of ``shard_size`` files (with the problems the
listing already found), and read a shard file by file. :func:`candidate_files` lists the files a shard-file
layout (Parquet shards, WebDataset tars) reads.
"""

from __future__ import annotations

from collections.abc import Iterator

import pyarrow.fs as pafs

from ...errors import MlrayError
from ..roots import Root, hidden, list_entries, read_bytes, root_type, show
from ..shards import ImageError, Layout, Shard, Skips, SourcedItem, checked, shard_id


class FileLayout(Layout):
    """A layout whose shards list one file per image: ``shard.paths[i]`` holds ``shard.image_ids[i]``."""

    def chunk(
        self, entries: dict[str, str], shard_size: int, uri: str | None, problems: dict[str, str] | None = None
    ) -> tuple[list[str], list[Shard]]:
        """The sorted image ids of ``entries`` (image id -> path) and their shards of ``shard_size`` files;
        ``problems`` (image id -> reason) marks the images the listing already knows to be read errors."""
        problems = problems or {}
        ids = sorted(entries)
        shards = []
        for k, start in enumerate(range(0, len(ids), shard_size)):
            chunk = ids[start : start + shard_size]
            known = tuple(problems.get(i, "") for i in chunk)
            shards.append(
                Shard(
                    shard_id=shard_id(k),
                    layout=self.name,
                    image_ids=tuple(chunk),
                    paths=tuple(entries[i] for i in chunk),
                    filesystem=uri,
                    problems=known if any(known) else (),
                )
            )
        return ids, shards

    def read(self, shard: Shard, fs: pafs.FileSystem) -> Iterator[SourcedItem]:
        """Read the files in plan order (:func:`~mlray.images.roots.read_bytes`); an image the listing flagged
        (never opened), a missing, unreadable, special (FIFO ...) or empty file is a read error item."""
        for k, (image_id, path) in enumerate(zip(shard.image_ids, shard.paths)):
            where = show(shard.filesystem, path)
            problem = shard.problems[k] if shard.problems else ""
            data = None
            if not problem:
                data, reason = read_bytes(fs, path, where)
                problem = reason or ""
            if problem:
                yield image_id, where, None, ImageError("read", problem)
                continue
            yield checked(image_id, where, data)

    def sources(self, shard: Shard) -> list[str]:
        """The file of each image (a local path, or ``scheme://path``)."""
        return [show(shard.filesystem, path) for path in shard.paths]


def candidate_files(
    root: Root, layout: str, extensions: tuple[str, ...], skip_names: tuple[str, ...] = ()
) -> tuple[list[str], Skips]:
    """The files a shard-file layout reads (a folder of them, or the one file named), and the skipped others.

    In a folder, entries without one of ``extensions``, hidden entries and files named in ``skip_names`` are
    skipped and counted. Raises :class:`MlrayError` when ``root`` does not exist, is a file with another extension,
    or is a folder holding no such file, or one such entry that is not a readable file (a broken link, a FIFO ...).
    """
    kind = root_type(root)
    if kind == pafs.FileType.NotFound:
        raise MlrayError(f"{root.show()}: no such file or folder")
    skips = Skips()
    if kind == pafs.FileType.File:
        if not root.path.lower().endswith(extensions):
            raise MlrayError(f"{root.show()}: layout {layout} reads {', '.join(extensions)} files")
        return [root.path], skips
    files = []
    for entry in list_entries(root):
        name = entry.rel.rsplit("/", 1)[-1]
        if hidden(entry.rel) or not name.lower().endswith(extensions) or name in skip_names:
            skips.add(entry.rel)
            continue
        if entry.problem is not None:
            raise MlrayError(f"{entry.problem} (layout {layout})")
        files.append(entry.inner)
    if not files:
        raise MlrayError(f"{root.show()}: no {' / '.join(extensions)} files here (layout {layout})")
    return files, skips
