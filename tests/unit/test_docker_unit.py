"""The Docker layer's contract (backend.docker._client) against a scripted local server: every call and
stream raises only DockerFailure, retryable when the engine did not answer, not_found on a 404,
and an error answer is never retryable."""
import threading

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from backend import docker as _docker
from backend.docker import _streams as _docker_io
from backend.model._config import parse_instances
from test_http_unit import json_answer, no_content, server  # noqa: F401 - the fixture

API = "/v1.41"


def engine_at(url, timeout=5):
    [config] = parse_instances([{"server_url": url, "name": "e1"}])
    return _docker.Engine(config, timeout=timeout)


def frame(stream, data):
    return bytes([stream, 0, 0, 0]) + len(data).to_bytes(4, "big") + data


def test_an_answered_404_is_not_found_and_not_retryable(server):
    server, url = server
    server.routes[f"{API}/containers/c1/json"] = json_answer(404, {"message": "No such container"})
    with engine_at(url) as engine:
        with pytest.raises(_docker.DockerFailure) as raised:
            engine.inspect("c1")
    failure = raised.value
    assert failure.not_found and not failure.retryable and _docker.is_not_found(failure)
    assert "No such container" in failure.text and "e1" in failure.text


def test_an_error_answer_is_never_retryable(server):
    server, url = server
    server.routes[f"{API}/containers/json"] = json_answer(500, {"message": "daemon hiccup"})
    server.routes[f"{API}/containers/c1/kill"] = json_answer(409, {"message": "not running"})
    with engine_at(url) as engine:
        for call in (lambda: engine.containers("backend.manager"), lambda: engine.kill("c1")):
            with pytest.raises(_docker.DockerFailure) as raised:
                call()
            assert not raised.value.retryable and not raised.value.not_found


def test_an_engine_that_is_not_there_is_retryable_for_every_call(tmp_path):
    with engine_at(f"unix://{tmp_path}/none.sock", timeout=1) as engine:
        calls = [engine.version, engine.ping, lambda: engine.image_exists("x"),
                 lambda: engine.inspect("c1"), lambda: engine.kill("c1"),
                 lambda: engine.remove("c1"), lambda: engine.logs("c1"),
                 lambda: engine.containers("l"), lambda: engine.cpu_seconds("c1"),
                 lambda: engine.disk_used("c1"),
                 lambda: engine.attach_output("c1"), lambda: engine.events(0.0, {}),
                 lambda: engine.start("c1"), lambda: engine.create({"Image": "x"})]
        for call in calls:
            with pytest.raises(_docker.DockerFailure) as raised:
                call()
            assert raised.value.retryable and raised.value.reason == "engine_unreachable"


def test_an_engine_that_does_not_answer_in_time_is_retryable(server):
    server, url = server
    answered = threading.Event()
    server.routes[f"{API}/containers/c1/json"] = lambda out, body: answered.wait(5) and False
    with engine_at(url, timeout=0.3) as engine:
        with pytest.raises(_docker.DockerFailure) as raised:
            engine.inspect("c1")
    answered.set()
    assert raised.value.retryable


def test_an_answer_we_cannot_read_is_a_failure(server):
    server, url = server
    server.routes[f"{API}/containers/c1/stats"] = json_answer(200, {"cpu_stats": {}})
    with engine_at(url) as engine:
        with pytest.raises(_docker.DockerFailure):
            engine.cpu_seconds("c1")


def test_ping_and_image_exists(server):
    server, url = server
    server.routes["/_ping"] = no_content
    server.routes[f"{API}/images/busybox/json"] = json_answer(200, {"Id": "sha256:1"})
    server.routes[f"{API}/images/nothing/json"] = json_answer(404, {"message": "No such image"})
    server.routes[f"{API}/images/broken/json"] = json_answer(500, {"message": "oops"})
    with engine_at(url) as engine:
        assert engine.ping() is None
        assert engine.image_exists("busybox") and not engine.image_exists("nothing")
        with pytest.raises(_docker.DockerFailure):
            engine.image_exists("broken")


def test_an_event_stream_that_breaks_raises_a_docker_failure(server):
    server, url = server

    def broken_events(out, body):
        out.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
        line = b'{"Action": "die", "id": "a"}\n'
        out.write(f"{len(line):x}\r\n".encode() + line + b"\r\n")
        out.write(b"40\r\n{\"Act")  # cut mid-chunk: the engine went away
        return False

    server.routes[f"{API}/events"] = broken_events
    with engine_at(url) as engine:
        stream = engine.events(0.0, {"type": ["container"]})
        seen = []
        with pytest.raises(_docker.DockerFailure) as raised:
            for event in stream:
                seen.append(event["id"])
        stream.close()
    assert seen == ["a"] and raised.value.retryable


def test_an_attach_gives_numbered_frames_until_its_end(server):
    server, url = server

    def attach(out, body):
        out.write(b"HTTP/1.1 101 UPGRADED\r\nConnection: Upgrade\r\nUpgrade: tcp\r\n\r\n"
                  + frame(_docker.STDOUT, b"out\n") + frame(_docker.STDERR, b"err\n"))
        return False

    server.routes[f"{API}/containers/c1/attach"] = attach
    with engine_at(url) as engine:
        stream = engine.attach_output("c1")
        assert list(stream.frames()) == [(_docker.STDOUT, b"out\n"), (_docker.STDERR, b"err\n")]
        stream.close()


def test_a_log_is_split_by_the_one_frame_parser():
    data = frame(1, b"a") + frame(2, b"b") + frame(1, b"c") + frame(2, b"cut")[:-1]
    assert _docker.demultiplex(data) == (b"ac", b"bcu")


def test_removals_count_a_missing_container_as_removed(server):
    server, url = server
    server.routes[f"{API}/containers/gone"] = json_answer(404, {"message": "No such container"})
    server.routes[f"{API}/containers/stuck"] = json_answer(500, {"message": "busy"})
    server.routes[f"{API}/containers/ok"] = no_content
    with engine_at(url) as engine:
        assert _docker.remove_containers(engine, ["gone", "stuck", "ok"]) == (["stuck"], True)


def test_removals_stop_when_the_engine_does_not_answer(tmp_path):
    with engine_at(f"unix://{tmp_path}/none.sock", timeout=1) as engine:
        assert _docker.remove_containers(engine, ["a", "b"]) == (["a", "b"], False)


def test_an_image_is_built_over_our_client_with_the_folder_as_its_context(server, tmp_path):
    import io
    import json
    import tarfile

    server, url = server
    server.routes["/version"] = json_answer(200, {"ApiVersion": "1.41"})
    server.routes[f"{API}/info"] = json_answer(200, {})  # connect() detects the features
    contexts = []

    def build(out, body):
        contexts.append(body)
        failing = b"RUN exit 7" in tarfile.open(fileobj=io.BytesIO(body)).extractfile(
            "Dockerfile").read()
        lines = [{"stream": "Step 1/2"}] + ([{"error": "exit code 7\n"}] if failing else [])
        data = b"".join(json.dumps(line).encode() + b"\r\n" for line in lines)
        out.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                  + f"Content-Length: {len(data)}\r\n\r\n".encode() + data)
        return True

    server.routes[f"{API}/build"] = build
    folder = tmp_path / "image"
    folder.mkdir()
    (folder / "Dockerfile").write_text("FROM scratch\n")
    (folder / "data").mkdir()
    (folder / "data" / "file").write_text("x")
    [config] = parse_instances([{"server_url": url, "name": "e1"}])
    assert _docker.build_image(config, str(folder), "t-ok") is None
    names = tarfile.open(fileobj=io.BytesIO(contexts[0])).getnames()
    assert {"Dockerfile", "data", "data/file"} <= set(names)
    assert [seen[1].split("?")[0] for seen in server.seen][-1] == f"{API}/build"
    assert "t=t-ok" in server.seen[-1][1]
    (folder / "Dockerfile").write_text("FROM scratch\nRUN exit 7\n")
    assert _docker.build_image(config, str(folder), "t-bad") == "exit code 7"
    missing = _docker.build_image(config, str(tmp_path / "none"), "t-none")
    assert missing.startswith("building t-none on host e1 failed: ")


def test_frames_cut_anywhere_give_the_same_bytes():
    """The one frame parser, fed byte by byte: each stream's bytes in the same order as fed
    whole, a frame cut by a feed or by the end of the stream coming in pieces."""
    def frame(number, data):
        return bytes([number, 0, 0, 0]) + len(data).to_bytes(4, "big") + data

    def joined(frames):
        runs = []
        for number, data in frames:
            if runs and runs[-1][0] == number:
                runs[-1] = (number, runs[-1][1] + data)
            elif data:
                runs.append((number, data))
        return runs

    data = frame(1, b"out") + frame(2, b"") + frame(2, b"err" * 100) + frame(1, b"cut")[:-1]
    whole = _docker_io.FrameParser()
    assert whole.feed(data) == [(1, b"out"), (2, b"err" * 100), (1, b"cu")]
    assert whole.end() == []
    parser = _docker_io.FrameParser()
    frames = [f for i in range(len(data)) for f in parser.feed(data[i:i + 1])]
    assert joined(frames + parser.end()) == [(1, b"out"), (2, b"err" * 100), (1, b"cu")]


# the disk watch reads SizeRw from the engine: whatever the answer holds, a count of bytes
_JSON = st.recursive(st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False)
                     | st.text(max_size=5),
                     lambda inner: st.lists(inner, max_size=3)
                     | st.dictionaries(st.text(max_size=5), inner, max_size=3), max_leaves=8)


@settings(max_examples=60, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(answer=_JSON | st.dictionaries(st.just("SizeRw"), _JSON, min_size=1))
def test_a_size_answer_of_any_shape_is_a_count_of_bytes(server, answer):
    server, url = server
    server.routes[f"{API}/containers/c1/json"] = json_answer(200, answer)
    with engine_at(url) as engine:
        used = engine.disk_used("c1")
    assert isinstance(used, int) and used >= 0
    size = answer.get("SizeRw") if isinstance(answer, dict) else None
    if isinstance(size, int) and not isinstance(size, bool) and size > 0:
        assert used == size


def _uploads(answers):
    """A route answering the archive uploads with ``answers`` in turn (then 200s), counting
    the uploads it got."""
    got = []

    def route(out, body):
        got.append(body)
        answer = answers[len(got) - 1] if len(got) <= len(answers) else no_content
        return answer(out, body)
    return route, got


@pytest.mark.parametrize("errors, sent, passes", [
    (1, 2, True), (2, 3, True), (3, 3, False)])
def test_an_upload_the_engine_fails_is_sent_again_twice(server, errors, sent, passes):
    """Podman 4.3 under load now and then loses the process unpacking an upload (a 500):
    the same upload then passes."""
    from backend.docker import _actions
    server, url = server
    route, got = _uploads([json_answer(500, {"message": "passing bulk input to subprocess: "
                                                        "write |1: broken pipe"})] * errors)
    server.routes[f"{API}/containers/c1/archive"] = route
    with engine_at(url) as engine:
        if passes:
            _actions._put_files(engine, "c1", "/job", b"tar")
        else:
            with pytest.raises(_docker.DockerFailure, match="broken pipe"):
                _actions._put_files(engine, "c1", "/job", b"tar")
    assert len(got) == sent and set(got) == {b"tar"}


def test_an_upload_refused_by_a_client_error_is_not_sent_again(server):
    from backend.docker import _actions
    server, url = server
    route, got = _uploads([json_answer(400, {"message": "not a directory"})])
    server.routes[f"{API}/containers/c1/archive"] = route
    with engine_at(url) as engine:
        with pytest.raises(_docker.DockerFailure, match="not a directory"):
            _actions._put_files(engine, "c1", "/job", b"tar")
    assert len(got) == 1
