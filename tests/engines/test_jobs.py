"""Jobs on two real engines: results, callbacks, the container protocol, placement."""
import json
import os
import threading
import time

import docker
import pytest

from backend import JobManager, JobManagerSync, LocalCheck, Task
from helpers import IMAGE, Occupancy, ok_script, shell

RESULT_KEYS = {"result", "text", "problems", "run"}
RUN_KEYS = {"warm", "host", "container_id", "exit_code", "duration", "stderr", "reason"}


def run(manager, task, inputdata=None, timeout=60):
    return JobManagerSync(manager).new_job(task, inputdata, timeout=timeout)


@pytest.mark.core
def test_result_shape(manager):
    result = run(manager, shell(ok_script("echo to-stderr >&2; ")))
    assert set(result) >= RESULT_KEYS and set(result["run"]) == RUN_KEYS
    assert result["result"] == "success"
    assert result["run"]["host"] in ("e1", "e2")
    assert result["run"]["exit_code"] == 0 and result["run"]["reason"] is None
    assert len(result["run"]["container_id"]) == 64
    assert result["run"]["stderr"] == "to-stderr\n"
    assert 0 < result["run"]["duration"] < 10


@pytest.mark.core
def test_stdin_protocol_and_large_unicode_input(manager):
    data = {"text": "é€😀 ünïcödé " * 12000, "n": [1, 2.5, None, True]}
    assert len(json.dumps(data, ensure_ascii=False).encode()) > 200_000
    # the container echoes its whole stdin inside the result
    task = shell('read -r line; printf \'{"result": "success", "stdin": %s}\' "$line"',
                 limits={"time": 5})
    result = run(manager, task, data)
    assert result["result"] == "success", result
    stdin = result["stdin"]
    assert stdin["input"] == data
    assert stdin["job_id"] and stdin["limits"]["time"] == 5
    assert stdin["limits"]["hard_time"] == 15


def test_stdin_ends_after_one_line(manager):
    # `cat` returns only when stdin is closed: the job must see end of file
    result = run(manager, shell('n=$(cat | wc -l); echo "{\\"result\\": \\"success\\", '
                                '\\"lines\\": $n}"'), 1)
    assert result["result"] == "success" and result["lines"] == 1


@pytest.mark.core
def test_callback_runs_in_manager_process_with_the_same_task(manager):
    task = shell(ok_script())
    seen = []
    done = threading.Event()

    class Grader:
        def on_result(self, job_id, task, result):
            seen.append(("method", job_id, task, os.getpid(), threading.current_thread().name))
            done.set()

    job_id = manager.new_job(task, 1, Grader().on_result)
    assert done.wait(30)
    kind, seen_id, seen_task, pid, thread = seen[0]
    assert seen_id == job_id and seen_task is task and pid == os.getpid()
    assert thread.startswith("backend-callback")
    box = []
    lambda_done = threading.Event()
    manager.new_job(task, 2, lambda j, t, r: (box.append((t, r)), lambda_done.set()))
    assert lambda_done.wait(30)
    assert box[0][0] is task and box[0][1]["result"] == "success"


def test_twenty_jobs_twenty_callbacks_once_each(manager):
    calls = []
    lock = threading.Lock()
    all_done = threading.Event()
    task = shell(ok_script())

    def callback(job_id, task, result):
        with lock:
            calls.append((job_id, result["result"]))
            if len(calls) == 20:
                all_done.set()

    ids = [manager.new_job(task, i, callback) for i in range(20)]
    assert all_done.wait(60)
    manager.close()
    assert sorted(ids) == sorted(job_id for job_id, _ in calls)
    assert len(calls) == 20 and all(status == "success" for _, status in calls)


class Check(Task):
    def __init__(self, local, **kwargs):
        super().__init__(IMAGE, **kwargs)
        self.local = local

    def check_answer(self, inputdata):
        return self.local


def test_local_only_job(manager):
    task = Check(LocalCheck("failed", need_container=False, text="too short", problems={"q1": "x"}))
    result = run(manager, task)
    assert result == {"result": "failed", "text": "too short", "problems": {"q1": "x"}}
    assert run(manager, Task(), 1) == {"result": "success", "text": "", "problems": {}}


@pytest.mark.parametrize("local, container, expected", [
    (("success", "local ok"), ("success", "remote ok"), ("success", "local ok\nremote ok")),
    (("failed", "local bad"), ("success", ""), ("failed", "local bad")),
    (("success", ""), ("failed", "remote bad"), ("failed", "remote bad")),
    (("failed", "a"), ("timeout", "t"), ("timeout", "t")),
])
def test_local_and_container_merge(manager, local, container, expected):
    out = json.dumps({"result": container[0], "text": container[1],
                      "problems": {"p1": "remote", "p2": "r2"}})
    task = Check(LocalCheck(local[0], text=local[1], problems={"p1": "local"}),
                 command=["sh", "-c", f"echo '{out}'"])
    result = run(manager, task)
    assert (result["result"], result["text"]) == expected
    if expected[0] in ("success", "failed"):
        assert result["problems"] == {"p1": "local\nremote", "p2": "r2"}
    else:
        assert result["problems"] == {"p1": "remote", "p2": "r2"}


def test_invalid_json_is_a_crash_that_shows_stderr(manager):
    result = run(manager, shell("echo not json; echo oops >&2; exit 3"))
    assert result["result"] == "crash" and result["run"]["reason"] == "bad_output"
    assert "no JSON object" in result["text"] and "oops" in result["text"]
    assert result["run"]["exit_code"] == 3


def test_last_line_json_and_extra_keys(manager):
    result = run(manager, shell('echo "some log"; echo \'{"result": "failed", "text": "t", '
                                '"score": 0.5}\''))
    assert result["result"] == "failed" and result["text"] == "t" and result["score"] == 0.5


def test_unknown_result_value_becomes_error(manager):
    result = run(manager, shell('echo \'{"result": "great", "text": "hm"}\''))
    assert result["result"] == "error"
    assert "great" in result["text"] and "hm" in result["text"]


def test_missing_image_is_a_crash_naming_it(manager):
    result = run(manager, Task("no-such-image"))
    assert result["result"] == "crash" and result["run"]["reason"] == "no_image"
    assert "backend-test-no-such-image" in result["text"]
    assert result["run"]["host"] in result["text"]


def test_submit_returns_a_future(manager):
    future = manager.submit(shell(ok_script()), 1)
    assert isinstance(future.job_id, str)
    assert future.result(timeout=30)["result"] == "success"


def test_equal_jobs_spread_evenly(manager):
    futures = [manager.submit(shell(ok_script("sleep 0.5; ")), i) for i in range(8)]
    hosts = [future.result(timeout=60)["run"]["host"] for future in futures]
    assert hosts.count("e1") == 4 and hosts.count("e2") == 4


def test_max_concurrent_jobs_and_fifo(engines, instances):
    for instance in instances:
        instance["max_concurrent_jobs"] = 1
    order = []
    with JobManager(instances) as manager, Occupancy(engines[0]) as first, \
            Occupancy(engines[1]) as second:
        ids = [manager.new_job(shell(ok_script("sleep 0.3; ")), i,
                               lambda job_id, task, result: order.append(job_id))
               for i in range(6)]
        assert manager.get_waiting_jobs_count() == 6
        manager.close()
    assert (first.peak, second.peak) == (1, 1), (first.at_peak, second.at_peak)
    assert len(order) == 6
    # two slots: the jobs start pairwise in submission order
    assert set(order[:2]) == set(ids[:2]) and set(order[2:4]) == set(ids[2:4])


def test_over_capacity(engines, instances):
    instances = [dict(instances[0], max_concurrent_jobs=1)]
    with JobManager(instances, max_queued_jobs=1) as manager:
        sync_results = [manager.submit(shell(ok_script("sleep 1; ")), i) for i in range(3)]
        third = sync_results[2].result(timeout=10)
        assert sync_results[0].running() and not sync_results[0].done()
        assert third["result"] == "crash" and third["run"]["reason"] == "over_capacity"
        assert "over capacity" in third["text"]
        assert [f.result(timeout=30)["result"] for f in sync_results[:2]] == ["success"] * 2


@pytest.mark.core
def test_kill_running_and_queued_jobs(engines, instances):
    instances = [dict(instances[0], max_concurrent_jobs=1)]
    with JobManager(instances) as manager:
        running = manager.submit(shell("sleep 30"), 1)
        queued = manager.submit(shell("sleep 30"), 2)
        _wait_running(engines[0], manager)
        assert manager.kill_job(queued.job_id)
        assert queued.result(timeout=10)["result"] == "killed"
        assert manager.kill_job(running.job_id)
        result = running.result(timeout=20)
        assert result["result"] == "killed" and result["run"]["reason"] == "killed"
        assert not manager.kill_job(running.job_id)
        assert not manager.kill_job("no-such-job")


def _wait_running(engine, manager, count=1, timeout=20):
    deadline = time.monotonic() + timeout
    with docker.APIClient(base_url=engine.url, version="1.41") as client:
        while time.monotonic() < deadline:
            if len(client.containers(filters={
                    "label": f"backend.manager={manager.manager_id}"})) >= count:
                return
            time.sleep(0.05)
    raise AssertionError("the container did not start")


def test_close_without_wait_kills_running_jobs(engines, instances):
    manager = JobManager(instances)
    futures = [manager.submit(shell("sleep 60"), i) for i in range(3)]
    _wait_running(engines[0], manager, 1)
    started = time.monotonic()
    manager.close(wait=False)
    assert time.monotonic() - started < 20
    assert [f.result(timeout=1)["result"] for f in futures] == ["killed"] * 3


def test_close_waits_for_running_jobs(instances):
    manager = JobManager(instances)
    future = manager.submit(shell(ok_script("sleep 1; ")), 1)
    manager.close()
    assert future.done() and future.result()["result"] == "success"


def test_task_directory_is_mounted_read_only(manager, tmp_path):
    (tmp_path / "answer.txt").write_text("42\n")
    task = shell('a=$(cat /task/answer.txt); if touch /task/x 2>/dev/null; then w=yes; '
                 'else w=no; fi; echo "{\\"result\\": \\"success\\", \\"a\\": $a, '
                 '\\"w\\": \\"$w\\"}"', directory=str(tmp_path))
    result = run(manager, task)
    assert result["a"] == 42 and result["w"] == "no"
    assert not (tmp_path / "x").exists()


def test_relative_task_directory(instances, tmp_path):
    (tmp_path / "t1").mkdir()
    (tmp_path / "t1" / "f").write_text("hello")
    with JobManager(instances, tasks_directory=str(tmp_path)) as manager:
        result = run(manager, shell('echo "{\\"result\\": \\"success\\", \\"f\\": '
                                    '\\"$(cat /task/f)\\"}"', directory="t1"))
    assert result["f"] == "hello"


def test_env_is_only_the_tasks(manager, monkeypatch):
    monkeypatch.setenv("HOST_SECRET", "s3cr3t")
    result = run(manager, shell('echo "{\\"result\\": \\"success\\", \\"env\\": '
                                '\\"$(env | tr \'\\n\' \' \')\\"}"', env={"GREETING": "hi"}))
    assert "GREETING=hi" in result["env"] and "s3cr3t" not in result["env"]


def test_kill_job_from_sync_timeout(manager):
    sync = JobManagerSync(manager)
    started = time.monotonic()
    with pytest.raises(TimeoutError):
        sync.new_job(shell("sleep 30"), 1, timeout=1)
    assert time.monotonic() - started < 15
    assert manager.get_waiting_jobs_count() == 0


def test_containers_carry_the_labels(engines, manager):
    import socket
    future = manager.submit(shell("sleep 30"), 1)
    deadline = time.monotonic() + 20
    found = []
    while not found:
        assert time.monotonic() < deadline
        for engine in engines:
            with docker.APIClient(base_url=engine.url, version="1.41") as client:
                found += client.containers(filters={"label": f"backend.job={future.job_id}"})
        time.sleep(0.05)
    labels = found[0]["Labels"]
    assert labels["backend.manager"] == manager.manager_id
    assert labels["backend.owner"] == f"{socket.gethostname()}:{os.getpid()}"
    manager.kill_job(future.job_id)
    assert future.result(timeout=20)["result"] == "killed"


def test_instance_runtime_is_passed_to_the_engine(engines, instances):
    with JobManager([dict(instances[0], runtime="runc")]) as manager:
        assert run(manager, shell(ok_script()))["result"] == "success"
    with JobManager([dict(instances[0], runtime="no-such-runtime")]) as manager:
        result = run(manager, shell(ok_script()))
    assert result["result"] == "crash" and result["run"]["reason"] == "start_failed"
    assert "no-such-runtime" in result["text"]
