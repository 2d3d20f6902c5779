"""Warm starts on real engines (docs/performance.rst, warm starts): one container per job
still, ``run["warm"]`` and the warm counters of ``stats()``, removal after ``warm_idle``, at
close, on engine loss and by the orphan sweep, a full engine's warm slot given to a job of
another shape, and a warm container that died before its job came never used."""
import json
import os
import signal
import subprocess
import sys

import pytest

from backend import JobManager, JobManagerSync
from helpers import PREFIX, api_client, our_containers, shell
from helpers import wait_for

#: A JSON job that says whether its container was used before (a file left in /tmp).
MARKER = shell('read line; if [ -e /tmp/used ]; then t=used; else t=fresh; fi; touch /tmp/used; '
               'echo "{\\"result\\": \\"success\\", \\"text\\": \\"$t\\"}"')
OTHER = shell('read line; echo "{\\"result\\": \\"success\\", \\"text\\": \\"other\\"}"')


def warm_instance(engine, **options):
    return dict({"server_url": engine.url, "name": engine.name, "container_prefix": PREFIX,
                 "time_between_polls": 0.2, "warm_containers": 1}, **options)


def warm_on_engine(engine, manager_id=None):
    """The warm containers on ``engine`` (of one manager, if given)."""
    label = "backend.warm" if manager_id is None else f"backend.manager={manager_id}"
    with api_client(engine.url) as client:
        found = client.containers(all=True, filters={"label": label})
    return [c for c in found if "backend.warm" in c["Labels"]]


def warm_count(manager, engine):
    return manager.stats()["engines"][engine.name]["warm_containers"]


def ready(manager, engine, count=1):
    """Waits until ``engine`` has ``count`` warm containers started and waiting."""
    pool = manager._dispatcher.warm.pool
    wait_for(lambda: len(pool.ready[engine.name]) == count, 30, "no warm container came")


def test_each_job_has_a_fresh_container_and_run_says_warm(engines):
    engine = engines[0]
    with JobManager([warm_instance(engine)]) as manager:
        sync = JobManagerSync(manager)
        results = []
        for i in range(4):
            results.append(sync.new_job(MARKER, i, timeout=30))
            ready(manager, engine)
        assert [r["result"] for r in results] == ["success"] * 4, results
        assert [r["text"] for r in results] == ["fresh"] * 4  # no job sees another's file
        assert [r["run"]["warm"] for r in results] == [False, True, True, True]
        assert len({r["run"]["container_id"] for r in results}) == 4
        stats = manager.stats()["engines"][engine.name]
        assert (stats["warm_containers"], stats["warm_hits"]) == (1, 3)
        # a raw job and a job with files have shapes of their own (tests/engines/test_warm_exec.py)
        raw = sync.new_job(shell("cat", protocol="raw"), "x", timeout=30)
        assert raw["result"] == "success" and raw["run"]["warm"] is False
        with_files = sync.new_job(MARKER, 9, timeout=30, files={"a.txt": "a"})
        assert with_files["result"] == "success" and with_files["run"]["warm"] is False
    assert not our_containers(engines)  # close removed the warm one


def test_duration_counts_from_the_input(engines):
    """A job that boots 1 s before reading its input: served warm, the boot is done."""
    engine = engines[0]
    booting = shell('sleep 1; read line; echo "{\\"result\\": \\"success\\"}"')
    with JobManager([warm_instance(engine)]) as manager:
        sync = JobManagerSync(manager)
        cold = sync.new_job(booting, 1, timeout=30)
        ready(manager, engine)
        container = manager._dispatcher.warm.pool.ready[engine.name][0]
        with api_client(engine.url) as client:  # the boot has no event to wait for
            wait_for(lambda: not any(p[-1].startswith("sleep") for p in
                                     client.top(container.container_id)["Processes"]),
                     10, "the warm container did not boot")
        warm = sync.new_job(booting, 2, timeout=30)
    assert cold["run"]["warm"] is False and cold["run"]["duration"] >= 1.0, cold
    assert warm["run"]["warm"] is True and warm["run"]["duration"] < 1.0, warm


def test_idle_warm_containers_are_removed(engines):
    engine = engines[0]
    with JobManager([warm_instance(engine, warm_idle=1)]) as manager:
        assert JobManagerSync(manager).new_job(MARKER, 1, timeout=30)["result"] == "success"
        wait_for(lambda: warm_on_engine(engine, manager.manager_id), 30,
                 "no warm container was started")
        wait_for(lambda: not warm_on_engine(engine, manager.manager_id), 20,
                 "the idle warm container was not removed")
        assert warm_count(manager, engine) == 0


def test_close_removes_warm_containers(engines):
    engine = engines[0]
    manager = JobManager([warm_instance(engine, warm_containers=2)])
    try:
        JobManagerSync(manager).new_job(MARKER, 1, timeout=30)
        ready(manager, engine, 2)
        assert len(warm_on_engine(engine, manager.manager_id)) == 2
    finally:
        manager.close()
    assert not our_containers(engines)


def test_full_engine_gives_a_warm_slot_to_another_shape(engines):
    engine = engines[0]
    with JobManager([warm_instance(engine, max_concurrent_jobs=1)]) as manager:
        sync = JobManagerSync(manager)
        sync.new_job(MARKER, 1, timeout=30)
        ready(manager, engine)  # it holds the engine's only slot
        other = sync.new_job(OTHER, 2, timeout=30)
        assert (other["result"], other["text"], other["run"]["warm"]) == \
            ("success", "other", False)


def test_warm_container_killed_before_use_is_not_used(engines):
    engine = engines[0]
    with JobManager([warm_instance(engine)]) as manager:
        sync = JobManagerSync(manager)
        sync.new_job(MARKER, 1, timeout=30)
        ready(manager, engine)
        container = manager._dispatcher.warm.pool.ready[engine.name][0].container_id
        with api_client(engine.url) as client:
            client.kill(container)
        result = sync.new_job(MARKER, 2, timeout=30)
        assert (result["result"], result["run"]["warm"]) == ("success", False), result
        assert result["run"]["container_id"] != container
        wait_for(lambda: container not in [c["Id"] for c in our_containers(engines)], 20,
                 "the dead warm container was not removed")


@pytest.mark.timeout(180)
def test_engine_lost_with_warm_containers(engines):
    dying, other = engines
    with JobManager([warm_instance(dying), warm_instance(other)]) as manager:
        dispatcher = manager._dispatcher
        sync = JobManagerSync(manager)
        first = sync.new_job(MARKER, 1, timeout=30)
        if first["run"]["host"] != dying.name:
            dying, other = other, dying
        ready(manager, dying)
        lost = dispatcher.warm.pool.ready[dying.name][0].container_id
        dying.kill()
        try:
            wait_for(lambda: not dispatcher.placement.is_reachable(dying.name), 15,
                     f"{dying.name} not marked down")
            assert warm_count(manager, dying) == 0
            result = sync.new_job(MARKER, 2, timeout=30)
            assert (result["result"], result["run"]["host"], result["run"]["warm"]) == \
                ("success", other.name, False)
        finally:
            dying.start()
        wait_for(lambda: dispatcher.placement.is_reachable(dying.name), 30,
                 f"{dying.name} not marked up again")
        # (a new one may start there: the shape was used on it within warm_idle)
        wait_for(lambda: lost not in [c["Id"] for c in warm_on_engine(dying)], 40,
                 "the warm container of the engine that died was never removed")


SWEEP_SCRIPT = """
import json, sys, time
from backend import JobManager, JobManagerSync, Task
manager = JobManager(json.loads(sys.argv[1]))
JobManagerSync(manager).new_job(Task("busybox", command=["sh", "-c", "read l; echo {}"]), 1)
while not manager._dispatcher.warm.pool.ready[manager._dispatcher.placement.engines[0]]:
    time.sleep(0.05)
print(json.dumps({"manager": manager.manager_id}), flush=True)
time.sleep(120)
"""


def test_orphan_sweep_removes_a_dead_managers_warm_containers(engines):
    engine = engines[0]
    instances = [warm_instance(engine)]
    process = subprocess.Popen([sys.executable, "-c", SWEEP_SCRIPT, json.dumps(instances)],
                               stdout=subprocess.PIPE, text=True, start_new_session=True)
    try:
        info = json.loads(process.stdout.readline())
    finally:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()
        process.stdout.close()
    assert len(warm_on_engine(engine, info["manager"])) == 1
    with JobManager(instances):  # its start sweeps the dead manager's containers
        wait_for(lambda: not warm_on_engine(engine, info["manager"]), 30,
                 "the dead manager's warm container was not swept")
