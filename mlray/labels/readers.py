"""Label sources: one reader per file format, each returning a :class:`SourceLabels`.

A :class:`SourceLabels` holds the image ids of one label file plus whatever the format carries: original labels,
valid multi-label sets, unclear sets, problematic flags. Every class index and label set goes through
:mod:`mlray.labels.parse`; :mod:`mlray.labels.table` joins a dataset's sources into the canonical table.

Formats (the ``format`` key of a label source in the run config):

=====================  =====================================================================================
``real-json``           ReaL: a JSON list of 50,000 label lists; entry i is ``ILSVRC2012_val_{i+1:08d}``.
                        With no path, the copy shipped inside timm (``timm/data/_info/imagenet_real_labels.json``).
``multilabelfy-json``   ImageNetV2 refined labels: ``{"<id>.jpeg": ["370", ...]}``.
``imagenetv2-json``     ImageNetV2 dataset JSONs: ``image_filenames: [[file, wnid], ...]`` -> original labels.
``tfds-multilabel-csv`` Shankar et al. / TFDS multi-labels: ``id, original_label, proposed_labels (correct),
                        unclear_multi_labels, wrong_multi_labels, is_problematic``.
``loc-val-solution-csv`` Kaggle ``LOC_val_solution.csv``: ``ImageId,PredictionString`` (wnid + box, repeated).
``table``               any CSV or Parquet with ``image_id`` plus ``label`` (int) and/or ``labels`` (list, or
                        ``;``-separated string), optional ``problematic``.
``label-studio-json``   a Label Studio JSON export of a ``mlray propose`` project: each task's annotated
                        ``choices`` of the ``<Choices name="label">`` tag -> the valid set (docs/propose.md).
=====================  =====================================================================================

Built-in sources (files shipped in :mod:`mlray.builtin`, see its ``SOURCE.md``; written with no path):

=========================  =================================================================================
``imagenetv2-refined``      ImageNetV2 MatchedFrequency refined multi-labels (Multilabelfy), as ``multilabelfy-json``
``imagenetv2-original``     ImageNetV2 MatchedFrequency original labels (ImageNetV2 ``imagenetv2-b-33.json``)
``imagenet-val-original``   ImageNet val original labels (50,000, the ReaL image order)
=========================  =================================================================================

``real-json`` with no path is the ReaL copy inside timm; every other format needs a path, and a built-in source
takes none.

Image ids are file stems (``ILSVRC2012_val_00000001``, the 40-hex ImageNetV2 id): a known image extension and
any folder part are removed. Every problem is a one-line :class:`MlrayError` naming the file and the entry.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

import pyarrow as pa

from ..errors import MlrayError, first_line
from .parse import class_index, label_set
from .vocab import NUM_CLASSES, Vocabulary, imagenet_vocabulary, timm_info_dir

REAL_NUM_IMAGES = 50_000
IMAGE_EXTENSIONS = {".jpeg", ".jpg", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff", ".ppm", ".pgm"}
FORMATS = (
    "real-json",
    "multilabelfy-json",
    "imagenetv2-json",
    "tfds-multilabel-csv",
    "loc-val-solution-csv",
    "table",
    "label-studio-json",
    "imagenetv2-refined",
    "imagenetv2-original",
    "imagenet-val-original",
)
BUILTIN_FORMATS = ("imagenetv2-refined", "imagenetv2-original", "imagenet-val-original")
"""Formats that name a file shipped in :mod:`mlray.builtin` (written with no path)."""
UNKNOWN_IMAGE_POLICIES = ("error", "skip")


def image_id_from_name(name: str) -> str:
    """The canonical image id of a file name or path: its name without a known image extension."""
    base = PurePosixPath(str(name).replace("\\", "/")).name
    stem, dot, ext = base.rpartition(".")
    if dot and stem and f".{ext.lower()}" in IMAGE_EXTENSIONS:
        return stem
    return base


def real_image_id(index0: int) -> str:
    """The ImageNet val image id of ReaL entry ``index0`` (0-based): ``ILSVRC2012_val_{index0+1:08d}``."""
    return f"ILSVRC2012_val_{index0 + 1:08d}"


# --------------------------------------------------------------------------------------------------------------
# What a reader returns


@dataclass
class SourceLabels:
    """The content of one label file, rows in file order. Absent columns are None."""

    path: str
    format: str
    image_ids: list[str]
    original: Sequence[int] | None = None  # -1 = unknown
    valid: Sequence[list[int] | None] | None = None  # None entry = not annotated
    unclear: Sequence[list[int] | None] | None = None
    problematic: Sequence[bool | None] | None = None
    merged_duplicates: list[str] = field(default_factory=list)  # entries that named a class twice (kept once)

    def __post_init__(self) -> None:
        seen: dict[str, int] = {}
        for row, image_id in enumerate(self.image_ids):
            if image_id in seen:
                raise MlrayError(
                    f"{self.path}: duplicate image id {image_id!r} (entries {seen[image_id] + 1} and {row + 1})"
                )
            seen[image_id] = row


class _Checker:
    """Turns raw label values into class indices, with errors naming the file and the entry."""

    def __init__(self, path: str, vocab: Vocabulary | None = None):
        self.path = path
        self._vocab = vocab
        self.merged: list[str] = []  # entries whose label set named a class twice

    @property
    def vocab(self) -> Vocabulary:
        if self._vocab is None:
            self._vocab = imagenet_vocabulary()
        return self._vocab

    def fail(self, entry: object, what: str) -> MlrayError:
        return MlrayError(f"{self.path}: entry {entry}: {what}")

    def cls(self, value: object, entry: object, allow_unknown: bool = False) -> int:
        """A class index 0..999 (-1 allowed as 'unknown' when asked): :func:`mlray.labels.parse.class_index`."""
        return class_index(value, f"{self.path}: entry {entry}", unknown_ok=allow_unknown)

    def wnid(self, value: object, entry: object) -> int:
        if not isinstance(value, str):
            raise self.fail(entry, f"wnid {value!r} is not a string")
        if value not in self.vocab.index_of:
            raise self.fail(entry, f"unknown wnid {value!r} (not one of the 1,000 ImageNet-1k synsets)")
        return self.vocab.index_of[value]

    def label_set(self, values: object, entry: object, sep: str = ";") -> list[int]:
        """A set of class indices (a list, or a ``sep``-separated string; ``None`` or ``""`` = the empty set).

        A class written twice is kept once and the entry recorded in ``merged`` (counted, never lost).
        """
        repeated: list[str] = []
        out = label_set(values, f"{self.path}: entry {entry}", sep=sep, repeats=repeated)
        if repeated:
            self.merged.append(str(entry))
        return out or []

    def split_set(self, text: object, entry: object, sep: str) -> list[int]:
        """A label set written as a separated string ('' = empty set) or as a list."""
        return self.label_set(text, entry, sep=sep)


def _load_json(path: Path, shown: str) -> object:
    try:
        with open(path, "rb") as fh:
            return json.load(fh)
    except json.JSONDecodeError as exc:
        raise MlrayError(f"{shown}: malformed JSON at line {exc.lineno} column {exc.colno}: {exc.msg}") from None
    except UnicodeDecodeError:
        raise MlrayError(f"{shown}: malformed JSON: not UTF-8 text") from None


def _read_csv(path: Path, shown: str, required: Sequence[str], sep: str = ","):
    from ..io import read_csv_strict

    frame = read_csv_strict(path, shown, sep=sep)
    missing = [c for c in required if c not in frame.columns]
    if missing:
        raise MlrayError(f"{shown}: missing column(s) {', '.join(missing)} (found: {', '.join(frame.columns)})")
    return frame


# --------------------------------------------------------------------------------------------------------------
# Readers, one per format


def read_real_json(path: Path | None, shown: str | None = None, vocab: Vocabulary | None = None) -> SourceLabels:
    """ReaL (Beyer et al. 2020): list of 50,000 label lists; entry i -> ``ILSVRC2012_val_{i+1:08d}``."""
    if path is None:
        path = timm_info_dir() / "imagenet_real_labels.json"
    shown = shown or str(path)
    data = _load_json(path, shown)
    if not isinstance(data, list):
        raise MlrayError(f"{shown}: a ReaL file is a JSON list of 50,000 label lists, found {type(data).__name__}")
    if len(data) != REAL_NUM_IMAGES:
        raise MlrayError(f"{shown}: a ReaL file has 50,000 entries (one per val image), found {len(data):,}")
    check = _Checker(shown, vocab)
    valid = []
    for i, labels in enumerate(data):
        if not isinstance(labels, list):
            raise check.fail(f"{i} ({real_image_id(i)})", f"expected a list of class indices, found {labels!r}")
        valid.append(check.label_set(labels, f"{i} ({real_image_id(i)})"))
    return _done(SourceLabels(shown, "real-json", [real_image_id(i) for i in range(len(data))], valid=valid), check)


def read_multilabelfy_json(path: Path, shown: str | None = None, vocab: Vocabulary | None = None) -> SourceLabels:
    """ImageNetV2 refined labels (Anzaku et al.): ``{"<id>.jpeg": ["370", ...]}``; [] = no valid class."""
    shown = shown or str(path)
    data = _load_json(path, shown)
    if not isinstance(data, dict):
        raise MlrayError(f'{shown}: expected a JSON object {{"<id>.jpeg": [labels]}}, found {type(data).__name__}')
    check = _Checker(shown, vocab)
    ids: list[str] = []
    valid: list[list[int] | None] = []
    for key, labels in data.items():
        if labels is None:
            ids.append(image_id_from_name(key))
            valid.append(None)
            continue
        if not isinstance(labels, list):
            raise check.fail(repr(key), f"expected a list of class indices, found {labels!r}")
        ids.append(image_id_from_name(key))
        valid.append(check.label_set(labels, repr(key)))
    return _done(SourceLabels(shown, "multilabelfy-json", ids, valid=valid), check)


def read_imagenetv2_json(path: Path, shown: str | None = None, vocab: Vocabulary | None = None) -> SourceLabels:
    """ImageNetV2 repository dataset JSON: ``image_filenames: [[file, wnid], ...]`` -> original labels."""
    shown = shown or str(path)
    data = _load_json(path, shown)
    if not isinstance(data, dict) or not isinstance(data.get("image_filenames"), list):
        raise MlrayError(f"{shown}: expected a JSON object with an 'image_filenames' list of [file, wnid] pairs")
    check = _Checker(shown, vocab)
    ids: list[str] = []
    original: list[int] = []
    for i, pair in enumerate(data["image_filenames"]):
        if not (isinstance(pair, list) and len(pair) == 2 and isinstance(pair[0], str)):
            raise check.fail(f"image_filenames[{i}]", f"expected [file, wnid], found {pair!r}")
        ids.append(image_id_from_name(pair[0]))
        original.append(check.wnid(pair[1], f"image_filenames[{i}] ({pair[0]})"))
    return SourceLabels(shown, "imagenetv2-json", ids, original=original)


def _bool_cell(value: str, check: _Checker, entry: str) -> bool | None:
    text = str(value).strip().lower()
    if text in ("true", "1", "yes"):
        return True
    if text in ("false", "0", "no"):
        return False
    if text in ("", "nan", "none", "null"):
        return None
    raise check.fail(entry, f"problematic flag {value!r} is not true/false")


def read_tfds_multilabel_csv(path: Path, shown: str | None = None, vocab: Vocabulary | None = None) -> SourceLabels:
    """Shankar et al. 2020 / TFDS ``imagenet2012_multilabel`` as CSV: correct -> valid, unclear, problematic."""
    shown = shown or str(path)
    frame = _read_csv(
        path, shown, ["id", "original_label", "proposed_labels", "unclear_multi_labels", "is_problematic"]
    )
    check = _Checker(shown, vocab)
    ids: list[str] = []
    original: list[int] = []
    valid: list[list[int] | None] = []
    unclear: list[list[int] | None] = []
    problematic: list[bool | None] = []
    for row in frame.itertuples(index=False):
        entry = f"row {len(ids) + 2} ({row.id})"
        ids.append(image_id_from_name(row.id))
        original.append(check.cls(row.original_label, entry, allow_unknown=True) if row.original_label != "" else -1)
        valid.append(check.split_set(row.proposed_labels, entry, ","))
        unclear.append(check.split_set(row.unclear_multi_labels, entry, ","))
        problematic.append(_bool_cell(row.is_problematic, check, entry))
    return _done(SourceLabels(shown, "tfds-multilabel-csv", ids, original, valid, unclear, problematic), check)


def read_loc_val_solution_csv(path: Path, shown: str | None = None, vocab: Vocabulary | None = None) -> SourceLabels:
    """Kaggle ``LOC_val_solution.csv``: ``ImageId,PredictionString`` ("wnid x0 y0 x1 y1" repeated) -> original."""
    shown = shown or str(path)
    frame = _read_csv(path, shown, ["ImageId", "PredictionString"])
    check = _Checker(shown, vocab)
    ids, original = [], []
    for i, (image, boxes) in enumerate(zip(frame["ImageId"], frame["PredictionString"])):
        entry = f"row {i + 2} ({image})"
        tokens = boxes.split()
        if not tokens or len(tokens) % 5:
            raise check.fail(entry, f"PredictionString must be 'wnid x0 y0 x1 y1' repeated, found {boxes!r}")
        wnids = set(tokens[0::5])
        if len(wnids) != 1:
            raise check.fail(entry, f"boxes name different classes {sorted(wnids)}; a val image has one original label")
        ids.append(image_id_from_name(image))
        original.append(check.wnid(tokens[0], entry))
    return SourceLabels(shown, "loc-val-solution-csv", ids, original=original)


def read_table(path: Path, shown: str | None = None, vocab: Vocabulary | None = None) -> SourceLabels:
    """Any CSV or Parquet with ``image_id`` and ``label`` (int, -1/empty = unknown) and/or ``labels``.

    ``labels`` is a list column (Parquet; null = not annotated) or a ``;``-separated string (CSV; an empty cell =
    the empty set). An optional ``problematic`` column (bool) is carried along.
    """
    shown = shown or str(path)
    suffix = path.suffix.lower()
    if suffix in (".parquet", ".pq"):
        import pyarrow.parquet as pq

        try:
            table = pq.read_table(path)
        except (pa.ArrowInvalid, OSError) as exc:
            raise MlrayError(f"{shown}: not a readable Parquet file ({first_line(exc)})") from None
        columns = {name: table.column(name).to_pylist() for name in table.column_names}
    else:
        frame = _read_csv(path, shown, ["image_id"], sep="\t" if suffix == ".tsv" else ",")
        columns = {name: frame[name].tolist() for name in frame.columns}
    if "image_id" not in columns:
        raise MlrayError(f"{shown}: missing column image_id (found: {', '.join(columns)})")
    if "label" not in columns and "labels" not in columns:
        raise MlrayError(f"{shown}: needs a 'label' (original) and/or a 'labels' (valid set) column")
    check = _Checker(shown, vocab)
    ids = [image_id_from_name(str(v)) for v in columns["image_id"]]
    original = valid = problematic = None
    if "label" in columns:
        original = []
        for i, value in enumerate(columns["label"]):
            empty = value is None or (isinstance(value, str) and value.strip() == "")
            original.append(-1 if empty else check.cls(value, f"row {i + 2} ({ids[i]})", allow_unknown=True))
    if "labels" in columns:
        valid = []
        for i, value in enumerate(columns["labels"]):
            entry = f"row {i + 2} ({ids[i]})"
            valid.append(None if value is None else check.split_set(value, entry, ";"))
    if "problematic" in columns:
        problematic = [
            v if isinstance(v, bool) or v is None else _bool_cell(v, check, f"row {i + 2} ({ids[i]})")
            for i, v in enumerate(columns["problematic"])
        ]
    return _done(SourceLabels(shown, "table", ids, original=original, valid=valid, problematic=problematic), check)


LABEL_STUDIO_CHOICES = "label"
"""The ``name`` of the ``<Choices>`` tag whose choices :func:`read_label_studio_json` reads."""


def _label_studio_annotation(task: dict, where: str) -> dict | None:
    """The annotation of a task that counts: the one not cancelled (of several, the one marked ground truth);
    None when there is none. ``where`` names the file and task in errors."""
    annotations = task.get("annotations") or []
    if not isinstance(annotations, list) or not all(isinstance(a, dict) for a in annotations):
        raise MlrayError(f"{where}: annotations is not a list of objects")
    done = [a for a in annotations if not a.get("was_cancelled")]
    if len(done) > 1:
        truth = [a for a in done if a.get("ground_truth")]
        if len(truth) != 1:
            raise MlrayError(
                f"{where}: {len(done)} annotations and {len(truth)} marked ground truth; mark the one to use as "
                "ground truth in Label Studio (or export one annotation per task)"
            )
        done = truth
    return done[0] if done else None


def _label_studio_choices(annotation: dict, where: str) -> list[object]:
    """The class part (text before the first ``:``) of each choice of the ``<Choices name="label">`` tag in an
    annotation's result, in order."""
    result = annotation.get("result") or []
    if not isinstance(result, list) or not all(isinstance(r, dict) for r in result):
        raise MlrayError(f"{where}: annotation result is not a list of objects")
    choices: list[object] = []
    for r in result:
        if r.get("type") != "choices" or r.get("from_name") != LABEL_STUDIO_CHOICES:
            continue
        value = r.get("value")
        picked = value.get("choices") if isinstance(value, dict) else None
        if not isinstance(picked, list):
            raise MlrayError(f"{where}: a choices result without a value.choices list: {value!r}")
        choices += [c.partition(":")[0] if isinstance(c, str) else c for c in picked]
    return choices


def read_label_studio_json(path: Path, shown: str | None = None, vocab: Vocabulary | None = None) -> SourceLabels:
    """A Label Studio JSON export (a list of tasks) -> valid sets: the choices of the ``<Choices name="label">``
    tag in each task's annotation, written ``"wnid: name"`` (as ``mlray propose`` writes them), a wnid or a class
    index (only the text before the first ``:`` is read). A task with no annotation (none, or all cancelled)
    is not annotated; an annotation without such choices is the empty set. With several annotations, the one
    not cancelled, or else the one marked ground truth, counts. The image id is ``data.image_id`` (what
    ``mlray propose`` writes), else the file name of ``data.image``.
    """
    shown = shown or str(path)
    data = _load_json(path, shown)
    if not isinstance(data, list):
        raise MlrayError(f"{shown}: a Label Studio JSON export is a list of tasks, found {type(data).__name__}")
    check = _Checker(shown, vocab)
    ids: list[str] = []
    valid: list[list[int] | None] = []
    for i, task in enumerate(data):
        if not isinstance(task, dict) or not isinstance(task.get("data"), dict):
            raise MlrayError(f"{shown}: task {i + 1}: a task is an object with a 'data' object")
        image = task["data"].get("image_id", task["data"].get("image"))
        if not isinstance(image, str) or not image.strip():
            raise MlrayError(f"{shown}: task {i + 1}: data has no image_id or image")
        ids.append(image_id_from_name(image))
        entry = f"task {i + 1} ({ids[-1]})"
        annotation = _label_studio_annotation(task, f"{shown}: {entry}")
        if annotation is None:
            valid.append(None)
            continue
        repeated: list[str] = []
        choices = _label_studio_choices(annotation, f"{shown}: {entry}")
        valid.append(label_set(choices, f"{shown}: {entry}", wnids=True, repeats=repeated) or [])
        if repeated:
            check.merged.append(entry)
    return _done(SourceLabels(shown, "label-studio-json", ids, valid=valid), check)


def read_builtin(fmt: str) -> SourceLabels:
    """A built-in source (:data:`BUILTIN_FORMATS`): the shipped file read by the reader of its file format."""
    from .. import builtin

    if fmt == "imagenetv2-refined":
        return read_multilabelfy_json(builtin.path(builtin.REFINED_LABELS))
    if fmt == "imagenetv2-original":
        return read_table(builtin.path(builtin.V2_ORIGINAL_LABELS))
    if fmt == "imagenet-val-original":
        labels = builtin.val_original_labels()
        shown = str(builtin.path(builtin.VAL_ORIGINAL_LABELS))
        if len(labels) and (labels.min() < 0 or labels.max() >= NUM_CLASSES):
            raise MlrayError(f"{shown}: class indices must be 0..{NUM_CLASSES - 1}")
        ids = [real_image_id(i) for i in range(len(labels))]
        return SourceLabels(shown, "imagenet-val-original", ids, original=labels.astype(int).tolist())
    raise MlrayError(f"unknown built-in label source {fmt!r}; built-in sources: {', '.join(BUILTIN_FORMATS)}")


READERS = {
    "real-json": read_real_json,
    "multilabelfy-json": read_multilabelfy_json,
    "imagenetv2-json": read_imagenetv2_json,
    "tfds-multilabel-csv": read_tfds_multilabel_csv,
    "loc-val-solution-csv": read_loc_val_solution_csv,
    "table": read_table,
    "label-studio-json": read_label_studio_json,
}


def read_source(fmt: str, path: str | os.PathLike | None, base_dir: str | os.PathLike | None = None) -> SourceLabels:
    """Read one label source. ``path`` may be relative to ``base_dir``, a URL or an object-store URI."""
    from ..io import resolve

    if fmt not in FORMATS:
        raise MlrayError(f"unknown label format {fmt!r}; known formats: {', '.join(FORMATS)}")
    if fmt in BUILTIN_FORMATS:
        if path is not None:
            raise MlrayError(f"label format {fmt!r} is a file shipped in mlray and takes no path (given: {path})")
        return read_builtin(fmt)
    if path is None:
        if fmt != "real-json":
            builtins = ", ".join(("real-json", *BUILTIN_FORMATS))
            raise MlrayError(f"label format {fmt!r} needs a path (formats with a built-in file: {builtins})")
        return read_real_json(None)
    local = resolve(path, base_dir)
    return READERS[fmt](local, shown=str(path) if "://" in str(path) else str(local))


def _done(src: SourceLabels, check: _Checker) -> SourceLabels:
    src.merged_duplicates = check.merged
    return src
