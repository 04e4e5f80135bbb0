"""How the dashboard looks: dataset colours, fonts, metric labels, the metrics each chart and table shows, and
the number formats (a report fraction ``f`` is shown and embedded as the percentage ``100 * f``)."""

from __future__ import annotations

import html
import math
from typing import SupportsFloat, SupportsIndex

import pandas as pd

# Colour-blind-safe palette (Okabe & Ito); dataset i always gets colour i, on every chart.
DATASET_COLORS = ("#0072B2", "#D55E00", "#009E73", "#CC79A7", "#E69F00", "#56B4E9", "#000000", "#F0E442")
COMPOSITION_COLOR = "#E69F00"
WITHIN_COLOR = "#56B4E9"
PUBLISHED_COLOR = "#6b7280"
YX_LINE = {"dash": "dash", "color": "#6b7280", "width": 1.5}
COLLECTION_STYLE = {
    "timm": {"color": "rgba(107, 114, 128, 0.45)", "symbol": "circle"},
    "imagenet-testbed": {"color": "rgba(124, 58, 237, 0.55)", "symbol": "square"},
}
OTHER_COLLECTION_STYLE = {"color": "rgba(31, 41, 55, 0.5)", "symbol": "triangle-up"}
FIT_STYLE = {  # the fit lines drawn over an A-vs-B scatter (mlray analyze's fits report)
    "linear": {"color": "#111827", "width": 1.6, "dash": "solid"},
    "probit": {"color": "#7c3aed", "width": 1.6, "dash": "dot"},
}
FAMILY_COLORS = ("#0072B2", "#D55E00", "#009E73", "#CC79A7", "#E69F00", "#56B4E9", "#8c564b", "#F0E442",
                 "#1f2937", "#7c3aed")  # fmt: skip
REGIME_COLORS = {
    "image-text": "#D55E00",
    "jft": "#CC79A7",
    "ig-yfcc": "#E69F00",
    "self-supervised": "#009E73",
    "in21k": "#0072B2",
    "in1k-distilled": "#56B4E9",
    "in1k-adversarial": "#8c564b",
    "in1k": "#9ca3af",
}
OTHER_GROUP_COLOR = "rgba(156, 163, 175, 0.6)"
MODEL_SYMBOLS = (
    "circle",
    "square",
    "diamond",
    "triangle-up",
    "x",
    "cross",
    "triangle-down",
    "pentagon",
    "star",
    "hexagon",
)  # the per-model markers of the accuracy-by-label-count lines

RISE_COLOR, FALL_COLOR, SAME_COLOR = "#009E73", "#D55E00", "#9ca3af"
FONT = "system-ui, -apple-system, 'Segoe UI', Roboto, 'Helvetica Neue', Arial, sans-serif"

METRIC_LABELS = {
    "top1": "Top-1 (original label)",
    "top5": "Top-5 (original label)",
    "real_top1": "ReaL top-1",
    "real_top5": "ReaL top-5",
    "vtopk_all": "Variable top-k (strict)",
    "vtopk_frac": "Variable top-k (fractional)",
    "vtopk_any": "Variable top-k (lenient)",
    "asma_vtopk_all": "ASMA (variable top-k, strict)",
    "ml_acc_shankar": "Multi-label accuracy (Shankar et al.)",
    "mlpc": "MLPC (all valid labels in the top k, multi-label images)",
}
SCATTER_METRICS = ("top1", "real_top1", "vtopk_all", "asma_vtopk_all")  # the paper's figure
SUBGROUP_METRICS = ("top1", "real_top1", "vtopk_all")
GAP_METRICS = ("top1", "real_top1", "vtopk_all")
TABLE_METRICS = ("top1", "top5", "real_top1", "real_top5", "vtopk_all", "vtopk_frac", "vtopk_any",
                 "asma_vtopk_all", "asma_real_top1", "ml_acc_shankar")  # fmt: skip
TABLE_GAP_METRICS = ("top1", "top5", "real_top1", "real_top5", "vtopk_all", "vtopk_frac", "vtopk_any")

PUBLISHED_PAIRS = (  # (x dataset, y dataset, panel title) of the published-results chart, when present
    ("imagenet-val", "imagenetv2-matched-frequency", "ImageNet val vs ImageNetV2 MatchedFrequency (top-1)"),
    ("imagenet-val", "imagenet-val-real", "ImageNet val: original vs ReaL labels (top-1)"),
)
RANK_METRICS = ("top1", "asma_vtopk_all")  # the rank-change chart: rankings under these two metrics
ANALYSIS_TABLE_METRICS = ("top1", "real_top1", "vtopk_all", "asma_vtopk_all", "mlpc")
PUBLISHED_TABLE_DATASETS = ("imagenet-val", "imagenet-val-real", "imagenetv2-matched-frequency")


def dataset_colors(datasets: list[str]) -> dict[str, str]:
    """Dataset name -> its colour (by report order; the palette repeats after eight datasets)."""
    return {d: DATASET_COLORS[i % len(DATASET_COLORS)] for i, d in enumerate(datasets)}


def num(v: object) -> float | None:
    """``v`` as a finite float for the JSON and the tables; None when it is missing, NaN, infinite or not a number."""
    if v is None or v is pd.NA or not isinstance(v, (SupportsFloat, SupportsIndex, str, bytes)):
        return None
    try:
        f = float(v)
    except (TypeError, ValueError):
        return None
    return f if math.isfinite(f) else None


def pct(v: object) -> float | None:
    """A report fraction as a percentage, ``100 * f``; None when it is missing (see :func:`num`)."""
    f = num(v)
    return None if f is None else 100 * f


def fmt_pct(v: object, digits: int = 2) -> str:
    """A report fraction as percentage text, ``"40.00 %"``; ``"n/a"`` when it is missing."""
    f = num(v)
    return "n/a" if f is None else f"{100 * f:.{digits}f} %"


def fmt_num(v: object, digits: int) -> str:
    """A number with ``digits`` decimals, ``"1.500"``; ``"n/a"`` when it is missing."""
    f = num(v)
    return "n/a" if f is None else f"{f:.{digits}f}"


def esc(text: object) -> str:
    """``str(text)`` escaped for HTML text and attribute values (quotes included)."""
    return html.escape(str(text), quote=True)
