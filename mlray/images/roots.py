"""Where a dataset (or an output folder) lives: a pyarrow filesystem and a path inside it.

Every location goes through pyarrow's filesystem layer: a local path becomes a ``LocalFileSystem``, a URI
(``s3://``, ``gs://``, ``file://``, ...) the filesystem ``pyarrow.fs.FileSystem.from_uri`` builds for it. So
there is one code path for listing and reading, whatever the storage. The helpers here list files, tell hidden
and non-image names apart, and turn an I/O failure into the one-line reason shown to the user.
"""

from __future__ import annotations

import functools
import os
import posixpath
from dataclasses import dataclass
from pathlib import Path

import pyarrow.fs as pafs

from ..errors import MlrayError, first_line
from ..io import scheme_of
from ..labels import IMAGE_EXTENSIONS


@dataclass(frozen=True)
class Root:
    """A location: the pyarrow filesystem ``fs``, the ``path`` inside it and the ``uri`` it was built from
    (``None`` for a local path, read through ``LocalFileSystem``)."""

    fs: pafs.FileSystem
    path: str
    uri: str | None

    @property
    def local(self) -> bool:
        """True when the filesystem is the local disk (also for a ``file://`` URI)."""
        return isinstance(self.fs, pafs.LocalFileSystem)

    def show(self, inner: str | None = None) -> str:
        """How the root (or the path ``inner`` inside its filesystem) is shown to the user."""
        return show(self.uri, self.path if inner is None else inner)


def show(uri: str | None, inner: str) -> str:
    """How a path inside a filesystem is shown to the user: the local path, or ``scheme://path``."""
    if uri is None:
        return inner
    return f"{scheme_of(uri)}://{inner}"


def open_root(where: str | os.PathLike[str], base_dir: str | os.PathLike[str] | None = None) -> Root:
    """The :class:`Root` of a local path (relative to ``base_dir`` when given, else the working folder) or a URI.

    Raises :class:`MlrayError` for an empty path and for a URI whose filesystem cannot be built (unknown scheme,
    missing credentials or region). Nothing is listed or read here.
    """
    text = os.fspath(where)
    if not text.strip():
        raise MlrayError("images: empty path")
    if scheme_of(text) is None:
        local = Path(text).expanduser()
        if not local.is_absolute() and base_dir is not None:
            local = Path(base_dir) / local
        return Root(pafs.LocalFileSystem(), os.path.abspath(local), None)
    try:
        fs, inner = pafs.FileSystem.from_uri(text)
    except Exception as exc:  # unknown scheme, bad URI, missing credentials / region
        raise MlrayError(f"{text}: cannot open this location ({type(exc).__name__}: {first_line(exc)})") from None
    inner = inner.rstrip("/") or inner
    return Root(fs, inner, text)


@functools.lru_cache(maxsize=32)
def filesystem(uri: str | None) -> pafs.FileSystem:
    """The filesystem of a shard (``None`` = local), built once per process: Ray workers re-use it across shards.

    Raises :class:`MlrayError` when the filesystem cannot be built.
    """
    if uri is None:
        return pafs.LocalFileSystem()
    try:
        return pafs.FileSystem.from_uri(uri)[0]
    except Exception as exc:
        raise MlrayError(f"{uri}: cannot open this location ({type(exc).__name__}: {first_line(exc)})") from None


def list_files(root: Root) -> list[tuple[str, str]]:
    """Every file under ``root``, recursively, as (relative posix path, path inside the filesystem), sorted.

    Raises :class:`MlrayError` when the folder does not exist or cannot be listed.
    """
    try:
        infos = root.fs.get_file_info(pafs.FileSelector(root.path, recursive=True))
    except FileNotFoundError:
        raise MlrayError(f"{root.show()}: no such folder") from None
    except OSError as exc:
        raise MlrayError(f"{root.show()}: cannot list the folder ({first_line(exc)})") from None
    base = root.path.rstrip("/") + "/"
    out = []
    for info in infos:
        if info.type != pafs.FileType.File:
            continue
        rel = info.path[len(base) :] if info.path.startswith(base) else posixpath.basename(info.path)
        out.append((rel, info.path))
    out.sort()
    return out


def root_type(root: Root) -> pafs.FileType:
    """What ``root`` is: ``FileType.File``, ``Directory`` or ``NotFound``; an I/O failure is an :class:`MlrayError`."""
    try:
        return root.fs.get_file_info(root.path).type
    except OSError as exc:
        raise MlrayError(f"{root.show()}: cannot read ({first_line(exc)})") from None


def hidden(rel: str) -> bool:
    """True when a part of the relative path starts with ``.`` (``.DS_Store``, ``._x.jpg``, ``.ipynb_checkpoints``)."""
    return any(part.startswith(".") for part in rel.split("/"))


def is_image_name(name: str) -> bool:
    """True when the file name's extension (any case) is one of :data:`mlray.labels.IMAGE_EXTENSIONS`."""
    return posixpath.splitext(name)[1].lower() in IMAGE_EXTENSIONS


def read_reason(exc: BaseException, shown: str) -> str:
    """The one-line reason a read of ``shown`` failed: 'no such file: ...', 'permission denied: ...',
    'is a folder, not a file: ...', else ``'<shown>: <first line of the error>'``."""
    if isinstance(exc, FileNotFoundError):
        return f"no such file: {shown}"
    if isinstance(exc, PermissionError):
        return f"permission denied: {shown}"
    if isinstance(exc, IsADirectoryError) or "is a directory" in str(exc):
        return f"is a folder, not a file: {shown}"
    return f"{shown}: {first_line(exc)}"
