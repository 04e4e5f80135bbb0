"""The dashboard's tables, rendered to HTML here and sorted and filtered in the browser by ``dashboard.js``.

A numeric cell carries its raw report value in ``data-v`` (what the sort compares; empty when missing) and shows
it formatted: ``pct`` cells as ``100 × f`` with two decimals, ``pts`` cells as signed points. Each ``table_*``
function returns the table's HTML, or None when its report is absent or has no rows to show.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import pandas as pd

from ..scoring.params import MIN_GAP_FOR_SHARE
from .load import Reports
from .style import METRIC_LABELS, PUBLISHED_TABLE_DATASETS, TABLE_GAP_METRICS, TABLE_METRICS, esc, fmt_num, num


@dataclass
class Column:
    """One table column: its header, its kind (text | int | pct | pts | num) and an optional header tooltip."""

    title: str
    kind: str = "text"  # text | int | pct | pts | num
    tip: str = ""


def _cell(value: object, kind: str, tip: str = "", text: str | None = None, missing: str = "n/a") -> str:
    """One <td>: numeric cells carry the raw value in data-v (what the sort compares; empty when missing, shown
    as ``missing``), text cells their text."""
    if kind == "text":
        shown = "" if value is None or (isinstance(value, float) and math.isnan(value)) else str(value)
        return f'<td title="{esc(tip)}">{esc(shown)}</td>' if tip else f"<td>{esc(shown)}</td>"
    f = num(value)
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
    title = f' title="{esc(tip)}"' if tip else ""
    return f'<td class="num" data-v="{data_v}"{title}>{esc(text)}</td>'


def _table(tid: str, columns: list[Column], rows: list[list[str]], caption: str = "", filter_box: bool = False) -> str:
    """A sortable table (``id=tid``) with its caption below and, above it, a filter box (with ``filter_box``) and
    the hint shown when the table is wider than the page (``dashboard.js`` marks it; the wrapper then scrolls
    sideways with a visible scroll bar and the first column stays in view)."""
    head = "".join(
        f'<th scope="col" data-type="{"text" if c.kind == "text" else "num"}"'
        + (f' title="{esc(c.tip)}"' if c.tip else "")
        + f'><button type="button">{esc(c.title)}<span class="arrow" aria-hidden="true"></span></button></th>'
        for c in columns
    )
    body = "\n".join("<tr>" + "".join(r) + "</tr>" for r in rows)
    hint = (f'<span class="scroll-hint" data-table="{tid}">⇆ wider than the page: scroll sideways for more '
            "columns (the first column stays)</span>")  # fmt: skip
    tools = f'<div class="table-tools">{hint}</div>'
    if filter_box:
        tools = (f'<div class="table-tools"><input type="search" class="table-filter" data-table="{tid}" '
                 f'placeholder="filter rows…" aria-label="filter rows"><span class="row-count" data-table="{tid}">'
                 f"{len(rows):,} rows</span>{hint}</div>")  # fmt: skip
    cap = f'<p class="caption">{caption}</p>' if caption else ""
    return (f'{tools}<div class="table-wrap"><table class="sortable" id="{tid}"><thead><tr>{head}</tr></thead>'
            f"<tbody>\n{body}\n</tbody></table></div>{cap}")  # fmt: skip


def table_datasets(r: Reports) -> str | None:
    """The label statistics of each dataset (``dataset_stats``)."""
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
            _cell(s["mean_labels"], "num", text=fmt_num(s["mean_labels"], 3)),
            _cell(s.get("original_in_valid_fraction"), "pct"),
        ])  # fmt: skip
    return _table("table-datasets", cols, rows)


def table_comparison(r: Reports) -> str | None:
    """The pairwise comparisons of the datasets' label distributions (``dataset_comparison``)."""
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
    """Every metric per model and dataset (``model_metrics``); an unavailable metric shows why."""
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
            tip = f"n = {int(x['n']):,}" if num(x["n"]) is not None else ""
            if num(x["ci_low"]) is not None and num(x["ci_high"]) is not None:
                tip = f"95 % CI {100 * x['ci_low']:.2f} – {100 * x['ci_high']:.2f} %, " + tip
            cells.append(_cell(x["value"], "pct", tip))
        rows.append(cells)
    return _table("table-models", cols, rows,
                  "Values in %; hover a cell for its 95 % bootstrap interval and image count, an <i>n/a</i> for why "
                  "the metric is unavailable. Click a column header to sort (again to reverse).",
                  filter_box=len(rows) > 12)  # fmt: skip


def table_gaps(r: Reports) -> str | None:
    """The gap decomposition A → B for every model and metric, A before B in report order
    (``gap_decomposition``)."""
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
        meaningful = num(x.gap) is not None and abs(x.gap) >= MIN_GAP_FOR_SHARE and num(x.composition) is not None
        share = x.composition / x.gap if meaningful else None
        gap_tip = ""
        if num(getattr(x, "gap_ci_low", None)) is not None and num(getattr(x, "gap_ci_high", None)) is not None:
            gap_tip = f"95 % CI {100 * x.gap_ci_low:+.2f} to {100 * x.gap_ci_high:+.2f} pts"
        a_at_b = [_cell(x.a_standardized_to_b, "pct", missing="—")] if has_std else []
        b_at_a = [_cell(x.b_standardized_to_a, "pct", missing="—")] if has_std else []
        rows.append([
            _cell(x.model, "text"), _cell(x.dataset_a, "text"), _cell(x.dataset_b, "text"), _cell(x.metric, "text"),
            _cell(x.value_a, "pct"), *a_at_b, _cell(x.value_b, "pct"), _cell(x.gap, "pts", gap_tip),
            _cell(x.composition, "pts"), _cell(x.within, "pts"), _cell(share, "pct", missing="—"), *b_at_a,
        ])  # fmt: skip
    return _table("table-gaps", cols, rows,
                  "Gap in percentage points; composition + within = gap. <i>A at B's label mix</i> reweights A's "
                  "subgroup accuracies to B's label-count mix: what the label mix alone predicts for B (it needs "
                  "predictions on A only); <i>B at A's label mix</i> likewise. Top-1 here is over labelled images "
                  "with an "
                  "original label.", filter_box=len(rows) > 12)  # fmt: skip


def table_published_summary(r: Reports) -> str | None:
    """The published val − ImageNetV2 top-1 gap across models per collection (``external_gap_summary``)."""
    summary = r.get("external_gap_summary")
    if summary is None:
        return None
    cols = [Column("collection"), Column("models", "int"), Column("mean (pts)", "pts"), Column("median (pts)", "pts"),
            Column("std (pts)", "num"), Column("min (pts)", "pts"), Column("p10 (pts)", "pts"),
            Column("p90 (pts)", "pts"), Column("max (pts)", "pts")]  # fmt: skip
    rows = [
        [_cell(x.collection, "text"), _cell(x.count, "int"), _cell(x.mean, "pts"), _cell(x.median, "pts"),
         _cell(x.std, "num", text=fmt_num(None if num(x.std) is None else 100 * x.std, 2)),
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
    """Every model's published top-1 on ImageNet val, ReaL and ImageNetV2 (``external_results``)."""
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
                 _cell(p, "num", text=f"{p:,.2f}" if num(p) is not None else "")]  # fmt: skip
        cells += [_cell(vals.get(d), "pct") for d in present]
        if has_gap:
            a, b = num(vals.get("imagenet-val")), num(vals.get("imagenetv2-matched-frequency"))
            cells.append(_cell(None if a is None or b is None else a - b, "pts"))
        rows.append(cells)
    return _table("table-published", cols, rows, "Published top-1 per model; filter by name, click a header to sort.",
                  filter_box=True)  # fmt: skip


def table_published_comparison(r: Reports) -> str | None:
    """This run's top-1 / top-5 next to timm's published value for the same weights and image size
    (``published_comparison``, written by ``mlray evaluate`` when the reports hold ``external_results``)."""
    comp = r.get("published_comparison")
    if comp is None or comp.empty:
        return None
    cols = [Column("model"), Column("dataset"), Column("metric"), Column("img size (px)", "int"),
            Column("mlray (%)", "pct"), Column("published (%)", "pct"), Column("mlray − published (pts)", "pts"),
            Column("published as")]  # fmt: skip
    rows = [[_cell(c.model, "text"), _cell(c.dataset, "text"), _cell(c.metric, "text"), _cell(c.img_size, "int"),
             _cell(c.value, "pct"), _cell(c.published, "pct"), _cell(c.difference, "pts"),
             _cell(f"{c.published_model} ({c.source})", "text")] for c in comp.itertuples()]  # fmt: skip
    return _table("table-published-comparison", cols, rows,
                  "This run's accuracy next to timm's published value for the same weights (pretrained config) and "
                  "image size, on the dataset of the same name.")  # fmt: skip


def table_composition(r: Reports) -> str | None:
    """The story table of the ``composition_effect`` report: per number of valid labels the share of A's and B's
    images (counts in the tooltips) and the model's accuracy on A (its interval in the tooltip); then the overall
    row (image counts and the accuracy on A), and under the table the verdict (:func:`composition_summary`)."""
    ce = r.get("composition_effect")
    if ce is None:
        return None
    first = ce.iloc[0]
    a, b, model, metric = first["dataset_a"], first["dataset_b"], first["model"], first["metric"]
    by = {q: ce[ce["quantity"] == q].set_index("group") for q in ("share_a", "share_b", "value_a")}
    std = ce[(ce["quantity"] == "a_standardized_to_b") & (ce["group"] == "all")]
    cols = [Column("valid labels"), Column(f"share of {a} (%)", "pct", "image counts in the tooltips"),
            Column(f"share of {b} (%)", "pct", "image counts in the tooltips"),
            Column(f"{model} {metric} on {a} (%)", "pct", "95 % bootstrap intervals in the tooltips")]  # fmt: skip

    def value_cell(row: pd.Series) -> str:
        tip = f"95 % CI {100 * row['ci_low']:.2f} – {100 * row['ci_high']:.2f} %" if num(row["ci_low"]) else ""
        return _cell(row["value"], "pct", tip)

    def share_cell(q: str, g: str) -> str:
        return _cell(by[q].at[g, "value"], "pct", f"{int(by[q].at[g, 'n']):,} images")

    rows = []
    for g in by["share_a"].index:
        rows.append([_cell(g, "text"), share_cell("share_a", g), share_cell("share_b", g),
                     value_cell(by["value_a"].loc[g])])  # fmt: skip
    if "all" in by["value_a"].index:
        n_a, n_b = by["value_a"].at["all", "n"], std["n"].iloc[0] if len(std) else None
        rows.append([_cell("all", "text"), _cell(n_a, "int", text=f"{int(n_a):,} images"),
                     _cell(n_b, "int", text=f"{int(n_b):,} images" if n_b is not None else "n/a"),
                     value_cell(by["value_a"].loc["all"])])  # fmt: skip
    summary = composition_summary(ce)
    return _table("table-composition", cols, rows) + (f'<p class="note">{summary}</p>' if summary else "")


def composition_summary(ce: pd.DataFrame) -> str:
    """The verdict under the story table (HTML): the model's accuracy on A -> standardized to B's mix, the drop
    the mix alone predicts and the mean published gap, each read from the report's ``all`` rows; "" when the
    report lacks the first two."""
    pick = {q: ce[(ce["quantity"] == q) & (ce["group"] == "all")] for q in
            ("value_a", "a_standardized_to_b", "composition", "published_gap_mean")}  # fmt: skip
    if pick["value_a"].empty or pick["a_standardized_to_b"].empty:
        return ""
    first = pick["value_a"].iloc[0]
    a, b, model, metric = first["dataset_a"], first["dataset_b"], first["model"], first["metric"]

    def interval(frame: pd.DataFrame, unit: str) -> str:
        row = frame.iloc[0]
        return f"<b>{100 * row['value']:.1f}{unit}</b> [{100 * row['ci_low']:.1f}, {100 * row['ci_high']:.1f}]"

    text = (f"{esc(model)} {esc(metric)}: {interval(pick['value_a'], ' %')} on {esc(a)} → "
            f"{interval(pick['a_standardized_to_b'], ' %')} under {esc(b)}'s label-count mix")  # fmt: skip
    if len(pick["composition"]):
        text += f": a drop of {interval(pick['composition'], '')} points from the mix alone"
    for p in pick["published_gap_mean"].itertuples():
        text += f"; published mean gap <b>{100 * p.value:.2f}</b> points over {int(p.n):,} {esc(p.model)} models"
    return text + " ([…] = 95 % bootstrap intervals)."
