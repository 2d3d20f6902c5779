"""docker-job-manager: run jobs in Docker containers over several engines, and get each result
back through a callback in your own process.

See :class:`JobManager` to start, :class:`JobManagerSync` for blocking calls and
:class:`JobManagerBuffer` for batches.

The public names are imported on first use (PEP 562), so that our child processes, which
import only the private modules they run, do not pay for the public API's imports.
"""
import importlib
import logging
from typing import TYPE_CHECKING, List

if TYPE_CHECKING:  # what __getattr__ returns, for type checkers (nothing is imported at run time)
    from backend.model import DEFAULT_LIMITS, LocalCheck, Task
    from backend.job_manager import JobManager
    from backend.job_manager_buffer import JobManagerBuffer
    from backend.job_manager_sync import JobManagerSync

__all__ = ["JobManager", "JobManagerSync", "JobManagerBuffer", "Task", "LocalCheck",
           "DEFAULT_LIMITS"]
__version__ = "0.1.0"

_HOMES = {"JobManager": "backend.job_manager", "JobManagerSync": "backend.job_manager_sync",
          "JobManagerBuffer": "backend.job_manager_buffer", "Task": "backend.model._task",
          "LocalCheck": "backend.model._task", "DEFAULT_LIMITS": "backend.model._task"}

logging.getLogger("backend").addHandler(logging.NullHandler())


def __getattr__(name: str) -> object:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module 'backend' has no attribute {name!r}")
    value = getattr(importlib.import_module(home), name)
    globals()[name] = value
    return value


def __dir__() -> List[str]:
    return sorted(set(globals()) | set(__all__))
