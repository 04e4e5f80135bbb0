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
