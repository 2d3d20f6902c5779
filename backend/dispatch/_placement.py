"""Placement: which engine runs which job, and when.

Owns the FIFO of jobs waiting for a slot, the running count and the reachable flag of every
engine, which engines failed which job, the choice of an engine and the retry policy. Pure
bookkeeping (no pipe, no process; the clock is the caller's ``now``): the dispatcher thread
(:mod:`backend.dispatch._dispatcher`) owns the one instance and is its only caller; the unit tests drive
it directly.

Several managers may share an engine (docs/quickstart.rst): its load is this manager's jobs (``running``,
creating ones included) plus the other managers' containers, as the engine's
:class:`~backend.ipc._messages.EngineLoad` counts them. Two rules keep all of them within
``max_concurrent_jobs``, without talking to each other:

* *confirmation*: a job placed on an engine is *unconfirmed* until the engine's count shows its
  container (by its label ``backend.job``; a warm container that serves a job was counted
  long before); a manager keeps at most ``max(1, free // UNCONFIRMED_SHARE)`` unconfirmed jobs
  per engine (``free``: the slots it sees free). Near the limit that is one, so a manager
  that sees its container counted also sees every container created before it: the engine
  runs at most one job per other manager above its limit, and only when they place at the
  same instant.
* *fairness*: on a shared engine with fewer free slots than managers, a manager that has no
  job there takes a freed slot at once (the others may not know it waits: it has no container
  to be seen by); one that has jobs there waits a random :data:`JITTER` (so that the fastest
  waiter does not always win), and :data:`OVER_SHARE_DELAY` more when it already holds its
  share (``limit / managers``): a manager below its share takes the slot first, one above
  still takes it when nobody else does.
"""
from __future__ import annotations

import collections
import itertools
import math
import random
from typing import Callable, Deque, Dict, List, Optional, Sequence, Set, Tuple

from backend.model import InstanceConfig, Job, JobState
from backend.ipc import EngineLoad

#: Engines a job is tried on when its engine does not answer, at most.
PLACEMENT_TRIES = 3
#: Unconfirmed jobs per engine, at most: one per this many free slots (and at least one).
UNCONFIRMED_SHARE = 8
#: Seconds, at most, that a placement on a shared, nearly full engine waits at random.
JITTER = 0.2
#: Seconds more that it waits when this manager already holds its share of the engine.
OVER_SHARE_DELAY = 0.3


class Placement:
    """The queue and the slots of the engines.

    Args:
        configs: the engines (their names and ``max_concurrent_jobs``).
        max_queued_jobs: jobs that may wait for a slot; ``None``: no limit.
    """

    def __init__(self, configs: Sequence[InstanceConfig],
                 max_queued_jobs: Optional[int] = None, rng: Optional[random.Random] = None,
                 warm_count: Callable[[str], int] = lambda engine: 0):
        self.engines: Tuple[str, ...] = tuple(config.name for config in configs)
        self.max_queued_jobs = max_queued_jobs
        self.queue: Deque[Job] = collections.deque()
        self.running: Dict[str, int] = {engine: 0 for engine in self.engines}
        self._limits = {config.name: config.max_concurrent_jobs for config in configs}
        self._reachable = {engine: True for engine in self.engines}
        self._attempts: Dict[str, int] = {}         # job id -> attempts placed
        self._failed_on: Dict[str, Set[str]] = {}   # job id -> engines that did not answer
        self._tie_breaker = itertools.count()
        #: what each engine counts of every manager (none yet: nothing counted)
        self.loads = {e: EngineLoad(e, 0, frozenset(), 0) for e in self.engines}
        self._held: Dict[str, Set[Job]] = {e: set() for e in self.engines}  # SUBMITTING,
        # RUNNING: the jobs counted in ``running``
        self._not_before: Dict[str, float] = {}  # engine -> a deferred placement's time
        self._random = rng or random.Random()
        #: this manager's warm containers on an engine (the warm pool's count, given by the
        #: dispatcher that owns both): they hold slots too
        self.warm_count = warm_count

    # -- the queue -----------------------------------------------------------------------
    def add(self, job: Job) -> None:
        """Queues a new job, last."""
        self.queue.append(job)

    def over_capacity(self, job: Job) -> bool:
        """Whether ``job``, still queued, is beyond ``max_queued_jobs``; it leaves the queue
        then."""
        if (self.max_queued_jobs is None or job not in self.queue
                or len(self.queue) <= self.max_queued_jobs):
            return False
        self.queue.remove(job)
        return True

    def withdraw(self, job: Job) -> bool:
        """Takes a queued job out of the queue (it was killed); False if it was not queued."""
        try:
            self.queue.remove(job)
        except ValueError:
            return False
        return True

    def unplaceable(self) -> List[Job]:
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

    def set_load(self, load: EngineLoad) -> None:
        """Records an engine's count of every manager's containers."""
        if load.engine in self.loads:
            self.loads[load.engine] = load

    def others(self, engine: str) -> int:
        """The other managers' containers on ``engine``, as it counted them."""
        load = self.loads[engine]
        return max(0, load.running - len(load.ours))

    def load(self, engine: str) -> int:
        """This manager's jobs and warm containers on ``engine`` and the other managers'
        containers there."""
        return self.running[engine] + self.warm_count(engine) + self.others(engine)

    def limit(self, engine: str) -> int:
        return self._limits[engine]

    def has_room(self, engine: str) -> bool:
        limit = self._limits[engine]
        if limit == 0:
            return True
        free = limit - self.load(engine)
        ours = self.loads[engine].ours  # by job: a warm container was counted long before
        unconfirmed = sum(1 for job in self._held[engine]
                          if not job.warm and job.job_id not in ours)
        return free > 0 and unconfirmed < max(1, free // UNCONFIRMED_SHARE)

    def _delay(self, engine: str) -> Optional[float]:
        """How long a placement on ``engine`` waits (see the module docstring); None when it
        need not: not shared, or with a free slot for every manager."""
        load, limit = self.loads[engine], self._limits[engine]
        managers = load.other_managers + 1
        if (limit == 0 or load.other_managers == 0 or limit - self.load(engine) >= managers
                or self.running[engine] == 0):  # none here yet: it may be unseen by others
            return None
        share = math.ceil(limit / managers)
        return self._random.uniform(0, JITTER) + (
            OVER_SHARE_DELAY if self.running[engine] >= share else 0.0)

    def choose(self, job: Job) -> Optional[str]:
        """The least-loaded reachable engine with a free slot for ``job``, or None.

        A job that an engine failed to start goes to another one (and waits for its slot: the
        failed one may be flapping, as an engine that restarts is), unless no other one is
        reachable. Ties are spread evenly by a counter."""
        reachable = [e for e in self.engines if self._reachable[e]]
        failed = self._failed_on.get(job.job_id, set())
        others = [e for e in reachable if e not in failed]
        free = [e for e in others or reachable if self.has_room(e)]
        if not free:
            return None
        least = min(self.load(e) for e in free)
        ties = [e for e in free if self.load(e) == least]
        return ties[next(self._tie_breaker) % len(ties)]

    # -- attempts ------------------------------------------------------------------------
    def next(self, now: float = 0.0) -> Optional[Tuple[Job, str]]:
        """The first queued job and the engine it goes to, if it can go now (``now``:
        monotonic seconds; a placement on a shared engine may wait, see :meth:`next_due`).
        It stays queued until :meth:`placed` (its submitter may not take it)."""
        if not self.queue:
            self._not_before.clear()
            return None
        engine = self.choose(self.queue[0])
        for other in [e for e in self._not_before if e != engine]:
            del self._not_before[other]  # its free slot went meanwhile
        if engine is None:
            return None
        due = self._not_before.get(engine)
        if due is None:
            delay = self._delay(engine)
            if delay is not None:
                self._not_before[engine] = now + delay
                return None
        elif now < due:
            return None
        else:
            del self._not_before[engine]
        return self.queue[0], engine

    def next_due(self) -> Optional[float]:
        """When a deferred placement may go (monotonic seconds), if one waits."""
        return min(self._not_before.values(), default=None)

    def attempts(self, job: Job) -> int:
        """Attempts placed for ``job`` so far."""
        return self._attempts.get(job.job_id, 0)

    def placed(self, job: Job, engine: str) -> None:
        """``job`` left the queue for ``engine``: it holds a slot there."""
        self.queue.remove(job)
        self._attempts[job.job_id] = self.attempts(job) + 1
        self.running[engine] += 1
        self._held[engine].add(job)

    def failed(self, job: Job, engine: str, retryable: bool) -> bool:
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
        self._held[engine].discard(job)
        self.queue.appendleft(job)
        return True

    def unplace(self, job: Job, engine: str) -> None:
        """``job`` goes back first in the queue, its slot on ``engine`` freed and its
        placement not counted as an attempt (the warm container it took had ended)."""
        self.running[engine] -= 1
        self._held[engine].discard(job)
        self._attempts[job.job_id] = max(0, self.attempts(job) - 1)
        self.queue.appendleft(job)

    def ended(self, job: Job) -> None:
        """``job`` ends (called before its state becomes DONE): its slot, if it held one, is
        free, and its history goes."""
        if job.state in (JobState.SUBMITTING, JobState.RUNNING) and job.engine:
            self.running[job.engine] -= 1
            self._held[job.engine].discard(job)
        self._attempts.pop(job.job_id, None)
        self._failed_on.pop(job.job_id, None)
