"""Helpers shared by the test files (the fixtures are in ``conftest.py``): the engines'
root, the test image, docker-py clients for checking from outside, tasks, and waits.

The tests are in two folders: ``unit/`` (no engine: pure units, fakes, fuzzing) and
``engines/`` (real engines, which the fixtures start and stop)."""
from __future__ import annotations

import os
import sys
import time
from pathlib import Path
from typing import Callable

import docker

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "scripts"))
from engines import docker_client  # noqa: E402

from backend import Task  # noqa: E402

ROOT = Path(os.environ.get("BACKEND_TEST_ENGINES_ROOT", "/tmp/djm-test"))
PREFIX = "backend-test-"
IMAGE = "busybox"  # the image is PREFIX + IMAGE (tests/images/busybox)


def api_client(url: str, tls: dict | None = None) -> docker.APIClient:
    """A docker-py client speaking the API version the library negotiates with ``url``
    (``tls``: a TLS engine's client files, as ``VmEngine.client_tls``)."""
    return docker_client(url, tls)


def engine_client(engine) -> docker.APIClient:
    """:func:`api_client` for one of the engines the fixtures start (TLS for the VM)."""
    return api_client(engine.url, getattr(engine, "client_tls", None))


def shell(script: str, **options) -> Task:
    """A busybox task that runs ``script`` with ``sh -c``."""
    return Task(IMAGE, command=["sh", "-c", script], **options)


def ok_script(extra: str = "") -> str:
    return "read line; " + extra + "echo '{\"result\": \"success\"}'"


def our_containers(engines):
    found = []
    for engine in engines:
        if not engine.answers():
            continue
        with engine_client(engine) as client:
            found += client.containers(all=True, filters={"label": "backend.manager"})
    return found



def wait_for(predicate: Callable[[], object], timeout: float, what: str) -> None:
    """Polls ``predicate`` until it is true; fails the test with ``what`` after ``timeout``
    seconds. For states that no event announces (an engine's container list, a flag of the
    dispatcher's thread)."""
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, what
        time.sleep(0.05)


def engine_event(action, container, manager="m1", **attributes):
    """An engine's event of a container of ``manager`` (its label ``backend.manager``), of the
    job named by the container's first three characters (its label ``backend.job``), with
    ``attributes`` (``exitCode``...)."""
    return {"Type": "container", "Action": action, "id": container, "time": 1000,
            "Actor": {"ID": container, "Attributes": {"backend.manager": manager,
                                                      "backend.job": container[:3],
                                                      **attributes}}}


#: Fields of ``run`` that differ between two runs of one job (cold and warm).
VARYING = ("container_id", "duration", "warm")


def comparable(result):
    """A result without what differs between two runs of one job (:data:`VARYING`)."""
    run = {k: v for k, v in result["run"].items() if k not in VARYING}
    return dict(result, run=run)


def warm_ready(manager, engine_name, task=None, files=None, timeout=30):
    """Waits for a warm container on ``engine_name`` (of the shape of ``task`` with
    ``files``, if given), started and waiting in the dispatcher's pool."""
    from backend.dispatch._shapes import shape_of
    from backend.model._files import check_files
    from backend.model._job import JobSpec
    from backend.model._task import snapshot_task
    pool = manager._dispatcher.warm.pool
    shape = None if task is None else shape_of(
        JobSpec("j", snapshot_task(task, None), b"", check_files(files)))
    wait_for(lambda: any(shape in (None, w.shape) for w in pool.ready[engine_name]), timeout,
             "no warm container came")
