"""Hostile output on real engines (docs/failures.rst, "Hostile output"): whatever a job
prints or leaves ends that job alone, with a verdict within seconds of its container's end,
a result that is bounded and is JSON, and no delay for the other jobs of the manager.

Each case runs beside a normal job on the same engine (one waiter serves both), which must
succeed in time; the waiter that served the hostile job must still be the same process."""
import json
import threading
import time

import pytest

from backend import JobManager, JobManagerSync, Task
from backend.model._files import ENTRY_COST, MAX_LEFT_OUT
from helpers import IMAGE, PREFIX, ok_script, shell

#: Seconds a verdict may take after the container's end (its own run is timed apart).
VERDICT_BOUND = 10.0
#: Seconds a normal job beside may take (it sleeps 1 s), generous for a loaded machine.
NORMAL_BOUND = 15.0

BOMB = ("printf '{\"result\":\"success\",\"x\":'; head -c 200000 /dev/zero | tr '\\0' '['; "
        "head -c 200000 /dev/zero | tr '\\0' ']'; printf '}'")


def raw(script, **options):
    return Task(IMAGE, command=["sh", "-c", script], protocol="raw", **options)


@pytest.fixture
def one_engine(instances):
    """A manager on e1 alone: the hostile job and the normal one share its waiter."""
    with JobManager(instances[:1]) as manager:
        yield manager


def waiter_pids(manager):
    return [w.process.pid for ws in manager._dispatcher.supervisor.waiters.values() for w in ws]


def json_part(result):
    """The result without its files (bytes), which must be JSON."""
    part = {key: value for key, value in result.items() if key != "files"}
    json.dumps(part, allow_nan=False)
    return part


def run_beside_a_normal_job(manager, task, inputdata=None, timeout=60.0):
    """Runs ``task`` and a normal job at the same time; returns the task's result and its
    seconds to a verdict, after checking the normal job and the waiters."""
    pids = waiter_pids(manager)
    sync = JobManagerSync(manager)
    normal = {}

    def run_normal():
        started = time.monotonic()
        normal["result"] = sync.new_job(shell(ok_script("sleep 1; ")), None, timeout=60)
        normal["seconds"] = time.monotonic() - started

    beside = threading.Thread(target=run_normal)
    started = time.monotonic()
    beside.start()
    result = sync.new_job(task, inputdata, timeout=timeout)
    seconds = time.monotonic() - started
    beside.join(70)
    assert normal["result"]["result"] == "success", normal["result"]
    assert normal["seconds"] < NORMAL_BOUND, normal["seconds"]
    assert waiter_pids(manager) == pids  # no waiter died
    json_part(result)
    return result, seconds


def assert_bad_output(result, says):
    assert (result["result"], result["run"]["reason"]) == ("crash", "bad_output"), result
    assert says in result["text"], result["text"]


# -- JSON --------------------------------------------------------------------------------------

def test_a_nesting_bomb_ends_its_job_alone(one_engine):
    result, seconds = run_beside_a_normal_job(one_engine, shell(BOMB))
    assert_bad_output(result, "nested deeper than 100 levels")
    assert seconds < VERDICT_BOUND
    closing = time.monotonic()
    one_engine.close()
    assert time.monotonic() - closing < 15


@pytest.mark.parametrize("printed, says", [
    ('{"result": "failed", "x": 1e999}', "not finite (1e999)"),
    ('{"result": "failed", "x": NaN}', "not finite (NaN)"),
    ('{"result": "failed", "x": [1, -Infinity]}', "not finite (-Infinity)"),
])
def test_numbers_that_are_not_finite_are_bad_output(one_engine, printed, says):
    result, seconds = run_beside_a_normal_job(one_engine, shell(f"echo '{printed}'"))
    assert_bad_output(result, says)
    assert seconds < VERDICT_BOUND


def test_a_100000_digit_integer_is_bad_output(one_engine):
    script = ("printf '{\"result\":\"success\",\"x\":'; head -c 100000 /dev/zero "
              "| tr '\\0' '7'; printf '}'")
    result, seconds = run_beside_a_normal_job(one_engine, shell(script))
    assert_bad_output(result, "more than 4300 digits")
    assert seconds < VERDICT_BOUND


@pytest.mark.parametrize("script", [
    "head -c 100000 /dev/zero",                       # NUL bytes
    "head -c 1040000 /dev/zero | tr '\\0' 'a'",       # a 1 MiB line without a newline
], ids=["nul-bytes", "long-line"])
def test_output_that_is_no_json_object_is_bad_output(one_engine, script):
    result, seconds = run_beside_a_normal_job(one_engine, shell(script))
    assert_bad_output(result, "no JSON object")
    assert seconds < VERDICT_BOUND


def test_every_field_of_the_wrong_type(one_engine):
    printed = ('{"result": ["success"], "text": {"a": 1}, "problems": [1, 2], "run": "x", '
               '"extra": [null, {"b": 2.5}]}')
    result, seconds = run_beside_a_normal_job(one_engine, shell(f"echo '{printed}'"))
    assert result["result"] == "error" and "unknown result ['success']" in result["text"]
    assert '{"a": 1}' in result["text"] and result["problems"] == {}
    assert result["run"]["host"] == "e1" and result["extra"] == [None, {"b": 2.5}]
    assert seconds < VERDICT_BOUND


@pytest.mark.timeout(600)
def test_100_bombs_on_two_engines_beside_normal_jobs(manager):
    """100 nesting bombs at once on both engines, 20 normal jobs among them: every job gets
    its verdict, the normal ones succeed, and no waiter dies."""
    pids = waiter_pids(manager)
    results = {}
    done = threading.Event()
    lock = threading.Lock()

    def callback(job_id, task, result):
        with lock:
            results[job_id] = result
            if len(results) == 120:
                done.set()

    bombs, normal = [], []
    for i in range(120):
        if i % 6 == 5:
            normal.append(manager.new_job(shell(ok_script()), None, callback))
        else:
            bombs.append(manager.new_job(shell(BOMB), None, callback))
    assert len(bombs) == 100
    assert done.wait(540), f"{len(results)} of 120 verdicts"
    for job_id in bombs:
        assert_bad_output(results[job_id], "nested deeper than 100 levels")
    for job_id in normal:
        assert results[job_id]["result"] == "success", results[job_id]
    assert {results[j]["run"]["host"] for j in bombs} == {"e1", "e2"}
    assert waiter_pids(manager) == pids


# -- output files ------------------------------------------------------------------------------

def assert_bounded(result, limit=1024 * 1024):
    """The files of a result cost no more than the output limit, names and entries too."""
    cost = sum(ENTRY_COST + len(name.encode()) + len(content)
               for name, content in result["files"].items())
    assert cost <= limit
    assert len(result["run"]["files_left_out"]) <= MAX_LEFT_OUT


@pytest.mark.timeout(600)
@pytest.mark.parametrize("count", [30000, 300000])
def test_many_output_files_are_bounded(one_engine, count):
    """(Making 300,000 files takes the container a minute or two on a loaded machine.)"""
    script = f"mkdir out && cd out && seq {count} | xargs touch && echo made"
    result, seconds = run_beside_a_normal_job(
        one_engine, raw(script, outputs=["out"], limits={"time": 250, "hard_time": 280}),
        timeout=320)
    assert result["result"] == "success" and result["run"]["stdout"] == "made\n", result
    assert seconds - result["run"]["duration"] < 2 * VERDICT_BOUND  # its start, its end
    assert_bounded(result)
    kept = len(result["files"])
    assert 1000 < kept < count  # about 1 MiB / (512 + 10) entries
    assert result["run"]["files_left_out"]  # the one that did not fit, at least
    assert result["run"]["files_left_out_more"] >= 0


def test_a_file_name_that_is_not_utf8(one_engine):
    script = "mkdir out && printf x > \"out/a$(printf '\\377')b\" && printf y > out/ok"
    result, seconds = run_beside_a_normal_job(one_engine, raw(script, outputs=["out"]))
    assert result["result"] == "success", result
    assert result["files"] == {"out/a\ufffdb": b"x", "out/ok": b"y"}
    "".join(result["files"]).encode("utf-8")  # every name is valid UTF-8
    assert seconds < VERDICT_BOUND


# -- a few cheap cases on every engine kind ----------------------------------------------------

@pytest.fixture
def kind_manager(engine_kind):
    kind, engines = engine_kind
    instances = [{"server_url": e.url, "name": e.name, "container_prefix": PREFIX,
                  "time_between_polls": 0.2} for e in engines[:1]]
    with JobManager(instances) as job_manager:
        # a fresh Podman's first container takes 15 s here: not a delay the test looks for
        JobManagerSync(job_manager).new_job(shell(ok_script()), None, timeout=60)
        yield job_manager


def test_hostile_output_on_every_engine_kind(kind_manager, engine_kind):
    result, seconds = run_beside_a_normal_job(kind_manager, shell(BOMB))
    assert_bad_output(result, "nested deeper than 100 levels")
    result, seconds = run_beside_a_normal_job(
        kind_manager, shell("echo '{\"result\": \"failed\", \"x\": NaN}'"))
    assert_bad_output(result, "not finite (NaN)")
    script = ("mkdir odd out && printf x > \"odd/a$(printf '\\377')b\" "
              "&& cd out && seq 3000 | xargs touch")
    result, seconds = run_beside_a_normal_job(kind_manager, raw(script, outputs=["odd", "out"],
                                                                workdir="/w"))
    assert result["result"] == "success", result["run"]["stderr"]
    assert result["files"]["odd/a\ufffdb"] == b"x"  # the first output: read first
    assert 1000 < len(result["files"]) < 3001
    assert_bounded(result)
