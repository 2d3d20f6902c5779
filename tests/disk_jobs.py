"""Jobs that write to disk, and the measures of an engine's storage, for the tests of
``limits["disk"]`` (``engines/test_disk.py`` on the host's engine kinds, ``engines/test_cgroup2.py``
on the VM): a writer script and its printed lines, whether an engine gives a storage quota,
the cost of a size check, and samplers of the engine's storage, through the host (the bytes
allocated under its data root) or through the engine (``df`` of its data root in a helper
container: the VM's storage is not the host's)."""
from __future__ import annotations

import os
import threading
import time
from typing import Tuple

from docker.types import Ulimit

from backend import JobManagerBuffer, Task
from backend.docker import _definition, connect
from backend.model import parse_instances
from helpers import IMAGE, PREFIX, engine_client

MIB = 1024 * 1024


def writer(files: int, then: str = "sleep 60", size: int = 16 * MIB) -> str:
    """A script writing ``files`` files of ``size`` bytes into its working directory; it
    prints ``0`` and the clock (``/proc/uptime``) first, then, after each file, their count
    and the clock."""
    clock = "$(cut -d' ' -f1 /proc/uptime)"
    return (f"echo 0 {clock}; i=0; while [ $i -lt {files} ]; do "
            f"head -c {size} /dev/zero > f$i || exit 3; i=$((i+1)); echo $i {clock}; done; "
            f"{then}")


def quiet_writer(files: int, then: str = "sleep 60", size: int = 4096) -> str:
    """:func:`writer` printing its first line only (for many small files)."""
    return writer(files, then, size).replace(
        "i=$((i+1)); echo $i $(cut -d' ' -f1 /proc/uptime)", "i=$((i+1))")


def raw(script: str, disk: int, **options) -> Task:
    """A raw busybox job running ``script`` with a ``disk`` limit (and ``limits``)."""
    return Task(IMAGE, command=["sh", "-c", script], protocol="raw",
                limits=dict({"disk": disk}, **options.pop("limits", {})), **options)


def lines(result):
    """The ``(count, clock)`` pairs the writer printed."""
    found = []
    for line in result["run"]["stdout"].splitlines():
        count, clock = line.split()
        found.append((int(count), float(clock)))
    return found


def crossed_at(result, bound: int, chunk: int) -> float:
    """The clock at the last file the writer finished within ``bound``: it crossed the
    bound after that."""
    return max(clock for count, clock in lines(result) if count * chunk <= bound)


def crossing_to_end(result, bound: int, chunk: int) -> float:
    """An upper bound on the seconds from the crossing of ``bound`` to the job's end, in
    the job's own clock (a VM's is not the host's): its duration (from its start, as the
    manager saw it, to its end) less the time from its first line to the crossing."""
    return result["run"]["duration"] - (crossed_at(result, bound, chunk) - lines(result)[0][1])


def instance(engine, **extra) -> dict:
    """A ``docker_instances`` entry for one of the fixtures' engines (TLS for the VM)."""
    tls = getattr(engine, "client_tls", None)
    return dict({"server_url": engine.url, "name": engine.name, "container_prefix": PREFIX,
                 "time_between_polls": 0.2, **({"tls": tls} if tls else {})}, **extra)


def has_quota(engine) -> bool:
    """Whether the library gives the engine's containers a storage quota (its features)."""
    (config,) = parse_instances([instance(engine)])
    with connect(config) as connected:
        return connected.features.storage_quota


def bound(limit: int, quota: bool) -> int:
    """What a job with a ``disk`` of ``limit`` may leave on the engine at most: its quota
    on a quota engine, else its limit (and the watch's slack, which the caller adds)."""
    return _definition.quota_size(limit) if quota else limit


#: Explicit rlimits for the helper containers: Podman's own (1048576) fail where its service
#: lacks CAP_SYS_RESOURCE (backend.docker._features.PODMAN_NPROC).
RLIMITS = [Ulimit(name="nofile", soft=1024, hard=1024),
           Ulimit(name="nproc", soft=32768, hard=32768)]


def size_check_cost(engine, script: str, calls: int = 5, timeout: float = 120) -> float:
    """The median seconds of a size check (``GET /containers/{id}/json?size=1``, what the
    disk watch asks) of a container that ran ``script`` and then waits: the engine walks
    its writable layer, so this is engine CPU spent per check."""
    (config,) = parse_instances([instance(engine)])
    with engine_client(engine) as client, connect(config) as connected:
        container = client.create_container(
            PREFIX + IMAGE, ["sh", "-c", script + "; echo written; sleep 300"],
            host_config=client.create_host_config(ulimits=RLIMITS))
        try:
            client.start(container)
            deadline = time.monotonic() + timeout
            while b"written" not in client.logs(container):
                assert time.monotonic() < deadline, "the writes did not end"
                time.sleep(0.1)
            took = []
            for _ in range(calls):
                began = time.monotonic()
                connected.disk_used(container["Id"])
                took.append(time.monotonic() - began)
            return sorted(took)[len(took) // 2]
        finally:
            client.remove_container(container, force=True)


def at_once(manager, sampler: "StorageSampler", heavy: Task, normal: Task,
            counts: Tuple[int, int] = (5, 5), timeout: float = 100, files=None) -> int:
    """Runs ``counts`` of the ``heavy`` and ``normal`` jobs at once (the heavy ones given
    ``files``) while ``sampler`` samples the engine's storage; the normal ones must succeed,
    the heavy ones end ``overflow``/``disk``. The most the storage grew."""
    buffer = JobManagerBuffer(manager)
    sampler.start()
    try:
        heavies = [buffer.new_job(heavy, None, files=files) for _ in range(counts[0])]
        normals = [buffer.new_job(normal, None) for _ in range(counts[1])]
        assert buffer.wait(heavies + normals, timeout=timeout)
    finally:
        most = sampler.stop()
    results = {job: buffer.get_result(job) for job in heavies + normals}
    assert all(results[j]["result"] == "success" for j in normals), results
    assert all((results[j]["result"], results[j]["run"]["reason"]) == ("overflow", "disk")
               for j in heavies), results
    return most


def allocated(root: str) -> int:
    """Bytes allocated under ``root`` (what ``du`` says), files vanishing meanwhile aside."""
    total = 0
    stack = [root]
    while stack:
        try:
            entries = list(os.scandir(stack.pop()))
        except OSError:
            continue
        for entry in entries:
            try:
                if entry.is_dir(follow_symlinks=False):
                    stack.append(entry.path)
                total += entry.stat(follow_symlinks=False).st_blocks * 512
            except OSError:
                continue
    return total


class StorageSampler(threading.Thread):
    """Samples the bytes allocated under an engine's data root, from the host, until
    stopped; keeps the most."""

    def __init__(self, engine):
        super().__init__(name="storage-sampler", daemon=True)
        self.root = str(getattr(engine, "data_root", None) or os.path.join(engine.root, "s"))
        self.baseline = self.most = self.measure()
        self.stopping = threading.Event()

    def measure(self) -> int:
        return allocated(self.root)

    def run(self):
        while not self.stopping.wait(0.05):
            self.most = max(self.most, self.measure())

    def stop(self) -> int:
        """Stops it; the most bytes seen above the baseline."""
        self.stopping.set()
        self.join(30)
        return self.most - self.baseline


#: The VM's data root (scripts/engines.py ``VM_DATA_ROOT``), its own file system.
VM_DATA_ROOT = "/var/lib/docker"


class EngineStorageSampler(StorageSampler):
    """Samples the bytes used on an engine's data root through the engine: a helper
    container mounts it read-only and prints ``df`` of it every 0.2 s (for the VM, whose
    storage the host does not see); the baseline is its first line."""

    def __init__(self, engine, data_root: str = VM_DATA_ROOT):
        threading.Thread.__init__(self, name="storage-sampler", daemon=True)
        self.stopping = threading.Event()
        self.client = engine_client(engine)
        self.container = self.client.create_container(
            PREFIX + IMAGE, ["sh", "-c", "while :; do df -Pk /d | tail -n 1; sleep 0.2; done"],
            host_config=self.client.create_host_config(binds=[f"{data_root}:/d:ro"],
                                                       network_mode="none", ulimits=RLIMITS))
        self.client.start(self.container)
        self.stream = self.client.attach(self.container, stream=True, logs=True)
        self.baseline = self.most = self.measure()

    def measure(self) -> int:
        """The next line's bytes used (``df``'s third column, KiB)."""
        for chunk in self.stream:
            for line in chunk.decode(errors="replace").splitlines():
                fields = line.split()
                if len(fields) >= 3 and fields[2].isdigit():
                    return int(fields[2]) * 1024
        return 0

    def run(self):
        while not self.stopping.is_set():
            self.most = max(self.most, self.measure())

    def stop(self) -> int:
        self.stopping.set()
        try:
            self.client.remove_container(self.container, force=True)  # ends the stream
            self.join(30)
        finally:
            self.client.close()
        return self.most - self.baseline
