"""The canonical labels table of a dataset and its flat-array form.

:func:`build_dataset_labels` joins a dataset's ``original`` and ``multi`` label sources (:mod:`mlray.labels.readers`)
into the canonical table (``docs/design.md``)::

    dataset (str), image_id (str), original (int16, -1 unknown), valid (list<int16>: empty = no valid ImageNet
    class, null = not annotated), problematic (bool, null = unknown), unclear (list<int16>, null = unknown)

and :class:`LabelArrays` is the same content as flat numpy arrays (CSR for the label sets), the form every
statistic and metric computes on.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa

from ..errors import MlrayError
from .readers import UNKNOWN_IMAGE_POLICIES, SourceLabels

LABEL_LIST = pa.list_(pa.int16())
LABELS_SCHEMA = pa.schema(
    [
        ("dataset", pa.string()),
        ("image_id", pa.string()),
        ("original", pa.int16()),
        ("valid", LABEL_LIST),
        ("problematic", pa.bool_()),
        ("unclear", LABEL_LIST),
    ]
)


@dataclass(frozen=True)
class LabelArrays:
    """A dataset's labels as flat arrays (what statistics and metrics compute on).

    ``valid`` is stored CSR-style: the label set of image i is ``values[offsets[i]:offsets[i+1]]``; ``annotated[i]``
    is False where the set is null (not annotated; its slice is then empty). ``original[i]`` is -1 when unknown.
    """

    image_ids: np.ndarray  # object (n,)
    original: np.ndarray  # int16 (n,)
    offsets: np.ndarray  # int64 (n+1,)
    values: np.ndarray  # int16 (m,)
    annotated: np.ndarray  # bool (n,)
    problematic: np.ndarray | None = None  # bool (n,), None = not given by the source
    unclear_offsets: np.ndarray | None = None
    unclear_values: np.ndarray | None = None

    @property
    def n(self) -> int:
        return len(self.image_ids)

    @property
    def counts(self) -> np.ndarray:
        """Number of valid labels per image (0 for empty and for unannotated images)."""
        return np.diff(self.offsets)

    @property
    def labelled(self) -> np.ndarray:
        """Images with a non-empty valid set (the ones multi-label metrics are taken over)."""
        return self.annotated & (self.counts > 0)

    def row_of_values(self) -> np.ndarray:
        """For each entry of ``values``, the image row it belongs to."""
        return np.repeat(np.arange(self.n), self.counts)

    def valid_sets(self) -> list[list[int] | None]:
        """Each image's valid set as a list of class indices (None = not annotated)."""
        o, v, a = self.offsets, self.values, self.annotated
        return [v[o[i] : o[i + 1]].tolist() if a[i] else None for i in range(self.n)]


def _list_column(values: Sequence[list[int] | None]) -> pa.Array:
    return pa.array(values, type=LABEL_LIST)


def _csr(column: pa.ChunkedArray | pa.Array) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    arr = column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column
    if isinstance(arr, pa.ChunkedArray):  # zero chunks
        arr = pa.array([], type=LABEL_LIST)
    annotated = arr.is_valid().to_numpy(zero_copy_only=False)
    arr = arr.fill_null([]) if arr.null_count else arr
    offsets = arr.offsets.to_numpy().astype(np.int64)
    values = arr.values.to_numpy(zero_copy_only=False).astype(np.int16)
    values = values[offsets[0] : offsets[-1]]
    return offsets - offsets[0], values, annotated


@dataclass
class DatasetLabels:
    """The canonical labels table of one dataset plus what the join reported."""

    name: str
    table: pa.Table
    sources: dict[str, str] = field(default_factory=dict)  # role -> "format:path"
    skipped_unknown: int = 0  # multi-label entries for images outside the dataset, skipped by policy
    skipped_examples: list[str] = field(default_factory=list)
    merged_duplicates: int = 0  # label sets that named a class twice (kept once)

    @property
    def n_images(self) -> int:
        return self.table.num_rows

    def arrays(self) -> LabelArrays:
        t = self.table
        offsets, values, annotated = _csr(t.column("valid"))
        problematic = None
        prob_col = t.column("problematic")
        if prob_col.null_count < t.num_rows:
            problematic = prob_col.fill_null(False).to_numpy().astype(bool)
        unclear_offsets = unclear_values = None
        if t.column("unclear").null_count < t.num_rows:
            unclear_offsets, unclear_values, _ = _csr(t.column("unclear"))
        return LabelArrays(
            image_ids=np.asarray(t.column("image_id").to_pylist(), dtype=object),
            original=t.column("original").to_numpy().astype(np.int16),
            offsets=offsets,
            values=values,
            annotated=annotated,
            problematic=problematic,
            unclear_offsets=unclear_offsets,
            unclear_values=unclear_values,
        )


def build_dataset_labels(
    name: str,
    original: SourceLabels | None,
    multi: SourceLabels | None,
    on_unknown_image: str = "error",
    image_ids: Sequence[str] | None = None,
) -> DatasetLabels:
    """Join a dataset's label sources into its canonical table.

    Rows are sorted by image id. The dataset's image set is ``image_ids`` when given (the images define the
    dataset), else that of the original-label source, else that of the multi-label source. Label entries for
    images outside that set are an error, or with ``on_unknown_image='skip'`` are skipped and counted
    (``skipped_unknown``). Images with no multi-label entry get a null ``valid`` (not annotated); images with no
    original label get -1.
    When there is no original source, original labels come from the multi source if it carries them
    (tfds-multilabel-csv, table with ``label``).
    """
    if original is None and multi is None and image_ids is None:
        raise MlrayError(f"dataset {name!r}: no label source and no images")
    if on_unknown_image not in UNKNOWN_IMAGE_POLICIES:
        raise MlrayError(f"dataset {name!r}: on_unknown_image must be one of {UNKNOWN_IMAGE_POLICIES}")
    if original is not None and original.original is None:
        raise MlrayError(f"{original.path}: format {original.format} carries no original labels (use it as 'multi')")
    if multi is not None and multi.valid is None:
        raise MlrayError(f"{multi.path}: format {multi.format} carries no multi-label sets (use it as 'original')")

    if image_ids is not None:
        ids = sorted(image_ids)
    elif original is not None:
        ids = sorted(original.image_ids)
    else:
        ids = sorted(multi.image_ids)  # type: ignore[union-attr]
    row_of = {image_id: i for i, image_id in enumerate(ids)}
    n = len(ids)
    skipped: list[str] = []

    def place(src: SourceLabels) -> np.ndarray:
        """Row of each source entry in the dataset (-1 = unknown image, skipped by policy)."""
        rows = np.fromiter((row_of.get(i, -1) for i in src.image_ids), dtype=np.int64, count=len(src.image_ids))
        unknown = np.flatnonzero(rows < 0)
        if len(unknown):
            examples = [src.image_ids[j] for j in unknown[:3]]
            if on_unknown_image == "error":
                raise MlrayError(
                    f"{src.path}: {len(unknown):,} entries name images that dataset {name!r} does not have, "
                    f"e.g. {', '.join(examples)} (set on_unknown_image: skip to skip and count them)"
                )
            skipped.extend(src.image_ids[j] for j in unknown)
        return rows

    orig = np.full(n, -1, dtype=np.int16)
    original_from = original if original is not None else (multi if multi and multi.original is not None else None)
    placed: dict[int, np.ndarray] = {}  # id(source) -> rows, so a source used twice is placed (and counted) once
    if original_from is not None:
        rows = placed.setdefault(id(original_from), place(original_from))
        keep = rows >= 0
        orig[rows[keep]] = np.asarray(original_from.original, dtype=np.int16)[keep]

    valid: list[list[int] | None] = [None] * n
    unclear: list[list[int] | None] = [None] * n
    problematic: list[bool | None] = [None] * n
    if multi is not None:
        rows = placed[id(multi)] if id(multi) in placed else place(multi)
        for j, r in enumerate(rows.tolist()):
            if r < 0:
                continue
            valid[r] = multi.valid[j]  # type: ignore[index]
            if multi.unclear is not None:
                unclear[r] = multi.unclear[j]
            if multi.problematic is not None:
                problematic[r] = multi.problematic[j]
    # a skipped image counted once even when both sources name it
    skipped_unique = list(dict.fromkeys(skipped))

    table = pa.table(
        {
            "dataset": pa.array([name] * n, type=pa.string()),
            "image_id": pa.array(ids, type=pa.string()),
            "original": pa.array(orig, type=pa.int16()),
            "valid": _list_column(valid),
            "problematic": pa.array(problematic, type=pa.bool_()),
            "unclear": _list_column(unclear),
        },
        schema=LABELS_SCHEMA,
    )
    sources = {}
    if original is not None:
        sources["original"] = f"{original.format}:{original.path}"
    if multi is not None:
        sources["multi"] = f"{multi.format}:{multi.path}"
    merged = sum(len(src.merged_duplicates) for src in {id(s): s for s in (original, multi) if s}.values())
    return DatasetLabels(name, table, sources, len(skipped_unique), skipped_unique[:5], merged)
