"""Every message that crosses a process or a thread of a JobManager, as a small named type.

Messages are plain data (picklable :class:`~typing.NamedTuple`\\ s), matched by type, never by
position; one name means one thing. Each channel has one writer and one reader:

===========================  ===========================  ===================================
message                      sender → receiver            meaning
===========================  ===========================  ===================================
:class:`NewJob`              JobManager → dispatcher      place this job
:class:`KillJob`             JobManager → dispatcher      end this job with ``killed``
:class:`KillAll`             JobManager → dispatcher      ``close(wait=False)``: kill every job
:class:`RemoveContainer`     callback manager →           the job was delivered: remove its
                             dispatcher                   container
:class:`Close`               JobManager → dispatcher      stop once every job has ended
:class:`Submit`              dispatcher → submitter       create and start a job's container
:class:`Remove`              dispatcher → submitter       remove these containers
:class:`Sweep`               dispatcher → submitter       remove the containers of dead managers
:class:`RemoveLeftovers`     dispatcher → submitter       closing: remove all of this manager's
:class:`Started`             submitter → dispatcher       it runs (its attach may follow, as a
                                                          file descriptor)
:class:`StartFailed`         submitter → dispatcher       it could not be created or started
:class:`Removed`             submitter → dispatcher       reply to Remove, Sweep, RemoveLeftovers
:class:`Watch`               dispatcher → waiter          watch this running container (its
                                                          attach may follow)
:class:`KillRunning`         dispatcher → waiter          kill this job's container
:class:`Probe`               dispatcher → waiter          look at the engine now, and report
:class:`JobEnded`            waiter → dispatcher          the job's container part of a result
:class:`EngineState`         waiter → dispatcher; event   the engine answers, or does not
                             thread → waiter main loop,
                             load counter
:class:`EngineLoad`          load counter → waiter main   the containers of every manager
                             loop → dispatcher            that the engine runs (the last of
                                                          a drain of the mailbox)
:class:`Exit`                dispatcher → any child       exit now
:class:`DockerEvent`         event thread → waiter        a container event of the engine
:class:`EventsCovered`       event thread → waiter,       the event stream covers from ``since``
                             load counter                 (the counter lists then)
:class:`ContainerSeen`       event thread → load counter  a container of any manager changed
:class:`OutputOverflow`      late output follower →       the job printed more than allowed
                             waiter
===========================  ===========================  ===================================

In-process channels (the dispatcher's commands, a waiter's notes from its helper threads) are a
:class:`Mailbox`: a deque and a wake-up pipe, so that the reader's single wait (a
:class:`~backend.ipc._waitset.Waitset`) sees them beside its pipes and sentinels.
"""
from __future__ import annotations

import collections
import logging
import os
from multiprocessing import reduction
from multiprocessing.connection import Connection
from typing import (Any, Callable, Deque, Dict, FrozenSet, Iterator, List, NamedTuple, Optional,
                    Tuple, Union)

# the job's record and spec, and the result dict: defined with what they belong to, named here
# too since they cross the channels below
from backend.model import Job, JobSpec, Outputs, Result

logger = logging.getLogger("backend")


# -- to the dispatcher, from the JobManager's own threads ------------------------------------

class NewJob(NamedTuple):
    job: Job  # stays in this process: only its spec crosses a pipe


class KillJob(NamedTuple):
    job_id: str


class KillAll(NamedTuple):
    pass


class RemoveContainer(NamedTuple):
    engine: str
    container: str


class Close(NamedTuple):
    pass


# -- dispatcher -> submitter -------------------------------------------------------------------

class Submit(NamedTuple):
    engine: str
    spec: JobSpec
    container_name: str
    warm: bool = False  # a warm container (docs/performance.rst, warm starts): started, its input left unwritten
    gate: bool = False  # with warm or into: its program waits behind the gate (raw, files)
    into: Optional[str] = None  # a warm container taken by the job: write its files there
    # (and over TLS attach its stdin and write the gate's line, if gated, and the input)


class Remove(NamedTuple):
    engine: str
    containers: Tuple[str, ...]  # ids or names


class Sweep(NamedTuple):
    engine: str


class RemoveLeftovers(NamedTuple):
    engine: str


#: A submitter's removal requests.
Removal = Union[Remove, Sweep, RemoveLeftovers]


class Exit(NamedTuple):
    pass


# -- submitter -> dispatcher -------------------------------------------------------------------

class Started(NamedTuple):
    job_id: str
    container_id: str
    has_stream: bool  # the job's attach follows on the pipe (see send)
    input_written: int  # bytes of the job's stdin written; the waiter writes the rest
    fds: Tuple[int, ...] = ()  # sent: the attach to pass on; received: what arrived


class WarmStarted(Started):
    """The reply to a warm container's ``Submit``: it runs behind its gate (its attach
    follows), waiting for a job."""

    __slots__ = ()


class StartFailed(NamedTuple):
    job_id: str
    reason: str                  # a docs/results.rst reason
    text: str
    container_id: Optional[str]  # the container, if it was created
    retryable: bool              # the engine did not answer: the job may go elsewhere
    maybe_created: bool          # the create was sent and not answered
    no_shell: bool = False       # a gated warm container's image has no /bin/sh
    warm_gone: bool = False      # the warm container taken (into) no longer waits: serve cold


class WarmStartFailed(StartFailed):
    """The reply to a warm container's ``Submit``: it could not be started."""

    __slots__ = ()


class Removed(NamedTuple):
    engine: str
    failed: Tuple[str, ...]  # what could not be removed
    reachable: bool          # False: the engine did not answer, the rest was not tried


# -- dispatcher -> waiter ----------------------------------------------------------------------

class Watch(NamedTuple):
    job_id: str
    container_id: str
    limits: Dict[str, Any]
    started_at: float
    kill_requested: bool
    has_stream: bool  # the job's attach follows on the pipe
    has_input: bool = False  # then the rest of its stdin, as a file (after the attach)
    protocol: str = "json"              # how its output becomes a result (docs/protocol.rst, docs/running-programs.rst)
    outputs: Optional[Outputs] = None   # files to collect once it ended (docs/running-programs.rst)
    fds: Tuple[int, ...] = ()  # sent: its attach, then the rest of its input (as a file)


class KillRunning(NamedTuple):
    job_id: str


class Probe(NamedTuple):
    pass


# -- waiter -> dispatcher ----------------------------------------------------------------------

class JobEnded(NamedTuple):
    job_id: str
    result: Result


class EngineState(NamedTuple):
    engine: str
    reachable: bool
    why: str = ""  # what the last failure said (a TLS error, a refused connection), if any


class EngineLoad(NamedTuple):
    """What one engine runs, of every manager (label ``backend.manager``), counted from it:
    containers created or running (a created one is about to start)."""

    engine: str
    running: int               # of all managers
    ours: FrozenSet[str]       # this manager's, by job (their label backend.job)
    other_managers: int        # other managers with a container there in the last seconds


# -- inside a waiter: helper threads -> main loop ---------------------------------------------

class DockerEvent(NamedTuple):
    action: str                # one of backend.docker._client.CONTAINER_EVENTS
    container_id: str
    exit_code: Optional[int]   # for "die"
    at: float                  # the engine's time of the event (epoch seconds)


class EventsCovered(NamedTuple):
    since: float


class ContainerSeen(NamedTuple):
    action: str   # create, die, destroy or remove (Podman's destroy)
    container_id: str
    manager: str  # its backend.manager label
    job: str      # its backend.job label (a warm container's own id)


class OutputOverflow(NamedTuple):
    container_id: str


class Mailbox:
    """An in-process channel to a thread that waits on pipes: :meth:`put` from any thread;
    the owner includes :attr:`fileno` in its wait and calls :meth:`drain` when it is ready.
    :meth:`close` once, by the owner, at its end.

    A put writes a wake-up only when none is pending since the last drain: a burst of
    messages costs one write, not one per message. (A put appends before it looks at the
    flag; a drain reads the pipe, then clears the flag, then takes the messages: a put that
    saw the flag set has its message taken by that drain, and a flag set is always followed
    by a byte in the pipe, so no message is left without a wake-up.)"""

    def __init__(self) -> None:
        self._messages: Deque[Any] = collections.deque()
        self._armed = False  # a wake-up byte is in the pipe, or about to be
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_r, False)
        os.set_blocking(self._wake_w, False)

    def fileno(self) -> int:
        return self._wake_r

    def put(self, message: Any) -> None:
        self._messages.append(message)
        if self._armed:
            return
        self._armed = True
        try:
            os.write(self._wake_w, b"!")
        except OSError:  # closed: the owner ended
            pass

    def drain(self) -> Iterator[Any]:
        """The messages queued so far, oldest first (also those put while draining)."""
        try:
            os.read(self._wake_r, 65536)
        except OSError:  # nothing to read: a put raced with the last drain
            pass
        self._armed = False  # after the read: a put that saw it set appended before it
        while self._messages:
            yield self._messages.popleft()

    def close(self) -> None:
        for fd in (self._wake_r, self._wake_w):
            try:
                os.close(fd)
            except OSError:
                pass


def carried(message: Any) -> int:
    """How many file descriptors follow ``message`` on its pipe: its attach
    (``has_stream``), then the rest of a job's input (``has_input``)."""
    return int(bool(getattr(message, "has_stream", False))) + int(
        bool(getattr(message, "has_input", False)))


def send(connection: Connection, message: Any, pid: Optional[int] = None) -> None:
    """Sends ``message`` on a child's pipe, then the descriptors of its ``fds`` (as many as
    :func:`carried` says; SCM_RIGHTS). The one way a message crosses a pipe; the sender keeps
    its descriptors (closing them is its own business).

    Raises:
        OSError, ValueError: the pipe is closed (the other end died).
    """
    fds = getattr(message, "fds", ())
    connection.send(message._replace(fds=()) if fds else message)
    for fd in fds[:carried(message)]:
        reduction.send_handle(connection, fd, pid or 0)


def receive(connection: Connection) -> Any:
    """The next message of a pipe, with the descriptors that followed it in its ``fds``
    (fewer than it announced when the sender died meanwhile); the receiver owns them.

    Raises:
        EOFError, OSError: the pipe ended.
    """
    message = connection.recv()
    expected = carried(message)
    if not expected:
        return message
    fds: List[int] = []
    for _ in range(expected):
        try:
            fds.append(reduction.recv_handle(connection))
        except (EOFError, OSError, RuntimeError) as error:
            logger.warning("a descriptor sent with a %s was lost on its way (%s)",
                           type(message).__name__, error)
            break
    return message._replace(fds=tuple(fds))


class Handlers:
    """The one way a loop hands a message to its handler: a table by the message's exact
    type. ``handlers(message, *context)`` calls ``table[type(message)](*context, message)``;
    a message of no known type is logged and dropped."""

    def __init__(self, owner: str, table: Dict[type, Callable[..., Any]]):
        self.owner = owner
        self.table = table

    def __call__(self, message: Any, *context: Any) -> Any:
        handler = self.table.get(type(message))
        if handler is None:
            logger.error("%s: unexpected message %r", self.owner, message)
            return None
        return handler(*context, message)
