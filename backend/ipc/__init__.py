"""TODO: what backend.ipc offers the rest of the package."""
from __future__ import annotations

from backend.ipc._child import configure_logging, exit_with_parent, is_running, start_process
from backend.ipc._messages import (Close, ContainerSeen, DockerEvent, EngineLoad, EngineState,
                                   EventsCovered, Exit, JobEnded, KillAll, KillJob, KillRunning,
                                   Mailbox, NewJob, OutputOverflow, Probe, Removal, Remove,
                                   RemoveContainer, RemoveLeftovers, Removed, StartFailed,
                                   Started, Submit, Sweep, Watch)
from backend.ipc._waitset import Waitset, readable

__all__ = ["Close", "ContainerSeen", "DockerEvent", "EngineLoad", "EngineState", "EventsCovered", "Exit", "JobEnded", "KillAll", "KillJob", "KillRunning", "Mailbox", "NewJob", "OutputOverflow", "Probe", "Removal", "Remove", "RemoveContainer", "RemoveLeftovers", "Removed", "StartFailed", "Started", "Submit", "Sweep", "Waitset", "Watch", "configure_logging", "exit_with_parent", "is_running", "readable", "start_process"]
