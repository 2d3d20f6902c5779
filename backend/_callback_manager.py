"""Callback managers: threads of the JobManager's process that deliver results.

Each thread reads the *done queue* (a :class:`queue.Queue` of ended jobs, fed by the dispatcher
thread and, for jobs that need no container, by :meth:`JobManager.new_job`). For each job it
merges the container's part with the local check (docs/results.rst), asks the dispatcher to have a
submitter remove the job's container (a :class:`~backend.ipc._messages.RemoveContainer`, sent
before the callback, so that a slow callback never delays the removal), and calls the callback
in this process: a bound method, a closure or a lambda works, and nothing is pickled. A callback
that raises, even ``SystemExit``, is logged with its traceback; the thread goes on. The jobs it
reads are no longer changed by any other thread.

The threads of one manager share a :class:`CallbackThreads`, which knows which of them are
inside a callback: a blocking call on the same manager (``JobManagerSync.new_job``, a job
future's ``result()``, ``JobManagerBuffer.wait``) made from a callback when every callback
thread is inside one would wait for a result that no thread is left to deliver; it raises
``RuntimeError`` at once instead (:meth:`CallbackThreads.check`).
"""
from __future__ import annotations

import contextlib
import logging
import queue
import threading
from typing import Callable, Iterator, Optional, Set

from backend.model import Job, Result, complete, make_run, merge

logger = logging.getLogger("backend")


class CallbackThreads:
    """The callback threads of one manager that are inside a callback. Thread-safe.

    Args:
        count: the manager's ``callback_manager_count``.
    """

    def __init__(self, count: int):
        self.count = count
        self._lock = threading.Lock()
        self._inside: Set[int] = set()  # thread idents

    @contextlib.contextmanager
    def inside(self) -> Iterator[None]:
        """The calling callback thread is inside a callback for the ``with`` block."""
        ident = threading.get_ident()
        with self._lock:
            self._inside.add(ident)
        try:
            yield
        finally:
            with self._lock:
                self._inside.discard(ident)

    def check(self, call: str) -> None:
        """Raises when ``call``, a call that waits for a result of this manager, is made
        from one of its callbacks while every callback thread is inside a callback: none could
        deliver the result. (From any other thread, or with a callback thread free, it may
        wait.)

        Raises:
            RuntimeError: naming ``callback_manager_count``.
        """
        with self._lock:
            if threading.get_ident() not in self._inside or len(self._inside) < self.count:
                return
        raise RuntimeError(
            f"{call} was called from a callback of this JobManager while all its callback "
            f"threads (callback_manager_count={self.count}) are in callbacks: no thread is "
            f"left to deliver the result it would wait for. Pass a callback to "
            f"JobManager.new_job instead of waiting, or raise callback_manager_count.")


class _CallbackManager(threading.Thread):
    """One callback manager thread. ``None`` on the done queue stops it.

    Args:
        index: its number, in its thread name.
        done_queue: the ended jobs.
        remove_container: ``remove_container(engine, container_id)``, thread-safe.
        delivered: ``delivered(job)``, called once the job's callback returned (or raised).
        ended: ``ended(job, result)`` with the final result, before the callback (the
            manager's statistics).
        threads: the manager's record of its threads inside callbacks (one of its own if
            none is given).
    """

    def __init__(self, index: int, done_queue: "queue.Queue[Optional[Job]]",
                 remove_container: Callable[[str, str], None],
                 delivered: Callable[[Job], None],
                 ended: Optional[Callable[[Job, Result], None]] = None,
                 threads: Optional[CallbackThreads] = None):
        super().__init__(name=f"backend-callback-{index}", daemon=True)
        self.done_queue = done_queue
        self.remove_container = remove_container
        self.delivered = delivered
        self.ended = ended
        self.threads = threads or CallbackThreads(1)

    def run(self) -> None:
        while True:
            job = self.done_queue.get()
            if job is None:
                return
            try:
                self.deliver(job)
            finally:
                self.delivered(job)

    def deliver(self, job: Job) -> None:
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
            with self.threads.inside():
                job.callback(job.job_id, job.task, result)
        except BaseException:  # noqa: BLE001 - SystemExit included: logged, never silent
            logger.exception("the callback of job %s raised", job.job_id)
