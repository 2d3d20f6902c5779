"""The submitters: the pool's processes, which create and start containers, and remove them.

Each submitter process serves one request at a time from its own pipe to the JobManager's
dispatcher (see :mod:`backend.dispatch._dispatcher`), which records which submitter holds which job or
removal: when a submitter dies, exactly what it held fails or is tried again, and a fresh
submitter takes its place. A submitter keeps one connection per engine for its whole life
(a new one after the engine stopped answering). Its messages are those of
:mod:`backend.ipc._messages`:

:class:`~backend.ipc._messages.Submit`
    creates the container under the name given (one per attempt, so that a container whose
    creation was not confirmed can still be removed by name), replies ``Started`` or
    ``StartFailed`` (``WarmStarted``, ``WarmStartFailed`` for a warm container). With
    ``Started.has_stream``, the job's open attach (its stdout and stderr from the very start)
    goes with it as a file descriptor (:func:`backend.ipc.send`), for the dispatcher to hand
    to the waiter; ``Started.input_written`` says how much of the job's input was written
    without blocking (:mod:`backend.docker._input`): the waiter writes the rest. Over TLS the whole
    input is written by a thread of the submitter, after the reply, bounded by the job's
    ``hard_time``: a job that does not read its input never holds a submitter. With ``into``
    (a warm container taken by a job), on a plain connection it only writes the job's files
    into that running container (behind its gate) and replies ``Started`` without an attach:
    the dispatcher holds the warm container's. Over TLS no warm container has an attach (it
    could not be passed on): the submitter attaches to its stdin, checks that it still runs
    and writes the files (:func:`backend.docker.take_warm`), replies ``Started``, then writes
    the gate's line (for a gated one) and the job's input from a thread, as for a cold job;
    one that no longer waits is reported as ``StartFailed`` with ``warm_gone``: the
    dispatcher serves the job cold.
``Remove``, ``Sweep``, ``RemoveLeftovers``
    remove those containers (one that does not exist counts as removed), the containers of
    dead managers, or every container of this manager (at close); the reply is ``Removed``.
:class:`~backend.ipc._messages.Exit`
    the submitter exits.
"""
from __future__ import annotations

import logging
import os
import socket
import threading
import time
from multiprocessing.connection import Connection
from typing import Dict, List, Optional, Protocol, Sequence, Tuple, Union

from backend import docker
from backend.ipc import (Exit, Handlers, Remove, RemoveLeftovers, Removed, StartFailed, Started,
                         Submit, Sweep, WarmStartFailed, WarmStarted, configure_logging,
                         exit_with_parent, receive, send)
from backend.model import InstanceConfig

logger = logging.getLogger("backend")


class _Attach(Protocol):
    """A job's open attach, as :func:`backend.docker._client.create_and_start` returns it."""

    sock: socket.socket

    def close(self) -> None: ...


class _Submitter:
    """One submitter process's state: its connections, one per engine."""

    def __init__(self, connection: Connection, configs: Sequence[InstanceConfig],
                 manager_id: str, owner: str):
        self.connection = connection
        self.configs = {config.name: config for config in configs}
        self.manager_id = manager_id
        self.owner = owner
        self.engines: Dict[str, docker.Engine] = {}
        self.stopping = False

    def engine(self, engine: str) -> docker.Engine:
        connected = self.engines.get(engine)
        if connected is None:
            connected = self.engines[engine] = docker.connect(self.configs[engine])
        return connected

    def forget(self, engine: str) -> None:
        """Drops the connection to ``engine``, which did not answer: the next is new."""
        connected = self.engines.pop(engine, None)
        if connected is not None:
            connected.close()

    def serve(self) -> None:
        handlers = Handlers("submitter", {
            Submit: self.on_submit, Remove: self.on_remove, Sweep: self.on_remove,
            RemoveLeftovers: self.on_remove, Exit: self.on_exit})
        while not self.stopping:
            try:
                request = receive(self.connection)
            except (EOFError, OSError):
                return
            handlers(request)

    def on_submit(self, request: Submit) -> None:
        reply, stream = self.submit(request)
        if request.warm:  # the dispatcher's warm starts take these
            reply = (WarmStarted if isinstance(reply, Started) else WarmStartFailed)(*reply)
        if isinstance(reply, Started) and reply.has_stream:  # its attach goes with it
            assert stream is not None
            try:
                send(self.connection, reply._replace(fds=(stream.sock.fileno(),)),
                     os.getppid())
            finally:
                stream.close()
            return
        send(self.connection, reply)
        if isinstance(reply, Started) and stream is not None:  # TLS: no attach is passed
            self.write_input(request, reply.container_id, stream)  # from here

    def on_remove(self, request: Union[Remove, Sweep, RemoveLeftovers]) -> None:
        failed, reachable = self.remove(request)
        send(self.connection, Removed(request.engine, tuple(failed), reachable))

    def on_exit(self, request: Exit) -> None:
        self.stopping = True

    def submit(self, request: Submit) -> Tuple[Union[Started, StartFailed], Optional[_Attach]]:
        """Creates and starts a job's container; the reply, and its attach if there is one."""
        job_id = request.spec.job_id
        try:
            engine = self.engine(request.engine)
            if request.into is not None and not engine.http.plain:  # TLS: written from here
                taken = docker.take_warm(engine, request.spec, request.into)
                return Started(job_id, request.into, False, len(request.spec.stdin)), taken
            if request.into is not None:
                docker.fill(engine, request.spec, request.into)
                return Started(job_id, request.into, False, 0), None
            container_id, stream, written = docker.create_and_start(
                engine, request.spec, self.manager_id, self.owner, request.container_name,
                warm=request.warm, gate=request.gate)
            if not engine.http.plain and not request.warm:  # by write_input, after the reply
                written = len(request.spec.stdin)
            return Started(job_id, container_id, engine.http.plain, written), stream
        except docker.DockerFailure as failure:
            if failure.retryable:
                self.forget(request.engine)
            return StartFailed(job_id, failure.reason, failure.text,
                               failure.container_id or request.into, failure.retryable,
                               failure.maybe_created, failure.no_shell,
                               failure.warm_gone), None
        except Exception as error:  # noqa: BLE001 - one request's failure ends that job only
            logger.warning("submitter: starting %s failed: %r", job_id, error, exc_info=True)
            self.forget(request.engine)  # its connection may be left mid-answer
            return StartFailed(job_id, "start_failed", f"starting the container failed "
                               f"({type(error).__name__})", request.into, False, True), None

    def write_input(self, request: Submit, container_id: str, stream: _Attach) -> None:
        """Writes a job's whole input over a TLS attach from a thread of its own, within the
        job's ``hard_time``, stopping when the container no longer runs; closing the attach
        is the job's end of file. A gated warm container's job (``into`` with ``gate``) gets
        the gate's line first."""
        engine = self.engines.get(request.engine)  # the one that started it (thread-safe)
        data = request.spec.stdin
        if request.into is not None and request.gate:
            data = docker.GATE_LINE + data
        deadline = time.monotonic() + float(request.spec.task.limits["hard_time"])

        def still_running() -> bool:
            try:
                return engine is None or bool(engine.inspect(container_id)["State"]["Running"])
            except docker.DockerFailure as failure:
                return not failure.not_found

        def write() -> None:
            try:
                written = docker.write_within(stream.sock, data, deadline, still_running)
                if written < len(data):
                    logger.debug("input of %s: %d of %d bytes written", container_id,
                                 written, len(data))
            finally:
                stream.close()

        threading.Thread(target=write, name="backend-input", daemon=True).start()

    def remove(self, request: Union[Remove, Sweep, RemoveLeftovers]) -> Tuple[List[str], bool]:
        """Removes containers; returns what could not be removed and whether the engine
        answered."""
        name = request.engine
        containers = list(request.containers) if isinstance(request, Remove) else []
        try:
            engine = self.engine(name)
            if isinstance(request, RemoveLeftovers):
                containers = docker.manager_containers(engine, self.manager_id)
                if containers:
                    logger.warning("%d container(s) of this JobManager were still on %s at "
                                   "its close; removing them", len(containers), name)
            elif isinstance(request, Sweep):
                containers = docker.dead_managers_containers(engine)
                if containers:
                    logger.info("removing %d container(s) left by dead managers on %s",
                                len(containers), name)
            failed, reachable = docker.remove_containers(engine, containers)
        except docker.DockerFailure as failure:
            # one that answered with an error says so in one line: the removal is retried
            if not failure.retryable:
                logger.info("submitter: removing containers on %s failed: %s", name,
                               failure.text)
            failed, reachable = containers, not failure.retryable
        except Exception as error:  # noqa: BLE001 - one request's failure: tried again later
            logger.warning("submitter: removing containers on %s failed: %r", name, error,
                           exc_info=True)
            failed, reachable = containers, True
            self.forget(name)
        if not reachable:
            self.forget(name)
        return failed, reachable


def submitter_main(connection: Connection, configs: List[InstanceConfig], manager_id: str,
                   owner: str, log_level: int, lifeline: Connection) -> None:
    """Entry point of a submitter process."""
    exit_with_parent(lifeline)
    configure_logging(log_level)
    _Submitter(connection, configs, manager_id, owner).serve()
