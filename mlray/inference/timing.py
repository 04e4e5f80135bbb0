"""Steady-state throughput of each model: images/s after its first batch (start-up and model loading excluded).

Every model batch stamps its rows with the time the model finished it (``m<j>_t``, :class:`~mlray.inference.
pipeline.Predictor`); :class:`BatchMarks` tallies those stamps as the rows reach the driver and
:func:`steady_rate` turns them into the rate the run manifest records.
"""

from __future__ import annotations

import numpy as np


def steady_rate(marks: dict[float, int]) -> float | None:
    """Images/s after the first batch, from ``{finish time of a model batch: images in it}`` (start-up and model
    loading excluded); None with fewer than two batches."""
    if len(marks) < 2:
        return None
    times = sorted(marks)
    return sum(marks[t] for t in times[1:]) / (times[-1] - times[0]) if times[-1] > times[0] else None


class BatchMarks:
    """The finish times of one model's batches and the images in each, as its rows come back."""

    def __init__(self) -> None:
        self.marks: dict[float, int] = {}

    def add(self, stamps: np.ndarray) -> None:
        """Count the rows of a batch by their stamp (NaN = the model skipped the row)."""
        for value, count in zip(*np.unique(stamps[~np.isnan(stamps)], return_counts=True)):
            self.marks[float(value)] = self.marks.get(float(value), 0) + int(count)

    def rate(self) -> float | None:
        """The model's steady images/s (:func:`steady_rate`)."""
        return steady_rate(self.marks)
