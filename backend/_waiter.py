"""The waiter: watches one engine's containers and reports each job's end to the dispatcher.

A waiter process serves one docker instance (an instance may have several). It reads its *wait
queue* (its pipe from the dispatcher) and pushes results towards the *done queue* (the same
pipe, back). Inside, one thread follows Docker's event stream, one output follower per
container reads what the job prints, and the main thread does one wait over the pipe, a
wake-up pipe fed by the helper threads, and the poll deadline::

    dispatcher --("watch" [+ attach fd] | "kill" | None)--> main loop --("done" | "engine")-->
                                                              ^   ^
                       event thread (die, oom, kill, destroy; resumed with ``since``)
                       output followers (one per container: output kept, byte count)

Completion comes from the ``die`` event, within milliseconds; a ``die`` that comes before the
``watch`` (a short job) is kept until it does. The output comes from the job's own attach,
made by the submitter before the start and passed here as a file descriptor: every byte is
seen, and the engine's log is not read. Where there is no such stream (TLS engines, jobs
recovered from a dead waiter), the follower attaches late and the log is read at the end.

Every ``time_between_polls`` the main loop also polls: it lists our containers by label
(catching lost events and containers removed from outside), enforces ``hard_time``, measures
the CPU time of containers old enough to have used their budget (``RLIMIT_CPU`` counts per
process only). A follower ends a job as soon as it prints more than its ``output`` limit.
An engine that stops answering for :data:`ENGINE_LOST_AFTER` seconds costs its running jobs
(reason ``engine_lost``).

Messages (dispatcher → waiter): ``("watch", job_id, container_id, limits, started_at,
kill_requested, has_stream)`` (the stream's descriptor follows it on the pipe),
``("kill", job_id)``, ``("probe",)`` (check the engine now and report what is seen),
``None`` to exit. Replies: ``("done", job_id, container_result)`` and ``("engine",
instance_name, reachable)``.
"""
from __future__ import annotations

import collections
import logging
import os
import threading
import time
from dataclasses import dataclass, field
from multiprocessing import reduction
from multiprocessing.connection import wait
from typing import Any, Dict, Optional

from backend import _docker, _features
from backend._child import configure_logging, exit_with_parent
from backend._config import InstanceConfig
from backend._messages import EngineState, Exit, JobEnded, KillRunning, Probe, Watch
from backend._results import container_result, failure_result, join_head_and_tail

logger = logging.getLogger("backend")

#: Seconds an engine may not answer before its running jobs end with ``engine_lost``.
ENGINE_LOST_AFTER = 5.0
#: Seconds a job's output stream may lag behind its end before its log is read instead.
STREAM_GRACE = 2.0
#: Seconds the events of a container not yet watched are kept.
_EARLY_NOTES_KEPT = 60.0
_SIGXCPU_EXIT = 128 + 24
_SIGXFSZ_EXIT = 128 + 25


@dataclass
class _Watched:
    """One container this waiter watches."""

    job_id: str
    container_id: str
    limits: Dict[str, Any]
    started_at: float
    reason: Optional[str] = None
    oom: bool = False
    killed_from_outside: bool = False
    engine_was_lost: bool = False
    exit_code: Optional[int] = None
    ended_at: Optional[float] = None
    stderr_head: bytearray = field(default_factory=bytearray, repr=False)
    follower_response: Any = field(default=None, repr=False)
    #: the job's own attach, handed over by its submitter: None, "open", "complete" (all
    #: output read, no need for the engine's log) or "broken" (read the log instead)
    stream_state: Optional[str] = None
    stdout: bytearray = field(default_factory=bytearray, repr=False)
    stderr_tail: bytearray = field(default_factory=bytearray, repr=False)
    output_seen: int = 0
    #: (exit code, end time, monotonic deadline) of an end waiting for the stream's last bytes
    pending_end: Optional[tuple] = None


class _Waiter:
    def __init__(self, connection, instance: InstanceConfig, manager_id: str):
        self.connection = connection
        self.instance = instance
        self.manager_id = manager_id
        self.label = f"{_docker.LABEL_MANAGER}={manager_id}"
        self.watched: Dict[str, _Watched] = {}  # by container id
        self.by_job: Dict[str, str] = {}
        self.notes: collections.deque = collections.deque()
        #: events of containers not (yet) watched: container id -> (when, notes)
        self.early_notes: Dict[str, Any] = {}
        #: the time from which our event stream has covered this engine
        self.events_since: Optional[float] = None
        self.wake_r, self.wake_w = os.pipe()
        os.set_blocking(self.wake_w, False)
        self.client = None
        self.reachable: Optional[bool] = None
        self.unreachable_since: Optional[float] = None
        self.stopping = False

    # -- plumbing ------------------------------------------------------------------------
    def notify(self, note) -> None:
        """Called from helper threads: queue a note and wake the main loop."""
        self.notes.append(note)
        try:
            os.write(self.wake_w, b"!")
        except BlockingIOError:
            pass

    def send(self, message) -> None:
        self.connection.send(message)

    def docker_client(self):
        if self.client is None:
            self.client = _docker.connect(self.instance)
        return self.client

    def set_reachable(self, reachable: bool) -> None:
        if reachable:
            self.unreachable_since = None
        elif self.unreachable_since is None:
            self.unreachable_since = time.monotonic()
            for watched in self.watched.values():
                watched.engine_was_lost = True
        if reachable != self.reachable:
            self.reachable = reachable
            if not reachable:
                logger.warning("engine %s does not answer", self.instance.name)
            self.send(EngineState(self.instance.name, reachable))

    # -- main loop -----------------------------------------------------------------------
    def run(self) -> None:
        threading.Thread(target=self.follow_events, name="backend-events", daemon=True).start()
        next_poll = time.monotonic() + self.instance.time_between_polls
        while not self.stopping:
            timeout = max(0.0, next_poll - time.monotonic())
            ready = wait([self.connection, self.wake_r], timeout)
            if self.wake_r in ready:
                os.read(self.wake_r, 65536)
            while self.notes:
                self.handle_note(self.notes.popleft())
            if self.connection in ready:
                try:
                    while self.connection.poll():
                        self.handle_message(self.connection.recv())
                except (EOFError, OSError):
                    return
            if time.monotonic() >= next_poll:
                self.poll()
                next_poll = time.monotonic() + self.instance.time_between_polls

    def handle_message(self, message) -> None:
        if isinstance(message, Exit):
            self.stopping = True
            return
        if isinstance(message, Watch):
            job_id, container_id, limits, started_at, kill_requested, has_stream = message
            stream = _receive_stream(self.connection) if has_stream else None
            if container_id in self.watched:
                if stream is not None:
                    stream.close()
                return
            watched = _Watched(job_id, container_id, limits, started_at)
            self.watched[container_id] = watched
            self.by_job[job_id] = container_id
            early = self.early_notes.pop(container_id, None)
            ended = early is not None and any(note[0] in ("die", "destroy") for note in early[1])
            if stream is not None:
                watched.stream_state = "open"
                self.start_follower(watched, stream)
            if kill_requested and not ended:
                self.kill(watched, "killed")
            elif not ended and stream is None:
                self.start_follower(watched)
            if self.unreachable_since is not None:
                watched.engine_was_lost = True
            if early:  # it ended before we were told of it: its events came first
                for note in early[1]:
                    self.handle_note(note)
            elif self.events_since is None or started_at < self.events_since + 1.0:
                # it may have ended before our event stream covers (a previous waiter died
                # holding it): look now rather than at the next poll
                self.reconcile([watched])
        elif isinstance(message, KillRunning):
            killed = self.by_job.get(message.job_id)
            if killed:
                self.kill(self.watched[killed], "killed")
        elif isinstance(message, Probe):  # a submitter saw the engine fail: report what we see
            self.reachable = None
            if self.client is not None:  # on a new connection, as a submitter makes: an
                self.client.close()      # engine that stops still serves the ones it has
                self.client = None
            self.reconcile(list(self.watched.values()))

    def handle_note(self, note) -> None:
        kind = note[0]
        if kind == "engine":
            self.set_reachable(note[1])
            return
        if kind == "events":
            if self.events_since is None:
                self.events_since = note[1]
            return
        watched = self.watched.get(note[1])
        if watched is None:
            if kind in _docker.CONTAINER_EVENTS:
                self.keep_early(note)
            return
        if kind == "oom":
            watched.oom = True
        elif kind == "kill":
            if watched.reason is None:
                watched.killed_from_outside = True
        elif kind == "die":
            exit_code = note[2]
            self.finish(watched, exit_code, note[3])
        elif kind == "destroy":
            if watched.reason is None:
                watched.reason = "removed"
            self.finish(watched, watched.exit_code, time.time(), gone=True)
        elif kind == "overflow":
            self.kill(watched, "output")
        elif kind == "stream_end":
            if watched.stream_state == "open":
                watched.stream_state = note[2]
            if watched.pending_end is not None:
                exit_code, ended_at, _ = watched.pending_end
                self.finish(watched, exit_code, ended_at)

    def keep_early(self, note) -> None:
        """Keeps the events of a container we are not yet told of (a short job's ``die``
        often comes before the dispatcher's ``watch``); forgotten after a minute."""
        now = time.monotonic()
        entry = self.early_notes.get(note[1])
        if entry is None:
            entry = self.early_notes[note[1]] = (now, [])
        entry[1].append(note)
        while self.early_notes:
            oldest = next(iter(self.early_notes))
            if now - self.early_notes[oldest][0] < _EARLY_NOTES_KEPT:
                break
            del self.early_notes[oldest]

    # -- actions -------------------------------------------------------------------------
    def kill(self, watched: _Watched, reason: str) -> None:
        """Kills a container, from a helper thread: the engine may take a while to answer."""
        if watched.reason is None:
            watched.reason = reason
        logger.debug("killing %s (%s)", watched.job_id, reason)
        threading.Thread(target=self._kill, args=(watched.container_id,), daemon=True,
                         name="backend-kill").start()

    def _kill(self, container_id: str) -> None:
        try:
            self.docker_client().kill(container_id)
        except _docker.HttpError as error:
            # not running any more (it ended, or was removed): its die/destroy event follows
            logger.debug("kill %s: %s", container_id, error)
        except Exception as error:  # noqa: BLE001 - engine unreachable mid-call
            logger.debug("kill %s: %s", container_id, error)
            self.notify(("engine", False))

    def finish(self, watched: _Watched, exit_code: Optional[int], ended_at: float,
               gone: bool = False) -> None:
        """Collects a container that ended, and reports the job's result."""
        if watched.container_id not in self.watched:
            return
        stdout = stderr = b""
        if not gone and watched.stream_state == "open":
            # ended, but the last bytes may still be on their way: wait for the stream's end
            # (bounded: the poll gives up after STREAM_GRACE and reads the log instead)
            if watched.pending_end is None:
                watched.pending_end = (exit_code, ended_at, time.monotonic() + STREAM_GRACE)
            return
        if not gone:
            try:
                client = self.docker_client()
                if exit_code is None or exit_code != 0 and not watched.oom:
                    state = client.inspect(watched.container_id)["State"]
                    if state.get("Running"):
                        return  # a stale event: the container runs again?
                    exit_code = state.get("ExitCode", exit_code)
                    watched.oom = watched.oom or bool(state.get("OOMKilled")) or \
                        _features.unreported_oom(getattr(client, "features", None), state,
                                                 watched.killed_from_outside)
                if watched.stream_state == "complete":
                    stdout, stderr = bytes(watched.stdout), bytes(watched.stderr_head)
                    if watched.output_seen > watched.limits["output"]:
                        stderr = join_head_and_tail(stderr, bytes(watched.stderr_tail),
                                                    watched.limits["output"])
                else:
                    stdout, stderr = client.logs(watched.container_id)
            except Exception as error:  # noqa: BLE001 - removed, or engine unreachable
                if _docker.is_not_found(error):
                    if watched.reason is None:
                        watched.reason = "removed"
                else:  # the engine does not answer: the next poll retries
                    logger.debug("collecting %s failed: %s", watched.container_id, error)
                    watched.exit_code, watched.ended_at = exit_code, ended_at
                    self.set_reachable(False)
                    return
        reason = watched.reason
        limits = watched.limits
        if reason is None:
            if watched.oom:
                reason = "memory"
            elif exit_code == _SIGXCPU_EXIT:
                reason = "cpu_time"
            elif exit_code == _SIGXFSZ_EXIT:
                reason = "disk"
            elif (len(stdout) + len(stderr) > limits["output"]
                  or watched.output_seen > limits["output"]):
                reason = "output"
            elif watched.killed_from_outside:
                reason = "removed"
            elif watched.engine_was_lost:
                reason = "engine_lost"
        if reason == "output" and watched.stderr_head and watched.stream_state != "complete":
            stderr = join_head_and_tail(bytes(watched.stderr_head), stderr, limits["output"])
        duration = max(0.0, (ended_at or time.time()) - watched.started_at)
        if reason == "engine_lost":
            result = failure_result("engine_lost", f"host {self.instance.name} was lost while "
                                    f"the job ran", self.instance.name, watched.container_id,
                                    duration)
        else:
            result = container_result(stdout, stderr, exit_code, reason, limits,
                                      self.instance.name, watched.container_id, duration)
        self.forget(watched)
        self.send(JobEnded(watched.job_id, result))

    def forget(self, watched: _Watched) -> None:
        self.watched.pop(watched.container_id, None)
        self.by_job.pop(watched.job_id, None)
        if watched.follower_response is not None:
            watched.follower_response.shutdown()

    # -- the poll ------------------------------------------------------------------------
    def poll(self) -> None:
        if not self.watched:
            if self.reachable is False:  # the dispatcher waits to hear that it is back
                self.reconcile([])
            return
        now = time.time()
        for watched in list(self.watched.values()):
            if watched.pending_end is not None and time.monotonic() >= watched.pending_end[2] \
                    and watched.stream_state == "open":
                logger.debug("output stream of %s did not end; reading its log", watched.job_id)
                watched.stream_state = "broken"
                if watched.follower_response is not None:
                    watched.follower_response.shutdown()
                exit_code, ended_at, _ = watched.pending_end
                self.finish(watched, exit_code, ended_at)
        for watched in list(self.watched.values()):
            age = now - watched.started_at
            if watched.reason is None and age >= watched.limits["hard_time"]:
                self.kill(watched, "wall_time")
        self.check_cpu(now)
        self.reconcile(list(self.watched.values()))
        if (self.unreachable_since is not None
                and time.monotonic() - self.unreachable_since >= ENGINE_LOST_AFTER):
            for watched in list(self.watched.values()):
                watched.reason = watched.reason or "engine_lost"
                self.forget(watched)
                self.send(JobEnded(watched.job_id, failure_result(
                    "engine_lost", f"host {self.instance.name} stopped answering while the "
                    f"job ran", self.instance.name, watched.container_id,
                    now - watched.started_at)))

    def reconcile(self, candidates) -> None:
        """Finishes the candidates whose container ended or vanished (lost events). Also tells
        whether the engine answers: with no candidates, only when that is in doubt."""
        if not candidates and self.reachable:
            return
        try:
            listed = {c["Id"]: c for c in self.docker_client().containers(self.label)}
        except Exception as error:  # noqa: BLE001 - the engine does not answer
            logger.debug("reconcile on %s failed: %s", self.instance.name, error)
            self.client = None
            self.set_reachable(False)
            return
        self.set_reachable(True)
        for watched in candidates:
            if watched.container_id not in self.watched:
                continue
            container = listed.get(watched.container_id)
            if container is None:
                if watched.reason is None:
                    watched.reason = "removed"
                self.finish(watched, watched.exit_code, time.time(), gone=True)
            elif container.get("State") in ("exited", "dead"):
                self.finish(watched, None, watched.ended_at or time.time())

    def check_cpu(self, now: float) -> None:
        """Kills containers whose processes together used their CPU time (cgroup stats)."""
        for watched in list(self.watched.values()):
            limits = watched.limits
            if watched.reason is not None or now - watched.started_at < \
                    limits["time"] / max(limits["cpus"], 0.01) * 0.9:
                continue
            try:
                used = self.docker_client().cpu_seconds(watched.container_id)
            except Exception as error:  # noqa: BLE001 - ended meanwhile, or engine trouble
                logger.debug("stats %s: %s", watched.container_id, error)
                continue
            if used >= limits["time"]:
                self.kill(watched, "cpu_time")

    def start_follower(self, watched: _Watched, stream=None) -> None:
        threading.Thread(target=self.follow_output, args=(watched, stream),
                         name="backend-output", daemon=True).start()

    # -- helper threads ------------------------------------------------------------------
    def follow_output(self, watched: _Watched, stream=None) -> None:
        """Reads a container's output as it comes and notes ``overflow`` as soon as it
        prints more than its ``output`` limit.

        With ``stream``, the job's own attach made before its start, every byte is seen:
        stdout and the head and tail of stderr are kept, and the engine's log is not read.
        Without, it attaches now and keeps the head of stderr (the log keeps the tail).
        """
        limit = watched.limits["output"]
        complete = stream is not None
        state = "broken"
        try:
            if stream is None:
                stream, frames = self.docker_client().attach_output(watched.container_id)
            else:
                frames = _docker.parse_frames(stream.reader)
            watched.follower_response = stream
            if watched.container_id not in self.watched:
                return
            for number, data in frames:
                seen = watched.output_seen
                watched.output_seen = seen + len(data)
                if seen > limit:
                    if complete and number == 2:
                        _keep_tail(watched.stderr_tail, data, limit)
                    continue  # keep reading until the kill: an unread attach blocks the engine
                if number == 2:
                    if len(watched.stderr_head) < limit:
                        watched.stderr_head += data[:limit - len(watched.stderr_head)]
                    if complete:
                        _keep_tail(watched.stderr_tail, data, limit)
                elif complete and len(watched.stdout) <= limit:
                    watched.stdout += data[:limit + 1 - len(watched.stdout)]
                if watched.output_seen > limit:
                    self.notify(("overflow", watched.container_id))
            state = "complete" if complete else "broken"
        except Exception as error:  # noqa: BLE001 - closed by forget(), or engine gone
            logger.debug("output follower of %s ended: %s", watched.container_id, error)
        finally:
            if stream is not None:
                stream.close()
            if complete:
                self.notify(("stream_end", watched.container_id, state))

    def follow_events(self) -> None:
        """Follows the engine's events for our containers, resuming with ``since``."""
        since = time.time() - 1.0
        client = None
        delay = 0.1
        while not self.stopping:
            try:
                if client is None:
                    client = _docker.connect(self.instance)
                _, stream = client.events(since, {"type": ["container"], "label": [self.label],
                                                  "event": list(_docker.CONTAINER_EVENTS)})
                self.notify(("events", since))
                self.notify(("engine", True))
                delay = 0.1
                for event in stream:
                    since = max(since, event.get("timeNano", 0) / 1e9 or event.get("time", 0))
                    attributes = event.get("Actor", {}).get("Attributes", {})
                    action = event.get("Action") or event.get("status")
                    container_id = event.get("id") or event.get("Actor", {}).get("ID")
                    if action == "die":
                        exit_code = attributes.get("exitCode")
                        self.notify(("die", container_id,
                                     int(exit_code) if exit_code is not None else None,
                                     event.get("timeNano", 0) / 1e9 or time.time()))
                    else:
                        self.notify((action, container_id))
                logger.debug("event stream of %s ended", self.instance.name)
            except Exception as error:  # noqa: BLE001 - engine gone: resubscribe
                logger.debug("event stream of %s failed: %s", self.instance.name, error)
                client = None
            self.notify(("engine", False))
            time.sleep(delay)
            delay = min(delay * 2, 2.0)


def _keep_tail(tail: bytearray, data: bytes, limit: int) -> None:
    tail += data
    if len(tail) > limit:
        del tail[:len(tail) - limit]


def _receive_stream(connection):
    """The attach the submitter made for a job, passed over our pipe (SCM_RIGHTS)."""
    try:
        return _docker.adopt_stream(reduction.recv_handle(connection))
    except (EOFError, OSError, RuntimeError) as error:
        logger.warning("a job's output stream was lost on its way (%s); its log is read", error)
        return None


def waiter_main(connection, instance: InstanceConfig, manager_id: str, log_level: int,
                lifeline) -> None:
    """Entry point of a waiter process."""
    exit_with_parent(lifeline)
    configure_logging(log_level)
    _Waiter(connection, instance, manager_id).run()
