"""What one engine supports: the API version we speak to it and the engine differences our
container options depend on.

Owns the Engine API version range of this code (:data:`MIN_API_VERSION` ..
:data:`MAX_API_VERSION`), the negotiation of the version spoken (:func:`negotiate`), and the
detection, from the engine's ``/version`` and ``/info`` answers, of its :class:`Features`:
Docker or Podman, the log driver, whether an init process can be asked for, the
rlimits the engine would add on its own, and whether it offers a storage quota (overlay on XFS:
:func:`offers_quota`; an engine that refuses one anyway is told by :func:`refuses_quota`, and
:func:`without_quota` forgets it). Pure functions over those two answers: no I/O here.

Called by :func:`backend.docker._client.connect` (once per :class:`~backend.docker._client.Engine`, so once
per process per engine), whose :func:`~backend.docker._client.container_options` then reads
``engine.features``. Any thread: the only shared state is the set of fallbacks already logged,
guarded by a lock.
"""
from __future__ import annotations

import enum
import logging
import re
import threading
from dataclasses import dataclass, field, replace
from typing import Any, Dict, Mapping, Optional, Set, Tuple

logger = logging.getLogger("backend")

#: The oldest Engine API version we speak (Docker 20.10 and Podman 4's compatible API).
MIN_API_VERSION = "1.41"
#: The newest Engine API version this code was tested with (Docker 28.5).
MAX_API_VERSION = "1.51"

#: Log drivers by preference. ``local`` keeps the bytes as they are; ``json-file`` splits long
#: lines at 16 KiB and re-encodes each piece as UTF-8 (mangling a character cut in two);
#: Podman has neither ``local`` nor a Docker-like ``json-file``: its ``k8s-file`` (conmon's
#: log, lines of raw bytes marked partial or full) keeps the bytes, ``journald`` needs a
#: journal. The first one the engine lists is used.
LOG_DRIVERS = ("local", "k8s-file", "json-file")
#: Log options each driver takes (Podman refuses or ignores the others): size, files, compression.
_LOG_OPTIONS = {"local": ("max-size", "max-file", "compress"),
                "json-file": ("max-size", "max-file", "compress"),
                "k8s-file": ("max-size",)}
#: RLIMIT_NPROC given explicitly to Podman, which otherwise sets it to 1048576 for a rootful
#: container: above the hard limit of its own service (Podman lowers that to the kernel's
#: pid_max), which fails with ``setrlimit RLIMIT_NPROC: Operation not permitted`` wherever the
#: service lacks CAP_SYS_RESOURCE. 32768, the kernel's default pid_max, never binds before the
#: job's ``processes`` limit (a pids cgroup) does. Docker gives its own limits, inherited.
PODMAN_NPROC = 32768
#: The storage drivers whose containers can get a size quota (``HostConfig.StorageOpt``
#: ``size``): Docker's ``overlay2`` and Podman's ``overlay``, on an XFS data root mounted with
#: ``pquota`` (which ``/info`` does not tell: the first refusal does, see :func:`refuses_quota`).
QUOTA_DRIVERS = ("overlay2", "overlay")
#: Words of an engine's refusal of ``StorageOpt``: Docker and Podman both answer
#: ``--storage-opt is supported only for overlay over xfs with 'pquota' mount option``. Not
#: "quota" alone: a refusal of a CPU quota is the job's, not the storage's.
_QUOTA_REFUSALS = ("storage-opt", "storage opt", "storageopt", "storage size", "pquota",
                   "project quota")


class EngineKind(enum.Enum):
    """Which product serves the Engine API."""

    DOCKER = "Docker"
    PODMAN = "Podman"


class UnsupportedEngine(Exception):
    """The engine speaks no Engine API version in our range; the text names both ranges."""


@dataclass(frozen=True)
class Features:
    """What one engine supports, as our container options need it.

    Attributes:
        kind: Docker or Podman.
        version: the product's version (``28.5.2``, ``4.3.1``), for messages.
        api_version: the Engine API version we speak to it.
        log_driver: the log driver of our containers (see :data:`LOG_DRIVERS`).
        log_options: which of the log options (``max-size``...) that driver takes.
        init: whether ``HostConfig.Init`` is asked for (the engine has an init binary).
        nproc: an explicit RLIMIT_NPROC ``(soft, hard)`` to give, or None to give none.
        no_network_mode: the ``NetworkMode`` of a job without network: Docker's
            ``default`` with ``NetworkDisabled`` (a loopback only); Podman ignores
            ``NetworkDisabled`` (the container gets a bridge and eth0) and needs ``none``.
        reports_oom: whether the engine tells a container killed for its memory
            (``OOMKilled``, the ``oom`` event); see :func:`unreported_oom`.
        storage_quota: whether containers get a storage quota of their ``disk`` limit
            (``HostConfig.StorageOpt``): :func:`offers_quota`, until a refusal
            (:func:`without_quota`).
        fallbacks: one line per difference from Docker's defaults, as logged.
    """

    kind: EngineKind
    version: str
    api_version: str
    log_driver: str = "local"
    log_options: Tuple[str, ...] = _LOG_OPTIONS["local"]
    init: bool = True
    nproc: Optional[Tuple[int, int]] = None
    no_network_mode: str = "default"
    reports_oom: bool = True
    storage_quota: bool = False
    fallbacks: Tuple[str, ...] = field(default=())


def version_tuple(version: str) -> Tuple[int, ...]:
    """``"1.41"`` -> ``(1, 41)``; a part that is not a number (of at most 9 ASCII digits)
    counts as 0."""
    return tuple(int(part) if part.isascii() and part.isdigit() and len(part) <= 9 else 0
                 for part in version.split("."))


#: The form of an Engine API version we put into paths (an engine's word is not trusted).
_API_VERSION = re.compile(r"[0-9]{1,4}\.[0-9]{1,4}")


def negotiate(version: Mapping[str, Any], engine: str = "the engine") -> str:
    """The Engine API version to speak: the newest both the engine and we support.

    Args:
        version: the engine's answer to the unversioned ``GET /version``.
        engine: the engine's name, for the error.

    Raises:
        UnsupportedEngine: the two ranges do not meet.
    """
    newest = str(version.get("ApiVersion") or MIN_API_VERSION)
    oldest = str(version.get("MinAPIVersion") or newest)
    chosen = min(newest, MAX_API_VERSION, key=version_tuple)
    if not _API_VERSION.fullmatch(chosen) or \
            version_tuple(chosen) < max(version_tuple(oldest), version_tuple(MIN_API_VERSION)):
        raise UnsupportedEngine(
            f"engine {engine} speaks Engine API {oldest[:40]} to {newest[:40]}; this library "
            f"speaks {MIN_API_VERSION} to {MAX_API_VERSION}")
    return chosen


def kind_of(version: Mapping[str, Any]) -> EngineKind:
    """Docker or Podman, from ``/version``'s components (Podman names itself there)."""
    for component in version.get("Components") or ():
        if "podman" in str(component.get("Name", "")).lower():
            return EngineKind.PODMAN
    return EngineKind.DOCKER


def detect(version: Mapping[str, Any], info: Mapping[str, Any], api_version: str,
           engine: str = "the engine") -> Features:
    """The :class:`Features` of an engine from its ``/version`` and ``/info`` answers.

    Args:
        version: the answer to ``GET /version``.
        info: the answer to ``GET /v<api_version>/info``.
        api_version: the version :func:`negotiate` chose.
        engine: the engine's name, for the fallback lines.
    """
    kind = kind_of(version)
    product = f"{kind.value} {version.get('Version', '?')}"
    fallbacks = []
    drivers = list((info.get("Plugins") or {}).get("Log") or ())
    log_driver = next((d for d in LOG_DRIVERS if d in drivers), None)
    if log_driver is None:  # an engine that does not list its drivers: Docker's default
        log_driver = "json-file"
    if log_driver != "local":
        fallbacks.append(f"engine {engine} ({product}) has no 'local' log driver: using "
                         f"'{log_driver}'")
    # Docker names its init binary (docker-init); Podman names none but runs catatonit, a
    # package of its own (installed with it by scripts/engines.py), for Init
    init = bool(info.get("InitBinary")) or kind is EngineKind.PODMAN
    if not init:
        fallbacks.append(f"engine {engine} ({product}) has no init binary: containers run "
                         "without an init process")
    nproc = None
    if kind is EngineKind.PODMAN:
        nproc = (PODMAN_NPROC, PODMAN_NPROC)
        fallbacks.append(f"engine {engine} ({product}) sets its own process rlimit: "
                         f"RLIMIT_NPROC {PODMAN_NPROC} is given instead")
    # Podman 4.3 with Debian 12's conmon 2.1.6 never says OOMKilled, nor sends an oom event:
    # conmon writes its "oom" marker into the service's working directory, where Podman
    # does not look. Later Podmans say it; we cannot tell from /version which one works.
    reports_oom = kind is not EngineKind.PODMAN
    if not reports_oom:
        fallbacks.append(f"engine {engine} ({product}) does not report memory kills: a "
                         "container killed by SIGKILL that we did not kill counts as one")
    storage_quota = offers_quota(info)
    if not storage_quota:
        fallbacks.append(f"engine {engine} ({product}) offers no storage quota ("
                         f"{_storage_of(info)}): the disk limit is enforced by a watch of "
                         "each container's size")
    return Features(kind=kind, version=str(version.get("Version", "")),
                    api_version=api_version, log_driver=log_driver,
                    log_options=_LOG_OPTIONS.get(log_driver, ()), init=init, nproc=nproc,
                    no_network_mode="none" if kind is EngineKind.PODMAN else "default",
                    reports_oom=reports_oom, storage_quota=storage_quota,
                    fallbacks=tuple(fallbacks))


def _backing_filesystem(info: Mapping[str, Any]) -> str:
    """The ``Backing Filesystem`` of ``/info``'s ``DriverStatus`` (pairs), or ``""``."""
    status = info.get("DriverStatus")
    for pair in status if isinstance(status, list) else ():
        if isinstance(pair, list) and len(pair) == 2 and pair[0] == "Backing Filesystem":
            return str(pair[1])[:40]
    return ""


def _storage_of(info: Mapping[str, Any]) -> str:
    """``overlay2 on extfs``: the storage driver and its backing file system, for messages."""
    return f"{str(info.get('Driver') or '?')[:40]} on {_backing_filesystem(info) or '?'}"


def offers_quota(info: Mapping[str, Any]) -> bool:
    """Whether the engine's storage may give a container a size quota: an overlay driver
    (:data:`QUOTA_DRIVERS`) on XFS. Whether XFS is mounted with ``pquota`` is not in
    ``/info``: an engine without it refuses the first container that asks
    (:func:`refuses_quota`)."""
    return info.get("Driver") in QUOTA_DRIVERS and _backing_filesystem(info) == "xfs"


def refuses_quota(text: str) -> bool:
    """Whether an engine's refusal of a container (its error's ``text``) is about the
    storage quota it was asked for."""
    lowered = text.lower()
    return any(word in lowered for word in _QUOTA_REFUSALS)


def without_quota(features: Features, engine: str, server_url: str, text: str) -> Features:
    """``features`` with no storage quota, after the engine refused one (``text``, its
    answer): logged once per process and engine address; the watch bounds its jobs."""
    line = (f"engine {engine} ({features.kind.value} {features.version}) refused a storage "
            f"quota ({text[:200]}): the disk limit is enforced by a watch of each container's "
            "size")
    with _logged_lock:
        first = (server_url, line) not in _logged
        _logged.add((server_url, line))
    if first:
        logger.warning("%s", line)
    return replace(features, storage_quota=False)


#: Exit code of a container whose first process was killed by SIGKILL (128 + 9).
SIGKILL_EXIT = 137


def unreported_oom(features: Optional[Features], state: Mapping[str, Any],
                   killed_from_outside: bool) -> bool:
    """Whether a container that ended (``state``: its inspected ``State``) was killed for its
    memory on an engine that does not say so: SIGKILL's exit code, and no ``kill`` event
    (nobody killed it through the API). A SIGKILL sent to its process from the engine's host
    counts as a memory kill too; a memory kill of a child whose parent goes on is not seen.
    """
    return (features is not None and not features.reports_oom and not state.get("OOMKilled")
            and state.get("ExitCode") == SIGKILL_EXIT and not killed_from_outside)


_logged: Set[Tuple[str, str]] = set()
_logged_lock = threading.Lock()


def log_fallbacks(features: Features, server_url: str) -> None:
    """Logs each fallback of ``features`` once per process and engine address."""
    for line in features.fallbacks:
        with _logged_lock:
            if (server_url, line) in _logged:
                continue
            _logged.add((server_url, line))
        logger.info("%s", line)

