"""Where a dataset (or an output folder) lives: a pyarrow filesystem and a path inside it.

Every location goes through pyarrow's filesystem layer: a local path becomes a ``LocalFileSystem``, a URI
(``s3://``, ``gs://``, ``file://``, ...) the filesystem ``pyarrow.fs.FileSystem.from_uri`` builds for it. So
there is one code path for listing and reading, whatever the storage -- except for what only a local disk has:
local folders are listed with ``os.scandir`` and local files read with ``os.open``, so that the entries pyarrow
hides or chokes on (a broken symlink is not listed at all; opening a FIFO blocks forever) become entries with a
reason instead of vanishing or hanging.

The helpers here list every entry (:func:`list_entries`), tell hidden and non-image names apart, read one file
(:func:`read_bytes`), and turn an I/O failure into the one-line reason shown to the user:

=======================================  ==============================================================
``broken link: <path> -> <target>``      a symlink to nothing (or to a loop of links)
``a directory, not a file: <path>``      a folder named like an image (``x.JPEG/``), or a path that is one
``not a regular file (fifo): <path>``    a FIFO, socket, character or block device
``unreadable: permission denied: ...``   a file the process may not read
``no such file: <path>``                 a file that is not there (any more)
``changed while being read: ...``        a local file whose size changed between opening and the end of the read
=======================================  ==============================================================
"""

from __future__ import annotations

import errno
import functools
import os
import posixpath
import stat
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
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


@dataclass(frozen=True)
class Entry:
    """One entry of a listed folder that is not just a folder: ``rel`` (relative posix path), ``inner`` (the path
    inside the filesystem) and ``problem``: None for a file that can be opened as one, else why it cannot
    (a broken link, a folder named like an image, a FIFO / socket / device), as shown to the user."""

    rel: str
    inner: str
    problem: str | None = None


def list_entries(root: Root) -> list[Entry]:
    """Every entry under the folder ``root``, recursively, sorted by relative path: files (symlinks to files
    included), and with a ``problem`` each broken symlink, FIFO, socket or device, and each folder whose name has
    an image extension (``x.JPEG/``: listed *and* walked into). Other folders are walked into, not listed;
    symlinks to folders are followed (as pyarrow does).

    Raises :class:`MlrayError` when the folder (or a folder under it) does not exist or cannot be listed, and for
    a symlink that leads back to a folder enclosing it (a loop).
    """
    entries = _walk_local(root) if root.local else _walk_remote(root)
    entries.sort(key=lambda e: e.rel)
    return entries


def _walk_remote(root: Root) -> list[Entry]:
    """:func:`list_entries` through pyarrow (object stores: no links, FIFOs or devices to find)."""
    try:
        infos = root.fs.get_file_info(pafs.FileSelector(root.path, recursive=True))
    except FileNotFoundError:
        raise MlrayError(f"{root.show()}: no such folder") from None
    except OSError as exc:
        raise MlrayError(f"{root.show()}: cannot list the folder ({first_line(exc)})") from None
    base = root.path.rstrip("/") + "/"
    out = []
    for info in infos:
        rel = info.path[len(base) :] if info.path.startswith(base) else posixpath.basename(info.path)
        shown = root.show(info.path)
        if info.type == pafs.FileType.File:
            out.append(Entry(rel, info.path))
        elif info.type == pafs.FileType.Directory:
            if is_image_name(rel.rsplit("/", 1)[-1]):
                out.append(Entry(rel, info.path, f"a directory, not a file: {shown}"))
        else:
            out.append(Entry(rel, info.path, f"not a regular file ({info.type.name.lower()}): {shown}"))
    return out


def _walk_local(root: Root) -> list[Entry]:
    """:func:`list_entries` of a local folder with ``os.scandir`` (sees what pyarrow's listing hides)."""
    try:
        top = os.stat(root.path)
    except FileNotFoundError:
        raise MlrayError(f"{root.show()}: no such folder") from None
    except OSError as exc:
        raise MlrayError(f"{root.show()}: cannot list the folder ({first_line(exc)})") from None
    out: list[Entry] = []
    stack: list[tuple[str, str, frozenset[tuple[int, int]]]] = [(root.path, "", frozenset({(top.st_dev, top.st_ino)}))]
    while stack:
        folder, prefix, ancestors = stack.pop()
        try:
            with os.scandir(folder) as it:
                items = list(it)
        except OSError as exc:
            raise MlrayError(f"{root.show(folder)}: cannot list the folder ({first_line(exc)})") from None
        for item in items:
            rel = prefix + item.name
            if item.is_file(follow_symlinks=False):
                out.append(Entry(rel, item.path))  # the common case, from scandir's file type: no stat
                continue
            shown = root.show(item.path)
            try:
                st = item.stat()  # follows a symlink
            except OSError:  # a symlink to nothing, or to a loop of links
                out.append(Entry(rel, item.path, broken_link_reason(item.path, shown)))
                continue
            if stat.S_ISDIR(st.st_mode):
                key = (st.st_dev, st.st_ino)
                if key in ancestors:
                    raise MlrayError(f"{shown}: a symlink back to a folder that encloses it (a loop); remove it")
                if is_image_name(item.name):
                    out.append(Entry(rel, item.path, not_a_file_reason(st.st_mode, shown)))
                stack.append((item.path, rel + "/", ancestors | {key}))
            else:
                out.append(Entry(rel, item.path, not_a_file_reason(st.st_mode, shown)))
    return out


def list_files(root: Root) -> list[tuple[str, str]]:
    """Every file under ``root``, recursively, as (relative posix path, path inside the filesystem), sorted: the
    entries of :func:`list_entries` without a problem.

    Raises :class:`MlrayError` when the folder does not exist or cannot be listed.
    """
    return [(entry.rel, entry.inner) for entry in list_entries(root) if entry.problem is None]


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


_SPECIAL_KINDS: tuple[tuple[Callable[[int], bool], str], ...] = (
    (stat.S_ISFIFO, "fifo"),
    (stat.S_ISSOCK, "socket"),
    (stat.S_ISCHR, "character device"),
    (stat.S_ISBLK, "block device"),
)


def not_a_file_reason(mode: int, shown: str) -> str | None:
    """None when ``mode`` (an ``st_mode``) is a regular file; else why ``shown`` cannot be read as an image file:
    'a directory, not a file: ...' or 'not a regular file (fifo | socket | character device | block device): ...'."""
    if stat.S_ISREG(mode):
        return None
    if stat.S_ISDIR(mode):
        return f"a directory, not a file: {shown}"
    kind = next((name for test, name in _SPECIAL_KINDS if test(mode)), "unknown type")
    return f"not a regular file ({kind}): {shown}"


def broken_link_reason(path: str, shown: str) -> str:
    """'broken link: <shown> -> <target>' for the local symlink ``path`` that leads nowhere ('broken link (a loop
    of links): ...' when it leads to itself through other links, 'unreadable: permission denied: ...' when it
    leads into a folder the process may not enter)."""
    try:
        target = os.readlink(path)
    except OSError:
        target = "?"
    kind = "broken link"
    try:
        os.stat(path)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            kind = "broken link (a loop of links)"
        elif exc.errno == errno.EACCES:
            kind = "unreadable: permission denied"
    return f"{kind}: {shown} -> {target}"


def read_reason(exc: BaseException, shown: str) -> str:
    """The one-line reason a read of ``shown`` failed: 'no such file: ...', 'unreadable: permission denied: ...',
    'a directory, not a file: ...', else ``'<shown>: <first line of the error>'``."""
    if isinstance(exc, FileNotFoundError):
        return f"no such file: {shown}"
    if isinstance(exc, PermissionError):
        return f"unreadable: permission denied: {shown}"
    if isinstance(exc, IsADirectoryError) or "is a directory" in str(exc).lower():
        return f"a directory, not a file: {shown}"
    return f"{shown}: {first_line(exc)}"


def read_bytes(fs: pafs.FileSystem, path: str, shown: str) -> tuple[bytes | None, str | None]:
    """The bytes of the file ``path`` (``(data, None)``), or why it cannot be read (``(None, reason)``; the
    reasons of :func:`read_reason`, :func:`broken_link_reason` and :func:`not_a_file_reason`). Never raises for a
    problem of the file itself.

    A local file is opened with ``O_NONBLOCK`` and checked to be a regular file before any read, so a FIFO or a
    device is refused instead of blocking; a file whose size changed between opening and the end of the read is
    'changed while being read: <shown> (<n> bytes when opened, <m> read)'.
    """
    if not isinstance(fs, pafs.LocalFileSystem):
        try:
            with fs.open_input_stream(path) as fh:
                return fh.read(), None
        except (OSError, pa.ArrowException) as exc:
            return None, read_reason(exc, shown)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    except OSError as exc:
        return None, _open_failure(path, shown, exc)
    try:
        st = os.fstat(fd)
        problem = not_a_file_reason(st.st_mode, shown)
        if problem is not None:
            os.close(fd)
            return None, problem
        os.set_blocking(fd, True)
    except OSError as exc:
        os.close(fd)
        return None, read_reason(exc, shown)
    with os.fdopen(fd, "rb") as fh:  # closes fd
        try:
            data = fh.read()
        except OSError as exc:
            return None, read_reason(exc, shown)
    if len(data) != st.st_size:
        return None, f"changed while being read: {shown} ({st.st_size} bytes when opened, {len(data)} read)"
    return data, None


def _open_failure(path: str, shown: str, exc: OSError) -> str:
    """Why the local ``path`` could not be opened: a broken link, a socket (ENXIO), else :func:`read_reason`."""
    try:
        st = os.lstat(path)
    except OSError:
        return read_reason(exc, shown)
    if stat.S_ISLNK(st.st_mode) and exc.errno in (errno.ENOENT, errno.ELOOP, errno.EACCES):
        return broken_link_reason(path, shown)
    return not_a_file_reason(st.st_mode, shown) or read_reason(exc, shown)
