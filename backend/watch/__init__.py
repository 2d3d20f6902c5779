"""A waiter's parts: what it knows of the containers of its engine.

Owns :class:`WatchedContainer` (one container until its job's result is reported: its
events, its end, its outputs), :class:`OutputFollower` (the job's own attach, read in the
waiter's main loop), :class:`EventFollower` (the engine's event stream, a thread),
:class:`LoadCounter` (every manager's containers on the engine, a thread) and
:class:`HealthProbe` (a ping with a short deadline, a thread). Used by
:mod:`backend._waiter` only, whose main thread owns what the threads report through its
mailbox.
"""
from __future__ import annotations

from backend.watch._container import PendingEnd, WatchedContainer
from backend.watch._events import EarlyEvents, EventFollower
from backend.watch._link import EngineLink
from backend.watch._limits import over_disk, over_limits
from backend.watch._load import LoadCounter
from backend.watch._probe import HealthProbe, PROBE_TIMEOUT
from backend.watch._follower import OutputFollower, StreamState

__all__ = ["over_disk", "over_limits", "EngineLink", "EarlyEvents", "EventFollower", "HealthProbe", "LoadCounter", "OutputFollower", "PROBE_TIMEOUT", "PendingEnd", "StreamState", "WatchedContainer"]
