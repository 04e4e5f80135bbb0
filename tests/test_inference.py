"""The Ray Data inference pipeline on real photos with real pretrained weights (CPU)."""

from __future__ import annotations

import shutil

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch
from PIL import Image

from conftest import shared
from mlray.config import load_config
from mlray.inference import run_inference
from mlray.models import ModelSpec, build_model, resolve_preprocessing
from mlray.predictions import read_predictions, softmax, topk_from_scores


def write_config(tmp_path, images, models, shard_size=30, labels=True):
    lab = ""
    if labels:
        gt = shared("imagenetv2", "imagenet-validation-original.json")
        lab = f"    labels:\n      original: {{format: imagenetv2-json, path: {gt}}}\n      multi: {{format: real-json}}\n"
    text = (
        f"datasets:\n  - name: photos\n    images: {images}\n    layout: imagenet-val-flat\n    shard_size: {shard_size}\n{lab}"
        "models:\n" + "".join(f"  - {{name: {n}, weights: {w}}}\n" for n, w in models)
    )
    path = tmp_path / "run.yaml"
    path.write_text(text)
    return load_config(path)


@pytest.mark.integration
@pytest.mark.ray
def test_top20_equals_a_plain_timm_loop_and_resume_redoes_only_missing_shards(ray_cluster, tmp_path):
    photos = shared("images-ilsvrc2012-val-original")
    cfg = write_config(tmp_path, photos, [("tf_efficientnet_lite0", "pypi")])
    out = tmp_path / "out"
    result = run_inference(cfg, out)
    assert result.counts[("photos", "tf_efficientnet_lite0")] == {"images": 89, "predictions": 89, "errors": 0}
    stored = read_predictions(out / "predictions").to_pandas().set_index("image_id").sort_index()
    assert len(stored) == 89 and stored.index.is_unique

    # the plain single-process loop, the way timm's validate.py works: PIL -> timm eval transform -> model
    import timm.data

    spec = ModelSpec("tf_efficientnet_lite0", "pypi")
    prep = resolve_preprocessing(spec)
    transform = timm.data.create_transform(**prep.timm_config(), is_training=False)
    model = build_model(spec)
    files = sorted(p for p in photos.iterdir() if p.suffix == ".JPEG")
    with torch.inference_mode():
        x = torch.stack([transform(Image.open(f).convert("RGB")) for f in files])
        probs = softmax(model(x).numpy(), axis=1)
    idx, prob = topk_from_scores(probs, 20)
    for i, f in enumerate(files):
        row = stored.loc[f.stem]
        assert list(row.topk_idx) == idx[i].tolist(), f.name
        np.testing.assert_allclose(row.topk_prob, prob[i], rtol=1e-4, atol=1e-6)
    assert (stored.loc["ILSVRC2012_val_00000001"].topk_idx[0]) == idx[0][0]

    # resume: lose one shard (as a run killed before writing it would) -> only that shard is redone
    part = next((out / "predictions").rglob("part-s00001.parquet"))
    part.unlink()
    again = run_inference(cfg, out)
    assert again.images_processed["photos"] == 30
    resumed = read_predictions(out / "predictions").to_pandas().set_index("image_id").sort_index()
    assert len(resumed) == 89 and resumed.index.is_unique
    assert [list(v) for v in resumed.topk_idx] == [list(v) for v in stored.topk_idx]
    # nothing left to do: a third run reuses everything
    assert run_inference(cfg, out).images_processed["photos"] == 0


@pytest.mark.integration
@pytest.mark.ray
def test_bad_images_go_to_the_errors_table_and_counts_reconcile(ray_cluster, tmp_path):
    photos = shared("images-ilsvrc2012-val-original")
    folder = tmp_path / "imgs"
    folder.mkdir()
    good = sorted(p for p in photos.iterdir() if p.suffix == ".JPEG")[:3]
    for p in good:
        shutil.copy(p, folder / p.name)
    data = good[0].read_bytes()
    (folder / "ILSVRC2012_val_00090001.JPEG").write_bytes(data[: len(data) // 2])  # truncated
    (folder / "ILSVRC2012_val_00090002.JPEG").write_bytes(b"")  # zero bytes
    (folder / "ILSVRC2012_val_00090003.JPEG").write_text("not an image at all")
    (folder / "README.txt").write_text("skipped by extension")
    cfg = write_config(tmp_path, folder, [("tf_efficientnet_lite0", "pypi"), ("mobilenetv3_small_050", "none")], shard_size=4, labels=False)
    out = tmp_path / "out"
    result = run_inference(cfg, out)
    for model in ("tf_efficientnet_lite0", "mobilenetv3_small_050"):
        assert result.counts[("photos", model)] == {"images": 6, "predictions": 3, "errors": 3}
    errors = pq.read_table(next((out / "errors").glob("dataset=photos/model=tf_efficientnet_lite0"))).to_pandas().set_index("image_id")
    assert errors.loc["ILSVRC2012_val_00090001", "stage"] == "decode" and "truncated" in errors.loc["ILSVRC2012_val_00090001", "error"]
    assert errors.loc["ILSVRC2012_val_00090002", "error"] == "empty file"
    assert errors.loc["ILSVRC2012_val_00090003", "error"].startswith("not an image")
    # two models with different preprocessing shared one read + decode: both have the same 3 images
    preds = read_predictions(out / "predictions").to_pandas()
    assert sorted(preds.groupby("model").size().tolist()) == [3, 3]
