"""Helpers shared by the test files (the fixtures are in ``conftest.py``): the engines'
root, the test image, docker-py clients for checking from outside, tasks, and waits.

The tests are in two folders: ``unit/`` (no engine: pure units, fakes, fuzzing) and
``engines/`` (real engines, which the fixtures start and stop)."""
from __future__ import annotations

import os
import shutil
import socket
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Callable

import docker

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "scripts"))
from engines import docker_client  # noqa: E402

from backend import JobManagerSync, Task  # noqa: E402
from backend.watch._load import ACTIVE_STATES  # noqa: E402

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


class SocketServer:
    """A listener whose accept loop runs in a thread of its own: on 127.0.0.1 over TCP, or
    on a unix socket in a folder of its own (``unix=True``); :attr:`url` is its address.
    Each connection is held and given to :meth:`connected` (in the accept thread), which
    holds it unanswered unless a subclass does more. :meth:`close` stops the loop, shuts
    and closes every socket held and joins every thread started with :meth:`thread`."""

    def __init__(self, unix: bool = False, backlog: int = 256):
        self.sockets: list = []
        self.threads: list = []
        self.lock = threading.Lock()
        self.folder = None
        if unix:
            self.folder = tempfile.mkdtemp(prefix="djm-sock-", dir="/tmp")
            path = os.path.join(self.folder, "docker.sock")
            self.listener = socket.socket(socket.AF_UNIX)
            self.listener.bind(path)
            self.url = "unix://" + path
        else:
            self.listener = socket.socket()
            self.listener.bind(("127.0.0.1", 0))
            self.url = "tcp://127.0.0.1:%d" % self.listener.getsockname()[1]
        self.listener.listen(backlog)
        self.thread(self._accept)

    def thread(self, target, *args) -> None:
        """Runs ``target(*args)`` in a daemon thread that :meth:`close` joins."""
        thread = threading.Thread(target=target, args=args, daemon=True)
        with self.lock:
            self.threads.append(thread)
        thread.start()

    def hold(self, *ends: socket.socket) -> None:
        """Sockets that :meth:`close` shuts and closes."""
        with self.lock:
            self.sockets.extend(ends)

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:  # closed
                return
            self.hold(client)
            self.connected(client)

    def connected(self, client: socket.socket) -> None:
        """A new connection: held, never answered."""

    def close(self) -> None:
        self.listener.shutdown(socket.SHUT_RDWR)  # wakes accept()
        self.listener.close()
        with self.lock:
            ends, threads = list(self.sockets), list(self.threads)
        for end in ends:
            try:
                end.shutdown(socket.SHUT_RDWR)  # wakes the threads reading it
            except OSError:
                pass
            end.close()
        for thread in threads:
            thread.join(5)
        if self.folder:
            shutil.rmtree(self.folder, ignore_errors=True)


class Proxy(SocketServer):
    """A unix-socket proxy to the engine at ``engine_url`` (``unix://``): each connection
    gets one of its own to the engine, paired by :meth:`pair`: two threads of :meth:`pump`,
    one each way, passing each read on once :meth:`passes` says so."""

    def __init__(self, engine_url: str):
        self.upstream = engine_url[len("unix://"):]
        super().__init__(unix=True)

    def connected(self, client: socket.socket) -> None:
        upstream = socket.socket(socket.AF_UNIX)
        upstream.connect(self.upstream)
        self.hold(upstream)
        self.pair(client, upstream)

    def pair(self, client: socket.socket, upstream: socket.socket) -> None:
        self.thread(self.pump, client, upstream)
        self.thread(self.pump, upstream, client)

    def passes(self) -> bool:
        """Called after each read, before its bytes pass: False stops the pump."""
        return True

    def pump(self, source: socket.socket, target: socket.socket) -> None:
        """Passes ``source``'s bytes to ``target``, then its end of file."""
        while True:
            try:
                data = source.recv(65536)
            except OSError:
                data = b""
            if not self.passes():
                return
            if not data:
                try:
                    target.shutdown(socket.SHUT_WR)
                except OSError:
                    pass
                return
            try:
                target.sendall(data)
            except OSError:
                return


#: A manager with two jobs running (``sleep``), which prints its id once they run.
_DYING_MANAGER = """
import json, sys, time
from backend import JobManager, Task
manager = JobManager(json.loads(sys.argv[1]))
for i in range(2):
    manager.new_job(Task("busybox", command=["sh", "-c", "sleep %d"]), i, print)
while len(manager._dispatcher.jobs) < 2 or any(
        j.state.value != "running" for j in manager._dispatcher.jobs.values()):
    time.sleep(0.05)
print(json.dumps({"manager": manager.manager_id}), flush=True)
time.sleep(%d)
"""


def dead_manager(instances: list, job_seconds: int = 60) -> str:
    """Runs a manager on ``instances`` in a process of its own until its two jobs run, then
    SIGKILLs it with its children at once: its containers are left on the engines, for the
    orphan sweep. Returns its ``manager_id``."""
    import json
    import signal
    import subprocess
    script = _DYING_MANAGER % (job_seconds, 2 * job_seconds)
    process = subprocess.Popen([sys.executable, "-c", script, json.dumps(instances)],
                               stdout=subprocess.PIPE, text=True, start_new_session=True)
    try:
        return json.loads(process.stdout.readline())["manager"]
    finally:
        os.killpg(process.pid, signal.SIGKILL)  # the manager and its children at once
        process.wait()
        process.stdout.close()


def killed_while_served_warm(manager, engine_name: str, files=None, hard_time: int = 5) -> dict:
    """A raw job that would run 30 s, run cold once (a timeout after ``hard_time``), then
    served warm on ``engine_name`` and killed once it runs: the killed job's result."""
    import queue
    task = Task(IMAGE, command=["sh", "-c", "echo started; sleep 30"], protocol="raw",
                limits={"hard_time": hard_time})
    JobManagerSync(manager).new_job(task, None, timeout=60, files=files)
    warm_ready(manager, engine_name, task, files)
    ended: "queue.Queue[dict]" = queue.Queue()
    job_id = manager.new_job(task, None, lambda *args: ended.put(args[2]), files=files)
    jobs = manager._dispatcher.jobs
    wait_for(lambda: job_id in jobs and jobs[job_id].state.value == "running", 30,
             "not running")
    manager.kill_job(job_id)
    return ended.get(timeout=30)


def descendants(pid: int, zombies: bool = True) -> set:
    """Pids of every descendant of ``pid`` (from ``/proc``), zombies included unless not
    ``zombies``."""
    children: dict = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as stream:
                fields = stream.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if zombies or fields[0] != "Z":
            children.setdefault(int(fields[1]), []).append(int(entry))
    found, todo = set(), [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.add(child)
            todo.append(child)
    return found


class Occupancy:
    """The most containers of every manager that held a slot of an engine at once, over the
    span of a ``with`` block, from the engine's own record.

    A container holds a slot from its ``create`` to its ``die`` (or its ``destroy``, Podman's
    ``remove``, when it had none), as the managers count it (docs/engines.rst): those events,
    replayed from the engine with their times, over its listing at the start for the
    containers created before. The engine's listing is no measure of it: Docker 20.10 still
    lists a container as running for tens of milliseconds after its ``die`` (while it
    unmounts it), when a manager may already have started the next job in its slot.
    """

    def __init__(self, engine):
        self.engine = engine
        self.peak = 0
        self.at_peak: list = []  # (container id, manager label) at the peak

    def __enter__(self) -> "Occupancy":
        self.start = time.time()
        with engine_client(self.engine) as client:
            self.initial = {c["Id"]: c["Labels"].get("backend.manager")
                            for c in client.containers(all=True, filters={
                                "label": "backend.manager"})
                            if c["State"] in ACTIVE_STATES}
        return self

    def __exit__(self, *exc_info) -> None:
        self.measure()

    def measure(self) -> int:
        """The peak from the start of the block until now (also kept in :attr:`peak`)."""
        # Podman stops a replay at ``until`` even before it has read its events file: leave
        # it a second (the engine answers at ``until``)
        until = time.time() + 1
        holding = dict(self.initial)
        self.peak, self.at_peak = 0, []
        with engine_client(self.engine) as client:
            # a second early: the ``die`` of a container listed at the start while the engine
            # still listed it as running comes before the start; the count at the start is
            # the listing with those replayed, and the peak is taken from there on
            events = client.events(since=self.start - 1, until=until, decode=True,
                                   filters={"type": "container"})
            for event in events:
                if event["timeNano"] / 1e9 >= self.start:
                    self._count(holding)
                attributes = event.get("Actor", {}).get("Attributes", {})
                if "backend.manager" not in attributes:
                    continue
                container, action = event["Actor"]["ID"], event.get("Action")
                if action == "create":
                    holding[container] = attributes["backend.manager"]
                elif action in ("die", "destroy", "remove"):
                    holding.pop(container, None)
        self._count(holding)
        return self.peak

    def _count(self, holding: dict) -> None:
        if len(holding) > self.peak:
            self.peak, self.at_peak = len(holding), sorted(holding.items())
