"""The dispatcher's bookkeeping, without engines: children that died before their death is
seen, containers whose creation was not confirmed, removals on an engine that is down, close."""
import multiprocessing
import os
import logging
import queue
import time

from backend._config import parse_instances
from backend._dispatcher import _Child, _Dispatcher, _Job
from backend._results import failure_result
from backend._submitter import _JobSpec
from backend._task import LocalCheck, Task, snapshot_task

CONFIG, OTHER = parse_instances([
    {"server_url": "unix:///fake.sock", "name": "fake", "max_concurrent_jobs": 2},
    {"server_url": "unix:///other.sock", "name": "other", "max_concurrent_jobs": 2}])


class Process:
    pid = os.getpid()  # a process that runs: only its pipe is gone
    exitcode = None


def make_dispatcher(*configs):
    return _Dispatcher(multiprocessing.get_context("spawn"), list(configs or [CONFIG]), "m1",
                       "host:1", 1, queue.Queue(), None)


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


def enqueue(dispatcher):
    """A new job, queued as ``new_job`` queues it."""
    queued = job()
    dispatcher.jobs[queued.job_id] = queued
    dispatcher.queue.append(queued)
    return queued


def test_a_job_sent_to_a_dead_submitter_goes_to_another():
    dispatcher = make_dispatcher()
    dead, alive = worker(False), worker(True)
    dispatcher.workers = [alive, dead]  # the dead one is tried first (idle.pop())
    queued = enqueue(dispatcher)
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
    queued = enqueue(dispatcher)
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
    dispatcher.instances["fake"].deletions = ["c1", ("sweep",), "c2"]
    dispatcher._schedule()
    assert dispatcher.instances["fake"].deletions == ["c1", ("sweep",), "c2"]
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


def waiter_of(dispatcher):
    waiter = worker(True)
    waiter.kind, waiter.instance = "waiter", "fake"
    dispatcher.instances["fake"].waiters = [waiter]
    return waiter


def test_a_container_whose_creation_was_not_confirmed_is_removed_by_name():
    dispatcher = make_dispatcher(CONFIG, OTHER)
    dispatcher.instances["other"].running = 2  # full: the job goes to "fake"
    submitter = worker(True)
    dispatcher.workers = [submitter]
    waiter = waiter_of(dispatcher)
    queued = enqueue(dispatcher)
    dispatcher._schedule()
    _, instance, _, first_name = submitter.peer.recv()
    assert instance == "fake"
    assert first_name == f"backend-{queued.job_id}-1"
    # the engine stopped while answering the create: no container id, but it may exist
    dispatcher._from_submitter(submitter, ("failed", queued.job_id, "engine_unreachable",
                                           "did not answer", None, True, True))
    fake = dispatcher.instances["fake"]
    assert fake.deletions == [first_name] and not fake.reachable
    assert [r[2] for r in dispatcher.retries] == [first_name] * 3
    assert waiter.peer.recv() == ("probe",)  # its waiter checks, and reports either way
    assert list(dispatcher.queue) == [queued] and queued.state == "queued"
    dispatcher._schedule()  # nothing goes to an instance that does not answer
    assert submitter.holding is None and fake.deletions == [first_name]
    dispatcher._from_waiter(waiter, ("engine", "fake", True))
    dispatcher._schedule()
    # fake answers again, but the job waits for another engine; fake's removal goes now
    assert submitter.peer.recv() == ("delete", "fake", [first_name])
    dispatcher._from_submitter(submitter, ("deleted", "fake", [], True))
    dispatcher._schedule()
    assert list(dispatcher.queue) == [queued] and submitter.holding is None
    dispatcher.instances["other"].running = 0
    dispatcher._schedule()
    _, instance, _, second_name = submitter.peer.recv()
    assert instance == "other"
    assert second_name == f"backend-{queued.job_id}-2"  # the next attempt has its own name
    dispatcher._end(queued, failure_result("killed", "test"))
    close(dispatcher)


def test_removals_wait_while_the_engine_does_not_answer():
    dispatcher = make_dispatcher()
    submitter = worker(True)
    dispatcher.workers = [submitter]
    waiter = waiter_of(dispatcher)
    fake = dispatcher.instances["fake"]
    fake.deletions = ["c1", "c2"]
    dispatcher._schedule()
    assert submitter.peer.recv() == ("delete", "fake", ["c1", "c2"])
    dispatcher._from_submitter(submitter, ("deleted", "fake", ["c1", "c2"], False))
    assert not fake.reachable and waiter.peer.recv() == ("probe",)
    assert fake.deletions == ["c1", "c2"] and not dispatcher.deletion_tries  # none counted
    dispatcher._schedule()
    assert submitter.holding is None
    dispatcher._from_waiter(waiter, ("engine", "fake", True))
    dispatcher._schedule()
    assert submitter.peer.recv() == ("delete", "fake", ["c1", "c2"])
    close(dispatcher)


def test_a_submitter_that_dies_while_creating_leaves_the_name_to_remove():
    dispatcher = make_dispatcher()
    dispatcher._start_worker = lambda: worker(True)
    submitter = worker(True)
    dispatcher.workers = [submitter]
    queued = enqueue(dispatcher)
    dispatcher._schedule()
    dispatcher._replace(submitter)
    name = f"backend-{queued.job_id}-1"
    assert dispatcher.instances["fake"].deletions == [name]
    # its create goes on in the engine: a first removal may find nothing, so it is retried
    later = [due for due, instance, container, _ in dispatcher.retries if container == name]
    assert len(later) == 3 and min(later) > time.monotonic() + 1
    assert dispatcher.done_queue.get_nowait().result["run"]["reason"] == "start_failed"
    close(dispatcher)


def test_close_asks_each_engine_for_leftovers_then_stops():
    dispatcher = make_dispatcher()
    submitter = worker(True)
    dispatcher.workers = [submitter]
    dispatcher._command(("stop",))
    dispatcher._schedule()
    assert submitter.peer.recv() == ("leftovers", "fake") and not dispatcher.stopping
    dispatcher._from_submitter(submitter, ("deleted", "fake", [], True))
    dispatcher._schedule()
    assert dispatcher.stopping
    close(dispatcher)


def test_close_gives_up_on_an_engine_that_does_not_answer(caplog):
    dispatcher = make_dispatcher()
    dispatcher.workers = [worker(True)]
    fake = dispatcher.instances["fake"]
    fake.reachable, fake.deletions = False, ["c1"]
    dispatcher._command(("stop",))
    dispatcher._schedule()
    assert not dispatcher.stopping  # it may come back before the close deadline
    dispatcher.close_deadline = time.monotonic() - 1
    with caplog.at_level(logging.WARNING, logger="backend"):
        dispatcher._schedule()
    assert dispatcher.stopping
    assert "could not remove container c1 on fake" in caplog.text
    close(dispatcher)


def test_an_engine_that_could_not_be_reached_made_no_container():
    dispatcher = make_dispatcher(CONFIG, OTHER)
    submitter = worker(True)
    dispatcher.workers = [submitter]
    waiter_of(dispatcher)
    queued = enqueue(dispatcher)
    dispatcher._schedule()
    submitter.peer.recv()
    dispatcher._from_submitter(submitter, ("failed", queued.job_id, "engine_unreachable",
                                           "connection refused", None, True, False))
    assert not dispatcher.instances["fake"].deletions and not dispatcher.retries
    assert list(dispatcher.queue) == [queued]  # placed again, on "other"
    dispatcher._end(queued, failure_result("killed", "test"))
    close(dispatcher)


def test_a_listing_on_an_engine_that_stopped_answering_says_so():
    from backend._submitter import _Worker

    class Down:
        closed = False

        def containers(self, label):
            raise ConnectionRefusedError("down")

        def close(self):
            self.closed = True

    deleter = _Worker(None, [CONFIG], "m1", "host:1")
    client = deleter.clients["fake"] = Down()
    for kind in ("leftovers", "sweep"):
        deleter.clients["fake"] = client
        # not "the engine answered something unexpected": reported as unreachable
        assert deleter.delete(kind, "fake") == ([], False)
        assert client.closed and "fake" not in deleter.clients  # a new connection next time
