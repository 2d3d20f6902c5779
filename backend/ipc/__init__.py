"""What crosses between a JobManager's threads and processes.

Owns every message (small named types, one table of sender and receiver in
:mod:`backend.ipc._messages`), the :class:`Mailbox` that carries in-process messages to a
thread waiting on pipes, the :class:`Waitset` every loop waits on, :class:`Handlers` (the one
way a loop hands a message to its handler, by type), :func:`send` and :func:`receive` (the one
pair that sends a message with the file descriptors it carries), and what every child process
shares (the lifeline that ends it with the manager, its logging, its start). Used by the
dispatcher, the submitters and the waiters alike.
"""
from __future__ import annotations

from backend.ipc._child import configure_logging, exit_with_parent, is_running, start_process
from backend.ipc._messages import (Close, ContainerSeen, DockerEvent, EngineLoad, EngineState,
                                   EventsCovered, Exit, Handlers, JobEnded, KillAll, KillJob,
                                   KillRunning, Mailbox, NewJob, OutputOverflow, Probe, Removal,
                                   Remove, RemoveContainer, RemoveLeftovers, Removed, StartFailed,
                                   Started, Submit, Sweep, WarmStartFailed, WarmStarted, Watch,
                                   carried, receive, send)
from backend.ipc._waitset import Waitset, readable

__all__ = ["Handlers", "WarmStartFailed", "WarmStarted", "carried", "receive", "send", "Close", "ContainerSeen", "DockerEvent", "EngineLoad", "EngineState", "EventsCovered", "Exit", "JobEnded", "KillAll", "KillJob", "KillRunning", "Mailbox", "NewJob", "OutputOverflow", "Probe", "Removal", "Remove", "RemoveContainer", "RemoveLeftovers", "Removed", "StartFailed", "Started", "Submit", "Sweep", "Waitset", "Watch", "configure_logging", "exit_with_parent", "is_running", "readable", "start_process"]
