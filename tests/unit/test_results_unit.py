"""How a container ended becomes status, reason and text (backend.model._results): pure functions,
every precedence case of the waiter's end classification, and hostile JSON (fuzzed)."""
import json
import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from backend.model._results import (MAX_INT_DIGITS, MAX_JSON_DEPTH, SIGXCPU_EXIT, SIGXFSZ_EXIT,
                                    ContainerEnd, check_json, end_reason, ended_result,
                                    json_depth, load_json, lost_result)
from backend.model._task import merge_limits

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


# -- hostile JSON: bounded, and JSON (docs/failures.rst) -----------------------------------

def crash_text(stdout):
    result = ended_result(end(), stdout, b"", b"", "e1", "c1", 0.1)
    assert (result["result"], result["run"]["reason"]) == ("crash", "bad_output"), result
    check_json(result)
    return result["text"]


@pytest.mark.parametrize("stdout, says", [
    (b'{"result":"success","x":' + b"[" * 200000 + b"]" * 200000 + b"}",
     "nested deeper than 100 levels"),
    (b'{"result": "failed", "x": 1e999}', "not finite (1e999)"),
    (b'{"result": "failed", "x": -1e999}', "not finite (-1e999)"),
    (b'{"result": "failed", "x": NaN}', "not finite (NaN)"),
    (b'{"result": "failed", "x": [Infinity]}', "not finite (Infinity)"),
    (b'{"result": "failed", "x": ' + b"7" * 100000 + b"}", "more than 4300 digits"),
    (b'{"result": "failed", "x": -' + b"7" * 4301 + b"}", "more than 4300 digits"),
])
def test_json_out_of_bounds_is_bad_output_saying_why(stdout, says):
    limits = merge_limits({})
    result = ended_result(ContainerEnd(0, limits), stdout, b"", b"", "e1", "c1", 0.1)
    assert (result["result"], result["run"]["reason"]) == ("crash", "bad_output")
    assert says in result["text"], result["text"]


def test_json_within_bounds_is_kept():
    deep = b"[" * MAX_JSON_DEPTH + b"]" * MAX_JSON_DEPTH
    brackets_in_a_string = b'"' + b"[" * 1000 + b'\\"{{"'
    stdout = (b'{"result": "success", "d": ' + deep[1:-1] + b', "s": ' + brackets_in_a_string
              + b', "n": -' + b"9" * MAX_INT_DIGITS + b', "f": 1.5e300}')
    result = ended_result(ContainerEnd(0, merge_limits({})), stdout, b"", b"", "e1", "c1", 0.1)
    assert result["result"] == "success", result["text"]
    assert result["s"] == "[" * 1000 + '"{{' and result["f"] == 1.5e300
    check_json(result)


def test_a_bomb_printed_before_a_kill_is_only_dropped():
    stdout = b'{"problems": {"p": "x"}, "y": ' + b"[" * 1000 + b"]" * 1000 + b"}"
    result = ended_result(end(our_reason="wall_time"), stdout, b"", b"", "e1", "c1", 0.1)
    assert (result["result"], result["problems"]) == ("timeout", {})


@pytest.mark.parametrize("stdout", [b"\0" * 1000, b"a" * (1 << 20), b"[" * 1000, b"{" * 1000,
                                    b'"' + b'\\"' * 100000])
def test_output_that_is_no_object_is_bad_output(stdout):
    assert "no JSON object" in crash_text(stdout)


def test_every_field_of_the_wrong_type():
    stdout = (b'{"result": ["success"], "text": {"a": 1}, "problems": [1, 2], '
              b'"run": "x", "extra": {"b": [null, true]}}')
    result = ended_result(ContainerEnd(0, merge_limits({})), stdout, b"", b"", "e1", "c1", 0.1)
    assert result["result"] == "error" and "unknown result ['success']" in result["text"]
    assert result["problems"] == {} and result["run"]["host"] == "e1"
    assert result["extra"] == {"b": [None, True]}
    check_json(result)


def test_the_depth_scan_is_linear():
    for stdout in (b"[" * (1 << 20), b'"\\"' * 350000, b'"' * (1 << 20), b"{\"\\" * 350000):
        started = time.perf_counter()
        json_depth(stdout.decode())
        assert time.perf_counter() - started < 2.0  # quadratic would take minutes


@settings(max_examples=1000, derandomize=True, deadline=None, database=None)
@given(st.binary(max_size=2000) | st.text(alphabet='[]{}"\\,:0123456789.eE-+ aNIfinity',
                                          max_size=2000).map(str.encode))
def test_any_stdout_gives_a_json_result(stdout):
    for protocol_end in (end(), end(our_reason="killed")):
        result = ended_result(protocol_end, stdout, b"", b"", "e1", "c1", 0.1)
        check_json(result)


@settings(max_examples=1000, derandomize=True, deadline=None, database=None)
@given(st.recursive(st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False,
                                                                          allow_infinity=False)
                    | st.text(), lambda inner: st.lists(inner) | st.dictionaries(st.text(), inner),
                    max_leaves=30))
def test_any_json_value_within_bounds_comes_back_equal(value):
    assert load_json(json.dumps({"v": value})) == {"v": value}
