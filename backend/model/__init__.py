"""The model: what a job is and what comes out of it, as plain data and pure functions.

Owns the task (:class:`Task`, :class:`LocalCheck`, the limits and the picklable
:class:`TaskSnapshot` that crosses to the children), a job's record (:class:`Job`, its
:class:`JobState` and :class:`JobSpec`), a job's files and outputs, the result dicts
(how a container ended becomes a result, the merge with the local check), the configuration
of the engines (:class:`InstanceConfig`, ``from_config`` files, the docker CLI's environment
and contexts). No I/O but reading configuration files, no threads: every other subpackage
builds on it, and it imports none of them. The user's pages: docs/configuration.rst,
docs/protocol.rst, docs/results.rst, docs/running-programs.rst.
"""
from __future__ import annotations

from backend.model._config import (InstanceConfig, load_config, parse_instances, parse_ssh_url,
                                    settings_from)
from backend.model._environment import DEFAULT_URL, EnvEngine, resolve
from backend.model._files import OutputsReader, check_files, upload
from backend.model._job import Job, JobSpec, JobState, MAX_CHILDREN_LOST, Outputs
from backend.model._results import (ContainerEnd, Result, check_json, complete, ended_result,
                                    failure_result, join_head_and_tail, lost_result, make_run,
                                    merge)
from backend.model._task import (DEFAULT_LIMITS, LocalCheck, Task, TaskSnapshot, read_jobs_file,
                                 snapshot_task)

__all__ = ["ContainerEnd", "DEFAULT_LIMITS", "DEFAULT_URL", "EnvEngine", "InstanceConfig", "Job", "JobSpec", "JobState", "LocalCheck", "MAX_CHILDREN_LOST", "Outputs", "OutputsReader", "Result", "Task", "TaskSnapshot", "check_files", "check_json", "complete", "ended_result", "failure_result", "join_head_and_tail", "load_config", "lost_result", "make_run", "merge", "parse_instances", "parse_ssh_url", "read_jobs_file", "resolve", "settings_from", "snapshot_task", "upload"]
