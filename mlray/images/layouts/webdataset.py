"""The ``webdataset`` layout: ``.tar`` / ``.tar.gz`` / ``.tgz`` shards (a folder of them, or one file).

Members are grouped into samples by key (WebDataset's rule: the member name up to the first dot of its base
name); the image is the member with an image extension, an optional ``cls`` member (integer text, parsed by
:func:`mlray.labels.class_index`; -1/empty = unknown) is the original label; image_id = the key's base name. A
sample with no image member is skipped and counted; two image members of one sample are an error. One shard per
tar, in tar order.
"""

from __future__ import annotations

import posixpath
import re
import tarfile
from collections.abc import Iterator
from typing import IO

import pyarrow as pa
import pyarrow.fs as pafs

from ...errors import MlrayError, first_line
from ...labels import IMAGE_EXTENSIONS, class_index
from ..roots import Root, read_reason, show
from ..shards import (
    ImageError,
    ImageIds,
    ImagePlan,
    Layout,
    Shard,
    Skips,
    SourcedItem,
    checked,
    labels_from_columns,
    shard_id,
)
from ._common import candidate_files

TAR_EXTENSIONS = (".tar", ".tar.gz", ".tgz")
# WebDataset's key rule (webdataset.tariterators.base_plus_ext): key = up to the first dot of the base name.
_WDS_NAME = re.compile(r"^((?:.*/|)[^.]+)[.]([^/]*)$")


def open_tar(fs: pafs.FileSystem, inner: str, seekable: bool) -> tuple[tarfile.TarFile, IO[bytes]]:
    """(tarfile, the underlying stream). Seekable (local) tars are read with seeks (headers only), others streamed."""
    stream: IO[bytes]
    if seekable:
        stream = fs.open_input_file(inner)
        return tarfile.open(fileobj=stream, mode="r:*"), stream
    stream = fs.open_input_stream(inner)
    return tarfile.open(fileobj=stream, mode="r|*"), stream


class _Sample:
    """The members of one sample seen so far: its image member and its ``cls`` label."""

    def __init__(self) -> None:
        self.image: str | None = None
        self.cls: int | None = None


class WebDatasetLayout(Layout):
    """``webdataset``: one shard per tar; ``shard.paths[i]`` is the member holding ``shard.image_ids[i]``."""

    name = "webdataset"

    def plan(self, root: Root, shard_size: int) -> ImagePlan:
        """Scan every tar's member headers (and ``cls`` members) into samples; one shard per tar with images.
        ``shard_size`` does not cut tars (it is kept in the plan)."""
        files, skips = candidate_files(root, self.name, TAR_EXTENSIONS)
        ids = ImageIds(root.show())
        all_ids: list[str] = []
        label: dict[str, int] = {}
        shards: list[Shard] = []
        for inner in files:
            shown = root.show(inner)
            samples = self._samples(root, inner, skips)
            tar_ids: list[str] = []
            members: list[str] = []
            for key, sample in samples.items():
                if sample.image is None:
                    skips.add(f"{posixpath.basename(inner)}:{key}")
                    continue
                image_id = key.rsplit("/", 1)[-1]
                ids.add(image_id, f"{shown}:{sample.image}")
                tar_ids.append(image_id)
                members.append(sample.image)
                if sample.cls is not None:
                    label[image_id] = sample.cls
            if tar_ids:
                shards.append(
                    Shard(
                        shard_id=shard_id(len(shards)),
                        layout=self.name,
                        image_ids=tuple(tar_ids),
                        paths=tuple(members),
                        file=inner,
                        filesystem=root.uri,
                    )
                )
            all_ids.extend(tar_ids)
        sorted_ids = sorted(all_ids)
        return ImagePlan(
            root.show(),
            self.name,
            shard_size,
            shards,
            sorted_ids,
            labels_from_columns(root.show(), self.name, sorted_ids, label or None, None),
            skips.n,
            skips.examples,
        )

    @staticmethod
    def _samples(root: Root, inner: str, skips: Skips) -> dict[str, _Sample]:
        """The samples of one tar by key, in tar order; member names that have no key are skipped."""
        shown = root.show(inner)
        samples: dict[str, _Sample] = {}
        try:
            tf, stream = open_tar(root.fs, inner, seekable=root.local)
            try:
                for member in tf:
                    if not member.isfile():
                        continue
                    match = _WDS_NAME.match(member.name)
                    if match is None:
                        skips.add(f"{posixpath.basename(inner)}:{member.name}")
                        continue
                    key, ext = match.group(1), match.group(2).lower()
                    sample = samples.setdefault(key, _Sample())
                    if f".{ext}" in IMAGE_EXTENSIONS:
                        if sample.image is not None:
                            raise MlrayError(
                                f"{shown}: sample {key!r} has two image members: {sample.image} and {member.name}"
                            )
                        sample.image = member.name
                    elif ext == "cls":
                        data = tf.extractfile(member).read()  # type: ignore[union-attr]
                        text = data.decode("utf-8", "replace").strip()
                        sample.cls = class_index(text, f"{shown}:{member.name}", unknown_ok=True)
            finally:
                tf.close()
                stream.close()
        except MlrayError:
            raise
        except (tarfile.TarError, OSError, EOFError, pa.ArrowException) as exc:
            raise MlrayError(f"{shown}: not a readable tar file ({first_line(exc)})") from None
        return samples

    def read(self, shard: Shard, fs: pafs.FileSystem) -> Iterator[SourcedItem]:
        """Stream the tar and yield the planned members in tar order, then every planned member not found (or not
        reached because the tar could not be read) as a read error item."""
        file = shard.file or ""
        shown = show(shard.filesystem, file)
        wanted = dict(zip(shard.paths, shard.image_ids))
        done: set[str] = set()
        failure = None
        try:
            tf, stream = open_tar(fs, file, seekable=False)
            try:
                for member in tf:
                    name = member.name
                    if name not in wanted or name in done or not member.isfile():
                        continue
                    data = tf.extractfile(member).read()  # type: ignore[union-attr]
                    done.add(name)
                    yield checked(wanted[name], f"{shown}:{name}", data)
            finally:
                tf.close()
                stream.close()
        except (tarfile.TarError, OSError, EOFError, pa.ArrowException) as exc:
            failure = read_reason(exc, shown)
        for name, image_id in wanted.items():
            if name not in done:
                reason = failure or f"member {name} not found in {shown}"
                yield image_id, f"{shown}:{name}", None, ImageError("read", reason)

    def sources(self, shard: Shard) -> list[str]:
        """``tar:member`` for each image (the order planned; reading yields them in tar order)."""
        shown = show(shard.filesystem, shard.file or "")
        return [f"{shown}:{member}" for member in shard.paths]
