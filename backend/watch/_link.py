"""A waiter's link to its engine: its connection, and whether the engine answers.

Owned by a waiter's main thread (:mod:`backend._waiter`), which makes every call through
:meth:`EngineLink.connected`; the :class:`~backend.watch._probe.HealthProbe` it holds pings
the engine from its own thread and, when the engine goes silent, calls
:meth:`EngineLink.engine_silent` there (it only aborts the calls in progress). What the
waiter learns of the engine is told to the dispatcher, once per change, as an
``EngineState``.
"""
from __future__ import annotations

import logging
import time
from typing import Any, Callable, Dict, Optional

from backend import docker
from backend.ipc import EngineState, Mailbox
from backend.model import InstanceConfig
from backend.watch._probe import PROBE_TIMEOUT, HealthProbe

logger = logging.getLogger("backend")


class EngineLink:
    """The connection of a waiter to its engine, and what it knows of whether it answers."""

    def __init__(self, config: InstanceConfig, mailbox: Mailbox,
                 report: Callable[[EngineState], Any]):
        self.config = config
        self.report = report  # to the dispatcher
        self.probe = HealthProbe(config, mailbox, self.engine_silent)
        self.docker: Optional[docker.Engine] = None
        self.connecting: Optional[docker.Engine] = None  # self.docker, while it connects
        self.reachable: Optional[bool] = None
        self.unreachable_since: Optional[float] = None  # time.monotonic()
        self.listing_failure = ""  # the last error answer to a listing, logged once
        self.unanswered = False  # the last listing was not answered

    def connected(self) -> docker.Engine:  # on first use, and again after a failure
        if self.probe.silent:  # no call that would wait its whole timeout
            raise docker.DockerFailure(
                "engine_unreachable", f"host {self.config.name} ({self.config.server_url}) "
                f"did not answer a health probe within {PROBE_TIMEOUT} s", retryable=True)
        if self.docker is None:
            try:
                self.docker = docker.connect(self.config, opened=self._opened)
            finally:
                self.connecting = None
        return self.docker

    def _opened(self, engine: docker.Engine) -> None:
        self.connecting = engine

    def engine_silent(self) -> None:
        """The probe found the engine silent (its thread): the calls waiting on it fail now
        rather than at their timeout, and the next ones at once (:meth:`connected`)."""
        for engine in (self.docker, self.connecting):
            if engine is not None:
                engine.http.abort()

    def drop(self, close: bool = False) -> None:
        """Forgets the connection: the next call makes a new one."""
        if close and self.docker is not None:
            self.docker.close()
        self.docker = None

    def set_reachable(self, reachable: bool, why: str = "") -> None:
        if reachable:
            self.unreachable_since = None
        elif self.unreachable_since is None:
            self.unreachable_since = time.monotonic()
        if reachable != self.reachable:
            self.reachable = reachable
            if not reachable:
                logger.warning("engine %s does not answer", self.config.name)
            if not reachable and not why and self.probe.silent:
                why = self.probe.why  # what the probe saw, when another told it first
            self.report(EngineState(self.config.name, reachable, why))

    def lost_for(self, seconds: float) -> bool:
        """Whether the engine has not answered for ``seconds``."""
        return (self.unreachable_since is not None
                and time.monotonic() - self.unreachable_since >= seconds)

    def listing(self, label: str) -> Optional[Dict[str, Dict[str, Any]]]:
        """The containers with ``label``, by id; None when the engine did not answer
        (:attr:`unanswered`) or answered an error (logged once)."""
        try:
            listed = {c["Id"]: c for c in self.connected().containers(label)}
        except docker.DockerFailure as failure:
            self.unanswered = failure.retryable
            if failure.retryable:  # the engine does not answer
                logger.debug("listing on %s failed: %s", self.config.name, failure.text)
                self.drop()
            elif failure.text != self.listing_failure:  # it answered: an error, said once
                logger.warning("listing our containers on %s: %s", self.config.name,
                               failure.text)
            self.listing_failure = "" if failure.retryable else failure.text
            return None
        self.unanswered = False
        self.listing_failure = ""
        return listed
