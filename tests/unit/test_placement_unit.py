"""Placement without pipes or processes: the choice of engine, ties, slots, the queue's
capacity, engines that failed a job, no engine answering, and the retry policy."""
import pytest

from backend.model._config import parse_instances
from backend.model._job import JobState, Job
from backend.ipc._messages import EngineLoad
from backend.model._job import JobSpec
from backend.dispatch._placement import (JITTER, OVER_SHARE_DELAY, PLACEMENT_TRIES,
                                         UNCONFIRMED_SHARE, Placement)
from backend.model._task import LocalCheck, Task, snapshot_task

A, B, UNLIMITED = parse_instances([
    {"server_url": "unix:///a.sock", "name": "a", "max_concurrent_jobs": 2},
    {"server_url": "unix:///b.sock", "name": "b", "max_concurrent_jobs": 2},
    {"server_url": "unix:///c.sock", "name": "c", "max_concurrent_jobs": 0}])


def job(job_id="j1"):
    return Job(job_id, Task("image"), print, LocalCheck(),
                JobSpec(job_id, snapshot_task(Task("image"), None), b"{}\n"))


def confirm(placement, engine, others=0, other_managers=None):
    """The engine's count shows every job of ours there (and ``others`` of other
    managers')."""
    ours = frozenset(job.job_id for job in placement._held[engine])
    placement.set_load(EngineLoad(engine, len(ours) + others, ours,
                                  other_managers if other_managers is not None
                                  else int(others > 0)))


def place(placement, queued):
    """Places ``queued`` as the dispatcher does, and its container is counted by its engine;
    returns its engine."""
    placement.add(queued)
    head, engine = placement.next()
    assert head is queued
    placement.placed(queued, engine)
    queued.state, queued.engine = JobState.SUBMITTING, engine
    queued.container_id = f"c{queued.job_id}".ljust(64, "0")
    confirm(placement, engine)
    return engine


def test_the_least_loaded_engine_is_chosen():
    placement = Placement([A, B])
    placement.running["a"] = 1
    assert placement.choose(job()) == "b"


def test_ties_are_spread_evenly():
    placement = Placement([A, B])
    assert [place(placement, job(str(i))) for i in range(4)] == ["a", "b", "a", "b"]


def test_a_full_engine_gets_no_job_and_the_job_waits():
    placement = Placement([A])
    first, second, third = job("1"), job("2"), job("3")
    place(placement, first)
    place(placement, second)
    placement.add(third)
    assert placement.next() is None and list(placement.queue) == [third]
    placement.ended(first)
    assert placement.next() == (third, "a")


def test_no_limit_means_no_limit():
    placement = Placement([UNLIMITED])
    placement.running["c"] = 10_000
    assert placement.choose(job()) == "c"


def test_over_capacity_only_beyond_the_queued_limit():
    placement = Placement([A], max_queued_jobs=1)
    placement.running["a"] = 2  # full: jobs wait
    waiting, beyond = job("1"), job("2")
    placement.add(waiting)
    assert not placement.over_capacity(waiting)
    placement.add(beyond)
    assert placement.over_capacity(beyond) and list(placement.queue) == [waiting]
    no_limit = Placement([A])
    no_limit.add(beyond)
    assert not no_limit.over_capacity(beyond)


def test_a_placed_job_is_not_over_capacity():
    placement = Placement([A], max_queued_jobs=0)
    queued = job()
    place(placement, queued)
    assert not placement.over_capacity(queued)


def test_an_engine_that_failed_a_job_is_avoided_unless_no_other_answers():
    placement = Placement([A, B])
    failing = job()
    assert place(placement, failing) == "a"
    assert placement.failed(failing, "a", retryable=True)
    assert placement.running["a"] == 0 and list(placement.queue) == [failing]
    assert placement.choose(failing) == "b"
    placement.running["b"] = 2  # b is full: the job waits for b rather than go back to a
    assert placement.choose(failing) is None
    assert placement.choose(job("other")) == "a"
    placement.set_reachable("b", False)  # no other one answers: a it is
    assert placement.choose(failing) == "a"


def test_unreachable_engines_get_no_job():
    placement = Placement([A, B])
    assert placement.set_reachable("a", False) and not placement.set_reachable("a", False)
    assert [placement.choose(job(str(i))) for i in range(3)] == ["b"] * 3
    assert not placement.is_reachable("a")


def test_when_no_engine_answers_the_queue_is_given_up():
    placement = Placement([A, B])
    queued = [job("1"), job("2")]
    for each in queued:
        placement.add(each)
    placement.set_reachable("a", False)
    assert placement.unplaceable() == []
    placement.set_reachable("b", False)
    assert placement.unplaceable() == queued and not placement.queue


def test_a_job_is_tried_on_placement_tries_engines_at_most():
    placement = Placement([A, B])
    failing = job()
    for attempt in range(1, PLACEMENT_TRIES):
        engine = place(placement, failing) if attempt == 1 else None
        if engine is None:
            head, engine = placement.next()
            placement.placed(failing, engine)
        assert placement.attempts(failing) == attempt
        assert placement.failed(failing, engine, retryable=True)
    head, engine = placement.next()
    placement.placed(failing, engine)
    assert not placement.failed(failing, engine, retryable=True)  # the last try
    assert placement.running[engine] == 1  # kept until the job ends
    failing.state, failing.engine = JobState.SUBMITTING, engine
    placement.ended(failing)
    assert placement.attempts(failing) == 0 and placement.running[engine] == 0


def test_an_error_the_engine_answered_or_a_kill_is_not_retried():
    placement = Placement([A, B])
    answered, killed = job("1"), job("2")
    engine = place(placement, answered)
    assert not placement.failed(answered, engine, retryable=False)
    killed.kill_requested = True
    engine = place(placement, killed)
    assert not placement.failed(killed, engine, retryable=True)


def test_no_retry_when_no_engine_answers():
    placement = Placement([A, B])
    failing = job()
    engine = place(placement, failing)
    placement.set_reachable("a", False)
    placement.set_reachable("b", False)
    assert not placement.failed(failing, engine, retryable=True)


def test_a_killed_job_leaves_the_queue():
    placement = Placement([A])
    queued = job()
    placement.add(queued)
    assert placement.withdraw(queued) and not placement.withdraw(queued)
    assert not placement.queue
    placement.ended(queued)  # it held no slot
    assert placement.running["a"] == 0


# -- several managers on one engine (docs/choices.rst) -------------------------------------------

def test_other_managers_containers_take_the_engine_slots():
    placement = Placement([A, B])
    placement.set_load(EngineLoad("a", 2, frozenset(), 1))  # a: full of another's
    first = job("1")
    assert place(placement, first) == "b"
    placement.set_load(EngineLoad("a", 1, frozenset(), 1))
    assert placement.load("a") == 1 and placement.load("b") == 1
    # b: ours and another's (ours is counted once, as this manager's job)
    placement.set_load(EngineLoad("b", 2, frozenset({first.job_id}), 1))
    assert placement.load("b") == 2
    assert placement.choose(job("2")) == "a"


def test_near_the_limit_one_unconfirmed_job_at_a_time():
    placement = Placement([A])
    first, second = job("1"), job("2")
    placement.add(first)
    placement.add(second)
    placement.placed(first, "a")
    first.state, first.engine = JobState.SUBMITTING, "a"
    assert placement.next() is None  # a free slot, but the first is not counted yet
    placement.set_load(EngineLoad("a", 1, frozenset({"2"}), 0))  # another job's container
    assert placement.next() is None
    placement.set_load(EngineLoad("a", 1, frozenset({"1"}), 0))  # its label: the first's
    assert placement.next() == (second, "a")


def test_far_from_the_limit_several_unconfirmed_jobs():
    big = parse_instances([{"server_url": "unix:///d.sock", "name": "d",
                            "max_concurrent_jobs": 100}])[0]
    placement = Placement([big])
    placed = 0
    while True:
        queued = job(str(placed))
        placement.add(queued)
        if placement.next() is None:
            break
        placement.placed(queued, "d")
        queued.state, queued.engine = JobState.SUBMITTING, "d"
        placed += 1
    assert placed == 11  # then 89 free: 89 // UNCONFIRMED_SHARE = 11 unconfirmed at most
    assert (100 - placed) // UNCONFIRMED_SHARE == placed


def test_no_unconfirmed_bound_without_a_limit():
    placement = Placement([UNLIMITED])
    for i in range(20):
        queued = job(str(i))
        placement.add(queued)
        assert placement.next() == (queued, "c")
        placement.placed(queued, "c")


class FixedRandom:
    def uniform(self, low, high):
        return high / 2


def shared_three():
    """A 3-slot engine shared by 3 managers, running one of ours and one of another's (1 free
    for 3 managers; ours 1 = share ceil(3/3)), a job of ours waiting: its placement and our
    container ids."""
    three = parse_instances([{"server_url": "unix:///d.sock", "name": "d",
                              "max_concurrent_jobs": 3}])[0]
    placement = Placement([three], rng=FixedRandom())
    mine = job("mine")
    place(placement, mine)
    ours = frozenset({mine.job_id})
    placement.set_load(EngineLoad("d", 2, ours, 2))
    placement.add(job("2"))
    return placement, ours


def test_a_shared_nearly_full_engine_defers_by_a_jitter():
    placement, ours = shared_three()
    assert placement.next(now=10.0) is None
    assert placement.next_due() == pytest.approx(10.0 + JITTER / 2 + OVER_SHARE_DELAY)
    placement.set_load(EngineLoad("d", 2, ours, 1))
    assert placement.next(now=10.05) is None  # the deferral stays as it was drawn
    assert placement.next(now=10.0 + JITTER / 2 + OVER_SHARE_DELAY)[1] == "d"
    assert placement.next_due() is None


def test_a_manager_with_no_job_on_a_shared_engine_takes_a_freed_slot_at_once():
    placement = Placement([A], rng=FixedRandom())
    placement.set_load(EngineLoad("a", 1, frozenset(), 1))  # another manager's: 1 free < 2
    queued = job("1")
    placement.add(queued)
    assert placement.next(now=10.0) == (queued, "a")


def test_a_manager_over_its_share_waits_longer():
    placement = Placement([A], rng=FixedRandom())
    mine = job("mine")
    place(placement, mine)  # ours: 1 = ceil(2 slots / 2 managers)
    placement.set_load(EngineLoad("a", 1, frozenset({mine.job_id}), 1))
    placement.add(job("2"))
    assert placement.next(now=0.0) is None
    assert placement.next_due() == pytest.approx(JITTER / 2 + OVER_SHARE_DELAY)


def test_no_deferral_with_a_free_slot_for_every_manager_or_alone():
    big = parse_instances([{"server_url": "unix:///d.sock", "name": "d",
                            "max_concurrent_jobs": 10}])[0]
    placement = Placement([big])
    placement.set_load(EngineLoad("d", 5, frozenset(), 3))  # 5 free for 4 managers
    queued = job("1")
    placement.add(queued)
    assert placement.next(now=1.0) == (queued, "d")
    alone = Placement([A])
    alone.set_load(EngineLoad("a", 0, frozenset(), 0))
    other = job("2")
    alone.add(other)
    assert alone.next(now=1.0) == (other, "a")


def test_a_deferral_is_dropped_when_its_slot_is_taken():
    placement, ours = shared_three()
    assert placement.next(now=0.0) is None and placement.next_due() is not None
    placement.set_load(EngineLoad("d", 3, ours, 2))  # another manager took it
    assert placement.next(now=5.0) is None and placement.next_due() is None
    placement.set_load(EngineLoad("d", 2, ours, 2))  # freed again: a new deferral
    assert placement.next(now=6.0) is None
    assert placement.next_due() == pytest.approx(6.0 + JITTER / 2 + OVER_SHARE_DELAY)


def test_below_its_share_a_manager_waits_the_jitter_only():
    four = parse_instances([{"server_url": "unix:///d.sock", "name": "d",
                             "max_concurrent_jobs": 4}])[0]
    placement = Placement([four], rng=FixedRandom())
    mine = job("mine")
    place(placement, mine)  # ours: 1 < ceil(4 / 2)
    placement.set_load(EngineLoad("d", 3, frozenset({mine.job_id}), 1))
    placement.add(job("2"))
    assert placement.next(now=1.0) is None
    assert placement.next_due() == pytest.approx(1.0 + JITTER / 2)
