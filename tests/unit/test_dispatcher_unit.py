"""The dispatcher's bookkeeping, without engines: children that died before their death is
seen, containers whose creation was not confirmed, removals on an engine that is down, close;
and the submitter's removals on an engine that stopped answering."""
import logging
import multiprocessing
import os
import queue
import signal
import subprocess
import time

from backend import docker as _docker
from backend.model._config import parse_instances
from backend.dispatch._dispatcher import Dispatcher
from backend.job_manager import CHILD_MAINS
from backend.model._job import JobState, Job
from backend.ipc._messages import (Close, EngineState, Probe, Remove, Removed, RemoveLeftovers,
                                   StartFailed, Submit, Sweep)
from backend.model._job import JobSpec
from backend.model._results import failure_result
from backend.dispatch._supervisor import ChildKind, Child
from backend.model._task import LocalCheck, Task, snapshot_task

CONFIG, OTHER = parse_instances([
    {"server_url": "unix:///fake.sock", "name": "fake", "max_concurrent_jobs": 2},
    {"server_url": "unix:///other.sock", "name": "other", "max_concurrent_jobs": 2}])


class Process:
    pid = os.getpid()  # a process that runs: only its pipe is gone
    exitcode = None


def make_dispatcher(*configs):
    return Dispatcher(multiprocessing.get_context("spawn"), list(configs or [CONFIG]), "m1",
                       "host:1", 1, queue.Queue(), None, mains=CHILD_MAINS)


def close(dispatcher):
    for end in (dispatcher.supervisor.lifeline, dispatcher.supervisor.lifeline_writer):
        end.close()
    dispatcher.mailbox.close()


def submitter(alive):
    ours, theirs = multiprocessing.Pipe()
    if not alive:
        theirs.close()  # as when the process was SIGKILLed a moment ago
    child = Child(ChildKind.SUBMITTER, Process(), ours)
    child.peer = theirs
    return child


def job(job_id="j1"):
    snapshot = snapshot_task(Task("image"), None)
    return Job(job_id, Task("image"), print, LocalCheck(), JobSpec(job_id, snapshot, b"{}\n"))


def enqueue(dispatcher):
    """A new job, queued as ``new_job`` queues it."""
    queued = job()
    dispatcher.jobs[queued.job_id] = queued
    dispatcher.placement.add(queued)
    return queued


def test_a_job_sent_to_a_dead_submitter_goes_to_another():
    dispatcher = make_dispatcher()
    dead, alive = submitter(False), submitter(True)
    dispatcher.supervisor.submitters = [alive, dead]  # the dead one is tried first (pop())
    queued = enqueue(dispatcher)
    dispatcher._schedule()  # used to raise BrokenPipeError and end the dispatcher
    assert dead.broken and dead.holding is None
    assert alive.holding is queued and queued.state is JobState.SUBMITTING
    assert dispatcher.placement.attempts(queued) == 1
    assert dispatcher.placement.running["fake"] == 1
    assert isinstance(alive.peer.recv(), Submit)
    close(dispatcher)


def test_a_job_waits_when_its_only_submitter_is_dead():
    dispatcher = make_dispatcher()
    dead = submitter(False)
    dispatcher.supervisor.submitters = [dead]
    queued = enqueue(dispatcher)
    dispatcher._schedule()
    assert list(dispatcher.placement.queue) == [queued] and queued.state is JobState.QUEUED
    assert dispatcher.placement.running["fake"] == 0
    assert dispatcher.placement.attempts(queued) == 0
    dispatcher._schedule()  # a broken submitter gets no more work
    assert list(dispatcher.placement.queue) == [queued]
    close(dispatcher)


def test_removals_sent_to_a_dead_submitter_are_kept():
    dispatcher = make_dispatcher()
    dead = submitter(False)
    dispatcher.supervisor.submitters = [dead]
    for item in ("c1", "sweep", "c2"):
        if item == "sweep":
            dispatcher.removals.sweep("fake")
        else:
            dispatcher.removals.add("fake", item)
    dispatcher._schedule()
    assert dispatcher.removals.pending("fake") == ["c1", Sweep("fake"), "c2"]
    assert dead.holding is None
    close(dispatcher)


def test_a_kill_for_a_dead_waiter_is_left_to_its_replacement():
    dispatcher = make_dispatcher()
    waiter = submitter(False)
    waiter.kind, waiter.engine = ChildKind.WAITER, "fake"
    running = job()
    running.state, running.engine = JobState.RUNNING, "fake"
    dispatcher.jobs[running.job_id] = running
    dispatcher.supervisor.waiters["fake"] = [waiter]
    waiter.jobs[running.job_id] = running
    dispatcher._kill(running)
    assert running.kill_requested and waiter.broken  # the replacement is told at its watch
    dispatcher._end(running, failure_result("killed", "test"))
    close(dispatcher)


def waiter_of(dispatcher):
    waiter = submitter(True)
    waiter.kind, waiter.engine = ChildKind.WAITER, "fake"
    dispatcher.supervisor.waiters["fake"] = [waiter]
    return waiter


def test_a_container_whose_creation_was_not_confirmed_is_removed_by_name():
    dispatcher = make_dispatcher(CONFIG, OTHER)
    dispatcher.placement.running["other"] = 2  # full: the job goes to "fake"
    child = submitter(True)
    dispatcher.supervisor.submitters = [child]
    waiter = waiter_of(dispatcher)
    queued = enqueue(dispatcher)
    dispatcher._schedule()
    first = child.peer.recv()
    assert first.engine == "fake"
    assert first.container_name == f"backend-{queued.job_id}-1"
    # the engine stopped while answering the create: no container id, but it may exist
    dispatcher._read_message(child, StartFailed(queued.job_id, "engine_unreachable",
                                                "did not answer", None, True, True))
    removals = dispatcher.removals
    assert removals.pending("fake") == [first.container_name]
    assert not dispatcher.placement.is_reachable("fake")
    assert [r[2] for r in removals.retries()] == [first.container_name] * 3
    assert waiter.peer.recv() == Probe()  # its waiter checks, and reports either way
    assert list(dispatcher.placement.queue) == [queued] and queued.state is JobState.QUEUED
    dispatcher._schedule()  # nothing goes to an engine that does not answer
    assert child.holding is None and removals.pending("fake") == [first.container_name]
    dispatcher._read_message(waiter, EngineState("fake", True))
    dispatcher._schedule()
    # fake answers again, but the job waits for another engine; fake's removal goes now
    assert child.peer.recv() == Remove("fake", (first.container_name,))
    dispatcher._read_message(child, Removed("fake", (), True))
    dispatcher._schedule()
    assert list(dispatcher.placement.queue) == [queued] and child.holding is None
    dispatcher.placement.running["other"] = 0
    dispatcher._schedule()
    second = child.peer.recv()
    assert second.engine == "other"
    # the next attempt has its own name
    assert second.container_name == f"backend-{queued.job_id}-2"
    dispatcher._end(queued, failure_result("killed", "test"))
    close(dispatcher)


def test_removals_wait_while_the_engine_does_not_answer():
    dispatcher = make_dispatcher()
    child = submitter(True)
    dispatcher.supervisor.submitters = [child]
    waiter = waiter_of(dispatcher)
    removals = dispatcher.removals
    removals.add("fake", "c1")
    removals.add("fake", "c2")
    dispatcher._schedule()
    assert child.peer.recv() == Remove("fake", ("c1", "c2"))
    dispatcher._read_message(child, Removed("fake", ("c1", "c2"), False))
    assert not dispatcher.placement.is_reachable("fake") and waiter.peer.recv() == Probe()
    assert removals.pending("fake") == ["c1", "c2"] and not removals.retries()  # none counted
    dispatcher._schedule()
    assert child.holding is None
    dispatcher._read_message(waiter, EngineState("fake", True))
    dispatcher._schedule()
    assert child.peer.recv() == Remove("fake", ("c1", "c2"))
    close(dispatcher)


def test_a_submitter_that_dies_while_creating_leaves_the_name_to_remove():
    dispatcher = make_dispatcher()
    dispatcher.supervisor._start_submitter = lambda: submitter(True)
    child = submitter(True)
    dispatcher.supervisor.submitters = [child]
    queued = enqueue(dispatcher)
    dispatcher._schedule()
    dispatcher.losses.replace(child)
    name = f"backend-{queued.job_id}-1"
    assert dispatcher.removals.pending("fake") == [name]
    # its create goes on in the engine: a first removal may find nothing, so it is retried
    later = [due for due, engine, container in dispatcher.removals.retries()
             if container == name]
    assert len(later) == 3 and min(later) > time.monotonic() + 1
    assert dispatcher.done_queue.get_nowait().result["run"]["reason"] == "start_failed"
    close(dispatcher)


def test_close_asks_each_engine_for_leftovers_then_stops():
    dispatcher = make_dispatcher()
    child = submitter(True)
    dispatcher.supervisor.submitters = [child]
    dispatcher._on_close(Close())
    dispatcher._schedule()
    assert child.peer.recv() == RemoveLeftovers("fake") and not dispatcher.stopping
    dispatcher._read_message(child, Removed("fake", (), True))
    dispatcher._schedule()
    assert dispatcher.stopping
    close(dispatcher)


def test_close_gives_up_on_an_engine_that_does_not_answer(caplog):
    dispatcher = make_dispatcher()
    dispatcher.supervisor.submitters = [submitter(True)]
    dispatcher.placement.set_reachable("fake", False)
    dispatcher.removals.add("fake", "c1")
    dispatcher._on_close(Close())
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
    child = submitter(True)
    dispatcher.supervisor.submitters = [child]
    waiter_of(dispatcher)
    queued = enqueue(dispatcher)
    dispatcher._schedule()
    child.peer.recv()
    dispatcher._read_message(child, StartFailed(queued.job_id, "engine_unreachable",
                                                "connection refused", None, True, False))
    assert not dispatcher.removals.pending("fake") and not dispatcher.removals.retries()
    assert list(dispatcher.placement.queue) == [queued]  # placed again, on "other"
    dispatcher._end(queued, failure_result("killed", "test"))
    close(dispatcher)


def test_a_listing_on_an_engine_that_stopped_answering_says_so():
    from backend._submitter import _Submitter

    class Down:
        closed = False

        def containers(self, label, all_states=True):
            raise _docker.DockerFailure("engine_unreachable", "down", retryable=True)

        def close(self):
            self.closed = True

    removing = _Submitter(None, [CONFIG], "m1", "host:1")
    engine = Down()
    for request in (RemoveLeftovers("fake"), Sweep("fake")):
        removing.engines["fake"] = engine
        # not "the engine answered something unexpected": reported as unreachable
        assert removing.remove(request) == ([], False)
        assert engine.closed and "fake" not in removing.engines  # a new connection next time


def test_warm_containers_start_once_no_job_waited_for_a_second():
    """At a burst's end, no warm container takes the engine from the burst's last jobs: they
    start once no job waited for :data:`BURST_QUIET` seconds (docs/performance.rst, warm
    starts)."""
    from backend.dispatch._warm import BURST_QUIET

    [warm] = parse_instances([{"server_url": "unix:///fake.sock", "name": "fake",
                               "max_concurrent_jobs": 2, "warm_containers": 1}])
    dispatcher = make_dispatcher(warm)
    idle = submitter(alive=True)
    dispatcher.supervisor.submitters = [idle]
    try:
        starts = dispatcher.warm
        starts.pool.used("fake", job().spec, time.monotonic())  # a shape wanted warm there
        waiting = enqueue(dispatcher)  # a job waits for a slot or a submitter
        starts.replenish([idle], "m1")
        assert starts.start_due == starts.waited_at + BURST_QUIET and not idle.peer.poll()
        dispatcher.placement.withdraw(waiting)  # the queue is empty: the burst's tail runs
        starts.replenish([idle], "m1")
        assert not idle.peer.poll() and starts.next_due() == starts.waited_at + BURST_QUIET
        starts.waited_at -= BURST_QUIET  # a second later
        starts.replenish([idle], "m1")
        request = idle.peer.recv()
        assert isinstance(request, Submit) and request.warm and starts.start_due is None
    finally:
        idle.peer.close()
        close(dispatcher)


class Sleeper:
    """A real process to give up on (``Supervisor.abandon`` SIGKILLs it)."""

    def __init__(self):
        self.popen = subprocess.Popen(["sleep", "60"])
        self.pid = self.popen.pid
        self.exitcode = None

    def reap(self):
        return self.popen.wait(10)


def submitter_of(dispatcher, held, engine):
    """A submitter (a real process) that holds ``held``, sent to ``engine``."""
    child = submitter(True)
    child.process = Sleeper()
    if isinstance(held, Job):
        dispatcher.jobs[held.job_id] = held
        dispatcher.placement.add(held)
        dispatcher.placement.placed(held, engine)
        held.state, held.engine = JobState.SUBMITTING, engine
        held.container_name = f"backend-{held.job_id}-1"
    child.holding = held
    return child


def test_a_silent_engine_costs_its_submitters_their_requests_at_once():
    dispatcher = make_dispatcher(CONFIG, OTHER)
    creating = job("creating")
    on_silent = [submitter_of(dispatcher, creating, "fake"),
                 submitter_of(dispatcher, Remove("fake", ("c1",)), "fake")]
    elsewhere = submitter_of(dispatcher, Remove("other", ("c2",)), "other")
    idle = submitter(True)
    dispatcher.supervisor.submitters = on_silent + [elsewhere, idle]
    waiter = waiter_of(dispatcher)
    dispatcher._read_message(waiter, EngineState("fake", False))  # its probe got no answer
    assert not dispatcher.placement.is_reachable("fake")
    for child in on_silent:  # killed, their pipes closed, nothing they say counts
        assert child.abandoned and child.holding is None and child.connection.closed
        assert child.process.reap() == -signal.SIGKILL
    assert not elsewhere.abandoned and elsewhere.holding == Remove("other", ("c2",))
    # the job is placed again, first; the engine may have created its container: by name
    assert list(dispatcher.placement.queue) == [creating]
    assert creating.state is JobState.QUEUED and dispatcher.placement.running["fake"] == 0
    assert set(dispatcher.removals.pending("fake")) == {"c1", "backend-creating-1"}
    dispatcher._schedule()
    sent = idle.peer.recv()
    assert sent.engine == "other" and sent.container_name == "backend-creating-2"
    assert dispatcher.supervisor.waitables(on_silent) == [c.sentinel for c in on_silent
                                                          if c.sentinel is not None]
    dispatcher._end(creating, failure_result("killed", "test"))
    elsewhere.process.popen.kill()
    elsewhere.process.reap()
    close(dispatcher)


def test_a_job_on_a_silent_engine_alone_ends_engine_unreachable():
    dispatcher = make_dispatcher()
    creating, queued = job("creating"), job("queued")
    child = submitter_of(dispatcher, creating, "fake")
    dispatcher.supervisor.submitters = [child]
    dispatcher.jobs[queued.job_id] = queued
    dispatcher.placement.add(queued)
    dispatcher._read_message(waiter_of(dispatcher), EngineState("fake", False))
    dispatcher._schedule()
    assert child.process.reap() == -signal.SIGKILL
    ended = [dispatcher.done_queue.get_nowait() for _ in range(2)]
    assert {j.job_id for j in ended} == {"creating", "queued"}
    for one in ended:
        assert one.result["result"] == "crash"
        assert one.result["run"]["reason"] == "engine_unreachable"
        assert "fake" in one.result["text"]
    assert "unix:///fake.sock" in creating.result["text"]
    assert "health probe" in creating.result["text"]
    assert dispatcher.removals.pending("fake") == ["backend-creating-1"]
    close(dispatcher)


def test_a_job_that_cost_two_waiters_ends_instead_of_killing_a_third():
    """The second line of defence (docs/failures.rst): a container whose handling killed a
    waiter goes to its replacement once; if that one dies too, the job ends ``crash``
    (``handling_failed``) and the next replacement does not get it."""
    dispatcher = make_dispatcher()
    replacements = []

    def start_waiter(config):
        replacements.append(submitter(True))
        replacements[-1].kind, replacements[-1].engine = ChildKind.WAITER, "fake"
        return replacements[-1]

    dispatcher.supervisor._start_waiter = start_waiter
    waiter = waiter_of(dispatcher)
    running = enqueue(dispatcher)
    dispatcher.placement.placed(running, "fake")
    running.state, running.engine, running.container_id = JobState.RUNNING, "fake", "c1"
    running.started_at = time.time()
    waiter.jobs[running.job_id] = running
    dispatcher.losses.replace(waiter)  # the first death: handed to the replacement
    first = replacements[0]
    assert running.job_id in first.jobs and running.state is JobState.RUNNING
    assert first.peer.recv().job_id == running.job_id  # its Watch
    dispatcher.losses.replace(first)  # the second: it ends
    assert running.job_id not in replacements[1].jobs and not replacements[1].peer.poll()
    ended = dispatcher.done_queue.get_nowait()
    assert ended is running and running.result["result"] == "crash"
    assert running.result["run"]["reason"] == "handling_failed"
    assert "died 2 times" in running.result["text"]
    assert dispatcher.placement.running["fake"] == 0  # its slot is free
    close(dispatcher)


def test_a_message_that_raises_ends_its_job_alone(caplog):
    dispatcher = make_dispatcher()
    child = submitter(True)
    queued = enqueue(dispatcher)
    other = job("j2")
    dispatcher.jobs[other.job_id] = other
    dispatcher._replies.table[StartFailed] = lambda child, message: 1 / 0
    with caplog.at_level(logging.ERROR, logger="backend"):
        dispatcher._read_message(child, StartFailed(queued.job_id, "start_failed", "x", None,
                                                    False, False))
    assert dispatcher.done_queue.get_nowait() is queued
    assert queued.result["run"]["reason"] == "handling_failed"
    assert "ZeroDivisionError" in queued.result["text"] and "ZeroDivisionError" in caplog.text
    assert other.state is JobState.QUEUED and dispatcher.done_queue.empty()
    close(dispatcher)


def test_a_submitter_request_that_raises_ends_that_job_alone(monkeypatch):
    """Anything a create or a removal raises besides DockerFailure (an engine's answer of an
    unexpected shape) is that request's failure, never the submitter's end."""
    from backend._submitter import _Submitter

    class Odd:
        closed = False

        def containers(self, label, all_states=True):
            return [{"no": "Id"}]

        def close(self):
            self.closed = True

    def create_and_start(engine, *args, **kwargs):
        raise KeyError("Id")

    monkeypatch.setattr(_docker, "create_and_start", create_and_start)
    serving = _Submitter(None, [CONFIG], "m1", "host:1")
    serving.engines["fake"] = engine = Odd()
    reply, stream = serving.submit(Submit("fake", job().spec, "backend-j1-1"))
    assert isinstance(reply, StartFailed) and stream is None
    assert (reply.reason, reply.maybe_created) == ("start_failed", True)
    assert "KeyError" in reply.text and engine.closed  # a new connection next time
    serving.engines["fake"] = engine = Odd()
    assert serving.remove(RemoveLeftovers("fake")) == ([], True)
    assert engine.closed


def _served_warm_with_files(dispatcher, alive):
    """A raw job with files, queued, and a warm container of its shape waiting (its attach
    one end of a socket pair): the dispatcher sends the job's files to ``alive``."""
    import socket
    from backend.model._files import check_files
    task = Task("image", protocol="raw")
    spec = JobSpec("j1", snapshot_task(task, None), b"in", check_files({"a": "a"}))
    queued = Job("j1", task, print, LocalCheck(), spec)
    dispatcher.jobs[queued.job_id] = queued
    pool = dispatcher.warm.pool
    pool.used("fake", spec, time.monotonic())
    container = pool.wanted("fake", time.monotonic(), "m1")
    attach, engine_side = socket.socketpair()
    pool.started(container.warm_id, "warm-id", attach.detach(), time.monotonic())
    dispatcher.placement.add(queued)
    dispatcher.supervisor.submitters = [alive]
    dispatcher._schedule()
    request = alive.peer.recv()
    assert isinstance(request, Submit) and request.into == "warm-id"
    assert alive.holding is queued and queued.state is JobState.SUBMITTING and queued.warm
    return queued, engine_side


def test_a_warm_containers_files_failing_to_be_written_closes_its_attach():
    config = parse_instances([{"server_url": "unix:///fake.sock", "name": "fake",
                               "warm_containers": 1}])[0]
    dispatcher = make_dispatcher(config)
    alive = submitter(True)
    queued, engine_side = _served_warm_with_files(dispatcher, alive)
    dispatcher._read_message(alive, StartFailed("j1", "start_failed", "refused", "warm-id",
                                                False, False))
    assert engine_side.recv(1) == b""  # the dispatcher's end of the attach is closed
    assert not dispatcher.warm.filling and alive.holding is None
    assert queued.state is JobState.DONE and queued.result["run"]["reason"] == "start_failed"
    assert "warm-id" in str(dispatcher.removals.request("fake"))  # the warm container goes
    engine_side.close()
    close(dispatcher)


def test_a_submitter_dying_while_writing_a_warm_jobs_files_closes_its_attach():
    config = parse_instances([{"server_url": "unix:///fake.sock", "name": "fake",
                               "warm_containers": 1}])[0]
    dispatcher = make_dispatcher(config)
    alive = submitter(True)
    queued, engine_side = _served_warm_with_files(dispatcher, alive)
    dispatcher.supervisor.replace = lambda child: child  # no new process in a unit test
    dispatcher.losses.replace(alive)
    assert engine_side.recv(1) == b"" and not dispatcher.warm.filling
    assert queued.state is JobState.DONE and queued.result["run"]["reason"] == "start_failed"
    engine_side.close()
    close(dispatcher)


TLS_CONFIG = parse_instances([{"server_url": "tcp://fake:2376", "name": "fake",
                               "warm_containers": 1}])[0]


def _served_warm_over_tls(dispatcher, submitters):
    """A JSON job, queued, and a warm container of its shape waiting with no attach (as over
    TLS): a submitter of ``submitters``, if one is idle, is sent the job to attach to it."""
    queued = enqueue(dispatcher)
    pool = dispatcher.warm.pool
    pool.used("fake", queued.spec, time.monotonic())
    container = pool.wanted("fake", time.monotonic(), "m1")
    pool.started(container.warm_id, "warm-id", None, time.monotonic())
    dispatcher.supervisor.submitters = submitters
    dispatcher._schedule()
    return queued, container


def test_over_tls_a_warm_served_job_waits_for_a_submitter_to_attach():
    dispatcher = make_dispatcher(TLS_CONFIG)
    queued, container = _served_warm_over_tls(dispatcher, [])
    assert queued.state is JobState.QUEUED and dispatcher.warm.pool.ready["fake"] == [container]
    alive = submitter(True)
    dispatcher.supervisor.submitters = [alive]
    dispatcher._schedule()
    request = alive.peer.recv()
    assert isinstance(request, Submit) and (request.into, request.gate) == ("warm-id", False)
    assert queued.state is JobState.SUBMITTING and queued.warm and not dispatcher.placement.queue
    close(dispatcher)


def test_over_tls_a_warm_container_found_ended_serves_its_job_cold():
    dispatcher = make_dispatcher(TLS_CONFIG)
    alive = submitter(True)
    queued, container = _served_warm_over_tls(dispatcher, [alive])
    assert isinstance(alive.peer.recv(), Submit) and queued.state is JobState.SUBMITTING
    dispatcher.supervisor.submitters = []  # the cold start is not sent in this test
    dispatcher._read_message(alive, StartFailed("j1", "start_failed", "it is exited",
                                                "warm-id", False, False, warm_gone=True))
    assert queued.state is JobState.QUEUED and not queued.warm
    assert list(dispatcher.placement.queue) == [queued]
    assert dispatcher.placement.attempts(queued) == 0 and dispatcher.placement.running["fake"] == 0
    assert "warm-id" in str(dispatcher.removals.request("fake"))  # the dead one goes
    assert dispatcher.warm.pool.wanted("fake", time.monotonic(), "m1") is None  # forgotten
    assert dispatcher.warm.pool.hits["fake"] == 0  # it served none
    close(dispatcher)


def test_a_killed_job_whose_warm_container_had_ended_ends_killed():
    dispatcher = make_dispatcher(TLS_CONFIG)
    alive = submitter(True)
    queued, container = _served_warm_over_tls(dispatcher, [alive])
    dispatcher._kill(queued)  # while submitting: the kill would go with the Watch
    dispatcher._read_message(alive, StartFailed("j1", "start_failed", "it is exited",
                                                "warm-id", False, False, warm_gone=True))
    assert queued.state is JobState.DONE and queued.result["result"] == "killed"
    assert dispatcher.placement.running["fake"] == 0
    close(dispatcher)


def test_a_warm_take_given_up_on_a_silent_engine_leaves_no_warm_entry():
    """Its job is placed again cold: it must not be handed the warm container's attach."""
    dispatcher = make_dispatcher(TLS_CONFIG)
    alive = submitter(True)
    alive.process = Sleeper()
    queued, container = _served_warm_over_tls(dispatcher, [alive])
    assert dispatcher.warm.filling and alive.holding is queued
    dispatcher.losses.abandon("fake")
    assert alive.process.reap() == -signal.SIGKILL
    assert not dispatcher.warm.filling and queued.state is JobState.QUEUED
    assert container.name in set(dispatcher.removals.pending("fake"))  # by its name
    dispatcher._end(queued, failure_result("killed", "test"))
    close(dispatcher)
