"""Steady-state throughput of each model: images/s after its first batch on a slot (start-up and model loading
excluded), as the run manifest records it and later runs schedule by (:mod:`mlray.inference.costs`).

Every model batch is stamped with the time the slot finished it (:class:`~mlray.inference.worker.SlotWorker`).
A *run* is a stretch of consecutive chunks of one model on one slot; a model may have several runs (on several
slots, or when a slot came back to it). Its steady rate is the images after the first batch of each run over the
time from that first batch to the run's last batch, summed over its runs.
"""

from __future__ import annotations

from collections.abc import Sequence


class SteadyRates:
    """The batch marks of every model's runs, as chunk results come back (in order per slot)."""

    def __init__(self) -> None:
        self._runs: dict[str, list[list[tuple[float, int]]]] = {}
        self._open: dict[str, tuple[str, list[tuple[float, int]]]] = {}  # slot -> (model, its current run)

    def add(self, slot: str, model: str, marks: Sequence[tuple[float, int]]) -> None:
        """The ``(finish time, images)`` of the batches of one chunk of ``model`` that ran on ``slot``."""
        current = self._open.get(slot)
        if current is None or current[0] != model:
            current = (model, [])
            self._open[slot] = current
            self._runs.setdefault(model, []).append(current[1])
        current[1].extend(marks)

    def rate(self, model: str) -> float | None:
        """``model``'s steady images/s (None without two batches in one run)."""
        images, seconds = 0, 0.0
        for run in self._runs.get(model, []):
            if len(run) >= 2 and run[-1][0] > run[0][0]:
                images += sum(n for _, n in run[1:])
                seconds += run[-1][0] - run[0][0]
        return images / seconds if seconds > 0 else None
