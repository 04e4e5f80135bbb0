"""Inference on a multi-node Ray cluster (``ray.cluster_utils.Cluster``: a head and two workers of one CPU each, in
a subprocess), default settings: it completes and stores exactly what a single-node run stores; the same with
logical GPUs on the workers. Also: a slot lost mid-run gives its chunks to the others."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pytest
from test_inference import _kill_leftovers, copy_photos, stored_topk, write_config

from mlray.inference import run_inference

CLUSTER_RUNNER = """
import json, sys
import ray
from ray.cluster_utils import Cluster
from mlray.config import load_config
from mlray.inference import run_inference

gpus = int(sys.argv[3])
store = 80 * 1024 * 1024
cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "object_store_memory": store})
for _ in range(2):
    cluster.add_node(num_cpus=1, num_gpus=gpus, object_store_memory=store)
cluster.wait_for_nodes()
ray.init(address=cluster.address, log_to_driver=False)
result = run_inference(load_config(sys.argv[1]), sys.argv[2])
manifest = json.loads(result.manifest.read_text())
print("RESULT " + json.dumps({"nodes": len(ray.nodes()), "slots": manifest["settings"]["slots"],
                              "kind": manifest["settings"]["slot_kind"], "counts": manifest["counts"]}))
ray.shutdown()
cluster.shutdown()
"""


def run_on_cluster(tmp_path: Path, config: Path, out: Path, gpus: int) -> dict:
    """Run inference on a 3-node local cluster in a subprocess; its RESULT line."""
    ray_tmp = tempfile.mkdtemp(prefix="mlc", dir="/tmp")  # short: Ray's socket paths have a length limit
    env = {**os.environ, "RAY_TMPDIR": ray_tmp, "RAY_AUTH_MODE": "disabled", "RAY_USAGE_STATS_ENABLED": "0"}
    try:
        proc = subprocess.run(
            [sys.executable, "-c", CLUSTER_RUNNER, str(config), str(out), str(gpus)],
            env=env, capture_output=True, text=True, timeout=240, start_new_session=True,
        )  # fmt: skip
    finally:
        _kill_leftovers(ray_tmp)
    lines = [line for line in proc.stdout.splitlines() if line.startswith("RESULT ")]
    assert proc.returncode == 0 and lines, (proc.stdout + proc.stderr)[-3000:]
    return json.loads(lines[-1][len("RESULT ") :])


def assert_same_store(a: Path, b: Path) -> None:
    got_a, got_b = stored_topk(a), stored_topk(b)  # stored_topk asserts no duplicate row
    assert got_a.keys() == got_b.keys() and got_a
    for key, (idx, prob) in got_a.items():
        assert got_b[key][0] == idx, key
        np.testing.assert_allclose(got_b[key][1], prob, rtol=1e-5, atol=1e-7)


@pytest.fixture
def small_run(ray_cluster, tmp_path):
    """A config of 4 photos (2 shards) and one small model, and the single-node run's store."""
    copy_photos(tmp_path / "imgs", 4)
    cfg = write_config(tmp_path, tmp_path / "imgs", [("mobilenetv3_small_050", "none")], shard_size=2, labels=False)
    single = run_inference(cfg, tmp_path / "single")
    assert single.counts[("photos", "mobilenetv3_small_050")] == {"images": 4, "predictions": 4, "errors": 0}
    return tmp_path / "run.yaml", tmp_path / "single"


@pytest.mark.integration
@pytest.mark.ray
def test_a_head_and_two_one_cpu_workers_with_default_settings_store_what_one_node_stores(small_run, tmp_path):
    config, single = small_run
    got = run_on_cluster(tmp_path, config, tmp_path / "multi", gpus=0)
    # one slot per node, each sized from its node (half a CPU, one torch thread), never from the cluster's 3 CPUs
    assert got["nodes"] == 3 and got["kind"] == "cpu"
    assert [(s["cpus"], s["gpus"], s["threads"]) for s in got["slots"]] == [(0.5, 0.0, 1)] * 3
    assert got["counts"] == [{"dataset": "photos", "model": "mobilenetv3_small_050", "images": 4, "predictions": 4,
                              "errors": 0}]  # fmt: skip
    assert_same_store(single, tmp_path / "multi")


@pytest.mark.integration
@pytest.mark.ray
def test_the_same_with_a_logical_gpu_on_each_worker(small_run, tmp_path):
    config, single = small_run
    got = run_on_cluster(tmp_path, config, tmp_path / "gpus", gpus=1)
    # one slot per GPU: the two workers' (the actors see no CUDA and run on the CPU)
    assert got["kind"] == "gpu" and [(s["cpus"], s["gpus"]) for s in got["slots"]] == [(0.0, 1.0)] * 2
    assert got["counts"][0]["predictions"] == 4
    assert_same_store(single, tmp_path / "gpus")


@pytest.mark.ray
def test_a_slot_lost_mid_run_gives_its_chunks_to_the_other_slots(ray_cluster):
    """The dispatch loop with sleeping slots: one slot's actor is killed after its first chunk; every shard still
    comes back exactly once."""
    import time

    ray = ray_cluster
    from mlray.inference.dispatch import dispatch, slot_options
    from mlray.inference.schedule import Scheduler, Work
    from mlray.inference.slots import Slot

    class Sleeper:
        def ready(self) -> str:
            return "ok"

        def prepare(self, payload) -> None:
            pass

        def run(self, payload, group, windows):
            out = []
            for window in windows:
                for key, refs in window:
                    time.sleep(0.05)
                    out.append({"key": key, "n": sum(len(b) for b in ray.get(refs))})
            return out

    class Backend:
        def __init__(self) -> None:
            self.actor = ray.remote(Sleeper)
            self.handles: list = []

        def start(self, slot):
            handle = self.actor.options(**slot_options(slot)).remote()
            self.handles.append(handle)
            return handle

        def payload(self, work):
            return work

        decode_cpus = 0.1

        def decoder(self, keys, groups):
            return (lambda batch: {"row": np.arange(2)}), {}

        def rows(self, key):
            return 2

    works = [Work(f"m{i}", 0, tuple(f"d/s{j}" for j in range(6)), (1.0,) * 6) for i in range(3)]
    scheduler = Scheduler(works, {(0, f"d/s{j}"): 1.0 for j in range(6)}, 2, chunks_per_slot=9)
    slots = [Slot(f"n/{i}", None, 0.1, 0.0, 1) for i in range(2)]
    backend = Backend()
    seen: list[tuple[str, str]] = []

    def on_result(slot_id, chunk, results):
        if not seen:
            ray.kill(backend.handles[0])  # as if its node went away
        seen.extend((works[chunk.work].name, r["key"]) for r in results)

    stats = dispatch(ray, scheduler, slots, backend, on_result, depth=1, lead=0.0)
    assert stats.slots_lost == 1 and scheduler.done
    assert sorted(seen) == sorted((w.name, key) for w in works for key in w.shards)  # each (model, shard) once
    assert stats.decodes == {f"d/s{j}": 1 for j in range(6)}  # one Ray Data decode per shard, whatever was lost


@pytest.mark.ray
def test_a_slot_is_told_to_prepare_a_model_whose_shards_are_still_decoding(ray_cluster, tmp_path):
    """While a chunk's shards decode, its slot gets ``prepare(model)`` once, and that model's chunks follow it;
    a chunk whose shards are already there goes straight to ``run``."""
    import time

    ray = ray_cluster
    up = tmp_path / "slot-is-up"  # the slot's ready() makes it; no shard is decoded before it
    from mlray.inference.dispatch import dispatch, slot_options
    from mlray.inference.schedule import Scheduler, Work
    from mlray.inference.slots import Slot

    class Recorder:
        def __init__(self) -> None:
            self.calls: list[tuple[str, str]] = []

        def ready(self) -> str:
            up.touch()
            return "ok"

        def prepare(self, payload) -> None:
            self.calls.append(("prepare", payload))

        def run(self, payload, group, windows):  # every result carries the calls so far (the actor is killed)
            self.calls.append(("run", payload))
            return [{"key": key, "calls": list(self.calls)} for window in windows for key, _ in window]

    def slow_decode(batch):
        deadline = time.monotonic() + 120
        while not up.exists():
            if time.monotonic() > deadline:
                raise RuntimeError("the slot was not ready within 120 s")
            time.sleep(0.05)
        time.sleep(1.5)  # the slot is up long before the first shard is decoded, however slowly it started
        return {"row": np.arange(2)}

    class Backend:
        decode_cpus = 0.1

        def start(self, slot):
            return ray.remote(Recorder).options(**slot_options(slot)).remote()

        def payload(self, work):
            return f"m{work}"

        def decoder(self, keys, groups):
            return slow_decode, {}

        def rows(self, key):
            return 2

    # two models of one group, three shards each, one shard per chunk: m0 (longer) first, then m1 on cached shards
    works = [Work(f"m{i}", 0, ("d/s0", "d/s1", "d/s2"), (2.0 - i,) * 3) for i in range(2)]
    scheduler = Scheduler(works, {(0, f"d/s{j}"): 1.0 for j in range(3)}, 1, chunks_per_slot=6)
    backend = Backend()
    log: list = []

    def on_result(slot_id, chunk, results):
        log[:] = results[-1]["calls"]

    dispatch(ray, scheduler, [Slot("n/0", None, 0.1, 0.0, 1)], backend, on_result, depth=1, lead=0.0)
    calls = [tuple(c) for c in log]
    assert calls[0] == ("prepare", "m0")  # built while d/s0 decoded
    assert [c for c in calls if c[0] == "run"] == [("run", "m0")] * 3 + [("run", "m1")] * 3
    assert ("prepare", "m1") not in calls  # its shards were cached when it came: no separate prepare
