"""TODO: what backend.model offers the rest of the package."""
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
