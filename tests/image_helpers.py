"""Helpers shared by the tests of mlray.images: tiny generated images, files and tars, and reading plans back."""

from __future__ import annotations

import io
import tarfile
from pathlib import Path

import numpy as np
from PIL import Image

from mlray.images import ImageError, ImagePlan, read_shard

TENCH, GOLDFISH, TOILET_TISSUE = "n01440764", "n01443537", "n15075141"  # classes 0, 1, 999


def encode(img: Image.Image, fmt: str = "PNG", **kw) -> bytes:
    buf = io.BytesIO()
    img.save(buf, fmt, **kw)
    return buf.getvalue()


def tiny(seed: int = 0, fmt: str = "PNG") -> bytes:
    """A distinct 1x1 image per seed."""
    return encode(Image.new("RGB", (1, 1), (seed % 256, (seed // 256) % 256, 7)), fmt)


def photo_jpeg(size=(64, 48), seed=0) -> bytes:
    rng = np.random.default_rng(seed)
    return encode(Image.fromarray((rng.random((size[1], size[0], 3)) * 255).astype("uint8")), "JPEG", quality=90)


def put(path: Path, data: bytes | str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(data, str):
        path.write_text(data)
    else:
        path.write_bytes(data)
    return path


def read_all(plan: ImagePlan) -> dict[str, tuple[bytes | None, ImageError | None]]:
    out = {}
    for shard in plan.shards:
        for image_id, data, err in read_shard(shard):
            assert image_id not in out, f"{image_id} read twice"
            out[image_id] = (data, err)
    return out


def labels_by_id(plan: ImagePlan, column: str = "original") -> dict:
    assert plan.labels is not None
    return dict(zip(plan.labels.image_ids, getattr(plan.labels, column)))


def add_member(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    tar.addfile(info, io.BytesIO(data))


def make_tar(path: Path, members: list[tuple[str, bytes]], mode: str = "w") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(path, mode) as tar:
        for name, data in members:
            add_member(tar, name, data)
    return path
