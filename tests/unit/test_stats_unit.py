"""stats() without engines: the counters, the latencies over the last jobs, the engines'
counts from placement, JSON; and the load counter's bookkeeping of events and listings."""
import json
import threading
import time

import pytest

from backend import docker as _docker
from backend.model._config import parse_instances
from backend.model._job import JobState, Job
from backend.watch._events import EventFollower
from backend.watch._load import RECONCILE_EVERY, LoadCounter
from backend.ipc._messages import ContainerSeen, EngineLoad, EventsCovered, Mailbox
from backend.model._job import JobSpec
from backend.dispatch._placement import Placement
from backend.dispatch._stats import BUCKETS, LATENCY_WINDOW, Stats, percentile
from backend.model._task import LocalCheck, Task, snapshot_task
from helpers import engine_event

A, UNLIMITED = parse_instances([
    {"server_url": "unix:///a.sock", "name": "a", "max_concurrent_jobs": 2},
    {"server_url": "unix:///c.sock", "name": "c", "max_concurrent_jobs": 0}])


def job(job_id="j1", started_after=None):
    made = Job(job_id, Task("image"), print, LocalCheck(),
                JobSpec(job_id, snapshot_task(Task("image"), None), b"{}\n"))
    if started_after is not None:
        made.started_at = made.queued_at + started_after
    return made


def result(status, reason=None, duration=1.0, container="c" * 64):
    return {"result": status, "text": "", "problems": {},
            "run": {"host": "a", "container_id": container, "exit_code": 0,
                    "duration": duration, "stderr": "", "reason": reason}}


def test_percentiles_nearest_rank():
    assert percentile([], 0.5) is None
    assert percentile([3.0], 0.95) == 3.0
    values = [float(i) for i in range(1, 101)]
    assert percentile(values, 0.5) == 50.0 and percentile(values, 0.95) == 95.0


def test_counts_by_status_and_reason_and_latencies():
    stats = Stats([A, UNLIMITED])
    for _ in range(3):
        stats.submitted()
    stats.ended(job("1", started_after=0.5), result("success", duration=2.0))
    stats.ended(job("2", started_after=1.5), result("timeout", "wall_time", duration=4.0))
    stats.ended(job("3"), {"result": "success", "text": "", "problems": {}})  # no container
    snapshot = stats.snapshot()
    assert json.loads(json.dumps(snapshot)) == snapshot
    assert snapshot["jobs"] == {"submitted": 3, "queued": 0, "running": 0, "ended": 3,
                                "by_status": {"success": 2, "timeout": 1},
                                "by_reason": {"timeout": {"wall_time": 1}}}
    wait, run_time = snapshot["queue_wait"], snapshot["run_time"]
    assert (wait["p50"], wait["p95"], wait["count"]) == (0.5, 1.5, 2)
    assert (run_time["p50"], run_time["p95"], run_time["count"]) == (2.0, 4.0, 2)
    # the histograms: cumulative counts per upper bound, since the start
    assert (wait["sum"], wait["total"], run_time["sum"], run_time["total"]) == (2.0, 2, 6.0, 2)
    buckets = dict(wait["buckets"])
    assert list(buckets) == list(BUCKETS)
    assert (buckets[0.25], buckets[0.5], buckets[1.0], buckets[2.5], buckets[600.0]) == \
        (0, 1, 1, 2, 2)  # a value on a bound counts in its bucket
    assert dict(run_time["buckets"])[2.5] == 1 and dict(run_time["buckets"])[5.0] == 2
    assert snapshot["engines"]["a"]["capacity"] == 2
    assert snapshot["engines"]["c"]["capacity"] is None  # no limit
    assert snapshot["engines"]["a"]["warm_containers"] == 0
    assert snapshot["engines"]["a"]["warm_hits"] == 0


def test_latencies_keep_the_last_jobs_only():
    stats = Stats([A])
    for i in range(LATENCY_WINDOW + 500):
        stats.ended(job(str(i)), result("success", duration=100.0 if i < 500 else 1.0))
    run_time = stats.snapshot()["run_time"]
    assert (run_time["p50"], run_time["p95"], run_time["count"]) == (1.0, 1.0, LATENCY_WINDOW)
    assert run_time["total"] == LATENCY_WINDOW + 500  # the histogram counts every job
    assert dict(run_time["buckets"])[60.0] == LATENCY_WINDOW


def test_engines_and_slots_come_from_placement():
    stats = Stats([A])
    placement = Placement([A])
    queued, running = job("q"), job("r")
    placement.add(queued)
    placement.add(running)
    placement.queue.remove(running)
    placement.running["a"] += 1
    running.state = JobState.RUNNING
    placement.set_load(EngineLoad("a", 3, frozenset({"r"}), 2))
    placement.set_reachable("a", False)
    stats.dispatched(placement)
    snapshot = stats.snapshot()
    assert snapshot["jobs"]["queued"] == 1 and snapshot["jobs"]["running"] == 1
    assert snapshot["engines"]["a"] == {
        "reachable": False, "running": 1, "engine_running": 3, "managers": 3, "capacity": 2,
        "warm_containers": 0, "warm_hits": 0}


# -- the load counter, without its threads ------------------------------------------------

def routed(counter, *events):
    """The events through the waiter's one stream, as its follower routes them."""
    waiter_mailbox = Mailbox()
    try:
        follower = EventFollower(A, "m1", waiter_mailbox, counter)
        for one in events:
            follower.route(one)
    finally:
        waiter_mailbox.close()


@pytest.fixture
def counted():
    """A load counter (of manager m1 on engine a) and its mailbox, closed at the end."""
    mailbox = Mailbox()
    try:
        yield LoadCounter(A, "m1", mailbox), mailbox
    finally:
        mailbox.close()


def test_events_of_every_manager_are_counted(counted):
    counter, mailbox = counted
    unlabelled = engine_event("create", "z" * 64)
    del unlabelled["Actor"]["Attributes"]["backend.manager"]
    routed(counter, engine_event("create", "x" * 64), engine_event("create", "y" * 64, "m2"),
           engine_event("start", "y" * 64, "m2"), {"Action": "exec_start"}, unlabelled)
    loads = [m for m in mailbox.drain() if isinstance(m, EngineLoad)]
    assert loads[-1] == EngineLoad("a", 2, frozenset({"xxx"}), 1)  # z: no manager's
    routed(counter, engine_event("die", "x" * 64), engine_event("destroy", "x" * 64))
    assert not list(mailbox.drain())  # only ours ended: held back, see below
    counter._report(deferred=True)  # the listing thread's, every RECONCILE_EVERY
    assert list(mailbox.drain()) == [EngineLoad("a", 1, frozenset(), 1)]
    routed(counter, engine_event("remove", "y" * 64, "m2"))  # Podman's destroy
    assert list(mailbox.drain())[-1] == EngineLoad("a", 0, frozenset(), 1)


def test_the_end_of_ours_goes_with_the_next_change_of_the_others(counted):
    counter, mailbox = counted
    routed(counter, engine_event("create", "x" * 64), engine_event("create", "w" * 64),
           engine_event("create", "y" * 64, "m2"))
    assert list(mailbox.drain())[-1] == EngineLoad(
        "a", 3, frozenset({"xxx", "www"}), 1)
    routed(counter, engine_event("start", "x" * 64), engine_event("start", "y" * 64, "m2"))
    assert not list(mailbox.drain())  # counted since their create: no change, no count
    routed(counter, engine_event("die", "x" * 64))
    assert not list(mailbox.drain())  # placement reads the same: 1 other, x was counted
    routed(counter, engine_event("create", "v" * 64))  # a new one of ours: sent, with x's end
    assert list(mailbox.drain()) == [EngineLoad("a", 3, frozenset({"www", "vvv"}), 1)]
    routed(counter, engine_event("die", "w" * 64), engine_event("die", "y" * 64, "m2"))
    assert list(mailbox.drain())[-1] == EngineLoad("a", 1, frozenset({"vvv"}), 1)


def test_a_new_subscription_has_the_listing_thread_list_at_once(monkeypatch):
    mailbox = Mailbox()
    listed = threading.Event()

    class Engine:
        def containers(self, label):
            listed.set()
            return [{"Id": "y" * 64, "State": "running", "Labels": {"backend.manager": "m2"}}]

        def close(self):
            pass

    monkeypatch.setattr(_docker, "connect", lambda config: Engine())
    counter = LoadCounter(A, "m1", mailbox)
    with counter:
        counter.put(EventsCovered(time.time()))  # the follower's, on its thread: no listing
        assert listed.wait(RECONCILE_EVERY / 2)  # the counter's thread lists, not the event's
    try:
        deadline = time.monotonic() + 5
        while EngineLoad("a", 1, frozenset(), 1) not in list(mailbox.drain()):
            assert time.monotonic() < deadline
            time.sleep(0.01)
    finally:
        mailbox.close()


def test_events_during_a_listing_are_applied_over_its_answer(monkeypatch):
    mailbox = Mailbox()
    counter = LoadCounter(A, "m1", mailbox)

    class Engine:
        def containers(self, label):
            # the engine answers with what it had when asked; a die and a create come meanwhile
            counter.put(ContainerSeen("die", "old" + "0" * 61, "m2", "j-old"))
            counter.put(ContainerSeen("create", "new" + "0" * 61, "m1", "j-new"))
            return [{"Id": "old" + "0" * 61, "State": "running",
                     "Labels": {"backend.manager": "m2", "backend.job": "j-old"}},
                    {"Id": "gone" + "0" * 60, "State": "exited",
                     "Labels": {"backend.manager": "m2", "backend.job": "j-gone"}}]

        def close(self):
            pass

    counter._engine = Engine()
    try:
        counter.reconcile()
        assert list(mailbox.drain())[-1] == EngineLoad("a", 1, frozenset({"j-new"}), 0)
    finally:
        mailbox.close()
