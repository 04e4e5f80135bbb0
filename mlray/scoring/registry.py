"""The metric registry: one :class:`MetricSpec` per metric, the only place a metric is defined.

Each entry names the metric (its report name), the images it is taken over (its *denominator*), the ranks its
per-image value reads and its reference definition in :mod:`mlray.scoring.functional`. The vectorized scorer
(:mod:`mlray.scoring.batch`) computes every per-image metric from these fields, the report frames take their
``params`` text from them, and the tests check each entry against its reference definition.

==================  ===========  ===  =====================================  ===============================
name                denominator  k    per-image value                        reference
==================  ===========  ===  =====================================  ===============================
``top1``            original     1    [y_i in T_1(i)]                        ``top_k_accuracy(k=1)``
``top5``            original     5    [y_i in T_5(i)]                        ``top_k_accuracy(k=5)``
``real_top1``       labelled     1    [T_1(i) & L_i != {}]                   ``real_accuracy(k=1)``
``real_top5``       labelled     5    [T_5(i) & L_i != {}]                   ``real_accuracy(k=5)``
``vtopk_all``       labelled     k_i  [L_i subset of T_{k_i}(i)]             ``variable_top_k(mode="all")``
``vtopk_frac``      labelled     k_i  |T_{k_i}(i) & L_i| / k_i               ``variable_top_k(mode="frac")``
``vtopk_any``       labelled     k_i  [T_{k_i}(i) & L_i != {}]               ``variable_top_k(mode="any")``
``ml_acc_shankar``  shankar      1    per-class mean of [p_i1 in L_i | U_i]  ``shankar_accuracy``
==================  ===========  ===  =====================================  ===============================

Denominators: *original* = images with an original label (y_i >= 0); *labelled* = annotated images with a
non-empty valid set; *shankar* = annotated, non-problematic images with an original label. Every metric is taken
over the images of its denominator that have a prediction. ``asma_<m>`` (ASMA of each per-image metric m) is
derived from m and has no entry of its own.

The confidence metrics (:data:`CONFIDENCE`, computed by :mod:`mlray.scoring.confidence`) read the top-1 rank p_i1
and its probability c_i:

================================  ===========  =====================================  ==============================
name                              denominator  value                                  reference
================================  ===========  =====================================  ==============================
``penalized_valid_share``         mistaken     share of them with p_i1 in L_i         ``penalized_valid_share``
``penalized_valid_share_conf50``  confident    the same over those with c_i >= t      ``penalized_valid_share``
``ece_top1``                      original     sum_b n_b/N |acc_b - conf_b|, y_i      ``expected_calibration_error``
``ece_real``                      labelled     the same, right = p_i1 in L_i          ``expected_calibration_error``
================================  ===========  =====================================  ==============================

*mistaken* = labelled images with an original label whose top-1 differs from it (p_i1 != y_i); *confident* = those
of them with c_i >= ``confidence_threshold`` t (the name carries t in percent: ``_conf50``, ``_conf90``).
The ECE bins are ``ece_bins`` (15) equal-width bins of [0, 1] (:func:`~mlray.scoring.functional.calibration_bin`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Denominator = Literal["original", "labelled", "shankar", "mistaken", "confident"]
Mode = Literal["all", "frac", "any"]

OVER: dict[str, str] = {
    "original": "images with an original label",
    "labelled": "labelled images",
    "shankar": "annotated, non-problematic images with an original label",
    "mistaken": "labelled images with an original label whose top-1 differs from it",
    "confident": "labelled images with an original label whose top-1 differs from it, top-1 probability >= threshold",
}


@dataclass(frozen=True)
class MetricSpec:
    """One metric: report ``name``, its ``denominator`` (the images it is taken over), the ranks ``k`` its
    per-image value reads (None = k_i, one per valid label), the variable top-k ``mode`` (None for the others), the
    report texts ``target`` and ``variant``, and ``definition``: the name of its reference function in
    :mod:`mlray.scoring.functional`, called with :attr:`options`."""

    name: str
    denominator: Denominator
    k: int | None
    definition: str
    target: str
    variant: str | None = None
    mode: Mode | None = None

    @property
    def over(self) -> str:
        """The images the metric is taken over, in words."""
        return OVER[self.denominator]

    @property
    def options(self) -> dict[str, int | str]:
        """The keyword arguments of :attr:`definition` that select this metric (``k`` or ``mode``)."""
        if self.mode is not None:
            return {"mode": self.mode}
        if self.k is None or self.denominator == "shankar":
            return {}
        return {"k": self.k}

    @property
    def needs(self) -> str:
        """The ranks the metric needs per image, in words (for the 'unavailable' reasons)."""
        if self.k is None:
            return "k_i ranks (one per valid label)"
        return f"{self.k} rank" + ("s" if self.k != 1 else "")


PER_IMAGE: tuple[MetricSpec, ...] = (
    MetricSpec("top1", "original", 1, "top_k_accuracy", "original"),
    MetricSpec("top5", "original", 5, "top_k_accuracy", "original"),
    MetricSpec("real_top1", "labelled", 1, "real_accuracy", "valid set", "ReaL"),
    MetricSpec("real_top5", "labelled", 5, "real_accuracy", "valid set", "ReaL"),
    MetricSpec("vtopk_all", "labelled", None, "variable_top_k", "valid set", "strict", "all"),
    MetricSpec("vtopk_frac", "labelled", None, "variable_top_k", "valid set", "fractional", "frac"),
    MetricSpec("vtopk_any", "labelled", None, "variable_top_k", "valid set", "lenient", "any"),
)
"""The metrics with a per-image value, in report order (their order is also the row order of ``ModelScore.X``)."""

SHANKAR_SPEC = MetricSpec(
    "ml_acc_shankar", "shankar", 1, "shankar_accuracy", "valid set | unclear set", "Shankar et al. 2020, per-class mean"
)

METRICS: tuple[str, ...] = tuple(m.name for m in PER_IMAGE)
ASMA_METRICS: tuple[str, ...] = tuple(f"asma_{m}" for m in METRICS)
SHANKAR: str = SHANKAR_SPEC.name
ALL_METRICS: tuple[str, ...] = METRICS + (SHANKAR,) + ASMA_METRICS
"""Every metric of a model's report, in report order: per-image metrics, ``ml_acc_shankar``, then ASMA."""

CONFIDENCE: tuple[MetricSpec, ...] = (
    MetricSpec("penalized_valid_share", "mistaken", 1, "penalized_valid_share", "valid set", "top-1 mistakes"),
    MetricSpec(
        "penalized_valid_share_conf", "confident", 1, "penalized_valid_share", "valid set", "confident top-1 mistakes"
    ),
    MetricSpec("ece_top1", "original", 1, "expected_calibration_error", "original", "calibration"),
    MetricSpec("ece_real", "labelled", 1, "expected_calibration_error", "valid set", "calibration"),
)
"""The confidence metrics (one row each in ``model_metrics`` and per subgroup in ``subgroup_metrics``, no ASMA).
The confident variant's report name carries its threshold (:attr:`MetricParams.confident_metric`,
``penalized_valid_share_conf50``); its entry here is ``penalized_valid_share_conf``."""

SPECS: dict[str, MetricSpec] = {m.name: m for m in PER_IMAGE + (SHANKAR_SPEC,) + CONFIDENCE}


def spec(name: str) -> MetricSpec:
    """The :class:`MetricSpec` of a per-image metric or ``ml_acc_shankar``; for ``asma_<m>``, that of ``m``.

    >>> spec("asma_vtopk_frac").options
    {'mode': 'frac'}
    """
    base = name[5:] if name.startswith("asma_") else name
    if base.startswith("penalized_valid_share_conf") and base[len("penalized_valid_share_conf") :].isdigit():
        base = "penalized_valid_share_conf"
    if base not in SPECS:
        raise KeyError(f"unknown metric {name!r}; one of {', '.join(ALL_METRICS)}")
    return SPECS[base]
