"""Fixtures: two private Docker engines for the session, a JobManager on them, and a check,
around every test, that no container, child process or thread outlives it.

The engine matrix (``tests/engines/test_engine_matrix.py``): ``engine_kind`` is parametrised over the
kinds of ``scripts/engines.py`` (Docker 20.10, Docker 28.5 at API floor 1.44, Podman 4.3) and
gives two engines of that kind, started once for the session (one kind at a time). A kind
whose tools cannot be installed ends the session with one line. At the session's end no
dockerd, containerd, shim, Podman service, conmon or qemu under the engines root may be left.

The cgroup v2 engine (``vm_engine``): a Debian 12 VM under qemu (``scripts/engines.py``
``VmEngine``), booted once for the session by the tests that ask for it
(``tests/engines/test_cgroup2.py``), reached over TCP with verified TLS."""
from __future__ import annotations

import os
import sys
import threading
import time
from pathlib import Path

import docker
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "scripts"))
from engines import (KIND_PREFIXES, KINDS, VM_KIND, EngineError, PrivateEngine,  # noqa: E402
                     VmEngine, api_version, build_busybox_image, docker_client, ensure_kinds,
                     ensure_packages, make_engine)

from backend import JobManager
from backend.ipc._child import is_running
from helpers import (IMAGE, PREFIX, ROOT, api_client, descendants,  # noqa: E402
                     engine_client, our_containers, shell)


def pytest_collection_modifyitems(items):
    """The engine-free unit tests (``tests/unit/``) get the marker ``unit``."""
    for item in items:
        if item.path.parent.name == "unit":
            item.add_marker(pytest.mark.unit)


@pytest.fixture(scope="session")
def engines():
    """Two private engines, e1 and e2, with the busybox test image."""
    ensure_packages()
    started = [PrivateEngine(name, ROOT / name) for name in ("e1", "e2")]
    for engine in started:
        if not engine.answers():
            engine.start()
        _prepare(engine)
    yield started
    for engine in started:
        engine.stop()


@pytest.fixture(scope="session")
def python_image(engines):
    """The python image (``scripts/images.py``: Debian 12 with ``python3``) on e1 and e2, as
    the environment ``python``; its root file system is built once (cached) when missing."""
    from images import load_python_image
    for engine in engines:
        load_python_image(engine.url, PREFIX + "python")
    return "python"


def _prepare(engine) -> None:
    """The busybox image on ``engine``, and no container of an earlier run."""
    build_busybox_image(engine.url, PREFIX + IMAGE, tls=getattr(engine, "client_tls", None))
    with engine_client(engine) as client:
        for container in client.containers(all=True, filters={"label": "backend.manager"}):
            client.remove_container(container["Id"], force=True)  # an earlier run's


@pytest.fixture(scope="session", params=KINDS)
def engine_kind(request):
    """``(kind, [two engines of that kind])``; Docker 20.10's are the session's e1 and e2."""
    kind = request.param
    if kind == "docker20":
        yield kind, request.getfixturevalue("engines")
        return
    try:
        ensure_kinds((kind,), docs=False)
    except EngineError as error:
        pytest.exit(f"engine kind {kind}: {error}", returncode=3)
    prefix = KIND_PREFIXES[kind]
    started = [make_engine(kind, f"{prefix}{i}", ROOT / f"{prefix}{i}") for i in (1, 2)]
    try:
        for engine in started:
            engine.start()
            _prepare(engine)
    except EngineError as error:
        for engine in started:
            engine.stop()
        pytest.exit(f"engine kind {kind}: {error}", returncode=3)
    yield kind, started
    for engine in started:
        engine.stop()


@pytest.fixture(scope="session")
def vm_engine():
    """The cgroup v2 engine ``v1``: a VM built once (cached under /var/cache/djm), booted for
    the session, stopped (qemu killed, its disk dropped) at its end."""
    try:
        ensure_kinds((VM_KIND,), docs=False)
    except EngineError as error:
        pytest.exit(f"engine kind {VM_KIND}: {error}", returncode=3)
    engine = VmEngine("v1", ROOT / "v1")
    try:
        if not engine.answers():
            engine.start()
        _prepare(engine)
    except EngineError as error:
        engine.stop()
        pytest.exit(f"engine kind {VM_KIND}: {error}", returncode=3)
    yield engine
    engine.stop()


#: The programs of engines (and what they start) that must not outlive the session.
ENGINE_PROGRAMS = ("dockerd", "containerd", "containerd-shim-runc-v2", "podman", "conmon",
                   "qemu-system-x86_64")


def engine_processes(root: Path = ROOT) -> list:
    """``(pid, command line)`` of every live engine program whose command line names ``root``."""
    marker = str(root) + "/"
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or not is_running(int(entry)):
            continue
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as stream:
                args = [a.decode(errors="replace") for a in stream.read().split(b"\0") if a]
        except OSError:
            continue
        if args and os.path.basename(args[0]) in ENGINE_PROGRAMS \
                and any(marker in a for a in args):
            found.append((int(entry), " ".join(args)[:120]))
    return found


@pytest.fixture(scope="session", autouse=True)
def no_engine_left():
    """After every engine fixture is torn down, no engine process under ROOT may be left."""
    yield
    left = _wait_for(engine_processes, 10)
    assert not left, f"engine processes outlived the test session: {left}"


@pytest.fixture
def instances(engines):
    """``docker_instances`` for both engines."""
    return [{"server_url": engine.url, "name": engine.name, "container_prefix": PREFIX,
             "time_between_polls": 0.2} for engine in engines]


@pytest.fixture
def manager(instances):
    with JobManager(instances) as job_manager:
        yield job_manager


# -- leak check --------------------------------------------------------------------------

def _descendants(pid: int):
    return descendants(pid, zombies=False)


def _interpreter_wide():
    """multiprocessing's own forkserver and resource tracker (excepted: they serve the whole
    interpreter, see docs/choices.rst)."""
    pids = set()
    from multiprocessing import forkserver, resource_tracker
    for pid in (getattr(forkserver._forkserver, "_forkserver_pid", None),
                getattr(resource_tracker._resource_tracker, "_pid", None)):
        if pid:
            pids.add(pid)
    return pids


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
    engines = list(request.getfixturevalue("engines")) if "engines" in request.fixturenames \
        else []
    if "engine_kind" in request.fixturenames:
        engines += [e for e in request.getfixturevalue("engine_kind")[1] if e not in engines]
    if "vm_engine" in request.fixturenames:
        engines.append(request.getfixturevalue("vm_engine"))
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
