"""Fixtures: two private Docker engines for the session, a JobManager on them, and a check,
around every test, that no container, child process or thread outlives it."""
from __future__ import annotations

import os
import sys
import threading
import time
from pathlib import Path

import docker
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "scripts"))
from engines import PrivateEngine, build_busybox_image, ensure_packages  # noqa: E402

from backend import JobManager, Task  # noqa: E402

ROOT = Path(os.environ.get("BACKEND_TEST_ENGINES_ROOT", "/tmp/djm-test"))
PREFIX = "backend-test-"
IMAGE = "busybox"  # the image is PREFIX + IMAGE (tests/images/busybox)


@pytest.fixture(scope="session")
def engines():
    """Two private engines, e1 and e2, with the busybox test image."""
    ensure_packages()
    started = [PrivateEngine(name, ROOT / name) for name in ("e1", "e2")]
    for engine in started:
        if not engine.answers():
            engine.start()
        build_busybox_image(engine.url, PREFIX + IMAGE)
        with docker.APIClient(base_url=engine.url, version="1.41") as client:
            for container in client.containers(all=True, filters={"label": "backend.manager"}):
                client.remove_container(container["Id"], force=True)  # an earlier run's
    yield started
    for engine in started:
        engine.stop()


@pytest.fixture
def instances(engines):
    """``docker_instances`` for both engines."""
    return [{"server_url": engine.url, "name": engine.name, "container_prefix": PREFIX,
             "time_between_polls": 0.2} for engine in engines]


@pytest.fixture
def manager(instances):
    with JobManager(instances) as job_manager:
        yield job_manager


def shell(script: str, **options) -> Task:
    """A busybox task that runs ``script`` with ``sh -c``."""
    return Task(IMAGE, command=["sh", "-c", script], **options)


def ok_script(extra: str = "") -> str:
    return "read line; " + extra + "echo '{\"result\": \"success\"}'"


# -- leak check --------------------------------------------------------------------------

def _descendants(pid: int):
    children = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as stream:
                fields = stream.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if fields[0] != "Z":
            children.setdefault(int(fields[1]), []).append(int(entry))
    found, todo = set(), [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.add(child)
            todo.append(child)
    return found


def _interpreter_wide():
    """multiprocessing's own forkserver and resource tracker (excepted by SPEC §3)."""
    pids = set()
    from multiprocessing import forkserver, resource_tracker
    for pid in (getattr(forkserver._forkserver, "_forkserver_pid", None),
                getattr(resource_tracker._resource_tracker, "_pid", None)):
        if pid:
            pids.add(pid)
    return pids


def our_containers(engines):
    found = []
    for engine in engines:
        if not engine.answers():
            continue
        with docker.APIClient(base_url=engine.url, version="1.41") as client:
            found += client.containers(all=True, filters={"label": "backend.manager"})
    return found


def _wait_for(predicate, timeout: float):
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if not value or time.monotonic() > deadline:
            return value
        time.sleep(0.05)


@pytest.fixture(autouse=True)
def no_leaks(request):
    """Fails a test that leaves a container, a child process or a thread behind."""
    engines = request.getfixturevalue("engines") if "engines" in request.fixturenames else []
    threads_before = set(threading.enumerate())
    processes_before = _descendants(os.getpid())
    yield
    leaked_threads = _wait_for(lambda: [t for t in threading.enumerate()
                                        if t not in threads_before and t.is_alive()], 5)
    leaked = _wait_for(lambda: _descendants(os.getpid()) - processes_before
                       - _interpreter_wide() - {p for e in engines if e.pid
                                                for p in [e.pid] + list(_descendants(e.pid))},
                       5)
    containers = our_containers(engines)
    assert not leaked_threads, f"threads leaked: {leaked_threads}"
    assert not leaked, f"processes leaked: {sorted(leaked)}"
    assert not containers, f"containers leaked: {[c['Names'] for c in containers]}"
