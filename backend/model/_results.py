"""Result dicts (docs/results.rst): how a container ended, reading its output (its JSON
within bounds, see docs/failures.rst), default texts, and merging with the local check. Pure
functions of plain data (no I/O, no threads), shared by the waiter (:func:`end_reason`,
:func:`ended_result`, :func:`lost_result`), the dispatcher (:func:`failure_result`) and the
callback managers (:func:`merge`)."""
from __future__ import annotations

import json
import math
import re
from itertools import accumulate
from typing import Any, Dict, NamedTuple, Optional, Tuple

from backend.model._task import LocalCheck

#: A result dict (docs/results.rst), or its container part before the merge with the local check.
Result = Dict[str, Any]

CONTAINER_STATUSES = ("success", "failed", "error", "timeout", "overflow")

#: The status each reason gives (docs/results.rst).
REASON_STATUS = {
    "cpu_time": "timeout", "wall_time": "timeout", "memory": "overflow", "output": "overflow",
    "killed": "killed", "no_image": "crash", "engine_lost": "crash",
    "engine_unreachable": "crash", "bad_output": "crash", "over_capacity": "crash",
    "start_failed": "crash", "removed": "crash", "disk": "overflow",
    "handling_failed": "crash",
}

DEFAULT_TEXTS = {
    "cpu_time": "The job used all of its CPU time ({time} s).",
    "wall_time": "The job ran longer than its wall-clock limit ({hard_time} s).",
    "memory": "The job used more memory than allowed ({memory} MiB).",
    "output": "The job printed more than allowed ({output} bytes).",
    "killed": "The job was killed.",
    "removed": "The job's container was removed or killed from outside the JobManager.",
    "disk": "The job wrote more than allowed: a file over {file_size} bytes, or over {disk} "
            "bytes in all.",
}


#: Exit codes of a job killed by the signals of its ulimits: 128 + SIGXCPU, 128 + SIGXFSZ.
SIGXCPU_EXIT, SIGXFSZ_EXIT = 128 + 24, 128 + 25


class ContainerEnd(NamedTuple):
    """What the waiter knows of how a job's container ended."""

    exit_code: Optional[int]
    limits: Dict[str, Any]
    #: why we ended it (a kill reason: ``killed``, ``wall_time``, ``cpu_time``, ``output``),
    #: or ``removed`` when the container was destroyed or vanished; None: it ended by itself
    our_reason: Optional[str] = None
    oom: bool = False                  # the engine says it ran out of memory
    killed_from_outside: bool = False  # a kill event we did not send
    engine_was_lost: bool = False      # the engine stopped answering while it ran
    output_size: int = 0               # the most bytes of output known (collected or seen)
    protocol: str = "json"             # "raw": stdout is not parsed (docs/running-programs.rst)


def end_reason(end: ContainerEnd) -> Optional[str]:
    """The docs/results.rst reason of a container's end (None: it ended by itself), by precedence:
    our reason, memory, CPU time, disk, output, killed from outside, engine lost."""
    if end.our_reason is not None:
        return end.our_reason
    if end.oom:
        return "memory"
    if end.exit_code == SIGXCPU_EXIT:
        return "cpu_time"
    if end.exit_code == SIGXFSZ_EXIT:
        return "disk"
    if end.output_size > end.limits["output"]:
        return "output"
    if end.killed_from_outside:
        return "removed"
    if end.engine_was_lost:
        return "engine_lost"
    return None


def ended_result(end: ContainerEnd, stdout: bytes, stderr: bytes, live_stderr_head: bytes,
                 host: str, container_id: str, duration: float) -> Dict[str, Any]:
    """The container's part of a job's result once it ended.

    Args:
        end: how it ended.
        stdout, stderr: its output as collected (its own stream, or the engine's log).
        live_stderr_head: the head of stderr seen live when ``stderr`` comes from the log
            (b"" otherwise): an output flood keeps its start as well as its end.
        host, container_id, duration: for ``run``.
    """
    reason = end_reason(end)
    if reason == "output" and live_stderr_head:
        stderr = join_head_and_tail(live_stderr_head, stderr, end.limits["output"])
    if reason == "engine_lost":
        return lost_result(host, container_id, duration, stopped=False)
    if end.protocol == "raw":
        return raw_result(stdout, stderr, end.exit_code, reason, end.limits, host,
                          container_id, duration)
    return container_result(stdout, stderr, end.exit_code, reason, end.limits, host,
                            container_id, duration)


def lost_result(host: str, container_id: str, duration: float, stopped: bool
                ) -> Dict[str, Any]:
    """The result of a job whose engine was lost: it ended while the engine did not answer,
    or (``stopped``) the engine has not answered for too long."""
    how = "stopped answering" if stopped else "was lost"
    return failure_result("engine_lost", f"host {host} {how} while the job ran", host,
                          container_id, duration)


def make_result(status: str, text: str = "", problems: Optional[Dict[str, str]] = None,
                run: Optional[Dict[str, Any]] = None, **extra: Any) -> Dict[str, Any]:
    """Builds a result dict with every key docs/results.rst promises."""
    result = dict(extra)
    result.update(result=status, text=text, problems=dict(problems or {}))
    if run is not None:
        result["run"] = run
    return result


def make_run(host: Optional[str] = None, container_id: Optional[str] = None,
             exit_code: Optional[int] = None, duration: float = 0.0, stderr: str = "",
             reason: Optional[str] = None) -> Dict[str, Any]:
    """Builds the ``run`` part of a result."""
    return {"host": host, "container_id": container_id, "exit_code": exit_code,
            "duration": round(float(duration), 4), "stderr": stderr, "reason": reason}


def failure_result(reason: str, text: str, host: Optional[str] = None,
                   container_id: Optional[str] = None, duration: float = 0.0) -> Dict[str, Any]:
    """A result for a job that did not end by itself: status from ``reason``."""
    return make_result(REASON_STATUS[reason], text,
                       run=make_run(host, container_id, None, duration, "", reason))


def cap_text(data: bytes, limit: int) -> str:
    """Decodes ``data``; beyond ``limit`` bytes keeps its head and tail around a marker."""
    if len(data) <= limit:
        return data.decode("utf-8", "replace")
    half = max(limit // 2, 1)
    cut = len(data) - 2 * half
    return (data[:half].decode("utf-8", "replace") + f"\n[... {cut} bytes cut ...]\n"
            + data[-half:].decode("utf-8", "replace"))


def join_head_and_tail(head: bytes, tail: bytes, limit: int) -> bytes:
    """Joins the start of a stream (seen live) and its end (from the engine's capped log)."""
    half = max(limit // 2, 1)
    if len(tail) <= half or tail.startswith(head[:half]):
        return tail
    return head[:half] + b"\n[... output cut ...]\n" + tail[-half:]


#: The deepest nesting of arrays and objects a container's JSON may have.
MAX_JSON_DEPTH = 100
#: The most digits of an integer in a container's JSON (Python 3.11's default for ``int``;
#: the same bound on every Python version).
MAX_INT_DIGITS = 4300

#: A JSON string, also one left open at the end (the optional closing quote keeps the match
#: linear: it never fails, so it never backtracks).
_STRING = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*"?', re.DOTALL)
_NOT_BRACKET = re.compile(r"[^\[\]{}]+")
_STEP = {"[": 1, "{": 1, "]": -1, "}": -1}


class BadOutput(ValueError):
    """A container's JSON that is valid but outside the bounds of a result; says which."""


def json_depth(text: str) -> int:
    """The deepest nesting of arrays and objects in ``text`` (JSON, maybe invalid): one
    linear pass, brackets inside strings left out."""
    if text.count("[") + text.count("{") <= MAX_JSON_DEPTH:
        return 0  # cannot be too deep: no need to look closer
    brackets = _NOT_BRACKET.sub("", _STRING.sub("", text))
    return max(accumulate(map(_STEP.__getitem__, brackets)), default=0)


def _not_finite(name: str) -> Any:
    raise BadOutput(f"holds a number that is not finite ({name}), which JSON cannot carry")


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        _not_finite(text if len(text) <= 40 else text[:40] + "...")
    return value


def _bounded_int(text: str) -> int:
    if len(text) - text.startswith("-") > MAX_INT_DIGITS:
        raise BadOutput(f"holds an integer of more than {MAX_INT_DIGITS} digits")
    return int(text)


def load_json(text: str) -> Any:
    """``json.loads`` within the bounds of a result: nesting, integers, finite numbers.

    Raises:
        BadOutput: valid JSON outside the bounds (the text says which).
        ValueError: not JSON.
    """
    if json_depth(text) > MAX_JSON_DEPTH:
        raise BadOutput(f"is nested deeper than {MAX_JSON_DEPTH} levels")
    return json.loads(text, parse_constant=_not_finite, parse_float=_finite_float,
                      parse_int=_bounded_int)


def parse_stdout(stdout: bytes) -> Optional[Dict[str, Any]]:
    """The JSON object a container printed: the whole stdout, else its last non-empty line.

    Raises:
        BadOutput: no candidate is a JSON object within bounds, and one is JSON out of them.
    """
    text = stdout.decode("utf-8", "replace").strip()
    candidates = [text]
    lines = [line for line in text.splitlines() if line.strip()]
    if len(lines) > 1:
        candidates.append(lines[-1])
    out_of_bounds: Optional[BadOutput] = None
    for candidate in candidates:
        try:
            value = load_json(candidate)
        except BadOutput as error:
            out_of_bounds = out_of_bounds or error
            continue
        except ValueError:
            continue
        if isinstance(value, dict):
            return value
    if out_of_bounds is not None:
        raise out_of_bounds
    return None


def _partial(stdout: bytes) -> Dict[str, Any]:
    """The JSON object printed before a kill or a limit, if any (bounds as for the rest)."""
    try:
        return parse_stdout(stdout) or {}
    except BadOutput:
        return {}


def check_json(result: Dict[str, Any]) -> None:
    """Checks that ``result`` (``files`` aside: bytes) is JSON.

    Raises:
        ValueError: it is not (a number that is not finite, a value of another type).
    """
    json.dumps({key: value for key, value in result.items() if key != "files"},
               allow_nan=False)


def container_result(stdout: bytes, stderr: bytes, exit_code: Optional[int],
                     reason: Optional[str], limits: Dict[str, Any], host: str,
                     container_id: str, duration: float) -> Dict[str, Any]:
    """The container's part of a job's result, from what the waiter collected."""
    limit = int(limits["output"])
    stderr_text = cap_text(stderr, max(limit - min(len(stdout), limit), limit // 2))
    run = make_run(host, container_id, exit_code, duration, stderr_text, reason)
    if reason is not None:
        partial = _partial(stdout[:limit])
        text = DEFAULT_TEXTS.get(reason, "").format(**limits)
        return make_result(REASON_STATUS[reason], text, _problems(partial.get("problems")), run)
    try:
        parsed = parse_stdout(stdout[:limit])
    except BadOutput as error:
        run["reason"] = "bad_output"
        return make_result("crash", f"The container's JSON object {error}.", run=run)
    if parsed is None:
        tail = stderr_text[-500:].strip()
        text = (f"The container printed no JSON object on stdout (exit code {exit_code})."
                + (f" End of stderr:\n{tail}" if tail else " Its stderr was empty."))
        run["reason"] = "bad_output"
        return make_result("crash", text, run=run)
    extra = {k: v for k, v in parsed.items() if k not in ("result", "text", "problems", "run")}
    status = parsed.get("result")
    text = parsed.get("text", "")
    if not isinstance(text, str):
        text = json.dumps(text)
    if status not in CONTAINER_STATUSES:
        text = "\n".join(t for t in (f"The container returned an unknown result {status!r}.",
                                     text) if t)
        status = "error"
    return make_result(status, text, _problems(parsed.get("problems")), run, **extra)


def raw_result(stdout: bytes, stderr: bytes, exit_code: Optional[int], reason: Optional[str],
               limits: Dict[str, Any], host: str, container_id: str, duration: float
               ) -> Dict[str, Any]:
    """The container's part of a raw job's result (docs/running-programs.rst): ``success`` on exit code 0,
    ``failed`` otherwise, unless ``reason`` ended it; ``run["stdout"]`` and ``run["stderr"]``
    keep their heads and tails within ``limits["output"]`` bytes together."""
    stdout_text, stderr_text = cap_pair(stdout, stderr, int(limits["output"]))
    run = make_run(host, container_id, exit_code, duration, stderr_text, reason)
    run["stdout"] = stdout_text
    if reason is not None:
        return make_result(REASON_STATUS[reason], DEFAULT_TEXTS.get(reason, "").format(**limits),
                           run=run)
    return make_result("success" if exit_code == 0 else "failed", "", run=run)


def cap_pair(first: bytes, second: bytes, limit: int) -> Tuple[str, str]:
    """Two streams decoded within ``limit`` bytes together: a stream shorter than half of
    it is kept whole, the other gets the rest; each cut one keeps its head and tail."""
    if len(first) + len(second) <= limit:
        return first.decode("utf-8", "replace"), second.decode("utf-8", "replace")
    first_room = max(limit // 2, limit - len(second))
    second_room = limit - min(len(first), first_room)
    return cap_text(first, first_room), cap_text(second, second_room)


def complete(result: Dict[str, Any], protocol: str, has_outputs: bool) -> None:
    """Gives every result of a raw job ``run["stdout"]``, and of a job with outputs
    ``files``, ``run["files_left_out"]`` and ``run["files_left_out_more"]``, also when its
    container never ran or ended."""
    if protocol == "raw":
        result["run"].setdefault("stdout", "")
    if has_outputs:
        result.setdefault("files", {})
        result["run"].setdefault("files_left_out", [])
        result["run"].setdefault("files_left_out_more", 0)


def _problems(problems: Any) -> Dict[str, str]:
    if not isinstance(problems, dict):
        return {}
    return {str(k): v if isinstance(v, str) else json.dumps(v) for k, v in problems.items()}


def merge(local: LocalCheck, container: Optional[Dict[str, Any]]) -> Dict[str, Any]:
    """Merges the local check with the container's result (docs/results.rst).

    Without a container, the local check is the result. When the container says success or
    failed, the job succeeds only if both did; texts are joined and problems merged per id.
    Any other container status wins, with its own text.
    """
    if container is None:
        return make_result(local.result, local.text, local.problems)
    if container["result"] not in ("success", "failed"):
        return container
    merged = dict(container)
    both = local.result == "success" and container["result"] == "success"
    merged["result"] = "success" if both else "failed"
    merged["text"] = "\n".join(t for t in (local.text, container["text"]) if t)
    problems = dict(local.problems)
    for key, value in container["problems"].items():
        problems[key] = "\n".join(t for t in (problems.get(key, ""), value) if t)
    merged["problems"] = problems
    return merged
