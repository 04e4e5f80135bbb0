"""Dataset statistics and cross-dataset comparison of label distributions (pure functions on LabelArrays).

Definitions (a *labelled* image has a non-empty valid set; *empty* = annotated with no valid ImageNet class;
*unannotated* = the multi-label source has no entry for it):

- ``multi_fraction`` = n_multi / n_labelled, with n_multi = images with >= 2 valid labels;
- ``mean_labels`` = mean number of valid labels over labelled images;
- ``original_in_valid_fraction`` = share of labelled images with a known original label whose original label is
  in the valid set (NaN when no labelled image has an original label);
- the label-count histogram is over labelled images (``n_labels`` >= 1; ``fraction`` of labelled images);
- per class c: ``n_original`` = images whose original label is c, ``n_valid`` = images with c in the valid set,
  ``multi_rate`` = share of the ``n_valid`` images that have >= 2 labels, ``original_valid_rate`` = share of the
  labelled images with original c that keep c in their valid set;
- co-occurrence of classes a < b: ``n_images`` with both in the valid set; ``lift`` = n_ab * N / (n_a * n_b), N =
  n_labelled, n_a = labelled images with a (lift 1 = independent).

Comparison of datasets A and B (label-count distributions p, q over labelled images, on the union of bins):
``label_count_total_variation`` = 1/2 sum|p - q|; ``label_count_js_distance`` = Jensen-Shannon distance, base 2
(in [0, 1]); ``label_count_chi2_statistic`` / ``_pvalue`` / ``_dof`` = chi-square test of homogeneity on the 2 x G
table of counts (scipy.stats.chi2_contingency; bins empty in both dropped); ``multi_fraction_difference`` = A - B
with a 95 % Newcombe hybrid-score interval (Newcombe 1998, method 10); ``mean_labels_difference`` = A - B; and
``class_multi_rate_difference`` rows for the classes whose multi-label rate differs most (classes with at least
``min_class_images`` valid images in both datasets, largest |A - B| first).

The frames are written as the reports of :data:`STATS_SCHEMAS` (class indices int16, counts int64).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd
import pyarrow as pa
from scipy import stats as sstats
from scipy.spatial.distance import jensenshannon

from .labels import NUM_CLASSES, LabelArrays, Vocabulary, imagenet_vocabulary

Z95 = 1.959963984540054

_STRING, _COUNT, _FRACTION, _CLASS = pa.string(), pa.int64(), pa.float64(), pa.int16()
STATS_SCHEMAS: dict[str, pa.Schema] = {
    "dataset_stats": pa.schema(
        [("dataset", _STRING)]
        + [(c, _COUNT) for c in ("n_images", "n_labelled", "n_empty", "n_unannotated", "n_multi")]
        + [("multi_fraction", _FRACTION), ("mean_labels", _FRACTION), ("n_with_original", _COUNT)]
        + [("original_in_valid_fraction", _FRACTION), ("n_skipped_unknown", _COUNT)]
        + [("n_merged_duplicate_labels", _COUNT)]
    ),
    "label_count_hist": pa.schema(
        [("dataset", _STRING), ("n_labels", _COUNT), ("n_images", _COUNT), ("fraction", _FRACTION)]
    ),
    "class_stats": pa.schema(
        [("dataset", _STRING), ("class_index", _CLASS), ("wnid", _STRING), ("name", _STRING)]
        + [("n_original", _COUNT), ("n_valid", _COUNT), ("multi_rate", _FRACTION)]
        + [("original_valid_rate", _FRACTION)]
    ),
    "cooccurrence": pa.schema(
        [("dataset", _STRING), ("class_a", _CLASS), ("class_b", _CLASS), ("n_images", _COUNT), ("lift", _FRACTION)]
        + [(c, _STRING) for c in ("name_a", "name_b", "wnid_a", "wnid_b")]
    ),
    "dataset_comparison": pa.schema(
        [("dataset_a", _STRING), ("dataset_b", _STRING), ("measure", _STRING), ("value", _FRACTION)]
        + [("ci_low", _FRACTION), ("ci_high", _FRACTION), ("class_index", _CLASS), ("wnid", _STRING)]
        + [("name", _STRING)]
    ),
}
"""The Arrow schema of each statistics report as written: class indices int16 and counts int64 (as in every
report, :data:`mlray.scoring.frames.SCORE_SCHEMAS`); ``class_index`` of ``dataset_comparison`` is null on the
dataset-wide rows."""


@dataclass
class DatasetSummary:
    """Everything computed for one dataset (one Ray task's result)."""

    name: str
    stats: dict
    hist: pd.DataFrame
    classes: pd.DataFrame
    cooccurrence: pd.DataFrame


def dataset_stats(name: str, a: LabelArrays) -> dict:
    counts = a.counts
    labelled = a.labelled
    n_labelled = int(labelled.sum())
    n_multi = int((labelled & (counts >= 2)).sum())
    with_original = labelled & (a.original >= 0)
    in_valid = original_in_valid(a)
    return {
        "dataset": name,
        "n_images": int(a.n),
        "n_labelled": n_labelled,
        "n_empty": int((a.annotated & (counts == 0)).sum()),
        "n_unannotated": int((~a.annotated).sum()),
        "n_multi": n_multi,
        "multi_fraction": n_multi / n_labelled if n_labelled else math.nan,
        "mean_labels": float(counts[labelled].mean()) if n_labelled else math.nan,
        "n_with_original": int((a.original >= 0).sum()),
        "original_in_valid_fraction": float(in_valid[with_original].mean()) if with_original.any() else math.nan,
    }


def original_in_valid(a: LabelArrays) -> np.ndarray:
    """Per image: is its original label among its valid labels (False when unknown or not labelled)."""
    rows = a.row_of_values()
    match = a.values == a.original[rows]
    out = np.zeros(a.n, dtype=bool)
    out[rows[match]] = True
    return out


def label_count_hist(name: str, a: LabelArrays) -> pd.DataFrame:
    counts = a.counts[a.labelled]
    n_labelled = len(counts)
    bins = np.bincount(counts, minlength=2)[1:] if n_labelled else np.zeros(0, dtype=np.int64)
    n_labels = np.arange(1, len(bins) + 1)
    keep = bins > 0
    return pd.DataFrame(
        {
            "dataset": name,
            "n_labels": n_labels[keep].astype(np.int64),
            "n_images": bins[keep].astype(np.int64),
            "fraction": bins[keep] / n_labelled if n_labelled else np.zeros(keep.sum()),
        }
    )


def class_stats(name: str, a: LabelArrays, vocab: Vocabulary | None = None) -> pd.DataFrame:
    vocab = vocab or imagenet_vocabulary()
    rows = a.row_of_values()
    values = a.values.astype(np.int64)
    counts = a.counts
    known = a.original >= 0
    n_original = np.bincount(a.original[known].astype(np.int64), minlength=NUM_CLASSES)
    n_valid = np.bincount(values, minlength=NUM_CLASSES)
    n_valid_multi = np.bincount(values, weights=(counts[rows] >= 2), minlength=NUM_CLASSES)
    orig_labelled = known & a.labelled
    n_orig_labelled = np.bincount(a.original[orig_labelled].astype(np.int64), minlength=NUM_CLASSES)
    kept = orig_labelled & original_in_valid(a)
    n_orig_kept = np.bincount(a.original[kept].astype(np.int64), minlength=NUM_CLASSES)
    with np.errstate(invalid="ignore", divide="ignore"):
        multi_rate = np.where(n_valid > 0, n_valid_multi / n_valid, np.nan)
        original_valid_rate = np.where(n_orig_labelled > 0, n_orig_kept / n_orig_labelled, np.nan)
    return pd.DataFrame(
        {
            "dataset": name,
            "class_index": np.arange(NUM_CLASSES, dtype=np.int16),
            "wnid": vocab.wnid_array(),
            "name": vocab.name_array(),
            "n_original": n_original.astype(np.int64),
            "n_valid": n_valid.astype(np.int64),
            "multi_rate": multi_rate,
            "original_valid_rate": original_valid_rate,
        }
    )


def class_pairs(a: LabelArrays) -> np.ndarray:
    """All (a, b) class pairs, a < b, co-occurring in one image's valid set: int64 (n_pairs, 2), one row per image."""
    counts = a.counts
    out = []
    for k in np.unique(counts[counts >= 2]):
        rows = np.flatnonzero(counts == k)
        idx = a.offsets[rows][:, None] + np.arange(k)[None, :]
        sets = np.sort(a.values[idx].astype(np.int64), axis=1)
        i, j = np.triu_indices(int(k), 1)
        out.append(np.stack([sets[:, i].ravel(), sets[:, j].ravel()], axis=1))
    return np.concatenate(out) if out else np.zeros((0, 2), dtype=np.int64)


def cooccurrence(name: str, a: LabelArrays, top: int = 100, vocab: Vocabulary | None = None) -> pd.DataFrame:
    """The ``top`` most frequent co-occurring class pairs (ties: higher lift, then lower class indices)."""
    vocab = vocab or imagenet_vocabulary()
    pairs = class_pairs(a)
    n_labelled = int(a.labelled.sum())
    codes, n_ab = np.unique(pairs[:, 0] * NUM_CLASSES + pairs[:, 1], return_counts=True)
    ca, cb = codes // NUM_CLASSES, codes % NUM_CLASSES
    n_class = np.bincount(a.values.astype(np.int64), minlength=NUM_CLASSES)
    lift = n_ab * n_labelled / (n_class[ca] * n_class[cb]) if len(codes) else np.zeros(0)
    order = np.lexsort((cb, ca, -lift, -n_ab))[:top]
    wnids, names = vocab.wnid_array(), vocab.name_array()
    return pd.DataFrame(
        {
            "dataset": name,
            "class_a": ca[order].astype(np.int16),
            "class_b": cb[order].astype(np.int16),
            "n_images": n_ab[order].astype(np.int64),
            "lift": lift[order].astype(np.float64),
            "name_a": names[ca[order]],
            "name_b": names[cb[order]],
            "wnid_a": wnids[ca[order]],
            "wnid_b": wnids[cb[order]],
        }
    )


def summarize(
    name: str, a: LabelArrays, top_pairs: int = 100, skipped_unknown: int = 0, merged_duplicates: int = 0
) -> DatasetSummary:
    """All statistics of one dataset (plus what the label join reported: skipped entries, merged duplicates)."""
    s = dataset_stats(name, a)
    s["n_skipped_unknown"] = int(skipped_unknown)
    s["n_merged_duplicate_labels"] = int(merged_duplicates)
    return DatasetSummary(name, s, label_count_hist(name, a), class_stats(name, a), cooccurrence(name, a, top_pairs))


# --------------------------------------------------------------------------------------------------------------
# Comparison


def wilson_interval(x: int, n: int, z: float = Z95) -> tuple[float, float]:
    """Wilson score interval for the proportion x / n."""
    if n == 0:
        return (math.nan, math.nan)
    p = x / n
    denom = 1 + z * z / n
    center = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return (center - half, center + half)


def newcombe_difference_interval(x1: int, n1: int, x2: int, n2: int, z: float = Z95) -> tuple[float, float]:
    """Newcombe's hybrid score interval (method 10) for p1 - p2."""
    if n1 == 0 or n2 == 0:
        return (math.nan, math.nan)
    p1, p2 = x1 / n1, x2 / n2
    l1, u1 = wilson_interval(x1, n1, z)
    l2, u2 = wilson_interval(x2, n2, z)
    d = p1 - p2
    return (d - math.sqrt((p1 - l1) ** 2 + (u2 - p2) ** 2), d + math.sqrt((u1 - p1) ** 2 + (p2 - l2) ** 2))


def _hist_vector(hist: pd.DataFrame, size: int) -> np.ndarray:
    v = np.zeros(size, dtype=np.int64)
    v[hist["n_labels"].to_numpy() - 1] = hist["n_images"].to_numpy()
    return v


def compare(a: DatasetSummary, b: DatasetSummary, top_classes: int = 10, min_class_images: int = 10) -> pd.DataFrame:
    """Rows ``dataset_a, dataset_b, measure, value, ci_low, ci_high, class_index, wnid, name`` for A vs B."""
    size = int(max([1, *a.hist["n_labels"], *b.hist["n_labels"]]))
    ca, cb = _hist_vector(a.hist, size), _hist_vector(b.hist, size)
    na, nb = int(ca.sum()), int(cb.sum())
    rows: list[dict] = []

    def add(measure, value, ci=(math.nan, math.nan), cls=None):
        rows.append(
            {"measure": measure, "value": float(value), "ci_low": float(ci[0]), "ci_high": float(ci[1]), **(cls or {})}
        )

    if na and nb:
        p, q = ca / na, cb / nb
        add("label_count_total_variation", 0.5 * np.abs(p - q).sum())
        add("label_count_js_distance", jensenshannon(p, q, base=2))
        table = np.stack([ca, cb])
        table = table[:, table.sum(axis=0) > 0]
        if table.shape[1] >= 2:
            chi2, pvalue, dof, _ = sstats.chi2_contingency(table)
        else:  # one bin in both: identical distributions
            chi2, pvalue, dof = 0.0, 1.0, 0
        add("label_count_chi2_statistic", chi2)
        add("label_count_chi2_pvalue", pvalue)
        add("label_count_chi2_dof", dof)
    xa, xb = a.stats["n_multi"], b.stats["n_multi"]
    add(
        "multi_fraction_difference",
        a.stats["multi_fraction"] - b.stats["multi_fraction"],
        newcombe_difference_interval(xa, na, xb, nb),
    )
    add("mean_labels_difference", a.stats["mean_labels"] - b.stats["mean_labels"])
    add(
        "original_in_valid_fraction_difference",
        a.stats["original_in_valid_fraction"] - b.stats["original_in_valid_fraction"],
    )

    merged = a.classes.merge(b.classes, on=["class_index", "wnid", "name"], suffixes=("_a", "_b"))
    eligible = merged[(merged["n_valid_a"] >= min_class_images) & (merged["n_valid_b"] >= min_class_images)].copy()
    eligible["diff"] = eligible["multi_rate_a"] - eligible["multi_rate_b"]
    eligible["absdiff"] = eligible["diff"].abs()
    for r in eligible.sort_values(["absdiff", "class_index"], ascending=[False, True]).head(top_classes).itertuples():
        add(
            "class_multi_rate_difference",
            r.diff,
            cls={"class_index": int(r.class_index), "wnid": r.wnid, "name": r.name},
        )

    frame = pd.DataFrame(rows)
    for col in ("class_index", "wnid", "name"):
        if col not in frame:
            frame[col] = None
    frame["class_index"] = frame["class_index"].astype("Int16")
    frame.insert(0, "dataset_b", b.name)
    frame.insert(0, "dataset_a", a.name)
    return frame
