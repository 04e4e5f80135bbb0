"""Every report, built from a tiny hand-made dataset pair, has typed columns: one Arrow type per column name across
all reports, a struct ``params``, a list ``groups_used``, and typed (never null-typed) columns when empty."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from test_metrics import make_labels

from mlray.external import GAP_SUMMARY_SCHEMA, RESULTS_SCHEMA
from mlray.reports import (
    dataset_gaps_frame,
    empty_report,
    model_frames,
    pair_frame,
    report_schemas,
    report_table,
    stats_frames,
    write_report,
)
from mlray.scoring import PARAMS_TYPE, MetricParams, score_models
from mlray.stats import compare, summarize

P = MetricParams(max_group=2, min_group_size=1, n_boot=20, seed=1)


def _dataset(prefix: str, shift: int):
    original = [1 + shift, 2, 3, 4, -1, 6]
    valid = [[1 + shift], [2, 7], [3], [4, 8, 9], [], None]
    problematic = [False, False, True, False, False, False]
    labels = make_labels(original, valid, problematic=problematic, prefix=prefix)
    topk = np.array([[1 + shift, 0], [7, 2], [0, 3], [4, 9], [5, 0], [6, 1]], np.int16)
    return labels, topk


@pytest.fixture(scope="module")
def reports(tmp_path_factory):
    """name -> (written Parquet path, its schema) for every report, full and empty."""
    (la, ta), (lb, tb) = _dataset("a", 0), _dataset("b", 10)
    sa, sb = summarize("A", la), summarize("B", lb)
    built = dict(stats_frames([sa, sb], [compare(sa, sb)]))
    built.update({f"{k}@single": v for k, v in stats_frames([sa], []).items()})  # no pair: empty comparison
    score_a, score_b = score_models(la, [ta], P)[0], score_models(lb, [tb], P)[0]
    per_model = [model_frames("A", "m", score_a), model_frames("B", "m", score_b)]
    for name in per_model[0]:
        built[name] = pd.concat([f[name] for f in per_model], ignore_index=True)
    built["gap_decomposition"] = pd.concat(
        [pair_frame("m", "A", "B", score_a, score_b, P), pair_frame("m", "B", "A", score_b, lb, P)],
        ignore_index=True,
    )
    built["dataset_gaps"] = dataset_gaps_frame(built["model_metrics"], built["gap_decomposition"], ["A", "B"])
    for name in report_schemas():
        built[f"{name}@empty"] = empty_report(name)
    built["dataset_gaps@none"] = dataset_gaps_frame(
        empty_report("model_metrics"), empty_report("gap_decomposition"), []
    )
    out = tmp_path_factory.mktemp("reports")
    written = {}
    for key, frame in built.items():
        name = key.split("@")[0]
        path = write_report(frame, out / key.replace("@", "_"), name)
        written[key] = (path, pq.read_schema(path))
    return written


def test_every_report_is_built(reports):
    assert {k.split("@")[0] for k in reports} == set(report_schemas())
    assert pq.read_metadata(reports["model_metrics"][0]).num_rows == 2 * 19  # 15 accuracy + 4 confidence metrics
    assert pq.read_metadata(reports["dataset_comparison"][0]).num_rows > 0
    assert pq.read_metadata(reports["dataset_comparison@single"][0]).num_rows == 0


def test_one_type_per_column_name_across_reports(reports):
    types: dict[str, dict[pa.DataType, list[str]]] = {}
    schemas = [(key, schema) for key, (_, schema) in reports.items()]
    schemas += [("external_results", RESULTS_SCHEMA), ("external_gap_summary", GAP_SUMMARY_SCHEMA)]
    for key, schema in schemas:
        for f in schema:
            types.setdefault(f.name, {}).setdefault(f.type, []).append(key)
    mixed = {name: {str(t): keys for t, keys in by.items()} for name, by in types.items() if len(by) > 1}
    assert not mixed
    assert pa.types.is_int16(next(iter(types["class_index"])))
    for name in ("class_a", "class_b"):
        assert pa.types.is_int16(next(iter(types[name])))
    for name in ("n", "n_images", "n_labels", "n_labelled", "n_models"):
        assert pa.types.is_int64(next(iter(types[name]))), name


def test_no_null_typed_column_even_when_empty(reports):
    for key, (_, schema) in reports.items():
        assert not [f.name for f in schema if pa.types.is_null(f.type)], key
        assert schema.remove_metadata() == report_schemas()[key.split("@")[0]], key


def test_params_is_a_struct_and_groups_used_a_list(reports):
    path, schema = reports["model_metrics"]
    assert schema.field("params").type == PARAMS_TYPE
    assert schema.field("groups_used").type == pa.list_(pa.string())
    table = pq.read_table(path)
    rows = {r["metric"]: r for r in table.to_pylist() if r["dataset"] == "A"}
    assert rows["top1"]["params"]["K"] == 2 and rows["top1"]["params"]["k"] == "1"
    assert rows["vtopk_all"]["params"]["k"] == "k_i" and rows["vtopk_all"]["params"]["variant"] == "strict"
    assert rows["asma_real_top1"]["groups_used"] == ["1", "2+"]
    assert rows["real_top1"]["groups_used"] is None
    shankar = rows["ml_acc_shankar"]["params"]
    assert shankar["n_excluded_problematic"] == 1 and shankar["n_classes"] == 3 and shankar["unclear_given"] is False


def test_report_table_rejects_other_columns():
    frame = empty_report("class_metrics").drop(columns="real_top1")
    with pytest.raises(ValueError, match="differ from its schema"):
        report_table(frame, "class_metrics")
