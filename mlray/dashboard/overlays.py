"""What the A-vs-B scatters draw on top of their points, all read from the analysis reports of ``mlray analyze``:
the fit lines with their slope and R² (``fits``), labels on the points (every point when there are few, the
extremes of the fit otherwise: ``model_analysis``), and the colour toggle (dataset or collection / architecture
family / pretraining regime, from ``model_analysis``).

Traces carry a role in their ``meta`` (:data:`ROLE_BASE` for lines that always show, ``color:<kind>`` for the
points of one colouring), so :func:`colour_toggle` can build the buttons that show one colouring at a time.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

from ..analysis.taxonomy import REGIME_LABELS, REGIMES
from .load import Reports
from .style import FAMILY_COLORS, FIT_STYLE, OTHER_GROUP_COLOR, REGIME_COLORS, esc, fmt_num

ROLE_BASE = "base"
COLOURINGS = ("default", "family", "pretrain")
COLOURING_LABELS = {"family": "architecture family", "pretrain": "pretraining"}
MAX_FAMILIES = 10  # the largest families get their own colour; the others share "other families"
MAX_LABELS = 12  # with at most this many models every point is labelled; beyond, only the extremes


def fit_rows(r: Reports, collection: str, a: str, b: str, metric: str) -> dict[str, pd.Series]:
    """The ``fits`` rows of (collection, A, B, metric) by scale (``linear``, ``probit``); empty without them."""
    fits = r.get("fits")
    if fits is None:
        return {}
    sel = fits[(fits["collection"] == collection) & (fits["dataset_a"] == a) & (fits["dataset_b"] == b)
               & (fits["metric"] == metric)]  # fmt: skip
    return {str(row["scale"]): row for _, row in sel.iterrows()}


def fit_curve(row: pd.Series, points: int = 60) -> tuple[list[float], list[float]]:
    """The fitted y over the fit's x range ``x_min .. x_max``, both in % (a report row of ``fits``): the line
    ``slope * x + intercept``, or for the probit fit ``Phi(intercept + slope * Phi^-1(x))`` sampled at
    ``points`` x values (it is a curve on these axes)."""
    from scipy.stats import norm

    lo, hi = float(row["x_min"]), float(row["x_max"])
    if row["scale"] == "linear":
        xs = np.array([lo, hi])
        ys = row["slope"] * xs + row["intercept"]
    else:
        xs = np.linspace(lo, hi, points)
        inside = (xs > 0) & (xs < 1)
        xs = xs[inside]
        ys = norm.cdf(row["intercept"] + row["slope"] * norm.ppf(xs))
    return [float(100 * x) for x in xs], [float(100 * y) for y in ys]


def fit_traces(rows: dict[str, pd.Series], label: str = "", show_legend: bool = True) -> list[Any]:
    """The plotly traces of a pair's fits: the linear fit (solid) and the probit fit (dotted), named with
    ``label`` (a collection) when given; hover gives the slope, intercept, R² and the number of models."""
    import plotly.graph_objects as go

    traces = []
    for scale in ("linear", "probit"):
        row = rows.get(scale)
        if row is None:
            continue
        xs, ys = fit_curve(row)
        style = FIT_STYLE[scale]
        name = f"{scale} fit" + (f" ({label})" if label else "")
        traces.append(go.Scatter(
            x=xs, y=ys, mode="lines", name=esc(name), legendgroup=f"fit-{scale}-{label}", showlegend=show_legend,
            line=dict(style), meta=ROLE_BASE,
            hovertemplate=f"<b>{esc(name)}</b><br>{esc(fit_text(row))}<extra></extra>",
        ))  # fmt: skip
    return traces


def fit_text(row: pd.Series) -> str:
    """One fit in words, in % units: ``linear: y = 1.144 x − 22.50, R² 0.981, 1,556 models`` (probit: the slope
    and intercept on the probit scale)."""
    slope, intercept, r2, n = row["slope"], row["intercept"], row["r2"], int(row["n_models"])
    if row["scale"] == "linear":
        body = f"y = {slope:.3f} x {'−' if intercept < 0 else '+'} {abs(100 * intercept):.2f}"
    else:
        body = f"Φ⁻¹(y) = {slope:.3f} Φ⁻¹(x) {'−' if intercept < 0 else '+'} {abs(intercept):.3f}"
    return f"{row['scale']}: {body}, R² {fmt_num(r2, 3)}, {n:,} models"


def fit_label(row: pd.Series) -> str:
    """One fit, short (a panel's corner): ``linear: slope 1.144, R² 0.981``."""
    return f"{row['scale']}: slope {row['slope']:.3f}, R² {fmt_num(row['r2'], 3)}"


def fit_annotation(rows: dict[str, pd.Series], xref: str, yref: str, prefix: str = "", y: float = 0.03) -> dict:
    """The annotation in the lower right corner of a panel naming its fits' slopes and R² (:func:`fit_label`;
    the intercepts and model counts are in the lines' hover and the fits table)."""
    lines = [fit_label(rows[s]) for s in ("linear", "probit") if s in rows]
    return {"x": 0.98, "y": y, "xref": xref, "yref": yref, "xanchor": "right", "yanchor": "bottom",
            "showarrow": False, "align": "right", "text": "<br>".join(esc(prefix + t) for t in lines),
            "font": {"size": 11, "color": "#374151"}, "bgcolor": "rgba(255,255,255,0.85)"}  # fmt: skip


def point_labels(
    xs: Sequence[float | None], ys: Sequence[float | None], names: Sequence[str], xref: str, yref: str,
    x_range: tuple[float, float] = (0.0, 100.0),
) -> list[dict]:  # fmt: skip
    """An annotation per point naming its model, for a panel with few models; points at the same place (to 0.05
    points) get one label naming them all, so none hides another. Labels alternate above and below, and point
    into the panel (to the left of points in the right half of ``x_range``), so none runs off its edge."""
    spots: dict[tuple[float, float], list[str]] = {}
    for x, y, name in zip(xs, ys, names):
        if x is None or y is None:
            continue
        spots.setdefault((round(x / 0.05) * 0.05, round(y / 0.05) * 0.05), []).append(name)
    out = []
    middle = (x_range[0] + x_range[1]) / 2
    for i, ((x, y), who) in enumerate(sorted(spots.items())):
        right = x > middle
        out.append({"x": x, "y": y, "xref": xref, "yref": yref, "text": esc(", ".join(who)), "showarrow": True,
                    "arrowhead": 0, "arrowwidth": 1, "arrowcolor": "#9ca3af", "ax": -14 if right else 14,
                    "ay": -18 if i % 2 else 18, "xanchor": "right" if right else "left",
                    "font": {"size": 10, "color": "#111827"}, "bgcolor": "rgba(255,255,255,0.8)"})  # fmt: skip
    return out


def extreme_labels(
    xs: Sequence[float | None], ys: Sequence[float | None], names: Sequence[str], scores: Sequence[float | None],
    xref: str, yref: str, k: int = 2,
) -> list[dict]:  # fmt: skip
    """Annotations naming the ``k`` points with the highest and the ``k`` with the lowest ``scores`` (a model's
    residual from the fit; None = unknown), for a panel with many models."""
    known = [(s, i) for i, s in enumerate(scores) if s is not None and np.isfinite(s)]
    if not known:
        return []
    known.sort()
    picks = [i for _, i in known[-k:][::-1]] + [i for _, i in known[:k] if i not in [j for _, j in known[-k:]]]
    out = []
    for rank, i in enumerate(picks):
        if xs[i] is None or ys[i] is None:
            continue
        above = rank < k
        out.append({"x": xs[i], "y": ys[i], "xref": xref, "yref": yref, "text": esc(names[i]), "showarrow": True,
                    "arrowhead": 0, "arrowwidth": 1, "arrowcolor": "#6b7280", "ax": -30 if above else 30,
                    "ay": -26 if above else 26, "font": {"size": 10, "color": "#111827"},
                    "bgcolor": "rgba(255,255,255,0.85)"})  # fmt: skip
    return out


def model_groups(r: Reports, collection: str) -> dict[tuple[str, int], dict[str, Any]]:
    """(model, img_size or -1) -> its ``family``, ``pretrain`` and every residual, from ``model_analysis`` rows
    of ``collection``; residuals keyed ``(dataset, metric)`` -> (fit_residual, effective_robustness)."""
    ma = r.get("model_analysis")
    if ma is None:
        return {}
    sel = ma[ma["collection"] == collection]
    out: dict[tuple[str, int], dict[str, Any]] = {}
    sizes = sel["img_size"].astype("Int64").fillna(-1).astype(int)
    for row, size in zip(sel.itertuples(index=False), sizes):
        entry = out.setdefault((str(row.model), int(size)),
                               {"family": str(row.family), "pretrain": str(row.pretrain), "residuals": {}})  # fmt: skip
        entry["residuals"][(str(row.dataset), str(row.metric))] = (row.fit_residual, row.effective_robustness)
    return out


def colour_groups(labels: Sequence[str], kind: str) -> list[tuple[str, str, str]]:
    """The groups of one colouring, in legend order, as (group, legend name, colour): for ``pretrain`` the
    regimes in :data:`~mlray.analysis.taxonomy.REGIMES` order; for ``family`` the :data:`MAX_FAMILIES` largest
    families (by count in ``labels``, then name) and ``other families`` for the rest."""
    counts = pd.Series(list(labels), dtype=object).value_counts()
    if kind == "pretrain":
        present = [g for g in REGIMES if g in counts.index] + sorted(g for g in counts.index if g not in REGIMES)
        return [(g, f"{REGIME_LABELS.get(g, g)} ({int(counts[g]):,})", REGIME_COLORS.get(g, OTHER_GROUP_COLOR))
                for g in present]  # fmt: skip
    ordered = sorted(counts.index, key=lambda g: (-int(counts[g]), g))
    top = ordered[:MAX_FAMILIES]
    out = [(g, f"{g} ({int(counts[g]):,})", FAMILY_COLORS[i % len(FAMILY_COLORS)]) for i, g in enumerate(top)]
    rest = ordered[MAX_FAMILIES:]
    if rest:
        out.append(("", f"other families ({int(sum(counts[g] for g in rest)):,})", OTHER_GROUP_COLOR))
    return out


def group_of(label: str, groups: list[tuple[str, str, str]]) -> str:
    """The group a family / regime label is drawn in: itself when it has its own colour, else ``""`` (other)."""
    return label if any(g == label for g, _, _ in groups) else ""


def colour_toggle(data: Sequence[Any], default_label: str, kinds: Sequence[str]) -> dict[str, Any]:
    """The buttons above a scatter (top left, clear of plotly's tool bar) that choose its colouring:
    ``default_label`` (the traces whose meta is ``color:default``) or each of ``kinds`` (``color:family``,
    ``color:pretrain``); lines (meta ``base``) always show. ``data`` are the figure's traces, in order."""
    metas = [getattr(t, "meta", None) if not isinstance(t, dict) else t.get("meta") for t in data]
    buttons = []
    for kind, label in (("default", default_label), *((k, COLOURING_LABELS[k]) for k in kinds)):
        visible = [m == ROLE_BASE or m == f"color:{kind}" for m in metas]
        buttons.append({"label": f"colour: {label}", "method": "restyle", "args": [{"visible": visible}]})
    return {"type": "buttons", "direction": "right", "x": 0, "xanchor": "left", "y": 1.0, "yanchor": "bottom",
            "pad": {"r": 0, "t": 0, "b": 6}, "showactive": True, "active": 0, "buttons": buttons,
            "font": {"size": 11}}  # fmt: skip
