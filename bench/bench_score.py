"""Benchmark of mlray.scoring at the scale of the paper: 315 models x (ImageNet val + ImageNetV2) x top-20.

Synthetic labels follow the real label-count histograms (docs/design.md): dataset A = 50,000 images (ImageNet val +
ReaL: 46,837 labelled, 3,163 empty), dataset B = 10,000 images (ImageNetV2 + refined labels: 9,871 labelled,
129 empty); ~90 % of labelled images have their original label in the valid set. Each synthetic model has its own
skill: with probability ``skill`` its first rank is one of the image's valid labels (otherwise a geometric number
of distractors comes first) and, independently, the other valid labels follow right after it (otherwise after a
geometric number of distractors), so accuracies spread over roughly 0.5-0.9 and the strict variable top-k falls
below ReaL top-1 on multi-label images, as for real models.

Timed, per dataset and model: every metric, every subgroup, ASMA and ml-acc (score_models without bootstrap),
the 1,000-resample percentile bootstrap of all of them (bootstrap_scores), the report frames, and the A-vs-B
gap decomposition with its bootstrap intervals. The floor is one plain numpy pass over the same arrays:
``(topk[:, 0] == original).mean()`` per model and dataset.

    python bench/bench_score.py             # 315 models
    python bench/bench_score.py --models 20
"""

from __future__ import annotations

import argparse
import os
import resource
import sys
import time

import numpy as np
import pandas as pd

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from mlray.labels import LabelArrays  # noqa: E402
from mlray.scoring import (  # noqa: E402
    MetricParams,
    bootstrap_scores,
    decomposition_frame,
    metrics_frame,
    prepare_dataset,
    score_models,
    subgroup_frame,
)

VAL_HIST = {1: 39394, 2: 5408, 3: 1319, 4: 411, 5: 161, 6: 88, 7: 41, 8: 13, 9: 2}
VAL_EMPTY = 3163
V2_HIST = {1: 5083, 2: 2385, 3: 1306, 4: 628, 5: 237, 6: 127, 7: 48, 8: 23, 9: 18, 10: 13, 11: 1, 12: 2}
V2_EMPTY = 129
K = 20


class SyntheticDataset:
    """Labels with a given label-count histogram, plus what is needed to draw model predictions quickly."""

    def __init__(self, hist: dict[int, int], n_empty: int, prefix: str, rng: np.random.Generator):
        k = np.concatenate([np.repeat(list(hist), list(hist.values())), np.zeros(n_empty, np.int64)])
        k = rng.permutation(k)
        n = len(k)
        kmax = int(k.max())
        base = rng.integers(0, 1000, n)
        steps = rng.integers(1, 41, (n, kmax))
        steps[:, 0] = 0
        valid = (base[:, None] + np.cumsum(steps, axis=1)) % 1000  # within base..base+480: distinct
        mask = np.arange(kmax)[None, :] < k[:, None]
        original = np.where((k > 0) & (rng.random(n) > 0.9), (base + 700) % 1000, base)
        dsteps = rng.integers(1, 25, (n, K))
        self.distractors = ((base[:, None] + 500 + np.cumsum(dsteps, axis=1)) % 1000).astype(np.int16)
        # what a good model ranks first: the valid labels (the original for an empty image)
        self.block = np.where(mask, valid, base[:, None]).astype(np.int16)
        self.kb = np.maximum(k, 1)
        self.n = n
        self.labels = LabelArrays(
            image_ids=np.array([f"{prefix}{i:06d}" for i in range(n)], dtype=object),
            original=original.astype(np.int16),
            offsets=np.concatenate([[0], np.cumsum(k)]).astype(np.int64),
            values=valid[mask].astype(np.int16),
            annotated=np.ones(n, bool),
        )

    def predictions(self, skill: float, rng: np.random.Generator, n_missing: int = 0) -> np.ndarray:
        """Top-K ranks: `d` distractors, the first valid label, `gap` distractors, the other valid labels, ...

        d = 0 with probability `skill` (else 1 + geometric); gap = 0 with probability `skill` (else 1 + geometric),
        so the strict variable top-k of a multi-label image is below its ReaL top-1, as for real models.
        """
        n = self.n
        d = np.where(rng.random(n) < skill, 0, rng.geometric(0.45, n)).astype(np.int32)[:, None]
        gap = np.where(rng.random(n) < skill, 0, rng.geometric(0.5, n)).astype(np.int32)[:, None]
        roll = np.where(rng.random(n) < 0.3, rng.integers(0, 12, n), 0).astype(np.int32)[:, None]
        kb = self.kb.astype(np.int32)[:, None]
        J = np.arange(K, dtype=np.int32)[None, :]
        rest = J - d - gap  # position inside the block after the gap
        first = J == d
        in_block = first | ((rest >= 1) & (rest < kb))
        bi = np.where(first, roll % kb, (rest + roll) % kb)
        di = np.where(J < d, J, np.where(rest < 1, J - 1, J - np.minimum(kb, K)))
        rows = np.arange(n)[:, None]
        topk = np.where(
            in_block, self.block[rows, np.where(in_block, bi, 0)], self.distractors[rows, np.clip(di, 0, K - 1)]
        ).astype(np.int16)
        if n_missing:
            topk[rng.choice(n, n_missing, replace=False)] = -1
        return topk


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", type=int, default=315)
    ap.add_argument("--batch", type=int, default=16, help="models scored (and bootstrapped) together")
    ap.add_argument("--n-boot", type=int, default=1000)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()

    rng = np.random.default_rng(args.seed)
    t0 = time.perf_counter()
    A = SyntheticDataset(VAL_HIST, VAL_EMPTY, "val_", rng)
    B = SyntheticDataset(V2_HIST, V2_EMPTY, "v2_", rng)
    params = MetricParams(n_boot=args.n_boot, seed=args.seed)
    t_labels = time.perf_counter() - t0

    times = dict.fromkeys(["setup", "point", "bootstrap", "frames", "decomposition", "floor", "generate"], 0.0)
    t = time.perf_counter()
    ctx_a, ctx_b = prepare_dataset(A.labels, params), prepare_dataset(B.labels, params)
    for ctx in (ctx_a, ctx_b):  # the dense label matrix and the resample counts, once per dataset
        _ = ctx.L_flat
        for _ in ctx.resample_chunks(params.n_boot, params.seed):
            pass
    times["setup"] = time.perf_counter() - t

    skills = rng.uniform(0.5, 0.93, args.models)
    model_frames, group_frames, decomp_frames = [], [], []
    floor_vals = []
    for start in range(0, args.models, args.batch):
        ids = range(start, min(start + args.batch, args.models))
        t = time.perf_counter()
        preds = {
            "A": [A.predictions(skills[m], rng, n_missing=50 if m % 10 == 0 else 0) for m in ids],
            "B": [B.predictions(skills[m], rng) for m in ids],
        }
        times["generate"] += time.perf_counter() - t

        t = time.perf_counter()
        for name, ds in (("A", A), ("B", B)):
            orig = ds.labels.original
            for tk in preds[name]:
                floor_vals.append((tk[:, 0] == orig).mean())
        times["floor"] += time.perf_counter() - t

        t = time.perf_counter()
        sa = score_models(A.labels, preds["A"], params, bootstrap=False, context=ctx_a)
        sb = score_models(B.labels, preds["B"], params, bootstrap=False, context=ctx_b)
        times["point"] += time.perf_counter() - t

        t = time.perf_counter()
        bootstrap_scores(sa, A.labels, params, context=ctx_a)
        bootstrap_scores(sb, B.labels, params, context=ctx_b)
        times["bootstrap"] += time.perf_counter() - t

        t = time.perf_counter()
        for m, a, b in zip(ids, sa, sb):
            for name, s in (("A", a), ("B", b)):
                f = metrics_frame(s)
                f["model"], f["dataset"] = f"model{m:03d}", name
                model_frames.append(f)
                g = subgroup_frame(s)
                g["model"], g["dataset"] = f"model{m:03d}", name
                group_frames.append(g)
        times["frames"] += time.perf_counter() - t

        t = time.perf_counter()
        for m, a, b in zip(ids, sa, sb):
            d = decomposition_frame(a, b)
            d["model"], d["dataset_a"], d["dataset_b"] = f"model{m:03d}", "A", "B"
            decomp_frames.append(d)
        times["decomposition"] += time.perf_counter() - t

    t = time.perf_counter()
    models = pd.concat(model_frames, ignore_index=True)
    groups = pd.concat(group_frames, ignore_index=True)
    decomp = pd.concat(decomp_frames, ignore_index=True)
    times["frames"] += time.perf_counter() - t

    work = sum(times[k] for k in ("setup", "point", "bootstrap", "frames", "decomposition"))
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"mlray.scoring benchmark: {args.models} models x A ({A.n:,} images) + B ({B.n:,} images), K={K}, "
          f"n_boot={params.n_boot}, batch={args.batch}, {os.cpu_count()} CPUs")  # fmt: skip
    per_model = times["point"] / args.models * 1e3
    lines = [
        ("synthetic labels (not timed as scoring)", t_labels),
        ("synthetic predictions (not timed as scoring)", times["generate"]),
        ("setup: label matrices + resample counts", times["setup"]),
        (f"point: all metrics, subgroups, ASMA ({per_model:.1f} ms/model)", times["point"]),
        (f"bootstrap: {params.n_boot} resamples, every metric", times["bootstrap"]),
        ("report frames (metrics + subgroups)", times["frames"]),
        ("decomposition A vs B with CIs", times["decomposition"]),
        ("TOTAL scoring wall", work),
        ("floor: (topk[:,0]==original).mean() per model+dataset", times["floor"]),
    ]
    for name, sec in lines:
        print(f"  {name:<56s} {sec:8.3f} s")
    print(f"  {'ratio total / floor':<56s} {work / times['floor']:8.0f} x")
    print(f"  {'peak memory (maxrss)':<56s} {peak_mb:8.0f} MiB")
    print(f"  rows: models {len(models):,}, subgroups {len(groups):,}, decomposition {len(decomp):,}")
    sample = models[models.model == "model000"].set_index(["dataset", "metric"])
    sample = sample[["value", "ci_low", "ci_high", "n"]]
    with pd.option_context("display.width", 160, "display.max_rows", 40):
        print(sample.loc["A"].round(4).to_string())
        cols = ["metric", "value_a", "value_b", "gap", "composition", "within", "gap_ci_low", "gap_ci_high"]
        print(decomp.loc[decomp.model == "model000", cols].round(4).to_string(index=False))
    top1 = models[(models.metric == "top1")].groupby("dataset")["value"].agg(["min", "mean", "max"])
    print("  top1 spread over models:\n" + top1.round(3).to_string())


if __name__ == "__main__":
    main()
