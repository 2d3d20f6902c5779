"""Fuzzing of every parser of bytes an engine or a container sends (no Docker): the HTTP
response parser and its chunked decoder (backend.docker._http), the event stream's lines and their
routing (backend.docker._streams, backend.watch._events), the attach and log frame parser
(backend.docker._streams.FrameParser), the output archive reader (backend.model._files.OutputsReader)
and the engine's JSON answers (backend.docker._client.Engine, connect).

The property, for each: it returns a value bounded by its input (or by its documented
limits), or raises its layer's own error type, never anything else; and its work is linear
in its input (checked on large worst-case inputs, n against 8n bytes, by CPU time with a
generous ratio). Each parser gets 1,000 examples of both well-formed inputs with mutated
fields, cut at random points as they would arrive, and raw garbage, with a fixed seed
(``derandomize``). See docs/security.rst.
"""
import collections
import io
import json
import tarfile
import time
import types
from unittest import mock

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from backend import docker as _docker
from backend.docker import _streams as _docker_io
from backend.watch import _events
from backend.docker import _http
from backend.model._config import parse_instances
from backend.model._files import OutputsReader

FUZZ = settings(max_examples=1000, derandomize=True, deadline=5000, database=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture,
                                       HealthCheck.too_slow, HealthCheck.data_too_large])


# -- feeding bytes as they would arrive ------------------------------------------------------
class Pieces(io.RawIOBase):
    """A raw stream that gives its pieces one read at a time (as a socket would)."""

    def __init__(self, pieces):
        super().__init__()
        self._pieces = collections.deque(memoryview(p) for p in pieces if p)

    def readable(self):
        return True

    def readinto(self, buffer):
        if not self._pieces:
            return 0
        piece = self._pieces[0]
        size = min(len(buffer), len(piece))
        buffer[:size] = piece[:size]
        if size == len(piece):
            self._pieces.popleft()
        else:
            self._pieces[0] = piece[size:]
        return size


def cut(data, points):
    """``data`` cut at ``points`` (indexes, in any order)."""
    edges = [0, *sorted({p % (len(data) + 1) for p in points}), len(data)]
    return [data[a:b] for a, b in zip(edges, edges[1:])]


def connection(pieces):
    """What a _Response reads from: a buffered reader over ``pieces`` (and a ``close``, which
    a stream over it calls when it is collected)."""
    return types.SimpleNamespace(sock=None, reader=io.BufferedReader(Pieces(pieces), 65536),
                                 close=lambda: None)


def response(pieces):
    return _http._Response(connection(pieces))


cuts = st.lists(st.integers(0, 1 << 20), max_size=12)


def linear(run, make, size, ratio=8, slack=4.0, repeats=3):
    """Asserts that ``run(make(8 * size))`` costs at most ``ratio * slack`` times
    ``run(make(size))`` in CPU time (best of ``repeats``; quadratic work would cost 64
    times)."""
    def cost(data):
        best = float("inf")
        for _ in range(repeats):
            start = time.process_time()
            run(data)
            best = min(best, time.process_time() - start)
        return best

    small, big = make(size), make(size * ratio)
    small_cost, big_cost = cost(small), cost(big)
    assert big_cost <= ratio * slack * small_cost + 0.05, (small_cost, big_cost)


#: JSON values (cheap to draw: 9,000 examples must run in well under a minute).
json_leaves = (st.none() | st.booleans() | st.integers(-2 ** 70, 2 ** 70)
               | st.sampled_from([0.5, -1e300, 1e300, float("nan"), float("inf")])
               | st.text(max_size=6))
json_values = st.recursive(
    json_leaves,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(
        st.sampled_from(["Action", "status", "id", "Actor", "ID", "Attributes", "time",
                         "timeNano", "exitCode", "backend.manager", "backend.job", "x"]),
        inner, max_size=4),
    max_leaves=5)


# -- HTTP answers and the chunked decoder ----------------------------------------------------
def chunked(body, sizes):
    """``body`` in chunks of ``sizes`` (cycled), with the last chunk and no trailer."""
    out, position, sizes = [], 0, [max(1, s) for s in sizes] or [len(body) or 1]
    while position < len(body):
        size = sizes[len(out) % len(sizes)]
        piece = body[position:position + size]
        out.append(b"%x\r\n" % len(piece) + piece + b"\r\n")
        position += size
    return b"".join(out) + b"0\r\n\r\n"


mutated_numbers = st.one_of(
    st.sampled_from([b"-1", b"-5", b"+3", b"1_0", b" 7 ", b"0x10", b"ffffffffffffffff",
                     b"1" * 40, b"", b"\xb2", b"9" * 5000, b"nan"]),
    st.integers(-10, 10 ** 20).map(lambda n: str(n).encode()),
    st.binary(max_size=8))


@st.composite
def http_answers(draw):
    """An answer of the engine: well-formed, then maybe mutated, cut or replaced."""
    status = draw(st.one_of(st.sampled_from([b"200", b"201", b"204", b"304", b"404", b"500"]),
                            mutated_numbers))
    head = draw(st.sampled_from([b"HTTP/1.1", b"HTTP/1.0", b"HTTP/", b"HTP/1.1", b""]))
    headers = draw(st.lists(st.one_of(
        st.sampled_from([b"Connection: close", b"Content-Type: application/json",
                         b"Transfer-Encoding: gzip", b"X" * 70000, b":", b"no colon"]),
        st.binary(max_size=40).filter(lambda h: b"\n" not in h)), max_size=4))
    body = draw(st.binary(max_size=400))
    framing = draw(st.sampled_from(["length", "chunked", "close", "bad length",
                                    "bad chunks"]))
    if framing == "length":
        headers.append(b"Content-Length: %d" % len(body))
    elif framing == "bad length":
        headers.append(b"Content-Length: " + draw(mutated_numbers))
    elif framing == "chunked":
        headers.append(b"Transfer-Encoding: chunked")
        body = chunked(body, draw(st.lists(st.integers(1, 100), max_size=4)))
    elif framing == "bad chunks":
        headers.append(b"Transfer-Encoding: chunked")
        body = draw(mutated_numbers) + draw(st.sampled_from([b"\r\n", b";x=y\r\n", b"\n"])) \
            + body + draw(st.sampled_from([b"\r\n0\r\n\r\n", b"XX", b"", b"\r\n"]))
    data = head + b" " + status + b" Reason\r\n" + b"".join(h + b"\r\n" for h in headers) \
        + b"\r\n" + body
    mutation = draw(st.sampled_from(["none", "cut", "flip", "garbage"]))
    if mutation == "cut":
        data = data[:draw(st.integers(0, len(data)))]
    elif mutation == "flip" and data:
        at = draw(st.integers(0, len(data) - 1))
        data = data[:at] + bytes([draw(st.integers(0, 255))]) + data[at + 1:]
    elif mutation == "garbage":
        data = draw(st.binary(max_size=600))
    return data


NEGATIVE_LENGTH = b"HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\nrest of the connection"
NEGATIVE_CHUNK = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n-5\r\nrest\r\n0\r\n\r\n"
HUGE_CHUNK = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n" + b"f" * 16 + b"\r\nab"
HUGE_LENGTH = b"HTTP/1.1 200 OK\r\nContent-Length: " + b"9" * 19 + b"\r\n\r\nab"
LONG_LENGTH = b"HTTP/1.1 200 OK\r\nContent-Length: " + b"9" * 5000 + b"\r\n\r\n"  # int() refuses
LONG_STATUS = b"HTTP/1.1 " + b"0" * 200 + b"200 OK\r\n\r\n"


@FUZZ
@given(http_answers(), cuts)
@example(NEGATIVE_LENGTH, [])
@example(NEGATIVE_CHUNK, [])
@example(HUGE_CHUNK, [])
@example(HUGE_LENGTH, [])
@example(LONG_STATUS, [])
@example(LONG_LENGTH, [])
@example(b"HTTP/1.1 200 OK\r\n" + b"A: b\r\n" * 100000 + b"\r\n", [])
def test_an_answer_parses_or_raises_a_protocol_error(data, points):
    """An answer gives a status and a body no longer than the bytes received, in pieces of
    at most PIECE bytes, or raises ProtocolError or OSError (the connection ended)."""
    try:
        answer = response(cut(data, points))
        pieces = list(answer.chunks())
    except (_http.ProtocolError, OSError):
        return
    assert 100 <= answer.status <= 999
    assert all(0 < len(piece) <= _http.PIECE for piece in pieces)
    assert sum(map(len, pieces)) <= len(data)
    if answer.remaining is not None and not answer.chunked:
        assert sum(map(len, pieces)) == answer.remaining


def test_an_answer_cut_in_its_head_is_not_a_reset():
    """An answer cut after its first byte: the engine read the request, so the error is
    not the ConnectionResetError on which Client.call sends a request again."""
    for data in (b"HTTP/1.1 20", b"HTTP/1.1 200 OK\r\n", b"HTTP/1.1 200 OK\r\nContent-Le"):
        with pytest.raises(ConnectionAbortedError):
            response(cut(data, [5]))
    with pytest.raises(ConnectionResetError):
        response([])


@FUZZ
@given(st.binary(max_size=3000), st.lists(st.integers(1, 70), max_size=5), cuts)
def test_chunked_bodies_come_back_whole(body, sizes, points):
    """A well-formed chunked body, however cut, comes back as it was sent."""
    data = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n" + chunked(body, sizes)
    answer = response(cut(data, points))
    assert answer.read_all() == body


@FUZZ
@given(st.binary(max_size=300) | st.builds(lambda v: json.dumps(v).encode(),
                                           st.dictionaries(st.just("message"), json_leaves
                                                           | st.lists(json_leaves, max_size=2))))
@example(b"[" * 100000)
@example(b'{"message": ["a"]}')
@example(b'{"message": {"a": 1}}')
def test_an_error_answer_gives_a_short_text_or_its_bytes(data):
    """The text of an error answer is a str, whatever its bytes (JSON or not)."""
    message = _http._error_message(data)
    assert isinstance(message, str) and message
    assert len(message) <= max(len(data), len("no explanation"))


def test_http_parsing_is_linear():
    """1-byte chunks with size lines of 16 digits and long extensions, and a body of one huge
    chunk: CPU time grows linearly."""
    def tiny_chunks(size):
        line = b"0" * 15 + b"1;" + b"e" * 200 + b"\r\nx\r\n"
        return (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
                + line * (size // len(line)) + b"0\r\n\r\n")

    def one_chunk(size):
        return (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n%x\r\n" % size
                + b"x" * size + b"\r\n0\r\n\r\n")

    def run(data):
        response(cut(data, range(0, len(data), 4096))).read_all()

    linear(run, tiny_chunks, 1 << 19)
    linear(run, one_chunk, 1 << 20)


# -- the event stream ------------------------------------------------------------------------
def event_stream(data, points):
    body = chunked(data, [4096])
    answer = response(cut(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n" + body,
                          points))
    return _docker_io.EventStream(_http.Stream(answer.connection, answer), "the test's")


@st.composite
def event_lines(draw):
    """Lines of an event stream: events with mutated fields, other JSON, garbage."""
    lines = []
    for _ in range(draw(st.integers(0, 4))):
        kind = draw(st.sampled_from(["event", "json", "garbage", "deep"]))
        if kind == "event":
            attributes = draw(st.dictionaries(
                st.sampled_from(["exitCode", "backend.manager", "backend.job"]),
                json_leaves | st.sampled_from(["m1", "0", "137", "-1", "١", "9" * 30])))
            event = {"Action": draw(st.sampled_from(["die", "oom", "kill", "create"])
                                    | json_leaves),
                     "id": draw(st.sampled_from(["c1", ""]) | json_leaves),
                     "timeNano": draw(st.sampled_from([10 ** 400, -1, 1.5e18]) | json_leaves),
                     "Actor": draw(st.just({"Attributes": attributes}) | json_values)}
            lines.append(json.dumps(event).encode())
        elif kind == "json":
            lines.append(json.dumps(draw(json_values)).encode())
        elif kind == "deep":
            lines.append(b'{"a":' * 2000 + b"1" + b"}" * 2000)
        else:
            lines.append(draw(st.binary(max_size=60)).replace(b"\n", b""))
    return b"\n".join(lines) + draw(st.sampled_from([b"", b"\n", b"\n\n"]))


class Sink(list):
    put = list.append


@FUZZ
@given(event_lines(), cuts)
@example(b'[1]\n"x"\n{"Actor": "a", "id": "c1"}\n', [])
@example(b'{"a":' * 50000 + b"1" + b"}" * 50000 + b"\n", [])
@example(b'{"Action": "die", "id": "c1", "timeNano": 1e400, "Actor": {"Attributes": '
         b'{"backend.manager": "m1", "exitCode": "\xd9\xa1"}}}', [])
@example(b'{"Action": "die", "id": "c1", "time": ' + b"9" * 400 + b', "Actor": '
         b'{"Attributes": {"backend.manager": "m1", "exitCode": []}}}', [])
def test_events_are_objects_and_route_without_raising(data, points):
    """The event stream yields JSON objects only (a line that is not one is skipped) or
    raises DockerFailure; routing any of them never raises and returns a time."""
    follower = _events.EventFollower(None, "m1", Sink(), Sink())
    try:
        events = list(event_stream(data, points))
    except _docker.DockerFailure:
        return
    assert len(events) <= data.count(b"\n") + 1
    for event in events:
        assert isinstance(event, dict)
        at = follower.route(event)
        assert isinstance(at, float) and 0 <= at < 253402300800
    for note in follower.mailbox:
        assert note.exit_code is None or 0 <= note.exit_code < 10 ** 9


def test_a_line_too_long_ends_the_stream_with_a_failure():
    with pytest.raises(_docker.DockerFailure):
        list(event_stream(b"x" * (_http.MAX_JSON_LINE + 10), []))


def test_event_lines_are_linear():
    """One long line in 4 KiB chunks (each chunk used to copy the whole line), and many
    short events: CPU time grows linearly."""
    event = json.dumps({"Action": "die", "id": "c1", "Actor": {"Attributes": {}}}).encode()

    def run(data):
        stream = event_stream(data, [])
        for event in stream:
            pass

    linear(run, lambda size: b'{"x": "' + b"y" * size + b'"}\n', 1 << 20)
    linear(run, lambda size: (event + b"\n") * (size // len(event)), 1 << 18)


# -- attach and log frames -------------------------------------------------------------------
def frame(number, data, size=None):
    return bytes([number, 0, 0, 0]) + (len(data) if size is None else size).to_bytes(
        4, "big") + data


def reference(data):
    """The frames of a whole stream (a cut last frame gives what it has)."""
    frames, position = [], 0
    while len(data) - position >= 8:
        size = int.from_bytes(data[position + 4:position + 8], "big")
        frames.append((data[position], data[position + 8:position + 8 + size]))
        position += 8 + size
    return runs(frames)


def runs(frames):
    """Consecutive pieces of one stream joined, empty ones dropped."""
    joined = []
    for number, data in frames:
        if not data:
            continue
        if joined and joined[-1][0] == number:
            joined[-1] = (number, joined[-1][1] + data)
        else:
            joined.append((number, data))
    return joined


@st.composite
def frame_streams(draw):
    if draw(st.booleans()):
        return draw(st.binary(max_size=400))
    frames = draw(st.lists(st.tuples(st.sampled_from([0, 1, 2, 3, 255]),
                                     st.binary(max_size=60),
                                     st.none() | st.integers(0, 2 ** 32 - 1)), max_size=8))
    return b"".join(frame(n, d, s) for n, d, s in frames)


@FUZZ
@given(frame_streams(), cuts)
@example(frame(1, b"", 2 ** 32 - 1) + b"x" * 100, [3, 50])
def test_frames_are_the_bytes_sent_however_cut(data, points):
    """Fed in any pieces, the parser gives each stream's bytes in order, never more than it
    was fed, holds at most a header's bytes, and never raises."""
    parser = _docker_io.FrameParser()
    frames = []
    for piece in cut(data, points):
        frames += parser.feed(piece)
        assert len(parser._header) < 8
    frames += parser.end()
    assert runs(frames) == reference(data)
    assert sum(len(d) for _, d in frames) <= len(data)
    out, err = _docker_io.demultiplex(data)
    assert len(out) + len(err) <= len(data)


def test_frame_parsing_is_linear():
    """Frames of one byte each (9 bytes a frame), fed in 64 KiB pieces and byte by byte."""
    def run(data):
        parser = _docker_io.FrameParser()
        for position in range(0, len(data), 65536):
            parser.feed(data[position:position + 65536])

    linear(run, lambda size: frame(1, b"x") * (size // 9), 1 << 16)
    linear(lambda data: _docker_io.demultiplex(data), lambda size: frame(2, b"x") * (size // 9),
           1 << 16)


# -- output archives -------------------------------------------------------------------------
def tar_of(members, format=tarfile.PAX_FORMAT):
    data = io.BytesIO()
    with tarfile.open(fileobj=data, mode="w", format=format) as tar:
        for info, content in members:
            tar.addfile(info, io.BytesIO(content) if content is not None else None)
    return data.getvalue()


@st.composite
def tar_members(draw):
    members = []
    for index in range(draw(st.integers(0, 5))):
        kind = draw(st.sampled_from(["file", "dir", "symlink", "hardlink", "long", "pax",
                                     "fifo"]))
        name = draw(st.sampled_from(["out", "out/a", "../x", "/etc/passwd", "a/./b", "ok"])
                    | st.text(min_size=1, max_size=12))
        if kind == "long":
            name = "d/" * 80 + name
        info = tarfile.TarInfo(name)
        content = None
        if kind in ("file", "long", "pax"):
            content = draw(st.binary(max_size=200))
            info.size = len(content)
            if kind == "pax":
                info.pax_headers = draw(st.dictionaries(
                    st.sampled_from(["path", "size", "uid", "mtime", "linkpath",
                                     "GNU.sparse.map", "GNU.sparse.size", "hdrcharset",
                                     "comment"]),
                    st.text(max_size=20), max_size=3))
        elif kind == "dir":
            info.type = tarfile.DIRTYPE
        elif kind == "symlink":
            info.type, info.linkname = tarfile.SYMTYPE, draw(st.sampled_from(["/", "../..",
                                                                               "out"]))
        elif kind == "hardlink":
            info.type, info.linkname = tarfile.LNKTYPE, "out"
        else:
            info.type = tarfile.FIFOTYPE
        members.append((info, content))
    return members


def sparse_tar(sizes_line=b"1\n", real_size=b"10000000"):
    """A GNU sparse 1.0 member (pax), with its map of ``sizes_line``."""
    info = tarfile.TarInfo("out")
    payload = sizes_line + b"0\n5\n"
    payload += b"\0" * (-len(payload) % 512) + b"hello"
    info.size = len(payload)
    info.pax_headers = {"GNU.sparse.major": "1", "GNU.sparse.minor": "0",
                        "GNU.sparse.name": "out", "GNU.sparse.realsize": real_size.decode()}
    return tar_of([(info, payload)])


@st.composite
def archives(draw):
    kind = draw(st.sampled_from(["tar", "gnu", "mutated", "cut", "garbage", "sparse"]))
    if kind == "garbage":
        return draw(st.binary(max_size=3000))
    if kind == "sparse":
        return sparse_tar(draw(st.sampled_from([b"1\n", b"x\n", b"-1\n", b"99999999\n",
                                                b"\n", b"1"])),
                          draw(st.sampled_from([b"10", b"x", b"-5", b"9" * 30])))
    data = tar_of(draw(tar_members()),
                  tarfile.GNU_FORMAT if kind == "gnu" else tarfile.PAX_FORMAT)
    if kind == "cut":
        data = data[:draw(st.integers(0, len(data)))]
    elif kind == "mutated":
        for _ in range(draw(st.integers(1, 8))):
            at = draw(st.integers(0, len(data) - 1))
            data = data[:at] + bytes([draw(st.integers(0, 255))]) + data[at + 1:]
    return data


def archive_stream(data, points):
    """The engine's archive answer, as the waiter reads it (chunked, cut anywhere)."""
    answer = response(cut(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
                          + chunked(data, [7000]), points))
    return _docker_io.ArchiveStream(_http.Stream(answer.connection, answer), "the test's")


@FUZZ
@given(archives(), st.sampled_from([0, 100, 1000, 1 << 20]), cuts)
@example(sparse_tar(b"x\n"), 1 << 20, [])
@example(sparse_tar(b"1\n", b"x"), 1 << 20, [])
def test_an_archive_is_read_within_its_budget_or_raises_a_tar_error(data, budget, points):
    """The reader keeps files within its budget, under relative paths, or raises TarError
    (what the waiter expects of a bad archive), never anything else."""
    reader = OutputsReader(budget)
    try:
        reader.read("out", archive_stream(data, points))
    except tarfile.TarError:
        pass
    assert sum(map(len, reader.files.values())) <= budget
    assert all(not name.startswith("/") and ".." not in name.split("/")
               for name in reader.files)


def test_archive_reading_is_linear():
    """Many tiny entries (100,000 in the large one), and one file in one huge chunk (each
    read used to copy what was left of it)."""
    template = tarfile.TarInfo("out/f0000000").tobuf(tarfile.USTAR_FORMAT)

    def entries(count):
        return b"".join(template.replace(b"f0000000", b"f%07d" % i, 1)[:148] + b"        "
                        + template[156:] for i in range(count)) + b"\0" * 1024

    def fixed(data):  # each header's checksum, computed
        blocks = bytearray(data)
        for at in range(0, len(blocks) - 1024, 512):
            block = blocks[at:at + 512]
            blocks[at + 148:at + 156] = b"%06o\0 " % sum(block)
        return bytes(blocks)

    def run(data):
        OutputsReader(1 << 30).read("out", archive_stream(data, []))

    small, big = fixed(entries(12500)), fixed(entries(100000))
    assert tarfile.open(fileobj=io.BytesIO(small)).getnames()[-1] == "out/f0012499"
    linear(run, lambda size: small if size == 1 else big, 1, repeats=1)

    def one_file(size):
        info = tarfile.TarInfo("out")
        info.size = size
        return tar_of([(info, b"x" * size)])

    def run_in_one_chunk(data):
        answer = response([b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
                           b"%x\r\n" % len(data), data, b"\r\n0\r\n\r\n"])
        reader = OutputsReader(1 << 30)
        reader.read("out", _docker_io.ArchiveStream(_http.Stream(answer.connection, answer),
                                                    "t"))
        assert len(reader.files["out"]) >= 1 << 20

    linear(run_in_one_chunk, one_file, 1 << 21)


# -- the engine's JSON answers ---------------------------------------------------------------
def engine():
    [config] = parse_instances([{"server_url": "tcp://127.0.0.1:9", "name": "e1"}])
    return _docker.Engine(config, timeout=1)


answers = st.one_of(
    st.binary(max_size=200),
    st.builds(lambda v: json.dumps(v).encode(), json_values),
    st.sampled_from([b"[" * 100000, b'{"Id": 5}', b'{"Id": ""}', b'{"State": []}',
                     b'{"State": {"ExitCode": "1"}, "Config": {}}', b'[{"Id": ["x"]}]',
                     b'[{"Id": "a", "Labels": [1]}]', b'{"ApiVersion": "1.41.5\\r\\nX: y"}',
                     b'{"Components": 5}', b'{"Components": [1]}', b'{"Plugins": [1]}',
                     b'{"cpu_stats": {"cpu_usage": {"total_usage": "nan"}}}',
                     b'{"cpu_stats": {"cpu_usage": {"total_usage": 1e400}}}',
                     b'{"ApiVersion": "1.' + b"4" * 5000 + b'"}', b'{"ApiVersion": "1.\xb2"}']))


def call_with(answer):
    return mock.patch.object(_http.Client, "call", lambda *args, **kwargs: answer)


ENGINE_CALLS = {
    "inspect": lambda e: e.inspect("c1"),
    "containers": lambda e: e.containers("backend.manager"),
    "create": lambda e: e.create({"Image": "x"}),
    "version": lambda e: e.version(),
    "info": lambda e: e.info(),
    "cpu_seconds": lambda e: e.cpu_seconds("c1"),
    "logs": lambda e: e.logs("c1"),
    "manager_containers": lambda e: _docker.manager_containers(e, "m1"),
    "dead_managers_containers": lambda e: _docker.dead_managers_containers(e),
}


@FUZZ
@given(answers, st.sampled_from(sorted(ENGINE_CALLS)))
@example(b"[" * 100000, "inspect")
@example(b'{"Id": 5}', "create")
@example(b'{"State": {"ExitCode": "1"}, "Config": {}}', "inspect")
@example(b'[{"Id": "a", "Labels": [1]}]', "dead_managers_containers")
@example(b'{"cpu_stats": {"cpu_usage": {"total_usage": "nan"}}}', "cpu_seconds")
def test_an_engine_answer_is_its_shape_or_a_docker_failure(answer, name):
    """Whatever the engine answers, an Engine call returns the shape its callers index, or
    raises DockerFailure."""
    with call_with(answer), engine() as e:
        try:
            value = ENGINE_CALLS[name](e)
        except _docker.DockerFailure:
            return
    if name == "inspect":
        assert isinstance(value["State"], dict) and isinstance(value["Config"], dict)
        assert value["State"].get("ExitCode") is None or type(value["State"]["ExitCode"]) is int
    elif name in ("containers",):
        assert all(isinstance(c["Id"], str) and isinstance(c.get("Labels") or {}, dict)
                   for c in value)
    elif name in ("manager_containers", "dead_managers_containers"):
        assert all(isinstance(c, str) for c in value)
    elif name == "create":
        assert isinstance(value, str) and value
    elif name in ("version", "info"):
        assert isinstance(value, dict)
    elif name == "cpu_seconds":
        assert 0 <= value < float("inf")
    else:
        out, err = value
        assert len(out) + len(err) <= len(answer)


@FUZZ
@given(answers, answers)
@example(b'{"ApiVersion": "1.41.5\\r\\nX: y"}', b"{}")
@example(b'{"Components": 5}', b"{}")
@example(b'{"Components": [1]}', b"{}")
@example(b"{}", b'{"Plugins": [1]}')
@example(b'{"ApiVersion": "1.' + b"4" * 5000 + b'"}', b"{}")
def test_connecting_reads_any_version_and_info_or_fails(version, info):
    """connect() over any /version and /info answers: an engine with a sane API version in
    its paths, or DockerFailure."""
    def call(client, method, path, *args, **kwargs):
        return version if path == "/version" else info

    with mock.patch.object(_http.Client, "call", call):
        try:
            connected = _docker.connect(engine().config)
        except _docker.DockerFailure:
            return
    with connected:
        major, minor = connected.http.api_version.split(".")
        assert major.isdigit() and minor.isdigit()

