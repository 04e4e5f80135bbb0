"""The dashboard's charts: one function per chart, each building a plotly figure from the reports (as the JSON the
page embeds, numbers ``100 ×`` the report fractions) or, when its report is absent, a :class:`Chart` holding the
one-line note that stands in for it."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import pandas as pd

from ..analysis.points import OWN
from ..analysis.taxonomy import REGIME_LABELS
from .load import Reports, missing
from .overlays import (
    MAX_LABELS,
    ROLE_BASE,
    colour_groups,
    colour_toggle,
    extreme_labels,
    fit_annotation,
    fit_rows,
    fit_traces,
    group_of,
    model_groups,
    point_labels,
)
from .style import (
    COLLECTION_STYLE,
    COMPOSITION_COLOR,
    DATASET_COLORS,
    FONT,
    GAP_METRICS,
    METRIC_LABELS,
    MODEL_SYMBOLS,
    OTHER_COLLECTION_STYLE,
    PUBLISHED_COLOR,
    PUBLISHED_PAIRS,
    SCATTER_METRICS,
    SUBGROUP_METRICS,
    WITHIN_COLOR,
    YX_LINE,
    esc,
    fmt_pct,
    num,
    pct,
)


@dataclass
class Chart:
    """One chart on the page: a plotly figure (as JSON) or, when its inputs are missing, a note instead."""

    id: str
    title: str
    figure: dict[str, Any] | None = None
    caption: str = ""
    note: str = ""


def _base_layout(**extra: Any) -> dict[str, Any]:
    """The layout every figure shares (template, font, margins, a horizontal legend on top), updated by ``extra``."""
    layout: dict[str, Any] = {
        "template": "plotly_white",
        "font": {"family": FONT, "size": 13, "color": "#1f2937"},
        "margin": {"l": 64, "r": 24, "t": 56, "b": 56},
        "hoverlabel": {"font": {"family": FONT}},
        "legend": {"orientation": "h", "yanchor": "bottom", "y": 1.02, "x": 0, "xanchor": "left"},
    }
    layout.update(extra)
    return layout


def _panels_layout(
    height: int, top: int = 100, bottom: int = 60, left: int = 64, right: int = 24, **extra: Any
) -> dict[str, Any]:
    """Layout of a figure with subplot titles: the legend sits in the top margin, above the titles."""
    plot_height = max(1, height - top - bottom)
    legend = {"orientation": "h", "yanchor": "bottom", "xanchor": "left", "x": 0, "y": 1 + 30 / plot_height}
    return _base_layout(height=height, margin={"l": left, "r": right, "t": top, "b": bottom}, legend=legend, **extra)


def _figure_json(fig: Any) -> dict[str, Any]:
    """The figure as the plotly JSON the page embeds (validated)."""
    import plotly.io as pio

    figure: dict[str, Any] = json.loads(pio.to_json(fig, validate=True, engine="json"))
    return figure


def chart_label_hist(r: Reports, colors: dict[str, str]) -> Chart:
    """Grouped bars: share of each dataset's labelled images (%) by number of valid labels, side by side."""
    import plotly.graph_objects as go

    title = "Images by number of valid labels"
    hist = r.get("label_count_hist")
    if hist is None:
        return Chart("label-hist", title, note=missing("label_count_hist", "written by mlray stats / evaluate"))
    fig = go.Figure()
    for d in [d for d in r.datasets if d in set(hist["dataset"])]:
        rows = hist[hist["dataset"] == d].sort_values("n_labels")
        fig.add_trace(
            go.Bar(
                x=[int(k) for k in rows["n_labels"]],
                y=[pct(f) for f in rows["fraction"]],
                customdata=[[int(n)] for n in rows["n_images"]],
                name=esc(d),
                marker={"color": colors[d]},
                hovertemplate=f"<b>{esc(d)}</b><br>%{{x}} valid label(s): %{{y:.2f}} %% of labelled images"
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


def _log_toggle() -> dict[str, Any]:
    """The linear / log-scale buttons of the label-count histogram."""
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
        return Chart("multi-share", title, note=missing("dataset_stats", "written by mlray stats / evaluate"))
    names = [d for d in r.datasets if d in set(st["dataset"])]
    rows = st.set_index("dataset").loc[names]
    fig = go.Figure(
        go.Bar(
            x=names,
            y=[pct(f) for f in rows["multi_fraction"]],
            customdata=[
                [int(m), int(n), num(ml)] for m, n, ml in zip(rows["n_multi"], rows["n_labelled"], rows["mean_labels"])
            ],
            marker={"color": [colors[d] for d in names]},
            text=[fmt_pct(f) for f in rows["multi_fraction"]],
            textposition="outside",
            cliponaxis=False,
            hovertemplate="<b>%{x}</b><br>%{y:.2f} % of labelled images have ≥ 2 valid labels"
            "<br>%{customdata[0]:,} of %{customdata[1]:,}; mean %{customdata[2]:.3f} labels per image<extra></extra>",
            showlegend=False,
        )
    )
    top = max([pct(f) or 0 for f in rows["multi_fraction"]] + [1])
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
    """The available values of one metric on one dataset, indexed by model (first row per model)."""
    rows = mm[(mm["dataset"] == dataset) & (mm["metric"] == metric)]
    if "available" in rows.columns:
        rows = rows[rows["available"].fillna(False).astype(bool)]
    rows = rows[rows["value"].notna()]
    return rows.drop_duplicates("model").set_index("model")


def chart_scatter(r: Reports, colors: dict[str, str], a: str, b: str, index: int) -> Chart:
    """Per model: accuracy on A (x) vs on B (y) under top-1, ReaL, variable top-k and ASMA, with y = x dashed, the
    linear and probit fits of ``mlray analyze`` (``fits``) with their slope and R², the models named (all of them
    when few, the extremes of the fit otherwise) and buttons colouring the points by dataset, architecture family
    or pretraining regime (``model_analysis``)."""
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    mm, dg = r.get("model_metrics"), r.get("dataset_gaps")
    cid = f"scatter-{index}"
    title = f"{a} vs {b}: every model, four ways of scoring"
    if mm is None:
        return Chart(cid, title, note=missing("model_metrics", "written by mlray score / evaluate"))
    metrics = [m for m in SCATTER_METRICS if m in set(mm["metric"])]
    if not metrics:
        return Chart(cid, title, note="model_metrics.parquet has none of " + ", ".join(SCATTER_METRICS))
    fig = make_subplots(rows=1, cols=len(metrics), subplot_titles=[METRIC_LABELS[m] for m in metrics],
                        horizontal_spacing=0.07)  # fmt: skip
    fig.update_annotations(font={"size": 13})  # the subplot titles
    groups = model_groups(r, OWN)
    kinds = [k for k in ("family", "pretrain") if groups]
    later: list[tuple[Any, int]] = []  # fit lines and the other colourings, added after every panel's points
    n_points = 0
    left_out: set[str] = set()
    fitted = False
    for i, metric in enumerate(metrics, start=1):
        va, vb = _metric_values(mm, a, metric), _metric_values(mm, b, metric)
        models = [m for m in r.models if m in va.index and m in vb.index]
        left_out |= {m for m in set(va.index) ^ set(vb.index)}
        xs = [pct(va.at[m, "value"]) for m in models]
        ys = [pct(vb.at[m, "value"]) for m in models]
        lo, hi = _axis_range(xs + ys + _bounds(va, models) + _bounds(vb, models))
        fig.add_trace(
            go.Scatter(x=[lo, hi], y=[lo, hi], mode="lines", line=YX_LINE, name="y = x (no change)",
                       legendgroup="yx", showlegend=i == 1, hoverinfo="skip", meta=ROLE_BASE),
            row=1, col=i,
        )  # fmt: skip
        gaps = [None if x is None or y is None else x - y for x, y in zip(xs, ys)]
        hover = (f"<b>%{{text}}</b><br>{esc(a)}: %{{x:.2f}} %<br>{esc(b)}: %{{y:.2f}} %<br>gap: "
                 f"%{{customdata[0]:+.2f}} points%{{customdata[1]}}"
                 f"<extra>{esc(METRIC_LABELS[metric])}</extra>")  # fmt: skip
        about = [_about(groups.get((m, -1))) for m in models]
        fig.add_trace(
            go.Scatter(
                x=xs,
                y=ys,
                mode="markers",
                name=f"models ({len(models)})",
                legendgroup="models",
                showlegend=i == 1,
                text=[esc(m) for m in models],
                customdata=[[g, t] for g, t in zip(gaps, about)],
                marker={"color": colors[b], "size": 10, "line": {"color": "white", "width": 1}, "opacity": 0.9},
                error_x=_error_bars(va, models, xs),
                error_y=_error_bars(vb, models, ys),
                cliponaxis=False,
                hovertemplate=hover,
                meta="color:default",
            ),
            row=1,
            col=i,
        )
        n_points += len(models)
        axis = "" if i == 1 else str(i)
        xref, yref = f"x{axis}", f"y{axis}"
        fig.update_xaxes(range=[lo, hi], title={"text": f"{esc(a)} (%)"}, constrain="domain", row=1, col=i)
        fig.update_yaxes(range=[lo, hi], scaleanchor=f"x{axis}", scaleratio=1, constrain="domain", row=1, col=i,
                         title={"text": f"{esc(b)} (%)" if i == 1 else ""})  # fmt: skip
        if not models:
            fig.add_annotation(
                x=0.5, y=0.5, xref=f"x{axis} domain", yref=f"y{axis} domain", showarrow=False,
                text="not available<br>for these models", font={"size": 12, "color": "#92400e"},
            )  # fmt: skip
        mean_gap = _mean_gap(dg, a, b, metric)
        if mean_gap is not None:
            fig.add_annotation(
                x=0.03, y=0.97, xref=f"x{axis} domain", yref=f"y{axis} domain", xanchor="left", yanchor="top",
                text=f"mean gap {mean_gap:+.2f} pts", showarrow=False,
                font={"size": 12, "color": "#374151"}, bgcolor="rgba(255,255,255,0.85)",
            )  # fmt: skip
        rows = fit_rows(r, OWN, a, b, metric)
        if rows:
            fitted = True
            later += [(t, i) for t in fit_traces(rows, show_legend=i == 1)]
            fig.add_annotation(fit_annotation(rows, f"x{axis} domain", f"y{axis} domain"))
        if len(models) <= MAX_LABELS:
            labels = point_labels(xs, ys, models, xref, yref, (lo, hi))
        else:
            residuals = [groups.get((m, -1), {}).get("residuals", {}).get((b, metric), (None, None))[0] for m in models]
            labels = extreme_labels(xs, ys, models, residuals, xref, yref)
        for label in labels:
            fig.add_annotation(label)
        for kind in kinds:
            later += [(t, i) for t in _grouped_points(models, xs, ys, groups, kind, hover, gaps, about, i == 1)]
    if not n_points:
        return Chart(cid, title, note=f"no model has metrics on both {a} and {b} in model_metrics.parquet")
    for trace, col in later:
        fig.add_trace(trace, row=1, col=col)
    extra: dict[str, Any] = {}
    height, top, bottom = (520, 160, 60) if kinds else (440, 100, 60)
    if kinds:
        extra["updatemenus"] = [{**colour_toggle(fig.data, "dataset", kinds), "y": 1 + 112 / (height - top - bottom)}]
    fig.update_layout(_panels_layout(height=height, top=top, bottom=bottom, **extra))
    caption = (
        f"Each point is one model: its accuracy on <b>{esc(a)}</b> (x) and on <b>{esc(b)}</b> (y). Points below "
        "the dashed y = x line score lower on the second dataset. Compare the mean gaps across the panels: a drop "
        "that comes from the datasets' different share of multi-label images shrinks under metrics that credit "
        "every valid label (ReaL, variable top-k) or weigh label-count subgroups equally (ASMA). "
        "Whiskers: 95 % bootstrap intervals (when the report has them)."
    )
    if fitted:
        caption += (" Lines: least-squares fits of B on A across the models (<code>fits</code>): solid on the "
                    "linear scale, dotted on the probit scale (Taori et al. 2020; a model above it has positive "
                    "effective robustness); slope, intercept and R² in each panel.")  # fmt: skip
    if kinds:
        caption += (" The buttons colour the points by architecture family or pretraining data "
                    "(<code>model_analysis</code>).")  # fmt: skip
    if left_out:
        caption += f" Left out (metrics on only one of the two datasets): {esc(', '.join(sorted(left_out)))}."
    return Chart(cid, title, _figure_json(fig), caption)


def _axis_range(values: list[float | None]) -> tuple[float, float]:
    """An axis range holding every value with a margin (8 % of the span, at least 2 points) on both sides, so no
    point or whisker sits on the edge (0 and 100 % included); 0..100 when there is no value."""
    known = [v for v in values if v is not None]
    if not known:
        return 0.0, 100.0
    pad = max(2.0, 0.08 * (max(known) - min(known)))
    return min(known) - pad, max(known) + pad


def _bounds(frame: pd.DataFrame, models: list[str]) -> list[float | None]:
    """The interval ends (``ci_low``, ``ci_high``) of the models' values, in %."""
    return [pct(frame.at[m, c]) for m in models for c in ("ci_low", "ci_high")]


def _about(entry: dict[str, Any] | None) -> str:
    """The hover line naming a model's family and pretraining regime (``model_analysis``); "" without it."""
    if not entry:
        return ""
    return f"<br>{esc(entry['family'])} · {esc(REGIME_LABELS.get(entry['pretrain'], entry['pretrain']))}"


def _grouped_points(
    models: list[str], xs: list, ys: list, groups: dict, kind: str, hover: str, gaps: list, about: list,
    show_legend: bool,
) -> list[Any]:  # fmt: skip
    """The points of one panel split by family or pretraining regime (hidden until its button is pressed)."""
    import plotly.graph_objects as go

    labels = [groups.get((m, -1), {}).get(kind, "") for m in models]
    legend = colour_groups(labels, kind)
    drawn = [group_of(g, legend) for g in labels]
    out = []
    for group, name, color in legend:
        idx = [j for j, g in enumerate(drawn) if g == group]
        if not idx:
            continue
        out.append(go.Scatter(
            x=[xs[j] for j in idx], y=[ys[j] for j in idx], mode="markers", name=esc(name),
            legendgroup=f"{kind}-{group}", showlegend=show_legend, text=[esc(models[j]) for j in idx],
            customdata=[[gaps[j], about[j]] for j in idx], visible=False, cliponaxis=False,
            marker={"color": color, "size": 10, "line": {"color": "white", "width": 1}, "opacity": 0.9},
            hovertemplate=hover, meta=f"color:{kind}",
        ))  # fmt: skip
    return out


def _mean_gap(dg: pd.DataFrame | None, a: str, b: str, metric: str) -> float | None:
    """The ``dataset_gaps`` report's mean gap A − B of ``metric`` over the models scored on both, in points; None
    when the report is absent or no model has the metric on both datasets."""
    if dg is None:
        return None
    rows = dg[(dg["dataset_a"] == a) & (dg["dataset_b"] == b) & (dg["metric"] == metric) & (dg["n_models"] > 0)]
    return pct(rows["mean_gap"].iloc[0]) if len(rows) else None


def _error_bars(frame: pd.DataFrame, models: list[str], values: list[float | None]) -> dict[str, Any]:
    """Asymmetric error bars from the report's ``ci_low`` / ``ci_high`` around ``values`` (0 where missing)."""
    plus: list[float] = []
    minus: list[float] = []
    for m, v in zip(models, values):
        lo, hi = pct(frame.at[m, "ci_low"]), pct(frame.at[m, "ci_high"])
        plus.append(max(0.0, hi - v) if hi is not None and v is not None else 0.0)
        minus.append(max(0.0, v - lo) if lo is not None and v is not None else 0.0)
    visible = any(plus) or any(minus)
    return {"type": "data", "symmetric": False, "array": plus, "arrayminus": minus, "visible": visible,
            "thickness": 1, "width": 0, "color": "rgba(55, 65, 81, 0.45)"}  # fmt: skip


def _group_key(label: str) -> tuple[int, str]:
    """Sort key of a subgroup label ("1", "2", …, "5+"): its number, then the text."""
    digits = "".join(ch for ch in str(label) if ch.isdigit())
    return (int(digits) if digits else 10**6, str(label))


def chart_subgroups(r: Reports, colors: dict[str, str]) -> Chart:
    """Lines: each model's accuracy on each dataset per subgroup of images with k valid labels."""
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    title = "Accuracy by number of valid labels"
    sg = r.get("subgroup_metrics")
    if sg is None:
        return Chart("subgroups", title, note=missing("subgroup_metrics", "written by mlray score / evaluate"))
    metrics = [m for m in SUBGROUP_METRICS if m in set(sg["metric"])]
    if not metrics:
        return Chart("subgroups", title, note="subgroup_metrics.parquet has none of " + ", ".join(SUBGROUP_METRICS))
    groups = sorted(pd.unique(sg["group"].astype(str)), key=_group_key)
    fig = make_subplots(rows=1, cols=len(metrics), subplot_titles=[METRIC_LABELS[m] for m in metrics],
                        shared_yaxes=True, horizontal_spacing=0.04)  # fmt: skip
    fig.update_annotations(font={"size": 13})  # the subplot titles
    shown_legend: set[str] = set()
    model_index = {m: j for j, m in enumerate(r.models)}
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
                    ys.append(pct(by_group.at[g, "value"]) if ok else None)
                    n = num(by_group.at[g, "n"]) if g in by_group.index else None
                    ns.append(0 if n is None else int(n))
                if all(y is None for y in ys):
                    continue
                fig.add_trace(
                    go.Scatter(
                        x=groups,
                        y=ys,
                        mode="lines+markers",
                        name=esc(d),
                        legendgroup=d,
                        showlegend=d not in shown_legend,
                        text=[esc(model)] * len(groups),
                        customdata=[[n] for n in ns],
                        line={"color": colors[d], "width": 2 if n_models <= 10 else 1},
                        marker={
                            "color": colors[d],
                            "size": 7 if n_models <= 10 else 4,
                            "symbol": MODEL_SYMBOLS[model_index[model] % len(MODEL_SYMBOLS)],
                        },
                        offsetgroup=model,
                        cliponaxis=False,
                        meta=model,
                        opacity=0.9 if n_models <= 10 else 0.55,
                        connectgaps=False,
                        hovertemplate=f"<b>%{{text}}</b> on {esc(d)}<br>%{{x}} valid label(s): %{{y:.2f}} %"
                        f"<br>%{{customdata[0]:,}} images<extra>{esc(METRIC_LABELS[metric])}</extra>",
                    ),
                    row=1,
                    col=i,
                )
                shown_legend.add(d)
        fig.update_xaxes(title={"text": "valid labels per image"}, type="category", row=1, col=i)
    if not shown_legend:
        return Chart("subgroups", title, note="subgroup_metrics.parquet has no available subgroup values")
    fig.update_yaxes(title={"text": "accuracy in the subgroup (%)"}, row=1, col=1)
    fig.update_yaxes(range=[-4, 104], ticksuffix="", row=1)
    drawn = list(dict.fromkeys(t.meta for t in fig.data))
    extra: dict[str, Any] = {"scattermode": "group", "scattergap": 0.45}
    if len(drawn) > 1:
        extra["updatemenus"] = [_model_menu(fig.data, drawn)]
    fig.update_layout(_panels_layout(height=450, top=120 if len(drawn) > 1 else 100, **extra))
    return Chart(
        "subgroups",
        title,
        _figure_json(fig),
        "One line per model and dataset (colour = dataset, marker = model): accuracy restricted to the images "
        "with exactly k valid labels (the last group merges the larger counts). Within a group each model's "
        "points sit side by side, so no line hides another; the menu shows one model at a time. Similar lines "
        "across datasets within a group mean the models generalize; what differs is how many images each group "
        "holds. Hover for the model and the group size.",
    )


def _model_menu(data: Any, models: list[str]) -> dict[str, Any]:
    """The drop-down that shows every model's lines, or one model's (traces carry their model in ``meta``)."""
    metas = [t.meta for t in data]
    buttons = [{"label": "all models", "method": "restyle", "args": [{"visible": [True] * len(metas)}]}]
    buttons += [{"label": esc(m), "method": "restyle", "args": [{"visible": [x == m for x in metas]}]}
                for m in models]  # fmt: skip
    return {"type": "dropdown", "direction": "down", "x": 1, "xanchor": "right", "y": 1.22, "yanchor": "bottom",
            "showactive": True, "active": 0, "buttons": buttons, "font": {"size": 11}}  # fmt: skip


def chart_gap(r: Reports, colors: dict[str, str], a: str, b: str, index: int) -> Chart:
    """Stacked horizontal bars per model: gap A - B = composition (label-count mix) + within-group difference."""
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    cid = f"gap-{index}"
    title = f"Gap decomposition {a} → {b}"
    gd = r.get("gap_decomposition")
    if gd is None:
        return Chart(cid, title, note=missing("gap_decomposition", "written by mlray score / evaluate"))
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
        comp = [pct(part.at[m, "composition"]) for m in ms]
        within = [pct(part.at[m, "within"]) for m in ms]
        gap = [pct(part.at[m, "gap"]) for m in ms]
        custom = [[pct(part.at[m, "value_a"]), pct(part.at[m, "value_b"]), g] for m, g in zip(ms, gap)]
        hover_tail = (f"<br>{esc(a)}: %{{customdata[0]:.2f}} %, {esc(b)}: %{{customdata[1]:.2f}} %"
                      f"<br>gap %{{customdata[2]:+.2f}} pts<extra>{esc(METRIC_LABELS[metric])}</extra>")  # fmt: skip
        for x, name, group, color, label in (
            (comp, "composition (label-count mix)", "comp", COMPOSITION_COLOR, "composition"),
            (within, "within groups", "within", WITHIN_COLOR, "within groups"),
        ):
            fig.add_trace(
                go.Bar(
                    y=ms,
                    x=x,
                    orientation="h",
                    name=name,
                    legendgroup=group,
                    showlegend=i == 1,
                    marker={"color": color},
                    customdata=custom,
                    hovertemplate=f"<b>%{{y}}</b><br>{label}: %{{x:+.2f}} pts" + hover_tail,
                ),
                row=1,
                col=i,
            )
        err = None
        if {"gap_ci_low", "gap_ci_high"} <= set(part.columns):
            lo = [pct(part.at[m, "gap_ci_low"]) for m in ms]
            hi = [pct(part.at[m, "gap_ci_high"]) for m in ms]
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
                       text=f"gap in percentage points ({esc(a)} − {esc(b)})", font={"size": 14})  # fmt: skip
    fig.update_layout(_panels_layout(height=min(2400, 200 + 36 * len(models)), bottom=64, left=24,
                                     barmode="relative", bargap=0.3))  # fmt: skip
    return Chart(
        cid,
        title,
        _figure_json(fig),
        f"Per model, the accuracy gap {esc(a)} − {esc(b)} (diamond) split into <b>composition</b> "
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
    this report's models on the same axes when the report's dataset names match, each collection's linear and
    probit fits (``fits``, slope and R² in the panel), the models furthest above and below the probit fit named
    (``model_analysis``) and buttons colouring the points by collection, family or pretraining regime."""
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    title = "Published results"
    ext = r.get("external_results")
    if ext is None:
        return Chart("published", title, note=missing("external_results", "mlray import-results writes it"))
    panels = [(x, y, t, _published_pairs(ext, x, y)) for x, y, t in PUBLISHED_PAIRS]
    panels = [p for p in panels if len(p[3])]
    if not panels:
        return Chart("published", title, note="external_results.parquet has no model with top-1 on both "
                     + " and ".join(f"{x} / {y}" for x, y, _ in PUBLISHED_PAIRS))  # fmt: skip
    fig = make_subplots(rows=1, cols=len(panels), subplot_titles=[p[2] for p in panels], horizontal_spacing=0.08)
    fig.update_annotations(font={"size": 13})  # the subplot titles
    mm = r.get("model_metrics")
    collections = sorted(pd.unique(pd.concat([p[3]["collection"] for p in panels])))
    groups = {c: model_groups(r, c) for c in collections}
    kinds = [k for k in ("family", "pretrain") if any(groups.values())]
    later: list[tuple[Any, int]] = []
    shown: set[str] = set()
    fitted = False
    for i, (x_ds, y_ds, _, pairs) in enumerate(panels, start=1):
        values = [100 * v for v in pairs["x"]] + [100 * v for v in pairs["y"]]
        hover = (f"<b>%{{text}}</b><br>{esc(x_ds)}: %{{x:.2f}} %<br>{esc(y_ds)}: %{{y:.2f}} %%{{customdata[0]}}"
                 "<extra>%{customdata[1]}</extra>")  # fmt: skip
        axis = "" if i == 1 else str(i)
        for collection in sorted(pd.unique(pairs["collection"])):
            p = pairs[pairs["collection"] == collection]
            style = COLLECTION_STYLE.get(collection, OTHER_COLLECTION_STYLE)
            sizes = ["" if s < 0 else f" @ {int(s)} px" for s in p["img_size"]]
            entries = [groups[collection].get((m, int(s))) for m, s in zip(p["model"], p["img_size"])]
            custom = [[_about(e), esc(collection)] for e in entries]
            names = [esc(f"{m}{s}") for m, s in zip(p["model"], sizes)]
            xs, ys = [pct(v) for v in p["x"]], [pct(v) for v in p["y"]]
            fig.add_trace(
                go.Scatter(
                    x=xs,
                    y=ys,
                    mode="markers",
                    name=esc(f"{collection} ({len(p):,} models)" if i == 1 else collection),
                    legendgroup=f"pub-{collection}",
                    text=names,
                    customdata=custom,
                    marker={"color": style["color"], "symbol": style["symbol"], "size": 6},
                    cliponaxis=False,
                    hovertemplate=hover,
                    showlegend=i == 1 or collection not in set(panels[0][3]["collection"]),
                    meta="color:default",
                ),
                row=1,
                col=i,
            )
            rows = fit_rows(r, collection, x_ds, y_ds, "top1")
            if rows:
                fitted = True
                later += [(t, i) for t in fit_traces(rows, collection, show_legend=i == 1)]
                fig.add_annotation(fit_annotation(rows, f"x{axis} domain", f"y{axis} domain", f"{collection} ",
                                                  y=0.03 + 0.09 * collections.index(collection)))  # fmt: skip
            robustness = [(e or {}).get("residuals", {}).get((y_ds, "top1"), (None, None))[1] for e in entries]
            for label in extreme_labels(xs, ys, names, robustness, f"x{axis}", f"y{axis}"):
                fig.add_annotation(label)
            for kind in kinds:
                later += [(t, i) for t in _published_groups(p, names, xs, ys, custom, entries, kind, hover, i == 1,
                                                            style["symbol"])]  # fmt: skip
        overlay = _own_points(mm, r.models, x_ds, y_ds) if y_ds in r.datasets and x_ds in r.datasets else None
        if overlay:
            xs, ys, models = overlay
            values += [v for v in xs + ys if v is not None]
            fig.add_trace(
                go.Scatter(
                    x=xs,
                    y=ys,
                    mode="markers",
                    name=f"this report ({len(models)} models)",
                    text=[esc(m) for m in models],
                    legendgroup="own",
                    showlegend="own" not in shown,
                    marker={
                        "color": colors[y_ds],
                        "size": 11,
                        "symbol": "star",
                        "line": {"color": "#111827", "width": 1},
                    },
                    cliponaxis=False,
                    hovertemplate=f"<b>%{{text}}</b> (this report)<br>{esc(x_ds)}: %{{x:.2f}} %"
                    f"<br>{esc(y_ds)}: %{{y:.2f}} %<extra></extra>",
                    meta=ROLE_BASE,
                ),  # fmt: skip
                row=1,
                col=i,
            )
            shown.add("own")
        lo, hi = _axis_range(values)
        fig.add_trace(
            go.Scatter(x=[lo, hi], y=[lo, hi], mode="lines", line=YX_LINE, name="y = x", legendgroup="yx",
                       showlegend=i == 1, hoverinfo="skip", meta=ROLE_BASE),
            row=1, col=i,
        )  # fmt: skip
        fig.update_xaxes(range=[lo, hi], title={"text": f"{esc(x_ds)} top-1 (%)"}, constrain="domain", row=1, col=i)
        fig.update_yaxes(range=[lo, hi], title={"text": f"{esc(y_ds)} top-1 (%)"}, scaleanchor=f"x{axis}",
                         scaleratio=1, constrain="domain", row=1, col=i)  # fmt: skip
    for trace, col in later:
        fig.add_trace(trace, row=1, col=col)
    extra: dict[str, Any] = {}
    height, top, bottom = (690, 160, 60) if kinds else (600, 100, 60)
    if kinds:
        extra["updatemenus"] = [
            {**colour_toggle(fig.data, "collection", kinds), "y": 1 + 112 / (height - top - bottom)}
        ]
    fig.update_layout(_panels_layout(height=height, top=top, bottom=bottom, **extra))
    used = {d for x, y, _, _ in panels for d in (x, y)}
    sources = ", ".join(sorted(pd.unique(ext[ext["dataset"].isin(used)]["source"].astype(str))))
    caption = (
        "Top-1 accuracy published by model zoos (one point per model and evaluation resolution), read by "
        f"<code>mlray import-results</code> from {esc(sources)}. Points below the dashed y = x line lose accuracy "
        "on the second dataset; points above it gain (ReaL labels credit every valid label)."
    )
    if fitted:
        caption += (" Lines: each collection's least-squares fit of y on x (<code>fits</code>), solid on the "
                    "linear scale and dotted on the probit scale, where a model's distance above the line is its "
                    "effective robustness (Taori et al. 2020); named: the two models furthest above and below it "
                    "(<code>model_analysis</code>).")  # fmt: skip
    if "own" in shown:
        caption += " Stars: this report's models (its datasets carry the same names)."
    return Chart("published", title, _figure_json(fig), caption)


def _published_groups(
    p: pd.DataFrame, names: list[str], xs: list, ys: list, custom: list, entries: list, kind: str, hover: str,
    show_legend: bool, symbol: str,
) -> list[Any]:  # fmt: skip
    """One collection's points in one panel split by family or pretraining regime (hidden until chosen)."""
    import plotly.graph_objects as go

    labels = [(e or {}).get(kind, "") for e in entries]
    legend = colour_groups(labels, kind)
    drawn = [group_of(g, legend) for g in labels]
    out = []
    for group, name, color in legend:
        idx = [j for j, g in enumerate(drawn) if g == group]
        out.append(go.Scatter(
            x=[xs[j] for j in idx], y=[ys[j] for j in idx], mode="markers", name=esc(name),
            legendgroup=f"{kind}-{group}", showlegend=show_legend, text=[names[j] for j in idx],
            customdata=[custom[j] for j in idx], visible=False, cliponaxis=False, hovertemplate=hover,
            marker={"color": color, "symbol": symbol, "size": 6}, meta=f"color:{kind}",
        ))  # fmt: skip
    return out


def _own_points(
    mm: pd.DataFrame | None, order: list[str], x_ds: str, y_ds: str
) -> tuple[list[float | None], list[float | None], list[str]] | None:
    """This report's models with top-1 on both datasets: (x values, y values, models) in %; None when none."""
    if mm is None:
        return None
    va, vb = _metric_values(mm, x_ds, "top1"), _metric_values(mm, y_ds, "top1")
    models = [m for m in order if m in va.index and m in vb.index]
    if not models:
        return None
    return [pct(va.at[m, "value"]) for m in models], [pct(vb.at[m, "value"]) for m in models], models


def chart_composition(r: Reports, colors: dict[str, str]) -> Chart | None:
    """Three panels from the ``composition_effect`` report: the label-count mix of datasets A and B, the model's
    accuracy on A per number of valid labels (with intervals), and the drop A -> B that the mix alone predicts
    next to the mean published gap. None when the report is absent (the section is left out)."""
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    ce = r.get("composition_effect")
    if ce is None:
        return None
    first = ce.iloc[0]
    a, b, model, metric = str(first["dataset_a"]), str(first["dataset_b"]), str(first["model"]), str(first["metric"])
    label = METRIC_LABELS.get(metric, metric)
    title = f"{a} → {b}: the label-count mix alone"
    share = {q: ce[ce["quantity"] == q].set_index("group") for q in ("share_a", "share_b", "value_a")}
    groups = [g for g in share["share_a"].index if g != "all"]
    fig = make_subplots(rows=1, cols=3, column_widths=[0.36, 0.36, 0.28], horizontal_spacing=0.09,
                        subplot_titles=["images by number of valid labels", f"{esc(model)} on {esc(a)}",
                                        "the drop A → B"])  # fmt: skip
    fig.update_annotations(font={"size": 13})  # the subplot titles
    for q, d, fallback in (("share_a", a, DATASET_COLORS[5]), ("share_b", b, DATASET_COLORS[4])):
        rows = share[q]
        fig.add_trace(
            go.Bar(x=groups, y=[pct(rows.at[g, "value"]) for g in groups], name=esc(d),
                   marker={"color": colors.get(d, fallback)}, customdata=[[int(rows.at[g, "n"])] for g in groups],
                   hovertemplate=f"<b>{esc(d)}</b><br>%{{x}} valid label(s): %{{y:.2f}} %% of its images"
                   "<br>%{customdata[0]:,} images<extra></extra>"),
            row=1, col=1,
        )  # fmt: skip
    values = share["value_a"]
    ys = [pct(values.at[g, "value"]) for g in groups]
    fig.add_trace(
        go.Bar(x=groups, y=ys, name=f"{esc(label)} (95 % CI)", marker={"color": "#374151"},
               error_y=_error_bars(values, groups, ys), customdata=[[int(values.at[g, "n"])] for g in groups],
               hovertemplate=f"<b>{esc(model)}</b> on {esc(a)}<br>%{{x}} valid label(s): %{{y:.2f}} %"
               "<br>%{customdata[0]:,} images<extra></extra>"),
        row=1, col=2,
    )  # fmt: skip
    overall = {q: ce[(ce["quantity"] == q) & (ce["group"] == "all")] for q in ("value_a", "a_standardized_to_b")}
    for q, text, dash in (("value_a", f"{a} mix", "dot"), ("a_standardized_to_b", f"{b} mix", "dash")):
        if len(overall[q]):
            v = pct(overall[q]["value"].iloc[0])
            fig.add_hline(y=v, line={"dash": dash, "color": "#6b7280", "width": 1.5}, row=1, col=2,
                          annotation_text=f"all, {esc(text)}: {v:.1f} %", annotation_position="top right",
                          annotation_font={"size": 11})  # fmt: skip
    comp = ce[(ce["quantity"] == "composition") & (ce["group"] == "all")].set_index("model")
    published = ce[ce["quantity"] == "published_gap_mean"]
    names = [f"mix alone ({esc(m)})" for m in comp.index] + [f"published mean ({esc(p)})" for p in published["model"]]
    heights = [pct(v) for v in comp["value"]] + [pct(v) for v in published["value"]]
    custom = [[f"reweighting to {esc(b)}'s mix ({int(n):,} images of {esc(a)})"] for n in comp["n"]]
    custom += [[f"mean over {int(n):,} models"] for n in published["n"]]
    err = _error_bars(comp.set_axis(names[: len(comp)]), names[: len(comp)], heights[: len(comp)])
    err["array"] += [0.0] * len(published)
    err["arrayminus"] += [0.0] * len(published)
    tints = [COMPOSITION_COLOR] * len(comp) + [PUBLISHED_COLOR] * len(published)
    fig.add_trace(
        go.Bar(x=names, y=heights, marker={"color": tints}, showlegend=False, error_y=err, customdata=custom,
               hovertemplate="<b>%{x}</b>: %{y:.2f} pts<br>%{customdata[0]}<extra></extra>"),
        row=1, col=3,
    )  # fmt: skip
    fig.update_xaxes(title={"text": "valid labels per image"}, type="category", row=1, col=1)
    fig.update_xaxes(title={"text": "valid labels per image"}, type="category", row=1, col=2)
    fig.update_yaxes(title={"text": "share of images (%)"}, ticksuffix=" %", rangemode="tozero", row=1, col=1)
    fig.update_yaxes(title={"text": f"{esc(label)} (%)"}, ticksuffix=" %", range=[0, 100], row=1, col=2)
    fig.update_yaxes(title={"text": "points"}, rangemode="tozero", row=1, col=3)
    fig.update_layout(_panels_layout(height=460, bottom=90, barmode="group", bargap=0.2))
    return Chart(
        "composition",
        title,
        _figure_json(fig),
        f"Left: the share of each dataset's images (labelled, with an original label) that have k valid labels. "
        f"Middle: {esc(model)}'s {esc(label)} on {esc(a)} within each group, and overall under {esc(a)}'s own mix "
        f"(dotted) and reweighted to {esc(b)}'s mix (dashed). Right: the drop that reweighting alone predicts "
        f"(with its bootstrap interval) next to the mean published {esc(a)} → {esc(b)} gap across models "
        "(report <code>composition_effect</code>).",
    )
