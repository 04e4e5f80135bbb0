"""The progress interface of an inference run: what :func:`mlray.inference.run_inference` tells its caller.

The driver calls, in its own thread: :meth:`ProgressSink.note` for lines about the whole run (what a resumed run
reused), then per pass of models :meth:`~ProgressSink.begin`, :meth:`~ProgressSink.update` about twice a second
while the pass runs (and once more with the final counts when it has drained), and :meth:`~ProgressSink.end`
(also when the pass fails). :class:`mlray.console.InferenceProgress` is the rich implementation.
"""

from __future__ import annotations

from typing import Protocol


class ProgressSink(Protocol):
    """Receives the live progress of an inference run (see the module docstring for the order of calls)."""

    def begin(self, label: str, stored_totals: dict[str, int], model_totals: dict[str, int]) -> None:
        """A pass starts. ``label`` names it in a run of several passes (``" (pass 1/2)"``, else ``""``);
        ``stored_totals``: dataset -> images the pass writes to the store; ``model_totals``: model name -> images
        the model infers in this pass."""
        ...

    def update(self, stored: dict[str, int], inferred: dict[str, int], now: float) -> None:
        """Cumulative counts of the pass so far: ``stored``: dataset -> images of finished shards written to the
        store; ``inferred``: model name -> images its actors have run (counted per model batch); ``now``:
        ``time.monotonic()`` of the reading."""
        ...

    def end(self) -> None:
        """The pass has drained (or failed)."""
        ...

    def note(self, text: str) -> None:
        """One line for the user, e.g. ``"photos: reused 3 of 10 shards from the store"``."""
        ...
