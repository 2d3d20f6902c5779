"""The demo: about forty submissions of a small shell exercise, graded over one or more engines.

Owns the demo's images and its submissions. Its files ship as package data (``backend/cli/demo``:
``busybox/`` the base image, ``containers/grader/`` the grader), so an installed package runs
it in any folder: :class:`Demo` copies them into a temporary folder, builds the base image from
the host's static busybox (``/bin/busybox`` of busybox-static: no registry is needed) and the
grader on top, through :mod:`backend.docker._client` and :meth:`JobManager.build_images`, then grades.

Called by :mod:`backend.cli` (``jobmanager demo``), which picks the engines and prints; all of
it runs in the caller's thread.
"""
from __future__ import annotations

import logging
import os
import random
import shutil
import tempfile
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from types import TracebackType
from typing import Any, Iterable, Iterator, List, Optional, Sequence, Tuple, Type

from backend import docker
from backend.model import InstanceConfig, Result, Task
from backend.job_manager import JobManager
from backend.job_manager_buffer import JobManagerBuffer

logger = logging.getLogger("backend")

#: The base image's tag; the grader's Dockerfile names it in its ``FROM`` line.
BASE_IMAGE = "backend-test-busybox"
#: The host's static busybox, copied into the base image.
BUSYBOX_BINARY = "/bin/busybox"
#: ``container_prefix`` of every engine in the demo (the grader is ``djm-demo-grader``).
DEMO_PREFIX = "djm-demo-"
#: The outcomes a demo run must show.
EXPECTED_OUTCOMES = ("success", "failed", "timeout", "overflow", "crash")

#: Shell snippets for "print the sum of $1 and $2".
RIGHT = ["echo $(($1 + $2))", "expr $1 + $2", "echo $(($2 + $1))"]
WRONG = ["echo $(($1 - $2))", "echo $(($1 * $2))", "echo $1$2", "echo $(($1 + $2 + 1))"]


class DemoError(Exception):
    """The demo cannot run; the message says why (its first line is what a user needs)."""


@dataclass(frozen=True)
class Submission:
    """One job of the demo: ``label`` says what it shows ("answer" for a plain answer)."""

    label: str
    task: Task
    inputdata: object


def submissions(count: int = 40) -> List[Submission]:
    """Right and wrong answers plus one of each kind of misbehaviour, ``count`` in all (the
    same ones every time)."""
    rng = random.Random(7)
    grader = Task("grader")
    special = [
        ("loops forever", Task("grader", limits={"time": 1}), "while :; do :; done"),
        ("eats memory", Task("grader", limits={"memory": 20}),
         "x=$(yes | head -c 300000000); echo ${#x}"),
        ("prints without end", Task("grader", limits={"output": 10000}), "yes >&2"),
        ("missing image", Task("no-such-grader"), "echo $(($1 + $2))"),
        ("broken grader", Task("grader", command=[
            "sh", "-c", "cat > /dev/null; echo 'grader: segmentation fault' >&2; exit 139"]),
         "echo $(($1 + $2))"),
    ]
    jobs = []
    for i in range(count - len(special)):
        code = rng.choice(RIGHT) if i % 3 else rng.choice(WRONG)
        jobs.append(Submission("answer", grader, {"code": code, "a": rng.randint(-50, 99),
                                                  "b": rng.randint(0, 99)}))
    for position, (label, task, code) in zip((3, 9, 15, 21, 27), special):
        jobs.insert(position, Submission(label, task, {"code": code, "a": 1, "b": 2}))
    return jobs


def missing_outcomes(statuses: Iterable[str]) -> List[str]:
    """The outcomes of :data:`EXPECTED_OUTCOMES` that ``statuses`` do not show."""
    seen = set(statuses)
    return [status for status in EXPECTED_OUTCOMES if status not in seen]


def copy_demo_files(target: Path) -> None:
    """Copies the package data ``backend/cli/demo`` into ``target`` (any loader: read, not linked)."""
    _copy_tree(resources.files("backend.cli").joinpath("demo"), target)


def _copy_tree(source: "resources.abc.Traversable", target: Path) -> None:
    target.mkdir(parents=True, exist_ok=True)
    for entry in source.iterdir():
        if entry.is_dir():
            if entry.name != "__pycache__":
                _copy_tree(entry, target / entry.name)
        else:
            (target / entry.name).write_bytes(entry.read_bytes())


def build_base_image(config: InstanceConfig, context: Path) -> None:
    """Builds :data:`BASE_IMAGE` on the engine from the Dockerfile in ``context`` and the
    host's :data:`BUSYBOX_BINARY`; without that binary, the engine must have the image.

    Raises:
        DemoError: the build failed, or neither the binary nor the image is there.
    """
    if os.path.exists(BUSYBOX_BINARY):
        shutil.copy(BUSYBOX_BINARY, context / "busybox")
        error = docker.build_image(config, str(context), BASE_IMAGE)
        if error:
            raise DemoError(f"cannot build {BASE_IMAGE} on {config.name}: {error}")
        return
    try:
        with docker.connect(config) as engine:
            present = engine.image_exists(BASE_IMAGE)
    except docker.DockerFailure as failure:
        raise DemoError(failure.text) from None
    if not present:
        raise DemoError(f"the engine {config.name} has no image {BASE_IMAGE}, and it cannot be "
                        f"built here: install busybox-static (for {BUSYBOX_BINARY})")


class Demo:
    """One run of the demo over the engines ``urls`` (each a URL, or a ``docker_instances``
    dict): a context manager that holds the demo's files (a temporary folder) and a
    :class:`JobManager`, closed on exit."""

    def __init__(self, urls: Sequence[Any]) -> None:
        self.engines = [dict(url) if isinstance(url, dict) else {"server_url": url}
                        for url in urls]
        self.root = Path()  # the demo's files, once entered
        self._folder: Optional[tempfile.TemporaryDirectory[str]] = None
        self._manager: Optional[JobManager] = None

    @property
    def manager(self) -> JobManager:
        if self._manager is None:
            raise RuntimeError("Demo is used outside its with block")
        return self._manager

    def __enter__(self) -> "Demo":
        self._folder = tempfile.TemporaryDirectory(prefix="djm-demo-")
        self.root = Path(self._folder.name)
        copy_demo_files(self.root)
        instances = [dict(engine, container_prefix=DEMO_PREFIX, time_between_polls=0.25)
                     for engine in self.engines]
        try:
            self._manager = JobManager(instances,
                                       containers_directory=str(self.root / "containers"))
        except BaseException:
            self._folder.cleanup()
            raise
        return self

    def __exit__(self, kind: Optional[Type[BaseException]], error: Optional[BaseException],
                 traceback: Optional[TracebackType]) -> None:
        try:
            if self._manager is not None:
                self._manager.close(wait=error is None)
        finally:
            if self._folder is not None:
                self._folder.cleanup()

    def build(self) -> None:
        """Builds the base image, then the grader, on every engine.

        Raises:
            DemoError: a build failed (the first failure, in one line).
        """
        from backend.model import parse_instances

        for config in parse_instances(self.engines):
            build_base_image(config, self.root / "busybox")
        for engine, report in self.manager.build_images().items():
            for tag, error in report.items():
                if error:
                    raise DemoError(f"building {tag} on {engine} failed: {error}")

    def grade(self, jobs: Sequence[Submission], timeout: float
              ) -> Iterator[Tuple[Submission, Result]]:
        """Submits ``jobs`` and yields each with its result, in the order they end.

        Raises:
            TimeoutError: jobs are still running after ``timeout`` seconds.
        """
        buffer = JobManagerBuffer(self.manager)
        by_id = {buffer.new_job(job.task, job.inputdata): job for job in jobs}
        for job_id, result in buffer.as_completed(timeout=timeout):
            yield by_id[job_id], result
