"""The page's population section, from the reports of ``mlray analyze``: how the ranking of the models changes
from top-1 to ASMA (``model_analysis`` ranks, ``rank_changes`` correlations), what architecture family and
pretraining data explain (``group_summaries``), and the tables of the fits, rank changes, group means and
per-model analysis. Every number is a report value; the page computes none."""

from __future__ import annotations

from typing import Any

import pandas as pd

from ..analysis.points import OWN
from ..analysis.taxonomy import REGIME_LABELS, REGIMES
from .charts import Chart, _figure_json, _panels_layout
from .load import Reports, missing
from .style import (
    ANALYSIS_TABLE_METRICS,
    FALL_COLOR,
    FAMILY_COLORS,
    METRIC_LABELS,
    RANK_METRICS,
    REGIME_COLORS,
    RISE_COLOR,
    SAME_COLOR,
    esc,
    fmt_num,
    num,
    pct,
)
from .tables import Column, _cell, _table

V2 = "imagenetv2-matched-frequency"
REAL = "imagenet-val-real"
MAX_FAMILY_GROUPS = 15  # families with the most models shown in the family view of the group chart
MIN_FAMILY_MODELS = 3
MAX_RANK_LABELS = 20  # with at most this many models every model is named; beyond, the biggest movers
MAX_SLOPE_MODELS = 60  # a slope chart up to this many models, a rank-vs-rank scatter beyond
QUANTITY_LABELS = {
    "value": "mean value (%)",
    "gap": "mean gap A − B (pts)",
    "fit_residual": "above the linear fit (pts)",
    "effective_robustness": "effective robustness (pts)",
}
NOTE = "written by mlray analyze, score and evaluate"


def headline_pairs(r: Reports) -> list[tuple[str, str, str]]:
    """(collection, reference, dataset B) per collection of ``group_summaries``: B = ImageNetV2 MatchedFrequency
    when the collection has it, else its first dataset after the reference (report order)."""
    gs = r.get("group_summaries")
    if gs is None:
        return []
    gaps = gs[(gs["grouping"] == "all") & (gs["quantity"] == "gap")]
    out = []
    for collection in pd.unique(gaps["collection"]):
        rows = gaps[gaps["collection"] == collection]
        pick = rows[rows["dataset"] == V2]
        row = (pick if len(pick) else rows).iloc[0]
        out.append((str(collection), str(row["reference"]), str(row["dataset"])))
    return out


# --------------------------------------------------------------------------------------------------------------
# Rank changes


def _rank_panels(r: Reports) -> list[tuple[str, str, str, str, str, str]]:
    """(collection, dataset A, metric A, dataset B, metric B, title) of each rank-change panel: this report's
    models on each dataset, top-1 vs ASMA (strict variable top-k); without them, published models: val top-1
    vs val top-1 under ReaL labels."""
    ma = r.get("model_analysis")
    if ma is None:
        return []
    own = ma[ma["collection"] == OWN]
    a_metric, b_metric = RANK_METRICS
    panels = []
    for d in pd.unique(own["dataset"]):
        metrics = set(own.loc[own["dataset"] == d, "metric"])
        if {a_metric, b_metric} <= metrics:
            panels.append((OWN, str(d), a_metric, str(d), b_metric, str(d)))
    if panels:
        return panels
    for collection in pd.unique(ma["collection"]):
        sel = ma[(ma["collection"] == collection) & (ma["metric"] == "top1")]
        if {"imagenet-val", REAL} <= set(sel["dataset"]):
            panels.append((str(collection), "imagenet-val", "top1", REAL, "top1", f"{collection}: ImageNet val"))
    return panels


def chart_rank_changes(r: Reports) -> Chart:
    """Per dataset, each model's rank under top-1 and under ASMA, from the ranks of ``model_analysis``: a slope
    chart (rank under top-1 left, under ASMA right) for up to :data:`MAX_SLOPE_MODELS` models, a rank-vs-rank
    scatter beyond; rising models green, falling orange, level grey; the models named when few, else the biggest
    movers of ``rank_changes``; Kendall's tau and Spearman's rho with their intervals under each panel."""
    from plotly.subplots import make_subplots

    title = "How the ranking changes from top-1 to ASMA"
    ma = r.get("model_analysis")
    if ma is None:
        return Chart("rank-changes", title, note=missing("model_analysis", NOTE))
    panels = _rank_panels(r)
    if not panels:
        note = (f"model_analysis.parquet has no models ranked under both {RANK_METRICS[0]} and {RANK_METRICS[1]} "
                "on one dataset (nor published val and ReaL top-1)")  # fmt: skip
        return Chart("rank-changes", title, note=note)
    if panels[0][0] != OWN:
        title = "How the ranking changes from top-1 to ReaL top-1 (published)"
    fig = make_subplots(rows=1, cols=len(panels), subplot_titles=[esc(p[5]) for p in panels],
                        horizontal_spacing=0.12)  # fmt: skip
    fig.update_annotations(font={"size": 13})
    shown: set[str] = set()
    slope = True
    for i, (collection, da, ma_metric, db, mb_metric, _) in enumerate(panels, start=1):
        left, right = METRIC_LABELS.get(ma_metric, ma_metric), METRIC_LABELS.get(mb_metric, mb_metric)
        if da != db:
            left, right = f"{da} {ma_metric}", f"{db} {mb_metric}"
        key = ["model", "img_size"]
        sel = ma[ma["collection"] == collection]
        a = sel[(sel["dataset"] == da) & (sel["metric"] == ma_metric)][[*key, "rank", "value"]]
        b = sel[(sel["dataset"] == db) & (sel["metric"] == mb_metric)][[*key, "rank", "value"]]
        both = a.merge(b, on=key, suffixes=("_a", "_b")).reset_index(drop=True)
        names = [m if pd.isna(s) else f"{m} @ {int(s)} px" for m, s in zip(both["model"], both["img_size"])]
        slope = len(both) <= MAX_SLOPE_MODELS
        axis = "" if i == 1 else str(i)
        metric_key = mb_metric if da == db else "real_top1"  # the rank_changes row (ReaL: val's real_top1 alias)
        for trace in _rank_traces(both, names, left, right, slope, shown):
            fig.add_trace(trace, row=1, col=i)
        labelled = (
            range(len(both))
            if len(both) <= MAX_RANK_LABELS
            else _mover_rows(both, _movers(r, collection, da, metric_key))
        )
        spots: dict[tuple[Any, int], list[str]] = {}  # models at the same place share one label
        for j in labelled:
            row = both.iloc[j]
            x = right if slope else int(row["rank_a"])
            spots.setdefault((x, int(row["rank_b"])), []).append(names[j])
        for (x, y), who in spots.items():
            fig.add_annotation(x=x, y=y, xref=f"x{axis}", yref=f"y{axis}", xanchor="left", xshift=8,
                               showarrow=not slope, ax=24, ay=-14, arrowhead=0, arrowcolor="#6b7280",
                               text=esc(", ".join(who)), font={"size": 10}, bgcolor="rgba(255,255,255,.8)")  # fmt: skip
        corr = _correlation_text(r, collection, da, metric_key)
        if corr:
            fig.add_annotation(x=0.5, y=-0.2, xref=f"x{axis} domain", yref=f"y{axis} domain", showarrow=False,
                               text=corr, font={"size": 11, "color": "#374151"})  # fmt: skip
        if slope:
            fig.update_yaxes(autorange="reversed", title={"text": "rank (1 = best)" if i == 1 else ""}, row=1, col=i,
                             tickformat="d", dtick=1 if len(both) <= MAX_RANK_LABELS else None)  # fmt: skip
            fig.update_xaxes(type="category", range=[-0.25, 1.9], row=1, col=i)
        else:
            n = len(both) + 1
            fig.update_xaxes(range=[n, 0], title={"text": f"rank under {esc(left)}"}, constrain="domain", row=1, col=i)
            fig.update_yaxes(range=[n, 0], title={"text": f"rank under {esc(right)}"}, scaleanchor=f"x{axis}",
                             scaleratio=1, constrain="domain", row=1, col=i)  # fmt: skip
    fig.update_layout(_panels_layout(height=560 if slope else 640, bottom=100))
    shape = ("Each line is one model: its rank under top-1 (left) and under the other metric (right). " if slope else
             "Each point is one model: its rank under top-1 (x) and under the other metric (y); the dashed diagonal "
             "is no change, best models top right. ")  # fmt: skip
    return Chart("rank-changes", title, _figure_json(fig), shape
                 + "Green: the model ranks higher under the multi-label metric; orange: lower "
                 "(<code>model_analysis</code>: this report's models, top-1 vs ASMA of strict variable top-k; "
                 "without them, published models: ImageNet val top-1 vs ReaL top-1). Below each panel: Kendall's "
                 "τ and Spearman's ρ between the two rankings with 95 % bootstrap intervals over models "
                 "(<code>rank_changes</code>); with many models only the biggest movers are named.")  # fmt: skip


def _rank_traces(both: pd.DataFrame, names: list[str], left: str, right: str, slope: bool, shown: set[str]) -> list:
    """The traces of one rank-change panel: per direction (rise, fall, same), the models' lines (slope chart,
    one None-separated trace) or points (rank-vs-rank scatter), and the scatter's diagonal."""
    import plotly.graph_objects as go

    traces = []
    change = both["rank_a"] - both["rank_b"]
    small = len(both) <= 60
    for kind, color, label in (("rise", RISE_COLOR, "ranks higher"), ("fall", FALL_COLOR, "ranks lower"),
                               ("same", SAME_COLOR, "same rank")):  # fmt: skip
        pick = [j for j, c in enumerate(change) if (c > 0 if kind == "rise" else c < 0 if kind == "fall" else c == 0)]
        if not pick:
            continue
        xs: list[Any] = []
        ys: list[Any] = []
        text: list[Any] = []
        custom: list[Any] = []
        for j in pick:
            row = both.iloc[j]
            info = [int(row["rank_a"]), int(row["rank_b"]), pct(row["value_a"]), pct(row["value_b"])]
            if slope:
                xs += [left, right, None]
                ys += [info[0], info[1], None]
                text += [esc(names[j])] * 2 + [None]
                custom += [info, info, None]
            else:
                xs.append(info[0])
                ys.append(info[1])
                text.append(esc(names[j]))
                custom.append(info)
        traces.append(go.Scatter(
            x=xs, y=ys, mode="lines+markers" if slope else "markers", name=label, legendgroup=kind,
            showlegend=kind not in shown, text=text, customdata=custom, connectgaps=False, cliponaxis=False,
            line={"color": color, "width": 1.5 if small else 0.8}, opacity=0.9 if small else 0.6,
            marker={"color": color, "size": 6 if small else 4},
            hovertemplate="<b>%{text}</b><br>rank %{customdata[0]} → %{customdata[1]}<br>"
            f"{esc(left)}: %{{customdata[2]:.2f}} %<br>{esc(right)}: %{{customdata[3]:.2f}} %<extra></extra>",
        ))  # fmt: skip
        shown.add(kind)
    if not slope:
        n = len(both)
        traces.insert(0, go.Scatter(x=[1, n], y=[1, n], mode="lines", line={"dash": "dash", "color": "#6b7280",
                                    "width": 1}, showlegend=False, hoverinfo="skip"))  # fmt: skip
    return traces


def _mover_rows(both: pd.DataFrame, movers: list[dict[str, Any]]) -> list[int]:
    """The rows of ``both`` (model, img_size, ranks) that are the named movers."""
    out = []
    for m in movers:
        size = m.get("img_size")
        hit = both.index[(both["model"] == m["model"])
                         & (both["img_size"].isna() if size is None else both["img_size"] == size)]  # fmt: skip
        out += [int(j) for j in hit[:1]]
    return out


def _rank_row(r: Reports, collection: str, dataset: str, metric_b: str) -> pd.Series | None:
    """The ``rank_changes`` row of (collection, dataset, top-1 vs metric B), or None."""
    rc = r.get("rank_changes")
    if rc is None:
        return None
    sel = rc[(rc["collection"] == collection) & (rc["dataset"] == dataset) & (rc["metric_b"] == metric_b)]
    return sel.iloc[0] if len(sel) else None


def _movers(r: Reports, collection: str, dataset: str, metric_b: str) -> list[dict[str, Any]]:
    """The movers of one ``rank_changes`` row (rises first, then falls); empty without the row."""
    row = _rank_row(r, collection, dataset, metric_b)
    movers = row["movers"] if row is not None else None
    return [] if movers is None else [dict(m) for m in movers]


def _correlation_text(r: Reports, collection: str, dataset: str, metric_b: str) -> str:
    """``"Kendall τ 0.93 [0.92, 0.93] · Spearman ρ 0.99 [0.99, 0.99] · 1,556 models"``; "" without the row."""
    row = _rank_row(r, collection, dataset, metric_b)
    if row is None:
        return ""

    def iv(v: Any, lo: Any, hi: Any) -> str:
        if num(v) is None:
            return "n/a (ties)"
        text = f"{v:.2f}"
        return text + (f" [{lo:.2f}, {hi:.2f}]" if num(lo) is not None and num(hi) is not None else "")

    return (f"Kendall τ {iv(row['kendall_tau'], row['kendall_ci_low'], row['kendall_ci_high'])} · Spearman ρ "
            f"{iv(row['spearman_rho'], row['spearman_ci_low'], row['spearman_ci_high'])} · "
            f"{int(row['n_models']):,} models")  # fmt: skip


# --------------------------------------------------------------------------------------------------------------
# Group summaries


def chart_groups(r: Reports, index: int, collection: str, a: str, b: str) -> Chart:
    """Per pretraining regime (or, by the buttons, architecture family): the mean top-1 gap A → B, the mean
    residual from the linear fit and the mean effective robustness, each with its bootstrap interval over the
    group's models, and for this report's models the mean MLPC on B (``group_summaries``); the dashed line is
    the mean over all models."""
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    cid = f"groups-{index}"
    title = f"{collection}: {a} → {b} by pretraining and by family"
    gs = r.get("group_summaries")
    if gs is None:
        return Chart(cid, title, note=missing("group_summaries", NOTE))
    sel = gs[(gs["collection"] == collection) & (gs["reference"] == a) & (gs["dataset"] == b)]
    panels = [("top1", q) for q in ("gap", "fit_residual", "effective_robustness")]
    panels = [(m, q) for m, q in panels if ((sel["metric"] == m) & (sel["quantity"] == q)).any()]
    if ((sel["metric"] == "mlpc") & (sel["quantity"] == "value")).any():
        panels.append(("mlpc", "value"))
    if not panels:
        return Chart(cid, title, note=f"group_summaries.parquet has no top-1 rows for {a} → {b}")
    titles = [("MLPC on B (%)" if m == "mlpc" else f"top-1 {QUANTITY_LABELS[q]}") for m, q in panels]
    fig = make_subplots(rows=1, cols=len(panels), subplot_titles=titles, shared_yaxes=True, horizontal_spacing=0.03)
    fig.update_annotations(font={"size": 13})
    views = {"pretrain": _view_groups(sel, "pretrain"), "family": _view_groups(sel, "family")}
    for i, (metric, quantity) in enumerate(panels, start=1):
        rows = sel[(sel["metric"] == metric) & (sel["quantity"] == quantity)].set_index(["grouping", "group"])
        overall = rows.loc[("all", "all")] if ("all", "all") in rows.index else None
        for view, groups in views.items():
            present = [g for g in groups if (view, g) in rows.index]
            if not present:
                continue
            part = rows.loc[[(view, g) for g in present]]
            means = [pct(v) for v in part["mean"]]
            plus, minus = _whiskers(means, [pct(v) for v in part["ci_low"]], [pct(v) for v in part["ci_high"]])
            labels = [_group_label(view, g) for g in present]
            colors = [REGIME_COLORS.get(g, "#6b7280") if view == "pretrain" else FAMILY_COLORS[j % len(FAMILY_COLORS)]
                      for j, g in enumerate(present)]  # fmt: skip
            fig.add_trace(go.Scatter(
                x=means, y=labels, mode="markers", name=view, showlegend=False, visible=view == "pretrain",
                marker={"color": colors, "size": 10, "symbol": "diamond", "line": {"color": "white", "width": 1}},
                error_x={"type": "data", "symmetric": False, "array": plus, "arrayminus": minus, "thickness": 1.4,
                         "width": 4, "color": "#374151"},
                customdata=[[int(n), pct(lo), pct(hi)] for n, lo, hi in zip(part["n_models"], part["ci_low"],
                                                                              part["ci_high"])],
                cliponaxis=False, meta=f"view:{view}",
                hovertemplate="<b>%{y}</b>: %{x:+.2f}<br>95 % CI %{customdata[1]:.2f} to %{customdata[2]:.2f}"
                f"<br>%{{customdata[0]:,}} models<extra>{esc(titles[i - 1])}</extra>",
            ), row=1, col=i)  # fmt: skip
        if overall is not None and num(overall["mean"]) is not None:
            fig.add_vline(x=pct(overall["mean"]), line={"dash": "dash", "color": "#6b7280", "width": 1}, row=1, col=i)
        if quantity != "value":
            fig.update_xaxes(zeroline=True, zerolinecolor="#9ca3af", row=1, col=i)
    metas = [t.meta for t in fig.data]
    buttons = [{"label": f"by {label}", "method": "restyle", "args": [{"visible": [m == f"view:{v}" for m in metas]}]}
               for v, label in (("pretrain", "pretraining"), ("family", "family"))]  # fmt: skip
    fig.update_yaxes(autorange="reversed", type="category", automargin=True, row=1, col=1)
    n_rows = max(len(v) for v in views.values()) or 1
    fig.update_layout(_panels_layout(
        height=min(900, 180 + 30 * n_rows), left=24, top=110,
        updatemenus=[{"type": "buttons", "direction": "right", "x": 1, "xanchor": "right", "y": 1.0,
                      "yanchor": "bottom", "pad": {"b": 30}, "buttons": buttons, "showactive": True, "active": 0}],
    ))  # fmt: skip
    return Chart(cid, title, _figure_json(fig),
                 f"Means over the models of each group ({esc(collection)}), with 95 % bootstrap intervals over "
                 f"the group's models (<code>group_summaries</code>): the top-1 gap {esc(a)} − {esc(b)}, the "
                 "distance above the linear fit of all models, and the effective robustness (distance above the "
                 "probit fit, Taori et al. 2020)"
                 + (", and the MLPC on B (share of multi-label images with all valid labels in the top k)"
                    if any(m == "mlpc" for m, _ in panels) else "")
                 + f". Dashed: all models. Families: the {MAX_FAMILY_GROUPS} largest with at least "
                 f"{MIN_FAMILY_MODELS} models.")  # fmt: skip


def _whiskers(
    values: list[float | None], lows: list[float | None], highs: list[float | None]
) -> tuple[list[float], list[float]]:
    """Error-bar lengths above and below each value from its interval (0 where either end is missing)."""
    plus = [max(0.0, h - v) if h is not None and v is not None else 0.0 for v, h in zip(values, highs)]
    minus = [max(0.0, v - lo) if lo is not None and v is not None else 0.0 for v, lo in zip(values, lows)]
    return plus, minus


def _view_groups(sel: pd.DataFrame, grouping: str) -> list[str]:
    """The groups shown in a view: regimes in :data:`REGIMES` order; families with at least
    :data:`MIN_FAMILY_MODELS` models, the :data:`MAX_FAMILY_GROUPS` largest (by models, then name)."""
    rows = sel[(sel["grouping"] == grouping) & (sel["quantity"] != "value")]
    if not len(rows):
        rows = sel[sel["grouping"] == grouping]
    sizes = rows.groupby("group")["n_models"].max()
    if grouping == "pretrain":
        return [g for g in REGIMES if g in sizes.index] + sorted(g for g in sizes.index if g not in REGIMES)
    big = [g for g in sizes.index if sizes[g] >= MIN_FAMILY_MODELS]
    return sorted(big, key=lambda g: (-int(sizes[g]), g))[:MAX_FAMILY_GROUPS]


def _group_label(grouping: str, group: str) -> str:
    """A group's name on the chart's axis (a regime in words)."""
    return esc(REGIME_LABELS.get(group, group) if grouping == "pretrain" else group)


# --------------------------------------------------------------------------------------------------------------
# Tables


def table_fits(r: Reports) -> str | None:
    """Every fit of ``fits``: collection, A, B, metric, scale, models, slope, intercept, R², residual std."""
    fits = r.get("fits")
    if fits is None:
        return None
    cols = [Column("collection"), Column("A (x)"), Column("B (y)"), Column("metric"), Column("scale"),
            Column("models", "int"), Column("slope", "num", "on the fit's scale"),
            Column("intercept", "num", "on the fit's scale (fractions for linear, probit units for probit)"),
            Column("R²", "num"), Column("residual std", "num", "sqrt(SSR / (n − 2)) on the fit's scale")]  # fmt: skip
    rows = [[_cell(x.collection, "text"), _cell(x.dataset_a, "text"), _cell(x.dataset_b, "text"),
             _cell(x.metric, "text"), _cell(x.scale, "text"), _cell(x.n_models, "int"),
             _cell(x.slope, "num", text=fmt_num(x.slope, 4)), _cell(x.intercept, "num", text=fmt_num(x.intercept, 4)),
             _cell(x.r2, "num", text=fmt_num(x.r2, 4)), _cell(x.residual_std, "num", text=fmt_num(x.residual_std, 4))]
            for x in fits.itertuples()]  # fmt: skip
    return _table("table-fits", cols, rows, "Least-squares fits of B on A across the models of a collection "
                  "(<code>fits</code>): <i>linear</i> on the accuracies, <i>probit</i> on Φ⁻¹ of them (the "
                  "effective-robustness convention of Taori et al. 2020).", filter_box=len(rows) > 12)  # fmt: skip


def table_rank_changes(r: Reports) -> str | None:
    """Every row of ``rank_changes``: the two rankings' Kendall tau and Spearman rho with intervals, and the
    models that move most."""
    rc = r.get("rank_changes")
    if rc is None:
        return None
    cols = [Column("collection"), Column("dataset"), Column("top-1 vs"), Column("models", "int"),
            Column("Kendall τ", "num", "95 % bootstrap interval over models in the tooltip"),
            Column("Spearman ρ", "num", "95 % bootstrap interval over models in the tooltip"),
            Column("moves most (rank under top-1 → under the metric)")]  # fmt: skip
    rows = []
    for x in rc.itertuples():
        movers = [] if x.movers is None else list(x.movers)
        moved = ", ".join(f"{m['model']} ({m['rank_a']} → {m['rank_b']})" for m in movers[:4])
        source = f" (from {x.metric_b_source})" if isinstance(x.metric_b_source, str) and x.metric_b_source else ""

        def iv(lo: Any, hi: Any) -> str:
            return f"95 % CI {lo:.3f} – {hi:.3f}" if num(lo) is not None and num(hi) is not None else ""

        rows.append([_cell(x.collection, "text"), _cell(x.dataset, "text"), _cell(f"{x.metric_b}{source}", "text"),
                     _cell(x.n_models, "int"),
                     _cell(x.kendall_tau, "num", iv(x.kendall_ci_low, x.kendall_ci_high),
                           text=fmt_num(x.kendall_tau, 3)),
                     _cell(x.spearman_rho, "num", iv(x.spearman_ci_low, x.spearman_ci_high),
                           text=fmt_num(x.spearman_rho, 3)),
                     _cell(moved, "text")])  # fmt: skip
    return _table("table-rank-changes", cols, rows, "Agreement of the model rankings under top-1 and under each "
                  "multi-label metric (<code>rank_changes</code>); n/a where every model ties under one of them.",
                  filter_box=len(rows) > 12)  # fmt: skip


def table_groups(r: Reports) -> str | None:
    """The ``group_summaries`` rows of the headline pairs (:func:`headline_pairs`): every grouping, group and
    quantity of the metrics of :data:`ANALYSIS_TABLE_METRICS`."""
    gs = r.get("group_summaries")
    if gs is None:
        return None
    keep = pd.Series(False, index=gs.index)
    for collection, a, b in headline_pairs(r):
        keep |= (gs["collection"] == collection) & (gs["reference"] == a) & (gs["dataset"] == b)
    sel = gs[keep & gs["metric"].isin(ANALYSIS_TABLE_METRICS)]
    if sel.empty:
        return None
    cols = [Column("grouping"), Column("group"), Column("collection"), Column("A → B"), Column("metric"),
            Column("quantity"), Column("models", "int"), Column("mean", "pts", "points (a fraction × 100)"),
            Column("95 % CI low", "pts"), Column("95 % CI high", "pts")]  # fmt: skip
    rows = [[_cell(x.grouping, "text"), _cell(REGIME_LABELS.get(x.group, x.group) if x.grouping == "pretrain"
                                                else x.group, "text"),
             _cell(x.collection, "text"), _cell(f"{x.reference} → {x.dataset}", "text"), _cell(x.metric, "text"),
             _cell(x.quantity, "text"), _cell(x.n_models, "int"), _cell(x.mean, "pts"),
             _cell(x.ci_low, "pts", missing="—"), _cell(x.ci_high, "pts", missing="—")]
            for x in sel.itertuples()]  # fmt: skip
    return _table("table-groups", cols, rows, "Group means with 95 % bootstrap intervals over the group's models "
                  "(<code>group_summaries</code>; other dataset pairs are in the report). <i>value</i>: the metric "
                  "on B; <i>gap</i>: A − B; <i>fit_residual</i> / <i>effective_robustness</i>: above the linear / "
                  "probit fit of all models.", filter_box=True)  # fmt: skip


def table_model_analysis(r: Reports) -> str | None:
    """Per model (``model_analysis``): family, pretraining, parameters, input size, and for each dataset B other
    than the reference (published collections: ImageNetV2 MatchedFrequency only) and each metric of
    :data:`ANALYSIS_TABLE_METRICS`: the values on A and B, the gap, the residuals and the rank on B."""
    ma = r.get("model_analysis")
    if ma is None:
        return None
    sel = ma[(ma["dataset"] != ma["reference"]) & ma["metric"].isin(ANALYSIS_TABLE_METRICS)]
    sel = sel[(sel["collection"] == OWN) | (sel["dataset"] == V2)]
    if sel.empty:
        return None
    cols = [Column("collection"), Column("model"), Column("img size", "int"), Column("family"),
            Column("pretraining", tip="from the pretrained tag; hover a cell for what decided it"),
            Column("params (M)", "num"), Column("input (px)", "int"), Column("A → B"), Column("metric"),
            Column("A (%)", "pct"), Column("B (%)", "pct"), Column("gap (pts)", "pts", "A − B"),
            Column("above linear fit (pts)", "pts"),
            Column("effective robustness (pts)", "pts", "above the probit fit (Taori et al. 2020)"),
            Column("rank on B", "int")]  # fmt: skip
    rows = [[_cell(x.collection, "text"), _cell(x.model, "text"),
             _cell(None if pd.isna(x.img_size) else x.img_size, "int", missing=""), _cell(x.family, "text"),
             _cell(x.pretrain, "text", x.pretrain_evidence),
             _cell(x.param_count, "num", text=f"{x.param_count:,.2f}" if num(x.param_count) is not None else ""),
             _cell(None if pd.isna(x.input_size) else x.input_size, "int", missing=""),
             _cell(f"{x.reference} → {x.dataset}", "text"), _cell(x.metric, "text"), _cell(x.value_reference, "pct"),
             _cell(x.value, "pct"), _cell(x.gap, "pts"), _cell(x.fit_residual, "pts", missing="—"),
             _cell(x.effective_robustness, "pts", missing="—"), _cell(x.rank, "int")]
            for x in sel.itertuples()]  # fmt: skip
    return _table("table-model-analysis", cols, rows, "Per model and dataset (<code>model_analysis</code>; "
                  "published collections: ImageNetV2 MatchedFrequency only, every dataset is in the report). "
                  "MLPC is the metric <i>mlpc</i>.", filter_box=True)  # fmt: skip
