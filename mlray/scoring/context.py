"""A dataset's scoring context: what every model's scoring needs from its labels, built once per dataset.

:class:`DatasetContext` holds the subgroup of each image, the images sorted into slices by their number of valid
labels, the dense label matrix (built on first use) and the bootstrap resample counts (built on first use, kept
up to ``BOOT_CACHE_BYTES``). :func:`prepare_dataset` returns the context of a labels object, cached.
"""

from __future__ import annotations

import hashlib
import weakref
from collections.abc import Iterator

import numpy as np

from ..errors import MlrayError
from ..labels import NUM_CLASSES, LabelArrays
from .params import MetricParams

BOOT_CHUNK = 100
"""Resamples generated per random stream; fixed, so resample b never depends on caching."""
BOOT_CACHE_BYTES = 1 << 30
"""A dataset's resample-count matrix is kept in memory up to this size, else regenerated chunk by chunk."""
K_SLICES = 64
"""Images with k_i >= K_SLICES valid labels share one slice (every smaller k_i has its own, see ``k_bounds``)."""


class DatasetContext:
    """What scoring needs from a dataset's labels, built once and reused for every model.

    ``k`` (labelled images: k_i, others 0), ``group`` (0 = not labelled, g = subgroup index, 1-based; k_i >=
    ``max_group`` -> max_group), ``order`` (a permutation sorting the images by min(k_i, K_SLICES), hence also by
    group), ``bounds`` (the images of group g are ``order[bounds[g]:bounds[g+1]]``) and ``k_bounds`` (those with
    min(k_i, K_SLICES) = j are ``order[k_bounds[j]:k_bounds[j+1]]``). The dense label matrix (:attr:`L_flat`) and
    the resample counts (:meth:`resample_chunks`) are built on first use. Use :func:`prepare_dataset`.
    """

    def __init__(self, labels: LabelArrays, max_group: int, num_classes: int = NUM_CLASSES):
        n = labels.n
        for name in ("original", "annotated"):
            if len(getattr(labels, name)) != n:
                raise MlrayError(f"labels: {name} has {len(getattr(labels, name))} entries for {n} images")
        if len(labels.offsets) != n + 1 or (n and labels.offsets[-1] != len(labels.values)):
            raise MlrayError("labels: valid-set offsets do not match the number of images / label values")
        if len(labels.values) and (labels.values.min() < 0 or labels.values.max() >= num_classes):
            raise MlrayError(f"labels: valid labels must be class indices 0..{num_classes - 1}")
        if n and (labels.original.min() < -1 or labels.original.max() >= num_classes):
            raise MlrayError(f"labels: original labels must be -1 (unknown) or 0..{num_classes - 1}")
        self.labels = labels
        self.n = n
        self.num_classes = num_classes
        self.max_group = int(max_group)
        counts = np.diff(labels.offsets).astype(np.int64)
        annotated = np.asarray(labels.annotated, dtype=bool)
        if np.any(counts[~annotated] > 0):
            raise MlrayError("labels: an unannotated image (valid = null) has valid labels")
        self.labelled = annotated & (counts > 0)
        self.k = np.where(self.labelled, counts, 0)
        self.kmax = int(self.k.max()) if n else 0
        self.original = np.asarray(labels.original, dtype=np.int16)
        self.orig_ok = self.original >= 0
        self.group = np.where(self.labelled, np.minimum(self.k, self.max_group), 0).astype(np.int16)
        self.group_labels = tuple(str(g) for g in range(1, self.max_group)) + (f"{self.max_group}+",)
        k_slice = np.minimum(self.k, K_SLICES)
        self.order = np.argsort(k_slice, kind="stable")
        self.bounds = np.searchsorted(self.group[self.order], np.arange(self.max_group + 2))
        self.k_bounds = np.searchsorted(k_slice[self.order], np.arange(min(self.kmax, K_SLICES) + 2))
        self.n_empty = int(np.sum(annotated & (counts == 0)))
        self.n_unannotated = int(np.sum(~annotated))
        self.n_no_original = int(np.sum(~self.orig_ok))
        self.key = dataset_key(labels)
        self._L: np.ndarray | None = None
        self._resamples: dict[tuple[int, int], np.ndarray] = {}

    @property
    def L_flat(self) -> np.ndarray:
        """The dense label matrix (n x (C+1) bool, column c+1 = class c, column 0 always False so that a padding
        rank -1 never hits), flattened: row i, class c at ``i * (C+1) + c + 1``."""
        if self._L is None:
            width = self.num_classes + 1
            L = np.zeros((self.n, width), dtype=bool)
            rows = np.repeat(np.arange(self.n), np.diff(self.labels.offsets))
            L[rows, self.labels.values.astype(np.intp) + 1] = True
            if np.count_nonzero(L) != len(self.labels.values):
                raise MlrayError("labels: a valid-label set repeats a class")
            self._L = L.reshape(-1)
        return self._L

    def row_base(self) -> np.ndarray:
        """(n, 1) offsets of each image's row in :attr:`L_flat` (plus 1, so that ``base + class`` indexes it)."""
        width = self.num_classes + 1
        dtype = np.int32 if self.n * width < np.iinfo(np.int32).max else np.int64
        return (np.arange(self.n, dtype=dtype) * width + 1)[:, None]

    def resample_chunks(self, n_boot: int, seed: int) -> Iterator[tuple[int, np.ndarray]]:
        """Yield ``(b0, C)``: C (b, n) float32 resample counts for resamples b0..b0+b-1, columns in ``order``.

        Resample b draws n images with replacement; it depends only on (seed, the dataset's image ids, b).
        """
        key = (int(n_boot), int(seed))
        if key in self._resamples:
            yield 0, self._resamples[key]
            return
        keep = n_boot * self.n * 4 <= BOOT_CACHE_BYTES
        parts = []
        for b0 in range(0, n_boot, BOOT_CHUNK):
            chunk = self._resample_chunk(b0 // BOOT_CHUNK, min(BOOT_CHUNK, n_boot - b0), seed)
            if keep:
                parts.append(chunk)
            else:
                yield b0, chunk
        if keep:
            full = np.concatenate(parts, axis=0) if parts else np.zeros((0, self.n), np.float32)
            self._resamples = {key: full}  # one (n_boot, seed) per dataset kept
            yield 0, full

    def slice_sums(self, C: np.ndarray, X: np.ndarray, out: np.ndarray) -> None:
        """``out[:, j] = C[:, slice j] @ X[slice j]`` for every slice j of images with the same min(k_i,
        K_SLICES) (``k_bounds``): the resampled column sums of ``X`` (n, q, rows in ``order``) per slice, for the
        resample counts ``C`` (b, n) of :meth:`resample_chunks`; ``out`` is (b, slices, q)."""
        for j in range(len(self.k_bounds) - 1):
            a, e = self.k_bounds[j], self.k_bounds[j + 1]
            out[:, j] = C[:, a:e] @ X[a:e] if e > a else 0

    def group_sums(self, sums: np.ndarray) -> np.ndarray:
        """Per-slice sums (B, slices, q) -> per-group sums (B, max_group + 1, q) in float64: slice k adds to group
        min(k, max_group) (slice 0, the unlabelled images, is group 0), in ascending k (the same order of additions
        whatever the batching)."""
        out = np.zeros((sums.shape[0], self.max_group + 1, sums.shape[2]), np.float64)
        for k in range(sums.shape[1]):
            out[:, min(k, self.max_group)] += sums[:, k]
        return out

    def _resample_chunk(self, index: int, size: int, seed: int) -> np.ndarray:
        rng = np.random.default_rng([int(seed), int(self.key[:15], 16), index])
        n = self.n
        draws = rng.integers(0, n, size=(size, n), dtype=np.int64)
        draws += (np.arange(size, dtype=np.int64) * n)[:, None]  # row b counts into bins b*n .. b*n+n-1
        counts = np.bincount(draws.ravel(), minlength=size * n).reshape(size, n).astype(np.float32)
        return np.take(counts, self.order, axis=1)


def dataset_key(labels: LabelArrays) -> str:
    """A hash of the dataset's image ids: it seeds the resamples and ties a score to the labels it was made on."""
    h = hashlib.blake2b(digest_size=16)
    h.update("\n".join(map(str, labels.image_ids.tolist())).encode())
    return h.hexdigest()


_CONTEXTS: dict[tuple[int, int], tuple[weakref.ref[LabelArrays], DatasetContext]] = {}
_MAX_CONTEXTS = 4


def prepare_dataset(labels: LabelArrays, params: MetricParams | None = None) -> DatasetContext:
    """The :class:`DatasetContext` of ``labels`` (cached per labels object and ``max_group``, a few at a time)."""
    params = params or MetricParams()
    key = (id(labels), int(params.max_group))
    hit = _CONTEXTS.get(key)
    if hit is not None and hit[0]() is labels:
        return hit[1]
    ctx = DatasetContext(labels, params.max_group)
    while len(_CONTEXTS) >= _MAX_CONTEXTS:
        _CONTEXTS.pop(next(iter(_CONTEXTS)))

    def forget(_ref: weakref.ref[LabelArrays]) -> None:  # the labels object is gone: drop its context
        _CONTEXTS.pop(key, None)

    _CONTEXTS[key] = (weakref.ref(labels, forget), ctx)
    return ctx
