"""Raw jobs and files (docs/running-programs.rst), on real engines: one test (or more) per
sentence.

A raw job is any program: its stdin is ``inputdata``, its result says how it exited, and
``run["stdout"]``/``run["stderr"]`` are what it printed. ``files`` are written into its
working directory before it starts; ``outputs`` come back in ``result["files"]``. The core
cases run on every engine kind too (``engine_kind``: Docker 28.5, Podman)."""
import os
import time

import pytest

from backend import JobManager, JobManagerBuffer, JobManagerSync, LocalCheck, Task
from helpers import IMAGE, PREFIX, api_client, shell
from helpers import wait_for


def raw(script, **options):
    """A raw busybox task running ``script`` with ``sh -c``."""
    return Task(IMAGE, command=["sh", "-c", script], protocol="raw", **options)


def run(manager, task, inputdata=None, files=None):
    return JobManagerSync(manager).new_job(task, inputdata, timeout=60, files=files)


# -- stdin, stdout, stderr, exit code --------------------------------------------------------

@pytest.mark.core
@pytest.mark.parametrize("inputdata, expected", [
    (b"bytes in\n", "bytes in\n"), ("str é ü\n", "str é ü\n"), (None, ""), (b"", "")])
def test_stdin_is_the_whole_input_then_end_of_file(manager, inputdata, expected):
    result = run(manager, raw("cat; echo '<eof>'"), inputdata)
    assert result["result"] == "success", result
    assert result["run"]["stdout"] == expected + "<eof>\n"
    assert result["text"] == "" and result["run"]["exit_code"] == 0
    assert result["run"]["reason"] is None


def test_a_megabyte_of_stdin_comes_back_exactly(manager):
    data = os.urandom(1 << 20)  # binary: compared through a file, and its echo through stdout
    task = raw("cat > copy.bin; cat copy.bin | wc -c", outputs=["copy.bin"],
               limits={"output": 2 << 20})
    result = run(manager, task, data, files={"placeholder": ""})
    assert result["result"] == "success", result
    assert result["files"]["copy.bin"] == data
    assert result["run"]["stdout"].strip() == str(1 << 20)
    text = ("0123456789abcdef" * 65536)
    result = run(manager, raw("cat", limits={"output": 2 << 20}), text)
    assert result["run"]["stdout"] == text


def test_stdout_and_stderr_are_kept_apart_and_stdout_is_not_parsed(manager):
    result = run(manager, raw("echo '{\"result\": \"failed\"}'; echo oops >&2"))
    assert result["result"] == "success"  # exit code 0: its stdout is not read as a result
    assert result["run"]["stdout"] == '{"result": "failed"}\n'
    assert result["run"]["stderr"] == "oops\n"


def test_non_zero_exit_is_failed(manager):
    result = run(manager, raw("echo partial; exit 7"))
    assert (result["result"], result["text"]) == ("failed", "")
    assert result["run"]["exit_code"] == 7 and result["run"]["reason"] is None
    assert result["run"]["stdout"] == "partial\n"


def test_undecodable_bytes_become_replacement_characters(manager):
    result = run(manager, raw("cat"), b"ok \xff\xfe end")
    assert result["run"]["stdout"] == "ok \ufffd\ufffd end"


def test_the_local_check_is_merged(manager):
    class Graded(Task):
        def check_answer(self, inputdata):
            return LocalCheck("failed", text="style: no comments", problems={"p1": "bad"})

    task = Graded(IMAGE, command=["sh", "-c", "cat"], protocol="raw")
    result = run(manager, task, "x")
    assert (result["result"], result["text"], result["problems"]) == \
        ("failed", "style: no comments", {"p1": "bad"})
    assert result["run"]["stdout"] == "x"


# -- limits: each with its status and reason -------------------------------------------------

def test_cpu_time(manager):
    # a wall-clock limit far from the CPU time's: on a loaded machine the loop may get
    # less than a core, and the CPU time is what this checks
    result = run(manager, raw("echo begun; while :; do :; done", limits={"time": 1, "hard_time": 20}))
    assert (result["result"], result["run"]["reason"]) == ("timeout", "cpu_time")
    assert "CPU time" in result["text"]


def test_wall_time_keeps_the_output_before_the_kill(manager):
    result = run(manager, raw("echo out; echo err >&2; sleep 30", limits={"hard_time": 1}))
    assert (result["result"], result["run"]["reason"]) == ("timeout", "wall_time")
    assert (result["run"]["stdout"], result["run"]["stderr"]) == ("out\n", "err\n")
    assert result["text"] == "The job ran longer than its wall-clock limit (1 s)."


def test_memory(manager):
    result = run(manager, raw("x=$(yes | head -c 300000000); echo done",
                              limits={"memory": 20}))
    assert (result["result"], result["run"]["reason"]) == ("overflow", "memory")


def test_output_keeps_the_head_and_tail_of_stdout(manager):
    script = "echo FIRST; i=0; while [ $i -lt 3000 ]; do echo line-$i; i=$((i+1)); done; " \
             "echo LAST; sleep 30"
    result = run(manager, raw(script, limits={"output": 10000}))
    assert (result["result"], result["run"]["reason"]) == ("overflow", "output")
    stdout = result["run"]["stdout"]
    assert stdout.startswith("FIRST\n") and "cut" in stdout
    assert len((stdout + result["run"]["stderr"]).encode()) < 10000 + 100


def test_file_size_ends_with_disk(manager):
    task = raw("exec head -c 3000000 /dev/zero > big", limits={"file_size": 1000000})
    result = run(manager, task)
    assert (result["result"], result["run"]["reason"]) == ("overflow", "disk")
    assert result["text"] == ("The job wrote more than allowed: a file over 1000000 bytes, "
                              "or over 1073741824 bytes in all.")


def test_file_size_a_write_past_it_fails(manager):
    task = raw("head -c 3000000 /dev/zero > big; echo rc=$?; wc -c < big",
               limits={"file_size": 1000000})
    result = run(manager, task)
    assert "1000000" in result["run"]["stdout"]  # the file stops at the limit


def test_processes(manager):
    script = "for i in $(seq 30); do sleep 2 & done; wait; echo end"
    result = run(manager, raw(script, limits={"processes": 8}))
    assert "fork" in result["run"]["stderr"], result  # the job's forks fail; the host is safe


def test_kill_returns_the_output_so_far_and_the_outputs(manager, engines):
    future = manager.submit(raw("echo started; echo kept > out.txt; sleep 30",
                                outputs=["out.txt"]), None, files={"in.txt": "x"})

    def printed():
        for engine in engines:
            with api_client(engine.url) as client:
                for container in client.containers(filters={"label": "backend.manager"}):
                    if b"started" in client.logs(container["Id"]):
                        return True
        return False

    wait_for(printed, 30, "the job did not print")
    manager.kill_job(future.job_id)
    result = future.result(timeout=60)
    assert (result["result"], result["run"]["reason"]) == ("killed", "killed")
    assert result["run"]["stdout"] == "started\n"
    assert result["files"] == {"out.txt": b"kept\n"}


# -- files -----------------------------------------------------------------------------------

@pytest.mark.core
def test_files_in_folders_are_in_the_working_directory_and_writable(manager):
    files = {"main.sh": "echo from main", "data/in.txt": b"42\n", "a/b/c.txt": "deep"}
    script = "pwd; sh main.sh; cat data/in.txt a/b/c.txt; echo; echo more >> data/in.txt; " \
             "cat data/in.txt; ./main.sh"
    result = run(manager, raw(script), files=files)
    assert result["result"] == "success", result
    assert result["run"]["stdout"] == "/job\nfrom main\n42\ndeep\n42\nmore\nfrom main\n"


def test_files_belong_to_the_jobs_user(manager):
    script = "id -u; stat -c '%u:%g' . data data/in.txt; echo new > new.txt && echo created"
    result = run(manager, raw(script, user="1234:5678"), files={"data/in.txt": "x"})
    assert result["result"] == "success", result
    assert result["run"]["stdout"] == "1234\n1234:5678\n1234:5678\n1234:5678\ncreated\n"


def test_files_with_a_read_only_root(manager):
    script = "touch /not-here 2>/dev/null && echo root-writable; echo more >> in.txt; " \
             "cat in.txt; mkdir made && echo ok > made/x; echo $?"
    result = run(manager, raw(script, read_only=True, outputs=["made"]),
                 files={"in.txt": "x\n"})
    assert result["result"] == "success", result
    assert result["run"]["stdout"] == "x\nmore\n0\n"
    assert result["files"] == {"made/x": b"ok\n"}


def test_files_of_a_user_with_a_read_only_root_are_writable(manager):
    script = "echo more >> in.txt; cat in.txt; echo o > out/o.txt; echo $?"
    result = run(manager, raw(script, read_only=True, user="1000:1000", outputs=["out"]),
                 files={"in.txt": "x\n", "out/.keep": ""})
    assert result["run"]["stdout"] == "x\nmore\n0\n", result
    assert result["files"] == {"out/.keep": b"", "out/o.txt": b"o\n"}


def test_workdir(manager):
    result = run(manager, raw("pwd; cat f", workdir="/srv/work"), files={"f": "F"})
    assert result["run"]["stdout"] == "/srv/work\nF"
    result = run(manager, raw("pwd", workdir="/tmp"))
    assert result["run"]["stdout"] == "/tmp\n"
    result = run(manager, raw("pwd"))  # the image's
    assert result["run"]["stdout"] == "/\n"


def test_files_work_with_the_json_protocol(manager):
    task = shell("read line; echo \"{\\\"result\\\": \\\"success\\\", \\\"f\\\": \\\"$(cat f)\\\"}\"; "
                 "echo written > out.txt", outputs=["out.txt"])
    result = run(manager, task, {"any": 1}, files={"f": "F"})
    assert (result["result"], result["f"]) == ("success", "F"), result
    assert result["files"] == {"out.txt": b"written\n"}
    assert "stdout" not in result["run"]  # the JSON protocol's result is unchanged


def test_the_json_protocol_is_unchanged(manager):
    result = run(manager, shell("read line; echo '{\"result\": \"failed\", \"text\": \"t\"}'"), 1)
    assert (result["result"], result["text"]) == ("failed", "t")
    assert "stdout" not in result["run"] and "files" not in result


# -- outputs ---------------------------------------------------------------------------------

@pytest.mark.core
def test_outputs_files_and_folders_missing_ones_absent(manager):
    script = "mkdir -p res/sub; echo 1 > res/a; echo 2 > res/sub/b; echo 3 > top"
    result = run(manager, raw(script, outputs=["res", "top", "nothing", "res/sub/none"]))
    assert result["files"] == {"res/a": b"1\n", "res/sub/b": b"2\n", "top": b"3\n"}
    assert result["run"]["files_left_out"] == []


def test_outputs_after_a_timeout(manager):
    task = raw("echo partial > out.txt; sleep 30", outputs=["out.txt"], limits={"hard_time": 1})
    result = run(manager, task)
    assert result["result"] == "timeout"
    assert result["files"] == {"out.txt": b"partial\n"}


def test_outputs_within_the_output_limit(manager):
    script = "head -c 6000 /dev/zero > a; head -c 6000 /dev/zero > b; echo s > c"
    result = run(manager, raw(script, outputs=["a", "b", "c"], limits={"output": 10000}))
    assert set(result["files"]) == {"a", "c"}
    assert result["run"]["files_left_out"] == ["b"]


# -- bad paths and contents: refused in the caller, no job exists ----------------------------

@pytest.mark.parametrize("files, error, words", [
    ({"/etc/passwd": "x"}, ValueError, "is absolute"),
    ({"a/../../b": "x"}, ValueError, "'..' component"),
    ({"a//b": "x"}, ValueError, "empty component"),
    ({"a/": "x"}, ValueError, "empty component"),
    ({"": "x"}, ValueError, "is empty"),
    ({"./a": "x"}, ValueError, "'.' component"),
    ({"a\\b": "x"}, ValueError, "backslash"),
    ({"a": "x", "a/b": "y"}, ValueError, "also the folder"),
    ({"a": 3}, TypeError, "bytes or str"),
    ({3: "x"}, TypeError, "must be a str"),
    (["a"], TypeError, "must be a dict"),
    ({"a": b"x" * (32 << 20), "b": b"y" * (32 << 20 + 1)}, ValueError, "64 MiB"),
])
def test_bad_files_are_refused_in_the_caller(manager, files, error, words):
    with pytest.raises(error, match=words):
        manager.new_job(raw("true"), None, lambda *a: None, files=files)
    assert manager.get_waiting_jobs_count() == 0


def test_bad_task_values_and_inputs_are_refused(manager):
    with pytest.raises(ValueError, match="'json' or 'raw'"):
        Task(IMAGE, protocol="binary")
    with pytest.raises(ValueError, match="absolute"):
        Task(IMAGE, workdir="job")
    with pytest.raises(ValueError, match="'..' component"):
        Task(IMAGE, outputs=["../etc"])
    with pytest.raises(TypeError, match="list of relative paths"):
        Task(IMAGE, outputs="out.txt")
    with pytest.raises(TypeError, match="bytes, str or None"):
        manager.new_job(raw("true"), {"a": 1}, lambda *a: None)


# -- the wrappers ----------------------------------------------------------------------------

def test_files_on_submit_and_the_buffer(manager):
    assert manager.submit(raw("cat f"), None, files={"f": "1"}).result(60)["run"]["stdout"] \
        == "1"
    buffer = JobManagerBuffer(manager)
    ids = buffer.new_jobs([(raw("cat f"), None, {"f": "2"}), (raw("cat"), "3")])
    ids.append(buffer.new_job(raw("cat f"), None, files={"f": "4"}))
    assert buffer.wait(ids, timeout=60)
    assert [buffer.get_result(i)["run"]["stdout"] for i in ids] == ["2", "3", "4"]


# -- a job that never reads its stdin --------------------------------------------------------

@pytest.mark.parametrize("size", [
    60000,    # within the socket's buffer: the submitter writes it at once
    1 << 20,  # the rest is the waiter's to write, and stops when the program ends
    5 << 20,
])
def test_a_program_that_never_reads_its_stdin(manager, size):
    start = time.monotonic()
    result = JobManagerSync(manager).new_job(raw("echo done", limits={"hard_time": 10}),
                                             b"x" * size, timeout=15)
    assert result["result"] == "success", result
    assert result["run"]["stdout"] == "done\n"
    assert time.monotonic() - start < 10


# -- the same core on every engine kind ------------------------------------------------------

@pytest.fixture
def kind_manager(engine_kind):
    kind, engines = engine_kind
    instances = [{"server_url": e.url, "name": e.name, "container_prefix": PREFIX,
                  "time_between_polls": 0.2} for e in engines]
    with JobManager(instances) as job_manager:
        yield job_manager


def test_core_on_every_engine(kind_manager, engine_kind):
    result = run(kind_manager, raw("cat; echo err >&2; exit 3"), "in é")
    assert (result["result"], result["run"]["stdout"], result["run"]["stderr"]) == \
        ("failed", "in é", "err\n")
    script = "cat sub/in.txt; echo more >> sub/in.txt; mkdir -p o; echo r > o/r"
    for read_only in (False, True):
        result = run(kind_manager, raw(script, read_only=read_only, outputs=["o", "sub"]),
                     files={"sub/in.txt": "x\n"})
        assert result["result"] == "success", (read_only, result)
        assert result["files"] == {"o/r": b"r\n", "sub/in.txt": b"x\nmore\n"}, read_only
    result = run(kind_manager, raw("exec head -c 3000000 /dev/zero > big", workdir="/w",
                                   limits={"file_size": 1000000}))
    assert (result["result"], result["run"]["reason"]) == ("overflow", "disk"), result
    result = run(kind_manager, raw("head -c 3000000 /dev/zero > big; wc -c < big",
                                   workdir="/w", limits={"file_size": 1000000}))
    assert result["run"]["stdout"].strip() == "1000000", (result["run"]["stderr"], result)


# -- the command line ------------------------------------------------------------------------

def test_cli_run_raw_prints_the_programs_output_and_exits_with_its_code(engines, tmp_path):
    import subprocess
    import sys
    (tmp_path / "prog.sh").write_text('echo "got: $(cat)"; cat data.txt; echo warn >&2; exit 4')
    (tmp_path / "data.txt").write_text("D")
    base = [sys.executable, "-m", "backend", "run", "--raw", "--image", PREFIX + IMAGE,
            "--engine", engines[0].url]
    completed = subprocess.run(
        base + ["--command", "sh prog.sh", "--stdin", "-", "--file",
                f"prog.sh={tmp_path / 'prog.sh'}", "--file", f"data.txt={tmp_path / 'data.txt'}"],
        input="hello", capture_output=True, text=True, timeout=100)
    assert (completed.returncode, completed.stdout, completed.stderr) == (4, "got: hello\nD",
                                                                           "warn\n")
    completed = subprocess.run(base + ["--command", "echo x; sleep 30", "--time", "1"],
                               capture_output=True, text=True, timeout=100)
    assert (completed.returncode, completed.stdout) == (124, "x\n")
    assert "timeout (wall_time)" in completed.stderr


def test_cli_batch_accepts_raw_jobs(engines, tmp_path):
    import json
    import subprocess
    import sys
    source, target = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    source.write_text(json.dumps({"image": IMAGE, "command": "cat; cat f", "protocol": "raw",
                                  "input": "in ", "files": {"f": "F"}, "outputs": ["f"]}) + "\n")
    completed = subprocess.run(
        [sys.executable, "-m", "backend", "batch", str(source), str(target), "--engine",
         engines[0].url, "--prefix", PREFIX], capture_output=True, text=True, timeout=100)
    assert completed.returncode == 0, completed.stderr
    result = json.loads(target.read_text())["result"]
    assert (result["result"], result["run"]["stdout"], result["files"]) == \
        ("success", "in F", {"f": "F"})
