"""``limits["disk"]`` on every engine kind (``engine_kind``): a job that writes more than its
bound in all, each file under ``file_size``, ends ``overflow``/``disk`` within seconds with
what it printed; several at once leave the engine's storage bounded by their limits while
other jobs succeed; many small files count; a job just under its bound succeeds with its
outputs; the files given to a job count; a job served by a warm container is bounded too.

How the bound is enforced, per engine kind, is in docs/security.rst. The engine's storage is
measured through the host: the bytes allocated under its data root (each engine of the tests
has its own), sampled while the jobs run."""
import os
import threading

import pytest

from backend import JobManager, JobManagerBuffer, JobManagerSync, Task
from helpers import IMAGE, PREFIX
from helpers import wait_for

MIB = 1024 * 1024
#: The bound of these tests' jobs: small enough for a loaded 2-core machine.
DISK = 64 * MIB
#: Every file these jobs write: a quarter of DISK, well under the default file_size.
CHUNK = 16 * MIB


def _instances(engines, **extra):
    return [dict({"server_url": e.url, "name": e.name, "container_prefix": PREFIX,
                  "time_between_polls": 0.2}, **extra) for e in engines]


def _uptime() -> float:
    """The kernel's clock that a container reads too (``/proc/uptime``, not namespaced)."""
    with open("/proc/uptime") as stream:
        return float(stream.read().split()[0])


def writer(files: int, then: str = "sleep 60", size: int = CHUNK) -> str:
    """A script writing ``files`` files of ``size`` bytes into its working directory; after
    each, it prints their count and the clock (``/proc/uptime``)."""
    return (f"i=0; while [ $i -lt {files} ]; do head -c {size} /dev/zero > f$i || exit 3; "
            f"i=$((i+1)); echo $i $(cut -d' ' -f1 /proc/uptime); done; {then}")


def raw(script: str, disk: int = DISK, **options) -> Task:
    return Task(IMAGE, command=["sh", "-c", script], protocol="raw",
                limits=dict({"disk": disk}, **options.pop("limits", {})), **options)


#: What a job may write past its bound before the disk watch stops it, on this machine (the
#: writes of a poll period, a size check and a kill): docs/security.rst.
WATCH_SLACK = 64 * MIB

#: A small given file: the job gets a working directory of its own (/job).
GIVEN = {"given.txt": "given\n"}


def warmed_up(manager: JobManager) -> JobManager:
    """``manager`` after a first job: its waiter connects to the engine at its first poll
    with a job, which takes Podman seconds (its ``/info``), and the first job is not
    watched meanwhile; these tests measure the watch of a manager that runs."""
    result = JobManagerSync(manager).new_job(raw("echo ok"), None, timeout=60)
    assert result["result"] == "success", result
    return manager


@pytest.fixture
def disk_manager(engine_kind):
    kind, engines = engine_kind
    with JobManager(_instances(engines[:1])) as manager:
        yield warmed_up(manager)


def storage_root(engine) -> str:
    """Where the engine keeps its images and containers' layers (scripts/engines.py)."""
    return str(getattr(engine, "data_root", None) or os.path.join(engine.root, "s"))


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
    """Samples :func:`allocated` under an engine's storage until stopped; keeps the most."""

    def __init__(self, root: str):
        super().__init__(name="storage-sampler", daemon=True)
        self.root = root
        self.baseline = allocated(root)
        self.most = self.baseline
        self.stopping = threading.Event()

    def run(self):
        while not self.stopping.wait(0.05):
            self.most = max(self.most, allocated(self.root))

    def stop(self) -> int:
        """Stops it; the most bytes seen above the baseline."""
        self.stopping.set()
        self.join(30)
        return self.most - self.baseline


def lines(result):
    """The ``(count, clock)`` pairs the writer printed."""
    found = []
    for line in result["run"]["stdout"].splitlines():
        count, clock = line.split()
        found.append((int(count), float(clock)))
    return found


def crossed_at(result, bound: int = DISK) -> float:
    """The clock at the last file the writer finished within ``bound``: it crossed the
    bound after that (an upper bound on the time from the crossing to its end)."""
    return max(clock for count, clock in lines(result) if count * CHUNK <= bound)


@pytest.mark.parametrize("then", ["sleep 60", "exit 0"])
def test_three_times_the_limit_ends_overflow_disk_within_seconds(disk_manager, then):
    """The watch stops a job that goes on running; the last look at its end catches one
    that ended first."""
    result = JobManagerSync(disk_manager).new_job(raw(writer(12, then)), None, timeout=60,
                                                  files=GIVEN)
    received = _uptime()
    assert (result["result"], result["run"]["reason"]) == ("overflow", "disk"), result
    assert "bytes in all" in result["text"]
    assert lines(result), "what it printed before its end is kept"
    assert received - crossed_at(result) < 10.0, (received, result["run"]["stdout"])
    print(f"crossing to result {received - crossed_at(result):.2f} s; files written "
          f"{lines(result)[-1][0]} of {CHUNK // MIB} MiB; duration {result['run']['duration']}")


def test_five_at_once_leave_the_storage_bounded_and_other_jobs_succeed(engine_kind):
    kind, engines = engine_kind
    engine = engines[0]
    with JobManager(_instances([engine])) as manager:
        buffer = JobManagerBuffer(warmed_up(manager))
        sampler = StorageSampler(storage_root(engine))
        sampler.start()
        try:
            heavy = [buffer.new_job(raw(writer(12)), None, files=GIVEN) for _ in range(5)]
            normal = [buffer.new_job(raw("echo ok"), None) for _ in range(5)]
            assert buffer.wait(heavy + normal, timeout=100)
        finally:
            most = sampler.stop()
        results = {job: buffer.get_result(job) for job in heavy + normal}
    assert all(results[j]["result"] == "success" for j in normal), results
    assert all((results[j]["result"], results[j]["run"]["reason"]) == ("overflow", "disk")
               for j in heavy), results
    print(f"the storage grew by {most / MIB:.0f} MiB at most (limits: {5 * DISK // MIB} MiB)")
    # the watch of these engines (no storage quota: overlay on ext4) lets each job write on
    # for its reaction time (docs/security.rst): the sum of the limits holds only up to that
    assert most <= 5 * (DISK + WATCH_SLACK), f"the storage grew by {most / MIB:.0f} MiB"


def test_many_small_files_count(disk_manager):
    disk = 16 * MIB  # 8192 files of 4 KiB: twice the bound
    script = writer(8192, "sleep 60", size=4096).replace("echo $i $(cut -d' ' -f1 /proc/uptime)",
                                                          "true")
    result = JobManagerSync(disk_manager).new_job(raw(script, disk=disk), None, timeout=90,
                                                  files=GIVEN)
    assert (result["result"], result["run"]["reason"]) == ("overflow", "disk"), result


def test_a_job_just_under_the_limit_succeeds_with_its_outputs(disk_manager):
    # 3 chunks of 16 MiB and its output: 48 MiB of 64
    script = writer(3, "echo done > out.txt") + " && cp given.txt copy.txt"
    result = JobManagerSync(disk_manager).new_job(
        raw(script, outputs=["out.txt", "copy.txt"]), None, timeout=60, files=GIVEN)
    assert result["result"] == "success" and result["run"]["reason"] is None, result
    assert result["files"] == {"out.txt": b"done\n", "copy.txt": b"given\n"}


def test_the_files_given_to_a_job_count(disk_manager):
    files = {"a.bin": b"\0" * (10 * MIB), "b.bin": b"\0" * (10 * MIB)}
    result = JobManagerSync(disk_manager).new_job(raw("echo started", disk=16 * MIB), None,
                                                  timeout=60, files=files)
    assert (result["result"], result["run"]["reason"]) == ("overflow", "disk"), result
    assert result["run"]["stdout"] == "started\n"


def test_a_warm_served_job_is_bounded(engine_kind):
    kind, engines = engine_kind
    engine = engines[0]
    script = "read line; " + writer(12)
    task = Task(IMAGE, command=["sh", "-c", script], workdir="/w", limits={"disk": DISK})
    with JobManager(_instances([engine], warm_containers=1)) as manager:
        sync = JobManagerSync(manager)
        first = sync.new_job(task, 1, timeout=60)
        pool = manager._dispatcher.warm.pool
        wait_for(lambda: len(pool.ready[engine.name]) == 1, 30, "no warm container came")
        second = sync.new_job(task, 2, timeout=60)
    for result in (first, second):
        assert (result["result"], result["run"]["reason"]) == ("overflow", "disk"), result
    assert (first["run"]["warm"], second["run"]["warm"]) == (False, True)
