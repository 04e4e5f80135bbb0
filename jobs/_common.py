"""Shared plumbing of the ``ray job submit`` entrypoints (``jobs/evaluate.py``, ``jobs/stats.py``, ``jobs/score.py``).

Each entrypoint parses its arguments, joins the cluster it runs in (:func:`mlray.cluster.connect` honours
``RAY_ADDRESS``, which ``ray job submit`` sets for the job's driver), calls the library, writes the reports to
``--out`` and prints a short summary. The entrypoints own no logic of their own.

Output (``--out``)
==================

``--out`` is a local folder or a URI that ``pyarrow.fs.FileSystem.from_uri`` understands (``s3://bucket/prefix``,
``gs://...``, ``file:///...``). For a URI the job works in a local scratch folder on the driver's node
(``--scratch``, default ``$MLRAY_SCRATCH`` or the system temp folder) and copies the tree up at the end with
``pyarrow.fs.copy_files``. Before ``jobs/evaluate.py`` runs, an existing remote prediction store
(``OUT/predictions`` and ``OUT/errors``) is copied down, so a resubmitted job redoes only the shards it lacks; the
files it copied down are not uploaded again (prediction parts are immutable once written). When a job fails, the
complete prediction and error parts it wrote are still uploaded, so resubmitting resumes from there.

Exit status: 0 on success; 2 for a user-input error (:class:`mlray.errors.MlrayError`, printed as one line
``mlray: error: ...`` without a traceback, like the ``mlray`` command); 1 for anything else (with the traceback).
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
import traceback
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from mlray.errors import MlrayError
from mlray.io import scheme_of


def base_parser(description: str) -> argparse.ArgumentParser:
    """An argument parser with the options every job has: ``--out``, ``--address``, ``--scratch``."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument(
        "--out", "-o", required=True, help="Output folder: a local path or a URI (s3://, gs://, file://)."
    )
    parser.add_argument(
        "--address",
        default=None,
        help="Ray cluster to join (default: $RAY_ADDRESS, which `ray job submit` sets; else a local instance).",
    )
    parser.add_argument(
        "--scratch",
        default=os.environ.get("MLRAY_SCRATCH"),
        help="Local scratch folder for a URI --out (default: $MLRAY_SCRATCH, else the system temp folder).",
    )
    return parser


def connect(address: str | None, log=None) -> None:
    """Join the cluster (``--address``, else ``$RAY_ADDRESS``, else a local instance) and say which one on ``log``
    (default stdout)."""
    import ray

    from mlray import cluster

    cluster.connect(address)
    res = ray.cluster_resources()
    print(f"ray cluster {ray.get_runtime_context().gcs_address}: {res.get('CPU', 0):g} CPUs, {res.get('GPU', 0):g} GPUs, "
          f"{len(ray.nodes())} nodes", file=log or sys.stdout, flush=True)  # fmt: skip


class Destination:
    """Where a job writes: ``local`` is always a local folder; for a URI it is a scratch copy of the remote tree.

    :meth:`pull` copies remote sub-trees down (to resume), :meth:`push` copies new or changed files up.
    """

    def __init__(self, out: str, scratch: str | None = None) -> None:
        self.out = str(out)
        self.remote = scheme_of(self.out) is not None
        self._scratch: Path | None = None
        self._pulled: dict[str, tuple[int, int]] = {}  # relative path -> (size, mtime_ns) right after the pull
        if scratch:
            Path(scratch).mkdir(parents=True, exist_ok=True)
        if self.remote:
            import pyarrow.fs as pafs

            try:
                self.fs, self.root = pafs.FileSystem.from_uri(self.out)
            except Exception as exc:  # unknown scheme, bad bucket name, missing credentials provider ...
                raise MlrayError(f"{self.out}: not a usable output URI ({_first_line(exc)})") from None
            self.root = self.root.rstrip("/")
            self._scratch = Path(tempfile.mkdtemp(prefix="mlray-job-", dir=scratch))
            self.local = self._scratch / "out"
            self.local.mkdir()
        else:
            self.local = Path(self.out)

    def _remote_path(self, rel: str) -> str:
        return f"{self.root}/{rel}" if rel else self.root

    def pull(self, *subtrees: str) -> int:
        """Copy the remote ``subtrees`` (folders under ``--out``) that exist down into :attr:`local`.

        Returns the number of files copied. A no-op for a local ``--out``.
        """
        if not self.remote:
            return 0
        import pyarrow.fs as pafs

        n = 0
        for sub in subtrees:
            info = self._info(self._remote_path(sub))
            if info.type != pafs.FileType.Directory:
                continue
            target = self.local / sub
            try:
                pafs.copy_files(self._remote_path(sub), str(target), source_filesystem=self.fs,
                                destination_filesystem=pafs.LocalFileSystem())  # fmt: skip
            except Exception as exc:
                raise MlrayError(f"{self.out}/{sub}: cannot copy down ({_first_line(exc)})") from None
            for path in _files(target):
                st = path.stat()
                self._pulled[path.relative_to(self.local).as_posix()] = (st.st_size, st.st_mtime_ns)
                n += 1
        return n

    def _info(self, path: str):
        try:
            return self.fs.get_file_info(path)
        except Exception as exc:
            raise MlrayError(f"{self.out}: cannot list ({_first_line(exc)})") from None

    def push(self, subtrees: tuple[str, ...] | None = None) -> int:
        """Copy files of :attr:`local` that are new or changed since :meth:`pull` up to ``--out``.

        ``subtrees`` limits the upload to those folders (None = everything). Hidden files (temporary names of
        atomic writes) are never uploaded. Returns the number of files uploaded; a no-op for a local ``--out``.
        """
        if not self.remote:
            return 0
        import pyarrow.fs as pafs

        assert self._scratch is not None
        staging = self._scratch / "upload"
        shutil.rmtree(staging, ignore_errors=True)
        n = 0
        roots = [self.local / s for s in subtrees] if subtrees is not None else [self.local]
        for root in roots:
            for path in _files(root):
                rel = path.relative_to(self.local).as_posix()
                st = path.stat()
                if self._pulled.get(rel) == (st.st_size, st.st_mtime_ns):
                    continue  # copied down and untouched: already there
                dest = staging / rel
                dest.parent.mkdir(parents=True, exist_ok=True)
                try:
                    os.link(path, dest)
                except OSError:
                    shutil.copy2(path, dest)
                n += 1
        if n:
            try:
                if self.fs.type_name not in ("s3", "gcs"):  # filesystems with real folders need the root to exist
                    self.fs.create_dir(self.root, recursive=True)
                pafs.copy_files(str(staging), self.root, source_filesystem=pafs.LocalFileSystem(),
                                destination_filesystem=self.fs)  # fmt: skip
            except Exception as exc:
                raise MlrayError(
                    f"{self.out}: cannot upload ({_first_line(exc)}); the local copy is in {self.local}"
                ) from None
        shutil.rmtree(staging, ignore_errors=True)
        return n

    def cleanup(self) -> None:
        """Remove the scratch folder (URI outputs only)."""
        if self._scratch is not None:
            shutil.rmtree(self._scratch, ignore_errors=True)

    def show(self, rel: str = "") -> str:
        """How to name ``--out``/``rel`` to the user (the URI for a remote output)."""
        if self.remote:
            return f"{self.out.rstrip('/')}/{rel}" if rel else self.out
        return str(self.local / rel) if rel else str(self.local)


def _files(root: Path) -> Iterator[Path]:
    """Regular files under ``root`` (none if it is missing), skipping hidden names, in sorted order."""
    if not root.exists():
        return iter(())
    return (
        p
        for p in sorted(root.rglob("*"))
        if p.is_file() and not any(part.startswith(".") for part in p.relative_to(root).parts)
    )


@contextmanager
def destination(
    out: str, scratch: str | None = None, pull: tuple[str, ...] = (), keep_on_failure: tuple[str, ...] = (), log=None
):
    """A :class:`Destination` whose remote copy is brought up to date however the job ends (messages on ``log``,
    default stdout).

    On success everything new is uploaded; on failure only ``keep_on_failure`` (complete, atomically written
    parts that a resubmitted job reuses) is uploaded, and the original error is re-raised. The scratch folder is
    removed unless the upload itself failed (then the error names the local copy).
    """
    log = log or sys.stdout
    dest = Destination(out, scratch)
    keep_scratch = False  # set when an upload fails: the local copy is then the only one
    try:
        if pull:
            n = dest.pull(*pull)
            if n:
                print(f"resuming: copied {n:,} stored files down from {dest.show()}", file=log, flush=True)
        yield dest
        try:
            n = dest.push()
        except MlrayError:
            keep_scratch = True
            raise
        if dest.remote:
            print(f"uploaded {n:,} files to {dest.show()}", file=log, flush=True)
    except BaseException:
        if dest.remote and keep_on_failure and not keep_scratch:
            try:
                n = dest.push(keep_on_failure)
                if n:
                    print(
                        f"uploaded {n:,} finished files to {dest.show()} before failing (a resubmitted job resumes)",
                        file=log,
                        flush=True,
                    )
            except MlrayError as exc:
                keep_scratch = True
                print(f"mlray: warning: {exc}", file=sys.stderr, flush=True)
        raise
    finally:
        if not keep_scratch:
            dest.cleanup()


@contextmanager
def gpus_requested(n: int, timeout: float, poll: float = 5.0):
    """Ask the autoscaler for ``n`` GPUs and wait until the cluster has them; withdraw the request on exit.

    On an autoscaling cluster whose GPU workers start at zero, the inference would otherwise plan for the
    hardware present when it starts (no GPU: CPU actors). The request is withdrawn afterwards (``bundles=[]``) so
    idle GPU nodes can be terminated. ``n <= 0``: nothing is requested.
    """
    if n <= 0:
        yield
        return
    import ray
    from ray.autoscaler.sdk import request_resources

    request_resources(bundles=[{"GPU": 1}] * n)
    try:
        start = time.monotonic()
        last: float | None = None
        while True:
            have = ray.cluster_resources().get("GPU", 0)
            if have >= n:
                print(f"{have:g} GPUs in the cluster (asked for {n})", flush=True)
                break
            now = time.monotonic()
            if now - start >= timeout:
                raise MlrayError(
                    f"the cluster has {have:g} of the {n} GPUs asked for (--gpus) after {timeout:g} s; check the GPU "
                    "worker types' max_workers, the cloud's GPU quota, or lower --gpus"
                )
            if last is None or now - last >= 60:
                print(f"waiting for GPUs: {have:g} of {n} after {now - start:.0f} s", flush=True)
                last = now
            time.sleep(min(poll, max(0.0, timeout - (now - start))))
        yield
    finally:
        request_resources(bundles=[])


def fetch_inputs(paths: list[str], scratch_dir: Path) -> list[Path]:
    """Local copies of input paths: local paths stay as they are, URIs (files or folders) are copied down."""
    import pyarrow.fs as pafs

    local: list[Path] = []
    for i, raw in enumerate(paths):
        if scheme_of(raw) is None:
            local.append(Path(raw))
            continue
        try:
            fs, inner = pafs.FileSystem.from_uri(raw)
            info = fs.get_file_info(inner.rstrip("/"))
        except Exception as exc:
            raise MlrayError(f"{raw}: cannot read ({_first_line(exc)})") from None
        if info.type == pafs.FileType.NotFound:
            raise MlrayError(f"{raw}: no such predictions file or folder")
        target = scratch_dir / f"input-{i}" / (Path(inner.rstrip("/")).name or "predictions")
        target.parent.mkdir(parents=True, exist_ok=True)
        try:
            pafs.copy_files(
                inner.rstrip("/"), str(target), source_filesystem=fs, destination_filesystem=pafs.LocalFileSystem()
            )
        except Exception as exc:
            raise MlrayError(f"{raw}: cannot copy down ({_first_line(exc)})") from None
        local.append(target)
    return local


class LogProgress:
    """The ``progress`` protocol of :func:`mlray.evaluate.evaluate` (rich's ``add_task`` / ``advance`` /
    ``update``) as plain log lines, which read well in ``ray job logs``: a task's line is printed when it finishes
    and at most every ``interval`` seconds before that (a paper-scale run has one task per dataset x model)."""

    def __init__(self, out=None, interval: float = 30.0) -> None:
        self.out = out or sys.stdout
        self.interval = interval
        self.tasks: dict[int, dict] = {}

    def add_task(self, description: str, total: float | None = None, **_) -> int:
        task_id = len(self.tasks)
        now = time.perf_counter()
        self.tasks[task_id] = {
            "name": description,
            "total": total or 0,
            "done": 0,
            "start": now,
            "printed": now,
            "finished": False,
        }
        return task_id

    def advance(self, task_id: int, advance: float = 1) -> None:
        self.update(task_id, advance=advance)

    def update(
        self,
        task_id: int,
        completed: float | None = None,
        advance: float | None = None,
        total: float | None = None,
        **_,
    ) -> None:
        t = self.tasks[task_id]
        if total is not None:
            t["total"] = total
        if completed is not None:
            t["done"] = completed
        if advance:
            t["done"] += advance
        now = time.perf_counter()
        finished = bool(t["total"]) and t["done"] >= t["total"]
        if (finished and not t["finished"]) or (not finished and now - t["printed"] >= self.interval):
            t["printed"], t["finished"] = now, finished
            seconds = now - t["start"]
            rate = f", {t['done'] / seconds:.1f} img/s" if seconds > 0 and t["done"] else ""
            share = f" ({100 * t['done'] / t['total']:.0f} %{rate})" if t["total"] else ""
            print(f"{t['name']}: {int(t['done']):,}/{int(t['total']):,} images{share}", file=self.out, flush=True)


def headline_table(
    model_metrics, metrics=("top1", "real_top1", "vtopk_all", "asma_vtopk_all"), limit: int = 20
) -> list[str]:
    """Headline metrics (%) per (model, dataset) as aligned text lines, at most ``limit`` rows (then a count)."""
    if model_metrics is None or not len(model_metrics):
        return ["(no model metrics)"]
    lines = ["headline metrics (%; CIs in model_metrics.parquet):"]
    rows = list(model_metrics.groupby(["model", "dataset"], sort=False))
    width_m = max(5, *(len(m) for (m, _), _ in rows[:limit]))
    width_d = max(7, *(len(d) for (_, d), _ in rows[:limit]))
    lines.append(f"{'model':<{width_m}}  {'dataset':<{width_d}}  " + "  ".join(f"{m:>14}" for m in metrics))
    for (model, dataset), frame in rows[:limit]:
        m = frame.set_index("metric")
        cells = []
        for metric in metrics:
            if metric not in m.index or ("available" in m.columns and not bool(m.loc[metric, "available"])):
                cells.append(f"{'n/a':>14}")
            else:
                cells.append(f"{100 * float(m.loc[metric, 'value']):>14.2f}")
        lines.append(f"{model:<{width_m}}  {dataset:<{width_d}}  " + "  ".join(cells))
    if len(rows) > limit:
        lines.append(f"... and {len(rows) - limit:,} more (model, dataset) pairs in model_metrics.parquet")
    return lines


def stats_lines(stats_result) -> list[str]:
    """One line per dataset: images, labelled, multi-label share, mean valid labels."""
    out = []
    for s in stats_result.summaries:
        st = s.stats
        share, mean = st["multi_fraction"], st["mean_labels"]
        out.append(
            f"{s.name}: {st['n_images']:,} images, {st['n_labelled']:,} labelled, "
            f"{st['n_multi']:,} multi-label ({'-' if share != share else f'{100 * share:.2f} %'} of labelled), "
            f"mean {'-' if mean != mean else f'{mean:.3f}'} valid labels"
        )
    return out


def run_main(main: Callable[[list[str] | None], None], argv: list[str] | None = None) -> int:
    """Run a job's ``main`` and turn its outcome into the exit status (0 / 2 one-line MlrayError / 1 traceback)."""
    try:
        main(argv)
    except MlrayError as exc:
        print(f"mlray: error: {exc}", file=sys.stderr, flush=True)
        return 2
    except SystemExit as exc:  # argparse: --help (0) and usage errors (2)
        return exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    except Exception:
        traceback.print_exc()
        return 1
    return 0


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text.splitlines()[0]}" if text else type(exc).__name__
