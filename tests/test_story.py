"""The demo's story on the data shipped in mlray/builtin: the files (size, licenses, provenance against ../shared when
it is there), the built-in label sources, every figure of the ``composition_effect`` report recomputed here with
numpy from the shipped files alone, the printed story, the dashboard section, and ``mlray demo`` run with the
network cut and ../shared hidden."""

from __future__ import annotations

import csv
import json
import os
import shutil
import subprocess
import sys
import textwrap
from fractions import Fraction
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import REPO, SHARED_DATA, error_of, shared

from mlray import builtin
from mlray.demo import STORY, STORY_CUTS, STORY_MODEL, STORY_V2, STORY_VAL, build_story, read_story
from mlray.labels import build_dataset_labels, read_source, timm_info_dir
from mlray.reports import COMPOSITION_COLUMNS, COMPOSITION_REPORT

BUILTIN = REPO / "mlray" / "builtin"
GROUPS = ["1", "2", "3", "4", "5+"]
# Hand-counted from the shipped files (see the numpy recomputation below): per subgroup of ReaL-labelled val images
# (1, 2, 3, 4, 5+ valid labels), the images and the ResNet-50's top-1 hits; the labelled ImageNetV2 images per group.
VAL_N = [39394, 5408, 1319, 411, 305]
VAL_HITS = [31795, 2637, 526, 135, 90]
V2_N = [5083, 2385, 1306, 628, 469]


# ---------------------------------------------------------------- the shipped files


def test_builtin_files_are_small_licensed_and_described():
    data = [p for p in BUILTIN.rglob("*") if p.is_file() and p.suffix != ".py" and "__pycache__" not in p.parts]
    assert sum(p.stat().st_size for p in data) < 1.5 * 2**20  # about 1.3 MB: well under 2 MB
    source = (BUILTIN / "SOURCE.md").read_text()
    for folder, license_text in (("multilabelfy", "Apache License"), ("cleanlab", "Apache License"),
                                 ("timm", "Apache License"), ("imagenetv2", "MIT License")):  # fmt: skip
        assert license_text in (BUILTIN / folder / "LICENSE").read_text()
        assert f"## {folder}/" in source
    for name in builtin.FILES:
        assert builtin.path(name).is_file() and Path(name).name in source
    for commit in ("650a1736eec6f9457daa1021f52d794297cc0bc2", "0b0c3fe89058e4c7ee2348938b3f4f706a931bf3",
                   "6d5d6b31a13216290afc40e5c6319399c4d15c06", "aa4b5850c1543fa488abf260f18390eda46cf85d"):  # fmt: skip
        assert commit in source
    for vector in (builtin.val_original_labels(), builtin.resnet50_val_top1()):
        assert vector.dtype == np.int16 and vector.shape == (50_000,) and 0 <= vector.min() and vector.max() <= 999
    assert builtin.val_original_labels()[:5].tolist() == [65, 970, 230, 809, 516]  # ILSVRC2012_val_00000001..5
    assert np.bincount(builtin.val_original_labels(), minlength=1000).tolist() == [50] * 1000
    with pytest.raises(FileNotFoundError, match="missing"):
        builtin.path("nope.json")


@pytest.mark.integration
def test_builtin_files_are_the_sources_reordered():
    """Each shipped file against its source in ../shared/data: a byte copy, or the same values re-ordered."""
    refined = shared("multilabelfy-imagenetv2", "imagenetv2_refined_labels.json")
    assert builtin.path(builtin.REFINED_LABELS).read_bytes() == refined.read_bytes()
    assert (BUILTIN / "multilabelfy" / "LICENSE").read_bytes() == (refined.parent / "LICENSE").read_bytes()
    clean = shared("cleanlab-label-errors")
    order = json.loads((clean / "imagenet_val_set_index_to_filepath.json").read_text())
    number = np.array([int(p.rsplit("_", 1)[1].split(".")[0]) for p in order])  # row -> file number
    pairs = {"imagenet_val_set_original_labels.npy": builtin.val_original_labels(),
             "imagenet_val_set_pyx_argmax_predicted_labels.npy": builtin.resnet50_val_top1()}  # fmt: skip
    for source, shipped in pairs.items():
        rows = np.load(clean / source)
        assert np.array_equal(shipped[number - 1], rows.astype(np.int16))
    b33 = json.loads(shared("imagenetv2", "imagenetv2-b-33.json").read_text())["image_filenames"]
    wnids = (timm_info_dir() / "imagenet_synsets.txt").read_text().split()
    table = pd.read_csv(builtin.path(builtin.V2_ORIGINAL_LABELS))
    assert table["image_id"].tolist() == [f for f, _ in b33]
    assert table["label"].tolist() == [wnids.index(w) for _, w in b33]
    for name in builtin.TIMM_RESULTS:
        full = pd.read_csv(shared("timm-results", Path(name).name), dtype=str, keep_default_na=False)
        mine = pd.read_csv(builtin.path(name), dtype=str, keep_default_na=False)
        pd.testing.assert_frame_equal(mine, full[["model", "img_size", "top1", "top5"]])


# ---------------------------------------------------------------- built-in label sources


def test_builtin_label_sources():
    refined = read_source("imagenetv2-refined", None)
    assert len(refined.image_ids) == 10_000 and refined.original is None
    counts = np.bincount([len(v) for v in refined.valid])
    assert counts[0] == 129 and counts[1:].tolist() == [5083, 2385, 1306, 628, 237, 127, 48, 23, 18, 13, 1, 2]
    original = read_source("imagenetv2-original", None)
    assert set(original.image_ids) == set(refined.image_ids)
    assert np.bincount(np.asarray(original.original), minlength=1000).tolist() == [10] * 1000  # 10 per class
    val = read_source("imagenet-val-original", None)
    assert val.image_ids[0] == "ILSVRC2012_val_00000001" and val.image_ids[-1] == "ILSVRC2012_val_00050000"
    assert list(val.original[:3]) == [65, 970, 230] and val.valid is None
    v2 = build_dataset_labels("v2", original, refined)
    assert v2.table.num_rows == 10_000


def test_builtin_label_sources_take_no_path_and_config_accepts_them(tmp_path):
    assert "takes no path" in error_of(read_source, "imagenetv2-refined", "x.json")
    assert "formats with a built-in file: real-json, imagenetv2-refined" in error_of(
        read_source, "multilabelfy-json", None
    )
    from mlray.config import load_config

    path = tmp_path / "c.yaml"
    path.write_text("datasets:\n  - {name: v2, labels: {original: {format: imagenetv2-original}, "
                    "multi: {format: imagenetv2-refined}}}\n")  # fmt: skip
    assert load_config(path).datasets[0].labels.multi.format == "imagenetv2-refined"


# ---------------------------------------------------------------- the story's figures


@pytest.fixture(scope="module")
def story(tmp_path_factory):
    out = tmp_path_factory.mktemp("demo")
    result = build_story(out)
    return out, result, read_story(out / "reports")


def _rows(effect: pd.DataFrame, quantity: str) -> pd.DataFrame:
    return effect[effect["quantity"] == quantity].set_index("group")


def test_story_numbers_recomputed_from_the_shipped_files(story):
    """Every figure of the report, recomputed here with numpy from the shipped files and timm's ReaL copy."""
    real = json.loads((timm_info_dir() / "imagenet_real_labels.json").read_text())
    k_val = np.array([len(set(labels)) for labels in real])
    hit = builtin.resnet50_val_top1() == builtin.val_original_labels()
    refined = json.loads(builtin.path(builtin.REFINED_LABELS).read_text())
    k_v2 = np.array([len(set(labels)) for labels in refined.values()])

    def per_group(k: np.ndarray, mask: np.ndarray, cut: int = 5) -> list[int]:
        g = np.minimum(k, cut)
        return [int(np.sum(mask & (k > 0) & (g == i))) for i in range(1, cut + 1)]

    assert per_group(k_val, np.ones_like(hit)) == VAL_N and per_group(k_val, hit) == VAL_HITS
    assert per_group(k_v2, np.ones(len(k_v2), bool)) == V2_N

    def standardized(cut: int) -> Fraction:
        n_a, h_a, n_b = per_group(k_val, np.ones_like(hit), cut), per_group(k_val, hit, cut), per_group(
            k_v2, np.ones(len(k_v2), bool), cut)  # fmt: skip
        return sum((Fraction(n_b[i], sum(n_b)) * Fraction(h_a[i], n_a[i]) for i in range(cut)), Fraction(0))

    _, _, effect = story
    assert list(effect.columns) == COMPOSITION_COLUMNS
    assert set(effect["dataset_a"]) == {STORY_VAL} and set(effect["dataset_b"]) == {STORY_V2}
    share_a, share_b, value = _rows(effect, "share_a"), _rows(effect, "share_b"), _rows(effect, "value_a")
    assert share_a.index.tolist() == GROUPS and share_a["n"].tolist() == VAL_N and share_b["n"].tolist() == V2_N
    for i, g in enumerate(GROUPS):
        assert share_a.at[g, "value"] == pytest.approx(VAL_N[i] / sum(VAL_N), abs=1e-15)
        assert share_b.at[g, "value"] == pytest.approx(V2_N[i] / sum(V2_N), abs=1e-15)
        assert value.at[g, "value"] == pytest.approx(VAL_HITS[i] / VAL_N[i], abs=1e-15)
        assert value.at[g, "ci_low"] < value.at[g, "value"] < value.at[g, "ci_high"]
    top1 = Fraction(sum(VAL_HITS), sum(VAL_N))  # 35,183 / 46,837: top-1 over the ReaL-labelled val images
    assert value.at["all", "value"] == pytest.approx(float(top1), abs=1e-15) and value.at["all", "n"] == 46_837
    std = _rows(effect, "a_standardized_to_b").loc["all"]
    assert std["value"] == pytest.approx(float(standardized(5)), abs=1e-12) and std["n"] == 9_871
    comp = _rows(effect, "composition").loc["all"]
    assert comp["value"] == pytest.approx(float(top1 - standardized(5)), abs=1e-12)
    for row in (value.loc["all"], std, comp):
        assert row["ci_low"] < row["value"] < row["ci_high"] and row["ci_high"] - row["ci_low"] < 0.02
    cuts = _rows(effect, "a_standardized_to_b_cut")
    assert cuts.index.tolist() == [f"{c}+" for c in STORY_CUTS] == ["3+", "4+", "5+", "6+", "7+", "8+"]
    for c in STORY_CUTS:
        assert cuts.at[f"{c}+", "value"] == pytest.approx(float(standardized(c)), abs=1e-12)
    # the figures the README quotes, as printed (one decimal)
    assert round(100 * float(top1), 1) == 75.1 and round(100 * std["value"], 1) == 62.1
    assert (round(100 * cuts["value"].min(), 1), round(100 * cuts["value"].max(), 1)) == (62.1, 62.3)
    assert round(100 * comp["value"], 1) == 13.0

    gaps = []  # the published gap: timm's val top-1 minus its ImageNetV2 top-1, paired on (model, img_size)
    tables = [{(r["model"], r["img_size"]): Fraction(r["top1"]) for r in csv.DictReader(builtin.path(n).open())}
              for n in builtin.TIMM_RESULTS]  # fmt: skip
    gaps = [tables[0][key] - tables[1][key] for key in tables[0] if key in tables[1]]
    mean = _rows(effect, "published_gap_mean").loc["all"]
    assert mean["model"] == "timm" and mean["n"] == len(gaps) == 1556
    assert mean["value"] == pytest.approx(float(sum(gaps) / len(gaps)) / 100, abs=1e-12)
    assert round(100 * mean["value"], 2) == 10.85
    median = _rows(effect, "published_gap_median").loc["all"]
    assert median["value"] == pytest.approx(float(np.median([float(g) for g in gaps])) / 100, abs=1e-12)


def test_story_reports_agree_with_the_score_reports(story):
    """The story's numbers are the score reports' numbers (gap_decomposition, subgroup_metrics, external)."""
    out, result, effect = story
    reports = out / STORY / "reports"
    gd = pd.read_parquet(reports / "gap_decomposition.parquet").set_index("metric").loc["top1"]
    assert (gd["model"], gd["dataset_a"], gd["dataset_b"]) == (STORY_MODEL, STORY_VAL, STORY_V2)
    assert gd["value_a"] == _rows(effect, "value_a").at["all", "value"]
    assert gd["a_standardized_to_b"] == _rows(effect, "a_standardized_to_b").at["all", "value"]
    sub = pd.read_parquet(reports / "subgroup_metrics.parquet")
    sub = sub[sub["metric"] == "top1"].set_index("group")
    value = _rows(effect, "value_a").drop(index="all")
    assert sub.loc[GROUPS, "value"].tolist() == value["value"].tolist()
    assert sub.loc[GROUPS, "ci_low"].tolist() == value["ci_low"].tolist()
    summary = pd.read_parquet(reports / "external_gap_summary.parquet").iloc[0]
    assert summary["mean"] == _rows(effect, "published_gap_mean").at["all", "value"]
    assert (out / "reports" / f"{COMPOSITION_REPORT}.parquet").read_bytes() == result.paths[
        COMPOSITION_REPORT].read_bytes()  # fmt: skip
    stored = pd.read_parquet(out / STORY / "predictions")
    assert len(stored) == 50_000 and set(stored["model"]) == {STORY_MODEL}
    assert "imagenet-val-original" in (out / STORY / "story.yaml").read_text()


def test_story_is_printed_from_its_report(story):
    from rich.console import Console

    from mlray.console import print_demo_story

    console = Console(record=True, width=250)
    print_demo_story(story[2], console)
    text = console.export_text()
    assert "imagenet-val -> imagenetv2-matched-frequency: how much of the top1 drop is the label-count mix?" in text
    assert "│ 1            │                84.1 % │                                51.5 % │" in text
    assert "75.1 % [74.7, 75.5] -> 62.1 % [61.3, 62.8] under imagenetv2-matched-frequency's label-count mix " \
           "(62.1-62.3 % with the groups cut at 3+ to 8+)" in text  # fmt: skip
    assert "= a 13.0-point drop [12.4, 13.7] from the label-count mix alone" in text
    assert "published: the imagenet-val -> imagenetv2-matched-frequency top1 gap is 10.85 points on average over " \
           "1,556 timm models (median 10.89)" in text  # fmt: skip


def test_dashboard_shows_the_story_from_its_report(story):
    import re

    from mlray.dashboard import build_dashboard

    out, _, effect = story
    page = build_dashboard(out / "reports")
    text = page.read_text()
    data = json.loads(re.search(r'id="mlray-data">(.*?)</script>', text, re.S).group(1))
    figure = data["charts"]["composition"]["figure"]
    shares = {trace["name"]: trace["y"] for trace in figure["data"][:2]}
    assert shares[STORY_VAL] == pytest.approx([100 * v for v in _rows(effect, "share_a")["value"]], abs=1e-9)
    assert shares[STORY_V2] == pytest.approx([100 * v for v in _rows(effect, "share_b")["value"]], abs=1e-9)
    drop = figure["data"][3]
    assert drop["y"] == pytest.approx(
        [
            100 * _rows(effect, "composition").at["all", "value"],
            100 * _rows(effect, "published_gap_mean").at["all", "value"],
        ],
        abs=1e-9,
    )
    assert '<section id="story">' in text and 'id="table-composition"' in text
    assert "<b>75.1 %</b> [74.7, 75.5] on imagenet-val → <b>62.1 %</b> [61.3, 62.8]" in text
    assert "published mean gap <b>10.85</b> points over 1,556 timm models" in text


# ---------------------------------------------------------------- offline

GUARD = '''
"""Installed through PYTHONPATH in every Python process of the run (driver, Ray workers, Ray's own services):
records reads under the hidden folder and network use other than this machine, refusing the latter."""
import os
import socket
import sys

_LOG, _HIDDEN = os.environ["MLRAY_GUARD_LOG"], os.environ["MLRAY_GUARD_HIDDEN"]


def _local_addresses():
    found = {"127.0.0.1", "::1", "0.0.0.0", "::", "localhost", socket.gethostname()}
    try:
        lines = open("/proc/net/fib_trie").read().splitlines()
        found |= {lines[i - 1].split()[-1] for i, line in enumerate(lines) if "/32 host LOCAL" in line}
    except OSError:
        pass
    return found


_LOCAL = _local_addresses()


def _note(what):
    with open(_LOG, "a") as fh:
        fh.write(f"{what}\\t{os.path.basename(sys.argv[0] if sys.argv else '?')}\\n")


def _audit(event, args):
    if event in ("open", "os.listdir", "os.scandir") and args and isinstance(args[0], (str, bytes)):
        if os.path.abspath(os.fsdecode(args[0])).startswith(_HIDDEN):
            _note(f"read {os.fsdecode(args[0])}")
    elif event == "socket.getaddrinfo" and str(args[0]) not in _LOCAL and args[0] is not None:
        _note(f"resolve {args[0]}")
        raise OSError("network disabled by the test")
    elif event == "socket.connect" and args[0].family in (socket.AF_INET, socket.AF_INET6):
        if args[0].type == socket.SOCK_STREAM and str(args[1][0]) not in _LOCAL:
            _note(f"connect {args[1][0]}")
            raise OSError("network disabled by the test")


sys.addaudithook(_audit)
'''
RAY_CLOUD_PROBE = {"169.254.169.254", "metadata.google.internal"}
"""Ray's dashboard process asks the cloud metadata service which cloud it runs on (even with usage stats off);
offline the probe fails and Ray carries on. It is the only network use the run may attempt."""


def _isolation_prefix(hidden: Path, empty: Path) -> list[str]:
    """``unshare`` into a network namespace with only loopback and a mount namespace where ``hidden`` is an empty
    folder, when this machine allows it (root in a container usually does); [] otherwise (the guard still refuses
    the network and records every read under ``hidden``)."""
    if shutil.which("unshare") is None or shutil.which("ip") is None or shutil.which("mount") is None:
        return []
    script = 'ip link set lo up && mount --bind "$0" "$1" && shift && exec "$@"'
    prefix = ["unshare", "-n", "-m", "sh", "-c", script, str(empty), str(hidden)]
    probe = subprocess.run([*prefix, "ls", "-A", str(hidden)], capture_output=True, text=True)
    return prefix if probe.returncode == 0 and probe.stdout.strip() == "" else []


@pytest.mark.ray
@pytest.mark.timeout(600)
def test_demo_runs_offline_without_shared(tmp_path):
    """`mlray demo --small` in a fresh process with the network cut and ../shared hidden: it succeeds, reads
    nothing under ../shared, uses no network beyond Ray's own cloud probe, and writes the story and the page."""
    hidden = SHARED_DATA.parent.resolve()
    guard = tmp_path / "guard"
    guard.mkdir()
    (guard / "sitecustomize.py").write_text(textwrap.dedent(GUARD))
    log, empty, out = tmp_path / "guard.log", tmp_path / "empty", tmp_path / "demo"
    log.touch()
    empty.mkdir()
    env = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS", "MLRAY_SHARED_DATA")}
    env.update(PYTHONPATH=str(guard), MLRAY_GUARD_LOG=str(log), MLRAY_GUARD_HIDDEN=str(hidden),
               RAY_AUTH_MODE="disabled", RAY_USAGE_STATS_ENABLED="0")  # fmt: skip
    check = subprocess.run([sys.executable, "-c", f"import socket; open({str(hidden / 'x')!r}, 'a')"], env=env,
                           capture_output=True, text=True, cwd=tmp_path)  # fmt: skip
    assert "read " in log.read_text(), check.stderr  # the guard is active in child processes
    log.write_text("")
    command = [sys.executable, "-c", "import sys; from mlray.cli import main; sys.exit(main(sys.argv[1:]))",
               "demo", "--small", "--out", str(out), "--num-cpus", "2"]  # fmt: skip
    run = subprocess.run([*_isolation_prefix(hidden, empty), *command], env=env, capture_output=True, text=True,
                         cwd=tmp_path, timeout=560)  # fmt: skip
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    events = [line.split("\t")[0] for line in log.read_text().splitlines()]
    assert not [e for e in events if e.startswith("read ")]
    assert {e.split(" ", 1)[1] for e in events if not e.startswith("read ")} <= RAY_CLOUD_PROBE
    effect = read_story(out / "reports")
    assert _rows(effect, "a_standardized_to_b").at["all", "value"] == pytest.approx(0.6211063955884802, abs=1e-12)
    page = (out / "reports" / "dashboard.html").read_text()
    assert '<section id="story">' in page and '<section id="labels">' in page


def test_readme_quotes_the_story_as_printed(story):
    """The README's opening paragraph and its "Why" table carry the figures the demo prints, as printed."""
    _, _, effect = story
    readme = (REPO / "README.md").read_text()
    value, std = _rows(effect, "value_a"), _rows(effect, "a_standardized_to_b").loc["all"]
    comp, published = _rows(effect, "composition").loc["all"], _rows(effect, "published_gap_mean").loc["all"]
    opening = readme.split("## Why")[0]
    assert f"**{100 * value.at['all', 'value']:.1f} %** top-1" in opening
    assert f"**{100 * std['value']:.1f} %** [{100 * std['ci_low']:.1f}, {100 * std['ci_high']:.1f}]" in opening
    assert (
        f"a {100 * comp['value']:.1f}-point drop\n[{100 * comp['ci_low']:.1f}, {100 * comp['ci_high']:.1f}]" in opening
    )
    assert f"{100 * published['value']:.2f}-point mean" in opening and f"{published['n']:,} models" in opening
    why = readme.split("## Why")[1].split("\n## ")[0]
    groups = " / ".join(f"{100 * v:.1f}" for v in value.drop(index="all")["value"])
    assert f"ResNet-50 top-1 per group: {groups} %" in why
    for quantity in ("share_a", "share_b", "value_a", "a_standardized_to_b", "a_standardized_to_b_cut",
                     "composition", "published_gap_mean", "published_gap_median"):  # fmt: skip
        assert f"`{quantity}`" in why
