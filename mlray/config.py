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
```

Relative paths resolve against the config file's folder; a path may also be a URL or an ``s3://`` / ``gs://`` URI
(cached locally after the first read, see :mod:`mlray.io`). Unknown keys are errors (a typo never passes
silently).
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from .errors import MlrayError
from .labels import FORMATS, DatasetLabels, build_dataset_labels, read_source

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

    @field_validator("name")
    @classmethod
    def _name_is_a_path_segment(cls, value: str) -> str:
        if value != value.strip() or "/" in value or value in (".", ".."):
            raise ValueError("a dataset name must not contain '/' or surrounding spaces")
        return value

    @model_validator(mode="after")
    def _has_labels(self) -> "DatasetConfig":
        if self.labels.original is None and self.labels.multi is None:
            raise ValueError("needs labels.original and/or labels.multi")
        return self


class RunConfig(_Strict):
    datasets: list[DatasetConfig] = Field(min_length=1)
    base_dir: Path | None = Field(default=None, exclude=True)
    source: str = Field(default="<built-in>", exclude=True)

    @model_validator(mode="after")
    def _unique_names(self) -> "RunConfig":
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


def load_config(path: str | Path) -> RunConfig:
    """Read and validate a run config file; relative paths inside resolve against its folder."""
    path = Path(path)
    if not path.is_file():
        raise MlrayError(f"{path}: no such config file")
    try:
        data = yaml.safe_load(path.read_text())
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


def load_dataset_labels(config: RunConfig, dataset: DatasetConfig) -> DatasetLabels:
    """Read a dataset's label sources and join them into its canonical labels table."""
    sources = {}
    for role in ("original", "multi"):
        src = getattr(dataset.labels, role)
        if src is not None:
            sources[role] = read_source(src.format, src.path, config.base_dir)
    return build_dataset_labels(dataset.name, sources.get("original"), sources.get("multi"), dataset.on_unknown_image)
