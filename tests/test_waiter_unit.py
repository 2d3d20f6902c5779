"""The waiter's fault logic against a fake Docker client (fast; no engine)."""
import threading
import time

import pytest

from backend import _docker, _waiter
from backend._config import parse_instances
from backend._messages import EngineState, JobEnded, Probe, Watch
from backend._task import merge_limits

[INSTANCE] = parse_instances([{"server_url": "unix:///fake.sock", "name": "fake"}])


def frame(stream, data):
    return bytes([stream, 0, 0, 0]) + len(data).to_bytes(4, "big") + data


class FakeClient:
    """Answers like an engine where every container listed has exited."""

    def __init__(self, listed, events=()):
        self.listed = listed
        self.event_batches = list(events)
        self.since = []
        self.blocked = threading.Event()
        self.listings = 0
        self.closed = False

    def close(self):
        self.closed = True

    def containers(self, label, all_states=True):
        self.listings += 1
        return self.listed

    def inspect(self, container_id):
        return {"State": {"Running": False, "ExitCode": 0, "OOMKilled": False}}

    def logs(self, container_id):
        return _docker.demultiplex(frame(1, b'{"result": "success"}\n') + frame(2, b"log\n"))

    def events(self, since, filters):
        self.since.append(float(since))
        if not self.event_batches:
            self.blocked.wait()  # a quiet stream
        batch = self.event_batches.pop(0)
        if isinstance(batch, Exception):
            raise batch
        return None, iter(batch)


class Connection:
    def __init__(self):
        self.sent = []

    def send(self, message):
        self.sent.append(message)


def make_waiter(client, monkeypatch):
    connection = Connection()
    waiter = _waiter._Waiter(connection, INSTANCE, "m1")
    waiter.client = client
    monkeypatch.setattr(waiter, "start_follower", lambda watched: None)
    return waiter, connection


def test_reconcile_finishes_a_job_whose_die_event_was_lost(monkeypatch):
    client = FakeClient([{"Id": "c1", "State": "exited"}])
    waiter, connection = make_waiter(client, monkeypatch)
    waiter.handle_message(Watch("j1", "c1", merge_limits({}), time.time(), False, False))
    [(job_id, result)] = [m for m in connection.sent if isinstance(m, JobEnded)]
    assert (job_id, result["result"]) == ("j1", "success")
    assert result["run"]["stderr"] == "log\n"


def test_a_vanished_container_ends_with_reason_removed(monkeypatch):
    waiter, connection = make_waiter(FakeClient([]), monkeypatch)
    waiter.handle_message(Watch("j1", "c1", merge_limits({}), time.time(), False, False))
    [(_, result)] = [m for m in connection.sent if isinstance(m, JobEnded)]
    assert result["result"] == "crash" and result["run"]["reason"] == "removed"


def test_a_running_container_is_left_alone_until_its_event(monkeypatch):
    waiter, connection = make_waiter(FakeClient([{"Id": "c1", "State": "running"}]),
                                     monkeypatch)
    waiter.handle_message(Watch("j1", "c1", merge_limits({}), time.time(), False, False))
    assert not [m for m in connection.sent if isinstance(m, JobEnded)]
    waiter.handle_note(("die", "c1", 0, time.time()))
    waiter.handle_note(("die", "c1", 0, time.time()))  # a replayed event changes nothing
    assert len([m for m in connection.sent if isinstance(m, JobEnded)]) == 1


def test_event_stream_resumes_with_since(monkeypatch):
    event_time = time.time() + 100
    client = FakeClient([], events=[
        [{"Action": "die", "id": "c1", "timeNano": int(event_time * 1e9),
          "Actor": {"Attributes": {"exitCode": "0"}}}],
        ConnectionError("socket closed"),
    ])
    monkeypatch.setattr(_docker, "connect", lambda *a, **k: client)
    waiter, _ = make_waiter(client, monkeypatch)
    started = time.time()
    threading.Thread(target=waiter.follow_events, daemon=True).start()
    deadline = time.monotonic() + 10
    while len(client.since) < 3:
        assert time.monotonic() < deadline
        time.sleep(0.01)
    assert started - 2 < client.since[0] <= started
    assert abs(client.since[1] - event_time) < 1e-3  # after the stream ended
    assert abs(client.since[2] - event_time) < 1e-3  # after the stream failed
    notes = list(waiter.notes)
    [die] = [note for note in notes if note[0] == "die"]
    assert die[:3] == ("die", "c1", 0) and ("engine", False) in notes
    assert ("events", client.since[0]) in notes  # the time our events cover from
    waiter.stopping = True
    client.blocked.set()


def test_a_die_event_before_the_watch_message_ends_the_job_without_a_listing(monkeypatch):
    client = FakeClient([{"Id": "c1", "State": "running"}])
    waiter, connection = make_waiter(client, monkeypatch)
    waiter.handle_note(("events", time.time() - 1))
    waiter.handle_note(("die", "c1", 0, time.time()))  # a short job: it ended first
    waiter.handle_message(Watch("j1", "c1", merge_limits({}), time.time(), False, False))
    [(job_id, result)] = [m for m in connection.sent if isinstance(m, JobEnded)]
    assert (job_id, result["result"]) == ("j1", "success")
    assert client.listings == 0 and not waiter.early_notes


def test_a_job_older_than_our_events_is_looked_up_at_once(monkeypatch):
    """A replacement waiter's events do not cover a job started before it: it lists."""
    client = FakeClient([{"Id": "c1", "State": "exited"}])
    waiter, connection = make_waiter(client, monkeypatch)
    waiter.handle_note(("events", time.time()))
    waiter.handle_message(Watch("j1", "c1", merge_limits({}), time.time() - 30, False, False))
    assert client.listings == 1
    assert [m.job_id for m in connection.sent if isinstance(m, JobEnded)] == ["j1"]


def test_early_events_are_forgotten_after_a_while(monkeypatch):
    waiter, _ = make_waiter(FakeClient([]), monkeypatch)
    clock = [1000.0]
    monkeypatch.setattr(_waiter.time, "monotonic", lambda: clock[0])
    waiter.handle_note(("die", "old", 0, time.time()))
    clock[0] += _waiter._EARLY_NOTES_KEPT + 1
    waiter.handle_note(("die", "new", 0, time.time()))
    assert list(waiter.early_notes) == ["new"]


def watched_with_stream(waiter, output=b"", stderr=b""):
    """A watched job whose output came on its own stream (as the submitter passes it)."""
    watched = _waiter._Watched("j1", "c1", merge_limits({}), time.time())
    watched.stream_state = "open"
    watched.stdout += output
    watched.stderr_head += stderr
    waiter.watched["c1"] = watched
    waiter.by_job["j1"] = "c1"
    return watched


def test_a_job_with_its_own_stream_is_collected_without_reading_the_log(monkeypatch):
    client = FakeClient([])
    client.logs = lambda container_id: pytest.fail("the log was read")
    waiter, connection = make_waiter(client, monkeypatch)
    watched_with_stream(waiter, b'{"result": "failed", "text": "from the stream"}\n', b"err\n")
    waiter.handle_note(("die", "c1", 0, time.time()))
    assert not connection.sent  # ended, but the stream's last bytes may still come
    waiter.handle_note(("stream_end", "c1", "complete"))
    [(job_id, result)] = [m for m in connection.sent if isinstance(m, JobEnded)]
    assert (result["result"], result["text"]) == ("failed", "from the stream")
    assert result["run"]["stderr"] == "err\n"


def test_a_stream_that_does_not_end_falls_back_to_the_log(monkeypatch):
    waiter, connection = make_waiter(FakeClient([{"Id": "c1", "State": "exited"}]), monkeypatch)
    watched = watched_with_stream(waiter, b"partial")
    waiter.handle_note(("die", "c1", 0, time.time()))
    assert watched.pending_end is not None and not connection.sent
    clock = [time.monotonic() + _waiter.STREAM_GRACE + 1]
    monkeypatch.setattr(_waiter.time, "monotonic", lambda: clock[0])
    waiter.poll()
    [(_, result)] = [m for m in connection.sent if isinstance(m, JobEnded)]
    assert result["result"] == "success" and result["run"]["stderr"] == "log\n"  # the log's


def test_an_output_flood_keeps_head_and_tail_of_stderr(monkeypatch):
    waiter, _ = make_waiter(FakeClient([]), monkeypatch)
    watched = _waiter._Watched("j1", "c1", merge_limits({"output": 100}), time.time())
    waiter.watched["c1"] = watched
    frames = [(2, b"HEAD" + b"x" * 96)] + [(2, b"y" * 50)] * 10 + [(2, b"TAIL")]

    class Stream:
        reader = None

        def close(self):
            pass

    monkeypatch.setattr(_docker, "parse_frames", lambda reader: iter(frames))
    waiter.follow_output(watched, Stream())
    notes = list(waiter.notes)
    assert ("overflow", "c1") in notes and ("stream_end", "c1", "complete") in notes
    assert bytes(watched.stderr_head).startswith(b"HEAD") and len(watched.stderr_head) == 100
    assert bytes(watched.stderr_tail).endswith(b"TAIL") and len(watched.stderr_tail) == 100


class DownClient(FakeClient):
    """An engine that does not answer until ``up`` is set."""

    up = False

    def containers(self, label, all_states=True):
        self.listings += 1
        if not self.up:
            raise ConnectionRefusedError("down")
        return self.listed


def test_a_probe_reports_the_engine_even_when_nothing_changed(monkeypatch):
    old, new = FakeClient([]), FakeClient([])
    waiter, connection = make_waiter(old, monkeypatch)
    monkeypatch.setattr(_docker, "connect", lambda instance: new)
    waiter.set_reachable(True)
    connection.sent.clear()
    waiter.poll()  # nothing watched, the engine answers: no listing, nothing to say
    assert old.listings == 0 and connection.sent == []
    # a submitter saw the engine fail, the dispatcher marked it down: it must hear back
    waiter.handle_message(Probe())
    assert connection.sent == [EngineState("fake", True)]
    # looked at on a new connection: a stopping engine still serves those it has
    assert old.closed and new.listings == 1 and old.listings == 0


def test_an_idle_waiter_reports_an_engine_back(monkeypatch):
    client = DownClient([])
    waiter, connection = make_waiter(client, monkeypatch)
    monkeypatch.setattr(_docker, "connect", lambda instance: client)
    waiter.handle_message(Probe())
    assert connection.sent == [EngineState("fake", False)]
    waiter.poll()  # still down: nothing new
    assert connection.sent == [EngineState("fake", False)] and client.listings == 2
    client.up = True
    waiter.poll()  # nothing watched, but the engine is in doubt: it is looked at
    assert connection.sent[-1] == EngineState("fake", True)
