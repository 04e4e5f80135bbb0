"""How the processes of a run use the CPU: decode work at idle priority below the models, and a slot's allocator
that keeps freed memory for the next batch (no Ray needed)."""

from __future__ import annotations

import os
import subprocess
import sys
import threading

import numpy as np
import pytest
from PIL import Image

from mlray.errors import MlrayError
from mlray.images import plan_shards
from mlray.inference import worker
from mlray.inference.worker import at_low_priority, decode_batch
from mlray.models import Preprocessing

linux_only = pytest.mark.skipif(sys.platform != "linux", reason="per-thread niceness and glibc's mallopt are Linux's")


def _policy() -> int:
    return os.sched_getscheduler(0)  # this thread's scheduling policy


@linux_only
def test_low_priority_work_runs_in_an_idle_priority_thread_and_the_caller_keeps_its_own():
    base = _policy()
    assert base != os.SCHED_IDLE
    got = at_low_priority(lambda a, b: (a + b, _policy(), threading.get_native_id()), 2, 3)
    assert got[0] == 5
    assert got[1] == os.SCHED_IDLE
    assert got[2] != threading.get_native_id()  # another thread ...
    assert _policy() == base  # ... and this one is as it was

    def fails() -> None:
        raise MlrayError("images/x.JPEG: not an image")

    with pytest.raises(MlrayError, match=r"^images/x\.JPEG: not an image$"):
        at_low_priority(fails)
    assert _policy() == base


@linux_only
def test_a_decode_task_decodes_at_the_lower_priority(tmp_path, monkeypatch):
    """Every image of decode_batch is decoded in the idle-priority thread (a model beside it keeps the CPUs)."""
    for i in (1, 2):
        Image.fromarray(np.full((30, 40, 3), 60 * i, np.uint8)).save(tmp_path / f"ILSVRC2012_val_0000000{i}.JPEG")
    seen: list[int] = []
    decode = worker.decode_image

    def recording(data, max_pixels):
        seen.append(_policy())
        return decode(data, max_pixels=max_pixels)

    monkeypatch.setattr(worker, "decode_image", recording)
    shard = plan_shards(tmp_path, "imagenet-val-flat").shards[0]
    prep = Preprocessing((3, 16, 16), 1.0, "center", "bilinear", (0.5, 0.5, 0.5), (0.5, 0.5, 0.5))
    out = decode_batch({"key": np.array(["k"]), "groups": np.array(["0"])}, {"k": shard}, {0: prep}, 10**9)
    assert out["images_0"].shape == (2, 16, 16, 3)
    assert out["images_0"][:, 8, 8, 0].tolist() == [60, 120]
    assert seen == [os.SCHED_IDLE] * 2


@linux_only
def test_a_decode_task_with_threads_decodes_on_several_idle_priority_threads_and_gives_the_same_shard(
    tmp_path, monkeypatch
):
    """With threads, the images of a shard are shared among idle-priority threads (cores a model leaves idle
    decode); every output array, failures included, equals the one-thread result."""
    import time

    for i in range(1, 7):
        Image.fromarray(np.full((30, 40, 3), 30 * i, np.uint8)).save(tmp_path / f"ILSVRC2012_val_0000000{i}.JPEG")
    (tmp_path / "ILSVRC2012_val_00000003.JPEG").write_bytes(b"GIF89a, not really")  # a decode failure
    seen: list[tuple[int, int]] = []
    decode = worker.decode_image

    def recording(data, max_pixels):
        seen.append((_policy(), threading.get_native_id()))
        time.sleep(0.05)  # long enough that both threads take images
        return decode(data, max_pixels=max_pixels)

    monkeypatch.setattr(worker, "decode_image", recording)
    monkeypatch.setattr(worker, "usable_cpus", lambda: 2)
    shard = plan_shards(tmp_path, "imagenet-val-flat").shards[0]
    small = Preprocessing((3, 16, 16), 1.0, "center", "bilinear", (0.5, 0.5, 0.5), (0.5, 0.5, 0.5))
    # group 1 resizes to 21333 x 16000 (crop_pct 0.001): over the per-image budget, an error of that group only
    large = Preprocessing((3, 16, 16), 0.001, "center", "bilinear", (0.5, 0.5, 0.5), (0.5, 0.5, 0.5))
    batch = {"key": np.array(["k"]), "groups": np.array(["0,1"])}
    one = decode_batch(batch, {"k": shard}, {0: small, 1: large}, 10**9)
    assert len({tid for _, tid in seen}) == 1
    seen.clear()
    two = decode_batch(batch, {"k": shard}, {0: small, 1: large}, 10**9, threads=8)
    assert [p for p, _ in seen] == [os.SCHED_IDLE] * 6  # every image, each at idle priority
    assert len({tid for _, tid in seen}) == 2  # capped at the 2 CPUs
    assert threading.get_native_id() not in {tid for _, tid in seen}
    assert set(two) == set(one)
    for name in one:
        assert np.array_equal(two[name], one[name]), name
    assert two["images_0"][:, 8, 8, 0].tolist() == [30, 60, 0, 120, 150, 180]
    assert two["stage_0"].tolist() == ["", "", "decode", "", "", ""]
    assert two["stage_1"].tolist() == ["decode"] * 6
    bad = "not an image (GIF header: image not found in GIF frame)"
    over = ("resize to 21333x16000 would need 1.37 GB (341,328,000 pixels), over the per-image budget (178,956,970 "
            "pixels, 0.72 GB per buffer)")  # fmt: skip
    assert two["error_0"].tolist() == ["", "", bad, "", "", ""]
    assert two["error_1"].tolist() == [over, over, bad, over, over, over]
    # called from a thread of normal priority, the decode threads still lower their own
    seen.clear()
    direct = worker._decode_shard(batch, {"k": shard}, {0: small, 1: large}, 10**9, 2)
    assert [p for p, _ in seen] == [os.SCHED_IDLE] * 6 and len({tid for _, tid in seen}) == 2
    assert all(np.array_equal(direct[name], one[name]) for name in one)
    # elsewhere than Linux no thread can go below the model: one thread, the caller's
    seen.clear()
    monkeypatch.setattr(worker.sys, "platform", "darwin")
    other = decode_batch(batch, {"k": shard}, {0: small, 1: large}, 10**9, threads=8)
    assert {tid for _, tid in seen} == {threading.get_native_id()}
    assert all(np.array_equal(other[name], one[name]) for name in one)


def test_usable_cpus_are_capped_by_a_cgroup_cpu_quota(tmp_path):
    """Decode threads at idle priority still spend a container's CPU quota: it caps them (v2 and v1 files)."""
    base = worker.usable_cpus(str(tmp_path / "none"))  # no cgroup files there: the affinity alone
    assert base == (len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count())
    v2 = tmp_path / "v2"
    v2.mkdir()
    (v2 / "cpu.max").write_text("150000 100000\n")  # 1.5 CPUs: 2 threads
    assert worker.usable_cpus(str(v2)) == min(base, 2)
    (v2 / "cpu.max").write_text("max 100000\n")  # no quota
    assert worker.usable_cpus(str(v2)) == base
    v1 = tmp_path / "v1"
    (v1 / "cpu").mkdir(parents=True)
    (v1 / "cpu" / "cpu.cfs_quota_us").write_text("50000\n")
    (v1 / "cpu" / "cpu.cfs_period_us").write_text("100000\n")
    assert worker.usable_cpus(str(v1)) == 1
    (v1 / "cpu" / "cpu.cfs_quota_us").write_text("-1\n")
    assert worker.usable_cpus(str(v1)) == base


FAULTS = """
import resource, sys
import numpy as np
from mlray.inference.malloc import keep_freed_memory
kept = keep_freed_memory() if sys.argv[1] == "keep" else None
np.ones(64 << 20, np.uint8)  # the first buffer faults its pages in either way
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(9):
    np.ones(64 << 20, np.uint8)  # allocated, written, freed: as a model's activations in every batch
print(kept, resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


def _glibc() -> tuple[int, ...]:
    try:
        name, version = os.confstr("CS_GNU_LIBC_VERSION").split()  # "glibc 2.36"
        return tuple(int(x) for x in version.split(".")[:2])
    except (AttributeError, ValueError, OSError):
        return ()


@pytest.mark.skipif(_glibc() < (2, 35), reason="glibc before 2.35 keeps buffers of up to 32 MiB only")
@linux_only
def test_a_slot_process_keeps_freed_buffers_instead_of_faulting_them_in_every_batch():
    """glibc serves a 64 MiB buffer with a fresh mmap each time (16,384 pages to fault in again); after
    keep_freed_memory it comes back from the heap."""

    def faults(mode: str) -> tuple[str, int]:
        done = subprocess.run([sys.executable, "-c", FAULTS, mode], capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stderr
        kept, n = done.stdout.split()
        return kept, int(n)

    kept, tuned = faults("keep")
    untouched, plain = faults("plain")
    assert (kept, untouched) == ("True", "None")
    assert tuned < 200  # nine buffers of 64 MiB, (almost) no page faulted in again
    assert plain > max(10 * tuned, 250)  # without: every buffer faults in again (THP or not)


def test_on_glibc_before_2_35_the_thresholds_fall_back_to_32_mib(monkeypatch):
    """glibc before 2.35 refuses an mmap threshold over 32 MiB: the thresholds are set to 32 MiB instead (the mmap
    threshold first, since setting the others stops glibc from raising it by itself), and the result says so."""
    from mlray.inference import malloc

    calls: list[tuple[int, int]] = []

    class Mallopt:  # a ctypes function of glibc 2.34: it takes argtypes and restype, and refuses over 32 MiB
        def __call__(self, option: int, value: int) -> int:
            calls.append((option, value))
            return 0 if option == malloc.M_MMAP_THRESHOLD and value > 32 << 20 else 1

    class OldGlibc:
        mallopt = Mallopt()

    monkeypatch.setattr(malloc.sys, "platform", "linux")
    monkeypatch.setattr(malloc.ctypes, "CDLL", lambda name: OldGlibc())
    assert malloc.keep_freed_memory() is False
    mib = 1 << 20
    assert calls == [(-3, 1024 * mib), (-3, 32 * mib), (-1, 32 * mib), (-2, 256 * mib)]


def test_a_worker_process_imports_what_the_worker_needs_and_not_the_driver():
    # Ray imports mlray.inference.worker in every slot and decode process; the package's names are lazy (PEP 562),
    # so that import brings neither the driver's stack (config, pandas, pydantic) nor torch/timm (a slot imports
    # those in its __init__, a decode task never)
    code = (
        "import sys, mlray.inference.worker\n"
        "heavy = ('pandas', 'pydantic', 'torch', 'timm', 'mlray.config', 'mlray.inference.driver')\n"
        "print(','.join(m for m in heavy if m in sys.modules))\n"
        "from mlray.inference import SlotWorker, run_inference\n"
        "print(run_inference.__module__, SlotWorker.__module__, 'mlray.inference.driver' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.splitlines() == ["", "mlray.inference.driver mlray.inference.worker True"]


def test_every_public_name_of_the_inference_package_resolves_to_its_home_module():
    import mlray.inference as package

    assert set(package.__all__) == set(package._MODULE_OF) and len(package.__all__) == 35
    for name in package.__all__:
        home = f"mlray.inference.{package._MODULE_OF[name]}"
        assert getattr(package, name) is getattr(sys.modules[home], name), name
    with pytest.raises(AttributeError, match="has no attribute 'nothing_here'"):
        package.nothing_here  # noqa: B018
