"""The one parser for class indices and label sets, used by every reader of labels in mlray.

Every label file format, image manifest, Parquet shard, PatchML box table and predictions file that carries
ImageNet-1k classes goes through :func:`class_index` and :func:`label_set`, so one rule holds everywhere:

- a class index is an ``int``, an integral ``float`` (a CSV column with empty cells reads as float) or integer
  text (``"7"``, ``" 7 "``, ``"-1"``); ``"3.0"`` text, booleans and anything else are not class indices;
- with ``wnids=True`` an ImageNet-1k wnid (``"n01440764"``) is accepted too;
- ``-1``, ``None`` and ``""`` mean *unknown* where the caller allows it (``unknown_ok=True``), else are errors;
- a class index outside 0..999 is an error;
- a label set is a list (or tuple / numpy array) or a separated string (``""`` = the empty set); ``None`` means
  *not annotated*; a class named twice is kept once and the entry is recorded in ``repeats`` so the caller can
  count it: nothing is dropped silently.

Every error is an :class:`~mlray.errors.MlrayError` whose message starts with ``where`` (the file and row).
"""

from __future__ import annotations

import numbers
import re
from collections.abc import Sequence

import numpy as np

from ..errors import MlrayError
from .vocab import NUM_CLASSES, imagenet_vocabulary

_INT_TEXT = re.compile(r"[+-]?[0-9]+")


def class_index(value: object, where: str, *, unknown_ok: bool = False, wnids: bool = False) -> int:
    """The class index 0..999 that ``value`` names (-1 = unknown, only where ``unknown_ok``).

    >>> class_index(" 7 ", "labels.csv: row 2")
    7
    >>> class_index(281.0, "labels.csv: row 3")
    281
    >>> class_index("", "labels.csv: row 4", unknown_ok=True)
    -1
    >>> class_index("n01440764", "boxes.csv: row 5", wnids=True)
    0
    >>> class_index("3.0", "labels.csv: row 6")
    Traceback (most recent call last):
    mlray.errors.MlrayError: labels.csv: row 6: label '3.0' is not a class index
    >>> class_index(1000, "labels.csv: row 7")
    Traceback (most recent call last):
    mlray.errors.MlrayError: labels.csv: row 7: class index 1000 is outside 0..999
    """
    if value is None or (isinstance(value, str) and not value.strip()):
        if unknown_ok:
            return -1
        raise MlrayError(f"{where}: empty class index")
    if isinstance(value, (bool, np.bool_)):
        raise MlrayError(f"{where}: label {value!r} is not a class index")
    if isinstance(value, numbers.Integral):
        idx = int(value)
    elif isinstance(value, numbers.Real):
        x = float(value)
        if x != x and unknown_ok:  # NaN: an empty numeric cell
            return -1
        if not x.is_integer():
            raise MlrayError(f"{where}: label {value!r} is not a class index")
        idx = int(x)
    elif isinstance(value, str) and _INT_TEXT.fullmatch(value.strip()):
        idx = int(value.strip())
    elif isinstance(value, str) and wnids:
        text = value.strip()
        vocab = imagenet_vocabulary()
        if text not in vocab.index_of:
            raise MlrayError(
                f"{where}: unknown class {text!r} (neither a class index 0..{NUM_CLASSES - 1} nor an ImageNet-1k wnid)"
            )
        return vocab.index_of[text]
    else:
        raise MlrayError(f"{where}: label {value!r} is not a class index")
    if unknown_ok and idx == -1:
        return -1
    if not 0 <= idx < NUM_CLASSES:
        raise MlrayError(f"{where}: class index {idx} is outside 0..{NUM_CLASSES - 1}")
    return idx


def label_set(
    value: object, where: str, *, sep: str = ";", wnids: bool = False, repeats: list[str] | None = None
) -> list[int] | None:
    """The valid-label set ``value`` names, in its order; ``None`` = not annotated, ``[]`` = no valid class.

    A class named twice is kept once, and ``where`` is appended to ``repeats`` (when given) so that it is counted.

    >>> label_set("717; 734;920", "m.csv: row 2")
    [717, 734, 920]
    >>> label_set("", "m.csv: row 3"), label_set(None, "m.csv: row 4")
    ([], None)
    >>> seen = []
    >>> label_set([872, 759, 622, 622], "tfds.csv: row 6467", repeats=seen), seen
    ([872, 759, 622], ['tfds.csv: row 6467'])
    """
    if value is None:
        return None
    items: Sequence[object]
    if isinstance(value, str):
        items = [p.strip() for p in value.split(sep) if p.strip()]
    elif isinstance(value, (list, tuple, np.ndarray)):
        items = list(value)
    else:
        raise MlrayError(f"{where}: labels {value!r} is not a list of class indices")
    out = [class_index(v, where, wnids=wnids) for v in items]
    unique = list(dict.fromkeys(out))
    if len(unique) != len(out) and repeats is not None:
        repeats.append(where)
    return unique
