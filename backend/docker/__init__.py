"""The Docker layer: the one place where an engine is called.

Owns :class:`Engine` (one per process and engine: version negotiation, every call, every
error translated into :class:`DockerFailure`, which carries the reason a job ends with), the
container definition (limits, hardening, labels, the warm gate), the HTTP/1.1 client over
unix sockets, TCP, TLS and ssh (``docker system dial-stdio``), the attach's frames and the
event stream, the writing of a job's input without blocking, and the taking of a warm
container over TLS. Callers see :class:`DockerFailure` and never a transport exception. Called by the submitters, the
waiters, the command line and the JobManager's image builds; docker-py is not used.
"""
from __future__ import annotations

from backend.docker._client import (CONTAINER_EVENTS, DockerFailure, EVENTS_IDLE_TIMEOUT, Engine,
                                    EventStream, LABEL_JOB, LABEL_MANAGER, OutputStream, STDERR,
                                    STDOUT, adopt_stream, connect, container_name,
                                    container_options, demultiplex, is_not_found)
from backend.docker._actions import (build_image, create_and_start, dead_managers_containers,
                                        fill, manager_containers, remove_containers,
                                        take_warm)
from backend.docker._definition import GATE_LINE
from backend.docker._features import unreported_oom
from backend.docker._input import (InputWriter, read_input, start_writer, stop_writer,
                                   write_within)

__all__ = ["CONTAINER_EVENTS", "DockerFailure", "EVENTS_IDLE_TIMEOUT", "Engine", "EventStream", "GATE_LINE", "InputWriter", "LABEL_JOB", "LABEL_MANAGER", "OutputStream", "STDERR", "STDOUT", "adopt_stream", "build_image", "connect", "container_name", "container_options", "create_and_start", "dead_managers_containers", "demultiplex", "fill", "is_not_found", "manager_containers", "read_input", "remove_containers", "start_writer", "stop_writer", "take_warm", "unreported_oom", "write_within"]
