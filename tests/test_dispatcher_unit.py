"""The dispatcher's handling of a child that died before its death is seen (no engine)."""
import multiprocessing
import os
import queue

from backend._config import parse_instances
from backend._dispatcher import _Child, _Dispatcher, _Job
from backend._results import failure_result
from backend._submitter import _JobSpec
from backend._task import LocalCheck, Task, snapshot_task

[CONFIG] = parse_instances([{"server_url": "unix:///fake.sock", "name": "fake",
                             "max_concurrent_jobs": 2}])


class Process:
    pid = os.getpid()  # a process that runs: only its pipe is gone


def make_dispatcher():
    return _Dispatcher(multiprocessing.get_context("spawn"), [CONFIG], "m1", "host:1", 1,
                       queue.Queue(), None)


def close(dispatcher):
    for end in (dispatcher.lifeline, dispatcher.lifeline_writer):
        end.close()
    os.close(dispatcher.wake_r)
    os.close(dispatcher.wake_w)


def worker(alive):
    ours, theirs = multiprocessing.Pipe()
    if not alive:
        theirs.close()  # as when the process was SIGKILLed a moment ago
    child = _Child("submitter", Process(), ours)
    child.peer = theirs
    return child


def job(job_id="j1"):
    snapshot = snapshot_task(Task("image"), None)
    return _Job(job_id, Task("image"), print, LocalCheck(),
                _JobSpec(job_id, snapshot, b"{}\n"))


def test_a_job_sent_to_a_dead_submitter_goes_to_another():
    dispatcher = make_dispatcher()
    dead, alive = worker(False), worker(True)
    dispatcher.workers = [alive, dead]  # the dead one is tried first (idle.pop())
    queued = job()
    dispatcher.jobs[queued.job_id] = queued
    dispatcher.queue.append(queued)
    dispatcher._schedule()  # used to raise BrokenPipeError and end the dispatcher
    assert dead.broken and dead.holding is None
    assert alive.holding is queued and queued.state == "submitting" and queued.tries == 1
    assert dispatcher.instances["fake"].running == 1
    assert alive.peer.recv()[0] == "submit"
    close(dispatcher)


def test_a_job_waits_when_its_only_submitter_is_dead():
    dispatcher = make_dispatcher()
    dead = worker(False)
    dispatcher.workers = [dead]
    queued = job()
    dispatcher.jobs[queued.job_id] = queued
    dispatcher.queue.append(queued)
    dispatcher._schedule()
    assert list(dispatcher.queue) == [queued] and queued.state == "queued"
    assert dispatcher.instances["fake"].running == 0 and queued.tries == 0
    dispatcher._schedule()  # a broken submitter gets no more work
    assert list(dispatcher.queue) == [queued]
    close(dispatcher)


def test_deletions_sent_to_a_dead_submitter_are_kept():
    dispatcher = make_dispatcher()
    dead = worker(False)
    dispatcher.workers = [dead]
    dispatcher.instances["fake"].deletions = ["c1", ("job", "j9"), "c2"]
    dispatcher._schedule()
    assert dispatcher.instances["fake"].deletions == ["c1", ("job", "j9"), "c2"]
    assert dead.holding is None
    close(dispatcher)


def test_a_kill_for_a_dead_waiter_is_left_to_its_replacement():
    dispatcher = make_dispatcher()
    waiter = worker(False)
    waiter.kind = "waiter"
    running = job()
    running.state, running.instance = "running", "fake"
    dispatcher.jobs[running.job_id] = running
    dispatcher.instances["fake"].waiters = [waiter]
    waiter.jobs[running.job_id] = running
    dispatcher._kill(running)
    assert running.kill_requested and waiter.broken  # the replacement is told at its watch
    dispatcher._end(running, failure_result("killed", "test"))
    close(dispatcher)
