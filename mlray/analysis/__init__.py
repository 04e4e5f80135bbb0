"""Population analyses over the models of a report folder (``mlray analyze DIR``; also run by ``mlray score`` and
``mlray evaluate``): which models rank several valid labels well, how the accuracies of many models on two
datasets relate, how the ranking changes from top-1 to the multi-label metrics, and what architecture family
and pretraining data explain.

They read the per-model numbers mlray already writes (``model_metrics``, ``subgroup_metrics``) and the published
results of ``mlray import-results`` (``external_results``) and write four reports
(:func:`~mlray.analysis.run.analyze`): ``fits``, ``rank_changes``, ``model_analysis``, ``group_summaries``.
The dashboard draws them; it computes nothing of its own.

=============  ==================================================================================================
``taxonomy``   a model name's architecture family and pretraining regime (the rule, documented and tested)
``points``     the one long table of per-model values (this report's models, published collections); MLPC
``fits``       least-squares fits of dataset B on A across models, linear and probit (effective robustness)
``ranks``      Kendall tau / Spearman rho between rankings, bootstrap over models, the models that move most
``per_model``  the ``model_analysis`` report: per model and value its family, regime, gap, residuals, rank
``groups``     the ``group_summaries`` report: means by family / regime with bootstrap intervals
``schema``     the Arrow schemas of the four reports
``run``        reading a report folder and writing the reports (:func:`analyze`)
=============  ==================================================================================================
"""

from .points import MLPC, OWN
from .run import ANALYSIS_REPORTS, AnalysisResult, analysis_frames, analyze, find_inputs
from .schema import ANALYSIS_SCHEMAS
from .taxonomy import REGIME_LABELS, REGIMES, family, pretraining

__all__ = [
    "ANALYSIS_REPORTS",
    "ANALYSIS_SCHEMAS",
    "MLPC",
    "OWN",
    "REGIMES",
    "REGIME_LABELS",
    "AnalysisResult",
    "analysis_frames",
    "analyze",
    "family",
    "find_inputs",
    "pretraining",
]
