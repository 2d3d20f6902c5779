"""What every child process of a JobManager shares: exiting when the manager dies, and logging
to the manager's ``backend`` logger level; and how a process is looked up in ``/proc``."""
from __future__ import annotations

import logging
import os
import sys
import threading
import types
from typing import List, Optional

_START_LOCK = threading.Lock()


def proc_stat(pid: int, tid: Optional[int] = None) -> Optional[List[str]]:
    """The fields of ``/proc/<pid>/stat`` (of its thread ``tid``: ``task/<tid>/stat``) after
    the command name (``[0]`` the state, ``[1]`` the parent's pid, ``[11]`` and ``[12]`` user
    and system clock ticks), or ``None`` when there is no such process."""
    path = f"/proc/{pid}/stat" if tid is None else f"/proc/{pid}/task/{tid}/stat"
    try:
        with open(path, "rb") as stream:
            return stream.read().rsplit(b")", 1)[1].decode().split()
    except (OSError, IndexError):
        return None


def is_running(pid: int) -> bool:
    """Whether process ``pid`` runs (neither gone nor a zombie)."""
    fields = proc_stat(pid)
    return fields is not None and fields[0] not in ("Z", "X")


def exit_with_parent(lifeline) -> None:
    """Starts a daemon thread that ends this process as soon as the JobManager's process is
    gone, even when it was SIGKILLed.

    ``lifeline`` is the read end of a pipe whose only write end the JobManager's process
    holds: it reads end of file when that process dies. (``parent_process().sentinel`` would
    name the forkserver under ``forkserver``, whose death must not end us.)
    """

    def watch():
        try:
            while True:
                lifeline.recv()
        except (EOFError, OSError):
            os._exit(0)

    threading.Thread(target=watch, name="backend-parent-watch", daemon=True).start()


def configure_logging(level: int) -> None:
    """Children log at the manager's level to stderr (spawned children have no handlers)."""
    logger = logging.getLogger("backend")
    logger.setLevel(level)
    if not logging.getLogger().handlers and not any(
            not isinstance(h, logging.NullHandler) for h in logger.handlers):
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter(
            "%(asctime)s %(processName)s %(levelname)s %(name)s: %(message)s"))
        logger.addHandler(handler)


def start_process(process) -> None:
    """Starts ``process`` without making it re-import the user's ``__main__`` module.

    Under ``spawn`` and ``forkserver``, multiprocessing runs the parent's main script again in
    each child, so a script without an ``if __name__ == "__main__":`` guard would start a
    JobManager in every child. Our children run only code of this package on plain data, so
    they need nothing from ``__main__``: it is hidden while the child's start-up data is made.
    """
    with _START_LOCK:
        main = sys.modules.get("__main__")
        sys.modules["__main__"] = types.ModuleType("__main__")
        try:
            process.start()
        finally:
            if main is not None:
                sys.modules["__main__"] = main
