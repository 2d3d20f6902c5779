"""How a container ended becomes status, reason and text (backend._results): pure functions,
every precedence case of the waiter's end classification."""
import pytest

from backend._results import (SIGXCPU_EXIT, SIGXFSZ_EXIT, ContainerEnd, end_reason,
                              ended_result, lost_result)
from backend._task import merge_limits

LIMITS = merge_limits({"output": 100})
OK = b'{"result": "success", "text": "fine"}\n'


def end(**fields):
    return ContainerEnd(fields.pop("exit_code", 0), LIMITS, **fields)


@pytest.mark.parametrize("fields, reason", [
    ({}, None),
    ({"exit_code": 1}, None),                                        # its own business
    ({"our_reason": "wall_time", "oom": True}, "wall_time"),        # ours first
    ({"our_reason": "killed", "killed_from_outside": True}, "killed"),
    ({"our_reason": "removed", "engine_was_lost": True}, "removed"),
    ({"oom": True, "exit_code": SIGXCPU_EXIT, "output_size": 999}, "memory"),
    ({"exit_code": SIGXCPU_EXIT, "output_size": 999}, "cpu_time"),
    ({"exit_code": SIGXFSZ_EXIT, "output_size": 999}, "disk"),
    ({"output_size": 101, "killed_from_outside": True}, "output"),
    ({"output_size": 100}, None),                                    # at the limit is fine
    ({"killed_from_outside": True, "engine_was_lost": True}, "removed"),
    ({"engine_was_lost": True}, "engine_lost"),
])
def test_the_reason_of_an_end_follows_the_precedence(fields, reason):
    assert end_reason(end(**fields)) == reason


def test_a_job_that_ended_by_itself_gives_what_it_printed():
    result = ended_result(end(), OK, b"log\n", b"", "host", "c1", 1.5)
    assert (result["result"], result["text"]) == ("success", "fine")
    assert result["run"] == {"host": "host", "container_id": "c1", "exit_code": 0,
                             "duration": 1.5, "stderr": "log\n", "reason": None}


@pytest.mark.parametrize("fields, status, reason, text", [
    ({"oom": True}, "overflow", "memory", "The job used more memory than allowed (512 MiB)."),
    ({"exit_code": SIGXCPU_EXIT}, "timeout", "cpu_time",
     "The job used all of its CPU time (10 s)."),
    ({"our_reason": "killed"}, "killed", "killed", "The job was killed."),
    ({"killed_from_outside": True}, "crash", "removed",
     "The job's container was removed or killed from outside the JobManager."),
])
def test_a_reason_gives_its_status_and_default_text(fields, status, reason, text):
    limits = merge_limits({"output": 100, "memory": 512, "time": 10})
    result = ended_result(ContainerEnd(fields.pop("exit_code", 0), limits, **fields), OK,
                          b"", b"", "host", "c1", 1.0)
    assert (result["result"], result["run"]["reason"], result["text"]) == (status, reason,
                                                                           text)


def test_an_engine_lost_while_the_job_ran_is_a_crash_with_its_own_text():
    result = ended_result(end(engine_was_lost=True), OK, b"", b"", "h", "c1", 2.0)
    assert result == lost_result("h", "c1", 2.0, stopped=False)
    assert (result["result"], result["run"]["reason"]) == ("crash", "engine_lost")
    assert result["text"] == "host h was lost while the job ran"
    assert lost_result("h", "c1", 2.0, stopped=True)["text"] == \
        "host h stopped answering while the job ran"


def test_an_output_flood_read_from_the_log_keeps_the_head_seen_live():
    head, tail = b"HEAD" + b"x" * 96, b"y" * 96 + b"TAIL"
    result = ended_result(end(output_size=10_000), b"", tail, head, "h", "c1", 1.0)
    assert result["run"]["reason"] == "output"
    assert result["run"]["stderr"].startswith("HEAD")
    assert result["run"]["stderr"].endswith("TAIL")
    # the same output from the job's own stream: stderr is used as it is
    whole = ended_result(end(output_size=10_000), b"", tail, b"", "h", "c1", 1.0)
    assert whole["run"]["stderr"] == tail.decode()
