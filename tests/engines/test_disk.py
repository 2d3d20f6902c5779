"""``limits["disk"]`` on every engine kind of the host (``engine_kind``): a job that writes more
than its bound in all, each file under ``file_size``, ends ``overflow``/``disk`` within seconds
with what it printed; several at once leave the engine's storage bounded by their limits while
other jobs succeed; many small files count; a job just under its bound succeeds with its
outputs; the files given to a job count; a job served by a warm container is bounded too; an
engine that refuses a storage quota runs the job without one; what a size check costs.

How the bound is enforced, per engine kind, is in docs/security.rst: these engines (overlay on
the host's ext4, no project quota) have the watch; the cgroup v2 VM, whose data root is XFS
with project quota, has the quota (``test_cgroup2.py``). The engine's storage is measured
through the host: the bytes allocated under its data root (each engine of the tests has its
own), sampled while the jobs run."""
import dataclasses

import pytest

from backend import JobManager, JobManagerSync, Task
from backend.docker import _actions, connect
from backend.model import JobSpec, parse_instances, snapshot_task
from disk_jobs import (MIB, StorageSampler, at_once, bound, crossing_to_end, has_quota,
                       instance, lines, quiet_writer, raw, size_check_cost, writer)
from helpers import IMAGE, engine_client, wait_for

#: The bound of these tests' jobs: small enough for a loaded 2-core machine.
DISK = 64 * MIB
#: Every file these jobs write: a quarter of DISK, well under the default file_size.
CHUNK = 16 * MIB

#: What a job may write past its bound before the disk watch stops it, on this machine (the
#: writes of a poll period, a size check and a kill): docs/security.rst. Not needed where
#: the engine gives a storage quota.
WATCH_SLACK = 64 * MIB

#: A small given file: the job gets a working directory of its own (/job).
GIVEN = {"given.txt": "given\n"}


def warmed_up(manager: JobManager) -> JobManager:
    """``manager`` after a first job: its waiter connects to the engine at its first poll
    with a job, which takes Podman seconds (its ``/info``), and the first job is not
    watched meanwhile; these tests measure the watch of a manager that runs."""
    result = JobManagerSync(manager).new_job(raw("echo ok", DISK), None, timeout=60)
    assert result["result"] == "success", result
    return manager


@pytest.fixture
def disk_manager(engine_kind):
    kind, engines = engine_kind
    with JobManager([instance(engines[0])]) as manager:
        yield warmed_up(manager)


@pytest.mark.parametrize("then", ["sleep 60", "exit 0"])
def test_three_times_the_limit_ends_overflow_disk_within_seconds(disk_manager, then):
    """The watch stops a job that goes on running; the last look at its end catches one
    that ended first."""
    result = JobManagerSync(disk_manager).new_job(raw(writer(12, then), DISK), None, timeout=60,
                                                  files=GIVEN)
    assert (result["result"], result["run"]["reason"]) == ("overflow", "disk"), result
    assert "bytes in all" in result["text"]
    assert len(lines(result)) > 1, "what it printed before its end is kept"
    took = crossing_to_end(result, DISK, CHUNK)
    print(f"crossing to end {took:.2f} s; files written {lines(result)[-1][0]} of "
          f"{CHUNK // MIB} MiB; duration {result['run']['duration']}")
    assert took < 10.0, result["run"]


def test_five_at_once_leave_the_storage_bounded_and_other_jobs_succeed(engine_kind):
    kind, engines = engine_kind
    engine = engines[0]
    quota = has_quota(engine)
    with JobManager([instance(engine)]) as manager:
        most = at_once(warmed_up(manager), StorageSampler(engine), raw(writer(12), DISK),
                       raw("echo ok", DISK), files=GIVEN)
    limit = 5 * bound(DISK, quota)
    print(f"{kind}: the storage grew by {most / MIB:.0f} MiB at most (limits: "
          f"{5 * DISK // MIB} MiB; {'quota' if quota else 'watch'})")
    # the watch of these engines (no storage quota: overlay on ext4) lets each job write on
    # for its reaction time (docs/security.rst): the sum of the limits holds only up to that
    assert most <= limit + (0 if quota else 5 * WATCH_SLACK), \
        f"the storage grew by {most / MIB:.0f} MiB"


def test_many_small_files_count(disk_manager):
    disk = 16 * MIB  # 8192 files of 4 KiB: twice the bound
    result = JobManagerSync(disk_manager).new_job(raw(quiet_writer(8192), disk), None,
                                                  timeout=90, files=GIVEN)
    assert (result["result"], result["run"]["reason"]) == ("overflow", "disk"), result


def test_a_job_just_under_the_limit_succeeds_with_its_outputs(disk_manager):
    # 3 chunks of 16 MiB and its output: 48 MiB of 64
    script = writer(3, "echo done > out.txt") + " && cp given.txt copy.txt"
    result = JobManagerSync(disk_manager).new_job(
        raw(script, DISK, outputs=["out.txt", "copy.txt"]), None, timeout=60, files=GIVEN)
    assert result["result"] == "success" and result["run"]["reason"] is None, result
    assert result["files"] == {"out.txt": b"done\n", "copy.txt": b"given\n"}


def test_the_files_given_to_a_job_count(disk_manager):
    """12 MiB given and 6 MiB written cross 16 MiB; 20 MiB given alone end the job at once,
    before any container is made (under a quota, they could not be written)."""
    sync = JobManagerSync(disk_manager)
    files = {"a.bin": b"\0" * (6 * MIB), "b.bin": b"\0" * (6 * MIB)}
    result = sync.new_job(raw("echo started; " + writer(3, size=2 * MIB), 16 * MIB), None,
                          timeout=60, files=files)
    assert (result["result"], result["run"]["reason"]) == ("overflow", "disk"), result
    assert result["run"]["stdout"].startswith("started\n")
    files = dict(files, c=b"\0" * (8 * MIB))
    result = sync.new_job(raw("echo started", 16 * MIB), None, timeout=60, files=files)
    assert (result["result"], result["run"]["reason"]) == ("overflow", "disk"), result
    assert "files given" in result["text"] and not result["run"]["stdout"], result


def test_a_warm_served_job_is_bounded(engine_kind):
    kind, engines = engine_kind
    engine = engines[0]
    script = "read line; " + writer(12)
    task = Task(IMAGE, command=["sh", "-c", script], workdir="/w", limits={"disk": DISK})
    with JobManager([instance(engine, warm_containers=1)]) as manager:
        sync = JobManagerSync(manager)
        first = sync.new_job(task, 1, timeout=60)
        pool = manager._dispatcher.warm.pool
        wait_for(lambda: len(pool.ready[engine.name]) == 1, 30, "no warm container came")
        second = sync.new_job(task, 2, timeout=60)
    for result in (first, second):
        assert (result["result"], result["run"]["reason"]) == ("overflow", "disk"), result
    assert (first["run"]["warm"], second["run"]["warm"]) == (False, True)


def test_an_engine_that_refuses_a_quota_runs_the_job_without_one(engine_kind):
    """These engines offer none (overlay on ext4); told to give one anyway, each refuses it
    (Docker and Podman alike) and the job's container is created without it."""
    kind, engines = engine_kind
    engine = engines[0]
    (config,) = parse_instances([instance(engine)])
    spec = JobSpec("quota-probe", snapshot_task(raw("echo ok", DISK), None), b"")
    with connect(config) as connected:
        assert not connected.features.storage_quota  # from its /info
        connected.features = dataclasses.replace(connected.features, storage_quota=True)
        container_id, stream, _ = _actions.create_and_start(connected, spec, "m-quota", "o",
                                                            "backend-quota-probe-1")
        try:
            assert not connected.features.storage_quota  # forgotten after the refusal
            with engine_client(engine) as client:
                assert client.wait(container_id, timeout=60)["StatusCode"] == 0
                assert client.logs(container_id) == b"ok\n"
                assert not client.inspect_container(container_id)["HostConfig"].get(
                    "StorageOpt")
        finally:
            stream.close()
            connected.remove(container_id)


@pytest.mark.parametrize("files, size", [(4, 16 * MIB), (8192, 4096)],
                         ids=["64 MiB in 4 files", "32 MiB in 8192 files"])
def test_what_a_size_check_costs(engine_kind, files, size):
    """The figure of docs/security.rst: the engine walks the writable layer at each check."""
    kind, engines = engine_kind
    script = writer(files, "true", size=size).replace("echo $i", "true $i")
    cost = size_check_cost(engines[0], script)
    print(f"{kind}: a size check of {files} files of {size} bytes takes {cost * 1000:.0f} ms")
    assert cost < 2.0
