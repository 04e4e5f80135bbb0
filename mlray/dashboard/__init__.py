"""The report dashboard (``mlray dashboard DIR``): one self-contained HTML page built from a report folder.

The page inlines everything it needs (plotly.js, its stylesheet, the small hand-written script that draws the
charts and sorts the tables, and the chart data as one JSON document), so it opens offline, from a file, with no
server. It computes no statistic over the models itself: the mean gaps come from the summary reports
``dataset_gaps`` and ``external_gap_summary``. It reads whichever of these reports the folder holds (``DIR``
itself, or ``DIR/reports`` where ``mlray evaluate DIR`` writes them):

========================  ==================================================================================
report                    charts and tables it feeds
========================  ==================================================================================
``dataset_stats``         multi-label share per dataset; the dataset table; the multi-label headline cards
``label_count_hist``      label-count histograms of the datasets side by side
``dataset_comparison``    the table of label-distribution comparisons between datasets
``model_metrics``         per-model scatter of dataset A vs each other dataset B under top-1, ReaL, variable
                          top-k and ASMA with the y = x line; the sortable model-metrics table
``subgroup_metrics``      accuracy by number of valid labels (one line per model and dataset)
``gap_decomposition``     gap A -> B per model split into composition (label-count mix) and within-group parts
``dataset_gaps``          the mean gap A -> B over the models: the scatter panels' mean gaps and the headline
                          card with the share of the top-1 gap the label-count mix explains
``external_results``      published results (timm, imagenet-testbed): ImageNet val vs ImageNetV2 and ReaL
``external_gap_summary``  the published val -> ImageNetV2 top-1 gap across models: its card and table
``composition_effect``    (the demo's story) one model's accuracy reweighted to another dataset's label-count
                          mix, next to the published gap: the first section, its chart and table, when present
``fits``                  (``mlray analyze``) the linear and probit fit lines, slope and R² on every A-vs-B scatter
``model_analysis``        family / pretraining of each point (the colour buttons), the fit extremes named, the
                          ranks of the rank-change chart, the per-model table
``rank_changes``          Kendall tau / Spearman rho under each rank-change panel; the rank-change table
``group_summaries``       group means by pretraining regime or family with bootstrap intervals; the group table
``gallery``               the confident-mistakes cards of the chosen dataset and model: the images top-1 counts
                          wrong whose prediction is a valid label, and the confident real errors (original label,
                          valid labels, top-5 with probabilities); the two menus
``thumbnails``            the cards' images, embedded once per (dataset, image) as JPEG data URIs; a dataset none of
                          whose images could be read gets the report's note instead
``reliability``           the reliability diagram of the chosen dataset and model (mean confidence vs accuracy per
                          bin, original label and valid set, y = x line; ECE from ``model_metrics``)
========================  ==================================================================================

A is the first dataset in report order (the order of ``dataset_stats``, i.e. the run config's, then first
appearance in the other reports); every other dataset is a B. Dataset names are never assumed ("val", "v2"):
axes, legends and titles carry them. A chart whose inputs are missing is left out with a one-line note on the
page; a folder with none of the reports is an :class:`~mlray.errors.MlrayError`. Metric definitions:
``docs/design.md`` and :mod:`mlray.scoring`.

Numbers in the embedded JSON (``<script id="mlray-data" type="application/json">``) are percentages: a
report fraction ``f`` is stored as ``100 * f`` (and a gap in percentage points likewise), so they can be checked
exactly against the Parquet reports.

=============  =============================================================================================
``load``       find the report folder, read the reports (:func:`load_reports` -> :class:`Reports`)
``style``      colours, fonts, metric labels, number formats
``overlays``   what the A-vs-B scatters draw over their points: fit lines, point labels, the colour buttons
``charts``     one plotly figure per chart (:class:`Chart`), or the note that stands in for it
``tables``     the sortable HTML tables
``population`` the section across models: rank changes, group means, the analysis tables
``gallery``    the confident-mistakes section: the image cards, their thumbnails, the reliability diagram
``page``       the header and sections, the HTML file (:func:`render_page`, :func:`build_dashboard`)
``assets/``    ``page.html`` (template), ``dashboard.css``, ``dashboard.js``; read with :mod:`importlib.resources`
=============  =============================================================================================
"""

from .load import REPORT_COLUMNS, Reports, find_reports_dir, load_reports
from .page import DASHBOARD_FILE, build_dashboard, render_page
from .style import DATASET_COLORS, dataset_colors

__all__ = [
    "DASHBOARD_FILE",
    "DATASET_COLORS",
    "REPORT_COLUMNS",
    "Reports",
    "build_dashboard",
    "dataset_colors",
    "find_reports_dir",
    "load_reports",
    "render_page",
]
