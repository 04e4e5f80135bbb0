"""Rows back from the pipeline -> whole shards: a shard is stored only once every one of its rows is back.

Rows of a shard arrive in batches, interleaved with other shards' rows. :class:`ShardCollector` keeps them until
the shard is complete and then hands it over in one piece, so the store gets a shard whole or not at all, and
refuses a shard that would come back with a row twice (never a duplicate row in the store).
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from ..errors import MlrayError

Rows = dict[str, np.ndarray]
"""Columns of equal length (one row per image), as Ray Data's numpy batches."""


class ShardCollector:
    """Collects the rows of shards (``sizes``: shard key -> images it has) from batches that carry a
    ``shard_key`` and an ``image_id`` column."""

    def __init__(self, sizes: Mapping[str, int]) -> None:
        self._sizes = dict(sizes)
        self._pending: dict[str, list[Rows]] = {}
        self._counts: dict[str, int] = {}

    def add(self, batch: Mapping[str, np.ndarray]) -> list[tuple[str, Rows]]:
        """Take one batch; return the shards it completes as ``(key, rows)``, rows in arrival order."""
        done = []
        keys = np.asarray(batch["shard_key"])
        for key in (str(k) for k in np.unique(keys)):
            if key not in self._sizes:
                raise MlrayError(f"pipeline: rows of shard {key!r}, which this pass does not read")
            sel = keys == key
            self._pending.setdefault(key, []).append({name: np.asarray(col)[sel] for name, col in batch.items()})
            self._counts[key] = self._counts.get(key, 0) + int(sel.sum())
            if self._counts[key] > self._sizes[key]:
                raise MlrayError(
                    f"pipeline: shard {key} came back with {self._counts[key]} rows for {self._sizes[key]} images"
                )
            if self._counts[key] == self._sizes[key]:
                done.append((key, self._complete(key)))
        return done

    def _complete(self, key: str) -> Rows:
        """The rows of a complete shard, joined; an image id twice is an error."""
        parts = self._pending.pop(key)
        del self._counts[key]
        rows = {name: np.concatenate([p[name] for p in parts]) for name in parts[0]}
        ids, counts = np.unique(rows["image_id"].astype(str), return_counts=True)
        if (counts > 1).any():
            raise MlrayError(f"pipeline: shard {key} came back with image id {str(ids[counts > 1][0])!r} twice")
        return rows

    @property
    def pending(self) -> list[str]:
        """Keys of the shards with some rows back but not all, sorted."""
        return sorted(self._pending)
