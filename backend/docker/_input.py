"""A job's input, written to its container's stdin without ever blocking the writer's owner.

A job that never reads its stdin (or exits before reading all of it) must not hold anyone:
the engine stops reading the attach once the job's stdin is gone, so a blocking ``sendall``
of an input larger than the socket's buffers would never return (docs/running-programs.rst, last item). The
input is therefore written in up to two steps, each under the job's clock:

- :func:`write_available`, by the submitter right after the start: what fits in the socket's
  buffers now, with ``MSG_DONTWAIT`` (most inputs fit whole: the fast path costs one
  ``send``). When all of it is written, the submitter half-closes the attach (end of file).
- :class:`InputWriter`, in the waiter that watches the container: the rest, from a thread of
  its own, with ``poll()`` and ``MSG_DONTWAIT`` on a duplicate of the attach's descriptor,
  stopped by the waiter as soon as the container ended, is killed, or its job is reported.

Over TLS the attach cannot be passed on nor half-closed: :func:`write_within` writes the whole
input from a thread of the submitter, bounded by the job's ``hard_time`` and stopped when the
container no longer runs.

No blocking mode is ever changed on a socket that another thread reads (``settimeout`` flips
``O_NONBLOCK`` on the descriptor, for every thread): :class:`InputWriter` only passes flags to
``send``. Nothing here calls the engine; ``still_running`` is the caller's.
"""
from __future__ import annotations

import errno
import logging
import os
import select
import socket
import threading
import time
from typing import Callable, Optional

logger = logging.getLogger("backend")

#: Bytes handed to one ``send``.
_CHUNK = 1 << 18
#: The errors that say the container's side of the attach is gone: nothing more to write.
_GONE = (BrokenPipeError, ConnectionResetError, ConnectionAbortedError)
#: Seconds a TLS write may make no progress before the container is looked at.
_STALL_CHECK = 1.0


def write_available(sock: socket.socket, data: bytes) -> int:
    """Writes what the socket takes now, without blocking.

    Returns:
        The number of bytes written; ``len(data)`` also when the other side is gone (the
        job's stdin was closed: nothing more is wanted).
    """
    view = memoryview(data)
    written = 0
    try:
        while written < len(data):
            written += sock.send(view[written:written + _CHUNK], socket.MSG_DONTWAIT)
    except (BlockingIOError, InterruptedError):
        pass
    except _GONE:
        return len(data)
    return written


def half_close(sock: socket.socket) -> None:
    """End of file for the job's stdin; reading goes on. A connection already gone is no
    error."""
    try:
        sock.shutdown(socket.SHUT_WR)
    except OSError:
        pass


class InputWriter:
    """Writes the rest of one job's input to its container's attach, in the waiter.

    Threads: created, started and stopped by the waiter's main loop; :meth:`run` is the
    writer's own thread, the only one to touch its duplicate of the attach's descriptor and
    its read end of the wake-up pipe. :meth:`stop` may be called from any thread, as often as
    wanted; it never waits. The output follower reads the same connection through its own
    descriptor: this writer never changes the connection's blocking mode, and closes only its
    own descriptor (the connection ends once both are closed).

    Args:
        sock: the job's attach, as the waiter adopted it.
        data: the input still to write.
        container_id: for the log.
    """

    def __init__(self, sock: socket.socket, data: bytes, container_id: str):
        self.container_id = container_id
        self._sock = sock.dup()
        self._data = data
        self._wake_r, self._wake_w = os.pipe()
        self._stopped = threading.Event()
        self._lock = threading.Lock()  # guards the wake-up pipe's write end against close
        #: bytes written so far (read by tests and the log; written by the writer's thread)
        self.written = 0
        self._done = threading.Event()  # set when the writer's thread has ended

    def start(self) -> None:
        threading.Thread(target=self.run, name="backend-input", daemon=True).start()

    def stop(self) -> None:
        """Stops writing (the container ended, or is being killed or forgotten)."""
        with self._lock:
            if self._stopped.is_set():
                return
            self._stopped.set()
            try:
                os.write(self._wake_w, b"!")
            except OSError:  # full: a wake-up is pending anyway
                pass

    def wait(self, timeout: float) -> bool:
        """Whether the writer's thread ended within ``timeout`` seconds (for tests)."""
        return self._done.wait(timeout)

    def run(self) -> None:
        view = memoryview(self._data)
        poller = select.poll()
        poller.register(self._sock.fileno(), select.POLLOUT)
        poller.register(self._wake_r, select.POLLIN)
        complete = False
        try:
            while not self._stopped.is_set():
                if self.written >= len(view):
                    complete = True
                    break
                events = dict(poller.poll())
                if self._wake_r in events or self._stopped.is_set():
                    break
                if events.get(self._sock.fileno(), 0) & (select.POLLERR | select.POLLHUP):
                    break  # the connection is gone
                try:
                    self.written += self._sock.send(view[self.written:self.written + _CHUNK],
                                                    socket.MSG_DONTWAIT)
                except (BlockingIOError, InterruptedError):
                    continue
            if complete:
                half_close(self._sock)
        except _GONE:
            pass
        except OSError as error:
            if error.errno not in (errno.EBADF, errno.ENOTCONN):
                logger.debug("writing the input of %s: %s", self.container_id, error)
        finally:
            logger.debug("input of %s: %d of %d bytes written", self.container_id,
                         self.written, len(view))
            self._close()

    def _close(self) -> None:
        with self._lock:  # stop() writes to the pipe only while it is open
            self._stopped.set()
            os.close(self._wake_w)
        os.close(self._wake_r)
        self._sock.close()
        self._done.set()


def start_writer(sock: socket.socket, rest: bytes, container_id: str
                 ) -> Optional[InputWriter]:
    """A started :class:`InputWriter` of ``rest``; None when there is nothing to write."""
    if not rest:
        return None
    writer = InputWriter(sock, rest, container_id)
    writer.start()
    return writer


def stop_writer(writer: Optional[InputWriter]) -> None:
    """Stops ``writer``, if there is one (see :meth:`InputWriter.stop`)."""
    if writer is not None:
        writer.stop()


def read_input(fd: int) -> bytes:
    """The rest of a job's input, passed after its attach as an anonymous file (see
    :meth:`backend.dispatch._supervisor.Supervisor.watch`); ``fd`` is closed here."""
    try:
        size = os.fstat(fd).st_size
        chunks = []
        while size > 0:
            chunk = os.read(fd, size)
            if not chunk:
                break
            chunks.append(chunk)
            size -= len(chunk)
        return b"".join(chunks)
    finally:
        os.close(fd)


def write_within(sock: socket.socket, data: bytes, deadline: float,
                 still_running: Callable[[], bool]) -> int:
    """Writes ``data`` on a socket no other thread uses (a TLS attach, stdin only), until it
    is all written, ``deadline`` (``time.monotonic()``) passes, or ``still_running()`` says
    no after a second without progress.

    Returns:
        The number of bytes written.
    """
    view = memoryview(data)
    written = 0
    try:
        while written < len(view):
            left = deadline - time.monotonic()
            if left <= 0:
                break
            sock.settimeout(min(_STALL_CHECK, left))
            try:
                # the same slice again after a timeout: TLS wants a retried write unchanged
                written += sock.send(view[written:written + _CHUNK])
            except (socket.timeout, BlockingIOError):
                if not still_running():
                    break
    except _GONE:
        pass
    except OSError as error:
        logger.debug("writing a job's input over TLS: %s", error)
    return written
