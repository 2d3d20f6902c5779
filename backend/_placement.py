"""Placement: which engine runs which job, and when.

Owns the FIFO of jobs waiting for a slot, the running count and the reachable flag of every
engine, which engines failed which job, the choice of an engine and the retry policy. Pure
bookkeeping (no pipe, no process, no clock): the dispatcher thread (:mod:`backend._dispatcher`)
owns the one instance and is its only caller; the unit tests drive it directly.
"""
from __future__ import annotations

import collections
import itertools
from typing import Deque, Dict, List, Optional, Sequence, Set, Tuple

from backend._config import InstanceConfig
from backend._job import JobState, _Job

#: Engines a job is tried on when its engine does not answer, at most.
PLACEMENT_TRIES = 3


class Placement:
    """The queue and the slots of the engines.

    Args:
        configs: the engines (their names and ``max_concurrent_jobs``).
        max_queued_jobs: jobs that may wait for a slot; ``None``: no limit.
    """

    def __init__(self, configs: Sequence[InstanceConfig],
                 max_queued_jobs: Optional[int] = None):
        self.engines: Tuple[str, ...] = tuple(config.name for config in configs)
        self.max_queued_jobs = max_queued_jobs
        self.queue: Deque[_Job] = collections.deque()
        self.running: Dict[str, int] = {engine: 0 for engine in self.engines}
        self._limits = {config.name: config.max_concurrent_jobs for config in configs}
        self._reachable = {engine: True for engine in self.engines}
        self._attempts: Dict[str, int] = {}         # job id -> attempts placed
        self._failed_on: Dict[str, Set[str]] = {}   # job id -> engines that did not answer
        self._tie_breaker = itertools.count()

    # -- the queue -----------------------------------------------------------------------
    def add(self, job: _Job) -> None:
        """Queues a new job, last."""
        self.queue.append(job)

    def over_capacity(self, job: _Job) -> bool:
        """Whether ``job``, still queued, is beyond ``max_queued_jobs``; it leaves the queue
        then."""
        if (self.max_queued_jobs is None or job not in self.queue
                or len(self.queue) <= self.max_queued_jobs):
            return False
        self.queue.remove(job)
        return True

    def withdraw(self, job: _Job) -> bool:
        """Takes a queued job out of the queue (it was killed); False if it was not queued."""
        try:
            self.queue.remove(job)
        except ValueError:
            return False
        return True

    def unplaceable(self) -> List[_Job]:
        """The queued jobs, taken out of the queue, when no engine answers; else none."""
        if any(self._reachable.values()):
            return []
        jobs = list(self.queue)
        self.queue.clear()
        return jobs

    # -- engines -------------------------------------------------------------------------
    def is_reachable(self, engine: str) -> bool:
        return self._reachable[engine]

    def set_reachable(self, engine: str, reachable: bool) -> bool:
        """Records what a child saw of ``engine``; True if that changed its flag."""
        changed = self._reachable[engine] != reachable
        self._reachable[engine] = reachable
        return changed

    def choose(self, job: _Job) -> Optional[str]:
        """The least-loaded reachable engine with a free slot for ``job``, or None.

        A job that an engine failed to start goes to another one (and waits for its slot: the
        failed one may be flapping, as an engine that restarts is), unless no other one is
        reachable. Ties are spread evenly by a counter."""
        reachable = [e for e in self.engines if self._reachable[e]]
        failed = self._failed_on.get(job.job_id, set())
        others = [e for e in reachable if e not in failed]
        free = [e for e in others or reachable
                if self._limits[e] == 0 or self.running[e] < self._limits[e]]
        if not free:
            return None
        least = min(self.running[e] for e in free)
        ties = [e for e in free if self.running[e] == least]
        return ties[next(self._tie_breaker) % len(ties)]

    # -- attempts ------------------------------------------------------------------------
    def next(self) -> Optional[Tuple[_Job, str]]:
        """The first queued job and the engine it goes to, if it can go now. It stays queued
        until :meth:`placed` (its submitter may not take it)."""
        if not self.queue:
            return None
        engine = self.choose(self.queue[0])
        return None if engine is None else (self.queue[0], engine)

    def attempts(self, job: _Job) -> int:
        """Attempts placed for ``job`` so far."""
        return self._attempts.get(job.job_id, 0)

    def placed(self, job: _Job, engine: str) -> None:
        """``job`` left the queue for ``engine``: it holds a slot there."""
        self.queue.remove(job)
        self._attempts[job.job_id] = self.attempts(job) + 1
        self.running[engine] += 1

    def failed(self, job: _Job, engine: str, retryable: bool) -> bool:
        """``engine`` could not start ``job``. Returns whether the job is placed again (it is
        queued first, its slot freed): when the engine did not answer (``retryable``), the job
        was not killed, it was tried fewer than :data:`PLACEMENT_TRIES` times and an engine
        answers. Otherwise it keeps its slot until it :meth:`ended`."""
        if retryable:
            self._failed_on.setdefault(job.job_id, set()).add(engine)
        if not (retryable and self.attempts(job) < PLACEMENT_TRIES and not job.kill_requested
                and any(self._reachable.values())):
            return False
        self.running[engine] -= 1
        self.queue.appendleft(job)
        return True

    def ended(self, job: _Job) -> None:
        """``job`` ends (called before its state becomes DONE): its slot, if it held one, is
        free, and its history goes."""
        if job.state in (JobState.SUBMITTING, JobState.RUNNING) and job.engine:
            self.running[job.engine] -= 1
        self._attempts.pop(job.job_id, None)
        self._failed_on.pop(job.job_id, None)
