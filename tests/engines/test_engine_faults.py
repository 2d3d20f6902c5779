"""An engine that dies with jobs running, and comes back (a third private engine, e3)."""
import time

import docker
import pytest

from backend import JobManager
from backend.model._job import JobState
from helpers import wait_for
from helpers import PREFIX, IMAGE, ROOT, ok_script, shell
from engines import PrivateEngine, build_busybox_image


@pytest.fixture
def third_engine(engines):
    engine = PrivateEngine("e3", ROOT / "e3")
    engine.start()
    build_busybox_image(engine.url, PREFIX + IMAGE)
    yield engine
    engine.stop()


@pytest.mark.timeout(180)
def test_engine_lost_then_back(engines, third_engine):
    instances = [{"server_url": third_engine.url, "name": "e3", "container_prefix": PREFIX,
                  "time_between_polls": 0.2},
                 {"server_url": engines[0].url, "name": "e1", "container_prefix": PREFIX,
                  "time_between_polls": 0.2}]
    with JobManager(instances) as manager:
        dispatcher = manager._dispatcher
        lost = manager.submit(shell("sleep 60"), 1)
        other = manager.submit(shell("sleep 60"), 2)
        wait_for(lambda: all(j.state is JobState.RUNNING for j in dispatcher.jobs.values())
              and len(dispatcher.jobs) == 2, 30, "jobs did not start")
        on_e3 = lost if dispatcher.jobs[lost.job_id].engine == "e3" else other
        survivor = other if on_e3 is lost else lost
        killed_at = time.monotonic()
        third_engine.kill()
        result = on_e3.result(timeout=30)
        assert time.monotonic() - killed_at < 15
        assert result["result"] == "crash" and result["run"]["reason"] == "engine_lost"
        assert "e3" in result["text"]
        assert not survivor.done()
        # e3 is skipped while it is down
        wait_for(lambda: not dispatcher.placement.is_reachable("e3"), 10, "e3 not marked down")
        placed = manager.submit(shell(ok_script()), 3).result(timeout=30)
        assert placed["result"] == "success" and placed["run"]["host"] == "e1"
        # ... and used again once it answers
        third_engine.start()
        wait_for(lambda: dispatcher.placement.is_reachable("e3"), 30, "e3 not marked up again")
        hosts = {manager.submit(shell(ok_script("sleep 0.5; ")), i).result(timeout=30)
                 ["run"]["host"] for i in range(2)}
        assert "e3" in hosts
        manager.kill_job(survivor.job_id)
        assert survivor.result(timeout=30)["result"] == "killed"
        # the lost job's container could not be removed while e3 was down: its removal
        # waited, and is sent once e3 answers
        with docker.APIClient(base_url=third_engine.url, version="1.41") as client:
            label = f"backend.manager={manager.manager_id}"
            wait_for(lambda: not client.containers(all=True, filters={"label": label}), 40,
                  "the lost job's container was never removed")


@pytest.mark.timeout(300)
def test_soak_with_a_killed_process_and_a_restarted_engine(engines, third_engine):
    import collections
    import os
    import signal
    import threading

    instances = [{"server_url": url, "name": name, "container_prefix": PREFIX,
                  "time_between_polls": 0.2, "max_concurrent_jobs": 4}
                 for name, url in (("e1", engines[0].url), ("e3", third_engine.url))]
    calls = collections.Counter()
    statuses = collections.Counter()
    lock = threading.Lock()
    all_done = threading.Event()
    total = 300

    def callback(job_id, task, result):
        with lock:
            calls[job_id] += 1
            statuses[result["result"], result["run"]["reason"]] += 1
            if sum(calls.values()) == total:
                all_done.set()

    clients = [docker.APIClient(base_url=engine.url, version="1.41")
               for engine in (engines[0], third_engine)]

    def left(label="backend.manager"):
        return [(c["Id"][:12], c["State"], c["Labels"].get("backend.job"))
                for client in clients
                for c in client.containers(all=True, filters={"label": label})]

    with JobManager(instances) as manager:
        ids = [manager.new_job(shell(ok_script()), i, callback) for i in range(total)]
        wait_for(lambda: sum(calls.values()) >= 50, 120, "jobs do not progress")
        # a submitter killed, perhaps while the engine creates a container for it
        os.kill(manager._dispatcher.supervisor.submitters[0].process.pid, signal.SIGKILL)
        wait_for(lambda: sum(calls.values()) >= 100, 120, "jobs do not progress after a kill")
        # creates in flight: some containers are made, their ids never heard of
        third_engine.restart()
        assert all_done.wait(240), f"{total - sum(calls.values())} job(s) never ended"
        # removed while the manager runs, not only by its check for leftovers at close
        mine = f"backend.manager={manager.manager_id}"
        wait_for(lambda: not left(mine), 30, f"containers of {mine} left")
    assert not left(), "the JobManager closed with containers left"
    for client in clients:
        client.close()
    assert sorted(calls) == sorted(ids) and set(calls.values()) == {1}
    assert statuses["success", None] >= total - 20, statuses
    assert set(status for status, _ in statuses) <= {"success", "crash"}
