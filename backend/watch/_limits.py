"""The limits a waiter's poll enforces from outside the container: wall time (``hard_time``),
CPU time (``time``: ``RLIMIT_CPU`` counts per process, so the poll also reads the cgroup's
total, through the engine's stats) and disk (``disk``: the size of the container's writable
layer, see docs/security.rst). Pure but for the engine calls it is given; called by the main
thread of :mod:`backend._waiter`, which kills what these return.
"""
from __future__ import annotations

import logging
import time
from typing import Callable, Iterable, List, Tuple

from backend import docker
from backend.watch._container import WatchedContainer

logger = logging.getLogger("backend")


def over_limits(watched: List[WatchedContainer], connected: Callable[[], docker.Engine],
                period: float) -> List[Tuple[WatchedContainer, str]]:
    """The containers over a limit, each with the reason it is killed for: ``wall_time``,
    ``cpu_time``, then ``disk`` (checked when due; ``period``: the poll's)."""
    now = time.time()
    over = [(one, "wall_time") for one in watched
            if one.ending.reason is None and now - one.started_at >= one.limits["hard_time"]]
    seen = {one.container_id for one, _ in over}
    over += [(one, "cpu_time") for one in _over_cpu_time(
        [w for w in watched if w.container_id not in seen], connected, now)]
    seen |= {one.container_id for one, _ in over}
    over += [(one, "disk") for one in over_disk(
        [w for w in watched if w.container_id not in seen], connected, period, time.monotonic())]
    return over


def over_disk(candidates: List[WatchedContainer], connected: Callable[[], docker.Engine],
              period: float, now: float, at_end: bool = False) -> List[WatchedContainer]:
    """The disk watch: the candidates whose writable layer holds more than their ``disk``
    limit, each measured when its check is due (at ``now``, monotonic; ``at_end``: now,
    the container having ended). An engine's error skips a check (a container that ended
    meanwhile, or trouble the listing tells)."""
    over = []
    for one in candidates:
        if one.ending.reason is not None:
            continue
        if at_end:
            one.disk_due_at = 0.0
        try:
            if one.check_disk(connected(), period, now):
                over.append(one)
        except docker.DockerFailure as failure:
            logger.debug("size of %s: %s", one.container_id, failure.text)
    return over


def _over_cpu_time(watched: Iterable[WatchedContainer], connected: Callable[[], docker.Engine],
                   now: float) -> List[WatchedContainer]:
    """The containers whose processes together used their CPU time (cgroup stats)."""
    over = []
    for one in list(watched):
        if not one.cpu_due(now):
            continue
        try:
            used = connected().cpu_seconds(one.container_id)
        except docker.DockerFailure as failure:  # ended meanwhile, or engine trouble
            logger.debug("stats %s: %s", one.container_id, failure.text)
            continue
        if used >= one.limits["time"]:
            over.append(one)
    return over
