"""Planning an inference run without Ray: hardware defaults, passes, which shards each model still needs given
the store, what a resumed run reuses, whole shards from interleaved batches, progress ticks, steady rates."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest
from conftest import error_of

from mlray.config import InferenceConfig
from mlray.errors import MlrayError
from mlray.images import ImagePlan, Shard
from mlray.inference import (
    cluster_gpus,
    hardware_defaults,
    plan_passes,
    planned_shards,
    reuse_notes,
    reused_shards,
    steady_rate,
)
from mlray.inference.collect import ShardCollector
from mlray.inference.pipeline import PassSpec, pass_spec
from mlray.inference.ticks import Ticking
from mlray.inference.timing import BatchMarks
from mlray.models import ModelSpec, Preprocessing
from mlray.store import shard_tag

# --------------------------------------------------------------------------------------------------------------
# Hardware


def test_hardware_defaults_never_ask_for_more_gpus_than_the_cluster_has():
    # 4 GPUs, 926 models: one actor per GPU per model -> one model per pass (4 GPUs busy), batch 256
    hw = hardware_defaults(InferenceConfig(), gpus=4, cpus=32, n_models=926)
    assert (hw.actors, hw.models_per_pass, hw.batch_size, hw.cpu_threads) == (4, 1, 256, None)
    # 8 GPUs, 2 actors per model -> 4 models per pass (8 GPUs)
    assert hardware_defaults(InferenceConfig(actors_per_model=2), gpus=8, cpus=64, n_models=926).models_per_pass == 4
    assert (
        hardware_defaults(InferenceConfig(), gpus=4, cpus=32, n_models=2).cpus_per_actor == 0.0
    )  # decoding has the CPUs
    # a user setting that needs more GPUs at once than exist would wait forever: refused with the arithmetic
    with pytest.raises(
        MlrayError, match=r"8 models per pass x 4 actors per model need 32 GPUs at once, but the cluster has 4"
    ):
        hardware_defaults(InferenceConfig(models_per_pass=8), gpus=4, cpus=32, n_models=926)
    # device: gpu (an autoscaling cluster) may ask for more than is there now
    assert hardware_defaults(InferenceConfig(device="gpu", actors_per_model=8), gpus=1, cpus=8, n_models=3).actors == 8
    # CPU: up to 8 models per pass sharing what is left after one CPU for decoding, one torch thread each here
    hw = hardware_defaults(InferenceConfig(), gpus=0, cpus=2, n_models=3)
    assert (hw.actors, hw.models_per_pass, hw.cpu_threads, hw.batch_size) == (1, 3, 1, 32)
    assert hw.cpus_per_actor == pytest.approx((2 - 1) / 3)
    assert hardware_defaults(InferenceConfig(models_per_pass=2), gpus=0, cpus=9, n_models=5).cpus_per_actor == 4.0
    # the manifest records them by name
    assert hw.as_dict() == {
        "batch_size": 32,
        "actors": 1,
        "models_per_pass": 3,
        "cpus_per_actor": pytest.approx(1 / 3),
        "cpu_threads": 1,
    }


def test_cluster_gpus_by_device_setting():
    assert cluster_gpus("auto", {"CPU": 8, "GPU": 2}) == 2.0 and cluster_gpus("auto", {"CPU": 8}) == 0.0
    assert cluster_gpus("cpu", {"GPU": 2}) == 0.0
    assert cluster_gpus("gpu", {"CPU": 8}) == 1.0 and cluster_gpus("gpu", {"GPU": 4}) == 4.0


# --------------------------------------------------------------------------------------------------------------
# Passes and resume


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


def test_a_fresh_run_plans_every_shard_for_every_model(two_datasets):
    _, shards = two_datasets
    (only,) = plan_passes(["a", "b"], 8, shards, {})
    assert only.todo == tuple(shards) and only.needs == {"a": frozenset(shards), "b": frozenset(shards)}
    assert only.stored_totals == {"photos": 10, "v2": 3} and only.model_totals == {"a": 13, "b": 13}
    assert only.label == "" and only.images(shards) == {"photos": 10, "v2": 3}


def test_a_resumed_run_skips_the_shards_every_model_of_a_pass_has(two_datasets):
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
    first, second = plan_passes(["a", "b", "c"], 2, shards, listing)
    # pass 1 (a, b): p0 is finished by both -> not read; p1 only by a -> read, b infers it; p2 by neither
    assert first.todo == (f"photos/{p1}", f"photos/{p2}")
    assert first.needs == {"a": {f"photos/{p2}"}, "b": {f"photos/{p1}", f"photos/{p2}"}}
    assert first.stored_totals == {"photos": 6} and first.model_totals == {"a": 2, "b": 6}
    assert (first.label, first.first_model, first.models) == (" (pass 1/2)", 0, ("a", "b"))
    assert first.images(shards) == {"photos": 6, "v2": 0}
    # pass 2 (c): has everything -> nothing to read
    assert second.todo == () and second.needs == {"c": frozenset()} and second.stored_totals == {}
    assert (second.label, second.first_model, second.model_totals) == (" (pass 2/2)", 2, {"c": 0})
    # what the run reuses, and the lines it tells the user
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


def test_models_per_pass_must_be_positive(two_datasets):
    assert (
        error_of(plan_passes, ["a"], 0, two_datasets[1], {}) == "inference: models_per_pass must be at least 1, got 0"
    )


# --------------------------------------------------------------------------------------------------------------
# The pass spec


def prep(size: int, mean: float = 0.5, crop_mode: str = "center") -> Preprocessing:
    return Preprocessing((3, size, size), 0.875, crop_mode, "bicubic", (mean,) * 3, (0.25,) * 3)


def test_pass_spec_shares_one_image_column_per_distinct_resize(two_datasets):
    _, shards = two_datasets
    items = [(k, s.shard) for k, s in shards.items()]
    a, b, c = ModelSpec("resnet18", "none"), ModelSpec("resnet34", "none"), ModelSpec("resnet50", "none")
    models = [
        (a, prep(224), frozenset({items[0][0]})),
        (b, prep(224, mean=0.4), frozenset()),
        (c, prep(160), frozenset()),
    ]
    hw = hardware_defaults(InferenceConfig(), gpus=0, cpus=2, n_models=3)
    spec = pass_spec(models, items, InferenceConfig(k=5), hw, gpus=0)
    assert isinstance(spec, PassSpec) and spec.shards == tuple(items)
    assert [(s.spec.name, s.column, s.out) for s in spec.stages] == [
        ("resnet18", "img0", "m0"),
        ("resnet34", "img0", "m1"),  # same resize/crop, other mean: normalized on the model's device
        ("resnet50", "img1", "m2"),
    ]
    assert spec.preps == (prep(224), prep(160)) and spec.stages[0].todo == {items[0][0]}
    assert (spec.k, spec.batch_size, spec.actors, spec.num_gpus, spec.decode_batch_size) == (5, 32, 1, 0, 16)
    assert spec.predictor.cpu_threads == 1 and spec.predictor.precision == "auto"
    assert spec.output_columns == ["shard_key", "image_id", "path", "stage", "error"] + [
        f"m{j}_{x}" for j in range(3) for x in ("idx", "prob", "t")
    ]
    # crop_mode border pads with the mean colour: there the mean is part of the resize
    border = [(a, prep(224, crop_mode="border"), frozenset()), (b, prep(224, 0.4, "border"), frozenset())]
    assert [s.column for s in pass_spec(border, items, InferenceConfig(), hw, gpus=1).stages] == ["img0", "img1"]
    assert pass_spec(border, items, InferenceConfig(), hw, gpus=1).num_gpus == 1


# --------------------------------------------------------------------------------------------------------------
# Whole shards from interleaved batches


def batch(keys: list[str], ids: list[str]) -> dict[str, np.ndarray]:
    return {
        "shard_key": np.array(keys, dtype=object),
        "image_id": np.array(ids, dtype=object),
        "x": np.arange(len(ids)),
    }


def test_shards_complete_only_when_every_row_is_back():
    c = ShardCollector({"d/s0": 3, "d/s1": 2})
    assert c.add(batch(["d/s0", "d/s1"], ["a", "d"])) == [] and c.pending == ["d/s0", "d/s1"]
    ((key, rows),) = c.add(batch(["d/s1", "d/s0"], ["e", "b"]))
    assert key == "d/s1" and rows["image_id"].tolist() == ["d", "e"] and rows["x"].tolist() == [1, 0]
    ((key, rows),) = c.add(batch(["d/s0"], ["c"]))
    assert key == "d/s0" and rows["image_id"].tolist() == ["a", "b", "c"] and c.pending == []


def test_a_shard_never_comes_back_with_a_row_twice():
    c = ShardCollector({"d/s0": 2})
    assert (
        error_of(c.add, batch(["d/s0", "d/s0"], ["a", "a"])) == "pipeline: shard d/s0 came back with image id 'a' twice"
    )
    c = ShardCollector({"d/s0": 1})
    assert (
        error_of(c.add, batch(["d/s0", "d/s0"], ["a", "b"]))
        == "pipeline: shard d/s0 came back with 2 rows for 1 images"
    )
    assert error_of(ShardCollector({}).add, batch(["x/s9"], ["a"])) == (
        "pipeline: rows of shard 'x/s9', which this pass does not read"
    )


# --------------------------------------------------------------------------------------------------------------
# Progress ticks and steady rates


def test_ticking_wakes_the_consumer_while_it_waits_and_passes_every_item():
    def slow():
        yield 1
        time.sleep(0.35)
        yield 2

    got = list(Ticking(slow(), interval=0.1))
    assert [x for x in got if x is not None] == [1, 2] and got.count(None) >= 2


def test_ticking_raises_the_source_error_in_the_consumer_and_stops_on_close():
    def broken():
        yield 1
        raise ValueError("decode blew up")

    ticks = Ticking(broken(), interval=0.1)
    assert next(ticks) == 1
    with pytest.raises(ValueError, match="decode blew up"):
        while True:
            next(ticks)
    drawn = []
    stopped = threading.Event()

    def endless():
        try:
            for i in range(10_000):
                drawn.append(i)
                yield i
        finally:
            stopped.set()

    ticks = Ticking(endless(), interval=0.1, buffer=1)
    assert next(ticks) == 0
    ticks.close()
    assert stopped.wait(5) and len(drawn) < 10  # the helper stopped; the source was closed
    assert list(ticks) == []


def test_steady_rate_counts_the_images_after_the_first_batch():
    assert steady_rate({10.0: 4, 11.0: 4, 12.5: 2}) == pytest.approx((4 + 2) / 2.5)
    assert steady_rate({10.0: 4}) is None and steady_rate({}) is None
    marks = BatchMarks()
    marks.add(np.array([10.0, 10.0, np.nan, 11.0]))
    marks.add(np.array([11.0, 12.0, np.nan]))
    assert marks.marks == {10.0: 2, 11.0: 2, 12.0: 1} and marks.rate() == pytest.approx(3 / 2)
