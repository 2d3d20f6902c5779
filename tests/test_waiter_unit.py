"""The waiter's fault logic against a fake Docker client (fast; no engine)."""
import threading
import time

from backend import _docker, _waiter
from backend._config import parse_instances
from backend._task import merge_limits

[INSTANCE] = parse_instances([{"server_url": "unix:///fake.sock", "name": "fake"}])


def frame(stream, data):
    return bytes([stream, 0, 0, 0]) + len(data).to_bytes(4, "big") + data


class FakeResponse:
    def __init__(self, content):
        self.content = content


class FakeClient:
    """Answers like an engine where every container listed has exited."""

    def __init__(self, listed, events=()):
        self.listed = listed
        self.event_batches = list(events)
        self.since = []
        self.blocked = threading.Event()

    def containers(self, all=False, filters=None):
        return self.listed

    def inspect_container(self, container_id):
        return {"State": {"Running": False, "ExitCode": 0, "OOMKilled": False}}

    def _url(self, path, *args):
        return path.format(*args)

    def _get(self, url, params=None, **options):
        return FakeResponse(frame(1, b'{"result": "success"}\n') + frame(2, b"log\n"))

    def _raise_for_status(self, response):
        pass

    def events(self, since=None, **options):
        self.since.append(float(since))
        if not self.event_batches:
            self.blocked.wait()  # a quiet stream
        batch = self.event_batches.pop(0)
        if isinstance(batch, Exception):
            raise batch
        return iter(batch)


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
    waiter.handle_message(("watch", "j1", "c1", merge_limits({}), time.time(), False))
    [(kind, job_id, result)] = [m for m in connection.sent if m[0] == "done"]
    assert (kind, job_id, result["result"]) == ("done", "j1", "success")
    assert result["run"]["stderr"] == "log\n"


def test_a_vanished_container_ends_with_reason_removed(monkeypatch):
    waiter, connection = make_waiter(FakeClient([]), monkeypatch)
    waiter.handle_message(("watch", "j1", "c1", merge_limits({}), time.time(), False))
    [(_, _, result)] = [m for m in connection.sent if m[0] == "done"]
    assert result["result"] == "crash" and result["run"]["reason"] == "removed"


def test_a_running_container_is_left_alone_until_its_event(monkeypatch):
    waiter, connection = make_waiter(FakeClient([{"Id": "c1", "State": "running"}]),
                                     monkeypatch)
    waiter.handle_message(("watch", "j1", "c1", merge_limits({}), time.time(), False))
    assert not [m for m in connection.sent if m[0] == "done"]
    waiter.handle_note(("die", "c1", 0, time.time()))
    waiter.handle_note(("die", "c1", 0, time.time()))  # a replayed event changes nothing
    assert len([m for m in connection.sent if m[0] == "done"]) == 1


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
    assert ("die", "c1", 0, notes[1][3]) in notes and ("engine", False) in notes
    waiter.stopping = True
    client.blocked.set()
