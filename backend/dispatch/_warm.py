"""Warm starts in the dispatcher (docs/performance.rst, warm starts): starting warm containers, writing a job into
one, and removing them.

A warm container is made like a job's (a submitter's ``Submit`` with ``warm=True``: created
with the label ``backend.warm``, attached, started, nothing written), and its open attach is
passed back to the dispatcher, which holds it in the :class:`~backend.dispatch._shapes.WarmPool`. A job
of its shape takes it without a submitter: its slot was the warm container's, its attach and
its whole input go to a waiter in the job's ``Watch`` (the waiter writes the input under the
job's clock, which starts then), and it ends and is removed as any other job.

A raw job or a job with files takes a warm container whose program waits behind a gate
(:func:`backend.docker._definition.gated`): a job with files is first given to an idle submitter
(``Submit`` with ``into``), which writes them into the running container, and the dispatcher
keeps the attach meanwhile (:meth:`WarmStarts.filled`); then its input goes to the waiter
after :data:`~backend.docker.GATE_LINE`, which opens the gate. An image without ``/bin/sh``
fails its first gated start (``StartFailed.no_shell``): it is logged once, and its gated jobs
start cold.

The dispatcher waits on each warm container's attach too: one that becomes readable ended
(killed, OOM at boot, a crashing image) or wrote before its input came; it is removed, never
used, and its shape is not kept warm again until a job of it is placed on that engine.

Over TLS an attach cannot be passed between processes (nor half-closed), so a warm container
there is started with nobody attached (its program, or its gate, blocks reading its stdin)
and only its id comes back. Every job that takes one goes through an idle submitter (``Submit``
with ``into``), which attaches to its stdin, checks that it still runs, writes the job's files,
replies ``Started``, then writes the gate's line (if gated) and the input and closes the attach,
as for a cold TLS job; the waiter reads the output from the log. A warm container over TLS is
not watched before its job comes: one found ended then (``StartFailed.warm_gone``) is removed,
its shape forgotten, and its job goes back first in the queue, served cold
(:meth:`WarmStarts.fill_failed`); a JSON-protocol program that printed before its input came
is served warm there (its early output is in its log, as in a cold run).

Warm containers never delay a job: they are started only when the engine has room and no
job has waited for a slot or a submitter for :data:`BURST_QUIET` seconds (during a burst the
queue feeds the slots, and a warm container started at its tail would take the engine's CPU
from its last jobs, for no job to use); when the first queued job finds every engine it may
use full, a warm container of another shape there is removed (its slot is free at once: it waits idle). They go after
``warm_idle`` seconds unused, when their engine is lost, and at close.

Runs in the dispatcher thread only (:class:`~backend.dispatch._dispatcher.Dispatcher` owns the one
instance).
"""
from __future__ import annotations

import itertools
import logging
import os
import select
import time
from typing import Any, Callable, Collection, Dict, List, Optional, Sequence, Tuple, Union

from backend.docker import GATE_LINE
from backend.model import InstanceConfig, Job, JobState
from backend.ipc import Started, StartFailed, Submit, WarmStarted, WarmStartFailed
from backend.dispatch._placement import Placement
from backend.dispatch._removals import Removals
from backend.dispatch._supervisor import Child, Supervisor
from backend.dispatch._shapes import WarmContainer, WarmPool, shape_of

logger = logging.getLogger("backend")

#: Queued jobs looked at, at most, for a warm container of their shape (a long queue of
#: other shapes costs no more per turn of the dispatcher's loop).
SCANNED = 64
#: Seconds without a job waiting for a slot or a submitter before warm containers are started.
BURST_QUIET = 1.0


class WarmStarts:
    """The warm containers of one JobManager, seen from its dispatcher."""

    def __init__(self, pool: WarmPool, placement: Placement,
                 removals: Removals, supervisor: Supervisor,
                 mark_unreachable: Callable[[str], None]):
        self.pool = pool  # its count is placement's warm_count too
        self.placement = placement
        self.removals = removals
        self.supervisor = supervisor
        self.mark_unreachable = mark_unreachable
        self.closing = False
        self.waited_at = -BURST_QUIET  # when a job last waited (time.monotonic())
        #: job id -> its warm container and that container's attach (None over TLS), while a
        #: submitter writes its files (over TLS: attaches and writes its input)
        self.filling: Dict[str, Tuple[WarmContainer, Optional[int]]] = {}

    # -- jobs ----------------------------------------------------------------------------
    def used(self, job: Job, engine: str) -> None:
        """``job`` was placed on ``engine`` for a new container: its shape is wanted warm."""
        self.pool.used(engine, job.spec, time.monotonic())

    def serve(self, idle: List[Child]) -> None:
        """Gives each queued job of a warm shape (among the first :data:`SCANNED`) a warm
        container of its shape, on the least loaded reachable engine that has one (no
        submitter needed: the slot was held; a job with files takes one from ``idle``, to
        write them into its warm container, and so does every job over TLS, to attach)."""
        if not any(self.pool.ready.values()):
            return
        for job in list(itertools.islice(self.placement.queue, SCANNED)):
            if not any(self.pool.ready.values()):
                return
            shape = shape_of(job.spec)
            if shape is None or (job.spec is not None and job.spec.files and not idle):
                continue
            engines = sorted((e for e in self.placement.engines
                              if self.placement.is_reachable(e) and self.pool.ready[e]),
                             key=self.placement.load)
            for engine in engines:
                container = self._take(engine, shape)
                if container is None:
                    continue
                if container.fd is None and not idle:  # over TLS: a submitter attaches
                    self.pool.give_back(container)
                    continue
                self._run(job, container, idle)
                break

    def _take(self, engine: str, shape: Any) -> Optional[WarmContainer]:
        while True:
            container = self.pool.take(engine, shape)
            if container is None or container.fd is None or _waits(container.fd):
                return container
            self._remove(container, died=True)

    def _run(self, job: Job, container: WarmContainer, idle: List[Child]) -> None:
        engine, fd = container.engine, container.fd
        assert container.container_id is not None and job.spec is not None
        if fd is None or container.gate and job.spec.files:
            # a submitter writes the files (over TLS: attaches, and writes the input too),
            # then the waiter is given the job (see filled)
            submitter = idle.pop()
            if not submitter.send(Submit(engine, job.spec, container.name, gate=container.gate,
                                         into=container.container_id)):
                self._remove(container)
                return
            submitter.holding = job
            self.filling[job.job_id] = (container, fd)
            job.move(JobState.SUBMITTING)
        else:
            job.move(JobState.RUNNING)
            job.started_at = time.time()  # its clock starts with its input
        self.pool.hits[engine] += 1
        self.placement.placed(job, engine)
        self.pool.used(engine, job.spec, time.monotonic())
        job.engine, job.warm = engine, True
        job.container_id, job.container_name = container.container_id, container.name
        container.fd = None
        logger.debug("job %s: served warm by %s on %s", job.job_id,
                     container.container_id[:12], engine)
        if job.state is JobState.RUNNING:  # the waiter writes its whole input
            assert fd is not None
            self.supervisor.watch(job, fd, 0, GATE_LINE if container.gate else b"")

    def filled(self, job_id: str) -> Optional[int]:
        """The attach of the warm container whose job's files a submitter wrote (None: the
        job was not served so, or over TLS, where the submitter wrote its input); the caller
        hands the job to a waiter with it, its input after :data:`~backend.docker.GATE_LINE`."""
        taken = self.filling.pop(job_id, None)
        return None if taken is None else taken[1]

    def fill_failed(self, job_id: str, gone: bool = False) -> bool:
        """The submitter of a job served warm failed (or died): the warm container's attach,
        if any, is closed (the caller removes the container). ``gone``: the container no
        longer waited (over TLS, found when the job took it): its shape is not kept warm for
        now, and the caller serves the job cold. Whether the job was served warm."""
        taken = self.filling.pop(job_id, None)
        if taken is None:
            return False
        container, fd = taken
        if fd is not None:
            os.close(fd)
        if gone:
            logger.info("warm container %s on %s ended before its job came; the job is "
                        "served cold", container.container_id, container.engine)
            self.pool.forget(container.engine, container.shape)
            self.pool.hits[container.engine] -= 1  # it served none
        return True

    def make_room(self) -> bool:
        """When jobs wait and an engine is full, removes a warm container there that is not
        of the first job's shape. True if one was removed (placement may go on)."""
        if not self.placement.queue:
            return False
        keep: Any = None
        for engine in self.placement.engines:
            limit = self.placement.limit(engine)
            if (not self.pool.count(engine) or not self.placement.is_reachable(engine)
                    or limit == 0 or self.placement.load(engine) < limit):
                continue
            keep = keep or shape_of(self.placement.queue[0].spec)
            container = self.pool.evict(engine, keep)
            if container is not None:
                logger.debug("warm container %s on %s makes room for a job",
                             container.container_id, engine)
                self._remove(container)
                return True
        return False

    # -- starting ------------------------------------------------------------------------
    def replenish(self, idle: List[Child], manager_id: str) -> None:
        """Starts the warm containers wanted, while submitters are idle and their engines have
        room, once no job has waited for :data:`BURST_QUIET` seconds. One submitter is left
        idle (when there are several): a job that comes while warm containers start (a
        judge's test cases after its check) finds one at once, not after their starts."""
        now = time.monotonic()
        if self.placement.queue:
            self.waited_at = now
        if self.closing or now - self.waited_at < BURST_QUIET:
            return
        spare = 1 if len(self.supervisor.submitters) > 1 else 0
        for engine in self.placement.engines:
            while len(idle) > spare and self.placement.is_reachable(engine) and \
                    self.placement.has_room(engine):
                container = self.pool.wanted(engine, now, manager_id)
                if container is None:
                    break
                submitter = idle.pop()
                request = Submit(engine, container.spec, container.name, warm=True,
                                 gate=container.gate)
                if submitter.send(request):
                    submitter.holding = request
                else:
                    self.pool.starting.pop(container.warm_id, None)

    def on_started(self, submitter: Child, message: WarmStarted) -> None:
        """A submitter's reply to the warm container's ``Submit`` it holds: it started."""
        request, submitter.holding = submitter.holding, None
        assert isinstance(request, Submit)
        self.started(request, message, message.fds[0] if message.fds else None)

    def on_start_failed(self, submitter: Child, message: WarmStartFailed) -> None:
        """A submitter's reply to the warm container's ``Submit`` it holds: it failed."""
        request, submitter.holding = submitter.holding, None
        assert isinstance(request, Submit)
        self.start_failed(request, message)
        if message.retryable:
            self.mark_unreachable(request.engine)

    def started(self, request: Submit, message: Started, fd: Optional[int]) -> None:
        """A submitter's reply: the warm container waits for its job (or goes, if it is no
        longer wanted: closing, its engine lost, its attach lost on its way). Over TLS
        (``message.has_stream`` false) there is no attach: ``fd`` is None."""
        if fd is None and message.has_stream or self.closing \
                or not self.placement.is_reachable(request.engine):
            self.pool.starting.pop(request.spec.job_id, None)
            if fd is not None:
                os.close(fd)
            self.removals.add(request.engine, message.container_id)
        elif self.pool.started(request.spec.job_id, message.container_id, fd,
                               time.monotonic()) is None:
            if fd is not None:
                os.close(fd)
            self.removals.add(request.engine, message.container_id)

    def start_failed(self, request: Submit, message: Optional[StartFailed]) -> None:
        """A warm container could not be started (``message``), or its submitter died
        (None): whatever was created goes; its shape is not kept warm for now."""
        self.pool.start_failed(request.spec.job_id)
        if message is None:
            self.removals.attempt_failed(request.engine, None, request.container_name, True,
                                         time.monotonic())
            return
        if message.no_shell:
            if self.pool.cold_only_image(request.engine, str(request.spec.task.environment)):
                logger.warning("%s; its raw jobs and jobs with files start cold on %s",
                               message.text, request.engine)
        else:
            logger.info("a warm container could not be started on %s: %s", request.engine,
                        message.text)
        self.removals.attempt_failed(request.engine, message.container_id,
                                     request.container_name, message.maybe_created,
                                     time.monotonic())

    # -- removing ------------------------------------------------------------------------
    def waitables(self) -> List[int]:
        return self.pool.fds()

    def check(self, ready: Collection[Any], now: float) -> None:
        """Removes the containers whose attach is readable (``ready``) and those idle for
        ``warm_idle`` (over TLS, with no attach, only those)."""
        for fd in [fd for fd in self.pool.fds() if fd in ready]:
            container = self.pool.by_fd(fd)
            if container is not None:
                self.pool.discard(container)
                logger.info("warm container %s on %s ended or wrote before its job came; it "
                            "is not used", container.container_id, container.engine)
                self._remove(container, died=True)
        for container in self.pool.expired(now):
            self._remove(container)

    @property
    def start_due(self) -> Optional[float]:
        """When :meth:`replenish` may start warm containers again (the end of a burst's quiet
        time), or None: now already, closing, or no engine has warm starts."""
        due = self.waited_at + BURST_QUIET
        if self.closing or not any(self.pool.sizes.values()) or due <= time.monotonic():
            return None
        return due

    def next_due(self) -> Optional[float]:
        """When the dispatcher must look again: a warm container's idle end, or the end of a
        burst's quiet time."""
        dues = [due for due in (self.pool.next_due(), self.start_due) if due is not None]
        return min(dues, default=None)

    def engine_lost(self, engine: str) -> None:
        for container in self.pool.drop(engine):
            self._remove(container)

    def close(self) -> None:
        """Closing: every warm container goes, and no new one is started."""
        self.closing = True  # (one being filled is its job's: it ends as the job does)
        for container in self.pool.drop():
            self._remove(container)

    def _remove(self, container: WarmContainer, died: bool = False) -> None:
        if container.fd is not None:
            os.close(container.fd)
        container.fd = None
        if container.container_id:
            self.removals.add(container.engine, container.container_id)
        if died:
            self.pool.forget(container.engine, container.shape)


def _waits(fd: int) -> bool:
    """Whether a warm container's attach has nothing to read: it still waits for its input
    (one that ended, or wrote, is readable)."""
    try:
        return not select.select([fd], [], [], 0)[0]
    except (OSError, ValueError):
        return False
