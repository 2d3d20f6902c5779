"""A job's container definition: the body of ``POST /containers/create`` and the names and
labels our containers carry (docs/configuration.rst).

Pure functions of plain data (a :class:`~backend.ipc._messages.JobSpec`, the engine's
:class:`~backend.model._config.InstanceConfig` and :class:`~backend.docker._features.Features`): no I/O, no
thread of its own. Part of the Docker layer: :mod:`backend.docker._client` calls it and re-exports
its names (the submitters create what it defines); the benchmarks call it for raw docker-py.
"""
from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any, Dict, List, Optional

from backend.docker import _features
from backend.model import InstanceConfig

if TYPE_CHECKING:
    from backend.model import JobSpec

#: Labels put on every container (docs/configuration.rst).
LABEL_MANAGER, LABEL_JOB, LABEL_OWNER = "backend.manager", "backend.job", "backend.owner"
#: Label of a warm container, which has no job yet (docs/performance.rst, warm starts).
LABEL_WARM = "backend.warm"
#: The gate of a warm container for a raw job or a job with files (docs/performance.rst):
#: ``/bin/sh`` reads one line (the gate's, written once the job's files are in), then becomes
#: the job's program. ``read`` in sh takes a pipe byte by byte: nothing of the job's own stdin is read.
GATE_SHELL = "/bin/sh"
GATE_SCRIPT = 'read -r _ && exec "$@"'
#: What opens the gate: written before the job's input (by the waiter, or over TLS by the
#: submitter that takes the warm container).
GATE_LINE = b"\n"
#: Fixed hardening ulimits (soft, hard); ``cpu`` comes from the job's limits.
_FIXED_ULIMITS = {"nofile": (1024, 1024), "core": (0, 0)}
#: Size of the ``/tmp`` of a read-only task, at most: its ``disk`` limit when that is less.
_TMPFS_SIZE = 64 * 1024 * 1024
#: The storage quota of a container (on an engine that offers one) is its ``disk`` limit and
#: this part of it more (at least :data:`QUOTA_MARGIN_MIN`): a job stopped by the quota has
#: written more than its limit, which the disk watch then sees and names (``disk``), and the
#: quota's count (blocks, directories) may exceed the watch's (bytes) a little.
QUOTA_MARGIN_RATIO = 1 / 16
QUOTA_MARGIN_MIN = 2 * 1024 * 1024
#: The least quota asked for: overlay on XFS refuses a very small one.
QUOTA_MIN = 8 * 1024 * 1024
#: Least size of each of the two files of a container's log on the engine, which is read when
#: a job's own output stream is not there (TLS engines, jobs recovered from a dead waiter).
_LOG_FILE_SIZE = 1 << 20


def _size_in_bytes(megabytes: float) -> int:
    return int(megabytes) * 1024 * 1024


def quota_size(disk: int) -> int:
    """The storage quota, in bytes, of a container whose ``disk`` limit is ``disk``."""
    return max(QUOTA_MIN, disk + max(QUOTA_MARGIN_MIN, int(disk * QUOTA_MARGIN_RATIO)))


def container_options(spec: JobSpec, config: InstanceConfig, manager_id: str, owner: str,
                      features: Optional[_features.Features] = None, warm: bool = False
                      ) -> Dict[str, Any]:
    """The body of ``POST /containers/create`` for a job: limits, hardening, labels (with
    :data:`LABEL_WARM` for a warm container, docs/performance.rst, warm starts).

    Like ``docker run -i``: stdin open for one attach (``StdinOnce``), so that the job sees
    end of file once its input is written. ``features`` (the engine's, see
    :mod:`backend.docker._features`; Docker's defaults when None) choose the log driver, the init
    process, the rlimits an engine would otherwise add on its own, and the storage quota
    (:func:`quota_size`) where the engine offers one (docs/security.rst).
    """
    if features is None:
        features = _features.Features(_features.EngineKind.DOCKER, "",
                                     _features.MIN_API_VERSION)
    task = spec.task
    limits = task.limits
    cpu_seconds = max(1, math.ceil(limits["time"]))
    ulimits = [{"Name": "cpu", "Soft": cpu_seconds, "Hard": cpu_seconds + 1}]
    file_size = int(limits["file_size"])
    ulimits += [{"Name": name, "Soft": soft, "Hard": hard} for name, (soft, hard) in
                dict(_FIXED_ULIMITS, fsize=(file_size, file_size)).items()]
    if features.nproc:
        ulimits.append({"Name": "nproc", "Soft": features.nproc[0], "Hard": features.nproc[1]})
    memory = _size_in_bytes(limits["memory"])
    log_options = {"max-size": str(max(int(limits["output"]), _LOG_FILE_SIZE)), "max-file": "2",
                   "compress": "false"}
    host_config: Dict[str, Any] = {
        "Memory": memory, "MemorySwap": memory, "PidsLimit": int(limits["processes"]),
        "NanoCpus": int(limits["cpus"] * 1e9), "CapDrop": ["ALL"],
        "SecurityOpt": ["no-new-privileges"], "Ulimits": ulimits, "Init": features.init,
        "NetworkMode": "default" if task.network else features.no_network_mode,
        # "local" where the engine has it, not "json-file": json-file splits long lines at
        # 16 KiB and re-encodes each piece as UTF-8, mangling a character cut in two; "local"
        # keeps the bytes as they are (_features.LOG_DRIVERS says what else is used)
        "LogConfig": {"Type": features.log_driver, "Config": {
            key: value for key, value in log_options.items() if key in features.log_options}},
    }
    if task.directory:
        host_config["Binds"] = [f"{task.directory}:/task:ro"]
    if task.read_only:
        host_config["ReadonlyRootfs"] = True
        tmp_size = min(_TMPFS_SIZE, int(limits["disk"]))
        host_config["Tmpfs"] = {"/tmp": f"rw,nosuid,nodev,size={tmp_size}"}
    if features.storage_quota:
        host_config["StorageOpt"] = {"size": str(quota_size(int(limits["disk"])))}
    if config.runtime:
        host_config["Runtime"] = config.runtime
    if task.environment is None:
        raise ValueError(f"job {spec.job_id} needs no container: it has no environment")
    workdir = spec.workdir  # on a read-only root, a volume: the engine writes files into it
    volumes: Dict[str, Any] = {"Volumes": {workdir: {}}} if workdir and task.read_only else {}
    return {**({"WorkingDir": workdir} if workdir else {}), **volumes,
        "Image": config.container_prefix + task.environment, "Cmd": task.command,
        "OpenStdin": True, "StdinOnce": True, "AttachStdin": True, "AttachStdout": True,
        "AttachStderr": True, "NetworkDisabled": not task.network,
        "Env": [f"{key}={value}" for key, value in (task.env or {}).items()],
        "User": task.user or "",
        "Labels": {LABEL_MANAGER: manager_id, LABEL_JOB: spec.job_id, LABEL_OWNER: owner,
                   **({LABEL_WARM: "1"} if warm else {})},
        "HostConfig": host_config,
    }


def gated(options: Dict[str, Any], entrypoint: Optional[List[str]],
          command: Optional[List[str]]) -> Dict[str, Any]:
    """``options`` (of :func:`container_options`) for a warm container whose program waits
    behind the gate (:data:`GATE_SCRIPT`): the program is the image's ``entrypoint`` followed
    by ``command`` (the task's, else the image's), as a cold start runs it.

    Raises:
        ValueError: there is no program to run (neither an entrypoint nor a command).
    """
    program = list(entrypoint or []) + list(command or [])
    if not program:
        raise ValueError("neither the task nor the image gives a command")
    return {**options, "Entrypoint": [GATE_SHELL, "-c", GATE_SCRIPT, "sh"], "Cmd": program}


def container_name(job_id: str, attempt: int) -> str:
    """The name of a job's container on its ``attempt``-th placement. Known before the
    container is created, it removes a container whose creation the engine did not confirm
    (the engine stopped while answering)."""
    return f"backend-{job_id}-{attempt}"
