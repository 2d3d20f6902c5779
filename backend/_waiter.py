"""The waiter: watches one engine's containers and reports each job's end to the dispatcher.

A waiter process serves one engine (an engine may have several). It reads its *wait queue*
(its pipe from the dispatcher) and pushes results towards the *done queue* (the same pipe,
back). Inside, an :class:`~backend.watch._events.EventFollower` thread follows the engine's one
event stream (for the main loop and the load counter both), and the main thread does one wait
over the pipe, the :class:`~backend.ipc._messages.Mailbox` fed by the helper threads, the attach of
every job it watches (each read by its :class:`~backend.watch._follower.OutputFollower`, in this
thread: no thread per container) and the poll deadline::

    dispatcher --(Watch [+ attach fd] | KillRunning | Probe | Exit)--> main loop
    main loop --(JobEnded | EngineState | EngineLoad)--> dispatcher
    event thread --(DockerEvent | EventsCovered | EngineState)--> mailbox --> main loop
    health probe --(EngineState)--> mailbox --> main loop
    event thread --(ContainerSeen | EventsCovered | EngineState)--> load counter
    load counter --(EngineLoad)--> mailbox --> main loop --> dispatcher
    jobs' own attaches --(stdout, stderr, end of file)--> main loop (OutputFollower.pump)
    late followers' threads --(OutputOverflow)--> mailbox --> main loop

Of the counts (EngineLoad) in one drain of the mailbox, only the last, the newest, is sent.

Completion comes from the ``die`` event, within milliseconds; a ``die`` that comes before the
``Watch`` (a short job) is kept until it does. The output comes from the job's own attach,
made by the submitter before the start and passed here as a file descriptor: every byte is
seen, and the engine's log is not read; the input the submitter could not write at once comes
with it, and an :class:`~backend.docker._input.InputWriter` writes it until the container ends or is
killed. Where there is no such stream (TLS engines, jobs recovered from a dead waiter), the
follower attaches late and the log is read at the end.
Each container watched is a :class:`~backend.watch._container.WatchedContainer`; how it ended becomes its
result in :mod:`backend.model._results` (pure functions).

Every ``time_between_polls`` the main loop also polls: it lists our containers by label
(catching lost events and containers removed from outside), enforces ``hard_time``, measures
the CPU time of containers old enough to have used their budget (``RLIMIT_CPU`` counts per
process only) and what each container wrote (the disk watch: its writable layer's size, also
between polls for one growing fast toward its limit, and once more at its end; see
docs/security.rst). A follower ends a job as soon as it prints more than its ``output`` limit.
The waiter's :class:`~backend.watch._probe.HealthProbe` pings the engine every second and tells,
within a few seconds, when it stops answering (and when it answers again): the calls then
waiting on it are ended, the next ones fail at once, and a ``False`` report of the event
thread counts only when the probe agrees. An engine that stops answering for
:data:`ENGINE_LOST_AFTER` seconds costs its running jobs (reason ``engine_lost``). A
:class:`~backend.watch._load.LoadCounter` (the waiter's, with its listing thread) counts every
manager's containers on the engine, for the dispatcher.
Everything here but the event thread, the probe's, the late followers' threads, the
counter's, the input writers' and the kill threads runs on the main thread; those talk to it
only through the mailbox (an input writer does not talk to it at all: it is stopped).
"""
from __future__ import annotations

import logging
import math
import threading
import time
from multiprocessing.connection import Connection
from typing import Any, Callable, Dict, Iterable, List, Optional

from backend import docker
from backend.ipc import (DockerEvent, EngineLoad, EngineState, EventsCovered, Exit, Handlers,
                         JobEnded, KillRunning, Mailbox, OutputOverflow, Probe, Waitset, Watch,
                         configure_logging, exit_with_parent, readable, receive)
from backend.model import (InstanceConfig, Result, check_json, ended_result, failure_result,
                           lost_result)
from backend.watch import (EarlyEvents, EngineLink, EventFollower, LoadCounter, OutputFollower,
                           PendingEnd, StreamState, WatchedContainer, over_disk, over_limits)

logger = logging.getLogger("backend")

#: Seconds an engine may not answer before its running jobs end with ``engine_lost``.
ENGINE_LOST_AFTER = 5.0
#: Seconds a job's output stream may lag behind its end before its log is read instead.
STREAM_GRACE = 2.0


class _Waiter:
    """A waiter process's main loop and its state (see the module's docstring)."""

    def __init__(self, connection: Connection, config: InstanceConfig, manager_id: str):
        self.connection = connection
        self.config = config
        self.label = f"{docker.LABEL_MANAGER}={manager_id}"
        self.watched: Dict[str, WatchedContainer] = {}  # by container id
        self.by_job: Dict[str, str] = {}
        self.mailbox = Mailbox()
        self.early_events = EarlyEvents()
        self.events_since: Optional[float] = None  # since when our event stream covers it
        self.load = LoadCounter(config, manager_id, self.mailbox)  # every manager's containers
        self.events = EventFollower(config, manager_id, self.mailbox, self.load)
        self.link = EngineLink(config, self.mailbox, connection.send)
        self.probe = self.link.probe
        self.stopping = False
        self.poller = _Poll(self)
        self.messages = Handlers("waiter", {  # from the dispatcher
            Watch: self.on_watch, KillRunning: self.on_kill, Probe: self.on_probe,
            Exit: self.on_exit, type(None): self.on_exit})
        self.notes = Handlers("waiter", {  # from its own threads, through the mailbox
            EngineState: self.on_engine_state, EventsCovered: self.on_events_covered,
            DockerEvent: self.on_docker_event, OutputOverflow: self.on_overflow})

    def connected(self) -> docker.Engine:
        return self.link.connected()

    def set_reachable(self, reachable: bool, why: str = "") -> None:
        if reachable is False and self.link.unreachable_since is None:
            for watched in self.watched.values():
                watched.ending.engine_was_lost = True
        self.link.set_reachable(reachable, why)

    # -- main loop -----------------------------------------------------------------------
    def run(self) -> None:
        self.load.start()
        self.events.start()
        self.probe.start()
        notes, pipe, waitset = self.mailbox.fileno(), self.connection.fileno(), Waitset()
        next_poll = time.monotonic() + self.config.time_between_polls
        try:
            while not self.stopping:
                streams = [w.follower for w in self.watched.values() if w.follower.reading]
                due = min(next_poll, self.poller.disk_due())  # a fast writer's check
                ready = waitset.wait([pipe, notes] + streams, max(0.0, due - time.monotonic()))
                for follower in streams:
                    if follower in ready and follower.container_id in self.watched:
                        self.pump(self.watched[follower.container_id])
                if notes in ready:  # each put wakes it (Mailbox.put)
                    self.handle_notes()
                try:
                    while readable(pipe):
                        self.handle_message(receive(self.connection))
                except (EOFError, OSError):
                    return
                if time.monotonic() >= next_poll:
                    self.poller.poll()
                    next_poll = time.monotonic() + self.config.time_between_polls
                elif time.monotonic() >= due:
                    self.poller.check_disk()
        finally:
            # the mailbox stays open: a kill thread may still put into it until we exit
            self.events.stop()
            self.load.stop()
            self.probe.stop()
            for watched in self.watched.values():
                watched.follower.stop()

    def handle_message(self, message: Any) -> None:
        self.messages(message)

    def on_exit(self, message: Exit) -> None:
        self.stopping = True

    def on_watch(self, message: Watch) -> None:
        stream_fd, input_fd = (message.fds + (None, None))[:2]
        stream = _adopt_stream(stream_fd) if stream_fd is not None else None
        self.watch(message, stream, docker.read_input(input_fd) if input_fd is not None else b"")

    def on_kill(self, message: KillRunning) -> None:
        container_id = self.by_job.get(message.job_id)
        if container_id:
            self.kill(self.watched[container_id], "killed")

    def on_probe(self, message: Probe) -> None:  # a submitter saw the engine fail: report
        self.link.reachable = None                 # what we see, on a new connection, as a
        self.link.drop(close=True)                 # submitter makes: an engine that stops
        self.poller.reconcile(list(self.watched.values()))

    def watch(self, message: Watch, stream: Optional[docker.OutputStream], rest: bytes) -> None:
        if message.container_id in self.watched:
            if stream is not None:
                stream.close()
            return
        watched = WatchedContainer.of(message, OutputFollower(
            message.container_id, message.limits["output"], self.mailbox, stream), stream, rest)
        follower = watched.follower
        self.watched[watched.container_id] = watched
        self.by_job[watched.job_id] = watched.container_id
        early = self.early_events.pop(watched.container_id)
        ended = any(event.action in ("die", "destroy") for event in early)
        if message.kill_requested and not ended:
            self.kill(watched, "killed")
        elif not ended and stream is None:
            follower.start_late(lambda container_id: self.connected().attach_output(container_id))
        watched.ending.engine_was_lost = self.link.unreachable_since is not None
        if early:  # it ended before we were told of it: its events came first
            for event in early:
                self.handle_note(event)
        elif self.events_since is None or message.started_at < self.events_since + 1.0:
            # it may have ended before our event stream covers (a previous waiter died
            # holding it): look now rather than at the next poll
            self.poller.reconcile([watched])

    def handle_notes(self) -> None:
        """Handles what the mailbox holds; of the load counter's counts, sends the last."""
        load: Optional[EngineLoad] = None
        for note in self.mailbox.drain():
            if isinstance(note, EngineLoad):
                load = note
            else:
                self.handle_note(note)
        if load is not None:
            self.connection.send(load)

    def handle_note(self, note: Any) -> None:
        """Handles one note; one that fails ends its container's job alone."""
        try:
            self.notes(note)
        except Exception as error:  # noqa: BLE001 - see fail
            watched = self.watched.get(getattr(note, "container_id", None) or "")
            if watched is None:
                logger.warning("a note could not be handled: %r", note, exc_info=True)
            else:
                self.fail(watched, "handling_failed", f"a {type(note).__name__} about its "
                          "container could not be handled", error)

    def on_engine_state(self, note: EngineState) -> None:  # the probe's, or the event
        if note.reachable != self.probe.silent:  # thread's when it agrees with the probe
            self.set_reachable(note.reachable, note.why)

    def on_events_covered(self, note: EventsCovered) -> None:  # the first stream's start counts
        self.events_since = self.events_since or note.since

    def on_docker_event(self, note: DockerEvent) -> None:
        watched = self.watched.get(note.container_id)
        if watched is None:
            self.early_events.keep(note)
        else:
            self.on_event(watched, note)

    def on_overflow(self, note: OutputOverflow) -> None:
        watched = self.watched.get(note.container_id)
        if watched is not None:
            self.kill(watched, "output")

    def pump(self, watched: WatchedContainer) -> None:
        """Reads what the job's own attach holds; kills a job that printed too much, and
        collects one whose container ended before its stream did."""
        try:
            if watched.follower.pump():
                self.kill(watched, "output")
        except Exception as error:  # noqa: BLE001 - the job's bytes end that job alone
            self.kill(watched, "killed")
            self.fail(watched, "bad_output", "its output stream could not be read", error)
            return
        if not watched.follower.reading and watched.ending.pending is not None:
            self.finish(watched, watched.ending.pending.exit_code, watched.ending.pending.ended_at)

    def on_event(self, watched: WatchedContainer, event: DockerEvent) -> None:
        watched.record(event)
        if event.action == "die":
            self.finish(watched, event.exit_code, event.at)
        elif event.action == "destroy":
            watched.ending.reason = watched.ending.reason or "removed"
            self.finish(watched, watched.ending.exit_code, time.time(), gone=True)

    # -- actions -------------------------------------------------------------------------
    def kill(self, watched: WatchedContainer, reason: str) -> None:
        """Kills a container, from a helper thread: the engine may take a while to answer."""
        watched.ending.reason = watched.ending.reason or reason
        logger.debug("killing %s (%s)", watched.job_id, reason)
        threading.Thread(target=_kill, name="backend-kill", daemon=True, args=(
            self.connected, watched.container_id, self.mailbox, self.config.name)).start()

    def finish(self, watched: WatchedContainer, exit_code: Optional[int], ended_at: float,
               gone: bool = False) -> None:
        """Collects a container that ended, and reports the job's result. Whatever the
        job's bytes raise there ends that job alone (``bad_output``), never this process."""
        if watched.container_id not in self.watched:
            return
        try:
            self._finish(watched, exit_code, ended_at, gone)
        except Exception as error:  # noqa: BLE001 - see fail
            self.fail(watched, "bad_output", "its output could not be made into a result",
                      error)

    def _finish(self, watched: WatchedContainer, exit_code: Optional[int], ended_at: float,
                gone: bool) -> None:
        follower = watched.follower
        if not gone and follower.state is StreamState.OPEN:
            # ended, but the last bytes may still be on their way: wait for the stream's end
            # (bounded: the poll gives up after STREAM_GRACE and reads the log instead)
            if watched.ending.pending is None:
                watched.ending.pending = PendingEnd(exit_code, ended_at,
                                                 time.monotonic() + STREAM_GRACE)
            return
        stdout = stderr = b""
        if not gone:
            try:
                collected = watched.collect(self.connected(), exit_code)
                if collected is None:
                    return  # a stale event: the container runs again?
                exit_code, stdout, stderr = collected
                # a last look at what it wrote: a job may cross its disk limit and end
                # between two checks of the watch
                if over_disk([watched], self.connected, self.config.time_between_polls,
                             time.monotonic(), at_end=True):
                    watched.ending.reason = "disk"
            except docker.DockerFailure as failure:
                if failure.not_found:
                    watched.ending.reason = watched.ending.reason or "removed"
                else:  # the next poll tries again
                    logger.debug("collecting %s failed: %s", watched.container_id, failure.text)
                    watched.ending.exit_code, watched.ending.ended_at = exit_code, ended_at
                    if failure.retryable:
                        self.set_reachable(False)
                    return
        self.report(watched, watched.result(exit_code, stdout, stderr, ended_at, self.config.name,
                                            None if gone else self.connected))

    def fail(self, watched: WatchedContainer, reason: str, what: str, error: BaseException) -> None:
        """Ends a job whose handling raised ``error`` with ``crash`` and ``reason``; the
        loop goes on serving the others (docs/failures.rst, hostile output)."""
        logger.warning("job %s: %s (%s: %.200s); it ends with crash", watched.job_id, what,
                       type(error).__name__, error, exc_info=logger.isEnabledFor(logging.DEBUG))
        if watched.container_id not in self.watched:
            return
        self.report(watched, watched.failure(reason, what, error, self.config.name))

    def report(self, watched: WatchedContainer, result: Result) -> None:
        self.watched.pop(watched.container_id, None)
        self.by_job.pop(watched.job_id, None)
        watched.follower.stop()
        docker.stop_writer(watched.writer)
        self.connection.send(JobEnded(watched.job_id, result))


class _Poll:
    """A waiter's poll, every ``time_between_polls``: what no event tells (an output stream
    that did not end, the limits enforced from outside, lost events, containers removed from
    outside, an engine lost for too long). Runs in the waiter's main thread, on its state."""

    def __init__(self, waiter: "_Waiter"):
        self.waiter = waiter

    def poll(self) -> None:
        if not self.waiter.watched:
            if self.waiter.link.reachable is False:  # the dispatcher waits to hear that it is back
                self.reconcile([])
            return
        now = time.time()
        for watched in list(self.waiter.watched.values()):
            pending = watched.overdue(time.monotonic())
            if pending is not None:
                logger.debug("output stream of %s did not end; reading its log", watched.job_id)
                watched.follower.give_up()
                self.waiter.finish(watched, pending.exit_code, pending.ended_at)
        for watched, reason in over_limits(list(self.waiter.watched.values()), self.waiter.connected,
                                           self.waiter.config.time_between_polls):
            self.waiter.kill(watched, reason)
        self.reconcile(list(self.waiter.watched.values()))
        if self.waiter.link.lost_for(ENGINE_LOST_AFTER):
            for watched in list(self.waiter.watched.values()):
                watched.ending.reason = watched.ending.reason or "engine_lost"
                self.waiter.report(watched, lost_result(self.waiter.config.name, watched.container_id,
                                                 now - watched.started_at, stopped=True))

    def disk_due(self) -> float:
        """When (monotonic) the disk watch next checks a container it checked before: one
        growing fast toward its limit may be due before the next poll (``disk_delay``)."""
        return min((w.disk_due_at for w in self.waiter.watched.values()
                    if w.disk_last is not None and w.ending.reason is None), default=math.inf)

    def check_disk(self) -> None:
        """The disk watch alone, between two polls: kills what is over its limit."""
        for watched in over_disk(list(self.waiter.watched.values()), self.waiter.connected,
                                 self.waiter.config.time_between_polls, time.monotonic()):
            self.waiter.kill(watched, "disk")

    def reconcile(self, candidates: List[WatchedContainer]) -> None:
        """Finishes the candidates whose container ended or vanished (lost events). Also tells
        whether the engine answers: with no candidates, only when that is in doubt."""
        if not candidates and self.waiter.link.reachable:
            return
        listed = self.waiter.link.listing(self.waiter.label)
        if listed is None:  # not answered (the engine is in doubt), or an error answer
            if self.waiter.link.unanswered:
                self.waiter.set_reachable(False)
            return
        self.waiter.set_reachable(True)
        for watched in candidates:
            if watched.container_id not in self.waiter.watched:
                continue
            container = listed.get(watched.container_id)
            if container is None:
                watched.ending.reason = watched.ending.reason or "removed"
                self.waiter.finish(watched, watched.ending.exit_code, time.time(), gone=True)
            elif container.get("State") in ("exited", "dead"):
                self.waiter.finish(watched, None, watched.ending.ended_at or time.time())


def _kill(connected: Callable[[], docker.Engine], container_id: str, mailbox: Mailbox,
          engine: str) -> None:
    """A kill thread: touches only the engine and the mailbox."""
    try:
        connected().kill(container_id)
    except docker.DockerFailure as failure:
        # answered: not running any more (it ended, or was removed), its die or destroy
        # event follows; not answered: the engine is in doubt
        logger.debug("kill %s: %s", container_id, failure.text)
        if failure.retryable:
            mailbox.put(EngineState(engine, False))


def _adopt_stream(fd: int) -> Optional[docker.OutputStream]:
    """The attach the submitter made for a job, passed with its ``Watch``."""
    try:
        return docker.adopt_stream(fd)
    except docker.DockerFailure as error:
        logger.warning("a job's output stream was lost on its way (%s); its log is read", error)
        return None


def waiter_main(connection: Connection, config: InstanceConfig, manager_id: str,
                log_level: int, lifeline: Any) -> None:
    """Entry point of a waiter process."""
    exit_with_parent(lifeline)
    configure_logging(log_level)
    _Waiter(connection, config, manager_id).run()
