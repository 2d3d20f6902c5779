"""A blocking call on the same manager made from a callback when no other callback thread could
deliver its result: ``JobManagerSync.new_job``, a job future's ``result()``,
``JobManagerBuffer.wait`` and ``as_completed`` raise ``RuntimeError`` naming
``callback_manager_count`` at once, instead of waiting forever."""
import threading
import time

import pytest

from backend import JobManager, JobManagerBuffer, JobManagerSync
from backend._callback_manager import CallbackThreads
from helpers import ok_script, shell


def blocking_calls(manager):
    """Each blocking call of the API on ``manager``, by name (each submits a job first)."""
    buffer = JobManagerBuffer(manager)

    def buffered(wait):
        buffer.new_job(shell(ok_script()), {})
        return wait()

    return {
        "JobManagerSync.new_job()": lambda: JobManagerSync(manager).new_job(
            shell(ok_script()), {}),
        "Future.result()": lambda: manager.submit(shell(ok_script()), {}).result(),
        "Future.exception()": lambda: manager.submit(shell(ok_script()), {}).exception(60),
        "JobManagerBuffer.wait()": lambda: buffered(buffer.wait),
        "JobManagerBuffer.as_completed()": lambda: buffered(
            lambda: list(buffer.as_completed(timeout=60))),
    }


def call_each_in_a_callback(manager):
    """Makes each blocking call from a callback; ``{name: (outcome, seconds)}``."""
    outcomes = {}
    finished = threading.Event()

    def callback(job_id, task, result):
        for name, call in blocking_calls(manager).items():
            start = time.monotonic()
            try:
                outcome = call()
            except RuntimeError as error:
                outcome = error
            outcomes[name] = (outcome, time.monotonic() - start)
        finished.set()

    manager.new_job(shell(ok_script()), {}, callback)
    assert finished.wait(100), "the callback did not return"
    return outcomes


@pytest.mark.timeout(120)
def test_a_blocking_call_in_the_only_callback_thread_raises_at_once(instances):
    with JobManager(instances) as manager:  # callback_manager_count=1
        outcomes = call_each_in_a_callback(manager)
        done = manager.submit(shell(ok_script()), {})
        done.result(timeout=60)
        in_callback = []
        manager.new_job(shell(ok_script()), {},
                        lambda *args: in_callback.append(done.result()))  # done: no wait
    assert in_callback and in_callback[0]["result"] == "success"
    assert set(outcomes) == set(blocking_calls(manager))
    for name, (outcome, seconds) in outcomes.items():
        assert isinstance(outcome, RuntimeError), (name, outcome)
        assert "callback_manager_count=1" in str(outcome) and name in str(outcome)
        assert seconds < 1.0, (name, seconds)


@pytest.mark.timeout(120)
def test_with_a_callback_thread_free_a_callback_may_wait(instances):
    with JobManager(instances, callback_manager_count=2) as manager:
        outcomes = call_each_in_a_callback(manager)
    for name, (outcome, seconds) in outcomes.items():
        assert not isinstance(outcome, RuntimeError), (name, outcome)
    assert outcomes["JobManagerSync.new_job()"][0]["result"] == "success"
    assert outcomes["Future.result()"][0]["result"] == "success"
    assert outcomes["Future.exception()"][0] is None


def test_the_check_counts_the_threads_inside_callbacks():
    threads = CallbackThreads(2)
    threads.check("outside")  # not a callback thread: may wait
    with threads.inside():
        threads.check("alone inside")  # the other callback thread is free
    inside, release = threading.Barrier(2), threading.Event()

    def callback_thread():
        with threads.inside():
            inside.wait(10)
            release.wait(10)

    other = threading.Thread(target=callback_thread)
    other.start()
    try:
        with threads.inside():
            inside.wait(10)  # both inside now
            with pytest.raises(RuntimeError, match="callback_manager_count=2"):
                threads.check("JobManagerSync.new_job()")
    finally:
        release.set()
        other.join(10)
    threads.check("outside again")
