"""Scoring: multi-label metrics of stored predictions, pure numpy on a dataset's label arrays (no Ray, no torch).

===================  ==========================================================================================
``params``           :class:`MetricParams`: the choices behind every value (each default defined there once)
``registry``         one :class:`~mlray.scoring.registry.MetricSpec` per metric: name, denominator, definition
``functional``       the reference definitions: small functions on plain inputs, with formulas and doctests
``context``          :class:`DatasetContext` / :func:`prepare_dataset`: a dataset's labels, ready to score on
``results``          :class:`MetricValue`, :class:`ModelScore`: what scoring produces
``batch``            :func:`score_model` / :func:`score_models`: every metric of many models, vectorized
``confidence``       the confidence metrics (penalized valid labels, ECE) and the reliability table, vectorized
``bootstrap``        :func:`bootstrap_scores`: percentile intervals over images, paired across models
``decomposition``    :func:`decompose` / :func:`standardized_accuracy`: A vs B gap split by label-count mix
``frames``           report frames (:func:`metrics_frame`, ...) and the Arrow schemas of the score reports
===================  ==========================================================================================

Notation (docs/design.md, "Metric definitions"): image i has original label y_i (``-1`` unknown), valid-label set L_i,
k_i = |L_i|, unclear set U_i (Shankar et al. labels; empty when not given), stored ranks p_i1, ..., p_ir_i (r_i =
the number of non-padding ranks) and T_k(i) = its top k. An image is *labelled* when it is annotated (valid not
null) and L_i is non-empty. The metrics and the images each is taken over are listed in
:mod:`mlray.scoring.registry`; each is the mean of its per-image value over those images (``ml_acc_shankar``: the
mean over classes of the per-class means). Images outside that set are excluded and counted:
``n_excluded_empty`` (annotated with an empty valid set), ``n_excluded_unannotated`` (valid is null),
``n_excluded_no_original`` (y_i = -1, for ``top1``/``top5``) and ``n_no_prediction`` (eligible images whose row is
all ``-1``). With k_i = 1 the three variable top-k variants equal ``real_top1``.

Choices this project makes (each recorded in the ``params`` struct next to every value):

* **Subgroups.** The group of a labelled image is k_i. Groups ``1 .. max_group-1`` are kept individually and every
  image with k_i >= ``max_group`` falls in one merged group labelled ``f"{max_group}+"`` (default 5: groups
  "1", "2", "3", "4", "5+"). Subgroups exist only for labelled images, so ``top1`` of group g is taken over the
  labelled images of g that have an original label. Every metric (``top1`` too) is reported per subgroup.
* **ASMA.** ``asma_<m>`` is the unweighted mean over subgroups of the subgroup values of ``m``. A group with fewer
  than ``min_group_size`` images (counted over the images ``m`` is taken on) is left out; the groups used are
  reported (``groups_used``). No group large enough -> NaN.
* **Ranks not stored.** A metric that needs more ranks than an image has stored (``top5``/``real_top5`` need 5,
  the variable top-k variants need k_i) is *unavailable* (NaN plus a reason), never zero and never truncated.
  Availability is decided per subgroup: group g is available iff every image of g it is taken on has the ranks it
  needs; the overall value iff every image it is taken on has them; ASMA iff every *used* group is available.
  A top-1-only import (K = 1) therefore gives ``top1``, ``real_top1`` and the variable top-k variants of group
  "1", while ``top5``, ``real_top5`` and the overall variable top-k values are unavailable.
* **Ties.** Ranks are used as stored. :func:`mlray.predictions.topk_from_scores` produces them from scores with
  ties broken by the lower class index.
* **Bootstrap.** Percentile intervals over images (:mod:`mlray.scoring.bootstrap`).
* **Standardization and the gap decomposition**: :func:`decompose`.
"""

from . import functional
from .batch import score_model, score_models
from .bootstrap import bootstrap_scores, percentile_ci
from .context import DatasetContext, prepare_dataset
from .decomposition import decompose, standardized_accuracy
from .frames import (
    CLASS_COLUMNS,
    DECOMPOSITION_COLUMNS,
    MODEL_COLUMNS,
    PARAMS_TYPE,
    SCORE_SCHEMAS,
    SUBGROUP_COLUMNS,
    decomposition_frame,
    metrics_frame,
    per_class_accuracy,
    reliability_frame,
    subgroup_frame,
)
from .params import MetricParams
from .registry import ALL_METRICS, ASMA_METRICS, METRICS, PER_IMAGE, SHANKAR, MetricSpec
from .results import MetricValue, ModelScore

__all__ = [
    "ALL_METRICS",
    "ASMA_METRICS",
    "CLASS_COLUMNS",
    "DECOMPOSITION_COLUMNS",
    "METRICS",
    "MODEL_COLUMNS",
    "PARAMS_TYPE",
    "PER_IMAGE",
    "SCORE_SCHEMAS",
    "SHANKAR",
    "SUBGROUP_COLUMNS",
    "DatasetContext",
    "MetricParams",
    "MetricSpec",
    "MetricValue",
    "ModelScore",
    "bootstrap_scores",
    "decompose",
    "decomposition_frame",
    "functional",
    "metrics_frame",
    "per_class_accuracy",
    "percentile_ci",
    "prepare_dataset",
    "reliability_frame",
    "score_model",
    "score_models",
    "standardized_accuracy",
    "subgroup_frame",
]
