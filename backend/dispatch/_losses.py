"""What a dead child or a silent engine costs the dispatcher, and how it is settled.

A submitter that died held a job (it ends ``start_failed``; its container, which may exist,
is removed by name), a removal (pending again) or a warm container's start (failed). A waiter
that died is replaced and its running jobs go to the replacement, once: a job whose handling
already cost :data:`~backend.model._job.MAX_CHILDREN_LOST` waiters ends ``handling_failed``.
An engine that does not answer its health probe costs the submitters waiting on it their
request: they are given up on, and what they held is settled as for a death, a job being placed
again elsewhere when placement allows. Runs in the dispatcher thread, on the dispatcher's
state, which the dispatcher gives it (it owns one :class:`Losses`).
"""
from __future__ import annotations

import logging
import time
from typing import Callable, Dict, Optional

from backend.dispatch._placement import Placement
from backend.dispatch._removals import Removals
from backend.dispatch._supervisor import Child, ChildKind, Supervisor
from backend.dispatch._warm import WarmStarts
from backend.ipc import Submit
from backend.model import MAX_CHILDREN_LOST, Job, JobState, Result, failure_result
from backend.watch import PROBE_TIMEOUT

logger = logging.getLogger("backend")


class Losses:
    """Settles what dead children and silent engines leave (see the module docstring)."""

    def __init__(self, placement: Placement, removals: Removals, supervisor: Supervisor,
                 warm: WarmStarts, urls: Dict[str, str], end: Callable[[Job, Result], None],
                 stopping: Callable[[], bool]):
        self.placement, self.removals, self.supervisor = placement, removals, supervisor
        self.warm, self.urls = warm, urls
        self.end = end  # the dispatcher's one place where a job ends
        self.stopping = stopping

    def start_failed_elsewhere(self, job: Job, engine: str, text: str,
                                retryable: bool = True, reason: str = "engine_unreachable",
                                container_id: Optional[str] = None) -> None:
        """``engine`` could not start ``job``: it is placed again if placement allows (see
        :meth:`~backend.dispatch._placement.Placement.failed`), else it ends with ``reason``."""
        if self.placement.failed(job, engine, retryable):
            logger.info("job %s: %s; placing it again", job.job_id, text)
            job.move(JobState.QUEUED)
            job.container_id, job.warm = None, False
        else:
            self.end(job, failure_result(reason, text, engine, container_id))

    def abandon(self, engine: str, why: str = "") -> None:
        """Gives up on the submitters whose request waits on ``engine``, which does not
        answer (see :meth:`~backend.dispatch._supervisor.Supervisor.abandon`), and settles what they
        held: a job is placed again (or ends ``engine_unreachable``), and its container, which
        the engine may have created, is removed by name once the engine answers; a removal is
        pending again; a warm container's start failed. ``why``: what the probe saw."""
        for submitter in self.supervisor.submitters:
            held = submitter.holding
            if held is None or held.engine != engine or (
                    isinstance(held, Job) and held.state is not JobState.SUBMITTING):
                continue
            logger.info("engine %s does not answer: giving up on submitter process %s",
                        engine, submitter.process.pid)
            self.supervisor.abandon(submitter)
            if isinstance(held, Job):
                self.warm.fill_failed(held.job_id)  # a warm container's attach, if it had one
                self.removals.attempt_failed(engine, None, held.container_name, True,
                                             time.monotonic())
                self.start_failed_elsewhere(held, engine, f"host {engine} "
                                             f"({self.urls[engine]}) did not answer a health "
                                             f"probe within {PROBE_TIMEOUT} s"
                                             + (f": {why}" if why else ""))
            elif isinstance(held, Submit):
                self.warm.start_failed(held, None)
            else:
                self.removals.returned(held)

    def replace(self, child: Child) -> None:
        """Replaces a dead child and settles what a submitter held: its job ends (its
        container, which may exist in any case, is removed), its removal is pending again.
        (A waiter's running jobs go to its replacement.)"""
        if self.stopping():
            return
        if child.kind is ChildKind.WAITER:
            self._end_jobs_that_cost_waiters(child)
        self.supervisor.replace(child)
        held = child.holding
        if isinstance(held, Job):
            if held.state is JobState.SUBMITTING and held.engine:
                self.warm.fill_failed(held.job_id)
                self.removals.attempt_failed(held.engine, held.container_id,
                                             held.container_name, True, time.monotonic())
                self.end(held, failure_result(
                    "start_failed", "the submitter process died while starting the job's "
                    "container", held.engine, held.container_id))
        elif isinstance(held, Submit):
            self.warm.start_failed(held, None)
        elif held is not None:
            self.removals.returned(held)

    def _end_jobs_that_cost_waiters(self, waiter: Child) -> None:
        """Counts the death of ``waiter`` against each job it watched; a job that already
        cost :data:`~backend.model._job.MAX_CHILDREN_LOST` waiters ends (``handling_failed``)
        instead of going to the replacement, which whatever killed them would kill too."""
        for job in list(waiter.jobs.values()):
            job.children_lost += 1
            if job.children_lost >= MAX_CHILDREN_LOST and job.state is JobState.RUNNING:
                del waiter.jobs[job.job_id]
                self.end(job, failure_result(
                    "handling_failed", f"The waiter process of engine {job.engine} died "
                    f"{job.children_lost} times while watching the job's container; the job "
                    "is not handed on again.", job.engine, job.container_id))
