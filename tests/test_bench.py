"""The bench scripts run as README documents them: `.venv/bin/python bench/<script>.py` from the repository root."""

from __future__ import annotations

import subprocess
import sys

import pytest
from conftest import REPO

SCRIPTS = sorted(p.name for p in (REPO / "bench").glob("bench_*.py"))


def test_there_are_bench_scripts():
    assert {"bench_inference.py", "bench_score.py"} <= set(SCRIPTS)


@pytest.mark.parametrize("script", SCRIPTS)
def test_bench_script_runs_from_the_repository_root(script):
    proc = subprocess.run(
        [sys.executable, f"bench/{script}", "--help"], cwd=REPO, capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.startswith("usage: ") and f"bench_{script[6:]}" in proc.stdout.splitlines()[0]


def test_the_device_kit_slims_rays_wheel_and_keeps_file_modes(tmp_path):
    # bench/device_kit.py rewrites Ray's wheel without what a local ray.init never imports, so it travels to the
    # device machine (64 MiB a call); the raylet and GCS binaries must stay executable after pip installs it
    import zipfile

    sys.path.insert(0, str(REPO / "bench"))
    try:
        from device_kit import slim_wheel
    finally:
        sys.path.remove(str(REPO / "bench"))
    src, dst = tmp_path / "ray-1.0-py3-none-any.whl", tmp_path / "out" / "ray-1.0-py3-none-any.whl"
    dst.parent.mkdir()
    members = {"ray/core/src/ray/raylet/raylet": 0o755, "ray/__init__.py": 0o644, "ray/jars/ray_dist.jar": 0o644,
               "ray/rllib/algo.py": 0o644, "ray/dashboard/client/build/index.html": 0o644,
               "ray/dashboard/modules/job.py": 0o644, "ray/x/main.js.map": 0o644,
               "ray-1.0.dist-info/RECORD": 0o644}  # fmt: skip
    with zipfile.ZipFile(src, "w") as z:
        for name, mode in members.items():
            info = zipfile.ZipInfo(name)
            info.external_attr = (0o100000 | mode) << 16
            z.writestr(info, f"contents of {name}")
    assert slim_wheel(src, dst) == 4
    with zipfile.ZipFile(dst) as z:
        kept = {i.filename: (i.external_attr >> 16) & 0o777 for i in z.infolist()}
        assert kept == {"ray/core/src/ray/raylet/raylet": 0o755, "ray/__init__.py": 0o644,
                        "ray/dashboard/modules/job.py": 0o644, "ray-1.0.dist-info/RECORD": 0o644}  # fmt: skip
        assert z.read("ray/__init__.py") == b"contents of ray/__init__.py"
