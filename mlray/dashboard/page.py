"""The dashboard page: the header (source, datasets, headline cards), the story section when the folder holds a
``composition_effect`` report (the demo's), the six sections of charts, tables and the confident-mistakes gallery,
and the self-contained HTML file built from the templates in ``mlray/dashboard/assets`` (plotly.js, the
stylesheet, the script and the data all inlined, so it opens offline)."""

from __future__ import annotations

import datetime as _dt
import json
import os
from importlib import resources
from pathlib import Path
from string import Template
from typing import Any

from ..errors import MlrayError
from .charts import (
    Chart,
    chart_composition,
    chart_gap,
    chart_label_hist,
    chart_multi_share,
    chart_published,
    chart_scatter,
    chart_subgroups,
)
from .gallery import SECTION_ID as MISTAKES_ID
from .gallery import absent_note, mistakes
from .load import Reports, load_reports, missing
from .population import (
    NOTE,
    chart_groups,
    chart_rank_changes,
    headline_pairs,
    table_fits,
    table_groups,
    table_model_analysis,
    table_rank_changes,
)
from .style import COMPOSITION_COLOR, PUBLISHED_COLOR, dataset_colors, esc, fmt_pct, num
from .tables import (
    table_comparison,
    table_composition,
    table_datasets,
    table_gaps,
    table_models,
    table_published,
    table_published_comparison,
    table_published_summary,
)

DASHBOARD_FILE = "dashboard.html"


def _cards(r: Reports, colors: dict[str, str]) -> str:
    """The headline cards: each dataset's multi-label share (``dataset_stats``), the mean top-1 gap A → B with the
    share the label-count mix explains (``dataset_gaps``) and the published val → V2 gap
    (``external_gap_summary``); one note line for each of the last two reports that is missing."""
    cards = []
    st = r.get("dataset_stats")
    if st is not None:
        for d in [d for d in r.datasets if d in set(st["dataset"])]:
            s = st[st["dataset"] == d].iloc[0]
            cards.append(
                f'<div class="card" style="--accent:{colors[d]}"><div class="card-label">{esc(d)}</div>'
                f'<div class="card-value">{fmt_pct(s["multi_fraction"])}</div>'
                f'<div class="card-sub">multi-label, of {int(s["n_labelled"]):,} labelled images '
                f"(mean {num(s['mean_labels']) or 0:.3f} labels)</div></div>"
            )
    dg = r.get("dataset_gaps")
    if dg is not None and r.datasets:
        a = r.datasets[0]
        for b in r.datasets[1:]:
            rows = dg[(dg["dataset_a"] == a) & (dg["dataset_b"] == b) & (dg["metric"] == "top1")]
            rows = rows[rows["n_decomposed"] > 0]
            if rows.empty:
                continue
            x = rows.iloc[0]
            shared = num(x["share_explained"])
            share = "n/a (gap < 1 pt)" if shared is None else f"{100 * shared:.0f} %"
            cards.append(
                f'<div class="card" style="--accent:{COMPOSITION_COLOR}"><div class="card-label">top-1 gap '
                f'{esc(a)} → {esc(b)}</div><div class="card-value">{100 * x["mean_decomposed_gap"]:+.2f} pts</div>'
                f'<div class="card-sub">mean over {int(x["n_decomposed"])} model(s); label-count mix explains '
                f"{share}</div></div>"
            )
    summary = r.get("external_gap_summary")
    if summary is not None:
        for y in summary.itertuples():
            cards.append(
                f'<div class="card" style="--accent:{PUBLISHED_COLOR}"><div class="card-label">published top-1 gap '
                f'val → V2 ({esc(y.collection)})</div><div class="card-value">{100 * y.mean:+.2f} pts</div>'
                f'<div class="card-sub">mean over {y.count:,} models (median {100 * y.median:+.2f})</div></div>'
            )
    html = f'<div class="cards">{"".join(cards)}</div>' if cards else ""
    return html + "".join(f'<p class="note">Not shown: {esc(n)}.</p>' for n in _missing_summaries(r))


def _missing_summaries(r: Reports) -> list[str]:
    """Notes for the summary reports a folder lacks while holding the reports they summarize (a folder written
    before mlray wrote them): ``dataset_gaps`` (mean gaps) and ``external_gap_summary`` (published gap)."""
    notes = []
    scored = r.get("model_metrics") is not None or r.get("gap_decomposition") is not None
    if scored and len(r.datasets) > 1 and "dataset_gaps" not in r.files:
        notes.append("the mean gaps between datasets (cards, scatter panels): "
                     + missing("dataset_gaps", "written by mlray score / evaluate"))  # fmt: skip
    if r.get("external_results") is not None and "external_gap_summary" not in r.files:
        notes.append("the published val → ImageNetV2 gap (card, table): "
                     + missing("external_gap_summary", "written by mlray import-results"))  # fmt: skip
    return notes


def _chart_html(c: Chart) -> str:
    """A chart's panel: its drawing area (filled by dashboard.js from the embedded JSON) or its note."""
    if c.figure is None:
        return (f'<figure class="panel omitted" id="{c.id}-panel"><h3>{esc(c.title)}</h3>'
                f'<p class="note">Not shown: {esc(c.note)}.</p></figure>')  # fmt: skip
    return (f'<figure class="panel" id="{c.id}-panel"><h3>{esc(c.title)}</h3>'
            f'<div class="chart" id="{c.id}" data-chart="{c.id}" role="img" aria-label="{esc(c.title)}"></div>'
            f'<figcaption class="caption">{c.caption}</figcaption></figure>')  # fmt: skip


def _section(sid: str, title: str, intro: str, parts: list[str]) -> str:
    """A page section: its heading, its introduction and its non-empty parts."""
    body = "\n".join(p for p in parts if p)
    return f'<section id="{sid}"><h2>{esc(title)}</h2><p class="intro">{intro}</p>\n{body}\n</section>'


def _asset(name: str) -> str:
    """The text of ``mlray/dashboard/assets/<name>`` (read from the installed package)."""
    return (resources.files(__package__) / "assets" / name).read_text(encoding="utf-8")


def _json_for_script(data: dict[str, Any]) -> str:
    """``data`` as JSON safe inside a ``<script>`` element (no ``<``, ``>`` or ``&``; no NaN)."""
    text = json.dumps(data, allow_nan=False, separators=(",", ":"), ensure_ascii=False)
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


def _reports_time(r: Reports) -> str:
    """When the newest report was written (UTC, to the minute)."""
    newest = max(p.stat().st_mtime for p in r.files.values())
    return _dt.datetime.fromtimestamp(newest, _dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")


def page_content(r: Reports) -> tuple[list[Chart], str, dict[str, Any]]:
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
        note = missing("model_metrics", "written by mlray score / evaluate")
        scatters.append(Chart("scatter-0", "Per-model scatter", note=note))
    elif not others:
        scatters.append(Chart("scatter-0", "Per-model scatter",
                              note=f"the scatter needs a second dataset; this report has only {a}"))  # fmt: skip
    elif a is not None:
        scatters = [chart_scatter(r, colors, a, b, i) for i, b in enumerate(others)]
    sub = chart_subgroups(r, colors)
    models_section = _section(
        "models", "Models across datasets",
        f"Accuracy of each model on <b>{esc(a or '-')}</b> against every other dataset, under single-label and "
        "multi-label metrics (<code>model_metrics</code>), and per label-count subgroup "
        "(<code>subgroup_metrics</code>).",
        [*(_chart_html(c) for c in scatters), _chart_html(sub), _wrap_table("Model metrics", table_models(r))],
    )  # fmt: skip

    gaps: list[Chart] = []
    if r.get("gap_decomposition") is None:
        note = missing("gap_decomposition", "written by mlray score / evaluate")
        gaps.append(Chart("gap-0", "Gap decomposition", note=note))
    elif not others:
        gaps.append(Chart("gap-0", "Gap decomposition", note=f"needs a second dataset; this report has only {a}"))
    elif a is not None:
        gaps = [chart_gap(r, colors, a, b, i) for i, b in enumerate(others)]
    gap_section = _section(
        "gap", "Where the gap comes from",
        "Each model's accuracy gap between two datasets split into the part explained by their different "
        "label-count mix and the part left within subgroups of images with the same number of labels "
        "(<code>gap_decomposition</code>).",
        [*(_chart_html(c) for c in gaps), _wrap_table("Gap decomposition", table_gaps(r))],
    )  # fmt: skip

    mistakes_section, mistakes_charts, gallery_data = _mistakes_section(r)

    ranks = chart_rank_changes(r)
    group_charts = [chart_groups(r, i, c, a_ref, b) for i, (c, a_ref, b) in enumerate(headline_pairs(r))]
    if not group_charts:
        group_charts = [Chart("groups-0", "Groups", note=missing("group_summaries", NOTE))]
    population_section = _section(
        "population", "Across models: fits, rankings, families",
        "Which models rank several valid labels well and why: the rankings under top-1 and ASMA, and what "
        "pretraining data and architecture family explain, as means over groups of models with bootstrap intervals "
        "(<code>mlray analyze</code>: <code>fits</code>, <code>rank_changes</code>, <code>model_analysis</code>, "
        "<code>group_summaries</code>). The fit lines on the scatters above and below come from the same reports.",
        [_chart_html(ranks), *(_chart_html(c) for c in group_charts),
         _wrap_table("Fits of B on A across models", table_fits(r)),
         _wrap_table("Rank changes from top-1", table_rank_changes(r)),
         _wrap_table("Group means", table_groups(r)),
         _wrap_table("Per-model analysis", table_model_analysis(r))],
    )  # fmt: skip

    pub = chart_published(r, colors)
    pub_section = _section(
        "published", "Published results",
        "Aggregate accuracies published by timm and imagenet-testbed (<code>external_results</code>, from "
        "<code>mlray import-results</code>), next to this report's models.",
        [_chart_html(pub), _wrap_table("This run next to the published values", table_published_comparison(r)),
         _wrap_table("Published val → ImageNetV2 gap", table_published_summary(r)),
         _wrap_table("Published top-1 by model", table_published(r))],
    )  # fmt: skip

    story = chart_composition(r, colors)
    story_section = ""
    if story is not None:  # only folders holding a composition_effect report (the demo's) have this section
        story_section = _section(
            "story", "The label-count mix alone",
            "One model's accuracy on one dataset, reweighted to another dataset's mix of images with 1, 2, 3 … "
            "valid labels, next to the published gap between the two (the report <code>composition_effect</code>).",
            [_chart_html(story), _wrap_table("How much of the drop is the mix", table_composition(r))],
        )  # fmt: skip

    charts = [*([story] if story is not None else []), hist, share, *scatters, sub, *gaps, *mistakes_charts, ranks,
              *group_charts, pub]  # fmt: skip
    chips = "".join(f'<span class="chip" style="--accent:{colors[d]}">{esc(d)}</span>' for d in r.datasets)
    found = ", ".join(f"<code>{esc(p.name)}</code>" for p in r.files.values())
    built = _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    header = f"""<header class="top">
<h1>mlray report <span class="sub">ImageNet classifiers as multi-label problems</span></h1>
<p class="lede">How good are these classifiers once every valid label of an image counts? This page shows the
label-count statistics of each dataset, each model's accuracy under single-label top-1 and multi-label metrics (ReaL,
variable top-k, ASMA), how much of the accuracy gap between datasets comes from their different share of
multi-label images, and published results for context.</p>
<dl class="meta">
<div><dt>source</dt><dd><code>{esc(r.directory.resolve())}</code></dd></div>
<div><dt>reports written</dt><dd>{_reports_time(r)}</dd></div>
<div><dt>page built</dt><dd>{built}</dd></div>
<div><dt>datasets</dt><dd>{chips or "none"}</dd></div>
<div><dt>models</dt><dd>{len(r.models):,}</dd></div>
<div><dt>reports</dt><dd>{found}</dd></div>
</dl>
{_cards(r, colors)}
<nav>{'<a href="#story">The label-count mix alone</a>' if story_section else ""}<a href="#labels">Label statistics</a>
<a href="#models">Models across datasets</a>
<a href="#gap">Where the gap comes from</a><a href="#{MISTAKES_ID}">Confident mistakes</a>
<a href="#population">Across models</a>
<a href="#published">Published results</a></nav>
</header>"""
    sections = [header, story_section, labels_section, models_section, gap_section, mistakes_section,
                population_section, pub_section]  # fmt: skip
    body = "\n".join(p for p in sections if p)
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
    if gallery_data is not None:
        data["gallery"] = gallery_data
    return charts, body, data


def _mistakes_section(r: Reports) -> tuple[str, list[Chart], dict[str, Any] | None]:
    """The "Confident mistakes" section (:mod:`.gallery`): the dataset and model menus, the gallery of both kinds
    beside the reliability diagram; its chart (none when the section is a note) and the ``gallery`` entry of the
    page's JSON (None then). A folder without ``gallery`` and ``reliability`` gets the section's heading over one
    note line instead."""
    intro = (
        "Images a single-label benchmark counts wrong although the model's top-1 is one of their valid labels, "
        "next to its confident real errors, most confident first (<code>gallery</code>, thumbnails from "
        "<code>thumbnails</code>), and how well the model's top-1 probability matches its accuracy under the "
        "original label and under the valid set (<code>reliability</code>, ECE from <code>model_metrics</code>). "
        "Choose the dataset and the model; the cards and the diagram follow."
    )
    parts = mistakes(r)
    if parts is None:
        note = f'<p class="note">Not shown: {esc(absent_note(r) or "")}.</p>'
        return _section(MISTAKES_ID, "Confident mistakes", intro, [note]), [], None
    body = f'<div class="mistakes-grid">{parts.gallery}{_chart_html(parts.chart)}</div>'
    return _section(MISTAKES_ID, "Confident mistakes", intro, [parts.controls, body]), [parts.chart], parts.data


def _wrap_table(title: str, table: str | None) -> str:
    """A table under its heading; nothing when there is no table."""
    if table is None:
        return ""
    return f'<div class="table-block"><h3>{esc(title)}</h3>{table}</div>'


def render_page(r: Reports) -> str:
    """The whole self-contained HTML page for the reports."""
    from plotly.offline import get_plotlyjs

    _, body, data = page_content(r)
    page = Template(_asset("page.html"))
    return page.substitute(
        title=esc(f"mlray report — {r.directory.resolve().name}"),
        css=_asset("dashboard.css"),
        plotlyjs=get_plotlyjs(),
        data=_json_for_script(data),
        body=body,
        js=_asset("dashboard.js"),
    )


def build_dashboard(reports_dir: str | os.PathLike, out_html: str | os.PathLike | None = None) -> Path:
    """Build the dashboard page from the reports in ``reports_dir`` (or in ``reports_dir/reports``, the layout of an
    ``mlray evaluate`` output folder) and return its path.

    ``out_html`` defaults to ``dashboard.html`` in the folder the reports were read from; it is written atomically
    (temporary name, then rename). Raises :class:`~mlray.errors.MlrayError` (one line) when the folder is missing or
    neither it nor its ``reports/`` subfolder holds any of the reports, a report is unreadable, or the page cannot
    be written.
    """
    reports = load_reports(reports_dir)
    out = Path(out_html) if out_html is not None else reports.directory / DASHBOARD_FILE
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
