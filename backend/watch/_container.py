"""One container a waiter watches: :class:`WatchedContainer`, and what it knows of its end.

Owned by a waiter's main loop (:mod:`backend._waiter`), one per container it was told of
(``Watch``), until the job's result is reported; the main thread's alone (its output is its
:class:`~backend.watch._follower.OutputFollower`'s, its input its
:class:`~backend.docker._input.InputWriter`'s). It records what the container's events tell, and
collects how the container ended (the engine's inspect and log, or the job's own stream);
:mod:`backend.model._results` makes the result of that.
"""
from __future__ import annotations

import logging
import posixpath
import tarfile
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, NamedTuple, Optional, Tuple

from backend import docker
from backend.model import (ContainerEnd, Outputs, OutputsReader, Result, check_json, ended_result,
                           failure_result)
from backend.ipc import DockerEvent, Watch
from backend.watch._follower import OutputFollower, StreamState

logger = logging.getLogger("backend")


#: The disk watch spends at most one part in this many of a container's wall time on its
#: size checks: a check that took the engine 0.2 s comes again 2 s later at the earliest...
DISK_COST_RATIO = 10.0
#: ...and at the latest this many seconds later, however costly (a layer of 50,000 files
#: takes the engine 0.3 s of CPU a check): see docs/security.rst. A container growing fast
#: toward its limit is checked sooner: when, at the rate of its last two checks, it would
#: reach its limit before its next check, it is checked when it would reach it (between two
#: polls if need be), but no sooner than :data:`DISK_MIN_PERIOD`: see :func:`disk_delay`.
DISK_MAX_PERIOD = 5.0
#: The shortest time between two size checks of a container (one about to cross its limit).
DISK_MIN_PERIOD = 0.1


class PendingEnd(NamedTuple):
    """An end waiting for the last bytes of the job's own stream."""

    exit_code: Optional[int]
    ended_at: float
    deadline: float  # time.monotonic() after which the log is read instead


@dataclass
class Ending:
    """What is known of how a watched container ends, as it comes: the one record of its
    end, read when its job's result is made (:meth:`WatchedContainer.end`)."""

    reason: Optional[str] = None  # ours: a kill's reason, or "removed"
    oom: bool = False  # the engine said it ran out of memory
    killed_from_outside: bool = False  # a kill event we did not send
    engine_was_lost: bool = False  # the engine stopped answering while it ran
    exit_code: Optional[int] = None  # kept for a collection tried again at the next poll
    ended_at: Optional[float] = None
    pending: Optional[PendingEnd] = None  # an end waiting for the stream's last bytes


@dataclass
class WatchedContainer:
    """One container this waiter watches. The main thread's alone (its output is the
    follower's, see :class:`~backend.watch._follower.OutputFollower`)."""

    job_id: str
    container_id: str
    limits: Dict[str, Any]
    started_at: float
    follower: OutputFollower
    ending: "Ending" = field(default_factory=lambda: Ending())
    writer: Optional[docker.InputWriter] = None  # the rest of its input, if any
    watch: Optional[Watch] = None  # its protocol and outputs (docs/running-programs.rst)
    disk_due_at: float = 0.0  # time.monotonic() of its next size check (the disk watch)
    disk_seen: int = 0  # the most bytes its writable layer was seen to hold
    disk_cost: Optional[float] = None  # seconds its last size check took
    disk_last: Optional[Tuple[float, int]] = None  # its last check: (monotonic, bytes)

    @classmethod
    def of(cls, message: Watch, follower: OutputFollower,
           stream: Optional[docker.OutputStream] = None, rest: bytes = b"") -> "WatchedContainer":
        """Also starts writing ``rest`` of its input on ``stream`` (stopped: see record)."""
        writer = docker.start_writer(stream.sock, rest, message.container_id) if stream else None
        return cls(message.job_id, message.container_id, message.limits, message.started_at,
                   follower, writer=writer, watch=message)

    def end(self, exit_code: Optional[int], collected: int) -> ContainerEnd:
        return ContainerEnd(exit_code, self.limits, self.ending.reason, self.ending.oom,
                            self.ending.killed_from_outside, self.ending.engine_was_lost,
                            max(collected, self.follower.seen),
                            self.watch.protocol if self.watch else "json")

    def result(self, exit_code: Optional[int], stdout: bytes, stderr: bytes,
               ended_at: Optional[float], host: str,
               connected: Optional[Callable[[], docker.Engine]]) -> Result:
        """The job's result once its container ended, with its outputs (read through
        ``connected``; None: the container is gone); JSON, or it raises (see
        :func:`backend.model._results.check_json`)."""
        end = self.end(exit_code, len(stdout) + len(stderr))
        duration = max(0.0, (ended_at or time.time()) - self.started_at)
        result = ended_result(end, stdout, stderr, self.follower.live_stderr_head(), host,
                              self.container_id, duration)
        if connected is not None:
            result = self.with_outputs(result, connected)
        check_json(result)
        return result

    def failure(self, reason: str, what: str, error: BaseException, host: str) -> Result:
        """The result of a job whose handling raised ``error``: ``crash``, ``reason``."""
        duration = max(0.0, (self.ending.ended_at or time.time()) - self.started_at)
        return failure_result(
            reason, f"The job could not be handled: {what} ({type(error).__name__}).", host,
            self.container_id, duration)

    def with_outputs(self, result: Result, connected: Callable[[], docker.Engine]) -> Result:
        """The result with the job's outputs, if it has any (also after a kill, a limit)."""
        return add_outputs(result, connected, self.container_id,
                           self.watch.outputs if self.watch else None, int(self.limits["output"]))

    def record(self, event: DockerEvent) -> None:
        """What an event tells (``oom``, ``kill``); a ``die`` or ``kill`` stops the input."""
        if event.action in ("die", "kill"):  # its stdin is gone, or about to be
            docker.stop_writer(self.writer)
        if event.action == "oom":
            self.ending.oom = True
        elif event.action == "kill" and self.ending.reason is None:
            self.ending.killed_from_outside = True

    def overdue(self, now: float) -> Optional[PendingEnd]:
        """The end that waited too long (``now``: monotonic) for the stream's last bytes."""
        pending = self.ending.pending
        if pending is not None and now >= pending.deadline \
                and self.follower.state is StreamState.OPEN:
            return pending
        return None

    def cpu_due(self, now: float) -> bool:
        """Whether it is old enough to have used its CPU time (and is not being killed)."""
        return self.ending.reason is None and now - self.started_at >= \
            self.limits["time"] / max(self.limits["cpus"], 0.01) * 0.9

    def check_disk(self, engine: docker.Engine, period: float, now: float) -> bool:
        """Measures what the container wrote (its writable layer) if its check is due (at
        ``now``, monotonic), and schedules the next one (:func:`disk_delay`): ``period``
        later, or later still when the last two measures were costly
        (:data:`DISK_COST_RATIO`, up to :data:`DISK_MAX_PERIOD`; the cheaper of the two counts,
        so that one slow answer of a loaded engine does not stretch the period alone), but
        sooner when it grows fast toward its limit. Whether it wrote more than its ``disk``
        limit.

        Raises:
            DockerFailure: from the engine.
        """
        limit = self.limits.get("disk")
        if limit is None or now < self.disk_due_at:
            return False
        began = time.monotonic()
        self.disk_due_at = began + period  # if the engine fails it: the next poll's
        used = engine.disk_used(self.container_id)
        cost = time.monotonic() - began
        self.disk_seen = max(self.disk_seen, used)
        last, self.disk_cost = self.disk_cost, cost
        rate = None
        if self.disk_last is not None and began > self.disk_last[0]:
            rate = (used - self.disk_last[1]) / (began - self.disk_last[0])
        self.disk_last = (began, used)
        self.disk_due_at = began + disk_delay(period, min(cost, last or cost), int(limit) - used,
                                              rate)
        return used > limit

    def collect(self, engine: docker.Engine, exit_code: Optional[int]
                ) -> Optional[Tuple[Optional[int], bytes, bytes]]:
        """``(exit_code, stdout, stderr)`` of the ended container (from the engine's
        inspect and log, or from its own stream); None if it runs again (a stale event).

        Raises:
            DockerFailure: from the engine.
        """
        if exit_code is None or exit_code != 0 and not self.ending.oom:
            state = engine.inspect(self.container_id)["State"]
            if state.get("Running"):
                return None
            exit_code = state.get("ExitCode", exit_code)
            self.ending.oom = self.ending.oom or bool(state.get("OOMKilled")) or docker.unreported_oom(
                getattr(engine, "features", None), state, self.ending.killed_from_outside)
        if self.follower.state is StreamState.COMPLETE:
            return (exit_code, *self.follower.collected())
        return (exit_code, *engine.logs(self.container_id))


def disk_delay(period: float, cost: float, room: int, rate: Optional[float]) -> float:
    """Seconds to the next size check of a container: ``period`` (the poll's), stretched
    to :data:`DISK_COST_RATIO` times the ``cost`` of a check (up to
    :data:`DISK_MAX_PERIOD`), but no later than when, growing at ``rate`` (bytes a second,
    None: not known yet), it would have written the ``room`` left under its limit, and
    then never sooner than :data:`DISK_MIN_PERIOD`."""
    delay = max(period, min(DISK_COST_RATIO * cost, DISK_MAX_PERIOD))
    if rate is not None and rate > 0:
        delay = min(delay, max(DISK_MIN_PERIOD, room / rate))
    return delay


def add_outputs(result: Dict[str, Any], connected: Callable[[], docker.Engine],
                container_id: str, outputs: Optional[Outputs], budget: int) -> Dict[str, Any]:
    """Reads the ``outputs`` of the ended container into ``result`` (``result["files"]``,
    ``result["run"]["files_left_out"]``), within ``budget`` bytes; returns ``result``
    (unchanged when there are no outputs)."""
    if outputs is None:
        return result
    reader = OutputsReader(budget)
    try:
        engine = connected()
        workdir = outputs.workdir
        if workdir is None:  # the image's
            workdir = engine.inspect(container_id)["Config"].get("WorkingDir") or "/"
        for path in outputs.paths:
            try:
                archive = engine.get_archive(container_id, posixpath.join(workdir, path))
            except docker.DockerFailure as failure:
                if failure.not_found:
                    continue  # not written: absent
                raise
            try:
                reader.read(path, archive)
            except (tarfile.TarError, ValueError, EOFError) as error:  # not a tar we read
                logger.warning("the output %s of %s could not be read: %s", path,
                               container_id, error)
            finally:
                archive.close()
    except docker.DockerFailure as failure:
        logger.warning("the outputs of %s could not all be read: %s", container_id,
                       failure.text)
    except (KeyError, TypeError) as error:  # an inspect without its Config
        logger.warning("the outputs of %s: an unexpected answer (%s)", container_id, error)
    reader.add_to(result)
    return result
