"""The small HTTP client of our children (backend.docker._http) against a scripted local server."""
import itertools
import json
import os
import socket
import socketserver
import threading

import pytest

from backend.docker._http import Client, HttpError, adopt


class Handler(socketserver.StreamRequestHandler):
    """Serves requests on one connection until the client or the route closes it."""

    def handle(self):
        number = next(self.server.connections)  # which connection of the test this is
        while True:
            line = self.rfile.readline()
            if not line:
                return
            method, target, _ = line.decode().split(" ", 2)
            headers = {}
            while True:
                header = self.rfile.readline().decode()
                if header in ("\r\n", ""):
                    break
                name, _, value = header.partition(":")
                headers[name.strip().lower()] = value.strip()
            body = self.rfile.read(int(headers.get("content-length", 0)))
            self.server.seen.append((method, target, body, number))
            keep_open = self.server.routes[target.split("?")[0]](self.wfile, body)
            self.wfile.flush()
            if not keep_open:
                return


def json_answer(status, value, close=False):
    def route(out, body):
        data = json.dumps(value).encode()
        out.write(f"HTTP/1.1 {status} X\r\nContent-Type: application/json\r\n"
                  f"Content-Length: {len(data)}\r\n\r\n".encode() + data)
        return not close
    return route


def no_content(out, body):
    out.write(b"HTTP/1.1 204 No Content\r\n\r\n")
    return True


def chunked_events(out, body):
    out.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
    payload = b'{"Action": "die", "id": "a"}\n{"Action": "oom", "id": "b"}\n'
    for piece in (payload[:10], payload[10:40], payload[40:]):  # lines cut across chunks
        out.write(f"{len(piece):x}\r\n".encode() + piece + b"\r\n")
    out.write(b"0\r\n\r\n")
    return False


@pytest.fixture
def server(tmp_path):
    path = str(tmp_path / "engine.sock")
    server = socketserver.ThreadingUnixStreamServer(path, Handler)
    server.block_on_close = True  # server_close() joins the connection threads
    server.seen = []
    server.connections = itertools.count()
    server.routes = {}
    thread = threading.Thread(target=server.serve_forever, args=(0.05,))
    thread.start()
    yield server, f"unix://{path}"
    server.shutdown()
    server.server_close()
    thread.join(5)


def test_json_calls_reuse_one_connection(server):
    server, url = server
    server.routes["/v1.41/version"] = json_answer(200, {"ApiVersion": "1.41"})
    server.routes["/v1.41/containers/create"] = json_answer(201, {"Id": "c1"})
    with Client(url, timeout=5) as client:
        assert client.json("GET", client.path("/version")) == {"ApiVersion": "1.41"}
        assert client.json("POST", client.path("/containers/create"),
                           body={"Image": "x"}) == {"Id": "c1"}
    assert [seen[0] for seen in server.seen] == ["GET", "POST"]
    assert json.loads(server.seen[1][2]) == {"Image": "x"}
    assert server.seen[0][3] == server.seen[1][3]  # one keep-alive connection


def test_no_content_then_a_call_on_the_same_connection(server):
    server, url = server
    server.routes["/v1.41/containers/c%2F1/start"] = no_content
    server.routes["/v1.41/version"] = json_answer(200, {})
    with Client(url, timeout=5) as client:
        assert client.call("POST", client.path("/containers/{}/start", "c/1")) == b""
        assert client.json("GET", client.path("/version")) == {}
    assert server.seen[0][3] == server.seen[1][3]


def test_an_error_status_raises_with_the_engine_message(server):
    server, url = server
    server.routes["/v1.41/containers/c1/json"] = json_answer(404, {"message": "No such container"})
    with Client(url, timeout=5) as client:
        with pytest.raises(HttpError) as raised:
            client.json("GET", client.path("/containers/{}/json", "c1"))
    assert (raised.value.status, raised.value.message) == (404, "No such container")


def test_a_chunked_stream_gives_whole_json_lines(server):
    server, url = server
    server.routes["/v1.41/events"] = chunked_events
    with Client(url, timeout=5) as client:
        stream = client.stream("GET", client.path("/events"), {"filters": {"type": ["x"]}})
        assert [event["id"] for event in stream.json_lines()] == ["a", "b"]
        stream.close()
    assert "filters=%7B%22type%22" in server.seen[0][1]


def test_an_idle_connection_the_engine_closed_is_replaced(server):
    server, url = server
    server.routes["/v1.41/version"] = json_answer(200, {"n": 1}, close=True)
    with Client(url, timeout=5) as client:
        client.json("GET", client.path("/version"))
        client.json("GET", client.path("/version"))
    assert len(server.seen) == 2 and server.seen[0][3] != server.seen[1][3]


def test_no_engine_raises_oserror(tmp_path):
    with Client(f"unix://{tmp_path}/none.sock", timeout=1) as client:
        with pytest.raises(OSError):
            client.call("GET", client.path("/version"))


def test_urls_it_does_not_speak_are_refused():
    with pytest.raises(ValueError):
        Client("ftp://host")
    with pytest.raises(ValueError):
        Client("ssh://host/path")
    with pytest.raises(ValueError):
        Client("ssh://-oProxyCommand=x")  # never an option of ssh
    with pytest.raises(ValueError):
        Client("tcp://host")  # no port


def test_a_stream_can_be_shut_down_from_another_thread():
    left, right = socket.socketpair()
    stream = adopt(os.dup(left.fileno()))
    left.close()
    timer = threading.Timer(0.1, stream.shutdown)
    timer.start()
    assert stream.reader.read(8) == b""  # end of file, not a hang
    timer.join()
    stream.close()
    right.close()


def test_a_request_the_engine_drops_on_a_reused_connection_is_sent_again(server):
    server, url = server
    calls = []

    def flaky(out, body):
        calls.append(body)
        if len(calls) == 2:
            return False  # closes the connection without an answer, as an idle timeout would
        return json_answer(200, {"n": len(calls)})(out, body)

    server.routes["/v1.41/containers/c1/kill"] = flaky
    server.routes["/v1.41/containers/create"] = flaky
    with Client(url, timeout=5) as client:
        kill = client.path("/containers/{}/kill", "c1")
        assert client.json("POST", kill) == {"n": 1}
        assert client.json("POST", kill) == {"n": 3}  # sent again on a new connection
        calls.clear()
        assert client.json("POST", client.path("/containers/create"), body={}) == {"n": 1}
        with pytest.raises(ConnectionError):  # never twice: it could make two containers
            client.json("POST", client.path("/containers/create"), body={})


def test_a_create_tells_whether_the_engine_may_have_made_the_container(server, tmp_path):
    from backend import docker as _docker
    from backend.model._config import parse_instances
    from backend.model._job import JobSpec
    from backend.model._task import Task, snapshot_task

    server, url = server
    server.routes["/v1.41/containers/create"] = lambda out, body: False  # sent, no answer
    spec = JobSpec("j1", snapshot_task(Task("image"), None), b"{}\n")
    for engine_url, maybe_created in ((url, True), (f"unix://{tmp_path}/none.sock", False)):
        [instance] = parse_instances([{"server_url": engine_url, "name": "x"}])
        with _docker.Engine(instance, timeout=5) as engine:
            with pytest.raises(_docker.DockerFailure) as raised:
                _docker.create_and_start(engine, spec, "m1", "host:1", "backend-j1-1")
        failure = raised.value
        assert failure.retryable and failure.container_id is None
        assert failure.maybe_created is maybe_created, engine_url
    assert server.seen[0][1] == "/v1.41/containers/create?name=backend-j1-1"
