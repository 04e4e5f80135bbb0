"""The scheduling policy as a pure function: cost tables in, chunks per slot out (no Ray, no clock)."""

from __future__ import annotations

import math
import random

import pytest

from mlray.inference import Scheduler, Work, cost_table, lower_bound, simulate


def work(name: str, seconds: list[float], group: int = 0, prefix: str = "d/s") -> Work:
    return Work(name, group, tuple(f"{prefix}{i}" for i in range(len(seconds))), tuple(seconds))


def sizes(works: list[Work], nbytes: float = 1.0) -> dict[tuple[int, str], float]:
    return {(w.group, key): nbytes for w in works for key in w.shards}


def handed_out(sim) -> dict[str, int]:
    out: dict[str, int] = {}
    for c in sim.chunks:
        out[c.work] = out.get(c.work, 0) + c.shards
    return out


def test_lower_bound_is_the_larger_of_the_average_and_the_longest():
    assert lower_bound([5, 4, 3, 3, 3], 2) == 9.0
    assert lower_bound([10, 1, 1], 4) == 10.0 and lower_bound([], 3) == 0.0


def test_longest_first_on_whole_models_and_every_shard_once():
    # one shard each (nothing to split): longest processing time first
    works = [work(n, [s]) for n, s in zip("abcde", [3, 5, 3, 4, 3])]
    sim = simulate(works, sizes(works), 2)
    assert [(c.slot, c.work, c.start, c.end) for c in sim.chunks] == [
        (0, "b", 0.0, 5.0), (1, "d", 0.0, 4.0), (1, "a", 4.0, 7.0), (0, "c", 5.0, 8.0), (1, "e", 7.0, 10.0),
    ]  # fmt: skip
    assert (sim.makespan, sim.lower_bound, sim.ratio) == (10.0, 9.0, pytest.approx(10 / 9))
    assert handed_out(sim) == {"a": 1, "b": 1, "c": 1, "d": 1, "e": 1} and sim.busy() == [8.0, 10.0]


def test_a_huge_model_is_helped_at_the_end_unless_loading_it_costs_more():
    # one model of 100 one-second shards and ten small ones, on 4 slots: the others help the huge one
    works = [work("huge", [1.0] * 100)] + [work(f"s{i}", [0.5], group=1) for i in range(10)]
    sim = simulate(works, sizes(works), 4)
    assert handed_out(sim)["huge"] == 100 and {c.slot for c in sim.chunks if c.work == "huge"} == {0, 1, 2, 3}
    assert sim.makespan <= 1.02 * 105 / 4 and sim.lower_bound == 100.0 and sim.ratio < 0.27
    # helping would cost a 1000 s load: the huge model stays on one slot
    alone = simulate(works, sizes(works), 4, load_seconds=1000.0)
    assert {c.slot for c in alone.chunks if c.work == "huge"} == {0} and alone.makespan == 3 * 1000.5
    # max_slots_per_work=1 (actors_per_model: 1): never split
    single = simulate(works, sizes(works), 4, max_slots_per_work=1)
    assert {c.slot for c in single.chunks if c.work == "huge"} == {0} and single.makespan == 100.0


def test_a_slots_first_chunks_ramp_up_from_one_shard_then_shrink_towards_the_end():
    # one slot, the whole run as one quantum: 1, 2, 4 shards (doubling), then at most half the work left
    w = [work("a", [1.0] * 16)]
    assert [c.shards for c in simulate(w, sizes(w), 1, chunks_per_slot=1).chunks] == [1, 2, 4, 4, 2, 1, 1, 1]
    # each slot ramps up on its own, towards the quantum (80 s / 2 slots / 2 chunks per slot = 20 shards)
    two = [work("a", [1.0] * 40), work("b", [1.0] * 40, group=1)]
    sim = simulate(two, sizes(two), 2, chunks_per_slot=2)
    assert [(c.slot, c.shards) for c in sim.chunks][:8] == [
        (0, 1),
        (1, 1),
        (0, 2),
        (1, 2),
        (0, 4),
        (1, 4),
        (0, 8),
        (1, 8),
    ]


def test_a_slot_keeps_its_model_while_it_has_shards_and_loads_are_counted():
    works = [work("a", [1.0] * 10), work("b", [1.0] * 10)]
    sim = simulate(works, sizes(works), 2, load_seconds=2.0)
    assert [c.loaded for c in sim.chunks if c.slot == 0] == [True] + [False] * (
        sum(c.slot == 0 for c in sim.chunks) - 1
    )
    assert sim.makespan == 12.0 and sum(c.loaded for c in sim.chunks) == 2


def test_groups_open_within_the_cache_budget_beside_the_one_draining_and_shards_are_freed_when_done():
    a = work("a", [1.0, 1.0], group=0)
    b = work("b", [5.0, 5.0], group=1)
    c = work("c", [1.0, 1.0], group=1)
    d = work("d", [1.5, 1.5], group=2)
    sched = Scheduler([a, b, c, d], sizes([a, b, c, d], nbytes=10.0), 1, cache_bytes=25.0)
    # order: group 1 (longest model), group 0 (shortest), group 2. Group 1 is the one the slot works through
    # (draining: the budget leaves it out), so group 0 (20 bytes) fits beside it; group 2 would make 40: it waits
    assert sched.opened() == [(1, 0)] and sched.open_groups == {0, 1}
    steps = []
    while (chunk := sched.next_chunk("s")) is not None:
        steps.append((sched.works[chunk.work].name, chunk.shards[0], sched.finish("s", chunk), sched.opened()))
    assert steps == [
        ("b", "d/s0", [], []),
        ("b", "d/s1", [], []),
        ("c", "d/s0", [(1, "d/s0")], []),  # the last model of group 1 frees its shards one by one
        ("c", "d/s1", [(1, "d/s1")], [(2,)]),  # group 1 is done: group 0 drains now, group 2 fits beside it
        ("a", "d/s0", [(0, "d/s0")], []),
        ("a", "d/s1", [(0, "d/s1")], []),
        ("d", "d/s0", [(2, "d/s0")], []),
        ("d", "d/s1", [(2, "d/s1")], []),
    ]
    assert sched.done and sched.open_groups == frozenset()
    # waves: groups that open together share one read and decode (at most 4 per wave), taken alternately from the
    # longest and the shortest end (a group of small models gets its decode done beside a group of large ones)
    many = [work(f"m{g}", [6.0 - g], group=g) for g in range(6)]
    assert Scheduler(many, sizes(many), 8).opened() == [(0, 5, 1, 4), (2, 3)]


def test_a_free_slot_finishes_the_oldest_open_group_before_starting_another():
    # groups 0 (models of 10 and 1 s) and 1 (5 s) are both open: group 0's short model goes before group 1's longer
    # one, so group 0's cached images go first (longest first within a group)
    works = [work("long", [10.0], group=0), work("short", [1.0], group=0), work("mid", [5.0], group=1)]
    sched = Scheduler(works, sizes(works), 1)
    assert sched.opened() == [(0, 1)]
    order = []
    while (chunk := sched.next_chunk("s")) is not None:
        order.append((sched.works[chunk.work].name, sched.finish("s", chunk)))
    assert order == [("long", []), ("short", [(0, "d/s0")]), ("mid", [(1, "d/s0")])]


def test_a_slot_opens_the_next_group_beyond_the_budget_rather_than_wait():
    a, b = work("a", [1.0] * 4, group=0), work("b", [1.0] * 4, group=1)
    sched = Scheduler([a, b], sizes([a, b], nbytes=10.0), 2, cache_bytes=10.0)
    assert sched.opened() == [(0,)]
    one = sched.next_chunk("s0")
    two = sched.next_chunk("s1")  # nothing else in group 0 but a's shards: helping a beats waiting
    assert {sched.works[one.work].name, sched.works[two.work].name} == {"a"}
    sched = Scheduler([a, b], sizes([a, b], nbytes=10.0), 2, cache_bytes=10.0, max_slots_per_work=1)
    sched.opened()
    sched.next_chunk("s0")
    other = sched.next_chunk("s1")  # helping is not allowed: open group 1 anyway
    assert sched.works[other.work].name == "b" and sched.opened() == [(1,)]


def test_a_lost_slot_gives_its_chunk_back_to_the_front_of_its_model():
    w = work("a", [1.0] * 4)
    sched = Scheduler([w], sizes([w]), 2, chunks_per_slot=2)
    first = sched.next_chunk("s0")
    assert first.shards == ("d/s0",)
    second = sched.next_chunk("s1")
    sched.lost("s0", first)
    sched.set_slots(1)
    again = sched.next_chunk("s1")
    assert again.shards[0] == "d/s0" and second.shards == ("d/s1",)
    for chunk in (second, again):
        sched.finish("s1", chunk)
    while (chunk := sched.next_chunk("s1")) is not None:
        sched.finish("s1", chunk)
    assert sched.done


def test_a_model_whose_only_slot_was_lost_is_taken_up_even_when_loading_costs_more_than_it_saves():
    a, b = work("a", [1.0] * 4), work("b", [1.0] * 4)
    sched = Scheduler([a, b], sizes([a, b]), 2, load_seconds=100.0, chunks_per_slot=4)
    on_s0, on_s1 = sched.next_chunk("s0"), sched.next_chunk("s1")
    assert {sched.works[on_s0.work].name, sched.works[on_s1.work].name} == {"a", "b"}
    sched.lost("s0", on_s0)  # s0's actor died: nobody runs its model now
    sched.finish("s1", on_s1)
    names = []
    while (chunk := sched.next_chunk("s1")) is not None:
        names.append(sched.works[chunk.work].name)
        sched.finish("s1", chunk)
    assert sched.done and names.count(sched.works[on_s0.work].name) >= 1


def test_the_paper_cost_table_keeps_every_slot_busy():
    # every row of the bundled timm 4090 table as a model of 60,000 images in shards of 1,000, in 12 random groups
    rng = random.Random(0)
    works = []
    for arch, rows in sorted(cost_table().items()):
        for size, rate, _ in rows:
            works.append(work(f"{arch}@{size}", [1000 / rate] * 60, group=rng.randrange(12)))
    total = math.fsum(w.total for w in works)
    assert len(works) == 1627 and total / 3600 == pytest.approx(48.68, abs=0.01)
    for g in (1, 4, 8, 16):
        sim = simulate(works, sizes(works, nbytes=1000 * 224 * 224 * 3), g, cache_bytes=100e9)
        assert sim.ratio < 1.005, g
        assert sum(c.shards for c in sim.chunks) == 60 * len(works)
    # with 10 s per model load the bound leaves out: still within the loads' share of the work
    sim = simulate(works, sizes(works), 8, load_seconds=10.0)
    assert sim.makespan <= 1.01 * (total + 10.0 * len(works)) / 8
