"""A batch front-end: submit many jobs, then collect their results (docs/quickstart.rst)."""
from __future__ import annotations

import threading
import time
from typing import Any, Dict, Iterable, Iterator, List, Mapping, Optional, Sequence, Set, Tuple

from backend.model import Result
from backend.job_manager import JobManager


class JobManagerBuffer:
    """Keeps the results of the jobs it submitted until they are fetched. Thread-safe.

    Args:
        job_manager: the manager to submit to; it stays owned by the caller.
    """

    def __init__(self, job_manager: JobManager):
        self.job_manager = job_manager
        self._condition = threading.Condition()
        self._waiting: Set[str] = set()
        self._results: Dict[str, Result] = {}
        self._fetched: Set[str] = set()

    def _callback(self, job_id: str, task: Any, result: Result) -> None:
        with self._condition:
            self._waiting.discard(job_id)
            self._results[job_id] = result
            self._condition.notify_all()

    def new_job(self, task: Any, inputdata: Any, *,
                files: Optional[Mapping[str, Any]] = None) -> str:
        """Submits a job (``files``: see :meth:`JobManager.new_job`). Returns its id."""
        with self._condition:
            # under the lock: a result that arrives at once finds the id registered
            job_id = self.job_manager.new_job(task, inputdata, self._callback, files=files)
            if job_id not in self._results:
                self._waiting.add(job_id)
        return job_id

    def new_jobs(self, jobs: Iterable[Sequence[Any]]) -> List[str]:
        """Submits ``(task, inputdata)`` or ``(task, inputdata, files)`` tuples. Returns
        their ids, in order.

        Raises:
            TypeError: an item is not such a tuple (the jobs before it are submitted).
        """
        ids = []
        for job in jobs:
            if not isinstance(job, (tuple, list)) or len(job) not in (2, 3):
                raise TypeError(f"new_jobs takes (task, inputdata) or (task, inputdata, files) "
                                f"tuples, not {job!r:.80}")
            ids.append(self.new_job(job[0], job[1], files=job[2] if len(job) == 3 else None))
        return ids

    def is_waiting(self, job_id: str) -> bool:
        """Whether the job is queued or running."""
        with self._condition:
            return job_id in self._waiting

    def is_done(self, job_id: str) -> bool:
        """Whether the job's result is ready (and not fetched yet)."""
        with self._condition:
            return job_id in self._results

    def get_result(self, job_id: str) -> Result:
        """Returns a finished job's result, once.

        Raises:
            KeyError: the job is unknown, still running, or its result was already fetched.
        """
        with self._condition:
            if job_id in self._results:
                self._fetched.add(job_id)
                return self._results.pop(job_id)
            if job_id in self._waiting:
                raise KeyError(f"job {job_id} has not ended yet")
            if job_id in self._fetched:
                raise KeyError(f"the result of job {job_id} was already fetched")
            raise KeyError(f"job {job_id} was not submitted through this buffer")

    def wait(self, ids: Optional[Iterable[str]] = None, timeout: Optional[float] = None
             ) -> bool:
        """Waits until the given jobs (all of this buffer's by default) have ended.

        Returns:
            ``True`` if they all ended, ``False`` on timeout.

        Raises:
            RuntimeError: it would wait, called from a callback of the same manager while
                every callback thread is in a callback (``callback_manager_count``).
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._condition:
            wanted = set(self._waiting) if ids is None else set(ids)
            if wanted & self._waiting:
                self.job_manager._check_can_wait("JobManagerBuffer.wait()")
            while wanted & self._waiting:
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    return False
                self._condition.wait(remaining)
            return True

    def as_completed(self, ids: Optional[Iterable[str]] = None,
                     timeout: Optional[float] = None) -> Iterator[Tuple[str, Result]]:
        """Yields ``(job_id, result)`` as jobs end, fetching each result.

        Args:
            ids: the jobs to wait for; by default every job of this buffer not fetched yet.
            timeout: seconds for the whole iteration.

        Raises:
            TimeoutError: some jobs had not ended when the timeout expired.
            RuntimeError: it would wait, called from a callback of the same manager while
                every callback thread is in a callback (``callback_manager_count``).
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._condition:
            remaining_ids = (set(self._waiting) | set(self._results)) if ids is None \
                else set(ids)
            unknown = remaining_ids - self._waiting - set(self._results)
            if unknown:
                raise KeyError(f"unknown or already fetched job(s): {', '.join(sorted(unknown))}")
        while remaining_ids:
            with self._condition:
                ready = [i for i in remaining_ids if i in self._results]
                if not ready:
                    self.job_manager._check_can_wait("JobManagerBuffer.as_completed()")
                while not ready:
                    left = None if deadline is None else deadline - time.monotonic()
                    if left is not None and left <= 0:
                        raise TimeoutError(f"{len(remaining_ids)} job(s) still running")
                    self._condition.wait(left)
                    ready = [i for i in remaining_ids if i in self._results]
                results = []
                for job_id in ready:
                    remaining_ids.discard(job_id)
                    self._fetched.add(job_id)
                    results.append((job_id, self._results.pop(job_id)))
            yield from results
