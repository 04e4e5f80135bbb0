"""Where the store keeps what: folders, part names, shard tags, and which shards a (dataset, model) holds.

A run's output folder ``OUT`` holds two stores of the same layout, one Parquet part per shard::

    OUT/predictions/<dataset>/<model>/part-<shard>.parquet   rows of PREDICTIONS_SCHEMA (mlray.store.schema)
    OUT/errors/<dataset>/<model>/part-<shard>.parquet        rows of ERRORS_SCHEMA: images that gave no prediction

Folder names are the dataset / model names quoted with ``urllib.parse.quote(name, safe="")`` (so
``hf-hub:timm/resnet50.a1_in1k`` becomes ``hf-hub%3Atimm%2Fresnet50.a1_in1k``, one path segment), with a
leading ``.`` or ``_`` quoted too (``%2E`` / ``%5F``: readers skip hidden folders). No folder name holds a ``=``,
so no reader mistakes the folders for hive partitions: every part file is self-describing (its rows carry the
``dataset`` and ``model`` columns) and the whole store reads with any Parquet reader::

    pd.read_parquet("OUT/predictions")                     # pandas (pyarrow engine)
    pq.read_table("OUT/predictions")                       # pyarrow
    duckdb.sql("select model, count(*) from read_parquet('OUT/predictions/**/*.parquet') group by model")
    mlray.store.read_store("OUT/predictions", datasets=["imagenet-val"])   # checked: no row twice

(pyarrow and pandas take the columns of the first part they open: read with :func:`mlray.store.read_store`, or
DuckDB's ``union_by_name=true``, when only some parts have the optional ``logits`` column.) Stores written by
mlray before this layout (hive folders ``dataset=<d>/model=<m>`` that repeated the columns of the files and so
did not read with pandas / pyarrow) are refused with a clear message, not read: re-run into a new ``OUT``.

**Shards.** Inference writes one part per planned shard, named by :func:`shard_tag` (the shard id plus a digest
of its image ids: a part is reused only for the very images it was written for). **A predictions part means a
finished shard**: :func:`mlray.store.finish_shard` writes the shard's errors part first and its predictions part
last, each atomically (a temporary file in the same folder, then ``os.replace``), so a run killed at any moment
leaves every shard either finished (both parts) or to redo (at most an errors part, which the redo replaces).
A re-run skips the finished shards (:func:`finished_shards`) and refuses parts of shards its plan does not have
(:func:`refuse_stale_parts`), so two plans never mix and no row is ever stored twice.
"""

from __future__ import annotations

import hashlib
import os
import time
import uuid
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Protocol
from urllib.parse import quote, unquote

import numpy as np

from ..errors import MlrayError
from .remote import remote_names
from .remote import shown as shown_path

PREDICTIONS_DIR = "predictions"
ERRORS_DIR = "errors"
_PART_PREFIX, _PART_SUFFIX = "part-", ".parquet"


class ShardLike(Protocol):
    """What :func:`shard_tag` needs of a shard (:class:`mlray.images.Shard` has it)."""

    @property
    def shard_id(self) -> str:
        """The shard's id in its plan (``s00003``)."""
        ...

    @property
    def image_ids(self) -> Sequence[str]:
        """The ids of the images the shard holds, in order."""
        ...


def predictions_root(out: str | os.PathLike) -> Path:
    """The prediction store of the output folder ``out``: ``OUT/predictions``."""
    return Path(out) / PREDICTIONS_DIR


def errors_root(out: str | os.PathLike) -> Path:
    """The errors store of the output folder ``out``: ``OUT/errors``."""
    return Path(out) / ERRORS_DIR


def folder_name(name: str) -> str:
    """The folder name of a dataset or model name: quoted into one path segment that no reader takes as hidden
    or as a hive partition (``hf-hub:timm/x`` -> ``hf-hub%3Atimm%2Fx``, ``_tmp`` -> ``%5Ftmp``)."""
    if not name:
        raise MlrayError("a dataset or model name in the store must not be empty")
    text = quote(name, safe="")
    if text[0] in "._":
        text = f"%{ord(text[0]):02X}{text[1:]}"
    return text


def name_of_folder(folder: str) -> str:
    """The dataset or model name a store folder stands for (the inverse of :func:`folder_name`)."""
    return unquote(folder)


def dataset_dir(root: str | os.PathLike, dataset: str) -> Path:
    """The folder of ``dataset`` under a store ``root`` (it holds one folder per model)."""
    return Path(root) / folder_name(dataset)


def partition_dir(root: str | os.PathLike, dataset: str, model: str) -> Path:
    """The folder of the (dataset, model) partition under a store ``root``."""
    return dataset_dir(root, dataset) / folder_name(model)


def store_folders(root: str, datasets: Iterable[str]) -> list[str]:
    """The folders of ``datasets`` in the store ``root`` named relative to the output folder (``"predictions"`` or
    ``"errors"``), as POSIX paths: what to copy to resume those datasets (``["predictions/imagenet-val", ...]``)."""
    return [f"{root.rstrip('/')}/{folder_name(d)}" for d in datasets]


def part_name(shard: int | str | None = None) -> str:
    """The file name of a part: ``part-00012.parquet`` for shard 12, ``part-<quoted>.parquet`` for a named shard
    (a :func:`shard_tag`), a new unique name (time + random) for None (an appended part)."""
    if shard is None:
        return f"{_PART_PREFIX}{time.strftime('%Y%m%dT%H%M%S')}-{uuid.uuid4().hex[:12]}{_PART_SUFFIX}"
    if isinstance(shard, (bool, np.bool_)):
        raise MlrayError(f"shard {shard!r} is not an integer or a name")
    if isinstance(shard, (int, np.integer)):
        if shard < 0:
            raise MlrayError(f"shard {shard} is negative")
        return f"{_PART_PREFIX}{int(shard):05d}{_PART_SUFFIX}"
    text = str(shard)
    if not text:
        raise MlrayError("a shard name must not be empty")
    return f"{_PART_PREFIX}{quote(text, safe='')}{_PART_SUFFIX}"


def part_tag(path: str | os.PathLike) -> str | None:
    """The shard a part file is of (``part-s00003-1f0c9a2e.parquet`` -> ``s00003-1f0c9a2e``), or None when the
    file is not named like a part (temporary files of unfinished writes start with ``.tmp-``)."""
    name = Path(path).name
    if not (name.startswith(_PART_PREFIX) and name.endswith(_PART_SUFFIX)) or len(name) <= 13:
        return None
    return unquote(name[len(_PART_PREFIX) : -len(_PART_SUFFIX)])


def shard_tag(shard: ShardLike) -> str:
    """A shard's name in the store: its id plus a digest of the image ids it holds (``s00003-1f0c9a2e``), so a
    part is reused only for the very images it was written for."""
    digest = hashlib.sha1("\n".join(shard.image_ids).encode()).hexdigest()[:8]
    return f"{shard.shard_id}-{digest}"


def parts(folder: str | os.PathLike) -> list[Path]:
    """The part files of a partition folder, sorted by name (none when the folder does not exist)."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.iterdir() if p.is_file() and part_tag(p) is not None)


def refuse_hive_folder(folder: str | os.PathLike) -> None:
    """Refuse a folder of the older hive layout (a name like ``dataset=<d>`` or ``model=<m>``: this layout's
    folder names never hold a ``=``)."""
    folder = Path(folder)
    if "=" in folder.name:
        raise MlrayError(
            f"{folder}: a folder of an older mlray store (hive names like dataset=<d>/model=<m>), which this "
            "version does not read; re-run into a new --out (or delete that store to redo it)"
        )


def subfolders(folder: str | os.PathLike) -> list[Path]:
    """The sub-folders of ``folder`` that are dataset or model folders, sorted (hidden ones skipped); a folder of
    the older hive layout is an error (:func:`refuse_hive_folder`)."""
    out = []
    for sub in sorted(Path(folder).iterdir()):
        if not sub.is_dir() or sub.name.startswith((".", "_")):
            continue
        refuse_hive_folder(sub)
        out.append(sub)
    return out


def check_layout(root: str | os.PathLike) -> None:
    """Refuse a store ``root`` (when it exists) that holds folders of the older hive layout."""
    root = Path(root)
    if root.is_dir():
        for dataset in subfolders(root):
            subfolders(dataset)


def list_partitions(root: str | os.PathLike) -> list[tuple[str, str, list[Path]]]:
    """The store's partitions as ``(dataset, model, [part files])``, sorted; folders without parts are left out.
    Temporary files of unfinished writes (``.tmp-*``), hidden folders and files not named like parts are ignored."""
    root = Path(root)
    if not root.is_dir():
        raise MlrayError(f"{root}: no such prediction store (folder)")
    out = []
    for dfolder in subfolders(root):
        for mfolder in subfolders(dfolder):
            files = parts(mfolder)
            if files:
                out.append((name_of_folder(dfolder.name), name_of_folder(mfolder.name), files))
    return sorted(out, key=lambda t: (t[0], t[1]))


def part_names(folder: str | os.PathLike) -> list[str]:
    """The names of the part files of a partition folder, sorted: the local ones, and for an output folder linked
    to a remote store (:func:`mlray.store.remote.linked`) the remote ones too, listed by name (nothing is
    downloaded)."""
    names = {p.name for p in parts(folder)}
    names.update(n for n in remote_names(folder) or () if part_tag(n) is not None)
    return sorted(names)


def stored_tags(root: str | os.PathLike, dataset: str, model: str) -> frozenset[str]:
    """The shards the (dataset, model) partition of a store ``root`` holds a part of (the remote store's parts
    included when ``root`` is linked to one, see :func:`part_names`)."""
    tags = (part_tag(n) for n in part_names(partition_dir(root, dataset, model)))
    return frozenset(t for t in tags if t is not None)


def finished_shards(out: str | os.PathLike, dataset: str, model: str) -> frozenset[str]:
    """The shards ``model`` has finished on ``dataset`` in the output folder ``out``: those with a predictions part
    (its errors part was written before it). A shard with only an errors part is unfinished and is redone."""
    return stored_tags(predictions_root(out), dataset, model)


def store_listing(
    out: str | os.PathLike, datasets: Iterable[str], models: Iterable[str]
) -> dict[tuple[str, str], frozenset[str]]:
    """Which shards each (dataset, model) already holds in ``out``: ``{(dataset, model): finished shard tags}``."""
    names = list(models)
    return {(d, m): finished_shards(out, d, m) for d in datasets for m in names}


def stale_parts(out: str | os.PathLike, dataset: str, model: str, planned: Iterable[str]) -> dict[Path, list[str]]:
    """Parts of shards not in ``planned`` (shard tags): ``{partition folder: sorted stale tags}``, errors store
    first, folders without stale parts left out."""
    keep = set(planned)
    found = {}
    for root in (errors_root(out), predictions_root(out)):
        stale = sorted(stored_tags(root, dataset, model) - keep)
        if stale:
            found[partition_dir(root, dataset, model)] = stale
    return found


def refuse_stale_parts(out: str | os.PathLike, dataset: str, model: str, planned: Iterable[str]) -> None:
    """Stop with a clear error when the (dataset, model) partitions of ``out`` hold parts of shards the plan
    (``planned`` shard tags) does not have: the images or the shard size changed since they were written, and
    mixing two plans could store an image twice."""
    for folder, stale in stale_parts(out, dataset, model, planned).items():
        shown = ", ".join(part_name(t) for t in stale[:3]) + (", ..." if len(stale) > 3 else "")
        raise MlrayError(
            f"{shown_path(folder)}: holds {len(stale)} part(s) of shards this run does not plan ({shown}): the "
            "images or the shard_size changed since they were written. Use a new --out, or delete that folder to "
            "redo it"
        )
