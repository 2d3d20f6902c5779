"""The output of one container, as a waiter follows it: :class:`OutputFollower`.

Owned by a waiter's main loop (:mod:`backend._waiter`), one follower per watched container.
The job's own attach (made by its submitter before the start) is read by that loop itself: it
waits on the follower's :meth:`~OutputFollower.fileno` with its other pipes and calls
:meth:`~OutputFollower.pump` when it is readable, which says whether the job printed more
than its ``output`` limit; no thread per container. A follower without an attach of its own
(TLS engines, jobs recovered from a dead waiter) attaches late from a thread of its own, and
tells the main loop through the waiter's :class:`~backend.ipc._messages.Mailbox` when the job
printed too much (:class:`~backend.ipc._messages.OutputOverflow`).
"""
from __future__ import annotations

import enum
import logging
import threading
from typing import Callable, Optional, Tuple

from backend import docker
from backend.ipc import Mailbox, OutputOverflow
from backend.model import join_head_and_tail

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
    late (:meth:`start_late`) and keeps the head of stderr only (the log, read at
    the end, keeps the tail); it only watches the output's size.

    Threads: an own attach is the main loop's alone (:meth:`pump`, :meth:`fileno`). A late
    follower's thread (:meth:`run`) writes the buffers and the byte count under ``_lock``;
    the main loop reads them through :meth:`collected`, :meth:`live_stderr_head` and
    :attr:`seen` (under the lock too). :attr:`state` is the main loop's alone: it changes at
    the end of the own attach (:meth:`pump`) or when the main loop gives up waiting
    (:meth:`give_up`). :meth:`stop` may be called from any thread.
    """

    def __init__(self, container_id: str, limit: int, mailbox: Mailbox,
                 stream: Optional[docker.OutputStream] = None):
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
    def start_late(self, attach: Callable[[str], docker.OutputStream]) -> None:
        """Starts the thread of a follower without an attach of its own:
        ``attach(container_id)`` makes one now (it sees the output from then on)."""
        threading.Thread(target=self.run, args=(attach,), name="backend-output",
                         daemon=True).start()

    @property
    def reading(self) -> bool:
        """Whether the main loop reads the job's own attach: wait on :meth:`fileno`."""
        return self.state is StreamState.OPEN and self._stream is not None

    def fileno(self) -> int:
        assert self._stream is not None
        return self._stream.fileno()

    def pump(self) -> bool:
        """Reads what the job's own attach holds now (the main loop, once :meth:`fileno` is
        readable); at its end, the stream is closed and :attr:`state` says whether every
        byte came. Returns whether the job's output went over its limit just now."""
        stream = self._stream
        assert stream is not None and self._own
        complete = True
        try:
            frames, ended = stream.frames_now()
        except docker.DockerFailure as failure:
            logger.debug("output stream of %s failed: %s", self.container_id, failure.text)
            frames, ended, complete = [], True, False
        over = False
        for number, data in frames:
            over = self._take(number, data) or over
        if ended:
            self.state = StreamState.COMPLETE if complete else StreamState.BROKEN
            self._stream = None
            stream.close()
        return over

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
        """Ends the stream (from any thread): a late follower's thread then ends; an own
        attach is closed (by the main loop only)."""
        with self._lock:
            self._stopped = True
            stream = self._stream
            if self._own:
                self._stream = None
        if stream is not None:
            stream.shutdown()
            if self._own:
                stream.close()

    # -- a late follower's thread ---------------------------------------------------------
    def run(self, attach: Callable[[str], docker.OutputStream]) -> None:
        """Attaches, then reads the stream to its end; notes
        :class:`~backend.ipc._messages.OutputOverflow` as soon as the job printed more than its
        limit."""
        stream = None
        try:
            stream = attach(self.container_id)
            with self._lock:
                self._stream = stream
                stopped = self._stopped
            if stopped:  # forgotten while attaching
                return
            for number, data in stream.frames():
                if self._take(number, data):
                    self.mailbox.put(OutputOverflow(self.container_id))
        except docker.DockerFailure as failure:  # ended by stop(), or the engine is gone
            logger.debug("output follower of %s ended: %s", self.container_id, failure.text)
        finally:
            if stream is not None:
                stream.close()

    def _take(self, number: int, data: bytes) -> bool:
        """Keeps a frame of output; returns whether it took the output over the limit."""
        limit = self.limit
        with self._lock:
            seen = self._seen
            self._seen = seen + len(data)
            if seen > limit:
                # keep reading until the kill: an unread attach blocks the engine
                if self._own:
                    _keep_tail(self._stderr_tail if number == docker.STDERR
                               else self._stdout_tail, data, limit)
                return False
            if number == docker.STDERR:
                if len(self._stderr_head) < limit:
                    self._stderr_head += data[:limit - len(self._stderr_head)]
                if self._own:
                    _keep_tail(self._stderr_tail, data, limit)
            elif self._own:
                if len(self._stdout) <= limit:
                    self._stdout += data[:limit + 1 - len(self._stdout)]
                _keep_tail(self._stdout_tail, data, limit)
            return self._seen > limit


def _keep_tail(tail: bytearray, data: bytes, limit: int) -> None:
    tail += data
    if len(tail) > limit:
        del tail[:len(tail) - limit]
