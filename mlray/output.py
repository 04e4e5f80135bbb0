"""Where a command writes: ``--out`` is a local folder or an object-store URI, for every command and job alike.

A URI is anything ``pyarrow.fs`` opens (``s3://bucket/prefix``, ``gs://...``, ``hdfs://...``, ``file:///...``;
an S3-compatible endpoint from the standard ``AWS_ENDPOINT_URL``) or fsspec opens (``az://``, ...); see
:mod:`mlray.store.remote`. :func:`destination` is the one output layer:

- Before anything runs it checks that ``--out`` can be written (:meth:`Destination.check_writable`: a local
  ``--out`` naming a file, a folder that cannot be created, a bucket that refuses a write are one line, exit 2,
  before the first image is decoded) and removes temporaries a killed earlier run left behind.
- For a URI the command works in a local scratch folder (``--scratch``, default ``$MLRAY_SCRATCH`` or the
  system temp folder) *linked* to the remote folder (:func:`mlray.store.remote.linked`): every finished shard
  part (errors part first, then predictions part) is uploaded whole as soon as it is written, and the
  inference driver decides what to resume by listing the remote part names: nothing is downloaded first.
- At the end everything else the command wrote (the manifest, the reports, the dashboard) is uploaded; the
  scratch folder is removed. When the command fails or is interrupted, the finished parts are already on the
  remote store and the same command resumes from them.
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import TextIO

from .errors import MlrayError
from .io import scheme_of
from .store.remote import RemoteFolder, linked, open_remote, sweep_local_temporaries, sweep_temporaries, why

STORE_DIRS = ("predictions", "errors")
"""The folders of ``--out`` that hold shard parts (published as they are written)."""


class Destination:
    """Where a command writes. ``local`` is always a local folder: ``--out`` itself, or for a URI a scratch
    working copy linked to :attr:`remote` (a :class:`~mlray.store.remote.RemoteFolder`, None for a local out)."""

    def __init__(self, out: str | os.PathLike, scratch: str | os.PathLike | None = None) -> None:
        self.out = os.fspath(out)
        self.remote: RemoteFolder | None = open_remote(self.out) if scheme_of(self.out) is not None else None
        self._scratch: Path | None = None
        self._pulled: set[str] = set()
        if self.remote is not None:
            if scratch:
                Path(scratch).mkdir(parents=True, exist_ok=True)
            self._scratch = Path(tempfile.mkdtemp(prefix="mlray-out-", dir=scratch))
            self.local = self._scratch / "out"
            self.local.mkdir()
        else:
            self.local = Path(self.out)

    @property
    def is_remote(self) -> bool:
        """Whether ``--out`` is a URI."""
        return self.remote is not None

    def show(self, rel: str = "") -> str:
        """How to name ``--out``/``rel`` to the user (the URI for a remote output)."""
        if self.remote is not None:
            return self.remote.show(rel)
        return str(self.local / rel) if rel else str(self.local)

    def check_writable(self) -> None:
        """Raise a one-line :class:`MlrayError` unless ``--out`` can be written: a local path must be a folder or
        not exist yet under a writable folder (nothing is created here); a remote folder must not be an object
        and must take a write (a small hidden object, deleted at once)."""
        if self.remote is None:
            _check_local_folder(self.local)
            return
        if self.remote.is_file():
            raise MlrayError(f"{self.out}: is an object (a file), not a folder; --out names the output folder")
        self.remote.check_write()

    def sweep(self) -> int:
        """Remove temporaries (``.tmp-*``) that a killed earlier run left in the store folders; returns how many."""
        if self.remote is not None:
            return sum(sweep_temporaries(self.remote, d) for d in STORE_DIRS)
        return sum(sweep_local_temporaries(self.local / d) for d in STORE_DIRS)

    def pull_missing(self, *subtrees: str) -> int:
        """Download the remote files under ``subtrees`` (folders relative to ``--out``) that the local copy lacks
        (what scoring reads: the parts an earlier run stored); returns how many. A no-op for a local out."""
        if self.remote is None:
            return 0
        n = 0
        for sub in subtrees:
            for rel, is_dir, _ in self.remote.entries(sub, recursive=True):
                if is_dir or (self.local / rel).exists():
                    continue
                self.remote.get_file(rel, self.local / rel)
                self._pulled.add(rel)
                n += 1
        return n

    def push(self) -> int:
        """Upload the local files not yet on the remote folder (not published as parts, not downloaded), each
        whole; returns how many. Hidden files (temporaries) are never uploaded. A no-op for a local out."""
        if self.remote is None:
            return 0
        n = 0
        for path in _files(self.local):
            rel = path.relative_to(self.local).as_posix()
            if rel in self.remote.published or rel in self._pulled:
                continue
            self.remote.put_file(path, rel)
            n += 1
        return n

    def cleanup(self) -> None:
        """Remove the scratch folder (URI outputs only)."""
        if self._scratch is not None:
            shutil.rmtree(self._scratch, ignore_errors=True)


def _check_local_folder(out: Path) -> None:
    """The checks of :meth:`Destination.check_writable` for a local ``--out``."""
    if out.exists() and not out.is_dir():
        raise MlrayError(f"{out}: is a file, not a folder; --out names the output folder")
    probe = out
    while not probe.exists():
        if probe.parent == probe:
            break
        probe = probe.parent
    if probe.exists() and not probe.is_dir():
        raise MlrayError(f"{out}: cannot create the output folder: {probe} is a file")
    if not os.access(probe, os.W_OK | os.X_OK):
        raise MlrayError(f"{out}: cannot write there ({probe} is not writable)")


def _files(root: Path) -> Iterator[Path]:
    """Regular files under ``root`` (none if it is missing), skipping hidden names, in sorted order."""
    if not root.exists():
        return iter(())
    return (
        p
        for p in sorted(root.rglob("*"))
        if p.is_file() and not any(part.startswith(".") for part in p.relative_to(root).parts)
    )


@contextmanager
def destination(
    out: str | os.PathLike, scratch: str | os.PathLike | None = None, log: TextIO | None = None
) -> Iterator[Destination]:
    """The output layer of a command (see the module docstring): a checked :class:`Destination` whose store
    parts are published as they are written, and whose other files are uploaded when the block ends without an
    error. Messages go to ``log`` (default stdout). The scratch folder of a URI is removed at the end, unless the
    final upload failed (the error then names the local copy)."""
    log = log or sys.stdout
    dest = Destination(out, scratch)
    keep_scratch = False
    try:
        dest.check_writable()
        swept = dest.sweep()
        if swept:
            print(f"removed {swept} temporary file(s) a killed run left in {dest.show()}", file=log, flush=True)
        with ExitStack() as stack:
            if dest.remote is not None:
                stack.enter_context(linked(dest.local, dest.remote))
            yield dest
        if dest.remote is not None:
            try:
                n = dest.push()
            except MlrayError as exc:
                keep_scratch = True
                raise MlrayError(f"{exc}; the local copy is in {dest.local}") from None
            parts = sum(1 for p in dest.remote.published if p.split("/", 1)[0] in STORE_DIRS)
            also = f" (+ {parts:,} shard parts as they finished)" if parts else ""
            print(f"uploaded {n:,} files to {dest.show()}{also}", file=log, flush=True)
    finally:
        if not keep_scratch:
            dest.cleanup()


def check_output(out: str | os.PathLike) -> None:
    """Check that the output folder ``out`` (local or a URI) can be written, creating nothing (see
    :meth:`Destination.check_writable`); for commands that write to ``out`` themselves (``mlray shard``)."""
    text = os.fspath(out)
    if scheme_of(text) is None:
        _check_local_folder(Path(text))
        return
    remote = open_remote(text)
    if remote.is_file():
        raise MlrayError(f"{text}: is an object (a file), not a folder; --out names the output folder")
    remote.check_write()


def check_output_file(out: str | os.PathLike) -> None:
    """Check that the output file ``out`` (local or a URI) can be written: its folder exists or can be created and
    is writable (a local ``out`` that is an existing folder is checked as the folder the file goes into)."""
    text = os.fspath(out)
    if scheme_of(text) is None:
        path = Path(text)
        if path.parent.exists() and not path.parent.is_dir():
            raise MlrayError(f"{path}: cannot write there: {path.parent} is a file")
        _check_local_folder(path if path.is_dir() else path.parent)
        return
    folder, _, name = text.rstrip("/").rpartition("/")
    if not name or "://" not in folder + "/":
        raise MlrayError(f"{text}: not a file URI")
    open_remote(folder).check_write()


def upload_file(local: str | os.PathLike, uri: str) -> None:
    """Upload one local file to ``uri`` (a file URI), whole or not at all."""
    folder, _, name = uri.rstrip("/").rpartition("/")
    if not name or "://" not in folder + "/":
        raise MlrayError(f"{uri}: not a file URI")
    open_remote(folder).put_file(local, name)


def fetch_inputs(paths: list[str], scratch_dir: Path) -> list[Path]:
    """Local copies of input paths: local paths stay as they are, URIs (files or folders) are copied down."""
    import pyarrow.fs as pafs

    local: list[Path] = []
    for i, raw in enumerate(paths):
        if scheme_of(raw) is None:
            local.append(Path(raw))
            continue
        try:
            fs, inner = pafs.FileSystem.from_uri(raw)
            info = fs.get_file_info(inner.rstrip("/"))
        except Exception as exc:
            raise MlrayError(f"{raw}: cannot read ({why(exc)})") from None
        if info.type == pafs.FileType.NotFound:
            raise MlrayError(f"{raw}: no such predictions file or folder")
        target = scratch_dir / f"input-{i}" / (Path(inner.rstrip("/")).name or "predictions")
        target.parent.mkdir(parents=True, exist_ok=True)
        try:
            pafs.copy_files(
                inner.rstrip("/"), str(target), source_filesystem=fs, destination_filesystem=pafs.LocalFileSystem()
            )
        except Exception as exc:
            raise MlrayError(f"{raw}: cannot copy down ({why(exc)})") from None
        local.append(target)
    return local
