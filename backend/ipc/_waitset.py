"""One wait over the pipes, wake-up pipes and process sentinels of a loop, kept from turn to turn.

:func:`multiprocessing.connection.wait` builds a new selector and registers every file
descriptor at each call; a loop that turns several times per job (the dispatcher's, a
waiter's) paid that every turn. A :class:`Waitset` keeps one :func:`select.poll` object and
changes only what changed since the last turn. It is owned by the one thread that runs the
loop (the dispatcher thread, a waiter's main thread); nothing else touches it.

:func:`readable` tells whether one descriptor can be read now, without building a selector
either (the loops read every message a pipe holds before they wait again).
"""
from __future__ import annotations

import math
import select
from typing import Any, Dict, Iterable, Optional, Set

_READ = select.POLLIN | select.POLLPRI


class Waitset:
    """What :func:`multiprocessing.connection.wait` does, with the registrations kept.

    A waitable is a file descriptor or an object with ``fileno()`` (a
    :class:`~multiprocessing.connection.Connection`, a :class:`~backend.ipc._messages.Mailbox`).
    """

    def __init__(self) -> None:
        self._poll = select.poll()
        self._by_fd: Dict[int, Any] = {}

    def wait(self, waitables: Iterable[Any], timeout: Optional[float] = None) -> Set[Any]:
        """The waitables ready to be read (or at their end), waiting at most ``timeout``
        seconds (None: without end) for one to be."""
        wanted = {w if type(w) is int else w.fileno(): w for w in waitables}  # noqa: E721
        for fd in self._by_fd.keys() - wanted.keys():
            self._poll.unregister(fd)
        for fd in wanted.keys() - self._by_fd.keys():
            self._poll.register(fd, _READ)
        self._by_fd = wanted
        milliseconds = None if timeout is None else max(0, math.ceil(timeout * 1000))
        while True:
            try:
                events = self._poll.poll(milliseconds)
                break
            except InterruptedError:  # pragma: no cover - Python retries (PEP 475)
                continue
        return {wanted[fd] for fd, _ in events if fd in wanted}


def readable(fd: int) -> bool:
    """Whether ``fd`` can be read now without blocking (data, or its end)."""
    poll = select.poll()  # not select.select: it fails on descriptors above FD_SETSIZE
    poll.register(fd, _READ)
    return bool(poll.poll(0))
