"""The one place where Docker is called, and where its errors become our reasons.

Every other module talks to an engine through an :class:`Engine` (one per process per engine,
kept for the process's life). Its calls go over :mod:`backend._http`, a small keep-alive client
on the standard library: our children make a few calls per job, and docker-py over requests
would cost each of them CPU per call and some 15 MiB of memory. docker-py is used only to build
images (:func:`build_image`), a rare call that needs its build-context packing.

Errors become :class:`DockerFailure` carrying one of the reasons of SPEC §6 (``no_image``,
``engine_unreachable``, ``start_failed``), so that callers never inspect transport errors.
"""
from __future__ import annotations

import logging
import math
import os
import socket
from typing import Any, Dict, List, Optional, Tuple

from backend import _features
from backend._config import InstanceConfig
from backend._http import Client, HttpError, adopt, parse_frames

logger = logging.getLogger("backend")

#: Seconds any single Docker API call may take (streams excepted).
API_TIMEOUT = 30
#: The oldest Engine API version we speak; :func:`connect` negotiates the one spoken to each
#: engine, up to :data:`backend._features.MAX_API_VERSION` (see :mod:`backend._features`).
API_VERSION = _features.MIN_API_VERSION
#: Labels put on every container (SPEC §4).
LABEL_MANAGER, LABEL_JOB, LABEL_OWNER = "backend.manager", "backend.job", "backend.owner"
#: The container events a waiter follows: the one list of their names.
CONTAINER_EVENTS = ("die", "oom", "kill", "destroy")
#: Stream numbers of Docker's multiplexed attach and log frames.
STDOUT, STDERR = 1, 2
#: Fixed hardening ulimits (soft, hard); ``cpu`` comes from the job's limits.
_FIXED_ULIMITS = {"nofile": (1024, 1024), "fsize": (128 << 20, 128 << 20), "core": (0, 0)}
_TMPFS_SIZE = "64m"
#: Least size of each of the two files of a container's log on the engine, which is read when
#: a job's own output stream is not there (TLS engines, jobs recovered from a dead waiter).
_LOG_FILE_SIZE = 1 << 20


class DockerFailure(Exception):
    """A Docker call failed. ``reason`` is a SPEC §6 reason; ``retryable`` marks an engine
    that did not answer, so the job may go elsewhere; ``not_found``, an engine that answered
    that the container (or image) does not exist.

    From :func:`create_and_start`, ``container_id`` names the container if it was created,
    and ``maybe_created`` tells that the engine may have created one without its answer
    reaching us (the create was sent, and no answer came).
    """

    container_id: Optional[str] = None
    maybe_created: bool = False

    def __init__(self, reason: str, text: str, retryable: bool = False,
                 not_found: bool = False):
        super().__init__(text)
        self.reason = reason
        self.text = text
        self.retryable = retryable
        self.not_found = not_found


def is_not_found(error: BaseException) -> bool:
    """Whether ``error`` is the engine saying that the container (or image) does not exist."""
    if isinstance(error, DockerFailure):
        return error.not_found
    return isinstance(error, HttpError) and error.status == 404


class Engine:
    """The calls we make to one engine, over one :class:`~backend._http.Client`."""

    def __init__(self, instance: InstanceConfig, timeout: float = API_TIMEOUT):
        self.instance = instance
        self.http = Client(instance.server_url, instance.tls, timeout, API_VERSION)
        #: What the engine supports; :func:`connect` detects it (Docker's defaults until then).
        self.features = _features.Features(_features.EngineKind.DOCKER, "", API_VERSION)

    def close(self) -> None:
        self.http.close()

    def __enter__(self) -> "Engine":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _path(self, template: str, *arguments: str) -> str:
        return self.http.path(template, *arguments)

    def version(self) -> Dict[str, Any]:
        return self.http.json("GET", "/version")

    def ping(self) -> bool:
        """Whether the engine answers ``GET /_ping`` with ``OK`` (SHIM: helper B's contract)."""
        try:
            return self.http.call("GET", "/_ping").strip() == b"OK"
        except Exception as error:  # noqa: BLE001 - translated
            raise translate(error, self.instance) from error

    def image_exists(self, tag: str) -> bool:
        """Whether the engine has image ``tag`` (SHIM: helper B's contract)."""
        try:
            self.http.json("GET", self._path("/images/{}/json", tag))
        except Exception as error:  # noqa: BLE001 - translated
            if is_not_found(error):
                return False
            raise translate(error, self.instance) from error
        return True

    def create(self, options: Dict[str, Any], name: Optional[str] = None) -> str:
        params = {"name": name} if name else None
        return self.http.json("POST", self._path("/containers/create"), params,
                              body=options)["Id"]

    def attach(self, container_id: str, stdin: bool, output: bool):
        """A hijacked connection to the container: its ``sock`` writes to stdin, its
        ``reader`` gives the stdout and stderr frames; ``shutdown()`` detaches from any
        thread."""
        params = {"stream": 1}
        if stdin:
            params["stdin"] = 1
        if output:
            params.update(stdout=1, stderr=1)
        return self.http.upgrade(self._path("/containers/{}/attach", container_id), params)

    def attach_output(self, container_id: str):
        """Attaches to a running container's stdout and stderr.

        Returns:
            ``(stream, frames)``: ``stream.shutdown()`` detaches (from any thread);
            ``frames`` yields ``(stream_number, bytes)`` until the container ends.
        """
        stream = self.attach(container_id, stdin=False, output=True)
        return stream, parse_frames(stream.reader)

    def start(self, container_id: str) -> None:
        self.http.call("POST", self._path("/containers/{}/start", container_id))

    def kill(self, container_id: str) -> None:
        self.http.call("POST", self._path("/containers/{}/kill", container_id))

    def remove(self, container_id: str) -> None:
        self.http.call("DELETE", self._path("/containers/{}", container_id),
                       {"force": "true", "v": "true"})

    def inspect(self, container_id: str) -> Dict[str, Any]:
        return self.http.json("GET", self._path("/containers/{}/json", container_id))

    def containers(self, label: str, all_states: bool = True) -> List[Dict[str, Any]]:
        """Lists containers carrying ``label`` (``key`` or ``key=value``)."""
        return self.http.json("GET", self._path("/containers/json"),
                              {"all": "1" if all_states else "0",
                               "filters": {"label": [label]}})

    def logs(self, container_id: str) -> Tuple[bytes, bytes]:
        """A stopped container's whole stdout and stderr, from its log."""
        data = self.http.call("GET", self._path("/containers/{}/logs", container_id),
                              {"stdout": 1, "stderr": 1, "follow": 0, "tail": "all"})
        return demultiplex(data)

    def cpu_seconds(self, container_id: str) -> float:
        """CPU time used so far by all the container's processes (its cgroup)."""
        stats = self.http.json("GET", self._path("/containers/{}/stats", container_id),
                               {"stream": "false", "one-shot": "true"})
        return stats["cpu_stats"]["cpu_usage"]["total_usage"] / 1e9

    def events(self, since: float, filters: Dict[str, List[str]]):
        """The engine's event stream from ``since``: ``(stream, events)``, where ``events``
        yields decoded events and ``stream.shutdown()`` ends it from another thread."""
        stream = self.http.stream("GET", self._path("/events"),
                                  {"since": f"{since:.9f}", "filters": filters})
        return stream, stream.json_lines()


def connect(instance: InstanceConfig, timeout: float = API_TIMEOUT) -> Engine:
    """Returns an :class:`Engine` for ``instance``, after checking that it answers; TLS is
    verified with the given CA whatever the environment says (``REQUESTS_CA_BUNDLE``...).

    Negotiates the Engine API version (:func:`backend._features.negotiate`, from the
    unversioned ``/version``) and detects the engine's features (``/info``), kept as
    ``engine.features`` for :func:`container_options`; each fallback is logged once.

    Raises:
        DockerFailure: ``engine_unreachable`` when the engine does not answer;
            ``start_failed`` when it speaks no API version in our range (the text names both).
    """
    engine = None
    try:
        engine = Engine(instance, timeout)
        version = engine.version()
        engine.http.api_version = _features.negotiate(version, instance.name)
        info = engine.http.json("GET", engine.http.path("/info"))
        engine.features = _features.detect(version, info, engine.http.api_version,
                                           instance.name)
    except Exception as error:  # noqa: BLE001 - translated below
        if engine is not None:
            engine.close()
        if isinstance(error, _features.UnsupportedEngine):
            raise DockerFailure("start_failed", str(error)) from error
        raise translate(error, instance) from error
    _features.log_fallbacks(engine.features, instance.server_url)
    return engine


def translate(error: BaseException, instance: InstanceConfig, image: Optional[str] = None
              ) -> DockerFailure:
    """Turns a transport or engine error into a :class:`DockerFailure`."""
    if isinstance(error, DockerFailure):
        return error
    if isinstance(error, HttpError):
        if error.status == 404 and image and "image" in error.message.lower():
            return DockerFailure("no_image",
                                 f"image {image!r} was not found on host {instance.name}",
                                 not_found=True)
        return DockerFailure("start_failed", f"host {instance.name} refused the container: "
                                             f"{error.message}", not_found=error.status == 404)
    if type(error).__module__ == "ssl" or "SSL" in type(error).__name__:
        return DockerFailure("engine_unreachable",
                             f"TLS failure talking to host {instance.name} "
                             f"({instance.server_url}): {_short(error)}", retryable=True)
    if isinstance(error, (OSError, ValueError)):
        return DockerFailure("engine_unreachable",
                             f"host {instance.name} ({instance.server_url}) did not answer: "
                             f"{_short(error)}", retryable=True)
    return DockerFailure("start_failed", f"unexpected error on host {instance.name}: "
                                         f"{type(error).__name__}: {error}")


def _short(error: BaseException) -> str:
    return _short_text(str(error) or type(error).__name__)


def _size_in_bytes(megabytes: float) -> int:
    return int(megabytes) * 1024 * 1024


def container_options(spec, instance: InstanceConfig, manager_id: str, owner: str,
                      features: Optional[_features.Features] = None) -> Dict[str, Any]:
    """The body of ``POST /containers/create`` for a job: limits, hardening, labels.

    Like ``docker run -i``: stdin open for one attach (``StdinOnce``), so that the job sees
    end of file once its input is written. ``features`` (the engine's, see
    :mod:`backend._features`; Docker's defaults when None) choose the log driver, the init
    process and the rlimits an engine would otherwise add on its own.
    """
    if features is None:
        features = _features.Features(_features.EngineKind.DOCKER, "", API_VERSION)
    task = spec.task
    limits = task.limits
    cpu_seconds = max(1, math.ceil(limits["time"]))
    ulimits = [{"Name": "cpu", "Soft": cpu_seconds, "Hard": cpu_seconds + 1}]
    ulimits += [{"Name": name, "Soft": soft, "Hard": hard}
                for name, (soft, hard) in _FIXED_ULIMITS.items()]
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
        host_config["Tmpfs"] = {"/tmp": f"rw,nosuid,nodev,size={_TMPFS_SIZE}"}
    if instance.runtime:
        host_config["Runtime"] = instance.runtime
    return {
        "Image": instance.container_prefix + task.environment, "Cmd": task.command,
        "OpenStdin": True, "StdinOnce": True, "AttachStdin": True, "AttachStdout": True,
        "AttachStderr": True, "NetworkDisabled": not task.network,
        "Env": [f"{key}={value}" for key, value in (task.env or {}).items()],
        "User": task.user or "",
        "Labels": {LABEL_MANAGER: manager_id, LABEL_JOB: spec.job_id, LABEL_OWNER: owner},
        "HostConfig": host_config,
    }


def container_name(job_id: str, attempt: int) -> str:
    """The name of a job's container on its ``attempt``-th placement. Known before the
    container is created, it removes a container whose creation the engine did not confirm
    (the engine stopped while answering)."""
    return f"backend-{job_id}-{attempt}"


def create_and_start(engine: Engine, spec, manager_id: str, owner: str, name: str,
                     on_created=None):
    """Creates the job's container (named ``name``), attaches, starts it, writes its stdin
    and closes stdin.

    On a plain connection (a unix socket, or TCP without TLS) the attach takes stdout and
    stderr too, and stays open after stdin's end of file (a half-close): it is returned, for
    the waiter to read every byte the job prints, without reading the engine's log later.
    Over TLS, a half-close is not possible; the attach is for stdin only and is closed.

    Returns:
        ``(container_id, stream)``; ``stream`` is None, or the open attach (its ``sock`` is
        the connection; the caller passes it on and closes it).

    Raises:
        DockerFailure: the container could not be created or started. ``text`` says why;
            the container, if created, is left for the caller to remove.
    """
    instance = engine.instance
    options = container_options(spec, instance, manager_id, owner, engine.features)
    container_id = None
    keep_output = engine.http.plain
    try:
        container_id = engine.create(options, name)
        if on_created:
            on_created(container_id)
        stream = engine.attach(container_id, stdin=True, output=keep_output)
        try:
            engine.start(container_id)
            stream.sock.sendall(spec.stdin)
            if keep_output:
                stream.close_input()  # end of file for the job (created with StdinOnce)
        except BaseException:
            stream.close()
            raise
        if not keep_output:
            stream.close()  # end of file for the job
            stream = None
        return container_id, stream
    except BaseException as error:  # noqa: BLE001
        failure = translate(error, instance, options["Image"])
        failure.container_id = container_id
        failure.maybe_created = container_id is None and failure.retryable and not getattr(
            error, "before_request", False)
        raise failure from error


def adopt_stream(fd: int):
    """A job's attach passed to this process by its file descriptor (see
    :func:`create_and_start`): ``reader`` gives its frames, ``shutdown()`` ends it."""
    return adopt(fd)


def remove_containers(engine: Engine, containers: List[str]) -> Tuple[List[str], bool]:
    """Removes containers (forcefully), by id or name; one that does not exist counts as
    removed.

    Returns:
        ``(failed, reachable)``: what could not be removed, and whether the engine answered
        (when it does not, the rest is not tried and is in ``failed``).
    """
    failed = []
    for position, container in enumerate(containers):
        try:
            engine.remove(container)
        except Exception as error:  # noqa: BLE001 - reported to the caller as a retry
            if is_not_found(error):
                continue
            logger.debug("removing %s on %s failed: %s", container, engine.instance.name,
                         error)
            if translate(error, engine.instance).retryable:
                return failed + list(containers[position:]), False
            failed.append(container)
    return failed, True


def manager_containers(engine: Engine, manager_id: str) -> List[str]:
    """Ids of every container of the manager ``manager_id`` on the engine."""
    return [c["Id"] for c in engine.containers(f"{LABEL_MANAGER}={manager_id}")]


def dead_managers_containers(engine: Engine) -> List[str]:
    """Ids of the containers whose manager (label ``backend.owner``, ``hostname:pid``) was a
    process of this host that no longer runs: the orphan sweep's targets."""
    return [c["Id"] for c in engine.containers(LABEL_OWNER)
            if _owner_is_gone((c.get("Labels") or {}).get(LABEL_OWNER, ""))]


def _owner_is_gone(owner: str) -> bool:
    """Whether ``hostname:pid`` names a process of this host that no longer runs."""
    host, _, pid = owner.rpartition(":")
    if host != socket.gethostname() or not pid.isdigit():
        return False
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return False


def demultiplex(data: bytes) -> Tuple[bytes, bytes]:
    """Splits Docker's multiplexed stream (8-byte frame headers) into stdout and stderr."""
    out, err = bytearray(), bytearray()
    view = memoryview(data)
    position = 0
    while position + 8 <= len(data):
        size = int.from_bytes(view[position + 4:position + 8], "big")
        target = err if data[position] == STDERR else out
        target += view[position + 8:position + 8 + size]
        position += 8 + size
    return bytes(out), bytes(err)


def build_image(instance: InstanceConfig, folder: str, tag: str, timeout: float = 600
                ) -> Optional[str]:
    """Builds ``folder`` as image ``tag`` on ``instance``, with docker-py (which packs the
    build context). Returns ``None``, or the engine's error text."""
    import docker  # only builds pay for docker-py and requests

    tls = False
    if instance.tls:
        options = instance.tls
        client_cert = None
        if options.get("client_cert"):
            client_cert = (options["client_cert"], options["client_key"])
        tls = docker.tls.TLSConfig(client_cert=client_cert, ca_cert=options.get("ca_cert"),
                                   verify=options.get("verify", True))
    try:  # docker-py speaks the version connect() negotiates, as our own calls do
        with connect(instance) as engine:
            api_version = engine.http.api_version
    except DockerFailure as failure:
        return failure.text
    url = instance.server_url
    if tls and url.startswith("tcp://"):
        url = "https://" + url[len("tcp://"):]
    try:
        with docker.APIClient(base_url=url, tls=tls, timeout=timeout,
                              version=api_version) as client:
            client.trust_env = False  # never let *_CA_BUNDLE or proxies from the environment win
            for chunk in client.build(path=folder, tag=tag, rm=True, forcerm=True, decode=True):
                if "error" in chunk:
                    return chunk["error"].strip()
    except Exception as error:  # noqa: BLE001 - returned as the build's error
        text = getattr(error, "explanation", None) or str(error)
        return f"building {tag} on host {instance.name} failed: {_short_text(text)}"
    return None


def _short_text(text) -> str:
    if isinstance(text, bytes):
        text = text.decode("utf-8", "replace")
    return text if len(text) < 300 else text[:300] + "…"
