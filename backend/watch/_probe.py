"""A waiter's health probe: finds, within seconds, an engine that stops answering.

An engine may accept connections and never answer (a hung daemon, a stopped one, a dead
proxy): every call to it then waits its whole ``API_TIMEOUT`` (30 s) before it fails. The
probe does not wait for a call to fail: each waiter (:mod:`backend._waiter`) runs one
:class:`HealthProbe`, whose thread sends ``GET /_ping`` every :data:`PROBE_EVERY` seconds,
on a connection of its own, and waits at most :data:`PROBE_TIMEOUT` seconds for the answer.
Whenever what it sees changes, it puts an :class:`~backend.ipc._messages.EngineState` in the
waiter's mailbox (so an engine found silent is marked unreachable within ``PROBE_EVERY +
PROBE_TIMEOUT`` seconds, and reachable again at its first answer), and, when the engine fell
silent, it calls ``on_silent`` from its own thread at once, to end the calls that wait on the
engine (the waiter's, see :meth:`backend._waiter._Waiter.engine_silent`). An engine that
answers with an error status answers: only a connection that fails or times out is silence.
The thread touches only its own connection, :attr:`HealthProbe.silent`, the mailbox and
``on_silent``.
"""
from __future__ import annotations

import logging
import threading
from typing import Callable

from backend import docker
from backend.model import InstanceConfig
from backend.ipc import EngineState, Mailbox

logger = logging.getLogger("backend")

#: Seconds between two health probes of an engine.
PROBE_EVERY = 1.0
#: Seconds a health probe waits for the engine's answer; longer, it is marked unreachable.
PROBE_TIMEOUT = 2.0


class HealthProbe:
    """Pings one engine from a thread of its own; see the module docstring.

    Args:
        config: the engine.
        mailbox: the waiter's: receives :class:`~backend.ipc._messages.EngineState` on a change.
        on_silent: called (from the probe's thread) when the engine falls silent.
    """

    def __init__(self, config: InstanceConfig, mailbox: Mailbox,
                 on_silent: Callable[[], None]):
        self.config = config
        self.mailbox = mailbox
        self.on_silent = on_silent
        #: the last probe found the engine silent (read by any thread)
        self.silent = False
        self.why = ""  # what the last probe that got no answer saw
        self._stopped = threading.Event()

    def start(self) -> None:
        threading.Thread(target=self.run, name="backend-probe", daemon=True).start()

    def stop(self) -> None:
        self._stopped.set()

    def answers(self, engine: docker.Engine) -> bool:
        """One probe: whether the engine answered within :data:`PROBE_TIMEOUT`."""
        try:
            engine.ping()
        except docker.DockerFailure as failure:
            if failure.retryable:
                logger.debug("health probe of %s: %s", self.config.name, failure.text)
                self.why = failure.text
                return False
        return True

    def run(self) -> None:
        engine = None
        try:
            while not self._stopped.is_set():
                try:
                    if engine is None:
                        engine = docker.Engine(self.config, PROBE_TIMEOUT)
                    answered = self.answers(engine)
                except (ValueError, OSError) as error:  # TLS files it cannot read
                    logger.debug("health probe of %s: %s", self.config.name, error)
                    self.why, answered = str(error), False
                if not answered and engine is not None:  # a new connection next time
                    engine.close()
                    engine = None
                if answered == self.silent:  # a change
                    self.silent = not answered
                    if not answered:
                        logger.info("engine %s did not answer a health probe within %s s",
                                    self.config.name, PROBE_TIMEOUT)
                        self.on_silent()
                    self.mailbox.put(EngineState(self.config.name, answered,
                                                 "" if answered else self.why))
                self._stopped.wait(PROBE_EVERY)
        except Exception:  # noqa: BLE001 - the probe must never take the waiter down
            logger.exception("the health probe of %s failed", self.config.name)
        finally:
            if engine is not None:
                engine.close()
