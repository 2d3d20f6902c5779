"""The task model: what a job runs, and what is decided without a container.

A :class:`Task` is the user's description of a job's environment; the JobManager reads it once,
when the job is submitted, into a plain, validated :class:`TaskSnapshot` that can cross a
process boundary. The task object itself never leaves the JobManager's process: it is handed
back, unchanged, to the callback. :func:`read_jobs_file` reads tasks from the JSON-lines file
of the command line's ``batch``.
"""
from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field
from typing import Any, Dict, List, Mapping, NamedTuple, Optional, Sequence, Tuple

from backend.model._files import check_paths, check_workdir
__all__ = ["Task", "LocalCheck", "DEFAULT_LIMITS", "merge_limits"]

#: Limits applied to every job, merged under ``task.limits`` (docs/configuration.rst).
DEFAULT_LIMITS: Dict[str, Optional[float]] = {
    "time": 30,            # CPU seconds
    "hard_time": None,     # wall seconds; None means 3 x time
    "memory": 100,         # MiB, swap off
    "output": 1024 * 1024,  # bytes of stdout + stderr
    "processes": 64,       # pids limit
    "cpus": 1.0,           # CPU share
    "file_size": 128 * 1024 * 1024,  # bytes: the largest file a job may write
    "disk": 1024 * 1024 * 1024,  # bytes a job may write in all (see docs/security.rst)
}

_INTEGER_LIMITS = {"memory", "output", "processes", "file_size", "disk"}
#: A task's protocols: a JSON line in, a JSON object out (docs/protocol.rst), or any program (docs/running-programs.rst).
PROTOCOLS = ("json", "raw")

STATUSES = ("success", "failed", "error", "timeout", "overflow", "crash", "killed")


def merge_limits(limits: Optional[Mapping[str, Any]]) -> Dict[str, float]:
    """Merges ``limits`` over :data:`DEFAULT_LIMITS` and validates the result.

    Raises:
        TypeError: ``limits`` is not a mapping.
        ValueError: an unknown key, or a value that is not a positive number.
    """
    if limits is None:
        limits = {}
    if not isinstance(limits, Mapping):
        raise TypeError(f"task.limits must be a dict, not {type(limits).__name__}")
    merged = dict(DEFAULT_LIMITS)
    for key, value in limits.items():
        if key not in DEFAULT_LIMITS:
            raise ValueError(f"unknown limit {key!r}; known limits: {', '.join(DEFAULT_LIMITS)}")
        if value is None and key == "hard_time":
            continue
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise ValueError(f"limit {key!r} must be a positive number, not {value!r}")
        if value <= 0:
            raise ValueError(f"limit {key!r} must be positive, not {value!r}")
        if key in _INTEGER_LIMITS and value != int(value):
            raise ValueError(f"limit {key!r} must be a whole number, not {value!r}")
        merged[key] = int(value) if key in _INTEGER_LIMITS else value
    # only hard_time may be None here (3 x time by default); "time" is a validated number
    time_limit = merged["time"] or 0
    result = {key: 3 * time_limit if value is None else value for key, value in merged.items()}
    if result["memory"] < 6:
        raise ValueError("limit 'memory' must be at least 6 MiB (the engine refuses less)")
    return result


@dataclass(frozen=True)
class LocalCheck:
    """What a task decides about a job without running a container.

    Attributes:
        result: ``"success"`` or ``"failed"``.
        need_container: whether the job still has to run in a container.
        text: feedback, merged with the container's text.
        problems: feedback per problem id, merged with the container's.
    """

    result: str = "success"
    need_container: bool = True
    text: str = ""
    problems: Dict[str, str] = field(default_factory=dict)

    def __post_init__(self):
        if self.result not in ("success", "failed"):
            raise ValueError(f"LocalCheck.result must be 'success' or 'failed', not {self.result!r}")
        if not isinstance(self.text, str):
            raise TypeError("LocalCheck.text must be a str")
        if not isinstance(self.problems, Mapping):
            raise TypeError("LocalCheck.problems must be a dict")


class Task:
    """A job's environment: image, command, task directory, limits, and options.

    Args:
        environment: image name without the instance's ``container_prefix``; ``None`` when the
            job needs no container.
        command: list of strings overriding the image's command.
        directory: host folder mounted read-only at ``/task``; a relative path resolves against
            the JobManager's ``tasks_directory``.
        limits: overrides of :data:`DEFAULT_LIMITS`.
        env: environment variables for the container (nothing of the host's is passed).
        network: give the container a network (off by default).
        read_only: read-only root file system, with a size-capped ``tmpfs`` at ``/tmp``.
        user: ``"uid:gid"`` to run as, instead of the image's user.
        protocol: ``"json"`` (docs/protocol.rst) or ``"raw"``: any program, with its own stdin,
            stdout, stderr and exit code (docs/running-programs.rst).
        workdir: the job's working directory, an absolute path in the container (default:
            the image's, or ``/job`` when the job has files).
        outputs: paths, relative to the working directory, of files or folders returned in
            ``result["files"]`` once the container has ended.

    Any object with the same attributes and a ``check_answer`` method works as a task.
    """

    def __init__(self, environment: Optional[str] = None, *, command: Optional[List[str]] = None,
                 directory: Optional[str] = None, limits: Optional[Mapping[str, Any]] = None,
                 env: Optional[Mapping[str, str]] = None, network: bool = False,
                 read_only: bool = False, user: Optional[str] = None, protocol: str = "json",
                 workdir: Optional[str] = None, outputs: Sequence[str] = ()):
        self.environment = environment
        self.command = command
        self.directory = directory
        self.limits = dict(limits or {})
        self.env = dict(env or {})
        self.network = network
        self.read_only = read_only
        self.user = user
        self.protocol = protocol
        self.workdir = workdir
        self.outputs = outputs
        merge_limits(self.limits)  # fail early on bad values
        _check_protocol(protocol)
        check_workdir(workdir)
        check_paths(outputs)

    def check_answer(self, inputdata: Any) -> LocalCheck:
        """Decides what needs no container. Override to grade parts locally.

        The default returns success, and needs a container when ``environment`` is set.
        """
        return LocalCheck("success", need_container=self.environment is not None)

    def __repr__(self):
        return f"Task({self.environment!r})"


@dataclass(frozen=True)
class TaskSnapshot:
    """The validated, picklable part of a task that the submitter needs."""

    environment: Optional[str]
    command: Optional[List[str]]
    directory: Optional[str]
    limits: Dict[str, float]
    env: Dict[str, str]
    network: bool
    read_only: bool
    user: Optional[str]
    protocol: str = "json"
    workdir: Optional[str] = None
    outputs: Tuple[str, ...] = ()


def _check_protocol(protocol: Any) -> str:
    if protocol not in PROTOCOLS:
        raise ValueError(f"task.protocol must be 'json' or 'raw', not {protocol!r}")
    return protocol


_FORBIDDEN_MOUNTS = ("/var/run/docker.sock", "/run/docker.sock")


def snapshot_task(task: Any, tasks_directory: Optional[str]) -> TaskSnapshot:
    """Reads and validates a task-like object.

    Raises:
        TypeError: ``task`` is not a task, or an attribute has the wrong type.
        ValueError: an attribute has a wrong value (limits, directory, user).
    """
    if not hasattr(task, "environment") or not callable(getattr(task, "check_answer", None)):
        raise TypeError(f"task must be a Task (an object with 'environment' and 'check_answer'), "
                        f"not {type(task).__name__}")
    environment = task.environment
    if environment is not None and (not isinstance(environment, str) or not environment):
        raise TypeError(f"task.environment must be a non-empty str or None, not {environment!r}")
    command = getattr(task, "command", None)
    if command is not None:
        if isinstance(command, str) or not all(isinstance(part, str) for part in command):
            raise TypeError("task.command must be a list of strings")
        command = list(command)
    env = getattr(task, "env", None) or {}
    if not isinstance(env, Mapping) or not all(isinstance(k, str) and isinstance(v, str)
                                               for k, v in env.items()):
        raise TypeError("task.env must be a dict of str to str")
    user = getattr(task, "user", None)
    if user is not None and (not isinstance(user, str) or not user):
        raise TypeError("task.user must be a 'uid:gid' string")
    for flag in ("network", "read_only"):
        if not isinstance(getattr(task, flag, False), bool):
            raise TypeError(f"task.{flag} must be a bool")
    directory = getattr(task, "directory", None)
    if directory is not None:
        directory = _resolve_directory(directory, tasks_directory)
    return TaskSnapshot(environment=environment, command=command, directory=directory,
                         limits=merge_limits(getattr(task, "limits", None)), env=dict(env),
                         network=getattr(task, "network", False),
                         read_only=getattr(task, "read_only", False), user=user,
                         protocol=_check_protocol(getattr(task, "protocol", "json")),
                         workdir=check_workdir(getattr(task, "workdir", None)),
                         outputs=check_paths(getattr(task, "outputs", ())))


def _resolve_directory(directory: Any, tasks_directory: Optional[str]) -> str:
    if not isinstance(directory, (str, os.PathLike)):
        raise TypeError("task.directory must be a path")
    path = os.fspath(directory)
    if not os.path.isabs(path):
        if tasks_directory is None:
            raise ValueError(f"task directory {path!r} is relative, and the JobManager has no "
                             f"tasks_directory")
        path = os.path.join(tasks_directory, path)
    path = os.path.realpath(path)
    if not os.path.isdir(path):
        raise ValueError(f"task directory {path!r} does not exist or is not a folder")
    if path == "/" or any(sock == path or sock.startswith(path.rstrip("/") + "/")
                          for sock in _FORBIDDEN_MOUNTS):
        raise ValueError(f"task directory {path!r} would expose the host or the Docker socket")
    return path


#: Keys of a job in a JSON-lines jobs file.
JOB_KEYS = {"image", "command", "input", "limits", "id", "protocol", "files", "outputs",
            "workdir"}


class JobLine(NamedTuple):
    """A job of a JSON-lines file: its line number, its ``id`` (the line number when not
    given), its task and its input."""

    line: int
    job_id: Any
    task: Task
    inputdata: Any
    files: Optional[Dict[str, Any]] = None




def read_jobs_file(path: str) -> List[JobLine]:
    """Every job of a JSON-lines file (the command line's ``batch`` input): one JSON object a
    line, keys :data:`JOB_KEYS`; a string ``command`` is run with ``sh -c``; blank lines
    count in the numbering.

    Raises:
        ValueError: the file cannot be read, holds no job, or a line is wrong; the message
            names the file and the line.
    """
    try:
        with open(path, encoding="utf-8") as stream:
            lines = stream.readlines()
    except FileNotFoundError:
        raise ValueError(f"input file {path} not found") from None
    except (OSError, UnicodeDecodeError) as error:
        raise ValueError(f"cannot read {path}: {error}") from None
    jobs: List[JobLine] = []
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        where = f"{path}, line {number}"
        try:
            job = json.loads(line)
        except ValueError as error:
            raise ValueError(f"{where}: not JSON: {error}") from None
        if not isinstance(job, dict):
            raise ValueError(f"{where}: a job must be a JSON object, not {type(job).__name__}")
        unknown = sorted(set(job) - JOB_KEYS)
        if unknown:
            raise ValueError(f"{where}: unknown key(s) {', '.join(unknown)}; known keys: "
                           f"{', '.join(sorted(JOB_KEYS))}")
        image = job.get("image")
        if not isinstance(image, str) or not image:
            raise ValueError(f"{where}: 'image' (an image name) is missing")
        command = job.get("command")
        if isinstance(command, str):
            command = ["sh", "-c", command]
        elif command is not None and not (isinstance(command, list)
                                          and all(isinstance(c, str) for c in command)):
            raise ValueError(f"{where}: 'command' must be a string or a list of strings")
        try:
            task = Task(image, command=command, limits=job.get("limits"),
                        protocol=job.get("protocol", "json"), workdir=job.get("workdir"),
                        outputs=job.get("outputs", ()))
        except (ValueError, TypeError) as error:
            raise ValueError(f"{where}: {error}") from None
        jobs.append(JobLine(number, job.get("id", number), task, job.get("input"),
                            job.get("files")))
    if not jobs:
        raise ValueError(f"{path} holds no job")
    return jobs
