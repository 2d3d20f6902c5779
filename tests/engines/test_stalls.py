"""Adversarial jobs: none stalls a submitter or the manager, each ends with its status and
reason (docs/results.rst) within its bound, and a normal job submitted while it runs is not
delayed.

The bounds are those of ``docs/failures.rst``; the times are measured here, against a normal
job run alone on the same manager just before (the same machine, the same load)."""
from __future__ import annotations

import time
from concurrent.futures import Future
from typing import Any, List, Tuple

from backend import JobManager, Task
from helpers import api_client, ok_script, shell
from helpers import wait_for

MB = 1_000_000
BIG_INPUT = "x" * (4 * MB)  # far more than a socket's buffers: the engine stops reading
NORMAL = shell(ok_script())
#: Seconds a normal job may be delayed by an adversarial one running beside it.
MOST_DELAY = 1.0


def timed(future: Future, timeout: float = 60) -> Tuple[float, Any]:
    start = time.monotonic()
    result = future.result(timeout)
    return time.monotonic() - start, result


def normal_time(manager: JobManager) -> float:
    """Seconds a normal job takes on this manager now (the best of two)."""
    return min(timed(manager.submit(NORMAL, {"n": 1}))[0] for _ in range(2))


def running(engines, job_id: str) -> bool:
    for engine in engines:
        with api_client(engine.url) as client:
            if client.containers(filters={"label": f"backend.job={job_id}",
                                          "status": "running"}):
                return True
    return False


def run_beside(manager: JobManager, engines, task: Task, inputdata: Any,
               wait_running: bool = True) -> Tuple[float, dict, float]:
    """Runs an adversarial job and, once its container runs, a normal one beside it.

    Returns:
        ``(seconds the adversarial job took, its result, how much later than alone the
        normal job ended)``.
    """
    alone = normal_time(manager)
    start = time.monotonic()
    bad = manager.submit(task, inputdata)
    if wait_running:
        wait_for(lambda: running(engines, bad.job_id) or bad.done(), 10, "never started")
    normal_seconds, normal = timed(manager.submit(NORMAL, {"n": 2}))
    assert normal["result"] == "success", normal
    result = bad.result(60)
    return time.monotonic() - start, result, normal_seconds - alone


def test_a_job_that_ignores_a_big_input_ends_with_its_process(manager, engines):
    task = shell("echo '{\"result\": \"success\"}'", limits={"time": 2})  # hard_time 6 s
    seconds, result, delay = run_beside(manager, engines, task, BIG_INPUT, wait_running=False)
    assert (result["result"], result["run"]["reason"]) == ("success", None), result
    assert seconds < 4, seconds
    assert delay < MOST_DELAY, delay


def test_a_job_that_reads_one_byte_a_second_ends_at_hard_time(manager, engines):
    task = shell("while :; do dd bs=1 count=1 of=/dev/null 2>/dev/null; sleep 1; done",
                 limits={"hard_time": 3})
    seconds, result, delay = run_beside(manager, engines, task, BIG_INPUT)
    assert (result["result"], result["run"]["reason"]) == ("timeout", "wall_time"), result
    assert 3 <= result["run"]["duration"] < 5, result["run"]["duration"]
    assert seconds < 3 + 3, seconds
    assert delay < MOST_DELAY, delay


def test_a_job_that_prints_50_mb_without_reading_its_input_ends_at_its_output_limit(
        manager, engines):
    task = shell("head -c 50000000 /dev/zero; sleep 30", limits={"time": 5})
    seconds, result, delay = run_beside(manager, engines, task, BIG_INPUT)
    assert (result["result"], result["run"]["reason"]) == ("overflow", "output"), result
    assert seconds < 5, seconds
    assert delay < MOST_DELAY, delay


def test_a_job_that_closes_its_output_and_sleeps_ends_at_hard_time(manager, engines):
    task = shell("exec >&- 2>&-; sleep 30", limits={"hard_time": 3})
    seconds, result, delay = run_beside(manager, engines, task, BIG_INPUT)
    assert (result["result"], result["run"]["reason"]) == ("timeout", "wall_time"), result
    assert seconds < 3 + 3, seconds
    assert delay < MOST_DELAY, delay


def test_a_background_process_holding_stdout_does_not_hold_the_job(manager, engines):
    # the main process exits: the container ends (its init ends the rest), so does the job
    task = shell("(sleep 30) & echo '{\"result\": \"success\"}'", limits={"time": 2})
    seconds, result, delay = run_beside(manager, engines, task, BIG_INPUT, wait_running=False)
    assert (result["result"], result["run"]["reason"]) == ("success", None), result
    assert seconds < 4, seconds
    assert delay < MOST_DELAY, delay


def test_six_jobs_ignoring_big_inputs_do_not_hold_two_submitters(instances):
    task = shell("echo '{\"result\": \"success\"}'", limits={"time": 2})
    with JobManager(instances, process_pool_size=2) as manager:
        alone = normal_time(manager)
        start = time.monotonic()
        bad: List[Future] = [manager.submit(task, BIG_INPUT) for _ in range(6)]
        normal_seconds, normal = timed(manager.submit(NORMAL, {"n": 3}))
        results = [future.result(60) for future in bad]
        seconds = time.monotonic() - start
    assert normal["result"] == "success", normal
    assert all((r["result"], r["run"]["reason"]) == ("success", None) for r in results), results
    assert seconds < 6, seconds
    # the normal job waits for the six starts before it in the pool's line, not for their input
    assert normal_seconds - alone < MOST_DELAY + 1.0, (normal_seconds, alone)


def test_a_kill_ends_a_job_whose_input_is_still_being_written(manager, engines):
    task = shell("sleep 30", limits={"hard_time": 20})
    future = manager.submit(task, BIG_INPUT)
    wait_for(lambda: running(engines, future.job_id), 10, "never started")
    start = time.monotonic()
    manager.kill_job(future.job_id)
    result = future.result(30)
    assert (result["result"], result["run"]["reason"]) == ("killed", "killed"), result
    assert time.monotonic() - start < 3
