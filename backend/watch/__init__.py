"""TODO: what backend.watch offers the rest of the package."""
from __future__ import annotations

from backend.watch._container import PendingEnd, WatchedContainer
from backend.watch._events import EarlyEvents, EventFollower
from backend.watch._load import LoadCounter
from backend.watch._probe import HealthProbe, PROBE_TIMEOUT
from backend.watch._stream import OutputFollower, StreamState

__all__ = ["EarlyEvents", "EventFollower", "HealthProbe", "LoadCounter", "OutputFollower", "PROBE_TIMEOUT", "PendingEnd", "StreamState", "WatchedContainer"]
