"""Connecting to Ray: the cluster a job runs in, or a local one started for this process.

``connect()`` joins the cluster named by ``address`` or ``RAY_ADDRESS`` (what ``ray job submit`` sets), else
starts a local Ray instance sized by ``num_cpus`` (default: all cores). It is a no-op when Ray is already
initialized (tests share one cluster per session). :func:`gather` gets the results of many tasks so that a failed
task is one line, never Ray's "Unhandled error" traceback for the refs nobody got.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from types import FrameType
from typing import Any

from .errors import MlrayError


def connect(address: str | None = None, num_cpus: int | None = None, object_store_memory: int | None = None) -> None:
    """Join the cluster at ``address`` / ``$RAY_ADDRESS``, else start a local Ray instance (no-op if joined).

    SIGTERM (``ray job stop``, a preempted node, ``kill``) is then an interrupt like Ctrl-C
    (:func:`interrupt_on_sigterm`: Ray's own handler would end the process without a word)."""
    import ray

    if ray.is_initialized():
        return
    address = address or os.environ.get("RAY_ADDRESS")
    kwargs: dict = {"logging_level": logging.WARNING, "log_to_driver": True}
    if address:
        ray.init(address=address, **kwargs)
    else:
        ray.init(num_cpus=num_cpus, object_store_memory=object_store_memory, include_dashboard=False, **kwargs)
    interrupt_on_sigterm()


def _sigterm(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def interrupt_on_sigterm() -> None:
    """Make SIGTERM raise :class:`KeyboardInterrupt` in the main thread, so a terminated command unwinds like an
    interrupted one (finished parts stay stored, one line says how to resume, exit status 130). A no-op outside
    the main thread."""
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _sigterm)


def unwrap(exc: BaseException) -> BaseException:
    """The user-input error behind a Ray task error (a plain :class:`MlrayError`), else ``exc`` itself."""
    cause = getattr(exc, "cause", None)
    if isinstance(cause, MlrayError):
        return MlrayError(*cause.args)
    return exc


def get(refs):
    """``ray.get`` that turns a user-input error raised inside a task back into a plain MlrayError."""
    import ray

    try:
        return ray.get(refs)
    except ray.exceptions.RayTaskError as exc:
        err = unwrap(exc)
        if err is exc:
            raise
        raise err from None


def gather(*groups: Sequence[Any], also: Sequence[Any] = ()) -> list[list[Any]]:
    """The values of every group of object refs, each group as a list, like ``ray.get`` on each.

    On the first failed task the tasks not finished yet are cancelled and every remaining ref, and every ref of
    ``also`` (intermediate results only passed to other tasks), is still fetched (its error swallowed), so Ray
    never prints an "Unhandled error" traceback for a ref nobody got; then the first error is raised (a
    user-input error raised in a task as a plain :class:`MlrayError`)."""
    import ray

    pending = [r for g in groups for r in g]
    error: BaseException | None = None
    while pending and error is None:
        ready, pending = ray.wait(pending, num_returns=1)
        try:
            ray.get(ready)
        except Exception as exc:
            error = exc
    if error is not None:
        for ref in pending:
            try:
                ray.cancel(ref)
            except Exception:
                pass
        for ref in [*pending, *also]:
            try:
                ray.get(ref)
            except Exception:
                pass
        err = unwrap(error)
        if err is error:
            raise error
        raise err from None
    return [list(ray.get(list(g))) for g in groups]


def describe() -> str:
    """One line naming the joined cluster: its address, CPUs, GPUs and nodes."""
    import ray

    res = ray.cluster_resources()
    return (
        f"ray cluster {ray.get_runtime_context().gcs_address}: {res.get('CPU', 0):g} CPUs, {res.get('GPU', 0):g} GPUs, "
        f"{len(ray.nodes())} nodes"
    )


@contextmanager
def gpus_requested(n: int, timeout: float, poll: float = 5.0) -> Iterator[None]:
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
