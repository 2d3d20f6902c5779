"""The JobManager's record of one job, the states it goes through, and its spec: the plain
data a submitter gets to run it (:class:`JobSpec`, with its :class:`Outputs`).

A :class:`Job` is made by :meth:`backend.job_manager.JobManager.new_job` (in the caller's
thread), then changed only by the dispatcher thread (:mod:`backend.dispatch._dispatcher`) until the
dispatcher puts it on the done queue; the callback managers read it afterwards. A job that
needs no container is made :attr:`JobState.DONE` and goes straight to the done queue: no
thread changes it then.
"""
from __future__ import annotations

import enum
import time
from dataclasses import dataclass, field
from typing import Any, Callable, NamedTuple, Optional, Tuple

from backend.model._files import DEFAULT_WORKDIR, Files
from backend.model._results import Result
from backend.model._task import LocalCheck, TaskSnapshot


@dataclass(frozen=True)
class JobSpec:
    """Everything a submitter needs to run one job; plain data only."""

    job_id: str
    task: TaskSnapshot
    stdin: bytes
    files: Files = ()  # written into the working directory before the start (docs/running-programs.rst)

    @property
    def workdir(self) -> Optional[str]:
        """The job's working directory: the task's, else ``/job`` for a job with files,
        else None (the image's)."""
        return self.task.workdir or (DEFAULT_WORKDIR if self.files else None)

    @property
    def outputs(self) -> Optional["Outputs"]:
        """What the waiter collects once the container ended, if anything."""
        return Outputs(self.workdir, self.task.outputs) if self.task.outputs else None


class Outputs(NamedTuple):
    """The outputs of a job (docs/running-programs.rst): paths relative to ``workdir`` (None: the image's)."""

    workdir: Optional[str]
    paths: Tuple[str, ...]


#: The waiters a job may cost: whatever in it killed one would kill the next one too.
MAX_CHILDREN_LOST = 2


class JobState(enum.Enum):
    """Where a job is; it only ever moves forward (:data:`MOVES`), except SUBMITTING ->
    QUEUED when an engine that did not answer sends it to another one (or the warm container
    it took had ended: it starts cold)."""

    QUEUED = "queued"          # waits for a free slot (backend.dispatch._placement)
    SUBMITTING = "submitting"  # a submitter creates and starts its container
    RUNNING = "running"        # a waiter watches its container
    DONE = "done"              # on the done queue, or delivered


#: The moves a job's state may make (:meth:`Job.move`). A queued job goes straight to
#: RUNNING when it is written into a warm container, and any job may end.
MOVES = {
    JobState.QUEUED: {JobState.SUBMITTING, JobState.RUNNING, JobState.DONE},
    JobState.SUBMITTING: {JobState.RUNNING, JobState.QUEUED, JobState.DONE},
    JobState.RUNNING: {JobState.DONE},
    JobState.DONE: set(),
}


@dataclass(eq=False)
class Job:
    """One job. Written by the JobManager at its creation, then by the dispatcher thread only
    (every field below ``spec``), until it is on the done queue.

    Attributes:
        job_id: the job's id (a uuid4 hex).
        task: the user's task object, handed back to the callback.
        callback: ``callback(job_id, task, result)``, called by a callback manager.
        local: the task's local check, merged with the container's part (docs/results.rst).
        spec: what a submitter needs to run it; ``None`` for a job that needs no container.
        state: see :class:`JobState`.
        engine: the name of the engine of its current (or last) attempt.
        container_id: its container's id, once the engine reported it.
        container_name: the name of the current attempt's container, known before creation.
        kill_requested: :meth:`~backend.job_manager.JobManager.kill_job` was called.
        started_at: epoch seconds its container started at.
        queued_at: epoch seconds it was made at.
        result: the container's part of its result, set when it ends.
        warm: it was written into a warm container (docs/performance.rst, warm starts, :mod:`backend.dispatch._shapes`).
        children_lost: the waiters that died while watching its container; at
            :data:`MAX_CHILDREN_LOST` it ends instead of going to another one.
    """

    job_id: str
    task: Any  # the user's task: any object with the attributes of backend.Task
    callback: Callable[[str, Any, Result], Any]
    local: LocalCheck
    spec: Optional[JobSpec]
    state: JobState = JobState.QUEUED
    engine: Optional[str] = None
    container_id: Optional[str] = None
    container_name: Optional[str] = None
    kill_requested: bool = False
    started_at: Optional[float] = None
    queued_at: float = field(default_factory=time.time)
    result: Optional[Result] = None
    warm: bool = False

    def move(self, state: JobState) -> None:
        """The one place the state changes; a move :data:`MOVES` does not allow is a bug.

        Raises:
            RuntimeError: the move is not allowed (the dispatcher ends the job then).
        """
        if state not in MOVES[self.state]:
            raise RuntimeError(f"job {self.job_id}: {self.state.value} -> {state.value}")
        self.state = state
    children_lost: int = 0
