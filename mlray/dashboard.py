"""The report dashboard (``mlray dashboard DIR``): one self-contained HTML page built from a report directory.

The page inlines everything it needs (plotly.js, its stylesheet, the small hand-written script that draws the
charts and sorts the tables, and the chart data as one JSON document), so it opens offline, from a file, with no
server. It reads whichever of these reports the directory holds:

=======================  ===================================================================================
report                   charts and tables it feeds
=======================  ===================================================================================
``dataset_stats``        multi-label share per dataset; the dataset table; the headline cards
``label_count_hist``     label-count histograms of the datasets side by side
``dataset_comparison``   the table of label-distribution comparisons between datasets
``model_metrics``        per-model scatter of dataset A vs each other dataset B under top-1, ReaL, variable
                         top-k and ASMA with the y = x line; the sortable model-metrics table
``subgroup_metrics``     accuracy by number of valid labels (one line per model and dataset)
``gap_decomposition``    gap A -> B per model split into composition (label-count mix) and within-group parts
``external_results``     published results (timm, imagenet-testbed): ImageNet val vs ImageNetV2 and ReaL
=======================  ===================================================================================

A is the first dataset in report order (the order of ``dataset_stats``, i.e. the run config's, then first
appearance in the other reports); every other dataset is a B. Dataset names are never assumed ("val", "v2"):
axes, legends and titles carry them. A chart whose inputs are missing is left out with a one-line note on the
page; a directory with none of the reports is an :class:`~mlray.errors.MlrayError`.

Numbers in the embedded JSON (``<script id="mlray-data" type="application/json">``) are percentages: a
report fraction ``f`` is stored as ``100 * f`` (and a gap in percentage points likewise), so they can be checked
exactly against the Parquet reports. The page's assets (``page.html``, ``dashboard.css``, ``dashboard.js``)
live in ``mlray/dashboard_assets`` and are read with :mod:`importlib.resources`.
"""

from __future__ import annotations

import datetime as _dt
import html
import json
import math
import os
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from string import Template

import pandas as pd

from .errors import MlrayError

DASHBOARD_FILE = "dashboard.html"

# Report name -> the columns the dashboard needs from it (extra columns are fine).
REPORT_COLUMNS: dict[str, tuple[str, ...]] = {
    "dataset_stats": ("dataset", "n_images", "n_labelled", "n_multi", "multi_fraction", "mean_labels"),
    "label_count_hist": ("dataset", "n_labels", "n_images", "fraction"),
    "dataset_comparison": ("dataset_a", "dataset_b", "measure", "value", "ci_low", "ci_high"),
    "model_metrics": ("model", "dataset", "metric", "value", "ci_low", "ci_high", "n", "available"),
    "subgroup_metrics": ("model", "dataset", "group", "metric", "value", "n"),
    "gap_decomposition": (
        "model",
        "dataset_a",
        "dataset_b",
        "metric",
        "value_a",
        "value_b",
        "gap",
        "composition",
        "within",
    ),  # fmt: skip
    "external_results": ("model", "img_size", "dataset", "metric", "value", "source", "collection"),
}

# Colour-blind-safe palette (Okabe & Ito); dataset i always gets colour i, on every chart.
DATASET_COLORS = ("#0072B2", "#D55E00", "#009E73", "#CC79A7", "#E69F00", "#56B4E9", "#000000", "#F0E442")
COMPOSITION_COLOR = "#E69F00"
WITHIN_COLOR = "#56B4E9"
YX_LINE = {"dash": "dash", "color": "#6b7280", "width": 1.5}

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
}
SCATTER_METRICS = ("top1", "real_top1", "vtopk_all", "asma_vtopk_all")  # the paper's figure
SUBGROUP_METRICS = ("top1", "real_top1", "vtopk_all")
GAP_METRICS = ("top1", "real_top1", "vtopk_all")
TABLE_METRICS = ("top1", "top5", "real_top1", "real_top5", "vtopk_all", "vtopk_frac", "vtopk_any",
                 "asma_vtopk_all", "asma_real_top1", "ml_acc_shankar")  # fmt: skip
TABLE_GAP_METRICS = ("top1", "top5", "real_top1", "real_top5", "vtopk_all", "vtopk_frac", "vtopk_any")

MIN_GAP_FOR_SHARE = 0.01  # composition / gap is shown only for gaps of at least 1 point (it is unstable near 0)
PUBLISHED_PAIRS = (  # (x dataset, y dataset, panel title) of the published-results chart, when present
    ("imagenet-val", "imagenetv2-matched-frequency", "ImageNet val vs ImageNetV2 MatchedFrequency (top-1)"),
    ("imagenet-val", "imagenet-val-real", "ImageNet val: original vs ReaL labels (top-1)"),
)
PUBLISHED_TABLE_DATASETS = ("imagenet-val", "imagenet-val-real", "imagenetv2-matched-frequency")
COLLECTION_STYLE = {
    "timm": {"color": "rgba(107, 114, 128, 0.45)", "symbol": "circle"},
    "imagenet-testbed": {"color": "rgba(124, 58, 237, 0.55)", "symbol": "square"},
}

FONT = "system-ui, -apple-system, 'Segoe UI', Roboto, 'Helvetica Neue', Arial, sans-serif"


# --------------------------------------------------------------------------------------------------------------
# Reading the reports


@dataclass
class Reports:
    """The reports found in one directory, with the dataset and model order the page uses."""

    directory: Path
    frames: dict[str, pd.DataFrame]  # report name -> its table (possibly with no rows)
    files: dict[str, Path]
    datasets: list[str] = field(default_factory=list)
    models: list[str] = field(default_factory=list)

    def get(self, name: str) -> pd.DataFrame | None:
        """The report's rows, or None when the report is absent or has no rows."""
        frame = self.frames.get(name)
        return frame if frame is not None and len(frame) else None


def load_reports(reports_dir: str | os.PathLike) -> Reports:
    """Read every known report Parquet file present in ``reports_dir``.

    Errors (one line each): the folder does not exist; it holds none of the reports; a report is not a readable
    Parquet file or, having rows, lacks a column the dashboard needs.
    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    directory = Path(reports_dir)
    if not directory.is_dir():
        raise MlrayError(f"{directory}: no such report directory")
    frames: dict[str, pd.DataFrame] = {}
    files: dict[str, Path] = {}
    for name, needed in REPORT_COLUMNS.items():
        path = directory / f"{name}.parquet"
        if not path.is_file():
            continue
        try:
            frame = pq.read_table(path).to_pandas()
        except (pa.ArrowInvalid, OSError) as exc:
            raise MlrayError(f"{path}: not a readable Parquet file ({str(exc).splitlines()[0]})") from None
        missing = [c for c in needed if c not in frame.columns]
        if len(frame) and missing:
            raise MlrayError(f"{path}: not an mlray {name} report: missing column(s) {', '.join(missing)}")
        frames[name], files[name] = frame, path
    if not frames:
        expected = ", ".join(f"{n}.parquet" for n in REPORT_COLUMNS)
        raise MlrayError(
            f"{directory}: no mlray reports in this folder (expected any of {expected}; "
            "write them with mlray stats / score / evaluate / import-results)"
        )
    reports = Reports(directory, frames, files)
    reports.datasets = _dataset_order(reports)
    reports.models = _model_order(reports)
    return reports


def _dataset_order(r: Reports) -> list[str]:
    order: list[str] = []

    def add(values) -> None:
        for v in values:
            if isinstance(v, str) and v not in order:
                order.append(v)

    for name in ("dataset_stats", "label_count_hist", "model_metrics", "subgroup_metrics"):
        frame = r.get(name)
        if frame is not None:
            add(frame["dataset"])
    gd = r.get("gap_decomposition")
    if gd is not None:
        add(pd.unique(pd.concat([gd["dataset_a"], gd["dataset_b"]], ignore_index=True)))
    return order


def _model_order(r: Reports) -> list[str]:
    order: list[str] = []
    for name in ("model_metrics", "subgroup_metrics", "gap_decomposition"):
        frame = r.get(name)
        if frame is not None:
            order += [m for m in pd.unique(frame["model"]) if m not in order]
    return order


# --------------------------------------------------------------------------------------------------------------
# Small helpers


def _num(v) -> float | None:
    """A float for the JSON (None for missing / NaN / inf)."""
    if v is None or v is pd.NA:
        return None
    try:
        f = float(v)
    except (TypeError, ValueError):
        return None
    return f if math.isfinite(f) else None


def _pct(v) -> float | None:
    """A fraction as a percentage (``100 * f``), None when missing."""
    f = _num(v)
    return None if f is None else 100 * f


def _fmt_pct(v, digits: int = 2) -> str:
    f = _num(v)
    return "n/a" if f is None else f"{100 * f:.{digits}f} %"


def _fmt_num(v, digits: int) -> str:
    f = _num(v)
    return "n/a" if f is None else f"{f:.{digits}f}"


def _esc(text) -> str:
    return html.escape(str(text), quote=True)


def dataset_colors(datasets: list[str]) -> dict[str, str]:
    """Dataset name -> its colour (by report order; the palette repeats after eight datasets)."""
    return {d: DATASET_COLORS[i % len(DATASET_COLORS)] for i, d in enumerate(datasets)}


def _base_layout(**extra) -> dict:
    layout = {
        "template": "plotly_white",
        "font": {"family": FONT, "size": 13, "color": "#1f2937"},
        "margin": {"l": 64, "r": 24, "t": 56, "b": 56},
        "hoverlabel": {"font": {"family": FONT}},
        "legend": {"orientation": "h", "yanchor": "bottom", "y": 1.02, "x": 0, "xanchor": "left"},
    }
    layout.update(extra)
    return layout


def _panels_layout(height: int, top: int = 100, bottom: int = 60, left: int = 64, **extra) -> dict:
    """Layout of a figure with subplot titles: the legend sits in the top margin, above the titles."""
    plot_height = max(1, height - top - bottom)
    legend = {"orientation": "h", "yanchor": "bottom", "xanchor": "left", "x": 0, "y": 1 + 30 / plot_height}
    return _base_layout(height=height, margin={"l": left, "r": 24, "t": top, "b": bottom}, legend=legend, **extra)


def _figure_json(fig) -> dict:
    import plotly.io as pio

    return json.loads(pio.to_json(fig, validate=True, engine="json"))


@dataclass
class Chart:
    """One chart on the page: a plotly figure (as JSON) or, when its inputs are missing, a note instead."""

    id: str
    title: str
    figure: dict | None = None
    caption: str = ""
    note: str = ""


def _missing(report: str, what: str = "") -> str:
    return f"{report}.parquet is not in this report directory" + (f" ({what})" if what else "")


# --------------------------------------------------------------------------------------------------------------
# Charts


def chart_label_hist(r: Reports, colors: dict[str, str]) -> Chart:
    """Grouped bars: share of each dataset's labelled images (%) by number of valid labels, side by side."""
    import plotly.graph_objects as go

    title = "Images by number of valid labels"
    hist = r.get("label_count_hist")
    if hist is None:
        return Chart("label-hist", title, note=_missing("label_count_hist", "written by mlray stats / evaluate"))
    fig = go.Figure()
    for d in [d for d in r.datasets if d in set(hist["dataset"])]:
        rows = hist[hist["dataset"] == d].sort_values("n_labels")
        fig.add_trace(
            go.Bar(
                x=[int(k) for k in rows["n_labels"]],
                y=[_pct(f) for f in rows["fraction"]],
                customdata=[[int(n)] for n in rows["n_images"]],
                name=_esc(d),
                marker={"color": colors[d]},
                hovertemplate=f"<b>{_esc(d)}</b><br>%{{x}} valid label(s): %{{y:.2f}} %% of labelled images"
                "<br>%{customdata[0]:,} images<extra></extra>",
            )
        )
    fig.update_layout(
        _base_layout(
            barmode="group",
            height=400,
            bargap=0.18,
            xaxis={"title": {"text": "number of valid labels per image"}, "dtick": 1},
            yaxis={"title": {"text": "share of labelled images (%)"}, "ticksuffix": " %", "rangemode": "tozero"},
            updatemenus=[_log_toggle()],
        )
    )
    return Chart(
        "label-hist",
        title,
        _figure_json(fig),
        "Share of each dataset's labelled images (at least one valid label) that have exactly k valid labels. "
        "Use the <i>log scale</i> button to see the rare many-label images.",
    )


def _log_toggle() -> dict:
    return {
        "type": "buttons",
        "direction": "right",
        "x": 1,
        "xanchor": "right",
        "y": 1,
        "yanchor": "top",
        "showactive": True,
        "pad": {"r": 0, "t": 0},
        "buttons": [
            {"label": "linear", "method": "relayout", "args": [{"yaxis.type": "linear"}]},
            {"label": "log scale", "method": "relayout", "args": [{"yaxis.type": "log"}]},
        ],
    }


def chart_multi_share(r: Reports, colors: dict[str, str]) -> Chart:
    """Bars: share of labelled images with two or more valid labels, per dataset."""
    import plotly.graph_objects as go

    title = "Multi-label share"
    st = r.get("dataset_stats")
    if st is None:
        return Chart("multi-share", title, note=_missing("dataset_stats", "written by mlray stats / evaluate"))
    names = [d for d in r.datasets if d in set(st["dataset"])]
    rows = st.set_index("dataset").loc[names]
    fig = go.Figure(
        go.Bar(
            x=names,
            y=[_pct(f) for f in rows["multi_fraction"]],
            customdata=[
                [int(m), int(n), _num(ml)] for m, n, ml in zip(rows["n_multi"], rows["n_labelled"], rows["mean_labels"])
            ],
            marker={"color": [colors[d] for d in names]},
            text=[_fmt_pct(f) for f in rows["multi_fraction"]],
            textposition="outside",
            cliponaxis=False,
            hovertemplate="<b>%{x}</b><br>%{y:.2f} % of labelled images have ≥ 2 valid labels"
            "<br>%{customdata[0]:,} of %{customdata[1]:,}; mean %{customdata[2]:.3f} labels per image<extra></extra>",
            showlegend=False,
        )
    )
    top = max([_pct(f) or 0 for f in rows["multi_fraction"]] + [1])
    fig.update_layout(
        _base_layout(
            height=400,
            xaxis={"title": {"text": "dataset"}},
            yaxis={
                "title": {"text": "images with ≥ 2 valid labels (%)"},
                "ticksuffix": " %",
                "range": [0, min(100, top * 1.18)],
            },  # fmt: skip
        )
    )
    return Chart(
        "multi-share",
        title,
        _figure_json(fig),
        "Share of labelled images with two or more valid labels. A test set with more multi-label images "
        "penalizes single-label top-1 accuracy more.",
    )


def _metric_values(mm: pd.DataFrame, dataset: str, metric: str) -> pd.DataFrame:
    rows = mm[(mm["dataset"] == dataset) & (mm["metric"] == metric)]
    if "available" in rows.columns:
        rows = rows[rows["available"].fillna(False).astype(bool)]
    rows = rows[rows["value"].notna()]
    return rows.drop_duplicates("model").set_index("model")


def chart_scatter(r: Reports, colors: dict[str, str], a: str, b: str, index: int) -> Chart:
    """Per model: accuracy on A (x) vs on B (y) under top-1, ReaL, variable top-k and ASMA, with y = x dashed."""
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    mm = r.get("model_metrics")
    cid = f"scatter-{index}"
    title = f"{a} vs {b}: every model, four ways of scoring"
    metrics = [m for m in SCATTER_METRICS if m in set(mm["metric"])]
    if not metrics:
        return Chart(cid, title, note="model_metrics.parquet has none of " + ", ".join(SCATTER_METRICS))
    fig = make_subplots(rows=1, cols=len(metrics), subplot_titles=[METRIC_LABELS[m] for m in metrics],
                        horizontal_spacing=0.07)  # fmt: skip
    fig.update_annotations(font={"size": 13})  # the subplot titles
    n_points = 0
    left_out: set[str] = set()
    for i, metric in enumerate(metrics, start=1):
        va, vb = _metric_values(mm, a, metric), _metric_values(mm, b, metric)
        models = [m for m in r.models if m in va.index and m in vb.index]
        left_out |= {m for m in set(va.index) ^ set(vb.index)}
        xs = [_pct(va.at[m, "value"]) for m in models]
        ys = [_pct(vb.at[m, "value"]) for m in models]
        lo_all = [v for v in xs + ys if v is not None]
        for frame, col in ((va, "ci_low"), (vb, "ci_low")):
            lo_all += [v for v in (_pct(frame.at[m, col]) for m in models) if v is not None]
        hi_all = [v for v in xs + ys if v is not None]
        for frame, col in ((va, "ci_high"), (vb, "ci_high")):
            hi_all += [v for v in (_pct(frame.at[m, col]) for m in models) if v is not None]
        if lo_all:
            span = max(hi_all) - min(lo_all)
            pad = max(2.0, 0.08 * span)
            lo, hi = max(0.0, min(lo_all) - pad), min(100.0, max(hi_all) + pad)
        else:
            lo, hi = 0.0, 100.0
        fig.add_trace(
            go.Scatter(
                x=[lo, hi],
                y=[lo, hi],
                mode="lines",
                line=YX_LINE,
                name="y = x (no change)",
                legendgroup="yx",
                showlegend=i == 1,
                hoverinfo="skip",
            ),  # fmt: skip
            row=1,
            col=i,
        )
        gaps = [x - y for x, y in zip(xs, ys)]
        fig.add_trace(
            go.Scatter(
                x=xs,
                y=ys,
                mode="markers",
                name=f"models ({len(models)})",
                legendgroup="models",
                showlegend=i == 1,
                text=[_esc(m) for m in models],
                customdata=[[g] for g in gaps],
                marker={"color": colors[b], "size": 10, "line": {"color": "white", "width": 1}, "opacity": 0.9},
                error_x=_error_bars(va, models, xs),
                error_y=_error_bars(vb, models, ys),
                hovertemplate=f"<b>%{{text}}</b><br>{_esc(a)}: %{{x:.2f}} %<br>{_esc(b)}: %{{y:.2f}} %"
                f"<br>gap: %{{customdata[0]:+.2f}} points<extra>{_esc(METRIC_LABELS[metric])}</extra>",
            ),
            row=1,
            col=i,
        )
        n_points += len(models)
        axis = "" if i == 1 else str(i)
        fig.update_xaxes(range=[lo, hi], title={"text": f"{_esc(a)} (%)"}, constrain="domain", row=1, col=i)
        fig.update_yaxes(range=[lo, hi], scaleanchor=f"x{axis}", scaleratio=1, constrain="domain", row=1, col=i,
                         title={"text": f"{_esc(b)} (%)" if i == 1 else ""})  # fmt: skip
        if not models:
            fig.add_annotation(
                x=0.5, y=0.5, xref=f"x{axis} domain", yref=f"y{axis} domain", showarrow=False,
                text="not available<br>for these models", font={"size": 12, "color": "#92400e"},
            )  # fmt: skip
        if gaps:
            fig.add_annotation(
                x=0.03, y=0.97, xref=f"x{axis} domain", yref=f"y{axis} domain", xanchor="left", yanchor="top",
                text=f"mean gap {sum(gaps) / len(gaps):+.2f} pts", showarrow=False,
                font={"size": 12, "color": "#374151"}, bgcolor="rgba(255,255,255,0.85)",
            )  # fmt: skip
    if not n_points:
        return Chart(cid, title, note=f"no model has metrics on both {a} and {b} in model_metrics.parquet")
    fig.update_layout(_panels_layout(height=440))
    caption = (
        f"Each point is one model: its accuracy on <b>{_esc(a)}</b> (x) and on <b>{_esc(b)}</b> (y). Points below "
        "the dashed y = x line score lower on the second dataset. Compare the mean gaps across the panels: a drop "
        "that comes from the datasets' different share of multi-label images shrinks under metrics that credit "
        "every valid label (ReaL, variable top-k) or weigh label-count subgroups equally (ASMA). "
        "Whiskers: 95 % bootstrap intervals (when the report has them)."
    )
    if left_out:
        caption += f" Left out (metrics on only one of the two datasets): {_esc(', '.join(sorted(left_out)))}."
    return Chart(cid, title, _figure_json(fig), caption)


def _error_bars(frame: pd.DataFrame, models: list[str], values: list[float]) -> dict:
    plus, minus = [], []
    for m, v in zip(models, values):
        lo, hi = _pct(frame.at[m, "ci_low"]), _pct(frame.at[m, "ci_high"])
        plus.append(max(0.0, hi - v) if hi is not None and v is not None else 0.0)
        minus.append(max(0.0, v - lo) if lo is not None and v is not None else 0.0)
    visible = any(plus) or any(minus)
    return {"type": "data", "symmetric": False, "array": plus, "arrayminus": minus, "visible": visible,
            "thickness": 1, "width": 0, "color": "rgba(55, 65, 81, 0.45)"}  # fmt: skip


def _group_key(label: str) -> tuple[int, str]:
    digits = "".join(ch for ch in str(label) if ch.isdigit())
    return (int(digits) if digits else 10**6, str(label))


def chart_subgroups(r: Reports, colors: dict[str, str]) -> Chart:
    """Lines: each model's accuracy on each dataset per subgroup of images with k valid labels."""
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    title = "Accuracy by number of valid labels"
    sg = r.get("subgroup_metrics")
    if sg is None:
        return Chart("subgroups", title, note=_missing("subgroup_metrics", "written by mlray score / evaluate"))
    metrics = [m for m in SUBGROUP_METRICS if m in set(sg["metric"])]
    if not metrics:
        return Chart("subgroups", title, note="subgroup_metrics.parquet has none of " + ", ".join(SUBGROUP_METRICS))
    groups = sorted(pd.unique(sg["group"].astype(str)), key=_group_key)
    fig = make_subplots(rows=1, cols=len(metrics), subplot_titles=[METRIC_LABELS[m] for m in metrics],
                        shared_yaxes=True, horizontal_spacing=0.04)  # fmt: skip
    fig.update_annotations(font={"size": 13})  # the subplot titles
    shown_legend: set[str] = set()
    datasets = [d for d in r.datasets if d in set(sg["dataset"])]
    n_models = len(pd.unique(sg["model"]))
    for i, metric in enumerate(metrics, start=1):
        part = sg[sg["metric"] == metric]
        for d in datasets:
            for model in [m for m in r.models if m in set(part["model"])]:
                rows = part[(part["dataset"] == d) & (part["model"] == model)]
                if rows.empty:
                    continue
                by_group = rows.assign(group=rows["group"].astype(str)).set_index("group")
                ys, ns = [], []
                for g in groups:
                    ok = g in by_group.index and (
                        "available" not in by_group.columns or bool(by_group.at[g, "available"])
                    )
                    ys.append(_pct(by_group.at[g, "value"]) if ok else None)
                    n = _num(by_group.at[g, "n"]) if g in by_group.index else None
                    ns.append(0 if n is None else int(n))
                if all(y is None for y in ys):
                    continue
                fig.add_trace(
                    go.Scatter(
                        x=groups,
                        y=ys,
                        mode="lines+markers",
                        name=_esc(d),
                        legendgroup=d,
                        showlegend=d not in shown_legend,
                        text=[_esc(model)] * len(groups),
                        customdata=[[n] for n in ns],
                        line={"color": colors[d], "width": 2 if n_models <= 10 else 1},
                        marker={"color": colors[d], "size": 7 if n_models <= 10 else 4},
                        opacity=0.9 if n_models <= 10 else 0.55,
                        connectgaps=False,
                        hovertemplate=f"<b>%{{text}}</b> on {_esc(d)}<br>%{{x}} valid label(s): %{{y:.2f}} %"
                        f"<br>%{{customdata[0]:,}} images<extra>{_esc(METRIC_LABELS[metric])}</extra>",
                    ),
                    row=1,
                    col=i,
                )
                shown_legend.add(d)
        fig.update_xaxes(title={"text": "valid labels per image"}, type="category", row=1, col=i)
    if not shown_legend:
        return Chart("subgroups", title, note="subgroup_metrics.parquet has no available subgroup values")
    fig.update_yaxes(title={"text": "accuracy in the subgroup (%)"}, row=1, col=1)
    fig.update_layout(_panels_layout(height=430))
    return Chart(
        "subgroups",
        title,
        _figure_json(fig),
        "One line per model and dataset (colour = dataset): accuracy restricted to the images with exactly k "
        "valid labels (the last group merges the larger counts). Similar lines across datasets within a group "
        "mean the models generalize; what differs is how many images each group holds. Hover for the model and "
        "the group size.",
    )


def chart_gap(r: Reports, colors: dict[str, str], a: str, b: str, index: int) -> Chart:
    """Stacked horizontal bars per model: gap A - B = composition (label-count mix) + within-group difference."""
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    cid = f"gap-{index}"
    title = f"Gap decomposition {a} → {b}"
    gd = r.get("gap_decomposition")
    rows = gd[(gd["dataset_a"] == a) & (gd["dataset_b"] == b)]
    rows = rows[rows["gap"].notna()]
    metrics = [m for m in GAP_METRICS if m in set(rows["metric"])]
    if not metrics:
        note = f"gap_decomposition.parquet has no gap for {a} → {b} (models need predictions on both)"
        pair = gd[(gd["dataset_a"] == a) & (gd["dataset_b"] == b)]
        if "a_standardized_to_b" in pair.columns and pair["a_standardized_to_b"].notna().any():
            note += f"; the table below gives {a}'s accuracy reweighted to {b}'s label-count mix"
        return Chart(cid, title, note=note)
    models = [m for m in r.models if m in set(rows["model"])]
    fig = make_subplots(rows=1, cols=len(metrics), subplot_titles=[METRIC_LABELS[m] for m in metrics],
                        shared_yaxes=True, horizontal_spacing=0.03)  # fmt: skip
    fig.update_annotations(font={"size": 13})  # the subplot titles
    for i, metric in enumerate(metrics, start=1):
        part = rows[rows["metric"] == metric].drop_duplicates("model").set_index("model")
        ms = [m for m in models if m in part.index]
        comp = [_pct(part.at[m, "composition"]) for m in ms]
        within = [_pct(part.at[m, "within"]) for m in ms]
        gap = [_pct(part.at[m, "gap"]) for m in ms]
        custom = [[_pct(part.at[m, "value_a"]), _pct(part.at[m, "value_b"]), g] for m, g in zip(ms, gap)]
        hover_tail = (f"<br>{_esc(a)}: %{{customdata[0]:.2f}} %, {_esc(b)}: %{{customdata[1]:.2f}} %"
                      f"<br>gap %{{customdata[2]:+.2f}} pts<extra>{_esc(METRIC_LABELS[metric])}</extra>")  # fmt: skip
        fig.add_trace(
            go.Bar(
                y=ms,
                x=comp,
                orientation="h",
                name="composition (label-count mix)",
                legendgroup="comp",
                showlegend=i == 1,
                marker={"color": COMPOSITION_COLOR},
                customdata=custom,
                hovertemplate="<b>%{y}</b><br>composition: %{x:+.2f} pts" + hover_tail,
            ),  # fmt: skip
            row=1,
            col=i,
        )
        fig.add_trace(
            go.Bar(
                y=ms,
                x=within,
                orientation="h",
                name="within groups",
                legendgroup="within",
                showlegend=i == 1,
                marker={"color": WITHIN_COLOR},
                customdata=custom,
                hovertemplate="<b>%{y}</b><br>within groups: %{x:+.2f} pts" + hover_tail,
            ),  # fmt: skip
            row=1,
            col=i,
        )
        err = None
        if {"gap_ci_low", "gap_ci_high"} <= set(part.columns):
            lo = [_pct(part.at[m, "gap_ci_low"]) for m in ms]
            hi = [_pct(part.at[m, "gap_ci_high"]) for m in ms]
            plus = [h - g if h is not None and g is not None else 0.0 for h, g in zip(hi, gap)]
            minus = [g - lw if lw is not None and g is not None else 0.0 for lw, g in zip(lo, gap)]
            if any(plus) or any(minus):
                err = {"type": "data", "symmetric": False, "array": plus, "arrayminus": minus, "thickness": 1.2,
                       "width": 4, "color": "#111827"}  # fmt: skip
        fig.add_trace(
            go.Scatter(
                y=ms,
                x=gap,
                mode="markers",
                name="total gap (95 % CI)",
                legendgroup="gap",
                showlegend=i == 1,
                marker={"symbol": "diamond", "size": 10, "color": "#111827", "line": {"color": "white", "width": 1}},
                error_x=err,
                customdata=custom,
                hovertemplate="<b>%{y}</b>" + hover_tail,
            ),  # fmt: skip
            row=1,
            col=i,
        )
        fig.update_xaxes(zeroline=True, zerolinecolor="#9ca3af", zerolinewidth=1.5, ticksuffix="", row=1, col=i)
    fig.update_yaxes(autorange="reversed", type="category", automargin=True, row=1, col=1)
    fig.add_annotation(x=0.5, y=0, xref="paper", yref="paper", yanchor="top", yshift=-28, showarrow=False,
                       text=f"gap in percentage points ({_esc(a)} − {_esc(b)})", font={"size": 14})  # fmt: skip
    fig.update_layout(_panels_layout(height=min(2400, 200 + 36 * len(models)), bottom=64, left=24,
                                     barmode="relative", bargap=0.3))  # fmt: skip
    return Chart(
        cid,
        title,
        _figure_json(fig),
        f"Per model, the accuracy gap {_esc(a)} − {_esc(b)} (diamond) split into <b>composition</b> "
        f"Σ<sub>g</sub> (w<sub>A</sub>(g) − w<sub>B</sub>(g))·m<sub>A</sub>(g): the part due to the datasets "
        "holding different shares of images with 1, 2, 3 … valid labels, and <b>within groups</b> "
        "Σ<sub>g</sub> w<sub>B</sub>(g)·(m<sub>A</sub>(g) − m<sub>B</sub>(g)): the part left when images with the "
        "same number of labels are compared. Top-1 here is taken over labelled images with an original label.",
    )


def _published_pairs(ext: pd.DataFrame, x_ds: str, y_ds: str) -> pd.DataFrame:
    """Top-1 of each (collection, model, img_size) on both datasets: columns x, y, model, img_size, collection."""
    top1 = ext[ext["metric"] == "top1"]
    key = ["collection", "model", "img_size"]
    left = top1[top1["dataset"] == x_ds][key + ["value"]].rename(columns={"value": "x"})
    right = top1[top1["dataset"] == y_ds][key + ["value"]].rename(columns={"value": "y"})
    left = left.assign(img_size=left["img_size"].astype("Int64").fillna(-1))
    right = right.assign(img_size=right["img_size"].astype("Int64").fillna(-1))
    return left.merge(right, on=key, how="inner")


def chart_published(r: Reports, colors: dict[str, str]) -> Chart:
    """Published top-1 (external_results): ImageNet val vs ImageNetV2 MatchedFrequency and vs ReaL labels, with
    this report's models on the same axes when the report's dataset names match."""
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    title = "Published results"
    ext = r.get("external_results")
    if ext is None:
        return Chart("published", title, note=_missing("external_results", "mlray import-results writes it"))
    panels = [(x, y, t, _published_pairs(ext, x, y)) for x, y, t in PUBLISHED_PAIRS]
    panels = [p for p in panels if len(p[3])]
    if not panels:
        return Chart("published", title, note="external_results.parquet has no model with top-1 on both "
                     + " and ".join(f"{x} / {y}" for x, y, _ in PUBLISHED_PAIRS))  # fmt: skip
    fig = make_subplots(rows=1, cols=len(panels), subplot_titles=[p[2] for p in panels], horizontal_spacing=0.08)
    fig.update_annotations(font={"size": 13})  # the subplot titles
    mm = r.get("model_metrics")
    shown: set[str] = set()
    for i, (x_ds, y_ds, _, pairs) in enumerate(panels, start=1):
        xs_all = [100 * v for v in pairs["x"]] + [100 * v for v in pairs["y"]]
        for collection in sorted(pd.unique(pairs["collection"])):
            p = pairs[pairs["collection"] == collection]
            style = COLLECTION_STYLE.get(collection, {"color": "rgba(31, 41, 55, 0.5)", "symbol": "triangle-up"})
            sizes = ["" if s < 0 else f" @ {int(s)} px" for s in p["img_size"]]
            fig.add_trace(
                go.Scatter(
                    x=[_pct(v) for v in p["x"]],
                    y=[_pct(v) for v in p["y"]],
                    mode="markers",
                    name=_esc(f"{collection} ({len(p):,} models)" if i == 1 else collection),
                    legendgroup=f"pub-{collection}",
                    text=[_esc(f"{m}{s}") for m, s in zip(p["model"], sizes)],
                    marker={"color": style["color"], "symbol": style["symbol"], "size": 6},
                    hovertemplate=f"<b>%{{text}}</b><br>{_esc(x_ds)}: %{{x:.2f}} %<br>{_esc(y_ds)}: %{{y:.2f}} %"
                    f"<extra>{_esc(collection)}</extra>",
                    showlegend=i == 1 or collection not in set(panels[0][3]["collection"]),
                ),
                row=1,
                col=i,
            )
        overlay = _own_points(mm, r.models, x_ds, y_ds) if y_ds in r.datasets and x_ds in r.datasets else None
        if overlay:
            xs, ys, models = overlay
            xs_all += xs + ys
            fig.add_trace(
                go.Scatter(
                    x=xs,
                    y=ys,
                    mode="markers",
                    name=f"this report ({len(models)} models)",
                    text=[_esc(m) for m in models],
                    legendgroup="own",
                    showlegend="own" not in shown,
                    marker={
                        "color": colors[y_ds],
                        "size": 11,
                        "symbol": "star",
                        "line": {"color": "#111827", "width": 1},
                    },
                    hovertemplate=f"<b>%{{text}}</b> (this report)<br>{_esc(x_ds)}: %{{x:.2f}} %"
                    f"<br>{_esc(y_ds)}: %{{y:.2f}} %<extra></extra>",
                ),  # fmt: skip
                row=1,
                col=i,
            )
            shown.add("own")
        lo, hi = max(0.0, min(xs_all) - 2), min(100.0, max(xs_all) + 2)
        fig.add_trace(
            go.Scatter(
                x=[lo, hi],
                y=[lo, hi],
                mode="lines",
                line=YX_LINE,
                name="y = x",
                legendgroup="yx",
                showlegend=i == 1,
                hoverinfo="skip",
            ),  # fmt: skip
            row=1,
            col=i,
        )
        axis = "" if i == 1 else str(i)
        fig.update_xaxes(range=[lo, hi], title={"text": f"{_esc(x_ds)} top-1 (%)"}, constrain="domain", row=1, col=i)
        fig.update_yaxes(range=[lo, hi], title={"text": f"{_esc(y_ds)} top-1 (%)"}, scaleanchor=f"x{axis}",
                         scaleratio=1, constrain="domain", row=1, col=i)  # fmt: skip
    fig.update_layout(_panels_layout(height=600))
    used = {d for x, y, _, _ in panels for d in (x, y)}
    sources = ", ".join(sorted(pd.unique(ext[ext["dataset"].isin(used)]["source"].astype(str))))
    caption = (
        "Top-1 accuracy published by model zoos (one point per model and evaluation resolution), read by "
        f"<code>mlray import-results</code> from {_esc(sources)}. Points below the dashed y = x line lose accuracy "
        "on the second dataset; points above it gain (ReaL labels credit every valid label)."
    )
    if "own" in shown:
        caption += " Stars: this report's models (its datasets carry the same names)."
    return Chart("published", title, _figure_json(fig), caption)


def _own_points(mm: pd.DataFrame | None, order: list[str], x_ds: str, y_ds: str):
    if mm is None:
        return None
    va, vb = _metric_values(mm, x_ds, "top1"), _metric_values(mm, y_ds, "top1")
    models = [m for m in order if m in va.index and m in vb.index]
    if not models:
        return None
    return [_pct(va.at[m, "value"]) for m in models], [_pct(vb.at[m, "value"]) for m in models], models


# --------------------------------------------------------------------------------------------------------------
# Tables (rendered here; sorted and filtered in the browser by dashboard.js)


@dataclass
class Column:
    title: str
    kind: str = "text"  # text | int | pct | pts | num
    tip: str = ""


def _cell(value, kind: str, tip: str = "", text: str | None = None, missing: str = "n/a") -> str:
    """One <td>: numeric cells carry the raw value in data-v (what the sort compares; empty when missing, shown
    as ``missing``), text cells their text."""
    if kind == "text":
        shown = "" if value is None or (isinstance(value, float) and math.isnan(value)) else str(value)
        return f'<td title="{_esc(tip)}">{_esc(shown)}</td>' if tip else f"<td>{_esc(shown)}</td>"
    f = _num(value)
    if text is None:
        if f is None:
            text = missing
        elif kind == "int":
            text = f"{int(f):,}"
        elif kind == "pct":
            text = f"{100 * f:.2f}"
        elif kind == "pts":
            text = f"{100 * f:+.2f}"
        else:
            text = f"{f:.4g}"
    data_v = "" if f is None else repr(f)
    title = f' title="{_esc(tip)}"' if tip else ""
    return f'<td class="num" data-v="{data_v}"{title}>{_esc(text)}</td>'


def _table(tid: str, columns: list[Column], rows: list[list[str]], caption: str = "", filter_box: bool = False) -> str:
    head = "".join(
        f'<th scope="col" data-type="{"text" if c.kind == "text" else "num"}"'
        + (f' title="{_esc(c.tip)}"' if c.tip else "")
        + f'><button type="button">{_esc(c.title)}<span class="arrow" aria-hidden="true"></span></button></th>'
        for c in columns
    )
    body = "\n".join("<tr>" + "".join(r) + "</tr>" for r in rows)
    tools = ""
    if filter_box:
        tools = (f'<div class="table-tools"><input type="search" class="table-filter" data-table="{tid}" '
                 f'placeholder="filter rows…" aria-label="filter rows"><span class="row-count" data-table="{tid}">'
                 f"{len(rows):,} rows</span></div>")  # fmt: skip
    cap = f'<p class="caption">{caption}</p>' if caption else ""
    return (f'{tools}<div class="table-wrap"><table class="sortable" id="{tid}"><thead><tr>{head}</tr></thead>'
            f"<tbody>\n{body}\n</tbody></table></div>{cap}")  # fmt: skip


def table_datasets(r: Reports) -> str | None:
    st = r.get("dataset_stats")
    if st is None:
        return None
    cols = [Column("dataset"), Column("images", "int"), Column("labelled", "int", "at least one valid label"),
            Column("empty", "int", "annotated, no valid ImageNet class"), Column("not annotated", "int"),
            Column("multi-label", "int", "≥ 2 valid labels"), Column("multi-label share (%)", "pct", "of labelled"),
            Column("mean labels", "num", "valid labels per labelled image"),
            Column("original in valid set (%)", "pct", "original label among the valid labels")]  # fmt: skip
    rows = []
    names = [d for d in r.datasets if d in set(st["dataset"])]
    for d in names:
        s = st[st["dataset"] == d].iloc[0]
        rows.append([
            _cell(d, "text"), _cell(s["n_images"], "int"), _cell(s["n_labelled"], "int"),
            _cell(s.get("n_empty"), "int"), _cell(s.get("n_unannotated"), "int"), _cell(s["n_multi"], "int"),
            _cell(s["multi_fraction"], "pct"),
            _cell(s["mean_labels"], "num", text=_fmt_num(s["mean_labels"], 3)),
            _cell(s.get("original_in_valid_fraction"), "pct"),
        ])  # fmt: skip
    return _table("table-datasets", cols, rows)


def table_comparison(r: Reports) -> str | None:
    comp = r.get("dataset_comparison")
    if comp is None:
        return None
    glob = comp[comp["measure"] != "class_multi_rate_difference"]
    if glob.empty:
        return None
    cols = [Column("dataset A"), Column("dataset B"), Column("measure"), Column("value", "num"),
            Column("95 % CI low", "num"), Column("95 % CI high", "num")]  # fmt: skip
    rows = [
        [_cell(x.dataset_a, "text"), _cell(x.dataset_b, "text"), _cell(x.measure, "text"),
         _cell(x.value, "num"), _cell(x.ci_low, "num", missing="—"), _cell(x.ci_high, "num", missing="—")]
        for x in glob.itertuples()
    ]  # fmt: skip
    return _table(
        "table-comparison",
        cols,
        rows,
        "Label-count distributions compared pairwise (definitions: <code>mlray/stats.py</code>).",
    )


def table_models(r: Reports) -> str | None:
    mm = r.get("model_metrics")
    if mm is None:
        return None
    metrics = [m for m in TABLE_METRICS if m in set(mm["metric"])]
    cols = [Column("model"), Column("dataset")] + [Column(f"{m} (%)", "pct", METRIC_LABELS.get(m, m)) for m in metrics]
    rows = []
    keyed = mm.drop_duplicates(["model", "dataset", "metric"]).set_index(["model", "dataset", "metric"])
    pairs = mm[["model", "dataset"]].drop_duplicates()
    order = {d: i for i, d in enumerate(r.datasets)}
    morder = {m: i for i, m in enumerate(r.models)}
    pairs = sorted(pairs.itertuples(index=False), key=lambda p: (morder.get(p.model, 0), order.get(p.dataset, 0)))
    for p in pairs:
        cells = [_cell(p.model, "text"), _cell(p.dataset, "text")]
        for m in metrics:
            if (p.model, p.dataset, m) not in keyed.index:
                cells.append(_cell(None, "pct", "not in the report"))
                continue
            x = keyed.loc[(p.model, p.dataset, m)]
            available = bool(x["available"]) if pd.notna(x["available"]) else False
            if not available:
                reason = x["reason"] if "reason" in x.index and isinstance(x["reason"], str) else "unavailable"
                cells.append(_cell(None, "pct", reason))
                continue
            tip = f"n = {int(x['n']):,}" if _num(x["n"]) is not None else ""
            if _num(x["ci_low"]) is not None and _num(x["ci_high"]) is not None:
                tip = f"95 % CI {100 * x['ci_low']:.2f} – {100 * x['ci_high']:.2f} %, " + tip
            cells.append(_cell(x["value"], "pct", tip))
        rows.append(cells)
    return _table("table-models", cols, rows,
                  "Values in %; hover a cell for its 95 % bootstrap interval and image count, an <i>n/a</i> for why "
                  "the metric is unavailable. Click a column header to sort (again to reverse).",
                  filter_box=len(rows) > 12)  # fmt: skip


def table_gaps(r: Reports) -> str | None:
    gd = r.get("gap_decomposition")
    if gd is None:
        return None
    order = {d: i for i, d in enumerate(r.datasets)}
    forward = gd[[order.get(a, 0) < order.get(b, 0) for a, b in zip(gd["dataset_a"], gd["dataset_b"])]]
    has_std = "a_standardized_to_b" in forward.columns
    keep = forward["gap"].notna() | (forward["a_standardized_to_b"].notna() if has_std else False)
    forward = forward[forward["metric"].isin(TABLE_GAP_METRICS) & keep]
    if forward.empty:
        return None
    std_a = [Column("A at B's label mix (%)", "pct", "a_standardized_to_b: Σ w_B·m_A (needs only A's predictions)")]
    std_b = [Column("B at A's label mix (%)", "pct", "b_standardized_to_a: Σ w_A·m_B")]
    cols = [Column("model"), Column("A"), Column("B"), Column("metric"), Column("A (%)", "pct"),
            *(std_a if has_std else []), Column("B (%)", "pct"), Column("gap (pts)", "pts", "A − B"),
            Column("composition (pts)", "pts", "Σ (w_A − w_B)·m_A: the label-count mix"),
            Column("within (pts)", "pts", "Σ w_B·(m_A − m_B): same-label-count images compared"),
            Column("composition share (%)", "pct", "composition / gap (shown when |gap| ≥ 1 point)"),
            *(std_b if has_std else [])]  # fmt: skip
    rows = []
    for x in forward.itertuples():
        meaningful = _num(x.gap) is not None and abs(x.gap) >= MIN_GAP_FOR_SHARE and _num(x.composition) is not None
        share = x.composition / x.gap if meaningful else None
        gap_tip = ""
        if _num(getattr(x, "gap_ci_low", None)) is not None and _num(getattr(x, "gap_ci_high", None)) is not None:
            gap_tip = f"95 % CI {100 * x.gap_ci_low:+.2f} to {100 * x.gap_ci_high:+.2f} pts"
        std_a = [_cell(x.a_standardized_to_b, "pct", missing="—")] if has_std else []
        std_b = [_cell(x.b_standardized_to_a, "pct", missing="—")] if has_std else []
        rows.append([
            _cell(x.model, "text"), _cell(x.dataset_a, "text"), _cell(x.dataset_b, "text"), _cell(x.metric, "text"),
            _cell(x.value_a, "pct"), *std_a, _cell(x.value_b, "pct"), _cell(x.gap, "pts", gap_tip),
            _cell(x.composition, "pts"), _cell(x.within, "pts"), _cell(share, "pct", missing="—"), *std_b,
        ])  # fmt: skip
    return _table("table-gaps", cols, rows,
                  "Gap in percentage points; composition + within = gap. <i>A at B's label mix</i> reweights A's "
                  "subgroup accuracies to B's label-count mix: what the label mix alone predicts for B (it needs "
                  "predictions on A only); <i>B at A's label mix</i> likewise. Top-1 here is over labelled images "
                  "with an "
                  "original label.", filter_box=len(rows) > 12)  # fmt: skip


def table_published_summary(r: Reports) -> str | None:
    from .external import gap_summary

    ext = r.get("external_results")
    if ext is None:
        return None
    summary = gap_summary(ext)
    if summary.empty:
        return None
    cols = [Column("collection"), Column("models", "int"), Column("mean (pts)", "pts"), Column("median (pts)", "pts"),
            Column("std (pts)", "num"), Column("min (pts)", "pts"), Column("p10 (pts)", "pts"),
            Column("p90 (pts)", "pts"), Column("max (pts)", "pts")]  # fmt: skip
    rows = [
        [_cell(x.collection, "text"), _cell(x.count, "int"), _cell(x.mean, "pts"), _cell(x.median, "pts"),
         _cell(x.std, "num", text=_fmt_num(None if _num(x.std) is None else 100 * x.std, 2)),
         _cell(x.min, "pts"), _cell(x.p10, "pts"), _cell(x.p90, "pts"), _cell(x.max, "pts")]
        for x in summary.itertuples()
    ]  # fmt: skip
    return _table(
        "table-published-gap",
        cols,
        rows,
        "Published top-1 gap ImageNet val − ImageNetV2 MatchedFrequency across models, in points.",
    )


def table_published(r: Reports) -> str | None:
    ext = r.get("external_results")
    if ext is None:
        return None
    top1 = ext[(ext["metric"] == "top1") & ext["dataset"].isin(PUBLISHED_TABLE_DATASETS)]
    if top1.empty:
        return None
    top1 = top1.assign(img_size=top1["img_size"].astype("Int64").fillna(-1))
    wide = top1.pivot_table(index=["collection", "model", "img_size"], columns="dataset", values="value",
                            aggfunc="first", sort=False)  # fmt: skip
    params = ext.assign(img_size=ext["img_size"].astype("Int64").fillna(-1)).drop_duplicates(
        ["collection", "model", "img_size"]).set_index(["collection", "model", "img_size"])["param_count"] \
        if "param_count" in ext.columns else None  # fmt: skip
    present = [d for d in PUBLISHED_TABLE_DATASETS if d in wide.columns]
    wide = wide.reset_index().sort_values(["collection", present[0], "model"], ascending=[True, False, True],
                                          na_position="last", kind="stable")  # fmt: skip
    wide = wide.set_index(["collection", "model", "img_size"])
    cols = [Column("collection"), Column("model"), Column("img size (px)", "int"), Column("params (M)", "num")]
    cols += [Column(f"{d} top-1 (%)", "pct") for d in present]
    has_gap = {"imagenet-val", "imagenetv2-matched-frequency"} <= set(present)
    if has_gap:
        cols.append(Column("gap val − V2 (pts)", "pts"))
    rows = []
    for (collection, model, size), vals in wide.iterrows():
        p = params.get((collection, model, size)) if params is not None else None
        cells = [_cell(collection, "text"), _cell(model, "text"), _cell(None if size < 0 else size, "int"),
                 _cell(p, "num", text=f"{p:,.2f}" if _num(p) is not None else "")]  # fmt: skip
        cells += [_cell(vals.get(d), "pct") for d in present]
        if has_gap:
            a, b = _num(vals.get("imagenet-val")), _num(vals.get("imagenetv2-matched-frequency"))
            cells.append(_cell(None if a is None or b is None else a - b, "pts"))
        rows.append(cells)
    return _table("table-published", cols, rows, "Published top-1 per model; filter by name, click a header to sort.",
                  filter_box=True)  # fmt: skip


# --------------------------------------------------------------------------------------------------------------
# Headline cards


def _cards(r: Reports, colors: dict[str, str]) -> str:
    cards = []
    st = r.get("dataset_stats")
    if st is not None:
        for d in [d for d in r.datasets if d in set(st["dataset"])]:
            s = st[st["dataset"] == d].iloc[0]
            cards.append(
                f'<div class="card" style="--accent:{colors[d]}"><div class="card-label">{_esc(d)}</div>'
                f'<div class="card-value">{_fmt_pct(s["multi_fraction"])}</div>'
                f'<div class="card-sub">multi-label, of {int(s["n_labelled"]):,} labelled images '
                f"(mean {_num(s['mean_labels']) or 0:.3f} labels)</div></div>"
            )
    gd = r.get("gap_decomposition")
    if gd is not None and r.datasets:
        a = r.datasets[0]
        for b in r.datasets[1:]:
            rows = gd[(gd["dataset_a"] == a) & (gd["dataset_b"] == b) & (gd["metric"] == "top1") & gd["gap"].notna()]
            if rows.empty:
                continue
            mean_gap, mean_comp = rows["gap"].mean(), rows["composition"].mean()
            share = f"{100 * mean_comp / mean_gap:.0f} %" if abs(mean_gap) >= MIN_GAP_FOR_SHARE else "n/a (gap < 1 pt)"
            cards.append(
                f'<div class="card" style="--accent:{COMPOSITION_COLOR}"><div class="card-label">top-1 gap '
                f'{_esc(a)} → {_esc(b)}</div><div class="card-value">{100 * mean_gap:+.2f} pts</div>'
                f'<div class="card-sub">mean over {len(rows)} model(s); label-count mix explains {share}</div></div>'
            )
    ext = r.get("external_results")
    if ext is not None:
        from .external import gap_summary

        for x in gap_summary(ext).itertuples():
            cards.append(
                f'<div class="card" style="--accent:#6b7280"><div class="card-label">published top-1 gap val → V2 '
                f'({_esc(x.collection)})</div><div class="card-value">{100 * x.mean:+.2f} pts</div>'
                f'<div class="card-sub">mean over {x.count:,} models (median {100 * x.median:+.2f})</div></div>'
            )
    return f'<div class="cards">{"".join(cards)}</div>' if cards else ""


# --------------------------------------------------------------------------------------------------------------
# The page


def _chart_html(c: Chart) -> str:
    if c.figure is None:
        return (f'<figure class="panel omitted" id="{c.id}-panel"><h3>{_esc(c.title)}</h3>'
                f'<p class="note">Not shown: {_esc(c.note)}.</p></figure>')  # fmt: skip
    return (f'<figure class="panel" id="{c.id}-panel"><h3>{_esc(c.title)}</h3>'
            f'<div class="chart" id="{c.id}" data-chart="{c.id}" role="img" aria-label="{_esc(c.title)}"></div>'
            f'<figcaption class="caption">{c.caption}</figcaption></figure>')  # fmt: skip


def _section(sid: str, title: str, intro: str, parts: list[str]) -> str:
    body = "\n".join(p for p in parts if p)
    return f'<section id="{sid}"><h2>{_esc(title)}</h2><p class="intro">{intro}</p>\n{body}\n</section>'


def _asset(name: str) -> str:
    return (resources.files("mlray") / "dashboard_assets" / name).read_text(encoding="utf-8")


def _json_for_script(data: dict) -> str:
    text = json.dumps(data, allow_nan=False, separators=(",", ":"), ensure_ascii=False)
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


def _reports_time(r: Reports) -> str:
    newest = max(p.stat().st_mtime for p in r.files.values())
    return _dt.datetime.fromtimestamp(newest, _dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")


def page_content(r: Reports) -> tuple[list[Chart], str, dict]:
    """All charts (drawn or omitted), the page body HTML and the JSON document embedded in the page."""
    colors = dataset_colors(r.datasets)
    a = r.datasets[0] if r.datasets else None
    others = r.datasets[1:]
    mm = r.get("model_metrics")

    hist, share = chart_label_hist(r, colors), chart_multi_share(r, colors)
    labels_section = _section(
        "labels", "Label statistics",
        "How many valid ImageNet classes each image has, per dataset (the reports <code>label_count_hist</code> "
        "and <code>dataset_stats</code>).",
        [f'<div class="grid-2">{_chart_html(hist)}{_chart_html(share)}</div>',
         _wrap_table("Datasets", table_datasets(r)), _wrap_table("Dataset comparisons", table_comparison(r))],
    )  # fmt: skip

    scatters: list[Chart] = []
    if mm is None:
        note = _missing("model_metrics", "written by mlray score / evaluate")
        scatters.append(Chart("scatter-0", "Per-model scatter", note=note))
    elif not others:
        scatters.append(Chart("scatter-0", "Per-model scatter",
                              note=f"the scatter needs a second dataset; this report has only {a}"))  # fmt: skip
    else:
        scatters = [chart_scatter(r, colors, a, b, i) for i, b in enumerate(others)]
    sub = chart_subgroups(r, colors)
    models_section = _section(
        "models", "Models across datasets",
        f"Accuracy of each model on <b>{_esc(a or '-')}</b> against every other dataset, under single-label and "
        "multi-label metrics (<code>model_metrics</code>), and per label-count subgroup "
        "(<code>subgroup_metrics</code>).",
        [*(_chart_html(c) for c in scatters), _chart_html(sub), _wrap_table("Model metrics", table_models(r))],
    )  # fmt: skip

    gaps: list[Chart] = []
    if r.get("gap_decomposition") is None:
        note = _missing("gap_decomposition", "written by mlray score / evaluate")
        gaps.append(Chart("gap-0", "Gap decomposition", note=note))
    elif not others:
        gaps.append(Chart("gap-0", "Gap decomposition", note=f"needs a second dataset; this report has only {a}"))
    else:
        gaps = [chart_gap(r, colors, a, b, i) for i, b in enumerate(others)]
    gap_section = _section(
        "gap", "Where the gap comes from",
        "Each model's accuracy gap between two datasets split into the part explained by their different "
        "label-count mix and the part left within subgroups of images with the same number of labels "
        "(<code>gap_decomposition</code>).",
        [*(_chart_html(c) for c in gaps), _wrap_table("Gap decomposition", table_gaps(r))],
    )  # fmt: skip

    pub = chart_published(r, colors)
    pub_section = _section(
        "published", "Published results",
        "Aggregate accuracies published by timm and imagenet-testbed (<code>external_results</code>, from "
        "<code>mlray import-results</code>), next to this report's models.",
        [_chart_html(pub), _wrap_table("Published val → ImageNetV2 gap", table_published_summary(r)),
         _wrap_table("Published top-1 by model", table_published(r))],
    )  # fmt: skip

    charts = [hist, share, *scatters, sub, *gaps, pub]
    chips = "".join(f'<span class="chip" style="--accent:{colors[d]}">{_esc(d)}</span>' for d in r.datasets)
    found = ", ".join(f"<code>{_esc(p.name)}</code>" for p in r.files.values())
    built = _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    header = f"""<header class="top">
<h1>mlray report <span class="sub">ImageNet classifiers as multi-label problems</span></h1>
<p class="lede">How good are these classifiers once every valid label of an image counts? This page shows the
label-count statistics of each dataset, each model's accuracy under single-label top-1 and multi-label metrics (ReaL,
variable top-k, ASMA), how much of the accuracy gap between datasets comes from their different share of
multi-label images, and published results for context.</p>
<dl class="meta">
<div><dt>source</dt><dd><code>{_esc(r.directory.resolve())}</code></dd></div>
<div><dt>reports written</dt><dd>{_reports_time(r)}</dd></div>
<div><dt>page built</dt><dd>{built}</dd></div>
<div><dt>datasets</dt><dd>{chips or "none"}</dd></div>
<div><dt>models</dt><dd>{len(r.models):,}</dd></div>
<div><dt>reports</dt><dd>{found}</dd></div>
</dl>
{_cards(r, colors)}
<nav><a href="#labels">Label statistics</a><a href="#models">Models across datasets</a>
<a href="#gap">Where the gap comes from</a><a href="#published">Published results</a></nav>
</header>"""
    body = "\n".join([header, labels_section, models_section, gap_section, pub_section])
    data = {
        "meta": {
            "source": str(r.directory.resolve()),
            "datasets": r.datasets,
            "colors": colors,
            "models": r.models,
            "reports": sorted(r.files),
            "built": built,
        },
        "charts": {c.id: {"title": c.title, "figure": c.figure} for c in charts if c.figure is not None},
        "omitted": {c.id: c.note for c in charts if c.figure is None},
    }
    return charts, body, data


def _wrap_table(title: str, table: str | None) -> str:
    if table is None:
        return ""
    return f'<div class="table-block"><h3>{_esc(title)}</h3>{table}</div>'


def render_page(r: Reports) -> str:
    """The whole self-contained HTML page for the reports."""
    from plotly.offline import get_plotlyjs

    _, body, data = page_content(r)
    page = Template(_asset("page.html"))
    return page.substitute(
        title=_esc(f"mlray report — {r.directory.resolve().name}"),
        css=_asset("dashboard.css"),
        plotlyjs=get_plotlyjs(),
        data=_json_for_script(data),
        body=body,
        js=_asset("dashboard.js"),
    )


def build_dashboard(reports_dir: str | os.PathLike, out_html: str | os.PathLike | None = None) -> Path:
    """Build the dashboard page from the reports in ``reports_dir`` and return its path.

    ``out_html`` defaults to ``reports_dir/dashboard.html``; it is written atomically (temporary name, then
    rename). Raises :class:`~mlray.errors.MlrayError` (one line) when the folder is missing or holds none of the
    reports, or a report is unreadable.
    """
    reports = load_reports(reports_dir)
    out = Path(out_html) if out_html is not None else Path(reports_dir) / DASHBOARD_FILE
    if out.is_dir():  # a folder given as --out: the page goes inside it
        out = out / DASHBOARD_FILE
    text = render_page(reports)
    tmp = out.parent / f".tmp-{out.name}-{os.getpid()}"
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, out)
    except OSError as exc:
        try:
            tmp.unlink(missing_ok=True)
        except OSError:
            pass  # the folder itself is not there
        raise MlrayError(f"{out}: cannot write the dashboard ({exc.strerror or exc})") from None
    return out
