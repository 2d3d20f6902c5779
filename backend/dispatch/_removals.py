"""Removals: which containers are to be removed, on which engine, and when.

Owns, per engine, what is to be removed (container ids, or names for containers whose creation
was not confirmed) and the requests by label (:class:`~backend.ipc._messages.Sweep` at start,
:class:`~backend.ipc._messages.RemoveLeftovers` at close), the retries after a back-off, and the
attempts counted (only when the engine answered). Nothing goes to an engine that does not
answer: its removals are held until it answers again. Pure bookkeeping: the clock is passed in
(``now``, :func:`time.monotonic` seconds). The dispatcher thread (:mod:`backend.dispatch._dispatcher`)
owns the one instance and is its only caller; a submitter carries out each request.
"""
from __future__ import annotations

import logging
from typing import Callable, Dict, Iterable, List, NamedTuple, Optional, Tuple, Union

from backend.ipc import Remove, Removal, RemoveLeftovers, Sweep

logger = logging.getLogger("backend")

#: Attempts to remove a container before leaving it to the next start's sweep.
DELETE_TRIES = 6
#: Seconds after which a container whose creation was not confirmed is removed by name again.
UNCONFIRMED_REMOVALS = (2.0, 10.0, 60.0)

#: What waits for a submitter on one engine: a container (id or name), or a label request.
_Pending = Union[str, Sweep, RemoveLeftovers]


class _Retry(NamedTuple):
    due: float
    engine: str
    container: str
    unconfirmed: bool  # a removal by name again, not after a failure


class Removals:
    """What is to be removed, per engine.

    Args:
        engines: the engines' names.
        is_reachable: whether an engine answers (the placement's flag, the one record of it).
    """

    def __init__(self, engines: Iterable[str], is_reachable: Callable[[str], bool]):
        self._pending: Dict[str, List[_Pending]] = {engine: [] for engine in engines}
        self._is_reachable = is_reachable
        self._retries: List[_Retry] = []
        self._tries: Dict[str, int] = {}  # container -> failed attempts the engine answered
        self._leftovers_asked = False

    # -- what to remove ------------------------------------------------------------------
    def add(self, engine: str, container: str) -> None:
        """Removes ``container`` (an id or a name) from ``engine``."""
        self._pending[engine].append(container)

    def sweep(self, engine: str) -> None:
        """Removes the containers of dead managers from ``engine`` (at start)."""
        self._pending[engine].append(Sweep(engine))

    def leftovers(self, engine: str) -> None:
        """Removes every container of this manager still on ``engine`` (at close)."""
        self._pending[engine].append(RemoveLeftovers(engine))

    def attempt_failed(self, engine: str, container_id: Optional[str], name: Optional[str],
                       maybe_created: bool, now: float) -> None:
        """Removes the container of a job's attempt that failed: by id when the engine
        reported it, else by name when the engine may have created it all the same."""
        if container_id:
            self.add(engine, container_id)
        elif maybe_created and name:
            self.add_unconfirmed(engine, name, now)

    def add_unconfirmed(self, engine: str, name: str, now: float) -> None:
        """Removes a container that the engine may have created without our hearing of it
        (its create went on when the submitter died, or the answer was lost), by the name it
        was given; again after each of :data:`UNCONFIRMED_REMOVALS`, as the engine may finish
        creating it after a first try finds nothing."""
        self.add(engine, name)
        for delay in UNCONFIRMED_REMOVALS:
            self._retries.append(_Retry(now + delay, engine, name, True))

    # -- requests for submitters ---------------------------------------------------------
    def request(self, engine: str) -> Optional[Removal]:
        """The next request for ``engine``, if it answers and something waits; it stays
        pending until :meth:`sent`. A request by label goes alone, containers all at once."""
        pending = self._pending[engine]
        if not pending or not self._is_reachable(engine):
            return None
        first = pending[0]
        if isinstance(first, (Sweep, RemoveLeftovers)):
            return first
        return Remove(engine, tuple(c for c in pending if isinstance(c, str)))

    def sent(self, request: Removal) -> None:
        """``request`` (from :meth:`request`) reached a submitter."""
        pending = self._pending[request.engine]
        if isinstance(request, Remove):
            pending[:] = [c for c in pending if not isinstance(c, str)]
        else:
            pending.remove(request)

    def returned(self, request: Removal) -> None:
        """The submitter that held ``request`` died: it is pending again."""
        if isinstance(request, Remove):
            self._pending[request.engine].extend(request.containers)
        else:
            self._pending[request.engine].append(request)

    def finished(self, request: Removal, failed: Iterable[str], reachable: bool,
                 now: float) -> None:
        """A submitter's reply to ``request``: what it could not remove is held until the
        engine answers again if it did not answer (no attempt counted), else retried after a
        back-off, :data:`DELETE_TRIES` attempts in all."""
        failed = list(failed)
        engine = request.engine
        if isinstance(request, Remove):
            for container in set(request.containers) - set(failed):
                self._tries.pop(container, None)
        if not reachable:
            self._pending[engine].extend(failed)
            return
        for container in failed:
            tries = self._tries.get(container, 0) + 1
            if tries >= DELETE_TRIES:
                self._tries.pop(container, None)
                logger.warning("could not remove container %s on %s; the next JobManager "
                               "start removes it", container, engine)
                continue
            self._tries[container] = tries
            self._retries.append(_Retry(now + 0.25 * 2 ** tries, engine, container, False))

    # -- time ----------------------------------------------------------------------------
    def next_due(self) -> Optional[float]:
        """When the next retry is due (for the dispatcher's wait), or None."""
        return min((retry.due for retry in self._retries), default=None)

    def release_due(self, now: float) -> None:
        """Makes the retries due by ``now`` pending."""
        due = [retry for retry in self._retries if retry.due <= now]
        if due:
            self._retries = [retry for retry in self._retries if retry.due > now]
            for retry in due:
                self.add(retry.engine, retry.container)

    # -- close ---------------------------------------------------------------------------
    def pending_on_reachable(self) -> bool:
        """Whether something waits for an engine that answers."""
        return any(pending and self._is_reachable(engine)
                   for engine, pending in self._pending.items())

    def left(self) -> List[Tuple[str, str]]:
        """``(engine, container)`` still to remove: pending, or retried after a failure (a
        removal by name again is left only where its engine does not answer, as the check
        for leftovers covers the others)."""
        return [(r.engine, r.container) for r in self._retries
                if not r.unconfirmed or not self._is_reachable(r.engine)] + [
            (engine, c) for engine, pending in self._pending.items() for c in pending
            if isinstance(c, str)]

    def ask_for_leftovers(self) -> bool:
        """Once, at close: asks every engine that answers for the containers of this manager
        still there. True if it asked (the requests are pending)."""
        if self._leftovers_asked:
            return False
        self._leftovers_asked = True
        reachable = [engine for engine in self._pending if self._is_reachable(engine)]
        for engine in reachable:
            self.leftovers(engine)
        return bool(reachable)

    def give_up(self) -> None:
        """The close deadline passed: what is :meth:`left` is left, with a warning each."""
        for engine, container in dict.fromkeys(self.left()):  # each once
            logger.warning("could not remove container %s on %s before the close deadline; "
                           "the next JobManager start removes it", container, engine)

    def pending(self, engine: str) -> List[_Pending]:
        """What waits for ``engine`` (a copy; for the tests and the logs)."""
        return list(self._pending[engine])

    def retries(self) -> List[Tuple[float, str, str]]:
        """``(due, engine, container)`` of every retry to come (for the tests and the logs)."""
        return [(r.due, r.engine, r.container) for r in self._retries]
