"""The waiter's fault logic against a fake engine (fast; no engine): its main loop
(backend._waiter), its event thread (backend.watch._events) and an output follower (backend.watch._follower)."""
import os
import socket
import threading
import time

import pytest

from backend import _waiter
from backend import docker as _docker
from backend.watch import _events
from backend.ipc import _messages
from backend.watch import _follower as _output
from backend.watch import _container as _watched
from backend.model._config import parse_instances
from backend.ipc._messages import (ContainerSeen, DockerEvent, EngineLoad, EngineState,
                                   EventsCovered, JobEnded, Mailbox, OutputOverflow, Probe, Watch)
from backend.model._task import merge_limits
from backend.ipc._waitset import readable
from helpers import engine_event

[INSTANCE] = parse_instances([{"server_url": "unix:///fake.sock", "name": "fake"}])


def frame(stream, data):
    return bytes([stream, 0, 0, 0]) + len(data).to_bytes(4, "big") + data


def down(text="down"):
    """What the Docker layer raises for an engine that does not answer."""
    return _docker.DockerFailure("engine_unreachable", text, retryable=True)


class FakeStream:
    """An output or event stream giving ``items``."""

    def __init__(self, items=()):
        self.items = list(items)
        self.closed = False
        self.idle = False  # an event stream that timed out (see EventStream.idle)

    def frames(self):
        return iter(self.items)

    def __iter__(self):
        return iter(self.items)

    def shutdown(self):
        pass

    def close(self):
        self.closed = True


class FakeClient:
    """Answers like an engine where every container listed has exited."""

    def __init__(self, listed, events=()):
        self.listed = listed
        self.event_batches = list(events)
        self.since = []
        self.blocked = threading.Event()
        self.listings = 0
        self.closed = False
        self.disk = {}  # bytes in each container's writable layer (default 0)

    def close(self):
        self.closed = True

    def containers(self, label, all_states=True):
        self.listings += 1
        return self.listed

    def inspect(self, container_id):
        return {"State": {"Running": False, "ExitCode": 0, "OOMKilled": False}}

    def disk_used(self, container_id):
        size = self.disk.get(container_id, 0)
        if isinstance(size, Exception):
            raise size
        return size

    def logs(self, container_id):
        return _docker.demultiplex(frame(1, b'{"result": "success"}\n') + frame(2, b"log\n"))

    def attach_output(self, container_id):
        return FakeStream()

    def events(self, since, filters):
        self.since.append(float(since))
        self.filters = filters
        if not self.event_batches:
            self.blocked.wait()  # a quiet stream
            return FakeStream()
        batch = self.event_batches.pop(0)
        if isinstance(batch, Exception):
            raise batch
        return FakeStream(batch)


class Connection:
    def __init__(self):
        self.sent = []

    def send(self, message):
        self.sent.append(message)


def make_waiter(client, monkeypatch):
    connection = Connection()
    waiter = _waiter._Waiter(connection, INSTANCE, "m1")
    waiter.link.docker = client
    return waiter, connection


def watch(job_id="j1", container_id="c1", started_at=None, limits=None):
    return Watch(job_id, container_id, limits or merge_limits({}),
                 time.time() if started_at is None else started_at, False, False)


def ended(connection):
    return [m for m in connection.sent if isinstance(m, JobEnded)]


def test_reconcile_finishes_a_job_whose_die_event_was_lost(monkeypatch):
    client = FakeClient([{"Id": "c1", "State": "exited"}])
    waiter, connection = make_waiter(client, monkeypatch)
    waiter.handle_message(watch())
    [(job_id, result)] = ended(connection)
    assert (job_id, result["result"]) == ("j1", "success")
    assert result["run"]["stderr"] == "log\n"


def test_a_vanished_container_ends_with_reason_removed(monkeypatch):
    waiter, connection = make_waiter(FakeClient([]), monkeypatch)
    waiter.handle_message(watch())
    [(_, result)] = ended(connection)
    assert result["result"] == "crash" and result["run"]["reason"] == "removed"


def test_a_running_container_is_left_alone_until_its_event(monkeypatch):
    waiter, connection = make_waiter(FakeClient([{"Id": "c1", "State": "running"}]),
                                     monkeypatch)
    waiter.handle_message(watch())
    assert not ended(connection)
    waiter.handle_note(DockerEvent("die", "c1", 0, time.time()))
    waiter.handle_note(DockerEvent("die", "c1", 0, time.time()))  # a replay changes nothing
    assert len(ended(connection)) == 1


def test_event_stream_resumes_with_since(monkeypatch):
    event_time = time.time() + 100
    client = FakeClient([], events=[
        [{"Action": "die", "id": "c1", "timeNano": int(event_time * 1e9),
          "Actor": {"Attributes": {"exitCode": "0", "backend.manager": "m1"}}}],
        down("socket closed"),
    ])
    monkeypatch.setattr(_docker, "connect", lambda *a, **k: client)
    mailbox = Mailbox()
    follower = _events.EventFollower(INSTANCE, "m1", mailbox)
    started = time.time()
    thread = threading.Thread(target=follower.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while len(client.since) < 3:
        assert time.monotonic() < deadline
        time.sleep(0.01)
    assert started - 2 < client.since[0] <= started
    assert abs(client.since[1] - event_time) < 1e-3  # after the stream ended
    assert abs(client.since[2] - event_time) < 1e-3  # after the stream failed
    notes = list(mailbox.drain())
    [die] = [note for note in notes if isinstance(note, DockerEvent)]
    assert die[:3] == ("die", "c1", 0) and EngineState("fake", False) in notes
    assert EventsCovered(client.since[0]) in notes  # the time our events cover from
    follower.stop()
    client.blocked.set()
    thread.join(5)
    mailbox.close()


def test_a_die_event_before_the_watch_message_ends_the_job_without_a_listing(monkeypatch):
    client = FakeClient([{"Id": "c1", "State": "running"}])
    waiter, connection = make_waiter(client, monkeypatch)
    waiter.handle_note(EventsCovered(time.time() - 1))
    waiter.handle_note(DockerEvent("die", "c1", 0, time.time()))  # a short job: it ended first
    waiter.handle_message(watch())
    [(job_id, result)] = ended(connection)
    assert (job_id, result["result"]) == ("j1", "success")
    assert client.listings == 0 and not waiter.early_events


def test_a_job_older_than_our_events_is_looked_up_at_once(monkeypatch):
    """A replacement waiter's events do not cover a job started before it: it lists."""
    client = FakeClient([{"Id": "c1", "State": "exited"}])
    waiter, connection = make_waiter(client, monkeypatch)
    waiter.handle_note(EventsCovered(time.time()))
    waiter.handle_message(watch(started_at=time.time() - 30))
    assert client.listings == 1
    assert [job_id for job_id, _ in ended(connection)] == ["j1"]


def test_early_events_are_forgotten_after_a_while(monkeypatch):
    waiter, _ = make_waiter(FakeClient([]), monkeypatch)
    clock = [1000.0]
    monkeypatch.setattr(_waiter.time, "monotonic", lambda: clock[0])
    waiter.handle_note(DockerEvent("die", "old", 0, time.time()))
    clock[0] += _events.EARLY_EVENTS_KEPT + 1
    waiter.handle_note(DockerEvent("die", "new", 0, time.time()))
    assert list(waiter.early_events) == ["new"]


def own_attach(*frames):
    """A job's own attach as the submitter hands it over (a socket), and the engine's end of
    it, which has sent ``frames``."""
    ours, engine = socket.socketpair()
    engine.sendall(b"".join(frame(number, data) for number, data in frames))
    return _docker.adopt_stream(ours.detach()), engine


def watched_with_stream(waiter, output=b"", stderr=b""):
    """A watched job whose output came on its own attach, read by the waiter's loop (the
    attach stays open: the engine's end is returned)."""
    frames = [(_docker.STDOUT, output)] if output else []
    frames += [(_docker.STDERR, stderr)] if stderr else []
    stream, engine = own_attach(*frames)
    follower = _output.OutputFollower("c1", merge_limits({})["output"], waiter.mailbox, stream)
    watched = _watched.WatchedContainer("j1", "c1", merge_limits({}), time.time(), follower)
    waiter.watched["c1"] = watched
    waiter.by_job["j1"] = "c1"
    pump_while_readable(waiter, watched)
    return watched, engine


def pump_while_readable(waiter, watched):
    """What the waiter's loop does with a job's attach while it has something to read."""
    while watched.follower.reading and readable(watched.follower.fileno()):
        waiter.pump(watched)


def test_a_job_with_its_own_stream_is_collected_without_reading_the_log(monkeypatch):
    client = FakeClient([])
    client.logs = lambda container_id: pytest.fail("the log was read")
    waiter, connection = make_waiter(client, monkeypatch)
    watched, engine = watched_with_stream(
        waiter, b'{"result": "failed", "text": "from the stream"}\n', b"err\n")
    waiter.handle_note(DockerEvent("die", "c1", 0, time.time()))
    assert not connection.sent  # ended, but the stream's last bytes may still come
    engine.close()
    pump_while_readable(waiter, watched)
    assert watched.follower.state is _output.StreamState.COMPLETE
    [(job_id, result)] = ended(connection)
    assert (result["result"], result["text"]) == ("failed", "from the stream")
    assert result["run"]["stderr"] == "err\n"


def test_a_stream_that_does_not_end_falls_back_to_the_log(monkeypatch):
    waiter, connection = make_waiter(FakeClient([{"Id": "c1", "State": "exited"}]), monkeypatch)
    watched, engine = watched_with_stream(waiter, b"partial")
    waiter.handle_note(DockerEvent("die", "c1", 0, time.time()))
    assert watched.ending.pending is not None and not connection.sent
    clock = [time.monotonic() + _waiter.STREAM_GRACE + 1]
    monkeypatch.setattr(_waiter.time, "monotonic", lambda: clock[0])
    waiter.poller.poll()
    [(_, result)] = ended(connection)
    assert result["result"] == "success" and result["run"]["stderr"] == "log\n"  # the log's
    assert not watched.follower.reading  # closed
    engine.close()


def test_an_output_flood_keeps_head_and_tail_of_stderr():
    mailbox = Mailbox()
    frames = [(2, b"HEAD" + b"x" * 96)] + [(2, b"y" * 50)] * 10 + [(2, b"TAIL")]
    stream, engine = own_attach(*frames)
    engine.close()
    follower = _output.OutputFollower("c1", 100, mailbox, stream)
    overflows = []
    while follower.reading:
        assert readable(follower.fileno())
        overflows.append(follower.pump())
    mailbox.close()
    assert overflows.count(True) == 1  # one kill
    assert follower.state is _output.StreamState.COMPLETE
    _, stderr = follower.collected()
    head, tail = follower._stderr_head, follower._stderr_tail
    assert bytes(head).startswith(b"HEAD") and len(head) == 100
    assert bytes(tail).endswith(b"TAIL") and len(tail) == 100
    assert stderr.startswith(b"HEAD") and stderr.endswith(b"TAIL")


def test_an_attach_that_breaks_is_not_complete():
    """An own attach that fails (not its end of file) is closed; its log is read instead."""
    stream, engine = own_attach((1, b"some"))
    follower = _output.OutputFollower("c1", 100, Mailbox(), stream)
    follower.pump()

    def broken():
        raise down("reset by peer")

    stream.frames_now = broken
    follower.pump()
    assert follower.state is _output.StreamState.BROKEN and not follower.reading
    assert stream.sock.fileno() == -1
    engine.close()


def test_a_late_follower_that_overflows_says_so_once():
    mailbox = Mailbox()
    stream, engine = own_attach((1, b"x" * 60), (1, b"y" * 60), (1, b"z" * 60))
    engine.close()
    follower = _output.OutputFollower("c1", 100, mailbox)
    follower.run(lambda container_id: stream)
    assert list(mailbox.drain()) == [OutputOverflow("c1")]
    mailbox.close()


def test_a_late_follower_that_fails_to_attach_says_nothing():
    """Without its own stream, a follower's end is not news: the log is read at the end."""
    mailbox = Mailbox()
    follower = _output.OutputFollower("c1", 100, mailbox)

    def attach(container_id):
        raise down()

    follower.run(attach)
    assert list(mailbox.drain()) == [] and follower.state is _output.StreamState.NONE
    mailbox.close()


class DownClient(FakeClient):
    """An engine that does not answer until ``up`` is set."""

    up = False

    def containers(self, label, all_states=True):
        self.listings += 1
        if not self.up:
            raise down()
        return self.listed


def test_a_probe_reports_the_engine_even_when_nothing_changed(monkeypatch):
    old, new = FakeClient([]), FakeClient([])
    waiter, connection = make_waiter(old, monkeypatch)
    monkeypatch.setattr(_docker, "connect", lambda instance, **options: new)
    waiter.set_reachable(True)
    connection.sent.clear()
    waiter.poller.poll()  # nothing watched, the engine answers: no listing, nothing to say
    assert old.listings == 0 and connection.sent == []
    # a submitter saw the engine fail, the dispatcher marked it down: it must hear back
    waiter.handle_message(Probe())
    assert connection.sent == [EngineState("fake", True)]
    # looked at on a new connection: a stopping engine still serves those it has
    assert old.closed and new.listings == 1 and old.listings == 0


def test_an_idle_waiter_reports_an_engine_back(monkeypatch):
    client = DownClient([])
    waiter, connection = make_waiter(client, monkeypatch)
    monkeypatch.setattr(_docker, "connect", lambda instance, **options: client)
    waiter.handle_message(Probe())
    assert connection.sent == [EngineState("fake", False)]
    waiter.poller.poll()  # still down: nothing new
    assert connection.sent == [EngineState("fake", False)] and client.listings == 2
    client.up = True
    waiter.poller.poll()  # nothing watched, but the engine is in doubt: it is looked at
    assert connection.sent[-1] == EngineState("fake", True)


def test_an_error_answer_to_a_listing_does_not_mark_the_engine_unreachable(monkeypatch,
                                                                          caplog):
    class Refusing(FakeClient):
        def containers(self, label, all_states=True):
            self.listings += 1
            raise _docker.DockerFailure("start_failed", "host fake answered 500", False)

    client = Refusing([])
    waiter, connection = make_waiter(client, monkeypatch)
    monkeypatch.setattr(_docker, "connect", lambda instance, **options: client)
    waiter.handle_message(Probe())
    waiter.handle_message(Probe())
    assert connection.sent == [] and client.listings == 2 and waiter.link.docker is client
    warnings = [r for r in caplog.records if "answered 500" in r.getMessage()]
    assert len(warnings) == 1 and warnings[0].exc_info is None  # one line, once


# -- one event stream for the waiter and its load counter --------------------------------

class Recorder:
    """Stands for the load counter: what the follower gives it."""

    def __init__(self):
        self.notes = []

    def put(self, note):
        self.notes.append(note)


def test_one_stream_is_routed_to_the_waiter_and_to_the_load_counter(monkeypatch):
    unlabelled = {"Action": "die", "id": "u1", "Actor": {"Attributes": {"exitCode": "0"}}}
    client = FakeClient([], events=[[
        engine_event("create", "c1", "m1"), engine_event("start", "c1", "m1"),
        engine_event("create", "o1", "m2"), engine_event("oom", "c1", "m1"),
        engine_event("kill", "c1", "m1"), engine_event("die", "c1", "m1", exitCode="137"),
        engine_event("die", "o1", "m2", exitCode="0"), unlabelled,
        engine_event("destroy", "c1", "m1"), engine_event("remove", "o1", "m2")]])
    monkeypatch.setattr(_docker, "connect", lambda *a, **k: client)
    mailbox, counter = Mailbox(), Recorder()
    follower = _events.EventFollower(INSTANCE, "m1", mailbox, counter)
    thread = threading.Thread(target=follower.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while len(client.since) < 2:  # the batch was read; the next subscription is quiet
        assert time.monotonic() < deadline
        time.sleep(0.01)
    follower.stop()
    client.blocked.set()
    thread.join(5)
    # no label filter (Podman's by a key alone matches nothing); both readers' actions
    assert client.filters == {"type": ["container"], "event": list(_events.FOLLOWED)}
    assert set(_docker.CONTAINER_EVENTS) | {"create", "remove"} <= set(
        client.filters["event"])
    assert "start" not in client.filters["event"]  # a container counts from its create
    notes = list(mailbox.drain())
    # ours only, the waiter's actions, in the engine's order
    assert [(n.action, n.container_id, n.exit_code) for n in notes
            if isinstance(n, DockerEvent)] == [("oom", "c1", None), ("kill", "c1", None),
                                               ("die", "c1", 137), ("destroy", "c1", None)]
    # every manager's, the counter's actions (Podman's remove too); none unlabelled
    assert [(n.action, n.container_id, n.manager) for n in counter.notes
            if isinstance(n, ContainerSeen)] == [
        ("create", "c1", "m1"), ("create", "o1", "m2"), ("die", "c1", "m1"), ("die", "o1", "m2"), ("destroy", "c1", "m1"),
        ("remove", "o1", "m2")]
    for sink in (notes, counter.notes):  # each subscription, and its end, to both
        assert EventsCovered(client.since[0]) in sink and EngineState("fake", True) in sink
        assert EngineState("fake", False) in sink
    mailbox.close()


def test_the_waiter_sends_only_the_last_engine_load_of_a_drain(monkeypatch):
    waiter, connection = make_waiter(FakeClient([]), monkeypatch)
    first = EngineLoad("fake", 1, frozenset({"ja"}), 0)
    last = EngineLoad("fake", 2, frozenset({"ja", "jb"}), 0)
    waiter.mailbox.put(first)
    waiter.mailbox.put(EngineState("fake", True))
    waiter.mailbox.put(last)
    waiter.handle_notes()
    assert connection.sent == [EngineState("fake", True), last]
    waiter.mailbox.put(first)
    waiter.handle_notes()  # a later drain: sent again
    assert connection.sent[-1] == first
    waiter.mailbox.close()


def test_a_mailbox_wakes_its_reader_once_per_drain():
    mailbox = Mailbox()
    try:
        assert not readable(mailbox.fileno())
        mailbox.put("a")
        mailbox.put("b")  # the reader is woken already: no second byte
        assert os.read(mailbox.fileno(), 16) == b"!"  # one byte for both
        assert list(mailbox.drain()) == ["a", "b"] and not readable(mailbox.fileno())
        mailbox.put("c")  # after a drain: woken again
        assert readable(mailbox.fileno()) and list(mailbox.drain()) == ["c"]
        mailbox.put("d")
        draining = mailbox.drain()
        assert next(draining) == "d"
        mailbox.put("e")  # while draining: woken again (this drain may take it or not)
        assert readable(mailbox.fileno()) and list(draining) == ["e"]
        assert list(mailbox.drain()) == [] and not readable(mailbox.fileno())
        mailbox.put("f")  # and the wake-ups go on
        assert readable(mailbox.fileno()) and list(mailbox.drain()) == ["f"]
    finally:
        mailbox.close()


def test_a_put_during_the_drains_read_still_wakes_the_next_time(monkeypatch):
    """A put from another thread while drain() reads the pipe: the next put wakes again."""
    mailbox = Mailbox()
    real_read = os.read

    def read(fd, size):
        if fd == mailbox.fileno() and not during:
            during.append(mailbox.put("during"))  # as a writer thread may, just now
        return real_read(fd, size)

    during = []
    monkeypatch.setattr(_messages.os, "read", read)
    try:
        mailbox.put("first")
        assert list(mailbox.drain()) == ["first", "during"]
        mailbox.put("after")
        assert readable(mailbox.fileno()), "a message left without a wake-up"
        assert list(mailbox.drain()) == ["after"]
    finally:
        mailbox.close()


# -- the disk watch (docs/security.rst) ------------------------------------------------------
class KillRecorder:
    def __init__(self):
        self.killed = []

    def __call__(self, watched, reason):
        watched.ending.reason = watched.ending.reason or reason
        self.killed.append((watched.job_id, reason))


def test_a_job_that_ended_over_its_disk_limit_is_overflow_disk(monkeypatch):
    client = FakeClient([{"Id": "c1", "State": "exited"}])
    client.disk["c1"] = merge_limits({})["disk"] + 1
    waiter, connection = make_waiter(client, monkeypatch)
    waiter.handle_message(watch())
    [(_, result)] = ended(connection)
    assert (result["result"], result["run"]["reason"]) == ("overflow", "disk")
    assert "1073741824 bytes in all" in result["text"]


def test_a_job_at_its_disk_limit_succeeds(monkeypatch):
    client = FakeClient([{"Id": "c1", "State": "exited"}])
    client.disk["c1"] = merge_limits({})["disk"]
    waiter, connection = make_waiter(client, monkeypatch)
    waiter.handle_message(watch())
    [(_, result)] = ended(connection)
    assert result["result"] == "success" and result["run"]["reason"] is None


def test_the_poll_kills_a_running_job_over_its_disk_limit(monkeypatch):
    client = FakeClient([{"Id": "c1", "State": "running"}, {"Id": "c2", "State": "running"}])
    limits = merge_limits({"disk": 1000})
    client.disk.update(c1=1001, c2=1000)
    waiter, connection = make_waiter(client, monkeypatch)
    monkeypatch.setattr(waiter, "kill", KillRecorder())
    waiter.handle_message(watch("j1", "c1", limits=limits))
    waiter.handle_message(watch("j2", "c2", limits=limits))
    waiter.poller.poll()
    assert waiter.kill.killed == [("j1", "disk")]
    assert waiter.watched["c1"].disk_seen == 1001


def test_an_engine_error_on_a_size_check_skips_it(monkeypatch):
    client = FakeClient([{"Id": "c1", "State": "running"}])
    client.disk["c1"] = down()
    waiter, connection = make_waiter(client, monkeypatch)
    monkeypatch.setattr(waiter, "kill", KillRecorder())
    waiter.handle_message(watch())
    waiter.poller.poll()
    assert waiter.kill.killed == [] and not ended(connection)


class SlowSizes:
    """An engine whose size checks take ``cost`` seconds of a fake clock."""

    def __init__(self, clock, cost, size=0):
        self.clock, self.cost, self.size, self.calls = clock, cost, size, 0

    def disk_used(self, container_id):
        self.calls += 1
        self.clock[0] += self.cost
        return self.size


def test_a_costly_size_check_comes_back_later(monkeypatch):
    clock = [100.0]
    monkeypatch.setattr(_watched.time, "monotonic", lambda: clock[0])
    one = _watched.WatchedContainer("j1", "c1", merge_limits({"disk": 10}), time.time(), None)
    engine = SlowSizes(clock, cost=0.2)
    assert not one.check_disk(engine, 0.5, clock[0])
    assert one.disk_due_at == pytest.approx(100.0 + _watched.DISK_COST_RATIO * 0.2)
    assert not one.check_disk(engine, 0.5, 101.0) and engine.calls == 1  # not due yet
    for cost in (0.01, 1.0):  # a cheap answer after a costly one, then a slow one after it:
        engine.cost = cost    # the cheaper of the last two counts
        clock[0] = now = one.disk_due_at
        assert not one.check_disk(engine, 0.5, now) and engine.calls in (2, 3)
        assert one.disk_due_at == pytest.approx(now + 0.5)
    cheap = _watched.WatchedContainer("j2", "c2", merge_limits({"disk": 10}), time.time(), None)
    engine = SlowSizes(clock, cost=0.001, size=11)
    start = clock[0]
    assert cheap.check_disk(engine, 0.5, start)
    assert cheap.disk_due_at == pytest.approx(start + 0.5)


def test_a_size_check_comes_back_within_the_longest_period(monkeypatch):
    clock = [100.0]
    monkeypatch.setattr(_watched.time, "monotonic", lambda: clock[0])
    one = _watched.WatchedContainer("j1", "c1", merge_limits({"disk": 10}), time.time(), None)
    assert not one.check_disk(SlowSizes(clock, cost=2.0), 0.5, clock[0])
    assert one.disk_due_at == pytest.approx(100.0 + _watched.DISK_MAX_PERIOD)


@pytest.mark.parametrize("period, cost, room, rate, expected", [
    (0.5, 0.2, 10**9, None, 2.0),  # the cost's stretch
    (0.5, 0.001, 10**9, None, 0.5),  # the poll's period
    (0.5, 0.2, 10**9, 0.0, 2.0), (0.5, 0.2, 10**9, -5.0, 2.0),  # not growing
    (0.5, 0.2, 10**8, 10**8, 1.0),  # growing fast: when it would reach its limit
    (0.5, 0.2, 10**6, 10**8, _watched.DISK_MIN_PERIOD),  # about to reach it: before the poll
    (0.5, 0.2, -10, 10**8, _watched.DISK_MIN_PERIOD),  # over it already
    (0.5, 9.0, 10**9, 10**3, _watched.DISK_MAX_PERIOD),  # slow growth, costly checks
])
def test_the_next_size_check_comes_sooner_when_growing_fast(period, cost, room, rate, expected):
    assert _watched.disk_delay(period, cost, room, rate) == pytest.approx(expected)


def test_a_container_growing_fast_is_checked_sooner(monkeypatch):
    clock = [100.0]
    monkeypatch.setattr(_watched.time, "monotonic", lambda: clock[0])
    one = _watched.WatchedContainer("j1", "c1", merge_limits({"disk": 1000}), time.time(), None)
    engine = SlowSizes(clock, cost=0.2, size=100)
    assert not one.check_disk(engine, 0.1, clock[0])
    assert one.disk_due_at == pytest.approx(100.0 + _watched.DISK_COST_RATIO * 0.2)
    clock[0] = now = one.disk_due_at
    engine.size = 600  # 500 bytes in 2 s: the 400 left take 1.6 s, sooner than 2 s
    assert not one.check_disk(engine, 0.1, now)
    assert one.disk_due_at - now == pytest.approx(400 / (500 / 2.0))
    clock[0] = now = one.disk_due_at
    engine.size = 1001
    assert one.check_disk(engine, 0.1, now) and one.disk_seen == 1001


class FailingSizes:
    def disk_used(self, container_id):
        raise _docker.DockerFailure("engine_unreachable", "no answer", retryable=True)


def test_a_failed_size_check_waits_for_the_next_poll(monkeypatch):
    """No busy loop between polls on an engine that fails the check at once."""
    clock = [100.0]
    monkeypatch.setattr(_watched.time, "monotonic", lambda: clock[0])
    one = _watched.WatchedContainer("j1", "c1", merge_limits({"disk": 10}), time.time(), None)
    one.disk_last = (99.0, 5)
    with pytest.raises(_docker.DockerFailure):
        one.check_disk(FailingSizes(), 0.5, clock[0])
    assert one.disk_due_at == pytest.approx(100.5)


# -- hostile output: one job's bytes end that job alone (docs/failures.rst) ------------------

def test_a_job_whose_result_cannot_be_made_ends_alone(monkeypatch):
    """Whatever raises while a job's result is made (here the log of c1) ends that job with
    crash, bad_output; the waiter goes on and the next job is collected as usual."""
    client = FakeClient([{"Id": "c1", "State": "running"}, {"Id": "c2", "State": "running"}])
    logs = client.logs
    client.logs = lambda container_id: (_ for _ in ()).throw(RecursionError("deep")) \
        if container_id == "c1" else logs(container_id)
    waiter, connection = make_waiter(client, monkeypatch)
    waiter.handle_message(watch("j1", "c1"))
    waiter.handle_message(watch("j2", "c2"))
    waiter.handle_note(DockerEvent("die", "c1", 0, time.time()))
    waiter.handle_note(DockerEvent("die", "c2", 0, time.time()))
    results = dict(ended(connection))
    assert (results["j1"]["result"], results["j1"]["run"]["reason"]) == ("crash", "bad_output")
    assert "RecursionError" in results["j1"]["text"]
    assert results["j2"]["result"] == "success" and not waiter.watched


def test_a_result_that_is_not_json_ends_with_bad_output(monkeypatch):
    client = FakeClient([{"Id": "c1", "State": "running"}])
    monkeypatch.setattr(_watched, "ended_result", lambda *args: {
        "result": "failed", "text": "", "problems": {}, "run": {}, "x": float("nan")})
    waiter, connection = make_waiter(client, monkeypatch)
    waiter.handle_message(watch())
    waiter.handle_note(DockerEvent("die", "c1", 0, time.time()))
    [(_, result)] = ended(connection)
    assert (result["result"], result["run"]["reason"]) == ("crash", "bad_output")


def test_a_stream_that_raises_ends_its_job_alone(monkeypatch):
    client = FakeClient([])
    client.kill = lambda container_id: None
    waiter, connection = make_waiter(client, monkeypatch)
    watched, engine = watched_with_stream(waiter, b"x")
    monkeypatch.setattr(watched.follower, "pump", lambda: 1 / 0)
    waiter.pump(watched)
    [(_, result)] = ended(connection)
    assert (result["result"], result["run"]["reason"]) == ("crash", "bad_output")
    assert not waiter.watched and not watched.follower.reading
    engine.close()


@pytest.mark.parametrize("event", [
    {"Action": "die", "id": "c1", "Actor": {"Attributes": {"exitCode": "x",
                                                           "backend.manager": "m1"}}},
    {"Action": "die", "id": "c1", "Actor": "not a dict"},
    {"Action": "die", "id": "c1", "time": "soon"},
    ["not", "an", "object"],
])
def test_an_event_that_cannot_be_decoded_is_skipped(event):
    mailbox = Mailbox()
    follower = _events.EventFollower(INSTANCE, "m1", mailbox)
    follower.routed(event)  # skipped, or routed with the field it lacks as unknown
    assert follower.routed(engine_event("die", "c2x", exitCode="3")) == 1000
    notes = list(mailbox.drain())
    assert notes[-1][:3] == ("die", "c2x", 3)
    assert all(note.exit_code is None for note in notes[:-1])
    mailbox.close()
