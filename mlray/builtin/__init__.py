"""Real, permissively licensed data shipped inside mlray (package data), so the demo's ImageNet -> ImageNetV2 story
runs offline. Every file sits in a folder with its source's LICENSE; ``SOURCE.md`` names the repository, commit,
path and license of each, and what was changed (only re-ordering, narrowing to columns or a compact encoding).

===================================================  ==================================================================
file (under ``mlray/builtin/``)                      content
===================================================  ==================================================================
``multilabelfy/imagenetv2_refined_labels.json``      the refined multi-labels of ImageNetV2 MatchedFrequency (10,000
                                                     images; Anzaku et al.; Apache-2.0), a byte-for-byte copy
``imagenetv2/imagenetv2_matched_frequency_labels``   the original label of each of those 10,000 images
``.csv.gz``                                          (``image_id``, ``label``; ImageNetV2 ``imagenetv2-b-33.json``; MIT)
``cleanlab/imagenet_val_original_labels.npy``        ImageNet val original labels, int16, entry i =
                                                     ``ILSVRC2012_val_{i+1:08d}`` (cleanlab label-errors; Apache-2.0)
``cleanlab/imagenet_val_resnet50_top1.npy``          the top-1 class of a ResNet-50 for every val image, same order
                                                     (cleanlab label-errors; Apache-2.0)
``timm/results-imagenet.csv``,                       timm's published top-1 / top-5 of 1,556 (model, img_size) pairs
``timm/results-imagenetv2-matched-frequency.csv``    on val and on ImageNetV2 MatchedFrequency (Apache-2.0)
===================================================  ==================================================================

The label files are read as the built-in label sources of :mod:`mlray.labels.readers` (``format:
imagenetv2-refined``, ``imagenetv2-original``, ``imagenet-val-original`` with no path); the ResNet-50 top-1
vector is the built-in prediction set :data:`RESNET50`; the timm CSVs are read by :mod:`mlray.external` as any
timm results file. This module only locates and loads the files: it imports nothing else from mlray.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

import numpy as np

REFINED_LABELS = "multilabelfy/imagenetv2_refined_labels.json"
V2_ORIGINAL_LABELS = "imagenetv2/imagenetv2_matched_frequency_labels.csv.gz"
VAL_ORIGINAL_LABELS = "cleanlab/imagenet_val_original_labels.npy"
RESNET50_TOP1 = "cleanlab/imagenet_val_resnet50_top1.npy"
TIMM_RESULTS = ("timm/results-imagenet.csv", "timm/results-imagenetv2-matched-frequency.csv")
FILES = (REFINED_LABELS, V2_ORIGINAL_LABELS, VAL_ORIGINAL_LABELS, RESNET50_TOP1, *TIMM_RESULTS)
"""Every shipped data file (paths relative to this package)."""

RESNET50 = "resnet50-cleanlab"
"""The model name of the built-in prediction set (the ResNet-50 of cleanlab's label-errors study)."""
VAL_IMAGES = 50_000


def path(name: str) -> Path:
    """The file ``name`` (one of :data:`FILES`, or ``SOURCE.md`` / ``<folder>/LICENSE``) of the installed package.

    Raises ``FileNotFoundError`` naming the path when the file is not there (a broken install)."""
    found = Path(str(resources.files(__package__).joinpath(name)))
    if not found.is_file():
        raise FileNotFoundError(f"{found}: mlray's built-in data file is missing (reinstall mlray)")
    return found


def _val_vector(name: str) -> np.ndarray:
    """A shipped int16 vector with one class index (0..999) per ImageNet val image, in file-number order."""
    values = np.load(path(name), allow_pickle=False)
    if values.shape != (VAL_IMAGES,) or values.dtype != np.int16:
        raise ValueError(f"{path(name)}: expected int16 ({VAL_IMAGES},), found {values.dtype} {values.shape}")
    return values


def val_original_labels() -> np.ndarray:
    """The original ILSVRC2012 label of every val image: int16 (50,000,), entry i = ``ILSVRC2012_val_{i+1:08d}``."""
    return _val_vector(VAL_ORIGINAL_LABELS)


def resnet50_val_top1() -> np.ndarray:
    """The top-1 class of the :data:`RESNET50` model on every val image: int16 (50,000,), entry i =
    ``ILSVRC2012_val_{i+1:08d}`` (argmax of its out-of-sample predicted probabilities)."""
    return _val_vector(RESNET50_TOP1)


def timm_results() -> list[Path]:
    """The two shipped timm results CSVs (val, ImageNetV2 MatchedFrequency), for :func:`mlray.external.read_results`."""
    return [path(name) for name in TIMM_RESULTS]
