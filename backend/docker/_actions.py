"""What the manager does with containers, through an :class:`~backend.docker._client.Engine`:
create and start a job's (its files written before the start, its attach made first), fill a
warm container with a job's files, take a warm container of a TLS engine for a job (checked
that it still waits, its files written, its stdin attached), remove containers and find those
of this manager or of dead ones (the orphan sweep), and build images from a folder (a context
packed by :mod:`tarfile`, over the same client). Every failure is a
:class:`~backend.docker._streams.DockerFailure`. Called by the submitters, the command line
and the JobManager's image builds.
"""
from __future__ import annotations

import contextlib
import io
import logging
import os
import socket
import tarfile
import time
from typing import TYPE_CHECKING, Any, Callable, Dict, List, Optional, Tuple

from backend.docker import _definition as _container, _features, _input
from backend.docker._client import Engine, OutputStream, _object, connect
from backend.docker._http import sent_nothing
from backend.docker._wire import HttpError
from backend.docker._definition import LABEL_MANAGER, LABEL_OWNER, container_options
from backend.docker._streams import DockerFailure, EventStream, short_text, translate
from backend.model import InstanceConfig, upload

if TYPE_CHECKING:
    from backend.model import JobSpec

logger = logging.getLogger("backend")

#: Pauses before the archive upload of a job's files is tried again, after an engine's error
#: answer (5xx): Podman 4.3 under load now and then loses the process that unpacks it
#: (``passing bulk input to subprocess: write |1: broken pipe``), and the same upload then
#: passes. The container is not started yet: unpacking the archive again is harmless.
UPLOAD_RETRY_PAUSES = (0.1, 0.5)


def create_and_start(engine: Engine, spec: "JobSpec", manager_id: str, owner: str, name: str,
                     warm: bool = False, gate: bool = False
                     ) -> Tuple[str, Optional[OutputStream], int]:
    """Creates the job's container (named ``name``), attaches, starts it, and writes what
    of its stdin the connection takes without blocking (:func:`backend.docker._input.write_available`);
    when that is all of it, closes stdin.

    The write never blocks: a job that does not read its input (the engine then stops
    reading the attach) cannot hold the caller. The rest of the input is the caller's to
    write, under the job's clock (:mod:`backend.docker._input`).

    On a plain connection (a unix socket, or TCP without TLS) the attach takes stdout and
    stderr too, and stays open after stdin's end of file (a half-close): the caller passes it
    on, for the waiter to read every byte the job prints and to write the rest of the input.
    Over TLS, a half-close is not possible: the attach is for stdin only, nothing is written
    here, and closing it is the job's end of file.

    ``warm``: a warm container (docs/performance.rst, warm starts), labelled so; nothing is
    written, its stdin stays open for the job that will take it. Over TLS no attach is made
    (it could not be passed on): nobody is attached to its stdin, so its program (or its gate)
    blocks reading it until the job's submitter attaches (:func:`take_warm`); the stream
    returned is None. ``gate``: its program waits behind the gate
    (:func:`backend.docker._definition.gated`) until a line comes, after the job's files
    (:func:`fill`); an image without ``/bin/sh`` fails with ``no_shell`` set.

    Returns:
        ``(container_id, stream, written)``: the open attach (its ``sock`` is the
        connection; the caller closes it; None for a warm container over TLS), and the bytes
        of stdin written.

    Raises:
        DockerFailure: the container could not be created or started. ``text`` says why;
            the container, if created, is left for the caller to remove. Reason ``disk``:
            the job's files alone exceed its ``disk`` limit (:func:`_check_given`).
    """
    _check_given(spec)
    config = engine.config
    options = container_options(spec, config, manager_id, owner, engine.features, warm)
    container_id = None
    plain = engine.http.plain
    try:
        if gate:
            entrypoint, command = engine.image_command(options["Image"])
            try:
                options = _container.gated(options, entrypoint, spec.task.command or command)
            except ValueError as error:
                raise _no_shell(f"image {options['Image']}: {error}") from None
        container_id = _create(engine, options, name)
        if gate and not engine.has_shell(options["Image"], container_id):
            raise _no_shell(f"image {options['Image']} has no {_container.GATE_SHELL}")
        if spec.files:  # before the start: the job finds them there (docs/running-programs.rst)
            _put_files(engine, container_id, *upload(spec.files, options["WorkingDir"],
                                                     spec.task.user, spec.task.read_only))
        stream = engine.attach(container_id, stdin=True, output=plain) \
            if plain or not warm else None
        try:
            engine.start(container_id)
        except BaseException:
            if stream is not None:
                stream.close()
            raise
        written = 0
        if stream is not None and plain and not warm:
            written = _input.write_available(stream.sock, spec.stdin)
            if written == len(spec.stdin):
                _input.half_close(stream.sock)  # end of file (the container has StdinOnce)
        return container_id, stream, written
    except BaseException as error:  # noqa: BLE001 - translated, with what was created
        # translated again from the cause: the texts of a job's start name the container
        cause = error.__cause__ if isinstance(error, DockerFailure) and error.__cause__ \
            else error
        failure = translate(cause, config, options["Image"])
        failure.container_id = container_id
        failure.maybe_created = container_id is None and failure.retryable and not \
            sent_nothing(cause)
        raise failure from error


def _check_given(spec: "JobSpec") -> None:
    """The files given to a job count toward its ``disk`` limit: files that alone exceed it
    end the job (``overflow``, ``disk``) before any container is made for it, on every engine
    alike (under a storage quota, writing them would fail).

    Raises:
        DockerFailure: reason ``disk``.
    """
    given = sum(len(data) for _, data in spec.files)
    limit = int(spec.task.limits["disk"])
    if given > limit:
        raise DockerFailure("disk", f"The files given to the job take {given} bytes, more "
                                    f"than its disk limit of {limit} bytes.")


def _create(engine: Engine, options: Dict[str, Any], name: str) -> str:
    """Creates the container; when the engine refuses the storage quota it was asked for
    (:func:`backend.docker._features.refuses_quota`), it forgets the quota
    (:func:`~backend.docker._features.without_quota`: logged once) and creates it again
    without one, under the same name (a refused create leaves no container): the disk watch
    bounds the job. ``options`` loses its ``StorageOpt`` then.

    Raises:
        DockerFailure: the engine refused it (again) or did not answer.
    """
    try:
        return engine.create(options, name)
    except DockerFailure as failure:
        host_config = options["HostConfig"]
        if "StorageOpt" not in host_config or failure.retryable or failure.not_found \
                or not _features.refuses_quota(failure.text):
            raise
        engine.features = _features.without_quota(engine.features, engine.config.name,
                                                   engine.config.server_url, failure.text)
        options["HostConfig"] = {key: value for key, value in host_config.items()
                                 if key != "StorageOpt"}
        return engine.create(options, name)


def _no_shell(text: str) -> DockerFailure:
    """The failure of a gated warm container whose image cannot run the gate."""
    failure = DockerFailure("start_failed", text)
    failure.no_shell = True
    return failure


def fill(engine: Engine, spec: "JobSpec", container_id: str) -> None:
    """Writes a job's files into a warm container waiting behind its gate, where
    a cold start writes them: the container's working directory is the job's.

    Raises:
        DockerFailure: the engine refused or did not answer; reason ``disk``: the job's
            files alone exceed its ``disk`` limit.
    """
    _check_given(spec)
    workdir = spec.workdir or "/"
    _put_files(engine, container_id, *upload(spec.files, workdir, spec.task.user,
                                             spec.task.read_only))


def _put_files(engine: Engine, container_id: str, path: str, data: bytes) -> None:
    """The archive upload of a job's files into a container whose program has not begun
    (not started, or behind its gate), tried again after the pauses of
    :data:`UPLOAD_RETRY_PAUSES` when the engine answers a server error: its own trouble,
    not the job's. A client error (4xx) or no answer ends the attempts at once."""
    for pause in UPLOAD_RETRY_PAUSES + (None,):
        try:
            engine.put_archive(container_id, path, data)
            return
        except DockerFailure as failure:
            cause = failure.__cause__
            if pause is None or not (isinstance(cause, HttpError) and cause.status >= 500):
                raise
            logger.info("the files of %s were refused (%s): sent again", container_id,
                        short_text(failure.text))
            time.sleep(pause)


def take_warm(engine: Engine, spec: "JobSpec", container_id: str) -> OutputStream:
    """Takes a warm container of a TLS engine for a job: attaches to its stdin (nobody was:
    see :func:`create_and_start`), checks that it still runs, and writes the job's files
    into it (:func:`fill`). The caller writes the gate's line (if it is gated) and the job's
    input on the attach, and closes it: the job's end of file.

    A JSON-protocol program that printed before this is taken all the same: its output is in
    the container's log, which the waiter reads as for any job over TLS, exactly as a cold
    run's.

    Returns:
        The attach, for stdin only (the caller closes it).

    Raises:
        DockerFailure: with ``warm_gone`` set when the container no longer waits (it ended,
            was removed, or the engine refuses an attach to it): the job is to be served
            cold; else the engine did not answer or refused the files.
    """
    try:
        stream = engine.attach(container_id, stdin=True, output=False)
    except DockerFailure as failure:
        if failure.retryable:
            raise
        raise _warm_gone(container_id, failure.text) from failure
    try:
        try:
            state = engine.inspect(container_id)["State"]
        except DockerFailure as failure:
            if not failure.not_found:
                raise
            raise _warm_gone(container_id, "it was removed") from failure
        if not state.get("Running") or state.get("Paused") or state.get("Restarting"):
            raise _warm_gone(container_id, f"it is {short_text(str(state.get('Status')))}")
        if spec.files:
            try:
                fill(engine, spec, container_id)
            except DockerFailure as failure:
                if not failure.not_found:
                    raise
                raise _warm_gone(container_id, "it was removed") from failure
    except BaseException:
        stream.close()
        raise
    return stream


def _warm_gone(container_id: str, why: str) -> DockerFailure:
    """The failure of a warm container that no longer waits for the job that took it."""
    failure = DockerFailure("start_failed", f"warm container {container_id[:12]} no longer "
                                            f"waits: {why}")
    failure.container_id = container_id
    failure.warm_gone = True
    return failure


def remove_containers(engine: Engine, containers: List[str]) -> Tuple[List[str], bool]:
    """Removes containers (forcefully), by id or name; one that does not exist counts as
    removed.

    Returns:
        ``(failed, reachable)``: what could not be removed, and whether the engine answered
        (when it does not, the rest is not tried and is in ``failed``).
    """
    failed: List[str] = []
    for position, container in enumerate(containers):
        try:
            engine.remove(container)
        except DockerFailure as failure:  # reported to the caller as a retry
            if failure.not_found:
                continue
            logger.debug("removing %s on %s failed: %s", container, engine.config.name,
                         failure.text)
            if failure.retryable:
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


def build_image(config: InstanceConfig, folder: str, tag: str, timeout: float = 600
                ) -> Optional[str]:
    """Builds ``folder`` (its ``Dockerfile`` and what is beside it: the build context) as image
    ``tag`` on the engine of ``config``, over our own client (TLS as for every other call).

    Returns:
        ``None``, or the engine's error text (a failed step, or a failure to talk to it).
    """
    failed = f"building {tag} on host {config.name} failed: "
    try:
        context = _build_context(folder)
    except OSError as error:
        return failed + short_text(str(error))
    try:
        with connect(config, timeout) as engine:
            with engine._translated(f"the build of {tag}"):
                stream = engine.http.stream(
                    "POST", engine.http.path("/build"), {"t": tag, "rm": 1, "forcerm": 1},
                    {"Content-Type": "application/x-tar"}, context, read_timeout=timeout)
            progress = EventStream(stream, f"the build of {tag} on {config.name}")
            try:
                for line in progress:  # JSON lines: {"stream": ...}, {"error": ...}
                    if "error" in line:
                        return str(line["error"]).strip()
            finally:
                progress.close()
    except DockerFailure as failure:
        return failed + failure.text
    return None


def _build_context(folder: str) -> bytes:
    """The build context of ``folder``: a tar of everything in it, as the engine expects."""
    data = io.BytesIO()
    with tarfile.open(fileobj=data, mode="w") as tar:
        for name in sorted(os.listdir(folder)):
            tar.add(os.path.join(folder, name), arcname=name)
    return data.getvalue()
