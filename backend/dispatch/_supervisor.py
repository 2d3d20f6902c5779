"""Supervision of a JobManager's children: the submitter pool and the waiters of every engine.

Owns the child processes and their pipes: starting them from the multiprocessing context with
the *lifeline* (:func:`backend.ipc._child.exit_with_parent`), telling their deaths (a sentinel, or
for a child whose forkserver died, the end of file on its pipe), replacing them, which child
holds which job or removal, handing running jobs to waiters, and stopping them all at shutdown
(:data:`STOP_GRACE` to exit, then TERM, then KILL). The dispatcher thread
(:mod:`backend.dispatch._dispatcher`) owns the one instance and is its only caller; what a dead child
held is the dispatcher's to settle.
"""
from __future__ import annotations

import enum
import logging
import os
import signal
import time
from multiprocessing.connection import Connection
from typing import (Any, Callable, Dict, Iterable, List, NamedTuple, Optional, Sequence, Set,
                    Union)

from backend.ipc import (Exit, Probe, Removal, Submit, Watch, is_running, readable, receive, send,
                         start_process)
from backend.model import InstanceConfig, Job, JobState

logger = logging.getLogger("backend")

#: Seconds the children get to exit at shutdown before TERM, then as long before KILL.
STOP_GRACE = 5.0

#: What a submitter works on: a job whose container it starts, a removal, or a warm
#: container it starts (its ``Submit``, see :mod:`backend.dispatch._warm`).
Holding = Union[Job, Removal, Submit]


class ChildMains(NamedTuple):
    """The entry points of the children (given by the JobManager, whose faces they are:
    :func:`backend._submitter.submitter_main` and :func:`backend._waiter.waiter_main`)."""

    submitter: Callable[..., None]
    waiter: Callable[..., None]


class ChildKind(enum.Enum):
    SUBMITTER = "submitter"
    WAITER = "waiter"


class Child:
    """A child process with our end of its pipe, and what it holds.

    Attributes:
        kind: submitter or waiter.
        engine: a waiter's engine (a submitter serves them all).
        holding: a submitter's job or removal in progress.
        jobs: a waiter's jobs, by id.
        orphaned: its sentinel came from a forkserver that died: the child runs on, and the
            end of file on its pipe is what tells its death.
        pipe_closed: its pipe reached end of file.
        broken: a send to it failed: it died and its death is not seen yet; no more work.
        abandoned: a submitter given up on (:meth:`Supervisor.abandon`): what it says no
            longer counts, its pipe is closed.
    """

    def __init__(self, kind: ChildKind, process: Any, connection: Connection,
                 engine: Optional[str] = None):
        self.kind = kind
        self.process = process  # a multiprocessing process of the context
        self.connection = connection
        self.fd = connection.fileno()  # what the dispatcher's wait returns for the pipe
        self.sentinel: Optional[int] = getattr(process, "sentinel", None)
        self.engine = engine
        self.holding: Optional[Holding] = None
        self.jobs: Dict[str, Job] = {}
        self.orphaned = False
        self.pipe_closed = False
        self.broken = False
        self.abandoned = False

    def send(self, message: object) -> bool:
        """Sends ``message``; False (and ``broken``) if the child is gone. Its death is
        handled where its sentinel or pipe says so; what it holds is dealt with there."""
        try:
            send(self.connection, message, self.process.pid)
            return True
        except (OSError, ValueError) as error:
            logger.debug("%s process %s does not read its pipe: %s", self.kind.value,
                         self.process.pid, error)
            self.broken = True
            return False

    def is_running(self) -> bool:
        """Whether the process still runs (looked up by pid: a dead forkserver leaves
        ``process.is_alive()`` saying no for children that are alive)."""
        return is_running(self.process.pid)


class Supervisor:
    """The children of one JobManager. See the module docstring."""

    def __init__(self, context: Any, configs: Sequence[InstanceConfig], manager_id: str,
                 owner: str, log_level: int, mains: ChildMains):
        self.context = context  # a multiprocessing context
        self.mains = mains
        self.configs = list(configs)
        self.manager_id = manager_id
        self.owner = owner
        self.log_level = log_level
        # children read end of file here when this process dies (see _child.exit_with_parent)
        self.lifeline, self.lifeline_writer = context.Pipe(duplex=False)
        self.submitters: List[Child] = []
        self.waiters: Dict[str, List[Child]] = {config.name: [] for config in configs}

    # -- starting ------------------------------------------------------------------------
    def start(self, pool_size: int) -> None:
        """Starts the submitter pool and every engine's waiters."""
        self.submitters = [self._start_submitter() for _ in range(pool_size)]
        for config in self.configs:
            self.waiters[config.name] = [self._start_waiter(config)
                                         for _ in range(config.waiters)]

    def _start_submitter(self) -> Child:
        ours, theirs = self.context.Pipe()
        process = self.context.Process(
            target=self.mains.submitter, name="backend-submitter", daemon=True,
            args=(theirs, self.configs, self.manager_id, self.owner, self.log_level,
                  self.lifeline))
        start_process(process)
        theirs.close()
        return Child(ChildKind.SUBMITTER, process, ours)

    def _start_waiter(self, config: InstanceConfig) -> Child:
        ours, theirs = self.context.Pipe()
        process = self.context.Process(
            target=self.mains.waiter, name=f"backend-waiter-{config.name}", daemon=True,
            args=(theirs, config, self.manager_id, self.log_level, self.lifeline))
        start_process(process)
        theirs.close()
        return Child(ChildKind.WAITER, process, ours, config.name)

    # -- looking at them -----------------------------------------------------------------
    def children(self) -> List[Child]:
        return self.submitters + [w for waiters in self.waiters.values() for w in waiters]

    @staticmethod
    def waitables(children: Iterable[Child]) -> List[int]:
        """The pipes and sentinels of ``children`` to wait on (file descriptors)."""
        waitables: List[int] = []
        for child in children:
            if not child.abandoned:
                waitables.append(child.fd)
            if not child.orphaned and child.sentinel is not None:
                waitables.append(child.sentinel)
        return waitables

    def dead(self, children: Iterable[Child], ready: Set[Any]) -> List[Child]:
        """Which of ``children`` died, from what the dispatcher's wait returned
        (``ready``). A sentinel of a child that runs on came from its forkserver,
        which died: the child is orphaned, its pipe's end of file tells its death."""
        dead = []
        for child in children:
            if not child.orphaned and child.sentinel in ready:
                if child.is_running():
                    logger.info("%s process %s outlived its forkserver", child.kind.value,
                                child.process.pid)
                    child.orphaned = True
                    continue
                dead.append(child)
            elif child.orphaned and (child.pipe_closed
                                     or child.abandoned and not child.is_running()):
                dead.append(child)
        return dead

    @staticmethod
    def read(child: Child, handle: Callable[[Child, object], None]) -> None:
        """Hands each message ``child`` sent to ``handle``; notes the end of its pipe."""
        if child.abandoned:
            return
        try:
            while readable(child.fd):
                handle(child, receive(child.connection))
        except EOFError:
            child.pipe_closed = True
        except OSError:
            pass

    def idle_submitters(self) -> List[Child]:
        return [s for s in self.submitters if s.holding is None and not s.broken]

    def busy(self) -> bool:
        """Whether a submitter holds a job or a removal."""
        return any(s.holding is not None for s in self.submitters)

    def waiter_of(self, job: Job) -> Optional[Child]:
        for waiter in self.waiters.get(job.engine or "", []):
            if job.job_id in waiter.jobs:
                return waiter
        return None

    # -- telling them --------------------------------------------------------------------
    def watch(self, job: Job, stream_fd: Optional[int] = None, input_written: int = 0,
              before: bytes = b"", waiter: Optional[Child] = None) -> None:
        """Hands a running job to a waiter (the least busy of its engine by default), with its
        output stream when there is one (the waiter reads the engine's log otherwise), and
        the part of its input the submitter did not write (``input_written`` bytes were),
        as a file: the pipe carries only small messages; ``before`` goes first (a warm
        container's gate line). The descriptors are closed here."""
        assert job.engine and job.spec and job.container_id and job.started_at is not None
        if waiter is None:
            waiter = min(self.waiters[job.engine], key=lambda w: len(w.jobs))
        waiter.jobs[job.job_id] = job  # if the waiter died, its replacement is given the job
        rest = before + job.spec.stdin[input_written:] if stream_fd is not None else b""
        input_fd = None
        try:
            input_fd = _input_file(rest) if rest else None
            fds = tuple(fd for fd in (stream_fd, input_fd) if fd is not None)
            waiter.send(Watch(job.job_id, job.container_id, job.spec.task.limits,
                              job.started_at, job.kill_requested, stream_fd is not None,
                              input_fd is not None, job.spec.task.protocol, job.spec.outputs,
                              fds))
        except OSError as error:
            logger.debug("the output stream of %s was not passed: %s", job.job_id, error)
        finally:
            for fd in (stream_fd, input_fd):
                if fd is not None:
                    os.close(fd)

    def probe(self, engine: str) -> None:
        """Asks the waiters of ``engine`` to look at it now and report what they see."""
        for waiter in self.waiters[engine]:
            waiter.send(Probe())

    # -- replacing -----------------------------------------------------------------------
    @staticmethod
    def abandon(child: Child) -> None:
        """Gives up on a submitter whose request waits on an engine that does not answer:
        its pipe is closed (nothing it says counts any more) and it is killed, rather than
        left holding a process of the pool for the call's whole timeout; it is replaced once
        its death is seen. What it held is the caller's to settle (``holding`` is cleared)."""
        child.abandoned = child.broken = True
        child.holding = None
        child.connection.close()
        try:
            os.kill(child.process.pid, signal.SIGKILL)
        except OSError:
            pass

    def replace(self, child: Child) -> Child:
        """Puts a new child in the place of ``child``, which died, and returns it. A waiter's
        running jobs go to its replacement; what a submitter held is left on it, for the
        caller to settle."""
        child.connection.close()
        if child.abandoned:
            logger.info("submitter process %s, given up on, is replaced", child.process.pid)
        else:
            logger.warning("%s process %s died (exit code %s); replacing it",
                           child.kind.value, child.process.pid,
                           "unknown" if child.orphaned else child.process.exitcode)
        if child.kind is ChildKind.SUBMITTER:
            replacement = _restart(self._start_submitter)
            self.submitters[self.submitters.index(child)] = replacement
        else:
            assert child.engine is not None
            config = next(c for c in self.configs if c.name == child.engine)
            waiters = self.waiters[child.engine]
            replacement = _restart(lambda: self._start_waiter(config))
            waiters[waiters.index(child)] = replacement
            for job in child.jobs.values():
                if job.state is JobState.RUNNING:
                    self.watch(job, waiter=replacement)
        return replacement

    # -- stopping ------------------------------------------------------------------------
    def stop(self) -> None:
        """Tells every child to exit; TERM, then KILL, the ones that do not in time."""
        children = self.children()
        for child in children:
            try:
                child.connection.send(Exit())
            except (OSError, ValueError):
                pass
        deadline = time.monotonic() + STOP_GRACE
        for child in children:
            child.process.join(max(0.0, deadline - time.monotonic()))
        for child in children:
            if child.orphaned:
                _end_orphan(child, deadline)
            elif child.process.is_alive():
                child.process.terminate()
                child.process.join(STOP_GRACE)
            if child.process.is_alive():
                child.process.kill()
                child.process.join()
            child.connection.close()
            child.process.close()
        self.lifeline.close()
        self.lifeline_writer.close()


def _input_file(data: bytes) -> int:
    """A descriptor of an anonymous file holding ``data``, at offset 0 (a memory file)."""
    fd = os.memfd_create("backend-input", os.MFD_CLOEXEC)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]
        os.lseek(fd, 0, os.SEEK_SET)
    except BaseException:
        os.close(fd)
        raise
    return fd


def _restart(start: Callable[[], Child]) -> Child:
    """Starts a replacement child; retries briefly, as a forkserver that was just killed is
    only replaced once it has been reaped."""
    for attempt in range(20):
        try:
            return start()
        except OSError as error:
            logger.warning("starting a replacement child failed (%s); retrying", error)
            time.sleep(0.1 * (attempt + 1))
    return start()


def _end_orphan(child: Child, deadline: float) -> None:
    """Waits for a child whose forkserver died to exit (it was told to), then TERM, KILL."""
    for sig in (None, signal.SIGTERM, signal.SIGKILL):
        if sig is not None:
            try:
                os.kill(child.process.pid, sig)
            except OSError:
                return
            deadline = time.monotonic() + STOP_GRACE
        while child.is_running() and time.monotonic() < deadline:
            time.sleep(0.02)  # no event tells an orphan's end: its parent is gone
        if not child.is_running():
            return
