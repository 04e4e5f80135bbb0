"""Pack what bench/bench_gpu.py needs on a GPU machine that lacks it, into ``.device/`` (git-ignored).

For an offline CUDA machine whose Python 3.12 has torch, torchvision, timm, numpy, pandas, pyarrow, pillow, pyyaml,
rich and typer but no Ray, pydantic or jsonschema, and which takes at most 64 MiB of files (the GPU machine lent to
development sessions: the working tree plus the paths a call carries), while Ray's wheel alone is 79 MB. So this
script downloads, here, the x86-64 CPython 3.12 wheels of the versions installed here, rewrites Ray's without what
a local ``ray.init`` with Ray Data never imports (:data:`DROP`: the Java jar alone is 34 MB; about 40 MiB are left;
file modes kept, so the raylet and GCS binaries stay executable), and copies the photos. It fails, before anything
travels, when the kit and the other files that travel would pass 60 MiB, and it replaces only a folder that holds
nothing but a kit.

    python bench/device_kit.py            # then, on the GPU machine, with .device/ carried there:

    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site .device/wheels/*.whl
    && PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1 python3 bench/bench_gpu.py --photos .device/photos
       --json $OUT/gpu.json 2>&1 | tee $OUT/gpu.log
"""

from __future__ import annotations

import argparse
import importlib.metadata
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PACKAGES = ("ray", "pydantic", "pydantic-core", "annotated-types", "typing-inspection", "jsonschema",
            "jsonschema-specifications", "referencing", "rpds-py")  # fmt: skip
"""What mlray's inference path (and Ray's import) needs that the device image lacks, at the versions here."""
PLATFORMS = ("manylinux_2_28_x86_64", "manylinux_2_27_x86_64", "manylinux_2_17_x86_64", "manylinux2014_x86_64",
             "manylinux1_x86_64")  # fmt: skip
LIMIT_MIB = 60
"""The kit and the other files that travel stay under this (the device tool carries 64 MiB a call)."""


DROP = ("ray/jars/", "ray/rllib/", "ray/serve/", "ray/llm/", "ray/dashboard/client/")
"""Parts of Ray's wheel a local ``ray.init`` with Ray Data never imports: the Java workers' jar (34 MB), RLlib,
Serve, Ray's LLM library and the dashboard's web client (mlray starts Ray without the dashboard)."""


def slim_wheel(src: Path, dst: Path, drop: tuple[str, ...] = DROP, drop_suffix: str = ".js.map") -> int:
    """Copy wheel ``src`` to ``dst`` without the members under ``drop`` or ending in ``drop_suffix``, each kept
    member's entry (file mode included) as it was; returns the members dropped. pip installs the members the archive
    holds and writes its own RECORD."""
    dropped = 0
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dst, "w", zipfile.ZIP_DEFLATED, compresslevel=9) as zout:
        for info in zin.infolist():
            if info.filename.startswith(drop) or info.filename.endswith(drop_suffix):
                dropped += 1
                continue
            zout.writestr(info, zin.read(info), compress_type=zipfile.ZIP_DEFLATED, compresslevel=9)
    return dropped


def tracked_bytes() -> int:
    """Bytes of the files that travel besides the kit: those git tracks and the untracked ones it does not ignore."""
    cmd = ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"]
    names = subprocess.run(cmd, cwd=REPO, capture_output=True, check=True).stdout.split(b"\0")
    return sum((REPO / n.decode()).stat().st_size for n in names if n and (REPO / n.decode()).is_file())


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, default=REPO / ".device", help="the kit's folder (default: %(default)s)")
    photos = REPO.parent / "shared" / "data" / "images-ilsvrc2012-val-original"
    ap.add_argument("--photos", type=Path, default=photos, help="JPEG photos to carry (default: %(default)s)")
    args = ap.parse_args()

    if not args.photos.is_dir():
        print(f"device_kit: no photo folder {args.photos}", file=sys.stderr)
        return 2
    wheels = args.out / "wheels"
    if args.out.exists():
        others = sorted(p.name for p in args.out.iterdir() if p.name not in ("wheels", "photos"))
        if others:
            print(f"device_kit: {args.out} holds more than a kit ({', '.join(others[:3])}): not replacing it",
                  file=sys.stderr)  # fmt: skip
            return 2
        shutil.rmtree(args.out)
    wheels.mkdir(parents=True)
    pins = [f"{p}=={importlib.metadata.version(p)}" for p in PACKAGES]
    with tempfile.TemporaryDirectory() as tmp:
        platforms = [a for p in PLATFORMS for a in ("--platform", p)]
        cmd = [sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--only-binary=:all:", "--python-version",
               "3.12", "--implementation", "cp", *platforms, "-d", tmp, *pins]  # fmt: skip
        got = subprocess.run(cmd, capture_output=True, text=True)
        if got.returncode:
            print(f"device_kit: pip download failed: {got.stderr.strip().splitlines()[-1:]}", file=sys.stderr)
            return 1
        for whl in sorted(Path(tmp).glob("*.whl")):
            if whl.name.startswith("ray-"):
                dropped = slim_wheel(whl, wheels / whl.name)
                before, after = whl.stat().st_size / 2**20, (wheels / whl.name).stat().st_size / 2**20
                print(f"{whl.name}: {before:.1f} MiB -> {after:.1f} MiB ({dropped} members dropped)")
            else:
                shutil.copy2(whl, wheels / whl.name)
    shutil.copytree(args.photos, args.out / "photos", ignore=shutil.ignore_patterns("*.md", "*.csv"))
    kit = sum(p.stat().st_size for p in args.out.rglob("*") if p.is_file())
    tree = tracked_bytes()
    n_photos = len(list((args.out / "photos").iterdir()))
    print(f"{args.out}: {kit / 2**20:.1f} MiB ({len(list(wheels.iterdir()))} wheels, {n_photos} photos); other files "
          f"that travel {tree / 2**20:.1f} MiB")  # fmt: skip
    if kit + tree > LIMIT_MIB * 2**20:
        print(f"device_kit: {(kit + tree) / 2**20:.1f} MiB would travel, over {LIMIT_MIB} MiB", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
