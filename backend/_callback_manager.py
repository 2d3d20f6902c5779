"""Callback managers: threads of the JobManager's process that deliver results.

Each thread reads the *done queue* (a :class:`queue.Queue` of ended jobs, fed by the dispatcher
thread and, for jobs that need no container, by :meth:`JobManager.new_job`). For each job it
merges the container's part with the local check (SPEC §6), asks the dispatcher to have a
submitter remove the job's container (a :class:`~backend._messages.RemoveContainer`, sent
before the callback, so that a slow callback never delays the removal), and calls the callback
in this process: a bound method, a closure or a lambda works, and nothing is pickled. A callback
that raises, even ``SystemExit``, is logged with its traceback; the thread goes on. The jobs it
reads are no longer changed by any other thread.
"""
from __future__ import annotations

import logging
import queue
import threading
from typing import Callable, Optional

from backend._job import _Job
from backend._messages import Result
from backend._results import complete, make_run, merge

logger = logging.getLogger("backend")


class _CallbackManager(threading.Thread):
    """One callback manager thread. ``None`` on the done queue stops it.

    Args:
        index: its number, in its thread name.
        done_queue: the ended jobs.
        remove_container: ``remove_container(engine, container_id)``, thread-safe.
        delivered: ``delivered(job)``, called once the job's callback returned (or raised).
        ended: ``ended(job, result)`` with the final result, before the callback (the
            manager's statistics).
    """

    def __init__(self, index: int, done_queue: "queue.Queue[Optional[_Job]]",
                 remove_container: Callable[[str, str], None],
                 delivered: Callable[[_Job], None],
                 ended: Optional[Callable[[_Job, Result], None]] = None):
        super().__init__(name=f"backend-callback-{index}", daemon=True)
        self.done_queue = done_queue
        self.remove_container = remove_container
        self.delivered = delivered
        self.ended = ended

    def run(self) -> None:
        while True:
            job = self.done_queue.get()
            if job is None:
                return
            try:
                self.deliver(job)
            finally:
                self.delivered(job)

    def deliver(self, job: _Job) -> None:
        try:
            result = merge(job.local, job.result)
            if job.spec is not None:
                result.setdefault("run", make_run())
                complete(result, job.spec.task.protocol, bool(job.spec.task.outputs))
        except BaseException:  # noqa: BLE001 - a bad result must not lose the callback
            logger.exception("job %s: merging its result failed", job.job_id)
            result = {"result": "crash", "text": "internal error while merging the result",
                      "problems": {}, "run": make_run(reason="bad_output")}
        if job.container_id and job.engine:
            self.remove_container(job.engine, job.container_id)
        try:
            if self.ended is not None:
                self.ended(job, result)
        except Exception:  # noqa: BLE001 - counting must never cost a callback
            logger.exception("job %s: counting its result failed", job.job_id)
        try:
            job.callback(job.job_id, job.task, result)
        except BaseException:  # noqa: BLE001 - SystemExit included: logged, never silent
            logger.exception("the callback of job %s raised", job.job_id)
