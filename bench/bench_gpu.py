"""GPU inference: mlray end to end against the model alone, small models sharing a GPU, and what can feed the GPU.

For a machine with a CUDA GPU (the device tool's; how to get mlray's missing packages there: bench/device_kit.py).
Every figure is a ratio against a baseline measured in the same run.

Images: the JPEG photos of ``--photos`` (default: ../shared/data/images-ilsvrc2012-val-original, 89 originals),
listed over and over in one ``manifest`` dataset of ``--images`` rows (each row its own image id), so a run lasts
long enough on a fast GPU; every row is read and decoded like any other image.

1. ``resnet50`` (timm, random weights: its speed does not depend on them). Model alone, as timm's ``benchmark.py``
   measures it: a random batch already on the GPU, channels_last, bf16 autocast, ``inference_mode``, warm-up steps
   then timed steps, synchronized. Against mlray end to end on the photos (``run_inference`` on a local Ray
   instance, already started, one GPU slot, the same batch size and precision): images/s, and mlray's steady rate.
2. Four small models sharing the GPU, one mlray run each way: ``models_per_pass: 1`` (one slot, the models one
   after another) against ``models_per_pass: 4`` (four slots of a quarter GPU each, side by side): images x
   models / s.
3. What can feed the GPU: the decode work of mlray's decode tasks (read, PIL decode to RGB, resize and crop to 224
   exactly as timm) in a process pool of every CPU, against ``torchvision.io.decode_jpeg(..., device="cuda")`` in
   batches plus a resize and crop on the GPU (torch bicubic with antialias: close to PIL, not equal pixel for
   pixel, which is why mlray decodes on the CPUs). mlray has no GPU decode; these rates say whether it would pay
   off on this machine (the CPUs keep up when their rate is above the models').

    python bench/bench_gpu.py --json out.json          # a GPU machine (5-8 minutes estimated; not run yet)
    python bench/bench_gpu.py --smoke                  # the script's logic on a CPU machine: tiny and meaningless
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
os.environ.setdefault("RAY_AUTH_MODE", "disabled")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")

SMALL = ("mobilenetv3_small_100", "efficientnet_b0", "resnet18", "regnety_004")
"""Four small timm models (random weights)."""


def photo_manifest(files: list[str], rows: int, out: Path) -> Path:
    """A manifest CSV of ``rows`` rows cycling through the (absolute) photo paths ``files`` (ids
    ``r<row>_<stem>``)."""
    lines = ["path,image_id"] + [f"{files[i % len(files)]},r{i:07d}_{Path(files[i % len(files)]).stem}"
                                 for i in range(rows)]  # fmt: skip
    out.write_text("\n".join(lines) + "\n")
    return out


def prep_of(name: str):
    """The preprocessing mlray gives ``name`` (random weights)."""
    from mlray.models import ModelSpec, resolve_preprocessing

    return resolve_preprocessing(ModelSpec(name, "none"))


def model_only(name: str, batch_size: int, steps: int, warm: int, device: str) -> dict:
    """timm benchmark.py-style throughput of ``name`` at mlray's input size for it: random input on the device,
    channels_last + bf16 autocast on CUDA (fp32 on a CPU), ``warm`` untimed and ``steps`` timed batches,
    synchronized."""
    import timm
    import torch

    model = timm.create_model(name, pretrained=False).eval().to(device)
    shape = (batch_size, *prep_of(name).input_size)
    cuda = device == "cuda"
    if cuda:
        model = model.to(memory_format=torch.channels_last)
    x = torch.randn(shape, device=device)
    if cuda:
        x = x.contiguous(memory_format=torch.channels_last)

    def sync() -> None:
        if cuda:
            torch.cuda.synchronize()

    with torch.inference_mode(), torch.autocast(device, dtype=torch.bfloat16, enabled=cuda):
        for _ in range(warm):
            model(x)
        sync()
        start = time.perf_counter()
        for _ in range(steps):
            model(x)
        sync()
        wall = time.perf_counter() - start
    return {"img_s": steps * batch_size / wall, "batch_size": batch_size, "steps": steps, "input": list(shape[1:])}


def mlray_run(models: list[str], manifest: Path, batch_size: int, per_gpu: int, out: Path, device: str) -> dict:
    """``run_inference`` of ``models`` (random weights) over the manifest: wall seconds, images x models / s, each
    model's steady images/s, and the slots."""
    from mlray.config import parse_config
    from mlray.inference import run_inference

    cfg = parse_config(
        {
            "datasets": [{"name": "photos", "images": str(manifest), "layout": "manifest"}],
            "models": [{"name": m, "weights": "none"} for m in models],
            "inference": {"batch_size": batch_size, "k": 5, "device": "gpu" if device == "cuda" else "cpu",
                          "models_per_pass": per_gpu},
        },
        "<bench_gpu>",
    )  # fmt: skip
    start = time.perf_counter()
    result = run_inference(cfg, out)
    wall = time.perf_counter() - start
    done = sum(c["predictions"] for c in result.counts.values())
    return {"wall_s": wall, "img_s": done / wall, "predictions": done, "steady": result.steady_images_per_second,
            "slots": result.slots, "errors": sum(c["errors"] for c in result.counts.values())}  # fmt: skip


def _pil_decode(path: str, prep) -> int:
    """One image as a decode task makes it for ``prep``: read, decode to RGB, resize and crop (timm-exact)."""
    from mlray.images import decode_image
    from mlray.models import preprocess_uint8

    with open(path, "rb") as f:
        return int(preprocess_uint8(decode_image(f.read()), prep).shape[0])


def cpu_decode_rate(files: list[str], n: int, workers: int) -> float:
    """Images/s of :func:`_pil_decode` for resnet50 over ``n`` images (cycling ``files``) in a pool of ``workers``
    fresh processes (spawned: no torch or CUDA state inherited; they import what a decode task imports)."""
    import functools
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    paths = [files[i % len(files)] for i in range(n)]
    work = functools.partial(_pil_decode, prep=prep_of("resnet50"))
    with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn")) as pool:
        list(pool.map(work, paths[: workers * 4]))  # every process up and its imports done
        start = time.perf_counter()
        list(pool.map(work, paths, chunksize=32))
        return n / (time.perf_counter() - start)


def gpu_decode_rate(files: list[str], n: int, batch: int, device: str) -> float:
    """Images/s of nvJPEG decode (``torchvision.io.decode_jpeg`` on the GPU, in batches of ``batch`` files read
    before the clock) plus resnet50's resize (bicubic with antialias, shorter side to size / crop_pct) and center
    crop on the GPU."""
    import torch
    import torch.nn.functional as F
    from torchvision.io import ImageReadMode, decode_jpeg, read_file

    prep = prep_of("resnet50")
    crop = prep.input_size[1]
    short = int(crop / prep.crop_pct)
    data = [read_file(f) for f in files]
    batches = [[data[(b + i) % len(data)] for i in range(batch)] for b in range(0, n, batch)]

    def run(some) -> None:
        for group in some:
            for img in decode_jpeg(group, mode=ImageReadMode.RGB, device=device):  # RGB, as PIL's .convert
                h, w = img.shape[1:]
                size = (short, round(w * short / h)) if h <= w else (round(h * short / w), short)
                x = F.interpolate(img[None].float(), size=size, mode="bicubic", antialias=True)
                top, left = (x.shape[2] - crop) // 2, (x.shape[3] - crop) // 2
                x[..., top : top + crop, left : left + crop].clamp(0, 255).to(torch.uint8)
        if device == "cuda":
            torch.cuda.synchronize()

    run(batches[:2])
    start = time.perf_counter()
    run(batches)
    return len(batches) * batch / (time.perf_counter() - start)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    photos = Path(__file__).resolve().parents[2] / "shared" / "data" / "images-ilsvrc2012-val-original"
    ap.add_argument("--photos", type=Path, default=photos, help="a folder of JPEG photos (default: %(default)s)")
    ap.add_argument("--images", type=int, default=50_000, help="rows of the photo manifest (default 50,000)")
    ap.add_argument("--batch-size", type=int, default=256, help="model batch, both sides (mlray's GPU default: 256)")
    ap.add_argument("--json", type=Path, help="also write the figures here")
    ap.add_argument("--smoke", action="store_true", help="on a CPU: a few images and steps, to check the script")
    args = ap.parse_args()

    files = sorted(str(p.resolve()) for p in args.photos.glob("*") if p.suffix.lower() in (".jpeg", ".jpg"))
    if not files:
        print(f"bench_gpu: no JPEG photo in {args.photos}", file=sys.stderr)
        return 2
    import pydantic  # noqa: F401  (what the run needs, before any measurement: a missing package fails at once)
    import ray
    import ray.data  # noqa: F401
    import torch
    from bench_inference import wait_for_workers

    from mlray import cluster

    cuda = torch.cuda.is_available()
    if not cuda and not args.smoke:
        print("bench_gpu: no CUDA GPU here (use --smoke to check the script on a CPU)", file=sys.stderr)
        return 2
    device = "cuda" if cuda else "cpu"
    if args.smoke:
        args.images, args.batch_size = min(args.images, 64), min(args.batch_size, 16)
    cpus = os.cpu_count() or 1
    name = torch.cuda.get_device_name(0) if cuda else "no GPU (smoke check)"
    print(f"{name}, {cpus} CPUs, torch {torch.__version__}, {len(files)} photos x {args.images:,} rows, batch "
          f"{args.batch_size}", flush=True)  # fmt: skip
    figures: dict = {"device": name, "cpus": cpus, "torch": torch.__version__, "images": args.images,
                     "batch_size": args.batch_size}  # fmt: skip
    steps, warm = (3, 1) if args.smoke else (50, 10)

    ceiling = model_only("resnet50", args.batch_size, steps, warm, device)
    print(f"resnet50 alone (timm benchmark style): {ceiling['img_s']:,.0f} img/s", flush=True)
    small = {m: model_only(m, args.batch_size, steps, warm, device) for m in SMALL}
    for m, r in small.items():
        print(f"{m} alone: {r['img_s']:,.0f} img/s", flush=True)
    decode_n = 64 if args.smoke else 20_000
    cpu_rate = cpu_decode_rate(files, decode_n, cpus)
    print(f"decode + resize on {cpus} CPUs (PIL, as mlray's decode tasks): {cpu_rate:,.0f} img/s", flush=True)
    gpu_rate = gpu_decode_rate(files, decode_n, min(64, args.batch_size), device)
    print(f"decode + resize on the GPU (nvJPEG + torch): {gpu_rate:,.0f} img/s", flush=True)

    cluster.connect()
    wait_for_workers(ray)
    with tempfile.TemporaryDirectory(prefix="mlray-bench-gpu-") as tmp:
        manifest = photo_manifest(files, args.images, Path(tmp) / "photos.csv")
        one = mlray_run(["resnet50"], manifest, args.batch_size, 1, Path(tmp) / "one", device)
        print(f"mlray resnet50: {one['wall_s']:.1f} s end to end = {one['img_s']:,.0f} img/s; steady "
              f"{one['steady'].get('resnet50', float('nan')):,.0f} img/s", flush=True)  # fmt: skip
        shared = {per: mlray_run(list(SMALL), manifest, args.batch_size, per, Path(tmp) / f"small-{per}", device)
                  for per in (1, 4)}  # fmt: skip
        for per, r in shared.items():
            print(f"mlray four small models, models_per_pass {per} ({r['slots']} slots): {r['wall_s']:.1f} s = "
                  f"{r['img_s']:,.0f} images x models / s; steady "
                  + ", ".join(f"{m} {v:,.0f}" for m, v in r["steady"].items()), flush=True)  # fmt: skip
    ray.shutdown()

    steady = one["steady"].get("resnet50", float("nan"))
    small_alone = len(SMALL) / sum(1 / r["img_s"] for r in small.values())  # the four one after another, alone
    figures.update({
        "resnet50": {"model_only_img_s": ceiling["img_s"], "mlray_img_s": one["img_s"], "mlray_steady_img_s": steady,
                     "vs_model_only": one["img_s"] / ceiling["img_s"],
                     "steady_vs_model_only": steady / ceiling["img_s"], "wall_s": one["wall_s"],
                     "errors": one["errors"]},
        "four_small": {"models": list(SMALL), "alone_img_s": {m: r["img_s"] for m, r in small.items()},
                       "alone_one_after_another_img_s": small_alone,
                       **{f"models_per_pass_{p}": r for p, r in shared.items()},
                       "sharing_vs_one_slot": shared[4]["img_s"] / shared[1]["img_s"]},
        "decode": {"cpu_img_s": cpu_rate, "gpu_img_s": gpu_rate, "gpu_vs_cpu": gpu_rate / cpu_rate,
                   "cpu_vs_resnet50_model_only": cpu_rate / ceiling["img_s"]},
    })  # fmt: skip
    print()
    print(f"resnet50: mlray end to end {figures['resnet50']['vs_model_only']:.2f}x the model alone, steady "
          f"{figures['resnet50']['steady_vs_model_only']:.2f}x")  # fmt: skip
    print(f"four small models: four quarter-GPU slots {figures['four_small']['sharing_vs_one_slot']:.2f}x one slot")
    print(f"decode: GPU {figures['decode']['gpu_vs_cpu']:.2f}x the CPUs; the CPUs "
          f"{figures['decode']['cpu_vs_resnet50_model_only']:.2f}x what resnet50 alone consumes")  # fmt: skip
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
