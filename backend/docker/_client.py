"""The one place where Docker is called, and where its errors become our reasons.

Every other module talks to an engine through an :class:`Engine` (one per process per engine,
kept for the process's life), and through the functions below; none imports
:mod:`backend.docker._http`, the small keep-alive client on the standard library that carries the
calls (our children make a few calls per job, and docker-py over requests would cost each of
them CPU per call and some 15 MiB of memory). docker-py is not used: image builds
(:func:`build_image`) go over the same client, with a context packed by :mod:`tarfile`, so
that TLS settings become an SSL context in one place.

Every error of a call, of a stream or of a listing becomes a :class:`DockerFailure` carrying
one of the reasons of docs/results.rst (``no_image``, ``engine_unreachable``, ``start_failed``):
callers catch that one type and never see a transport error. Streams (a container's attach,
the event stream) are :class:`OutputStream` and :class:`EventStream`; their iteration raises
only :class:`DockerFailure` too.

Called by the submitters (create, start, remove), the waiters (watch, collect, kill), the
command line and the JobManager's start (image builds); any thread may use an :class:`Engine`.
"""
from __future__ import annotations

import contextlib
import io
import logging
import math
import os
import socket
import tarfile
from typing import TYPE_CHECKING, Any, Callable, Dict, Iterator, List, Optional, Tuple

from backend.docker import _definition as _container, _features, _input
from backend.model import InstanceConfig, upload
# the container definition (pure): see _definition (re-exported here)
from backend.docker._definition import (LABEL_JOB, LABEL_MANAGER, LABEL_OWNER, container_name,
                                        container_options)
# the failure type, its translation and the streams: see _streams (re-exported here)
from backend.docker._streams import (CALL_ERRORS, STDERR, STDOUT, ArchiveStream, DockerFailure,
                                     EventStream, OutputStream, demultiplex, is_not_found,
                                     short_text, stream_failure, translate)
from backend.docker._http import Client, adopt, sent_nothing

if TYPE_CHECKING:
    from backend.model import JobSpec

logger = logging.getLogger("backend")

#: Seconds any single Docker API call may take (streams excepted).
API_TIMEOUT = 30
#: Seconds the event stream may stay silent before it is subscribed again (from ``since``):
#: an engine that stopped answering mid-stream never holds its waiter's event thread.
EVENTS_IDLE_TIMEOUT = 60.0
#: The oldest Engine API version we speak; :func:`connect` negotiates the one spoken to each
#: engine, up to :data:`backend.docker._features.MAX_API_VERSION` (see :mod:`backend.docker._features`).
API_VERSION = _features.MIN_API_VERSION
#: The container events a waiter follows: the one list of their names.
CONTAINER_EVENTS = ("die", "oom", "kill", "destroy")


class Engine:
    """The calls we make to one engine, over one keep-alive client. Every method raises
    only :class:`DockerFailure`."""

    def __init__(self, config: InstanceConfig, timeout: float = API_TIMEOUT):
        self.config = config
        self.http = Client(config.server_url, config.tls, timeout, API_VERSION)
        #: What the engine supports; :func:`connect` detects it (Docker's defaults until then).
        self.features = _features.Features(_features.EngineKind.DOCKER, "", API_VERSION)
        #: per image: its entrypoint and command, and whether it has the gate's shell (for
        #: warm containers behind a gate); kept for the Engine's life
        self._image_commands: Dict[str, Tuple[List[str], List[str]]] = {}
        self._has_shell: Dict[str, bool] = {}

    def close(self) -> None:
        self.http.close()

    def __enter__(self) -> "Engine":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @contextlib.contextmanager
    def _translated(self, doing: Optional[str], image: Optional[str] = None
                    ) -> Iterator[None]:
        """Turns what a call raises into a :class:`DockerFailure` (``doing`` names the call
        in its text; None: a job's create or start, see :func:`translate`)."""
        try:
            yield
        except CALL_ERRORS as error:
            raise translate(error, self.config, image, doing) from error

    def _path(self, template: str, *arguments: str) -> str:
        return self.http.path(template, *arguments)

    def version(self) -> Dict[str, Any]:
        """The engine's ``/version`` (unversioned path: it answers whatever we speak)."""
        with self._translated("a version query"):
            return _object(self.http.json("GET", "/version"), "/version")

    def info(self) -> Dict[str, Any]:
        """The engine's ``/info``: its log drivers, init binary, runtimes..."""
        with self._translated("an info query"):
            return _object(self.http.json("GET", self._path("/info")), "/info")

    def ping(self) -> None:
        """Returns when the engine answers."""
        with self._translated("a ping"):
            self.http.call("GET", "/_ping")

    def image_exists(self, tag: str) -> bool:
        try:
            with self._translated(f"a query of image {tag}"):
                self.http.call("GET", self._path("/images/{}/json", tag))
        except DockerFailure as failure:
            if failure.not_found:
                return False
            raise
        return True

    def image_command(self, tag: str) -> Tuple[List[str], List[str]]:
        """The image's entrypoint and command (its ``Config``), asked once per image."""
        known = self._image_commands.get(tag)
        if known is None:
            with self._translated(f"a query of image {tag}", tag):
                config = (self.http.json("GET", self._path("/images/{}/json", tag)) or {}
                          ).get("Config") or {}
            entrypoint, command = config.get("Entrypoint") or [], config.get("Cmd") or []
            known = self._image_commands[tag] = (
                [str(word) for word in entrypoint] if isinstance(entrypoint, list) else [],
                [str(word) for word in command] if isinstance(command, list) else [])
        return known

    def has_shell(self, tag: str, container_id: str) -> bool:
        """Whether the image (seen in its created container) has the gate's ``/bin/sh``;
        asked once per image (a stat through the archive API: its headers only)."""
        known = self._has_shell.get(tag)
        if known is None:
            try:
                self.get_archive(container_id, _container.GATE_SHELL).close()
                known = True
            except DockerFailure as failure:
                if not failure.not_found:
                    raise
                known = False
            self._has_shell[tag] = known
        return known

    def create(self, options: Dict[str, Any], name: Optional[str] = None) -> str:
        params = {"name": name} if name else None
        with self._translated(None, options.get("Image")):
            answer = _object(self.http.json("POST", self._path("/containers/create"), params,
                                            body=options), "a create")
            container_id = answer.get("Id")
            if not isinstance(container_id, str) or not container_id:
                raise TypeError(f"a create answered an Id of {short_text(repr(container_id))}")
            return container_id

    def attach(self, container_id: str, stdin: bool, output: bool) -> OutputStream:
        """A hijacked connection to the container (see :class:`OutputStream`)."""
        params = {"stream": 1}
        if stdin:
            params["stdin"] = 1
        if output:
            params.update(stdout=1, stderr=1)
        with self._translated(f"an attach to {container_id}"):
            stream = self.http.upgrade(self._path("/containers/{}/attach", container_id),
                                       params)
        return OutputStream(stream, f"the output stream of {container_id} on "
                                    f"{self.config.name}")

    def attach_output(self, container_id: str) -> OutputStream:
        """Attaches to a running container's stdout and stderr; its frames come until the
        container ends."""
        return self.attach(container_id, stdin=False, output=True)

    def start(self, container_id: str) -> None:
        with self._translated(None):
            self.http.call("POST", self._path("/containers/{}/start", container_id))

    def put_archive(self, container_id: str, path: str, data: bytes) -> None:
        with self._translated(f"the writing of files into {container_id}"):
            self.http.call("PUT", self._path("/containers/{}/archive", container_id),
                           {"path": path}, data=data, content_type="application/x-tar")

    def get_archive(self, container_id: str, path: str) -> ArchiveStream:
        with self._translated(f"the reading of {path} in {container_id}"):
            stream = self.http.stream("GET", self._path("/containers/{}/archive", container_id),
                                      {"path": path}, read_timeout=self.http.timeout)
        return ArchiveStream(stream, f"the archive of {path} in {container_id}")

    def kill(self, container_id: str) -> None:
        with self._translated(f"the kill of {container_id}"):
            self.http.call("POST", self._path("/containers/{}/kill", container_id))

    def remove(self, container_id: str) -> None:
        with self._translated(f"the removal of {container_id}"):
            self.http.call("DELETE", self._path("/containers/{}", container_id),
                           {"force": "true", "v": "true"})

    def inspect(self, container_id: str) -> Dict[str, Any]:
        """The container's inspect: a dict whose ``State`` and ``Config`` are dicts, and
        whose ``State["ExitCode"]``, if there, is an int (else a :class:`DockerFailure`)."""
        with self._translated(f"an inspect of {container_id}"):
            answer = _object(self.http.json("GET", self._path("/containers/{}/json",
                                                              container_id)), "an inspect")
            for key in ("State", "Config"):
                _object(answer.get(key), f"an inspect's {key}")
            code = answer["State"].get("ExitCode")
            if code is not None and (type(code) is not int):
                raise TypeError(f"an inspect's exit code {short_text(repr(code))}")
            return answer

    def disk_used(self, container_id: str) -> int:
        """Bytes in the container's writable layer (``SizeRw``): the engine walks the layer's
        files to count them, so a call costs the engine CPU in proportion to what the job
        wrote (see docs/security.rst)."""
        with self._translated(f"a size inspect of {container_id}"):
            answer = self.http.json("GET", self._path("/containers/{}/json", container_id),
                                    {"size": "1"})
        size = answer.get("SizeRw") if isinstance(answer, dict) else None
        if isinstance(size, bool) or not isinstance(size, int):
            return 0
        return max(0, size)

    def containers(self, label: str, all_states: bool = True) -> List[Dict[str, Any]]:
        """Lists containers carrying ``label`` (``key`` or ``key=value``): dicts, each with
        a str ``Id`` and a dict (or no) ``Labels`` (else a :class:`DockerFailure`)."""
        with self._translated("a container listing"):
            listed = self.http.json("GET", self._path("/containers/json"),
                                    {"all": "1" if all_states else "0",
                                     "filters": {"label": [label]}})
            if not isinstance(listed, list):
                raise TypeError("a container listing that is not a list")
            for container in listed:
                if not isinstance(_object(container, "a listed container").get("Id"), str) \
                        or not isinstance(container.get("Labels") or {}, dict):
                    raise TypeError(f"a listed container {short_text(repr(container))}")
            return listed

    def logs(self, container_id: str) -> Tuple[bytes, bytes]:
        """A stopped container's whole stdout and stderr, from its log."""
        with self._translated(f"a log read of {container_id}"):
            data = self.http.call("GET", self._path("/containers/{}/logs", container_id),
                                  {"stdout": 1, "stderr": 1, "follow": 0, "tail": "all"})
        return demultiplex(data)

    def cpu_seconds(self, container_id: str) -> float:
        """CPU time used so far by all the container's processes (its cgroup)."""
        with self._translated(f"the stats of {container_id}"):
            stats = self.http.json("GET", self._path("/containers/{}/stats", container_id),
                                   {"stream": "false", "one-shot": "true"})
            used = float(stats["cpu_stats"]["cpu_usage"]["total_usage"]) / 1e9
            if not math.isfinite(used) or used < 0:
                raise ValueError(f"a CPU time of {used} seconds")
            return used

    def events(self, since: float, filters: Dict[str, List[str]]) -> EventStream:
        """The engine's event stream from ``since`` (epoch seconds), for ``filters``."""
        with self._translated("the event stream"):
            stream = self.http.stream("GET", self._path("/events"),
                                      {"since": f"{since:.9f}", "filters": filters},
                                      read_timeout=EVENTS_IDLE_TIMEOUT)
        return EventStream(stream, f"the event stream of {self.config.name}")


def connect(config: InstanceConfig, timeout: float = API_TIMEOUT,
            opened: Optional[Callable[[Engine], None]] = None) -> Engine:
    """Returns an :class:`Engine` for ``config``, after checking that it answers; TLS is
    verified with the given CA whatever the environment says (``REQUESTS_CA_BUNDLE``...).
    ``opened`` is given the engine before its first call (so that another thread may end
    its calls: :meth:`backend.docker._http.Client.abort`).

    Negotiates the Engine API version (:func:`backend.docker._features.negotiate`, from the
    unversioned ``/version``) and detects the engine's features (``/info``), kept as
    ``engine.features`` for :func:`container_options`; each fallback is logged once.

    Raises:
        DockerFailure: ``engine_unreachable`` when the engine does not answer;
            ``start_failed`` when it speaks no API version in our range (the text names both).
    """
    try:
        engine = Engine(config, timeout)
    except (ValueError, OSError) as error:  # a URL or TLS files the client cannot use
        raise translate(error, config) from error
    if opened is not None:
        opened(engine)
    try:
        version = engine.version()
        engine.http.api_version = _features.negotiate(version, config.name)
        engine.features = _features.detect(version, engine.info(), engine.http.api_version,
                                           config.name)
    except _features.UnsupportedEngine as error:
        engine.close()
        raise DockerFailure("start_failed", str(error)) from error
    except (ValueError, TypeError, AttributeError, RecursionError) as error:  # other types
        engine.close()
        raise DockerFailure("start_failed", f"host {config.name} answered a /version or "
                                            f"/info we cannot read: {short_text(str(error))}"
                            ) from error
    except DockerFailure:
        engine.close()
        raise
    _features.log_fallbacks(engine.features, config.server_url)
    return engine


def adopt_stream(fd: int) -> OutputStream:
    """A job's attach passed to this process by its file descriptor (see
    :func:`create_and_start`).

    Raises:
        DockerFailure: ``fd`` is not a socket we can use.
    """
    try:
        stream = adopt(fd)
    except OSError as error:
        raise stream_failure(error, "a job's handed-over output stream") from error
    return OutputStream(stream, "a job's output stream")


def _object(value: Any, what: str) -> Dict[str, Any]:
    """``value``, a JSON object of the engine's answer (``what`` names it).

    Raises:
        TypeError: it is not one (the caller translates it).
    """
    if not isinstance(value, dict):
        raise TypeError(f"{what} is not a JSON object but {type(value).__name__}")
    return value
