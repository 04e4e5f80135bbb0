"""Connecting to Ray: the cluster a job runs in, or a local one started for this process.

``connect()`` joins the cluster named by ``address`` or ``RAY_ADDRESS`` (what ``ray job submit`` sets), else
starts a local Ray instance sized by ``num_cpus`` (default: all cores). It is a no-op when Ray is already
initialized (tests share one cluster per session).
"""

from __future__ import annotations

import logging
import os


def connect(address: str | None = None, num_cpus: int | None = None, object_store_memory: int | None = None) -> None:
    import ray

    if ray.is_initialized():
        return
    address = address or os.environ.get("RAY_ADDRESS")
    kwargs: dict = {"logging_level": logging.WARNING, "log_to_driver": True}
    if address:
        ray.init(address=address, **kwargs)
        return
    ray.init(
        num_cpus=num_cpus,
        object_store_memory=object_store_memory,
        include_dashboard=False,
        **kwargs,
    )


def get(refs):
    """``ray.get`` that turns a user-input error raised inside a task back into a plain MlrayError."""
    import ray

    from .errors import MlrayError

    try:
        return ray.get(refs)
    except ray.exceptions.RayTaskError as exc:
        cause = getattr(exc, "cause", None)
        if isinstance(cause, MlrayError):
            raise MlrayError(*cause.args) from None
        raise
