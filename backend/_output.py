"""The output of one container, as a waiter follows it: :class:`OutputFollower`.

Owned by a waiter's main loop (:mod:`backend._waiter`), one follower per watched container.
Its thread reads the container's attach and tells the main loop, through the waiter's
:class:`~backend._messages.Mailbox`, :class:`~backend._messages.OutputOverflow` (the job
printed more than its ``output`` limit) and :class:`~backend._messages.OutputEnded` (its own
attach ended).
"""
from __future__ import annotations

import enum
import logging
import threading
from typing import Callable, Optional, Tuple

from backend import _docker
from backend._messages import Mailbox, OutputEnded, OutputOverflow
from backend._results import join_head_and_tail

logger = logging.getLogger("backend")


class StreamState(enum.Enum):
    """Where a job's own attach (handed over by its submitter) stands."""

    NONE = "none"          # there is none (TLS engine, recovered job): the log is read
    OPEN = "open"          # being read
    COMPLETE = "complete"  # read to its end: every byte is here, the log is not read
    BROKEN = "broken"      # failed or too late: the log is read instead


class OutputFollower:
    """Reads one container's stdout and stderr as they come.

    With the job's own attach (made before its start), every byte is seen: stdout and the
    head and tail of stderr are kept, and the engine's log is not read. Without, it attaches
    late (:meth:`start` with ``attach``) and keeps the head of stderr only (the log, read at
    the end, keeps the tail); it only watches the output's size.

    Threads: the follower's own thread (:meth:`run`) writes the buffers and the byte count,
    under ``_lock``; the main loop reads them through :meth:`collected`,
    :meth:`live_stderr_head` and :attr:`seen` (under the lock too: a late follower may still
    be reading), and the complete output only after :class:`OutputEnded` (then nothing
    writes). :attr:`state` is the main loop's alone: it changes on :class:`OutputEnded`
    (:meth:`ended`) or when the main loop gives up waiting (:meth:`give_up`).
    :meth:`stop` may be called from any thread.
    """

    def __init__(self, container_id: str, limit: int, mailbox: Mailbox,
                 stream: Optional[_docker.OutputStream] = None):
        self.container_id = container_id
        self.limit = limit
        self.mailbox = mailbox
        self.state = StreamState.OPEN if stream is not None else StreamState.NONE
        self._own = stream is not None
        self._stream = stream
        self._lock = threading.Lock()
        self._stopped = False
        self._seen = 0
        self._stdout = bytearray()
        self._stdout_tail = bytearray()
        self._stderr_head = bytearray()
        self._stderr_tail = bytearray()

    # -- main loop ------------------------------------------------------------------------
    def start(self, attach: Optional[Callable[[str], _docker.OutputStream]] = None) -> None:
        """Starts the follower's thread; ``attach(container_id)`` makes the stream when the
        job has no attach of its own."""
        threading.Thread(target=self.run, args=(attach,), name="backend-output",
                         daemon=True).start()

    def ended(self, complete: bool) -> None:
        """:class:`OutputEnded` came: the stream's end is the state's."""
        if self.state is StreamState.OPEN:
            self.state = StreamState.COMPLETE if complete else StreamState.BROKEN

    def give_up(self) -> None:
        """The stream did not end in time after its container: its log is read instead."""
        self.state = StreamState.BROKEN
        self.stop()

    @property
    def seen(self) -> int:
        """Bytes of output seen so far."""
        with self._lock:
            return self._seen

    def collected(self) -> Tuple[bytes, bytes]:
        """The whole ``(stdout, stderr)`` of a :attr:`~StreamState.COMPLETE` stream; each
        beyond the limit keeps its head and tail."""
        with self._lock:
            stdout, stderr = bytes(self._stdout), bytes(self._stderr_head)
            if self._seen > self.limit:
                stderr = join_head_and_tail(stderr, bytes(self._stderr_tail), self.limit)
                stdout = join_head_and_tail(stdout, bytes(self._stdout_tail), self.limit)
        return stdout, stderr

    def live_stderr_head(self) -> bytes:
        """The head of stderr seen live, for output collected from the log (else b"")."""
        if self.state is StreamState.COMPLETE:
            return b""
        with self._lock:
            return bytes(self._stderr_head)

    def stop(self) -> None:
        """Ends the stream (from any thread): the follower's thread then ends."""
        with self._lock:
            self._stopped = True
            stream = self._stream
        if stream is not None:
            stream.shutdown()

    # -- the follower's thread ------------------------------------------------------------
    def run(self, attach: Optional[Callable[[str], _docker.OutputStream]] = None) -> None:
        """Reads the stream to its end; notes :class:`OutputOverflow` as soon as the job
        printed more than its limit, and :class:`OutputEnded` at the end of its own attach."""
        complete = False
        stream = self._stream
        try:
            if stream is None and attach is not None:
                stream = attach(self.container_id)
                with self._lock:
                    self._stream = stream
                    stopped = self._stopped
                if stopped:  # forgotten while attaching
                    return
            if stream is not None:
                self._read(stream)
                complete = self._own
        except _docker.DockerFailure as failure:  # ended by stop(), or the engine is gone
            logger.debug("output follower of %s ended: %s", self.container_id, failure.text)
        finally:
            if stream is not None:
                stream.close()
            if self._own:
                self.mailbox.put(OutputEnded(self.container_id, complete))

    def _read(self, stream: _docker.OutputStream) -> None:
        limit = self.limit
        for number, data in stream.frames():
            with self._lock:
                seen = self._seen
                self._seen = seen + len(data)
                if seen > limit:
                    # keep reading until the kill: an unread attach blocks the engine
                    if self._own:
                        _keep_tail(self._stderr_tail if number == _docker.STDERR
                                   else self._stdout_tail, data, limit)
                    continue
                if number == _docker.STDERR:
                    if len(self._stderr_head) < limit:
                        self._stderr_head += data[:limit - len(self._stderr_head)]
                    if self._own:
                        _keep_tail(self._stderr_tail, data, limit)
                elif self._own:
                    if len(self._stdout) <= limit:
                        self._stdout += data[:limit + 1 - len(self._stdout)]
                    _keep_tail(self._stdout_tail, data, limit)
                over = self._seen > limit
            if over:
                self.mailbox.put(OutputOverflow(self.container_id))


def _keep_tail(tail: bytearray, data: bytes, limit: int) -> None:
    tail += data
    if len(tail) > limit:
        del tail[:len(tail) - limit]
