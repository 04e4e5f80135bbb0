"""Run config validation and path resolution (relative, http(s) on loopback, pyarrow filesystem URIs)."""

from __future__ import annotations

import http.server
import json
import threading

import pytest

from mlray.config import default_config, load_config
from mlray.datasets import load_dataset_labels
from mlray.errors import MlrayError
from mlray.io import resolve, scheme_of


def write(path, text):
    path.write_text(text)
    return path


def test_config_relative_paths_resolve_against_its_folder(tmp_path):
    (tmp_path / "data").mkdir()
    write(tmp_path / "data" / "m.json", json.dumps({"a.jpeg": ["1"], "b.jpeg": []}))
    cfg = load_config(
        write(
            tmp_path / "run.yaml",
            "datasets:\n  - name: d\n    labels:\n      multi: {format: multilabelfy-json, path: data/m.json}\n",
        )
    )
    assert cfg.datasets[0].labels.original is None
    labels = load_dataset_labels(cfg, cfg.datasets[0])
    assert labels.table.column("valid").to_pylist() == [[1], []]


def test_default_config_is_real_in_timm():
    cfg = default_config()
    assert [d.name for d in cfg.datasets] == ["imagenet-val-real"]
    assert cfg.datasets[0].labels.multi.format == "real-json" and cfg.datasets[0].labels.multi.path is None


@pytest.mark.parametrize(
    "text, message",
    [
        ("datasets: []\n", "datasets: List should have at least 1 item"),
        ("dataset:\n  - name: x\n", "dataset: unknown key"),
        (
            "datasets:\n  - name: x\n    labels: {multi: {format: real}}\n",
            "datasets[0].labels.multi.format: Input should be",
        ),
        (
            "datasets:\n  - name: x\n    labels: {multi: {format: real-json, pth: a}}\n",
            "datasets[0].labels.multi.pth: unknown key",
        ),
        ("datasets:\n  - name: x\n", "datasets[0]: Value error, needs labels.original and/or labels.multi"),
        (
            "datasets:\n  - {name: x, labels: {multi: {format: real-json}}}\n  - {name: x, labels: {multi: {format: real-json}}}\n",  # noqa: E501
            "dataset name 'x' is used twice",
        ),
        (
            "datasets:\n  - {name: x, on_unknown_image: ignore, labels: {multi: {format: real-json}}}\n",
            "on_unknown_image",
        ),
        ("datasets: [\n", "malformed YAML at line 2"),
        ("- 1\n- 2\n", "a run config is a mapping"),
    ],
)
def test_config_errors_are_one_line_naming_the_file_and_key(tmp_path, text, message):
    path = write(tmp_path / "bad.yaml", text)
    with pytest.raises(MlrayError) as info:
        load_config(path)
    assert message in str(info.value)
    assert str(info.value).startswith(str(path))
    assert "\n" not in str(info.value)


def test_missing_config_file(tmp_path):
    with pytest.raises(MlrayError, match="no such config file"):
        load_config(tmp_path / "nope.yaml")


def test_scheme_detection():
    assert scheme_of("s3://bucket/key.json") == "s3"
    assert scheme_of("gs://b/k") == "gs"
    assert scheme_of("https://x/y") == "https"
    assert scheme_of("/abs/path.json") is None
    assert scheme_of("C:/windows/path") is None
    assert scheme_of("relative/file.json") is None


def test_pyarrow_filesystem_uri_is_copied_into_the_cache(tmp_path):
    src = write(tmp_path / "m.json", json.dumps({"a.jpeg": ["7"]}))
    local = resolve(f"file://{src}")
    assert local != src and local.read_text() == src.read_text()
    src.write_text("changed")
    assert resolve(f"file://{src}").read_text() == json.dumps({"a.jpeg": ["7"]})  # served from the cache


def test_http_url_is_downloaded_once(tmp_path):
    (tmp_path / "srv").mkdir()
    write(tmp_path / "srv" / "m.json", json.dumps({"a.jpeg": ["3", "4"]}))
    hits = []

    class Handler(http.server.SimpleHTTPRequestHandler):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, directory=str(tmp_path / "srv"), **kwargs)

        def log_message(self, *args):
            hits.append(self.path)

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/m.json"
        cfg_path = write(
            tmp_path / "run.yaml",
            f"datasets:\n  - name: d\n    labels: {{multi: {{format: multilabelfy-json, path: '{url}'}}}}\n",
        )
        cfg = load_config(cfg_path)
        assert load_dataset_labels(cfg, cfg.datasets[0]).table.column("valid").to_pylist() == [[3, 4]]
        assert load_dataset_labels(cfg, cfg.datasets[0]).table.column("valid").to_pylist() == [[3, 4]]
        assert hits == ["/m.json"]
        with pytest.raises(MlrayError, match=r"http://127\.0\.0\.1:\d+/missing\.json: cannot read \(HTTPError"):
            resolve(url.replace("m.json", "missing.json"))
    finally:
        server.shutdown()


def test_duplicate_yaml_key_is_an_error_naming_key_and_line(tmp_path):
    text = "datasets:\n  - name: a\n    labels: {multi: {format: real-json}}\n    name: b\n"
    path = write(tmp_path / "run.yaml", text)
    with pytest.raises(MlrayError) as exc:
        load_config(path)
    assert str(exc.value) == f"{path}: duplicate key 'name' at line 4 (first at line 2)"


def test_duplicate_top_level_section_is_an_error(tmp_path):
    text = "datasets:\n  - {name: a, labels: {multi: {format: real-json}}}\nscoring: {n_boot: 10}\nscoring: {seed: 3}\n"
    with pytest.raises(MlrayError, match=r"duplicate key 'scoring' at line 4 \(first at line 3\)"):
        load_config(write(tmp_path / "run.yaml", text))


def test_scoring_section_sets_metric_params_and_flags_override(tmp_path):
    from mlray.scoring.params import MetricParams

    text = (
        "datasets:\n  - {name: a, labels: {multi: {format: real-json}}}\nscoring: {max_group: 2, min_group_size: 1}\n"  # noqa: E501
    )
    cfg = load_config(write(tmp_path / "run.yaml", text))
    assert cfg.scoring.params() == MetricParams(max_group=2, min_group_size=1, n_boot=1000, seed=0, ci=0.95)
    assert cfg.scoring.params(n_boot=0, seed=None) == MetricParams(max_group=2, min_group_size=1, n_boot=0)
    assert default_config().scoring.params() == MetricParams()


def test_scoring_section_rejects_unknown_keys_and_bad_values(tmp_path):
    text = "datasets:\n  - {name: a, labels: {multi: {format: real-json}}}\nscoring: {max_groups: 2}\n"
    with pytest.raises(MlrayError, match=r"scoring.max_groups: unknown key"):
        load_config(write(tmp_path / "a.yaml", text))
    text = "datasets:\n  - {name: a, labels: {multi: {format: real-json}}}\nscoring: {ci: 1.5}\n"
    with pytest.raises(MlrayError, match=r"scoring.ci: Input should be less than 1"):
        load_config(write(tmp_path / "b.yaml", text))
