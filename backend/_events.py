"""The event thread of a waiter: :class:`EventFollower` follows one engine's container events.

Owned by a waiter (:mod:`backend._waiter`), which starts it and stops it; it runs in its own
thread and talks to the waiter's main loop only through its
:class:`~backend._messages.Mailbox`: :class:`~backend._messages.DockerEvent` for each event of
our containers, :class:`~backend._messages.EventsCovered` when a stream starts, and
:class:`~backend._messages.EngineState` when the engine answers or stops answering. A stream
that ends or fails is resumed from the time of the last event seen (``since``), so that no
event is lost while the engine restarts.

The load counter (:mod:`backend._load`) follows a second stream with its own ``actions`` and
``note``: the containers of every manager, into the counter rather than a mailbox.
"""
from __future__ import annotations

import logging
import threading
import time
from typing import Any, Callable, Dict, Iterator, List, Optional, Protocol, Sequence, Tuple

from backend import _docker
from backend._config import InstanceConfig
from backend._messages import DockerEvent, EngineState, EventsCovered

logger = logging.getLogger("backend")

#: Seconds between two subscriptions after a failure: the first, and the most.
_FIRST_DELAY, _MOST_DELAY = 0.1, 2.0


class Sink(Protocol):
    """Where a follower's notes go: a :class:`~backend._messages.Mailbox`, or the load
    counter."""

    def put(self, message: Any) -> None: ...


class EventFollower:
    """Follows the events of the containers labelled ``label`` on one engine.

    Args:
        config: the engine.
        label: ``key=value`` (Podman filters events by a key alone as matching nothing), or
            None: the events of every container.
        mailbox: receives the notes, :class:`EventsCovered` and :class:`EngineState`.
        actions: the events followed.
        note: the note of a decoded event, or None for one to skip.

    Threads: :meth:`run` is the follower's own thread and the only one to touch the engine
    and ``since``; :meth:`stop` may be called from any thread.
    """

    def __init__(self, config: InstanceConfig, label: Optional[str], mailbox: Sink,
                 actions: Sequence[str] = _docker.CONTAINER_EVENTS,
                 note: Optional[Callable[[Dict[str, Any]], Any]] = None):
        self.config = config
        self.label = label
        self.mailbox = mailbox
        self.actions = list(actions)
        self.note = note or _docker_event
        self._stopped = threading.Event()
        self._stream: Optional[_docker.EventStream] = None

    def start(self) -> None:
        threading.Thread(target=self.run, name="backend-events", daemon=True).start()

    def stop(self) -> None:
        self._stopped.set()
        stream = self._stream
        if stream is not None:
            stream.shutdown()

    def run(self) -> None:
        since = time.time() - 1.0
        engine: Optional[_docker.Engine] = None
        delay = _FIRST_DELAY
        filters = {"type": ["container"], "event": self.actions}
        if self.label is not None:
            filters["label"] = [self.label]
        while not self._stopped.is_set():
            try:
                if engine is None:
                    engine = _docker.connect(self.config)
                self._stream = stream = engine.events(since, filters)
                if self._stopped.is_set():  # stop() came before the stream was there
                    break
                self.mailbox.put(EventsCovered(since))
                self.mailbox.put(EngineState(self.config.name, True))
                delay = _FIRST_DELAY
                for event in stream:
                    since = max(since, _event_time(event))
                    note = self.note(event)
                    if note is not None:
                        self.mailbox.put(note)
                if stream.idle:  # silent for its read timeout: subscribe again at once (the
                    continue     # waiter's polls tell whether the engine still answers)
                logger.debug("event stream of %s ended", self.config.name)
            except _docker.DockerFailure as failure:  # the engine is gone: subscribe again
                logger.debug("event stream of %s failed: %s", self.config.name, failure.text)
                if engine is not None:
                    engine.close()
                engine = None
            finally:
                if self._stream is not None:
                    self._stream.close()
                    self._stream = None
            self.mailbox.put(EngineState(self.config.name, False))
            self._stopped.wait(delay)
            delay = min(delay * 2, _MOST_DELAY)
        if engine is not None:
            engine.close()


def _event_time(event: Dict[str, Any]) -> float:
    """The engine's time of an event, in epoch seconds (0 when it has none)."""
    return float(event.get("timeNano", 0)) / 1e9 or float(event.get("time", 0))


def _docker_event(event: Dict[str, Any]) -> Optional[DockerEvent]:
    """The note of a decoded event of the engine (None for one we do not follow)."""
    action = event.get("Action") or event.get("status")
    actor = event.get("Actor", {})
    container_id = event.get("id") or actor.get("ID")
    if action not in _docker.CONTAINER_EVENTS or not container_id:
        return None
    exit_code = None
    if action == "die":
        code = actor.get("Attributes", {}).get("exitCode")
        exit_code = int(code) if code is not None else None
    return DockerEvent(action, container_id, exit_code, _event_time(event) or time.time())


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
