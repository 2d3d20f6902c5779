"""The health probe without Docker: a server that accepts and never answers, then one that
answers ``/_ping``; the client's calls ended from another thread; a waiter whose probe found
its engine silent makes no call that would wait."""
import threading
import time

import pytest

from backend import _waiter
from backend import docker as _docker
from backend.watch import _probe
from backend.model._config import parse_instances
from backend.docker._http import Client
from backend.ipc._messages import EngineState, Mailbox
from helpers import SocketServer


class Server(SocketServer):
    """A TCP server on 127.0.0.1: silent, or answering each request with ``OK`` while
    :attr:`answer` is set."""

    def __init__(self, answer=False):
        self.answer = answer
        super().__init__(backlog=64)

    def connected(self, client):
        self.thread(self._serve, client)

    def _serve(self, client):
        while True:
            try:
                if not client.recv(65536):
                    return
                if self.answer:
                    client.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nOK")
            except OSError:
                return


@pytest.fixture
def silent():
    server = Server()
    yield server
    server.close()


def config(url):
    [instance] = parse_instances([{"server_url": url, "name": "s1"}])
    return instance


def next_note(mailbox, timeout):
    """The next message put in ``mailbox``, waited for on its descriptor."""
    import select
    poller = select.poll()
    poller.register(mailbox.fileno(), select.POLLIN)
    assert poller.poll(timeout * 1000), "nothing in the mailbox"
    return next(iter(mailbox.drain()))


@pytest.mark.timeout(30)
def test_the_probe_finds_a_silent_engine_and_hears_it_answer_again(silent, monkeypatch):
    monkeypatch.setattr(_probe, "PROBE_EVERY", 0.1)
    mailbox, silences = Mailbox(), []
    probe = _probe.HealthProbe(config(silent.url), mailbox, lambda: silences.append(1))
    start = time.monotonic()
    probe.start()
    try:
        note = next_note(mailbox, 10)
        assert note[:2] == ("s1", False) and "did not answer" in note.why, note
        found = time.monotonic() - start
        assert _probe.PROBE_TIMEOUT <= found < _probe.PROBE_TIMEOUT + 2
        assert probe.silent and silences == [1]
        silent.answer = True  # new connections are answered
        assert next_note(mailbox, 10) == EngineState("s1", True)
        assert not probe.silent and silences == [1]
    finally:
        probe.stop()
        mailbox.close()


@pytest.mark.timeout(30)
@pytest.mark.parametrize("reused", [False, True])
def test_abort_ends_a_call_in_progress_at_once(silent, reused):
    client = Client(silent.url, timeout=30)
    outcome = []
    if reused:  # a keep-alive connection, which a failed call would otherwise send again on
        silent.answer = True
        client.call("GET", "/_ping")
        silent.answer = False

    def call():
        start = time.monotonic()
        try:
            client.call("GET", "/containers/json")
        except OSError as error:
            outcome.append((error, time.monotonic() - start))

    thread = threading.Thread(target=call)
    thread.start()
    deadline = time.monotonic() + 10
    while not client._calls or not silent.sockets:  # the request is on its way
        assert time.monotonic() < deadline
        time.sleep(0.01)
    client.abort()
    thread.join(5)
    [(error, seconds)] = outcome
    assert seconds < 5 and isinstance(error, ConnectionError)
    assert not client._calls and len(silent.sockets) == 1  # not sent again on a new connection
    client.close()


def test_a_waiter_makes_no_call_to_an_engine_its_probe_found_silent(monkeypatch):
    class Connection:
        sent = []

        def send(self, message):
            self.sent.append(message)

    class Http:
        aborted = 0

        def abort(self):
            self.aborted += 1

    class Engine:
        http = Http()

    waiter = _waiter._Waiter(Connection(), config("unix:///fake.sock"), "m1")
    waiter.link.docker = engine = Engine()
    waiter.set_reachable(True)
    # the event thread's stream failed, but the probe hears the engine: not a silence
    waiter.handle_note(EngineState("s1", False))
    assert waiter.link.reachable and Connection.sent == [EngineState("s1", True)]
    waiter.probe.silent = True
    waiter.link.engine_silent()
    assert engine.http.aborted == 1
    waiter.handle_note(EngineState("s1", False))
    assert Connection.sent[-1] == EngineState("s1", False)
    monkeypatch.setattr(_docker, "connect", lambda *a, **k: pytest.fail("a call was made"))
    waiter.link.docker = None
    with pytest.raises(_docker.DockerFailure) as failure:
        waiter.connected()
    assert failure.value.retryable and "health probe" in failure.value.text
    waiter.poller.reconcile([])  # at once: the engine is said to be down
    assert waiter.link.reachable is False
