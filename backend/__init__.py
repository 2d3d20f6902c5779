"""docker-job-manager: run jobs in Docker containers over several engines, and get each result
back through a callback in your own process.

See :class:`JobManager` to start, :class:`JobManagerSync` for blocking calls and
:class:`JobManagerBuffer` for batches.
"""
import logging

from backend._task import DEFAULT_LIMITS, LocalCheck, Task
from backend.job_manager import JobManager
from backend.job_manager_buffer import JobManagerBuffer
from backend.job_manager_sync import JobManagerSync

__all__ = ["JobManager", "JobManagerSync", "JobManagerBuffer", "Task", "LocalCheck",
           "DEFAULT_LIMITS"]
__version__ = "0.1.0"

logging.getLogger("backend").addHandler(logging.NullHandler())
