"""Engines that accept connections and never answer (a hung daemon, a dead proxy), beside a good
engine and alone: the waiters' health probe finds them within seconds, their jobs go to the
good engine or end ``engine_unreachable``, and an engine that answers again is used again.
Three kinds of silence: a server that accepts and never answers, a proxy to a real engine that
stops passing bytes (then passes them again), and a real ``dockerd`` stopped with SIGSTOP."""
import os
import signal
import threading
import time
from concurrent import futures

import pytest

from backend import JobManager
from backend.watch._probe import PROBE_EVERY, PROBE_TIMEOUT
from backend.dispatch._supervisor import STOP_GRACE
from backend._waiter import ENGINE_LOST_AFTER
from helpers import PREFIX, Proxy, SocketServer, ok_script, shell, wait_for

#: Seconds for the probe to find an engine silent, at most.
FOUND = PROBE_EVERY + PROBE_TIMEOUT
#: Seconds of slack for a loaded machine (2 cores shared with other test runs).
SLACK = 6.0


class PausableProxy(Proxy):
    """A proxy to an engine that can stop passing bytes (:meth:`pause`: it still accepts
    connections) and pass them again (:meth:`resume`)."""

    def __init__(self, engine_url):
        self.flowing = threading.Event()
        self.flowing.set()
        self.closed = False
        super().__init__(engine_url)

    def pause(self):
        self.flowing.clear()

    def resume(self):
        self.flowing.set()

    def passes(self):
        while not self.flowing.wait(0.1):  # paused: the bytes wait here
            if self.closed:
                return False
        return True

    def close(self):
        self.closed = True
        self.flowing.set()
        super().close()


def instance(url, name):
    return {"server_url": url, "name": name, "container_prefix": PREFIX,
            "time_between_polls": 0.2}


def timed(manager, count, script=ok_script()):
    """Runs ``count`` jobs at once; their ``(seconds to the verdict, result)``."""
    start = time.monotonic()
    futures = [manager.submit(shell(script), {"i": i}) for i in range(count)]
    return [(f.result(timeout=100), time.monotonic() - start)[::-1] for f in futures]


def closed_in(manager):
    start = time.monotonic()
    manager.close()
    return time.monotonic() - start


def reachable(manager, engine):
    return manager.stats()["engines"][engine]["reachable"]


@pytest.fixture
def silent():
    server = SocketServer()
    yield server
    server.close()


@pytest.fixture
def proxy(engines):
    created = PausableProxy(engines[0].url)
    yield created
    created.close()


@pytest.mark.timeout(150)
def test_jobs_placed_on_a_silent_engine_go_to_the_good_one_within_seconds(engines, silent):
    good = instance(engines[0].url, "e1")
    with JobManager([good], process_pool_size=4) as manager:
        timed(manager, 6)  # as below: a second batch, with the first one's removals
        alone = max(seconds for seconds, _ in timed(manager, 6))
    manager = JobManager([instance(silent.url, "silent"), good], process_pool_size=4)
    try:
        first = timed(manager, 6)  # half of them placed on the silent engine at first
        assert not reachable(manager, "silent")
        later = timed(manager, 6)  # once it is known silent
    finally:
        closing = closed_in(manager)
    print(f"\nalone {alone:.2f} s; beside a silent engine: first "
          f"{max(s for s, _ in first):.2f} s, later {max(s for s, _ in later):.2f} s; "
          f"close {closing:.2f} s")
    for seconds, result in first + later:
        assert result["result"] == "success" and result["run"]["host"] == "e1", result
    assert max(s for s, _ in first) < alone + FOUND + SLACK  # was API_TIMEOUT (30 s) + alone
    assert max(s for s, _ in later) < alone + 2.0
    assert closing < 2 * STOP_GRACE + SLACK  # abandoned creates: removals by name held


@pytest.mark.timeout(120)
def test_jobs_on_a_silent_engine_alone_end_within_seconds(silent):
    manager = JobManager([instance(silent.url, "silent")], process_pool_size=2)
    try:
        first = timed(manager, 3)
        later = timed(manager, 2)
    finally:
        closing = closed_in(manager)
    print(f"\nalone and silent: first {max(s for s, _ in first):.2f} s, later "
          f"{max(s for s, _ in later):.2f} s; close {closing:.2f} s")
    for seconds, result in first + later:
        assert result["result"] == "crash", result
        assert result["run"]["reason"] == "engine_unreachable"
        assert result["run"]["host"] in ("silent", None) and "silent" in result["text"]
    assert max(s for s, _ in first) < FOUND + SLACK  # was API_TIMEOUT (30 s)
    assert max(s for s, _ in later) < 1.0
    assert closing < 2 * STOP_GRACE + SLACK


@pytest.mark.timeout(150)
def test_an_engine_that_stops_answering_is_left_then_used_again(engines, proxy):
    instances = [instance(proxy.url, "p1"), instance(engines[1].url, "e2")]
    with JobManager(instances, process_pool_size=2) as manager:
        long = [manager.submit(shell(ok_script("sleep 60; ")), {}) for _ in range(2)]
        dispatcher = manager._dispatcher
        wait_for(lambda: dispatcher.placement.running == {"p1": 1, "e2": 1}
                 and all(w.jobs for ws in dispatcher.supervisor.waiters.values()
                         for w in ws), 30, "one long job running on each engine")
        proxy.pause()
        paused = time.monotonic()
        wait_for(lambda: not reachable(manager, "p1"), FOUND + SLACK, "p1 found silent")
        found = time.monotonic() - paused
        beside = timed(manager, 3)  # none waits for p1
        done, _ = futures.wait(long, ENGINE_LOST_AFTER + FOUND + SLACK,
                               return_when=futures.FIRST_COMPLETED)
        assert done, "the job running on p1 did not end"
        lost = done.pop()
        lost_after = time.monotonic() - paused
        proxy.resume()
        resumed = time.monotonic()
        wait_for(lambda: reachable(manager, "p1"), FOUND + SLACK, "p1 used again")
        back = time.monotonic() - resumed
        for future in long:
            manager.kill_job(future.job_id)
        again = timed(manager, 6)
    print(f"\nproxy paused: found silent in {found:.2f} s, running job lost after "
          f"{lost_after:.2f} s, jobs beside {max(s for s, _ in beside):.2f} s; "
          f"resumed: reachable in {back:.2f} s")
    result = lost.result()
    assert result["result"] == "crash" and result["run"]["reason"] == "engine_lost"
    assert result["run"]["host"] == "p1"
    for seconds, result in beside:
        assert result["result"] == "success" and result["run"]["host"] == "e2", result
    assert max(s for s, _ in beside) < 5.0
    assert {result["run"]["host"] for _, result in again} == {"p1", "e2"}
    assert all(result["result"] == "success" for _, result in again)


@pytest.mark.timeout(150)
def test_a_stopped_dockerd_is_left_then_used_again(engines):
    """A real hung daemon: SIGSTOP of e2's dockerd, jobs submitted at once (some placed on
    it before the probe tells), then SIGCONT."""
    instances = [instance(engines[0].url, "e1"), instance(engines[1].url, "e2")]
    with JobManager(instances, process_pool_size=4) as manager:
        timed(manager, 2)  # both engines in use
        os.kill(engines[1].pid, signal.SIGSTOP)
        try:
            stopped = timed(manager, 6)
            assert not reachable(manager, "e2")
        finally:
            os.kill(engines[1].pid, signal.SIGCONT)
        resumed = time.monotonic()
        wait_for(lambda: reachable(manager, "e2"), FOUND + SLACK, "e2 used again")
        back = time.monotonic() - resumed
        again = timed(manager, 6)
    print(f"\ndockerd stopped: jobs in {max(s for s, _ in stopped):.2f} s; continued: "
          f"reachable in {back:.2f} s")
    for seconds, result in stopped:
        assert result["result"] == "success" and result["run"]["host"] == "e1", result
    assert max(s for s, _ in stopped) < FOUND + SLACK  # was API_TIMEOUT (30 s) + run
    assert {result["run"]["host"] for _, result in again} == {"e1", "e2"}
