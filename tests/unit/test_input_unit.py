"""The input path and the deadlines without an engine (fast): backend.docker._input on a socket pair,
and an idle event stream (backend.watch._events), which is subscribed again without saying the engine
is down."""
import socket
import threading
import time

from backend import docker as _docker
from backend.watch import _events
from backend.docker import _input
from backend.model._config import parse_instances
from backend.ipc._messages import EngineState, Mailbox

[INSTANCE] = parse_instances([{"server_url": "unix:///fake.sock", "name": "fake"}])


def socket_pair():
    ours, theirs = socket.socketpair()
    ours.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 65536)
    return ours, theirs


def read_all(sock: socket.socket) -> bytes:
    chunks = []
    while True:
        chunk = sock.recv(1 << 16)
        if not chunk:
            return b"".join(chunks)
        chunks.append(chunk)


def test_write_available_never_blocks_and_says_how_much_was_written():
    ours, theirs = socket_pair()
    with ours, theirs:
        data = b"x" * (8 << 20)  # far more than the buffers: nobody reads
        start = time.monotonic()
        written = _input.write_available(ours, data)
        assert 0 < written < len(data)
        assert time.monotonic() - start < 1
        assert _input.write_available(ours, b"") == 0


def test_write_available_after_the_reader_is_gone_wants_nothing_more():
    ours, theirs = socket_pair()
    theirs.close()
    with ours:
        assert _input.write_available(ours, b"x" * 100000) == 100000


def test_the_writer_writes_the_rest_then_half_closes_and_reading_goes_on():
    ours, theirs = socket_pair()
    with ours, theirs:
        data = bytes(range(256)) * 40000  # 10 MB
        written = _input.write_available(ours, data)
        writer = _input.start_writer(ours, data[written:], "c1")
        assert writer is not None
        assert read_all(theirs) == data  # end of file after the whole input
        assert writer.wait(5) and writer.written == len(data) - written
        theirs.sendall(b"output")  # the other direction still works (the follower's)
        assert ours.recv(100) == b"output"


def test_a_stopped_writer_ends_at_once_and_leaves_the_connection_to_the_reader():
    ours, theirs = socket_pair()
    with ours, theirs:
        writer = _input.start_writer(ours, b"x" * (8 << 20), "c1")
        assert writer is not None
        time.sleep(0.1)  # let it fill the buffers: nobody reads
        start = time.monotonic()
        writer.stop()
        assert writer.wait(2)
        assert time.monotonic() - start < 0.5
        writer.stop()  # again: nothing happens
        assert writer.written < 8 << 20
        theirs.sendall(b"still open")
        assert ours.recv(100) == b"still open"


def test_no_writer_for_nothing():
    ours, theirs = socket_pair()
    with ours, theirs:
        assert _input.start_writer(ours, b"", "c1") is None
        _input.stop_writer(None)


def test_write_within_stops_at_its_deadline_and_when_the_container_ended():
    ours, theirs = socket_pair()
    with ours, theirs:
        start = time.monotonic()
        written = _input.write_within(ours, b"x" * (8 << 20), time.monotonic() + 0.5,
                                      lambda: True)
        assert 0 < written < 8 << 20 and 0.4 < time.monotonic() - start < 1.5
        start = time.monotonic()
        _input.write_within(ours, b"x" * (8 << 20), time.monotonic() + 30, lambda: False)
        assert time.monotonic() - start < 2.5  # one stall check


class IdleStream:
    """An event stream that timed out once, then one that stays quiet."""

    def __init__(self, idle):
        self.idle = idle
        self.quiet = threading.Event()

    def __iter__(self):
        if not self.idle:
            self.quiet.wait(5)
        return iter(())

    def shutdown(self):
        self.quiet.set()

    def close(self):
        pass


class IdleClient:
    def __init__(self):
        self.subscriptions = 0
        self.resubscribed = threading.Event()

    def events(self, since, filters):
        self.subscriptions += 1
        if self.subscriptions > 1:
            self.resubscribed.set()
        return IdleStream(idle=self.subscriptions == 1)

    def close(self):
        pass


def test_an_idle_event_stream_is_subscribed_again_without_saying_the_engine_is_down(
        monkeypatch):
    client = IdleClient()
    monkeypatch.setattr(_docker, "connect", lambda *a, **k: client)
    mailbox = Mailbox()
    follower = _events.EventFollower(INSTANCE, "m1", mailbox)
    thread = threading.Thread(target=follower.run, daemon=True)
    thread.start()
    assert client.resubscribed.wait(5)
    follower.stop()
    thread.join(5)
    notes = list(mailbox.drain())
    assert EngineState("fake", False) not in notes[:-1]  # only the stop's own, at the end
    assert notes.count(EngineState("fake", True)) == 2
    mailbox.close()


def test_the_event_stream_has_a_read_timeout():
    assert 0 < _docker.EVENTS_IDLE_TIMEOUT <= 300
