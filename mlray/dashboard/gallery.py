"""The "Confident mistakes" section: for the dataset and model chosen in two menus, the images a single-label
benchmark counts wrong although the model's top-1 is one of their valid labels, the confident real errors next to
them (``gallery``, with the thumbnails of ``thumbnails``), and the model's reliability diagram under the original
label and under the valid set (``reliability``, the ECE values from ``model_metrics``).

The page embeds each thumbnail once per (dataset, image id), as a ``data:image/jpeg;base64`` URI in the JSON
document's ``gallery.thumbs``, however many models show the image; ``dashboard.js`` builds the cards of the chosen
pair from ``gallery.cards`` and shows that pair's traces of the reliability chart. Probabilities and confidences
are percentages (``100 × p``), like every number of the page.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from .charts import Chart, _base_layout, _figure_json
from .load import Reports, missing
from .style import YX_LINE, esc, num, pct

SECTION_ID = "mistakes"
CHART_ID = "reliability"
WRITTEN_BY = "written by mlray score / evaluate"
KINDS = {  # gallery kind -> its heading on the page, in page order
    "valid_label": "Counted wrong by top-1, but the prediction is a valid label",
    "real_error": "Confident real errors",
}
KIND_CAPTIONS = {
    "valid_label": "The model's top-1 differs from the image's original label but is one of its valid labels: "
    "single-label top-1 counts it wrong, ReaL counts it right. Most confident first.",
    "real_error": "The model's top-1 is none of the image's valid labels, however sure the model is. Most "
    "confident first.",
}
TRUTHS = (  # reliability truth -> legend label, the model_metrics row of its ECE, line colour
    ("original", "original label (top-1)", "ece_top1", "#D55E00"),
    ("valid set", "valid set (ReaL)", "ece_real", "#0072B2"),
)
UNKNOWN = "unknown"  # the original label's name when the image has none (original = -1)
JPEG_MAGIC = b"\xff\xd8\xff"


@dataclass
class Mistakes:
    """What the section shows: the menus and the gallery panel (HTML, or the note standing in for the gallery), the
    reliability chart (or its note) and the ``gallery`` entry of the page's JSON document."""

    controls: str
    gallery: str
    chart: Chart
    data: dict[str, Any] = field(default_factory=dict)


def absent_note(r: Reports) -> str | None:
    """The one-line note that replaces the whole section when the folder holds neither ``gallery`` nor
    ``reliability`` (a folder written before mlray wrote them); None when it holds either."""
    if "gallery" in r.files or "reliability" in r.files:
        return None
    return "the confident mistakes: " + missing("gallery") + "; " + missing("reliability", WRITTEN_BY)


def selection(r: Reports) -> tuple[list[str], list[str]]:
    """The datasets (report order) and the models (``gallery`` order, then the others of ``reliability``) the two
    menus offer: those with rows in either report. The first of each is the default."""
    datasets: list[str] = []
    models: list[str] = []
    for name in ("gallery", "reliability"):
        frame = r.get(name)
        if frame is None:
            continue
        datasets += [d for d in pd.unique(frame["dataset"]) if d not in datasets]
        models += [m for m in pd.unique(frame["model"]) if m not in models]
    ordered = [d for d in r.datasets if d in datasets] + [d for d in datasets if d not in r.datasets]
    return ordered, models


def _ints(cell: Any) -> list[int]:
    """A list<int16> cell as Python ints ([] when null)."""
    return [] if cell is None else [int(v) for v in cell]


def _texts(cell: Any) -> list[str]:
    """A list<str> cell as Python strings ([] when null; a null name as "")."""
    return [] if cell is None else ["" if v is None else str(v) for v in cell]


def card(row: Any) -> dict[str, Any]:
    """One gallery row as the card the page draws: ``rank``, ``image_id``, ``original`` (-1 = unknown),
    ``original_name`` ("unknown" when the image has no original label), ``valid`` and ``valid_names``, ``top``,
    ``top_names`` and ``top_prob`` (the top-5, probabilities in %, None when missing), ``confidence`` (%) and
    ``top1_valid`` (whether the top-1 is a valid label: the card shows it green, else red)."""
    original = int(row.original)
    top, valid = _ints(row.top), _ints(row.valid)
    probs = [] if row.top_prob is None else [pct(p) for p in row.top_prob]
    name = row.original_name if original >= 0 and isinstance(row.original_name, str) else UNKNOWN
    return {
        "rank": int(row.rank),
        "image_id": str(row.image_id),
        "original": original,
        "original_name": name,
        "valid": valid,
        "valid_names": _texts(row.valid_names),
        "top": top,
        "top_names": _texts(row.top_names),
        "top_prob": probs,
        "confidence": pct(row.confidence),
        "top1_valid": bool(top) and top[0] in set(valid),
    }


def cards(gallery: pd.DataFrame) -> dict[str, dict[str, dict[str, list[dict[str, Any]]]]]:
    """dataset -> model -> kind -> its cards (:func:`card`) by rank, the kinds of :data:`KINDS` only."""
    out: dict[str, dict[str, dict[str, list[dict[str, Any]]]]] = {}
    rows = gallery[gallery["kind"].isin(list(KINDS))].sort_values("rank", kind="stable")
    for row in rows.itertuples(index=False):
        kinds = out.setdefault(str(row.dataset), {}).setdefault(str(row.model), {k: [] for k in KINDS})
        kinds[str(row.kind)].append(card(row))
    return out


def _thumb(jpeg: Any, width: Any, height: Any, note: Any) -> dict[str, Any]:
    """One thumbnail as the page embeds it: ``{"src": data URI, "width", "height"}``, or ``{"note": why}`` when
    its bytes are null or not a JPEG."""
    if isinstance(jpeg, (bytes, bytearray, memoryview)) and bytes(jpeg[:3]) == JPEG_MAGIC:
        src = "data:image/jpeg;base64," + base64.b64encode(bytes(jpeg)).decode("ascii")
        return {"src": src, "width": int(num(width) or 0), "height": int(num(height) or 0)}
    if isinstance(note, str) and note:
        return {"note": note}
    return {"note": "no thumbnail (the image could not be read)" if jpeg is None else "the thumbnail is not a JPEG"}


def thumbnails(r: Reports, shown: dict[str, set[str]]) -> tuple[dict[str, dict[str, dict[str, Any]]], dict[str, str]]:
    """The thumbnails of the images the gallery shows (``shown``: dataset -> image ids), each once per (dataset,
    image id) (:func:`_thumb`), and dataset -> the one-line note that stands in for all of a dataset's images:
    ``thumbnails`` is absent, has no row of the dataset, or none of its thumbnails could be read (then the
    report's own note, the most frequent one of the dataset)."""
    th = r.get("thumbnails")
    if th is None:
        note = ("thumbnails.parquet has no rows" if "thumbnails" in r.files
                else missing("thumbnails", WRITTEN_BY))  # fmt: skip
        return {}, {d: note for d in shown}
    thumbs: dict[str, dict[str, dict[str, Any]]] = {}
    notes: dict[str, str] = {}
    for d, ids in shown.items():
        rows = th[th["dataset"] == d].drop_duplicates("image_id")
        if rows.empty:
            notes[d] = f"thumbnails.parquet has no image of {d}"
            continue
        entries = {str(x.image_id): _thumb(x.jpeg, x.width, x.height, x.note) for x in rows.itertuples(index=False)}
        if not any("src" in e for e in entries.values()):
            said = rows["note"].dropna().astype(str)
            said = said[said != ""]
            notes[d] = str(said.value_counts().index[0]) if len(said) else f"no thumbnail of {d} could be read"
            continue
        gone = {"note": "thumbnails.parquet has no row of this image"}
        thumbs[d] = {i: entries.get(i, gone) for i in sorted(ids)}
    return thumbs, notes


def _ece(r: Reports, model: str, dataset: str, metric: str) -> float | None:
    """The ``model_metrics`` value of ``metric`` (``ece_top1`` / ``ece_real``) for the pair, in %; None without
    it (no report, no row, not available)."""
    mm = r.get("model_metrics")
    if mm is None:
        return None
    rows = mm[(mm["model"] == model) & (mm["dataset"] == dataset) & (mm["metric"] == metric)]
    if "available" in rows.columns:
        rows = rows[rows["available"].fillna(False).astype(bool)]
    values = [v for v in (pct(x) for x in rows["value"]) if v is not None]
    return values[0] if values else None


def reliability_title(dataset: str, model: str) -> str:
    """The reliability chart's title for one pair (plotly text, escaped); ``dashboard.js`` builds the same."""
    return f"Reliability of {esc(model)} on {esc(dataset)}"


def no_bins_annotation() -> dict[str, Any]:
    """The annotation the chart shows when the chosen pair has no ``reliability`` bin holding images (no rows, or
    predictions without probabilities); ``dashboard.js`` adds the same."""
    return {"text": "no reliability bin with images for this model on this dataset", "x": 0.5, "y": 0.5,
            "xref": "paper", "yref": "paper", "showarrow": False, "bgcolor": "rgba(255, 255, 255, 0.9)",
            "font": {"size": 13, "color": "#92400e"}}  # fmt: skip


def _bin_traces(rel: pd.DataFrame, r: Reports, dataset: str, model: str, visible: bool) -> list[Any]:
    """The two traces of one (dataset, model), one per truth: x = mean confidence, y = accuracy of each non-empty
    bin (%), marker area growing with the bin's image count ``n`` (hover: the bin's range and ``n``), the ECE
    of that truth (``model_metrics``) in the legend when the report has it. Each trace's ``meta`` is
    ``[dataset, model]``."""
    import plotly.graph_objects as go

    pair = rel[(rel["dataset"] == dataset) & (rel["model"] == model)]
    largest = max([int(n) for n in pair["n"] if num(n) is not None] + [1])
    out = []
    for truth, label, metric, color in TRUTHS:
        rows = pair[pair["truth"] == truth].sort_values("bin")
        rows = rows[(rows["n"] > 0) & rows["confidence"].notna() & rows["accuracy"].notna()]
        ece = _ece(r, model, dataset, metric)
        name = label if ece is None else f"{label} · ECE {ece:.2f} %"
        ns = [int(n) for n in rows["n"]]
        out.append(
            go.Scatter(
                x=[pct(v) for v in rows["confidence"]],
                y=[pct(v) for v in rows["accuracy"]],
                mode="lines+markers",
                name=esc(name),
                legendgroup=truth,
                customdata=[[n, pct(lo), pct(hi)] for n, lo, hi in zip(ns, rows["bin_low"], rows["bin_high"])],
                line={"color": color, "width": 2},
                marker={
                    "color": color,
                    "size": [6 + 14 * (n / largest) ** 0.5 for n in ns],
                    "opacity": 0.85,
                    "line": {"color": "white", "width": 1},
                },
                cliponaxis=False,
                visible=visible,
                meta=[dataset, model],
                hovertemplate=f"<b>{esc(label)}</b><br>confidence %{{customdata[1]:.1f}}–%{{customdata[2]:.1f}} %"
                "<br>mean confidence %{x:.1f} %<br>accuracy %{y:.1f} %<br>n = %{customdata[0]:,} images"
                f"<extra>{esc(model)} on {esc(dataset)}</extra>",
            )
        )
    return out


def chart_reliability(r: Reports, datasets: list[str], models: list[str]) -> Chart:
    """The reliability diagram: for each (dataset, model) of ``reliability``, mean confidence (x) against accuracy
    (y) per bin under the original label and under the valid set, with the y = x line; only the first pair's
    traces are visible (the section's menus switch them, see ``dashboard.js``); axes 0-100 %."""
    import plotly.graph_objects as go

    title = "Reliability diagram"
    rel = r.get("reliability")
    if rel is None:
        note = "reliability.parquet has no rows" if "reliability" in r.files else missing("reliability", WRITTEN_BY)
        return Chart(CHART_ID, title, note=note)
    have = set(zip(rel["dataset"], rel["model"]))
    pairs = [(d, m) for d in datasets for m in models if (d, m) in have]
    default = (datasets[0], models[0]) if datasets and models else pairs[0]
    fig = go.Figure(
        go.Scatter(
            x=[0, 100],
            y=[0, 100],
            mode="lines",
            line=YX_LINE,
            name="perfectly calibrated (y = x)",
            hoverinfo="skip",
            meta="base",
        )
    )
    for d, m in pairs:
        for trace in _bin_traces(rel, r, d, m, (d, m) == default):
            fig.add_trace(trace)
    axis = {"range": [0, 100], "dtick": 20, "constrain": "domain", "zeroline": False}
    drawn = {tuple(t.meta) for t in fig.data if t.meta != "base" and len(t.x)}
    if default not in drawn:
        fig.add_annotation(no_bins_annotation())
    fig.update_layout(
        _base_layout(
            height=560,
            margin={"l": 64, "r": 24, "t": 64, "b": 150},
            title={
                "text": reliability_title(*default),
                "x": 0,
                "xanchor": "left",
                "yref": "paper",
                "y": 1,
                "yanchor": "bottom",
                "pad": {"b": 14},
                "font": {"size": 14},
            },
            legend={"orientation": "v", "yanchor": "top", "y": -0.16, "x": 0, "xanchor": "left"},
            xaxis={**axis, "title": {"text": "mean top-1 confidence in the bin (%)"}},
            yaxis={**axis, "title": {"text": "accuracy in the bin (%)"}, "scaleanchor": "x", "scaleratio": 1},
        )
    )
    return Chart(
        CHART_ID,
        title,
        _figure_json(fig),
        "The chosen model's images binned by its top-1 probability; each point is one bin: the mean probability "
        "of its images (x) and the share of them whose top-1 is right (y), under the original label and under "
        "the valid set (ReaL). Marker size: the number of images in the bin (hover for it); empty bins are left "
        "out. Points below the dashed y = x line are over-confident; the distance between the two curves is what "
        "the single-label truth alone adds to it (<code>reliability</code>; ECE from <code>model_metrics</code>).",
    )


def _menu(sid: str, label: str, values: list[str]) -> str:
    """A labelled ``<select>`` of ``values``, the first one selected."""
    options = "".join(f'<option value="{esc(v)}"{" selected" if i == 0 else ""}>{esc(v)}</option>'
                      for i, v in enumerate(values))  # fmt: skip
    return f'<label for="{sid}">{esc(label)}</label><select id="{sid}">{options}</select>'


def _gallery_panel(r: Reports) -> str:
    """The gallery panel: the note line for a dataset without images (filled by ``dashboard.js``) and, per kind,
    its heading, caption and the grid the cards go in; the note that stands in for it when ``gallery`` has no
    rows or is absent."""
    if r.get("gallery") is None:
        note = "gallery.parquet has no rows" if "gallery" in r.files else missing("gallery", WRITTEN_BY)
        return (f'<div class="panel omitted gallery" id="gallery"><h3>Image gallery</h3>'
                f'<p class="note">Not shown: {esc(note)}.</p></div>')  # fmt: skip
    kinds = "".join(
        f'<div class="gallery-kind" data-kind="{k}"><h3>{esc(title)} <span class="count" id="gallery-{k}-count">'
        f'</span></h3><p class="caption">{KIND_CAPTIONS[k]}</p><div class="mcards" id="gallery-{k}"></div></div>'
        for k, title in KINDS.items()
    )
    return f'<div class="panel gallery" id="gallery"><p class="note" id="gallery-note" hidden></p>{kinds}</div>'


def mistakes(r: Reports) -> Mistakes | None:
    """The section's parts (:class:`Mistakes`); None when the folder holds neither ``gallery`` nor
    ``reliability`` (the page shows :func:`absent_note` instead)."""
    if absent_note(r) is not None:
        return None
    datasets, models = selection(r)
    gallery = r.get("gallery")
    data: dict[str, Any] = {"datasets": datasets, "models": models, "kinds": list(KINDS), "cards": {},
                            "thumbs": {}, "notes": {}, "no_bins": no_bins_annotation()}  # fmt: skip
    if gallery is not None:
        data["cards"] = cards(gallery)
        shown: dict[str, set[str]] = {}
        for d, i in zip(gallery["dataset"], gallery["image_id"]):
            shown.setdefault(str(d), set()).add(str(i))
        data["thumbs"], data["notes"] = thumbnails(r, shown)
    controls = ""
    if datasets and models:
        controls = (f'<div class="gallery-controls">{_menu("gallery-dataset", "dataset", datasets)}'
                    f'{_menu("gallery-model", "model", models)}</div>')  # fmt: skip
    return Mistakes(controls, _gallery_panel(r), chart_reliability(r, datasets, models), data)
