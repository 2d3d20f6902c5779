"""TODO: what backend.docker offers the rest of the package."""
from __future__ import annotations

from backend.docker._client import (CONTAINER_EVENTS, DockerFailure, EVENTS_IDLE_TIMEOUT, Engine,
                                    EventStream, LABEL_JOB, LABEL_MANAGER, OutputStream, STDERR,
                                    STDOUT, adopt_stream, build_image, connect, container_name,
                                    container_options, create_and_start, dead_managers_containers,
                                    demultiplex, fill, is_not_found, manager_containers,
                                    remove_containers)
from backend.docker._features import unreported_oom
from backend.docker._input import (InputWriter, receive_input, start_writer, stop_writer,
                                   write_within)

__all__ = ["CONTAINER_EVENTS", "DockerFailure", "EVENTS_IDLE_TIMEOUT", "Engine", "EventStream", "InputWriter", "LABEL_JOB", "LABEL_MANAGER", "OutputStream", "STDERR", "STDOUT", "adopt_stream", "build_image", "connect", "container_name", "container_options", "create_and_start", "dead_managers_containers", "demultiplex", "fill", "is_not_found", "manager_containers", "receive_input", "remove_containers", "start_writer", "stop_writer", "unreported_oom", "write_within"]
