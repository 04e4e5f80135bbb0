"""The gallery: per (model, dataset), the images a single-label benchmark counts wrong whose prediction is a valid
label, and for contrast the confident real errors, with thumbnails read from the dataset's own images.

=============  =========================================================================================
report         one row per
=============  =========================================================================================
``gallery``    (model, dataset, kind, rank): ``kind`` is ``valid_label`` (labelled image with an original
               label whose top-1 differs from it but is in its valid set) or ``real_error`` (labelled image
               whose top-1 is not in its valid set); ``rank`` 1 = the most confident (top-1 probability,
               ties by image id; an image without probability comes last); the original label, the valid
               labels and the model's top-5 with probabilities, class names included
``thumbnails`` (dataset, image_id) of every image a gallery row shows: a JPEG whose longest side is at most
               ``thumbnail_px`` (aspect kept), or null with a one-line ``note`` (the dataset's images could
               not be planned or read)
=============  =========================================================================================

Which models get a gallery: :class:`mlray.config.GalleryConfig` (``scoring.gallery``: the first ``models``
models in name order, or the listed ones; ``per_kind`` images of each kind). Thumbnails are read at report time
through the dataset's own layout (local folders, manifests, Parquet shards, tars, object storage) and kept small
(about 3-6 KB each at 128 px), so the dashboard page stays self-contained and offline.
"""

from __future__ import annotations

import io
from collections.abc import Iterable, Sequence
from dataclasses import replace
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa

from .errors import MlrayError, first_line

KINDS = ("valid_label", "real_error")
"""The two kinds of gallery images, in page order."""
TOP = 5
"""Ranks shown per gallery image."""

GALLERY_SCHEMA = pa.schema(
    [
        ("model", pa.string()),
        ("dataset", pa.string()),
        ("kind", pa.string()),
        ("rank", pa.int64()),
        ("image_id", pa.string()),
        ("original", pa.int16()),
        ("original_name", pa.string()),
        ("valid", pa.list_(pa.int16())),
        ("valid_names", pa.list_(pa.string())),
        ("top", pa.list_(pa.int16())),
        ("top_names", pa.list_(pa.string())),
        ("top_prob", pa.list_(pa.float64())),
        ("confidence", pa.float64()),
    ]
)
THUMBNAIL_SCHEMA = pa.schema(
    [
        ("dataset", pa.string()),
        ("image_id", pa.string()),
        ("jpeg", pa.binary()),
        ("width", pa.int64()),
        ("height", pa.int64()),
        ("note", pa.string()),
    ]
)
GALLERY_SCHEMAS = {"gallery": GALLERY_SCHEMA, "thumbnails": THUMBNAIL_SCHEMA}


def gallery_models(models: Iterable[str], chosen: int | Sequence[str]) -> list[str]:
    """The models that get a gallery: the first ``chosen`` of ``models`` in name order, or those listed that are
    among ``models`` (in the list's order).

    >>> gallery_models(["b", "a", "c"], 2), gallery_models(["b", "a"], ["b", "x"])
    (['a', 'b'], ['b'])
    """
    have = sorted(set(models))
    if isinstance(chosen, int):
        return have[: max(0, chosen)]
    return [m for m in chosen if m in set(have)]


def select(
    topk: np.ndarray,
    prob: np.ndarray,
    original: np.ndarray,
    valid: Sequence[Sequence[int] | None],
    image_ids: Sequence[str],
    per_kind: int,
) -> dict[str, list[int]]:
    """The rows of each gallery kind, most confident first (probability descending, NaN last, then image id),
    at most ``per_kind`` each. ``topk`` (n, K) best first, -1 padding; ``prob`` (n, K) its probabilities;
    ``valid`` the valid sets (None = not annotated).

    >>> sel = select(np.array([[3, 1], [2, 0], [4, 1], [-1, -1]]), np.array([[.9, .1], [.6, .3], [.8, .1], [0, 0]]),
    ...              np.array([1, 2, 1, 0]), [[1, 3], [2], [1], [0]], ["a", "b", "c", "d"], 5)
    >>> sel
    {'valid_label': [0], 'real_error': [2]}
    """
    n = len(image_ids)
    top1 = topk[:, 0] if topk.shape[1] else np.full(n, -1)
    c = prob[:, 0].astype(np.float64) if prob.shape[1] else np.full(n, np.nan)
    picked: dict[str, list[int]] = {k: [] for k in KINDS}
    for i in range(n):
        s = valid[i]
        if not s or top1[i] < 0:
            continue
        inside = int(top1[i]) in set(s)
        if inside and 0 <= original[i] != top1[i]:
            picked["valid_label"].append(i)
        elif not inside:
            picked["real_error"].append(i)
    for kind, rows in picked.items():
        rows.sort(key=lambda i: (np.isnan(c[i]), -np.nan_to_num(c[i]), image_ids[i]))
        picked[kind] = rows[:per_kind]
    return picked


def gallery_rows(
    model: str,
    dataset: str,
    topk: np.ndarray,
    prob: np.ndarray,
    original: np.ndarray,
    valid: Sequence[Sequence[int] | None],
    image_ids: Sequence[str],
    per_kind: int,
) -> pd.DataFrame:
    """The ``gallery`` rows of one (model, dataset) (columns :data:`GALLERY_SCHEMA`), from its ranking and labels
    as scored (under the dataset's class policy)."""
    from .labels import imagenet_vocabulary

    names = imagenet_vocabulary().names
    rows: list[dict[str, Any]] = []
    for kind, picked in select(topk, prob, original, valid, image_ids, per_kind).items():
        for rank, i in enumerate(picked, start=1):
            top = [int(t) for t in topk[i, :TOP] if t >= 0]
            probs = [float(p) for p in prob[i, : len(top)]]
            s = sorted(int(v) for v in valid[i] or ())
            y = int(original[i])
            rows.append({
                "model": model, "dataset": dataset, "kind": kind, "rank": rank, "image_id": str(image_ids[i]),
                "original": y, "original_name": names[y] if y >= 0 else None, "valid": s,
                "valid_names": [names[v] for v in s], "top": top, "top_names": [names[t] for t in top],
                "top_prob": probs, "confidence": probs[0] if probs else float("nan"),
            })  # fmt: skip
    return pd.DataFrame(rows, columns=GALLERY_SCHEMA.names)


def thumbnail(data: bytes, px: int) -> tuple[bytes, int, int]:
    """A JPEG (quality 80) of the image ``data`` whose longest side is at most ``px``: ``(jpeg, width, height)``.
    Decoded as every image mlray scores (:func:`mlray.images.decode_image`: EXIF orientation, RGB)."""
    from .images import decode_image

    img = decode_image(data)
    img.thumbnail((px, px))
    buf = io.BytesIO()
    img.save(buf, format="JPEG", quality=80, optimize=True)
    return buf.getvalue(), img.width, img.height


def images_layout(path: str) -> str:
    """The layout ``mlray score --images NAME=PATH`` reads ``PATH`` with when the dataset names none: a manifest
    for a ``.csv``/``.tsv``/``.parquet`` file, else a flat folder of ImageNet val files.

    >>> images_layout("val.csv"), images_layout("s3://bucket/val/")
    ('manifest', 'imagenet-val-flat')
    """
    return "manifest" if path.lower().endswith((".csv", ".tsv", ".parquet")) else "imagenet-val-flat"


def thumbnails_frame(
    config: Any, dataset: str, image_ids: Iterable[str], px: int = 128, images: str | None = None
) -> pd.DataFrame:
    """The ``thumbnails`` rows of ``image_ids`` of ``dataset`` (columns :data:`THUMBNAIL_SCHEMA`): each image read
    through the dataset's layout (only the shards holding them; file layouts read only those files), or from
    ``images`` (a path or URI, for a dataset whose config has none: predictions imported, labels only) with the
    dataset's layout, else :func:`images_layout`. A dataset that cannot be planned gives every row the same
    one-line note; an image that cannot be read or decoded, its own."""
    from .datasets import plan_images
    from .images import plan_shards

    wanted = list(dict.fromkeys(image_ids))
    out: dict[str, tuple[bytes | None, int, int, str | None]] = {}
    try:
        ds = config.dataset(dataset)
        if images is not None:
            plan = plan_shards(images, ds.layout or images_layout(images), ds.shard_size)
        else:
            plan = plan_images(config, ds)
    except (MlrayError, OSError) as exc:
        note = f"images of {dataset} not readable: {first_line(exc)}"
        return _thumb_frame(dataset, wanted, {i: (None, 0, 0, note) for i in wanted})
    from .images import read_shard

    want = set(wanted)
    for shard in plan.shards:
        ids = [i for i in shard.image_ids if i in want]
        if not ids:
            continue
        if shard.paths and len(shard.paths) == len(shard.image_ids) and shard.file is None:  # file layouts: only those
            keep = [j for j, i in enumerate(shard.image_ids) if i in want]
            problems = tuple(shard.problems[j] for j in keep) if shard.problems else ()
            shard = replace(shard, image_ids=tuple(shard.image_ids[j] for j in keep),
                            paths=tuple(shard.paths[j] for j in keep), problems=problems)  # fmt: skip
        for image_id, data, err in read_shard(shard):
            if image_id not in want:
                continue
            if data is None:
                out[image_id] = (None, 0, 0, f"{image_id}: {first_line(err) if err else 'not read'}")
                continue
            try:
                out[image_id] = (*thumbnail(data, px), None)
            except Exception as exc:  # a file that does not decode: its note, never a failed report
                out[image_id] = (None, 0, 0, f"{image_id}: {first_line(exc)}")
    for image_id in wanted:
        out.setdefault(image_id, (None, 0, 0, f"{image_id}: not in the images of {dataset}"))
    return _thumb_frame(dataset, wanted, out)


def _thumb_frame(
    dataset: str, ids: list[str], got: dict[str, tuple[bytes | None, int, int, str | None]]
) -> pd.DataFrame:
    rows = [{"dataset": dataset, "image_id": i, "jpeg": got[i][0], "width": got[i][1], "height": got[i][2],
             "note": got[i][3]} for i in ids]  # fmt: skip
    return pd.DataFrame(rows, columns=THUMBNAIL_SCHEMA.names)
