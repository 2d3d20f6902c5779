"""Every limit ends a job with its status and reason; hardening seen from inside."""

import pytest

from backend import JobManagerSync
from helpers import shell


def run(manager, task, inputdata=None):
    return JobManagerSync(manager).new_job(task, inputdata, timeout=60)


def inside(manager, script, **options):
    """Runs ``script`` and returns what it printed as the ``out`` key of its result."""
    task = shell(f'out=$({{ {script} ; }} 2>&1 | tr "\\000\\n\\t\\"" "    "); '
                 f'echo "{{\\"result\\": \\"success\\", \\"out\\": \\"$out\\"}}"', **options)
    result = run(manager, task)
    assert result["result"] == "success", result
    return result["out"].strip()


@pytest.mark.core
def test_cpu_time(manager):
    # a wall-clock limit far from the CPU time's: on a loaded machine the loop may get
    # less than a core, and the CPU time is what this checks
    result = run(manager, shell("while :; do :; done", limits={"time": 1, "hard_time": 20}))
    assert (result["result"], result["run"]["reason"]) == ("timeout", "cpu_time")
    assert "CPU time" in result["text"]


def test_cpu_time_is_per_container(manager):
    # four busy processes share one CPU: none reaches RLIMIT_CPU of 2 s before 8 s of wall
    # time, but together they use 2 s of CPU after about 2 s; hard_time is 6 s
    script = "for i in 1 2 3 4; do (while :; do :; done) & done; wait"
    result = run(manager, shell(script, limits={"time": 2, "cpus": 1.0}))
    assert (result["result"], result["run"]["reason"]) == ("timeout", "cpu_time")
    assert result["run"]["duration"] < 5.5


@pytest.mark.core
def test_wall_time(manager):
    result = run(manager, shell("echo started >&2; sleep 30", limits={"hard_time": 1}))
    assert (result["result"], result["run"]["reason"]) == ("timeout", "wall_time")
    assert 1 <= result["run"]["duration"] < 5
    assert "started" in result["run"]["stderr"]  # output before the kill is kept


@pytest.mark.core
def test_memory(manager):
    result = run(manager, shell("x=$(yes | head -c 300000000); echo done", limits={"memory": 20}))
    assert (result["result"], result["run"]["reason"]) == ("overflow", "memory")


def test_memory_of_a_child_is_caught_with_exit_code_zero(manager):
    # the child is OOM-killed, the shell goes on and exits 0 with valid JSON
    task = shell("(x=$(yes | head -c 300000000)); echo '{\"result\": \"success\"}'",
                 limits={"memory": 20})
    result = run(manager, task)
    assert (result["result"], result["run"]["reason"]) == ("overflow", "memory")


@pytest.mark.core
def test_output_of_a_long_job(manager):
    result = run(manager, shell("yes", limits={"output": 10000}))
    assert (result["result"], result["run"]["reason"]) == ("overflow", "output")


def test_output_of_a_short_job_keeps_head_and_tail_of_stderr(manager):
    script = "(echo HEAD; head -c 100000 /dev/zero | tr '\\0' x; echo; echo TAIL) >&2"
    result = run(manager, shell(script, limits={"output": 10000}))
    assert (result["result"], result["run"]["reason"]) == ("overflow", "output")
    stderr = result["run"]["stderr"]
    assert stderr.startswith("HEAD") and stderr.rstrip().endswith("TAIL")
    assert len(stderr.encode()) <= 10000 + 100


def test_a_flood_printed_at_once_keeps_the_head_of_stderr(manager):
    # 4 MiB at once, more than the engine's log keeps (2 x 1 MiB): only the job's own
    # stream, attached before its start, still has the head (the job is stopped mid-flood)
    script = "(echo HEAD; head -c 4000000 /dev/zero | tr '\\0' x) >&2; sleep 30"
    result = run(manager, shell(script, limits={"output": 10000}))
    assert (result["result"], result["run"]["reason"]) == ("overflow", "output")
    stderr = result["run"]["stderr"]
    assert stderr.startswith("HEAD\nxxx") and "cut ...]" in stderr
    assert len(stderr.encode()) <= 10000 + 100


def test_stdout_and_stderr_come_whole_without_a_final_newline(manager):
    script = "printf 'err-no-newline' >&2; printf '{\"result\": \"success\"}'"
    result = run(manager, shell(script))
    assert result["result"] == "success" and result["run"]["stderr"] == "err-no-newline"


def test_output_limit_default_keeps_ordinary_output(manager):
    result = run(manager, shell("head -c 5000 /dev/zero | tr '\\0' e >&2; "
                                "echo '{\"result\": \"success\"}'"))
    assert result["result"] == "success" and len(result["run"]["stderr"]) == 5000


def test_processes_are_limited(manager):
    # no command substitution after the loop: it would need a fork; `set --` with a glob
    # counts the processes without one
    script = ('(for i in $(seq 100); do sleep 5 & done) 2>/dev/null; set -- /proc/[0-9]*; '
              'echo "{\\"result\\": \\"success\\", \\"n\\": $#}"')
    result = run(manager, shell(script, limits={"processes": 20}))
    assert result["result"] == "success", result
    assert result["n"] <= 20


def test_hardening_seen_from_inside(manager):
    status = inside(manager, "grep -E 'CapEff|CapPrm|NoNewPrivs' /proc/self/status").split()
    assert status == ["CapPrm:", "0" * 16, "CapEff:", "0" * 16, "NoNewPrivs:", "1"]
    assert inside(manager, "ls /sys/class/net") == "lo"
    assert inside(manager, "ulimit -c; ulimit -n") == "0 1024"
    memory = inside(manager, "cat /sys/fs/cgroup/memory/memory.limit_in_bytes "
                             "/sys/fs/cgroup/memory/memory.memsw.limit_in_bytes "
                             "/sys/fs/cgroup/pids/pids.max", limits={"memory": 50})
    assert memory.split() == [str(50 << 20), str(50 << 20), "64"]
    assert inside(manager, "tr '\\000' '\\n' < /proc/1/cmdline | head -1") == "/sbin/docker-init"


def test_read_only_root_with_tmp(manager):
    out = inside(manager, "touch /x && echo root-writable; echo hi > /tmp/y && cat /tmp/y",
                 read_only=True)
    assert "root-writable" not in out and "hi" in out
    assert "root-writable" in inside(manager, "touch /x && echo root-writable")


def test_user(manager):
    assert inside(manager, "id -u; id -g", user="1234:4321") == "1234 4321"


def test_limits_reach_the_container(manager):
    task = shell('read -r line; echo "{\\"result\\": \\"success\\", \\"in\\": $line}"',
                 limits={"time": 7, "output": 4096})
    result = run(manager, task, [1])
    assert result["in"]["limits"] == {"time": 7, "hard_time": 21, "memory": 100,
                                      "output": 4096, "processes": 64, "cpus": 1.0,
                                      "file_size": 128 << 20, "disk": 1 << 30}
