"""JobManagerBuffer (docs/api.rst): submit batches, collect results, from several threads."""
import threading

import pytest

from backend import JobManagerBuffer, Task
from helpers import ok_script, shell


def test_buffer_lifecycle(manager):
    buffer = JobManagerBuffer(manager)
    slow = buffer.new_job(shell(ok_script("sleep 1; ")), 1)
    assert buffer.is_waiting(slow) and not buffer.is_done(slow)
    with pytest.raises(KeyError, match="not ended"):
        buffer.get_result(slow)
    assert buffer.wait([slow], timeout=30)
    assert not buffer.is_waiting(slow) and buffer.is_done(slow)
    assert buffer.get_result(slow)["result"] == "success"
    with pytest.raises(KeyError, match="already fetched"):
        buffer.get_result(slow)
    with pytest.raises(KeyError, match="not submitted"):
        buffer.get_result("unknown")


def test_wait_times_out(manager):
    buffer = JobManagerBuffer(manager)
    job_id = buffer.new_job(shell("sleep 30"), 1)
    assert buffer.wait(timeout=0.2) is False
    manager.kill_job(job_id)
    assert buffer.wait(timeout=30)
    assert buffer.get_result(job_id)["result"] == "killed"


def test_new_jobs_and_as_completed(manager):
    buffer = JobManagerBuffer(manager)
    ids = buffer.new_jobs([(shell(ok_script(f"sleep {delay}; ")), i)
                           for i, delay in enumerate((1.5, 0, 0.5))] + [(Task(), "local")])
    seen = list(buffer.as_completed(timeout=60))
    assert sorted(job_id for job_id, _ in seen) == sorted(ids)
    assert seen[-1][0] == ids[0]  # the slowest comes last
    assert all(result["result"] == "success" for _, result in seen)
    assert not buffer.is_done(ids[0])  # as_completed fetched the results


def test_as_completed_timeout(manager):
    buffer = JobManagerBuffer(manager)
    job_id = buffer.new_job(shell("sleep 30"), 1)
    with pytest.raises(TimeoutError):
        list(buffer.as_completed([job_id], timeout=0.3))
    manager.kill_job(job_id)


def test_thread_safety(manager):
    buffer = JobManagerBuffer(manager)
    ids, lock = [], threading.Lock()

    def submit():
        for i in range(5):
            job_id = buffer.new_job(Task() if i % 2 else shell(ok_script()), i)
            with lock:
                ids.append(job_id)

    threads = [threading.Thread(target=submit) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert buffer.wait(ids, timeout=60)
    assert sorted(job_id for job_id, _ in buffer.as_completed(ids)) == sorted(ids)
