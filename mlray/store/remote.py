"""A store on object storage: a local working folder linked to a remote folder, each finished part published
as soon as it is written.

:func:`open_remote` opens an output URI: ``s3://bucket/prefix``, ``gs://...``, ``hdfs://...``, ``file:///...``
through ``pyarrow.fs`` (an S3-compatible endpoint from the standard ``AWS_ENDPOINT_URL``; credentials and region
as pyarrow reads them), any other fsspec protocol (``az://``, ``memory://``, ...) through fsspec.

:func:`linked` links a local output folder to a :class:`RemoteFolder` for the duration of a command. Inside the
link, the store's own functions treat the remote folder as the store:

- :func:`mlray.store.finish_shard` writes each part locally (atomically) and then uploads it whole
  (:meth:`RemoteFolder.put_file`): the errors part first, the predictions part last, so a predictions object
  on the bucket still means a finished shard;
- which shards are finished, which parts are stale, how many rows a partition holds: read from the remote
  part *names* and Parquet footers (:func:`remote_names`, :func:`remote_rows`), never by downloading the store.
  A re-run of the same command therefore resumes from the bucket by listing it.

An upload is whole or nothing: an object store (S3, GCS, Azure, fsspec stores) makes an object visible only
when its single PUT completes; a filesystem with real folders and renames (``file://``, HDFS) gets a hidden
temporary name first and is renamed into place. :func:`sweep_temporaries` removes temporaries a killed upload
left behind; every listing here ignores them.
"""

from __future__ import annotations

import os
import signal
import threading
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import MlrayError, first_line
from ..io import scheme_of

TMP_PREFIX = ".tmp-"
"""Name prefix of a temporary file or object (an atomic write in progress); every listing ignores it."""

_RENAMING_FILESYSTEMS = ("local", "hdfs")  # real folders and renames: write a temporary, then move it into place


def why(exc: BaseException) -> str:
    """``Type: first line`` of an exception raised by a filesystem library (the type says which failure it was)."""
    return f"{type(exc).__name__}: {first_line(exc)}"


@dataclass
class RemoteFolder:
    """A folder on a remote filesystem: ``uri`` as the user named it, ``fs`` a ``pyarrow.fs.FileSystem`` and
    ``root`` the folder's path inside it (no trailing ``/``). ``published`` holds the relative paths uploaded
    so far by this process (so a final upload does not send them again)."""

    uri: str
    fs: Any
    root: str
    published: set[str] = field(default_factory=set)
    _scanned: set[str] = field(default_factory=set, repr=False)  # prefixes listed once (recursively)
    _files: dict[str, set[str]] = field(default_factory=dict, repr=False)  # folder -> file names, for scanned prefixes

    @property
    def renames(self) -> bool:
        """Whether uploads go through a temporary name and a rename (filesystems with real folders)."""
        return str(self.fs.type_name) in _RENAMING_FILESYSTEMS

    def path(self, rel: str = "") -> str:
        """The filesystem path of ``rel`` (a POSIX path relative to the folder)."""
        rel = rel.strip("/")
        return f"{self.root}/{rel}" if rel else self.root

    def show(self, rel: str = "") -> str:
        """How to name ``rel`` to the user: the URI with ``rel`` appended."""
        rel = rel.strip("/")
        return f"{self.uri.rstrip('/')}/{rel}" if rel else self.uri

    def _fail(self, rel: str, what: str, exc: BaseException) -> MlrayError:
        return MlrayError(f"{self.show(rel)}: cannot {what} ({why(exc)})")

    def entries(self, rel: str = "", recursive: bool = False) -> list[tuple[str, bool, int]]:
        """``(path relative to the folder, is a folder, size)`` of what lies under ``rel`` (none when it does not
        exist), sorted by path; temporaries and hidden names (a segment starting with ``.``) are left out."""
        import pyarrow.fs as pafs

        base = self.path(rel)
        try:
            infos = self.fs.get_file_info(pafs.FileSelector(base, allow_not_found=True, recursive=recursive))
        except Exception as exc:
            raise self._fail(rel, "list", exc) from None
        out = []
        prefix = self.root + "/" if self.root else ""
        for info in infos:
            path = str(info.path)
            inner = path[len(prefix) :] if path.startswith(prefix) else path
            below = inner[len(rel.strip("/")) :].lstrip("/") if rel.strip("/") else inner
            if any(part.startswith(".") for part in below.split("/")):
                continue
            out.append((inner, info.type == pafs.FileType.Directory, int(info.size or 0)))
        return sorted(out)

    def names(self, rel: str) -> list[str]:
        """The names of the files directly in the folder ``rel`` (none when it does not exist), temporaries and
        hidden names left out.

        The first question about a folder lists its two-level prefix (``predictions/<dataset>``) once, recursively,
        and keeps the answer (updated by this folder's own uploads and deletes): a store of thousands of
        (dataset, model) partitions is listed in a few paged requests, not one request per partition. (One run
        writes to an output folder at a time.)"""
        rel = rel.strip("/")
        prefix = "/".join(rel.split("/")[:2])
        if prefix not in self._scanned:
            for path, is_dir, _ in self.entries(prefix, recursive=True):
                if not is_dir:
                    folder, _, name = path.rpartition("/")
                    self._files.setdefault(folder, set()).add(name)
            self._scanned.add(prefix)
        return sorted(self._files.get(rel, ()))

    def _listed(self, rel: str, present: bool) -> None:
        """Keep the cached listing of :meth:`names` up to date after an upload (``present``) or a delete."""
        rel = rel.strip("/")
        folder, _, name = rel.rpartition("/")
        if present:
            self._files.setdefault(folder, set()).add(name)
        else:
            self._files.get(folder, set()).discard(name)

    def temporaries(self, rel: str = "") -> list[str]:
        """Relative paths of the temporaries (``.tmp-*``) under ``rel``, at any depth."""
        import pyarrow.fs as pafs

        try:
            infos = self.fs.get_file_info(pafs.FileSelector(self.path(rel), allow_not_found=True, recursive=True))
        except Exception as exc:
            raise self._fail(rel, "list", exc) from None
        prefix = self.root + "/" if self.root else ""
        return sorted(
            str(i.path)[len(prefix) :]
            for i in infos
            if i.type == pafs.FileType.File and str(i.path).rsplit("/", 1)[-1].startswith(TMP_PREFIX)
        )

    def exists(self, rel: str = "") -> bool:
        """Whether a file or folder ``rel`` exists."""
        import pyarrow.fs as pafs

        try:
            return bool(self.fs.get_file_info(self.path(rel)).type != pafs.FileType.NotFound)
        except Exception as exc:
            raise self._fail(rel, "list", exc) from None

    def is_file(self, rel: str = "") -> bool:
        """Whether ``rel`` is a file (an object)."""
        import pyarrow.fs as pafs

        try:
            return bool(self.fs.get_file_info(self.path(rel)).type == pafs.FileType.File)
        except Exception as exc:
            raise self._fail(rel, "list", exc) from None

    def put_bytes(self, data: bytes, rel: str) -> None:
        """Write ``data`` as the file ``rel``, whole or not at all (see the module docstring)."""
        target = self.path(rel)
        parent = target.rsplit("/", 1)[0] if "/" in target else ""
        try:
            if self.renames:
                if parent:
                    self.fs.create_dir(parent, recursive=True)
                name = target.rsplit("/", 1)[-1]
                tmp = f"{parent}/{TMP_PREFIX}{name}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
                try:
                    with self.fs.open_output_stream(tmp) as fh:
                        fh.write(data)
                    self.fs.move(tmp, target)
                except BaseException:
                    try:
                        self.fs.delete_file(tmp)
                    except Exception:
                        pass
                    raise
            else:
                with _signals_held(), self.fs.open_output_stream(target) as fh:  # one PUT: the object appears when
                    fh.write(data)  # it completes (on close, even after an exception: hence no interrupt here)
        except MlrayError:
            raise
        except Exception as exc:
            raise self._fail(rel, "upload", exc) from None
        self.published.add(rel.strip("/"))
        self._listed(rel, present=True)

    def put_file(self, local: str | os.PathLike, rel: str) -> None:
        """Upload the local file ``local`` as ``rel``, whole or not at all."""
        self.put_bytes(Path(local).read_bytes(), rel)

    def get_file(self, rel: str, local: str | os.PathLike) -> None:
        """Download ``rel`` into the local file ``local`` (atomically: a temporary name, then a rename)."""
        local = Path(local)
        local.parent.mkdir(parents=True, exist_ok=True)
        tmp = local.parent / f"{TMP_PREFIX}{local.name}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        try:
            with self.fs.open_input_stream(self.path(rel)) as src:
                tmp.write_bytes(src.readall())
            os.replace(tmp, local)
        except Exception as exc:
            tmp.unlink(missing_ok=True)
            raise self._fail(rel, "download", exc) from None

    def delete(self, rel: str) -> None:
        """Delete the file ``rel`` (no error when it is already gone)."""
        try:
            self.fs.delete_file(self.path(rel))
        except FileNotFoundError:
            pass
        except Exception as exc:
            raise self._fail(rel, "delete", exc) from None
        self._listed(rel, present=False)

    def check_write(self) -> None:
        """Raise a one-line :class:`MlrayError` unless the folder takes a write: a small hidden object is
        written and deleted at once (a filesystem with real folders gets the folder created)."""
        probe = f".mlray-write-check-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        try:
            if self.renames:
                self.fs.create_dir(self.root, recursive=True)
            with self.fs.open_output_stream(self.path(probe)) as fh:
                fh.write(b"")
            self.fs.delete_file(self.path(probe))
        except Exception as exc:
            raise MlrayError(f"{self.uri}: cannot write there ({why(exc)})") from None

    def num_rows(self, rel: str) -> int:
        """The rows of the Parquet file ``rel``, from its footer (a ranged read, not the whole file)."""
        import pyarrow.parquet as pq

        try:
            with self.fs.open_input_file(self.path(rel)) as fh:
                return int(pq.read_metadata(fh).num_rows)
        except Exception as exc:
            raise self._fail(rel, "read the footer of", exc) from None


@contextmanager
def _signals_held() -> Iterator[None]:
    """Hold Ctrl-C and SIGTERM until the block ends, then raise the interrupt (in the main thread; elsewhere a
    no-op): pyarrow's output streams complete an object on close even when the write was interrupted, so an
    interrupt between opening and writing would publish an empty part."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    held: list[int] = []
    before = {
        sig: signal.signal(sig, lambda signum, frame: held.append(signum)) for sig in (signal.SIGINT, signal.SIGTERM)
    }
    try:
        yield
    finally:
        for sig, handler in before.items():
            signal.signal(sig, handler)
    if held:
        raise KeyboardInterrupt


def open_remote(uri: str) -> RemoteFolder:
    """The :class:`RemoteFolder` of an output URI (see the module docstring); one-line :class:`MlrayError` when
    the scheme is unknown or the URI unusable."""
    import pyarrow.fs as pafs

    try:
        fs, root = pafs.FileSystem.from_uri(uri)
    except Exception as exc:  # not a pyarrow scheme: fsspec knows more (az://, memory://, ...)
        try:
            import fsspec

            ffs, inner = fsspec.core.url_to_fs(uri)
            fs, root = pafs.PyFileSystem(pafs.FSSpecHandler(ffs)), inner
        except Exception:
            raise MlrayError(f"{uri}: not a usable output URI ({why(exc)})") from None
    return RemoteFolder(uri, fs, str(root).rstrip("/"))


# ------------------------------------------------------------------------------------------------------- links

_LINKS: dict[Path, RemoteFolder] = {}


def _key(path: str | os.PathLike) -> Path:
    return Path(os.path.abspath(os.fspath(path)))


@contextmanager
def linked(local_root: str | os.PathLike, remote: RemoteFolder) -> Iterator[RemoteFolder]:
    """Within this block the output folder ``local_root`` is a working copy of ``remote``: the store's writer
    publishes each finished part there and its listing functions read the remote folder (module docstring)."""
    key = _key(local_root)
    previous = _LINKS.get(key)
    _LINKS[key] = remote
    try:
        yield remote
    finally:
        if previous is None:
            _LINKS.pop(key, None)
        else:
            _LINKS[key] = previous


def remote_of(path: str | os.PathLike) -> tuple[RemoteFolder, str] | None:
    """The remote folder ``path`` is linked to and ``path`` relative to it (a POSIX path), or None when ``path``
    lies under no linked output folder."""
    if not _LINKS:
        return None
    key = _key(path)
    for root, remote in _LINKS.items():
        if key == root or root in key.parents:
            return remote, key.relative_to(root).as_posix() if key != root else ""
    return None


def publish(local_file: str | os.PathLike) -> str | None:
    """Upload ``local_file`` to the same place in the remote folder its output folder is linked to, whole or
    not at all; returns the remote URI, or None when it is not under a linked output folder (nothing to do)."""
    found = remote_of(local_file)
    if found is None:
        return None
    remote, rel = found
    remote.put_file(local_file, rel)
    return remote.show(rel)


def remote_names(folder: str | os.PathLike) -> list[str] | None:
    """The file names in the remote twin of the local ``folder`` (temporaries left out), or None when
    ``folder`` is not under a linked output folder."""
    found = remote_of(folder)
    if found is None:
        return None
    remote, rel = found
    return remote.names(rel)


def remote_rows(folder: str | os.PathLike, names: list[str]) -> int:
    """The rows of the parts ``names`` in the remote twin of the local ``folder``, from their footers (read
    concurrently: a ranged read each); 0 for no names."""
    if not names:
        return 0
    found = remote_of(folder)
    if found is None:
        raise MlrayError(f"{folder}: not linked to a remote store")
    remote, rel = found
    paths = [f"{rel}/{name}" if rel else name for name in names]
    with ThreadPoolExecutor(max_workers=min(16, len(paths))) as pool:
        return sum(pool.map(remote.num_rows, paths))


def shown(path: str | os.PathLike) -> str:
    """How to name a local ``path`` to the user: its remote URI when it lies under a linked output folder."""
    found = remote_of(path)
    return str(path) if found is None else found[0].show(found[1])


def sweep_temporaries(remote: RemoteFolder, rel: str = "") -> int:
    """Delete the temporaries (``.tmp-*``) a killed upload left under ``rel`` of ``remote``; returns how many."""
    found = remote.temporaries(rel)
    for path in found:
        remote.delete(path)
    return len(found)


def sweep_local_temporaries(root: str | os.PathLike) -> int:
    """Delete the temporaries (``.tmp-*``) a killed write left under the local folder ``root`` whose writing
    process is gone (the name carries its process id); returns how many."""
    root = Path(root)
    if not root.is_dir():
        return 0
    n = 0
    for path in root.rglob(f"{TMP_PREFIX}*"):
        pid = _pid_of(path.name)
        if path.is_file() and (pid is None or not _alive(pid)):
            path.unlink(missing_ok=True)
            n += 1
    return n


def _pid_of(name: str) -> int | None:
    """The process id in a temporary name ``.tmp-<name>-<pid>-<hex8>``, or None."""
    parts = name.rsplit("-", 2)
    return int(parts[1]) if len(parts) == 3 and parts[1].isdigit() else None


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def is_uri(path: str | os.PathLike) -> bool:
    """Whether ``path`` is a URI (``s3://...``) rather than a local path."""
    return scheme_of(os.fspath(path)) is not None
