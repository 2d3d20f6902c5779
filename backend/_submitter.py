"""The submitter pool's worker: creates and starts containers, and deletes them.

Each worker process serves one request at a time from its own pipe to the JobManager's
dispatcher (see :mod:`backend._dispatcher`), which records which worker holds which job: when a
worker dies, exactly the job it held fails, and a fresh worker takes its place. A worker keeps
one Docker client per engine for its whole life.

Requests (dispatcher → worker) and their replies (worker → dispatcher) are plain tuples:

``("submit", instance_name, spec, container_name)``
    creates the container under that name (one per attempt, so that a container whose
    creation was not confirmed can still be removed by name), and replies ``("created",
    job_id, container_id)`` as soon as the container exists, then
    ``("started", job_id, container_id, has_stream)`` or
    ``("failed", job_id, reason, text, container_id, retryable, maybe_created)``
    (``maybe_created``: the create was sent and not answered). With ``has_stream``, the
    job's open attach (its stdout and stderr from the very start) follows on the pipe as a file
    descriptor (:func:`multiprocessing.reduction.send_handle`), for the dispatcher to hand to
    the waiter.
``("delete", instance_name, container_ids_or_names)``
    removes those containers (one that does not exist counts as removed); replies
    ``("deleted", instance_name, failed, reachable)``: what could not be removed, and whether
    the engine answered (``False``: the rest was not tried).
``("sweep", instance_name)``
    removes the containers of managers whose process is gone; same reply.
``("leftovers", instance_name)``
    removes every container of this manager (it is closing, and every job has ended): a
    last check that nothing is left behind; same reply.
``None``
    the worker exits.
"""
from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from multiprocessing import reduction
from typing import Any, Dict, List, Tuple

from backend import _docker
from backend._child import configure_logging, exit_with_parent
from backend._config import InstanceConfig
from backend._task import _TaskSnapshot

logger = logging.getLogger("backend")


@dataclass(frozen=True)
class _JobSpec:
    """Everything the submitter needs to run one job; plain data only."""

    job_id: str
    task: _TaskSnapshot
    stdin: bytes


class _Worker:
    """One submitter process's state: its clients, one per engine."""

    def __init__(self, connection, instances: List[InstanceConfig], manager_id: str, owner: str):
        self.connection = connection
        self.instances = {instance.name: instance for instance in instances}
        self.manager_id = manager_id
        self.owner = owner
        self.clients: Dict[str, Any] = {}

    def client(self, name: str):
        client = self.clients.get(name)
        if client is None:
            client = self.clients[name] = _docker.connect(self.instances[name])
        return client

    def forget(self, name: str) -> None:
        client = self.clients.pop(name, None)
        if client is not None:
            client.close()

    def serve(self) -> None:
        while True:
            try:
                request = self.connection.recv()
            except (EOFError, OSError):
                return
            if request is None:
                return
            kind = request[0]
            if kind == "submit":
                reply, stream = self.submit(request[1], request[2], request[3])
                self.connection.send(reply)
                if stream is not None:
                    try:
                        reduction.send_handle(self.connection, stream.sock.fileno(),
                                              os.getppid())
                    finally:
                        stream.close()
            else:
                self.connection.send(("deleted", request[1], *self.delete(*request)))

    def submit(self, name: str, spec: _JobSpec, container_name: str):
        try:
            client = self.client(name)
            container_id, stream = _docker.create_and_start(
                client, spec, self.manager_id, self.owner, container_name,
                on_created=lambda cid: self.connection.send(("created", spec.job_id, cid)))
            return ("started", spec.job_id, container_id, stream is not None), stream
        except _docker.DockerFailure as failure:
            if failure.retryable:
                self.forget(name)
            return ("failed", spec.job_id, failure.reason, failure.text,
                    failure.container_id, failure.retryable, failure.maybe_created), None

    def delete(self, kind: str, name: str, argument=None) -> Tuple[List[str], bool]:
        """Removes containers; returns what could not be removed and whether the engine
        answered."""
        ids = list(argument) if kind == "delete" else []
        try:
            client = self.client(name)
            if kind == "leftovers":
                ids = _docker.manager_containers(client, self.manager_id)
                if ids:
                    logger.warning("%d container(s) of this JobManager were still on %s at "
                                   "its close; removing them", len(ids), name)
            elif kind == "sweep":
                ids = _docker.dead_managers_containers(client)
                if ids:
                    logger.info("removing %d container(s) left by dead managers on %s",
                                len(ids), name)
            failed, reachable = _docker.remove_containers(client, ids)
        except Exception as error:  # noqa: BLE001 - reported to the dispatcher as a retry
            # a listing raises the transport's errors: an engine that stopped answering is
            # told apart from one that answered something unexpected
            failure = _docker.translate(error, self.instances[name])
            if failure.retryable or isinstance(error, _docker.DockerFailure):
                logger.debug("deleter on %s: %s", name, failure.text)
            else:
                logger.exception("deleter on %s failed", name)
            failed, reachable = ids, not failure.retryable
        if not reachable:
            self.forget(name)
        return failed, reachable


def worker_main(connection, instances: List[InstanceConfig], manager_id: str, owner: str,
                log_level: int, lifeline) -> None:
    """Entry point of a submitter process."""
    exit_with_parent(lifeline)
    configure_logging(log_level)
    _Worker(connection, instances, manager_id, owner).serve()
