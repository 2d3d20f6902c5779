"""The load counter of a waiter: how many containers every manager runs on one engine.

Several managers (the workers of a web application, several machines) may share an engine;
its ``max_concurrent_jobs`` bounds all their containers (docs/quickstart.rst). Each waiter
(:mod:`backend._waiter`) owns one :class:`LoadCounter`, which counts the containers labelled
``backend.manager`` (by any manager, warm ones included) that are created or running, and
puts an :class:`~backend.ipc._messages.EngineLoad` in the waiter's mailbox whenever the count
changes (with this manager's containers by job, and how many other managers had a container
there in the last :data:`RECENT` seconds: a manager whose jobs wait has none running, yet
shares the engine); the waiter forwards it to the dispatcher, whose placement uses it.

Its events come from the waiter's one :class:`~backend.watch._events.EventFollower`, which routes
the ``create``, ``die`` and ``destroy`` (Podman: ``remove``) events of every manager's
containers here (:meth:`LoadCounter.put`, on the follower's thread). The counter's
own thread lists them at each subscription of the follower (its
:class:`~backend.ipc._messages.EventsCovered`) and every :data:`RECONCILE_EVERY` seconds,
catching lost events. The events that come while a listing is on its way are applied again
over its answer, so a listing never undoes a newer event. Both threads touch the count under
one lock; the mailbox is the only way out.

A count that differs from the last one sent only by this manager's containers that ended (the
other managers' count unchanged) is not sent at once: the dispatcher learns of their end from
the waiter, and placement reads the other managers' containers (``running - len(ours)``, the
same) and whether a job's container was counted (it was). It goes with the next change, or at
the next listing, within :data:`RECONCILE_EVERY` seconds (``engine_running`` of the stats).
"""
from __future__ import annotations

import logging
import threading
import time
from typing import Any, Dict, List, Optional, Tuple

from backend import docker
from backend.model import InstanceConfig
from backend.ipc import ContainerSeen, EngineLoad, EngineState, EventsCovered, Mailbox

logger = logging.getLogger("backend")

#: Seconds between two listings of every manager's containers.
RECONCILE_EVERY = 2.0
#: Seconds another manager counts as sharing the engine after its last container there.
RECENT = 10.0
#: The container states that hold a slot of the engine.
ACTIVE_STATES = ("created", "running", "restarting", "paused")


class LoadCounter:
    """Counts every manager's active containers on one engine; see the module docstring.

    Args:
        config: the engine.
        manager_id: this manager's id (its containers are also counted apart).
        mailbox: the waiter's; receives :class:`~backend.ipc._messages.EngineLoad`.
    """

    def __init__(self, config: InstanceConfig, manager_id: str, mailbox: Mailbox):
        self.config = config
        self.manager_id = manager_id
        self.mailbox = mailbox
        self._lock = threading.Lock()
        self._active: Dict[str, Tuple[str, str]] = {}  # container id -> (manager, job)
        self._during_listing: Optional[List[ContainerSeen]] = None
        self._reported: Optional[EngineLoad] = None
        self._last_seen: Dict[str, float] = {}  # other manager -> time.monotonic() seen
        self._stopped = threading.Event()
        self._engine: Optional[docker.Engine] = None  # the listing's (one lists at a time)
        self._list_now = threading.Event()  # a listing is due at once (or we stop)

    def __enter__(self) -> "LoadCounter":
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def start(self) -> None:
        threading.Thread(target=self._reconcile_every, name="backend-load",
                         daemon=True).start()

    def stop(self) -> None:
        self._stopped.set()
        self._list_now.set()
        with self._lock:
            engine, self._engine = self._engine, None
            if self._during_listing is None and engine is not None:
                engine.close()

    # -- from the event thread -----------------------------------------------------------
    def put(self, note: Any) -> None:
        """A note of the waiter's event follower (its thread)."""
        if isinstance(note, ContainerSeen):
            with self._lock:
                changed = _apply(self._active, note)
                if self._during_listing is not None:
                    self._during_listing.append(note)
            if changed:  # not a destroy after its die
                self._report()
        elif isinstance(note, EventsCovered):  # a new subscription: look at the engine now
            self._list_now.set()
        elif isinstance(note, EngineState) and not note.reachable:
            logger.debug("load of %s: event stream lost", self.config.name)

    # -- listings ------------------------------------------------------------------------
    def _reconcile_every(self) -> None:
        """The counter's thread: lists when the follower subscribes, and every while."""
        while True:
            self._list_now.wait(RECONCILE_EVERY)
            self._list_now.clear()
            if self._stopped.is_set():
                return
            self.reconcile()
            self._report(deferred=True)  # another manager may no longer count as sharing

    def reconcile(self) -> None:
        """Lists every manager's containers and counts the active ones (any thread)."""
        with self._lock:
            if self._during_listing is not None:
                return  # another thread lists right now
            self._during_listing = []
        listed: Optional[List[Dict[str, Any]]] = None
        try:
            if self._engine is None:
                self._engine = docker.connect(self.config)
            listed = self._engine.containers(docker.LABEL_MANAGER)
        except docker.DockerFailure as failure:
            logger.debug("load of %s: listing failed: %s", self.config.name, failure.text)
            if self._engine is not None:
                self._engine.close()
            self._engine = None
        with self._lock:
            seen, self._during_listing = self._during_listing or [], None
            if listed is None:
                return
            active = {c["Id"]: _labels(c) for c in listed if c.get("State") in ACTIVE_STATES}
            for note in seen:
                _apply(active, note)
            self._active = active
        self._report()

    def _report(self, deferred: bool = False) -> None:
        """Sends the count if it changed (``deferred``: also the ends of ours held back)."""
        now = time.monotonic()
        with self._lock:
            for manager in {m for m, _ in self._active.values()} - {self.manager_id}:
                self._last_seen[manager] = now
            for manager in [m for m, at in self._last_seen.items() if now - at > RECENT]:
                del self._last_seen[manager]
            load = EngineLoad(self.config.name, len(self._active),
                              frozenset(job for m, job in self._active.values()
                                        if m == self.manager_id), len(self._last_seen))
            if load == self._reported or not deferred and _only_ours_ended(self._reported, load):
                return
            self._reported = load
        self.mailbox.put(load)


def _labels(container: Dict[str, Any]) -> Tuple[str, str]:
    """A listed container's manager and job (its labels)."""
    labels = container.get("Labels") or {}
    return str(labels.get(docker.LABEL_MANAGER)), str(labels.get(docker.LABEL_JOB, ""))


def _apply(active: Dict[str, Tuple[str, str]], note: ContainerSeen) -> bool:
    """Applies an event to the count; returns whether the count changed."""
    if note.action == "create":
        changed = note.container_id not in active
        active[note.container_id] = (note.manager, note.job)
        return changed
    return active.pop(note.container_id, None) is not None  # die, destroy, remove


def _only_ours_ended(reported: Optional[EngineLoad], load: EngineLoad) -> bool:
    """Whether ``load`` differs from ``reported`` only by this manager's containers that
    ended: nothing that placement reads (see the module docstring)."""
    return (reported is not None and load.other_managers == reported.other_managers
            and load.ours < reported.ours
            and reported.running - load.running == len(reported.ours) - len(load.ours))
