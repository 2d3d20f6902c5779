"""Placement without pipes or processes: the choice of engine, ties, slots, the queue's
capacity, engines that failed a job, no engine answering, and the retry policy."""
from backend._config import parse_instances
from backend._job import JobState, _Job
from backend._messages import EngineLoad, JobSpec
from backend._placement import PLACEMENT_TRIES, Placement
from backend._task import LocalCheck, Task, snapshot_task

A, B, UNLIMITED = parse_instances([
    {"server_url": "unix:///a.sock", "name": "a", "max_concurrent_jobs": 2},
    {"server_url": "unix:///b.sock", "name": "b", "max_concurrent_jobs": 2},
    {"server_url": "unix:///c.sock", "name": "c", "max_concurrent_jobs": 0}])


def job(job_id="j1"):
    return _Job(job_id, Task("image"), print, LocalCheck(),
                JobSpec(job_id, snapshot_task(Task("image"), None), b"{}\n"))


def confirm(placement, engine, others=0, other_managers=None):
    """The engine's count shows every job of ours there (and ``others`` of other
    managers')."""
    ours = frozenset(job.container_id[:12] for job in placement._held[engine])
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
