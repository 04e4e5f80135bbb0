"""The Arrow schemas of the analysis reports (:data:`ANALYSIS_SCHEMAS`). A column name has the type it has in
every other report (:func:`mlray.reports.report_schemas`, :mod:`mlray.external`): ``img_size`` int32, counts
(``n``, ``n_models``) int64, values float64."""

from __future__ import annotations

import pyarrow as pa

_S, _F, _I = pa.string(), pa.float64(), pa.int64()

FITS_SCHEMA = pa.schema(
    [("dataset_a", _S), ("dataset_b", _S), ("metric", _S), ("collection", _S), ("scale", _S), ("n_models", _I),
     ("slope", _F), ("intercept", _F), ("r2", _F), ("residual_std", _F), ("x_min", _F), ("x_max", _F)]
)  # fmt: skip
MOVER_TYPE = pa.struct([("model", _S), ("img_size", pa.int32()), ("rank_a", _I), ("rank_b", _I)])
RANK_CHANGES_SCHEMA = pa.schema(
    [("collection", _S), ("dataset", _S), ("metric_a", _S), ("metric_b", _S), ("metric_b_source", _S),
     ("n_models", _I), ("kendall_tau", _F), ("kendall_ci_low", _F), ("kendall_ci_high", _F), ("spearman_rho", _F),
     ("spearman_ci_low", _F), ("spearman_ci_high", _F), ("n_boot", _I), ("movers", pa.list_(MOVER_TYPE))]
)  # fmt: skip
MODEL_ANALYSIS_SCHEMA = pa.schema(
    [("collection", _S), ("model", _S), ("img_size", pa.int32()), ("family", _S), ("pretrain", _S),
     ("pretrain_evidence", _S), ("input_size", pa.int32()), ("param_count", _F), ("dataset", _S), ("metric", _S),
     ("value", _F), ("n", _I), ("reference", _S), ("value_reference", _F), ("gap", _F), ("fit_residual", _F),
     ("effective_robustness", _F), ("rank", _I)]
)  # fmt: skip
GROUP_SUMMARIES_SCHEMA = pa.schema(
    [("grouping", _S), ("group", _S), ("collection", _S), ("dataset", _S), ("reference", _S), ("metric", _S),
     ("quantity", _S), ("n_models", _I), ("mean", _F), ("ci_low", _F), ("ci_high", _F)]
)  # fmt: skip

ANALYSIS_SCHEMAS: dict[str, pa.Schema] = {
    "fits": FITS_SCHEMA,
    "rank_changes": RANK_CHANGES_SCHEMA,
    "model_analysis": MODEL_ANALYSIS_SCHEMA,
    "group_summaries": GROUP_SUMMARIES_SCHEMA,
}
"""Report name -> its Arrow schema as written (``<name>.parquet``)."""
