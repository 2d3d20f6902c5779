"""TODO: what backend.dispatch offers the rest of the package."""
from __future__ import annotations

from backend.dispatch._dispatcher import Dispatcher
from backend.dispatch._stats import Stats
from backend.dispatch._supervisor import ChildMains

__all__ = ["ChildMains", "Dispatcher", "Stats"]
