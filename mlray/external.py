"""Published results (``mlray import-results``): timm's results CSVs and imagenet-testbed's table, in one long table.

Outputs: ``external_gap_summary.parquet`` (:func:`gap_summary`: the val -> ImageNetV2 gap across models per
collection) and ``external_results.parquet``, one row per (model, img_size, dataset, metric, source):

=================  ==============================================================================================
``model``           the model name as the source spells it (timm: ``resnet50.a1_in1k``; testbed: ``resnet50``)
``img_size``        evaluation resolution in pixels (int; null where the source has none: imagenet-testbed)
``dataset``         the mlray dataset name (see below)
``metric``          ``top1`` or ``top5``
``value``           the metric as a **fraction in 0..1** (the sources publish percent; value = percent / 100,
                    computed from the decimal text, so 80.382 -> 0.80382 exactly as a float can hold it)
``source``          the file name the row comes from (``results-imagenet.csv``, ``robustness_top1s.csv``)
``collection``      ``timm`` or ``imagenet-testbed`` (extra column: the layout the file was read as)
``param_count``     millions of parameters (timm only; thousands separators such as ``"1,013.01"`` handled)
``crop_pct``, ``interpolation``  timm's evaluation preprocessing (null for the testbed)
=================  ==============================================================================================

timm rows are keyed by model AND img_size (some models are evaluated at two resolutions). The dataset comes from
the file name ``results-<name>.csv``: ``imagenet`` -> ``imagenet-val``, ``imagenet-real`` -> ``imagenet-val-real``
(ReaL labels, empty-set images excluded), ``sketch`` -> ``imagenet-sketch``, anything else keeps its name
(``imagenetv2-matched-frequency``, ``imagenet-r``, ``imagenet-r-clean``, ``imagenet-a``, ``imagenet-a-clean``;
the ``-clean`` files are ImageNet val restricted to the 200 ImageNet-R / -A classes).

imagenet-testbed's ``robustness_top1s.csv`` (top-1 only, percent, empty = not evaluated) contributes four columns:
``val`` -> ``imagenet-val`` and the three ImageNetV2 variants in their ``-format-val`` form, the one the public
ImageNetV2 tarballs hold (and the one timm evaluates): ``imagenetv2-matched-frequency-format-val`` ->
``imagenetv2-matched-frequency``, ``imagenetv2-threshold-0.7-format-val`` -> ``imagenetv2-threshold0.7``,
``imagenetv2-top-images-format-val`` -> ``imagenetv2-top-images``. (The testbed's columns without
``-format-val`` are the same images in their original encoding; they differ by at most 0.76 points and are not
imported, so each dataset has one value per model.)
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from decimal import Decimal, InvalidOperation
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from .errors import MlrayError, first_line
from .io import write_parquet_atomic

RESULTS_FILE = "external_results.parquet"
GAP_SUMMARY_FILE = "external_gap_summary.parquet"  # gap_summary of the import, next to RESULTS_FILE
TIMM_REQUIRED = ("model", "img_size", "top1", "top5")
TIMM_METRICS = ("top1", "top5")
TIMM_DATASETS = {"imagenet": "imagenet-val", "imagenet-real": "imagenet-val-real", "sketch": "imagenet-sketch"}
TESTBED_FILE = "robustness_top1s.csv"
TESTBED_COLUMNS = {
    "val": "imagenet-val",
    "imagenetv2-matched-frequency-format-val": "imagenetv2-matched-frequency",
    "imagenetv2-threshold-0.7-format-val": "imagenetv2-threshold0.7",
    "imagenetv2-top-images-format-val": "imagenetv2-top-images",
}
VAL = "imagenet-val"
V2_MF = "imagenetv2-matched-frequency"
GAP_STATS = ("count", "mean", "median", "std", "min", "p10", "p90", "max")
GAP_SUMMARY_SCHEMA = pa.schema(
    [(c, pa.string()) for c in ("collection", "metric", "base", "other", "base_source", "other_source")]
    + [("count", pa.int64())]
    + [(c, pa.float64()) for c in GAP_STATS[1:]]
)

RESULTS_SCHEMA = pa.schema(
    [
        ("model", pa.string()),
        ("img_size", pa.int32()),
        ("dataset", pa.string()),
        ("metric", pa.string()),
        ("value", pa.float64()),
        ("source", pa.string()),
        ("collection", pa.string()),
        ("param_count", pa.float64()),
        ("crop_pct", pa.float64()),
        ("interpolation", pa.string()),
    ]
)
COLUMNS = RESULTS_SCHEMA.names


def timm_dataset_name(file_name: str) -> str:
    """The mlray dataset name of a timm ``results-<name>.csv``."""
    stem = file_name[: -len(".csv")] if file_name.endswith(".csv") else file_name
    stem = stem[len("results-") :] if stem.startswith("results-") else stem
    return TIMM_DATASETS.get(stem, stem)


def _number(text: str, shown: str, row: int, column: str, allow_empty: bool = False) -> Decimal | None:
    """A decimal number from a cell; thousands separators and a leading '+' are accepted."""
    cell = text.strip().replace(",", "")
    if not cell:
        if allow_empty:
            return None
        raise MlrayError(f"{shown}: row {row}: empty {column}")
    try:
        value = Decimal(cell)
    except InvalidOperation:
        raise MlrayError(f"{shown}: row {row}: {column} {text!r} is not a number") from None
    if not value.is_finite():
        raise MlrayError(f"{shown}: row {row}: {column} {text!r} is not a finite number")
    return value


def _percent(text: str, shown: str, row: int, column: str, allow_empty: bool = False) -> float | None:
    value = _number(text, shown, row, column, allow_empty)
    if value is None:
        return None
    if not Decimal(0) <= value <= Decimal(100):
        raise MlrayError(f"{shown}: row {row}: {column} {text!r} is not a percentage in 0..100")
    return float(value / 100)


def _read_csv(path: Path) -> pd.DataFrame:
    from .io import read_csv_strict

    frame = read_csv_strict(path, str(path))
    frame.columns = [str(c).strip() for c in frame.columns]
    return frame


def _layout(frame: pd.DataFrame, path: Path) -> str:
    cols = set(frame.columns)
    if path.name.startswith("results-") or "img_size" in cols:
        missing = [c for c in TIMM_REQUIRED if c not in cols]
        if missing:
            raise MlrayError(
                f"{path}: unknown results layout: missing column(s) {', '.join(missing)} of a timm results CSV "
                f"(found: {', '.join(frame.columns)})"
            )
        return "timm"
    if "model" in cols and cols & set(TESTBED_COLUMNS):
        return "imagenet-testbed"
    timm_missing = [c for c in TIMM_REQUIRED if c not in cols]
    testbed_missing = [c for c in ("model", "val") if c not in cols]
    raise MlrayError(
        f"{path}: unknown results layout: missing column(s) {', '.join(timm_missing)} (timm results-*.csv) or "
        f"{', '.join(testbed_missing)} (imagenet-testbed {TESTBED_FILE})"
    )


def _read_timm(frame: pd.DataFrame, path: Path) -> pd.DataFrame:
    shown = str(path)
    dataset = timm_dataset_name(path.name)
    records = []
    seen: dict[tuple[str, int], int] = {}
    for i, rec in enumerate(frame.to_dict("records")):
        row = i + 2
        model = rec["model"].strip()
        if not model:
            raise MlrayError(f"{shown}: row {row}: empty model")
        size = _number(rec["img_size"], shown, row, "img_size")
        if size is None or size != size.to_integral_value() or size <= 0:
            raise MlrayError(f"{shown}: row {row}: img_size {rec['img_size']!r} is not a positive integer")
        key = (model, int(size))
        if key in seen:
            raise MlrayError(f"{shown}: row {row}: model {model!r} at img_size {int(size)} also in row {seen[key]}")
        seen[key] = row
        param = _number(rec.get("param_count", ""), shown, row, "param_count", allow_empty=True)
        crop = _number(rec.get("crop_pct", ""), shown, row, "crop_pct", allow_empty=True)
        interp = rec.get("interpolation", "").strip() or None
        for metric in TIMM_METRICS:
            # empty cells are not evaluated (timm leaves top1_diff etc. empty; metrics never are in the snapshot)
            value = _percent(rec[metric], shown, row, metric, allow_empty=True)
            if value is None:
                continue
            records.append(
                (
                    model,
                    int(size),
                    dataset,
                    metric,
                    value,
                    path.name,
                    "timm",
                    None if param is None else float(param),
                    None if crop is None else float(crop),
                    interp,
                )
            )
    return pd.DataFrame.from_records(records, columns=COLUMNS)


def _read_testbed(frame: pd.DataFrame, path: Path) -> pd.DataFrame:
    shown = str(path)
    records = []
    seen: dict[str, int] = {}
    present = [c for c in TESTBED_COLUMNS if c in frame.columns]
    for i, rec in enumerate(frame.to_dict("records")):
        row = i + 2
        model = rec["model"].strip()
        if not model:
            raise MlrayError(f"{shown}: row {row}: empty model")
        if model in seen:
            raise MlrayError(f"{shown}: row {row}: model {model!r} also in row {seen[model]}")
        seen[model] = row
        for column in present:
            value = _percent(rec[column], shown, row, column, allow_empty=True)
            if value is None:
                continue  # empty = not evaluated
            records.append(
                (model, None, TESTBED_COLUMNS[column], "top1", value, path.name, "imagenet-testbed", None, None, None)
            )
    return pd.DataFrame.from_records(records, columns=COLUMNS)


def _is_results_file(path: Path) -> bool:
    return path.suffix == ".csv" and (path.name.startswith("results-") or path.name == TESTBED_FILE)


def _files(paths: str | os.PathLike | Iterable[str | os.PathLike]) -> list[Path]:
    items = [paths] if isinstance(paths, (str, os.PathLike)) else list(paths)
    if not items:
        raise MlrayError("import-results: no results file or folder given")
    from .io import resolve

    out: list[Path] = []
    for item in items:
        text = os.fspath(item)
        if "://" not in text and Path(text).is_dir():
            found = sorted(p for p in Path(text).iterdir() if p.is_file() and _is_results_file(p))
            if not found:
                raise MlrayError(f"{text}: no results CSV in the folder (results-*.csv or {TESTBED_FILE})")
            out.extend(found)
        else:
            out.append(resolve(text))
    unique: dict[Path, Path] = {}
    for p in out:
        unique.setdefault(p.resolve(), p)
    return list(unique.values())


def _empty() -> pd.DataFrame:
    return _typed(pd.DataFrame({c: [] for c in COLUMNS}))


def _typed(df: pd.DataFrame) -> pd.DataFrame:
    return df.astype(
        {
            "model": "string",
            "img_size": "Int32",
            "dataset": "string",
            "metric": "string",
            "value": "float64",
            "source": "string",
            "collection": "string",
            "param_count": "float64",
            "crop_pct": "float64",
            "interpolation": "string",
        }
    )


def read_results(paths: str | os.PathLike | Iterable[str | os.PathLike]) -> pd.DataFrame:
    """Read published results: folders (every ``results-*.csv`` and ``robustness_top1s.csv`` in them; other CSVs
    such as timm's ``model_metadata-in1k.csv`` are skipped) and/or files (layout detected from the columns).

    Returns the long table described in the module docstring (values are fractions 0..1), rows in file order.
    Errors: an unknown CSV layout (naming the file and the missing columns), a value that is not a number or not a
    percentage, a model (and img_size) listed twice in one file, the same (model, img_size, dataset, metric,
    collection) coming from two files.
    """
    frames = []
    files = _files(paths)
    for i, path in enumerate(files):
        frame = _read_csv(path)
        layout = _layout(frame, path)
        part = _read_timm(frame, path) if layout == "timm" else _read_testbed(frame, path)
        frames.append(part.assign(_file=i))
    frames = [f for f in frames if len(f)]
    if not frames:
        return _empty()
    df = pd.concat(frames, ignore_index=True)
    key = ["model", "img_size", "dataset", "metric", "collection"]
    dup = df.duplicated(key, keep=False)
    if dup.any():
        rows = df[dup]
        first = rows.iloc[0]
        same = rows[(rows[key].fillna(-1) == first[key].fillna(-1)).all(axis=1)]["_file"].tolist()
        size = "" if pd.isna(first["img_size"]) else f" at img_size {first['img_size']}"
        raise MlrayError(
            f"{files[same[-1]]}: {first['dataset']} {first['metric']} of model {first['model']!r}{size} is also in "
            f"{files[same[0]]}; import each results file once"
        )
    return _typed(df.drop(columns="_file"))


def write_results(df: pd.DataFrame, out: str | os.PathLike) -> Path:
    """Write the table as Parquet: ``out`` is a folder (-> ``out/external_results.parquet``) or a ``.parquet``
    path. Written atomically (temporary name, then rename)."""
    out = Path(out)
    target = out if out.suffix == ".parquet" else out / RESULTS_FILE
    table = pa.Table.from_pandas(df[COLUMNS], schema=RESULTS_SCHEMA, preserve_index=False)
    return write_parquet_atomic(table, target)


def read_results_parquet(path: str | os.PathLike) -> pd.DataFrame:
    """Read back an ``external_results.parquet`` written by :func:`write_results`."""
    p = Path(path)
    p = p / RESULTS_FILE if p.is_dir() else p
    try:
        table = pq.read_table(p)
    except (pa.ArrowInvalid, OSError) as exc:
        raise MlrayError(f"{p}: not a readable Parquet file ({first_line(exc)})") from None
    missing = [c for c in COLUMNS if c not in table.column_names]
    if missing:
        raise MlrayError(f"{p}: not an external results table: missing column(s) {', '.join(missing)}")
    return _typed(table.to_pandas())


def gap_summary(df: pd.DataFrame, metric: str = "top1", base: str = VAL, other: str = V2_MF) -> pd.DataFrame:
    """The distribution across models of the gap ``value(base) - value(other)`` (default: ImageNet val top-1 minus
    ImageNetV2 MatchedFrequency top-1; a positive gap is a drop), one row per collection (timm, imagenet-testbed),
    never mixing collections: a model's two values are paired on (model, img_size) within a collection.

    Columns: ``collection``, ``base_source`` / ``other_source`` (the files), ``count`` (models with both values),
    ``mean``, ``median``, ``std`` (sample, ddof=1), ``min``, ``p10``, ``p90`` (linear interpolation), ``max``, all
    in the unit of ``value`` (fractions: 0.1085 = 10.85 points). Collections with no pair are left out.
    """
    rows = []
    sel = df[df["metric"] == metric]
    for collection in sorted(sel["collection"].dropna().unique()):
        part = sel[sel["collection"] == collection]
        a = part[part["dataset"] == base]
        b = part[part["dataset"] == other]
        key = ["model", "img_size"]
        pairs = a.merge(b, on=key, suffixes=("_a", "_b"), how="inner")
        if pairs.empty:
            continue
        gap = (pairs["value_a"] - pairs["value_b"]).to_numpy(dtype=float)
        rows.append(
            {
                "collection": collection,
                "metric": metric,
                "base": base,
                "other": other,
                "base_source": ", ".join(sorted(pairs["source_a"].unique())),
                "other_source": ", ".join(sorted(pairs["source_b"].unique())),
                "count": int(len(gap)),
                "mean": float(gap.mean()),
                "median": float(np.median(gap)),
                "std": float(gap.std(ddof=1)) if len(gap) > 1 else float("nan"),
                "min": float(gap.min()),
                "p10": float(np.percentile(gap, 10)),
                "p90": float(np.percentile(gap, 90)),
                "max": float(gap.max()),
            }
        )
    return pd.DataFrame(
        rows,
        columns=["collection", "metric", "base", "other", "base_source", "other_source", *GAP_STATS],
    )


def import_results(
    paths: str | os.PathLike | Iterable[str | os.PathLike], out: str | os.PathLike
) -> tuple[pd.DataFrame, pd.DataFrame, Path]:
    """The ``mlray import-results`` backend: read, write ``external_results.parquet`` under ``out``, summarize,
    and write the summary (:func:`gap_summary`, possibly with no rows) as ``external_gap_summary.parquet`` next to
    it. Returns (results table, gap summary, written results path)."""
    df = read_results(paths)
    path = write_results(df, out)
    summary = gap_summary(df)
    table = pa.Table.from_pandas(summary, schema=GAP_SUMMARY_SCHEMA, preserve_index=False)
    write_parquet_atomic(table, path.parent / GAP_SUMMARY_FILE)
    return df, summary, path


COMPARISON_FILE = "published_comparison.parquet"
COMPARISON_COLUMNS = ["model", "dataset", "metric", "img_size", "value", "published", "difference", "published_model",
                      "source"]  # fmt: skip


def published_comparison(model_metrics: pd.DataFrame, external: pd.DataFrame, models: dict) -> pd.DataFrame:
    """mlray's top-1 / top-5 of each (model, dataset) next to the value timm published for the same model and
    image size on the dataset of the same name (the ``published_comparison`` report).

    ``models`` is ``run_manifest.json``'s ``models`` (name -> ``pretrained_cfg``, the ``arch.tag`` whose weights
    and preprocessing the run used, and ``preprocessing.input_size``). A published row matches when its ``model``
    equals that ``pretrained_cfg`` and its ``img_size`` the run's input height. Values are fractions;
    ``difference`` = value - published. Columns :data:`COMPARISON_COLUMNS`; no match, no row.
    """
    rows = []
    ext = external[external["collection"] == "timm"] if "collection" in external.columns else external
    published = {(r.model, int(r.img_size), r.dataset, r.metric): (float(r.value), r.source)
                 for r in ext.itertuples() if pd.notna(r.img_size) and pd.notna(r.value)}  # fmt: skip
    mm = model_metrics[model_metrics["metric"].isin(TIMM_METRICS)]
    for r in mm.itertuples():
        info = models.get(r.model) or {}
        cfg = info.get("pretrained_cfg")
        size = (info.get("preprocessing") or {}).get("input_size")
        if not cfg or not size or pd.isna(r.value):
            continue
        hit = published.get((cfg, int(size[1]), r.dataset, r.metric))
        if hit is None:
            continue
        rows.append([r.model, r.dataset, r.metric, int(size[1]), float(r.value), hit[0], float(r.value) - hit[0],
                     cfg, hit[1]])  # fmt: skip
    return pd.DataFrame(rows, columns=COMPARISON_COLUMNS)
