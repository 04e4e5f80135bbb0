"""Class spaces: the ImageNet classes a test set covers, and how predictions and labels are scored on them.

Many ImageNet variants do not use all 1,000 classes. ImageNet-A and ImageNet-R cover 200 (a *subset*); ObjectNet
maps each of its classes onto a *set* of ImageNet classes (a *map*: a prediction is right when it lands in the
label's set). Both are one object here, :class:`ClassSpace`: every ImageNet class has a *representative*, the
lowest ImageNet index of its set (a subset: each class its own set), or -1 outside the space.

Two policies (``class_policy`` of a dataset):

- ``mask`` (the default; timm's ``--valid-labels``, the convention of timm's published ``results-imagenet-r.csv``
  and ``-a.csv``): only the space's classes are ranked, with probabilities renormalized over them (the softmax of
  the logits restricted to the space);
- ``all``: all 1,000 classes are ranked (the plain argmax); a prediction outside the space is simply wrong.

Scoring maps a model's ranking to representatives (:meth:`ClassSpace.ranking`) and the labels too
(:meth:`ClassSpace.labels`: an original label outside the space is an error naming the image and class; a valid
label outside it is dropped from its set and counted), so every metric (top-1, ReaL, variable top-k, ASMA, ...)
follows the policy unchanged: with a map, a set counts as one class, ranked where its best-ranked ImageNet class
stands, with that class's probability. ``mask`` needs the probability of every class of the space, so inference
stores the top-K *and* every class of the space for such a dataset (:attr:`ClassSpace.members`).

Where a space comes from (the dataset's ``classes:`` or ``class_map:``):

- ``classes: imagenet-a`` / ``imagenet-r``: timm's shipped ``imagenet_a_indices.txt`` / ``imagenet_r_indices.txt``;
- ``classes: [1, 2, n01440764, ...]``: class indices or wnids;
- ``classes: FILE``: a text file, one class index or wnid per line (``#`` comments and blank lines skipped);
- ``class_map: FILE``: a CSV with the columns ``class,imagenet_class`` (one row per ImageNet class of a variant
  class; the ImageNet class as an index or a wnid), or a JSON object ``{"variant class": [ImageNet classes]}``.
  An ImageNet class may belong to one variant class only.
"""

from __future__ import annotations

import csv
import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import MlrayError
from .parse import class_index
from .table import LabelArrays
from .vocab import NUM_CLASSES, timm_info_dir

BUILTIN_SUBSETS = {"imagenet-a": "imagenet_a_indices.txt", "imagenet-r": "imagenet_r_indices.txt"}
"""Subsets known by name: timm's shipped index files (200 classes each)."""
POLICIES = ("mask", "all")


@dataclass(frozen=True)
class ClassSpace:
    """The classes a dataset covers: ``rep[c]`` is ImageNet class c's representative (the lowest class of its set)
    or -1 outside the space. ``name`` says where it comes from (``imagenet-r``, ``3 classes``, ``map.csv``)."""

    name: str
    rep: np.ndarray  # int16 (1000,)
    kind: str = "subset"  # subset | map

    @property
    def members(self) -> np.ndarray:
        """The ImageNet classes of the space, ascending (int16)."""
        return np.flatnonzero(self.rep >= 0).astype(np.int16)

    @property
    def n_classes(self) -> int:
        """Classes of the space (a map's variant classes count once each)."""
        return int(len(np.unique(self.rep[self.rep >= 0])))

    @property
    def digest(self) -> str:
        """8 hex digits of the representatives: two spaces with equal digests score alike."""
        return hashlib.sha256(self.rep.astype("<i2").tobytes()).hexdigest()[:8]

    def describe(self) -> str:
        """``imagenet-r (subset, 200 classes)``: what reports record."""
        return f"{self.name} ({self.kind}, {self.n_classes} classes)"

    def labels(self, arrays: LabelArrays, dataset: str) -> tuple[LabelArrays, int]:
        """``arrays`` with every class replaced by its representative (a set keeps each representative once), and
        how many valid labels lay outside the space (dropped from their sets: no model could be right on them
        under ``mask``; a set left empty counts as labelled-empty). An *original* label outside the space is an
        error naming the image and the class."""
        rep = self.rep
        orig = arrays.original
        outside = np.flatnonzero((orig >= 0) & (rep[np.clip(orig, 0, NUM_CLASSES - 1)] < 0))
        if len(outside):
            i = int(outside[0])
            raise MlrayError(
                f"dataset {dataset!r}: image {arrays.image_ids[i]!r} has original label {int(orig[i])}, outside the "
                f"dataset's classes ({self.describe()}; {len(outside):,} such images)"
            )
        original = np.where(orig >= 0, rep[np.clip(orig, 0, None)], -1).astype(np.int16)
        sets = [
            list(dict.fromkeys(c for c in rep[arrays.values[a:b]].tolist() if c >= 0))
            for a, b in zip(arrays.offsets[:-1], arrays.offsets[1:])
        ]
        dropped = int((rep[arrays.values] < 0).sum()) if len(arrays.values) else 0
        offsets = np.concatenate([[0], np.cumsum([len(s) for s in sets])]).astype(np.int64)
        values = np.array([c for s in sets for c in s], dtype=np.int16)
        unclear_offsets, unclear_values = arrays.unclear_offsets, arrays.unclear_values
        if unclear_values is not None and len(unclear_values):
            unclear_values = np.where(rep[unclear_values] >= 0, rep[unclear_values], unclear_values).astype(np.int16)
        mapped = LabelArrays(arrays.image_ids, original, offsets, values, arrays.annotated, arrays.problematic,
                             unclear_offsets, unclear_values)  # fmt: skip
        return mapped, dropped

    def ranking(self, topk: np.ndarray, prob: np.ndarray, policy: str) -> tuple[np.ndarray, np.ndarray]:
        """A model's stored ranking (``topk`` int (n, K) best first, -1 padding; ``prob`` float (n, K)) under
        ``policy``, in representatives, each once, at the rank of its best-ranked class:

        - ``mask``: only classes of the space, probabilities divided by the space's probability mass (every
          class of the space must be stored: inference stores them; an imported top-k list is refused);
        - ``all``: every stored class (one outside the space stays itself and can never be right).

        Padding stays at the end (-1, NaN).

        >>> space = ClassSpace("demo", np.array([0, 0, -1, 3] + [-1] * 996, dtype=np.int16), "map")
        >>> t, p = space.ranking(np.array([[2, 1, 3, 0]]), np.array([[0.4, 0.3, 0.2, 0.1]]), "mask")
        >>> t.tolist(), np.round(p.astype(float), 3).tolist()
        ([[0, 3]], [[0.5, 0.333]])
        >>> space.ranking(np.array([[2, 1, 3, 0]]), np.array([[0.4, 0.3, 0.2, 0.1]]), "all")[0].tolist()
        [[2, 0, 3]]
        """
        if policy not in POLICIES:
            raise MlrayError(f"class_policy must be one of {', '.join(POLICIES)}, got {policy!r}")
        t = np.asarray(topk)
        p = np.asarray(prob, dtype=np.float64)
        stored = t >= 0
        mapped = np.where(stored, self.rep[np.clip(t, 0, None)], -1)
        if policy == "mask":
            keep = mapped >= 0
            have = np.zeros((t.shape[0], NUM_CLASSES), dtype=bool)
            rows, cols = np.nonzero(stored)
            have[rows, t[rows, cols]] = True
            lacking = np.flatnonzero(~have[:, self.members].all(axis=1) & stored.any(axis=1))
            if len(lacking):
                raise MlrayError(
                    f"class_policy mask needs every class of {self.describe()} ranked, but {len(lacking):,} "
                    f"images' stored predictions lack some (e.g. row {int(lacking[0])}): predictions imported as a "
                    "top-k list, or stored before the dataset had classes:, can only be scored with class_policy: all"
                )
            mass = np.where(keep, np.nan_to_num(p), 0.0).sum(axis=1, keepdims=True)
            with np.errstate(invalid="ignore", divide="ignore"):
                p = p / mass
            cls = np.where(keep, mapped, -1)
        else:
            keep = stored
            cls = np.where(stored, np.where(mapped >= 0, mapped, t), -1)
        first = keep.copy()
        if self.kind == "map":  # a set counts once, where its best-ranked class stands
            for j in range(1, t.shape[1]):
                first[:, j] &= ~(cls[:, :j] == cls[:, j : j + 1]).any(axis=1)
        width = max(1, int(first.sum(axis=1).max(initial=0)))
        out_t = np.full((t.shape[0], width), -1, dtype=np.int16)
        out_p = np.full((t.shape[0], width), np.nan, dtype=np.float32)
        pos = np.cumsum(first, axis=1) - 1
        rows, cols = np.nonzero(first)
        out_t[rows, pos[rows, cols]] = cls[rows, cols]
        out_p[rows, pos[rows, cols]] = p[rows, cols]
        return out_t, out_p


def subset_space(classes: str | Sequence[int | str], base_dir: Path | None = None) -> ClassSpace:
    """The subset named by a dataset's ``classes:`` (a built-in name, a list, or a file; see the module
    docstring)."""
    if isinstance(classes, str) and classes in BUILTIN_SUBSETS:
        path = timm_info_dir() / BUILTIN_SUBSETS[classes]
        return _subset(classes, _lines(path), str(path))
    if isinstance(classes, str):
        path = Path(classes)
        if base_dir is not None and not path.is_absolute():
            path = base_dir / path
        if not path.is_file():
            raise MlrayError(
                f"classes: {classes!r} is neither {' nor '.join(BUILTIN_SUBSETS)} nor a file ({path} not found)"
            )
        return _subset(path.name, _lines(path), str(path))
    return _subset(f"{len(classes)} classes", [(f"classes: entry {i + 1}", v) for i, v in enumerate(classes)], "")


def map_space(path_text: str, base_dir: Path | None = None) -> ClassSpace:
    """The many-to-one map of a dataset's ``class_map:`` file (CSV ``class,imagenet_class`` or JSON; see the
    module docstring)."""
    path = Path(path_text)
    if base_dir is not None and not path.is_absolute():
        path = base_dir / path
    if not path.is_file():
        raise MlrayError(f"class_map: {path} not found")
    pairs: list[tuple[str, str, object]] = []  # (where, variant class, ImageNet class)
    if path.suffix.lower() == ".json":
        try:
            data = json.loads(path.read_text())
        except ValueError as exc:
            raise MlrayError(f"{path}: not valid JSON ({exc})") from None
        if not isinstance(data, dict):
            raise MlrayError(f"{path}: a class map is a JSON object {{variant class: [ImageNet classes]}}")
        for name, members in data.items():
            if not isinstance(members, list) or not members:
                raise MlrayError(f"{path}: key {name!r}: the value must be a non-empty list of ImageNet classes")
            pairs += [(f"{path}: key {name!r}", str(name), m) for m in members]
    else:
        with path.open(newline="") as fh:
            reader = csv.DictReader(fh)
            if reader.fieldnames is None or not {"class", "imagenet_class"} <= set(reader.fieldnames):
                raise MlrayError(f"{path}: a class map CSV needs the columns class,imagenet_class")
            for i, row in enumerate(reader, start=2):
                pairs.append((f"{path}: row {i}", (row["class"] or "").strip(), row["imagenet_class"]))
    rep = np.full(NUM_CLASSES, -1, dtype=np.int16)
    owner: dict[int, str] = {}
    sets: dict[str, list[int]] = {}
    for where, name, value in pairs:
        if not name:
            raise MlrayError(f"{where}: the variant class is empty")
        c = class_index(value, where, wnids=True)
        if c in owner and owner[c] != name:
            raise MlrayError(f"{where}: ImageNet class {c} is mapped to both {owner[c]!r} and {name!r}")
        owner[c] = name
        sets.setdefault(name, []).append(c)
    if not sets:
        raise MlrayError(f"{path}: the class map is empty")
    for members in sets.values():
        rep[members] = min(members)
    return ClassSpace(path.name, rep, "map")


def _lines(path: Path) -> list[tuple[str, str]]:
    """(where, text) of each non-blank, non-comment line of a class list file."""
    out = []
    for i, line in enumerate(path.read_text().splitlines(), start=1):
        text = line.split("#", 1)[0].strip()
        if text:
            out.append((f"{path}: line {i}", text))
    return out


def _subset(name: str, entries: Sequence[tuple[str, object]], shown: str) -> ClassSpace:
    rep = np.full(NUM_CLASSES, -1, dtype=np.int16)
    for where, value in entries:
        c = class_index(value, where, wnids=True)
        rep[c] = c
    if not (rep >= 0).any():
        raise MlrayError(f"classes: {shown or name} names no class")
    return ClassSpace(name, rep, "subset")
