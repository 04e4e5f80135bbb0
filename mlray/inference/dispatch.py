"""The dispatch loop: starts the model slots, decodes each group's shards into the cache as the schedule opens the
group, hands every free slot its next chunk, and gives each chunk's results to the caller as they come back.

Decoding is Ray Data: each wave of groups the schedule opens is one Dataset, ``from_items`` (one row per shard,
plan order) ``.map_batches(decoder, batch_size=1)`` (CPU tasks, one block per shard), streamed by a feeder thread
with ``iter_internal_ref_bundles()``: the blocks stay in Ray's object store (which spills to disk) and only their
ObjectRefs reach the driver, which hands them to the slots. A chunk goes to its slot once its shards are decoded;
while they are still decoding, the slot is told to build the chunk's model (``prepare``), so loading the weights
overlaps the decode. A shard's blocks are dropped as soon as every model of its group has finished it.

The policy is :class:`~mlray.inference.schedule.Scheduler`'s; what runs where is a :class:`Backend`'s: the real
one builds timm models (:mod:`mlray.inference.driver`), ``bench/bench_schedule.py``'s sleeps. Each slot has a few
chunks queued, so it starts the next one the moment it finishes one, while the driver stores results.

Failures: a slot whose actor dies (its node removed, say) gives its unfinished chunks back to the schedule, which
hands them to the other slots, and the slots are re-planned on the nodes alive then (``replan``: at once when no
slot is left, else every :data:`REPLAN_INTERVAL` seconds; at most three starts per planned slot in all). Decoded
shards lost with a node are rebuilt by Ray from their lineage, else decoded again. An error inside a model or decode
task stops the run (a user error raised there comes back as the one-line :class:`~mlray.errors.MlrayError` it
was). No slot placed within ``placement_timeout`` seconds stops the run with one line naming what each slot asks
for: never a silent hang.
"""

from __future__ import annotations

import itertools
import queue
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from ..errors import MlrayError, first_line
from .schedule import Chunk, Scheduler
from .slots import Slot

PLACEMENT_TIMEOUT = 300.0
"""Seconds a run waits for its first model slot to be placed and started before it fails."""
FETCH_BYTES = 2 * 1024**3
"""A slot fetches a chunk's decoded shards in windows of at most this many bytes (one shard at least), one call
each, the next window moving to it meanwhile."""
MAX_QUEUED = 16
"""At most this many chunks queued on one slot."""
REPLAN_INTERVAL = 10.0
"""Seconds between two attempts to re-plan slots after one was lost."""
MAX_WAVES = 8
"""At most this many decode waves (Ray Data Datasets) stream at once; the next starts when one ends (each one
already runs its tasks on every CPU it may use; more at once only add executor threads to the driver)."""


class Backend(Protocol):
    """What the dispatch loop runs: slot actors, what a chunk tells its slot, and the decode function."""

    decode_cpus: float
    """CPUs each decode task asks for."""

    def start(self, slot: Slot) -> Any:
        """The actor of ``slot`` (started now, or before the dispatch began): a handle with ``ready()``,
        ``prepare(payload)`` (build the model now; it raises nothing: a failure is ``run``'s to report) and
        ``run(payload, group, windows)`` methods."""
        ...

    def payload(self, work: int) -> Any:
        """What ``prepare`` and ``run`` get to know the model of work ``work``."""
        ...

    def decoder(self, keys: Sequence[str], groups: Sequence[int]) -> tuple[Callable[..., Any], dict[str, Any]]:
        """The ``map_batches`` function of a wave decoding shards ``keys`` for ``groups``, and its ``fn_kwargs``: it
        maps a batch of one row ``{"key": shard key, "groups": "0,3"}`` (the groups that need the shard) to the
        shard's images, one row each, in plan order (see :func:`mlray.inference.worker.decode_batch`)."""
        ...

    def rows(self, key: str) -> int:
        """Images in shard ``key`` (the rows its decoded blocks hold)."""
        ...


@dataclass
class DispatchStats:
    """What the dispatch loop did: images read and decoded per shard key, slots started and lost, and when the
    first slot was ready (seconds from the start)."""

    reads: dict[str, int] = field(default_factory=dict)  # shard key -> times it was read
    decodes: dict[str, int] = field(default_factory=dict)  # shard key -> (read, preprocessing) decodes
    slots_started: int = 0
    slots_lost: int = 0
    first_ready_s: float | None = None
    seconds: float = 0.0
    last_loss: str = ""  # why the last slot was lost
    held_s: float = 0.0  # slot-seconds a live slot had nothing running but chunks waiting for their decode
    starved_s: float = 0.0  # slot-seconds a live slot had nothing running and nothing to run


class _Feeder:
    """One decode wave: a Ray Data Dataset decoding ``keys`` (shard key -> the groups that need it), streamed in a
    daemon thread; each decoded shard goes to ``arrivals`` as ``(key, groups, block refs)``, a failure as
    ``(None, (), exception)``. :meth:`stop` ends the stream (and Ray Data's executor) early."""

    def __init__(self, keys: Mapping[str, Sequence[int]], backend: Backend, arrivals: queue.Queue) -> None:
        self.keys, self.backend, self.arrivals = dict(keys), backend, arrivals
        self._stop = threading.Event()
        self.thread = threading.Thread(target=self._run, name="mlray-decode", daemon=True)
        self.thread.start()

    def stop(self) -> None:
        """Stop after the block being handed over (the thread ends on its own)."""
        self._stop.set()

    def _run(self) -> None:
        import ray.data

        try:
            groups = sorted({g for gs in self.keys.values() for g in gs})
            fn, kwargs = self.backend.decoder(list(self.keys), groups)
            items = [{"key": k, "groups": ",".join(map(str, gs))} for k, gs in self.keys.items()]
            ds = ray.data.from_items(items, override_num_blocks=len(items)).map_batches(
                fn, fn_kwargs=kwargs, batch_size=1, batch_format="numpy", num_cpus=self.backend.decode_cpus
            )
            ds.context.execution_options.preserve_order = True  # blocks come back in the order of ``keys``
            order = iter(self.keys)
            key, refs, rows = next(order), [], 0
            for bundle in ds.iter_internal_ref_bundles():
                for entry in bundle.blocks:
                    refs.append(entry.ref)
                    rows += int(entry.metadata.num_rows or 0)
                    want = self.backend.rows(key)
                    if rows > want:
                        raise RuntimeError(f"decode: shard {key} came back with {rows} rows for {want} images")
                    if rows == want:
                        self.arrivals.put((key, tuple(self.keys[key]), tuple(refs)))
                        key, refs, rows = next(order, ""), [], 0
                if self._stop.is_set():
                    return
        except BaseException as exc:  # to the dispatch loop, which stops the run with it
            self.arrivals.put((None, (), exc))


def quiet_ray_data() -> None:
    """mlray prints its own progress (per dataset and model); Ray Data's progress bars and INFO lines would
    interleave with it, so they go (warnings and errors still show; full logs stay in the Ray session dir)."""
    import logging

    import ray.data

    ctx = ray.data.DataContext.get_current()
    ctx.enable_progress_bars = False
    ctx.print_on_execution_start = False
    logging.getLogger("ray.data").setLevel(logging.WARNING)
    logging.getLogger("ray.data._internal.progress").setLevel(logging.ERROR)  # "progress bars disabled"
    # a decode task's memory is one shard's images, known and bounded: the "uses N MiB per worker but requests 0"
    # detector only adds noise; the other detectors (hanging tasks ...) stay on
    detectors = ctx.issue_detectors_config.detectors
    ctx.issue_detectors_config.detectors = [d for d in detectors if d.__name__ != "HighMemoryIssueDetector"]


def dispatch(
    ray: Any,
    scheduler: Scheduler,
    slots: Sequence[Slot],
    backend: Backend,
    on_result: Callable[[str, Chunk, list[Any]], None],
    on_tick: Callable[[], None] | None = None,
    *,
    depth: int = 2,
    lead: float = 2.0,
    tick: float = 0.5,
    placement_timeout: float | None = None,
    replan: Callable[[], Sequence[Slot]] | None = None,
) -> DispatchStats:
    """Run every chunk of ``scheduler`` on ``slots`` through ``backend``; ``on_result(slot id, chunk, results)``
    gets each chunk's results (one per shard, in order) as it comes back, ``on_tick()`` is called at least every
    ``tick`` seconds; ``placement_timeout`` defaults to :data:`PLACEMENT_TIMEOUT`. Each slot has at least ``depth``
    chunks queued, and more (up to :data:`MAX_QUEUED`) while its queue holds less than ``lead`` expected seconds,
    so short chunks never leave it idle while the driver is busy; a queued chunk goes to its slot once its shards
    are decoded (the slot prepares its model meanwhile). The slots' actors are killed and the decode waves stopped
    at the end."""
    start = time.monotonic()
    quiet_ray_data()
    placement_timeout = PLACEMENT_TIMEOUT if placement_timeout is None else placement_timeout
    stats = DispatchStats()
    handles: dict[str, Any] = {}
    starting: dict[Any, Slot] = {}
    live: dict[str, Slot] = {}
    in_flight: dict[Any, tuple[str, Chunk, int]] = {}
    waiting: dict[str, list[Chunk]] = {}  # chunks handed to a slot whose shards are still being decoded
    queued: dict[str, int] = {}  # waiting + in flight, per slot
    queued_seconds: dict[str, float] = {}
    sent: dict[str, int] = {}  # slot -> the work of the last chunk (or model to prepare) sent to it
    cache: dict[tuple[int, str], tuple[Any, ...]] = {}  # (group, shard key) -> block refs
    decoding: set[tuple[int, str]] = set()
    arrivals: queue.Queue = queue.Queue()
    feeders: list[_Feeder] = []
    waves: list[dict[str, list[int]]] = []  # decode waves not started yet (at most MAX_WAVES stream at once)
    seq = itertools.count()
    no_slot_since = start
    last_replan = start
    handled = 0  # slots lost that a re-plan has answered
    max_starts = 3 * len(slots) + 3

    def launch(new: Sequence[Slot]) -> None:
        busy = set(live) | {s.id for s in starting.values()}
        for slot in new:
            if slot.id in busy or stats.slots_started >= max_starts:
                continue
            handles[slot.id] = backend.start(slot)
            starting[handles[slot.id].ready.remote()] = slot
            stats.slots_started += 1

    def decode(keys: dict[str, list[int]]) -> None:
        if keys:
            decoding.update((g, k) for k, gs in keys.items() for g in gs)
            waves.append(keys)
        while waves and sum(f.thread.is_alive() for f in feeders) < MAX_WAVES:
            feeders.append(_Feeder(waves.pop(0), backend, arrivals))

    def open_waves() -> None:
        for wave in scheduler.opened():
            keys: dict[str, list[int]] = {}
            for g in wave:
                for key in scheduler.shards_of(g):
                    keys.setdefault(key, []).append(g)
            decode(keys)

    def take_arrivals(block: float = 0.0) -> None:
        try:
            item = arrivals.get(timeout=block) if block else arrivals.get_nowait()
            while True:
                key, groups, refs = item
                if key is None:
                    raise _unwrap(refs)
                for g in groups:
                    decoding.discard((g, key))
                    if scheduler.needs(g, key):
                        cache[(g, key)] = refs
                stats.reads[key] = stats.reads.get(key, 0) + 1
                stats.decodes[key] = stats.decodes.get(key, 0) + len(groups)
                item = arrivals.get_nowait()
        except queue.Empty:
            pass

    def submit(slot_id: str) -> None:
        chunks = waiting.get(slot_id, [])
        while chunks:
            chunk = chunks[0]
            group = scheduler.works[chunk.work].group
            if any((group, key) not in cache for key in chunk.shards):
                if sent.get(slot_id) != chunk.work:  # the slot builds the model while the shards decode
                    handles[slot_id].prepare.remote(backend.payload(chunk.work))
                    sent[slot_id] = chunk.work
                return  # chunks go to a slot in the order it was given them
            chunks.pop(0)
            sent[slot_id] = chunk.work
            ref = handles[slot_id].run.remote(backend.payload(chunk.work), group, _windows(scheduler, chunk, cache))
            in_flight[ref] = (slot_id, chunk, next(seq))

    def give_back(slot_id: str, chunk: Chunk) -> None:
        scheduler.lost(slot_id, chunk)
        queued[slot_id] -= 1
        queued_seconds[slot_id] -= chunk.seconds

    def drop(slot_id: str) -> None:
        for chunk in waiting.pop(slot_id, []):
            give_back(slot_id, chunk)
        live.pop(slot_id, None)
        sent.pop(slot_id, None)
        scheduler.forget(slot_id)
        scheduler.set_slots(max(1, len(live)))

    launch(slots)
    last_tick = time.monotonic()
    try:
        while not scheduler.done:
            now = time.monotonic()
            for slot_id in live:  # where idle slot time goes (the figures bench_schedule prints)
                if queued.get(slot_id, 0) - len(waiting.get(slot_id, [])) <= 0:
                    if waiting.get(slot_id):
                        stats.held_s += now - last_tick
                    else:
                        stats.starved_s += now - last_tick
            last_tick = now
            open_waves()
            take_arrivals()
            decode({})  # start the next wave when one has ended
            for slot_id in list(live):
                while queued.get(slot_id, 0) < depth or (
                    queued[slot_id] < MAX_QUEUED and queued_seconds[slot_id] < lead
                ):
                    chunk = scheduler.next_chunk(slot_id)
                    open_waves()
                    if chunk is None:
                        break
                    waiting.setdefault(slot_id, []).append(chunk)
                    queued[slot_id] = queued.get(slot_id, 0) + 1
                    queued_seconds[slot_id] = queued_seconds.get(slot_id, 0.0) + chunk.seconds
                submit(slot_id)
            waitables = list(in_flight) + list(starting)
            if not waitables and not decoding:
                raise RuntimeError("dispatch: work is left but nothing runs (a scheduler defect)")
            held = any(waiting.values())
            if waitables:
                done, _ = ray.wait(waitables, num_returns=1, timeout=0.05 if held else tick)
            else:  # every slot waits for decoded shards
                done = []
                take_arrivals(block=tick)
            if done:
                done, _ = ray.wait(waitables, num_returns=len(waitables), timeout=0)
            for ref in sorted(done, key=lambda r: in_flight[r][2] if r in in_flight else -1):
                if ref in starting:
                    slot = starting.pop(ref)
                    try:
                        ray.get(ref)
                    except ray.exceptions.RayActorError as exc:
                        stats.slots_lost += 1
                        stats.last_loss = first_line(exc)
                        continue
                    live[slot.id] = slot
                    if stats.first_ready_s is None:
                        stats.first_ready_s = time.monotonic() - start
                    scheduler.set_slots(len(live))
                    continue
                slot_id, chunk, _ = in_flight.pop(ref)
                try:
                    results = ray.get(ref)
                except ray.exceptions.RayActorError as exc:  # the slot died (its node went): its chunks go to others
                    give_back(slot_id, chunk)
                    if slot_id in live:
                        stats.slots_lost += 1
                        stats.last_loss = first_line(exc)
                        drop(slot_id)
                    continue
                except ray.exceptions.RayTaskError as exc:
                    cause = getattr(exc, "cause", None)
                    if isinstance(cause, MlrayError):
                        raise MlrayError(*cause.args) from None
                    if isinstance(cause, ray.exceptions.ObjectLostError):  # decoded shards lost for good: again
                        give_back(slot_id, chunk)
                        group = scheduler.works[chunk.work].group
                        lost = [k for k in chunk.shards if (group, k) not in decoding]
                        for key in lost:
                            cache.pop((group, key), None)
                        decode({key: [group] for key in lost})
                        continue
                    raise
                queued[slot_id] -= 1
                queued_seconds[slot_id] -= chunk.seconds
                for group_key in scheduler.finish(slot_id, chunk):
                    cache.pop(group_key, None)
                on_result(slot_id, chunk, results)
            now = time.monotonic()
            if live:
                no_slot_since = now
            elif starting and now - no_slot_since > placement_timeout:
                asks = _asks(next(iter(starting.values())))
                raise MlrayError(
                    f"inference: no model slot was placed within {placement_timeout:g} s (each asks for {asks}): no "
                    "node has that free; check `ray status` or lower the inference settings"
                )
            if replan is not None and stats.slots_lost > handled and (not live or now - last_replan >= REPLAN_INTERVAL):
                handled, last_replan = stats.slots_lost, now
                try:  # slots on the nodes alive now, in place of those lost (a bounded number of restarts)
                    launch(replan())
                except MlrayError:
                    pass  # no node can hold a slot now; the placement timeout decides
            if not live and not starting:
                raise MlrayError(
                    f"inference: every model slot was lost ({stats.slots_lost} of {stats.slots_started}; the last: "
                    f"{stats.last_loss})"
                )
            if on_tick is not None:
                on_tick()
    finally:
        for feeder in feeders:
            feeder.stop()
        for handle in handles.values():
            ray.kill(handle)
    stats.seconds = time.monotonic() - start
    return stats


def _unwrap(exc: BaseException) -> BaseException:
    """The :class:`MlrayError` a decode failure carries (Ray Data wraps what the decode function raised), as a
    plain MlrayError; else ``exc`` itself."""
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, MlrayError):
            return MlrayError(*seen.args)
        cause = getattr(seen, "cause", None)
        seen = cause if isinstance(cause, BaseException) else (seen.__cause__ or seen.__context__)
    return exc


def _windows(
    scheduler: Scheduler, chunk: Chunk, cache: Mapping[tuple[int, str], tuple[Any, ...]]
) -> list[list[tuple[str, list[Any]]]]:
    """The chunk's shards as ``(key, ObjectRefs of its decoded blocks)``, in windows of at most
    :data:`FETCH_BYTES` (at least one shard each) that its slot fetches in one call each."""
    group = scheduler.works[chunk.work].group
    windows: list[list[tuple[str, list[Any]]]] = []
    size = 0.0
    for key in chunk.shards:
        nbytes = scheduler.shard_bytes[(group, key)]
        if not windows or size + nbytes > FETCH_BYTES:
            windows.append([])
            size = 0.0
        windows[-1].append((key, list(cache[(group, key)])))
        size += nbytes
    return windows


def _asks(slot: Slot) -> str:
    """What a slot's actor asks Ray for, as ``CPU: 0.5, GPU: 1``."""
    parts = [f"CPU: {slot.cpus:g}"] + ([f"GPU: {slot.gpus:g}"] if slot.gpus else [])
    return ", ".join(parts)


def slot_options(slot: Slot) -> dict[str, Any]:
    """The ``.options(...)`` of a slot's actor: its CPUs and GPUs, pinned (softly) to its node."""
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    options: dict[str, Any] = {"num_cpus": slot.cpus, "num_gpus": slot.gpus, "max_concurrency": 1}
    if slot.node is not None:
        options["scheduling_strategy"] = NodeAffinitySchedulingStrategy(slot.node, soft=True)
    return options


def shard_totals(stats: Mapping[str, int], shard_images: Mapping[str, int]) -> int:
    """``sum(count x images)`` over the shard keys of ``stats`` (reads or decodes, in images)."""
    return sum(n * shard_images[key] for key, n in stats.items())
