"""The one place where Docker is called, and where its errors become our reasons.

Every other module talks to an engine through these functions. They translate docker-py and
requests errors into :class:`DockerFailure` carrying one of the reasons of SPEC §6
(``no_image``, ``engine_unreachable``, ``start_failed``), so that callers never inspect
exception types of third-party libraries.
"""
from __future__ import annotations

import logging
import math
import socket
from typing import Any, Dict, List, Optional, Tuple

import docker
import docker.errors
import requests.exceptions
from docker.types import LogConfig, Ulimit

from backend._config import InstanceConfig

logger = logging.getLogger("backend")

#: Seconds any single Docker API call may take (streams excepted).
API_TIMEOUT = 30
#: Labels put on every container (SPEC §4).
LABEL_MANAGER, LABEL_JOB, LABEL_OWNER = "backend.manager", "backend.job", "backend.owner"
#: Fixed hardening ulimits (soft, hard); ``cpu`` comes from the job's limits.
_FIXED_ULIMITS = {"nofile": (1024, 1024), "fsize": (128 << 20, 128 << 20), "core": (0, 0)}
_TMPFS_SIZE = "64m"
#: Least size of each of the two files of a container's log on the engine: a job that prints
#: past its limit faster than the waiter attaches still has its head of output kept, up to this.
_LOG_FILE_SIZE = 1 << 20


class DockerFailure(Exception):
    """A Docker call failed. ``reason`` is a SPEC §6 reason; ``retryable`` marks an engine
    that did not answer, so the job may go elsewhere."""

    def __init__(self, reason: str, text: str, retryable: bool = False):
        super().__init__(text)
        self.reason = reason
        self.text = text
        self.retryable = retryable


def connect(instance: InstanceConfig, timeout: float = API_TIMEOUT, pool_size: int = 10
            ) -> docker.APIClient:
    """Returns a client for ``instance``; TLS verified with the given CA whatever the
    environment says (``REQUESTS_CA_BUNDLE`` and ``CURL_CA_BUNDLE`` are ignored).

    Raises:
        DockerFailure: ``engine_unreachable`` when the engine does not answer.
    """
    tls = False
    if instance.tls:
        options = instance.tls
        client_cert = None
        if options.get("client_cert"):
            client_cert = (options["client_cert"], options["client_key"])
        tls = docker.tls.TLSConfig(client_cert=client_cert, ca_cert=options.get("ca_cert"),
                                   verify=options.get("verify", True))
    url = instance.server_url
    if tls and url.startswith("tcp://"):
        url = "https://" + url[len("tcp://"):]
    try:
        client = docker.APIClient(base_url=url, tls=tls, timeout=timeout, version="1.41",
                                  max_pool_size=pool_size)
        client.trust_env = False  # never let *_CA_BUNDLE or proxies from the environment win
        version = client.version(api_version=False)
    except Exception as error:  # noqa: BLE001 - translated below
        raise translate(error, instance) from error
    api = version.get("ApiVersion", "1.41")
    if _version_tuple(api) < (1, 41):
        client._version = api  # older engine: speak its version
    return client


def _version_tuple(version: str) -> Tuple[int, ...]:
    return tuple(int(part) for part in version.split("."))


def translate(error: BaseException, instance: InstanceConfig, image: Optional[str] = None
              ) -> DockerFailure:
    """Turns a docker-py or requests error into a :class:`DockerFailure`."""
    if isinstance(error, DockerFailure):
        return error
    if isinstance(error, docker.errors.ImageNotFound) or (
            isinstance(error, docker.errors.NotFound) and image and "image" in str(error).lower()):
        return DockerFailure("no_image", f"image {image!r} was not found on host {instance.name}")
    if isinstance(error, requests.exceptions.SSLError):
        return DockerFailure("engine_unreachable",
                             f"TLS failure talking to host {instance.name} "
                             f"({instance.server_url}): {_short(error)}", retryable=True)
    if isinstance(error, (requests.exceptions.ConnectionError, requests.exceptions.Timeout,
                          ConnectionError, socket.timeout, TimeoutError, FileNotFoundError,
                          docker.errors.DockerException)) \
            and not isinstance(error, docker.errors.APIError):
        return DockerFailure("engine_unreachable",
                             f"host {instance.name} ({instance.server_url}) did not answer: "
                             f"{_short(error)}", retryable=True)
    if isinstance(error, docker.errors.APIError):
        explanation = error.explanation or str(error)
        if isinstance(explanation, bytes):
            explanation = explanation.decode("utf-8", "replace")
        return DockerFailure("start_failed", f"host {instance.name} refused the container: "
                                             f"{explanation}")
    return DockerFailure("start_failed", f"unexpected error on host {instance.name}: "
                                         f"{type(error).__name__}: {error}")


def _short(error: BaseException) -> str:
    text = str(error)
    return text if len(text) < 300 else text[:300] + "…"


def container_options(spec, instance: InstanceConfig, manager_id: str, owner: str
                      ) -> Dict[str, Any]:
    """Keyword arguments of ``create_container`` for a job: limits, hardening, labels."""
    task = spec.task
    limits = task.limits
    cpu_seconds = max(1, math.ceil(limits["time"]))
    ulimits = [Ulimit(name="cpu", soft=cpu_seconds, hard=cpu_seconds + 1)]
    ulimits += [Ulimit(name=name, soft=soft, hard=hard)
                for name, (soft, hard) in _FIXED_ULIMITS.items()]
    memory = f"{int(limits['memory'])}m"
    host_config: Dict[str, Any] = dict(
        mem_limit=memory, memswap_limit=memory, pids_limit=int(limits["processes"]),
        nano_cpus=int(limits["cpus"] * 1e9), cap_drop=["ALL"],
        security_opt=["no-new-privileges"], ulimits=ulimits, init=True,
        # "local", not "json-file": json-file splits long lines at 16 KiB and re-encodes each
        # piece as UTF-8, mangling a character cut in two; "local" keeps the bytes as they are
        log_config=LogConfig(type="local", config={
            "max-size": str(max(int(limits["output"]), _LOG_FILE_SIZE)), "max-file": "2",
            "compress": "false"}),
    )
    if task.directory:
        host_config["binds"] = {task.directory: {"bind": "/task", "mode": "ro"}}
    if task.read_only:
        host_config["read_only"] = True
        host_config["tmpfs"] = {"/tmp": f"rw,nosuid,nodev,size={_TMPFS_SIZE}"}
    if instance.runtime:
        host_config["runtime"] = instance.runtime
    return dict(
        image=instance.container_prefix + task.environment, command=task.command,
        stdin_open=True, network_disabled=not task.network, environment=task.env,
        user=task.user or "", labels={LABEL_MANAGER: manager_id, LABEL_JOB: spec.job_id,
                                      LABEL_OWNER: owner},
        host_config=host_config,
    )


def create_and_start(client: docker.APIClient, instance: InstanceConfig, spec, manager_id: str,
                     owner: str, on_created=None) -> str:
    """Creates the job's container, starts it, writes its stdin line and closes stdin.

    Returns:
        The container id.

    Raises:
        DockerFailure: the container could not be created or started. ``text`` says why;
            the container, if created, is left for the caller to remove.
    """
    options = container_options(spec, instance, manager_id, owner)
    options["host_config"] = client.create_host_config(**options["host_config"])
    container_id = None
    try:
        container_id = client.create_container(**options)["Id"]
        if on_created:
            on_created(container_id)
        stdin = client.attach_socket(container_id, params={"stdin": 1, "stream": 1})
        raw = getattr(stdin, "_sock", stdin)  # a SocketIO around the socket, or the socket
        try:
            client.start(container_id)
            raw.sendall(spec.stdin)
        finally:
            raw.close()  # end of file for the job (the container is created with StdinOnce)
            stdin.close()
        return container_id
    except BaseException as error:  # noqa: BLE001
        failure = translate(error, instance, options["image"])
        failure.container_id = container_id
        raise failure from error


def remove_containers(client: docker.APIClient, instance: InstanceConfig,
                      container_ids: List[str]) -> List[str]:
    """Removes containers (forcefully). Returns the ids that could not be removed."""
    failed = []
    for container_id in container_ids:
        try:
            client.remove_container(container_id, force=True, v=True)
        except docker.errors.NotFound:
            pass
        except Exception as error:  # noqa: BLE001 - reported to the caller as a retry
            logger.debug("removing %s on %s failed: %s", container_id, instance.name, error)
            failed.append(container_id)
    return failed


def find_containers(client: docker.APIClient, label: str, all_states: bool = True
                    ) -> List[Dict[str, Any]]:
    """Lists containers carrying ``label`` (``key`` or ``key=value``)."""
    return client.containers(all=all_states, filters={"label": label})


def read_output(client: docker.APIClient, container_id: str) -> Tuple[bytes, bytes]:
    """Reads a stopped container's whole stdout and stderr from its log."""
    response = client._get(client._url("/containers/{0}/logs", container_id),
                           params={"stdout": 1, "stderr": 1, "follow": 0, "tail": "all"})
    client._raise_for_status(response)
    return demultiplex(response.content)


def attach_output(client: docker.APIClient, container_id: str):
    """Attaches to a running container's stdout and stderr.

    Returns:
        ``(response, frames)``: close ``response`` to detach; ``frames`` yields
        ``(stream, bytes)`` with stream 1 (stdout) or 2 (stderr) until the container ends.

    The frames are read through the response's buffered reader, not the raw socket as
    docker-py does: bytes that arrived with the HTTP headers would be skipped otherwise, and
    the stream would lose its framing (an unread attach then blocks the container).
    """
    response = client._post(client._url("/containers/{0}/attach", container_id),
                            headers={"Connection": "Upgrade", "Upgrade": "tcp"}, stream=True,
                            params={"stdout": 1, "stderr": 1, "stream": 1}, timeout=None)
    client._raise_for_status(response)
    reader = response.raw._fp.fp  # the buffered reader over the socket

    def frames():
        while True:
            header = reader.read(8)
            if len(header) < 8:
                return
            size = int.from_bytes(header[4:8], "big")
            payload = reader.read(size)
            if len(payload) < size:
                return
            yield header[0], payload

    return response, frames()


def detach(response) -> None:
    """Ends an :func:`attach_output` stream from another thread: shuts the socket down, so
    that the reader sees end of file (closing the response would wait for the reader)."""
    try:
        response.raw._fp.fp.raw._sock.shutdown(socket.SHUT_RDWR)
    except Exception:  # noqa: BLE001 - already closed
        pass


def demultiplex(data: bytes) -> Tuple[bytes, bytes]:
    """Splits Docker's multiplexed stream (8-byte frame headers) into stdout and stderr."""
    out, err = bytearray(), bytearray()
    view = memoryview(data)
    position = 0
    while position + 8 <= len(data):
        size = int.from_bytes(view[position + 4:position + 8], "big")
        target = err if data[position] == 2 else out
        target += view[position + 8:position + 8 + size]
        position += 8 + size
    return bytes(out), bytes(err)


def build_image(client: docker.APIClient, instance: InstanceConfig, folder: str, tag: str
                ) -> Optional[str]:
    """Builds ``folder`` as image ``tag``. Returns ``None``, or the engine's error text."""
    try:
        for chunk in client.build(path=folder, tag=tag, rm=True, forcerm=True, decode=True):
            if "error" in chunk:
                return chunk["error"].strip()
    except Exception as error:  # noqa: BLE001 - returned as the build's error
        return translate(error, instance).text
    return None
