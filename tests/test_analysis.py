"""mlray.analysis (``mlray analyze``): fits checked against an independent computation on timm's published results
(val -> ImageNetV2 MatchedFrequency top-1 over the 1,556 (model, img_size) rows), the family / pretraining rule on
real timm names and against timm's own model_metadata-in1k.csv, rank correlations and movers on a hand-made
example, MLPC against its per-image definition, group means and their bootstrap intervals, the typed reports, and
the command (also run by ``mlray score``)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from conftest import error_of, shared
from scipy.stats import norm
from test_metrics import make_labels

from mlray.analysis import ANALYSIS_SCHEMAS, OWN, analysis_frames, analyze, family, pretraining
from mlray.analysis.fits import fit_line, predict, transform
from mlray.analysis.groups import group_summaries_frame, mean_interval
from mlray.analysis.points import mlpc_frame, own_points
from mlray.analysis.ranks import movers, rank_changes_frame, rank_correlation, ranks
from mlray.analysis.taxonomy import METADATA_REGIMES, input_size_from_name
from mlray.cli import main
from mlray.external import GAP_SUMMARY_SCHEMA, RESULTS_SCHEMA
from mlray.reports import model_frames, report_schemas
from mlray.scoring import MetricParams, score_models

V2 = "imagenetv2-matched-frequency"


# --------------------------------------------------------------------------------------------------------------
# Fits on timm's published results, against numpy on the CSVs


def _published_xy() -> pd.DataFrame:
    """val and V2-MF top-1 (fractions) of every (model, img_size) pair, read straight from timm's CSVs."""
    folder = shared("timm-results")
    val = pd.read_csv(folder / "results-imagenet.csv", thousands=",")
    v2 = pd.read_csv(folder / "results-imagenetv2-matched-frequency.csv", thousands=",")
    xy = val.merge(v2, on=["model", "img_size"], suffixes=("_val", "_v2"))
    return pd.DataFrame({"model": xy["model"], "img_size": xy["img_size"], "x": xy["top1_val"] / 100,
                         "y": xy["top1_v2"] / 100, "params": xy["param_count_val"]})  # fmt: skip


def _ols(tx: np.ndarray, ty: np.ndarray) -> dict[str, float]:
    slope, intercept = np.polyfit(tx, ty, 1)
    resid = ty - (slope * tx + intercept)
    r2 = 1 - (resid @ resid) / (((ty - ty.mean()) ** 2).sum())
    return {"slope": slope, "intercept": intercept, "r2": r2, "residual_std": np.sqrt(resid @ resid / (len(tx) - 2))}


@pytest.fixture(scope="module")
def published(tmp_path_factory):
    """``mlray import-results ../shared/data/timm-results --out R && mlray analyze R`` (the issue's 'done')."""
    folder = tmp_path_factory.mktemp("published")
    assert main(["import-results", str(shared("timm-results")), "--out", str(folder)]) == 0
    assert main(["analyze", str(folder), "--n-boot", "200"]) == 0
    return folder


def test_published_fits_match_numpy(published):
    xy = _published_xy()
    assert len(xy) == 1556
    fits = pd.read_parquet(published / "fits.parquet")
    pair = fits[(fits.collection == "timm") & (fits.dataset_a == "imagenet-val") & (fits.dataset_b == V2)
                & (fits.metric == "top1")].set_index("scale")  # fmt: skip
    assert sorted(pair.index) == ["linear", "probit"]
    for scale, (tx, ty) in {"linear": (xy.x, xy.y), "probit": (norm.ppf(xy.x), norm.ppf(xy.y))}.items():
        expected = _ols(np.asarray(tx, float), np.asarray(ty, float))
        row = pair.loc[scale]
        assert row["n_models"] == 1556
        for key, value in expected.items():
            assert row[key] == pytest.approx(value, rel=1e-9, abs=1e-12), (scale, key)
        assert row["x_min"] == xy.x.min() and row["x_max"] == xy.x.max()
    # the figures quoted in the docs (4 decimals)
    assert [round(pair.loc["linear", k], 4) for k in ("slope", "intercept", "r2", "residual_std")] == [
        1.1438, -0.2250, 0.9808, 0.0085]  # fmt: skip
    assert [round(pair.loc["probit", k], 4) for k in ("slope", "intercept", "r2", "residual_std")] == [
        0.9635, -0.3229, 0.9919, 0.0156]  # fmt: skip
    # every pair of the 8 imported datasets, both metrics, both scales
    assert len(fits) == 28 * 2 * 2


def test_published_model_analysis(published):
    """A model's row: its family, regime, size, parameters, gap and its residuals from the fits above."""
    xy = _published_xy()
    ma = pd.read_parquet(published / "model_analysis.parquet")
    row = ma[(ma.model == "resnet50.a1_in1k") & (ma.img_size == 224) & (ma.dataset == V2) & (ma.metric == "top1")]
    assert len(row) == 1
    row = row.iloc[0]
    assert (row.family, row.pretrain, row.reference, row.input_size, row.param_count) == (
        "resnet", "in1k", "imagenet-val", 224, 25.56)  # fmt: skip
    assert row.value == 0.6847 and row.value_reference == 0.80382 and row.gap == pytest.approx(0.80382 - 0.6847)
    lin = _ols(xy.x.to_numpy(), xy.y.to_numpy())
    assert row.fit_residual == pytest.approx(0.6847 - (lin["slope"] * 0.80382 + lin["intercept"]), abs=1e-12)
    pro = _ols(norm.ppf(xy.x.to_numpy()), norm.ppf(xy.y.to_numpy()))
    expected = 0.6847 - norm.cdf(pro["intercept"] + pro["slope"] * norm.ppf(0.80382))
    assert row.effective_robustness == pytest.approx(expected, abs=1e-12)
    # every published (model, img_size) has one row per dataset and metric; the reference row has no gap
    val = ma[(ma.dataset == "imagenet-val") & (ma.metric == "top1")]
    assert len(val) == 1556 and val.gap.isna().all() and (val.value == val.value_reference).all()
    assert val["rank"].min() == 1 and val.sort_values("rank").iloc[0].model.startswith("eva02_large_patch14_448")
    # ImageNet-R / -A are compared with their 200-class val subsets, as timm's own top1_diff is
    assert set(ma[ma.dataset == "imagenet-r"].reference) == {"imagenet-r-clean"}


def test_published_group_summaries_and_rank_changes(published):
    xy = _published_xy()
    gs = pd.read_parquet(published / "group_summaries.parquet")
    sel = gs[(gs.collection == "timm") & (gs.dataset == V2) & (gs.metric == "top1") & (gs.quantity == "gap")]
    allrow = sel[sel.grouping == "all"].iloc[0]
    assert allrow.n_models == 1556 and allrow["mean"] == pytest.approx((xy.x - xy.y).mean(), abs=1e-12)
    assert allrow.ci_low < allrow["mean"] < allrow.ci_high
    regimes = xy.model.map(lambda m: pretraining(m).regime)
    by = sel[sel.grouping == "pretrain"].set_index("group")
    for regime, part in xy.groupby(regimes):
        assert by.loc[regime, "n_models"] == len(part)
        assert by.loc[regime, "mean"] == pytest.approx((part.x - part.y).mean(), abs=1e-12)
    assert by.n_models.sum() == 1556 and by.loc["in1k", "n_models"] == 1091
    rc = pd.read_parquet(published / "rank_changes.parquet")
    real = rc[(rc.collection == "timm") & (rc.metric_b == "real_top1")].iloc[0]
    assert real.dataset == "imagenet-val" and real.metric_b_source == "imagenet-val-real top1"
    assert real.n_models == 1556 and real.kendall_ci_low <= real.kendall_tau <= real.kendall_ci_high
    assert round(real.kendall_tau, 3) == 0.929 and round(real.spearman_rho, 3) == 0.992


# --------------------------------------------------------------------------------------------------------------
# Family and pretraining regime from real timm names

NAMES = [  # (name, family, regime)
    ("resnet50.a1_in1k", "resnet", "in1k"),
    ("resnet50.tv_in1k", "resnet", "in1k"),
    ("resnet50.fb_swsl_ig1b_ft_in1k", "resnet", "ig-yfcc"),
    ("resnet50.fb_ssl_yfcc100m_ft_in1k", "resnet", "ig-yfcc"),
    ("resnext101_32x8d.fb_wsl_ig1b_ft_in1k", "resnext", "ig-yfcc"),
    ("vit_base_patch16_224.augreg2_in21k_ft_in1k", "vit", "in21k"),
    ("vit_base_patch16_224.augreg_in1k", "vit", "in1k"),
    ("vit_base_patch16_224.mae", "vit", "self-supervised"),
    ("vit_base_patch16_clip_224.openai_ft_in1k", "vit", "image-text"),
    ("vit_so400m_patch14_siglip_378.webli_ft_in1k", "vit", "image-text"),
    ("convnext_base.clip_laion2b_augreg_ft_in12k_in1k", "convnext", "image-text"),
    ("convnext_base.fb_in22k_ft_in1k", "convnext", "in21k"),
    ("convnextv2_huge.fcmae_ft_in22k_in1k_512", "convnextv2", "self-supervised"),
    ("tf_efficientnet_b0.ns_jft_in1k", "efficientnet", "jft"),
    ("tf_efficientnet_b0.ap_in1k", "efficientnet", "in1k-adversarial"),
    ("inception_v3.tf_adv_in1k", "inception", "in1k-adversarial"),
    ("efficientnetv2_rw_s.ra2_in1k", "efficientnetv2", "in1k"),
    ("deit_base_distilled_patch16_224.fb_in1k", "deit", "in1k-distilled"),
    ("deit3_base_patch16_224.fb_in22k_ft_in1k", "deit3", "in21k"),
    ("cait_m36_384.fb_dist_in1k", "cait", "in1k-distilled"),
    ("beit_base_patch16_224.in22k_ft_in22k_in1k", "beit", "self-supervised"),
    ("eva02_large_patch14_448.mim_m38m_ft_in22k_in1k", "eva02", "self-supervised"),
    ("eva_giant_patch14_336.clip_ft_in1k", "eva", "image-text"),
    ("regnety_1280.seer_ft_in1k", "regnet", "self-supervised"),
    ("regnety_160.swag_ft_in1k", "regnet", "ig-yfcc"),
    ("regnetz_040.ra3_in1k", "regnetz", "in1k"),
    ("mobilenetv3_large_100.ra_in1k", "mobilenetv3", "in1k"),
    ("hgnetv2_b2.ssld_stage1_in22k_in1k", "hgnetv2", "in21k"),
    ("hgnet_tiny.ssld_in1k", "hgnet", "in1k-distilled"),
    ("wide_resnet50_2.racm_in1k", "wide_resnet", "in1k"),
    ("inception_resnet_v2.tf_in1k", "inception_resnet", "in1k"),
    ("cs3darknet_focus_l.c2ns_in1k", "cspnet", "in1k"),
    ("dm_nfnet_f0.dm_in1k", "nfnet", "in1k"),
    ("ecaresnet50d.miil_in1k", "ecaresnet", "in1k"),
    ("tresnet_m.miil_in21k_ft_in1k", "tresnet", "in21k"),
    ("swin_base_patch4_window7_224.ms_in22k_ft_in1k", "swin", "in21k"),
    ("tiny_vit_21m_224.dist_in22k_ft_in1k", "tiny_vit", "in21k"),
    # tag-less names (timm before 0.9, imagenet-testbed, a run config)
    ("tf_efficientnet_b0_ns", "efficientnet", "jft"),
    ("ig_resnext101_32x8d", "resnext", "ig-yfcc"),
    ("ssl_resnet50", "resnet", "ig-yfcc"),
    ("vit_base_patch16_224", "vit", "in21k"),
    ("vit_base_patch16_224_sam", "vit", "in1k"),
    ("tf_efficientnet_lite0", "efficientnet", "in1k"),
    ("efficientnet-l2-noisystudent", "efficientnet", "jft"),
    ("resnext101_32x8d_swsl", "resnext", "ig-yfcc"),
    ("FixResNeXt101_32x48d_v2", "resnext", "in1k"),
]


@pytest.mark.parametrize(("name", "fam", "regime"), NAMES)
def test_family_and_regime_of_real_names(name, fam, regime):
    assert family(name) == fam
    assert pretraining(name).regime == regime


def test_regime_evidence_and_input_size():
    assert pretraining("vit_base_patch16_224.augreg2_in21k_ft_in1k").evidence == "tag word 'in21k'"
    assert pretraining("beit_base_patch16_224.in22k_ft_in22k_in1k").evidence == "architecture word 'beit'"
    assert pretraining("cait_s24_224").evidence.startswith("timm's default weights of a tag-less name")
    assert input_size_from_name("convnext_base.fb_in22k_ft_in1k_384") == 384
    assert input_size_from_name("vit_large_patch16_384") == 384 and input_size_from_name("resnet50") is None


def test_rule_agrees_with_timm_model_metadata():
    """timm's model_metadata-in1k.csv (521 tag-less names with their pretraining label): the rule gives every one
    of them the mapped label."""
    meta = pd.read_csv(shared("timm-results", "model_metadata-in1k.csv"))
    assert len(meta) == 521 and set(meta.pretrain) == set(METADATA_REGIMES)
    wrong = [(m, p, pretraining(m).regime) for m, p in zip(meta.model, meta.pretrain)
             if pretraining(m).regime != METADATA_REGIMES[p]]  # fmt: skip
    assert wrong == []


def test_tagged_names_against_model_metadata():
    """The tag rule on timm's current (tagged) names, against the metadata label of the same architecture where
    the results have one tag for it: 340 of 342 agree; the two that do not are timm's MLP-Mixers, whose published
    weights are all in21k-pretrained (goog_/miil_in21k_ft_in1k) while the metadata file labels their tag-less
    names in1k."""
    meta = pd.read_csv(shared("timm-results", "model_metadata-in1k.csv")).set_index("model")["pretrain"]
    names = pd.read_csv(shared("timm-results", "results-imagenet.csv"))["model"]
    regimes: dict[str, set[str]] = {}
    for name in names:
        regimes.setdefault(name.split(".")[0], set()).add(pretraining(name).regime)
    comparable = {a: r.pop() for a, r in regimes.items() if a in meta.index and len(r) == 1}
    disagree = sorted(a for a, r in comparable.items() if METADATA_REGIMES[meta[a]] != r)
    assert len(comparable) == 342 and disagree == ["mixer_b16_224", "mixer_l16_224"]
    mixers = {n for n in names if n.startswith("mixer_b16_224.")}
    assert mixers == {"mixer_b16_224.goog_in21k_ft_in1k", "mixer_b16_224.miil_in21k_ft_in1k"}


# --------------------------------------------------------------------------------------------------------------
# Rank correlations and movers on a hand-made example


def test_rank_correlation_hand_made():
    """Five models; under B models 1<->2 and 3<->4 swap places: 2 discordant pairs of 10, so Kendall's tau =
    (8 - 2) / 10 = 0.6; rank differences 1, 1, 1, 1, 0, so Spearman's rho = 1 - 6 * 4 / (5 * 24) = 0.8."""
    a = np.array([0.9, 0.8, 0.7, 0.6, 0.5])
    b = np.array([0.8, 0.9, 0.6, 0.7, 0.5])
    r = rank_correlation(a, b, n_boot=0)
    assert r["kendall_tau"] == pytest.approx(0.6) and r["spearman_rho"] == pytest.approx(0.8)
    assert np.isnan(r["kendall_ci_low"])
    boot = rank_correlation(a, b, n_boot=300, seed=3)
    assert boot == rank_correlation(a, b, n_boot=300, seed=3)  # seeded
    assert -1 <= boot["kendall_ci_low"] <= 0.6 <= boot["kendall_ci_high"] <= 1
    assert -1 <= boot["spearman_ci_low"] <= 0.8 <= boot["spearman_ci_high"] <= 1
    assert ranks(np.array([0.5, 0.9, 0.5])).tolist() == [2, 1, 2]
    moved = movers(["m1", "m2", "m3", "m4", "m5"], [-1] * 5, a, b, n_movers=5)
    assert [(m["model"], m["rank_a"], m["rank_b"]) for m in moved] == [
        ("m2", 2, 1), ("m4", 4, 3), ("m1", 1, 2), ("m3", 3, 4)]  # fmt: skip
    # all tied under one metric: no correlation (NaN), never an error
    assert np.isnan(rank_correlation(a, np.full(5, 0.5))["kendall_tau"])


def _model_metrics(values: dict[tuple[str, str, str], float]) -> pd.DataFrame:
    return pd.DataFrame([{"model": m, "dataset": d, "metric": k, "value": v, "n": 100, "available": True}
                         for (m, d, k), v in values.items()])  # fmt: skip


def test_rank_changes_report_hand_made():
    a = [0.9, 0.8, 0.7, 0.6, 0.5]
    b = [0.8, 0.9, 0.6, 0.7, 0.5]
    values = {}
    for i in range(5):
        values[(f"m{i + 1}", "A", "top1")] = a[i]
        values[(f"m{i + 1}", "A", "asma_vtopk_all")] = b[i]
        values[(f"m{i + 1}", "A", "top5")] = 0.99 - i / 100  # not a multi-label metric: no row
    points = own_points(_model_metrics(values))
    rc = rank_changes_frame(points, {OWN: ["A"]}, n_boot=100, seed=0)
    assert rc[["collection", "dataset", "metric_a", "metric_b", "n_models"]].values.tolist() == [
        [OWN, "A", "top1", "asma_vtopk_all", 5]]  # fmt: skip
    assert rc.kendall_tau.iloc[0] == pytest.approx(0.6) and rc.spearman_rho.iloc[0] == pytest.approx(0.8)
    assert [m["model"] for m in rc.movers.iloc[0]] == ["m2", "m4", "m1", "m3"]
    assert rc.metric_b_source.iloc[0] is None


# --------------------------------------------------------------------------------------------------------------
# MLPC, fits and group means on small inputs


def test_mlpc_is_strict_variable_top_k_on_multi_label_images():
    """MLPC from subgroup_metrics equals its per-image definition: the share of images with >= 2 valid labels
    whose valid labels are all among the first k_i ranks."""
    valid = [[1], [2, 3], [4, 5], [6, 7, 8], [9, 10, 11, 12], [13], [14, 15], [], None]
    ranked = [[1], [3, 2], [4, 99, 5], [8, 6, 7, 98], [9, 10, 11, 97], [13], [15, 98, 97, 14], [], []]
    topk = np.array([(r + [c for c in range(100, 104) if c not in r])[:4] for r in ranked], np.int16)
    labels = make_labels([v[0] if v else 0 for v in valid], valid)
    score = score_models(labels, [topk], MetricParams(max_group=3, min_group_size=1, n_boot=0))[0]
    subgroups = model_frames("A", "m", score)["subgroup_metrics"]
    multi = [(set(v) <= set(t[: len(v)].tolist())) for v, t in zip(valid, topk) if v is not None and len(v) >= 2]
    assert multi == [True, False, True, False, False]
    mlpc = mlpc_frame(subgroups)
    assert mlpc[["model", "dataset", "n"]].values.tolist() == [["m", "A", 5]]
    assert mlpc.value.iloc[0] == pytest.approx(2 / 5)
    # by hand from subgroup rows: sum_g n_g v_g / sum_g n_g over groups 2, 3+ (group 1 and unavailable left out)
    sg = pd.DataFrame({"model": "x", "dataset": "D", "metric": "vtopk_all", "group": ["1", "2", "3+", "4"],
                       "value": [0.9, 0.5, 0.2, np.nan], "n": [10, 4, 6, 0],
                       "available": [True, True, True, False]})  # fmt: skip
    assert mlpc_frame(sg).value.iloc[0] == pytest.approx((4 * 0.5 + 6 * 0.2) / 10)


def test_fit_line_hand_made_and_probit_edges():
    x = np.array([0.2, 0.4, 0.6, 0.8])
    fit = fit_line(x, 2 * x - 0.1)
    assert fit is not None and (round(fit.slope, 12), round(fit.intercept, 12), fit.r2, fit.n) == (2, -0.1, 1.0, 4)
    assert predict(fit, np.array([0.5])).tolist() == pytest.approx([0.9])
    # probit: a value of 0 or 1 has no probit and is left out of that fit only
    y = norm.cdf(0.5 + 1.5 * norm.ppf(x))
    probit = fit_line(np.append(x, 0.9), np.append(y, 1.0), "probit")
    assert probit is not None and probit.n == 4 and probit.slope == pytest.approx(1.5) and probit.r2 == pytest.approx(1)
    assert predict(probit, np.array([0.3])) == pytest.approx(norm.cdf(0.5 + 1.5 * norm.ppf(0.3)))
    assert np.isnan(transform(np.array([0.0]), "probit")[0])
    assert fit_line(np.array([0.5, 0.5]), np.array([0.1, 0.2])) is None  # all x equal: no line
    assert fit_line(np.array([0.5]), np.array([0.1])) is None
    assert np.isnan(fit_line(np.array([0.1, 0.2]), np.array([0.3, 0.5])).residual_std)  # n = 2


def test_group_means_and_intervals():
    ma = pd.DataFrame({
        "collection": "c", "model": ["a", "b", "c", "d"], "family": ["f1", "f1", "f2", "f1"],
        "pretrain": ["in1k", "in1k", "in21k", "in21k"], "dataset": "B", "reference": "A", "metric": "top1",
        "value": [0.5, 0.7, 0.9, 0.6], "gap": [0.1, 0.2, 0.05, 0.15], "fit_residual": [0.01, -0.01, 0.02, np.nan],
        "effective_robustness": [0.0, 0.0, 0.0, 0.0],
    })  # fmt: skip
    gs = group_summaries_frame(ma, n_boot=500, seed=1).set_index(["grouping", "group", "quantity"])
    assert gs.loc[("all", "all", "gap"), "mean"] == pytest.approx(0.125)
    assert gs.loc[("family", "f1", "gap"), "n_models"] == 3
    assert gs.loc[("family", "f1", "gap"), "mean"] == pytest.approx(0.15)
    assert np.isnan(gs.loc[("family", "f2", "gap"), "ci_low"])  # one model: no interval
    assert gs.loc[("pretrain", "in21k", "fit_residual"), "n_models"] == 1  # NaN residuals are left out
    lo, hi = gs.loc[("family", "f1", "gap"), ["ci_low", "ci_high"]]
    assert 0.1 - 1e-12 <= lo <= 0.15 <= hi <= 0.2 + 1e-12
    assert gs.loc[("pretrain", "in1k", "effective_robustness"), ["mean", "ci_low", "ci_high"]].tolist() == [0, 0, 0]
    assert (lo, hi) == mean_interval(np.array([0.1, 0.2, 0.15]), 500, 1)


# --------------------------------------------------------------------------------------------------------------
# Reports, types, command


def test_reports_are_typed_and_agree_with_every_other_report(tmp_path):
    rows = [("resnet50.a1_in1k", 0.8, 0.7), ("vit_base_patch16_224.augreg_in1k", 0.82, 0.69),
            ("vit_base_patch16_224.augreg2_in21k_ft_in1k", 0.85, 0.76)]  # fmt: skip
    values = {(m, d, "top1"): v for m, va, vb in rows for d, v in (("A", va), ("B", vb))}
    _model_metrics(values).to_parquet(tmp_path / "model_metrics.parquet")
    result = analyze(tmp_path, n_boot=50)
    others = {**report_schemas(), "external_results": RESULTS_SCHEMA, "external_gap_summary": GAP_SUMMARY_SCHEMA}
    types: dict[str, set[str]] = {}
    for schema in [*others.values(), *ANALYSIS_SCHEMAS.values()]:
        for f in schema:
            types.setdefault(f.name, set()).add(str(f.type))
    assert {name: t for name, t in types.items() if len(t) > 1} == {}
    for name, schema in ANALYSIS_SCHEMAS.items():
        assert pq.read_schema(result.paths[name]).remove_metadata() == schema, name
    fits = result.frames["fits"]
    assert fits[["dataset_a", "dataset_b", "metric", "collection", "scale", "n_models"]].values.tolist() == [
        ["A", "B", "top1", OWN, "linear", 3], ["A", "B", "top1", OWN, "probit", 3]]  # fmt: skip
    ma = result.frames["model_analysis"]
    assert ma.img_size.isna().all() and set(ma.input_size.dropna()) == {224}
    assert set(ma.pretrain) == {"in1k", "in21k"} and set(ma.family) == {"resnet", "vit"}
    # one model: nothing to fit or rank, every report written typed and empty
    one = tmp_path / "one"
    one.mkdir()
    _model_metrics({("m", "A", "top1"): 0.5}).to_parquet(one / "model_metrics.parquet")
    small = analyze(one)
    assert len(small.frames["fits"]) == 0 and len(small.frames["rank_changes"]) == 0
    assert pq.read_schema(small.paths["fits"]).remove_metadata() == ANALYSIS_SCHEMAS["fits"]
    assert pq.read_table(small.paths["model_analysis"]).num_rows == 1


def test_command_errors_are_one_line(tmp_path, capsys):
    assert "no such report directory" in error_of(analyze, tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    message = error_of(analyze, tmp_path / "empty")
    assert message.startswith(f"{tmp_path / 'empty'}: nothing to analyse in this folder or in ")
    assert main(["analyze", str(tmp_path / "empty")]) == 2
    assert "mlray: error: " in capsys.readouterr().err
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "model_metrics.parquet").write_text("not parquet")
    assert "not a readable Parquet file" in error_of(analyze, bad)


def test_analyze_reads_an_evaluate_output_folder(tmp_path, capsys):
    """``mlray analyze OUT`` on an ``mlray evaluate`` folder reads and writes OUT/reports; --n-boot 0 gives no
    intervals; the command prints the fits and where the reports went."""
    reports = tmp_path / "out" / "reports"
    reports.mkdir(parents=True)
    values = {(f"m{i}", d, "top1"): v for i, (va, vb) in enumerate([(0.8, 0.7), (0.7, 0.55), (0.6, 0.5)])
              for d, v in (("A", va), ("B", vb))}  # fmt: skip
    _model_metrics(values).to_parquet(reports / "model_metrics.parquet")
    assert main(["analyze", str(tmp_path / "out"), "--n-boot", "0"]) == 0
    out = capsys.readouterr().out
    assert "Fits of dataset B on its reference A" in out and f"analysis in {reports}" in out
    assert sorted(p.name for p in reports.iterdir()) == ["fits.parquet", "group_summaries.parquet",
                                                          "model_analysis.parquet", "model_metrics.parquet",
                                                          "rank_changes.parquet"]  # fmt: skip
    gs = pd.read_parquet(reports / "group_summaries.parquet")
    assert gs.ci_low.isna().all() and len(gs)
    frames = analysis_frames({"model_metrics": _model_metrics(values)}, n_boot=0)
    fit = frames["fits"].set_index("scale").loc["linear"]
    expected = _ols(np.array([0.8, 0.7, 0.6]), np.array([0.7, 0.55, 0.5]))
    assert fit.slope == pytest.approx(expected["slope"]) and fit.r2 == pytest.approx(expected["r2"])
    assert pa.types.is_int64(pq.read_schema(reports / "fits.parquet").field("n_models").type)
