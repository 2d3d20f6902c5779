"""A blocking front-end: run one job and get its result (docs/quickstart.rst)."""
from __future__ import annotations

import threading
import time
from typing import Any, Dict, Mapping, Optional

from backend.model import Result
from backend.job_manager import JobManager

#: Seconds to wait for a killed job's result before giving up on it.
_KILL_GRACE = 30.0
#: Seconds between two looks at a pending interrupt while waiting.
_SLICE = 0.25


class JobManagerSync:
    """Runs jobs on a :class:`~backend.job_manager.JobManager` one call at a time.

    Args:
        job_manager: the manager to submit to; it stays owned by the caller.
    """

    def __init__(self, job_manager: JobManager):
        self.job_manager = job_manager

    def new_job(self, task: Any, inputdata: Any, timeout: Optional[float] = None, *,
                files: Optional[Mapping[str, Any]] = None) -> Result:
        """Runs a job and returns its result.

        Args:
            timeout: seconds to wait; ``None`` waits until the job ends (its own limits
                bound it).
            files: written into the job's working directory before it starts (docs/running-programs.rst).

        Raises:
            TimeoutError: the job did not end in time; it is killed.
            KeyboardInterrupt: the job is killed, then the interrupt propagates.
            RuntimeError: called from a callback of the same manager while every callback
                thread is in a callback (``callback_manager_count``): nothing could deliver
                the result. The job is not submitted.
        """
        self.job_manager._check_can_wait("JobManagerSync.new_job()")
        done = threading.Event()
        box: Dict[str, Result] = {}

        def callback(job_id: str, task: Any, result: Result) -> None:
            box["result"] = result
            done.set()

        job_id = self.job_manager.new_job(task, inputdata, callback, files=files)
        deadline = None if timeout is None else time.monotonic() + timeout
        try:
            # short waits: a KeyboardInterrupt delivered to another thread is seen promptly
            while not done.wait(_SLICE if deadline is None
                                else max(0.0, min(_SLICE, deadline - time.monotonic()))):
                if deadline is not None and time.monotonic() >= deadline:
                    self.job_manager.kill_job(job_id)
                    done.wait(_KILL_GRACE)
                    raise TimeoutError(f"job {job_id} did not end within {timeout} s; it was "
                                       f"killed")
        except KeyboardInterrupt:
            self.job_manager.kill_job(job_id)
            raise
        return box["result"]
