"""Shared fixtures: the real data in ../shared/data (skipped with a reason when absent) and one local Ray
cluster per test session (token auth off, a scratch temp dir)."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import pytest

os.environ.setdefault("RAY_AUTH_MODE", "disabled")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("MLRAY_SHARED_DATA", REPO.parent / "shared" / "data"))


def shared(*parts: str) -> Path:
    """A path under ../shared/data; the test is skipped (with the reason) when it is absent."""
    path = SHARED_DATA.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"real data not available: {path} (the ../shared/data folder beside the checkout)")
    return path


def error_of(fn, *args, **kwargs) -> str:
    """The message of the MlrayError ``fn(*args, **kwargs)`` raises, checked to be one line."""
    from mlray.errors import MlrayError

    with pytest.raises(MlrayError) as info:
        fn(*args, **kwargs)
    message = str(info.value)
    assert "\n" not in message
    return message


@pytest.fixture(scope="session")
def ray_cluster():
    """One local Ray instance for the whole session (2 CPUs, small object store, scratch temp dir)."""
    import ray

    temp = tempfile.mkdtemp(prefix="mlray-ray-", dir="/tmp")
    ray.init(
        num_cpus=2,
        object_store_memory=300 * 1024 * 1024,
        include_dashboard=False,
        _temp_dir=temp,
        log_to_driver=False,
    )
    yield ray
    ray.shutdown()
    shutil.rmtree(temp, ignore_errors=True)


@pytest.fixture(autouse=True)
def _scratch_cache(tmp_path_factory, monkeypatch):
    """Remote downloads go to a per-session scratch cache, never the user's."""
    monkeypatch.setenv("MLRAY_CACHE", str(tmp_path_factory.getbasetemp() / "mlray-cache"))
