"""The dispatcher: the one thread of the JobManager's process that talks to its children.

Data flow (one arrow per channel; every pipe has exactly one reader and one writer, so a
process that dies never leaves a lock held; the messages are those of :mod:`backend.ipc._messages`)::

  JobManager ──NewJob, KillJob, KillAll, Close──▶ mailbox ──▶ dispatcher thread
  callback managers ──RemoveContainer──▶ mailbox ──┘   │ ▲
     ▲        submitters ◀──Submit, Remove, Sweep, RemoveLeftovers, Exit──┤ └── Started,
     │                                            StartFailed, Removed ──┤
     │           waiters ◀──Watch, KillRunning, Probe, Exit────────────────┤
     │        (per engine) ──JobEnded, EngineState, EngineLoad────────────▶┘
     └── done queue (queue.Queue of ended jobs) ◀── dispatcher thread

The thread owns the state, in three plain objects: :class:`~backend.dispatch._placement.Placement`
(the queue, the slots, the choice of engine), :class:`~backend.dispatch._removals.Removals` (what to
remove, where, when) and :class:`~backend.dispatch._supervisor.Supervisor` (the children, what each
holds). Its loop does one wait (a :class:`~backend.ipc._waitset.Waitset`, kept from turn to turn)
over the mailbox, every child's pipe and every child's sentinel, and hands each message to its
handler by type.

A child that dies is replaced at once; the jobs it held end exactly once (a submitter's job:
``start_failed``, and its container is removed by the name it was given, whether or not its
creation was confirmed), or are handed to the replacement (a waiter's containers, recovered
from the engine). At close, once every job ended, each engine is asked for any container of
this manager still there.

Each engine's waiters report its :class:`~backend.ipc._messages.EngineLoad` (the containers of
every manager sharing it), which placement counts against ``max_concurrent_jobs``; a placement
it defers (fairness between managers) wakes the loop at its time. After each turn the loop
updates the manager's :class:`~backend.dispatch._stats.Stats`.

Warm containers (docs/performance.rst, warm starts) are :class:`~backend.dispatch._warm.WarmStarts`'s: the loop also
waits on their attaches (on plain connections), a queued job of their shape takes one before
placement, and they are started once no job has waited for a second. A job whose warm
container over TLS had ended when its submitter came to it goes back to the queue, cold
(:meth:`Dispatcher._serve_cold`).

A job ends in exactly one place, :meth:`Dispatcher._end`, which frees its slot before the
result goes to the done queue: a slow callback never holds an engine slot.
"""
from __future__ import annotations

import logging
import os
import queue
import threading
import time
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

from backend import docker
from backend.model import InstanceConfig, Job, JobState, Result, failure_result
from backend.ipc import (Close, EngineLoad, EngineState, Handlers, JobEnded, KillAll, KillJob,
                         KillRunning, Mailbox, NewJob, Remove, RemoveContainer, RemoveLeftovers,
                         Removed, StartFailed, Started, Submit, Sweep, Waitset, WarmStartFailed,
                         WarmStarted)
from backend.dispatch._losses import Losses
from backend.dispatch._placement import Placement
from backend.dispatch._removals import Removals
from backend.dispatch._stats import Stats
from backend.dispatch._supervisor import STOP_GRACE, Child, ChildMains, Supervisor
from backend.dispatch._shapes import WarmPool
from backend.dispatch._warm import WarmStarts

logger = logging.getLogger("backend")


class Dispatcher(threading.Thread):
    """See the module docstring. Thread-safe entry point: :meth:`post`; the rest runs in
    this thread (and :meth:`start_children` before it starts)."""

    def __init__(self, context: Any, configs: Sequence[InstanceConfig], manager_id: str,
                 owner: str, pool_size: int, done_queue: "queue.Queue[Optional[Job]]",
                 max_queued_jobs: Optional[int], stats: Optional[Stats] = None, *,
                 mains: ChildMains):
        super().__init__(name="backend-dispatcher", daemon=True)
        self.stats = stats or Stats(configs)
        pool = WarmPool(configs)  # warm containers hold slots: placement counts them
        self.placement = Placement(configs, max_queued_jobs, warm_count=pool.count)
        self.urls = {config.name: config.server_url for config in configs}
        self.removals = Removals(self.placement.engines, self.placement.is_reachable)
        self.supervisor = Supervisor(context, configs, manager_id, owner,
                                     logging.getLogger("backend").getEffectiveLevel(), mains)
        self.warm = WarmStarts(pool, self.placement, self.removals, self.supervisor,
                               lambda engine: self._mark_reachable(engine, False))
        self.losses = Losses(self.placement, self.removals, self.supervisor, self.warm,
                             self.urls, self._end, lambda: self.stopping)
        self.pool_size = pool_size
        self.done_queue = done_queue
        self.mailbox = Mailbox()
        self.waitset = Waitset()
        self.jobs: Dict[str, Job] = {}
        #: closing: stop once every job ended and removals are done, or give up retrying
        #: removals after this (time.monotonic()); None: not closing
        self.close_deadline: Optional[float] = None
        self.stopping = False
        self._commands, self._replies = _handlers(self)

    def post(self, command: object) -> None:
        """Queues a command (a ``NewJob``, ``KillJob``, ``KillAll``, ``RemoveContainer`` or
        ``Close``) for the dispatcher thread and wakes it. Thread-safe."""
        self.mailbox.put(command)

    def start_children(self) -> None:
        """Starts the children (called before the thread starts), then sweeps each engine
        of the containers of dead managers."""
        self.supervisor.start(self.pool_size)
        for engine in self.placement.engines:
            self.removals.sweep(engine)

    # -- the loop ------------------------------------------------------------------------
    def run(self) -> None:
        try:
            self._loop()
        except BaseException as error:  # noqa: BLE001 - logged, and every pending job ends
            logger.exception("the JobManager's dispatcher failed")
            for job in list(self.jobs.values()):
                self._end(job, failure_result("start_failed", f"internal error: {error!r}",
                                              job.engine, job.container_id))
        finally:
            self.supervisor.stop()
            self.mailbox.close()

    def _loop(self) -> None:
        while not self.stopping:
            children = self.supervisor.children()
            ready = self.waitset.wait(
                [self.mailbox.fileno()] + self.supervisor.waitables(children)
                + self.warm.waitables(), timeout=_timeout(
                    self.removals.next_due(), self.close_deadline,
                    self.placement.next_due(), self.warm.next_due()))
            for command in self.mailbox.drain():
                self._guarded(self._commands, command)
            for child in children:
                if child.fd in ready:
                    self.supervisor.read(child, self._read_message)
            for child in self.supervisor.dead(children, ready):
                self.supervisor.read(child, self._read_message)  # what it said counts
                self.losses.replace(child)
            self.warm.check(ready, time.monotonic())
            self.removals.release_due(time.monotonic())
            self._schedule()
            self.stats.dispatched(self.placement, self.warm.pool)

    def _read_message(self, child: Child, message: object) -> None:
        self._guarded(self._replies, message, child)

    def _guarded(self, handlers: Handlers, message: Any, *context: Any) -> None:
        """Handles one message; one that raises ends its job alone (``handling_failed``),
        and the loop goes on serving the others."""
        try:
            handlers(message, *context)
        except Exception as error:  # noqa: BLE001 - logged; one job ends, not the thread
            logger.exception("the dispatcher failed to handle a %s", type(message).__name__)
            job = getattr(message, "job", None) or self.jobs.get(
                getattr(message, "job_id", None) or "")
            if isinstance(job, Job):
                self._end(job, failure_result(
                    "handling_failed", f"The JobManager failed while handling a "
                    f"{type(message).__name__} of the job ({type(error).__name__}).",
                    job.engine, job.container_id))

    # -- commands from other threads -----------------------------------------------------
    def _on_new_job(self, command: NewJob) -> None:
        job = command.job
        self.jobs[job.job_id] = job
        self.placement.add(job)
        if self.placement.max_queued_jobs is None:
            return  # placed at the end of this turn of the loop
        self._schedule()  # what still waits for a slot counts against max_queued_jobs
        if self.placement.over_capacity(job):
            self._end(job, failure_result(
                "over_capacity", f"the system is over capacity: "
                f"{self.placement.max_queued_jobs} job(s) already wait for a free slot"))

    def _kill(self, *jobs: Optional[Job]) -> None:
        for job in [job for job in jobs if job is not None and job.state is not JobState.DONE]:
            job.kill_requested = True
            if job.state is JobState.QUEUED:
                self.placement.withdraw(job)
                self._end(job, failure_result("killed", "The job was killed before it started."))
            elif job.state is JobState.RUNNING:
                waiter = self.supervisor.waiter_of(job)
                if waiter is not None:
                    waiter.send(KillRunning(job.job_id))  # if it died, its replacement kills
            # submitting: the kill goes with the Watch once the container started

    def _on_close(self, command: Close) -> None:
        self.close_deadline = time.monotonic() + 2 * STOP_GRACE
        self.warm.close()

    # -- giving work ---------------------------------------------------------------------
    def _schedule(self) -> None:
        """Starts queued jobs while slots and idle submitters allow, then removals."""
        idle = self.supervisor.idle_submitters()
        for job in self.placement.unplaceable():
            self._end(job, failure_result("engine_unreachable", "no docker instance answers: "
                                          + ", ".join(self.placement.engines)))
        self.warm.serve(idle)  # the slot was the warm container's
        while idle:
            placed = self.placement.next(time.monotonic())
            if placed is not None:
                self._submit(placed[0], placed[1], idle.pop())
            elif not self.warm.make_room():
                break
        _hand_out_removals(self.removals, self.placement.engines, idle)
        self.warm.replenish(idle, self.supervisor.manager_id)
        if self.close_deadline is not None:
            self._close_when_done(self.close_deadline)

    def _submit(self, job: Job, engine: str, submitter: Child) -> None:
        """Sends ``job`` to ``submitter``; one that does not reach it stays first in line."""
        assert job.spec is not None  # only jobs that need a container are queued
        name = docker.container_name(job.job_id, self.placement.attempts(job) + 1)
        if not submitter.send(Submit(engine, job.spec, name)):
            return
        self.placement.placed(job, engine)
        self.warm.used(job, engine)
        job.move(JobState.SUBMITTING)
        job.engine, job.container_name = engine, name
        submitter.holding = job

    def _close_when_done(self, deadline: float) -> None:
        """Once every job ended and its container was removed, asks each engine for the
        containers of this manager still there (none, unless something went wrong), then
        stops. Removals that still fail (an engine down) are given up at the close
        deadline, with a warning."""
        if (self.jobs or self.placement.queue or self.supervisor.busy()
                or self.removals.pending_on_reachable()):
            return
        if self.removals.ask_for_leftovers():
            self._schedule()
        elif not self.removals.left() or time.monotonic() >= deadline:
            self.removals.give_up()
            self.stopping = True

    # -- replies from the children -------------------------------------------------------
    def _on_started(self, submitter: Child, message: Started) -> None:
        stream_fd = message.fds[0] if message.fds else None
        warm_fd = self.warm.filled(message.job_id)  # its files are in its warm container
        stream_fd = warm_fd if warm_fd is not None else stream_fd
        submitter.holding = None
        job = self.jobs.get(message.job_id)
        if job is None or job.state is JobState.DONE:
            if stream_fd is not None:
                os.close(stream_fd)
            return
        job.container_id, job.started_at = message.container_id, time.time()
        job.move(JobState.RUNNING)
        self.supervisor.watch(job, stream_fd, message.input_written,
                              docker.GATE_LINE if warm_fd is not None else b"")

    def _on_start_failed(self, submitter: Child, message: StartFailed) -> None:
        submitter.holding = None
        # a warm container's: removed below
        served_warm = self.warm.fill_failed(message.job_id, message.warm_gone)
        job = self.jobs.get(message.job_id)
        if job is None or job.state is JobState.DONE or job.engine is None:
            return
        self.removals.attempt_failed(job.engine, message.container_id, job.container_name,
                                     message.maybe_created, time.monotonic())
        if served_warm and message.warm_gone:  # it had ended before its job came (TLS)
            self._serve_cold(job, job.engine)
            return
        if message.retryable:
            self._mark_reachable(job.engine, False)
        self.losses.start_failed_elsewhere(job, job.engine, message.text, message.retryable,
                                     message.reason, message.container_id)

    def _serve_cold(self, job: Job, engine: str) -> None:
        """The warm container ``job`` took had ended before it came: the job goes back first
        in the queue, as if never placed, and starts cold (or ends, if it was killed)."""
        if job.kill_requested:
            self._end(job, failure_result("killed", "The job was killed before it started."))
            return
        self.placement.unplace(job, engine)
        job.move(JobState.QUEUED)
        job.container_id, job.warm = None, False

    def _on_removed(self, submitter: Child, message: Removed) -> None:
        request, submitter.holding = submitter.holding, None
        if not message.reachable:
            self._mark_reachable(message.engine, False)
        if isinstance(request, (Remove, Sweep, RemoveLeftovers)):
            self.removals.finished(request, message.failed, message.reachable,
                                   time.monotonic())

    def _on_job_ended(self, waiter: Child, message: JobEnded) -> None:
        waiter.jobs.pop(message.job_id, None)
        job = self.jobs.get(message.job_id)
        if job is not None:
            self._end(job, message.result)

    def _on_engine_state(self, waiter: Child, message: EngineState) -> None:
        """A waiter's report (its health probe, or a call that got no answer): an engine that
        does not answer also costs the submitters waiting on it their request."""
        self._mark_reachable(message.engine, message.reachable, probe=False)
        if not message.reachable:
            self.losses.abandon(message.engine, message.why)

    def _mark_reachable(self, engine: str, reachable: bool, probe: bool = True) -> None:
        """Records what a child saw of ``engine``. Jobs and removals are sent only to a
        reachable engine; the waiters report when it answers again. When a submitter saw
        it fail, the waiters check now and report whatever they find (they may not have seen
        the failure, and so would have nothing to report)."""
        if not self.placement.set_reachable(engine, reachable):
            return
        logger.info("engine %s is %s", engine,
                    "reachable again" if reachable else "unreachable")
        if not reachable:
            self.warm.engine_lost(engine)
        if probe and not reachable:
            self.supervisor.probe(engine)

    # -- ending jobs, deaths -------------------------------------------------------------
    def _end(self, job: Job, result: Result) -> None:
        """The one place a job ends: frees its slot and hands it to the callback managers."""
        if job.state is JobState.DONE:
            return
        self.placement.ended(job)
        if isinstance(result.get("run"), dict):
            result["run"]["warm"] = job.warm  # docs/performance.rst, warm starts
        job.move(JobState.DONE)
        job.result = result
        self.jobs.pop(job.job_id, None)
        self.done_queue.put(job)

def _handlers(d: Dispatcher) -> Tuple[Handlers, Handlers]:
    """The dispatcher's handlers, by message type (see :mod:`backend.ipc._messages`): of the
    commands from the JobManager's threads, and of the children's replies."""
    commands = Handlers("the dispatcher", {
        NewJob: d._on_new_job,
        KillJob: lambda command: d._kill(d.jobs.get(command.job_id)),
        KillAll: lambda command: d._kill(*d.jobs.values()),
        RemoveContainer: lambda command: d.removals.add(command.engine, command.container),
        Close: d._on_close})
    replies = Handlers("the dispatcher", {
        Started: d._on_started,
        StartFailed: d._on_start_failed, Removed: d._on_removed,
        WarmStarted: d.warm.on_started, WarmStartFailed: d.warm.on_start_failed,
        JobEnded: d._on_job_ended,
        EngineState: d._on_engine_state,
        EngineLoad: lambda waiter, message: d.placement.set_load(message)})
    return commands, replies


def _hand_out_removals(removals: Removals, engines: Sequence[str], idle: List[Child]) -> None:
    """Gives the pending removals of each engine to idle submitters (taken from ``idle``)."""
    for engine in engines:
        while idle:
            request = removals.request(engine)
            if request is None:
                break
            submitter = idle.pop()
            if submitter.send(request):  # else it stays for another submitter
                removals.sent(request)
                submitter.holding = request


def _timeout(*dues: Optional[float]) -> Optional[float]:
    """Seconds until the earliest of ``dues`` (monotonic times; None: none), or None."""
    due = min((d for d in dues if d is not None), default=None)
    return None if due is None else max(0.0, due - time.monotonic())
