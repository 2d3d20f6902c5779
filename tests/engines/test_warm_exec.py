"""Code execution at warm speed on real engines (docs/choices.rst, warm starts): raw jobs and
jobs with files served by warm containers whose program waits behind a gate.

Every result of a job served warm is compared with the same job run cold by the same
manager: the first job of a shape runs cold (no warm container exists yet), the next one of
that shape is served warm; what they return is equal but for the container, its duration and
``run["warm"]``.
"""
import hashlib
import io
import logging
import os
import tarfile

import pytest

from backend import JobManager, JobManagerSync, Task
from helpers import (IMAGE, PREFIX, api_client, comparable, killed_while_served_warm, shell,
                     warm_ready)
from engines import BUSYBOX_BINARY
from helpers import wait_for



def warm_instance(engine, **options):
    return dict({"server_url": engine.url, "name": engine.name, "container_prefix": PREFIX,
                 "time_between_polls": 0.2, "warm_containers": 1}, **options)


def ready(manager, engine, task=None, files=None):
    """Waits for a warm container on ``engine`` (of the shape of ``task`` with ``files``)."""
    warm_ready(manager, engine.name, task, files)


@pytest.fixture
def warm(engines):
    """``(engine, manager, sync)``: a manager with one warm container on the first engine."""
    engine = engines[0]
    with JobManager([warm_instance(engine)]) as manager:
        yield engine, manager, JobManagerSync(manager)


def cold_then_warm(warm, task, inputdata=None, files=None, timeout=60):
    """The job run cold, then the same job served warm; both results."""
    engine, manager, sync = warm
    cold = sync.new_job(task, inputdata, timeout=timeout, files=files)
    ready(manager, engine, task, files)
    served = sync.new_job(task, inputdata, timeout=timeout, files=files)
    assert cold["run"]["warm"] is False and served["run"]["warm"] is True, (cold, served)
    return cold, served


def same(warm, task, inputdata=None, files=None, timeout=60):
    """Runs the job cold and warm, asserts the results are the same, returns the warm one."""
    cold, served = cold_then_warm(warm, task, inputdata, files, timeout)
    assert comparable(served) == comparable(cold)
    return served


def raw(script, **options):
    return shell(script, protocol="raw", **options)


def test_each_job_sees_only_its_own_files(warm):
    engine, manager, sync = warm
    task = raw("ls -R; cat a.txt; echo left > left.txt; id -u", outputs=["left.txt"])
    results = []
    for i, files in enumerate([{"a.txt": "one"}, {"a.txt": "two", "sub/b.txt": b"b"},
                               {"a.txt": "three"}, {"a.txt": "four", "c": ""}]):
        results.append(sync.new_job(task, None, timeout=60, files=files))
        ready(manager, engine)
    assert [r["run"]["warm"] for r in results] == [False, True, True, True]
    assert [r["run"]["stdout"] for r in results] == [
        ".:\na.txt\none0\n", ".:\na.txt\nsub\n\n./sub:\nb.txt\ntwo0\n", ".:\na.txt\nthree0\n",
        ".:\na.txt\nc\nfour0\n"]  # no left.txt of the job before
    assert all(r["files"] == {"left.txt": b"left\n"} for r in results)
    again = sync.new_job(task, None, timeout=60, files={"a.txt": "one"})  # as its cold run
    assert again["run"]["warm"] is True and comparable(again) == comparable(results[0])


@pytest.mark.parametrize("data", [b"", b"abc", b"\n\nline\n", os.urandom(1 << 20)],
                         ids=["empty", "no-newline", "newlines", "1MB"])
def test_stdin_is_exact(warm, data):
    task = raw("cat > /in; wc -c < /in; md5sum < /in")
    served = same(warm, task, data)
    assert served["run"]["stdout"] == f"{len(data)}\n{hashlib.md5(data).hexdigest()}  -\n"


def test_stdin_read_in_pieces_and_files_together(warm):
    task = raw('read -r first; echo "$first"; cat a.txt; cat')
    served = same(warm, task, "1st\nabc\ndef", {"a.txt": "A\n"})
    assert served["run"]["stdout"] == "1st\nA\nabc\ndef"


@pytest.mark.parametrize("code", [0, 1, 3, 127])
def test_exit_codes(warm, code):
    served = same(warm, raw(f"echo out; echo err >&2; exit {code}"))
    assert served["run"]["exit_code"] == code
    assert served["result"] == ("success" if code == 0 else "failed")


@pytest.mark.parametrize("script, limits, reason", [
    ("while :; do :; done", {"time": 1, "hard_time": 30}, "cpu_time"),
    ("sleep 30", {"hard_time": 1}, "wall_time"),
    ("x=$(yes | head -c 300000000); echo done", {"memory": 20}, "memory"),
    ("yes | head -c 3000000", {"output": 10000}, "output"),
    ("head -c 3000000 /dev/zero > big", {"file_size": 1 << 20}, "disk"),
], ids=["time", "hard_time", "memory", "output", "file_size"])
def test_every_limit_on_a_warm_served_raw_job(warm, script, limits, reason):
    cold, served = cold_then_warm(warm, raw(script, limits=limits), files={"f": "x"})
    if reason == "memory":  # which process the kernel's OOM killer takes varies, and with it
        for result in (cold, served):  # the shell's "Killed" on stderr: cold runs differ too
            result["run"]["stderr"] = ""
    if reason == "cpu_time":  # RLIMIT_CPU's SIGXCPU (152) or the poll's kill (137), whichever
        for result in (cold, served):  # comes first: cold runs differ too
            assert result["run"]["exit_code"] in (137, 152), result
            result["run"]["exit_code"] = None
    assert comparable(served) == comparable(cold)
    assert (served["result"], served["run"]["reason"]) == (
        "timeout" if reason in ("cpu_time", "wall_time") else "overflow", reason)


def test_processes_limit(warm):
    served = same(warm, raw("for i in 1 2 3 4 5 6 7 8 9 10; do sleep 5 & done; echo started",
                            limits={"processes": 4}))
    assert served["run"]["exit_code"] != 0 and "started" not in served["run"]["stdout"]


def test_outputs_after_a_timeout(warm):
    task = raw("cat a.txt > out.txt; echo more >> out.txt; sleep 30",
               limits={"hard_time": 1}, outputs=["out.txt"])
    served = same(warm, task, files={"a.txt": "in\n"})
    assert served["run"]["reason"] == "wall_time"
    assert served["files"] == {"out.txt": b"in\nmore\n"}


def test_read_only_with_files_and_user(warm):
    task = raw("cat a.txt; echo w >> a.txt; id -u; touch /etc/x 2>/dev/null || echo ro",
               read_only=True, user="1000:1000", outputs=["a.txt"])
    served = same(warm, task, files={"a.txt": "A\n"})
    assert served["run"]["stdout"] == "A\n1000\nro\n"
    assert served["files"] == {"a.txt": b"A\nw\n"}


def test_workdir(warm):
    served = same(warm, raw("pwd; ls", workdir="/work/dir"), files={"x": "1"})
    assert served["run"]["stdout"] == "/work/dir\nx\n"


def test_a_task_without_command_runs_the_images(warm):
    # the test image's command is ["sh"]: it reads its program from stdin
    served = same(warm, Task(IMAGE, protocol="raw"), "cat f; echo $0; exit 4", {"f": "F\n"})
    assert (served["run"]["stdout"], served["run"]["exit_code"]) == ("F\nsh\n", 4)


def test_json_protocol_with_files_served_warm(warm):
    task = shell('read line; echo "{\\"result\\": \\"success\\", \\"text\\": \\"$(cat a)\\", '
                 '\\"line\\": $line}"')
    cold, served = cold_then_warm(warm, task, 7, {"a": "A"})
    assert cold.pop("line")["input"] == served.pop("line")["input"] == 7  # (its own job id)
    assert comparable(served) == comparable(cold)
    assert (served["text"], served["result"]) == ("A", "success")


@pytest.mark.parametrize("files", [None, {"a": "a"}], ids=["raw", "files"])
def test_kill_of_a_warm_served_job(warm, files):
    engine, manager, _ = warm
    result = killed_while_served_warm(manager, engine.name, files)
    assert (result["result"], result["run"]["reason"], result["run"]["warm"]) == (
        "killed", "killed", True)


def test_a_warm_container_killed_before_use(warm):
    engine, manager, sync = warm
    task = raw("cat; cat f", )
    cold = sync.new_job(task, "in\n", timeout=60, files={"f": "F"})
    ready(manager, engine)
    container = manager._dispatcher.warm.pool.ready[engine.name][0]
    with api_client(engine.url) as client:
        client.kill(container.container_id)
    wait_for(lambda: not any(w is container for w in manager._dispatcher.warm.pool.ready[
        engine.name]), 30, "the killed warm container was kept")
    after = sync.new_job(task, "in\n", timeout=60, files={"f": "F"})
    assert comparable(after) == comparable(cold) and after["run"]["warm"] is False


def no_shell_image(engine):
    """An image of one static busybox at /busybox: no /bin/sh."""
    data = io.BytesIO()
    with tarfile.open(fileobj=data, mode="w") as tar:
        tar.add(BUSYBOX_BINARY, arcname="busybox")
    tag = PREFIX + "noshell"
    with api_client(engine.url) as client:
        client.import_image_from_data(data.getvalue(), repository=tag, tag="latest",
                                      changes=['CMD ["/busybox", "cat"]'])
    return "noshell"


def test_an_image_without_sh_is_served_cold_and_logged_once(warm, caplog):
    engine, manager, sync = warm
    task = Task(no_shell_image(engine), protocol="raw", workdir="/")
    with caplog.at_level(logging.INFO, logger="backend"):
        results = []
        for _ in range(3):
            results.append(sync.new_job(task, "data", timeout=60, files={"f": "F"}))
            wait_for(lambda: not manager._dispatcher.warm.pool.starting, 30, "still starting")
    assert [r["run"]["stdout"] for r in results] == ["data"] * 3
    assert [r["run"]["warm"] for r in results] == [False] * 3
    said = [r for r in caplog.records if "/bin/sh" in r.getMessage()]
    assert len(said) == 1, [r.getMessage() for r in said]
    # the busybox image of the same manager is still served warm
    same(warm, raw("cat"), "x")


@pytest.mark.timeout(900)  # the first run builds the python image's root file system
def test_a_python_program_in_files_on_the_python_image(warm, python_image):
    task = Task(python_image, command=["python3", "main.py"], protocol="raw",
                outputs=["out.txt"])
    files = {"main.py": "import sys, helper\n"
                        "data = sys.stdin.read()\n"
                        "print(helper.shout(data), len(data))\n"
                        "open('out.txt', 'w').write(data[::-1])\n"
                        "sys.exit(5)\n",
             "helper.py": "def shout(s):\n    return s.upper()\n"}
    served = same(warm, task, "hello", files)
    assert (served["run"]["stdout"], served["run"]["exit_code"]) == ("HELLO 5\n", 5)
    assert served["files"] == {"out.txt": b"olleh"}


def test_the_python_images_own_command_reads_the_program_from_stdin(warm, python_image):
    served = same(warm, Task(python_image, protocol="raw"), "import os; print(os.getcwd())")
    assert served["run"]["stdout"] == "/\n"


@pytest.mark.timeout(900)  # a kind's engines start, and the python image is loaded
def test_on_every_engine_kind(engine_kind):
    """The core of the above on each engine kind (Docker 20.10, Docker 28.5, Podman): files
    per job, exact stdin, exit code, a limit with outputs, ``read_only`` with files and the
    image's own command, each served warm and equal to its cold run; and the python image."""
    from images import load_python_image

    kind, engines = engine_kind
    engine = engines[0]
    python = load_python_image(engine.url, PREFIX + "python")[len(PREFIX):]
    data = os.urandom(1 << 20)
    cases = [
        (raw("ls; cat a.txt; cat > in; md5sum < in; exit 3"), data, {"a.txt": "one"}),
        (raw("ls; cat a.txt"), "", {"a.txt": "two", "sub/b": "b"}),
        (raw("cat a.txt > out; sleep 30", limits={"hard_time": 1}, outputs=["out"]), "",
         {"a.txt": "A"}),
        (raw("cat a.txt; echo w >> a.txt; id -u", read_only=True, user="1000:1000",
             outputs=["a.txt"]), "", {"a.txt": "A\n"}),
        (Task(IMAGE, protocol="raw"), "cat f; exit 4", {"f": "F"}),
        (Task(python, command=["python3", "main.py"], protocol="raw"), "21",
         {"main.py": "print(int(input()) * 2)"}),
    ]
    with JobManager([warm_instance(engine)]) as manager:
        warm = (engine, manager, JobManagerSync(manager))
        served = [same(warm, task, inputdata, files) for task, inputdata, files in cases]
    assert served[0]["run"]["stdout"] == f"a.txt\none{hashlib.md5(data).hexdigest()}  -\n"
    assert served[0]["run"]["exit_code"] == 3
    assert served[1]["run"]["stdout"] == "a.txt\nsub\ntwo"
    assert (served[2]["run"]["reason"], served[2]["files"]) == ("wall_time", {"out": b"A"})
    assert served[3]["files"] == {"a.txt": b"A\nw\n"}
    assert (served[4]["run"]["stdout"], served[4]["run"]["exit_code"]) == ("F", 4)
    assert served[5]["run"]["stdout"] == "42\n"
