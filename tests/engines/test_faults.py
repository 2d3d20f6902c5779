"""Faults: dead children, dead managers, unreachable engines, misbehaving callbacks."""
import json
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time

import docker
import pytest

from backend import JobManager, JobManagerSync, Task
from backend.ipc._child import is_running
from helpers import ok_script, our_containers, shell

NOWHERE = {"server_url": "unix:///nonexistent/docker.sock", "name": "nowhere"}


@pytest.fixture(autouse=True, params=["forkserver", "spawn"])
def start_method(request, monkeypatch):
    """Every fault test runs under both start methods (the default of every JobManager made
    in this module, the ``manager`` fixture's included)."""
    monkeypatch.setitem(JobManager.__init__.__kwdefaults__, "start_method", request.param)
    return request.param


def run(manager, task, inputdata=None, timeout=60):
    return JobManagerSync(manager).new_job(task, inputdata, timeout=timeout)


def test_callback_that_raises_is_logged_and_harms_nothing(manager, caplog):
    results = []
    done = threading.Event()

    def bad(job_id, task, result):
        raise ValueError("boom in callback")

    def exits(job_id, task, result):
        sys.exit(3)

    def good(job_id, task, result):
        results.append(result["result"])
        done.set()

    manager.new_job(Task(), 1, bad)
    manager.new_job(shell(ok_script()), 1, exits)
    manager.new_job(shell(ok_script()), 1, good)
    assert done.wait(30)
    manager.close()
    assert results == ["success"]
    assert "boom in callback" in caplog.text and "Traceback" in caplog.text
    assert "SystemExit" in caplog.text


def test_callback_may_submit_and_close(instances):
    manager = JobManager(instances)
    second = threading.Event()

    def first(job_id, task, result):
        manager.new_job(Task(), 2, lambda *a: (second.set(), manager.close()))

    manager.new_job(shell(ok_script()), 1, first)
    assert second.wait(30)
    deadline = time.monotonic() + 20
    while manager._dispatcher.is_alive() and time.monotonic() < deadline:
        time.sleep(0.05)
    with pytest.raises(RuntimeError):
        manager.new_job(Task(), 3, lambda *a: None)


def test_unreachable_engine_is_skipped(instances):
    with JobManager([NOWHERE] + instances) as manager:
        results = [run(manager, shell(ok_script()), i) for i in range(4)]
    assert [r["result"] for r in results] == ["success"] * 4
    assert all(r["run"]["host"] != "nowhere" for r in results)


def test_no_reachable_engine_is_a_crash(engines):
    with JobManager([NOWHERE]) as manager:
        result = run(manager, shell(ok_script()))
    assert result["result"] == "crash" and result["run"]["reason"] == "engine_unreachable"
    assert "nowhere" in result["text"]


def test_killed_children_are_replaced(instances, start_method):
    with JobManager(instances, start_method=start_method) as manager:
        sync = JobManagerSync(manager)
        assert sync.new_job(shell(ok_script()), 1, timeout=60)["result"] == "success"
        submitter = manager._dispatcher.supervisor.submitters[0].process
        os.kill(submitter.pid, signal.SIGKILL)
        # a waiter dies while it watches a running job: the job is recovered
        future = manager.submit(shell(ok_script("sleep 1.5; ")), 2)
        deadline = time.monotonic() + 20
        while not any(w.jobs for waiters in manager._dispatcher.supervisor.waiters.values()
                      for w in waiters):
            assert time.monotonic() < deadline
            time.sleep(0.02)
        waiter = next(w for waiters in manager._dispatcher.supervisor.waiters.values()
                      for w in waiters if w.jobs)
        os.kill(waiter.process.pid, signal.SIGKILL)
        assert future.result(timeout=30)["result"] == "success"
        results = [sync.new_job(shell(ok_script()), i, timeout=60)["result"] for i in range(4)]
        assert results == ["success"] * 4
        assert submitter.pid not in [s.process.pid for s in
                                     manager._dispatcher.supervisor.submitters]


def test_library_never_prints(manager, capfd):
    run(manager, shell(ok_script("echo noise >&2; ")))
    run(manager, Task("no-such-image"))
    out, err = capfd.readouterr()
    assert out == "" and err == ""


SCRIPT = textwrap.dedent("""
    import json, os, sys, time
    from backend import JobManager, Task
    instances = json.loads(sys.argv[1])
    manager = JobManager(instances, start_method=sys.argv[2])
    for i in range(2):
        manager.new_job(Task("busybox", command=["sh", "-c", "sleep 60"]), i, print)
    while len(manager._dispatcher.jobs) < 2 or any(
            j.state.value != "running" for j in manager._dispatcher.jobs.values()):
        time.sleep(0.05)
    pids = [c.process.pid for c in manager._dispatcher.supervisor.children()]
    print(json.dumps({"pids": pids, "manager": manager.manager_id}), flush=True)
    time.sleep(120)
""")


def test_manager_sigkill_children_exit_and_next_manager_sweeps(engines, instances,
                                                               start_method):
    process = subprocess.Popen([sys.executable, "-c", SCRIPT, json.dumps(instances),
                                start_method],
                               stdout=subprocess.PIPE, text=True)
    try:
        line = process.stdout.readline()
        info = json.loads(line)
    finally:
        process.kill()
        process.wait()
    process.stdout.close()
    deadline = time.monotonic() + 10
    alive = set(info["pids"])
    while alive and time.monotonic() < deadline:
        alive = {pid for pid in alive if is_running(pid)}
        time.sleep(0.1)
    assert not alive, "children outlived their SIGKILLed manager"
    left = [c for c in our_containers(engines)
            if c["Labels"]["backend.manager"] == info["manager"]]
    assert len(left) == 2
    with JobManager(instances):  # its start sweeps the dead manager's containers
        deadline = time.monotonic() + 20
        while [c for c in our_containers(engines)
               if c["Labels"]["backend.manager"] == info["manager"]]:
            assert time.monotonic() < deadline, "the dead manager's containers were not swept"
            time.sleep(0.1)


def test_container_removed_from_outside(engines, instances):
    with JobManager(instances[:1]) as manager:
        future = manager.submit(shell("sleep 30"), 1)
        with docker.APIClient(base_url=engines[0].url, version="1.41") as client:
            deadline = time.monotonic() + 20
            while not client.containers(filters={"label": f"backend.job={future.job_id}"}):
                assert time.monotonic() < deadline
                time.sleep(0.05)
            [container] = client.containers(filters={"label": f"backend.job={future.job_id}"})
            client.remove_container(container["Id"], force=True)
        result = future.result(timeout=20)
    assert result["result"] == "crash" and result["run"]["reason"] == "removed"
    assert "outside" in result["text"]


def test_script_that_never_closes_exits_cleanly(engines, instances):
    script = textwrap.dedent("""
        import json, sys
        from backend import JobManager, JobManagerSync, Task
        manager = JobManager(json.loads(sys.argv[1]))
        sync = JobManagerSync(manager)
        print(sync.new_job(Task("busybox", command=["sh", "-c", "echo '{\\"result\\": \\"success\\"}'"]), 1)["result"])
        manager.new_job(Task("busybox", command=["sh", "-c", "sleep 60"]), 2, print)
    """)
    started = time.monotonic()
    done = subprocess.run([sys.executable, "-c", script, json.dumps(instances)],
                          capture_output=True, text=True, timeout=60)
    assert time.monotonic() - started < 30
    assert done.returncode == 0 and done.stderr == ""
    assert done.stdout.splitlines()[0] == "success"
    assert not our_containers(engines)


@pytest.fixture
def interruptible():
    """SIGINT raises KeyboardInterrupt, as in a terminal, even when the tests run where it is
    ignored (a background job of a non-interactive shell inherits SIG_IGN)."""
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, previous)


def test_keyboard_interrupt_in_sync_kills_the_job(manager, interruptible):
    sync = JobManagerSync(manager)
    # SIGINT handled by a thread other than the main one, as Ctrl-C may be
    timer = threading.Timer(1.0, lambda: signal.raise_signal(signal.SIGINT))
    timer.start()
    started = time.monotonic()
    with pytest.raises(KeyboardInterrupt):
        sync.new_job(shell("sleep 30"), 1, timeout=60)
    assert time.monotonic() - started < 10, "the interrupt was seen late"
    timer.join()
    deadline = time.monotonic() + 20
    while manager.get_waiting_jobs_count():
        assert time.monotonic() < deadline, "the interrupted job was not killed"
        time.sleep(0.05)


def test_submitter_killed_while_starting_a_job(instances, start_method):
    with JobManager(instances, start_method=start_method) as manager:
        dispatcher = manager._dispatcher
        for attempt in range(5):  # the kill must land while the submitter holds the job
            future = manager.submit(shell("sleep 30"), attempt)
            holder = None
            deadline = time.monotonic() + 10
            while holder is None and time.monotonic() < deadline:
                holder = next((w for w in dispatcher.supervisor.submitters
                               if getattr(w.holding, "job_id", None) == future.job_id), None)
            if holder is not None:
                os.kill(holder.process.pid, signal.SIGKILL)
            result = future.result(timeout=20) if holder else None
            if result and result["result"] == "crash":
                break
            manager.kill_job(future.job_id)
            future.result(timeout=20)
        assert result["result"] == "crash" and result["run"]["reason"] == "start_failed"
        assert "submitter" in result["text"]
        assert JobManagerSync(manager).new_job(shell(ok_script()), 1, timeout=30)["result"] \
            == "success"


def test_forkserver_killed_mid_run(instances):
    from multiprocessing import forkserver
    with JobManager(instances) as manager:
        running = manager.submit(shell(ok_script("sleep 1; ")), 1)
        children = {child.process.pid for child in manager._dispatcher.supervisor.children()}
        os.kill(forkserver._forkserver._forkserver_pid, signal.SIGKILL)
        first = running.result(timeout=30)
        assert first["result"] == "success", first
        # its children go on: none was taken for dead (their sentinels came from it)
        assert {child.process.pid for child in
                manager._dispatcher.supervisor.children()} == children
        # a child that dies now is replaced through a new forkserver
        os.kill(manager._dispatcher.supervisor.submitters[0].process.pid, signal.SIGKILL)
        results = [JobManagerSync(manager).new_job(shell(ok_script()), i, timeout=30)["result"]
                   for i in range(4)]
        assert results == ["success"] * 4


def test_a_blocking_callback_does_not_hold_other_jobs(instances):
    release = threading.Event()
    others = []
    all_others = threading.Event()

    def blocking(job_id, task, result):
        release.wait(30)

    def other(job_id, task, result):
        others.append(result["result"])
        if len(others) == 3:
            all_others.set()

    with JobManager(instances, callback_manager_count=2) as manager:
        manager.new_job(shell(ok_script()), 0, blocking)
        for i in range(3):
            manager.new_job(shell(ok_script()), i, other)
        assert all_others.wait(30), "a blocking callback held the other jobs"
        assert manager.get_waiting_jobs_count() == 1
        release.set()
    assert others == ["success"] * 3
