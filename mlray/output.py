"""Where a command writes: a local folder, or an object-store URI worked on through a local scratch copy.

``--out`` is a local folder or a URI that ``pyarrow.fs.FileSystem.from_uri`` understands (``s3://bucket/prefix``,
``gs://...``, ``file:///...``; an S3-compatible endpoint from ``AWS_ENDPOINT_URL``). For a URI the command works
in a local scratch folder (``--scratch``, default ``$MLRAY_SCRATCH`` or the system temp folder) and copies the tree
up at the end with ``pyarrow.fs.copy_files``. Before an evaluation, an existing remote prediction store is copied
down, so a re-run redoes only the shards it lacks; the files it copied down are not uploaded again (prediction
parts are immutable once written). When the command fails, the complete prediction and error parts it wrote are
still uploaded, so re-running resumes from there.
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from .errors import MlrayError, first_line
from .io import scheme_of


def _why(exc: BaseException) -> str:
    """``Type: first line`` of an exception raised by a filesystem library (the type says which failure it was)."""
    return f"{type(exc).__name__}: {first_line(exc)}"


class Destination:
    """Where a job writes: ``local`` is always a local folder; for a URI it is a scratch copy of the remote tree.

    :meth:`pull` copies remote sub-trees down (to resume), :meth:`push` copies new or changed files up.
    """

    def __init__(self, out: str, scratch: str | None = None) -> None:
        self.out = str(out)
        self.remote = scheme_of(self.out) is not None
        self._scratch: Path | None = None
        self._pulled: dict[str, tuple[int, int]] = {}  # relative path -> (size, mtime_ns) right after the pull
        if scratch:
            Path(scratch).mkdir(parents=True, exist_ok=True)
        if self.remote:
            import pyarrow.fs as pafs

            try:
                self.fs, self.root = pafs.FileSystem.from_uri(self.out)
            except Exception as exc:  # unknown scheme, bad bucket name, missing credentials provider ...
                raise MlrayError(f"{self.out}: not a usable output URI ({_why(exc)})") from None
            self.root = self.root.rstrip("/")
            self._scratch = Path(tempfile.mkdtemp(prefix="mlray-job-", dir=scratch))
            self.local = self._scratch / "out"
            self.local.mkdir()
        else:
            self.local = Path(self.out)

    def _remote_path(self, rel: str) -> str:
        return f"{self.root}/{rel}" if rel else self.root

    def pull(self, *subtrees: str) -> int:
        """Copy the remote ``subtrees`` (folders under ``--out``) that exist down into :attr:`local`.

        Returns the number of files copied. A no-op for a local ``--out``.
        """
        if not self.remote:
            return 0
        import pyarrow.fs as pafs

        n = 0
        for sub in subtrees:
            info = self._info(self._remote_path(sub))
            if info.type != pafs.FileType.Directory:
                continue
            target = self.local / sub
            try:
                pafs.copy_files(self._remote_path(sub), str(target), source_filesystem=self.fs,
                                destination_filesystem=pafs.LocalFileSystem())  # fmt: skip
            except Exception as exc:
                raise MlrayError(f"{self.out}/{sub}: cannot copy down ({_why(exc)})") from None
            for path in _files(target):
                st = path.stat()
                self._pulled[path.relative_to(self.local).as_posix()] = (st.st_size, st.st_mtime_ns)
                n += 1
        return n

    def _info(self, path: str):
        try:
            return self.fs.get_file_info(path)
        except Exception as exc:
            raise MlrayError(f"{self.out}: cannot list ({_why(exc)})") from None

    def push(self, subtrees: tuple[str, ...] | None = None) -> int:
        """Copy files of :attr:`local` that are new or changed since :meth:`pull` up to ``--out``.

        ``subtrees`` limits the upload to those folders (None = everything). Hidden files (temporary names of
        atomic writes) are never uploaded. Returns the number of files uploaded; a no-op for a local ``--out``.
        """
        if not self.remote:
            return 0
        import pyarrow.fs as pafs

        assert self._scratch is not None
        staging = self._scratch / "upload"
        shutil.rmtree(staging, ignore_errors=True)
        n = 0
        roots = [self.local / s for s in subtrees] if subtrees is not None else [self.local]
        for root in roots:
            for path in _files(root):
                rel = path.relative_to(self.local).as_posix()
                st = path.stat()
                if self._pulled.get(rel) == (st.st_size, st.st_mtime_ns):
                    continue  # copied down and untouched: already there
                dest = staging / rel
                dest.parent.mkdir(parents=True, exist_ok=True)
                try:
                    os.link(path, dest)
                except OSError:
                    shutil.copy2(path, dest)
                n += 1
        if n:
            try:
                if self.fs.type_name not in ("s3", "gcs"):  # filesystems with real folders need the root to exist
                    self.fs.create_dir(self.root, recursive=True)
                pafs.copy_files(str(staging), self.root, source_filesystem=pafs.LocalFileSystem(),
                                destination_filesystem=self.fs)  # fmt: skip
            except Exception as exc:
                raise MlrayError(
                    f"{self.out}: cannot upload ({_why(exc)}); the local copy is in {self.local}"
                ) from None
        shutil.rmtree(staging, ignore_errors=True)
        return n

    def cleanup(self) -> None:
        """Remove the scratch folder (URI outputs only)."""
        if self._scratch is not None:
            shutil.rmtree(self._scratch, ignore_errors=True)

    def show(self, rel: str = "") -> str:
        """How to name ``--out``/``rel`` to the user (the URI for a remote output)."""
        if self.remote:
            return f"{self.out.rstrip('/')}/{rel}" if rel else self.out
        return str(self.local / rel) if rel else str(self.local)


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
    out: str, scratch: str | None = None, pull: tuple[str, ...] = (), keep_on_failure: tuple[str, ...] = (), log=None
):
    """A :class:`Destination` whose remote copy is brought up to date however the job ends (messages on ``log``,
    default stdout).

    On success everything new is uploaded; on failure only ``keep_on_failure`` (complete, atomically written
    parts that a resubmitted job reuses) is uploaded, and the original error is re-raised. The scratch folder is
    removed unless the upload itself failed (then the error names the local copy).
    """
    log = log or sys.stdout
    dest = Destination(out, scratch)
    keep_scratch = False  # set when an upload fails: the local copy is then the only one
    try:
        if pull:
            n = dest.pull(*pull)
            if n:
                print(f"resuming: copied {n:,} stored files down from {dest.show()}", file=log, flush=True)
        yield dest
        try:
            n = dest.push()
        except MlrayError:
            keep_scratch = True
            raise
        if dest.remote:
            print(f"uploaded {n:,} files to {dest.show()}", file=log, flush=True)
    except BaseException:
        if dest.remote and keep_on_failure and not keep_scratch:
            try:
                n = dest.push(keep_on_failure)
                if n:
                    print(
                        f"uploaded {n:,} finished files to {dest.show()} before failing (a resubmitted job resumes)",
                        file=log,
                        flush=True,
                    )
            except MlrayError as exc:
                keep_scratch = True
                print(f"mlray: warning: {exc}", file=sys.stderr, flush=True)
        raise
    finally:
        if not keep_scratch:
            dest.cleanup()


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
            raise MlrayError(f"{raw}: cannot read ({_why(exc)})") from None
        if info.type == pafs.FileType.NotFound:
            raise MlrayError(f"{raw}: no such predictions file or folder")
        target = scratch_dir / f"input-{i}" / (Path(inner.rstrip("/")).name or "predictions")
        target.parent.mkdir(parents=True, exist_ok=True)
        try:
            pafs.copy_files(
                inner.rstrip("/"), str(target), source_filesystem=fs, destination_filesystem=pafs.LocalFileSystem()
            )
        except Exception as exc:
            raise MlrayError(f"{raw}: cannot copy down ({_why(exc)})") from None
        local.append(target)
    return local
