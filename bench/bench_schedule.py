"""The scheduler at paper scale on a CPU machine: mlray's real scheduler and dispatch loop, simulated models.

What is real: :class:`mlray.inference.schedule.Scheduler` (the policy), :func:`mlray.inference.dispatch.dispatch`
(slot actors, Ray Data decode waves into the object store, chunks, depth-2 queues), the slot plan
(:func:`mlray.inference.slots.plan_slots` on a local Ray instance started with ``num_gpus=G`` logical GPUs: the
slot actors hold a GPU each but see no CUDA), the models' preprocessing groups (:func:`mlray.models.
resolve_preprocessing` of the 926 names of ``jobs/configs/models-paper.txt``) and their costs.

What is simulated: a model batch is a sleep of ``images / rate`` seconds times the time scale, ``rate`` being the
model's images/s in ``../shared/data/timm-benchmarks/benchmark-infer-amp-nchw-pt291-cu128-4090.csv`` (the row of
its architecture at its input size, else the nearest size scaled by pixel count; the 40 architectures without a
row get the table's median, as :mod:`mlray.inference.costs` does; the file's rows are checked equal to the table
bundled with mlray). Decoding (Ray Data waves, as in a real run) sleeps ``--decode-ms`` per image read and
decoded plus ``--resize-ms`` per image and preprocessing, times the scale, and counts what it decoded in a counter
actor (decodes are counted, not assumed). Model loading sleeps ``--load-s`` (default 0: not simulated).
No prediction is stored.

Datasets: ImageNet val (50,000) and the three ImageNetV2 variants (10,000 each), in shards of 1,000, as
``jobs/configs/imagenet-v1-v2.yaml`` has them. Per G: makespan (wall seconds of the dispatch, slot start-up
included), lower bound ``max(total cost / G, largest single model)`` in the same scaled seconds, their ratio, and
decodes per image per preprocessing.

    python bench/bench_schedule.py --gpus 1,4,8               # about 25 minutes on a 2-core machine
    python bench/bench_schedule.py --gpus 8 --json out.json   # also write the figures as JSON
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
os.environ.setdefault("RAY_AUTH_MODE", "disabled")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")

REPO = Path(__file__).resolve().parents[1]
DATASETS = (("imagenet-val", 50_000), ("imagenetv2-matched-frequency", 10_000), ("imagenetv2-threshold0.7", 10_000),
            ("imagenetv2-top-images", 10_000))  # fmt: skip
SHARD_SIZE = 1000
PLACEHOLDER_BYTES = 128 * 1024
BATCH_SIZE = 256


class SimSlot:
    """A slot actor whose model batches are sleeps: ``run((name, seconds per image), items)`` like
    :class:`mlray.inference.worker.SlotWorker`'s, returning ``{"key", "n"}`` per shard."""

    def __init__(self, scale: float, load_s: float) -> None:
        self.scale, self.load_s, self.model = scale, load_s, None
        self.last_end: float | None = None

    def ready(self) -> str:
        import ray

        return str(ray.get_runtime_context().get_node_id())

    def prepare(self, payload: tuple[str, float]) -> None:
        """Load the model now (its shards are still decoding), as mlray's SlotWorker does."""
        if self.model != payload[0]:
            time.sleep(self.load_s * self.scale)
            self.model = payload[0]

    def run(self, payload: tuple[str, float], group: int, windows: list) -> list[dict]:
        import ray

        name, per_image = payload
        called = time.perf_counter()
        gap, self.last_end = (called - self.last_end if self.last_end else 0.0), None
        self.prepare(payload)
        out = []
        clock = time.perf_counter()  # where the model's timeline stands: batches run back to back from here
        for i, window in enumerate(windows):  # fetched as mlray's SlotWorker fetches them
            if i + 1 < len(windows):
                ahead = [r for _, refs in windows[i + 1] for r in refs]
                ray.wait(ahead, num_returns=len(ahead), timeout=0, fetch_local=True)
            asked = time.perf_counter()
            refs = [r for _, rs in window for r in rs]
            ready = len(ray.wait(refs, num_returns=len(refs), timeout=0)[0]) == len(refs)
            blocks = ray.get(refs)  # the shards' Ray Data blocks, as a real slot fetches them
            shards, at = [], 0
            for _, rs in window:
                shards.append({"n": sum(b.num_rows for b in blocks[at : at + len(rs)])})
                at += len(rs)
            waited = 0.0
            if not ready:  # the model waited for the decode: its timeline resumes when the shards came
                waited = max(0.0, time.perf_counter() - max(clock, asked))
                clock = max(clock, time.perf_counter())
            for (key, _), shard in zip(window, shards):
                n, start = int(shard["n"]), clock
                for b in range(0, n, BATCH_SIZE):
                    clock += min(BATCH_SIZE, n - b) * per_image * self.scale
                    ahead = clock - time.perf_counter()
                    if ahead > 0.002:  # sleeping for less costs more than it sleeps; the timeline keeps the debt
                        time.sleep(ahead)
                out.append({"key": key, "n": n, "wait_s": waited, "run_s": clock - start,
                            "asked": time.time() - (time.perf_counter() - asked),
                            "end": time.time() + (clock - time.perf_counter())})  # fmt: skip
                waited = 0.0
        if out:
            out[0]["gap_s"] = gap  # idle since the slot's previous chunk
        self.last_end = time.perf_counter()
        return out


def warm_worker() -> None:
    """Import Ray Data in a worker process (what a decode task does first), then hold its CPU a moment so that
    the warm-up tasks land on distinct workers."""
    import ray.data  # noqa: F401

    time.sleep(0.5)


def sim_decode(batch: dict, rows: dict, decode_s: float, resize_s: float, counter) -> dict:
    """The Ray Data ``map_batches`` function of a simulated decode wave (what
    :func:`mlray.inference.worker.decode_batch` is for real): read + decode the shard's images once and resize
    them for the groups that need the shard (a sleep), count that, and return one row per image."""
    import numpy as np

    key = str(batch["key"][0])
    n, groups = rows[key], len([g for g in str(batch["groups"][0]).split(",") if g])
    time.sleep(n * (decode_s + resize_s * groups))
    counter.add.remote("reads", n)
    counter.add.remote("decodes", n * groups)
    # a stand-in for the images, just over Ray's inline limit: like real decoded shards, the block lives in the
    # object store (a slot reads it from shared memory), not inside the driver that owns it
    return {"image_id": np.arange(n), "images": np.zeros((n, PLACEHOLDER_BYTES // n + 1), dtype=np.uint8)}


class SimBackend:
    """The :class:`mlray.inference.dispatch.Backend` of the simulation."""

    def __init__(self, ray, works, rates, shard_n, decode_cpus, scale, args, counter) -> None:
        self.works, self.rates, self.shard_n, self.args, self.counter = works, rates, shard_n, args, counter
        self.decode_cpus, self.scale = decode_cpus, scale
        self.slot = ray.remote(SimSlot)

    def start(self, slot):
        from mlray.inference.dispatch import slot_options

        return self.slot.options(**slot_options(slot)).remote(self.scale, self.args.load_s)

    def payload(self, work: int):
        name = self.works[work].name
        return name, 1.0 / self.rates[name].images_per_second

    def decoder(self, keys, groups):
        kwargs = {"rows": {k: self.shard_n[k] for k in keys}, "decode_s": self.args.decode_ms / 1000 * self.scale,
                  "resize_s": self.args.resize_ms / 1000 * self.scale, "counter": self.counter}  # fmt: skip
        return sim_decode, kwargs

    def rows(self, key: str) -> int:
        return self.shard_n[key]


def check_table(csv_path: Path) -> None:
    """The shared CSV's rows equal the table bundled with mlray (the costs come from this file)."""
    from mlray.inference.costs import cost_table

    rows: dict[str, list] = {}
    for r in csv.DictReader(csv_path.open()):
        rows.setdefault(r["model"], []).append(
            (int(r["infer_img_size"]), float(r["infer_samples_per_sec"]), int(r["infer_batch_size"]))
        )
    if {k: tuple(sorted(v)) for k, v in rows.items()} != cost_table():
        raise SystemExit(f"{csv_path}: differs from mlray's bundled cost table")


def models_and_groups():
    """The 926 models of models-paper.txt: their preprocessing groups (mlray's own) and rates."""
    from mlray.config import ModelConfig
    from mlray.inference.costs import table_rate
    from mlray.inference.plan import model_specs, prep_groups
    from mlray.models import resolve_preprocessing

    specs = model_specs([ModelConfig(name="models-paper.txt", weights="hub")], REPO / "jobs" / "configs")
    preps = [(s.name, resolve_preprocessing(s)) for s in specs]
    groups = prep_groups(preps)
    rates = {name: table_rate(name, prep.input_size[1]) for name, prep in preps}
    return groups, rates


def run_one(gpus: int, groups, rates, scale: float, args) -> dict:
    import ray

    from mlray.config import InferenceConfig
    from mlray.images import Shard
    from mlray.inference.dispatch import dispatch
    from mlray.inference.plan import PlannedShard, build_works, shard_bytes
    from mlray.inference.schedule import Scheduler, lower_bound
    from mlray.inference.slots import cluster_nodes, plan_slots
    from mlray.inference.worker import start_counter

    shards = {}
    for name, n in DATASETS:
        for i in range(math.ceil(n / SHARD_SIZE)):
            ids = tuple(str(j) for j in range(min(SHARD_SIZE, n - i * SHARD_SIZE)))
            planned = PlannedShard(name, f"s{i:05d}", Shard(f"s{i:05d}", "imagenet-val-flat", ids))
            shards[planned.key] = planned
    works = build_works(groups, shards, {}, rates)
    works = [type(w)(w.name, w.group, w.shards, tuple(s * scale for s in w.seconds)) for w in works]
    total_images = sum(n for _, n in DATASETS)

    decode_cpus = max(8, args.cpus_per_gpu * gpus)
    ray.init(num_cpus=decode_cpus, num_gpus=gpus, include_dashboard=False, log_to_driver=False,
             object_store_memory=1024 * 1024 * 1024)  # fmt: skip
    try:
        slot_plan = plan_slots(cluster_nodes(ray), InferenceConfig())
        # start Ray's worker processes for the decode tasks, and have each import Ray Data (what a decode task does
        # first), before the clock: a node with these CPUs does that in parallel in a second or two; here up to 32
        # simulated CPUs share 2 real cores, so the same imports would take 20-30 s of the run
        warm = ray.remote(warm_worker).options(num_cpus=slot_plan.decode_cpus)
        ray.get([warm.remote() for _ in range(int(decode_cpus * 2))])
        counter = start_counter(ray)  # mlray's own per-key counter actor
        backend = SimBackend(ray, works, rates, {k: s.n for k, s in shards.items()}, slot_plan.decode_cpus, scale,
                             args, counter)  # fmt: skip
        scheduler = Scheduler(works, shard_bytes(groups, works, shards), len(slot_plan.slots),
                              cache_bytes=args.cache_gb_per_gpu * gpus * 1e9,
                              load_seconds=args.load_s * scale)  # fmt: skip
        done = {"chunks": 0, "shards": 0, "wait_s": 0.0, "run_s": 0.0, "gap_s": 0.0}

        trace = []

        def on_result(slot, chunk, results):
            trace.extend((slot, works[chunk.work].name, r["asked"], r["end"], r["wait_s"]) for r in results)
            done["chunks"] += 1
            done["shards"] += len(results)
            done["wait_s"] += sum(r["wait_s"] for r in results)
            done["run_s"] += sum(r["run_s"] for r in results)
            done["gap_s"] += sum(r.get("gap_s", 0.0) for r in results)

        start = time.perf_counter()
        t_start = time.time()
        stats = dispatch(ray, scheduler, slot_plan.slots, backend, on_result)
        makespan = time.perf_counter() - start
        counts = ray.get(counter.get.remote())
        if args.trace:
            args.trace.write_text(json.dumps({"start": t_start, "shards": trace}))
    finally:
        ray.shutdown()
    bound = lower_bound([w.total for w in works], gpus)
    decodes = counts.get("decodes", 0) / (total_images * len(groups))
    return {
        "makespan_s": round(makespan, 3),
        "lower_bound_s": round(bound, 3),
        "ratio": round(makespan / bound, 4),
        "decodes_per_image_per_preprocessing": round(decodes, 4),
        "reads_per_image": round(counts.get("reads", 0) / total_images, 4),
        "chunks": done["chunks"],
        "slot_seconds_waiting_for_decode": round(done["wait_s"], 3),
        "slot_seconds_running_models": round(done["run_s"], 3),
        "slot_seconds_between_chunks": round(done["gap_s"], 3),
        "shard_results": done["shards"],
        "slots": len(slot_plan.slots),
        "first_slot_ready_s": round(stats.first_ready_s or 0.0, 3),
        "slot_seconds_held_for_decode": round(stats.held_s, 3),
        "slot_seconds_with_nothing_to_run": round(stats.starved_s, 3),
        "time_scale": scale,
        "cache_gb": args.cache_gb_per_gpu * gpus,
        "decode_cpus": decode_cpus,
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--gpus", default="1,4,8", help="comma-separated numbers of (logical) GPUs, one run each")
    ap.add_argument(
        "--run-minutes",
        type=float,
        default=4.0,
        help="time-scale each run so that its lower bound lasts this long (the scale is printed)",
    )
    ap.add_argument(
        "--scale", type=float, help="one time scale for every run instead (seconds slept per second of model cost)"
    )
    ap.add_argument("--decode-ms", type=float, default=4.0, help="read + JPEG decode of one image, ms (one CPU)")
    ap.add_argument("--resize-ms", type=float, default=1.0, help="resize + crop of one image for one preprocessing")
    ap.add_argument("--load-s", type=float, default=0.0, help="seconds to load a model on a slot (0: not simulated)")
    ap.add_argument(
        "--cache-gb-per-gpu",
        type=float,
        default=150.0,
        help="decode cache budget of the scheduler per GPU, GB (default: what mlray gives a node with 256 GB of RAM "
        "per GPU, e.g. 8 GPUs and 2 TiB: 2 x its object store, 30 %% of the RAM)",
    )
    ap.add_argument("--cpus-per-gpu", type=int, default=4, help="logical CPUs per GPU for decode tasks (at least 8)")
    ap.add_argument("--csv", type=Path, default=REPO.parent / "shared" / "data" / "timm-benchmarks"
                    / "benchmark-infer-amp-nchw-pt291-cu128-4090.csv", help="timm's 4090 benchmark table")  # fmt: skip
    ap.add_argument("--json", type=Path, help="also write the figures here")
    ap.add_argument("--trace", type=Path, help="write every shard's slot, model, start, end and decode wait here")
    args = ap.parse_args()

    if not args.csv.is_file():
        print(f"bench_schedule: {args.csv} not found", file=sys.stderr)
        return 2
    check_table(args.csv)
    t = time.perf_counter()
    groups, rates = models_and_groups()
    total_h = sum(r.seconds(sum(n for _, n in DATASETS)) for r in rates.values()) / 3600
    print(f"{len(rates)} models ({sum(r.source == 'table' for r in rates.values())} costed from the table, "
          f"{sum(r.source == 'assumed' for r in rates.values())} at its median), {len(groups)} preprocessings, "
          f"{sum(n for _, n in DATASETS):,} images: {total_h:.2f} GPU-hours of model work (4090 AMP); "
          f"decode {args.decode_ms} ms + "
          f"resize {args.resize_ms} ms per image; model load {args.load_s} s; planned in "
          f"{time.perf_counter() - t:.0f} s")  # fmt: skip
    figures = {}
    total_s = total_h * 3600
    longest = max(r.seconds(sum(n for _, n in DATASETS)) for r in rates.values())
    for g in (int(x) for x in args.gpus.split(",")):
        scale = args.scale or args.run_minutes * 60 / max(total_s / g, longest)
        r = run_one(g, groups, rates, scale, args)
        figures[str(g)] = r
        print(
            f"G={g} (time scale {scale:.5g}: 1 GPU-hour = {3600 * scale:.1f} s): makespan {r['makespan_s']:.1f} s, "
            f"lower bound {r['lower_bound_s']:.1f} s, ratio {r['ratio']:.3f}, decodes per image per preprocessing "
            f"{r['decodes_per_image_per_preprocessing']:.3f} (reads per image {r['reads_per_image']:.2f}, "
            f"{r['chunks']} chunks, first slot ready after {r['first_slot_ready_s']:.1f} s; slot-seconds: models "
            f"{r['slot_seconds_running_models']:.1f}, waiting for decodes {r['slot_seconds_waiting_for_decode']:.1f}, "
            f"between chunks {r['slot_seconds_between_chunks']:.1f}; in the driver: chunks held for their decode "
            f"{r['slot_seconds_held_for_decode']:.1f}, nothing to run {r['slot_seconds_with_nothing_to_run']:.1f})",
            flush=True,
        )
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
