"""The Docker layer's own types: :class:`DockerFailure`, the translation of every transport or
engine error into it, and the streams whose iteration raises only it.

Part of the one Docker layer: only :mod:`backend.docker._client` imports this module, and re-exports
its names (callers write ``_docker.DockerFailure``); like :mod:`backend.docker._http`, nothing else
imports it. No thread of its own: a stream belongs to the thread that reads it, and its
``shutdown()`` may be called from any thread.
"""
from __future__ import annotations

import io
import logging
import socket
from typing import Any, Dict, Iterator, List, Optional, Tuple

from backend.model import InstanceConfig
from backend.docker._http import HttpError, ProtocolError, Stream, loads

logger = logging.getLogger("backend")

#: Stream numbers of Docker's multiplexed attach and log frames.
STDOUT, STDERR = 1, 2
#: What a call or a stream can raise: the engine's error answer, a transport failure
#: (``OSError``, with ``ssl`` and timeouts), an answer we cannot read (``ValueError``, with
#: :class:`~backend.docker._http.ProtocolError`: bad HTTP, framing or JSON; ``KeyError``/``TypeError``:
#: a field missing from an answer, or of another type).
CALL_ERRORS = (HttpError, OSError, ValueError, KeyError, TypeError)


class DockerFailure(Exception):
    """A Docker call failed. ``reason`` is a docs/results.rst reason; ``retryable`` marks an engine
    that did not answer (the connection failed or timed out), so the job may go elsewhere;
    ``not_found``, an engine that answered that the container (or image) does not exist. An
    engine's error answer (4xx, 5xx) is never ``retryable``: the engine answered.

    From :func:`create_and_start`, ``container_id`` names the container if it was created,
    and ``maybe_created`` tells that the engine may have created one without its answer
    reaching us (the create was sent, and no answer came).
    """

    container_id: Optional[str] = None
    maybe_created: bool = False
    #: a warm container's image cannot run the gate (no ``/bin/sh``): its jobs start cold
    no_shell: bool = False
    #: a warm container taken by a job no longer waits for it (it ended, or was removed):
    #: the job is served cold (:func:`backend.docker._actions.take_warm`)
    warm_gone: bool = False

    def __init__(self, reason: str, text: str, retryable: bool = False,
                 not_found: bool = False):
        super().__init__(text)
        self.reason = reason
        self.text = text
        self.retryable = retryable
        self.not_found = not_found


def is_not_found(error: BaseException) -> bool:
    """Whether ``error`` is the engine saying that the container (or image) does not exist."""
    return isinstance(error, DockerFailure) and error.not_found


#: Bytes asked of a socket in one read.
_READ_SIZE = 65536


class FrameParser:
    """Docker's multiplexed stream (8-byte headers: stream number, 3 zero bytes, size), fed
    as its bytes come: the one parser of attach and log frames. Its frames are
    ``(stream number, bytes)`` (:data:`STDOUT`, :data:`STDERR`, or what else the engine
    says): a frame's bytes are given as soon as they come, so a frame cut by a feed (or by
    the end of the stream) comes in pieces, and the parser holds at most a header's 7 bytes
    whatever size a header claims. Any bytes are frames: it never raises, and its work is
    linear in the bytes fed."""

    def __init__(self) -> None:
        self._header = bytearray()  # a header cut by the end of a feed
        self._number = STDOUT       # the stream of the frame being read
        self._left = 0              # bytes of that frame still to come

    def feed(self, data: bytes) -> List[Tuple[int, bytes]]:
        """The frames (or pieces of frames) that ``data`` holds."""
        frames: List[Tuple[int, bytes]] = []
        view, position, size = memoryview(data), 0, len(data)
        while position < size:
            if self._left:
                end = min(size, position + self._left)
                frames.append((self._number, bytes(view[position:end])))
                self._left -= end - position
                position = end
                continue
            take = min(size - position, 8 - len(self._header))
            self._header += view[position:position + take]
            position += take
            if len(self._header) == 8:
                self._number = self._header[0]
                self._left = int.from_bytes(self._header[4:8], "big")
                self._header.clear()
        return frames

    def end(self) -> List[Tuple[int, bytes]]:
        """At the end of the stream: nothing more (a cut frame's bytes were given as they
        came, a cut header is dropped); the parser is ready for a new stream."""
        self._header.clear()
        self._left = 0
        return []


def _frames(reader: io.BufferedIOBase) -> Iterator[Tuple[int, bytes]]:
    """The frames of a reader (see :class:`FrameParser`) as they come, until end of file."""
    parser = FrameParser()
    while True:
        data = reader.read1(_READ_SIZE)
        if not data:
            break
        yield from parser.feed(data)
    yield from parser.end()


def demultiplex(data: bytes) -> Tuple[bytes, bytes]:
    """Splits a whole multiplexed stream (a stopped container's log) into stdout and stderr."""
    out, err = bytearray(), bytearray()
    for number, payload in _frames(io.BytesIO(data)):
        (err if number == STDERR else out).extend(payload)
    return bytes(out), bytes(err)


def stream_failure(error: BaseException, where: str) -> DockerFailure:
    return DockerFailure("engine_unreachable", f"{where} broke: {_short(error)}",
                         retryable=True)


class OutputStream:
    """A hijacked connection to a container (its attach): :meth:`frames` reads its stdout and
    stderr, ``sock`` writes to its stdin (see :func:`create_and_start`).

    :meth:`shutdown` may be called from any thread (the reader then sees the end); the
    other methods belong to the one thread that reads or writes the stream.
    """

    def __init__(self, stream: Stream, where: str):
        self._stream = stream
        self.sock = stream.sock
        self.where = where  # for texts: "the output stream of <container> on <engine>"
        self._parser = FrameParser()  # frames_now's

    def frames(self) -> Iterator[Tuple[int, bytes]]:
        """``(STDOUT or STDERR, bytes)`` as they come, until the end of the stream.

        Raises:
            DockerFailure: the transport failed mid-stream (``retryable``).
        """
        try:
            yield from _frames(self._stream.reader)
        except (OSError, ValueError) as error:
            raise stream_failure(error, self.where) from error

    def frames_now(self) -> Tuple[List[Tuple[int, bytes]], bool]:
        """What :meth:`frames` would give, without waiting: the frames that came (for a
        loop that waits on :meth:`fileno`), and whether the stream ended. Plain sockets only
        (a job's own attach); the socket's blocking mode is left as it is.

        Raises:
            DockerFailure: the transport failed (``retryable``).
        """
        try:
            data = self.sock.recv(_READ_SIZE, socket.MSG_DONTWAIT)
        except BlockingIOError:
            return [], False
        except OSError as error:
            raise stream_failure(error, self.where) from error
        if not data:
            return self._parser.end(), True
        return self._parser.feed(data), False

    def close_input(self) -> None:
        """End of file for the container's stdin; reading goes on (plain sockets only)."""
        self._stream.close_input()

    def fileno(self) -> int:
        return self.sock.fileno()

    def shutdown(self) -> None:
        self._stream.shutdown()

    def close(self) -> None:
        self._stream.close()


class ArchiveStream(io.RawIOBase):
    """A tar the engine sends (``GET /containers/{id}/archive``), read as a file; a
    transport failure while reading raises :class:`DockerFailure` (``retryable``). Belongs
    to the thread that reads it; :meth:`close` ends the connection."""

    def __init__(self, stream: Stream, where: str):
        super().__init__()
        self._stream = stream
        self._chunks = stream.chunks()
        self._pending = memoryview(b"")
        self.where = where

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        try:
            while not self._pending:
                chunk = next(self._chunks, b"")
                if not chunk:
                    return 0
                self._pending = memoryview(chunk)
        except (OSError, ValueError) as error:
            raise stream_failure(error, self.where) from error
        size = min(len(buffer), len(self._pending))
        buffer[:size] = self._pending[:size]
        self._pending = self._pending[size:]
        return size

    def close(self) -> None:
        if not self.closed:
            self._stream.close()
        super().close()


class EventStream:
    """The engine's event stream: iterating it yields decoded events until it ends.

    :meth:`shutdown` may be called from any thread; iteration belongs to one thread.
    """

    def __init__(self, stream: Stream, where: str):
        self._stream = stream
        self.where = where
        #: the iteration ended because nothing came for the stream's read timeout (an idle
        #: engine, or one that stopped answering): the caller subscribes again
        self.idle = False

    def __iter__(self) -> Iterator[Dict[str, Any]]:
        """The events (JSON objects) as they come; a line that is not one is skipped (and
        logged): one bad line costs no other event.

        Raises:
            DockerFailure: the transport failed, or a line longer than
                :data:`backend.docker._http.MAX_JSON_LINE` (``retryable``).
        """
        try:
            for line in self._stream.lines():
                try:
                    event = loads(line)
                except ProtocolError as error:
                    event = error
                if isinstance(event, dict):
                    yield event
                else:
                    logger.debug("%s: a line that is not an event skipped: %s", self.where,
                                 short_text(line))
        except socket.timeout:
            self.idle = True
        except (OSError, ValueError) as error:
            raise stream_failure(error, self.where) from error

    def shutdown(self) -> None:
        self._stream.shutdown()

    def close(self) -> None:
        self._stream.close()


def translate(error: BaseException, config: InstanceConfig, image: Optional[str] = None,
              doing: Optional[str] = None) -> DockerFailure:
    """Turns a transport or engine error into a :class:`DockerFailure`. ``doing`` names the
    call for the text of an error answer (by default, a container's create or start)."""
    if isinstance(error, DockerFailure):
        return error
    if isinstance(error, HttpError):
        not_found = error.status == 404
        if not_found and image and "image" in error.message.lower():
            return DockerFailure("no_image",
                                 f"image {image!r} was not found on host {config.name}",
                                 not_found=True)
        if doing is None:
            text = f"host {config.name} refused the container: {error.message}"
        else:
            text = f"host {config.name} answered {error.status} to {doing}: {error.message}"
        return DockerFailure("start_failed", text, not_found=not_found)
    if type(error).__module__ == "ssl" or "SSL" in type(error).__name__:
        return DockerFailure("engine_unreachable",
                             f"TLS failure talking to {_where(config)}: {_short(error)}",
                             retryable=True)
    if isinstance(error, (OSError, ValueError)):
        return DockerFailure("engine_unreachable",
                             f"{_where(config)} did not answer: "
                             f"{_short(error)}", retryable=True)
    return DockerFailure("start_failed", f"unexpected error on host {config.name}: "
                                         f"{type(error).__name__}: {error}")


def _where(config: InstanceConfig) -> str:
    """``host NAME (URL)``, or ``host URL`` when the engine is named by its URL."""
    if config.name == config.server_url:
        return f"host {config.name}"
    return f"host {config.name} ({config.server_url})"


def _short(error: BaseException) -> str:
    return short_text(str(error) or type(error).__name__)


def short_text(text) -> str:
    if isinstance(text, bytes):
        text = text.decode("utf-8", "replace")
    return text if len(text) < 300 else text[:300] + "…"
