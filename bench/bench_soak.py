"""Soak: a long inference run through a tiny model, watching that nothing grows with the run's length.

Images: ``--distinct`` small generated JPEGs (64 x 48 px, distinct noise), listed ``--images`` times in all under
distinct image ids by a manifest (layout ``manifest``), so 100,000 images need only a few hundred files. Model:
timm's ``test_efficientnet`` with ``weights: none`` at ``--input-size`` px (a few milliseconds per image: the run
measures mlray's own overhead: planning, reading, decoding, shipping, storing), ``--shard-size`` images per shard.

While ``run_inference`` runs (one local Ray instance with every core), a thread samples every ``--every`` seconds:
the driver's resident memory (``/proc/self/status`` VmRSS), the object store's bytes in use (the raylet's store
stats) and the images stored so far. Printed at the end: the peaks, and the slope of each over the images stored
(least squares over the samples after the first ``--warmup`` fraction of the run, in MiB per 10,000 images):
flat (|slope| near 0) means nothing grows with the run's length.

    python bench/bench_soak.py                            # 100,000 images
    python bench/bench_soak.py --images 5000 --json s.json   # quicker, figures also as JSON
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
os.environ.setdefault("RAY_AUTH_MODE", "disabled")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")

MIB = 1024 * 1024


def driver_rss() -> int:
    """This process's resident memory in bytes (VmRSS)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


def store_used(ray) -> int:
    """Bytes in use in the object store of the local node (the raylet's store stats)."""
    from ray._private.internal_api import get_memory_info_reply, get_state_from_address

    reply = get_memory_info_reply(get_state_from_address(ray.get_runtime_context().gcs_address))
    return int(reply.store_stats.object_store_bytes_used)


def make_corpus(folder: Path, n_images: int, distinct: int) -> Path:
    """``distinct`` JPEGs and a manifest listing ``n_images`` ids that cycle through them; returns the manifest."""
    import numpy as np
    from PIL import Image

    files = folder / "files"
    files.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for i in range(distinct):
        Image.fromarray((rng.random((48, 64, 3)) * 255).astype("uint8")).save(files / f"f{i:05d}.jpg", quality=85)
    manifest = folder / "manifest.csv"
    with open(manifest, "w") as fh:
        fh.write("image_id,path\n")
        for i in range(n_images):
            fh.write(f"img-{i:07d},files/f{i % distinct:05d}.jpg\n")
    return manifest


class StoredCounter:
    """A progress sink that keeps the images stored so far (what the sampler reads)."""

    def __init__(self) -> None:
        self.stored = 0

    def begin(self, label: str, stored_totals: dict[str, int], model_totals: dict[str, int]) -> None:
        pass

    def update(self, stored: dict[str, int], inferred: dict[str, int], now: float) -> None:
        self.stored = sum(stored.values())

    def end(self) -> None:
        pass

    def note(self, text: str) -> None:
        pass


def slope_per_10k(xs: list[float], ys: list[float]) -> float:
    """Least-squares slope of ``ys`` (bytes) over ``xs`` (images), in MiB per 10,000 images (0 for < 2 points)."""
    import numpy as np

    if len(xs) < 2 or max(xs) == min(xs):
        return 0.0
    return float(np.polyfit(np.asarray(xs, float), np.asarray(ys, float), 1)[0] * 10_000 / MIB)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=100_000, help="Images in the run (default 100,000).")
    parser.add_argument("--distinct", type=int, default=500, help="Distinct JPEG files the manifest cycles through.")
    parser.add_argument("--shard-size", type=int, default=1000, help="Images per shard.")
    parser.add_argument("--input-size", type=int, default=32, help="The model's input side in pixels.")
    parser.add_argument("--batch-size", type=int, default=256, help="Images per model batch.")
    parser.add_argument("--every", type=float, default=1.0, help="Seconds between two samples.")
    parser.add_argument("--warmup", type=float, default=0.2, help="Fraction of the run left out of the slopes.")
    parser.add_argument("--json", type=Path, default=None, help="Also write the figures to this JSON file.")
    args = parser.parse_args()

    import ray

    from mlray import cluster
    from mlray.config import load_config
    from mlray.inference import run_inference

    tmp = Path(tempfile.mkdtemp(prefix="mlray-soak-"))
    manifest = make_corpus(tmp / "corpus", args.images, args.distinct)
    config = tmp / "soak.yaml"
    config.write_text(
        f"datasets:\n  - {{name: soak, images: {manifest}, layout: manifest, shard_size: {args.shard_size}}}\n"
        f"models:\n  - {{name: test_efficientnet, weights: none, input_size: {args.input_size}, crop_pct: 1.0}}\n"
        f"inference: {{batch_size: {args.batch_size}, decode_batch_size: 64}}\n"
    )
    cluster.connect()
    samples: list[tuple[float, int, int, int]] = []  # (seconds, images stored, driver rss, store bytes used)
    counter = StoredCounter()
    done = threading.Event()
    start = time.perf_counter()

    def sample() -> None:
        while not done.is_set():
            samples.append((time.perf_counter() - start, counter.stored, driver_rss(), store_used(ray)))
            done.wait(args.every)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    result = run_inference(load_config(config), tmp / "out", counter)
    seconds = time.perf_counter() - start
    done.set()
    sampler.join()
    samples.append((seconds, args.images, driver_rss(), store_used(ray)))

    counts = result.counts[("soak", "test_efficientnet")]
    steady = [s for s in samples if s[1] >= args.warmup * args.images]
    figures = {
        "images": args.images,
        "predictions": counts["predictions"],
        "errors": counts["errors"],
        "shards": args.images // args.shard_size + bool(args.images % args.shard_size),
        "seconds": round(seconds, 1),
        "images_per_second": round(args.images / seconds, 1),
        "samples": len(samples),
        "driver_rss_start_mib": round(samples[0][2] / MIB, 1),
        "driver_rss_peak_mib": round(max(s[2] for s in samples) / MIB, 1),
        "driver_rss_end_mib": round(samples[-1][2] / MIB, 1),
        "driver_rss_slope_mib_per_10k_images": round(slope_per_10k([s[1] for s in steady], [s[2] for s in steady]), 3),
        "object_store_peak_mib": round(max(s[3] for s in samples) / MIB, 1),
        "object_store_end_mib": round(samples[-1][3] / MIB, 1),
        "object_store_slope_mib_per_10k_images": round(
            slope_per_10k([s[1] for s in steady], [s[3] for s in steady]), 3
        ),
        "cpus": os.cpu_count(),
        "samples_seconds_stored_rss_store": [[round(t, 2), n, rss, used] for t, n, rss, used in samples],
    }
    print(f"{figures['images']:,} images ({figures['shards']} shards) through test_efficientnet at "
          f"{args.input_size} px in {seconds:.0f} s ({figures['images_per_second']:.1f} img/s); "
          f"{counts['predictions']:,} predictions + {counts['errors']:,} errors")  # fmt: skip
    print(f"driver RSS: start {figures['driver_rss_start_mib']} MiB, peak {figures['driver_rss_peak_mib']} MiB, "
          f"end {figures['driver_rss_end_mib']} MiB; slope {figures['driver_rss_slope_mib_per_10k_images']:+.3f} "
          "MiB per 10,000 images")  # fmt: skip
    print(f"object store: peak {figures['object_store_peak_mib']} MiB, end {figures['object_store_end_mib']} MiB; "
          f"slope {figures['object_store_slope_mib_per_10k_images']:+.3f} MiB per 10,000 images "
          f"({len(samples)} samples, the first {args.warmup:.0%} of the images left out of the slopes)")  # fmt: skip
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2))
    ray.shutdown()
    shutil.rmtree(tmp, ignore_errors=True)  # the corpus and the store: only the figures are kept


if __name__ == "__main__":
    main()
