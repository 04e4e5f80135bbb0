"""Which model runs on which slot, and when: the scheduling policy of a run, as a pure object (no Ray, no clock).

A *slot* is one place a model runs (one GPU, or a share of a CPU node's cores; :mod:`mlray.inference.slots`).
A *work* is one model's part of the run: the shards it still lacks and the expected seconds of each on one slot
(:mod:`mlray.inference.costs`). Models with the same resize/crop form a *group*: a group's images are decoded
and resized once, kept as uint8 in a cache (Ray's object store, which spills to disk), and read from there by
every model of the group; a shard leaves the cache as soon as every model of its group has finished it.

The policy (:class:`Scheduler`), asked for the next piece of work for a free slot:

1. the slot keeps its current model while that model has shards left (no reload);
2. else it starts the longest not-yet-started model of the *oldest open* group that has one (longest processing
   time first within a group; the groups are worked through one after another, so each one's cached images go
   as soon as possible and the groups after it open early);
3. else it *helps*: it takes shards of the started model with the most work left per slot running it, when that
   saves more than loading the model costs (so one huge model never holds the run up);
4. else it waits (the work that is left is running).

Groups open alternately from the two ends of the list sorted by longest model: the group with the longest model,
then the one whose longest model is the shortest, then the second longest, and so on. A group's decode costs the
same whatever its models cost, so a run of groups of small models at the end would leave the slots waiting for
their decodes; interleaved, every wave's decode runs while the slots work through a group of large models, and the
longest models still start first. Groups open as many as the cache budget allows beside the oldest open group
(the one the slots are working through, which frees its images shard by shard: the next group's decode overlaps
its end), and early enough that their decode runs ahead of the models (a group opens while the open groups hold
fewer than :data:`AHEAD_WORKS` not-yet-started models or :data:`AHEAD_SECONDS` of expected work per slot).

Work goes out in *chunks* of consecutive shards: about ``1 / chunks_per_slot`` of a slot's share of the run, and
smaller towards the end (guided self-scheduling: at most the work left over two per slot), so the slots finish
together. A slot's first chunks ramp up: its first chunk is one shard, each next one at most twice as many shards,
so at the start of a run a slot begins as soon as one shard is decoded rather than a whole chunk's worth. Each
chunk is one call to a slot and its shards are stored as they come back (per-shard resume is unchanged).

:func:`simulate` runs the same policy against expected costs (what ``mlray plan`` prints and the unit tests
check); :func:`lower_bound` is the bound no schedule beats: ``max(total / slots, largest single model)``.
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Hashable, Sequence
from dataclasses import dataclass, field

WAVE_GROUPS = 4
"""At most this many groups open together and share one read and decode of each image."""
AHEAD_WORKS = 4
"""Groups open ahead while the open groups hold fewer than this many not-yet-started models per slot ..."""
AHEAD_SECONDS = 60.0
"""... or less than this many expected seconds of them per slot (so each group's decode starts well before its
models: a Ray Data decode wave takes a few seconds to start)."""
LOAD_SECONDS = 10.0
"""Expected seconds to build a model and load its weights on a slot (a slot helps another only to save more)."""


@dataclass(frozen=True)
class Work:
    """One model's part of a run: the keys of the shards it lacks (plan order), and the expected seconds each
    takes on one slot."""

    name: str
    group: int  # index of its preprocessing group
    shards: tuple[str, ...]
    seconds: tuple[float, ...]

    def __post_init__(self) -> None:
        if len(self.shards) != len(self.seconds):
            raise ValueError(f"work {self.name}: {len(self.shards)} shards but {len(self.seconds)} costs")

    @property
    def total(self) -> float:
        """Expected seconds of the whole work on one slot."""
        return math.fsum(self.seconds)


@dataclass(frozen=True)
class Chunk:
    """A piece of one work handed to one slot: consecutive shards of the work, with their expected seconds."""

    work: int  # index into the scheduler's works
    shards: tuple[str, ...]
    seconds: float


def lower_bound(totals: Sequence[float], slots: int) -> float:
    """No schedule of works with these expected ``totals`` on ``slots`` slots ends sooner than
    ``max(sum / slots, largest)`` (a work split across slots aside)."""
    return max(math.fsum(totals) / max(1, slots), max(totals, default=0.0))


def interleave(order: Sequence[int]) -> list[int]:
    """``order`` taken alternately from its two ends: first, last, second, second to last ...

    >>> interleave([1, 2, 3, 4, 5])
    [1, 5, 2, 4, 3]
    """
    out, lo, hi = [], 0, len(order) - 1
    while lo <= hi:
        out.append(order[lo])
        if lo < hi:
            out.append(order[hi])
        lo, hi = lo + 1, hi - 1
    return out


@dataclass
class _State:
    """What the scheduler tracks per work."""

    left: list[int]  # positions (into Work.shards) not handed out yet, in order
    left_seconds: float
    running: int = 0  # slots whose current work this is
    in_flight: int = 0  # chunks handed out, not finished
    started: bool = False


class Scheduler:
    """The policy of the module docstring, for ``works`` on ``slots`` slots; ``shard_bytes[(group, shard key)]``
    is what a shard's decoded images of that group take in the cache.

    ``cache_bytes``: at most this many bytes of decoded images held at once besides the oldest open group's (so
    one group is always allowed, and the next one may decode while it drains; a shard's bytes count until every
    work of its group has finished it);
    ``load_seconds``: expected seconds to load a model on a slot (helping must save more than this);
    ``max_slots_per_work``: at most this many slots on one model at once (None = no limit);
    ``chunks_per_slot``: chunk size as a fraction of a slot's share of the run.

    The caller asks :meth:`opened` which groups to start decoding (in waves: the groups of one wave share one
    read and decode of each image), :meth:`next_chunk` for work for a free slot, and reports each chunk back
    with :meth:`finish` (or :meth:`lost` when the slot died: the chunk goes back to the front of its work).
    """

    def __init__(
        self,
        works: Sequence[Work],
        shard_bytes: dict[tuple[int, str], float],
        slots: int,
        *,
        cache_bytes: float = math.inf,
        load_seconds: float = 0.0,
        max_slots_per_work: int | None = None,
        chunks_per_slot: int = 50,
    ) -> None:
        if slots < 1:
            raise ValueError(f"a schedule needs at least one slot, got {slots}")
        self.works = tuple(works)
        missing = [(w.group, key) for w in self.works for key in w.shards if (w.group, key) not in shard_bytes]
        if missing:
            raise ValueError(f"no cache size for shard {missing[0][1]} of group {missing[0][0]}")
        self.shard_bytes = dict(shard_bytes)
        self.cache_bytes = cache_bytes
        self.load_seconds = load_seconds
        self.max_slots_per_work = max_slots_per_work
        self.chunks_per_slot = chunks_per_slot
        self._state = [_State(list(range(len(w.shards))), w.total) for w in self.works]
        self._left_seconds = math.fsum(w.total for w in self.works)
        self._members: dict[int, list[int]] = {}
        self._consumers: dict[tuple[int, str], int] = {}
        for i, w in enumerate(self.works):
            if w.shards:
                self._members.setdefault(w.group, []).append(i)
            for key in w.shards:
                self._consumers[(w.group, key)] = self._consumers.get((w.group, key), 0) + 1
        self._group_bytes: dict[int, float] = {}
        for g, key in self._consumers:
            self._group_bytes[g] = self._group_bytes.get(g, 0.0) + self.shard_bytes[(g, key)]
        longest = {g: max(self.works[i].total for i in members) for g, members in self._members.items()}
        self._closed_order = interleave(sorted(self._members, key=lambda g: (-longest[g], g)))  # not opened yet
        self._opened_as: dict[int, int] = {}  # group -> how many groups opened before it
        self._open: set[int] = set()
        self._held: dict[int, float] = {}  # open group -> bytes of its shards still cached
        self._unfinished = {g: len(m) for g, m in self._members.items()}  # works of the group not finished
        self._waves: list[tuple[int, ...]] = []
        self._ready: list[tuple[int, float, int]] = []  # heap of (group's opening, -total, work) not started yet
        self._ready_seconds = 0.0  # their expected seconds
        self._current: dict[Hashable, int] = {}
        self._handed: dict[Hashable, int] = {}  # slot -> chunks handed to it (its first chunks ramp up)
        self.set_slots(slots)

    # ---------------------------------------------------------------------------------------------- questions

    @property
    def done(self) -> bool:
        """Every work has every shard finished."""
        return not any(self._unfinished.values())

    @property
    def open_groups(self) -> frozenset[int]:
        """The groups whose decoded images are (being) cached."""
        return frozenset(self._open)

    def needs(self, group: int, key: str) -> bool:
        """Whether some work of ``group`` has still to finish shard ``key`` (its decoded images are still wanted)."""
        return self._consumers.get((group, key), 0) > 0

    def shards_of(self, group: int) -> list[str]:
        """The shard keys some work of ``group`` needs, in the order the works list them."""
        seen: dict[str, None] = {}
        for i in self._members.get(group, []):
            seen.update(dict.fromkeys(self.works[i].shards))
        return list(seen)

    # ---------------------------------------------------------------------------------------------- changes

    def set_slots(self, slots: int) -> None:
        """The number of live slots changed (it sizes chunks and how many groups open ahead)."""
        self.slots = max(1, slots)
        self.quantum = math.fsum(w.total for w in self.works) / (self.slots * self.chunks_per_slot)
        self._refill()

    def opened(self) -> list[tuple[int, ...]]:
        """The waves of groups opened since the last call (each: group indices that open together)."""
        waves, self._waves = self._waves, []
        return waves

    def next_chunk(self, slot: Hashable) -> Chunk | None:
        """The next chunk for ``slot`` (see the module docstring), or None when nothing is left to hand out now."""
        w = self._current.get(slot)
        if w is None or not self._state[w].left:
            w = self._pick_new()
            if w is None:
                w = self._pick_help()
            if w is None and self._closed_order:  # rather than wait, open the next group beyond the budget
                self._waves.append((self._open_next(),))
                w = self._pick_new()
            if w is None:
                return None
            self._move(slot, w)
        handed = self._handed.get(slot, 0)
        chunk = self._take(w, 2 ** min(handed, 30))
        self._handed[slot] = handed + 1
        self._refill()
        return chunk

    def finish(self, slot: Hashable, chunk: Chunk) -> list[tuple[int, str]]:
        """``chunk`` came back from ``slot``; returns the (group, shard key) pairs no work needs any more (their
        cached images can go)."""
        state = self._state[chunk.work]
        state.in_flight -= 1
        group = self.works[chunk.work].group
        freed = []
        for key in chunk.shards:
            self._consumers[(group, key)] -= 1
            if not self._consumers[(group, key)]:
                freed.append((group, key))
                self._held[group] -= self.shard_bytes[(group, key)]
        if not state.left and not state.in_flight:
            self._unfinished[group] -= 1
            if not self._unfinished[group]:
                self._open.discard(group)
                del self._held[group]  # every shard of it was freed above
        self._refill()
        return freed

    def lost(self, slot: Hashable, chunk: Chunk) -> None:
        """``slot`` died with ``chunk`` unfinished: its shards go back to the front of their work."""
        state = self._state[chunk.work]
        state.in_flight -= 1
        positions = {key: i for i, key in enumerate(self.works[chunk.work].shards)}
        state.left[:0] = [positions[key] for key in chunk.shards]
        state.left_seconds += chunk.seconds
        self._left_seconds += chunk.seconds
        self.forget(slot)

    def forget(self, slot: Hashable) -> None:
        """``slot`` is gone: it no longer counts as running its current work."""
        w = self._current.pop(slot, None)
        if w is not None:
            self._state[w].running -= 1

    # ---------------------------------------------------------------------------------------------- policy

    def _refill(self) -> None:
        """Open groups (in the interleaved order) while the open groups hold fewer than :data:`AHEAD_WORKS`
        not-yet-started works or :data:`AHEAD_SECONDS` of them per slot, and the cache budget allows beside the
        oldest open group. The groups opened together form waves (the groups of a wave share one read and decode of each
        image); a wave, once started, is filled up to :data:`WAVE_GROUPS` groups, budget permitting."""
        wave: list[int] = []
        while self._closed_order and (
            not self._open
            or (
                (
                    0 < len(wave) < WAVE_GROUPS  # a wave, once started, is filled: fewer reads of each image
                    or len(self._ready) < AHEAD_WORKS * self.slots
                    or self._ready_seconds < AHEAD_SECONDS * self.slots
                )
                and math.fsum(self._held.values()) - self._draining() + self._group_bytes[self._closed_order[0]]
                <= self.cache_bytes
            )
        ):
            wave.append(self._open_next())
            if len(wave) == WAVE_GROUPS:
                self._waves.append(tuple(wave))
                wave = []
        if wave:
            self._waves.append(tuple(wave))

    def _open_next(self) -> int:
        """Open the next group: its works become ready to start. Returns its index."""
        g = self._closed_order.pop(0)
        self._open.add(g)
        self._opened_as[g] = len(self._opened_as)
        self._held[g] = self._group_bytes[g]
        for i in self._members[g]:
            heapq.heappush(self._ready, (self._opened_as[g], -self.works[i].total, i))
            self._ready_seconds += self.works[i].total
        return g

    def _draining(self) -> float:
        """Cached bytes of the oldest open group (the one the slots work through now), which the budget does not
        count: the next group's decode may start while it drains."""
        g = min(self._open, key=self._opened_as.__getitem__, default=None)
        return self._held[g] if g is not None else 0.0

    def _pick_new(self) -> int | None:
        """The longest not-yet-started work of the oldest open group that has one."""
        if not self._ready:
            return None
        i = heapq.heappop(self._ready)[2]
        self._ready_seconds -= self.works[i].total
        return i

    def _pick_help(self) -> int | None:
        """A started work that no slot runs any more (its slot was lost), else the started work with the most
        expected time left per slot on it, if another slot saves more than loading the model costs."""
        best, best_time = None, 0.0
        for i, state in enumerate(self._state):
            if not state.left or not state.started:
                continue
            if self.max_slots_per_work is not None and state.running >= self.max_slots_per_work:
                continue
            k = max(1, state.running)
            per_slot = state.left_seconds / k
            saving = per_slot - state.left_seconds / (k + 1)
            if not state.running:  # no slot runs it any more (its slot was lost): one must, whatever loading costs
                return i
            if saving > self.load_seconds and per_slot > best_time:
                best, best_time = i, per_slot
        return best

    def _move(self, slot: Hashable, w: int) -> None:
        """``slot`` now runs work ``w``."""
        self.forget(slot)
        self._current[slot] = w
        self._state[w].running += 1
        self._state[w].started = True

    def _take(self, w: int, most: int) -> Chunk:
        """The next chunk of work ``w``: shards from the front until the chunk's expected seconds reach
        ``min(quantum, work left / (2 * slots))`` (at least one shard, at most ``most``)."""
        state, work = self._state[w], self.works[w]
        target = min(self.quantum, self._left_seconds / (2 * self.slots))
        taken: list[int] = []
        seconds = 0.0
        while state.left and (not taken or (len(taken) < most and seconds + work.seconds[state.left[0]] <= target)):
            i = state.left.pop(0)
            taken.append(i)
            seconds += work.seconds[i]
        state.left_seconds = max(0.0, state.left_seconds - seconds) if state.left else 0.0
        self._left_seconds = max(0.0, self._left_seconds - seconds)
        state.in_flight += 1
        return Chunk(w, tuple(work.shards[i] for i in taken), seconds)


# -------------------------------------------------------------------------------------------------------------
# Simulation


@dataclass(frozen=True)
class Placed:
    """One chunk as the simulation ran it: on which slot, from when to when (seconds from the start)."""

    slot: int
    start: float
    end: float
    work: str
    shards: int
    loaded: bool  # the slot loaded the model first (its previous chunk was another model's)


@dataclass(frozen=True)
class Simulation:
    """What :func:`simulate` found: the makespan, the lower bound, and every chunk placed."""

    makespan: float
    lower_bound: float
    chunks: tuple[Placed, ...] = field(repr=False)
    slots: int = 1

    @property
    def ratio(self) -> float:
        """Makespan over the lower bound (1.0 = no schedule could be shorter)."""
        return self.makespan / self.lower_bound if self.lower_bound else 1.0

    def busy(self) -> list[float]:
        """Seconds each slot spends on chunks (model loads included)."""
        out = [0.0] * self.slots
        for c in self.chunks:
            out[c.slot] += c.end - c.start
        return out


def simulate(
    works: Sequence[Work],
    shard_bytes: dict[tuple[int, str], float],
    slots: int,
    *,
    cache_bytes: float = math.inf,
    load_seconds: float = 0.0,
    max_slots_per_work: int | None = None,
    chunks_per_slot: int = 50,
) -> Simulation:
    """Run :class:`Scheduler` with every chunk taking exactly its expected seconds (plus ``load_seconds`` when the
    slot changes model); decoding is assumed to keep ahead of the models. Deterministic."""
    sched = Scheduler(
        works, shard_bytes, slots, cache_bytes=cache_bytes, load_seconds=load_seconds,
        max_slots_per_work=max_slots_per_work, chunks_per_slot=chunks_per_slot,
    )  # fmt: skip
    model_on: dict[int, int] = {}
    placed: list[Placed] = []
    events: list[tuple[float, int, int, Chunk | None]] = []  # (time, tie-break, slot, chunk finished)
    counter = 0
    idle: list[int] = list(range(slots))
    now = 0.0
    while True:
        still_idle = []
        for slot in idle:
            chunk = sched.next_chunk(slot)
            if chunk is None:
                still_idle.append(slot)
                continue
            loaded = model_on.get(slot) != chunk.work
            model_on[slot] = chunk.work
            end = now + chunk.seconds + (load_seconds if loaded else 0.0)
            placed.append(Placed(slot, now, end, works[chunk.work].name, len(chunk.shards), loaded))
            counter += 1
            heapq.heappush(events, (end, counter, slot, chunk))
        idle = still_idle
        if not events:
            break
        now, _, slot, chunk = heapq.heappop(events)
        if chunk is not None:
            sched.finish(slot, chunk)
        idle.append(slot)
        while events and events[0][0] == now:  # everything that ends at the same moment frees its slot too
            _, _, other, done = heapq.heappop(events)
            if done is not None:
                sched.finish(other, done)
            idle.append(other)
        idle.sort()
    if not sched.done:
        raise RuntimeError("the simulated schedule ended with work left (a scheduler defect)")
    makespan = max((c.end for c in placed), default=0.0)
    return Simulation(makespan, lower_bound([w.total for w in works], slots), tuple(placed), slots)
