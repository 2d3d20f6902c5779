"""HTTP/1.1 answers of an engine, read as their bytes come: the status line and headers, the
body in pieces (``Content-Length``, chunked, or until the connection closes), the error
message of an answer, and JSON within bounds.

Everything here reads what an engine sent, so nothing of it is trusted: a line, a header,
the number of headers and a JSON line are bounded, a body is read in pieces of at most
:data:`PIECE` bytes whatever its length or chunk sizes say, and the work is linear in the bytes
received (fuzzed in ``tests/unit/test_fuzz_unit.py``; see docs/security.rst). Errors:
:class:`ProtocolError` for bytes that are not the HTTP (or the JSON) they should be,
:class:`HttpError` for an answer of status 400 or more, ``OSError`` for a connection that
ended. Used by :mod:`backend.docker._http` (its :class:`~backend.docker._http.Client` and
streams) only.
"""
from __future__ import annotations

import io
import json
from typing import Any, Dict, Iterator, Optional, Protocol


class _Connection(Protocol):
    """What an answer is read from: a connection's buffered reader."""

    reader: io.BufferedReader

_MAX_HEADER_LINE = 65536
#: Header lines an answer may have.
_MAX_HEADERS = 256
#: Bytes of a body read at once: a longer body or chunk is read (and yielded) in pieces.
PIECE = 65536
#: Bytes one line of a JSON-lines body may hold (an event, a build's progress line).
MAX_JSON_LINE = 16 * 1024 * 1024


class ProtocolError(ValueError):
    """The engine's answer is not the HTTP, the chunked framing or the JSON it should be."""


class HttpError(Exception):
    """The engine answered with an error status; ``message`` is its explanation."""

    def __init__(self, status: int, message: str):
        super().__init__(f"{status}: {message}")
        self.status = status
        self.message = message


class _Response:
    """Status, headers and a body reader of one response on a connection.

    Raises:
        ProtocolError: the status line or a header is not HTTP, or there are too many.
        ConnectionResetError: the engine closed the connection before answering.
        ConnectionAbortedError: it closed it in the middle of the head.
    """

    def __init__(self, connection: _Connection):
        self.connection = connection
        reader = connection.reader
        line = _line(reader)
        if not line:
            raise ConnectionResetError("the engine closed the connection")
        parts = line.split(None, 2)
        if len(parts) < 2 or not parts[0].startswith(b"HTTP/") or not _is_status(parts[1]):
            raise ProtocolError(f"not an HTTP answer: {line[:80]!r}")
        self.status = int(parts[1])
        self.headers: Dict[str, str] = {}
        for _ in range(_MAX_HEADERS + 1):
            line = _line(reader)
            if not line:
                raise ConnectionAbortedError("the engine closed the connection mid-head")
            if line in (b"\r\n", b"\n"):
                break
            name, _, value = line.decode("latin-1").partition(":")
            self.headers[name.strip().lower()] = value.strip()
        else:
            raise ProtocolError(f"an answer with more than {_MAX_HEADERS} headers")
        self.chunked = "chunked" in self.headers.get("transfer-encoding", "").lower()
        length = self.headers.get("content-length")
        self.remaining: Optional[int] = None
        if length is not None and not self.chunked:
            if not (length.isascii() and length.isdigit() and len(length) <= 20):
                raise ProtocolError(f"a Content-Length of {length[:80]!r}")
            self.remaining = int(length)
        if self.status in (204, 304):  # no body, whatever the headers say
            self.chunked, self.remaining = False, 0
        self.keep_alive = (self.headers.get("connection", "").lower() != "close"
                           and (self.chunked or self.remaining is not None))

    def read_all(self) -> bytes:
        """The whole body (read in pieces: its length is the engine's word)."""
        if self.chunked or self.remaining is not None:
            return b"".join(self.chunks())
        return self.connection.reader.read()

    def chunks(self) -> Iterator[bytes]:
        """The body as it arrives, in pieces of at most :data:`PIECE` bytes.

        Raises:
            ProtocolError: a chunk's size line or end is not chunked framing.
            ConnectionResetError: the connection ended before the body's end.
        """
        reader = self.connection.reader
        if not self.chunked:
            remaining = self.remaining  # None: until the connection closes
            while remaining is None or remaining > 0:
                data = reader.read1(PIECE if remaining is None else min(remaining, PIECE))
                if not data:
                    if remaining is not None:
                        raise ConnectionResetError(
                            "the engine closed the connection mid-answer")
                    return
                if remaining is not None:
                    remaining -= len(data)
                yield data
            return
        while True:
            size = _chunk_size(_line(reader))
            if size == 0:
                for _ in range(_MAX_HEADERS + 1):
                    if _line(reader) in (b"\r\n", b"\n", b""):
                        return  # the trailers' end
                raise ProtocolError(f"a chunked answer with more than {_MAX_HEADERS} "
                                    f"trailers")
            while size > 0:
                data = reader.read(min(size, PIECE))
                if not data:
                    raise ConnectionResetError("the engine closed the connection mid-chunk")
                size -= len(data)
                yield data
            end = reader.read(2)
            if end != b"\r\n":
                if len(end) < 2:
                    raise ConnectionResetError("the engine closed the connection mid-chunk")
                raise ProtocolError(f"a chunk ends with {end!r}, not CRLF")


def _line(reader: io.BufferedReader) -> bytes:
    """One line of an answer's head (or b"" at end of file).

    Raises:
        ProtocolError: longer than ``_MAX_HEADER_LINE``.
        ConnectionAbortedError: cut by the end of the connection (not a
            ``ConnectionResetError``: the engine had begun to answer, so :meth:`Client.call`
            must not send the request again).
    """
    line = reader.readline(_MAX_HEADER_LINE)
    if line and not line.endswith(b"\n"):
        if len(line) >= _MAX_HEADER_LINE:
            raise ProtocolError(f"a line of the answer's head longer than {_MAX_HEADER_LINE} "
                                f"bytes")
        raise ConnectionAbortedError("the engine closed the connection mid-line")
    return line


def _is_status(text: bytes) -> bool:
    return len(text) == 3 and text.isdigit()


def _chunk_size(line: bytes) -> int:
    """The size of a chunk, from its line (``HEX[;extension]CRLF``).

    Raises:
        ProtocolError: not 1 to 16 hexadecimal digits.
        ConnectionResetError: no line (the connection ended).
    """
    if not line:
        raise ConnectionResetError("the engine closed the connection mid-stream")
    digits = line.split(b";", 1)[0].strip()
    if not 0 < len(digits) <= 16 or digits.strip(b"0123456789abcdefABCDEF"):
        raise ProtocolError(f"a chunk size line {line[:80]!r}")
    return int(digits, 16)


def loads(data: bytes) -> Any:
    """JSON from the engine.

    Raises:
        ProtocolError: not JSON (a bad encoding, or nested too deep to decode).
    """
    try:
        return json.loads(data)
    except RecursionError:
        raise ProtocolError("JSON nested too deep") from None
    except ValueError as error:  # UnicodeDecodeError and JSONDecodeError included
        raise ProtocolError(f"not JSON: {error}") from None


def _error_message(data: bytes) -> str:
    try:
        message = loads(data).get("message")
    except (ProtocolError, AttributeError):
        message = None
    if not isinstance(message, str):
        message = None
    return message or data.decode("utf-8", "replace").strip() or "no explanation"
