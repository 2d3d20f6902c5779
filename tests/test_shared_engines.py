"""Several managers on one engine (SPEC §3): the engine's ``max_concurrent_jobs`` bounds the
containers of all of them, counted from the engine; every manager makes progress; a manager
killed with jobs running frees its share once its containers are gone.

The number of our containers on the engine is sampled from the engine itself (docker-py, in
a thread of the test) every few milliseconds, beside the managers. The bound is SPEC §3's:
the limit, plus at most one job per manager while managers place at the same instant.
"""
import json
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time

import pytest

from backend import JobManager, JobManagerBuffer
from conftest import PREFIX, api_client, ok_script, shell
from helpers import wait_for

SLOTS = 2
#: A job that sleeps: long enough for the managers to contend for every freed slot.
SLEEPER = shell(ok_script("sleep 0.6; "), limits={"time": 5})


def one_engine(engine, slots=SLOTS):
    return [{"server_url": engine.url, "name": engine.name, "container_prefix": PREFIX,
             "max_concurrent_jobs": slots, "time_between_polls": 0.2}]


class Sampler:
    """Samples the running containers of every manager on an engine, from the engine, in a
    thread; :attr:`peak` is the most seen at once, :attr:`samples` how many listings."""

    def __init__(self, url: str, interval: float = 0.01):
        self.url, self.interval = url, interval
        self.peak = self.samples = 0
        self.by_manager_peak: dict = {}
        self._stopped = threading.Event()
        self._thread = threading.Thread(target=self._run, name="test-sampler", daemon=True)

    def _run(self) -> None:
        with api_client(self.url) as client:
            while not self._stopped.is_set():
                running = client.containers(filters={"label": "backend.manager",
                                                     "status": "running"})
                self.samples += 1
                self.peak = max(self.peak, len(running))
                self._stopped.wait(self.interval)

    def __enter__(self) -> "Sampler":
        self._thread.start()
        return self

    def __exit__(self, *exc_info) -> None:
        self._stopped.set()
        self._thread.join()


def run_all(managers, jobs_each, task=SLEEPER, timeout=90):
    """Submits ``jobs_each`` jobs to each manager at once; returns, per manager, the
    ``(monotonic end time, result)`` of each job in the order they ended."""
    buffers = [JobManagerBuffer(manager) for manager in managers]
    ids = [[buffer.new_job(task, {"n": i}) for i in range(jobs_each)] for buffer in buffers]
    ended = [[] for _ in managers]

    def collect(index):
        for _, result in buffers[index].as_completed(ids[index], timeout=timeout):
            ended[index].append((time.monotonic(), result))

    threads = [threading.Thread(target=collect, args=(i,)) for i in range(len(managers))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return ended


@pytest.mark.parametrize("count", [2, 3])
def test_managers_in_one_process_share_the_engine_limit(engines, count):
    engine = engines[0]
    managers = [JobManager(one_engine(engine)) for _ in range(count)]
    try:
        with Sampler(engine.url) as sampler:
            ended = run_all(managers, 12 // count * 2)
    finally:
        for manager in managers:
            manager.close()
    for results in ended:
        assert [r["result"] for _, r in results] == ["success"] * len(results), results
    print(f"{count} managers: peak {sampler.peak} running on {SLOTS} slots "
          f"({sampler.samples} samples)")
    assert sampler.samples > 50
    assert SLOTS <= sampler.peak <= SLOTS + count - 1, sampler.peak


PROCESS_SCRIPT = textwrap.dedent("""
    import json, sys, time
    from backend import JobManager, JobManagerBuffer, Task
    instances, jobs = json.loads(sys.argv[1]), int(sys.argv[2])
    task = Task("busybox", command=["sh", "-c", sys.argv[3]], limits={"time": 5})
    with JobManager(instances) as manager:
        sys.stdout.write("ready\\n")
        sys.stdout.flush()
        sys.stdin.readline()  # go
        buffer = JobManagerBuffer(manager)
        ids = [buffer.new_job(task, {"n": i}) for i in range(jobs)]
        statuses = [result["result"] for _, result in buffer.as_completed(ids, timeout=90)]
        sys.stdout.write(json.dumps(statuses) + "\\n")
""")


def start_manager_process(engine, jobs, script):
    process = subprocess.Popen(
        [sys.executable, "-c", PROCESS_SCRIPT, json.dumps(one_engine(engine)), str(jobs),
         script], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
        env={**os.environ, "PYTHONPATH": os.getcwd()})
    assert process.stdout.readline() == "ready\n"
    return process


@pytest.mark.parametrize("count", [2, 3])
def test_managers_in_separate_processes_share_the_engine_limit(engines, count):
    engine = engines[0]
    script = ok_script("sleep 0.6; ")
    processes = [start_manager_process(engine, 12 // count * 2, script)
                 for _ in range(count)]
    try:
        with Sampler(engine.url) as sampler:
            for process in processes:
                process.stdin.write("go\n")
                process.stdin.flush()
            outputs = [process.communicate(timeout=100)[0] for process in processes]
    finally:
        for process in processes:
            if process.poll() is None:
                process.kill()
                process.wait()
    for process, output in zip(processes, outputs):
        assert process.returncode == 0
        statuses = json.loads(output.splitlines()[-1])
        assert statuses == ["success"] * (12 // count * 2), statuses
    print(f"{count} processes: peak {sampler.peak} running on {SLOTS} slots "
          f"({sampler.samples} samples)")
    assert SLOTS <= sampler.peak <= SLOTS + count - 1, sampler.peak
