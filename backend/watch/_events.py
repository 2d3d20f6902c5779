"""The event thread of a waiter: :class:`EventFollower` follows one engine's container events.

Owned by a waiter (:mod:`backend._waiter`), which starts it and stops it; it runs in its own
thread. It follows ONE stream per engine for two readers: the waiter's main loop, through its
:class:`~backend.ipc._messages.Mailbox`, and the waiter's load counter (:mod:`backend.watch._load`),
through its ``put``. The stream is not filtered by label (Podman's filter by a label's key
alone matches nothing): each event is decoded once here and routed by its ``backend.manager``
label: an event of any manager's container becomes the counter's
:class:`~backend.ipc._messages.ContainerSeen` (``create``, ``die``, ``destroy``, Podman's
``remove``), and one of OUR manager's containers also the main loop's
:class:`~backend.ipc._messages.DockerEvent` (``die``, ``oom``, ``kill``, ``destroy``); unlabelled
ones are dropped. :class:`~backend.ipc._messages.EventsCovered` when a stream starts and
:class:`~backend.ipc._messages.EngineState` when the engine answers or stops answering go to both.
A stream that ends or fails is resumed from the time of the last event seen (``since``), so
that no event is lost while the engine restarts.
"""
from __future__ import annotations

import logging
import threading
import time
from typing import Any, Dict, Iterator, List, Optional, Protocol, Tuple

from backend import docker
from backend.model import InstanceConfig
from backend.ipc import ContainerSeen, DockerEvent, EngineState, EventsCovered

logger = logging.getLogger("backend")

#: Seconds between two subscriptions after a failure: the first, and the most.
_FIRST_DELAY, _MOST_DELAY = 0.1, 2.0
#: The actions the load counter is told of (Podman's ``remove`` is Docker's ``destroy``). Not
#: ``start``: a container counts from its create; one started again after its ``die`` (by
#: hand) is counted again at the counter's next listing.
LOAD_ACTIONS = ("create", "die", "destroy", "remove")
#: The actions of the one stream: the waiter's and the load counter's.
FOLLOWED = tuple(dict.fromkeys(docker.CONTAINER_EVENTS + LOAD_ACTIONS))


class Sink(Protocol):
    """Where a follower's notes go: a :class:`~backend.ipc._messages.Mailbox`, or the load
    counter."""

    def put(self, message: Any) -> None: ...


class EventFollower:
    """Follows the container events of one engine for a waiter and its load counter.

    Args:
        config: the engine.
        manager_id: our manager's id: the events of its containers go to ``mailbox``.
        mailbox: the waiter's: :class:`DockerEvent`, :class:`EventsCovered` and
            :class:`EngineState`.
        counter: the load counter, or None: :class:`ContainerSeen` of every manager's
            containers, :class:`EventsCovered` and :class:`EngineState`.

    Threads: :meth:`run` is the follower's own thread and the only one to touch the engine
    and ``since``; :meth:`stop` may be called from any thread.
    """

    def __init__(self, config: InstanceConfig, manager_id: str, mailbox: Sink,
                 counter: Optional[Sink] = None):
        self.config = config
        self.manager_id = manager_id
        self.mailbox = mailbox
        self.counter = counter
        self._stopped = threading.Event()
        self._stream: Optional[docker.EventStream] = None

    def start(self) -> None:
        threading.Thread(target=self.run, name="backend-events", daemon=True).start()

    def stop(self) -> None:
        self._stopped.set()
        stream = self._stream
        if stream is not None:
            stream.shutdown()

    def _tell(self, note: Any) -> None:
        """A note for both readers."""
        self.mailbox.put(note)
        if self.counter is not None:
            self.counter.put(note)

    def run(self) -> None:
        since = time.time() - 1.0
        engine: Optional[docker.Engine] = None
        delay = _FIRST_DELAY
        filters = {"type": ["container"], "event": list(FOLLOWED)}
        while not self._stopped.is_set():
            try:
                if engine is None:
                    engine = docker.connect(self.config)
                self._stream = stream = engine.events(since, filters)
                if self._stopped.is_set():  # stop() came before the stream was there
                    break
                self._tell(EventsCovered(since))
                self._tell(EngineState(self.config.name, True))
                delay = _FIRST_DELAY
                for event in stream:
                    since = max(since, self.routed(event))
                if stream.idle:  # silent for its read timeout: subscribe again at once (the
                    continue     # waiter's polls tell whether the engine still answers)
                logger.debug("event stream of %s ended", self.config.name)
            except docker.DockerFailure as failure:  # the engine is gone: subscribe again
                logger.debug("event stream of %s failed: %s", self.config.name, failure.text)
                if engine is not None:
                    engine.close()
                engine = None
            finally:
                if self._stream is not None:
                    self._stream.close()
                    self._stream = None
            self._tell(EngineState(self.config.name, False))
            self._stopped.wait(delay)
            delay = min(delay * 2, _MOST_DELAY)
        if engine is not None:
            engine.close()

    def routed(self, event: Any) -> float:
        """:meth:`route`, for an event of any shape: one that cannot be decoded is skipped
        (logged; the waiter's poll catches what it meant), never the end of this thread."""
        try:
            return self.route(event)
        except Exception as error:  # noqa: BLE001 - the engine's bytes end no thread
            logger.warning("an event of %s could not be decoded (%s: %.200s): %.300r",
                           self.config.name, type(error).__name__, error, event)
            return 0.0

    def route(self, event: Dict[str, Any]) -> float:
        """Decodes one event of the engine and gives it to whom it concerns: the counter if
        a manager's container, the mailbox too if ours. Returns its time (0 if none).

        The event is the engine's word: a field of another type counts as absent (an
        ``exitCode`` that is not a number, as unknown), so that no event can end the
        thread."""
        at = _event_time(event)
        action = _text(event.get("Action")) or _text(event.get("status"))
        actor = _mapping(event.get("Actor"))
        container_id = _text(event.get("id")) or _text(actor.get("ID"))
        attributes = _mapping(actor.get("Attributes"))
        manager = _text(attributes.get(docker.LABEL_MANAGER))
        if not container_id or not manager:  # not a container of any manager
            return at
        if self.counter is not None and action in LOAD_ACTIONS:
            self.counter.put(ContainerSeen(action, container_id, manager,
                                           _text(attributes.get(docker.LABEL_JOB))))
        if manager == self.manager_id and action in docker.CONTAINER_EVENTS:
            exit_code = None
            if action == "die":
                code = _text(attributes.get("exitCode"))
                exit_code = int(code) if code.isascii() and code.isdigit() and \
                    len(code) <= 9 else None
            self.mailbox.put(DockerEvent(action, container_id, exit_code, at or time.time()))
        return at


def _event_time(event: Dict[str, Any]) -> float:
    """The engine's time of an event, in epoch seconds (0 when it has none, or one that is
    not a finite number of seconds since the epoch up to the year 9999)."""
    for key, scale in (("timeNano", 1e9), ("time", 1.0)):
        value = event.get(key)
        if isinstance(value, (int, float)) and not isinstance(value, bool) \
                and 0 < value < 253402300800 * scale:
            return float(value) / scale
    return 0.0


def _text(value: Any) -> str:
    """A str field of an event ("" when absent or of another type)."""
    return value if isinstance(value, str) else ""


def _mapping(value: Any) -> Dict[str, Any]:
    """An object field of an event ({} when absent or of another type)."""
    return value if isinstance(value, dict) else {}


#: Seconds the events of a container not yet watched are kept.
EARLY_EVENTS_KEPT = 60.0


class EarlyEvents:
    """The events of containers we are not yet told of (a short job's ``die`` often comes
    before the dispatcher's ``Watch``); forgotten after :data:`EARLY_EVENTS_KEPT`."""

    def __init__(self) -> None:
        self._kept: Dict[str, Tuple[float, List[DockerEvent]]] = {}

    def keep(self, event: DockerEvent) -> None:
        now = time.monotonic()
        self._kept.setdefault(event.container_id, (now, []))[1].append(event)
        while self._kept:
            oldest = next(iter(self._kept))
            if now - self._kept[oldest][0] < EARLY_EVENTS_KEPT:
                break
            del self._kept[oldest]

    def pop(self, container_id: str) -> List[DockerEvent]:
        return self._kept.pop(container_id, (0.0, []))[1]

    def __iter__(self) -> Iterator[str]:
        return iter(self._kept)

    def __len__(self) -> int:
        return len(self._kept)
