"""The contract on cgroup v2: Docker 20.10 in a Debian 12 VM whose kernel has only the unified
hierarchy, every controller enabled (``vm_engine`` in conftest, ``VmEngine`` of
``scripts/engines.py``), reached over TCP with verified TLS.

Every status and reason (CPU time, wall time, memory with the OOM seen on cgroup v2, output,
disk, processes, kill, removed from outside), raw jobs with files and outputs, the ``disk``
limit under the storage quota the VM's data root offers (XFS with project quota), warm starts
of both protocols (over TLS: the job's submitter attaches to the warm container), the engine
lost (qemu killed) and back (booted again), and the orphan sweep. Kept short: the VM runs
under qemu's emulation (a container takes 1 to 9 s on a loaded machine), and the session
boots it once. The bounds of time are generous for the same reason."""

import pytest

from backend import JobManager, JobManagerBuffer, JobManagerSync, Task
from backend.model._job import JobState
from disk_jobs import (MIB, EngineStorageSampler, at_once, bound, crossing_to_end, has_quota,
                       lines, quiet_writer, size_check_cost, writer)
from disk_jobs import raw as disk_job
from helpers import (IMAGE, PREFIX, comparable, dead_manager, engine_client, ok_script, shell,
                     wait_for, warm_ready)

#: The first test boots the VM (and builds it, if ``make ensure`` did not): 600 s for each.
pytestmark = [pytest.mark.cgroup2, pytest.mark.timeout(600)]


def vm_instance(engine, **options):
    return dict({"server_url": engine.url, "name": engine.name, "container_prefix": PREFIX,
                 "time_between_polls": 0.2, "tls": engine.client_tls}, **options)


@pytest.fixture
def vm_manager(vm_engine):
    with JobManager([vm_instance(vm_engine)]) as manager:
        yield manager


def run(manager, task, inputdata=None, files=None):
    return JobManagerSync(manager).new_job(task, inputdata, timeout=120, files=files)


def raw(script, **options):
    return Task(IMAGE, command=["sh", "-c", script], protocol="raw", **options)


def labelled(engine, job_id):
    """The running containers of job ``job_id`` on ``engine``."""
    with engine_client(engine) as client:
        return client.containers(filters={"label": f"backend.job={job_id}"})


def test_the_engine_and_its_containers_are_on_cgroup_v2(vm_engine, vm_manager):
    with engine_client(vm_engine) as client:
        info = client.info()
    assert (info["CgroupVersion"], info["CgroupDriver"]) == ("2", "cgroupfs")
    assert info["MemoryLimit"] and info["SwapLimit"] and info["PidsLimit"], info
    result = run(vm_manager, raw("cat /proc/self/cgroup; ls /sys/fs/cgroup"))
    assert result["result"] == "success", result
    lines = result["run"]["stdout"].split()
    assert lines[0] == "0::/" and "memory.max" in lines and "pids.max" in lines, lines


@pytest.mark.parametrize("script, limits, status, reason", [
    ("while :; do :; done", {"time": 1, "hard_time": 60}, "timeout", "cpu_time"),
    # four processes, none at its RLIMIT_CPU: the cgroup's CPU time of the whole container
    ("for i in 1 2 3 4; do (while :; do :; done) & done; wait",
     {"time": 2, "cpus": 1.0, "hard_time": 60}, "timeout", "cpu_time"),
    ("echo started >&2; sleep 60", {"hard_time": 2}, "timeout", "wall_time"),
    # one 64 MB buffer at once (a string grown by a shell costs minutes of emulated CPU)
    ("dd if=/dev/zero of=/dev/null bs=64M count=1; echo done", {"memory": 20}, "overflow",
     "memory"),
    # a child is OOM-killed, the shell exits 0 with valid JSON: cgroup v2's memory.events
    ("(dd if=/dev/zero of=/dev/null bs=64M count=1); echo '{\"result\": \"success\"}'",
     {"memory": 20}, "overflow", "memory"),
    # 20 kB then quiet: a flood (yes) starves the emulated engine, which then does not answer
    ("head -c 20000 /dev/zero | tr '\\0' x; sleep 60", {"output": 10000}, "overflow",
     "output"),
    ("head -c 3000000 /dev/zero > /bin/big", {"file_size": 1000000}, "overflow", "disk"),
], ids=["cpu_time", "cpu_time_of_the_cgroup", "wall_time", "memory", "memory_of_a_child",
        "output", "file_size"])
def test_each_limit_ends_with_its_status_and_reason(vm_manager, script, limits, status,
                                                    reason):
    result = run(vm_manager, shell(script, limits=limits))
    assert (result["result"], result["run"]["reason"]) == (status, reason), result


def test_processes_are_limited(vm_manager):
    script = ('(for i in $(seq 60); do sleep 5 & done) 2>/dev/null; set -- /proc/[0-9]*; '
              'echo "{\\"result\\": \\"success\\", \\"n\\": $#}"')
    result = run(vm_manager, shell(script, limits={"processes": 20}))
    assert result["result"] == "success", result
    assert result["n"] <= 20


def test_limits_reach_the_cgroup(vm_manager):
    script = "cat /sys/fs/cgroup/memory.max /sys/fs/cgroup/pids.max /sys/fs/cgroup/cpu.max"
    result = run(vm_manager, raw(script, limits={"memory": 64, "processes": 30, "cpus": 0.5}))
    assert result["run"]["stdout"].split() == [str(64 * 2 ** 20), "30", "50000", "100000"]


def test_kill(vm_engine, vm_manager):
    future = vm_manager.submit(raw("echo started; sleep 60"), None)
    wait_for(lambda: labelled(vm_engine, future.job_id), 60, "the job did not start")
    assert vm_manager.kill_job(future.job_id)
    result = future.result(timeout=60)
    assert (result["result"], result["run"]["reason"]) == ("killed", "killed"), result


def test_removed_from_outside(vm_engine, vm_manager):
    future = vm_manager.submit(shell("sleep 60"), 1)
    wait_for(lambda: labelled(vm_engine, future.job_id), 60, "the job did not start")
    [container] = labelled(vm_engine, future.job_id)
    with engine_client(vm_engine) as client:
        client.remove_container(container["Id"], force=True)
    result = future.result(timeout=60)
    assert (result["result"], result["run"]["reason"]) == ("crash", "removed"), result


def test_raw_job_with_files_and_outputs(vm_manager):
    files = {"main.sh": "echo from main", "data/in.txt": b"42\n"}
    script = "cat; sh main.sh; cat data/in.txt; echo made > out.txt; mkdir d; echo x > d/y; " \
             "echo err >&2; exit 3"
    result = run(vm_manager, raw(script, outputs=["out.txt", "d", "missing"]), b"stdin\n",
                 files=files)
    assert result["run"]["stdout"] == "stdin\nfrom main\n42\n", result
    assert (result["run"]["stderr"], result["run"]["exit_code"]) == ("err\n", 3)
    assert result["files"] == {"out.txt": b"made\n", "d/y": b"x\n"}


# -- the disk limit under a storage quota (docs/security.rst) ---------------------------------
#: The bound of these jobs, and each file they write: small, the VM being emulated.
VM_DISK = 16 * MIB
VM_CHUNK = 4 * MIB


def test_the_disk_limit_is_a_storage_quota_here(vm_engine, vm_manager):
    """Three times the limit: stopped by the quota (the write fails), named by the watch;
    the container was given its quota."""
    assert has_quota(vm_engine)
    result = run(vm_manager, disk_job(writer(12, size=VM_CHUNK) + "; echo never", VM_DISK),
                 files={"given.txt": "given\n"})
    assert (result["result"], result["run"]["reason"]) == ("overflow", "disk"), result
    assert len(lines(result)) > 1 and "never" not in result["run"]["stdout"], result
    took = crossing_to_end(result, VM_DISK, VM_CHUNK)
    print(f"crossing to end {took:.2f} s; files written {lines(result)[-1][0]} of "
          f"{VM_CHUNK // MIB} MiB; stderr {result['run']['stderr'][-120:]!r}")
    assert took < 30.0, result["run"]


def test_five_at_once_stay_within_their_quotas(vm_engine, vm_manager):
    """The data root's use (``df`` through the engine) grows by at most their quotas."""
    most = at_once(vm_manager, EngineStorageSampler(vm_engine),
                   disk_job(writer(12, size=VM_CHUNK), VM_DISK), disk_job("echo ok", VM_DISK),
                   counts=(5, 2), timeout=300)
    limit = 5 * bound(VM_DISK, True)
    print(f"cgroup2: the data root grew by {most / MIB:.1f} MiB at most (limits "
          f"{5 * VM_DISK // MIB} MiB, quotas {limit / MIB:.0f} MiB)")
    # the containers' own files (configuration, log, layer directories) are a few KiB each
    assert most <= limit + 7 * MIB // 4, f"the data root grew by {most / MIB:.1f} MiB"


def test_small_files_given_files_and_a_job_under_its_limit(vm_manager):
    small = disk_job(quiet_writer(1024, size=8192), 4 * MIB)
    given = disk_job("echo started; " + writer(1, size=2 * MIB), 4 * MIB)  # 3 MiB given
    under = disk_job(writer(2, "echo done > out.txt", size=VM_CHUNK), VM_DISK,
                     outputs=["out.txt"])
    buffer = JobManagerBuffer(vm_manager)
    jobs = [buffer.new_job(small, None), buffer.new_job(given, None, files={
        "a.bin": b"\0" * (3 * MIB // 2), "b.bin": b"\0" * (3 * MIB // 2)}),
            buffer.new_job(under, None)]
    assert buffer.wait(jobs, timeout=300)
    small_result, given_result, under_result = (buffer.get_result(j) for j in jobs)
    for result in (small_result, given_result):
        assert (result["result"], result["run"]["reason"]) == ("overflow", "disk"), result
    assert under_result["result"] == "success", under_result
    assert under_result["files"] == {"out.txt": b"done\n"}


def test_what_a_size_check_costs_here(vm_engine):
    cost = size_check_cost(vm_engine, writer(4, "true", size=VM_CHUNK))
    print(f"cgroup2: a size check of 4 files of {VM_CHUNK // MIB} MiB takes "
          f"{cost * 1000:.0f} ms")
    assert cost < 10.0


@pytest.fixture
def vm_warm(vm_engine):
    """A manager with one warm container on the VM (over TLS: the job's submitter attaches)."""
    with JobManager([vm_instance(vm_engine, warm_containers=1)]) as manager:
        yield manager


def cold_then_warm(manager, engine, task, inputdata=None, files=None):
    """The job run cold, then served warm by the same manager: both results, equal but for
    what differs between runs."""
    cold = run(manager, task, inputdata, files)
    warm_ready(manager, engine.name, task, files, timeout=120)
    served = run(manager, task, inputdata, files)
    assert (cold["run"]["warm"], served["run"]["warm"]) == (False, True), (cold, served)
    assert comparable(served) == comparable(cold)
    return served


def test_a_json_job_served_warm(vm_engine, vm_warm):
    marker = shell('read line; if [ -e /tmp/used ]; then t=used; else t=fresh; fi; '
                   'touch /tmp/used; echo "{\\"result\\": \\"success\\", \\"text\\": \\"$t\\"}"')
    served = cold_then_warm(vm_warm, vm_engine, marker, 1)
    assert (served["result"], served["text"]) == ("success", "fresh")
    assert vm_warm.stats()["engines"][vm_engine.name]["warm_hits"] == 1


def test_a_raw_job_with_files_served_warm(vm_engine, vm_warm):
    task = raw("cat; cat a.txt; cat /sys/fs/cgroup/memory.max; echo made > out.txt; exit 3",
               limits={"memory": 64}, outputs=["out.txt"])
    served = cold_then_warm(vm_warm, vm_engine, task, "in\n", {"a.txt": "A\n"})
    assert served["run"]["stdout"] == f"in\nA\n{64 * 2 ** 20}\n", served
    assert (served["run"]["exit_code"], served["files"]) == (3, {"out.txt": b"made\n"})


def test_orphans_are_swept(vm_engine):
    instances = [vm_instance(vm_engine)]
    manager_id = dead_manager(instances, 120)

    def left():
        with engine_client(vm_engine) as client:
            return client.containers(all=True,
                                     filters={"label": f"backend.manager={manager_id}"})
    assert len(left()) == 2
    with JobManager(instances):  # its start sweeps the dead manager's containers
        wait_for(lambda: not left(), 60, "the dead manager's containers were not swept")


def test_engine_lost_and_back(vm_engine):
    """Last: qemu SIGKILLed takes the job with it (``engine_lost``); booted again on the same
    disk, the engine serves jobs again and the dead job's container is removed."""
    with JobManager([vm_instance(vm_engine)]) as manager:
        dispatcher = manager._dispatcher
        future = manager.submit(shell("sleep 60"), 1)
        wait_for(lambda: future.job_id in dispatcher.jobs
                 and dispatcher.jobs[future.job_id].state is JobState.RUNNING, 60,
                 "the job did not start")
        vm_engine.kill()
        result = future.result(timeout=60)
        assert (result["result"], result["run"]["reason"]) == ("crash", "engine_lost"), result
        assert not dispatcher.placement.is_reachable(vm_engine.name)
        vm_engine.start()
        wait_for(lambda: dispatcher.placement.is_reachable(vm_engine.name), 60,
                 "the engine was not marked up again")
        again = run(manager, shell(ok_script()), 1)
        assert again["result"] == "success", again
        label = f"backend.manager={manager.manager_id}"
        with engine_client(vm_engine) as client:
            wait_for(lambda: not client.containers(all=True, filters={"label": label}), 60,
                     "the lost job's container was never removed")


def test_a_warm_served_job_is_bounded_by_its_quota(vm_engine, vm_warm):
    """A warm container is given its quota as a cold one is: a job with files served warm
    that writes three times its limit ends ``overflow``/``disk``, as its cold run does."""
    task = disk_job(writer(12, size=VM_CHUNK) + "; echo never", VM_DISK)
    files = {"given.txt": "given\n"}
    cold = run(vm_warm, task, files=files)
    warm_ready(vm_warm, vm_engine.name, task, files, timeout=120)
    [waiting] = [w for w in vm_warm._dispatcher.warm.pool.ready[vm_engine.name]]
    with engine_client(vm_engine) as client:
        quota = client.inspect_container(waiting.container_id)["HostConfig"].get("StorageOpt")
    served = run(vm_warm, task, files=files)
    assert quota == {"size": str(bound(VM_DISK, True))}, quota
    for result in (cold, served):
        assert (result["result"], result["run"]["reason"]) == ("overflow", "disk"), result
        assert "never" not in result["run"]["stdout"], result
    assert (cold["run"]["warm"], served["run"]["warm"]) == (False, True)
