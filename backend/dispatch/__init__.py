"""The dispatcher and its bookkeeping: the JobManager's thread at the centre.

Owns :class:`Dispatcher` (the thread: one wait over its mailbox and every child's pipe and
sentinel), and, as plain objects of that thread, placement (the queue, the slots, the choice
of engine), removals (the deleter's bookkeeping), supervision of the children, warm starts
and their pool, and the counters behind ``stats()`` (:class:`Stats`). Used by
:mod:`backend.job_manager`, which builds the dispatcher and gives it the children's entry
points (:class:`ChildMains`).
"""
from __future__ import annotations

from backend.dispatch._dispatcher import Dispatcher
from backend.dispatch._stats import Stats
from backend.dispatch._supervisor import ChildMains

__all__ = ["ChildMains", "Dispatcher", "Stats"]
