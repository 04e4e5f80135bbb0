"""Opening the user's files: local paths (relative to the config), URLs and object storage, cached locally.

``resolve(path, base_dir)`` turns whatever a config names into a local file:

- a plain path: relative paths resolve against ``base_dir`` (the config file's folder);
- ``http://`` / ``https://``: downloaded once into the cache;
- any URI pyarrow's filesystems understand (``s3://``, ``gs://``, ``hdfs://``, ``file://``): copied once into the cache
  through ``pyarrow.fs.FileSystem.from_uri``; other fsspec protocols (``az://``, ...) through fsspec.

The cache is ``$MLRAY_CACHE`` or ``~/.cache/mlray/remote``; a cached copy is keyed by the URI's SHA-256 and written
atomically (temporary name, then rename), so an interrupted download never leaves a truncated file in the cache.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
import urllib.request
from pathlib import Path, PurePosixPath

from .errors import MlrayError, first_line

_PYARROW_SCHEMES = {"s3", "gs", "gcs", "hdfs", "viewfs", "file", "abfs", "abfss"}


def scheme_of(path: str) -> str | None:
    """The URI scheme of ``path`` (``s3``, ``https``, ...), or None for a plain local path."""
    head, sep, _ = str(path).partition("://")
    if sep and head.isascii() and head.replace("+", "").replace("-", "").isalnum() and len(head) > 1:
        return head.lower()
    return None


def cache_dir() -> Path:
    root = os.environ.get("MLRAY_CACHE")
    return Path(root) if root else Path.home() / ".cache" / "mlray" / "remote"


def _cached_name(uri: str) -> Path:
    digest = hashlib.sha256(uri.encode()).hexdigest()[:20]
    name = PurePosixPath(uri.split("?", 1)[0]).name or "file"
    return cache_dir() / digest / name


def _download(uri: str, scheme: str, dest: Path) -> None:
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=dest.parent, prefix=".part-")
    try:
        with os.fdopen(fd, "wb") as out:
            if scheme in ("http", "https"):
                with urllib.request.urlopen(uri, timeout=60) as resp:  # noqa: S310 - user-named URL
                    shutil.copyfileobj(resp, out, length=1 << 20)
            elif scheme in _PYARROW_SCHEMES:
                import pyarrow.fs as pafs

                fs, inner = pafs.FileSystem.from_uri(uri)
                with fs.open_input_stream(inner) as src:
                    shutil.copyfileobj(src, out, length=1 << 20)
            else:
                import fsspec

                with fsspec.open(uri, "rb") as src:
                    shutil.copyfileobj(src, out, length=1 << 20)
        os.replace(tmp, dest)
    except MlrayError:
        raise
    except Exception as exc:  # network, auth, missing object: one line naming the URI
        Path(tmp).unlink(missing_ok=True)
        raise MlrayError(
            f"{uri}: cannot read ({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''})"
        ) from None


def resolve(path: str | os.PathLike, base_dir: str | os.PathLike | None = None) -> Path:
    """A local file for ``path``: relative to ``base_dir``, or a cached copy of a remote URI."""
    text = os.fspath(path)
    scheme = scheme_of(text)
    if scheme is None:
        local = Path(text).expanduser()
        if not local.is_absolute() and base_dir is not None:
            local = Path(base_dir) / local
        if not local.exists():
            raise MlrayError(f"{local}: no such file")
        return local
    dest = _cached_name(text)
    if not dest.exists():
        _download(text, scheme, dest)
    return dest


def read_csv_strict(path: str | os.PathLike, shown: str, sep: str = ","):
    """A CSV as a DataFrame of strings ('' = empty cell), column names stripped. Rows with more fields than the
    header are an error (pandas would otherwise silently turn the extra leading fields into an index)."""
    import warnings

    import pandas as pd

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", pd.errors.ParserWarning)
            frame = pd.read_csv(path, dtype=str, keep_default_na=False, sep=sep, index_col=False)
    except pd.errors.ParserWarning:
        raise MlrayError(f"{shown}: malformed CSV: rows have more fields than the header") from None
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError, ValueError) as exc:
        raise MlrayError(f"{shown}: malformed CSV: {first_line(exc)}") from None
    frame.columns = [str(c).strip() for c in frame.columns]
    return frame


def write_parquet_atomic(table, target: str | os.PathLike) -> Path:
    """Write a pyarrow Table to ``target`` atomically: a hidden temporary file in the same folder, flushed and
    fsynced, then ``os.replace``; a reader never sees half a file, and a failed write leaves nothing behind."""
    import uuid

    import pyarrow.parquet as pq

    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.parent / f".tmp-{target.name}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    try:
        with open(tmp, "wb") as fh:
            pq.write_table(table, fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, target)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return target
