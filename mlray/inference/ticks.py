"""An iterator that also wakes its consumer when nothing arrives: the driver polls progress while it waits."""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterable, Iterator
from typing import Generic, TypeVar

T = TypeVar("T")

_DONE = object()


class _Failure:
    """An exception raised by the source iterator, carried to the consumer."""

    def __init__(self, exc: BaseException) -> None:
        self.exc = exc


class Ticking(Generic[T]):
    """Iterate ``items`` (drawn in a helper thread), yielding each item as it comes and ``None`` whenever
    ``interval`` seconds pass without one. An exception of ``items`` is raised in the consumer; closing this
    iterator (or leaving a ``for`` loop over it early) stops the helper after its current item. At most
    ``buffer`` items wait in between, so a slow consumer holds the source back."""

    def __init__(self, items: Iterable[T], interval: float, buffer: int = 2) -> None:
        self._queue: queue.Queue[object] = queue.Queue(maxsize=max(1, buffer))
        self._stop = threading.Event()
        self._interval = interval
        self._thread = threading.Thread(target=self._draw, args=(items,), name="mlray-batches", daemon=True)
        self._thread.start()
        self._finished = False

    def _put(self, item: object) -> bool:
        """Hand ``item`` to the consumer unless stopped first; whether it was handed over."""
        while not self._stop.is_set():
            try:
                self._queue.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def _draw(self, items: Iterable[T]) -> None:
        """The helper thread: every item (then the end, or the error) into the queue; the source closed at the end."""
        source = iter(items)
        try:
            for item in source:
                if not self._put(item):
                    break
            else:
                self._put(_DONE)
        except BaseException as exc:  # handed to the consumer, raised there
            self._put(_Failure(exc))
        finally:
            close = getattr(source, "close", None)
            if close is not None:
                close()

    def __iter__(self) -> Iterator[T | None]:
        return self

    def __next__(self) -> T | None:
        if self._finished:
            raise StopIteration
        try:
            item = self._queue.get(timeout=self._interval)
        except queue.Empty:
            return None
        if item is _DONE:
            self._finished = True
            raise StopIteration
        if isinstance(item, _Failure):
            self.close()
            raise item.exc
        return item  # type: ignore[return-value]

    def close(self) -> None:
        """Stop drawing items (the helper thread ends after its current item)."""
        self._finished = True
        self._stop.set()

    def __del__(self) -> None:
        self._stop.set()
